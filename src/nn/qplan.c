/*
 * qplan.c - int8 inference from layer to layer: the leading layers of a
 * net run on int8 tensors in channels-last layout (NHWC), each convolution
 * one call of the kernel table's qconv with batch norm folded into its
 * weights and bias, its activation and, where a [shortcut] follows it, the
 * residual sum fused in; the tensors between layers stay int8, and only
 * the last one goes back to floats for the layers after the plan.
 *
 *   convolutional  qconv (relu, leaky or linear), batch norm folded:
 *                  w' = w g / sd, b' = b - g mean / sd (sd = sqrt(var +
 *                  1e-5)), w' quantized per output channel;
 *   shortcut       fused into the convolution before it (that layer linear
 *                  and read by nothing else): the convolution's output
 *                  scaled by alpha and the residual's by beta are summed
 *                  in the qconv's sum post-op; otherwise on its own;
 *                  with Darknet's rule for operands of different shapes;
 *   maxpool        on the int8 values (the scale carries over);
 *   dropout        nothing (inference).
 * The plan stops at the first other layer, or earlier where a layer after
 * it reads a layer inside it other than its last (that output must exist
 * in floats).  What follows runs as before: fp32, with int8 products for
 * convolutions and connected layers (quant.c).
 *
 * Scales: a tensor's values are out_max / 127 times its int8 values, with
 * out_max the largest |output| its layer gave while calibrating; the
 * input's is layer 0's in_max.
 *
 * Trusted code: no I/O; the folded int8 weights are wiped when freed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "nn/net_internal.h"

#define BN_EPS 1e-5f /* layers_darknet.c */

typedef struct qconv_layer {
    int8_t *w;             /* folded, quantized (out_c, c, k, k) */
    size_t n_w;
    float *scale, *bias;   /* qconv's: per output channel */
} qconv_layer;

struct eml_qplan {
    int end;         /* layers [0, end) run here */
    int8_t **t;      /* per layer: its output (NHWC), or NULL (fused) */
    int8_t *input;   /* the net's input, quantized (NHWC) */
    float *ts;       /* per layer: its tensor's scale */
    float in_scale;
    int *fused;      /* per layer: conv fused into shortcut l + 1 */
    int *alias;      /* dropout: the tensor is that of layer alias[i] */
    qconv_layer *qc; /* per layer (conv only) */
    uint64_t key;    /* distinguishes this plan's weights (eml_qconv) */
    int n_layers;
};

static float scale_of(float max) { return max > 0 ? max / 127.0f : 1.0f; }

static int qact(eml_act a)
{
    return a == EML_ACT_LINEAR || a == EML_ACT_RELU || a == EML_ACT_LEAKY;
}

/* The layers whose outputs layer i reads; returns their count. */
static int inputs_of(const eml_net *net, int i, int *in)
{
    const layer *l = &net->layers[i];
    if (l->type == EML_LAYER_ROUTE) {
        for (int k = 0; k < l->n_route; k++) in[k] = l->route[k];
        return l->n_route;
    }
    in[0] = i - 1;
    if (l->type == EML_LAYER_SHORTCUT) {
        in[1] = l->from;
        return 2;
    }
    return 1;
}

static int same_shape(const layer *a, const layer *b)
{
    return a->out_c == b->out_c && a->out_h == b->out_h &&
           a->out_w == b->out_w;
}

/* Where output pixel (y, x) of example b reads `from` (NHWC), or NULL
 * outside the overlap. */
static const int8_t *from_pixel(const eml_overlap *o, const layer *f,
                                const int8_t *from, int b, int y, int x)
{
    if (y % o->sample || x % o->sample || y / o->sample >= o->minh ||
        x / o->sample >= o->minw)
        return NULL;
    size_t fy = (size_t)(y / o->sample) * (size_t)o->stride;
    size_t fx = (size_t)(x / o->sample) * (size_t)o->stride;
    return from + (((size_t)b * (size_t)f->out_h + fy) * (size_t)f->out_w +
                   fx) * (size_t)f->out_c;
}

