/*
 * safetensors.c - strict reader and deterministic writer of safetensors
 * files holding F32 tensors.
 *
 * Trusted-safe: works on buffers only; no I/O, no printing, no exit.  The
 * reader takes hostile bytes.  Its JSON parser is not a general one: it
 * accepts exactly the header's schema (an object of tensor objects plus an
 * optional "__metadata__" object of strings), so nesting is at most three
 * levels deep by construction and any deeper '{' or '[' is rejected where it
 * appears, without recursion.  Numbers are unsigned integers only; strings
 * must be valid UTF-8 with valid escapes; duplicate keys, unknown keys and
 * anything outside the schema are errors.  Every offset, shape product and
 * byte count is checked for overflow, and the tensors must tile the data
 * section exactly, as upstream safetensors requires.  Layout and rules:
 * docs/formats.md.
 *
 * Ownership: a parsed eml_st borrows the input buffer (tensor data points
 * into it) and owns only its index; the writer borrows tensor data until
 * finish and returns a malloc'd file.
 */
#include "enclaveml/safetensors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"

#define META_KEY "__metadata__"
#define SHOWN_NAME 96 /* bytes of a hostile name shown in a message */

typedef struct st_meta {
    const char *key;
    const char *value;
} st_meta;

struct eml_st {
    eml_st_tensor *t; /* header order */
    size_t n, cap;
    eml_st_tensor **by_name; /* sorted by name, for eml_st_find */
    st_meta *meta;           /* header order */
    size_t n_meta, cap_meta;
    st_meta *meta_by_key; /* sorted by key, for eml_st_meta */
    char *arena;          /* decoded metadata strings */
    size_t arena_used, arena_cap;
};

/* ==== shared helpers ==== */

/* Copies s into out with anything unprintable escaped and long names cut,
 * so a hostile name cannot break the one-line message or a terminal. */
static const char *show(char out[SHOWN_NAME], const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (k + 8 >= SHOWN_NAME) {
            memcpy(out + k, "...", 4);
            return out;
        }
        if (c >= 0x20 && c < 0x7f) {
            out[k++] = (char)c;
        } else {
            out[k++] = '\\';
            out[k++] = 'x';
            out[k++] = hex[c >> 4];
            out[k++] = hex[c & 15];
        }
    }
    out[k] = '\0';
    return out;
}

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

static int utf8_valid(const char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

static void format_shape(char *out, size_t cap, const int64_t *shape,
                         int ndims)
{
    size_t pos = 0;
    int i, n;
    n = snprintf(out, cap, "[");
    if (n > 0) pos = (size_t)n;
    for (i = 0; i < ndims && pos < cap; i++) {
        n = snprintf(out + pos, cap - pos, "%s%lld", i > 0 ? ", " : "",
                     (long long)shape[i]);
        if (n > 0) pos += (size_t)n;
    }
    if (pos < cap) snprintf(out + pos, cap - pos, "]");
}

/* Elements and bytes of an F32 tensor of this shape; 0 on overflow. */
static int shape_bytes(const int64_t *shape, int ndims, size_t *count,
                       size_t *bytes)
{
    size_t c = 1;
    int i;
    for (i = 0; i < ndims; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && c > SIZE_MAX / d) return 0;
        c *= (size_t)d;
    }
    if (c > SIZE_MAX / sizeof(float)) return 0;
    *count = c;
    *bytes = c * sizeof(float);
    return 1;
}

