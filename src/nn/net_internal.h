/*
 * net_internal.h - what the network's two files share: the layer and net
 * structs, small allocation helpers, and the layers' passes.
 *
 *   net.c            construction (shapes, parameter offsets, buffers),
 *                    the forward and backward passes over the layers,
 *                    accessors;
 *   net_loss.c       the loss (cross-entropy, [cost]'s squared error);
 *   net_stats.c      FLOPs, per-layer profiles and descriptions;
 *   layers.c         each layer's forward and backward: connected,
 *                    convolution (im2col + GEMM, per-example gradients for
 *                    DP-SGD), pooling shapes, dropout, scattering; every
 *                    product through the GEMM dispatch point with its
 *                    descriptor;
 *   layers_darknet.c batch norm, shortcut, route, upsample, cost.
 *
 * Trusted code; nothing here is public API.
 */
#ifndef EML_NN_NET_INTERNAL_H
#define EML_NN_NET_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/scatter.h"

typedef struct layer {
    eml_layer_type type;
    int index;
    eml_act act;
    int c, h, w;             /* input (channels, height, width) */
    int out_c, out_h, out_w; /* output, per example */
    size_t n_in, n_out;
    int size, stride, pad;   /* conv and pools */
    float prob;              /* dropout */

    size_t n_w, n_b;
    float *wt, *b;   /* views into the parameter buffer; conv (out,in,k,k),
                        connected (out,in) */
    float *dw, *db;  /* same views into the gradient buffer */

    float *out;   /* (max_batch, n_out) */
    float *delta; /* (max_batch, n_out): dL/d(out); softmax: dL/d(input) */
    float *col;   /* conv: (c*k*k, n*out_h*out_w) */
    int col_ready; /* conv: col holds the last forward's columns */
    int col_chunk; /* conv: 0, col is one matrix of the batch's columns;
                      k > 0, it is the batch in chunks of k examples, each
                      chunk's columns a matrix of their own (layers.c) */
    float *dw_part; /* conv: each chunk's weight gradient, summed after */
    float *dcol;  /* conv after the first layer: the columns' gradient */
    float *wide;  /* conv: (out_c, n*out_h*out_w) outputs or their deltas */
    float *dw_ex; /* conv: per-example weight gradients (max_batch x n_w),
                     made on the first per-example pass (DP-SGD) */
    void *ws;     /* maxpool workspace */
    const eml_kernels *pk; /* pooling: the table that runs this layer */
    float *mask;  /* dropout: (max_batch, n_out), 0 or 1/(1-p) */
    eml_scatter *sc; /* scattering */

    /* batch normalization (conv): gamma, its gradient, the running
     * statistics (parameters that are not trained: tensors bn.running_*),
     * the normalized values of the last training forward (f, n*hw like
     * wide) and each channel's 1/sqrt(var + eps) */
    int bn;
    float *scale, *dscale, *rmean, *rvar;
    float *xhat, *inv_std;
    /* shortcut: out = alpha * previous + beta * layers[from] */
    int from;
    float alpha, beta;
    /* route: the layers concatenated */
    int n_route;
    int route[EML_CFG_MAX_ROUTE];
    float scale_by; /* upsample: output multiplier; cost: loss multiplier */
    int groups;     /* softmax */
    /* The delta gets more than one contribution (a route's or shortcut's
     * source, or the layer before a route): zeroed before backward, and
     * every pass adds into it. */
    int accum;
    /* int8 inference (quant.c): the weights per output channel
     * (w ~ wq * wscale[j]), the largest |input| seen while calibrating,
     * the quantized input (columns) and the int32 product */
    int8_t *wq;
    float *wscale;
    float in_max;
    float out_max; /* the largest |output| seen while calibrating (qplan) */
    int8_t *xq;   /* the quantized columns (conv) or input (connected) */
    int8_t *xin;  /* conv: the quantized input, before its columns */
    int32_t *acc;
    uint16_t *wbf, *xbf; /* bf16: the weights, the columns or input */

    double t_fwd, t_bwd;
} layer;

struct eml_net {
    const eml_kernels *k;
    eml_kstate *ks;
    eml_gemm_dispatch gemm;
    int max_batch;
    int n_layers;
    layer *layers;
    size_t n_params;
    float *params;
    float *grads;
    float *input; /* (max_batch, n_in of layer 0) */
    size_t n_tensors;
    eml_net_tensor *tensors;
    eml_rng rng;
    int profiling;
    uint64_t wversion; /* the weights' version (eml_gemm_desc) */
    int ref_layers;    /* layers the kernel table cannot run, on ref */
    int inference;     /* no gradients, deltas, masks (eml_net_opts) */
    int borrowed;      /* params belong to another net (a model) */
    int training;      /* the forward pass under way trains (batch norm) */
    int calibrating;   /* forward passes record each layer's largest input */
    eml_precision precision;
    struct eml_qplan *qplan; /* int8: the leading layers in int8 (qplan.c) */
    uint64_t qplan_serial;   /* plans built: each one's qconv key */
    size_t n_state;    /* parameters that are not trained (running stats) */
    float *dtmp;       /* a pass's input gradient, before it is added into
                          an accumulating delta (max_batch x largest n_in) */
    size_t dtmp_n;
    size_t bytes;      /* what the net allocated for itself (buffers) */
};

