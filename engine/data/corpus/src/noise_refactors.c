//@@ project=strutils cwe=NVD-CWE-noinfo msg="rename variables for clarity"
size_t count_words(const char *s)
{
    size_t c = 0; //-
    int in = 0; //-
    size_t words = 0; //+
    int in_word = 0; //+
    for (; *s; s++) {
        if (isspace((unsigned char)*s)) {
            in = 0; //-
            in_word = 0; //+
        } else if (!in) { //-
            in = 1; //-
            c++; //-
        } else if (!in_word) { //+
            in_word = 1; //+
            words++; //+
        }
    }
    return c; //-
    return words; //+
}

//@@ project=logd cwe=NVD-CWE-noinfo msg="use bool return type"
int is_debug_level(const char *level)
{
    return strcmp(level, "debug") == 0 || strcmp(level, "trace") == 0;
}
bool is_verbose(const char *level) //+
{ //+
    return is_debug_level(level); //+
} //+

//@@ project=gamesrv cwe=NVD-CWE-Other msg="reorder score update"
void add_score(struct player *p, int points)
{
    p->score += points;
    p->rounds++; //-
    p->last_points = points;
    p->rounds++; //+
}

//@@ project=imgtool cwe=NVD-CWE-noinfo msg="extract clamp helper"
static uint8_t clamp_channel(int v)
{
    if (v < 0)
        return 0;
    if (v > 255)
        return 255;
    return (uint8_t)v;
}
void brighten(uint8_t *px, size_t n, int delta)
{
    for (size_t i = 0; i < n; i++) {
        int v = px[i] + delta; //-
        px[i] = v < 0 ? 0 : (v > 255 ? 255 : v); //-
        px[i] = clamp_channel(px[i] + delta); //+
    }
}