static int cmp_tensor_ptr(const void *a, const void *b)
{
    const eml_st_tensor *x = *(const eml_st_tensor *const *)a;
    const eml_st_tensor *y = *(const eml_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* ==== JSON header parser ==== */

typedef struct jp {
    const uint8_t *s; /* header bytes */
    size_t n;         /* header length */
    size_t pos;
    eml_err *err;
} jp;

static eml_status jp_fail(jp *p, eml_status st, const char *fmt, ...)
    EML_PRINTF(3, 4);

static eml_status jp_fail(jp *p, eml_status st, const char *fmt, ...)
{
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return eml_err_set(p->err, st, "safetensors header, byte %zu: %s", p->pos,
                       what);
}

static void jp_ws(jp *p)
{
    while (p->pos < p->n) {
        uint8_t c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int jp_peek(const jp *p) { return p->pos < p->n ? p->s[p->pos] : -1; }

static const char *jp_found(const jp *p, char buf[16])
{
    int c = jp_peek(p);
    if (c < 0) return "the end of the header";
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02x", (unsigned)c);
    return buf;
}

/* Skips whitespace, then consumes c or fails naming what was expected. */
static eml_status jp_expect(jp *p, char c, const char *what)
{
    char b[16];
    jp_ws(p);
    if (jp_peek(p) == (unsigned char)c) {
        p->pos++;
        return EML_OK;
    }
    return jp_fail(p, jp_peek(p) < 0 ? EML_ERR_TRUNCATED : EML_ERR_FORMAT,
                   "expected %s, found %s", what, jp_found(p, b));
}

/* After a member: ',' (returns 1, more follow) or close (returns 0). */
static eml_status jp_next(jp *p, char close, int *more)
{
    char b[16];
    jp_ws(p);
    if (jp_peek(p) == ',') {
        p->pos++;
        *more = 1;
        return EML_OK;
    }
    if (jp_peek(p) == (unsigned char)close) {
        p->pos++;
        *more = 0;
        return EML_OK;
    }
    return jp_fail(p, jp_peek(p) < 0 ? EML_ERR_TRUNCATED : EML_ERR_FORMAT,
                   "expected ',' or '%c', found %s", close, jp_found(p, b));
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at p->pos. */
static eml_status jp_hex4(jp *p, uint32_t *v)
{
    int i;
    *v = 0;
    if (p->n - p->pos < 4)
        return jp_fail(p, EML_ERR_TRUNCATED, "\\u escape is cut short");
    for (i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + (size_t)i]);
        if (h < 0)
            return jp_fail(p, EML_ERR_FORMAT,
                           "\\u escape needs 4 hex digits");
        *v = *v << 4 | (uint32_t)h;
    }
    p->pos += 4;
    return EML_OK;
}

static void put_byte(char *dst, size_t cap, size_t *k, uint8_t c)
{
    if (dst != NULL && *k + 1 < cap) dst[*k] = (char)c;
    (*k)++;
}

/* Decodes the JSON string at p->pos into dst (cap bytes, NUL-terminated,
 * cut if it does not fit); *dlen is its full decoded length.  Rejects bad
 * escapes, lone surrogates, raw control bytes, invalid UTF-8 and the NUL
 * character (our names and values are C strings). */
static eml_status jp_string(jp *p, char *dst, size_t cap, size_t *dlen)
{
    size_t k = 0;
    eml_status st;
    char b[16];

    jp_ws(p);
    if (jp_peek(p) != '"')
        return jp_fail(p, jp_peek(p) < 0 ? EML_ERR_TRUNCATED : EML_ERR_FORMAT,
                       "expected a string, found %s", jp_found(p, b));
    p->pos++;
    for (;;) {
        uint8_t c;
        if (p->pos >= p->n)
            return jp_fail(p, EML_ERR_TRUNCATED, "string is not closed");
        c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return jp_fail(p, EML_ERR_FORMAT,
                           "control byte 0x%02x inside a string (must be "
                           "escaped)", c);
        if (c == '\\') {
            uint32_t cp;
            if (p->n - p->pos < 2)
                return jp_fail(p, EML_ERR_TRUNCATED, "escape is cut short");
            c = p->s[p->pos + 1];
            p->pos += 2;
            switch (c) {
            case '"': case '\\': case '/':
                put_byte(dst, cap, &k, c);
                continue;
            case 'b': put_byte(dst, cap, &k, '\b'); continue;
            case 'f': put_byte(dst, cap, &k, '\f'); continue;
            case 'n': put_byte(dst, cap, &k, '\n'); continue;
            case 'r': put_byte(dst, cap, &k, '\r'); continue;
            case 't': put_byte(dst, cap, &k, '\t'); continue;
            case 'u': break;
            default:
                p->pos -= 2;
                return jp_fail(p, EML_ERR_FORMAT,
                               "invalid escape \\%c in a string",
                               c >= 0x21 && c < 0x7f ? c : '?');
            }
            st = jp_hex4(p, &cp);
            if (st != EML_OK) return st;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return jp_fail(p, EML_ERR_FORMAT,
                               "lone low surrogate \\u%04x in a string",
                               (unsigned)cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->n - p->pos < 2 || p->s[p->pos] != '\\' ||
                    p->s[p->pos + 1] != 'u')
                    return jp_fail(p, EML_ERR_FORMAT,
                                   "high surrogate \\u%04x is not followed "
                                   "by a low one", (unsigned)cp);
                p->pos += 2;
                st = jp_hex4(p, &lo);
                if (st != EML_OK) return st;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return jp_fail(p, EML_ERR_FORMAT,
                                   "high surrogate \\u%04x is followed by "
                                   "\\u%04x, not a low surrogate",
                                   (unsigned)cp, (unsigned)lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0)
                return jp_fail(p, EML_ERR_FORMAT,
                               "\\u0000 (NUL) is not allowed in names or "
                               "metadata");
            if (cp < 0x80) {
                put_byte(dst, cap, &k, (uint8_t)cp);
            } else if (cp < 0x800) {
                put_byte(dst, cap, &k, (uint8_t)(0xC0 | cp >> 6));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | (cp & 0x3F)));
            } else if (cp < 0x10000) {
                put_byte(dst, cap, &k, (uint8_t)(0xE0 | cp >> 12));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | (cp & 0x3F)));
            } else {
                put_byte(dst, cap, &k, (uint8_t)(0xF0 | cp >> 18));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | ((cp >> 12) & 0x3F)));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | ((cp >> 6) & 0x3F)));
                put_byte(dst, cap, &k, (uint8_t)(0x80 | (cp & 0x3F)));
            }
            continue;
        }
        {
            size_t len = utf8_seq(p->s + p->pos, p->n - p->pos), i;
            if (len == 0)
                return jp_fail(p, EML_ERR_FORMAT,
                               "invalid UTF-8 in a string");
            for (i = 0; i < len; i++) put_byte(dst, cap, &k, p->s[p->pos + i]);
            p->pos += len;
        }
    }
    if (dst != NULL && cap > 0) dst[k < cap ? k : cap - 1] = '\0';
    *dlen = k;
    return EML_OK;
}

