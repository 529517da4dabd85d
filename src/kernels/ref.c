/*
 * ref.c - the reference kernel table "ref": plain C loops, one thread,
 * deterministic.  It is the oracle every fast kernel is tested against and
 * the path for reproducible training and a minimal trusted build, so each
 * op is written to be obviously correct first and quick second.
 *
 * No I/O, no globals, no threads.  Buffers are borrowed from the caller;
 * nothing here allocates except state_new.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels_impl.h"

/* ==== state ==== */

static eml_status ref_state_new(eml_kstate **out)
{
    if (out == NULL)
        return EML_ERR_INVALID;
    eml_kstate *ks = calloc(1, sizeof(*ks));
    if (ks == NULL)
        return EML_ERR_NOMEM;
    ks->kind = EML_KERNELS_REF;
    ks->fast = NULL;
    *out = ks;
    return EML_OK;
}

static void ref_state_free(eml_kstate *ks)
{
    free(ks);
}

/* ==== gemm ==== */

/* C = alpha * op(A) * op(B) + beta * C.  Arguments were checked by
 * eml_gemm().  Two loop orders, both plain: with B untransposed the inner
 * loop is an axpy over a row of B, otherwise a dot product over a row of B;
 * either way the inner loop walks contiguous memory. */
/* Where element (r, c) of op(X) lies in X, stored with row stride ld
 * (X is stored transposed when trans). */
static inline size_t at(int trans, int ld, int r, int c)
{
    return trans ? (size_t)c * (size_t)ld + (size_t)r
                 : (size_t)r * (size_t)ld + (size_t)c;
}

static void gemm_one(int trans_a, int trans_b, int M, int N, int K,
                     float alpha, const float *A, int lda, const float *B,
                     int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * (size_t)ldc; /* (N) */
        if (beta == 0.0f) {
            for (int j = 0; j < N; j++)
                c[j] = 0.0f; /* never read: garbage and NaN vanish */
        } else if (beta != 1.0f) {
            for (int j = 0; j < N; j++)
                c[j] *= beta;
        }
        if (alpha == 0.0f)
            continue; /* as in BLAS: A and B are not read */
        if (!trans_b) {
            for (int k = 0; k < K; k++) {
                float aa = alpha * A[at(trans_a, lda, i, k)];
                const float *b = B + (size_t)k * (size_t)ldb; /* (N) */
                for (int j = 0; j < N; j++)
                    c[j] += aa * b[j];
            }
        } else {
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * (size_t)ldb; /* (K) */
                float sum = 0.0f;
                for (int k = 0; k < K; k++)
                    sum += A[at(trans_a, lda, i, k)] * b[k];
                c[j] += alpha * sum;
            }
        }
    }
}

/* An int8 product: C (int32) = op(A) op(B), exact (|entries| <= 127, K
 * below 2^17: no int32 overflow). */
static void gemm_one_s8(int trans_a, int trans_b, int M, int N, int K,
                        const int8_t *A, int lda, const int8_t *B, int ldb,
                        int32_t *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int32_t sum = 0;
            for (int k = 0; k < K; k++)
                sum += (int32_t)A[at(trans_a, lda, i, k)] *
                       (int32_t)B[at(trans_b, ldb, k, j)];
            C[(size_t)i * (size_t)ldc + (size_t)j] = sum;
        }
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A bf16 product: C (float) = op(A) op(B), sums in float. */
static void gemm_one_bf16(int trans_a, int trans_b, int M, int N, int K,
                          const uint16_t *A, int lda, const uint16_t *B,
                          int ldb, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float sum = 0;
            for (int k = 0; k < K; k++)
                sum += bf16_value(A[at(trans_a, lda, i, k)]) *
                       bf16_value(B[at(trans_b, ldb, k, j)]);
            C[(size_t)i * (size_t)ldc + (size_t)j] = sum;
        }
}

/* Every product of the descriptor: f32; s8 (int32 result) or bf16 (float
 * result), alpha 1 and beta 0 only. */
