/*
 * wire.c - the worker protocol's two frames (outsource.h, docs/formats.md),
 * encoded and decoded here for both sides: the enclave's client writes
 * requests and reads replies, the worker reads requests and writes
 * replies.  Each decoder checks magic, version, op, flags, modulus,
 * dimensions and the frame's exact size, and (whole frames) that every
 * element is below p; errors say which.
 *
 * Trusted code: bytes only.
 */
#include <string.h>

#include "core/le.h"
#include "enclaveml/outsource.h"

size_t eml_worker_req_size(uint32_t m, uint32_t n, uint32_t k)
{
    uint64_t ak = (uint64_t)m * k, bk = (uint64_t)k * n;
    if (m == 0 || n == 0 || k == 0 || ak > EML_WORKER_MAX_ELEMS ||
        bk > EML_WORKER_MAX_ELEMS)
        return 0;
    return EML_WORKER_REQ_HEADER + 8 * (size_t)(ak + bk);
}

size_t eml_worker_reply_size(uint32_t m, uint32_t n)
{
    uint64_t mn = (uint64_t)m * n;
    if (m == 0 || n == 0 || mn > EML_WORKER_MAX_ELEMS) return 0;
    return EML_WORKER_REPLY_HEADER + 8 * (size_t)mn;
}

/* The 40-byte request header. */
static void req_header(uint8_t *out, uint64_t id, uint32_t m, uint32_t n,
                       uint32_t k)
{
    eml_put_le32(out, EML_WORKER_MAGIC_REQ);
    eml_put_le16(out + 4, EML_WORKER_VERSION);
    eml_put_le16(out + 6, EML_WORKER_OP_GEMM);
    eml_put_le64(out + 8, id);
    eml_put_le32(out + 16, m);
    eml_put_le32(out + 20, n);
    eml_put_le32(out + 24, k);
    eml_put_le32(out + 28, 0);
    eml_put_le64(out + 32, EML_FIELD_P);
}

void eml_worker_req_write(uint8_t *out, uint64_t id, uint32_t m, uint32_t n,
                          uint32_t k, const uint64_t *a, const uint64_t *b)
{
    req_header(out, id, m, n, k);
    uint8_t *pa = out + EML_WORKER_REQ_HEADER;
    size_t na = (size_t)m * k, nb = (size_t)k * n;
    for (size_t i = 0; i < na; i++) eml_worker_put(pa, i, a[i]);
    for (size_t i = 0; i < nb; i++) eml_worker_put(pa + 8 * na, i, b[i]);
}

eml_status eml_worker_req_header(const uint8_t *p, size_t n,
                                 eml_worker_req *q, size_t *total,
                                 eml_err *err)
{
    memset(q, 0, sizeof(*q));
    *total = 0;
    if (n < EML_WORKER_REQ_HEADER)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "worker request: short header (%zu bytes)", n);
    if (eml_get_le32(p) != EML_WORKER_MAGIC_REQ)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "worker request: not a request (bad magic)");
    if (eml_get_le16(p + 4) != EML_WORKER_VERSION)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: version %u (this worker speaks "
                           "%u)",
                           (unsigned)eml_get_le16(p + 4), EML_WORKER_VERSION);
    if (eml_get_le16(p + 6) != EML_WORKER_OP_GEMM || eml_get_le32(p + 28) != 0)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: unknown op %u or flags %u",
                           (unsigned)eml_get_le16(p + 6),
                           (unsigned)eml_get_le32(p + 28));
    q->id = eml_get_le64(p + 8);
    q->m = eml_get_le32(p + 16);
    q->n = eml_get_le32(p + 20);
    q->k = eml_get_le32(p + 24);
    q->p = eml_get_le64(p + 32);
    if (q->p != EML_FIELD_P)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: modulus %llu is not 2^61 - 1",
                           (unsigned long long)q->p);
    *total = eml_worker_req_size(q->m, q->n, q->k);
    if (*total == 0)
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker request: %ux%u times %ux%u is empty or "
                           "too large",
                           q->m, q->k, q->k, q->n);
    return EML_OK;
}