/* An unsigned decimal integer: no sign, no leading zeros, no fraction or
 * exponent (upstream reads these fields as usize). */
static eml_status jp_uint(jp *p, uint64_t *v)
{
    uint64_t x = 0;
    char b[16];
    int c;

    jp_ws(p);
    c = jp_peek(p);
    if (c == '-')
        return jp_fail(p, EML_ERR_FORMAT,
                       "negative number where a size or offset belongs");
    if (c < '0' || c > '9')
        return jp_fail(p, c < 0 ? EML_ERR_TRUNCATED : EML_ERR_FORMAT,
                       "expected an unsigned integer, found %s",
                       jp_found(p, b));
    if (c == '0' && p->pos + 1 < p->n && p->s[p->pos + 1] >= '0' &&
        p->s[p->pos + 1] <= '9')
        return jp_fail(p, EML_ERR_FORMAT, "number with a leading zero");
    while ((c = jp_peek(p)) >= '0' && c <= '9') {
        uint64_t d = (uint64_t)(c - '0');
        if (x > (UINT64_MAX - d) / 10)
            return jp_fail(p, EML_ERR_RANGE,
                           "integer does not fit in 64 bits");
        x = x * 10 + d;
        p->pos++;
    }
    if (c == '.' || c == 'e' || c == 'E')
        return jp_fail(p, EML_ERR_FORMAT,
                       "expected an integer, found a fraction or exponent");
    *v = x;
    return EML_OK;
}

/* ==== reader ==== */

/* What one tensor entry of the header says, before it is checked. */
typedef struct st_entry {
    uint64_t begin, end; /* data_offsets, relative to the data section */
    size_t index;        /* position in the header */
} st_entry;

