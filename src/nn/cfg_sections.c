/*
 * cfg_sections.c - the sections of a Darknet-style .cfg file: which keys
 * each one takes, and its resolver, which parses the values the line
 * reader (cfg.c) recorded for it, applies Darknet's defaults, checks every
 * range and appends the layer.
 *
 * Trusted code fed hostile bytes: it reads only slices of the input the
 * reader recorded; no I/O, no printing, no exit, no global state.  Every
 * error is one sentence starting "<file>:<line>: " naming the key at
 * fault; bytes of the input echoed into a message are cut short with
 * control and non-ASCII bytes replaced (eml_cfg_echo).  A key we know but
 * cannot honour (subdivisions, batch_normalize, grouped convolution...) is
 * refused unless it has its neutral value, and a key that would be
 * silently ignored is an error, like an unknown key.  See docs/cfg.md.
 *
 * Ownership: layers are appended to the parser's eml_netcfg, which owns
 * them.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_internal.h"

#define CFG_MAX_EPOCHS 100000
#define CFG_MAX_MAX_BATCHES 1000000000L
/* ==== keys of each section ==== */

enum {
    NET_BATCH, NET_SUBDIVISIONS, NET_HEIGHT, NET_WIDTH, NET_CHANNELS,
    NET_LEARNING_RATE, NET_MOMENTUM, NET_DECAY, NET_ADAM, NET_B1, NET_B2,
    NET_EPS, NET_POLICY, NET_STEPS, NET_SCALES, NET_LR_MIN, NET_EPOCHS,
    NET_MAX_BATCHES, NET_EMA, NET_POWER, NET_BURN_IN,
    NET_FLIP, NET_MIN_CROP, NET_MAX_CROP, NET_ANGLE, NET_ASPECT,
    NET_IGNORED, /* the keys from here on are known and ignored */
    NET_N_KEYS = NET_IGNORED + 7
};
static const char *const net_keys[NET_N_KEYS] = {
    "batch", "subdivisions", "height", "width", "channels",
    "learning_rate", "momentum", "decay", "adam", "B1", "B2",
    "eps", "policy", "steps", "scales", "lr_min", "epochs",
    "max_batches", "ema", "power", "burn_in",
    /* Darknet's geometric data augmentation (augment.c) */
    "flip", "min_crop", "max_crop", "angle", "aspect",
    /* its colour jitter and detection keys: known, not applied */
    "saturation", "exposure", "hue", "max_ratio", "min_ratio", "center",
    "jitter",
};

enum {
    CONV_FILTERS, CONV_SIZE, CONV_STRIDE, CONV_PAD, CONV_PADDING,
    CONV_ACTIVATION, CONV_BATCH_NORMALIZE, CONV_GROUPS, CONV_N_KEYS
};
static const char *const conv_keys[CONV_N_KEYS] = {
    "filters", "size", "stride", "pad", "padding",
    "activation", "batch_normalize", "groups",
};

enum { FC_OUTPUT, FC_ACTIVATION, FC_BATCH_NORMALIZE, FC_N_KEYS };
static const char *const fc_keys[FC_N_KEYS] = {
    "output", "activation", "batch_normalize",
};

enum { POOL_SIZE, POOL_STRIDE, POOL_PADDING, POOL_N_KEYS };
static const char *const pool_keys[POOL_N_KEYS] = {
    "size", "stride", "padding",
};

enum { DROP_PROBABILITY, DROP_N_KEYS };
static const char *const drop_keys[DROP_N_KEYS] = {"probability"};

enum { SCAT_SCALES, SCAT_ANGLES, SCAT_GROUPS, SCAT_N_KEYS };
static const char *const scat_keys[SCAT_N_KEYS] = {"scales", "angles",
                                                   "groups"};

enum { SOFT_GROUPS, SOFT_TEMPERATURE, SOFT_N_KEYS };
static const char *const soft_keys[SOFT_N_KEYS] = {"groups", "temperature"};

