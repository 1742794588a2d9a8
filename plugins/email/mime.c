/*
 * mime.c - email messages for the email channel (see mime.h): a received
 * message parsed with GMime 3 into decoded headers, UTF-8 text, HTML
 * sanitised with libxml2, files and threading keys; and a reply built
 * with GMime.  Not for transport: no sockets, no loop, no logging here.
 */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>
#include <gmime/gmime.h>
#include <libxml/HTMLparser.h>
#include <libxml/HTMLtree.h>
#include <libxml/tree.h>
#include <sodium.h>

#include <switchboard/plugin.h>

#include "mime.h"

/* Deeper MIME nesting than this is ignored: no real mail needs it. */
#define MIME_MAX_DEPTH 64
#define MIME_MAX_REFS 50
/* An encoded-word is at most 75 characters; lenient senders go further. */
#define MIME_EW_MAX 1000
#define MIME_REPLACEMENT "\xEF\xBF\xBD"

/*=========================================================================
 * Library setup
 *=======================================================================*/

static GMimeParserOptions *mime_popts;

static void mime_init_once(void)
{
    /* Raw 8-bit text GMime meets on its own (parameters, filenames) is
     * tried as UTF-8 first, then as the Windows Latin charset. */
    static const char *fallback[] = {"utf-8", "windows-1252", NULL};

    g_mime_init();
    xmlInitParser();
    /* libsodium cannot run without a random source: nothing to answer. */
    if (sodium_init() < 0)
        abort();
    mime_popts = g_mime_parser_options_new();
    g_mime_parser_options_set_rfc2047_compliance_mode(mime_popts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(mime_popts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_parameter_compliance_mode(mime_popts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_allow_addresses_without_domain(mime_popts, TRUE);
    g_mime_parser_options_set_fallback_charsets(mime_popts, fallback);
}

/* Each process of the plugin is single-threaded: a flag is enough, and
 * unlike a pthread_once it allows initialising again after a shutdown. */
static void mime_init(void)
{
    if (mime_popts == NULL)
        mime_init_once();
}

void sb_mail_shutdown(void)
{
    if (mime_popts == NULL)
        return;
    g_mime_parser_options_free(mime_popts);
    mime_popts = NULL;
    g_mime_shutdown();
    xmlCleanupParser();
}

/*=========================================================================
 * Charsets
 *=======================================================================*/

/*
 * Labels that mail uses for a charset iconv knows under another name, or
 * that senders use for its Windows superset (as browsers do: text labelled
 * GB2312 or Shift_JIS is usually GBK or CP932).
 */
static const char *mime_charset_alias(const char *cs)
{
    static const char *const map[][2] = {
        {"ks_c_5601-1987", "CP949"}, {"ks_c_5601", "CP949"},   {"ksc5601", "CP949"},
        {"ksc_5601", "CP949"},       {"euc-kr", "CP949"},      {"gb2312", "GB18030"},
        {"gbk", "GB18030"},          {"x-gbk", "GB18030"},     {"cp936", "GB18030"},
        {"shift_jis", "CP932"},      {"sjis", "CP932"},        {"x-sjis", "CP932"},
        {"shift-jis", "CP932"},      {"windows-31j", "CP932"}, {"iso-8859-1", "WINDOWS-1252"},
        {"latin1", "WINDOWS-1252"},  {"tis-620", "CP874"},     {"x-mac-roman", "MACINTOSH"},
    };

    for (size_t i = 0; i < G_N_ELEMENTS(map); i++)
        if (g_ascii_strcasecmp(cs, map[i][0]) == 0)
            return map[i][1];
    return cs;
}

/* Charsets whose label says nothing useful about 8-bit bytes. */
static int mime_charset_is_vague(const char *cs)
{
    return cs == NULL || *cs == '\0' || g_ascii_strcasecmp(cs, "us-ascii") == 0 ||
           g_ascii_strcasecmp(cs, "ascii") == 0 || g_ascii_strcasecmp(cs, "unknown-8bit") == 0 ||
           g_ascii_strcasecmp(cs, "x-unknown") == 0 || g_ascii_strcasecmp(cs, "default") == 0;
}

static int mime_charset_is_utf8(const char *cs)
{
    return cs != NULL &&
           (g_ascii_strcasecmp(cs, "utf-8") == 0 || g_ascii_strcasecmp(cs, "utf8") == 0 ||
            g_ascii_strcasecmp(cs, "x-utf8") == 0);
}

/*
 * len bytes in charset cs as UTF-8, each byte iconv refuses replaced by
 * U+FFFD; *ninval counts them.  NULL when iconv does not know cs.
 */
static char *mime_iconv(const char *cs, const char *in, size_t len, size_t *ninval)
{
    iconv_t cd = g_mime_iconv_open("UTF-8", mime_charset_alias(cs));
    if (cd == (iconv_t)-1)
        return NULL;
    GString *out = g_string_sized_new(len + len / 2 + 16);
    char buf[8192];
    char *ip = (char *)in;
    size_t ileft = len;
    *ninval = 0;
    while (ileft > 0) {
        char *op = buf;
        size_t oleft = sizeof buf;
        size_t rc = iconv(cd, &ip, &ileft, &op, &oleft);
        g_string_append_len(out, buf, op - buf);
        if (rc != (size_t)-1 || errno == E2BIG)
            continue;
        /* EILSEQ, or EINVAL for a sequence cut at the end: lose one byte. */
        g_string_append(out, MIME_REPLACEMENT);
        (*ninval)++;
        ip++;
        ileft--;
    }
    char *op = buf;
    size_t oleft = sizeof buf;
    iconv(cd, NULL, NULL, &op, &oleft);
    g_string_append_len(out, buf, op - buf);
    g_mime_iconv_close(cd);
    return g_string_free(out, FALSE);
}

/* Counts valid multi-byte UTF-8 sequences and bytes that fit none. */
static void mime_utf8_census(const char *s, size_t len, size_t *good, size_t *bad)
{
    const char *p = s, *end = s + len;
    *good = *bad = 0;
    while (p < end) {
        const char *stop;
        if (g_utf8_validate(p, end - p, &stop))
            stop = end;
        for (const char *q = p; q < stop; q++)
            if ((unsigned char)*q >= 0xC0)
                (*good)++;
        if (stop >= end)
            break;
        (*bad)++;
        p = stop + 1;
    }
}

/*
 * Undeclared 8-bit text with runs of high bytes is most likely Cyrillic
 * (the one family that mail routinely sent unlabelled).  KOI8-R and
 * windows-1251 are told apart by which of them turns more bytes into the
 * ten most frequent Russian letters (о е а и н т с р в л, either case).
 */
static const char *mime_guess_cyrillic(const unsigned char *s, size_t len)
{
    static const unsigned char koi8[] = {0xCF, 0xEF, 0xC5, 0xE5, 0xC1, 0xE1, 0xC9,
                                         0xE9, 0xCE, 0xEE, 0xD4, 0xF4, 0xD3, 0xF3,
                                         0xD2, 0xF2, 0xD7, 0xF7, 0xCC, 0xEC};
    static const unsigned char cp1251[] = {0xEE, 0xCE, 0xE5, 0xC5, 0xE0, 0xC0, 0xE8,
                                           0xC8, 0xED, 0xCD, 0xF2, 0xD2, 0xF1, 0xD1,
                                           0xF0, 0xD0, 0xE2, 0xC2, 0xEB, 0xCB};
    size_t run = 0, longest = 0, k = 0, w = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x80) {
            run = 0;
            continue;
        }
        run++;
        longest = run > longest ? run : longest;
        k += memchr(koi8, s[i], sizeof koi8) != NULL;
        w += memchr(cp1251, s[i], sizeof cp1251) != NULL;
    }
    if (longest < 3)
        return NULL;
    return k >= w ? "KOI8-R" : "WINDOWS-1251";
}

/* Whether every high byte is a Latin-1 letter beside an ASCII letter ("Håvard"). */
static int mime_looks_latin(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x80)
            continue;
        if (s[i] < 0xC0 || s[i] == 0xD7 || s[i] == 0xF7)
            return 0;
        int before = i > 0 && g_ascii_isalpha(s[i - 1]);
        int after = i + 1 < len && g_ascii_isalpha(s[i + 1]);
        if (!before && !after)
            return 0;
    }
    return 1;
}

