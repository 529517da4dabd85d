/*
 * serve_io.c - the record lists between the host and the enclave's server
 * (serve.h): u32 conn, u8 kind, u32 length, then the bytes.
 *
 * Trusted code, shared with the host: memory only.  The decoder reads
 * hostile bytes and checks every record before it hands one out.
 */
#include <string.h>

#include "core/le.h"
#include "enclaveml/serve.h"

static int known(uint8_t kind)
{
    return kind >= EML_SERVE_OPEN && kind <= EML_SERVE_DROP;
}

static int bare(uint8_t kind)
{
    return kind == EML_SERVE_OPEN || kind == EML_SERVE_CLOSED ||
           kind == EML_SERVE_CLOSE || kind == EML_SERVE_DROP;
}

eml_status eml_serve_record_next(const uint8_t *list, size_t len, size_t *off,
                                 eml_serve_record *rec)
{
    size_t at = *off;
    if (at >= len) return EML_ERR_NOTFOUND;
    if (len - at < EML_SERVE_RECORD_HEAD) return EML_ERR_FORMAT;
    uint32_t conn = eml_get_le32(list + at);
    uint8_t kind = list[at + 4];
    uint32_t n = eml_get_le32(list + at + 5);
    at += EML_SERVE_RECORD_HEAD;
    if (!known(kind) || n > len - at || (bare(kind) && n != 0))
        return EML_ERR_FORMAT;
    rec->conn = conn;
    rec->kind = (eml_serve_kind)kind;
    rec->p = list + at;
    rec->n = n;
    *off = at + n;
    return EML_OK;
}

eml_status eml_serve_record_put(eml_http_buf *b, uint32_t conn,
                                eml_serve_kind kind, const void *p, size_t n,
                                eml_err *err)
{
    if (!known((uint8_t)kind) || n > UINT32_MAX || (bare((uint8_t)kind) && n))
        return eml_err_set(err, EML_ERR_INVALID, "a malformed record");
    uint8_t head[EML_SERVE_RECORD_HEAD];
    eml_put_le32(head, conn);
    head[4] = (uint8_t)kind;
    eml_put_le32(head + 5, (uint32_t)n);
    size_t before = b->len;
    eml_status st = eml_http_buf_put(b, head, sizeof(head), err);
    if (st == EML_OK && n > 0) st = eml_http_buf_put(b, p, n, err);
    if (st != EML_OK) b->len = before;
    return st;
}