/* Whether layer i can run in the plan, given its inputs can. */
static int plannable(const eml_net *net, int i)
{
    const layer *l = &net->layers[i];
    switch (l->type) {
    case EML_LAYER_CONVOLUTIONAL:
        return qact(l->act) && (i > 0 || l->in_max > 0);
    case EML_LAYER_SHORTCUT:
        return i > 0 && qact(l->act);
    case EML_LAYER_MAXPOOL:
    case EML_LAYER_DROPOUT:
        return i > 0;
    default:
        return 0;
    }
}

/* The first layer after the plan: stops at the first layer it cannot
 * run, then earlier until no later layer reads an output inside it other
 * than its last. */
static int plan_end(const eml_net *net)
{
    int end = 0;
    while (end < net->n_layers && plannable(net, end)) end++;
    for (int changed = 1; changed && end > 0;) {
        changed = 0;
        for (int j = end; j < net->n_layers; j++) {
            int in[EML_CFG_MAX_ROUTE + 1];
            int k = inputs_of(net, j, in);
            for (int a = 0; a < k; a++)
                if (in[a] >= 0 && in[a] < end - 1) {
                    end = in[a] + 1;
                    changed = 1;
                }
        }
    }
    return end;
}

/* Conv i fuses into shortcut i + 1: linear, read by nothing else, and not
 * the residual itself. */
static int fusable(const eml_net *net, int i, int end)
{
    const layer *l = &net->layers[i];
    if (l->type != EML_LAYER_CONVOLUTIONAL || l->act != EML_ACT_LINEAR ||
        i + 1 >= end)
        return 0;
    const layer *s = &net->layers[i + 1];
    if (s->type != EML_LAYER_SHORTCUT || s->from == i) return 0;
    /* outside the overlap the sum post-op adds zeros: right only if the
     * convolution's output goes there unscaled, or there is no outside */
    if (s->alpha != 1.0f && !same_shape(s, &net->layers[s->from])) return 0;
    for (int j = i + 2; j < net->n_layers; j++) {
        int in[EML_CFG_MAX_ROUTE + 1];
        int k = inputs_of(net, j, in);
        for (int a = 0; a < k; a++)
            if (in[a] == i) return 0;
    }
    return 1;
}

void eml_qplan_free(eml_qplan *p)
{
    if (p == NULL) return;
    for (int i = 0; i < p->n_layers; i++) {
        if (p->alias[i] < 0) free(p->t[i]);
        qconv_layer *q = &p->qc[i];
        if (q->w != NULL) eml_wipe(q->w, q->n_w); /* the model's weights */
        free(q->w);
        free(q->scale);
        free(q->bias);
    }
    free(p->input);
    free(p->t);
    free(p->ts);
    free(p->fused);
    free(p->alias);
    free(p->qc);
    free(p);
}

/* Batch norm folded into conv l, the weights quantized per output
 * channel, and the qconv scale and bias for input scale sx and output
 * scale so, the result times alpha. */
static eml_status fold_conv(const layer *l, float sx, float so, float alpha,
                            qconv_layer *q)
{
    size_t f = l->n_b, k = l->n_w / l->n_b;
    q->n_w = l->n_w;
    q->w = malloc(l->n_w);
    q->scale = malloc(f * sizeof(float));
    q->bias = malloc(f * sizeof(float));
    if (q->w == NULL || q->scale == NULL || q->bias == NULL)
        return EML_ERR_NOMEM;
    for (size_t j = 0; j < f; j++) {
        float g = 1.0f, shift = l->b[j];
        if (l->bn) {
            float var = l->rvar[j] > 0.0f ? l->rvar[j] : 0.0f;
            g = l->scale[j] / sqrtf(var + BN_EPS);
            shift = l->b[j] - l->rmean[j] * g;
        }
        const float *w = l->wt + j * k;
        float m = 0;
        for (size_t i = 0; i < k; i++) m = fmaxf(m, fabsf(w[i] * g));
        float sw = scale_of(m), inv = 1.0f / sw;
        for (size_t i = 0; i < k; i++) q->w[j * k + i] = eml_q8(w[i] * g, inv);
        /* the real output is acc sx sw + shift; in the output's units,
         * times alpha: (acc + shift / (sx sw)) alpha sx sw / so */
        float unit = sx * sw;
        q->scale[j] = alpha * unit / so;
        q->bias[j] = shift / unit;
    }
    return EML_OK;
}

