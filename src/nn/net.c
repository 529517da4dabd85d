/*
 * net.c - layers, forward and backward over one parameter buffer.
 *
 * Each layer is a pair of free functions <op>_forward / <op>_backward over
 * flat buffers; every numeric op goes through the kernel table, and every
 * matrix product through the GEMM dispatch point (eml_gemm).  Convolutions
 * are im2col + GEMM per example, so per-example weight gradients are
 * natural (DP-SGD needs their norms).
 *
 * Trusted code: no I/O, no printing.  The net owns every buffer it points
 * to; layers hold views into the net's parameter and gradient buffers.
 */
#include "enclaveml/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enclaveml/crypto.h"
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
};

/* ==== helpers ==== */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* a * b with overflow check; returns 0 on overflow (sizes here are >0). */
static size_t mul_size(size_t a, size_t b)
{
    if (a != 0 && b > SIZE_MAX / a) return 0;
    return a * b;
}

static float *alloc_floats(size_t n)
{
    if (n == 0) n = 1;
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return calloc(n, sizeof(float));
}

static const float *layer_input(const eml_net *net, int i)
{
    return i == 0 ? net->input : net->layers[i - 1].out;
}

static eml_pool_shape pool_shape(const layer *l, int n);

/* ==== construction ==== */

static eml_status shape_layer(layer *l, const eml_layer_cfg *lc,
                              const char *what, eml_err *err)
{
    switch (lc->type) {
    case EML_LAYER_CONNECTED:
        l->out_c = lc->output;
        l->out_h = l->out_w = 1;
        l->n_w = mul_size(l->n_in, (size_t)lc->output);
        l->n_b = (size_t)lc->output;
        break;
    case EML_LAYER_CONVOLUTIONAL: {
        l->size = lc->size;
        l->stride = lc->stride;
        l->pad = lc->padding;
        long oh = ((long)l->h + 2L * l->pad - l->size) / l->stride + 1;
        long ow = ((long)l->w + 2L * l->pad - l->size) / l->stride + 1;
        if ((long)l->h + 2L * l->pad < l->size ||
            (long)l->w + 2L * l->pad < l->size || oh <= 0 || ow <= 0)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: kernel %dx%d does not fit input %dx%dx%d "
                               "with padding %d",
                               what, l->size, l->size, l->h, l->w, l->c,
                               l->pad);
        l->out_c = lc->filters;
        l->out_h = (int)oh;
        l->out_w = (int)ow;
        l->n_w = mul_size(mul_size((size_t)lc->filters, (size_t)l->c),
                          (size_t)l->size * (size_t)l->size);
        l->n_b = (size_t)lc->filters;
        break;
    }
    case EML_LAYER_MAXPOOL: {
        l->size = lc->size;
        l->stride = lc->stride;
        l->pad = lc->padding;
        long oh = ((long)l->h + l->pad - l->size) / l->stride + 1;
        long ow = ((long)l->w + l->pad - l->size) / l->stride + 1;
        if ((long)l->h + l->pad < l->size || (long)l->w + l->pad < l->size ||
            oh <= 0 || ow <= 0)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: window %dx%d does not fit input %dx%dx%d",
                               what, l->size, l->size, l->h, l->w, l->c);
        l->out_c = l->c;
        l->out_h = (int)oh;
        l->out_w = (int)ow;
        break;
    }
    case EML_LAYER_AVGPOOL:
        l->out_c = l->c;
        if (lc->size == 0) {
            l->size = 0;
            l->stride = 1;
            l->pad = 0;
            l->out_h = l->out_w = 1;
        } else {
            l->size = lc->size;
            l->stride = lc->stride;
            l->pad = lc->padding;
            long oh = ((long)l->h + 2L * l->pad - l->size) / l->stride + 1;
            long ow = ((long)l->w + 2L * l->pad - l->size) / l->stride + 1;
            if ((long)l->h + 2L * l->pad < l->size ||
                (long)l->w + 2L * l->pad < l->size || oh <= 0 || ow <= 0)
                return eml_err_set(err, EML_ERR_SHAPE,
                                   "%s: window %dx%d does not fit input "
                                   "%dx%dx%d",
                                   what, l->size, l->size, l->h, l->w, l->c);
            l->out_h = (int)oh;
            l->out_w = (int)ow;
        }
        break;
    case EML_LAYER_DROPOUT:
    case EML_LAYER_SOFTMAX:
        l->out_c = l->c;
        l->out_h = l->h;
        l->out_w = l->w;
        l->prob = lc->probability;
        break;
    case EML_LAYER_SCATTERING: {
        int s = 1 << lc->scales;
        if (l->c != 1 || l->h % s != 0 || l->w % s != 0 || l->h > 256 ||
            l->w > 256)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: takes one channel of at most 256x256 "
                               "pixels, height and width multiples of %d "
                               "(got %dx%dx%d)",
                               what, s, l->h, l->w, l->c);
        if (eml_scatter_new(l->h, l->w, lc->scales, lc->angles, lc->groups,
                            &l->sc) != EML_OK)
            return eml_err_set(err, EML_ERR_NOMEM, "%s: out of memory", what);
        l->out_c = eml_scatter_channels(lc->scales, lc->angles);
        l->out_h = l->h / s;
        l->out_w = l->w / s;
        break;
    }
    default:
        return eml_err_set(err, EML_ERR_FORMAT, "%s: unknown layer type",
                           what);
    }
    l->n_out = mul_size(mul_size((size_t)l->out_c, (size_t)l->out_h),
                        (size_t)l->out_w);
    if (l->n_out == 0 || (l->n_w == 0 && (lc->type == EML_LAYER_CONNECTED ||
                                          lc->type == EML_LAYER_CONVOLUTIONAL)))
        return eml_err_set(err, EML_ERR_RANGE, "%s: size overflows", what);
    if (l->n_out > ((size_t)1 << 28) || l->n_w > ((size_t)1 << 30))
        return eml_err_set(err, EML_ERR_RANGE,
                           "%s: layer is absurdly large (%zu outputs, %zu "
                           "weights)",
                           what, l->n_out, l->n_w);
    return EML_OK;
}

