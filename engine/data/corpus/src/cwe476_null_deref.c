//@@ project=kvstore cwe=CWE-476 msg="check malloc result before use"
struct entry *entry_new(const char *key, const char *value)
{
    struct entry *e = malloc(sizeof(*e));
    if (e == NULL) //+
        return NULL; //+
    e->key = strdup(key);
    e->value = strdup(value);
    e->next = NULL;
    return e;
}

//@@ project=jsonlite cwe=CWE-476 msg="handle allocation failure in string dup"
char *json_strdup(const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL) //+
        return NULL; //+
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

//@@ project=netproto cwe=CWE-476 msg="check session lookup result"
int handle_ack(struct server *srv, uint32_t session_id, uint32_t seq)
{
    struct session *s = find_session(srv, session_id);
    if (s == NULL) //+
        return -1; //+
    s->acked = seq;
    s->last_seen = time(NULL);
    return 0;
}

//@@ project=csvkit cwe=CWE-476 msg="check fopen before reading"
int count_lines(const char *path)
{
    FILE *fp = fopen(path, "r");
    int lines = 0, c;
    if (fp == NULL) //+
        return -1; //+
    while ((c = fgetc(fp)) != EOF)
        if (c == '\n')
            lines++;
    fclose(fp);
    return lines;
}

//@@ project=configd cwe=CWE-476 msg="getenv may return NULL"
int config_home(char *out, size_t out_len)
{
    const char *home = getenv("HOME");
    if (home == NULL) //+
        return -1; //+
    int n = snprintf(out, out_len, "%s/.configd", home);
    return (n < 0 || (size_t)n >= out_len) ? -1 : 0;
}

//@@ project=listlib cwe=CWE-476 msg="check node allocation in push"
int list_push(struct list *l, void *item)
{
    struct node *n = malloc(sizeof(*n));
    if (n == NULL) //+
        return -1; //+
    n->item = item;
    n->next = l->head;
    l->head = n;
    l->len++;
    return 0;
}

//@@ project=xmlmini cwe=CWE-476 msg="attribute may be absent"
int node_width(const struct xml_node *node)
{
    const char *w = xml_get_attr(node, "width");
    if (w == NULL) //+
        return 0; //+
    return atoi(w);
}

//@@ project=tinyhttpd cwe=CWE-476 msg="check strchr result in header parsing"
int parse_header(char *line, struct header *h)
{
    char *colon = strchr(line, ':');
    if (colon == NULL) //+
        return -1; //+
    *colon = '\0';
    h->name = line;
    h->value = colon + 1;
    while (*h->value == ' ')
        h->value++;
    return 0;
}
