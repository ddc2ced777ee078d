//@@ project=mediaparse cwe=CWE-787 msg="validate chunk size against buffer"
int read_chunk(FILE *fp, uint8_t *buf, size_t buf_size)
{
    uint32_t size;
    if (fread(&size, sizeof(size), 1, fp) != 1)
        return -1;
    if (size > buf_size) //+
        return -1; //+
    if (fread(buf, 1, size, fp) != size)
        return -1;
    return (int)size;
}

//@@ project=logd cwe=CWE-787 msg="format log line with snprintf"
void format_entry(char *out, const struct log_entry *e)
{
    sprintf(out, "%s [%s] %s: %s", e->timestamp, e->level, e->source, e->text); //-
    snprintf(out, LOG_LINE_MAX, "%s [%s] %s: %s", e->timestamp, e->level, e->source, e->text); //+
}

//@@ project=imgtool cwe=CWE-787 msg="check row stride before copying pixels"
int copy_rows(struct image *dst, const struct image *src)
{
    if (src->height > dst->height || src->stride > dst->stride) //+
        return -1; //+
    for (int y = 0; y < src->height; y++) {
        memcpy(dst->pixels + y * dst->stride, src->pixels + y * src->stride, src->stride);
    }
    return 0;
}

//@@ project=netproto cwe=CWE-787 msg="bound option parsing by packet length"
int parse_options(const uint8_t *pkt, size_t len, struct opt *opts, int max_opts)
{
    int n = 0;
    size_t i = 0;
    while (i + 1 < len) {
        if (n >= max_opts) //+
            return -1; //+
        opts[n].type = pkt[i];
        opts[n].len = pkt[i + 1];
        if (i + 2 + opts[n].len > len) //+
            return -1; //+
        i += 2 + opts[n].len;
        n++;
    }
    return n;
}

//@@ project=usbstack cwe=CWE-787 msg="validate descriptor length"
int store_descriptor(struct device *dev, const uint8_t *desc, size_t len)
{
    if (len > sizeof(dev->descriptor)) //+
        return -EINVAL; //+
    memcpy(dev->descriptor, desc, len);
    dev->descriptor_len = len;
    return 0;
}

//@@ project=shellkit cwe=CWE-787 msg="build prompt with bounded formatting"
void build_prompt(char *prompt, const char *user, const char *host, const char *cwd)
{
    sprintf(prompt, "%s@%s:%s$ ", user, host, cwd); //-
    snprintf(prompt, PROMPT_MAX, "%s@%s:%s$ ", user, host, cwd); //+
}

//@@ project=fontlib cwe=CWE-787 msg="check glyph index before writing"
int set_glyph_width(struct font *f, unsigned int glyph, int width)
{
    if (glyph >= f->num_glyphs) //+
        return -1; //+
    f->widths[glyph] = width;
    return 0;
}

//@@ project=tarx cwe=CWE-787 msg="bound header name copy"
int read_header_name(const struct tar_header *h, char *name, size_t name_len)
{
    size_t n = strnlen(h->name, sizeof(h->name));
    if (n >= name_len) //+
        return -1; //+
    memcpy(name, h->name, n);
    name[n] = '\0';
    return 0;
}

//@@ project=sensord cwe=CWE-787 msg="validate sample count from device"
int read_samples(int fd, int16_t *samples, size_t capacity)
{
    uint16_t count;
    if (read(fd, &count, sizeof(count)) != sizeof(count))
        return -1;
    if (count > capacity) //+
        return -1; //+
    if (read(fd, samples, count * sizeof(int16_t)) < 0)
        return -1;
    return count;
}