eml_status eml_ref_gemm(void *ctx, const eml_gemm_desc *g)
{
    (void)ctx;
    if (g->dtype == EML_DTYPE_BF16) {
        if (g->alpha != 1.0f || g->beta != 0.0f) return EML_ERR_UNSUPPORTED;
        for (int i = 0; i < g->count; i++) {
            size_t k = (size_t)i;
            gemm_one_bf16(g->trans_a, g->trans_b, g->M, g->N, g->K,
                          (const uint16_t *)g->A + k * g->stride_a, g->lda,
                          (const uint16_t *)g->B + k * g->stride_b, g->ldb,
                          (float *)g->C + k * g->stride_c, g->ldc);
        }
        return EML_OK;
    }
    if (g->dtype == EML_DTYPE_S8) {
        if (g->alpha != 1.0f || g->beta != 0.0f) return EML_ERR_UNSUPPORTED;
        for (int i = 0; i < g->count; i++) {
            size_t k = (size_t)i;
            gemm_one_s8(g->trans_a, g->trans_b, g->M, g->N, g->K,
                        (const int8_t *)g->A + k * g->stride_a, g->lda,
                        (const int8_t *)g->B + k * g->stride_b, g->ldb,
                        (int32_t *)g->C + k * g->stride_c, g->ldc);
        }
        return EML_OK;
    }
    if (g->dtype != EML_DTYPE_F32)
        return EML_ERR_UNSUPPORTED;
    for (int i = 0; i < g->count; i++) {
        size_t k = (size_t)i;
        const float *A = g->A ? (const float *)g->A + k * g->stride_a : NULL;
        const float *B = g->B ? (const float *)g->B + k * g->stride_b : NULL;
        gemm_one(g->trans_a, g->trans_b, g->M, g->N, g->K, g->alpha, A,
                 g->lda, B, g->ldb, g->beta,
                 (float *)g->C + k * g->stride_c, g->ldc);
    }
    return EML_OK;
}

/* ==== activations ==== */

/* Darknet's activations, one value at a time (activations.h of Darknet
 * 2018), and their gradients as functions of the output y. */
static float act_one(float x, eml_act a)
{
    switch (a) {
    case EML_ACT_RELU:
    case EML_ACT_LEAKY: return eml_act_simple(x, a);
    case EML_ACT_TANH: return tanhf(x);
    case EML_ACT_LOGISTIC: return 1.0f / (1.0f + expf(-x));
    case EML_ACT_RELIE: return x > 0.0f ? x : 0.01f * x;
    case EML_ACT_RAMP: return (x > 0.0f ? x : 0.0f) + 0.1f * x;
    case EML_ACT_PLSE:
        if (x < -4.0f) return 0.01f * (x + 4.0f);
        if (x > 4.0f) return 0.01f * (x - 4.0f) + 1.0f;
        return 0.125f * x + 0.5f;
    case EML_ACT_ELU: return x >= 0.0f ? x : expf(x) - 1.0f;
    case EML_ACT_LOGGY: return 2.0f / (1.0f + expf(-x)) - 1.0f;
    case EML_ACT_STAIR: {
        float f = floorf(x);
        if (fmodf(f, 2.0f) == 0.0f) return floorf(x / 2.0f);
        return (x - f) + floorf(x / 2.0f);
    }
    case EML_ACT_HARDTAN: return x < -1.0f ? -1.0f : x > 1.0f ? 1.0f : x;
    case EML_ACT_LHTAN:
        if (x < 0.0f) return 0.001f * x;
        if (x > 1.0f) return 0.001f * (x - 1.0f) + 1.0f;
        return x;
    case EML_ACT_SELU:
        return x >= 0.0f ? 1.0507f * x : 1.0507f * 1.6732f * (expf(x) - 1.0f);
    default: return x;
    }
}

