//@@ project=backupd cwe=CWE-252 msg="check write and fsync results"
int save_state(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    write(fd, data, len); //-
    fsync(fd); //-
    if (write(fd, data, len) != (ssize_t)len || fsync(fd) != 0) { //+
        close(fd); //+
        return -1; //+
    } //+
    return close(fd);
}

//@@ project=sudoish cwe=CWE-252 msg="abort if setuid fails"
void drop_privileges(uid_t uid, gid_t gid)
{
    setgid(gid); //-
    setuid(uid); //-
    if (setgid(gid) != 0 || setuid(uid) != 0) { //+
        perror("drop_privileges"); //+
        exit(1); //+
    } //+
}

//@@ project=netdiag cwe=CWE-252 msg="handle short reads from socket"
int read_reply(int sock, char *buf, size_t len)
{
    recv(sock, buf, len - 1, 0); //-
    buf[len - 1] = '\0'; //-
    ssize_t n = recv(sock, buf, len - 1, 0); //+
    if (n < 0) //+
        return -1; //+
    buf[n] = '\0'; //+
    return 0;
}

//@@ project=configd cwe=CWE-252 msg="check fread result when loading keys"
int load_key(const char *path, uint8_t key[32])
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return -1;
    fread(key, 1, 32, fp); //-
    size_t n = fread(key, 1, 32, fp); //+
    fclose(fp);
    if (n != 32) //+
        return -1; //+
    return 0;
}

//@@ project=webapp cwe=CWE-252 msg="chdir failure must stop the worker"
void enter_jail(const char *root)
{
    chroot(root); //-
    chdir("/"); //-
    if (chroot(root) != 0 || chdir("/") != 0) //+
        abort(); //+
}

//@@ project=pkgtools cwe=CWE-252 msg="check rename during install"
int install_file(const char *tmp, const char *dest)
{
    if (chmod(tmp, 0644) != 0)
        return -1;
    rename(tmp, dest); //-
    return 0; //-
    return rename(tmp, dest) == 0 ? 0 : -1; //+
}

//@@ project=sensord cwe=CWE-252 msg="check snprintf truncation in device path"
int open_device(int index)
{
    char path[32];
    snprintf(path, sizeof(path), "/dev/sensor%d", index); //-
    int n = snprintf(path, sizeof(path), "/dev/sensor%d", index); //+
    if (n < 0 || (size_t)n >= sizeof(path)) //+
        return -1; //+
    return open(path, O_RDONLY);
}
