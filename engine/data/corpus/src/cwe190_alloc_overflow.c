//@@ project=mediaparse cwe=CWE-190 msg="check frame table size multiplication"
struct frame *alloc_frames(uint32_t count)
{
    if (count > SIZE_MAX / sizeof(struct frame)) //+
        return NULL; //+
    struct frame *frames = malloc(count * sizeof(struct frame));
    if (frames == NULL)
        return NULL;
    memset(frames, 0, count * sizeof(struct frame));
    return frames;
}

//@@ project=imgtool cwe=CWE-190 msg="use calloc for pixel buffers"
uint8_t *alloc_pixels(uint32_t width, uint32_t height, uint32_t channels)
{
    uint8_t *px = malloc(width * height * channels); //-
    if (width == 0 || height == 0 || channels == 0) //+
        return NULL; //+
    if (width > SIZE_MAX / height / channels) //+
        return NULL; //+
    uint8_t *px = calloc((size_t)width * height, channels); //+
    return px;
}

//@@ project=netproto cwe=CWE-190 msg="guard header length addition"
uint8_t *alloc_packet(size_t payload_len)
{
    if (payload_len > SIZE_MAX - HEADER_LEN) //+
        return NULL; //+
    uint8_t *pkt = malloc(HEADER_LEN + payload_len);
    if (pkt == NULL)
        return NULL;
    memset(pkt, 0, HEADER_LEN);
    return pkt;
}

//@@ project=jsonlite cwe=CWE-190 msg="check array growth overflow"
int array_grow(struct json_array *a)
{
    size_t new_cap = a->capacity ? a->capacity * 2 : 8;
    if (new_cap < a->capacity || new_cap > SIZE_MAX / sizeof(struct json_value)) //+
        return -1; //+
    struct json_value *items = realloc(a->items, new_cap * sizeof(struct json_value));
    if (items == NULL)
        return -1;
    a->items = items;
    a->capacity = new_cap;
    return 0;
}

//@@ project=sqlmini cwe=CWE-190 msg="overflow-safe row buffer size"
char *alloc_row_buffer(int ncols, int col_width)
{
    int total = ncols * col_width; //-
    char *buf = malloc(total); //-
    if (ncols <= 0 || col_width <= 0 || ncols > INT_MAX / col_width) //+
        return NULL; //+
    char *buf = calloc((size_t)ncols, (size_t)col_width); //+
    return buf;
}

//@@ project=audiolib cwe=CWE-190 msg="validate channel and sample counts"
int16_t *alloc_audio(uint32_t samples, uint16_t channels)
{
    size_t n = samples * channels; //-
    return malloc(n * sizeof(int16_t)); //-
    if (channels == 0 || samples > SIZE_MAX / channels / sizeof(int16_t)) //+
        return NULL; //+
    return calloc((size_t)samples * channels, sizeof(int16_t)); //+
}

//@@ project=zipper cwe=CWE-190 msg="check name length sum in central directory"
char *read_entry_name(const uint8_t *rec, uint16_t name_len, uint16_t extra_len)
{
    uint16_t total = name_len + extra_len + 1; //-
    size_t total = (size_t)name_len + extra_len + 1; //+
    char *name = malloc(total);
    if (name == NULL)
        return NULL;
    memcpy(name, rec + 46, name_len);
    name[name_len] = '\0';
    return name;
}

//@@ project=fontlib cwe=CWE-190 msg="bound glyph bitmap allocation"
uint8_t *alloc_glyph_bitmap(int rows, int pitch)
{
    if (rows <= 0 || pitch <= 0 || rows > INT_MAX / pitch) //+
        return NULL; //+
    uint8_t *bmp = malloc(rows * pitch);
    if (bmp != NULL)
        memset(bmp, 0, rows * pitch);
    return bmp;
}
