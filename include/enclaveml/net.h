/*
 * net.h - a network built from an eml_netcfg: forward, backward, loss.
 *
 * All trainable parameters live in ONE contiguous float buffer and their
 * gradients in another of the same layout (layers hold views), so sealing,
 * mirroring and averaging work on one vector.  Layout: for each layer in
 * cfg order, its weight then its bias, in PyTorch layouts (conv
 * [out,in,kh,kw], connected [out,in]); tensor names layers.<i>.weight and
 * layers.<i>.bias.
 *
 * Gradients are SUMS over the examples of a batch (not means); optimisers
 * divide by the batch size.  eml_net_backward can also return every
 * example's squared gradient norm (over all parameters), which DP-SGD's
 * clipping needs.
 *
 * Trusted code: no I/O.  The net owns all its buffers.
 *
 *     eml_net *net;  eml_net_new(cfg, &opts, &net, &err);
 *     eml_net_init_params(net, seed);
 *     fill eml_net_input(net) with n examples (n <= opts.max_batch)
 *     eml_net_forward(net, n, 1);
 *     eml_net_loss(net, n, labels, &loss, &correct);   // sets output delta
 *     eml_net_backward(net, n, NULL);
 *     ... eml_net_grads(net) ...
 */
#ifndef ENCLAVEML_NET_H
#define ENCLAVEML_NET_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/kernels.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eml_net eml_net;

typedef struct eml_net_opts {
    eml_kernels_kind kernels;
    int max_batch;   /* largest n passed to forward/backward */
    uint64_t seed;   /* dropout masks */
    /* 1: for inference only: no gradients, deltas, column gradients or
     * dropout masks; backward passes are refused, the loss is computed
     * without its gradient, and forward runs with train = 0 only. */
    int inference;
    /* Not NULL (inference only): the net's parameters are these
     * params_count floats, another net's (eml_model_workspace: a loaded
     * model's), read and never written; they must outlive the net. */
    const float *params_of;
    size_t params_count;
} eml_net_opts;

#define EML_NET_MAX_PARAMS ((size_t)1 << 31)

EML_MUST_CHECK eml_status eml_net_new(const eml_netcfg *cfg,
                                      const eml_net_opts *opts, eml_net **out,
                                      eml_err *err);
void eml_net_free(eml_net *net); /* NULL is a no-op */

/* Initialises weights (uniform He for relu/leaky, Glorot otherwise) and
 * zeroes biases, from seed. */
void eml_net_init_params(eml_net *net, uint64_t seed);

size_t eml_net_param_count(const eml_net *net);
/* Parameters the optimiser trains: eml_net_param_count less batch norm's
 * running statistics (Darknet's count). */
size_t eml_net_trainable_count(const eml_net *net);
/* Bytes of the buffers the net allocated for itself: its parameters
 * (unless borrowed), gradients, activations and per-layer scratch. */
size_t eml_net_memory_bytes(const eml_net *net);
/* The parameters, to read or to write: whoever writes them calls
 * eml_net_params_changed afterwards (the optimiser, weight loading, the
 * weight average's swap, a resumed state), so that the version GEMM
 * descriptors carry changes with them. */
float *eml_net_params(eml_net *net);
void eml_net_params_changed(eml_net *net);
uint64_t eml_net_params_version(const eml_net *net);
float *eml_net_grads(eml_net *net);
/* The generator behind dropout masks (its state is part of a training
 * state that a mirror saves and restores). */
struct eml_rng *eml_net_rng(eml_net *net);
int eml_net_n_layers(const eml_net *net);
size_t eml_net_input_size(const eml_net *net);  /* per example (c*h*w) */
size_t eml_net_output_size(const eml_net *net); /* per example */
float *eml_net_input(eml_net *net);         /* (max_batch, input_size) */
const float *eml_net_output(const eml_net *net); /* (n, output_size) */
int eml_net_max_batch(const eml_net *net);
const eml_kernels *eml_net_kernels(const eml_net *net);

/* Forward n examples from eml_net_input.  train=1 enables dropout. */
EML_MUST_CHECK eml_status eml_net_forward(eml_net *net, int n, int train);
/* Layers [first, end) only; layer first reads eml_net_input (first = 0) or
 * the output of layer first - 1, as left there or written by the caller. */
EML_MUST_CHECK eml_status eml_net_forward_range(eml_net *net, int first,
                                                int end, int n, int train);
