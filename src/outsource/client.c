/*
 * client.c - outsourced GEMM at the dispatch point (outsource.h): each f32
 * product of a layer is quantized into Z_p (p = 2^61 - 1), sent to the
 * worker, and its answer is accepted only if it is the reply to this very
 * request and passes Freivalds' check; then it is decoded back to floats.
 * The enclave's work per product is quadratic: quantizing, one
 * matrix-vector round of Freivalds per operand, decoding.
 *
 * Fixed point: an operand with max |x| < 2^e gets the shift b - e, so its
 * elements are integers below 2^b in magnitude; b = floor((59 -
 * ceil(log2 K)) / 2) for both operands makes every exact sum of K
 * products smaller than 2^60 < p / 2 in magnitude, so the signed result
 * decodes without wrapping (docs/outsource.md).  For K = 3136 that is 23
 * bits per operand.
 *
 * Private mode (inference): the data operand of each forward product is
 * blinded with a fresh one-time pad R, uniform over Z_p from the CSPRNG,
 * never reused; the worker gets X + R and the weights, and its answer
 * (X + R) W is unblinded with U = R W, computed here (Slalom's offline
 * work, timed apart as pad_seconds), then checked like any other.
 *
 * A failure of any kind (a wrong, short, garbled, replayed or misordered
 * reply, a lost worker) ends the product with EML_ERR_AUTH and a message
 * "worker result failed verification (layer N, <product>)"; the client
 * stays failed from then on (the connection is out of step).
 *
 * Trusted code: no I/O of its own (bytes go through the link), CPU time
 * read from the clock.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outsource/client_internal.h"


const char *eml_oc_pass_name(eml_gemm_pass p)
{
    switch (p) {
    case EML_GEMM_FORWARD: return "forward";
    case EML_GEMM_INPUT_GRAD: return "input gradient";
    case EML_GEMM_WEIGHT_GRAD: return "weight gradient";
    case EML_GEMM_PER_EXAMPLE: return "per-example gradients";
    default: return "product";
    }
}

static void free_wiped(void *p, size_t cap, size_t sz);

/* Grows scratch *p to hold n elements of size sz.  Its contents are not
 * kept (every use writes it first), and the old buffer is wiped: no
 * realloc leaving a copy behind. */
int eml_oc_grow(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap) return 1;
    if (n > SIZE_MAX / sz) return 0;
    void *q = malloc(n * sz);
    if (q == NULL) return 0;
    free_wiped(*p, *cap, sz);
    *p = q;
    *cap = n;
    return 1;
}

/* A uniform element of Z_p from the CSPRNG (61 bits, p itself refused). */
uint64_t eml_oc_next_field(void *user)
{
    eml_csprng *rng = user;
    for (;;) {
        uint64_t v;
        eml_csprng_bytes(rng, &v, sizeof(v));
        v &= EML_FIELD_P;
        if (v < EML_FIELD_P) return v;
    }
}

eml_status eml_outsource_mode_check(eml_outsource_mode mode, int training,
                                    eml_err *err)
{
    if (mode == EML_OUTSOURCE_INTEGRITY) return EML_OK;
    if (mode != EML_OUTSOURCE_PRIVATE)
        return eml_err_set(err, EML_ERR_INVALID, "unknown outsourcing mode %d",
                           (int)mode);
    if (!training) return EML_OK;
    return eml_err_set(err, EML_ERR_UNSUPPORTED,
                       "--outsource-mode private does not train: the weights "
                       "change every step, and no one-time-pad scheme keeps "
                       "the enclave's work quadratic then (docs/outsource.md, "
                       "\"Why private mode does not train\"); nothing was "
                       "sent.  Train with --outsource-mode integrity, which "
                       "shows the worker the operands and needs every data "
                       "owner's --allow-outsource");
}

