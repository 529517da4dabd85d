/*
 * kernels.c - picks a kernel table, and owns the one GEMM dispatch point.
 *
 * Every matrix product of a linear layer enters through eml_gemm(), as a
 * descriptor (which layer, which pass, which operand is the weight and its
 * version, the data type, and one or a batch of products), which it checks
 * once (so backends may trust it), counts, and forwards to whatever
 * function the dispatch holds.  Also the
 * shape checks both backends share.  No I/O; no state of its own.
 */
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels/kernels_impl.h"

static const eml_kernels *const tables[EML_KERNELS_COUNT] = {
    &eml_kernels_ref_table,
    &eml_kernels_fast_table,
};

_Static_assert(sizeof(tables) / sizeof(tables[0]) == EML_KERNELS_COUNT,
               "kernel tables out of step with eml_kernels_kind");

const eml_kernels *eml_kernels_get(eml_kernels_kind kind)
{
    if ((int)kind < 0 || kind >= EML_KERNELS_COUNT)
        return NULL;
    return tables[kind];
}

eml_status eml_kernels_parse(const char *name, eml_kernels_kind *out)
{
    if (name == NULL || out == NULL)
        return EML_ERR_INVALID;
    for (int k = 0; k < EML_KERNELS_COUNT; k++) {
        if (strcmp(name, tables[k]->name) == 0) {
            *out = tables[k]->kind;
            return EML_OK;
        }
    }
    return EML_ERR_INVALID;
}

