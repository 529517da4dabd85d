/*
 * net_loss.c - the loss at the top of a net: cross-entropy on the
 * softmax, or [cost]'s squared error through it, with the gradient
 * written into the softmax's delta (which is the logits' delta); and the
 * per-example scaling of that gradient DP-SGD's clipping applies.
 *
 * Trusted code: no I/O.
 */
#include <math.h>

#include "nn/net_internal.h"

/* [cost] type=sse on probabilities p, label y: L = scale sum_j (p_j -
 * [j = y])^2; its gradient through the softmax into d (dL/dlogits). */
static double sse_loss(const float *p, size_t k, unsigned y, float scale,
                       float *d)
{
    double loss = 0, dot = 0;
    for (size_t j = 0; j < k; j++) {
        double e = p[j] - (j == y ? 1.0 : 0.0);
        loss += e * e;
        dot += p[j] * 2.0 * e;
    }
    if (d != NULL)
        for (size_t j = 0; j < k; j++) {
            double g = 2.0 * (p[j] - (j == y ? 1.0 : 0.0));
            d[j] = (float)(scale * p[j] * (g - dot));
        }
    return scale * loss;
}

eml_status eml_net_loss(eml_net *net, int n, const uint8_t *labels,
                        double *loss_sum, int *correct)
{
    return eml_net_loss_pred(net, n, labels, loss_sum, correct, NULL);
}

eml_status eml_net_loss_pred(eml_net *net, int n, const uint8_t *labels,
                             double *loss_sum, int *correct, uint32_t *pred)
{
    layer *top = &net->layers[net->n_layers - 1];
    const layer *cost = NULL;
    if (top->type == EML_LAYER_COST) {
        cost = top;
        top = &net->layers[net->n_layers - 2];
    }
    if (top->type != EML_LAYER_SOFTMAX || top->groups != 1)
        return EML_ERR_INVALID;
    if (n <= 0 || n > net->max_batch) return EML_ERR_INVALID;
    size_t k = top->n_out;
    double loss = 0;
    int right = 0;
    for (int b = 0; b < n; b++) {
        if (labels[b] >= k) return EML_ERR_RANGE;
    }
    for (int b = 0; b < n; b++) {
        const float *p = top->out + (size_t)b * k;
        size_t best = 0;
        for (size_t j = 0; j < k; j++)
            if (p[j] > p[best]) best = j;
        float *d = top->delta != NULL ? top->delta + (size_t)b * k : NULL;
        right += best == labels[b];
        if (pred != NULL) pred[b] = (uint32_t)best;
        if (cost != NULL) {
            loss += sse_loss(p, k, labels[b], cost->scale_by, d);
        } else if (d != NULL) { /* an inference net has none */
            for (size_t j = 0; j < k; j++) d[j] = p[j];
            d[labels[b]] -= 1.0f;
        }
        if (d != NULL && top->scale_by != 1.0f) /* through x / temperature */
            for (size_t j = 0; j < k; j++) d[j] /= top->scale_by;
        if (cost != NULL) continue;
        float py = p[labels[b]];
        loss += -log(py > 1e-30f ? (double)py : 1e-30);
    }
    if (loss_sum != NULL) *loss_sum += loss;
    if (correct != NULL) *correct += right;
    return EML_OK;
}

void eml_net_scale_output_delta(eml_net *net, int n, const float *s)
{
    layer *top = &net->layers[net->n_layers - 1];
    if (top->type == EML_LAYER_COST) top = &net->layers[net->n_layers - 2];
    if (top->delta == NULL) return;
    for (int b = 0; b < n; b++) {
        float *d = top->delta + (size_t)b * top->n_out;
        for (size_t j = 0; j < top->n_out; j++) d[j] *= s[b];
    }
}

eml_status eml_net_clipped_grads(eml_net *net, int n, const float *s)
{
    if (n <= 0 || n > net->max_batch || s == NULL || net->inference)
        return EML_ERR_INVALID;
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        if (l->n_w == 0) continue;
        const float *in = i == 0 ? net->input : net->layers[i - 1].out;
        if (l->type == EML_LAYER_CONNECTED) {
            eml_status st = eml_layer_connected_clipped(net, l, in, n, s);
            if (st != EML_OK) return st;
        } else if (l->type == EML_LAYER_CONVOLUTIONAL && l->dw_ex != NULL &&
                   !l->bn) {
            eml_layer_conv_clipped(l, n, s);
        } else {
            return EML_ERR_UNSUPPORTED; /* no per-example pass left it */
        }
    }
    return EML_OK;
}
