/*
 * kernels.h - the kernel table: every numeric op of the engine, twice.
 *
 * EML_KERNELS_REF is plain, obviously-correct C: the test oracle and the
 * path for a minimal trusted build.  EML_KERNELS_FAST runs the same ops
 * through oneDNN (libdnnl) primitives and dnnl_sgemm.  Layers never call a
 * backend directly; they call through an eml_kernels table, so tests can
 * check every fast op against its reference.
 *
 * All matrix products of linear layers (connected layers, convolutions as
 * im2col + GEMM) go through ONE dispatch point, eml_gemm(), whose function
 * can be swapped per context (outsourcing, blinding and Freivalds checks
 * plug in there later without touching layer code).
 *
 * Layout conventions: row-major; activations (batch, c, h, w) contiguous
 * (NCHW); a (batch, n) matrix has row stride n.  No I/O, no globals that
 * outlive a kernel state, thread-safe for distinct states.
 *
 *     const eml_kernels *k = eml_kernels_get(EML_KERNELS_FAST);
 *     eml_kstate *ks = NULL;
 *     if (k->state_new(&ks) != EML_OK) ...
 *     k->act_forward(ks, x, n, EML_ACT_RELU);
 *     k->state_free(ks);
 */
#ifndef ENCLAVEML_KERNELS_H
#define ENCLAVEML_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values are only ever appended. */
typedef enum eml_act {
    EML_ACT_LINEAR = 0,
    EML_ACT_RELU = 1,
    EML_ACT_LEAKY = 2,    /* slope 0.1 for x < 0, as in Darknet */
    EML_ACT_TANH = 3,
    EML_ACT_LOGISTIC = 4,
    /* The rest of Darknet's (2018) activations, with its formulas (the
     * gradient of each is a function of the output, as Darknet writes
     * it; docs/cfg.md): */
    EML_ACT_RELIE = 5,   /* x > 0 ? x : 0.01 x */
    EML_ACT_RAMP = 6,    /* max(x, 0) + 0.1 x */
    EML_ACT_PLSE = 7,    /* piecewise linear logistic, slopes 0.01/0.125 */
    EML_ACT_ELU = 8,     /* x >= 0 ? x : exp(x) - 1 */
    EML_ACT_LOGGY = 9,   /* 2 / (1 + exp(-x)) - 1 */
    EML_ACT_STAIR = 10,  /* Darknet's staircase (gradient 0 on the steps) */
    EML_ACT_HARDTAN = 11, /* clamp to [-1, 1] */
    EML_ACT_LHTAN = 12,  /* clamp to [0, 1] with slope 0.001 outside */
    EML_ACT_SELU = 13,   /* 1.0507 (x >= 0 ? x : 1.6732 (exp(x) - 1)) */
    EML_ACT_COUNT = 14
} eml_act;

#define EML_LEAKY_SLOPE 0.1f

/* linear, relu and leaky, which a layer may apply while it moves its
 * outputs or deltas anyway, with the same arithmetic as both tables'
 * act_forward and act_backward (ref.c uses these). */
static inline int eml_act_is_simple(eml_act a)
{
    return a == EML_ACT_LINEAR || a == EML_ACT_RELU || a == EML_ACT_LEAKY;
}
static inline float eml_act_simple(float x, eml_act a)
{
    return a == EML_ACT_RELU    ? (x > 0.0f ? x : 0.0f)
           : a == EML_ACT_LEAKY ? (x > 0.0f ? x : EML_LEAKY_SLOPE * x)
                                : x;
}
/* The derivative through the output y = f(x). */
static inline float eml_act_simple_grad(float y, eml_act a)
{
    return a == EML_ACT_RELU    ? (y > 0.0f ? 1.0f : 0.0f)
           : a == EML_ACT_LEAKY ? (y > 0.0f ? 1.0f : EML_LEAKY_SLOPE)
                                : 1.0f;
}

typedef enum eml_kernels_kind {
    EML_KERNELS_REF = 0,
    EML_KERNELS_FAST = 1,
    EML_KERNELS_COUNT = 2
} eml_kernels_kind;