static int cmp_entry(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static const char *const known_dtypes[] = {
    "BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",
    "F6_E2M3", "F6_E3M2", "I16", "U16", "F16", "BF16", "I32", "U32",
    "F64", "I64", "U64", "C64",
};

static eml_status parse_array(jp *p, uint64_t *vals, int max, int *n,
                              const char *tname, const char *field)
{
    eml_status st;
    int more = 1;
    char shown[SHOWN_NAME];

    *n = 0;
    st = jp_expect(p, '[', "'[' to open an array");
    if (st != EML_OK) return st;
    jp_ws(p);
    if (jp_peek(p) == ']') {
        p->pos++;
        return EML_OK;
    }
    while (more) {
        if (*n == max)
            return jp_fail(p, EML_ERR_RANGE,
                           "tensor %s: %s has more than %d entries",
                           show(shown, tname), field, max);
        st = jp_uint(p, &vals[*n]);
        if (st != EML_OK) return st;
        (*n)++;
        st = jp_next(p, ']', &more);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

/* Parses {"dtype":..,"shape":[..],"data_offsets":[b,e]} (any key order)
 * for tensor t, then checks it against itself: dtype, shape product, byte
 * length.  Placement in the data section is checked later, over all. */
static eml_status parse_tensor(jp *p, eml_st_tensor *t, st_entry *e)
{
    char shown[SHOWN_NAME], shape_txt[256], key[32], dtype[32];
    uint64_t dims[EML_ST_MAX_DIMS], offs[2];
    int have_dtype = 0, have_shape = 0, have_offs = 0, n_offs = 0, more = 1;
    size_t klen = 0, dlen = 0, bytes = 0, i;
    eml_status st;

    st = jp_expect(p, '{', "'{' to open the tensor's entry");
    if (st != EML_OK) return st;
    jp_ws(p);
    if (jp_peek(p) == '}')
        return jp_fail(p, EML_ERR_FORMAT,
                       "tensor %s: empty entry, needs dtype, shape and "
                       "data_offsets", show(shown, t->name));
    while (more) {
        size_t key_at;
        int *seen = NULL;
        jp_ws(p);
        key_at = p->pos;
        st = jp_string(p, key, sizeof(key), &klen);
        if (st != EML_OK) return st;
        if (klen < sizeof(key)) {
            if (strcmp(key, "dtype") == 0) seen = &have_dtype;
            if (strcmp(key, "shape") == 0) seen = &have_shape;
            if (strcmp(key, "data_offsets") == 0) seen = &have_offs;
        }
        if (seen == NULL) {
            char kshown[SHOWN_NAME];
            p->pos = key_at;
            return jp_fail(p, EML_ERR_FORMAT,
                           "tensor %s: unknown key \"%s%s\" (expected "
                           "dtype, shape, data_offsets)",
                           show(shown, t->name), show(kshown, key),
                           klen < sizeof(key) ? "" : "...");
        }
        if ((*seen)++) {
            p->pos = key_at;
            return jp_fail(p, EML_ERR_FORMAT,
                           "tensor %s: duplicate key \"%s\"",
                           show(shown, t->name), key);
        }
        st = jp_expect(p, ':', "':' after a key");
        if (st != EML_OK) return st;
        if (seen == &have_dtype) {
            st = jp_string(p, dtype, sizeof(dtype), &dlen);
        } else if (seen == &have_shape) {
            int nd;
            st = parse_array(p, dims, EML_ST_MAX_DIMS, &nd, t->name,
                             "shape");
            t->ndims = nd;
        } else {
            st = parse_array(p, offs, 2, &n_offs, t->name, "data_offsets");
        }
        if (st != EML_OK) return st;
        st = jp_next(p, '}', &more);
        if (st != EML_OK) return st;
    }

    if (!have_dtype || !have_shape || !have_offs)
        return jp_fail(p, EML_ERR_FORMAT, "tensor %s: entry has no %s",
                       show(shown, t->name),
                       !have_dtype ? "dtype"
                       : !have_shape ? "shape" : "data_offsets");
    if (dlen >= sizeof(dtype) || strcmp(dtype, "F32") != 0) {
        char dshown[SHOWN_NAME];
        for (i = 0; i < sizeof(known_dtypes) / sizeof(known_dtypes[0]); i++)
            if (dlen < sizeof(dtype) && strcmp(dtype, known_dtypes[i]) == 0)
                return eml_err_set(p->err, EML_ERR_UNSUPPORTED,
                                   "tensor %s: dtype %s is not supported "
                                   "(only F32)", show(shown, t->name), dtype);
        return eml_err_set(p->err, EML_ERR_FORMAT,
                           "tensor %s: unknown dtype \"%s%s\"",
                           show(shown, t->name), show(dshown, dtype),
                           dlen < sizeof(dtype) ? "" : "...");
    }
    if (n_offs != 2)
        return eml_err_set(p->err, EML_ERR_FORMAT,
                           "tensor %s: data_offsets has %d entries, needs "
                           "2 [begin, end]", show(shown, t->name), n_offs);
    for (i = 0; i < (size_t)t->ndims; i++) {
        if (dims[i] > (uint64_t)INT64_MAX)
            return eml_err_set(p->err, EML_ERR_RANGE,
                               "tensor %s: shape entry %zu (%llu) is larger "
                               "than 2^63-1", show(shown, t->name), i,
                               (unsigned long long)dims[i]);
        t->shape[i] = (int64_t)dims[i];
    }
    format_shape(shape_txt, sizeof(shape_txt), t->shape, t->ndims);
    if (!shape_bytes(t->shape, t->ndims, &t->count, &bytes))
        return eml_err_set(p->err, EML_ERR_RANGE,
                           "tensor %s: shape %s of F32 has more bytes than "
                           "fit in memory", show(shown, t->name), shape_txt);
    e->begin = offs[0];
    e->end = offs[1];
    if (e->end < e->begin)
        return eml_err_set(p->err, EML_ERR_FORMAT,
                           "tensor %s: data_offsets [%llu, %llu] end before "
                           "they begin", show(shown, t->name),
                           (unsigned long long)e->begin,
                           (unsigned long long)e->end);
    if (e->end - e->begin != (uint64_t)bytes)
        return eml_err_set(p->err, EML_ERR_SHAPE,
                           "tensor %s: data_offsets [%llu, %llu] do not "
                           "match shape %s of F32 (%zu bytes)",
                           show(shown, t->name),
                           (unsigned long long)e->begin,
                           (unsigned long long)e->end, shape_txt, bytes);
    return EML_OK;
}

static eml_status parse_meta(jp *p, eml_st *st)
{
    char shown[SHOWN_NAME];
    int more = 1;
    eml_status s;

    s = jp_expect(p, '{', "'{' to open __metadata__ (an object of strings)");
    if (s != EML_OK) return s;
    if (st->arena == NULL) {
        /* Decoded strings are never longer than their JSON text, so the
         * header length bounds them all: one allocation, never moved. */
        st->arena_cap = p->n + 1;
        st->arena = malloc(st->arena_cap);
        if (st->arena == NULL)
            return eml_err_set(p->err, EML_ERR_NOMEM,
                               "safetensors header: out of memory for "
                               "metadata");
    }
    jp_ws(p);
    if (jp_peek(p) == '}') {
        p->pos++;
        return EML_OK;
    }
    while (more) {
        st_meta m;
        size_t len = 0;
        char *k, *v;

        if (st->n_meta == st->cap_meta) {
            size_t ncap = st->cap_meta ? st->cap_meta * 2 : 8;
            st_meta *nm = realloc(st->meta, ncap * sizeof(*nm));
            if (nm == NULL)
                return eml_err_set(p->err, EML_ERR_NOMEM,
                                   "safetensors header: out of memory for "
                                   "metadata");
            st->meta = nm;
            st->cap_meta = ncap;
        }
        k = st->arena + st->arena_used;
        s = jp_string(p, k, st->arena_cap - st->arena_used, &len);
        if (s != EML_OK) return s;
        if (len >= st->arena_cap - st->arena_used) goto arena_full;
        st->arena_used += len + 1;
        s = jp_expect(p, ':', "':' after a key");
        if (s != EML_OK) return s;
        jp_ws(p);
        if (jp_peek(p) != '"')
            return jp_fail(p, EML_ERR_FORMAT,
                           "__metadata__ value for \"%s\" must be a string",
                           show(shown, k));
        v = st->arena + st->arena_used;
        s = jp_string(p, v, st->arena_cap - st->arena_used, &len);
        if (s != EML_OK) return s;
        if (len >= st->arena_cap - st->arena_used) goto arena_full;
        st->arena_used += len + 1;
        m.key = k;
        m.value = v;
        st->meta[st->n_meta++] = m;
        s = jp_next(p, '}', &more);
        if (s != EML_OK) return s;
    }
    return EML_OK;
arena_full: /* cannot happen: decoded text is shorter than its JSON */
    return jp_fail(p, EML_ERR_FORMAT, "__metadata__ does not fit its header");
}

static eml_status grow_tensors(eml_st *st, st_entry **ents, eml_err *err)
{
    size_t ncap = st->cap ? st->cap * 2 : 16;
    eml_st_tensor *nt;
    st_entry *ne;
    if (ncap > SIZE_MAX / sizeof(*nt))
        return eml_err_set(err, EML_ERR_NOMEM,
                           "safetensors header: too many tensors");
    nt = realloc(st->t, ncap * sizeof(*nt));
    if (nt == NULL) goto oom;
    st->t = nt;
    ne = realloc(*ents, ncap * sizeof(*ne));
    if (ne == NULL) goto oom;
    *ents = ne;
    st->cap = ncap;
    return EML_OK;
oom:
    return eml_err_set(err, EML_ERR_NOMEM,
                       "safetensors header: out of memory for %zu tensors",
                       ncap);
}

/* Sorted by offsets, the tensors must start at 0, follow each other with
 * no gap and no overlap, and end exactly at the end of the data section. */
static eml_status check_tiling(const eml_st *st, st_entry *ents,
                               uint64_t data_len, eml_err *err)
{
    char shown[SHOWN_NAME], shown2[SHOWN_NAME];
    uint64_t at = 0;
    size_t i;

    if (st->n > 1) qsort(ents, st->n, sizeof(*ents), cmp_entry);
    for (i = 0; i < st->n; i++) {
        const st_entry *e = &ents[i];
        const char *nm = st->t[e->index].name;
        if (e->begin > at)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "tensor %s: data_offsets [%llu, %llu] leave a "
                               "gap of %llu bytes after the previous tensor",
                               show(shown, nm), (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               (unsigned long long)(e->begin - at));
        if (e->begin < at)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "tensor %s: data_offsets [%llu, %llu] overlap "
                               "tensor %s, which ends at %llu",
                               show(shown, nm), (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               show(shown2, st->t[ents[i - 1].index].name),
                               (unsigned long long)at);
        if (e->end > data_len)
            return eml_err_set(err, EML_ERR_TRUNCATED,
                               "tensor %s: data_offsets [%llu, %llu] run past "
                               "the end of the data section (%llu bytes)",
                               show(shown, nm), (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               (unsigned long long)data_len);
        at = e->end;
    }
    if (at != data_len)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "safetensors: %llu byte%s after the last tensor's "
                           "data (tensors cover %llu of %llu data bytes)",
                           (unsigned long long)(data_len - at),
                           data_len - at == 1 ? "" : "s",
                           (unsigned long long)at,
                           (unsigned long long)data_len);
    return EML_OK;
}

eml_status eml_st_parse(const uint8_t *buf, size_t len, eml_st **out,
                        eml_err *err)
{
    char shown[SHOWN_NAME];
    eml_st *st = NULL;
    st_entry *ents = NULL;
    const uint8_t *data;
    uint64_t hlen = 0;
    size_t data_len, i;
    int more = 1, have_meta = 0;
    eml_status s = EML_OK;
    jp p;

    if (out != NULL) *out = NULL;
    if (out == NULL || (buf == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "eml_st_parse called with a NULL pointer");
    if (len < 8)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "safetensors: file is %zu bytes, too short for the "
                           "8-byte header length", len);
    for (i = 0; i < 8; i++) hlen |= (uint64_t)buf[i] << (8 * i);
    if (hlen > EML_ST_MAX_HEADER)
        return eml_err_set(err, EML_ERR_RANGE,
                           "safetensors: header length %llu is more than the "
                           "%zu-byte limit", (unsigned long long)hlen,
                           (size_t)EML_ST_MAX_HEADER);
    if (hlen > len - 8)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "safetensors: truncated: header length %llu is "
                           "more than the %zu bytes that follow it",
                           (unsigned long long)hlen, len - 8);
    if (hlen == 0 || buf[8] != '{')
        return eml_err_set(err, EML_ERR_FORMAT,
                           "safetensors: header does not start with '{'");
    data = buf + 8 + hlen;
    data_len = len - 8 - (size_t)hlen;

    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");

    p.s = buf + 8;
    p.n = (size_t)hlen;
    p.pos = 1; /* past the '{' checked above */
    p.err = err;
    jp_ws(&p);
    if (jp_peek(&p) == '}') {
        p.pos++;
        more = 0;
    }
    while (more) {
        char name[EML_ST_MAX_NAME];
        size_t nlen = 0, key_at;
        eml_st_tensor *t;

        jp_ws(&p);
        key_at = p.pos;
        s = jp_string(&p, name, sizeof(name), &nlen);
        if (s != EML_OK) goto out;
        if (nlen >= sizeof(name)) {
            p.pos = key_at;
            s = jp_fail(&p, EML_ERR_RANGE,
                        "tensor name of %zu bytes is longer than the limit "
                        "of %d (%s)", nlen, EML_ST_MAX_NAME - 1,
                        show(shown, name));
            goto out;
        }
        if (nlen == 0) {
            p.pos = key_at;
            s = jp_fail(&p, EML_ERR_FORMAT, "tensor name is empty");
            goto out;
        }
        s = jp_expect(&p, ':', "':' after a key");
        if (s != EML_OK) goto out;
        if (strcmp(name, META_KEY) == 0) {
            if (have_meta++) {
                p.pos = key_at;
                s = jp_fail(&p, EML_ERR_FORMAT,
                            "duplicate key \"__metadata__\"");
                goto out;
            }
            s = parse_meta(&p, st);
            if (s != EML_OK) goto out;
        } else {
            if (st->n == st->cap) {
                s = grow_tensors(st, &ents, err);
                if (s != EML_OK) goto out;
            }
            t = &st->t[st->n];
            memset(t, 0, sizeof(*t));
            memcpy(t->name, name, nlen + 1);
            ents[st->n].index = st->n;
            s = parse_tensor(&p, t, &ents[st->n]);
            if (s != EML_OK) goto out;
            st->n++;
        }
        s = jp_next(&p, '}', &more);
        if (s != EML_OK) goto out;
    }
    jp_ws(&p);
    if (p.pos != p.n) {
        s = jp_fail(&p, EML_ERR_FORMAT,
                    "unexpected bytes after the header's JSON object (only "
                    "whitespace may pad it)");
        goto out;
    }

    /* Duplicates: sort by name once (n log n, whatever the count). */
    if (st->n > 0) {
        st->by_name = malloc(st->n * sizeof(*st->by_name));
        if (st->by_name == NULL) {
            s = eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");
            goto out;
        }
        for (i = 0; i < st->n; i++) st->by_name[i] = &st->t[i];
        qsort(st->by_name, st->n, sizeof(*st->by_name), cmp_tensor_ptr);
        for (i = 1; i < st->n; i++)
            if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0) {
                s = eml_err_set(err, EML_ERR_FORMAT,
                                "safetensors: duplicate tensor name %s",
                                show(shown, st->by_name[i]->name));
                goto out;
            }
    }
    if (st->n_meta > 0) {
        st->meta_by_key = malloc(st->n_meta * sizeof(*st->meta_by_key));
        if (st->meta_by_key == NULL) {
            s = eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");
            goto out;
        }
        memcpy(st->meta_by_key, st->meta, st->n_meta * sizeof(*st->meta));
        qsort(st->meta_by_key, st->n_meta, sizeof(*st->meta_by_key),
              cmp_meta);
        for (i = 1; i < st->n_meta; i++)
            if (strcmp(st->meta_by_key[i - 1].key, st->meta_by_key[i].key) ==
                0) {
                s = eml_err_set(err, EML_ERR_FORMAT,
                                "safetensors: duplicate __metadata__ key %s",
                                show(shown, st->meta_by_key[i].key));
                goto out;
            }
    }

    s = check_tiling(st, ents, (uint64_t)data_len, err);
    if (s != EML_OK) goto out;
    /* Sorting ents did not move the tensors: ents[i].index still names
     * them.  Offsets are now known to lie inside the data section. */
    for (i = 0; i < st->n; i++)
        st->t[ents[i].index].data =
            (const float *)(const void *)(data + ents[i].begin);

    *out = st;
    st = NULL;
out:
    free(ents);
    eml_st_free(st);
    return s;
}

void eml_st_free(eml_st *st)
{
    if (st == NULL) return;
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st->meta_by_key);
    free(st->arena);
    free(st);
}