_Static_assert((int)NET_N_KEYS <= CFG_MAX_KEYS &&
                   (int)CONV_N_KEYS <= CFG_MAX_KEYS &&
                   (int)FC_N_KEYS <= CFG_MAX_KEYS &&
                   (int)POOL_N_KEYS <= CFG_MAX_KEYS &&
                   (int)DROP_N_KEYS <= CFG_MAX_KEYS &&
                   (int)SOFT_N_KEYS <= CFG_MAX_KEYS &&
                   (int)SCAT_N_KEYS <= CFG_MAX_KEYS,
               "CFG_MAX_KEYS must cover every section");

/* ==== the table of sections ==== */

static eml_status resolve_net(parser *p);
static eml_status resolve_conv(parser *p);
static eml_status resolve_connected(parser *p);
static eml_status resolve_maxpool(parser *p);
static eml_status resolve_avgpool(parser *p);
static eml_status resolve_dropout(parser *p);
static eml_status resolve_softmax(parser *p);
static eml_status resolve_scattering(parser *p);

static const section_def sections[] = {
    {"net", SECT_NET, net_keys, NET_N_KEYS, resolve_net, NULL},
    {"network", SECT_NET, net_keys, NET_N_KEYS, resolve_net, NULL},
    {"convolutional", EML_LAYER_CONVOLUTIONAL, conv_keys, CONV_N_KEYS,
     resolve_conv, NULL},
    {"conv", EML_LAYER_CONVOLUTIONAL, conv_keys, CONV_N_KEYS, resolve_conv, NULL},
    {"connected", EML_LAYER_CONNECTED, fc_keys, FC_N_KEYS, resolve_connected, NULL},
    {"conn", EML_LAYER_CONNECTED, fc_keys, FC_N_KEYS, resolve_connected, NULL},
    {"maxpool", EML_LAYER_MAXPOOL, pool_keys, POOL_N_KEYS, resolve_maxpool, NULL},
    {"max", EML_LAYER_MAXPOOL, pool_keys, POOL_N_KEYS, resolve_maxpool, NULL},
    {"avgpool", EML_LAYER_AVGPOOL, pool_keys, POOL_N_KEYS, resolve_avgpool, NULL},
    {"avg", EML_LAYER_AVGPOOL, pool_keys, POOL_N_KEYS, resolve_avgpool, NULL},
    {"dropout", EML_LAYER_DROPOUT, drop_keys, DROP_N_KEYS, resolve_dropout, NULL},
    {"softmax", EML_LAYER_SOFTMAX, soft_keys, SOFT_N_KEYS, resolve_softmax, NULL},
    {"soft", EML_LAYER_SOFTMAX, soft_keys, SOFT_N_KEYS, resolve_softmax, NULL},
    {"scattering", EML_LAYER_SCATTERING, scat_keys, SCAT_N_KEYS,
     resolve_scattering, NULL},
};
#define N_SECTIONS ((int)(sizeof(sections) / sizeof(sections[0])))

const section_def *eml_cfg_section_find(slice name)
{
    for (int i = 0; i < N_SECTIONS; i++)
        if (eml_cfg_slice_eq(name, sections[i].name)) return &sections[i];
    for (int i = 0; i < eml_cfg_darknet_n_sections; i++)
        if (eml_cfg_slice_eq(name, eml_cfg_darknet_sections[i].name))
            return &eml_cfg_darknet_sections[i];
    return NULL;
}

static eml_status step_item(parser *p, int idx, slice v, int i)
{
    const slot *s = &p->slots[idx];
    long x = 0;
    eml_status st = parse_long(p, v, s->line, key_name(p, idx), &x);
    if (st != EML_OK) return st;
    if (x < 1 || x > INT_MAX) {
        echo_buf e;
        return eml_cfg_fail(p, EML_ERR_RANGE, s->line,
                            "[%s] steps: %s is not a positive iteration count",
                            p->sec->name, eml_cfg_echo(&e, v));
    }
    if (i > 0 && x <= p->cfg->steps[i - 1]) {
        return eml_cfg_fail(p, EML_ERR_RANGE, s->line,
                            "[%s] steps must increase (%d then %ld)",
                            p->sec->name, p->cfg->steps[i - 1], x);
    }
    p->cfg->steps[i] = (int)x;
    return EML_OK;
}