/* Scales, fusions, folded weights and tensors of the layers [0, end). */
static eml_status plan_layers(eml_net *net, eml_qplan *p)
{
    size_t mb = (size_t)net->max_batch;
    p->in_scale = scale_of(net->layers[0].in_max);
    for (int i = 0; i < p->end; i++) {
        const layer *l = &net->layers[i];
        float below = i > 0 ? p->ts[i - 1] : p->in_scale;
        p->alias[i] = -1;
        p->ts[i] = scale_of(l->out_max);
        if (l->type == EML_LAYER_MAXPOOL) p->ts[i] = below;
        if (l->type == EML_LAYER_DROPOUT) {
            p->ts[i] = below;
            p->alias[i] = i > 0 && p->alias[i - 1] >= 0 ? p->alias[i - 1]
                                                        : i - 1;
        }
        p->fused[i] = fusable(net, i, p->end);
    }
    for (int i = 0; i < p->end; i++) {
        const layer *l = &net->layers[i];
        if (l->type == EML_LAYER_CONVOLUTIONAL) {
            float sx = i > 0 ? p->ts[i - 1] : p->in_scale;
            int f = p->fused[i];
            float alpha = f ? net->layers[i + 1].alpha : 1.0f;
            eml_status st = fold_conv(l, sx, p->ts[i + f], alpha, &p->qc[i]);
            if (st != EML_OK) return st;
        }
        if (p->alias[i] >= 0) {
            p->t[i] = p->t[p->alias[i]];
        } else if (!p->fused[i]) {
            p->t[i] = malloc(mb * l->n_out);
            if (p->t[i] == NULL) return EML_ERR_NOMEM;
        }
    }
    p->input = malloc(mb * net->layers[0].n_in);
    return p->input != NULL ? EML_OK : EML_ERR_NOMEM;
}

eml_status eml_qplan_build(eml_net *net, eml_err *err)
{
    eml_qplan_free(net->qplan);
    net->qplan = NULL;
    int end = net->k->qconv != NULL ? plan_end(net) : 0;
    if (end == 0) return EML_OK;
    int nl = net->n_layers;
    eml_qplan *p = calloc(1, sizeof(*p));
    if (p != NULL) {
        p->n_layers = nl;
        p->end = end;
        p->key = ++net->qplan_serial;
        p->t = calloc((size_t)nl, sizeof(*p->t));
        p->ts = calloc((size_t)nl, sizeof(*p->ts));
        p->fused = calloc((size_t)nl, sizeof(*p->fused));
        p->alias = calloc((size_t)nl, sizeof(*p->alias));
        p->qc = calloc((size_t)nl, sizeof(*p->qc));
    }
    eml_status st = EML_ERR_NOMEM;
    if (p != NULL && p->t != NULL && p->ts != NULL && p->fused != NULL &&
        p->alias != NULL && p->qc != NULL) {
        for (int i = 0; i < nl; i++) p->alias[i] = -1;
        st = plan_layers(net, p);
    }
    if (st != EML_OK) {
        if (p != NULL && p->alias != NULL) eml_qplan_free(p);
        else if (p != NULL) {
            free(p->t), free(p->ts), free(p->fused), free(p->qc), free(p);
        }
        return eml_err_set(err, st, "out of memory for the int8 plan");
    }
    net->qplan = p;
    return EML_OK;
}

int eml_qplan_end(const eml_net *net)
{
    return net->qplan != NULL ? net->qplan->end : 0;
}

