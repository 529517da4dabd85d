/*
 * net.c - a network: construction (shapes, parameter offsets, buffers),
 * the forward and backward passes over its layers (layers.c,
 * layers_darknet.c), accessors; the loss is in net_loss.c, FLOPs and
 * profiles in net_stats.c.
 *
 * A training net owns parameters, gradients and every activation buffer.
 * An inference net (eml_net_opts.inference) has no gradients, deltas or
 * dropout masks, and may borrow its parameters from another net (a loaded
 * model, model.c): one model, many per-request workspaces.
 *
 * Trusted code: no I/O, no printing.  The net owns every buffer it points
 * to, except borrowed parameters; layers hold views into the parameter and
 * gradient buffers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "nn/net_internal.h"

/* ==== helpers ==== */

#define now_seconds eml_wall_seconds

#define mul_size eml_mul_size

/* A buffer of the net's own, counted in net->bytes. */
static float *net_floats(eml_net *net, size_t n)
{
    float *p = eml_alloc_floats(n);
    if (p != NULL) net->bytes += n * sizeof(float);
    return p;
}

static const float *layer_input(const eml_net *net, int i)
{
    return i == 0 ? net->input : net->layers[i - 1].out;
}


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

/* Tensor `layers.<li>.<what>`: is_weight 1 for a weight (decay applies),
 * 0 for a bias or batch norm's scale, -1 for running statistics (not
 * trained). */
static void add_tensor(eml_net *net, int li, const char *what, int is_weight,
                       size_t offset, size_t count, int ndims,
                       const int64_t *shape)
{
    eml_net_tensor *t = &net->tensors[net->n_tensors++];
    snprintf(t->name, sizeof(t->name), "layers.%d.%s", li, what);
    t->is_weight = is_weight > 0;
    t->is_state = is_weight < 0;
    t->offset = offset;
    t->count = count;
    t->ndims = ndims;
    for (int d = 0; d < ndims; d++) t->shape[d] = shape[d];
}

/* Deltas with more than one writer: a shortcut's or route's sources, and
 * the layer before a route (whose delta the route may not feed at all). */
static void mark_accumulating(eml_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        if (l->type == EML_LAYER_SHORTCUT) {
            net->layers[i - 1].accum = 1;
            net->layers[l->from].accum = 1;
        } else if (l->type == EML_LAYER_ROUTE) {
            for (int k = 0; k < l->n_route; k++)
                net->layers[l->route[k]].accum = 1;
            if (i > 0) net->layers[i - 1].accum = 1;
        }
    }
}