size_t eml_st_count(const eml_st *st) { return st != NULL ? st->n : 0; }

const eml_st_tensor *eml_st_get(const eml_st *st, size_t i)
{
    return st != NULL && i < st->n ? &st->t[i] : NULL;
}

const eml_st_tensor *eml_st_find(const eml_st *st, const char *name)
{
    size_t lo = 0, hi;
    if (st == NULL || name == NULL) return NULL;
    hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid]->name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void eml_st_copy(float *dst, const eml_st_tensor *t)
{
    const uint8_t *src;
    if (dst == NULL || t == NULL || t->count == 0) return;
    src = (const uint8_t *)(const void *)t->data;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < t->count; i++) {
        uint32_t u = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 |
                     (uint32_t)src[4 * i + 2] << 16 |
                     (uint32_t)src[4 * i + 3] << 24;
        memcpy(&dst[i], &u, 4);
    }
#else
    memcpy(dst, src, t->count * sizeof(float));
#endif
}

const char *eml_st_meta(const eml_st *st, const char *key)
{
    size_t lo = 0, hi;
    if (st == NULL || key == NULL) return NULL;
    hi = st->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta_by_key[mid].key);
        if (c == 0) return st->meta_by_key[mid].value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

size_t eml_st_meta_count(const eml_st *st)
{
    return st != NULL ? st->n_meta : 0;
}

