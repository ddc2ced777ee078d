//@@ project=tinyhttpd cwe=CWE-22 msg="reject dot-dot in requested paths"
int open_static_file(const char *docroot, const char *url_path)
{
    char full[PATH_MAX];
    if (strstr(url_path, "..") != NULL) //+
        return -1; //+
    snprintf(full, sizeof(full), "%s/%s", docroot, url_path);
    return open(full, O_RDONLY);
}

//@@ project=ftpd cwe=CWE-22 msg="resolve and confine upload path"
int upload_path(const char *root, const char *name, char *out, size_t out_len)
{
    snprintf(out, out_len, "%s/%s", root, name);
    char resolved[PATH_MAX]; //+
    if (realpath(out, resolved) == NULL) //+
        return -1; //+
    if (strncmp(resolved, root, strlen(root)) != 0) //+
        return -1; //+
    return 0;
}

//@@ project=tarx cwe=CWE-22 msg="skip absolute and parent entries on extract"
int extract_entry(const char *dest, const struct tar_entry *e)
{
    char path[PATH_MAX];
    if (e->name[0] == '/' || strstr(e->name, "../") != NULL) //+
        return -1; //+
    snprintf(path, sizeof(path), "%s/%s", dest, e->name);
    return write_entry_file(path, e);
}

//@@ project=backupd cwe=CWE-22 msg="validate restore target name"
int restore_file(const char *backup_dir, const char *name, const char *target_dir)
{
    char src[PATH_MAX], dst[PATH_MAX];
    if (strchr(name, '/') != NULL || strcmp(name, "..") == 0) //+
        return -1; //+
    snprintf(src, sizeof(src), "%s/%s", backup_dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", target_dir, name);
    return copy_file(src, dst);
}

//@@ project=pluginhost cwe=CWE-22 msg="plugin names must be plain file names"
void *load_plugin(const char *plugin_dir, const char *name)
{
    char path[PATH_MAX];
    if (name[0] == '\0' || strpbrk(name, "/\\") != NULL || name[0] == '.') //+
        return NULL; //+
    snprintf(path, sizeof(path), "%s/%s.so", plugin_dir, name);
    return dlopen(path, RTLD_NOW);
}

//@@ project=logd cwe=CWE-22 msg="log file names are confined to log dir"
FILE *open_log(const char *log_dir, const char *service)
{
    char path[PATH_MAX];
    for (const char *p = service; *p; p++) //+
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') //+
            return NULL; //+
    snprintf(path, sizeof(path), "%s/%s.log", log_dir, service);
    return fopen(path, "a");
}

//@@ project=zipper cwe=CWE-22 msg="reject traversal in archive member names"
int member_path(const char *out_dir, const char *member, char *path, size_t len)
{
    if (member[0] == '/' || strstr(member, "..") != NULL) //+
        return -1; //+
    int n = snprintf(path, len, "%s/%s", out_dir, member);
    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}