/* Every layer's shape and its tensors' offsets into the parameters. */
static eml_status plan_layers(eml_net *net, const eml_netcfg *cfg,
                              eml_err *err)
{
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
        int last = cfg->n_layers - 1;
        if (lc->type == EML_LAYER_SOFTMAX &&
            !(i == last ||
              (i == last - 1 && cfg->layers[last].type == EML_LAYER_COST)))
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: [softmax] must be the last layer (or "
                               "followed by [cost])",
                               what);
        if (lc->type == EML_LAYER_SOFTMAX && i == 0)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: [softmax] needs a layer before it", what);
        eml_status st =
            lc->type >= EML_LAYER_SHORTCUT
                ? eml_layer_darknet_shape(net, l, lc, what, err)
                : shape_layer(l, lc, what, err);
        if (st == EML_OK && lc->type == EML_LAYER_SOFTMAX &&
            l->n_out % (size_t)lc->groups != 0)
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: groups=%d does not divide its %zu inputs",
                             what, lc->groups, l->n_out);
        if (st != EML_OK) return st;
        l->groups = lc->groups > 0 ? lc->groups : 1;
        if (lc->type == EML_LAYER_SOFTMAX)
            l->scale_by = lc->scale > 0.0f ? lc->scale : 1.0f; /* temperature */
        if (lc->type >= EML_LAYER_SHORTCUT) {
            l->n_out = mul_size(mul_size((size_t)l->out_c, (size_t)l->out_h),
                                (size_t)l->out_w);
            if (l->n_out == 0 || l->n_out > ((size_t)1 << 28))
                return eml_err_set(err, EML_ERR_RANGE,
                                   "%s: layer is absurdly large", what);
        }
        l->bn = lc->type == EML_LAYER_CONVOLUTIONAL && lc->batch_normalize;
        size_t n_bn = l->bn ? l->n_b : 0;
        if (l->n_w + l->n_b + 3 * n_bn > EML_NET_MAX_PARAMS - n_params)
            return eml_err_set(err, EML_ERR_RANGE,
                               "%s: network has too many parameters", what);
        if (l->n_w > 0) {
            int64_t shp[4];
            if (l->type == EML_LAYER_CONVOLUTIONAL) {
                shp[0] = l->out_c;
                shp[1] = l->c;
                shp[2] = l->size;
                shp[3] = l->size;
                add_tensor(net, i, "weight", 1, n_params, l->n_w, 4, shp);
            } else {
                shp[0] = (int64_t)l->n_b;
                shp[1] = (int64_t)l->n_in;
                add_tensor(net, i, "weight", 1, n_params, l->n_w, 2, shp);
            }
            n_params += l->n_w;
            /* With batch norm (PyTorch's BatchNorm2d names): gamma, beta,
             * then the running statistics; the layer has no bias. */
            shp[0] = (int64_t)l->n_b;
            if (l->bn) {
                add_tensor(net, i, "bn.weight", 0, n_params, n_bn, 1, shp);
                n_params += n_bn;
            }
            add_tensor(net, i, l->bn ? "bn.bias" : "bias", 0, n_params,
                       l->n_b, 1, shp);
            n_params += l->n_b;
            if (l->bn) {
                add_tensor(net, i, "bn.running_mean", -1, n_params, n_bn, 1,
                           shp);
                add_tensor(net, i, "bn.running_var", -1, n_params + n_bn,
                           n_bn, 1, shp);
                n_params += 2 * n_bn;
                net->n_state += 2 * n_bn;
            }
        }
        c = l->out_c;
        h = l->out_h;
        w = l->out_w;
    }
    net->n_params = n_params;
    mark_accumulating(net);
    return EML_OK;
}

/* Pooling: the table that runs layer l.  A shape the net's table cannot
 * run goes to the reference table, counted (eml_net_ref_layers), never
 * swapped in silently. */
static void pick_pool_table(eml_net *net, layer *l)
{
    eml_pool_shape s = eml_layer_pool_shape(l, net->max_batch);
    l->pk = net->k;
    if (net->k->pool_supported != NULL && !net->k->pool_supported(&s)) {
        l->pk = eml_kernels_get(EML_KERNELS_REF);
        net->ref_layers++;
    }
}

/* Layer i's activation buffers (an inference net: no deltas, no column
 * gradients, no dropout masks). */
static eml_status layer_buffers(eml_net *net, int i)
{
    layer *l = &net->layers[i];
    size_t mb = (size_t)net->max_batch;
    int train = !net->inference;
    size_t n_out = mul_size(mb, l->n_out);
    if (n_out == 0) return EML_ERR_RANGE;
    l->out = net_floats(net, n_out);
    if (l->out == NULL) return EML_ERR_NOMEM;
    if (l->type == EML_LAYER_SOFTMAX) /* aliases the layer below's */
        l->delta = net->layers[i - 1].delta;
    else if (train && (l->delta = net_floats(net, n_out)) == NULL)
        return EML_ERR_NOMEM;
    if (l->type == EML_LAYER_CONVOLUTIONAL) {
        size_t ckk = (size_t)l->c * (size_t)l->size * (size_t)l->size;
        size_t hw = (size_t)l->out_h * (size_t)l->out_w;
        if (mul_size(mb, hw) > INT32_MAX) return EML_ERR_NOMEM;
        l->col = net_floats(net, mul_size(mul_size(mb, ckk), hw));
        l->wide = net_floats(net, n_out);
        if (l->col == NULL || l->wide == NULL) return EML_ERR_NOMEM;
        if (train && i > 0 &&
            (l->dcol = net_floats(net, mul_size(mul_size(mb, ckk), hw))) == NULL)
            return EML_ERR_NOMEM;
    }
    if (l->type == EML_LAYER_MAXPOOL || l->type == EML_LAYER_AVGPOOL)
        pick_pool_table(net, l);
    if (l->type == EML_LAYER_MAXPOOL) {
        eml_pool_shape s = eml_layer_pool_shape(l, net->max_batch);
        size_t bytes = l->pk->maxpool_ws_bytes(&s);
        l->ws = calloc(bytes ? bytes : 1, 1);
        if (l->ws == NULL) return EML_ERR_NOMEM;
        net->bytes += bytes;
    }
    if (l->type == EML_LAYER_DROPOUT && train &&
        (l->mask = net_floats(net, n_out)) == NULL)
        return EML_ERR_NOMEM;
    if (l->type == EML_LAYER_SOFTMAX && l->scale_by != 1.0f &&
        (l->wide = net_floats(net, n_out)) == NULL)
        return EML_ERR_NOMEM;
    if (l->bn && train &&
        ((l->xhat = net_floats(net, n_out)) == NULL ||
         (l->inv_std = net_floats(net, (size_t)l->out_c)) == NULL))
        return EML_ERR_NOMEM;
    return EML_OK;
}