/* Pooling geometry for one call.  Input (batch, c, in_h, in_w), output
 * (batch, c, out_h, out_w).  Output pixel (oy, ox) covers input rows
 * oy*stride - pad_t ... + size-1 (same for columns with pad_l); taps outside
 * the input are ignored (max: never chosen; avg: not counted, i.e. the
 * average is over the valid taps only).  out_h/out_w are given by the
 * caller and may make the window run past the bottom/right edge. */
typedef struct eml_pool_shape {
    int batch, c;
    int in_h, in_w;
    int out_h, out_w;
    int size_h, size_w;
    int stride;
    int pad_t, pad_l;
} eml_pool_shape;

/* Convolution geometry for im2col/col2im of ONE example.  Input (c, h, w);
 * column matrix (c*size*size, out_h*out_w), row index (ci*size + ky)*size+kx,
 * column index oy*out_w + ox, value input[ci][oy*stride-pad+ky][ox*stride-pad+kx]
 * or 0 outside the input.  Rows of the column matrix are ld floats apart
 * (ld = 0 means out_h*out_w), so a batch's examples can sit side by side in
 * one wide matrix (c*size*size, batch*out_h*out_w) and share one GEMM. */
typedef struct eml_conv_shape {
    int c, h, w;
    int size, stride, pad;
    int out_h, out_w;
    size_t ld;
} eml_conv_shape;

/* The row stride of s's column matrix. */
static inline size_t eml_conv_ld(const eml_conv_shape *s)
{
    return s->ld != 0 ? s->ld : (size_t)s->out_h * (size_t)s->out_w;
}

typedef struct eml_kstate eml_kstate; /* per-network backend state (caches) */

/* An int8 convolution of a batch in channels-last layout (NHWC: src
 * (batch, h, w, c), dst (batch, out_h, out_w, out_c)) with the weights
 * (out_c, c, size, size) as the layers keep them, in s's geometry (ld
 * unused).  Per output value, acc the exact int32 sum of weight times
 * input over the window (zero outside the input):
 *     v = (acc + bias[j]) * scale[j]        (j the output channel; the
 *                                            bias in the sum's units)
 *     v = v + sum_scale * dst               (only if sum_scale != 0: dst
 *                                            holds an s8 tensor to add)
 *     v = act(v)                            (linear, relu or leaky)
 *     dst = v rounded to nearest (ties to even), saturated to [-128, 127]
 * key names the weights, scales and bias: calls with equal keys promise
 * equal values, so a backend may keep what it derives from them (the fast
 * table's reordered weights). */
typedef struct eml_qconv {
    int batch, out_c;
    eml_conv_shape s;
    const float *scale, *bias; /* out_c each */
    float sum_scale;
    eml_act act;
    uint64_t key;
} eml_qconv;

/* What a matrix product is, so that a backend can decide how to run it
 * (an outsourcing backend caches a blinded weight until its version
 * changes, verifies each product, quantizes by data type).
 * Values are only ever appended. */
typedef enum eml_gemm_pass {
    EML_GEMM_OTHER = 0,        /* not a layer's product (tests, tools) */
    EML_GEMM_FORWARD = 1,      /* a layer's outputs from its inputs */
    EML_GEMM_INPUT_GRAD = 2,   /* the gradient w.r.t. a layer's inputs */
    EML_GEMM_WEIGHT_GRAD = 3,  /* a weight gradient summed over the batch */
    EML_GEMM_PER_EXAMPLE = 4   /* one weight gradient per example (DP-SGD):
                                  `count` products in one call */
} eml_gemm_pass;

typedef enum eml_gemm_weight {
    EML_GEMM_NO_WEIGHT = 0, /* neither operand is a layer's weight */
    EML_GEMM_WEIGHT_A = 1,
    EML_GEMM_WEIGHT_B = 2
} eml_gemm_weight;

typedef enum eml_dtype {
    EML_DTYPE_F32 = 0, /* float operands and result: all there is today */
    EML_DTYPE_S8 = 1,  /* int8 operands, int32 result, exact; alpha 1,
                          beta 0 (C overwritten) */
    EML_DTYPE_FIELD = 2, /* elements of a prime field (outsourcing, next) */
    EML_DTYPE_BF16 = 3  /* bfloat16 operands (uint16_t, the top half of a
                           float), float result; alpha 1, beta 0 */
} eml_dtype;

