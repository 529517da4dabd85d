/*
 * cfg_darknet.c - the sections of Darknet's own network files beyond the
 * plain chain of cfg_sections.c: [shortcut] (a residual sum), [route]
 * (earlier layers' outputs, concatenated), [upsample] and [cost]; and the
 * detection heads Darknet knows and enclaveml refuses by name ([yolo],
 * [region], [detection]), at their header line.
 *
 * Layer references (`from`, `layers`) are resolved here to absolute
 * indices: a negative value counts back from this layer, as in Darknet.
 * Shapes are checked by the net (eml_net_new).  Trusted code fed hostile
 * bytes: no I/O, no printing, no exit.  See docs/cfg.md.
 */
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_internal.h"

enum { SC_FROM, SC_ACTIVATION, SC_ALPHA, SC_BETA, SC_N_KEYS };
static const char *const shortcut_keys[SC_N_KEYS] = {"from", "activation",
                                                     "alpha", "beta"};
enum { RT_LAYERS, RT_N_KEYS };
static const char *const route_keys[RT_N_KEYS] = {"layers"};
enum { UP_STRIDE, UP_SCALE, UP_N_KEYS };
static const char *const upsample_keys[UP_N_KEYS] = {"stride", "scale"};
enum { COST_TYPE, COST_SCALE, COST_N_KEYS };
static const char *const cost_keys[COST_N_KEYS] = {"type", "scale"};

/* A layer reference: negative counts back from this layer (the index the
 * section is about to get); it must name an earlier layer. */
static eml_status layer_ref(parser *p, int idx, long v, int line, int *out)
{
    int self = p->cfg->n_layers;
    long abs = v < 0 ? self + v : v;
    if (abs < 0 || abs >= self)
        return eml_cfg_fail(p, EML_ERR_RANGE, line,
                            "[%s] %s: %ld names no layer before this one "
                            "(layer %d)",
                            p->sec->name, key_name(p, idx), v, self);
    *out = (int)abs;
    return EML_OK;
}

static eml_status resolve_shortcut(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    int from = 0;
    if ((st = need(p, SC_FROM))) return st;
    if (p->cfg->n_layers == 0)
        return eml_cfg_fail(p, EML_ERR_FORMAT, p->sec_line,
                            "[shortcut] needs a layer before it");
    if ((st = get_int(p, SC_FROM, -EML_CFG_MAX_LAYERS, EML_CFG_MAX_LAYERS, 0,
                      &from)))
        return st;
    if ((st = layer_ref(p, SC_FROM, from, p->slots[SC_FROM].line, &l.from)))
        return st;
    if ((st = get_act(p, SC_ACTIVATION, EML_ACT_LINEAR, &l.activation)))
        return st;
    if ((st = get_float(p, SC_ALPHA, 1.0f, &l.alpha))) return st;
    if ((st = get_float(p, SC_BETA, 1.0f, &l.beta))) return st;
    return push_layer(p, &l);
}

static eml_status route_item(parser *p, int idx, slice v, int i)
{
    long x = 0;
    int line = p->slots[idx].line;
    eml_status st = parse_long(p, v, line, key_name(p, idx), &x);
    if (st != EML_OK) return st;
    if (i >= EML_CFG_MAX_ROUTE)
        return eml_cfg_fail(p, EML_ERR_RANGE, line,
                            "[route] joins at most %d layers",
                            EML_CFG_MAX_ROUTE);
    return layer_ref(p, idx, x, line, &p->route[i]);
}

static eml_status resolve_route(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    int n = 0;
    if ((st = need(p, RT_LAYERS))) return st;
    if ((st = split_list(p, RT_LAYERS, &n, route_item))) return st;
    memcpy(l.route, p->route, sizeof(l.route));
    l.n_route = n;
    return push_layer(p, &l);
}

static eml_status resolve_upsample(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    if ((st = get_int(p, UP_STRIDE, 1, EML_CFG_MAX_KERNEL, 2, &l.stride)))
        return st;
    if ((st = get_float(p, UP_SCALE, 1.0f, &l.scale))) return st;
    if (!(l.scale > 0.0f)) return bad_value(p, UP_SCALE, "must be > 0");
    return push_layer(p, &l);
}

static eml_status resolve_cost(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    const slot *t = &p->slots[COST_TYPE];
    if (t->line != 0 && !eml_cfg_slice_eq(t->v, "sse")) {
        echo_buf e;
        return eml_cfg_fail(p, EML_ERR_UNSUPPORTED, t->line,
                            "[cost] type=%s is not supported (only sse)",
                            eml_cfg_echo(&e, t->v));
    }
    l.cost_type = EML_COST_SSE;
    if ((st = get_float(p, COST_SCALE, 1.0f, &l.scale))) return st;
    if (!(l.scale > 0.0f)) return bad_value(p, COST_SCALE, "must be > 0");
    return push_layer(p, &l);
}

#define HEAD_REFUSED                                                         \
    "detection heads are out of scope; the layers before it load as a "     \
    "backbone (cut the file there)"

const section_def eml_cfg_darknet_sections[] = {
    {"shortcut", EML_LAYER_SHORTCUT, shortcut_keys, SC_N_KEYS,
     resolve_shortcut, NULL},
    {"route", EML_LAYER_ROUTE, route_keys, RT_N_KEYS, resolve_route, NULL},
    {"upsample", EML_LAYER_UPSAMPLE, upsample_keys, UP_N_KEYS,
     resolve_upsample, NULL},
    {"cost", EML_LAYER_COST, cost_keys, COST_N_KEYS, resolve_cost, NULL},
    {"yolo", 0, NULL, 0, NULL, HEAD_REFUSED},
    {"region", 0, NULL, 0, NULL, HEAD_REFUSED},
    {"detection", 0, NULL, 0, NULL, HEAD_REFUSED},
};
const int eml_cfg_darknet_n_sections =
    (int)(sizeof(eml_cfg_darknet_sections) /
          sizeof(eml_cfg_darknet_sections[0]));