/* Every element of n u64s at base is below p. */
static int below_p(const uint8_t *base, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (eml_worker_get(base, i) >= EML_FIELD_P) return 0;
    return 1;
}

eml_status eml_worker_req_parse(const uint8_t *p, size_t n,
                                eml_worker_req *q, eml_err *err)
{
    size_t total;
    eml_status st = eml_worker_req_header(p, n, q, &total, err);
    if (st != EML_OK) return st;
    if (n != total)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "worker request: %zu bytes, its header says %zu",
                           n, total);
    const uint8_t *a = p + EML_WORKER_REQ_HEADER;
    size_t na = (size_t)q->m * q->k, nb = (size_t)q->k * q->n;
    if (!below_p(a, na + nb))
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker request: an element is not below p");
    q->a = (const uint64_t *)(const void *)a; /* read with eml_worker_get */
    q->b = (const uint64_t *)(const void *)(a + 8 * na);
    return EML_OK;
}

void eml_worker_reply_header_write(uint8_t *out, uint64_t id,
                                   uint16_t status, uint32_t m, uint32_t n)
{
    eml_put_le32(out, EML_WORKER_MAGIC_REPLY);
    eml_put_le16(out + 4, EML_WORKER_VERSION);
    eml_put_le16(out + 6, status);
    eml_put_le64(out + 8, id);
    eml_put_le32(out + 16, m);
    eml_put_le32(out + 20, n);
}

eml_status eml_worker_reply_header(const uint8_t *p, size_t n,
                                   eml_worker_reply *r, size_t *total,
                                   eml_err *err)
{
    memset(r, 0, sizeof(*r));
    *total = 0;
    if (n < EML_WORKER_REPLY_HEADER)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "worker reply: short header (%zu bytes)", n);
    if (eml_get_le32(p) != EML_WORKER_MAGIC_REPLY ||
        eml_get_le16(p + 4) != EML_WORKER_VERSION)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "worker reply: bad magic or version");
    r->status = eml_get_le16(p + 6);
    r->id = eml_get_le64(p + 8);
    r->m = eml_get_le32(p + 16);
    r->n = eml_get_le32(p + 20);
    if (r->status != EML_WORKER_DONE) {
        *total = EML_WORKER_REPLY_HEADER;
        return EML_OK;
    }
    *total = eml_worker_reply_size(r->m, r->n);
    if (*total == 0)
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker reply: %ux%u is empty or too large", r->m,
                           r->n);
    return EML_OK;
}

eml_status eml_worker_reply_parse(const uint8_t *p, size_t n,
                                  eml_worker_reply *r, eml_err *err)
{
    size_t total;
    eml_status st = eml_worker_reply_header(p, n, r, &total, err);
    if (st != EML_OK) return st;
    if (n != total)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "worker reply: %zu bytes, its header says %zu", n,
                           total);
    if (r->status != EML_WORKER_DONE) return EML_OK;
    r->c = p + EML_WORKER_REPLY_HEADER;
    if (!below_p(r->c, (size_t)r->m * r->n))
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker reply: an element is not below p");
    return EML_OK;
}

void eml_worker_req_write_i32(uint8_t *out, uint64_t id, uint32_t m,
                              uint32_t n, uint32_t k, const int32_t *a,
                              const int32_t *b)
{
    req_header(out, id, m, n, k);
    uint8_t *pa = out + EML_WORKER_REQ_HEADER;
    size_t na = (size_t)m * k, nb = (size_t)k * n;
    for (size_t i = 0; i < na; i++) eml_worker_put(pa, i, eml_field_of(a[i]));
    for (size_t i = 0; i < nb; i++)
        eml_worker_put(pa + 8 * na, i, eml_field_of(b[i]));
}