/*
 * Raw 8-bit header text of unknown charset as UTF-8.  The guess, in
 * order: valid UTF-8 as it is; mostly UTF-8 with its bad bytes replaced;
 * hint (the charset the message declares for its text) when it converts
 * cleanly; Cyrillic runs as KOI8-R or windows-1251; Latin-1 letters inside
 * words as windows-1252; else the charset last (NULL: U+FFFD for each
 * byte that is not UTF-8).
 */
static char *mime_guess_utf8(const char *s, size_t len, const char *hint, const char *last)
{
    size_t good, bad, ninval;
    mime_utf8_census(s, len, &good, &bad);
    if (bad == 0 || (good > 0 && bad <= good))
        return g_utf8_make_valid(s, len);
    if (!mime_charset_is_vague(hint)) {
        char *out = mime_iconv(hint, s, len, &ninval);
        if (out != NULL && ninval == 0)
            return out;
        g_free(out);
    }
    const char *cs = mime_guess_cyrillic((const unsigned char *)s, len);
    if (cs == NULL && mime_looks_latin((const unsigned char *)s, len))
        cs = "WINDOWS-1252";
    cs = cs != NULL ? cs : last;
    if (cs != NULL) {
        char *out = mime_iconv(cs, s, len, &ninval);
        if (out != NULL)
            return out;
    }
    return g_utf8_make_valid(s, len);
}

/*
 * A part's bytes in its declared charset as UTF-8 with LF line ends and no
 * NUL.  A vague or unknown label means a guess (mime_guess_utf8 with the
 * message's hint) that falls back to windows-1252.
 */
static char *mime_text_utf8(const char *cs, const char *in, size_t len, const char *hint)
{
    char *conv = NULL;
    size_t ninval;
    if (mime_charset_is_utf8(cs))
        conv = g_utf8_make_valid(in, len);
    else if (!mime_charset_is_vague(cs))
        conv = mime_iconv(cs, in, len, &ninval);
    if (conv == NULL)
        conv = mime_guess_utf8(in, len, hint, "WINDOWS-1252");
    /* CRLF and bare CR become LF; iconv may have kept NULs from the input. */
    char *w = conv;
    for (const char *r = conv; *r != '\0'; r++) {
        if (*r == '\r') {
            *w++ = '\n';
            if (r[1] == '\n')
                r++;
            continue;
        }
        *w++ = *r;
    }
    *w = '\0';
    return conv;
}

/*=========================================================================
 * Headers
 *=======================================================================*/

/* The raw value of the first header called name, unfolded and trimmed; NULL if none. */
static char *mime_header_raw(GMimeObject *obj, const char *name)
{
    GMimeHeaderList *list = g_mime_object_get_header_list(obj);
    GMimeHeader *h = list != NULL ? g_mime_header_list_get_header(list, name) : NULL;
    const char *raw = h != NULL ? g_mime_header_get_raw_value(h) : NULL;
    if (raw == NULL)
        return NULL;
    GString *s = g_string_sized_new(strlen(raw));
    for (const char *p = raw; *p != '\0'; p++)
        if (*p != '\r' && *p != '\n')
            g_string_append_c(s, *p);
    return g_strstrip(g_string_free(s, FALSE));
}

/* The end of the encoded-word "=?cs?E?text?=" at p, or NULL when p starts none. */
static const char *mime_encoded_word_end(const char *p)
{
    if (p[0] != '=' || p[1] != '?')
        return NULL;
    const char *q = p + 2;
    while (*q != '\0' && *q != '?' && !g_ascii_isspace(*q))
        q++;
    if (q == p + 2 || q[0] != '?' || strchr("bBqQ", q[1]) == NULL || q[1] == '\0' || q[2] != '?')
        return NULL;
    for (q += 3; *q != '\0' && q - p < MIME_EW_MAX; q++)
        if (q[0] == '?' && q[1] == '=')
            return q + 2;
    return NULL;
}

/*
 * A header value with raw 8-bit text outside encoded-words converted to
 * UTF-8 (mime_guess_utf8), encoded-words left for GMime to decode: an
 * encoded-word may itself hold raw bytes of its own charset.
 */
static char *mime_header_prepare(const char *raw, const char *hint)
{
    if (g_utf8_validate(raw, -1, NULL))
        return g_strdup(raw);
    GString *out = g_string_sized_new(strlen(raw) * 2);
    const char *p = raw;
    while (*p != '\0') {
        const char *end = mime_encoded_word_end(p);
        if (end != NULL) {
            g_string_append_len(out, p, end - p);
            p = end;
            continue;
        }
        const char *q = p + 1;
        while (*q != '\0' && !(q[0] == '=' && q[1] == '?' && mime_encoded_word_end(q) != NULL))
            q++;
        char *conv = mime_guess_utf8(p, q - p, hint, NULL);
        g_string_append(out, conv);
        g_free(conv);
        p = q;
    }
    return g_string_free(out, FALSE);
}

/* Appends the bytes an encoded-word's payload stands for. */
static void mime_ew_payload(GByteArray *out, char enc, const char *p, size_t n)
{
    if (enc == 'B' || enc == 'b') {
        /* Each word alone: excess "=" padding must not stop the next one. */
        guchar *buf = g_malloc(n * 3 / 4 + 4);
        gint state = 0;
        guint save = 0;
        gsize got = g_base64_decode_step(p, n, buf, &state, &save);
        g_byte_array_append(out, buf, got);
        g_free(buf);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        guint8 c = (guint8)p[i];
        if (c == '_') {
            c = ' ';
        } else if (c == '=' && i + 2 < n && g_ascii_isxdigit(p[i + 1]) &&
                   g_ascii_isxdigit(p[i + 2])) {
            c = (guint8)(g_ascii_xdigit_value(p[i + 1]) * 16 + g_ascii_xdigit_value(p[i + 2]));
            i += 2;
        }
        g_byte_array_append(out, &c, 1);
    }
}

/* Appends a run of encoded-words' bytes in charset cs as UTF-8, and empties it. */
static void mime_ew_flush(GString *out, GByteArray *bytes, const char *cs, const char *hint)
{
    if (bytes->len == 0)
        return;
    size_t ninval;
    const char *in = (const char *)bytes->data;
    char *conv = mime_charset_is_utf8(cs) ? g_utf8_make_valid(in, bytes->len)
                                          : mime_iconv(cs, in, bytes->len, &ninval);
    if (conv == NULL)
        conv = mime_guess_utf8(in, bytes->len, hint, NULL);
    g_string_append(out, conv);
    g_free(conv);
    g_byte_array_set_size(bytes, 0);
}

/*
 * RFC 2047 decoding, lenient as mail needs: encoded-words anywhere (inside
 * quotes, next to text), the space between two of them dropped, and the
 * bytes of adjacent words in one charset joined before conversion (senders
 * split characters across words).  s is UTF-8 outside encoded-words
 * (mime_header_prepare); an encoded-word may hold raw bytes of its charset.
 */
