/*
 * flatjson.c - enclaveml's one strict JSON reader, and the flat objects of
 * signed reports built on it (flatjson.h).
 *
 * Trusted code: memory only, no I/O, no printing, no exit.  Two layers:
 *
 *  - eml_jreader (formats/formats_internal.h), a cursor over hostile bytes
 *    that reads one token at a time: whitespace, punctuation, strings,
 *    unsigned integers, numbers.  It has no generic value parser and no
 *    recursion: each caller walks its own schema with it, so nesting is at
 *    most what that schema allows and anything deeper is refused where it
 *    starts.  Its two schemas are the safetensors header
 *    (safetensors_header.c) and the flat objects below.
 *  - eml_flatjson_parse: one object of string, number and boolean members,
 *    at most EML_FLATJSON_MAX_MEMBERS of them in EML_FLATJSON_MAX_TEXT
 *    bytes.
 *
 * The rules (RFC 8259, narrowed): strings are valid UTF-8 (no overlong
 * forms, surrogates or code points above U+10FFFF), control bytes must be
 * escaped, a \uD800-\uDBFF escape must be followed by a low surrogate and
 * lone surrogates are errors, and NUL, raw or escaped, is refused (names
 * and values are C strings).  Integers have no sign, leading zero,
 * fraction or exponent and fit in 64 bits; numbers follow JSON's grammar
 * exactly and are finite doubles.  Duplicate keys (compared after
 * decoding), null, comments, trailing commas and anything after the object
 * but whitespace are errors.  Every message is one line, "<text>, byte N:
 * ...", and quotes nothing of the input but single punctuation bytes.
 *
 * Ownership: the reader borrows its text; eml_flatjson owns its decoded
 * strings until eml_flatjson_free.
 */
#include "enclaveml/flatjson.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"

#define NUMBER_MAX 64 /* longest accepted number, in bytes */

/* ==== UTF-8 ==== */

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it
 * is not one (overlong forms, surrogates, > U+10FFFF, cut short). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t need, i;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (need == 0 || n < need) return 0;
    for (i = 1; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
    if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
    if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
    if (c == 0xF4 && s[1] >= 0x90) return 0; /* > U+10FFFF */
    return need;
}