static void add_tensor(eml_net *net, int li, int is_weight, size_t offset,
                       size_t count, int ndims, const int64_t *shape)
{
    eml_net_tensor *t = &net->tensors[net->n_tensors++];
    snprintf(t->name, sizeof(t->name), "layers.%d.%s", li,
             is_weight ? "weight" : "bias");
    t->is_weight = is_weight;
    t->offset = offset;
    t->count = count;
    t->ndims = ndims;
    for (int d = 0; d < ndims; d++) t->shape[d] = shape[d];
}

eml_status eml_net_new(const eml_netcfg *cfg, const eml_net_opts *opts,
                       eml_net **out, eml_err *err)
{
    *out = NULL;
    if (cfg == NULL || opts == NULL || cfg->n_layers <= 0)
        return eml_err_set(err, EML_ERR_INVALID, "network has no layers");
    if (opts->max_batch <= 0 || opts->max_batch > EML_CFG_MAX_BATCH)
        return eml_err_set(err, EML_ERR_RANGE,
                           "batch size %d is outside 1..%d", opts->max_batch,
                           EML_CFG_MAX_BATCH);
    const eml_kernels *k = eml_kernels_get(opts->kernels);
    if (k == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "unknown kernel kind");

    eml_status st = EML_OK;
    eml_net *net = calloc(1, sizeof(*net));
    if (net == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    net->k = k;
    net->max_batch = opts->max_batch;
    net->n_layers = cfg->n_layers;
    eml_rng_seed(&net->rng, opts->seed ^ 0xd1b54a32d192ed03ULL);
    net->layers = calloc((size_t)cfg->n_layers, sizeof(layer));
    net->tensors = calloc(2 * (size_t)cfg->n_layers, sizeof(eml_net_tensor));
    if (net->layers == NULL || net->tensors == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = k->state_new(&net->ks);
    if (st != EML_OK) {
        eml_err_set(err, st, "cannot start the %s kernels", k->name);
        goto out;
    }
    net->gemm.fn = k->gemm;
    net->gemm.ctx = net->ks;

    /* Shapes, parameter offsets. */
    int c = cfg->channels, h = cfg->height, w = cfg->width;
    size_t n_params = 0;
    for (int i = 0; i < cfg->n_layers; i++) {
        const eml_layer_cfg *lc = &cfg->layers[i];
        layer *l = &net->layers[i];
        char what[64];
        snprintf(what, sizeof(what), "layer %d [%s] (line %d)", i,
                 eml_layer_type_name(lc->type), lc->line);
        l->type = lc->type;
        l->index = i;
        l->act = lc->activation;
        l->c = c;
        l->h = h;
        l->w = w;
        l->n_in = mul_size(mul_size((size_t)c, (size_t)h), (size_t)w);
        if (lc->type == EML_LAYER_SOFTMAX && i != cfg->n_layers - 1) {
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: [softmax] must be the last layer", what);
            goto out;
        }
        if (lc->type == EML_LAYER_SOFTMAX && i == 0) {
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: [softmax] needs a layer before it", what);
            goto out;
        }
        st = shape_layer(l, lc, what, err);
        if (st != EML_OK) goto out;
        if (l->n_w + l->n_b > EML_NET_MAX_PARAMS - n_params) {
            st = eml_err_set(err, EML_ERR_RANGE,
                             "%s: network has too many parameters", what);
            goto out;
        }
        if (l->n_w > 0) {
            int64_t shp[4];
            if (l->type == EML_LAYER_CONVOLUTIONAL) {
                shp[0] = l->out_c;
                shp[1] = l->c;
                shp[2] = l->size;
                shp[3] = l->size;
                add_tensor(net, i, 1, n_params, l->n_w, 4, shp);
            } else {
                shp[0] = (int64_t)l->n_b;
                shp[1] = (int64_t)l->n_in;
                add_tensor(net, i, 1, n_params, l->n_w, 2, shp);
            }
            n_params += l->n_w;
            shp[0] = (int64_t)l->n_b;
            add_tensor(net, i, 0, n_params, l->n_b, 1, shp);
            n_params += l->n_b;
        }
        c = l->out_c;
        h = l->out_h;
        w = l->out_w;
    }
    net->n_params = n_params;

    /* Buffers. */
    size_t mb = (size_t)net->max_batch;
    net->params = alloc_floats(n_params);
    net->grads = alloc_floats(n_params);
    net->input = alloc_floats(mul_size(mb, net->layers[0].n_in));
    if (net->params == NULL || net->grads == NULL || net->input == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory for parameters");
        goto out;
    }
    size_t off = 0;
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        if (l->n_w > 0) {
            l->wt = net->params + off;
            l->dw = net->grads + off;
            off += l->n_w;
            l->b = net->params + off;
            l->db = net->grads + off;
            off += l->n_b;
        }
        size_t n_out = mul_size(mb, l->n_out);
        if (n_out == 0) {
            st = eml_err_set(err, EML_ERR_RANGE, "layer %d: too large", i);
            goto out;
        }
        l->out = alloc_floats(n_out);
        if (l->type == EML_LAYER_SOFTMAX)
            l->delta = NULL; /* aliases the previous layer's delta */
        else
            l->delta = alloc_floats(n_out);
        if (l->out == NULL || (l->delta == NULL && l->type != EML_LAYER_SOFTMAX))
            goto nomem;
        if (l->type == EML_LAYER_SOFTMAX) l->delta = net->layers[i - 1].delta;
        if (l->type == EML_LAYER_CONVOLUTIONAL) {
            size_t ckk = (size_t)l->c * (size_t)l->size * (size_t)l->size;
            size_t hw = (size_t)l->out_h * (size_t)l->out_w;
            l->col = alloc_floats(mul_size(mul_size(mb, ckk), hw));
            if (i > 0) {
                l->dcol = alloc_floats(mul_size(mul_size(mb, ckk), hw));
                if (l->dcol == NULL) goto nomem;
            }
            l->wide = alloc_floats(n_out);
            if (mul_size(mb, hw) > INT32_MAX || l->col == NULL ||
                l->wide == NULL)
                goto nomem;
        }
        if (l->type == EML_LAYER_MAXPOOL || l->type == EML_LAYER_AVGPOOL) {
            /* A shape the table cannot run goes to the reference table,
             * counted (eml_net_ref_layers), never swapped in silently. */
            eml_pool_shape s = pool_shape(l, (int)mb);
            l->pk = k;
            if (k->pool_supported != NULL && !k->pool_supported(&s)) {
                l->pk = eml_kernels_get(EML_KERNELS_REF);
                net->ref_layers++;
            }
        }
        if (l->type == EML_LAYER_MAXPOOL) {
            eml_pool_shape s = pool_shape(l, (int)mb);
            size_t bytes = l->pk->maxpool_ws_bytes(&s);
            l->ws = calloc(bytes ? bytes : 1, 1);
            if (l->ws == NULL) goto nomem;
        }
        if (l->type == EML_LAYER_DROPOUT) {
            l->mask = alloc_floats(n_out);
            if (l->mask == NULL) goto nomem;
        }
    }
    *out = net;
    return EML_OK;
nomem:
    st = eml_err_set(err, EML_ERR_NOMEM,
                     "out of memory for activations (batch %d)",
                     net->max_batch);
out:
    eml_net_free(net);
    return st;
}

/* Frees a buffer of n floats after wiping it: parameters, gradients and
 * activations of a confidential model are secrets of the model owner. */
static void free_wiped(float *p, size_t n)
{
    if (p == NULL) return;
    eml_wipe(p, n * sizeof(float));
    free(p);
}

void eml_net_free(eml_net *net)
{
    if (net == NULL) return;
    size_t mb = (size_t)net->max_batch;
    if (net->layers != NULL) {
        for (int i = 0; i < net->n_layers; i++) {
            layer *l = &net->layers[i];
            if (l->out != NULL) eml_wipe(l->out, mb * l->n_out * sizeof(float));
            if (l->delta != NULL && l->type != EML_LAYER_SOFTMAX)
                eml_wipe(l->delta, mb * l->n_out * sizeof(float));
            free(l->out);
            if (l->type != EML_LAYER_SOFTMAX) free(l->delta);
            free(l->col);
            free(l->wide);
            free(l->dcol);
            if (l->dw_ex != NULL) free_wiped(l->dw_ex, mb * l->n_w);
            free(l->ws);
            free(l->mask);
            eml_scatter_free(l->sc);
        }
    }
    if (net->k != NULL && net->ks != NULL) net->k->state_free(net->ks);
    size_t n_in = net->layers != NULL ? net->layers[0].n_in : 0;
    free(net->layers);
    free(net->tensors);
    free_wiped(net->params, net->n_params);
    free_wiped(net->grads, net->n_params);
    free_wiped(net->input, mb * n_in);
    free(net);
}

void eml_net_params_changed(eml_net *net)
{
    net->wversion++;
}

uint64_t eml_net_params_version(const eml_net *net)
{
    return net->wversion;
}

int eml_net_ref_layers(const eml_net *net)
{
    return net->ref_layers;
}

void eml_net_init_params(eml_net *net, uint64_t seed)
{
    net->wversion++;
    eml_rng r;
    eml_rng_seed(&r, seed);
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        if (l->n_w == 0) continue;
        size_t fan_in = l->n_w / l->n_b;
        size_t fan_out = l->type == EML_LAYER_CONVOLUTIONAL
                             ? l->n_b * (size_t)l->size * (size_t)l->size
                             : l->n_b;
        double a;
        if (l->act == EML_ACT_RELU || l->act == EML_ACT_LEAKY)
            a = sqrt(6.0 / (double)fan_in);
        else
            a = sqrt(6.0 / (double)(fan_in + fan_out));
        for (size_t j = 0; j < l->n_w; j++)
            l->wt[j] = (float)((2.0 * eml_rng_uniform(&r) - 1.0) * a);
        memset(l->b, 0, l->n_b * sizeof(float));
    }
}

