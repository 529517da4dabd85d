/*
 * wire.c - the worker protocol's two frames (outsource.h, docs/formats.md),
 * encoded and decoded here for both sides: the enclave's client writes
 * requests and reads replies, the worker reads requests and writes
 * replies.  Each decoder checks magic, version, op, flags, modulus,
 * geometry, dimensions and the frame's exact size, and (whole frames) that
 * every u64 element is below p; errors say which.
 *
 * Trusted code: bytes only.
 */
#include <string.h>

#include "core/le.h"
#include "enclaveml/outsource.h"

static int is_conv(uint16_t op)
{
    return op == EML_WORKER_OP_CONV_FORWARD ||
           op == EML_WORKER_OP_CONV_WEIGHT_GRAD ||
           op == EML_WORKER_OP_CONV_INPUT_GRAD;
}

static size_t elem_size(const eml_worker_req *q)
{
    return (q->flags & EML_WORKER_I32) ? 4 : 8;
}

/* The conv ops' derived sizes from the geometry. */
static eml_status conv_shape(eml_worker_req *q, eml_err *err)
{
    const eml_worker_geom *g = &q->g;
    if (g->batch == 0 || g->c == 0 || g->h == 0 || g->w == 0 || g->f == 0 ||
        g->size == 0 || g->size > 64 || g->stride == 0 || g->stride > 64 ||
        g->pad >= g->size || g->h > (1u << 20) || g->w > (1u << 20) ||
        (uint64_t)g->h + 2 * g->pad < g->size ||
        (uint64_t)g->w + 2 * g->pad < g->size) {
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker request: bad convolution geometry (batch "
                           "%u, %ux%ux%u, %u filters of %u, stride %u, pad "
                           "%u)",
                           g->batch, g->c, g->h, g->w, g->f, g->size,
                           g->stride, g->pad);
    }
    q->out_h = (g->h + 2 * g->pad - g->size) / g->stride + 1;
    q->out_w = (g->w + 2 * g->pad - g->size) / g->stride + 1;
    uint64_t ckk = (uint64_t)g->c * g->size * g->size;
    uint64_t chw = (uint64_t)g->c * g->h * g->w;
    uint64_t l = (uint64_t)g->batch * q->out_h * q->out_w;
    uint64_t x = (uint64_t)g->batch * chw, wt = (uint64_t)g->f * ckk;
    uint64_t d = (uint64_t)g->f * l, cols = ckk * l;
    uint64_t m, n, k, na, nb;
    if (q->op == EML_WORKER_OP_CONV_FORWARD) {
        m = g->f, n = l, k = ckk, na = wt, nb = x;
    } else if (q->op == EML_WORKER_OP_CONV_WEIGHT_GRAD) {
        m = g->f, n = ckk, k = l, na = d, nb = x;
    } else {
        m = g->batch, n = chw, k = g->f, na = wt, nb = d;
    }
    if (ckk > EML_WORKER_MAX_ELEMS || chw > EML_WORKER_MAX_ELEMS ||
        l > EML_WORKER_MAX_ELEMS || cols > EML_WORKER_MAX_ELEMS ||
        na > EML_WORKER_MAX_ELEMS || nb > EML_WORKER_MAX_ELEMS ||
        m * n > EML_WORKER_MAX_ELEMS) {
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker request: the convolution is too large");
    }
    if (q->m != m || q->n != n || q->k != k) {
        return eml_err_set(err, EML_ERR_FORMAT,
                           "worker request: M, N, K (%u, %u, %u) are not "
                           "the geometry's (%llu, %llu, %llu)",
                           q->m, q->n, q->k, (unsigned long long)m,
                           (unsigned long long)n, (unsigned long long)k);
    }
    q->na = (size_t)na;
    q->nb = (size_t)nb;
    return EML_OK;
}

eml_status eml_worker_req_shape(eml_worker_req *q, size_t *size,
                                eml_err *err)
{
    *size = 0;
    q->na = q->nb = 0;
    q->out_h = q->out_w = 0;
    if ((q->flags & ~EML_WORKER_I32) != 0)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: unknown flags %u",
                           (unsigned)q->flags);
    if (q->op == EML_WORKER_OP_GEMM) {
        static const eml_worker_geom zero;
        uint64_t ak = (uint64_t)q->m * q->k, bk = (uint64_t)q->k * q->n;
        if (memcmp(&q->g, &zero, sizeof(zero)) != 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "worker request: a GEMM with a geometry");
        if (q->m == 0 || q->n == 0 || q->k == 0 ||
            ak > EML_WORKER_MAX_ELEMS || bk > EML_WORKER_MAX_ELEMS ||
            (uint64_t)q->m * q->n > EML_WORKER_MAX_ELEMS)
            return eml_err_set(err, EML_ERR_RANGE,
                               "worker request: %ux%u times %ux%u is empty "
                               "or too large",
                               q->m, q->k, q->k, q->n);
        q->na = (size_t)ak;
        q->nb = (size_t)bk;
    } else if (is_conv(q->op)) {
        eml_status st = conv_shape(q, err);
        if (st != EML_OK) return st;
    } else {
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: unknown op %u", (unsigned)q->op);
    }
    *size = EML_WORKER_REQ_HEADER + elem_size(q) * (q->na + q->nb);
    return EML_OK;
}