/* Parameters (own or borrowed), gradients, input, every layer's views and
 * buffers. */
static eml_status alloc_buffers(eml_net *net, const eml_net_opts *opts,
                                eml_err *err)
{
    size_t mb = (size_t)net->max_batch;
    if (opts->params_of != NULL) {
        if (opts->params_count != net->n_params)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "the model has %zu parameters but this "
                               "network %zu",
                               opts->params_count, net->n_params);
        net->params = (float *)(uintptr_t)opts->params_of;
        net->borrowed = 1;
    } else {
        net->params = net_floats(net, net->n_params);
    }
    if (!net->inference) net->grads = net_floats(net, net->n_params);
    net->input = net_floats(net, mul_size(mb, net->layers[0].n_in));
    if (net->params == NULL || net->input == NULL ||
        (!net->inference && net->grads == NULL))
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory for parameters");
    size_t off = 0;
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        float *g = net->grads;
        if (l->n_w > 0) {
            l->wt = net->params + off;
            l->dw = g != NULL ? g + off : NULL;
            off += l->n_w;
            if (l->bn) {
                l->scale = net->params + off;
                l->dscale = g != NULL ? g + off : NULL;
                off += l->n_b;
            }
            l->b = net->params + off;
            l->db = g != NULL ? g + off : NULL;
            off += l->n_b;
            if (l->bn) {
                l->rmean = net->params + off;
                l->rvar = l->rmean + l->n_b;
                off += 2 * l->n_b;
            }
        }
        eml_status st = layer_buffers(net, i);
        if (st == EML_ERR_RANGE)
            return eml_err_set(err, st, "layer %d: too large", i);
        if (st != EML_OK)
            return eml_err_set(err, EML_ERR_NOMEM,
                               "out of memory for activations (batch %d)",
                               net->max_batch);
    }
    size_t most = 0;
    for (int i = 1; i < net->n_layers; i++)
        if (net->layers[i - 1].accum && net->layers[i].n_in > most)
            most = net->layers[i].n_in;
    if (most > 0 && !net->inference &&
        (net->dtmp = net_floats(net, net->dtmp_n = mul_size(mb, most))) ==
            NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    return EML_OK;
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
    if (opts->params_of != NULL && !opts->inference)
        return eml_err_set(err, EML_ERR_INVALID,
                           "only an inference net borrows parameters");
    const eml_kernels *k = eml_kernels_get(opts->kernels);
    if (k == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "unknown kernel kind");

    eml_status st = EML_OK;
    eml_net *net = calloc(1, sizeof(*net));
    if (net == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    net->k = k;
    net->max_batch = opts->max_batch;
    net->n_layers = cfg->n_layers;
    net->inference = opts->inference != 0;
    eml_rng_seed(&net->rng, opts->seed ^ 0xd1b54a32d192ed03ULL);
    net->layers = calloc((size_t)cfg->n_layers, sizeof(layer));
    net->tensors = calloc(5 * (size_t)cfg->n_layers, sizeof(eml_net_tensor));
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
    st = plan_layers(net, cfg, err);
    if (st == EML_OK) st = alloc_buffers(net, opts, err);
    if (st != EML_OK) goto out;
    *out = net;
    return EML_OK;
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
            free(l->dw_part);
            if (l->dw_ex != NULL) free_wiped(l->dw_ex, mb * l->n_w);
            free(l->ws);
            free(l->mask);
            if (l->xhat != NULL) free_wiped(l->xhat, mb * l->n_out);
            eml_quant_free(l);
            free(l->inv_std);
            eml_scatter_free(l->sc);
        }
    }
    eml_qplan_free(net->qplan);
    if (net->k != NULL && net->ks != NULL) net->k->state_free(net->ks);
    size_t n_in = net->layers != NULL ? net->layers[0].n_in : 0;
    free(net->layers);
    free(net->tensors);
    if (!net->borrowed) free_wiped(net->params, net->n_params);
    free_wiped(net->grads, net->n_params);
    free_wiped(net->dtmp, net->dtmp_n);
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
    if (net->borrowed) return; /* a model's, read-only */
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
        if (l->bn) { /* gamma 1, running mean 0, running variance 1 */
            for (size_t j = 0; j < l->n_b; j++) {
                l->scale[j] = 1.0f;
                l->rmean[j] = 0.0f;
                l->rvar[j] = 1.0f;
            }
        }
    }
}