int eml_net_int8_layers(const eml_net *net) { return eml_qplan_end(net); }

/* ==== running it ==== */

static inline int8_t sat8(float v)
{
    v = nearbyintf(v);
    return (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : (int)v);
}

static inline float act8(float v, eml_act a)
{
    if (a == EML_ACT_RELU) return v > 0.0f ? v : 0.0f;
    if (a == EML_ACT_LEAKY) return v > 0.0f ? v : EML_LEAKY_SLOPE * v;
    return v;
}

/* NCHW floats to NHWC int8. */
static void quantize_nhwc(const float *x, int n, int c, int h, int w,
                          float inv, int8_t *q)
{
    size_t hw = (size_t)h * (size_t)w, chw = (size_t)c * hw;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                size_t p = (size_t)y * (size_t)w + (size_t)xx;
                const float *src = x + (size_t)b * chw + p;
                int8_t *d = q + ((size_t)b * hw + p) * (size_t)c;
                for (int k = 0; k < c; k++)
                    d[k] = eml_q8(src[(size_t)k * hw], inv);
            }
}

/* NHWC int8 to NCHW floats. */
static void dequantize_nchw(const int8_t *q, int n, const layer *l, float s,
                            float *x)
{
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int c = l->out_c;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int k = 0; k < c; k++) {
            float *d = x + (size_t)b * l->n_out + (size_t)k * hw;
            const int8_t *src = q + (size_t)b * hw * (size_t)c + (size_t)k;
            for (size_t p = 0; p < hw; p++)
                d[p] = s * (float)src[p * (size_t)c];
        }
}

/* out = act(alpha s_prev prev + beta s_from from) / s_out in the overlap,
 * act(s_prev prev) / s_out elsewhere. */
static void shortcut_s8(const eml_net *net, const eml_qplan *p,
                        const layer *l, int n)
{
    int i = l->index;
    const layer *f = &net->layers[l->from];
    const int8_t *a = p->t[i - 1], *from = p->t[l->from];
    int8_t *o = p->t[i];
    float kp = p->ts[i - 1] / p->ts[i], ka = l->alpha * kp;
    float kb = l->beta * p->ts[l->from] / p->ts[i];
    eml_overlap ov = eml_overlap_of(l, f);
    int c = l->out_c;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int y = 0; y < l->out_h; y++)
            for (int x = 0; x < l->out_w; x++) {
                size_t at = (((size_t)b * (size_t)l->out_h + (size_t)y) *
                                 (size_t)l->out_w + (size_t)x) * (size_t)c;
                const int8_t *fp = from_pixel(&ov, f, from, b, y, x);
                int k = 0;
                if (fp != NULL)
                    for (; k < ov.minc; k++)
                        o[at + k] = sat8(act8(ka * (float)a[at + k] +
                                                  kb * (float)fp[k],
                                              l->act));
                for (; k < c; k++)
                    o[at + k] = sat8(act8(kp * (float)a[at + k], l->act));
            }
}

/* The residual of shortcut l in its output's shape (zero outside the
 * overlap), for the sum post-op of the convolution fused into it. */
static void residual_s8(const eml_net *net, const eml_qplan *p,
                        const layer *l, int n, int8_t *dst)
{
    const layer *f = &net->layers[l->from];
    const int8_t *from = p->t[l->from];
    if (same_shape(l, f)) {
        memcpy(dst, from, (size_t)n * l->n_out);
        return;
    }
    eml_overlap ov = eml_overlap_of(l, f);
    int c = l->out_c;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < n; b++)
        for (int y = 0; y < l->out_h; y++)
            for (int x = 0; x < l->out_w; x++) {
                int8_t *d = dst + (((size_t)b * (size_t)l->out_h +
                                    (size_t)y) * (size_t)l->out_w +
                                   (size_t)x) * (size_t)c;
                const int8_t *fp = from_pixel(&ov, f, from, b, y, x);
                memset(d, 0, (size_t)c);
                if (fp != NULL) memcpy(d, fp, (size_t)ov.minc);
            }
}

