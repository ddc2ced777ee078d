//@@ project=printd cwe=CWE-367 msg="open with O_NOFOLLOW instead of access check"
int open_spool_file(const char *path)
{
    if (access(path, W_OK) != 0) //-
        return -1; //-
    return open(path, O_WRONLY | O_APPEND); //-
    return open(path, O_WRONLY | O_APPEND | O_NOFOLLOW); //+
}

//@@ project=backupd cwe=CWE-367 msg="check file type on the open descriptor"
int open_regular(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) //-
        return -1; //-
    return open(path, O_RDONLY); //-
    int fd = open(path, O_RDONLY | O_NOFOLLOW); //+
    if (fd < 0) //+
        return -1; //+
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { //+
        close(fd); //+
        return -1; //+
    } //+
    return fd; //+
}

//@@ project=configd cwe=CWE-367 msg="create config exclusively"
int create_config(const char *path, const char *text)
{
    if (access(path, F_OK) == 0) //-
        return -1; //-
    int fd = open(path, O_WRONLY | O_CREAT, 0600); //-
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600); //+
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n < 0 ? -1 : 0;
}

//@@ project=mailutils cwe=CWE-367 msg="lock mailbox via open flags, not a prior check"
int open_mailbox(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) //-
        return -1; //-
    int fd = open(path, O_RDWR | O_APPEND); //-
    int fd = open(path, O_RDWR | O_APPEND | O_NOFOLLOW); //+
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

//@@ project=pkgtools cwe=CWE-367 msg="remove file through directory descriptor"
int remove_if_owned(int dirfd, const char *name, uid_t owner)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, 0) != 0) //-
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) //+
        return -1;
    if (st.st_uid != owner)
        return -1;
    return unlinkat(dirfd, name, 0);
}

//@@ project=sudoish cwe=CWE-367 msg="drop privileges before opening user file"
int read_user_file(const char *path, uid_t uid, char *buf, size_t len)
{
    if (access(path, R_OK) != 0) //-
        return -1; //-
    if (seteuid(uid) != 0) //+
        return -1; //+
    int fd = open(path, O_RDONLY);
    if (seteuid(0) != 0) //+
        abort(); //+
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len);
    close(fd);
    return (int)n;
}