/* ==== accessors ==== */

size_t eml_net_param_count(const eml_net *net) { return net->n_params; }
size_t eml_net_trainable_count(const eml_net *net)
{
    return net->n_params - net->n_state;
}
size_t eml_net_memory_bytes(const eml_net *net) { return net->bytes; }
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

int eml_net_fixed_layers(const eml_net *net)
{
    return net->layers[0].type == EML_LAYER_SCATTERING ? 1 : 0;
}

float *eml_net_layer_output(eml_net *net, int i) { return net->layers[i].out; }

void eml_net_input_dims(const eml_net *net, int *c, int *h, int *w)
{
    *c = net->layers[0].c;
    *h = net->layers[0].h;
    *w = net->layers[0].w;
}

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
        first > end || (train && net->inference))
        return EML_ERR_INVALID;
    net->training = train;
    /* int8 from layer to layer (qplan.c), while products stay ours */
    if (first == 0 && eml_qplan_end(net) > 0 && !train &&
        !net->calibrating && net->gemm.fn == net->k->gemm &&
        net->gemm.conv == NULL) {
        eml_status st = eml_qplan_forward(net, n);
        if (st != EML_OK) return st;
        first = eml_qplan_end(net);
    }
    for (int i = first; i < end; i++) {
        layer *l = &net->layers[i];
        const float *in = layer_input(net, i);
        if (net->calibrating) eml_quant_observe_input(l, in, n);
        double t0 = net->profiling ? now_seconds() : 0;
        eml_status st = EML_OK;
        switch (l->type) {
        case EML_LAYER_CONNECTED:
            st = eml_layer_connected_forward(net, l, in, n);
            break;
        case EML_LAYER_CONVOLUTIONAL:
            st = eml_layer_conv_forward(net, l, in, n);
            break;
        case EML_LAYER_MAXPOOL: {
            eml_pool_shape s = eml_layer_pool_shape(l, n);
            st = l->pk->maxpool_forward(net->ks, l->out, l->ws, in, &s);
            break;
        }
        case EML_LAYER_AVGPOOL: {
            eml_pool_shape s = eml_layer_pool_shape(l, n);
            st = l->pk->avgpool_forward(net->ks, l->out, in, &s);
            break;
        }
        case EML_LAYER_DROPOUT:
            eml_layer_dropout_forward(net, l, in, n, train);
            break;
        case EML_LAYER_SOFTMAX: /* each group of inputs on its own */
            if (l->scale_by != 1.0f) { /* softmax(x / temperature) */
                size_t total = (size_t)n * l->n_out;
                for (size_t j = 0; j < total; j++)
                    l->wide[j] = in[j] / l->scale_by;
                in = l->wide;
            }
            st = net->k->softmax_forward(net->ks, l->out, in, n * l->groups,
                                         (int)(l->n_out / (size_t)l->groups));
            break;
        case EML_LAYER_SCATTERING:
            st = eml_layer_scatter_forward(l, in, n);
            break;
        case EML_LAYER_SHORTCUT:
            st = eml_layer_shortcut_forward(net, l, n);
            break;
        case EML_LAYER_ROUTE:
            eml_layer_route_forward(net, l, n);
            break;
        case EML_LAYER_UPSAMPLE:
            eml_layer_upsample_forward(l, in, n);
            break;
        case EML_LAYER_COST:
            memcpy(l->out, in, (size_t)n * l->n_out * sizeof(float));
            break;
        default:
            st = EML_ERR_INVALID;
        }
        if (st != EML_OK) return st;
        if (net->calibrating) eml_quant_observe_output(l, n);
        if (net->profiling) l->t_fwd += now_seconds() - t0;
    }
    return EML_OK;
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
    if (n <= 0 || n > net->max_batch || net->inference)
        return EML_ERR_INVALID;
    memset(net->grads, 0, net->n_params * sizeof(float));
    if (sqnorm != NULL) memset(sqnorm, 0, (size_t)n * sizeof(float));
    /* No gradient needs to flow below the first layer that learns. */
    int learns = 0;
    while (learns < net->n_layers && net->layers[learns].n_w == 0) learns++;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].accum)
            memset(net->layers[i].delta, 0,
                   (size_t)n * net->layers[i].n_out * sizeof(float));
    for (int i = net->n_layers - 1; i >= 0; i--) {
        layer *l = &net->layers[i];
        if (l->bn && sqnorm != NULL)
            return EML_ERR_UNSUPPORTED; /* examples mix: no own gradients */
        const float *in = layer_input(net, i);
        layer *below = i > 0 ? &net->layers[i - 1] : NULL;
        /* Into an accumulating delta through the scratch, then added. */
        float *din = i > learns ? below->accum ? net->dtmp : below->delta
                                : NULL;
        double t0 = net->profiling ? now_seconds() : 0;
        eml_status st = EML_OK;
        switch (l->type) {
        case EML_LAYER_CONNECTED:
            st = eml_layer_connected_backward(net, l, in, din, n, sqnorm, sums);
            break;
        case EML_LAYER_CONVOLUTIONAL:
            st = eml_layer_conv_backward(net, l, in, din, n, sqnorm, sums);
            break;
        case EML_LAYER_MAXPOOL:
            if (din != NULL) {
                eml_pool_shape s = eml_layer_pool_shape(l, n);
                st = l->pk->maxpool_backward(net->ks, din, l->delta, l->ws,
                                              &s);
            }
            break;
        case EML_LAYER_AVGPOOL:
            if (din != NULL) {
                eml_pool_shape s = eml_layer_pool_shape(l, n);
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
        case EML_LAYER_SHORTCUT:
            st = eml_layer_shortcut_backward(net, l, n);
            din = NULL; /* added into its sources' deltas */
            break;
        case EML_LAYER_ROUTE:
            eml_layer_route_backward(net, l, n);
            din = NULL;
            break;
        case EML_LAYER_UPSAMPLE:
            if (din != NULL) eml_layer_upsample_backward(l, din, n);
            break;
        case EML_LAYER_COST:
            din = NULL; /* eml_net_loss wrote through the softmax */
            break;
        default:
            st = EML_ERR_INVALID;
        }
        if (st != EML_OK) return st;
        if (din != NULL && din == net->dtmp && l->type != EML_LAYER_SOFTMAX) {
            size_t total = (size_t)n * below->n_out;
#pragma omp parallel for schedule(static) if (total > 65536)
            for (size_t j = 0; j < total; j++) below->delta[j] += din[j];
        }
        if (net->profiling) l->t_bwd += now_seconds() - t0;
    }
    return EML_OK;
}
