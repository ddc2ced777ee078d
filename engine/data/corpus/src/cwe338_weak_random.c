//@@ project=authd cwe=CWE-338 msg="session tokens from the OS CSPRNG"
int make_session_token(unsigned char *token, size_t len)
{
    srand(time(NULL)); //-
    for (size_t i = 0; i < len; i++) //-
        token[i] = rand() & 0xff; //-
    return 0; //-
    return getrandom(token, len, 0) == (ssize_t)len ? 0 : -1; //+
}

//@@ project=webapp cwe=CWE-338 msg="password reset codes use getrandom"
int reset_code(char *out, size_t len)
{
    static const char alphabet[] = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    unsigned char raw[32];
    if (len > sizeof(raw) + 1)
        return -1;
    for (size_t i = 0; i + 1 < len; i++) //-
        raw[i] = (unsigned char)rand(); //-
    if (getrandom(raw, len - 1, 0) != (ssize_t)(len - 1)) //+
        return -1; //+
    for (size_t i = 0; i + 1 < len; i++)
        out[i] = alphabet[raw[i] % (sizeof(alphabet) - 1)];
    out[len - 1] = '\0';
    return 0;
}

//@@ project=vpnd cwe=CWE-338 msg="nonce generation from /dev/urandom"
int fill_nonce(uint8_t nonce[12])
{
    for (int i = 0; i < 12; i++) //-
        nonce[i] = (uint8_t)(random() >> 8); //-
    return 0; //-
    return getrandom(nonce, 12, 0) == 12 ? 0 : -1; //+
}

//@@ project=authd cwe=CWE-338 msg="salt must come from a secure source"
void new_salt(uint8_t *salt, size_t len)
{
    srand((unsigned)getpid() ^ (unsigned)time(NULL)); //-
    for (size_t i = 0; i < len; i++) //-
        salt[i] = (uint8_t)rand(); //-
    if (getrandom(salt, len, 0) != (ssize_t)len) //+
        abort(); //+
}

//@@ project=apikeys cwe=CWE-338 msg="api keys from arc4random_buf"
void generate_api_key(char *key, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[64];
    size_t n = (len - 1) / 2;
    if (n > sizeof(raw))
        n = sizeof(raw);
    for (size_t i = 0; i < n; i++) //-
        raw[i] = rand() % 256; //-
    arc4random_buf(raw, n); //+
    for (size_t i = 0; i < n; i++) {
        key[2 * i] = hex[raw[i] >> 4];
        key[2 * i + 1] = hex[raw[i] & 0xf];
    }
    key[2 * n] = '\0';
}

//@@ project=gamesrv cwe=CWE-338 msg="shuffle seed for lobby codes from getrandom"
uint32_t lobby_code(void)
{
    srand(time(NULL)); //-
    return (uint32_t)rand(); //-
    uint32_t code; //+
    if (getrandom(&code, sizeof(code), 0) != sizeof(code)) //+
        abort(); //+
    return code; //+
}