int eml_fmt_utf8_valid(const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* ==== the reader: punctuation ==== */

void eml_jreader_init(eml_jreader *r, const void *text, size_t len,
                      const char *what, eml_err *err)
{
    r->s = text;
    r->n = len;
    r->pos = 0;
    r->what = what;
    r->err = err;
}

eml_status eml_jreader_fail(eml_jreader *r, eml_status st, const char *fmt,
                            ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return eml_err_set(r->err, st, "%s, byte %zu: %s", r->what, r->pos,
                       what);
}

void eml_jreader_ws(eml_jreader *r)
{
    while (r->pos < r->n) {
        uint8_t c = r->s[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        r->pos++;
    }
}

int eml_jreader_peek(const eml_jreader *r)
{
    return r->pos < r->n ? r->s[r->pos] : -1;
}

const char *eml_jreader_found(const eml_jreader *r, char buf[16])
{
    int c = eml_jreader_peek(r);
    if (c < 0) return "the end of the text";
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", (unsigned)c);
    return buf;
}

/* EML_ERR_TRUNCATED at the end of the text, EML_ERR_FORMAT before it. */
static eml_status cut_or_bad(const eml_jreader *r)
{
    return eml_jreader_peek(r) < 0 ? EML_ERR_TRUNCATED : EML_ERR_FORMAT;
}

int eml_jreader_take(eml_jreader *r, char c)
{
    eml_jreader_ws(r);
    if (eml_jreader_peek(r) != (unsigned char)c) return 0;
    r->pos++;
    return 1;
}

eml_status eml_jreader_expect(eml_jreader *r, char c, const char *what)
{
    char b[16];
    if (eml_jreader_take(r, c)) return EML_OK;
    return eml_jreader_fail(r, cut_or_bad(r), "expected %s, found %s", what,
                            eml_jreader_found(r, b));
}

eml_status eml_jreader_next(eml_jreader *r, char close, int *more)
{
    char b[16];
    if (eml_jreader_take(r, ',')) {
        *more = 1;
        return EML_OK;
    }
    if (eml_jreader_take(r, close)) {
        *more = 0;
        return EML_OK;
    }
    return eml_jreader_fail(r, cut_or_bad(r), "expected ',' or '%c', found %s",
                            close, eml_jreader_found(r, b));
}

int eml_jreader_at_end(eml_jreader *r)
{
    eml_jreader_ws(r);
    return r->pos == r->n;
}

/* ==== the reader: strings ==== */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at r->pos. */
static eml_status hex4(eml_jreader *r, uint32_t *v)
{
    int i;
    *v = 0;
    if (r->n - r->pos < 4)
        return eml_jreader_fail(r, EML_ERR_TRUNCATED,
                                "\\u escape is cut short");
    for (i = 0; i < 4; i++) {
        int h = hexval(r->s[r->pos + (size_t)i]);
        if (h < 0)
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "\\u escape needs 4 hex digits");
        *v = *v << 4 | (uint32_t)h;
    }
    r->pos += 4;
    return EML_OK;
}

static void put_byte(char *dst, size_t cap, size_t *k, uint8_t c)
{
    if (dst != NULL && *k + 1 < cap) dst[*k] = (char)c;
    (*k)++;
}

static void put_utf8(char *dst, size_t cap, size_t *k, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(dst, cap, k, (uint8_t)cp);
    } else if (cp < 0x800) {
        put_byte(dst, cap, k, (uint8_t)(0xC0 | cp >> 6));
        put_byte(dst, cap, k, (uint8_t)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        put_byte(dst, cap, k, (uint8_t)(0xE0 | cp >> 12));
        put_byte(dst, cap, k, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        put_byte(dst, cap, k, (uint8_t)(0x80 | (cp & 0x3F)));
    } else {
        put_byte(dst, cap, k, (uint8_t)(0xF0 | cp >> 18));
        put_byte(dst, cap, k, (uint8_t)(0x80 | ((cp >> 12) & 0x3F)));
        put_byte(dst, cap, k, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
        put_byte(dst, cap, k, (uint8_t)(0x80 | (cp & 0x3F)));
    }
}

/* The code point of a \u escape (r->pos just past the 'u'), a surrogate
 * pair taken together. */
static eml_status unicode_escape(eml_jreader *r, uint32_t *out)
{
    uint32_t cp = 0, lo = 0;
    eml_status st = hex4(r, &cp);
    if (st != EML_OK) return st;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "lone low surrogate \\u%04x in a string",
                                (unsigned)cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r->n - r->pos < 2 || r->s[r->pos] != '\\' ||
            r->s[r->pos + 1] != 'u')
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "high surrogate \\u%04x is not followed "
                                    "by a low one", (unsigned)cp);
        r->pos += 2;
        st = hex4(r, &lo);
        if (st != EML_OK) return st;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "high surrogate \\u%04x is followed by "
                                    "\\u%04x, not a low surrogate",
                                    (unsigned)cp, (unsigned)lo);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0)
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "\\u0000 (NUL) is not allowed in names or "
                                "values");
    *out = cp;
    return EML_OK;
}

/* One escape (r->pos at the backslash), decoded into dst. */
static eml_status escape(eml_jreader *r, char *dst, size_t cap, size_t *k)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    uint8_t c;
    uint32_t cp = 0;
    eml_status st;
    const char *hit;

    if (r->n - r->pos < 2)
        return eml_jreader_fail(r, EML_ERR_TRUNCATED, "escape is cut short");
    c = r->s[r->pos + 1];
    hit = c != 0 ? strchr(from, c) : NULL;
    if (hit != NULL) {
        r->pos += 2;
        put_byte(dst, cap, k, (uint8_t)to[hit - from]);
        return EML_OK;
    }
    if (c != 'u')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "invalid escape \\%c in a string",
                                c >= 0x21 && c < 0x7f ? c : '?');
    r->pos += 2;
    st = unicode_escape(r, &cp);
    if (st != EML_OK) return st;
    put_utf8(dst, cap, k, cp);
    return EML_OK;
}

eml_status eml_jreader_string(eml_jreader *r, char *dst, size_t cap,
                              size_t *dlen)
{
    size_t k = 0;
    eml_status st;
    char b[16];

    eml_jreader_ws(r);
    if (eml_jreader_peek(r) != '"')
        return eml_jreader_fail(r, cut_or_bad(r),
                                "expected a string, found %s",
                                eml_jreader_found(r, b));
    r->pos++;
    for (;;) {
        uint8_t c;
        size_t len, i;
        if (r->pos >= r->n)
            return eml_jreader_fail(r, EML_ERR_TRUNCATED,
                                    "string is not closed");
        c = r->s[r->pos];
        if (c == '"') {
            r->pos++;
            break;
        }
        if (c < 0x20)
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "control byte 0x%02x inside a string "
                                    "(must be escaped)", c);
        if (c == '\\') {
            st = escape(r, dst, cap, &k);
            if (st != EML_OK) return st;
            continue;
        }
        len = utf8_seq(r->s + r->pos, r->n - r->pos);
        if (len == 0)
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "invalid UTF-8 in a string");
        for (i = 0; i < len; i++) put_byte(dst, cap, &k, r->s[r->pos + i]);
        r->pos += len;
    }
    if (dst != NULL && cap > 0) dst[k < cap ? k : cap - 1] = '\0';
    *dlen = k;
    return EML_OK;
}