static char *mime_rfc2047(const char *s, const char *hint)
{
    GString *out = g_string_sized_new(strlen(s));
    GByteArray *bytes = g_byte_array_new();
    char cs[64] = "";
    const char *p = s;
    while (*p != '\0') {
        const char *end = mime_encoded_word_end(p);
        if (end == NULL) {
            mime_ew_flush(out, bytes, cs, hint);
            g_string_append_c(out, *p++);
            continue;
        }
        const char *q1 = strchr(p + 2, '?');
        char word_cs[64];
        /* "charset*language" (RFC 2231) names the charset before the star. */
        size_t cslen = strcspn(p + 2, "?*");
        snprintf(word_cs, sizeof word_cs, "%.*s", (int)MIN(cslen, sizeof word_cs - 1), p + 2);
        if (g_ascii_strcasecmp(word_cs, cs) != 0) {
            mime_ew_flush(out, bytes, cs, hint);
            memcpy(cs, word_cs, sizeof cs);
        }
        mime_ew_payload(bytes, q1[1], q1 + 3, (size_t)(end - 2 - (q1 + 3)));
        p = end;
        const char *q = p;
        while (*q == ' ' || *q == '\t')
            q++;
        if (q != p && mime_encoded_word_end(q) != NULL)
            p = q;
    }
    mime_ew_flush(out, bytes, cs, hint);
    g_byte_array_unref(bytes);
    char *valid = g_utf8_make_valid(out->str, out->len);
    g_string_free(out, TRUE);
    return valid;
}

/* An unstructured header (Subject) decoded to UTF-8; NULL if absent. */
static char *mime_header_text(GMimeObject *obj, const char *name, const char *hint)
{
    char *raw = mime_header_raw(obj, name);
    if (raw == NULL)
        return NULL;
    char *prep = mime_header_prepare(raw, hint);
    char *out = mime_rfc2047(prep, hint);
    g_free(prep);
    g_free(raw);
    return out;
}

/* The first mailbox of a list, looking into groups. */
static InternetAddressMailbox *mime_first_mailbox(InternetAddressList *list, int depth)
{
    int n = list != NULL ? internet_address_list_length(list) : 0;
    for (int i = 0; i < n && depth < 4; i++) {
        InternetAddress *ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_MAILBOX(ia))
            return INTERNET_ADDRESS_MAILBOX(ia);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            InternetAddressList *members =
                internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia));
            InternetAddressMailbox *mb = mime_first_mailbox(members, depth + 1);
            if (mb != NULL)
                return mb;
        }
    }
    return NULL;
}

/* The From address (lower-cased) and display name of the first mailbox. */
static void mime_from(GMimeObject *obj, const char *hint, sb_mail_t *m)
{
    char *raw = mime_header_raw(obj, "From");
    if (raw == NULL)
        return;
    char *prep = mime_header_prepare(raw, hint);
    InternetAddressList *list = internet_address_list_parse(mime_popts, prep);
    InternetAddressMailbox *mb = mime_first_mailbox(list, 0);
    const char *addr = mb != NULL ? internet_address_mailbox_get_addr(mb) : NULL;
    const char *name = mb != NULL ? internet_address_get_name(INTERNET_ADDRESS(mb)) : NULL;
    if (addr != NULL && *addr != '\0') {
        char *valid = g_utf8_make_valid(addr, -1);
        m->from_addr = g_utf8_strdown(valid, -1);
        g_free(valid);
    }
    if (name != NULL && *name != '\0') {
        /* A quoted encoded-word ("=?UTF-8?B?...?=") breaks RFC 2047 but is
         * common; GMime leaves it encoded, so decode it here. */
        char *dec = strstr(name, "=?") != NULL ? mime_rfc2047(name, hint) : g_strdup(name);
        m->from_name = g_utf8_make_valid(dec, -1);
        g_strstrip(m->from_name);
        g_free(dec);
        if (*m->from_name == '\0')
            g_clear_pointer(&m->from_name, g_free);
    }
    if (list != NULL)
        g_object_unref(list);
    g_free(prep);
    g_free(raw);
}

/* "<id>" from a Message-ID header's raw value; NULL when there is no id. */
static char *mime_msgid_wrap(const char *id)
{
    if (id == NULL || *id == '\0')
        return NULL;
    char *valid = g_utf8_make_valid(id, -1);
    char *out = g_strdup_printf("<%s>", valid);
    g_free(valid);
    return out;
}

static char *mime_message_id(GMimeObject *obj)
{
    char *raw = mime_header_raw(obj, "Message-Id");
    if (raw == NULL)
        return NULL;
    char *id = g_mime_utils_decode_message_id(raw);
    char *out = mime_msgid_wrap(id);
    g_free(id);
    g_free(raw);
    return out;
}

/* Adds "<id>" (taken) to refs unless there already or full. */
static void mime_refs_push(GPtrArray *refs, char *wrapped)
{
    if (refs->len >= MIME_MAX_REFS) {
        g_free(wrapped);
        return;
    }
    for (guint i = 0; i < refs->len; i++) {
        if (strcmp(g_ptr_array_index(refs, i), wrapped) == 0) {
            g_free(wrapped);
            return;
        }
    }
    g_ptr_array_add(refs, wrapped);
}

/* Adds the bare id (GMime's form) to refs as "<id>". */
static void mime_refs_add(GPtrArray *refs, const char *id)
{
    if (id != NULL && *id != '\0')
        mime_refs_push(refs, mime_msgid_wrap(id));
}

/* The ids of a References-like header, in order (reverse: last first). */
static void mime_refs_header(GPtrArray *refs, GMimeObject *obj, const char *name, int reverse)
{
    char *raw = mime_header_raw(obj, name);
    if (raw == NULL)
        return;
    GMimeReferences *list = g_mime_references_parse(mime_popts, raw);
    int n = list != NULL ? g_mime_references_length(list) : 0;
    for (int i = 0; i < n; i++)
        mime_refs_add(refs, g_mime_references_get_message_id(list, reverse ? n - 1 - i : i));
    if (list != NULL)
        g_mime_references_free(list);
    g_free(raw);
}

/*=========================================================================
 * Walking the parts
 *=======================================================================*/

typedef struct mime_walk {
    GMimePart *plain;       /* the first text/plain body part */
    GMimePart *other;       /* the first other text body part (text/x-myown) */
    GMimePart *html;        /* the first text/html body part */
    char *prologue;         /* the text of a multipart that could not be split */
    const char *hint;       /* the first specific charset a part declares */
    GArray *files;          /* of sb_mail_file_t */
    GPtrArray *report_refs; /* Message-IDs of messages a report returns */
} mime_walk_t;

/* Whether a GMime object's content type is type/subtype (case-insensitive). */
static int mime_is(GMimeObject *obj, const char *type, const char *subtype)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    return ct != NULL && g_mime_content_type_is_type(ct, type, subtype);
}

static char *mime_type_of(GMimeObject *obj)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *t = ct != NULL ? g_mime_content_type_get_mime_type(ct) : NULL;
    char *lower = g_ascii_strdown(t != NULL ? t : "application/octet-stream", -1);
    g_free(t);
    return lower;
}

/* A GMime stream's bytes, taken from it (g_free them). */
static unsigned char *mime_stream_take(GMimeStream *mem, size_t *len)
{
    GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
    g_object_unref(mem);
    gsize n = 0;
    guint8 *data = g_byte_array_steal(ba, &n);
    g_byte_array_unref(ba);
    *len = n;
    /* An empty array has no buffer; callers always get one. */
    return data != NULL ? data : g_new0(guint8, 1);
}