static float act_grad(float y, eml_act a)
{
    switch (a) {
    case EML_ACT_RELU:
    case EML_ACT_LEAKY: return eml_act_simple_grad(y, a);
    case EML_ACT_TANH: return 1.0f - y * y;
    case EML_ACT_LOGISTIC: return y * (1.0f - y);
    case EML_ACT_RELIE: return y > 0.0f ? 1.0f : 0.01f;
    case EML_ACT_RAMP: return (y > 0.0f ? 1.0f : 0.0f) + 0.1f;
    case EML_ACT_PLSE: return (y < 0.0f || y > 1.0f) ? 0.01f : 0.125f;
    case EML_ACT_ELU: return y >= 0.0f ? 1.0f : y + 1.0f;
    case EML_ACT_LOGGY: {
        float u = (y + 1.0f) / 2.0f;
        return 2.0f * (1.0f - u) * u;
    }
    case EML_ACT_STAIR: return floorf(y) == y ? 0.0f : 1.0f;
    case EML_ACT_HARDTAN: return (y > -1.0f && y < 1.0f) ? 1.0f : 0.0f;
    case EML_ACT_LHTAN: return (y > 0.0f && y < 1.0f) ? 1.0f : 0.001f;
    case EML_ACT_SELU: return y >= 0.0f ? 1.0507f : y + 1.0507f * 1.6732f;
    default: return 1.0f;
    }
}

eml_status eml_ref_act_forward(eml_kstate *ks, float *x, size_t n, eml_act a)
{
    (void)ks;
    if ((int)a < 0 || a >= EML_ACT_COUNT || (x == NULL && n > 0))
        return EML_ERR_INVALID;
    if (a == EML_ACT_LINEAR) return EML_OK;
    for (size_t i = 0; i < n; i++) x[i] = act_one(x[i], a);
    return EML_OK;
}

/* f'(x) written through y = f(x), so the forward input need not be kept. */
eml_status eml_ref_act_backward(eml_kstate *ks, float *delta, const float *y,
                                size_t n, eml_act a)
{
    (void)ks;
    if ((int)a < 0 || a >= EML_ACT_COUNT ||
        ((delta == NULL || y == NULL) && n > 0))
        return EML_ERR_INVALID;
    if (a == EML_ACT_LINEAR) return EML_OK;
    for (size_t i = 0; i < n; i++) delta[i] *= act_grad(y[i], a);
    return EML_OK;
}

/* ==== pooling ==== */

/* Workspace: one int32 per output, the argmax's index inside its input
 * plane (iy * in_w + ix), or -1 when the window holds no input tap. */
size_t eml_ref_maxpool_ws_bytes(const eml_pool_shape *s)
{
    size_t n_out = 0;
    if (eml_pool_shape_check(s, NULL, &n_out) != EML_OK)
        return 0;
    return n_out * sizeof(int32_t);
}

/* One plane (in_h x in_w) of max pooling, with each output's argmax
 * (the input index, -1 if the window holds no input).  Ties keep the first
 * in row-major order. */
void eml_ref_maxpool_plane(const float *x, float *y, int32_t *am,
                           const eml_pool_shape *s)
{
    for (int oy = 0; oy < s->out_h; oy++) {
        for (int ox = 0; ox < s->out_w; ox++) {
            float best = 0.0f;
            int32_t best_i = -1;
            for (int ky = 0; ky < s->size_h; ky++) {
                int iy = oy * s->stride - s->pad_t + ky;
                if (iy < 0 || iy >= s->in_h)
                    continue;
                for (int kx = 0; kx < s->size_w; kx++) {
                    int ix = ox * s->stride - s->pad_l + kx;
                    if (ix < 0 || ix >= s->in_w)
                        continue;
                    int32_t i = iy * s->in_w + ix;
                    /* strict >: ties keep the first in row-major order */
                    if (best_i < 0 || x[i] > best) {
                        best = x[i];
                        best_i = i;
                    }
                }
            }
            y[oy * s->out_w + ox] = best;
            am[oy * s->out_w + ox] = best_i;
        }
    }
}