void eml_st_meta_at(const eml_st *st, size_t i, const char **key,
                    const char **value)
{
    int ok = st != NULL && i < st->n_meta;
    if (key != NULL) *key = ok ? st->meta[i].key : NULL;
    if (value != NULL) *value = ok ? st->meta[i].value : NULL;
}

/* ==== writer ==== */

typedef struct wmeta {
    char *key, *value;
} wmeta;

struct eml_st_writer {
    eml_st_tensor *t; /* insertion order; data borrowed */
    size_t n, cap;
    wmeta *meta; /* insertion order; strings owned */
    size_t n_meta, cap_meta;
};

eml_st_writer *eml_st_writer_new(void)
{
    return calloc(1, sizeof(eml_st_writer));
}

void eml_st_writer_free(eml_st_writer *w)
{
    size_t i;
    if (w == NULL) return;
    for (i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w->t);
    free(w);
}

eml_status eml_st_writer_add(eml_st_writer *w, const char *name,
                             const int64_t *shape, int ndims,
                             const float *data)
{
    size_t nlen, count, bytes, i;
    eml_st_tensor *t;
    int d;

    if (w == NULL || name == NULL || ndims < 0 || ndims > EML_ST_MAX_DIMS ||
        (ndims > 0 && shape == NULL))
        return EML_ERR_INVALID;
    nlen = strlen(name);
    if (nlen == 0 || nlen >= EML_ST_MAX_NAME || strcmp(name, META_KEY) == 0 ||
        !utf8_valid(name))
        return EML_ERR_INVALID;
    for (d = 0; d < ndims; d++)
        if (shape[d] < 0) return EML_ERR_INVALID;
    if (!shape_bytes(shape, ndims, &count, &bytes)) return EML_ERR_RANGE;
    if (count > 0 && data == NULL) return EML_ERR_INVALID;
    for (i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return EML_ERR_INVALID;

    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        eml_st_tensor *nt = realloc(w->t, ncap * sizeof(*nt));
        if (nt == NULL) return EML_ERR_NOMEM;
        w->t = nt;
        w->cap = ncap;
    }
    t = &w->t[w->n++];
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, nlen + 1);
    t->ndims = ndims;
    for (d = 0; d < ndims; d++) t->shape[d] = shape[d];
    t->count = count;
    t->data = data;
    return EML_OK;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c != NULL) memcpy(c, s, n);
    return c;
}

