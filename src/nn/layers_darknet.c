/*
 * layers_darknet.c - the layers Darknet's own networks need beyond a plain
 * chain: batch normalization after a convolution, [shortcut] (a residual
 * sum, with Darknet's rule for operands of different shapes), [route]
 * (earlier outputs concatenated by channel), [upsample] (nearest
 * neighbour) and [cost] (the loss on the softmax below it; eml_net_loss
 * computes it).
 *
 * Batch normalization follows Darknet: while training, each channel is
 * normalized with the batch's mean and variance over examples and pixels,
 * and the running statistics move 1% of the way to them (the running
 * variance takes the unbiased estimate); otherwise the running statistics
 * normalize.  The normalization divides by sqrt(var + 1e-5), as PyTorch
 * and later Darknet do (Darknet 2018 divides by sqrt(var) + 1e-6 in its
 * forward pass but differentiates sqrt(var + 1e-5) in its backward one);
 * the backward pass here is the exact gradient of the forward one.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <string.h>

#include "nn/net_internal.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.01f /* Darknet: rolling = .99 rolling + .01 batch */

/* ==== shapes ==== */

/* Where the sum at channel k, row y, column x of the overlap reads `from`
 * (ai) and writes the output (oi), within one example. */
static size_t ov_out(const eml_overlap *o, const layer *l, int k, int y, int x)
{
    return (size_t)x * o->sample +
           (size_t)l->out_w *
               ((size_t)y * o->sample + (size_t)l->out_h * (size_t)k);
}

static size_t ov_from(const eml_overlap *o, const layer *f, int k, int y, int x)
{
    return (size_t)x * o->stride +
           (size_t)f->out_w *
               ((size_t)y * o->stride + (size_t)f->out_h * (size_t)k);
}

eml_overlap eml_overlap_of(const layer *l, const layer *f)
{
    eml_overlap o;
    int w1 = f->out_w, h1 = f->out_h, w2 = l->out_w, h2 = l->out_h;
    o.stride = w1 / w2 > 0 ? w1 / w2 : 1;
    o.sample = w2 / w1 > 0 ? w2 / w1 : 1;
    o.minw = w1 < w2 ? w1 : w2;
    o.minh = h1 < h2 ? h1 : h2;
    o.minc = f->out_c < l->out_c ? f->out_c : l->out_c;
    return o;
}

static eml_status shape_shortcut(eml_net *net, layer *l,
                                 const eml_layer_cfg *lc, const char *what,
                                 eml_err *err)
{
    const layer *f = &net->layers[lc->from];
    l->from = lc->from;
    l->alpha = lc->alpha;
    l->beta = lc->beta;
    l->out_c = l->c;
    l->out_h = l->h;
    l->out_w = l->w;
    int w1 = f->out_w, h1 = f->out_h, w2 = l->w, h2 = l->h;
    /* Darknet asserts these; a shape that breaks them is refused. */
    if (w1 / w2 != h1 / h2 || w2 / w1 != h2 / h1)
        return eml_err_set(err, EML_ERR_SHAPE,
                           "%s: layer %d's output %dx%dx%d does not fit "
                           "this layer's %dx%dx%d (width and height must "
                           "scale alike)",
                           what, lc->from, h1, w1, f->out_c, h2, w2, l->c);
    return EML_OK;
}

static eml_status shape_route(eml_net *net, layer *l,
                              const eml_layer_cfg *lc, const char *what,
                              eml_err *err)
{
    l->n_route = lc->n_route;
    l->out_c = 0;
    for (int k = 0; k < lc->n_route; k++) {
        const layer *s = &net->layers[lc->route[k]];
        l->route[k] = lc->route[k];
        if (k == 0) {
            l->out_h = s->out_h;
            l->out_w = s->out_w;
        } else if (s->out_h != l->out_h || s->out_w != l->out_w) {
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: layer %d's output is %dx%d but layer "
                               "%d's %dx%d (a route joins equal sizes)",
                               what, lc->route[k], s->out_h, s->out_w,
                               lc->route[0], l->out_h, l->out_w);
        }
        if (s->out_c > EML_CFG_MAX_CHANNELS - l->out_c)
            return eml_err_set(err, EML_ERR_RANGE, "%s: too many channels",
                               what);
        l->out_c += s->out_c;
    }
    return EML_OK;
}