/* C (M x N, row stride ldc) = alpha * op(A) * op(B) + beta * C, row-major,
 * `count` times: product i reads A + i*stride_a and B + i*stride_b and
 * writes C + i*stride_c (strides in elements; products must not write
 * over each other).  op(A) is M x K (A stored K x M, row stride lda, when
 * trans_a).  op(B) is K x N (B stored N x K when trans_b).  beta == 0
 * means C is not read. */
typedef struct eml_gemm_desc {
    /* what it is */
    int layer;                 /* the layer's index in its net; -1: none */
    eml_gemm_pass pass;
    eml_gemm_weight weight;    /* which operand is the layer's weight */
    uint64_t weight_version;   /* changes whenever the weights do */
    eml_dtype dtype;
    /* the product */
    int trans_a, trans_b, M, N, K;
    float alpha, beta;
    const void *A;
    int lda;
    const void *B;
    int ldb;
    void *C;
    int ldc;
    int count;                 /* >= 1 */
    size_t stride_a, stride_b, stride_c;
} eml_gemm_desc;

/* A plain f32 product, not a layer's (pass OTHER, layer -1, count 1). */
eml_gemm_desc eml_gemm_desc_f32(int trans_a, int trans_b, int M, int N,
                                int K, float alpha, const float *A, int lda,
                                const float *B, int ldb, float beta, float *C,
                                int ldc);

/* A backend's GEMM: runs every product of the descriptor, or answers
 * EML_ERR_UNSUPPORTED for a data type it does not have (never quietly
 * something else).  Arguments were checked by eml_gemm(). */
typedef eml_status (*eml_gemm_fn)(void *ctx, const eml_gemm_desc *g);

typedef struct eml_kernels {
    const char *name; /* "ref" or "fast" */
    eml_kernels_kind kind;

    eml_status (*state_new)(eml_kstate **out);
    void (*state_free)(eml_kstate *ks); /* NULL is a no-op */

    /* The backend's GEMM; layers reach it only through eml_gemm(). */
    eml_gemm_fn gemm; /* ctx argument: the eml_kstate * */

    /* y = f(x) in place over n floats. */
    eml_status (*act_forward)(eml_kstate *ks, float *x, size_t n, eml_act a);
    /* delta *= f'(.) expressed through the OUTPUT y = f(x), in place. */
    eml_status (*act_backward)(eml_kstate *ks, float *delta, const float *y,
                               size_t n, eml_act a);

    /* 1 if this table runs pooling of shape s, 0 if not (its pooling
     * functions then fail with EML_ERR_UNSUPPORTED: a layer of that shape
     * runs on the reference table, and the net says so). */
    int (*pool_supported)(const eml_pool_shape *s);
    /* Max pooling.  ws is backend scratch of maxpool_ws_bytes(s) bytes that
     * forward fills and backward reads (ref: int32 argmax per output). */
    size_t (*maxpool_ws_bytes)(const eml_pool_shape *s);
    eml_status (*maxpool_forward)(eml_kstate *ks, float *out, void *ws,
                                  const float *in, const eml_pool_shape *s);
    /* din = (overwritten) gradient w.r.t. the input. */
    eml_status (*maxpool_backward)(eml_kstate *ks, float *din,
                                   const float *dout, const void *ws,
                                   const eml_pool_shape *s);
    eml_status (*avgpool_forward)(eml_kstate *ks, float *out, const float *in,
                                  const eml_pool_shape *s);
    eml_status (*avgpool_backward)(eml_kstate *ks, float *din,
                                   const float *dout, const eml_pool_shape *s);

    /* Row-wise softmax of a (batch, n) matrix; out may not alias in. */
    eml_status (*softmax_forward)(eml_kstate *ks, float *out, const float *in,
                                  int batch, int n);

    /* im2col for one example (see eml_conv_shape); col is overwritten. */
    void (*im2col)(float *col, const float *in, const eml_conv_shape *s);
    /* Adds the column gradient back into din (din is accumulated into,
     * callers zero it first). */
    void (*col2im)(float *din, const float *col, const eml_conv_shape *s);

    /* The int8 convolution of q (see eml_qconv); acts other than linear,
     * relu and leaky are EML_ERR_UNSUPPORTED. */
    eml_status (*qconv)(eml_kstate *ks, const eml_qconv *q,
                        const int8_t *src, const int8_t *w, int8_t *dst);
} eml_kernels;

