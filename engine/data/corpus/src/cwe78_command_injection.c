//@@ project=netdiag cwe=CWE-78 msg="run ping without a shell"
int ping_host(const char *host)
{
    char cmd[256]; //-
    snprintf(cmd, sizeof(cmd), "ping -c 1 %s", host); //-
    return system(cmd); //-
    pid_t pid = fork(); //+
    if (pid == 0) { //+
        execlp("ping", "ping", "-c", "1", "--", host, (char *)NULL); //+
        _exit(127); //+
    } //+
    int status; //+
    if (pid < 0 || waitpid(pid, &status, 0) < 0) //+
        return -1; //+
    return WEXITSTATUS(status); //+
}

//@@ project=backupd cwe=CWE-78 msg="archive with execv instead of system"
int archive_dir(const char *dir, const char *dest)
{
    char cmd[1024]; //-
    snprintf(cmd, sizeof(cmd), "tar czf %s %s", dest, dir); //-
    return system(cmd) == 0 ? 0 : -1; //-
    char *const argv[] = {"tar", "czf", (char *)dest, "--", (char *)dir, NULL}; //+
    pid_t pid = fork(); //+
    if (pid == 0) { //+
        execvp("tar", argv); //+
        _exit(127); //+
    } //+
    int status; //+
    return (pid > 0 && waitpid(pid, &status, 0) == pid && status == 0) ? 0 : -1; //+
}

//@@ project=mailutils cwe=CWE-78 msg="pipe message to sendmail with fixed argv"
int send_mail(const char *to, const char *body)
{
    char cmd[512]; //-
    snprintf(cmd, sizeof(cmd), "sendmail %s", to); //-
    FILE *p = popen(cmd, "w"); //-
    if (to[0] == '-') //+
        return -1; //+
    FILE *p = popen_argv("/usr/sbin/sendmail", (const char *[]){"sendmail", "--", to, NULL}, "w"); //+
    if (p == NULL)
        return -1;
    fputs(body, p);
    return pclose(p);
}

//@@ project=imgtool cwe=CWE-78 msg="convert images via execlp"
int make_thumbnail(const char *src, const char *dst)
{
    char cmd[600]; //-
    sprintf(cmd, "convert %s -resize 128x128 %s", src, dst); //-
    return system(cmd); //-
    pid_t pid = fork(); //+
    if (pid == 0) { //+
        execlp("convert", "convert", src, "-resize", "128x128", dst, (char *)NULL); //+
        _exit(127); //+
    } //+
    int status = 0; //+
    waitpid(pid, &status, 0); //+
    return pid > 0 ? WEXITSTATUS(status) : -1; //+
}

//@@ project=pkgtools cwe=CWE-78 msg="do not build shell command from package name"
int remove_package(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf /var/lib/pkgs/%s", name); //-
    return system(cmd); //-
    if (strchr(name, '/') != NULL || name[0] == '.' || name[0] == '\0') //+
        return -1; //+
    snprintf(cmd, sizeof(cmd), "/var/lib/pkgs/%s", name); //+
    return remove_tree(cmd); //+
}

//@@ project=routerd cwe=CWE-78 msg="set hostname without shell"
int apply_hostname(const char *hostname)
{
    char cmd[128]; //-
    snprintf(cmd, sizeof(cmd), "hostname %s", hostname); //-
    return system(cmd); //-
    return sethostname(hostname, strlen(hostname)); //+
}

//@@ project=printd cwe=CWE-78 msg="spool job with lpr argument vector"
int print_file(const char *printer, const char *path)
{
    char cmd[512]; //-
    snprintf(cmd, sizeof(cmd), "lpr -P %s %s", printer, path); //-
    return system(cmd); //-
    pid_t pid = fork(); //+
    if (pid == 0) { //+
        execlp("lpr", "lpr", "-P", printer, "--", path, (char *)NULL); //+
        _exit(127); //+
    } //+
    int status; //+
    return (pid > 0 && waitpid(pid, &status, 0) > 0) ? WEXITSTATUS(status) : -1; //+
}

//@@ project=gitweb cwe=CWE-78 msg="show log with execvp"
FILE *open_git_log(const char *repo, const char *branch)
{
    char cmd[512]; //-
    snprintf(cmd, sizeof(cmd), "git -C %s log %s", repo, branch); //-
    return popen(cmd, "r"); //-
    const char *argv[] = {"git", "-C", repo, "log", "--end-of-options", branch, NULL}; //+
    return popen_argv("git", argv, "r"); //+
}