/* A leaf part's content, transfer-decoded (bad base64 decodes what it can). */
static unsigned char *mime_part_bytes(GMimePart *part, size_t *len)
{
    GMimeStream *mem = g_mime_stream_mem_new();
    GMimeDataWrapper *content = g_mime_part_get_content(part);
    if (content != NULL)
        g_mime_data_wrapper_write_to_stream(content, mem);
    return mime_stream_take(mem, len);
}

/* A filename made safe to show and store: UTF-8, no path, not blank. */
static char *mime_filename_clean(const char *name)
{
    if (name == NULL)
        return NULL;
    char *valid = g_utf8_make_valid(name, -1);
    const char *base = valid;
    for (const char *p = valid; *p != '\0'; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    char *out = g_strdup(base);
    for (char *p = out; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7F)
            *p = '_';
    g_strstrip(out);
    g_free(valid);
    if (*out == '\0')
        g_clear_pointer(&out, g_free);
    return out;
}

static void mime_file_add(mime_walk_t *w, char *filename, char *type, unsigned char *data,
                          size_t size)
{
    sb_mail_file_t f = {.filename = filename, .content_type = type, .data = data, .size = size};
    g_array_append_val(w->files, f);
}

/* The Message-ID of a message (or header block) held as bytes. */
static void mime_bytes_info(const unsigned char *data, size_t len, char **msgid, char **subject)
{
    GMimeStream *stream = g_mime_stream_mem_new_with_buffer((const char *)data, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, mime_popts);
    if (msg != NULL) {
        if (msgid != NULL)
            *msgid = g_strdup(g_mime_message_get_message_id(msg));
        if (subject != NULL)
            *subject = mime_header_text(GMIME_OBJECT(msg), "Subject", NULL);
        g_object_unref(msg);
    }
    g_object_unref(parser);
    g_object_unref(stream);
}

/* "Subject.eml" for a forwarded message without a filename of its own. */
static char *mime_eml_name(const char *subject)
{
    if (subject == NULL || *subject == '\0')
        return g_strdup("message.eml");
    char *shortened = g_utf8_substring(subject, 0, MIN(g_utf8_strlen(subject, -1), 100));
    char *name = g_strdup_printf("%s.eml", shortened);
    g_free(shortened);
    char *clean = mime_filename_clean(name);
    g_free(name);
    return clean;
}

static char *mime_declared_filename(GMimeObject *obj)
{
    const char *name = GMIME_IS_PART(obj) ? g_mime_part_get_filename(GMIME_PART(obj)) : NULL;
    if (name == NULL)
        name = g_mime_object_get_content_disposition_parameter(obj, "filename");
    if (name == NULL)
        name = g_mime_object_get_content_type_parameter(obj, "name");
    return mime_filename_clean(name);
}

/* A message/rfc822 (or news) part: one file, the embedded message whole. */
static void mime_walk_message(mime_walk_t *w, GMimeMessagePart *mp, int in_report)
{
    GMimeObject *obj = GMIME_OBJECT(mp);
    GMimeMessage *inner = g_mime_message_part_get_message(mp);
    GMimeStream *mem = g_mime_stream_mem_new();
    if (inner != NULL)
        g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, mem);
    size_t len;
    unsigned char *data = mime_stream_take(mem, &len);
    char *name = mime_declared_filename(obj);
    if (name == NULL) {
        char *subject =
            inner != NULL ? mime_header_text(GMIME_OBJECT(inner), "Subject", NULL) : NULL;
        name = mime_eml_name(subject);
        g_free(subject);
    }
    if (in_report && inner != NULL)
        mime_refs_add(w->report_refs, g_mime_message_get_message_id(inner));
    mime_file_add(w, name, g_strdup("message/rfc822"), data, len);
}

/* Text types that are data rather than something to read. */
static int mime_text_is_data(GMimeObject *obj)
{
    static const char *const data_types[] = {
        "calendar",  "vcard", "x-vcard",        "csv",
        "directory", "xml",   "rfc822-headers", "tab-separated-values"};
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    const char *sub = ct != NULL ? g_mime_content_type_get_media_subtype(ct) : NULL;
    for (size_t i = 0; sub != NULL && i < G_N_ELEMENTS(data_types); i++)
        if (g_ascii_strcasecmp(sub, data_types[i]) == 0)
            return 1;
    return 0;
}

/*
 * Whether a text part is a file.  A filename or name parameter makes it
 * one even when blank (name=" " marks the parts a mailer attached, as in
 * forwards with their original text and HTML); so does disposition
 * attachment.
 */
static int mime_text_is_file(GMimeObject *obj)
{
    const char *disp = g_mime_object_get_disposition(obj);
    if (disp != NULL && g_ascii_strcasecmp(disp, "attachment") == 0)
        return 1;
    if (g_mime_object_get_content_disposition_parameter(obj, "filename") != NULL ||
        g_mime_object_get_content_type_parameter(obj, "name") != NULL)
        return 1;
    return mime_text_is_data(obj);
}

/* Machine-readable parts of a report: what they say is in the text. */
static int mime_is_report_data(GMimeObject *obj)
{
    return mime_is(obj, "message", "delivery-status") ||
           mime_is(obj, "message", "global-delivery-status") ||
           mime_is(obj, "message", "disposition-notification") ||
           mime_is(obj, "message", "global-disposition-notification") ||
           mime_is(obj, "message", "feedback-report");
}

static void mime_walk_leaf(mime_walk_t *w, GMimePart *part, int in_report)
{
    GMimeObject *obj = GMIME_OBJECT(part);
    const char *cs = g_mime_object_get_content_type_parameter(obj, "charset");
    if (w->hint == NULL && !mime_charset_is_vague(cs) && !mime_charset_is_utf8(cs))
        w->hint = cs;
    if (mime_is(obj, "text", "*") && !mime_text_is_file(obj)) {
        /* Later body parts (a fragment after an inline image, the
         * alternative already chosen) are body too, never files. */
        if (mime_is(obj, "text", "plain"))
            w->plain = w->plain != NULL ? w->plain : part;
        else if (mime_is(obj, "text", "html"))
            w->html = w->html != NULL ? w->html : part;
        else
            w->other = w->other != NULL ? w->other : part;
        return;
    }
    size_t len;
    unsigned char *data = mime_part_bytes(part, &len);
    int headers = mime_is(obj, "text", "rfc822-headers");
    int message = mime_is(obj, "message", "rfc822") || mime_is(obj, "message", "news") ||
                  mime_is(obj, "message", "global");
    char *name = mime_declared_filename(obj);
    char *msgid = NULL, *subject = NULL;
    /* A message GMime left encoded (base64 message/rfc822) is still a message. */
    if ((in_report && (headers || message)) || (message && name == NULL))
        mime_bytes_info(data, len, &msgid, message && name == NULL ? &subject : NULL);
    if (in_report)
        mime_refs_add(w->report_refs, msgid);
    if (message && name == NULL)
        name = mime_eml_name(subject);
    g_free(msgid);
    g_free(subject);
    mime_file_add(w, name, message ? g_strdup("message/rfc822") : mime_type_of(obj), data, len);
}

static void mime_walk(mime_walk_t *w, GMimeObject *obj, int depth, int in_report)
{
    if (obj == NULL || depth > MIME_MAX_DEPTH || (in_report && mime_is_report_data(obj)))
        return;
    if (GMIME_IS_MESSAGE_PART(obj)) {
        mime_walk_message(w, GMIME_MESSAGE_PART(obj), in_report);
        return;
    }
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        int report = mime_is(obj, "multipart", "report");
        const char *prologue = g_mime_multipart_get_prologue(mp);
        if (n == 0 && w->prologue == NULL && prologue != NULL)
            w->prologue = g_strdup(prologue);
        for (int i = 0; i < n; i++)
            mime_walk(w, g_mime_multipart_get_part(mp, i), depth + 1, report);
        return;
    }
    if (GMIME_IS_PART(obj))
        mime_walk_leaf(w, GMIME_PART(obj), in_report);
}

