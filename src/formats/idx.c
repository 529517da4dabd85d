/*
 * idx.c - MNIST-style IDX files (unsigned bytes, 1..4 dims), raw or gzip.
 *
 * Trusted-safe: parses a buffer it is handed, never opens a file, never
 * prints.  The bytes are hostile: every dimension product is checked for
 * overflow and against EML_IDX_MAX_BYTES before anything is allocated, and
 * the data must fill the rest of the file exactly (a short file is
 * truncated, a long one has trailing bytes: both are errors).  Layout and
 * what we accept: docs/formats.md.
 *
 * Error messages name the problem and never carry bytes or numbers read
 * from the buffer (magic, element type, dimensions, lengths): the enclave
 * parses decrypted files with it and its errors go to the untrusted host,
 * so a file served in the wrong slot must not be echoed back.
 *
 * Ownership: eml_idx_parse gives the caller idx->data (malloc'd);
 * eml_idx_free wipes and frees it.  eml_idx_write returns a malloc'd buffer.
 */
#include "enclaveml/idx.h"

#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"

_Static_assert(sizeof(size_t) >= 8, "EML_IDX_MAX_BYTES needs a 64-bit size_t");

#define IDX_TYPE_U8 0x08
#define IDX_HEADER_MAX (4 + 4 * EML_IDX_MAX_DIMS)

/* What a valid header says. */
typedef struct idx_header {
    int ndims;
    uint32_t dims[EML_IDX_MAX_DIMS];
    size_t hlen;  /* header bytes: 4 + 4 * ndims */
    size_t item;  /* product of dims[1..] */
    size_t total; /* dims[0] * item */
} idx_header;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The element types IDX defines besides unsigned byte (which we do not
 * read): signed byte, short, int, float, double. */
static int known_type(uint8_t t)
{
    return t == 0x09 || t == 0x0B || t == 0x0C || t == 0x0D || t == 0x0E;
}

/* Checks the header of raw (already gunzipped) IDX bytes.  via is "" or
 * " (after gunzip)", so a message about a .gz file says which bytes it
 * means.  No message quotes the bytes or the numbers they hold. */
static eml_status parse_header(const uint8_t *b, size_t len, const char *name,
                               const char *via, idx_header *h, eml_err *err)
{
    uint8_t type;
    int i;

    memset(h, 0, sizeof(*h));
    if (len < 4)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "%s: truncated: shorter than an IDX header%s", name,
                           via);
    if (b[0] != 0 || b[1] != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: not an IDX file (bad magic)%s", name, via);
    type = b[2];
    if (type != IDX_TYPE_U8) {
        if (known_type(type))
            return eml_err_set(err, EML_ERR_UNSUPPORTED,
                               "%s: the IDX element type is not supported, "
                               "only 0x08 (unsigned byte)%s",
                               name, via);
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: unknown IDX element type%s", name, via);
    }
    h->ndims = b[3];
    if (h->ndims == 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: the IDX header has no dimensions%s", name,
                           via);
    if (h->ndims > EML_IDX_MAX_DIMS)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "%s: the IDX header has too many dimensions (at "
                           "most %d are supported)%s",
                           name, EML_IDX_MAX_DIMS, via);
    h->hlen = 4 + 4 * (size_t)h->ndims;
    if (len < h->hlen)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "%s: truncated: the file ends inside the IDX "
                           "header%s",
                           name, via);

    h->item = 1;
    for (i = 0; i < h->ndims; i++) {
        uint32_t d = be32(b + 4 + 4 * (size_t)i);
        h->dims[i] = d;
        if (i == 0) continue;
        if (d == 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "%s: an IDX dimension is 0 (only the first, "
                               "the item count, may be 0)%s",
                               name, via);
    }
    /* Products in 64 bits with a check before each step: four u32 dims can
     * reach 2^128. */
    for (i = 1; i < h->ndims; i++) {
        if (h->item > EML_IDX_MAX_BYTES / h->dims[i]) goto too_big;
        h->item *= h->dims[i];
    }
    if (h->dims[0] != 0 && h->item > EML_IDX_MAX_BYTES / h->dims[0])
        goto too_big;
    h->total = (size_t)h->dims[0] * h->item;

    if (len - h->hlen < h->total)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "%s: truncated: the data is shorter than the IDX "
                           "header announces%s",
                           name, via);
    if (len - h->hlen > h->total)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: trailing bytes past the data the IDX header "
                           "announces%s",
                           name, via);
    return EML_OK;