static eml_status scale_item(parser *p, int idx, slice v, int i)
{
    const slot *s = &p->slots[idx];
    float x = 0.0f;
    eml_status st = parse_float(p, v, s->line, key_name(p, idx), &x);
    if (st != EML_OK) return st;
    if (!(x > 0.0f)) {
        echo_buf e;
        return eml_cfg_fail(p, EML_ERR_RANGE, s->line,
                            "[%s] scales: %s must be > 0", p->sec->name,
                            eml_cfg_echo(&e, v));
    }
    p->cfg->scales[i] = x;
    return EML_OK;
}

/* ==== section resolvers ==== */

static eml_status resolve_policy(parser *p)
{
    eml_netcfg *c = p->cfg;
    const slot *s = &p->slots[NET_POLICY];
    c->policy = EML_LR_CONSTANT;
    if (s->line != 0) {
        if (eml_cfg_slice_eq(s->v, "constant")) {
            c->policy = EML_LR_CONSTANT;
        } else if (eml_cfg_slice_eq(s->v, "steps")) {
            c->policy = EML_LR_STEPS;
        } else if (eml_cfg_slice_eq(s->v, "cosine")) {
            c->policy = EML_LR_COSINE;
        } else if (eml_cfg_slice_eq(s->v, "poly")) {
            c->policy = EML_LR_POLY;
        } else {
            echo_buf e;
            return eml_cfg_fail(
                p, EML_ERR_FORMAT, s->line,
                "[%s] unknown policy '%s' (allowed: constant, steps, "
                "cosine, poly)",
                p->sec->name, eml_cfg_echo(&e, s->v));
        }
    }
    eml_status pst = only_with(p, NET_POWER, c->policy == EML_LR_POLY,
                               "policy=poly");
    if (pst == EML_OK) pst = get_float(p, NET_POWER, 4.0f, &c->power);
    if (pst != EML_OK) return pst;
    if (!(c->power > 0.0f && c->power <= 100.0f))
        return bad_value(p, NET_POWER, "must be in (0, 100]");
    int is_steps = c->policy == EML_LR_STEPS;
    eml_status st = only_with(p, NET_STEPS, is_steps, "policy=steps");
    if (st == EML_OK) st = only_with(p, NET_SCALES, is_steps, "policy=steps");
    if (st != EML_OK || !is_steps) return st;

    if ((st = need(p, NET_STEPS)) != EML_OK) return st;
    if ((st = need(p, NET_SCALES)) != EML_OK) return st;
    int n_scales = 0;
    st = split_list(p, NET_STEPS, &c->n_steps, step_item);
    if (st == EML_OK) st = split_list(p, NET_SCALES, &n_scales, scale_item);
    if (st != EML_OK) return st;
    if (n_scales != c->n_steps) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, p->slots[NET_SCALES].line,
                            "[%s] has %d steps but %d scales", p->sec->name,
                            c->n_steps, n_scales);
    }
    return EML_OK;
}

/* Darknet's geometric augmentation of training images, on only when the
 * file names one of its keys (Darknet's classifier crops by default).
 * min_crop defaults to the smaller side, max_crop to twice the width
 * (Darknet's defaults). */
