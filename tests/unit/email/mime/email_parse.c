/*
 * email_parse.c - prints what sb_mail_parse makes of one message (argv[1])
 * as a JSON object on stdout, for the black-box corpus tests.  Not a test
 * itself: exit 0 when the message was parsed and printed, 2 on bad usage
 * or an unreadable file, 3 when a string was not valid UTF-8.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mime.h"

/* The whole file in a malloc'd buffer, or NULL. */
static char *parse_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* A JSON string, or JSON null for NULL; sets *bad when s is not UTF-8. */
static json_t *parse_str(const char *s, int *bad)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j == NULL) {
        *bad = 1;
        return json_null();
    }
    return j;
}

static json_t *parse_files(const sb_mail_t *m, int *bad)
{
    json_t *files = json_array();
    for (size_t i = 0; i < m->nfiles; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "filename", parse_str(m->files[i].filename, bad));
        json_object_set_new(f, "content_type", parse_str(m->files[i].content_type, bad));
        json_object_set_new(f, "size", json_integer((json_int_t)m->files[i].size));
        json_array_append_new(files, f);
    }
    return files;
}

static json_t *parse_json(const sb_mail_t *m, int *bad)
{
    json_t *o = json_object();
    json_object_set_new(o, "from_addr", parse_str(m->from_addr, bad));
    json_object_set_new(o, "from_name", parse_str(m->from_name, bad));
    json_object_set_new(o, "subject", parse_str(m->subject, bad));
    json_object_set_new(o, "message_id", parse_str(m->message_id, bad));
    json_t *refs = json_array();
    for (char **r = m->references; r != NULL && *r != NULL; r++)
        json_array_append_new(refs, parse_str(*r, bad));
    json_object_set_new(o, "references", refs);
    json_object_set_new(o, "text", parse_str(m->text, bad));
    json_object_set_new(o, "text_new_len", json_integer((json_int_t)m->text_new_len));
    json_object_set_new(o, "html", parse_str(m->html, bad));
    json_object_set_new(o, "files", parse_files(m, bad));
    json_object_set_new(o, "auto_submitted", json_boolean(m->auto_submitted));
    return o;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: email_parse FILE\n");
        return 2;
    }
    size_t len = 0;
    char *raw = parse_read(argv[1], &len);
    if (raw == NULL) {
        fprintf(stderr, "could not read \"%s\"\n", argv[1]);
        return 2;
    }
    sb_mail_t *m = NULL;
    int rc = sb_mail_parse(raw, len, &m);
    free(raw);
    if (rc != 0) {
        fprintf(stderr, "could not parse \"%s\": %d\n", argv[1], rc);
        return 1;
    }
    int bad = 0;
    json_t *o = parse_json(m, &bad);
    sb_mail_free(m);
    char *out = json_dumps(o, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    json_decref(o);
    if (out != NULL)
        puts(out);
    free(out);
    return bad ? 3 : 0;
}