eml_status eml_layer_darknet_shape(eml_net *net, layer *l,
                                   const eml_layer_cfg *lc, const char *what,
                                   eml_err *err)
{
    int last = l->index == net->n_layers - 1;
    switch (lc->type) {
    case EML_LAYER_SHORTCUT: return shape_shortcut(net, l, lc, what, err);
    case EML_LAYER_ROUTE: return shape_route(net, l, lc, what, err);
    case EML_LAYER_UPSAMPLE:
        l->stride = lc->stride;
        l->scale_by = lc->scale;
        l->out_c = l->c;
        if (l->h > EML_CFG_MAX_DIM / lc->stride ||
            l->w > EML_CFG_MAX_DIM / lc->stride)
            return eml_err_set(err, EML_ERR_RANGE, "%s: output too large",
                               what);
        l->out_h = l->h * lc->stride;
        l->out_w = l->w * lc->stride;
        return EML_OK;
    case EML_LAYER_COST:
        if (!last || l->index == 0 ||
            net->layers[l->index - 1].type != EML_LAYER_SOFTMAX)
            return eml_err_set(err, EML_ERR_SHAPE,
                               "%s: [cost] must be the last layer, right "
                               "after [softmax]",
                               what);
        l->scale_by = lc->scale;
        l->out_c = l->c;
        l->out_h = l->h;
        l->out_w = l->w;
        return EML_OK;
    default:
        return EML_ERR_INVALID;
    }
}

/* ==== batch normalization ==== */

void eml_bn_affine(const layer *l, int j, float *a, float *c)
{
    float var = l->rvar[j] > 0.0f ? l->rvar[j] : 0.0f;
    *a = l->scale[j] / sqrtf(var + BN_EPS);
    *c = l->b[j] - l->rmean[j] * *a;
}

void eml_bn_forward(eml_net *net, layer *l, int n, size_t ld)
{
    int f = l->out_c;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w, N = (size_t)n * hw;
    int train = net->training;
    eml_act act = eml_act_is_simple(l->act) ? l->act : EML_ACT_LINEAR;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < f; j++) {
        const float *x = l->wide + (size_t)j * ld;
        float mean, var;
        if (train) {
            double sum = 0, sq = 0;
            for (size_t p = 0; p < N; p++) sum += x[p];
            double m = sum / (double)N;
            for (size_t p = 0; p < N; p++) {
                double d = x[p] - m;
                sq += d * d;
            }
            mean = (float)m;
            var = (float)(sq / (double)N);
            float unbiased = N > 1 ? (float)(sq / (double)(N - 1)) : var;
            l->rmean[j] += BN_MOMENTUM * (mean - l->rmean[j]);
            l->rvar[j] += BN_MOMENTUM * (unbiased - l->rvar[j]);
        } else { /* the running statistics: one affine map */
            float a, c;
            eml_bn_affine(l, j, &a, &c);
            for (int e = 0; e < n; e++) {
                const float *src = x + (size_t)e * hw;
                float *dst = l->out + (size_t)e * l->n_out + (size_t)j * hw;
                for (size_t p = 0; p < hw; p++)
                    dst[p] = eml_act_simple(src[p] * a + c, act);
            }
            continue;
        }
        float inv = 1.0f / sqrtf(var + BN_EPS), g = l->scale[j], b = l->b[j];
        l->inv_std[j] = inv;
        float *xh = l->xhat + (size_t)j * ld;
        for (int e = 0; e < n; e++) {
            const float *src = x + (size_t)e * hw;
            float *dst = l->out + (size_t)e * l->n_out + (size_t)j * hw;
            for (size_t p = 0; p < hw; p++) {
                float v = (src[p] - mean) * inv;
                xh[(size_t)e * hw + p] = v;
                dst[p] = eml_act_simple(g * v + b, act);
            }
        }
    }
}

void eml_bn_backward(eml_net *net, layer *l, int n, size_t ld)
{
    (void)net;
    int f = l->out_c;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w, N = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < f; j++) {
        float *dy = l->wide + (size_t)j * ld;
        const float *xh = l->xhat + (size_t)j * ld;
        double sdy = 0, sdyx = 0;
        for (size_t p = 0; p < N; p++) {
            sdy += dy[p];
            sdyx += (double)dy[p] * xh[p];
        }
        l->dscale[j] += (float)sdyx;
        float k = l->scale[j] * l->inv_std[j] / (float)N;
        float a = (float)sdy, c = (float)sdyx, nn = (float)N;
        for (size_t p = 0; p < N; p++)
            dy[p] = k * (nn * dy[p] - a - xh[p] * c);
    }
}

/* ==== shortcut ==== */