too_big:
    return eml_err_set(err, EML_ERR_RANGE,
                       "%s: the IDX dimension product overflows the %zu-byte "
                       "limit%s",
                       name, (size_t)EML_IDX_MAX_BYTES, via);
}

static void fill(eml_idx *out, const idx_header *h, uint8_t *data)
{
    int i;
    out->ndims = h->ndims;
    for (i = 0; i < EML_IDX_MAX_DIMS; i++)
        out->dims[i] = i < h->ndims ? h->dims[i] : 0;
    out->count = h->dims[0];
    out->item = h->item;
    out->data = data;
}

eml_status eml_idx_parse(const uint8_t *buf, size_t len, const char *name,
                         eml_idx *out, eml_err *err)
{
    idx_header h;
    eml_status st;
    uint8_t *raw = NULL, *data;
    size_t raw_len = 0;

    if (name == NULL) name = "IDX file";
    if (out == NULL || (buf == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "%s: eml_idx_parse called with a NULL pointer",
                           name);
    memset(out, 0, sizeof(*out));

    if (len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
        st = eml_gunzip_named(buf, len, IDX_HEADER_MAX + EML_IDX_MAX_BYTES,
                              name, &raw, &raw_len, err);
        if (st != EML_OK) return st;
        st = parse_header(raw, raw_len, name, " (after gunzip)", &h, err);
        if (st != EML_OK) {
            eml_fmt_wipe(raw, raw_len);
            free(raw);
            return st;
        }
        /* Reuse the decompressed buffer: slide the data over the header
         * rather than holding two copies of a 47 MB file at once. */
        memmove(raw, raw + h.hlen, h.total);
        data = realloc(raw, h.total > 0 ? h.total : 1);
        fill(out, &h, data != NULL ? data : raw);
        return EML_OK;
    }

    st = parse_header(buf, len, name, "", &h, err);
    if (st != EML_OK) return st;
    data = malloc(h.total > 0 ? h.total : 1);
    if (data == NULL)
        return eml_err_set(err, EML_ERR_NOMEM,
                           "%s: out of memory for the IDX data", name);
    if (h.total > 0) memcpy(data, buf + h.hlen, h.total);
    fill(out, &h, data);
    return EML_OK;
}

void eml_idx_free(eml_idx *idx)
{
    if (idx == NULL) return;
    if (idx->data != NULL) {
        /* The data may be a confidential data set: wipe what the struct
         * says it holds (only if that product is sane). */
        if (idx->item == 0 || idx->count <= SIZE_MAX / idx->item)
            eml_fmt_wipe(idx->data, idx->count * idx->item);
        free(idx->data);
    }
    memset(idx, 0, sizeof(*idx));
}

eml_status eml_idx_write(const eml_idx *idx, uint8_t **out, size_t *out_len)
{
    size_t item = 1, total, hlen, i;
    uint8_t *b;

    if (out != NULL) *out = NULL;
    if (out_len != NULL) *out_len = 0;
    if (idx == NULL || out == NULL || out_len == NULL) return EML_ERR_INVALID;
    if (idx->ndims < 1 || idx->ndims > EML_IDX_MAX_DIMS)
        return EML_ERR_INVALID;
    for (i = 1; i < (size_t)idx->ndims; i++) {
        if (idx->dims[i] == 0) return EML_ERR_INVALID;
        if (item > EML_IDX_MAX_BYTES / idx->dims[i]) return EML_ERR_RANGE;
        item *= idx->dims[i];
    }
    if (idx->count != idx->dims[0] || idx->item != item)
        return EML_ERR_INVALID;
    if (idx->count != 0 && item > EML_IDX_MAX_BYTES / idx->count)
        return EML_ERR_RANGE;
    total = idx->count * item;
    if (total > 0 && idx->data == NULL) return EML_ERR_INVALID;

    hlen = 4 + 4 * (size_t)idx->ndims;
    b = malloc(hlen + total);
    if (b == NULL) return EML_ERR_NOMEM;
    b[0] = 0;
    b[1] = 0;
    b[2] = IDX_TYPE_U8;
    b[3] = (uint8_t)idx->ndims;
    for (i = 0; i < (size_t)idx->ndims; i++) put_be32(b + 4 + 4 * i, idx->dims[i]);
    if (total > 0) memcpy(b + hlen, idx->data, total);
    *out = b;
    *out_len = hlen + total;
    return EML_OK;
}
