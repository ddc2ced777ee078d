//@@ project=imgtool cwe=CWE-377 msg="use mkstemp for scratch files"
FILE *open_scratch(char *name_out, size_t len)
{
    char *name = tmpnam(NULL); //-
    snprintf(name_out, len, "%s", name); //-
    return fopen(name_out, "w+"); //-
    snprintf(name_out, len, "/tmp/imgtool-XXXXXX"); //+
    int fd = mkstemp(name_out); //+
    return fd < 0 ? NULL : fdopen(fd, "w+"); //+
}

//@@ project=dbshell cwe=CWE-377 msg="replace mktemp with mkstemp"
int open_history_tmp(char *path)
{
    strcpy(path, "/tmp/dbshell.XXXXXX");
    mktemp(path); //-
    return open(path, O_RDWR | O_CREAT, 0644); //-
    return mkstemp(path); //+
}

//@@ project=backupd cwe=CWE-377 msg="create temp archive exclusively with private mode"
int temp_archive(char *path, size_t len, int job)
{
    snprintf(path, len, "/tmp/backup-%d.tar", job); //-
    return open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644); //-
    snprintf(path, len, "/tmp/backup-%d-XXXXXX", job); //+
    return mkstemp(path); //+
}

//@@ project=mailutils cwe=CWE-377 msg="use tmpfile for message drafts"
FILE *new_draft(void)
{
    char name[L_tmpnam]; //-
    if (tmpnam(name) == NULL) //-
        return NULL; //-
    return fopen(name, "w+"); //-
    return tmpfile(); //+
}

//@@ project=compilerd cwe=CWE-377 msg="private temp dir for build outputs"
int make_build_dir(char *dir, size_t len, const char *job)
{
    snprintf(dir, len, "/tmp/build-%s", job); //-
    return mkdir(dir, 0777); //-
    snprintf(dir, len, "/tmp/build-%s-XXXXXX", job); //+
    return mkdtemp(dir) == NULL ? -1 : 0; //+
}

//@@ project=editorlite cwe=CWE-377 msg="write swap file with O_EXCL and 0600"
int open_swap(const char *file, char *swap, size_t len)
{
    snprintf(swap, len, "/tmp/%s.swp", file); //-
    return open(swap, O_RDWR | O_CREAT, 0666); //-
    snprintf(swap, len, "/tmp/.editorlite-XXXXXX"); //+
    int fd = mkstemp(swap); //+
    if (fd >= 0) //+
        fchmod(fd, 0600); //+
    return fd; //+
}