/* ==== the reader: numbers ==== */

eml_status eml_jreader_uint(eml_jreader *r, uint64_t *v)
{
    uint64_t x = 0;
    char b[16];
    int c;

    eml_jreader_ws(r);
    c = eml_jreader_peek(r);
    if (c == '-')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "negative number where a size or offset "
                                "belongs");
    if (c < '0' || c > '9')
        return eml_jreader_fail(r, cut_or_bad(r),
                                "expected an unsigned integer, found %s",
                                eml_jreader_found(r, b));
    if (c == '0' && r->pos + 1 < r->n && r->s[r->pos + 1] >= '0' &&
        r->s[r->pos + 1] <= '9')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "number with a leading zero");
    while ((c = eml_jreader_peek(r)) >= '0' && c <= '9') {
        uint64_t d = (uint64_t)(c - '0');
        if (x > (UINT64_MAX - d) / 10)
            return eml_jreader_fail(r, EML_ERR_RANGE,
                                    "integer does not fit in 64 bits");
        x = x * 10 + d;
        r->pos++;
    }
    if (c == '.' || c == 'e' || c == 'E')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "expected an integer, found a fraction or "
                                "exponent");
    *v = x;
    return EML_OK;
}

/* Skips the digits at r->pos; the number of them. */
static size_t digits(eml_jreader *r)
{
    size_t start = r->pos;
    while (r->pos < r->n && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
        r->pos++;
    return r->pos - start;
}

eml_status eml_jreader_number(eml_jreader *r, double *v)
{
    char tmp[NUMBER_MAX + 1], *end, b[16];
    size_t start, len;
    double x;
    int c;

    eml_jreader_ws(r);
    start = r->pos;
    if (eml_jreader_peek(r) == '-') r->pos++;
    c = eml_jreader_peek(r);
    if (c < '0' || c > '9') {
        r->pos = start;
        return eml_jreader_fail(r, cut_or_bad(r),
                                "expected a number, found %s",
                                eml_jreader_found(r, b));
    }
    if (c == '0')
        r->pos++;
    else
        digits(r);
    if (eml_jreader_peek(r) == '.') {
        r->pos++;
        if (digits(r) == 0) goto bad;
    }
    c = eml_jreader_peek(r);
    if (c == 'e' || c == 'E') {
        r->pos++;
        c = eml_jreader_peek(r);
        if (c == '+' || c == '-') r->pos++;
        if (digits(r) == 0) goto bad;
    }
    c = eml_jreader_peek(r);
    if ((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' ||
        c == '+' || c == '-')
        goto bad; /* a leading zero, or a second fraction or exponent */
    len = r->pos - start;
    if (len > NUMBER_MAX)
        return eml_jreader_fail(r, EML_ERR_RANGE,
                                "number longer than %d bytes", NUMBER_MAX);
    memcpy(tmp, r->s + start, len);
    tmp[len] = '\0';
    errno = 0;
    x = strtod(tmp, &end);
    if (end != tmp + len || errno != 0 || !isfinite(x))
        return eml_jreader_fail(r, EML_ERR_RANGE,
                                "number out of the range of a double");
    *v = x;
    return EML_OK;
bad:
    return eml_jreader_fail(r, cut_or_bad(r), "malformed number");
}

/* ==== flat objects ==== */

/* A string value, decoded into a malloc'd copy of its exact length. */
static eml_status dup_string(eml_jreader *r, char **out)
{
    size_t at, len = 0;
    eml_status st;
    char *s;

    eml_jreader_ws(r);
    at = r->pos;
    st = eml_jreader_string(r, NULL, 0, &len);
    if (st != EML_OK) return st;
    s = malloc(len + 1);
    if (s == NULL)
        return eml_err_set(r->err, EML_ERR_NOMEM, "JSON: out of memory");
    r->pos = at;
    st = eml_jreader_string(r, s, len + 1, &len); /* read above: cannot fail */
    if (st != EML_OK) {
        free(s);
        return st;
    }
    *out = s;
    return EML_OK;
}

/* true or false at r->pos (after whitespace); 0 if neither is there. */
static int literal(eml_jreader *r, int *out)
{
    if (r->n - r->pos >= 4 && memcmp(r->s + r->pos, "true", 4) == 0) {
        r->pos += 4;
        *out = 1;
        return 1;
    }
    if (r->n - r->pos >= 5 && memcmp(r->s + r->pos, "false", 5) == 0) {
        r->pos += 5;
        *out = 0;
        return 1;
    }
    return 0;
}

static eml_status member_value(eml_jreader *r, eml_flatjson_member *m)
{
    char b[16];
    int c;

    eml_jreader_ws(r);
    c = eml_jreader_peek(r);
    if (c == '"') {
        m->kind = EML_JSON_STRING;
        return dup_string(r, &m->str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        m->kind = EML_JSON_NUMBER;
        return eml_jreader_number(r, &m->num);
    }
    if (literal(r, &m->boolean)) {
        m->kind = EML_JSON_BOOL;
        return EML_OK;
    }
    if (c == '{' || c == '[')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "nested %s in a flat object",
                                c == '{' ? "object" : "array");
    return eml_jreader_fail(r, cut_or_bad(r),
                            "expected a string, number, true or false, "
                            "found %s", eml_jreader_found(r, b));
}

/* One "key": value member into out->m[out->n]. */
static eml_status member(eml_jreader *r, eml_flatjson *out)
{
    eml_flatjson_member *m = &out->m[out->n];
    size_t key_at, i;
    eml_status st;

    if (out->n == EML_FLATJSON_MAX_MEMBERS)
        return eml_jreader_fail(r, EML_ERR_FORMAT, "more than %d members",
                                EML_FLATJSON_MAX_MEMBERS);
    eml_jreader_ws(r);
    key_at = r->pos;
    st = dup_string(r, &m->key);
    if (st != EML_OK) return st;
    out->n++; /* owned from here: freed with the rest */
    for (i = 0; i + 1 < out->n; i++)
        if (strcmp(out->m[i].key, m->key) == 0) {
            r->pos = key_at;
            return eml_jreader_fail(r, EML_ERR_FORMAT, "duplicate key");
        }
    st = eml_jreader_expect(r, ':', "':' after a key");
    if (st != EML_OK) return st;
    return member_value(r, m);
}

eml_status eml_flatjson_parse(const char *text, size_t len, eml_flatjson *out,
                              eml_err *err)
{
    eml_jreader r;
    eml_status st;
    int more = 1;

    memset(out, 0, sizeof(*out));
    if (len > EML_FLATJSON_MAX_TEXT)
        return eml_err_set(err, EML_ERR_RANGE, "JSON text is too large");
    if (text == NULL && len > 0)
        return eml_err_set(err, EML_ERR_INVALID, "JSON: no text");
    eml_jreader_init(&r, text, len, "JSON", err);
    st = eml_jreader_expect(&r, '{', "'{'");
    if (st != EML_OK) return st;
    if (eml_jreader_take(&r, '}')) more = 0;
    while (more) {
        st = member(&r, out);
        if (st == EML_OK) st = eml_jreader_next(&r, '}', &more);
        if (st != EML_OK) goto fail;
    }
    if (!eml_jreader_at_end(&r)) {
        st = eml_jreader_fail(&r, EML_ERR_FORMAT,
                              "bytes after the object (only whitespace may "
                              "follow it)");
        goto fail;
    }
    return EML_OK;
fail:
    eml_flatjson_free(out);
    return st;
}

void eml_flatjson_free(eml_flatjson *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->m[i].key);
        free(j->m[i].str);
    }
    memset(j, 0, sizeof(*j));
}

static const eml_flatjson_member *find(const eml_flatjson *j, const char *k)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->m[i].key, k) == 0) return &j->m[i];
    return NULL;
}

const char *eml_flatjson_str(const eml_flatjson *j, const char *key)
{
    const eml_flatjson_member *m = find(j, key);
    return m != NULL && m->kind == EML_JSON_STRING ? m->str : NULL;
}

int eml_flatjson_num(const eml_flatjson *j, const char *key, double *out)
{
    const eml_flatjson_member *m = find(j, key);
    if (m == NULL || m->kind != EML_JSON_NUMBER) return -1;
    *out = m->num;
    return 0;
}

int eml_flatjson_bool(const eml_flatjson *j, const char *key, int *out)
{
    const eml_flatjson_member *m = find(j, key);
    if (m == NULL || m->kind != EML_JSON_BOOL) return -1;
    *out = m->boolean;
    return 0;
}
