/* Embedded demo corpus: small C functions written the safe way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t copy_name(char *dst, size_t dst_len, const char *src) {
    if (dst == NULL || src == NULL || dst_len == 0) {
        return 0;
    }
    size_t n = strnlen(src, dst_len - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

int read_line(char *buf, size_t len, FILE *fp) {
    if (fgets(buf, (int)len, fp) == NULL) {
        return -1;
    }
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

char *join_path(const char *dir, const char *name) {
    size_t need = strlen(dir) + strlen(name) + 2;
    char *out = malloc(need);
    if (out == NULL) {
        return NULL;
    }
    snprintf(out, need, "%s/%s", dir, name);
    return out;
}

int *alloc_table(size_t count) {
    if (count == 0 || count > SIZE_MAX / sizeof(int)) {
        return NULL;
    }
    int *table = calloc(count, sizeof(int));
    return table;
}

void log_message(const char *msg) {
    printf("%s\n", msg);
}

int sum_array(const int *values, size_t count, long *out) {
    long total = 0;
    for (size_t i = 0; i < count; i++) {
        total += values[i];
    }
    *out = total;
    return 0;
}

void free_buffer(char **buf) {
    if (buf != NULL && *buf != NULL) {
        free(*buf);
        *buf = NULL;
    }
}

int parse_port(const char *text) {
    char *end = NULL;
    long port = strtol(text, &end, 10);
    if (end == text || *end != '\0' || port < 1 || port > 65535) {
        return -1;
    }
    return (int)port;
}

int copy_bytes(unsigned char *dst, size_t dst_len, const unsigned char *src, size_t n) {
    if (n > dst_len) {
        return -1;
    }
    memcpy(dst, src, n);
    return 0;
}

char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, s, n);
    return copy;
}