static eml_status resolve_augment(parser *p)
{
    eml_augment_cfg *a = &p->cfg->augment;
    eml_netcfg *c = p->cfg;
    eml_status st;
    int side = c->height < c->width ? c->height : c->width;
    int crop = given(p, NET_MIN_CROP) || given(p, NET_MAX_CROP) ||
               given(p, NET_ANGLE) || given(p, NET_ASPECT);
    if ((st = get_int(p, NET_FLIP, 0, 1, 0, &a->flip))) return st;
    if ((st = get_int(p, NET_MIN_CROP, 1, EML_CFG_MAX_DIM, side,
                      &a->min_crop)))
        return st;
    int max_def = c->width <= EML_CFG_MAX_DIM / 2 ? 2 * c->width
                                                   : EML_CFG_MAX_DIM;
    if (max_def < a->min_crop) max_def = a->min_crop;
    if ((st = get_int(p, NET_MAX_CROP, a->min_crop, EML_CFG_MAX_DIM, max_def,
                      &a->max_crop)))
        return st;
    if ((st = get_float(p, NET_ANGLE, 0.0f, &a->angle))) return st;
    if (!(a->angle >= 0.0f && a->angle <= 180.0f))
        return bad_value(p, NET_ANGLE, "must be in [0, 180] (degrees)");
    if ((st = get_float(p, NET_ASPECT, 1.0f, &a->aspect))) return st;
    if (!(a->aspect >= 0.0625f && a->aspect <= 16.0f))
        return bad_value(p, NET_ASPECT, "must be in [1/16, 16]");
    a->crop = crop;
    a->on = crop || a->flip;
    return EML_OK;
}

static eml_status resolve_net(parser *p)
{
    eml_netcfg *c = p->cfg;
    eml_status st;
    int subdivisions = 1, adam = 0;

    if ((st = need(p, NET_HEIGHT)) != EML_OK) return st;
    if ((st = need(p, NET_WIDTH)) != EML_OK) return st;
    if ((st = need(p, NET_CHANNELS)) != EML_OK) return st;
    if ((st = get_int(p, NET_BATCH, 1, EML_CFG_MAX_BATCH, 128, &c->batch)))
        return st;
    if ((st = get_int(p, NET_SUBDIVISIONS, 1, EML_CFG_MAX_BATCH, 1,
                      &subdivisions)))
        return st;
    /* Darknet splits a step's batch into subdivisions to save memory; a
     * step is the same `batch` examples either way. */
    (void)subdivisions;
    if ((st = get_int(p, NET_HEIGHT, 1, EML_CFG_MAX_DIM, 0, &c->height)))
        return st;
    if ((st = get_int(p, NET_WIDTH, 1, EML_CFG_MAX_DIM, 0, &c->width)))
        return st;
    if ((st = get_int(p, NET_CHANNELS, 1, EML_CFG_MAX_CHANNELS, 0,
                      &c->channels)))
        return st;

    if ((st = get_float(p, NET_LEARNING_RATE, 0.01f, &c->learning_rate)))
        return st;
    if (!(c->learning_rate > 0.0f))
        return bad_value(p, NET_LEARNING_RATE, "must be > 0");
    if ((st = get_float(p, NET_MOMENTUM, 0.9f, &c->momentum))) return st;
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return bad_value(p, NET_MOMENTUM, "must be in [0, 1)");
    if ((st = get_float(p, NET_DECAY, 0.0f, &c->decay))) return st;
    if (!(c->decay >= 0.0f)) return bad_value(p, NET_DECAY, "must be >= 0");

    if ((st = get_int(p, NET_ADAM, 0, 1, 0, &adam))) return st;
    c->optimizer = adam ? EML_OPT_ADAM : EML_OPT_SGD;
    if ((st = only_with(p, NET_B1, adam, "adam=1"))) return st;
    if ((st = only_with(p, NET_B2, adam, "adam=1"))) return st;
    if ((st = only_with(p, NET_EPS, adam, "adam=1"))) return st;
    if ((st = get_float(p, NET_B1, 0.9f, &c->adam_b1))) return st;
    if (!(c->adam_b1 >= 0.0f && c->adam_b1 < 1.0f))
        return bad_value(p, NET_B1, "must be in [0, 1)");
    if ((st = get_float(p, NET_B2, 0.999f, &c->adam_b2))) return st;
    if (!(c->adam_b2 >= 0.0f && c->adam_b2 < 1.0f))
        return bad_value(p, NET_B2, "must be in [0, 1)");
    if ((st = get_float(p, NET_EPS, 1e-8f, &c->adam_eps))) return st;
    if (!(c->adam_eps > 0.0f)) return bad_value(p, NET_EPS, "must be > 0");

    if ((st = resolve_policy(p))) return st;
    if ((st = only_with(p, NET_LR_MIN, c->policy == EML_LR_COSINE,
                        "policy=cosine")))
        return st;
    if ((st = get_float(p, NET_LR_MIN, 0.0f, &c->lr_min))) return st;
    if (!(c->lr_min >= 0.0f && c->lr_min <= c->learning_rate))
        return bad_value(p, NET_LR_MIN, "must be in [0, learning_rate]");

    if ((st = get_int(p, NET_EPOCHS, 1, CFG_MAX_EPOCHS, 10, &c->epochs)))
        return st;
    if ((st = get_float(p, NET_EMA, 0.0f, &c->ema))) return st;
    if (!(c->ema >= 0.0f && c->ema < 1.0f))
        return bad_value(p, NET_EMA, "must be in [0, 1)");
    if ((st = get_int(p, NET_BURN_IN, 0, CFG_MAX_MAX_BATCHES, 0,
                      &c->burn_in)))
        return st;
    if ((st = resolve_augment(p))) return st;
    /* Known, ignored, and said so once (the host prints the list). */
    size_t at = 0;
    for (int k = NET_IGNORED; k < NET_N_KEYS; k++)
        if (given(p, k) && at + strlen(net_keys[k]) + 3 < sizeof(c->ignored))
            at += (size_t)snprintf(c->ignored + at, sizeof(c->ignored) - at,
                                   "%s%s", at ? ", " : "", net_keys[k]);
    return get_int(p, NET_MAX_BATCHES, 0, CFG_MAX_MAX_BATCHES, 0,
                   &c->max_batches);
}