eml_status eml_outsource_new(const eml_worker_link *link,
                             eml_outsource_mode mode, eml_outsource **out,
                             eml_err *err)
{
    *out = NULL;
    eml_status st = eml_outsource_mode_check(mode, 0, err);
    if (st != EML_OK) return st;
    eml_outsource *o = calloc(1, sizeof(*o));
    if (o == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    o->link = link;
    o->mode = mode;
    st = eml_csprng_new(&o->rng, err);
    if (st != EML_OK) {
        free(o);
        return st;
    }
    uint64_t id;
    eml_csprng_bytes(o->rng, &id, sizeof(id));
    o->next_id = id >> 8; /* room to count up */
    o->max_elems = EML_WORKER_MAX_ELEMS;
    o->max_bytes = EML_WORKER_REQ_HEADER + 16 * (size_t)EML_WORKER_MAX_ELEMS;
    *out = o;
    return EML_OK;
}

/* Frees a scratch buffer of cap elements of size sz, wiped first: the
 * operands and products are the run's activations, weights and
 * gradients. */
static void free_wiped(void *p, size_t cap, size_t sz)
{
    if (p == NULL) return;
    eml_wipe(p, cap * sz);
    free(p);
}

void eml_outsource_free(eml_outsource *o)
{
    if (o == NULL) return;
    eml_csprng_free(o->rng);
    free_wiped(o->fa, o->cap_fa, sizeof(float));
    free_wiped(o->fb, o->cap_fb, sizeof(float));
    free_wiped(o->qa, o->cap_qa, sizeof(int32_t));
    free_wiped(o->qb, o->cap_qb, sizeof(int32_t));
    free_wiped(o->qbs, o->cap_qbs, sizeof(int32_t));
    free_wiped(o->acc, o->cap_acc, sizeof(uint64_t));
    free_wiped(o->qc, o->cap_qc, sizeof(uint64_t));
    free_wiped(o->pad, o->cap_pad, sizeof(uint64_t));
    free_wiped(o->wq, o->cap_wq, sizeof(uint64_t));
    free_wiped(o->unb, o->cap_unb, sizeof(uint64_t));
    free_wiped(o->frame, o->cap_frame, 1);
    free(o);
}

void eml_outsource_set_max_request(eml_outsource *o, size_t bytes)
{
    size_t e = bytes > 2 * EML_WORKER_REQ_HEADER
                   ? (bytes - EML_WORKER_REQ_HEADER) / 16
                   : 1;
    o->max_elems = e < EML_WORKER_MAX_ELEMS ? e : EML_WORKER_MAX_ELEMS;
    o->max_bytes = bytes > 4 * EML_WORKER_REQ_HEADER
                       ? bytes
                       : 4 * EML_WORKER_REQ_HEADER;
}

const eml_outsource_stats *eml_outsource_stats_of(const eml_outsource *o)
{
    return &o->stats;
}

const char *eml_outsource_error(const eml_outsource *o)
{
    return o->error;
}

/* op(X) as a dense rows x cols row-major copy (X stored transposed when
 * trans, with leading dimension ld). */
static void dense(const float *x, int trans, int rows, int cols, int ld,
                  float *out)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            out[(size_t)i * cols + j] =
                trans ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
}

int eml_oc_bits_for(uint64_t k)
{
    int lg = 0;
    while (lg < 40 && ((uint64_t)1 << lg) < k) lg++;
    return (59 - lg) / 2;
}

int eml_oc_room(eml_outsource *o, size_t size, size_t mn, const char **why)
{
    if (!eml_oc_grow((void **)&o->frame, &o->cap_frame, size, 1) ||
        !eml_oc_grow((void **)&o->qc, &o->cap_qc, mn ? mn : 1,
                     sizeof(uint64_t))) {
        *why = "out of memory";
        return 0;
    }
    return 1;
}

eml_status eml_oc_exchange(eml_outsource *o, size_t size, uint64_t id,
                           uint32_t m, uint32_t n, const char **why,
                           eml_err *err)
{
    double t0 = wall_now();
    eml_status st = o->link->send(o->link->user, o->frame, size, err);
    const uint8_t *p = NULL;
    size_t len = 0;
    if (st == EML_OK) st = o->link->recv(o->link->user, &p, &len, err);
    o->stats.worker_seconds += wall_now() - t0;
    o->stats.bytes_to_worker += size;
    if (st != EML_OK) {
        *why = err != NULL ? err->msg : "the worker is gone";
        return st;
    }
    o->stats.bytes_from_worker += len;
    /* Copy, then check, then use: the header is read once, the product
     * copied out of the link's buffer before its elements are checked. */
    eml_worker_reply r;
    eml_err perr = {0};
    size_t total;
    st = eml_worker_reply_header(p, len, &r, &total, &perr);
    if (st != EML_OK || len != total) {
        *why = "a garbled reply";
        return EML_ERR_AUTH;
    }
    if (r.id != id) {
        *why = "a reply to another request";
        return EML_ERR_AUTH;
    }
    if (r.status != EML_WORKER_DONE || r.m != m || r.n != n) {
        *why = r.status != EML_WORKER_DONE ? "the worker refused the request"
                                           : "a reply of the wrong shape";
        return EML_ERR_AUTH;
    }
    size_t mn = (size_t)m * n;
    memcpy(o->qc, p + EML_WORKER_REPLY_HEADER, mn * sizeof(uint64_t));
    uint64_t bad = 0;
#pragma omp simd reduction(| : bad)
    for (size_t i = 0; i < mn; i++) bad |= o->qc[i] >= EML_FIELD_P;
    if (bad) {
        *why = "a garbled reply (an element is not below p)";
        return EML_ERR_AUTH;
    }
    return EML_OK;
}