void eml_kernels_set_threads(int n)
{
#ifdef _OPENMP
    /* oneDNN built on the OpenMP runtime reads omp_get_max_threads(), so
     * this one call steers dnnl_sgemm, the primitives and our own loops. */
    if (n > 0)
        omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ==== the GEMM dispatch point ==== */

static int max1(int v)
{
    return v > 1 ? v : 1;
}

eml_gemm_desc eml_gemm_desc_f32(int trans_a, int trans_b, int M, int N,
                                int K, float alpha, const float *A, int lda,
                                const float *B, int ldb, float beta, float *C,
                                int ldc)
{
    eml_gemm_desc g;
    memset(&g, 0, sizeof(g));
    g.layer = -1;
    g.pass = EML_GEMM_OTHER;
    g.weight = EML_GEMM_NO_WEIGHT;
    g.dtype = EML_DTYPE_F32;
    g.trans_a = trans_a != 0;
    g.trans_b = trans_b != 0;
    g.M = M;
    g.N = N;
    g.K = K;
    g.alpha = alpha;
    g.beta = beta;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.C = C;
    g.ldc = ldc;
    g.count = 1;
    return g;
}

/* Products of a batched descriptor must not write over each other, and
 * the last one's operands must be addressable. */
static int strides_ok(const eml_gemm_desc *g)
{
    if (g->count == 1) return 1;
    size_t n = (size_t)g->count - 1;
    size_t c_rows = g->M > 0 ? (size_t)g->M - 1 : 0;
    size_t c_span = c_rows * (size_t)g->ldc + (size_t)g->N;
    if (g->stride_c < c_span) return 0;
    const size_t lim = (size_t)1 << 40;
    return g->stride_a <= lim / (n + 1) && g->stride_b <= lim / (n + 1) &&
           g->stride_c <= lim / (n + 1);
}

eml_status eml_gemm(eml_gemm_dispatch *d, const eml_gemm_desc *g)
{
    if (d == NULL || d->fn == NULL || g == NULL)
        return EML_ERR_INVALID;
    int M = g->M, N = g->N, K = g->K;
    if (M < 0 || N < 0 || K < 0 || g->count < 1)
        return EML_ERR_INVALID;
    if ((unsigned)g->dtype > EML_DTYPE_BF16 ||
        (unsigned)g->pass > EML_GEMM_PER_EXAMPLE ||
        (unsigned)g->weight > EML_GEMM_WEIGHT_B)
        return EML_ERR_INVALID;
    /* Stored A is M x K (K x M when transposed); B is K x N (N x K). */
    if (g->lda < max1(g->trans_a ? M : K) ||
        g->ldb < max1(g->trans_b ? K : N) || g->ldc < max1(N))
        return EML_ERR_INVALID;
    if ((M > 0 && K > 0 && g->A == NULL) || (K > 0 && N > 0 && g->B == NULL) ||
        (M > 0 && N > 0 && g->C == NULL))
        return EML_ERR_INVALID;
    if (!strides_ok(g))
        return EML_ERR_INVALID;

    d->calls++;
    d->flops += 2.0 * (double)g->count * (double)M * (double)N * (double)K;
    if (M == 0 || N == 0)
        return EML_OK; /* nothing to write */
    return d->fn(d->ctx, g);
}

eml_status eml_conv(eml_gemm_dispatch *d, const eml_conv_desc *c)
{
    if (d == NULL || d->conv == NULL || c == NULL || c->batch < 1 ||
        c->f < 1 || c->out == NULL || !eml_conv_shape_ok(&c->shape))
        return EML_ERR_INVALID;
    int ok = c->pass == EML_GEMM_FORWARD      ? c->w != NULL && c->x != NULL
             : c->pass == EML_GEMM_WEIGHT_GRAD ? c->d != NULL && c->x != NULL
             : c->pass == EML_GEMM_INPUT_GRAD  ? c->w != NULL && c->d != NULL
                                               : 0;
    if (!ok) return EML_ERR_INVALID;
    const eml_conv_shape *s = &c->shape;
    d->calls++;
    d->flops += 2.0 * c->f * (double)s->c * s->size * s->size * c->batch *
                s->out_h * s->out_w;
    return d->conv(d->ctx, c);
}

eml_status eml_gemm_f32(eml_gemm_dispatch *d, int trans_a, int trans_b, int M,
                        int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc)
{
    eml_gemm_desc g = eml_gemm_desc_f32(trans_a, trans_b, M, N, K, alpha, A,
                                        lda, B, ldb, beta, C, ldc);
    return eml_gemm(d, &g);
}

/* ==== shape checks ==== */

/* Largest element count a float tensor may have: byte sizes stay well inside
 * size_t and ptrdiff_t, and oneDNN's int64 dims. */
#define EML_MAX_ELEMS ((uint64_t)1 << 40)

static int mul_ok(uint64_t *acc, int64_t v)
{
    if (v < 0)
        return 0;
    if (v != 0 && *acc > EML_MAX_ELEMS / (uint64_t)v)
        return 0;
    *acc *= (uint64_t)v;
    return *acc <= EML_MAX_ELEMS;
}

/* The last window's far edge, (out-1)*stride + size, must fit in an int so
 * the index arithmetic of both backends cannot overflow. */
static int span_ok(int out, int stride, int size, int pad)
{
    int64_t span = (int64_t)(out - 1) * stride + size + pad;
    return span <= INT32_MAX;
}

eml_status eml_pool_shape_check(const eml_pool_shape *s, size_t *n_in,
                                size_t *n_out)
{
    if (s == NULL)
        return EML_ERR_INVALID;
    if (s->batch < 1 || s->c < 1 || s->in_h < 1 || s->in_w < 1 ||
        s->out_h < 1 || s->out_w < 1 || s->size_h < 1 || s->size_w < 1 ||
        s->stride < 1 || s->pad_t < 0 || s->pad_l < 0)
        return EML_ERR_INVALID;
    if (!span_ok(s->out_h, s->stride, s->size_h, s->pad_t) ||
        !span_ok(s->out_w, s->stride, s->size_w, s->pad_l))
        return EML_ERR_RANGE;
    uint64_t plane = 1, in = 1, out = 1;
    /* The reference argmax is an int32 index into one input plane. */
    if (!mul_ok(&plane, s->in_h) || !mul_ok(&plane, s->in_w) ||
        plane > INT32_MAX)
        return EML_ERR_RANGE;
    if (!mul_ok(&in, s->batch) || !mul_ok(&in, s->c) ||
        !mul_ok(&in, (int64_t)plane))
        return EML_ERR_RANGE;
    uint64_t plane_out = 1;
    if (!mul_ok(&plane_out, s->out_h) || !mul_ok(&plane_out, s->out_w) ||
        plane_out > INT32_MAX)
        return EML_ERR_RANGE;
    if (!mul_ok(&out, s->batch) || !mul_ok(&out, s->c) ||
        !mul_ok(&out, (int64_t)plane_out))
        return EML_ERR_RANGE;
    if (n_in)
        *n_in = (size_t)in;
    if (n_out)
        *n_out = (size_t)out;
    return EML_OK;
}

int eml_conv_shape_ok(const eml_conv_shape *s)
{
    if (s == NULL || s->c < 1 || s->h < 1 || s->w < 1 || s->size < 1 ||
        s->stride < 1 || s->pad < 0 || s->out_h < 1 || s->out_w < 1)
        return 0;
    if (!span_ok(s->out_h, s->stride, s->size, 0) ||
        !span_ok(s->out_w, s->stride, s->size, 0))
        return 0;
    /* Rows index as int; everything else is size_t arithmetic. */
    uint64_t in = 1, rows = 1, col = 1;
    return mul_ok(&in, s->c) && mul_ok(&in, s->h) && mul_ok(&in, s->w) &&
           mul_ok(&rows, s->c) && mul_ok(&rows, s->size) &&
           mul_ok(&rows, s->size) && rows <= INT32_MAX &&
           mul_ok(&col, (int64_t)rows) && mul_ok(&col, s->out_h) &&
           mul_ok(&col, s->out_w) &&
           (s->ld == 0 || s->ld >= (size_t)s->out_h * (size_t)s->out_w);
}

eml_status eml_qconv_check(const eml_qconv *q, const int8_t *src,
                           const int8_t *w, const int8_t *dst)
{
    if (q == NULL || src == NULL || w == NULL || dst == NULL ||
        q->scale == NULL || q->bias == NULL || q->batch < 1 ||
        q->out_c < 1 || !eml_conv_shape_ok(&q->s))
        return EML_ERR_INVALID;
    if (q->act != EML_ACT_LINEAR && q->act != EML_ACT_RELU &&
        q->act != EML_ACT_LEAKY)
        return EML_ERR_UNSUPPORTED;
    uint64_t in = 1, out = 1;
    if (!mul_ok(&in, q->batch) || !mul_ok(&in, q->s.c) ||
        !mul_ok(&in, q->s.h) || !mul_ok(&in, q->s.w) ||
        !mul_ok(&out, q->batch) || !mul_ok(&out, q->out_c) ||
        !mul_ok(&out, q->s.out_h) || !mul_ok(&out, q->s.out_w))
        return EML_ERR_RANGE;
    return EML_OK;
}