/* batch_normalize: Darknet's key, accepted only as 0 until we have it. */
static eml_status no_batchnorm(parser *p, int idx)
{
    int bn = 0;
    eml_status st = get_int(p, idx, 0, 1, 0, &bn);
    if (st != EML_OK) return st;
    return only_value(p, idx, bn, 0, "no batch normalization yet");
}

static eml_status resolve_conv(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    int pad = 0, groups = 1;

    if ((st = need(p, CONV_FILTERS))) return st;
    if ((st = need(p, CONV_SIZE))) return st;
    if ((st = get_int(p, CONV_FILTERS, 1, EML_CFG_MAX_CHANNELS, 0,
                      &l.filters)))
        return st;
    if ((st = get_int(p, CONV_SIZE, 1, EML_CFG_MAX_KERNEL, 0, &l.size)))
        return st;
    if ((st = get_int(p, CONV_STRIDE, 1, EML_CFG_MAX_KERNEL, 1, &l.stride)))
        return st;
    if ((st = get_int(p, CONV_PAD, 0, 1, 0, &pad))) return st;
    /* padding=N wins over pad=1 (see docs/cfg.md: Darknet does the
     * opposite, so a cfg giving both with different results is rare). */
    if ((st = get_int(p, CONV_PADDING, 0, EML_CFG_MAX_KERNEL,
                      pad ? l.size / 2 : 0, &l.padding)))
        return st;
    if ((st = get_act(p, CONV_ACTIVATION, EML_ACT_LOGISTIC, &l.activation)))
        return st;
    if ((st = get_int(p, CONV_BATCH_NORMALIZE, 0, 1, 0, &l.batch_normalize)))
        return st;
    if ((st = get_int(p, CONV_GROUPS, 1, EML_CFG_MAX_CHANNELS, 1, &groups)))
        return st;
    if ((st = only_value(p, CONV_GROUPS, groups, 1,
                         "no grouped convolution")))
        return st;
    return push_layer(p, &l);
}

static eml_status resolve_connected(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;

    if ((st = need(p, FC_OUTPUT))) return st;
    if ((st = get_int(p, FC_OUTPUT, 1, EML_CFG_MAX_CHANNELS, 0, &l.output)))
        return st;
    if ((st = get_act(p, FC_ACTIVATION, EML_ACT_LOGISTIC, &l.activation)))
        return st;
    if ((st = no_batchnorm(p, FC_BATCH_NORMALIZE))) return st;
    return push_layer(p, &l);
}

