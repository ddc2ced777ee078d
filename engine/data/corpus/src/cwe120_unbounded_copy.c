//@@ project=tinyhttpd cwe=CWE-120 msg="copy request path with a bound"
static void set_request_path(struct request *req, const char *path)
{
    char buf[256];
    strcpy(buf, path); //-
    snprintf(buf, sizeof(buf), "%s", path); //+
    req->path = strdup(buf);
    req->path_len = strlen(buf);
}

//@@ project=libconfini cwe=CWE-120 msg="bound section name copy"
int ini_set_section(struct ini_state *st, const char *name)
{
    if (name == NULL)
        return -1;
    strcpy(st->section, name); //-
    strncpy(st->section, name, sizeof(st->section) - 1); //+
    st->section[sizeof(st->section) - 1] = '\0'; //+
    st->line_in_section = 0;
    return 0;
}

//@@ project=mailutils cwe=CWE-120 msg="limit recipient concatenation"
int append_recipient(char *list, size_t list_size, const char *addr)
{
    if (list[0] != '\0') {
        strcat(list, ", "); //-
        strncat(list, ", ", list_size - strlen(list) - 1); //+
    }
    strcat(list, addr); //-
    strncat(list, addr, list_size - strlen(list) - 1); //+
    return 0;
}

//@@ project=netdiag cwe=CWE-120 msg="use bounded copy for interface names"
int iface_lookup(int sock, const char *ifname, struct ifreq *ifr)
{
    memset(ifr, 0, sizeof(*ifr));
    strcpy(ifr->ifr_name, ifname); //-
    if (strlen(ifname) >= IFNAMSIZ) //+
        return -1; //+
    strncpy(ifr->ifr_name, ifname, IFNAMSIZ - 1); //+
    if (ioctl(sock, SIOCGIFINDEX, ifr) < 0)
        return -1;
    return ifr->ifr_ifindex;
}

//@@ project=gamesrv cwe=CWE-120 msg="bounded player name copy"
void player_rename(struct player *p, const char *new_name)
{
    char old[MAX_NAME];
    strcpy(old, p->name); //-
    strcpy(p->name, new_name); //-
    snprintf(old, sizeof(old), "%s", p->name); //+
    snprintf(p->name, sizeof(p->name), "%s", new_name); //+
    log_event("rename", old, p->name);
}

//@@ project=tinyhttpd cwe=CWE-120 msg="read request line with fgets"
int read_request_line(FILE *in, char *line)
{
    if (gets(line) == NULL) //-
    if (fgets(line, REQUEST_LINE_MAX, in) == NULL) //+
        return -1;
    line[strcspn(line, "\r\n")] = '\0'; //+
    return (int)strlen(line);
}

//@@ project=cliutils cwe=CWE-120 msg="replace gets in prompt helper"
char *prompt_user(const char *question)
{
    static char answer[128];
    printf("%s ", question);
    fflush(stdout);
    gets(answer); //-
    if (fgets(answer, sizeof(answer), stdin) == NULL) //+
        return NULL; //+
    answer[strcspn(answer, "\n")] = '\0'; //+
    return answer;
}

//@@ project=pkgtools cwe=CWE-120 msg="bound scanf field width"
int parse_package_line(const char *line, struct pkg *out)
{
    char name[64];
    char version[32];
    if (sscanf(line, "%s %s", name, version) != 2) //-
    if (sscanf(line, "%63s %31s", name, version) != 2) //+
        return -1;
    out->name = strdup(name);
    out->version = strdup(version);
    return 0;
}

//@@ project=dnsd cwe=CWE-120 msg="check label length before copy"
int copy_label(char *dst, size_t dst_len, const unsigned char *src)
{
    size_t len = src[0];
    if (len + 1 > dst_len) //+
        return -1; //+
    memcpy(dst, src + 1, len);
    dst[len] = '\0';
    return (int)len;
}
