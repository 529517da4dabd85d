/*
 * net_internal.h - what the network's two files share: the layer and net
 * structs, small allocation helpers, and the layers' passes.
 *
 *   net.c     construction (shapes, parameter offsets, buffers), the
 *             forward and backward passes over the layers, the loss,
 *             accessors, FLOPs and profiling;
 *   layers.c  each layer's forward and backward: connected, convolution
 *             (im2col + GEMM, per-example gradients for DP-SGD), pooling
 *             shapes, dropout, scattering; every product through the GEMM
 *             dispatch point with its descriptor.
 *
 * Trusted code; nothing here is public API.
 */
#ifndef EML_NN_NET_INTERNAL_H
#define EML_NN_NET_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>

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
    float *dcol;  /* conv after the first layer: the columns' gradient */
    float *wide;  /* conv: (out_c, n*out_h*out_w) outputs or their deltas */
    float *dw_ex; /* conv: per-example weight gradients (max_batch x n_w),
                     made on the first per-example pass (DP-SGD) */
    void *ws;     /* maxpool workspace */
    const eml_kernels *pk; /* pooling: the table that runs this layer */
    float *mask;  /* dropout: (max_batch, n_out), 0 or 1/(1-p) */
    eml_scatter *sc; /* scattering */

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
    size_t bytes;      /* what the net allocated for itself (buffers) */
};

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

#endif