static eml_status resolve_maxpool(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;

    /* Darknet: stride defaults to 1, size to stride, padding to size-1. */
    if ((st = get_int(p, POOL_STRIDE, 1, EML_CFG_MAX_KERNEL, 1, &l.stride)))
        return st;
    if ((st = get_int(p, POOL_SIZE, 1, EML_CFG_MAX_KERNEL, l.stride,
                      &l.size)))
        return st;
    if ((st = get_int(p, POOL_PADDING, 0, EML_CFG_MAX_KERNEL, l.size - 1,
                      &l.padding)))
        return st;
    return push_layer(p, &l);
}

static eml_status resolve_avgpool(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;

    if ((st = get_int(p, POOL_SIZE, 0, EML_CFG_MAX_KERNEL, 0, &l.size)))
        return st;
    if (l.size == 0) {
        /* Global pooling: a window key would be ignored, so refuse it. */
        if ((st = only_with(p, POOL_STRIDE, 0, "size > 0 (size=0 is global)")))
            return st;
        if ((st = only_with(p, POOL_PADDING, 0,
                            "size > 0 (size=0 is global)")))
            return st;
        l.stride = 1;
        l.padding = 0;
        return push_layer(p, &l);
    }
    if ((st = get_int(p, POOL_STRIDE, 1, EML_CFG_MAX_KERNEL, l.size,
                      &l.stride)))
        return st;
    if ((st = get_int(p, POOL_PADDING, 0, EML_CFG_MAX_KERNEL, 0, &l.padding)))
        return st;
    return push_layer(p, &l);
}

static eml_status resolve_dropout(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;

    if ((st = get_float(p, DROP_PROBABILITY, 0.5f, &l.probability)))
        return st;
    if (!(l.probability >= 0.0f && l.probability < 1.0f))
        return bad_value(p, DROP_PROBABILITY, "must be in [0, 1)");
    return push_layer(p, &l);
}

static eml_status resolve_softmax(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    int groups = 1;
    float temperature = 1.0f;

    if ((st = get_int(p, SOFT_GROUPS, 1, EML_CFG_MAX_CHANNELS, 1, &groups)))
        return st;
    l.groups = groups; /* the net checks that they divide its input */
    if ((st = get_float(p, SOFT_TEMPERATURE, 1.0f, &temperature))) return st;
    if (!(temperature >= 1e-3f && temperature <= 1e3f))
        return bad_value(p, SOFT_TEMPERATURE, "must be in [0.001, 1000]");
    l.scale = temperature; /* softmax(x / temperature), as Darknet */
    return push_layer(p, &l);
}

/* A fixed feature extractor: only as the first layer (nothing before it
 * could be trained through it). */
static eml_status resolve_scattering(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    if (p->cfg->n_layers != 0)
        return eml_cfg_fail(p, EML_ERR_FORMAT, p->sec_line,
                            "[scattering] must be the first layer");
    if ((st = get_int(p, SCAT_SCALES, 1, 3, 2, &l.scales))) return st;
    if ((st = get_int(p, SCAT_ANGLES, 1, 16, 8, &l.angles))) return st;
    if ((st = get_int(p, SCAT_GROUPS, 0, EML_CFG_MAX_CHANNELS, 0, &l.groups)))
        return st;
    int k = 1 + l.scales * l.angles +
            l.angles * l.angles * l.scales * (l.scales - 1) / 2;
    if (l.groups > 0 && k % l.groups != 0) {
        echo_buf e;
        return eml_cfg_fail(
            p, EML_ERR_RANGE, p->slots[SCAT_GROUPS].line,
            "[scattering] groups=%s must divide the %d channels",
            eml_cfg_echo(&e, p->slots[SCAT_GROUPS].v), k);
    }
    return push_layer(p, &l);
}
