/*
 * safetensors_writer.c - the deterministic safetensors writer
 * (include/enclaveml/safetensors.h): F32 tensors and string metadata in,
 * file bytes out.
 *
 * Trusted-safe: builds a buffer, no I/O, no printing, no exit.  It writes
 * compact JSON the way upstream (serde_json) does: metadata first, then
 * the tensors in insertion order with their fields in the order dtype,
 * shape, data_offsets, padded with spaces so the data starts 8-byte
 * aligned; the same tensors in the same order give the same bytes.  It
 * refuses what the reader would refuse (bad UTF-8, duplicate names, the
 * name "__metadata__", overflowing shapes), so everything it writes reads
 * back.  Layout: docs/formats.md.
 *
 * Ownership: the writer borrows tensor data until finish, owns copies of
 * metadata strings, and finish returns a malloc'd file the caller frees.
 */
#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"
#include "formats/safetensors_internal.h"

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
    if (nlen == 0 || nlen >= EML_ST_MAX_NAME ||
        strcmp(name, EML_ST_META_KEY) == 0 || !eml_fmt_utf8_valid(name))
        return EML_ERR_INVALID;
    for (d = 0; d < ndims; d++)
        if (shape[d] < 0) return EML_ERR_INVALID;
    if (!eml_st_shape_bytes(shape, ndims, &count, &bytes))
        return EML_ERR_RANGE;
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
    if (w == NULL || key == NULL || value == NULL ||
        !eml_fmt_utf8_valid(key) || !eml_fmt_utf8_valid(value))
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
        sb_str(&h, "\"" EML_ST_META_KEY "\":{");
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
