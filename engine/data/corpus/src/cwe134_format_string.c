//@@ project=logd cwe=CWE-134 msg="do not use message as format"
void log_user_message(FILE *out, const char *msg)
{
    fprintf(out, msg); //-
    fprintf(out, "%s", msg); //+
    fputc('\n', out);
}

//@@ project=syslogger cwe=CWE-134 msg="pass constant format to syslog"
void report_client_error(const char *client, const char *detail)
{
    char line[512];
    snprintf(line, sizeof(line), "client %s: %s", client, detail);
    syslog(LOG_ERR, line); //-
    syslog(LOG_ERR, "%s", line); //+
}

//@@ project=cliutils cwe=CWE-134 msg="print banner with constant format"
void print_banner(const char *title)
{
    printf(title); //-
    printf("%s", title); //+
    printf("\n");
    for (size_t i = 0; i < strlen(title); i++)
        putchar('=');
    putchar('\n');
}

//@@ project=ircbot cwe=CWE-134 msg="fix format string in reply"
int send_reply(int sock, const char *nick, const char *text)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), text); //-
    int n = snprintf(buf, sizeof(buf), "%s", text); //+
    if (n < 0)
        return -1;
    return send_line(sock, nick, buf);
}

//@@ project=errlib cwe=CWE-134 msg="error helper treats user text as data"
void die_with(const char *context, const char *reason)
{
    fprintf(stderr, "%s: ", context);
    fprintf(stderr, reason); //-
    fprintf(stderr, "%s", reason); //+
    fprintf(stderr, "\n");
    exit(1);
}

//@@ project=guistub cwe=CWE-134 msg="status bar text is not a format"
void set_status(struct window *w, const char *text)
{
    char status[256];
    sprintf(status, text); //-
    snprintf(status, sizeof(status), "%s", text); //+
    window_draw_status(w, status);
}

//@@ project=ftpd cwe=CWE-134 msg="log filenames with constant format"
void log_transfer(FILE *log, const char *user, const char *filename)
{
    fprintf(log, "user %s retrieved ", user);
    fprintf(log, filename); //-
    fprintf(log, "%s", filename); //+
    fprintf(log, "\n");
    fflush(log);
}

//@@ project=dbshell cwe=CWE-134 msg="echo query with constant format"
void echo_query(const char *query)
{
    if (verbose) {
        printf(query); //-
        printf("%s", query); //+
        printf(";\n");
    }
}