/* ==== accessors ==== */

size_t eml_net_param_count(const eml_net *net) { return net->n_params; }
float *eml_net_params(eml_net *net) { return net->params; }
float *eml_net_grads(eml_net *net) { return net->grads; }
eml_rng *eml_net_rng(eml_net *net) { return &net->rng; }
int eml_net_n_layers(const eml_net *net) { return net->n_layers; }
int eml_net_max_batch(const eml_net *net) { return net->max_batch; }
const eml_kernels *eml_net_kernels(const eml_net *net) { return net->k; }
size_t eml_net_input_size(const eml_net *net) { return net->layers[0].n_in; }
float *eml_net_input(eml_net *net) { return net->input; }
eml_gemm_dispatch *eml_net_gemm(eml_net *net) { return &net->gemm; }
size_t eml_net_tensor_count(const eml_net *net) { return net->n_tensors; }

size_t eml_net_output_size(const eml_net *net)
{
    return net->layers[net->n_layers - 1].n_out;
}

const float *eml_net_output(const eml_net *net)
{
    return net->layers[net->n_layers - 1].out;
}

const eml_net_tensor *eml_net_tensor_get(const eml_net *net, size_t i)
{
    return i < net->n_tensors ? &net->tensors[i] : NULL;
}

/* ==== the layers' matrix products ==== */

