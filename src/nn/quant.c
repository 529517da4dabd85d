/*
 * quant.c - int8 inference: a net's convolutions and connected layers run
 * their products as s8 x s8 -> s32 through the GEMM dispatch point
 * (EML_DTYPE_S8: oneDNN with VNNI on the fast table, plain loops on the
 * reference one, exactly the same integers), with fp32 everywhere else
 * (bias, batch norm, activations, pooling, softmax).
 *
 * Scales are symmetric: a layer's input x ~ s_x q with s_x = max|x| / 127
 * over a calibration set (eml_net_calibrate), its weights w ~ s_w[j] q per
 * output channel j with s_w[j] = max_k |w[j][k]| / 127; a product's int32
 * sum times s_x s_w[j] is the fp32 product's estimate.  Values beyond the
 * calibrated range saturate at +-127.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/net_internal.h"

static const char *const prec_names[EML_PREC_COUNT] = {"fp32", "int8",
                                                       "bf16"};

#define S8_COLUMNS 4096 /* columns of one s8 product (see below) */

const char *eml_precision_name(eml_precision p)
{
    return (int)p >= 0 && p < EML_PREC_COUNT ? prec_names[p] : "unknown";
}

eml_status eml_precision_parse(const char *name, eml_precision *out)
{
    for (int i = 0; name != NULL && i < EML_PREC_COUNT; i++)
        if (strcmp(name, prec_names[i]) == 0) {
            *out = (eml_precision)i;
            return EML_OK;
        }
    return EML_ERR_INVALID;
}

static int quantized(const layer *l)
{
    return (l->type == EML_LAYER_CONVOLUTIONAL ||
            l->type == EML_LAYER_CONNECTED) &&
           l->n_w > 0;
}

void eml_net_calibrate(eml_net *net, int on)
{
    if (on)
        for (int i = 0; i < net->n_layers; i++)
            net->layers[i].in_max = net->layers[i].out_max = 0;
    net->calibrating = on;
}

static float abs_max(float m, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) m = fmaxf(m, fabsf(x[j]));
    return m;
}

void eml_quant_observe_input(layer *l, const float *in, int n)
{
    if (l->n_w > 0 || l->index == 0)
        l->in_max = abs_max(l->in_max, in, (size_t)n * l->n_in);
}

void eml_quant_observe_output(layer *l, int n)
{
    l->out_max = abs_max(l->out_max, l->out, (size_t)n * l->n_out);
}

#define q8 eml_q8

void eml_quant_free(layer *l)
{
    if (l->wq != NULL) eml_wipe(l->wq, l->n_w); /* the model's weights */
    free(l->wq);
    free(l->wscale);
    free(l->xq);
    free(l->xin);
    free(l->acc);
    if (l->wbf != NULL) eml_wipe(l->wbf, l->n_w * sizeof(uint16_t));
    free(l->wbf);
    free(l->xbf);
    l->wbf = l->xbf = NULL;
    l->xin = NULL;
    l->wq = NULL;
    l->wscale = NULL;
    l->xq = NULL;
    l->acc = NULL;
}

/* Per output channel: w[j][.] ~ wscale[j] * wq[j][.].  The buffers of
 * the product come with its first run (buffers_s8): a layer the int8 plan
 * runs never needs them. */
static eml_status quantize_layer(eml_net *net, layer *l, eml_err *err)
{
    size_t f = l->n_b, k = l->n_w / l->n_b;
    (void)net;
    l->wq = malloc(l->n_w);
    l->wscale = malloc(f * sizeof(float));
    if (l->wq == NULL || l->wscale == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory for int8");
    for (size_t j = 0; j < f; j++) {
        const float *w = l->wt + j * k;
        float m = 0;
        for (size_t i = 0; i < k; i++) m = fmaxf(m, fabsf(w[i]));
        l->wscale[j] = m > 0 ? m / 127.0f : 1.0f;
        float inv = 1.0f / l->wscale[j];
        for (size_t i = 0; i < k; i++) l->wq[j * k + i] = q8(w[i], inv);
    }
    return EML_OK;
}

/* Round to nearest even (NaN kept a NaN). */
static inline uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void to_bf16_all(const float *x, uint16_t *y, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] = to_bf16(x[i]);
}