/* Fills buf with n uniform elements of Z_p from the CSPRNG (61 random
 * bits each, the one value p itself drawn again). */
void eml_oc_uniform(eml_csprng *rng, uint64_t *buf, size_t n)
{
    eml_csprng_bytes(rng, buf, n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        buf[i] &= EML_FIELD_P;
        while (buf[i] == EML_FIELD_P) {
            eml_csprng_bytes(rng, &buf[i], sizeof(uint64_t));
            buf[i] &= EML_FIELD_P;
        }
    }
}

/* Private mode: the request for a (bm x bk) times b (bk x bn) with the
 * data operand blinded by a fresh pad R, written into o->frame, and the
 * unblinding factor U = R b (data on the left) or a R (on the right) in
 * o->unb.  The pad is used for this request only and then overwritten. */
static eml_status blinded_request(eml_outsource *o, const eml_gemm_desc *g,
                                  const int32_t *a, const int32_t *b,
                                  uint32_t bm, uint32_t bn, uint32_t bk,
                                  uint64_t id, const char **why)
{
    int data_left = g->weight == EML_GEMM_WEIGHT_B;
    const int32_t *x = data_left ? a : b, *w = data_left ? b : a;
    size_t nx = data_left ? (size_t)bm * bk : (size_t)bk * bn;
    size_t nw = data_left ? (size_t)bk * bn : (size_t)bm * bk;
    if (!eml_oc_grow((void **)&o->pad, &o->cap_pad, nx, sizeof(uint64_t)) ||
        !eml_oc_grow((void **)&o->wq, &o->cap_wq, nw, sizeof(uint64_t)) ||
        !eml_oc_grow((void **)&o->unb, &o->cap_unb, (size_t)bm * bn,
              sizeof(uint64_t))) {
        *why = "out of memory";
        return EML_ERR_NOMEM;
    }
    double c0 = cpu_now();
    eml_oc_uniform(o->rng, o->pad, nx);
    eml_field_gemm_padded(o->pad, w, o->unb, bm, bn, bk, data_left);
    o->stats.pad_seconds += cpu_now() - c0;
    for (size_t i = 0; i < nx; i++)
        o->pad[i] = eml_field_add(o->pad[i], eml_field_of(x[i]));
    for (size_t i = 0; i < nw; i++) o->wq[i] = eml_field_of(w[i]);
    eml_worker_req_write(o->frame, id, bm, bn, bk,
                         data_left ? o->pad : o->wq,
                         data_left ? o->wq : o->pad);
    return EML_OK;
}

/* A block of the quantized product: rows [i0, i0+bm) of A, columns
 * [j0, j0+bn) of B, inner indices [k0, k0+bk): gathered, sent, checked by
 * Freivalds, and added into acc (bm x bn, mod p). */