/* One product of layer l, described for the GEMM dispatch point: which
 * pass, which operand is the weight, and the weights' version. */
static eml_status layer_gemm(eml_net *net, const layer *l,
                             eml_gemm_pass pass, eml_gemm_weight weight,
                             int ta, int tb, int M, int N, int K,
                             const float *A, int lda, const float *B, int ldb,
                             float beta, float *C, int ldc)
{
    eml_gemm_desc g = eml_gemm_desc_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb,
                                        beta, C, ldc);
    g.layer = l->index;
    g.pass = pass;
    g.weight = weight;
    g.weight_version = net->wversion;
    return eml_gemm(&net->gemm, &g);
}

/* ==== connected ==== */

static eml_status connected_forward(eml_net *net, layer *l, const float *in,
                                    int n)
{
    /* out (n, out) = in (n, in) * w^T (in, out) */
    eml_status st = layer_gemm(net, l, EML_GEMM_FORWARD, EML_GEMM_WEIGHT_B,
                               0, 1, n, (int)l->n_out, (int)l->n_in, in,
                               (int)l->n_in, l->wt, (int)l->n_in, 0.0f,
                               l->out, (int)l->n_out);
    if (st != EML_OK) return st;
    for (int b = 0; b < n; b++) {
        float *o = l->out + (size_t)b * l->n_out;
        for (size_t j = 0; j < l->n_out; j++) o[j] += l->b[j];
    }
    return net->k->act_forward(net->ks, l->out, (size_t)n * l->n_out, l->act);
}