eml_status eml_ref_maxpool_forward(eml_kstate *ks, float *out, void *ws,
                                   const float *in, const eml_pool_shape *s)
{
    (void)ks;
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK)
        return st;
    if (out == NULL || ws == NULL || in == NULL)
        return EML_ERR_INVALID;
    int32_t *arg = ws; /* (batch, c, out_h, out_w) */
    size_t plane_in = (size_t)s->in_h * (size_t)s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    size_t planes = (size_t)s->batch * (size_t)s->c;
    for (size_t p = 0; p < planes; p++)
        eml_ref_maxpool_plane(in + p * plane_in, out + p * plane_out,
                              arg + p * plane_out, s);
    return EML_OK;
}

eml_status eml_ref_maxpool_backward(eml_kstate *ks, float *din,
                                    const float *dout, const void *ws,
                                    const eml_pool_shape *s)
{
    (void)ks;
    size_t n_in = 0;
    eml_status st = eml_pool_shape_check(s, &n_in, NULL);
    if (st != EML_OK)
        return st;
    if (din == NULL || dout == NULL || ws == NULL)
        return EML_ERR_INVALID;
    const int32_t *arg = ws;
    int32_t plane_in = s->in_h * s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    size_t planes = (size_t)s->batch * (size_t)s->c;
    memset(din, 0, n_in * sizeof(float));
    for (size_t p = 0; p < planes; p++) {
        float *dx = din + p * (size_t)plane_in;
        const float *dy = dout + p * plane_out;
        const int32_t *am = arg + p * plane_out;
        for (size_t o = 0; o < plane_out; o++) {
            if (am[o] < 0)
                continue;
            if (am[o] >= plane_in)
                return EML_ERR_INVALID; /* not a workspace from forward */
            dx[am[o]] += dy[o];
        }
    }
    return EML_OK;
}

/* Number of valid taps of window (oy, ox) and its clipped row/col range. */
static int avg_window(const eml_pool_shape *s, int oy, int ox, int *y0,
                      int *y1, int *x0, int *x1)
{
    *y0 = oy * s->stride - s->pad_t;
    *x0 = ox * s->stride - s->pad_l;
    *y1 = *y0 + s->size_h;
    *x1 = *x0 + s->size_w;
    if (*y0 < 0)
        *y0 = 0;
    if (*x0 < 0)
        *x0 = 0;
    if (*y1 > s->in_h)
        *y1 = s->in_h;
    if (*x1 > s->in_w)
        *x1 = s->in_w;
    if (*y1 <= *y0 || *x1 <= *x0)
        return 0;
    return (*y1 - *y0) * (*x1 - *x0);
}

eml_status eml_ref_avgpool_forward(eml_kstate *ks, float *out,
                                   const float *in, const eml_pool_shape *s)
{
    (void)ks;
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK)
        return st;
    if (out == NULL || in == NULL)
        return EML_ERR_INVALID;
    size_t plane_in = (size_t)s->in_h * (size_t)s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    size_t planes = (size_t)s->batch * (size_t)s->c;
    for (size_t p = 0; p < planes; p++) {
        const float *x = in + p * plane_in;
        float *y = out + p * plane_out;
        for (int oy = 0; oy < s->out_h; oy++) {
            for (int ox = 0; ox < s->out_w; ox++) {
                int y0, y1, x0, x1;
                int count = avg_window(s, oy, ox, &y0, &y1, &x0, &x1);
                float sum = 0.0f;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        sum += x[(size_t)iy * (size_t)s->in_w + (size_t)ix];
                y[oy * s->out_w + ox] = count > 0 ? sum / (float)count : 0.0f;
            }
        }
    }
    return EML_OK;
}