/*=========================================================================
 * HTML: sanitising and converting to text
 *=======================================================================*/

static htmlDocPtr mime_html_parse(const char *utf8)
{
    size_t len = strlen(utf8);
    if (len == 0)
        return NULL;
    /* The text is UTF-8 already: a <meta charset> must not re-decode it. */
    int opts = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET |
               HTML_PARSE_IGNORE_ENC;
    return htmlReadMemory(utf8, len > INT_MAX ? INT_MAX : (int)len, NULL, "UTF-8", opts);
}

static int mime_name_in(const xmlChar *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (xmlStrcasecmp(name, (const xmlChar *)list[i]) == 0)
            return 1;
    return 0;
}

static int mime_html_forbidden(const xmlChar *name)
{
    static const char *const bad[] = {"script", "style",    "iframe",   "frame",  "frameset",
                                      "object", "embed",    "applet",   "form",   "input",
                                      "button", "select",   "textarea", "link",   "meta",
                                      "base",   "noscript", "template", "portal", "title"};
    return mime_name_in(name, bad, G_N_ELEMENTS(bad));
}

static int mime_html_url_attr(const xmlChar *name)
{
    static const char *const urls[] = {
        "href", "src",      "action", "formaction", "background", "poster",     "lowsrc", "dynsrc",
        "cite", "longdesc", "usemap", "codebase",   "data",       "xlink:href", "srcset", "ping"};
    return mime_name_in(name, urls, G_N_ELEMENTS(urls));
}

/*
 * Whether a URL runs code: javascript:, vbscript: or data: (data:image/
 * allowed in src).  Browsers skip whitespace and control characters
 * inside the scheme, so the comparison does too.
 */
static int mime_html_url_bad(const xmlChar *value, int is_src)
{
    char scheme[16];
    size_t n = 0;
    for (const xmlChar *p = value; *p != '\0' && n < sizeof scheme - 1; p++)
        if (*p > 0x20)
            scheme[n++] = (char)g_ascii_tolower(*p);
    scheme[n] = '\0';
    if (g_str_has_prefix(scheme, "javascript:") || g_str_has_prefix(scheme, "vbscript:"))
        return 1;
    if (g_str_has_prefix(scheme, "data:"))
        return !(is_src && g_str_has_prefix(scheme, "data:image/"));
    return 0;
}

static int mime_html_attr_bad(xmlAttrPtr attr)
{
    const xmlChar *name = attr->name;
    if (g_ascii_strncasecmp((const char *)name, "on", 2) == 0)
        return 1;
    xmlChar *value = xmlNodeGetContent((xmlNodePtr)attr);
    int bad = 0;
    if (value != NULL && mime_html_url_attr(name))
        bad = mime_html_url_bad(value, xmlStrcasecmp(name, (const xmlChar *)"src") == 0);
    /* Old IE ran CSS expression(); a style is kept only without it. */
    if (value != NULL && xmlStrcasecmp(name, (const xmlChar *)"style") == 0)
        bad = xmlStrcasestr(value, (const xmlChar *)"expression") != NULL ||
              xmlStrcasestr(value, (const xmlChar *)"javascript:") != NULL;
    xmlFree(value);
    return bad;
}

static void mime_html_clean(xmlNodePtr node)
{
    while (node != NULL) {
        xmlNodePtr next = node->next;
        int drop = node->type == XML_COMMENT_NODE || node->type == XML_PI_NODE ||
                   (node->type == XML_ELEMENT_NODE && mime_html_forbidden(node->name));
        if (drop) {
            xmlUnlinkNode(node);
            xmlFreeNode(node);
            node = next;
            continue;
        }
        if (node->type == XML_ELEMENT_NODE) {
            xmlAttrPtr attr = node->properties;
            while (attr != NULL) {
                xmlAttrPtr anext = attr->next;
                if (mime_html_attr_bad(attr))
                    xmlRemoveProp(attr);
                attr = anext;
            }
            mime_html_clean(node->children);
        }
        node = next;
    }
}

/* The <body> element, or the root when the parser made none. */
static xmlNodePtr mime_html_body(htmlDocPtr doc)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);
    for (xmlNodePtr n = root != NULL ? root->children : NULL; n != NULL; n = n->next)
        if (n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, (const xmlChar *)"body") == 0)
            return n;
    return root;
}

/* The HTML sanitised: the body's children serialised as UTF-8. */
static char *mime_html_sanitise(const char *utf8)
{
    htmlDocPtr doc = mime_html_parse(utf8);
    if (doc == NULL)
        return g_strdup("");
    xmlNodePtr body = mime_html_body(doc);
    xmlBufferPtr buf = xmlBufferCreate();
    if (body != NULL) {
        mime_html_clean(body->children);
        for (xmlNodePtr n = body->children; n != NULL; n = n->next)
            htmlNodeDump(buf, doc, n);
    }
    char *out = g_utf8_make_valid((const char *)xmlBufferContent(buf), xmlBufferLength(buf));
    xmlBufferFree(buf);
    xmlFreeDoc(doc);
    return out;
}

typedef struct mime_h2t {
    GString *s;
    int pre;
} mime_h2t_t;

static int mime_html_is_block(const xmlChar *name, int *para)
{
    static const char *const paras[] = {"p",  "h1", "h2", "h3",         "h4",    "h5",
                                        "h6", "ul", "ol", "blockquote", "table", "pre"};
    static const char *const blocks[] = {
        "div",     "li",     "tr",      "dd",      "dt",     "dl",       "hr",      "section",
        "article", "header", "footer",  "address", "center", "fieldset", "figure",  "main",
        "nav",     "aside",  "caption", "thead",   "tbody",  "tfoot",    "details", "summary"};
    *para = mime_name_in(name, paras, G_N_ELEMENTS(paras));
    return *para || mime_name_in(name, blocks, G_N_ELEMENTS(blocks));
}

/* Ends the current line so that the text ends with `lines` line breaks. */
static void mime_h2t_break(mime_h2t_t *t, int lines)
{
    while (t->s->len > 0 && t->s->str[t->s->len - 1] == ' ')
        g_string_truncate(t->s, t->s->len - 1);
    if (t->s->len == 0)
        return;
    int have = 0;
    for (gsize i = t->s->len; i > 0 && t->s->str[i - 1] == '\n' && have < lines; i--)
        have++;
    for (; have < lines; have++)
        g_string_append_c(t->s, '\n');
}

static void mime_h2t_text(mime_h2t_t *t, const xmlChar *text)
{
    for (const xmlChar *p = text; p != NULL && *p != '\0'; p++) {
        if (t->pre) {
            if (*p != '\r')
                g_string_append_c(t->s, (char)*p);
            continue;
        }
        if (g_ascii_isspace(*p)) {
            char last = t->s->len > 0 ? t->s->str[t->s->len - 1] : '\n';
            if (last != ' ' && last != '\n')
                g_string_append_c(t->s, ' ');
            continue;
        }
        g_string_append_c(t->s, (char)*p);
    }
}