static eml_status connected_backward(eml_net *net, layer *l, const float *in,
                                     float *din, int n, float *sqnorm,
                                     int sums)
{
    size_t no = l->n_out, ni = l->n_in;
    eml_status st =
        net->k->act_backward(net->ks, l->delta, l->out, (size_t)n * no, l->act);
    if (st != EML_OK) return st;
    if (sums) {
        for (int b = 0; b < n; b++) {
            const float *d = l->delta + (size_t)b * no;
            for (size_t j = 0; j < no; j++) l->db[j] += d[j];
        }
        /* dw (out, in) += delta^T (out, n) * in (n, in) */
        st = layer_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT, 1,
                        0, (int)no, (int)ni, n, l->delta, (int)no, in,
                        (int)ni, 1.0f, l->dw, (int)ni);
        if (st != EML_OK) return st;
    }
    if (sqnorm != NULL) {
        /* One example's weight gradient is the outer product delta_b x_b^T,
         * so its squared norm is |delta_b|^2 |x_b|^2 (+ |delta_b|^2 for the
         * bias). */
#pragma omp parallel for schedule(static) if ((size_t)n * (no + ni) > 65536)
        for (int b = 0; b < n; b++) {
            const float *d = l->delta + (size_t)b * no;
            const float *x = in + (size_t)b * ni;
            double dd = 0, xx = 0;
#pragma omp simd reduction(+ : dd)
            for (size_t j = 0; j < no; j++) dd += (double)d[j] * d[j];
#pragma omp simd reduction(+ : xx)
            for (size_t j = 0; j < ni; j++) xx += (double)x[j] * x[j];
            sqnorm[b] += (float)(dd * (xx + 1.0));
        }
    }
    if (din == NULL) return EML_OK;
    /* din (n, in) = delta (n, out) * w (out, in) */
    return layer_gemm(net, l, EML_GEMM_INPUT_GRAD, EML_GEMM_WEIGHT_B, 0, 0,
                      n, (int)ni, (int)no, l->delta, (int)no, l->wt,
                      (int)ni, 0.0f, din, (int)ni);
}

/* ==== convolutional ==== */

/* A batch's column matrices sit side by side in one wide matrix
 * col (ckk, n*hw), so each pass is one large GEMM: out' (f, n*hw) =
 * w (f, ckk) * col.  out' is then reordered to (n, f, hw) with the bias
 * added.  Example b owns columns [b*hw, (b+1)*hw), which is also how its
 * own weight gradient is formed for per-example norms. */

static eml_conv_shape conv_shape(const layer *l, int n)
{
    eml_conv_shape s = {l->c,      l->h,     l->w,     l->size, l->stride,
                        l->pad,    l->out_h, l->out_w,
                        (size_t)n * (size_t)l->out_h * (size_t)l->out_w};
    return s;
}

static eml_status conv_forward(eml_net *net, layer *l, const float *in, int n)
{
    eml_conv_shape s = conv_shape(l, n);
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)s.ld;
    /* Examples are independent: each thread fills its own columns. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        net->k->im2col(l->col + (size_t)b * hw, in + (size_t)b * l->n_in, &s);
    eml_status st = layer_gemm(net, l, EML_GEMM_FORWARD, EML_GEMM_WEIGHT_A,
                               0, 0, f, wide, ckk, l->wt, ckk, l->col, wide,
                               0.0f, l->wide, wide);
    if (st != EML_OK) return st;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        float *o = l->out + (size_t)b * l->n_out;
        for (int j = 0; j < f; j++) {
            const float *src = l->wide + (size_t)j * s.ld + (size_t)b * hw;
            float *dst = o + (size_t)j * hw;
            float bj = l->b[j];
            for (size_t p = 0; p < hw; p++) dst[p] = src[p] + bj;
        }
    }
    return net->k->act_forward(net->ks, l->out, (size_t)n * l->n_out, l->act);
}

/* Every example's own weight gradient, dw_b (f, ckk) = delta_b (f, hw) *
 * col_b^T (hw, ckk), in one batched product; then their squared norms,
 * and (sums) their sum in example order. */
static eml_status conv_per_example(eml_net *net, layer *l, int n,
                                   float *sqnorm, int sums)
{
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)((size_t)n * hw);
    if (l->dw_ex == NULL) {
        l->dw_ex = alloc_floats(mul_size((size_t)net->max_batch, l->n_w));
        if (l->dw_ex == NULL) return EML_ERR_NOMEM;
    }
    eml_gemm_desc g = eml_gemm_desc_f32(0, 1, f, ckk, (int)hw, 1.0f, l->wide,
                                        wide, l->col, wide, 0.0f, l->dw_ex,
                                        ckk);
    g.layer = l->index;
    g.pass = EML_GEMM_PER_EXAMPLE;
    g.weight_version = net->wversion;
    g.count = n;
    g.stride_a = g.stride_b = hw;
    g.stride_c = l->n_w;
    eml_status st = eml_gemm(&net->gemm, &g);
    if (st != EML_OK) return st;
    for (int b = 0; b < n; b++) {
        const float *ex = l->dw_ex + (size_t)b * l->n_w;
        double sq = 0;
        for (size_t j = 0; j < l->n_w; j++) {
            sq += (double)ex[j] * ex[j];
            if (sums) l->dw[j] += ex[j];
        }
        sqnorm[b] += (float)sq;
    }
    return EML_OK;
}