/* Leading layers that are fixed functions of one example (a [scattering]
 * feature extractor): 0 or 1.  The training loop computes their output
 * once per image and starts later passes after them. */
int eml_net_fixed_layers(const eml_net *net);
/* Layer i's output buffer, (max_batch, eml_net_layer_output_size). */
float *eml_net_layer_output(eml_net *net, int i);
size_t eml_net_layer_output_size(const eml_net *net, int i);

/* Cross-entropy of the softmax output against labels (each < output_size);
 * adds the per-batch loss SUM to *loss_sum and the number of correct argmax
 * predictions to *correct (either may be NULL), and sets the gradient at the
 * softmax input to (p - onehot).  Needs a network ending in [softmax]. */
EML_MUST_CHECK eml_status eml_net_loss(eml_net *net, int n,
                                       const uint8_t *labels,
                                       double *loss_sum, int *correct);
/* eml_net_loss, and each example's argmax prediction (the first on ties,
 * as *correct counts them) in pred[0..n) if pred is not NULL. */
EML_MUST_CHECK eml_status eml_net_loss_pred(eml_net *net, int n,
                                            const uint8_t *labels,
                                            double *loss_sum, int *correct,
                                            uint32_t *pred);

/* Backward after forward(train=1) + loss: overwrites the gradient buffer with
 * the sum over the n examples.  If sqnorm is not NULL it receives, per
 * example, the squared L2 norm of that example's gradient over all
 * parameters (sqnorm has n entries). */
EML_MUST_CHECK eml_status eml_net_backward(eml_net *net, int n,
                                           float *sqnorm);
/* Only the per-example squared norms (sqnorm not NULL), without forming
 * the gradient sums: cheaper (connected layers need no weight-gradient
 * GEMM).  The gradient buffer is left meaningless.  DP-SGD's first pass. */
EML_MUST_CHECK eml_status eml_net_example_norms(eml_net *net, int n,
                                                float *sqnorm);

/* Scales the loss gradient of example b by s[b] (for per-example clipping:
 * call between eml_net_loss and eml_net_backward). */
void eml_net_scale_output_delta(eml_net *net, int n, const float *s);
/* DP-SGD's sum without a second backward pass: right after
 * eml_net_example_norms over the same n examples, the gradient buffer gets
 * sum over b of s[b] times example b's gradient, formed from what that
 * pass left (each layer's deltas, the convolutions' per-example weight
 * gradients).  Scales the connected layers' deltas in place: call once. */
EML_MUST_CHECK eml_status eml_net_clipped_grads(eml_net *net, int n,
                                                const float *s);

/* The GEMM dispatch point every linear layer of this net goes through. */
eml_gemm_dispatch *eml_net_gemm(eml_net *net);
/* Layers the net's kernel table cannot run (pooling shapes oneDNN cannot
 * express), which run on the reference table instead: the caller says
 * so. */
int eml_net_ref_layers(const eml_net *net);

/* ==== named tensors (safetensors names and PyTorch shapes) ==== */
typedef struct eml_net_tensor {
    char name[64];
    int ndims;
    int64_t shape[4];
    size_t count;
    size_t offset;   /* into the parameter buffer */
    int is_weight;   /* 1 for .weight (weight decay applies), 0 for .bias */
    int is_state;    /* 1 for batch norm's running statistics: stored with
                        the parameters, updated by the forward pass while
                        training, never by the optimiser */
} eml_net_tensor;

size_t eml_net_tensor_count(const eml_net *net);
const eml_net_tensor *eml_net_tensor_get(const eml_net *net, size_t i);

/* ==== reduced precision inference ==== */
typedef enum eml_precision {
    EML_PREC_FP32 = 0,
    EML_PREC_INT8 = 1, /* int8 products, int32 sums, fp32 elsewhere */
    EML_PREC_BF16 = 2, /* bfloat16 products, fp32 sums and elsewhere */
    EML_PREC_COUNT = 3
} eml_precision;
/* "fp32" / "int8" / "bf16" (docs/cfg.md, "Reduced precision"). */
EML_MUST_CHECK eml_status eml_precision_parse(const char *name,
                                              eml_precision *out);
const char *eml_precision_name(eml_precision p);
/* Calibration: while on, forward passes (fp32) record each convolution's
 * and connected layer's largest |input| and every layer's largest
 * |output|; turning it on forgets earlier ranges. */