static void mime_h2t_walk(mime_h2t_t *t, xmlNodePtr node)
{
    static const char *const skip[] = {"script", "style", "head", "title", "noscript", "template"};
    for (; node != NULL; node = node->next) {
        if (node->type == XML_TEXT_NODE || node->type == XML_CDATA_SECTION_NODE) {
            mime_h2t_text(t, node->content);
            continue;
        }
        if (node->type != XML_ELEMENT_NODE || mime_name_in(node->name, skip, G_N_ELEMENTS(skip)))
            continue;
        if (xmlStrcasecmp(node->name, (const xmlChar *)"br") == 0) {
            mime_h2t_break(t, 0);
            g_string_append_c(t->s, '\n');
            continue;
        }
        int para, block = mime_html_is_block(node->name, &para);
        int pre = xmlStrcasecmp(node->name, (const xmlChar *)"pre") == 0;
        if (block)
            mime_h2t_break(t, para ? 2 : 1);
        if (xmlStrcasecmp(node->name, (const xmlChar *)"li") == 0)
            g_string_append(t->s, "- ");
        t->pre += pre;
        mime_h2t_walk(t, node->children);
        t->pre -= pre;
        if (block)
            mime_h2t_break(t, para ? 2 : 1);
        else if (mime_name_in(node->name, (const char *const[]){"td", "th"}, 2))
            mime_h2t_text(t, (const xmlChar *)" ");
    }
}

/* The HTML as plain text: blocks on their own lines, spaces collapsed. */
static char *mime_html_text(const char *utf8)
{
    htmlDocPtr doc = mime_html_parse(utf8);
    if (doc == NULL)
        return g_strdup("");
    mime_h2t_t t = {.s = g_string_new(NULL), .pre = 0};
    mime_h2t_walk(&t, xmlDocGetRootElement(doc));
    xmlFreeDoc(doc);
    char *out = g_utf8_make_valid(t.s->str, t.s->len);
    g_string_free(t.s, TRUE);
    return g_strstrip(out);
}

/*=========================================================================
 * Quoted history
 *=======================================================================*/

static int mime_line_ends_with(const char *line, size_t len, const char *suffix)
{
    while (len > 0 && g_ascii_isspace(line[len - 1]))
        len--;
    size_t n = strlen(suffix);
    return len >= n && memcmp(line + len - n, suffix, n) == 0;
}

static int mime_line_starts_with(const char *line, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && g_ascii_strncasecmp(line, prefix, n) == 0;
}

/* The end of "On <date>, <name> wrote:" and of its German and French forms. */
static int mime_line_is_attribution(const char *line, size_t len)
{
    static const char *const verbs[] = {" wrote", " schrieb",
                                        " a \xC3\xA9"
                                        "crit"};
    if (!mime_line_ends_with(line, len, ":"))
        return 0;
    for (size_t i = 0; i < G_N_ELEMENTS(verbs); i++)
        if (g_strstr_len(line, len, verbs[i]) != NULL ||
            mime_line_starts_with(line, len, verbs[i] + 1))
            return 1;
    return 0;
}

static int mime_line_opens_attribution(const char *line, size_t len)
{
    return mime_line_starts_with(line, len, "On ") || mime_line_starts_with(line, len, "Am ") ||
           mime_line_starts_with(line, len, "Le ");
}

/* "-----Original Message-----" in its spacings. */
static int mime_line_is_original(const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && (line[i] == '-' || line[i] == ' '))
        i++;
    return i >= 3 && mime_line_starts_with(line + i, len - i, "Original Message");
}

/* Outlook's rule: a line of underscores, then "From:" on the next line. */
static int mime_line_is_outlook_rule(const char *line, size_t len, const char *next, size_t nlen)
{
    size_t i = 0;
    while (i < len && line[i] == '_')
        i++;
    while (i < len && g_ascii_isspace(line[i]))
        i++;
    return len >= 20 && i == len && next != NULL && mime_line_starts_with(next, nlen, "From:");
}

/*
 * Where the quoted history starts, the rule kept simple: the first of an
 * attribution line ("On ... wrote:", possibly over two lines, "Am ...
 * schrieb:", "Le ... a écrit :"), an "-----Original Message-----" line, or
 * Outlook's underscore rule before "From:"; else the start of a block of
 * ">" lines that runs to the end.  Blank lines before the cut are left
 * out.
 */
static size_t mime_quote_start(const char *text)
{
    size_t total = strlen(text), cut = total, quote_block = total;
    const char *prev = NULL;
    size_t prev_len = 0;
    int in_block = 0;
    for (const char *line = text; line < text + total;) {
        const char *nl = memchr(line, '\n', text + total - line);
        size_t len = nl != NULL ? (size_t)(nl - line) : (size_t)(text + total - line);
        const char *next = nl != NULL ? nl + 1 : NULL;
        const char *nnl = next != NULL ? memchr(next, '\n', text + total - next) : NULL;
        size_t nlen = next == NULL ? 0 : nnl != NULL ? (size_t)(nnl - next) : strlen(next);
        const char *t = line;
        while (t < line + len && (*t == ' ' || *t == '\t'))
            t++;
        size_t tlen = len - (t - line);
        if (mime_line_is_attribution(t, tlen) && mime_line_opens_attribution(t, tlen)) {
            cut = line - text;
            break;
        }
        if (mime_line_is_attribution(t, tlen) && prev != NULL &&
            mime_line_opens_attribution(prev, prev_len)) {
            cut = prev - text;
            break;
        }
        if (mime_line_is_original(t, tlen) || mime_line_is_outlook_rule(t, tlen, next, nlen)) {
            cut = line - text;
            break;
        }
        if (tlen > 0 && *t == '>') {
            if (!in_block)
                quote_block = line - text;
            in_block = 1;
        } else if (tlen > 0) {
            in_block = 0;
        }
        if (tlen > 0) {
            prev = t;
            prev_len = tlen;
        }
        line = next != NULL ? next : text + total;
    }
    if (in_block && quote_block < cut)
        cut = quote_block;
    if (cut == total)
        return total;
    while (cut > 0 && g_ascii_isspace(text[cut - 1]))
        cut--;
    return cut;
}

/*=========================================================================
 * Sent by a machine
 *=======================================================================*/

static int mime_header_is(GMimeObject *obj, const char *name, const char *const *values, size_t n)
{
    char *raw = mime_header_raw(obj, name);
    if (raw == NULL)
        return 0;
    int hit = 0;
    for (size_t i = 0; i < n && !hit; i++)
        hit = g_ascii_strncasecmp(raw, values[i], strlen(values[i])) == 0;
    g_free(raw);
    return hit;
}

/*
 * Subjects that only auto-responders write (Outlook's "Automatic reply:",
 * its older "Out of Office AutoReply:", ...).  Bounce-like words ("delivery
 * failure", "failure notice") are left to the sender and header rules: a
 * customer may well write "Delivery failure - my parcel never came".
 */
static int mime_subject_is_auto(const char *subject)
{
    static const char *const prefixes[] = {"automatic reply:",
                                           "auto reply:",
                                           "autoreply:",
                                           "auto-reply:",
                                           "auto response:",
                                           "autoresponse:",
                                           "out of office autoreply:",
                                           "abwesenheitsnotiz:",
                                           "automatische antwort:"};
    if (subject == NULL)
        return 0;
    while (g_ascii_isspace(*subject))
        subject++;
    for (size_t i = 0; i < G_N_ELEMENTS(prefixes); i++)
        if (g_ascii_strncasecmp(subject, prefixes[i], strlen(prefixes[i])) == 0)
            return 1;
    return 0;
}

/* Whether the sender is the null path "<>" or a mailer daemon or postmaster. */
static int mime_sender_is_auto(GMimeObject *obj, const sb_mail_t *m)
{
    char *rp = mime_header_raw(obj, "Return-Path");
    char *from = mime_header_raw(obj, "From");
    int null_path =
        (rp != NULL && strcmp(rp, "<>") == 0) || (from != NULL && g_str_has_suffix(from, "<>"));
    g_free(rp);
    g_free(from);
    if (null_path)
        return 1;
    if (m->from_addr == NULL)
        return 0;
    return g_str_has_prefix(m->from_addr, "mailer-daemon@") ||
           g_str_has_prefix(m->from_addr, "postmaster@") ||
           strcmp(m->from_addr, "mailer-daemon") == 0;
}