static eml_status conv_backward(eml_net *net, layer *l, float *din, int n,
                                float *sqnorm, int sums)
{
    eml_conv_shape s = conv_shape(l, n);
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)s.ld;
    eml_status st = net->k->act_backward(net->ks, l->delta, l->out,
                                         (size_t)n * l->n_out, l->act);
    if (st != EML_OK) return st;
    /* delta (n, f, hw) -> wide (f, n*hw).  Threads split the filters and
     * each sums its bias gradient over examples in order, so the result
     * does not depend on the number of threads. */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < f; j++) {
        float total = 0;
        for (int b = 0; b < n; b++) {
            const float *src = l->delta + (size_t)b * l->n_out + (size_t)j * hw;
            float *dst = l->wide + (size_t)j * s.ld + (size_t)b * hw;
            float sum = 0;
            for (size_t p = 0; p < hw; p++) {
                dst[p] = src[p];
                sum += src[p];
            }
            total += sum;
        }
        if (sums) l->db[j] += total;
    }
    if (sqnorm != NULL) {
        for (int b = 0; b < n; b++) {
            double bias_sq = 0;
            for (int j = 0; j < f; j++) {
                const float *src = l->wide + (size_t)j * s.ld + (size_t)b * hw;
                float sum = 0;
                for (size_t p = 0; p < hw; p++) sum += src[p];
                bias_sq += (double)sum * sum;
            }
            sqnorm[b] += (float)bias_sq;
        }
    }
    if (sqnorm != NULL) {
        st = conv_per_example(net, l, n, sqnorm, sums);
        if (st != EML_OK) return st;
    } else {
        /* dw (f, ckk) = delta' (f, n*hw) * col^T (n*hw, ckk) */
        st = layer_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT, 0,
                        1, f, ckk, wide, l->wide, wide, l->col, wide, 0.0f,
                        l->dw, ckk);
        if (st != EML_OK) return st;
    }
    if (din == NULL) return EML_OK;
    /* dcol (ckk, n*hw) = w^T (ckk, f) * delta' (f, n*hw).  Not written over
     * the columns: a second backward pass (DP clipping) needs them. */
    st = layer_gemm(net, l, EML_GEMM_INPUT_GRAD, EML_GEMM_WEIGHT_A, 1, 0, ckk,
                    wide, f, l->wt, ckk, l->wide, wide, 0.0f, l->dcol, wide);
    if (st != EML_OK) return st;
    memset(din, 0, (size_t)n * l->n_in * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        net->k->col2im(din + (size_t)b * l->n_in, l->dcol + (size_t)b * hw, &s);
    return EML_OK;
}

/* ==== pooling ==== */

static eml_pool_shape pool_shape(const layer *l, int n)
{
    eml_pool_shape s;
    s.batch = n;
    s.c = l->c;
    s.in_h = l->h;
    s.in_w = l->w;
    s.out_h = l->out_h;
    s.out_w = l->out_w;
    if (l->type == EML_LAYER_AVGPOOL && l->size == 0) {
        s.size_h = l->h;
        s.size_w = l->w;
        s.stride = 1;
        s.pad_t = s.pad_l = 0;
    } else if (l->type == EML_LAYER_MAXPOOL) {
        /* Darknet: padding is the total; top/left get padding/2. */
        s.size_h = s.size_w = l->size;
        s.stride = l->stride;
        s.pad_t = s.pad_l = l->pad / 2;
    } else {
        s.size_h = s.size_w = l->size;
        s.stride = l->stride;
        s.pad_t = s.pad_l = l->pad;
    }
    return s;
}

/* ==== dropout ==== */

