/*
 * net_stats.c - what a net costs: FLOPs per pass (Darknet's count for
 * convolutions: 2 n size^2 c out_h out_w), parameters, and per-layer
 * profiles and descriptions.
 *
 * Trusted code: no I/O.
 */
#include <stdio.h>
#include <string.h>

#include "nn/net_internal.h"

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

