/*
 * compute.c - the worker's answer to a request, for every op
 * (outsource.h): the operands as field elements, a convolution's im2col
 * columns formed here from the images it was sent (the engine's layout:
 * row (c*size + ky)*size + kx, column b*hw + oy*out_w + ox), the exact
 * product by eml_field_gemm, and for the input gradient the columns
 * folded back (col2im) with additions mod p.  The worker's CPU backend
 * and the tests' oracle.
 *
 * Runs on a parsed request (eml_worker_req_parse checked its sizes).
 */
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

/* Operand `side` of q as n field elements (malloc'd, NULL if not). */
static uint64_t *operand(const eml_worker_req *q, int side, size_t n)
{
    uint64_t *v = malloc((n ? n : 1) * sizeof(uint64_t));
    if (v == NULL) return NULL;
    for (size_t i = 0; i < n; i++) v[i] = eml_worker_req_elem(q, side, i);
    return v;
}

/* The image pixel under column entry (row r, column l) of cols(x), or -1
 * for padding. */
static int64_t source(const eml_worker_req *q, size_t r, size_t l)
{
    const eml_worker_geom *g = &q->g;
    size_t hw = (size_t)q->out_h * q->out_w;
    size_t b = l / hw, o = l % hw;
    size_t ci = r / ((size_t)g->size * g->size);
    size_t ky = r / g->size % g->size, kx = r % g->size;
    int64_t iy = (int64_t)(o / q->out_w) * g->stride - g->pad + (int64_t)ky;
    int64_t ix = (int64_t)(o % q->out_w) * g->stride - g->pad + (int64_t)kx;
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) return -1;
    return (int64_t)(((b * g->c + ci) * g->h + (size_t)iy) * g->w +
                     (size_t)ix);
}

/* cols(x) (ckk x L), or its transpose (L x ckk). */
static void im2col_t(const eml_worker_req *q, const uint64_t *x, uint64_t *cols,
                   int transpose)
{
    size_t ckk = (size_t)q->g.c * q->g.size * q->g.size;
    size_t l = (size_t)q->g.batch * q->out_h * q->out_w;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < (int64_t)ckk; r++)
        for (size_t j = 0; j < l; j++) {
            int64_t s = source(q, (size_t)r, j);
            uint64_t v = s < 0 ? 0 : x[s];
            if (transpose) cols[j * ckk + (size_t)r] = v;
            else cols[(size_t)r * l + j] = v;
        }
}

void eml_field_im2col(const eml_worker_req *q, const uint64_t *x,
                      uint64_t *cols)
{
    im2col_t(q, x, cols, 0);
}

typedef struct backend {
    eml_field_gemm_fn gemm;
    void *ctx;
} backend;

static eml_status product(const backend *be, const uint64_t *a,
                          const uint64_t *b, uint64_t *c, uint32_t m,
                          uint32_t n, uint32_t k)
{
    if (be->gemm != NULL) return be->gemm(be->ctx, a, b, c, m, n, k);
    eml_field_gemm((const uint8_t *)a, (const uint8_t *)b, (uint8_t *)c, m,
                   n, k);
    return EML_OK;
}

static eml_status conv(const backend *be, const eml_worker_req *q,
                       const uint64_t *a, const uint64_t *b, uint8_t *c)
{
    size_t ckk = (size_t)q->g.c * q->g.size * q->g.size;
    size_t l = (size_t)q->g.batch * q->out_h * q->out_w;
    uint64_t *cols = malloc(ckk * l * sizeof(uint64_t));
    if (cols == NULL) return EML_ERR_NOMEM;
    eml_status st = EML_OK;
    switch (q->op) {
    case EML_WORKER_OP_CONV_FORWARD: /* W (f x ckk) cols(X) */
        im2col_t(q, b, cols, 0);
        st = product(be, a, cols, (uint64_t *)(void *)c, q->m, q->n, q->k);
        break;
    case EML_WORKER_OP_CONV_WEIGHT_GRAD: /* D (f x L) cols(X)^T */
        im2col_t(q, b, cols, 1);
        st = product(be, a, cols, (uint64_t *)(void *)c, q->m, q->n, q->k);
        break;
    default: { /* col2im(W^T D): W^T (ckk x f) times D (f x L) */
        uint32_t f = q->g.f;
        uint64_t *wt = malloc(ckk * f * sizeof(uint64_t));
        if (wt == NULL) {
            free(cols);
            return EML_ERR_NOMEM;
        }
        for (size_t i = 0; i < f; i++)
            for (size_t j = 0; j < ckk; j++) wt[j * f + i] = a[i * ckk + j];
        st = product(be, wt, b, cols, (uint32_t)ckk, (uint32_t)l, f);
        free(wt);
        if (st != EML_OK) break;
        size_t mn = (size_t)q->m * q->n;
        memset(c, 0, mn * sizeof(uint64_t));
        for (size_t r = 0; r < ckk; r++)
            for (size_t j = 0; j < l; j++) {
                int64_t s = source(q, r, j);
                if (s < 0) continue;
                eml_worker_put(c, (size_t)s,
                               eml_field_add(eml_worker_get(c, (size_t)s),
                                             cols[r * l + j]));
            }
        break;
    }
    }
    free(cols);
    return st;
}

eml_status eml_worker_compute_on(const eml_worker_req *q, uint8_t *c,
                                 eml_field_gemm_fn gemm, void *ctx)
{
    backend be = {gemm, ctx};
    uint64_t *a = operand(q, 0, q->na), *b = operand(q, 1, q->nb);
    eml_status st = EML_ERR_NOMEM;
    if (a != NULL && b != NULL) {
        if (q->op == EML_WORKER_OP_GEMM)
            st = product(&be, a, b, (uint64_t *)(void *)c, q->m, q->n, q->k);
        else
            st = conv(&be, q, a, b, c);
    }
    free(a);
    free(b);
    return st;
}

eml_status eml_worker_compute(const eml_worker_req *q, uint8_t *c)
{
    return eml_worker_compute_on(q, c, NULL, NULL);
}