eml_status eml_st_writer_meta(eml_st_writer *w, const char *key,
                              const char *value)
{
    size_t i;
    wmeta m;
    if (w == NULL || key == NULL || value == NULL || !utf8_valid(key) ||
        !utf8_valid(value))
        return EML_ERR_INVALID;
    for (i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0) return EML_ERR_INVALID;
    if (w->n_meta == w->cap_meta) {
        size_t ncap = w->cap_meta ? w->cap_meta * 2 : 8;
        wmeta *nm = realloc(w->meta, ncap * sizeof(*nm));
        if (nm == NULL) return EML_ERR_NOMEM;
        w->meta = nm;
        w->cap_meta = ncap;
    }
    m.key = dup_str(key);
    m.value = dup_str(value);
    if (m.key == NULL || m.value == NULL) {
        free(m.key);
        free(m.value);
        return EML_ERR_NOMEM;
    }
    w->meta[w->n_meta++] = m;
    return EML_OK;
}

/* Growable byte buffer with a sticky error: check once at the end. */
typedef struct sbuf {
    uint8_t *p;
    size_t len, cap;
    eml_status st;
} sbuf;

static void sb_put(sbuf *b, const void *src, size_t n)
{
    if (b->st != EML_OK) return;
    if (n > b->cap - b->len) {
        size_t ncap = b->cap ? b->cap : 256;
        uint8_t *np;
        while (ncap - b->len < n) {
            if (ncap > SIZE_MAX / 2) {
                b->st = EML_ERR_NOMEM;
                return;
            }
            ncap *= 2;
        }
        np = realloc(b->p, ncap);
        if (np == NULL) {
            b->st = EML_ERR_NOMEM;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char d[24];
    size_t k = sizeof(d);
    do {
        d[--k] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sb_put(b, d + k, sizeof(d) - k);
}

/* A JSON string the way serde_json (upstream's writer) escapes it: '"',
 * '\\' and control bytes escaped, everything else (UTF-8 included) raw. */
static void sb_json_str(sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char e[6];
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                memcpy(e, "\\u00", 4);
                e[4] = hex[c >> 4];
                e[5] = hex[c & 15];
                sb_put(b, e, 6);
            } else {
                sb_put(b, &c, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

eml_status eml_st_writer_finish(eml_st_writer *w, uint8_t **out, size_t *len)
{
    sbuf h = {0};
    uint64_t at = 0;
    size_t i, total, hlen;
    uint8_t *file;
    int d;

    if (out != NULL) *out = NULL;
    if (len != NULL) *len = 0;
    if (w == NULL || out == NULL || len == NULL) return EML_ERR_INVALID;

    /* Compact JSON as upstream writes it: metadata first, then tensors
     * (here in insertion order), fields dtype, shape, data_offsets. */
    sb_str(&h, "{");
    if (w->n_meta > 0) {
        sb_str(&h, "\"" META_KEY "\":{");
        for (i = 0; i < w->n_meta; i++) {
            if (i > 0) sb_str(&h, ",");
            sb_json_str(&h, w->meta[i].key);
            sb_str(&h, ":");
            sb_json_str(&h, w->meta[i].value);
        }
        sb_str(&h, "}");
    }
    for (i = 0; i < w->n; i++) {
        const eml_st_tensor *t = &w->t[i];
        uint64_t bytes = (uint64_t)t->count * sizeof(float); /* checked in add */
        if (i > 0 || w->n_meta > 0) sb_str(&h, ",");
        sb_json_str(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (d = 0; d < t->ndims; d++) {
            if (d > 0) sb_str(&h, ",");
            sb_u64(&h, (uint64_t)t->shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_u64(&h, at);
        sb_str(&h, ",");
        if (bytes > UINT64_MAX - at) {
            free(h.p);
            return EML_ERR_RANGE;
        }
        at += bytes;
        sb_u64(&h, at);
        sb_str(&h, "]}");
    }
    sb_str(&h, "}");
    /* Pad with spaces so the data starts 8-byte aligned (upstream does). */
    while (h.st == EML_OK && h.len % 8 != 0) sb_str(&h, " ");
    if (h.st != EML_OK) {
        free(h.p);
        return h.st;
    }
    hlen = h.len;
    if (hlen > EML_ST_MAX_HEADER || at > SIZE_MAX - 8 - hlen) {
        free(h.p);
        return EML_ERR_RANGE;
    }
    total = 8 + hlen + (size_t)at;
    file = malloc(total);
    if (file == NULL) {
        free(h.p);
        return EML_ERR_NOMEM;
    }
    for (i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(file + 8, h.p, hlen);
    free(h.p);

    at = 8 + hlen;
    for (i = 0; i < w->n; i++) {
        const eml_st_tensor *t = &w->t[i];
        size_t bytes = t->count * sizeof(float);
        if (bytes == 0) continue;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (size_t k = 0; k < t->count; k++) {
            uint32_t u;
            memcpy(&u, &t->data[k], 4);
            for (d = 0; d < 4; d++)
                file[at + 4 * k + (size_t)d] = (uint8_t)(u >> (8 * d));
        }
#else
        memcpy(file + at, t->data, bytes);
#endif
        at += bytes;
    }
    *out = file;
    *len = total;
    return EML_OK;
}