static eml_status block(eml_outsource *o, const eml_gemm_desc *g,
                        uint32_t i0, uint32_t j0, uint32_t k0, uint32_t bm,
                        uint32_t bn, uint32_t bk, uint64_t *acc,
                        const char **why, eml_err *err)
{
    uint32_t n = (uint32_t)g->N, k = (uint32_t)g->K;
    const int32_t *a = o->qa + (size_t)i0 * k, *b = o->qb;
    double c0 = cpu_now();
    if (bk != k || bn != n) { /* gather the block */
        if (!eml_oc_grow((void **)&o->qbs, &o->cap_qbs,
                  (size_t)bm * bk + (size_t)bk * bn, sizeof(int32_t))) {
            *why = "out of memory";
            return EML_ERR_NOMEM;
        }
        int32_t *sa = o->qbs, *sb = o->qbs + (size_t)bm * bk;
        for (uint32_t r = 0; r < bm; r++)
            memcpy(sa + (size_t)r * bk, o->qa + (size_t)(i0 + r) * k + k0,
                   bk * sizeof(int32_t));
        for (uint32_t t = 0; t < bk; t++)
            memcpy(sb + (size_t)t * bn, o->qb + (size_t)(k0 + t) * n + j0,
                   bn * sizeof(int32_t));
        a = sa;
        b = sb;
    }
    size_t size = eml_worker_req_size(bm, bn, bk);
    if (o->mode != EML_OUTSOURCE_PRIVATE) {
        eml_worker_req q;
        memset(&q, 0, sizeof(q));
        q.op = EML_WORKER_OP_GEMM;
        q.flags = EML_WORKER_I32;
        q.m = bm, q.n = bn, q.k = bk;
        if (eml_worker_req_shape(&q, &size, NULL) != EML_OK) size = 0;
    }
    if (size == 0) {
        *why = "the product is too large for one request";
        return EML_ERR_RANGE;
    }
    if (!eml_oc_room(o, size, (size_t)bm * bn, why)) return EML_ERR_NOMEM;
    uint64_t id = o->next_id++;
    if (o->mode == EML_OUTSOURCE_PRIVATE) {
        eml_status st = blinded_request(o, g, a, b, bm, bn, bk, id, why);
        if (st != EML_OK) return st;
    } else {
        eml_worker_req_write_i32(o->frame, id, bm, bn, bk, a, b);
    }
    o->stats.enclave_seconds += cpu_now() - c0;
    o->stats.outsourced_products++;
    eml_status st = eml_oc_exchange(o, size, id, bm, bn, why, err);
    if (st != EML_OK) return st;
    c0 = cpu_now();
    if (o->mode == EML_OUTSOURCE_PRIVATE) /* (X + R) W - R W */
        for (size_t e = 0; e < (size_t)bm * bn; e++)
            o->qc[e] = eml_field_sub(o->qc[e], o->unb[e]);
    /* One round with r uniform over Z_p: a wrong product passes with
     * probability <= 1/p < 2^-60. */
    if (!eml_freivalds_small(a, b, o->qc, bm, bn, bk, 1, eml_oc_next_field,
                             o->rng)) {
        *why = "Freivalds' check failed";
        return EML_ERR_AUTH;
    }
    o->stats.verified_products++;
    for (size_t e = 0; e < (size_t)bm * bn; e++)
        acc[e] = eml_field_add(acc[e], o->qc[e]);
    o->stats.enclave_seconds += cpu_now() - c0;
    return EML_OK;
}

/* Product i of g, outsourced and verified, written into g's C. */
static eml_status one_product(eml_outsource *o, const eml_gemm_desc *g,
                              int idx, const char **why, eml_err *err)
{
    uint32_t m = (uint32_t)g->M, n = (uint32_t)g->N, k = (uint32_t)g->K;
    size_t i = (size_t)idx;
    const float *A = (const float *)g->A + i * g->stride_a;
    const float *B = (const float *)g->B + i * g->stride_b;
    float *C = (float *)g->C + i * g->stride_c;
    size_t na = (size_t)m * k, nb = (size_t)k * n;
    if (!eml_oc_grow((void **)&o->fa, &o->cap_fa, na, sizeof(float)) ||
        !eml_oc_grow((void **)&o->fb, &o->cap_fb, nb, sizeof(float)) ||
        !eml_oc_grow((void **)&o->qa, &o->cap_qa, na, sizeof(int32_t)) ||
        !eml_oc_grow((void **)&o->qb, &o->cap_qb, nb, sizeof(int32_t))) {
        *why = "out of memory";
        return EML_ERR_NOMEM;
    }
    double c0 = cpu_now();
    dense(A, g->trans_a, g->M, g->K, g->lda, o->fa);
    dense(B, g->trans_b, g->K, g->N, g->ldb, o->fb);
    int bits = eml_oc_bits_for((uint64_t)g->K);
    int sa = eml_field_shift(o->fa, na, bits);
    int sb = eml_field_shift(o->fb, nb, bits);
    eml_field_quantize_i32(o->fa, na, sa, o->qa);
    eml_field_quantize_i32(o->fb, nb, sb, o->qb);
    o->stats.enclave_seconds += cpu_now() - c0;
    /* Requests stay below the link's limit: blocks of A's rows and B's
     * columns, and of the inner dimension when one row is too long; each
     * block is its own verified product, the inner blocks' results
     * summed (exact: the whole sum is below p / 2 in magnitude). */
    uint32_t bk = k < o->max_elems ? k : (uint32_t)o->max_elems;
    uint32_t mh = (uint32_t)(o->max_elems / bk), w = mh;
    if (mh > m) mh = m;
    if (w > n) w = n;
    if (!eml_oc_grow((void **)&o->acc, &o->cap_acc, (size_t)mh * w,
              sizeof(uint64_t))) {
        *why = "out of memory";
        return EML_ERR_NOMEM;
    }
    double scale = ldexp(1.0, -(sa + sb));
    for (uint32_t i0 = 0; i0 < m; i0 += mh)
        for (uint32_t j0 = 0; j0 < n; j0 += w) {
            uint32_t bm = m - i0 < mh ? m - i0 : mh;
            uint32_t bn = n - j0 < w ? n - j0 : w;
            memset(o->acc, 0, (size_t)bm * bn * sizeof(uint64_t));
            for (uint32_t k0 = 0; k0 < k; k0 += bk) {
                uint32_t kk = k - k0 < bk ? k - k0 : bk;
                eml_status st = block(o, g, i0, j0, k0, bm, bn, kk, o->acc,
                                      why, err);
                if (st != EML_OK) return st;
            }
            for (uint32_t r = 0; r < bm; r++) {
                float *out = C + (size_t)(i0 + r) * g->ldc + j0;
                if (g->beta == 0.0f) {
                    eml_field_decode(o->acc + (size_t)r * bn, bn,
                                     g->alpha * scale, out);
                    continue;
                }
                for (uint32_t c = 0; c < bn; c++)
                    out[c] = (float)(g->alpha *
                                         eml_field_signed(
                                             o->acc[(size_t)r * bn + c]) *
                                         scale +
                                     g->beta * out[c]);
            }
        }
    return EML_OK;
}

