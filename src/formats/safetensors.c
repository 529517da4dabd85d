/*
 * safetensors.c - the strict safetensors reader's entry point
 * (include/enclaveml/safetensors.h): frames the file, runs the header
 * reader and the table check, and answers questions about the result.
 *
 * Trusted-safe: works on buffers only; no I/O, no printing, no exit.  The
 * reader takes hostile bytes.  This file checks the 8-byte header length
 * against the file and the 100 MB limit; safetensors_header.c reads the
 * JSON header (over the strict JSON reader of flatjson.c) and checks each
 * tensor against itself; safetensors_table.c checks them together
 * (duplicates, exact tiling of the data section).  Every offset, shape
 * product and byte count is checked for overflow.  Layout and rules:
 * docs/formats.md.  The writer is safetensors_writer.c.
 *
 * Ownership: a parsed eml_st borrows the input buffer (tensor data points
 * into it) and owns only its index.
 */
#include "enclaveml/safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"
#include "formats/safetensors_internal.h"

/* ==== shared helpers ==== */

const char *eml_st_show(char out[EML_ST_SHOWN], const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (k + 8 >= EML_ST_SHOWN) {
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

int eml_st_shape_bytes(const int64_t *shape, int ndims, size_t *count,
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

/* ==== reader ==== */

/* The header's length from the first 8 bytes, checked against the file and
 * the limit; *data and *data_len are what follows the header. */
static eml_status frame(const uint8_t *buf, size_t len, size_t *hlen_out,
                        const uint8_t **data, size_t *data_len, eml_err *err)
{
    uint64_t hlen = 0;
    size_t i;
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
    *hlen_out = (size_t)hlen;
    *data = buf + 8 + hlen;
    *data_len = len - 8 - (size_t)hlen;
    return EML_OK;
}

eml_status eml_st_parse(const uint8_t *buf, size_t len, eml_st **out,
                        eml_err *err)
{
    eml_st *st = NULL;
    eml_st_entry *ents = NULL;
    const uint8_t *data = NULL;
    size_t hlen = 0, data_len = 0;
    eml_status s;

    if (out != NULL) *out = NULL;
    if (out == NULL || (buf == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "eml_st_parse called with a NULL pointer");
    s = frame(buf, len, &hlen, &data, &data_len, err);
    if (s != EML_OK) return s;
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");
    s = eml_st_header_read(st, &ents, buf + 8, hlen, err);
    if (s == EML_OK) s = eml_st_table_check(st, ents, data, data_len, err);
    free(ents);
    if (s != EML_OK) {
        eml_st_free(st);
        return s;
    }
    *out = st;
    return EML_OK;
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

/* ==== what was parsed ==== */

size_t eml_st_count(const eml_st *st) { return st != NULL ? st->n : 0; }

const eml_st_tensor *eml_st_get(const eml_st *st, size_t i)
{
    return st != NULL && i < st->n ? &st->t[i] : NULL;
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
