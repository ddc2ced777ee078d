//@@ project=strutils cwe=CWE-193 msg="fix off-by-one in terminator write"
void copy_token(char *dst, size_t dst_len, const char *src, size_t n)
{
    if (n > dst_len) //-
        n = dst_len; //-
    if (n >= dst_len) //+
        n = dst_len - 1; //+
    memcpy(dst, src, n);
    dst[n] = '\0';
}

//@@ project=csvkit cwe=CWE-193 msg="loop bound excludes terminator slot"
int split_fields(char *line, char **fields, int max_fields)
{
    int n = 0;
    char *tok = strtok(line, ",");
    while (tok != NULL && n <= max_fields) { //-
    while (tok != NULL && n < max_fields) { //+
        fields[n++] = tok;
        tok = strtok(NULL, ",");
    }
    return n;
}

//@@ project=bitmap cwe=CWE-193 msg="use strict bound when filling rows"
void clear_rows(uint8_t rows[][ROW_BYTES], int nrows)
{
    for (int i = 0; i <= nrows; i++) { //-
    for (int i = 0; i < nrows; i++) { //+
        memset(rows[i], 0, ROW_BYTES);
    }
}

//@@ project=hexdump cwe=CWE-193 msg="reserve room for the terminator"
void to_hex(const uint8_t *data, size_t len, char *out, size_t out_len)
{
    static const char digits[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < len && j + 2 <= out_len; i++) { //-
    for (size_t i = 0; i < len && j + 2 < out_len; i++) { //+
        out[j++] = digits[data[i] >> 4];
        out[j++] = digits[data[i] & 0xf];
    }
    out[j] = '\0';
}

//@@ project=kvstore cwe=CWE-193 msg="fix key buffer size computation"
char *make_key(const char *bucket, const char *name)
{
    size_t len = strlen(bucket) + strlen(name) + 1; //-
    size_t len = strlen(bucket) + strlen(name) + 2; //+
    char *key = malloc(len);
    if (key == NULL)
        return NULL;
    snprintf(key, len, "%s/%s", bucket, name);
    return key;
}

//@@ project=ringbuf cwe=CWE-193 msg="wrap index at capacity, not capacity+1"
void ring_push(struct ring *r, int value)
{
    r->data[r->head] = value;
    r->head++;
    if (r->head > r->capacity) //-
    if (r->head >= r->capacity) //+
        r->head = 0;
    if (r->count < r->capacity)
        r->count++;
}

//@@ project=argparse cwe=CWE-193 msg="argv scan must stop before argc"
const char *find_option(int argc, char **argv, const char *name)
{
    for (int i = 1; i <= argc; i++) { //-
    for (int i = 1; i < argc - 1; i++) { //+
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    }
    return NULL;
}

//@@ project=pathlib cwe=CWE-193 msg="account for separator when joining"
int path_join(char *out, size_t out_len, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb > out_len) //-
    if (la + lb + 2 > out_len) //+
        return -1;
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb);
    out[la + 1 + lb] = '\0';
    return 0;
}
