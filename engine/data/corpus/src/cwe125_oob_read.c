//@@ project=netproto cwe=CWE-125 msg="check length before reading TLV value"
int read_tlv(const uint8_t *buf, size_t len, struct tlv *out)
{
    if (len < 2)
        return -1;
    out->type = buf[0];
    out->len = buf[1];
    if ((size_t)out->len + 2 > len) //+
        return -1; //+
    out->value = buf + 2;
    return out->len + 2;
}

//@@ project=fontlib cwe=CWE-125 msg="bound glyph offset lookup"
uint32_t glyph_offset(const struct font *f, unsigned int glyph)
{
    if (glyph + 1 >= f->num_offsets) //+
        return 0; //+
    return f->offsets[glyph + 1] - f->offsets[glyph];
}

//@@ project=mediaparse cwe=CWE-125 msg="validate atom size while walking"
const uint8_t *find_atom(const uint8_t *p, size_t len, uint32_t tag)
{
    while (len >= 8) {
        uint32_t size = read_be32(p);
        if (size < 8 || size > len) //+
            return NULL; //+
        if (read_be32(p + 4) == tag)
            return p;
        p += size;
        len -= size;
    }
    return NULL;
}

//@@ project=dnsd cwe=CWE-125 msg="stop name decoding at packet end"
int skip_name(const uint8_t *pkt, size_t len, size_t off)
{
    while (off < len && pkt[off] != 0) { //-
        off += pkt[off] + 1; //-
    while (off < len && pkt[off] != 0) { //+
        if (off + pkt[off] + 1 > len) //+
            return -1; //+
        off += pkt[off] + 1; //+
    }
    return off < len ? (int)off + 1 : -1;
}

//@@ project=csvkit cwe=CWE-125 msg="column index checked against field count"
const char *get_field(const struct row *r, int col)
{
    if (col < 0 || col >= r->nfields) //+
        return NULL; //+
    return r->fields[col];
}

//@@ project=usbstack cwe=CWE-125 msg="string descriptor index bound"
const char *string_descriptor(const struct device *dev, uint8_t index)
{
    if (index == 0) //-
    if (index == 0 || index > dev->num_strings) //+
        return NULL;
    return dev->strings[index - 1];
}