/* Max pooling of NHWC int8 (taps outside the input ignored; a window with
 * none gives 0, as the reference's). */
static void maxpool_s8(const eml_pool_shape *s, const int8_t *in,
                       int8_t *out)
{
    size_t c = (size_t)s->c;
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < s->batch; b++)
        for (int oy = 0; oy < s->out_h; oy++)
            for (int ox = 0; ox < s->out_w; ox++) {
                int8_t *o = out + (((size_t)b * (size_t)s->out_h +
                                    (size_t)oy) * (size_t)s->out_w +
                                   (size_t)ox) * c;
                int any = 0;
                for (int ky = 0; ky < s->size_h; ky++) {
                    int iy = oy * s->stride - s->pad_t + ky;
                    if (iy < 0 || iy >= s->in_h) continue;
                    for (int kx = 0; kx < s->size_w; kx++) {
                        int ix = ox * s->stride - s->pad_l + kx;
                        if (ix < 0 || ix >= s->in_w) continue;
                        const int8_t *x =
                            in + (((size_t)b * (size_t)s->in_h +
                                   (size_t)iy) * (size_t)s->in_w +
                                  (size_t)ix) * c;
                        if (!any) memcpy(o, x, c);
                        else
                            for (size_t k = 0; k < c; k++)
                                o[k] = x[k] > o[k] ? x[k] : o[k];
                        any = 1;
                    }
                }
                if (!any) memset(o, 0, c);
            }
}

static eml_status conv_s8(eml_net *net, const eml_qplan *p, int i, int n)
{
    const layer *l = &net->layers[i];
    const qconv_layer *qc = &p->qc[i];
    eml_qconv q;
    memset(&q, 0, sizeof(q));
    q.batch = n;
    q.out_c = l->out_c;
    q.s = (eml_conv_shape){l->c,     l->h,      l->w,     l->size, l->stride,
                           l->pad,   l->out_h,  l->out_w, 0};
    q.scale = qc->scale;
    q.bias = qc->bias;
    q.act = l->act;
    q.key = p->key;
    const int8_t *src = i > 0 ? p->t[i - 1] : p->input;
    int8_t *dst = p->t[i];
    if (p->fused[i]) { /* the residual first, then the sum post-op */
        const layer *s = &net->layers[i + 1];
        dst = p->t[i + 1];
        residual_s8(net, p, s, n, dst);
        q.sum_scale = s->beta * p->ts[s->from] / p->ts[i + 1];
        q.act = s->act;
    }
    return net->k->qconv(net->ks, &q, src, qc->w, dst);
}

eml_status eml_qplan_forward(eml_net *net, int n)
{
    eml_qplan *p = net->qplan;
    const layer *l0 = &net->layers[0];
    quantize_nhwc(net->input, n, l0->c, l0->h, l0->w, 1.0f / p->in_scale,
                  p->input);
    for (int i = 0; i < p->end; i++) {
        layer *l = &net->layers[i];
        double t0 = net->profiling ? eml_wall_seconds() : 0;
        eml_status st = EML_OK;
        if (l->type == EML_LAYER_CONVOLUTIONAL) {
            st = conv_s8(net, p, i, n);
        } else if (l->type == EML_LAYER_SHORTCUT) {
            if (!p->fused[i - 1]) shortcut_s8(net, p, l, n);
        } else if (l->type == EML_LAYER_MAXPOOL) {
            eml_pool_shape s = eml_layer_pool_shape(l, n);
            maxpool_s8(&s, p->t[i - 1], p->t[i]);
        }
        if (st != EML_OK) return st;
        if (net->profiling) l->t_fwd += eml_wall_seconds() - t0;
    }
    const layer *last = &net->layers[p->end - 1];
    dequantize_nchw(p->t[p->end - 1], n, last, p->ts[p->end - 1], last->out);
    return EML_OK;
}
