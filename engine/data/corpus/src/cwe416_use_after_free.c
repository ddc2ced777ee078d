//@@ project=listlib cwe=CWE-416 msg="read next pointer before freeing node"
void list_clear(struct list *l)
{
    struct node *n = l->head;
    while (n != NULL) {
        free(n); //-
        n = n->next; //-
        struct node *next = n->next; //+
        free(n); //+
        n = next; //+
    }
    l->head = NULL;
    l->len = 0;
}

//@@ project=netproto cwe=CWE-416 msg="log before closing session"
void close_session(struct server *srv, struct session *s)
{
    remove_session(srv, s);
    free(s); //-
    log_info("closed session %u", s->id); //-
    log_info("closed session %u", s->id); //+
    free(s); //+
}

//@@ project=cache cwe=CWE-416 msg="return copy, not evicted entry"
char *cache_get_copy(struct cache *c, const char *key)
{
    struct item *it = cache_lookup(c, key);
    if (it == NULL)
        return NULL;
    cache_touch(c, it);
    cache_evict_expired(c); //-
    return it->value; //-
    char *copy = strdup(it->value); //+
    cache_evict_expired(c); //+
    return copy; //+
}

//@@ project=guistub cwe=CWE-416 msg="clear pointer after destroying window"
void window_close(struct app *app, struct window *w)
{
    window_destroy(w);
    if (app->focused == w) //+
        app->focused = NULL; //+
    app->window_count--;
}

//@@ project=tinyhttpd cwe=CWE-416 msg="do not use request after free"
void finish_request(struct conn *c, struct request *req)
{
    int keep_alive = req->keep_alive; //+
    request_free(req);
    if (req->keep_alive) //-
    if (keep_alive) //+
        conn_reset(c);
    else
        conn_close(c);
}

//@@ project=timerlib cwe=CWE-416 msg="unlink timer before invoking callback"
void fire_timer(struct timer_wheel *tw, struct timer *t)
{
    t->callback(t->arg); //-
    timer_unlink(tw, t); //-
    timer_unlink(tw, t); //+
    t->callback(t->arg); //+
}

//@@ project=strutils cwe=CWE-416 msg="realloc may move buffer"
int sb_append(struct strbuf *sb, const char *s)
{
    size_t n = strlen(s);
    char *old = sb->data; //-
    char *grown = realloc(sb->data, sb->len + n + 1);
    if (grown == NULL)
        return -1;
    memcpy(old + sb->len, s, n + 1); //-
    sb->data = grown;
    memcpy(sb->data + sb->len, s, n + 1); //+
    sb->len += n;
    return 0;
}