static eml_status bf16_layer(eml_net *net, layer *l, eml_err *err)
{
    size_t mb = (size_t)net->max_batch, k = l->n_w / l->n_b;
    size_t cols = l->type == EML_LAYER_CONVOLUTIONAL
                      ? k * mb * (size_t)l->out_h * (size_t)l->out_w
                      : mb * l->n_in;
    l->wbf = malloc(l->n_w * sizeof(uint16_t));
    l->xbf = malloc(cols * sizeof(uint16_t));
    if (l->wbf == NULL || l->xbf == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory for bf16");
    to_bf16_all(l->wt, l->wbf, l->n_w);
    return EML_OK;
}

eml_status eml_net_set_precision(eml_net *net, eml_precision p, eml_err *err)
{
    if ((int)p < 0 || p >= EML_PREC_COUNT)
        return eml_err_set(err, EML_ERR_INVALID, "unknown precision");
    for (int i = 0; i < net->n_layers; i++)
        eml_quant_free(&net->layers[i]);
    eml_qplan_free(net->qplan);
    net->qplan = NULL;
    net->precision = EML_PREC_FP32;
    if (p == EML_PREC_FP32) return EML_OK;
    if (!net->inference)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "%s runs inference only, not training",
                           eml_precision_name(p));
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        if (!quantized(l)) continue;
        if (p == EML_PREC_BF16) {
            eml_status st = bf16_layer(net, l, err);
            if (st != EML_OK) return st;
            continue;
        }
        if (!(l->in_max > 0))
            return eml_err_set(err, EML_ERR_INVALID,
                               "layer %d: no calibrated input range (run "
                               "calibration images through the net first)",
                               i);
        eml_status st = quantize_layer(net, l, err);
        if (st != EML_OK) return st;
    }
    if (p == EML_PREC_INT8) {
        eml_status st = eml_qplan_build(net, err);
        if (st != EML_OK) return st;
    }
    net->precision = p;
    return EML_OK;
}

/* The quantized input, columns and int32 product of layer l's product. */
static eml_status buffers_s8(const eml_net *net, layer *l)
{
    if (l->xq != NULL) return EML_OK;
    size_t f = l->n_b, k = l->n_w / l->n_b, mb = (size_t)net->max_batch;
    int conv = l->type == EML_LAYER_CONVOLUTIONAL;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    l->xq = malloc(conv ? k * mb * hw : mb * l->n_in);
    l->acc = malloc((conv ? f * mb * hw : mb * l->n_out) * sizeof(int32_t));
    if (conv) l->xin = malloc(mb * l->n_in);
    if (l->xq != NULL && l->acc != NULL && (!conv || l->xin != NULL))
        return EML_OK;
    free(l->xq), free(l->acc), free(l->xin);
    l->xq = l->xin = NULL;
    l->acc = NULL;
    return EML_ERR_NOMEM;
}

/* q = round(x / s_x), saturated; s_x = in_max / 127. */
static void quantize_input(const layer *l, const float *x, int8_t *q, size_t n)
{
    float inv = 127.0f / l->in_max;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) q[i] = q8(x[i], inv);
}

/* One of the layer's reduced-precision products (dtype S8: int32 result;
 * BF16: float result) through the GEMM dispatch point; w is the layer's
 * weight operand (A or B). */
static eml_status typed_gemm(eml_net *net, const layer *l, eml_dtype dtype,
                             const void *w, int tb, int M, int N, int K,
                             const void *A, int lda, const void *B, int ldb,
                             void *C, int ldc)
{
    eml_gemm_desc g = eml_gemm_desc_f32(0, tb, M, N, K, 1.0f, NULL, lda,
                                        NULL, ldb, 0.0f, NULL, ldc);
    g.dtype = dtype;
    g.A = A;
    g.B = B;
    g.C = C;
    g.layer = l->index;
    g.pass = EML_GEMM_FORWARD;
    g.weight = A == w ? EML_GEMM_WEIGHT_A : EML_GEMM_WEIGHT_B;
    g.weight_version = net->wversion;
    return eml_gemm(&net->gemm, &g);
}

/* im2col of one example's quantized input (as the reference im2col
 * does for floats): col row r = (ci, ky, kx), row stride ld. */