void eml_outsource_set_min_intensity(eml_outsource *o, double flops)
{
    o->min_intensity = flops > 0 ? flops : 0;
}

static eml_status outsourced_gemm(void *ctx, const eml_gemm_desc *g)
{
    eml_outsource *o = ctx;
    if (o->failed) return EML_ERR_AUTH;
    if (g->dtype != EML_DTYPE_F32) return EML_ERR_UNSUPPORTED;
    double mn = (double)g->M * g->N, elems = (double)g->M * g->K +
                                             (double)g->K * g->N + mn;
    if (o->min_intensity > 0 && o->local_fn != NULL &&
        2.0 * mn * g->K < o->min_intensity * elems) {
        o->stats.local_products += (uint64_t)g->count;
        return o->local_fn(o->local_ctx, g);
    }
    if (o->mode == EML_OUTSOURCE_PRIVATE &&
        (g->pass != EML_GEMM_FORWARD || g->weight == EML_GEMM_NO_WEIGHT)) {
        /* Only a product of data and fixed weights can be blinded with a
         * pad whose product was computed apart (docs/outsource.md). */
        o->failed = 1;
        snprintf(o->error, sizeof(o->error),
                 "--outsource-mode private blinds inference only: layer "
                 "%d's %s product was not sent",
                 g->layer, eml_oc_pass_name(g->pass));
        return EML_ERR_UNSUPPORTED;
    }
    for (int i = 0; i < g->count; i++) {
        if (g->K == 0) { /* C = beta C: nothing to outsource */
            for (int r = 0; r < g->M; r++)
                for (int c = 0; c < g->N; c++) {
                    float *out = (float *)g->C + (size_t)i * g->stride_c +
                                 (size_t)r * g->ldc + c;
                    *out = g->beta == 0.0f ? 0.0f : g->beta * *out;
                }
            continue;
        }
        const char *why = "";
        eml_err err = {0};
        eml_status st = one_product(o, g, i, &why, &err);
        if (st != EML_OK) {
            eml_oc_failed(o, g->layer, g->pass, why);
            return EML_ERR_AUTH;
        }
    }
    return EML_OK;
}

void eml_oc_failed(eml_outsource *o, int layer, eml_gemm_pass pass,
                   const char *why)
{
    o->failed = 1;
    snprintf(o->error, sizeof(o->error),
             "worker result failed verification (layer %d, %s): %.300s",
             layer, eml_oc_pass_name(pass), why);
}

void eml_outsource_attach(eml_outsource *o, eml_gemm_dispatch *d)
{
    o->local_fn = d->fn;
    o->local_ctx = d->ctx;
    d->fn = outsourced_gemm;
    d->conv = eml_oc_conv;
    d->conv_takes = eml_oc_conv_takes;
    d->ctx = o;
}