/* The table for a kind; never NULL for a valid kind. */
const eml_kernels *eml_kernels_get(eml_kernels_kind kind);

/* Parses "ref" / "fast". */
eml_status eml_kernels_parse(const char *name, eml_kernels_kind *out);

/* ==== the GEMM dispatch point ==== */

/* A convolution's product named by its tensors rather than by its im2col
 * columns, for a dispatch that forms the columns where it runs the
 * product (an outsourcing worker: the images travel, not their columns,
 * which are size^2 times larger).  cols(x) is the batch's columns as the
 * layers lay them out (ckk x batch*hw, ckk = c*size^2, hw = out_h*out_w),
 * and L = batch*hw:
 *   FORWARD       out (f x L)       = w (f x ckk) cols(x)
 *   WEIGHT_GRAD   out (f x ckk)     = d (f x L) cols(x)^T
 *   INPUT_GRAD    out (batch x chw) = col2im(w^T d)
 * out is overwritten. */
typedef struct eml_conv_desc {
    int layer;
    eml_gemm_pass pass;
    uint64_t weight_version;
    eml_conv_shape shape; /* one image's geometry (ld unused) */
    int batch, f;
    const float *w; /* FORWARD, INPUT_GRAD */
    const float *x; /* batch x c*h*w: FORWARD, WEIGHT_GRAD */
    const float *d; /* f x L: WEIGHT_GRAD, INPUT_GRAD */
    float *out;
} eml_conv_desc;

typedef eml_status (*eml_conv_fn)(void *ctx, const eml_conv_desc *c);
/* Whether the conv entry takes this product whole (1), or the layer forms
 * the columns and sends it through eml_gemm (0). */
typedef int (*eml_conv_takes_fn)(void *ctx, const eml_conv_desc *c);

/* Where the matrix products of linear layers go.  fn/ctx default to the
 * kernel table's gemm and its state; a hook (a test counting calls, an
 * outsourcing backend) can replace them.  conv, NULL by default, takes a
 * convolution's products whole (eml_conv_desc): with it set the layers
 * hand over their tensors instead of forming columns.  `calls` and
 * `flops` count what went through. */
typedef struct eml_gemm_dispatch {
    eml_gemm_fn fn;
    void *ctx;
    eml_conv_fn conv;             /* ctx too */
    eml_conv_takes_fn conv_takes; /* NULL: conv takes every product */
    uint64_t calls;
    double flops;
} eml_gemm_dispatch;

/* Checks the descriptor (dimensions, leading dimensions, pointers, count
 * and strides), counts it (calls += 1, flops += count * 2MNK) and runs it
 * through d->fn. */
EML_MUST_CHECK eml_status eml_gemm(eml_gemm_dispatch *d,
                                   const eml_gemm_desc *g);
/* Checks a convolution's descriptor (pass, geometry, pointers), counts
 * it as its GEMM and runs it through d->conv, which must be set. */
EML_MUST_CHECK eml_status eml_conv(eml_gemm_dispatch *d,
                                   const eml_conv_desc *c);
/* eml_gemm of eml_gemm_desc_f32(...). */
EML_MUST_CHECK eml_status eml_gemm_f32(eml_gemm_dispatch *d, int trans_a,
                                       int trans_b, int M, int N, int K,
                                       float alpha, const float *A, int lda,
                                       const float *B, int ldb, float beta,
                                       float *C, int ldc);

/* Sets the number of threads used by fast kernels and OpenMP loops. */
void eml_kernels_set_threads(int n);

#ifdef __cplusplus
}
#endif
#endif
