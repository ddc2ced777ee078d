//@@ project=configd cwe=CWE-415 msg="avoid double free on error path"
int load_config(const char *path, struct config *cfg)
{
    char *text = read_file(path);
    if (text == NULL)
        return -1;
    if (parse_config(text, cfg) != 0) {
        free(text);
        goto fail; //-
        return -1; //+
    }
    free(text);
    return 0;
fail: //-
    free(text); //-
    return -1; //-
}

//@@ project=kvstore cwe=CWE-415 msg="null out freed value"
void entry_set_value(struct entry *e, const char *value)
{
    free(e->value);
    e->value = NULL; //+
    if (value != NULL)
        e->value = strdup(value);
}

//@@ project=imgtool cwe=CWE-415 msg="single owner frees the pixel buffer"
void image_free(struct image *img)
{
    free(img->pixels);
    if (img->owns_thumbnail) //+
        free(img->thumbnail); //+
    free(img->thumbnail); //-
    free(img);
}

//@@ project=netproto cwe=CWE-415 msg="free buffer once when send fails"
int send_packet(int sock, uint8_t *buf, size_t len)
{
    ssize_t n = send(sock, buf, len, 0);
    if (n < 0) {
        free(buf);
        return -1;
    }
    free(buf);
    if ((size_t)n != len) { //-
        free(buf); //-
        return -1; //-
    } //-
    return 0; //-
    return (size_t)n == len ? 0 : -1; //+
}

//@@ project=listlib cwe=CWE-415 msg="do not free items twice in destroy"
void list_destroy(struct list *l, void (*free_item)(void *))
{
    for (struct node *n = l->head; n != NULL; ) {
        struct node *next = n->next;
        free_item(n->item);
        free(n);
        n = next;
    }
    for (struct node *n = l->head; n != NULL; n = n->next) //-
        free(n->item); //-
    l->head = NULL; //+
    free(l);
}

//@@ project=ftpd cwe=CWE-415 msg="reset path after freeing on chdir failure"
int change_dir(struct ftp_session *s, const char *dir)
{
    free(s->cwd);
    s->cwd = NULL; //+
    if (chdir(dir) != 0)
        return -1;
    s->cwd = strdup(dir);
    return s->cwd ? 0 : -1;
}

//@@ project=xmlmini cwe=CWE-415 msg="tree free handles shared attribute string"
void attr_free(struct xml_attr *a)
{
    if (a->value != a->name) //+
        free(a->value);
    free(a->name);
    free(a);
}