/* The rule of mime.h's auto_submitted, in that order. */
static int mime_is_auto(GMimeObject *obj, GMimeObject *body, const sb_mail_t *m)
{
    static const char *const no[] = {"no"};
    static const char *const precedence[] = {"bulk", "junk", "list"};
    static const char *const flags[] = {"X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress",
                                        "X-Failed-Recipients"};
    char *as = mime_header_raw(obj, "Auto-Submitted");
    int automatic = as != NULL && *as != '\0' && !mime_header_is(obj, "Auto-Submitted", no, 1);
    g_free(as);
    if (automatic || mime_header_is(obj, "Precedence", precedence, G_N_ELEMENTS(precedence)))
        return 1;
    GMimeHeaderList *list = g_mime_object_get_header_list(obj);
    for (size_t i = 0; list != NULL && i < G_N_ELEMENTS(flags); i++)
        if (g_mime_header_list_contains(list, flags[i]))
            return 1;
    if (body != NULL && mime_is(body, "multipart", "report"))
        return 1;
    return mime_sender_is_auto(obj, m) || mime_subject_is_auto(m->subject);
}

/*=========================================================================
 * Parsing
 *=======================================================================*/

/*
 * The message's bytes as GMime should see them: without an mbox "From "
 * line or blank lines before the headers, every CRLF or bare CR made LF (some mailers end lines with CR
 * alone, which GMime would not split).  The copy is linear in len.
 */
static GByteArray *mime_normalise(const char *raw, size_t len)
{
    const char *p = raw, *end = raw + len;
    if (len >= 5 && memcmp(raw, "From ", 5) == 0) {
        while (p < end && *p != '\n' && *p != '\r')
            p++;
        p += p < end && *p == '\r';
        p += p < end && *p == '\n';
    }
    /* Lines of blanks before the headers (seen in the wild) would end them. */
    for (const char *q = p; q < end; q++) {
        if (*q == '\n' || *q == '\r')
            p = q + 1;
        else if (*q != ' ' && *q != '\t')
            break;
    }
    GByteArray *ba = g_byte_array_sized_new(end - p + 1);
    g_byte_array_set_size(ba, end - p);
    guint8 *w = ba->data;
    for (; p < end; p++) {
        if (*p == '\r') {
            *w++ = '\n';
            if (p + 1 < end && p[1] == '\n')
                p++;
            continue;
        }
        *w++ = (guint8)*p;
    }
    g_byte_array_set_size(ba, w - ba->data);
    return ba;
}

static void mime_fill_text(sb_mail_t *m, mime_walk_t *w)
{
    GMimePart *text = w->plain != NULL ? w->plain : w->other;
    char *html = NULL;
    if (w->html != NULL) {
        size_t len;
        unsigned char *bytes = mime_part_bytes(w->html, &len);
        const char *cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(w->html), "charset");
        html = mime_text_utf8(cs, (const char *)bytes, len, w->hint);
        g_free(bytes);
    }
    if (text != NULL) {
        size_t len;
        unsigned char *bytes = mime_part_bytes(text, &len);
        const char *cs = g_mime_object_get_content_type_parameter(GMIME_OBJECT(text), "charset");
        m->text = mime_text_utf8(cs, (const char *)bytes, len, w->hint);
        g_free(bytes);
    } else if (html != NULL) {
        m->text = mime_html_text(html);
    } else if (w->prologue != NULL) {
        m->text = mime_text_utf8(NULL, w->prologue, strlen(w->prologue), w->hint);
    } else {
        m->text = g_strdup("");
    }
    if (html != NULL)
        m->html = mime_html_sanitise(html);
    g_free(html);
    m->text_new_len = mime_quote_start(m->text);
}

static void mime_fill_headers(sb_mail_t *m, GMimeObject *top, const char *hint, GPtrArray *refs)
{
    m->subject = mime_header_text(top, "Subject", hint);
    mime_from(top, hint, m);
    m->message_id = mime_message_id(top);
    mime_refs_header(refs, top, "In-Reply-To", 0);
    mime_refs_header(refs, top, "References", 1);
}

static void mime_fill(sb_mail_t *m, GMimeMessage *msg)
{
    GPtrArray *refs = g_ptr_array_new();
    mime_walk_t w = {.files = g_array_new(FALSE, TRUE, sizeof(sb_mail_file_t)),
                     .report_refs = g_ptr_array_new_with_free_func(g_free)};
    GMimeObject *body = msg != NULL ? g_mime_message_get_mime_part(msg) : NULL;
    mime_walk(&w, body, 0, 0);
    if (msg != NULL)
        mime_fill_headers(m, GMIME_OBJECT(msg), w.hint, refs);
    for (guint i = 0; i < w.report_refs->len; i++)
        mime_refs_push(refs, g_strdup(g_ptr_array_index(w.report_refs, i)));
    mime_fill_text(m, &w);
    m->nfiles = w.files->len;
    m->files = (sb_mail_file_t *)g_array_free(w.files, FALSE);
    g_ptr_array_add(refs, NULL);
    m->references = (char **)g_ptr_array_free(refs, FALSE);
    m->auto_submitted = msg != NULL && mime_is_auto(GMIME_OBJECT(msg), body, m);
    g_ptr_array_free(w.report_refs, TRUE);
    g_free(w.prologue);
}

int sb_mail_parse(const char *raw, size_t len, sb_mail_t **out)
{
    mime_init();
    *out = NULL;
    sb_mail_t *m = g_new0(sb_mail_t, 1);
    GByteArray *ba = mime_normalise(raw != NULL ? raw : "", raw != NULL ? len : 0);
    GMimeStream *stream = g_mime_stream_mem_new_with_byte_array(ba);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, mime_popts);
    mime_fill(m, msg);
    if (msg != NULL)
        g_object_unref(msg);
    g_object_unref(parser);
    g_object_unref(stream);
    *out = m;
    return 0;
}

void sb_mail_free(sb_mail_t *m)
{
    if (m == NULL)
        return;
    g_free(m->from_addr);
    g_free(m->from_name);
    g_free(m->subject);
    g_free(m->message_id);
    g_strfreev(m->references);
    g_free(m->text);
    g_free(m->html);
    for (size_t i = 0; i < m->nfiles; i++) {
        g_free(m->files[i].filename);
        g_free(m->files[i].content_type);
        g_free(m->files[i].data);
    }
    g_free(m->files);
    g_free(m);
}

/*=========================================================================
 * Ticket tags in subjects
 *=======================================================================*/

#define MIME_TAG_DEFAULT "[#{number}]"
#define MIME_TAG_DIGITS 18

int64_t sb_mail_tag_find(const char *subject, const char *fmt)
{
    if (subject == NULL)
        return 0;
    fmt = fmt != NULL ? fmt : MIME_TAG_DEFAULT;
    const char *slot = strstr(fmt, "{number}");
    if (slot == NULL)
        return 0;
    size_t plen = slot - fmt;
    const char *suffix = slot + strlen("{number}");
    size_t slen = strlen(suffix);
    int64_t found = 0;
    for (const char *p = subject; *p != '\0'; p++) {
        if (g_ascii_strncasecmp(p, fmt, plen) != 0)
            continue;
        /* With an empty prefix, digits must not continue a longer number. */
        if (plen == 0 && p > subject && g_ascii_isdigit(p[-1]))
            continue;
        const char *d = p + plen;
        size_t n = 0;
        int64_t value = 0;
        while (g_ascii_isdigit(d[n]) && n < MIME_TAG_DIGITS)
            value = value * 10 + (d[n++] - '0');
        if (n == 0 || g_ascii_isdigit(d[n]) || g_ascii_strncasecmp(d + n, suffix, slen) != 0)
            continue;
        found = value;
    }
    return found;
}