static void dropout_forward(eml_net *net, layer *l, const float *in, int n,
                            int train)
{
    size_t total = (size_t)n * l->n_out;
    if (!train || l->prob <= 0.0f) {
        memcpy(l->out, in, total * sizeof(float));
        for (size_t j = 0; j < total; j++) l->mask[j] = 1.0f;
        return;
    }
    float scale = 1.0f / (1.0f - l->prob);
    /* One draw from the net's generator per call, then a counter-based
     * stream: unit pair k gets splitmix64(base + k), each 32-bit half
     * deciding one unit (dropped when below prob * 2^32).  The mask is the
     * same whatever the number of threads. */
    uint64_t thresh = (uint64_t)((double)l->prob * 4294967296.0);
    uint64_t base = eml_rng_next(&net->rng);
    size_t pairs = (total + 1) / 2;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (size_t k = 0; k < pairs; k++) {
        uint64_t z = base + 0x9e3779b97f4a7c15ULL * (k + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        size_t j = 2 * k;
        float m0 = (z & 0xffffffffu) < thresh ? 0.0f : scale;
        l->mask[j] = m0;
        l->out[j] = in[j] * m0;
        if (j + 1 < total) {
            float m1 = (z >> 32) < thresh ? 0.0f : scale;
            l->mask[j + 1] = m1;
            l->out[j + 1] = in[j + 1] * m1;
        }
    }
}

/* ==== the passes ==== */

/* Each example's scattering features, one scratch area per thread. */
static eml_status scatter_forward(layer *l, const float *in, int n)
{
    size_t scratch = eml_scatter_scratch_size(l->sc);
    int failed = 0;
#pragma omp parallel
    {
        void *ws = malloc(scratch);
        if (ws == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int b = 0; b < n; b++)
            if (ws != NULL)
                eml_scatter_forward(l->sc, in + (size_t)b * l->n_in,
                                    l->out + (size_t)b * l->n_out, ws);
        free(ws);
    }
    return failed ? EML_ERR_NOMEM : EML_OK;
}

int eml_net_fixed_layers(const eml_net *net)
{
    return net->layers[0].type == EML_LAYER_SCATTERING ? 1 : 0;
}

float *eml_net_layer_output(eml_net *net, int i) { return net->layers[i].out; }

size_t eml_net_layer_output_size(const eml_net *net, int i)
{
    return net->layers[i].n_out;
}

eml_status eml_net_forward(eml_net *net, int n, int train)
{
    return eml_net_forward_range(net, 0, net->n_layers, n, train);
}

eml_status eml_net_forward_range(eml_net *net, int first, int end, int n,
                                 int train)
{
    if (n <= 0 || n > net->max_batch || first < 0 || end > net->n_layers ||
        first > end)
        return EML_ERR_INVALID;
    for (int i = first; i < end; i++) {
        layer *l = &net->layers[i];
        const float *in = layer_input(net, i);
        double t0 = net->profiling ? now_seconds() : 0;
        eml_status st = EML_OK;
        switch (l->type) {
        case EML_LAYER_CONNECTED:
            st = connected_forward(net, l, in, n);
            break;
        case EML_LAYER_CONVOLUTIONAL:
            st = conv_forward(net, l, in, n);
            break;
        case EML_LAYER_MAXPOOL: {
            eml_pool_shape s = pool_shape(l, n);
            st = l->pk->maxpool_forward(net->ks, l->out, l->ws, in, &s);
            break;
        }
        case EML_LAYER_AVGPOOL: {
            eml_pool_shape s = pool_shape(l, n);
            st = l->pk->avgpool_forward(net->ks, l->out, in, &s);
            break;
        }
        case EML_LAYER_DROPOUT:
            dropout_forward(net, l, in, n, train);
            break;
        case EML_LAYER_SOFTMAX:
            st = net->k->softmax_forward(net->ks, l->out, in, n,
                                         (int)l->n_out);
            break;
        case EML_LAYER_SCATTERING:
            st = scatter_forward(l, in, n);
            break;
        default:
            st = EML_ERR_INVALID;
        }
        if (st != EML_OK) return st;
        if (net->profiling) l->t_fwd += now_seconds() - t0;
    }
    return EML_OK;
}

eml_status eml_net_loss(eml_net *net, int n, const uint8_t *labels,
                        double *loss_sum, int *correct)
{
    layer *top = &net->layers[net->n_layers - 1];
    if (top->type != EML_LAYER_SOFTMAX) return EML_ERR_INVALID;
    if (n <= 0 || n > net->max_batch) return EML_ERR_INVALID;
    size_t k = top->n_out;
    double loss = 0;
    int right = 0;
    for (int b = 0; b < n; b++) {
        if (labels[b] >= k) return EML_ERR_RANGE;
    }
    for (int b = 0; b < n; b++) {
        const float *p = top->out + (size_t)b * k;
        float *d = top->delta + (size_t)b * k;
        size_t best = 0;
        for (size_t j = 0; j < k; j++) {
            d[j] = p[j];
            if (p[j] > p[best]) best = j;
        }
        d[labels[b]] -= 1.0f;
        float py = p[labels[b]];
        loss += -log(py > 1e-30f ? (double)py : 1e-30);
        right += best == labels[b];
    }
    if (loss_sum != NULL) *loss_sum += loss;
    if (correct != NULL) *correct += right;
    return EML_OK;
}

void eml_net_scale_output_delta(eml_net *net, int n, const float *s)
{
    layer *top = &net->layers[net->n_layers - 1];
    for (int b = 0; b < n; b++) {
        float *d = top->delta + (size_t)b * top->n_out;
        for (size_t j = 0; j < top->n_out; j++) d[j] *= s[b];
    }
}

static eml_status backward(eml_net *net, int n, float *sqnorm, int sums);

eml_status eml_net_backward(eml_net *net, int n, float *sqnorm)
{
    return backward(net, n, sqnorm, 1);
}

eml_status eml_net_example_norms(eml_net *net, int n, float *sqnorm)
{
    if (sqnorm == NULL) return EML_ERR_INVALID;
    return backward(net, n, sqnorm, 0);
}

/* sums = 0: only the per-example norms; the gradient buffer is left
 * holding nothing useful (DP-SGD's first pass, which a second, clipped
 * pass overwrites). */
static eml_status backward(eml_net *net, int n, float *sqnorm, int sums)
{
    if (n <= 0 || n > net->max_batch) return EML_ERR_INVALID;
    memset(net->grads, 0, net->n_params * sizeof(float));
    if (sqnorm != NULL) memset(sqnorm, 0, (size_t)n * sizeof(float));
    /* No gradient needs to flow below the first layer that learns. */
    int learns = 0;
    while (learns < net->n_layers && net->layers[learns].n_w == 0) learns++;
    for (int i = net->n_layers - 1; i >= 0; i--) {
        layer *l = &net->layers[i];
        const float *in = layer_input(net, i);
        float *din = i > learns ? net->layers[i - 1].delta : NULL;
        double t0 = net->profiling ? now_seconds() : 0;
        eml_status st = EML_OK;
        switch (l->type) {
        case EML_LAYER_CONNECTED:
            st = connected_backward(net, l, in, din, n, sqnorm, sums);
            break;
        case EML_LAYER_CONVOLUTIONAL:
            st = conv_backward(net, l, din, n, sqnorm, sums);
            break;
        case EML_LAYER_MAXPOOL:
            if (din != NULL) {
                eml_pool_shape s = pool_shape(l, n);
                st = l->pk->maxpool_backward(net->ks, din, l->delta, l->ws,
                                              &s);
            }
            break;
        case EML_LAYER_AVGPOOL:
            if (din != NULL) {
                eml_pool_shape s = pool_shape(l, n);
                st = l->pk->avgpool_backward(net->ks, din, l->delta, &s);
            }
            break;
        case EML_LAYER_DROPOUT:
            if (din != NULL) {
                size_t total = (size_t)n * l->n_out;
#pragma omp parallel for schedule(static) if (total > 65536)
                for (size_t j = 0; j < total; j++)
                    din[j] = l->delta[j] * l->mask[j];
            }
            break;
        case EML_LAYER_SOFTMAX:
            /* eml_net_loss wrote dL/dlogits into the previous layer's delta
             * (they share the buffer). */
            break;
        case EML_LAYER_SCATTERING:
            break; /* fixed, and first: nothing to learn or pass on */
        default:
            st = EML_ERR_INVALID;
        }
        if (st != EML_OK) return st;
        if (net->profiling) l->t_bwd += now_seconds() - t0;
    }
    return EML_OK;
}

/* ==== FLOPs and profiling ==== */

static double layer_flops(const layer *l)
{
    if (l->type == EML_LAYER_CONNECTED) return 2.0 * (double)l->n_w;
    if (l->type == EML_LAYER_CONVOLUTIONAL)
        return 2.0 * (double)l->n_w * l->out_h * l->out_w;
    return 0;
}

double eml_net_flops_forward(const eml_net *net)
{
    double f = 0;
    for (int i = 0; i < net->n_layers; i++) f += layer_flops(&net->layers[i]);
    return f;
}

double eml_net_flops_backward(const eml_net *net)
{
    double f = 0;
    for (int i = 0; i < net->n_layers; i++) {
        double lf = layer_flops(&net->layers[i]);
        f += lf;             /* weight gradient */
        if (i > 0) f += lf;  /* input gradient */
    }
    return f;
}

void eml_net_set_profiling(eml_net *net, int on)
{
    net->profiling = on;
    for (int i = 0; i < net->n_layers; i++)
        net->layers[i].t_fwd = net->layers[i].t_bwd = 0;
}

void eml_net_layer_stats(const eml_net *net, int i, eml_layer_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (i < 0 || i >= net->n_layers) return;
    const layer *l = &net->layers[i];
    out->type = l->type;
    out->fwd_seconds = l->t_fwd;
    out->bwd_seconds = l->t_bwd;
    out->flops = layer_flops(l);
    out->params = l->n_w + l->n_b;
    switch (l->type) {
    case EML_LAYER_CONVOLUTIONAL:
        snprintf(out->desc, sizeof(out->desc),
                 "conv %d %dx%d/%d %dx%dx%d -> %dx%dx%d", l->out_c, l->size,
                 l->size, l->stride, l->h, l->w, l->c, l->out_h, l->out_w,
                 l->out_c);
        break;
    case EML_LAYER_CONNECTED:
        snprintf(out->desc, sizeof(out->desc), "connected %zu -> %zu",
                 l->n_in, l->n_out);
        break;
    case EML_LAYER_MAXPOOL:
    case EML_LAYER_AVGPOOL:
        snprintf(out->desc, sizeof(out->desc), "%s %dx%d/%d %dx%dx%d -> %dx%dx%d",
                 l->type == EML_LAYER_MAXPOOL ? "maxpool" : "avgpool",
                 l->size ? l->size : l->h, l->size ? l->size : l->w,
                 l->stride, l->h, l->w, l->c, l->out_h, l->out_w, l->out_c);
        break;
    default:
        snprintf(out->desc, sizeof(out->desc), "%s %zu",
                 eml_layer_type_name(l->type), l->n_out);
    }
}