void eml_net_calibrate(eml_net *net, int on);
/* An inference net's convolutions and connected layers to int8 (weights
 * quantized per output channel, symmetric, from the current parameters;
 * inputs with the scale calibration found), to bf16 (weights and inputs
 * rounded to bfloat16; no calibration), or back to fp32.  Fails for a
 * training net, or (int8) a layer calibration never saw.  With int8, the
 * leading convolutions, batch norms, shortcuts and max pools run on int8
 * tensors from layer to layer (docs/cfg.md, "Reduced precision"). */
EML_MUST_CHECK eml_status eml_net_set_precision(eml_net *net,
                                                eml_precision p,
                                                eml_err *err);
/* int8: how many leading layers run on int8 tensors from layer to layer
 * (0: none, or another precision). */
int eml_net_int8_layers(const eml_net *net);

/* ==== weights in Darknet's binary .weights format ==== */
/* Bytes of the net's .weights file (header included). */
size_t eml_darknet_weights_size(const eml_net *net);
/* The net's parameters as a .weights file (version 0.2, `seen` images),
 * malloc'd.  Deterministic. */
EML_MUST_CHECK eml_status eml_darknet_weights_encode(const eml_net *net,
                                                     uint64_t seen,
                                                     uint8_t **out,
                                                     size_t *len);
/* Loads a .weights file into the net; it must hold exactly the net's
 * values (name is used in messages).  *seen (may be NULL): the header's
 * count of images seen.  Nothing changes unless the file fits. */
EML_MUST_CHECK eml_status eml_darknet_weights_decode(eml_net *net,
                                                     const uint8_t *buf,
                                                     size_t len,
                                                     const char *name,
                                                     uint64_t *seen,
                                                     eml_err *err);

/* ==== weights as safetensors bytes ==== */
/* Encodes every tensor (malloc'd buffer, caller frees).  Deterministic. */
EML_MUST_CHECK eml_status eml_weights_encode(eml_net *net, uint8_t **out,
                                             size_t *len);
/* Loads every tensor from a safetensors buffer; name is used in messages.
 * Nothing is changed unless every tensor is present with the right shape
 * and there is no extra one, but for calibration images
 * (EML_CALIB_TENSOR), which are skipped. */
EML_MUST_CHECK eml_status eml_weights_decode(eml_net *net, const uint8_t *buf,
                                             size_t len, const char *name,
                                             eml_err *err);

/* The model owner's images for int8 calibration may travel in the model's
 * file (docs/formats.md): F32, shape [N, channels, height, width] of the
 * net's input, pixels scaled to [0, 1]; N at most EML_CALIB_MAX. */
#define EML_CALIB_TENSOR "calibration.images"
#define EML_CALIB_MAX 100000
/* eml_weights_encode with n calibration images x (n 0: none). */
EML_MUST_CHECK eml_status eml_weights_encode_calib(eml_net *net,
                                                   const float *x, size_t n,
                                                   uint8_t **out,
                                                   size_t *len);
/* eml_weights_decode, and the calibration images if the file has them
 * (*x malloc'd, *n of them; NULL and 0 if not). */
EML_MUST_CHECK eml_status eml_weights_decode_calib(eml_net *net,
                                                   const uint8_t *buf,
                                                   size_t len,
                                                   const char *name,
                                                   float **x, size_t *n,
                                                   eml_err *err);
/* The input's channels, height and width. */
void eml_net_input_dims(const eml_net *net, int *c, int *h, int *w);

/* ==== FLOP counts and per-layer timing ==== */
/* Multiply-adds x2 of the linear layers for ONE example: forward, and
 * backward (weight and input gradients; the first layer's input gradient is
 * not computed). */
double eml_net_flops_forward(const eml_net *net);
double eml_net_flops_backward(const eml_net *net);

typedef struct eml_layer_stats {
    eml_layer_type type;
    char desc[96];      /* e.g. "conv 32 3x3/1 28x28x1 -> 28x28x32" */
    double fwd_seconds, bwd_seconds; /* accumulated while profiling */
    double flops;       /* per example, forward */
    size_t params;
} eml_layer_stats;

void eml_net_set_profiling(eml_net *net, int on); /* also resets timers */
void eml_net_layer_stats(const eml_net *net, int i, eml_layer_stats *out);

#ifdef __cplusplus
}
#endif
#endif