size_t eml_worker_req_size(uint32_t m, uint32_t n, uint32_t k)
{
    eml_worker_req q;
    memset(&q, 0, sizeof(q));
    q.op = EML_WORKER_OP_GEMM;
    q.m = m, q.n = n, q.k = k;
    size_t size;
    return eml_worker_req_shape(&q, &size, NULL) == EML_OK ? size : 0;
}

size_t eml_worker_reply_size(uint32_t m, uint32_t n)
{
    uint64_t mn = (uint64_t)m * n;
    if (m == 0 || n == 0 || mn > EML_WORKER_MAX_ELEMS) return 0;
    return EML_WORKER_REPLY_HEADER + 8 * (size_t)mn;
}

void eml_worker_req_write_header(uint8_t *out, const eml_worker_req *q)
{
    eml_put_le32(out, EML_WORKER_MAGIC_REQ);
    eml_put_le16(out + 4, EML_WORKER_VERSION);
    eml_put_le16(out + 6, q->op);
    eml_put_le64(out + 8, q->id);
    eml_put_le32(out + 16, q->m);
    eml_put_le32(out + 20, q->n);
    eml_put_le32(out + 24, q->k);
    eml_put_le32(out + 28, q->flags);
    eml_put_le64(out + 32, EML_FIELD_P);
    const uint32_t g[8] = {q->g.batch, q->g.c,    q->g.h,      q->g.w,
                           q->g.f,     q->g.size, q->g.stride, q->g.pad};
    for (int i = 0; i < 8; i++) eml_put_le32(out + 40 + 4 * i, g[i]);
}

uint64_t eml_worker_req_elem(const eml_worker_req *q, int side, size_t i)
{
    const uint8_t *base = side == 0 ? q->a : q->b;
    if (q->flags & EML_WORKER_I32) {
        int32_t v;
        memcpy(&v, base + 4 * i, 4);
        return eml_field_of(v);
    }
    return eml_worker_get(base, i);
}

static void gemm_req(eml_worker_req *q, uint64_t id, uint32_t m, uint32_t n,
                     uint32_t k, uint32_t flags)
{
    memset(q, 0, sizeof(*q));
    q->id = id;
    q->op = EML_WORKER_OP_GEMM;
    q->flags = flags;
    q->m = m, q->n = n, q->k = k;
    q->na = (size_t)m * k;
    q->nb = (size_t)k * n;
}

void eml_worker_req_write(uint8_t *out, uint64_t id, uint32_t m, uint32_t n,
                          uint32_t k, const uint64_t *a, const uint64_t *b)
{
    eml_worker_req q;
    gemm_req(&q, id, m, n, k, 0);
    eml_worker_req_write_header(out, &q);
    uint8_t *pa = out + EML_WORKER_REQ_HEADER, *pb = pa + 8 * q.na;
    for (size_t i = 0; i < q.na; i++) eml_worker_put(pa, i, a[i]);
    for (size_t i = 0; i < q.nb; i++) eml_worker_put(pb, i, b[i]);
}

void eml_worker_req_write_i32(uint8_t *out, uint64_t id, uint32_t m,
                              uint32_t n, uint32_t k, const int32_t *a,
                              const int32_t *b)
{
    eml_worker_req q;
    gemm_req(&q, id, m, n, k, EML_WORKER_I32);
    eml_worker_req_write_header(out, &q);
    uint8_t *pa = out + EML_WORKER_REQ_HEADER;
    memcpy(pa, a, 4 * q.na); /* little-endian hosts (outsource.h) */
    memcpy(pa + 4 * q.na, b, 4 * q.nb);
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
    q->op = eml_get_le16(p + 6);
    q->id = eml_get_le64(p + 8);
    q->m = eml_get_le32(p + 16);
    q->n = eml_get_le32(p + 20);
    q->k = eml_get_le32(p + 24);
    q->flags = eml_get_le32(p + 28);
    q->p = eml_get_le64(p + 32);
    uint32_t g[8];
    for (int i = 0; i < 8; i++) g[i] = eml_get_le32(p + 40 + 4 * i);
    q->g = (eml_worker_geom){g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
    if (q->p != EML_FIELD_P)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "worker request: modulus %llu is not 2^61 - 1",
                           (unsigned long long)q->p);
    return eml_worker_req_shape(q, total, err);
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
    q->a = p + EML_WORKER_REQ_HEADER;
    q->b = q->a + elem_size(q) * q->na;
    if (!(q->flags & EML_WORKER_I32) && !below_p(q->a, q->na + q->nb))
        return eml_err_set(err, EML_ERR_RANGE,
                           "worker request: an element is not below p");
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