static void im2col_s8(int8_t *col, size_t ld, const int8_t *in,
                      const layer *l)
{
    int k = l->size, st = l->stride, pad = l->pad, ow = l->out_w;
    int rows = l->c * k * k;
    for (int r = 0; r < rows; r++) {
        int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        int8_t *dst = col + (size_t)r * ld;
        for (int oy = 0; oy < l->out_h; oy++) {
            int iy = oy * st - pad + ky;
            int8_t *d = dst + (size_t)oy * (size_t)ow;
            if (iy < 0 || iy >= l->h) {
                memset(d, 0, (size_t)ow);
                continue;
            }
            const int8_t *src = in + ((size_t)ci * l->h + (size_t)iy) * l->w;
            if (st == 1) { /* ix = ox - pad + kx: one run, zeros around */
                int lo = pad - kx, hi = l->w + pad - kx;
                lo = lo < 0 ? 0 : lo > ow ? ow : lo;
                hi = hi < lo ? lo : hi > ow ? ow : hi;
                memset(d, 0, (size_t)lo);
                memcpy(d + lo, src + lo - pad + kx, (size_t)(hi - lo));
                memset(d + hi, 0, (size_t)(ow - hi));
                continue;
            }
            for (int ox = 0; ox < ow; ox++) {
                int ix = ox * st - pad + kx;
                d[ox] = ix >= 0 && ix < l->w ? src[ix] : 0;
            }
        }
    }
}

eml_status eml_quant_conv_product(eml_net *net, layer *l, const float *in,
                                  int n, size_t ld)
{
    int f = l->out_c, ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)((size_t)n * hw);
    eml_status st = buffers_s8(net, l);
    if (st != EML_OK) return st;
    /* The input quantized once, its columns formed in int8: a quarter of
     * the bytes of float columns, and no float columns at all. */
    quantize_input(l, in, l->xin, (size_t)n * l->n_in);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        im2col_s8(l->xq + (size_t)b * hw, (size_t)wide,
                  l->xin + (size_t)b * l->n_in, l);
    /* In runs of columns: oneDNN packs its operands into buffers it
     * allocates per call, and ones above glibc's largest mmap threshold
     * (32 MiB) come back as fresh pages each time: zeroing them cost more
     * than the products. */
    for (int j0 = 0; st == EML_OK && j0 < wide; j0 += S8_COLUMNS) {
        int nj = wide - j0 < S8_COLUMNS ? wide - j0 : S8_COLUMNS;
        st = typed_gemm(net, l, EML_DTYPE_S8, l->wq, 0, f, nj, ckk, l->wq,
                        ckk, l->xq + j0, wide, l->acc + j0, wide);
    }
    if (st != EML_OK) return st;
    float sx = l->in_max / 127.0f;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < f; j++) {
        float s = sx * l->wscale[j];
        const int32_t *a = l->acc + (size_t)j * (size_t)wide;
        float *w = l->wide + (size_t)j * ld;
        for (int p = 0; p < wide; p++) w[p] = (float)a[p] * s;
    }
    return EML_OK;
}

eml_status eml_quant_connected_product(eml_net *net, layer *l,
                                       const float *in, int n)
{
    int no = (int)l->n_out, ni = (int)l->n_in;
    eml_status st = buffers_s8(net, l);
    if (st != EML_OK) return st;
    quantize_input(l, in, l->xq, (size_t)n * (size_t)ni);
    /* out (n x out) = xq (n x in) wq^T (in x out) */
    st = typed_gemm(net, l, EML_DTYPE_S8, l->wq, 1, n, no, ni,
                               l->xq, ni, l->wq, ni, l->acc, no);
    if (st != EML_OK) return st;
    float sx = l->in_max / 127.0f;
    for (int b = 0; b < n; b++)
        for (int j = 0; j < no; j++)
            l->out[(size_t)b * no + j] =
                (float)l->acc[(size_t)b * no + j] * sx * l->wscale[j];
    return EML_OK;
}

eml_status eml_bf16_conv_product(eml_net *net, layer *l, int n, size_t ld)
{
    int f = l->out_c, ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)((size_t)n * hw);
    to_bf16_all(l->col, l->xbf, (size_t)ckk * (size_t)wide);
    return typed_gemm(net, l, EML_DTYPE_BF16, l->wbf, 0, f, wide, ckk,
                      l->wbf, ckk, l->xbf, wide, l->wide, (int)ld);
}

eml_status eml_bf16_connected_product(eml_net *net, layer *l,
                                      const float *in, int n)
{
    int no = (int)l->n_out, ni = (int)l->n_in;
    to_bf16_all(in, l->xbf, (size_t)n * (size_t)ni);
    return typed_gemm(net, l, EML_DTYPE_BF16, l->wbf, 1, n, no, ni, l->xbf,
                      ni, l->wbf, ni, l->out, no);
}