eml_status eml_ref_avgpool_backward(eml_kstate *ks, float *din,
                                    const float *dout,
                                    const eml_pool_shape *s)
{
    (void)ks;
    size_t n_in = 0;
    eml_status st = eml_pool_shape_check(s, &n_in, NULL);
    if (st != EML_OK)
        return st;
    if (din == NULL || dout == NULL)
        return EML_ERR_INVALID;
    size_t plane_in = (size_t)s->in_h * (size_t)s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    size_t planes = (size_t)s->batch * (size_t)s->c;
    memset(din, 0, n_in * sizeof(float));
    for (size_t p = 0; p < planes; p++) {
        float *dx = din + p * plane_in;
        const float *dy = dout + p * plane_out;
        for (int oy = 0; oy < s->out_h; oy++) {
            for (int ox = 0; ox < s->out_w; ox++) {
                int y0, y1, x0, x1;
                int count = avg_window(s, oy, ox, &y0, &y1, &x0, &x1);
                if (count == 0)
                    continue;
                float g = dy[oy * s->out_w + ox] / (float)count;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        dx[(size_t)iy * (size_t)s->in_w + (size_t)ix] += g;
            }
        }
    }
    return EML_OK;
}

/* ==== softmax ==== */

/* Subtracting the row maximum keeps expf() finite for any logits. */
eml_status eml_ref_softmax_forward(eml_kstate *ks, float *out,
                                   const float *in, int batch, int n)
{
    (void)ks;
    if (batch < 0 || n < 0)
        return EML_ERR_INVALID;
    if (batch == 0 || n == 0)
        return EML_OK;
    if (out == NULL || in == NULL || out == in)
        return EML_ERR_INVALID;
    for (int b = 0; b < batch; b++) {
        const float *x = in + (size_t)b * (size_t)n;
        float *y = out + (size_t)b * (size_t)n;
        float max = x[0];
        for (int i = 1; i < n; i++)
            if (x[i] > max)
                max = x[i];
        float sum = 0.0f;
        for (int i = 0; i < n; i++) {
            y[i] = expf(x[i] - max);
            sum += y[i];
        }
        for (int i = 0; i < n; i++)
            y[i] /= sum;
    }
    return EML_OK;
}

/* ==== im2col / col2im ==== */

/* Exactly the formula of eml_conv_shape: row (ci*size + ky)*size + kx,
 * column oy*out_w + ox. */
void eml_ref_im2col(float *col, const float *in, const eml_conv_shape *s)
{
    if (col == NULL || in == NULL || !eml_conv_shape_ok(s))
        return;
    size_t cols = eml_conv_ld(s);
    int rows = s->c * s->size * s->size;
    for (int r = 0; r < rows; r++) {
        int ci = r / (s->size * s->size);
        int ky = (r / s->size) % s->size;
        int kx = r % s->size;
        for (int oy = 0; oy < s->out_h; oy++) {
            for (int ox = 0; ox < s->out_w; ox++) {
                int iy = oy * s->stride - s->pad + ky;
                int ix = ox * s->stride - s->pad + kx;
                float v = 0.0f;
                if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w)
                    v = in[((size_t)ci * (size_t)s->h + (size_t)iy) *
                               (size_t)s->w +
                           (size_t)ix];
                col[(size_t)r * cols + (size_t)oy * (size_t)s->out_w +
                    (size_t)ox] = v;
            }
        }
    }
}

/* The adjoint of im2col: each column entry goes back to the input pixel
 * it was copied from. */
void eml_ref_col2im(float *din, const float *col, const eml_conv_shape *s)
{
    if (din == NULL || col == NULL || !eml_conv_shape_ok(s))
        return;
    size_t cols = eml_conv_ld(s);
    int rows = s->c * s->size * s->size;
    for (int r = 0; r < rows; r++) {
        int ci = r / (s->size * s->size);
        int ky = (r / s->size) % s->size;
        int kx = r % s->size;
        for (int oy = 0; oy < s->out_h; oy++) {
            for (int ox = 0; ox < s->out_w; ox++) {
                int iy = oy * s->stride - s->pad + ky;
                int ix = ox * s->stride - s->pad + kx;
                if (iy >= 0 && iy < s->h && ix >= 0 && ix < s->w)
                    din[((size_t)ci * (size_t)s->h + (size_t)iy) *
                            (size_t)s->w +
                        (size_t)ix] +=
                        col[(size_t)r * cols + (size_t)oy * (size_t)s->out_w +
                            (size_t)ox];
            }
        }
    }
}