eml_status eml_layer_shortcut_forward(eml_net *net, layer *l, int n)
{
    const layer *p = &net->layers[l->index - 1], *f = &net->layers[l->from];
    if (f->out_c == l->out_c && f->out_h == l->out_h &&
        f->out_w == l->out_w && eml_act_is_simple(l->act)) { /* one pass: sum and activation */
        size_t total = (size_t)n * l->n_out;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < total; i++)
            l->out[i] = eml_act_simple(
                l->alpha * p->out[i] + l->beta * f->out[i], l->act);
        return EML_OK;
    }
    eml_overlap o = eml_overlap_of(l, f);
    memcpy(l->out, p->out, (size_t)n * l->n_out * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        float *out = l->out + (size_t)b * l->n_out;
        const float *add = f->out + (size_t)b * f->n_out;
        for (int k = 0; k < o.minc; k++)
            for (int y = 0; y < o.minh; y++)
                for (int x = 0; x < o.minw; x++) {
                    size_t oi = ov_out(&o, l, k, y, x);
                    out[oi] = l->alpha * out[oi] +
                              l->beta * add[ov_from(&o, f, k, y, x)];
                }
    }
    return net->k->act_forward(net->ks, l->out, (size_t)n * l->n_out, l->act);
}

eml_status eml_layer_shortcut_backward(eml_net *net, layer *l, int n)
{
    layer *p = &net->layers[l->index - 1], *f = &net->layers[l->from];
    eml_status st = net->k->act_backward(net->ks, l->delta, l->out,
                                         (size_t)n * l->n_out, l->act);
    if (st != EML_OK) return st;
    eml_overlap o = eml_overlap_of(l, f);
    /* Examples in parallel: each writes only its own rows of both deltas.
     * Within an example `from` may be the previous layer, so both sums may
     * land in one buffer: one thread does them in order. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        const float *d = l->delta + (size_t)b * l->n_out;
        float *pd = p->delta + (size_t)b * p->n_out;
        float *fd = f->delta + (size_t)b * f->n_out;
        for (size_t j = 0; j < l->n_out; j++) pd[j] += d[j];
        for (int k = 0; k < o.minc; k++)
            for (int y = 0; y < o.minh; y++)
                for (int x = 0; x < o.minw; x++) {
                    size_t oi = ov_out(&o, l, k, y, x);
                    pd[oi] += (l->alpha - 1.0f) * d[oi];
                    fd[ov_from(&o, f, k, y, x)] += l->beta * d[oi];
                }
    }
    return EML_OK;
}

/* ==== route ==== */

void eml_layer_route_forward(eml_net *net, layer *l, int n)
{
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        float *out = l->out + (size_t)b * l->n_out;
        for (int k = 0; k < l->n_route; k++) {
            const layer *s = &net->layers[l->route[k]];
            memcpy(out, s->out + (size_t)b * s->n_out,
                   s->n_out * sizeof(float));
            out += s->n_out;
        }
    }
}

void eml_layer_route_backward(eml_net *net, layer *l, int n)
{
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        const float *d = l->delta + (size_t)b * l->n_out;
        for (int k = 0; k < l->n_route; k++) {
            layer *s = &net->layers[l->route[k]];
            float *sd = s->delta + (size_t)b * s->n_out;
            for (size_t j = 0; j < s->n_out; j++) sd[j] += d[j];
            d += s->n_out;
        }
    }
}

/* ==== upsample ==== */

void eml_layer_upsample_forward(layer *l, const float *in, int n)
{
    int s = l->stride;
    size_t planes = (size_t)n * (size_t)l->c;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < planes; q++) {
        const float *src = in + q * (size_t)l->h * (size_t)l->w;
        float *dst = l->out + q * (size_t)l->out_h * (size_t)l->out_w;
        for (int y = 0; y < l->out_h; y++)
            for (int x = 0; x < l->out_w; x++)
                dst[(size_t)y * l->out_w + x] =
                    l->scale_by * src[(size_t)(y / s) * l->w + x / s];
    }
}

void eml_layer_upsample_backward(layer *l, float *din, int n)
{
    int s = l->stride;
    size_t planes = (size_t)n * (size_t)l->c;
#pragma omp parallel for schedule(static)
    for (size_t q = 0; q < planes; q++) {
        const float *d = l->delta + q * (size_t)l->out_h * (size_t)l->out_w;
        float *dst = din + q * (size_t)l->h * (size_t)l->w;
        memset(dst, 0, (size_t)l->h * (size_t)l->w * sizeof(float));
        for (int y = 0; y < l->out_h; y++)
            for (int x = 0; x < l->out_w; x++)
                dst[(size_t)(y / s) * l->w + x / s] +=
                    l->scale_by * d[(size_t)y * l->out_w + x];
    }
}