void sb_mail_tag_format(const char *fmt, int64_t number, char *out, size_t len)
{
    if (out == NULL || len == 0)
        return;
    fmt = fmt != NULL ? fmt : MIME_TAG_DEFAULT;
    char digits[24];
    snprintf(digits, sizeof digits, "%lld", (long long)number);
    GString *s = g_string_new(NULL);
    for (const char *p = fmt; *p != '\0';) {
        if (strncmp(p, "{number}", 8) == 0) {
            g_string_append(s, digits);
            p += 8;
            continue;
        }
        g_string_append_c(s, *p++);
    }
    snprintf(out, len, "%s", s->str);
    g_string_free(s, TRUE);
}

/*=========================================================================
 * Building a reply
 *=======================================================================*/

static int mime_has_newline(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") != NULL;
}

/* A copy with CR and LF made spaces: header text from users is one line. */
static char *mime_one_line(const char *s)
{
    char *out = g_strdup(s != NULL ? s : "");
    for (char *p = out; *p != '\0'; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    return out;
}

/* The bare id of "<id@host>" (GMime adds the brackets back). */
static char *mime_bare_id(const char *id)
{
    char *s = g_strstrip(g_strdup(id));
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
    }
    return s;
}

/* Text escaped for HTML, newlines made <br>. */
static char *mime_text_to_html(const char *text)
{
    GString *s = g_string_new("<html><body>");
    for (const char *p = text; *p != '\0'; p++) {
        switch (*p) {
        case '&':
            g_string_append(s, "&amp;");
            break;
        case '<':
            g_string_append(s, "&lt;");
            break;
        case '>':
            g_string_append(s, "&gt;");
            break;
        case '"':
            g_string_append(s, "&quot;");
            break;
        case '\r':
            break;
        case '\n':
            g_string_append(s, "<br>\n");
            break;
        default:
            g_string_append_c(s, *p);
        }
    }
    g_string_append(s, "</body></html>\n");
    return g_string_free(s, FALSE);
}

/* A UTF-8 quoted-printable text part; text is made valid UTF-8 with LF ends. */
static GMimeObject *mime_text_part_new(const char *subtype, const char *text)
{
    GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);
    char *clean = mime_text_utf8("utf-8", text, strlen(text), NULL);
    /* Not g_mime_text_part_set_text: it would re-encode in the smallest
     * charset that fits (ISO-8859-1 for "é"); replies are UTF-8. */
    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(clean, strlen(clean));
    GMimeDataWrapper *content =
        g_mime_data_wrapper_new_with_stream(stream, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(GMIME_PART(tp), content);
    g_mime_text_part_set_charset(tp, "utf-8");
    g_mime_part_set_content_encoding(GMIME_PART(tp), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    g_object_unref(content);
    g_object_unref(stream);
    g_free(clean);
    return GMIME_OBJECT(tp);
}

/* A mailbox whose name is encoded in UTF-8 (GMime would pick the smallest charset). */
static void mime_add_mailbox(GMimeMessage *msg, GMimeAddressType type, const char *name,
                             const char *addr)
{
    InternetAddress *ia = internet_address_mailbox_new(name, addr);
    internet_address_set_charset(ia, "utf-8");
    internet_address_list_add(g_mime_message_get_addresses(msg, type), ia);
    g_object_unref(ia);
}

static void mime_build_headers(GMimeMessage *msg, const sb_mail_reply_t *r)
{
    GMimeObject *obj = GMIME_OBJECT(msg);
    char *from_name = r->from_name != NULL ? mime_one_line(r->from_name) : NULL;
    char *to_name = r->to_name != NULL ? mime_one_line(r->to_name) : NULL;
    char *subject = mime_one_line(r->subject);
    mime_add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM, from_name, r->from_addr);
    mime_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, to_name, r->to_addr);
    g_mime_message_set_subject(msg, subject, "utf-8");
    GDateTime *now = g_date_time_new_now_local();
    g_mime_message_set_date(msg, now);
    g_date_time_unref(now);
    char *id = mime_bare_id(r->message_id);
    g_mime_message_set_message_id(msg, id);
    g_free(id);
    if (r->in_reply_to != NULL && *r->in_reply_to != '\0')
        g_mime_object_set_header(obj, "In-Reply-To", r->in_reply_to, NULL);
    if (r->references != NULL && *r->references != '\0')
        g_mime_object_set_header(obj, "References", r->references, NULL);
    g_mime_object_set_header(obj, "Auto-Submitted", r->auto_replied ? "auto-replied" : "no", NULL);
    g_free(from_name);
    g_free(to_name);
    g_free(subject);
}

static int mime_reply_check(const sb_mail_reply_t *r)
{
    if (r == NULL || r->from_addr == NULL || *r->from_addr == '\0' || r->to_addr == NULL ||
        *r->to_addr == '\0' || r->message_id == NULL || *r->message_id == '\0')
        return SB_EINVAL;
    /* A line break in a structured header would start a header of its own. */
    if (mime_has_newline(r->from_addr) || mime_has_newline(r->to_addr) ||
        mime_has_newline(r->message_id) || mime_has_newline(r->in_reply_to) ||
        mime_has_newline(r->references))
        return SB_EINVAL;
    return 0;
}

int sb_mail_build(const sb_mail_reply_t *r, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = mime_reply_check(r);
    if (rc != 0)
        return rc;
    mime_init();
    GMimeMessage *msg = g_mime_message_new(TRUE);
    mime_build_headers(msg, r);
    GMimeMultipart *alt = g_mime_multipart_new_with_subtype("alternative");
    const char *text = r->text != NULL ? r->text : "";
    char *made = r->html == NULL ? mime_text_to_html(text) : NULL;
    GMimeObject *plain = mime_text_part_new("plain", text);
    GMimeObject *html = mime_text_part_new("html", made != NULL ? made : r->html);
    g_mime_multipart_add(alt, plain);
    g_mime_multipart_add(alt, html);
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(alt));
    GMimeFormatOptions *fmt = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(fmt, GMIME_NEWLINE_FORMAT_DOS);
    char *s = g_mime_object_to_string(GMIME_OBJECT(msg), fmt);
    size_t n = s != NULL ? strlen(s) : 0;
    char *copy = s != NULL ? malloc(n + 1) : NULL;
    rc = copy != NULL ? 0 : SB_ENOMEM;
    if (copy != NULL) {
        memcpy(copy, s, n + 1);
        *out = copy;
        *len = n;
    }
    g_free(s);
    g_mime_format_options_free(fmt);
    g_object_unref(plain);
    g_object_unref(html);
    g_object_unref(alt);
    g_object_unref(msg);
    g_free(made);
    return rc;
}

/*=========================================================================
 * Message-IDs
 *=======================================================================*/

void sb_mail_new_id(const char *domain, char *out, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char rnd[24];
    char id[25];
    if (out == NULL || len == 0)
        return;
    randombytes_buf(rnd, sizeof rnd);
    /* 24 characters of 5 random bits each: 120 bits. */
    for (size_t i = 0; i < sizeof rnd; i++)
        id[i] = alphabet[rnd[i] & 31];
    id[24] = '\0';
    snprintf(out, len, "<%s.%lld@%s>", id, (long long)time(NULL),
             domain != NULL && *domain != '\0' ? domain : "localhost");
}