/* x / s rounded to nearest and saturated to +-127 (inv = 1 / s). */
static inline int8_t eml_q8(float x, float inv)
{
    float v = nearbyintf(x * inv);
    return (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v);
}

/* a * b with overflow check; returns 0 on overflow (sizes here are >0). */
static inline size_t eml_mul_size(size_t a, size_t b)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    return a * b;
}

/* n zeroed floats (at least one), NULL on overflow or no memory. */
static inline float *eml_alloc_floats(size_t n)
{
    if (n == 0) n = 1;
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return calloc(n, sizeof(float));
}

/* ==== layers.c ==== */

eml_status eml_layer_connected_forward(eml_net *net, layer *l,
                                       const float *in, int n);
/* DP-SGD (eml_net_clipped_grads): the layer's weight and bias gradients
 * with example b's weighted by s[b], from its deltas (and, conv, its
 * per-example weight gradients) of the last per-example pass. */
eml_status eml_layer_connected_clipped(eml_net *net, layer *l,
                                       const float *in, int n, const float *s);
void eml_layer_conv_clipped(layer *l, int n, const float *s);
eml_status eml_layer_connected_backward(eml_net *net, layer *l,
                                        const float *in, float *din, int n,
                                        float *sqnorm, int sums);
eml_status eml_layer_conv_forward(eml_net *net, layer *l, const float *in,
                                  int n);
eml_status eml_layer_conv_backward(eml_net *net, layer *l, const float *in,
                                   float *din, int n, float *sqnorm,
                                   int sums);
eml_pool_shape eml_layer_pool_shape(const layer *l, int n);
void eml_layer_dropout_forward(eml_net *net, layer *l, const float *in, int n,
                               int train);
eml_status eml_layer_scatter_forward(layer *l, const float *in, int n);

/* ==== quant.c ==== */

/* The conv's product in int8: the input quantized, its columns formed in
 * int8, an s8 GEMM, dequantized into l->wide (f x ld). */
eml_status eml_quant_conv_product(eml_net *net, layer *l, const float *in,
                                  int n, size_t ld);
/* A connected layer's product in int8: out (n x out) before bias. */
eml_status eml_quant_connected_product(eml_net *net, layer *l,
                                       const float *in, int n);
/* The same in bf16, from l->col (conv: filled) or in (connected). */
eml_status eml_bf16_conv_product(eml_net *net, layer *l, int n, size_t ld);
eml_status eml_bf16_connected_product(eml_net *net, layer *l,
                                      const float *in, int n);
/* Frees a layer's int8 and bf16 buffers. */
void eml_quant_free(layer *l);
/* Calibrating: the largest |input| (layers with weights) and |output| of
 * layer l over a forward pass of n examples. */
void eml_quant_observe_input(layer *l, const float *in, int n);
void eml_quant_observe_output(layer *l, int n);

/* ==== qplan.c ==== */

typedef struct eml_qplan eml_qplan;
/* The int8 plan of the calibrated net's leading layers (replacing any
 * other); none when the kernel table has no qconv or layer 0 cannot be in
 * one. */
EML_MUST_CHECK eml_status eml_qplan_build(eml_net *net, eml_err *err);
void eml_qplan_free(eml_qplan *p); /* NULL is a no-op */
/* The first layer after the plan (0: no plan). */
int eml_qplan_end(const eml_net *net);
/* Layers [0, eml_qplan_end) of n examples from the net's input, the last
 * one's output left in floats in its out. */
EML_MUST_CHECK eml_status eml_qplan_forward(eml_net *net, int n);

/* ==== layers_darknet.c ==== */

/* Darknet's shortcut operands of different shapes: `from` has (w1, h1,
 * c1), the output (w2, h2, c2); stride and sample step through each; the
 * channels, rows and columns both have are summed (output (x sample,
 * y sample, k) with from (x stride, y stride, k)), and elsewhere the
 * output is the previous layer's alone. */
typedef struct eml_overlap {
    int stride, sample, minw, minh, minc;
} eml_overlap;
eml_overlap eml_overlap_of(const layer *l, const layer *from);

/* Shapes of shortcut, route, upsample and cost (the net's layers before
 * i are shaped); EML_ERR_INVALID for another type. */
eml_status eml_layer_darknet_shape(eml_net *net, layer *l,
                                   const eml_layer_cfg *lc, const char *what,
                                   eml_err *err);
/* Batch normalization after a convolution's product: wide (f, n*hw, row
 * stride ld) -> out (n, f, hw), with the batch's statistics while
 * training (updating the running ones), the running ones otherwise. */
void eml_bn_forward(eml_net *net, layer *l, int n, size_t ld);
/* Inference's batch norm of channel j as y = a x + c (running stats). */
void eml_bn_affine(const layer *l, int j, float *a, float *c);
/* dL/dy in wide (f, n*hw) -> dL/dx there; gamma's and beta's gradients. */
void eml_bn_backward(eml_net *net, layer *l, int n, size_t ld);
eml_status eml_layer_shortcut_forward(eml_net *net, layer *l, int n);
eml_status eml_layer_shortcut_backward(eml_net *net, layer *l, int n);
void eml_layer_route_forward(eml_net *net, layer *l, int n);
void eml_layer_route_backward(eml_net *net, layer *l, int n);
void eml_layer_upsample_forward(layer *l, const float *in, int n);
void eml_layer_upsample_backward(layer *l, float *din, int n);

#endif