/* ==== the table ==== */

/* ==== int8 convolution (NHWC) ==== */

static int8_t ref_qconv_one(const eml_qconv *q, const int8_t *src,
                            const int8_t *wj, int b, int oy, int ox, int j,
                            int8_t old)
{
    const eml_conv_shape *s = &q->s;
    size_t kk = (size_t)s->size * (size_t)s->size;
    int32_t acc = 0;
    for (int ky = 0; ky < s->size; ky++) {
        int iy = oy * s->stride - s->pad + ky;
        if (iy < 0 || iy >= s->h) continue;
        for (int kx = 0; kx < s->size; kx++) {
            int ix = ox * s->stride - s->pad + kx;
            if (ix < 0 || ix >= s->w) continue;
            const int8_t *x =
                src + (((size_t)b * (size_t)s->h + (size_t)iy) *
                           (size_t)s->w + (size_t)ix) * (size_t)s->c;
            const int8_t *wk = wj + (size_t)ky * (size_t)s->size + (size_t)kx;
            for (int ci = 0; ci < s->c; ci++)
                acc += (int32_t)wk[(size_t)ci * kk] * (int32_t)x[ci];
        }
    }
    float v = ((float)acc + q->bias[j]) * q->scale[j];
    if (q->sum_scale != 0.0f) v += q->sum_scale * (float)old;
    if (q->act == EML_ACT_RELU) v = v > 0.0f ? v : 0.0f;
    if (q->act == EML_ACT_LEAKY) v = v > 0.0f ? v : EML_LEAKY_SLOPE * v;
    v = nearbyintf(v);
    return (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : (int)v);
}

eml_status eml_ref_qconv(eml_kstate *ks, const eml_qconv *q,
                         const int8_t *src, const int8_t *w, int8_t *dst)
{
    (void)ks;
    eml_status st = eml_qconv_check(q, src, w, dst);
    if (st != EML_OK) return st;
    const eml_conv_shape *s = &q->s;
    size_t per_out = (size_t)s->c * (size_t)s->size * (size_t)s->size;
    for (int b = 0; b < q->batch; b++)
        for (int oy = 0; oy < s->out_h; oy++)
            for (int ox = 0; ox < s->out_w; ox++) {
                int8_t *o = dst + (((size_t)b * (size_t)s->out_h +
                                    (size_t)oy) * (size_t)s->out_w +
                                   (size_t)ox) * (size_t)q->out_c;
                for (int j = 0; j < q->out_c; j++)
                    o[j] = ref_qconv_one(q, src, w + (size_t)j * per_out, b,
                                         oy, ox, j, o[j]);
            }
    return EML_OK;
}

const eml_kernels eml_kernels_ref_table = {
    .name = "ref",
    .kind = EML_KERNELS_REF,
    .state_new = ref_state_new,
    .state_free = ref_state_free,
    .gemm = eml_ref_gemm,
    .act_forward = eml_ref_act_forward,
    .act_backward = eml_ref_act_backward,
    .maxpool_ws_bytes = eml_ref_maxpool_ws_bytes,
    .maxpool_forward = eml_ref_maxpool_forward,
    .maxpool_backward = eml_ref_maxpool_backward,
    .avgpool_forward = eml_ref_avgpool_forward,
    .avgpool_backward = eml_ref_avgpool_backward,
    .softmax_forward = eml_ref_softmax_forward,
    .im2col = eml_ref_im2col,
    .col2im = eml_ref_col2im,
    .qconv = eml_ref_qconv,
};
