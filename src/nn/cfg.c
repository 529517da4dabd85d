/*
 * cfg.c - parser for Darknet-style .cfg network descriptions.
 *
 * Trusted code fed hostile bytes.  It reads only the (text, len) buffer it
 * is given, which need not be NUL-terminated; it never does I/O, never
 * prints, never exits and keeps no global state.  Every error is one
 * sentence starting "<file>:<line>: ".  Bytes of the input echoed into a
 * message are cut short and control / non-ASCII bytes are replaced by '?',
 * because the CLI prints messages to a terminal.
 *
 * Ownership: eml_cfg_parse() returns one malloc'd eml_netcfg that owns its
 * layers array; eml_cfg_free() releases both.  On error *out is NULL and
 * nothing is left allocated.
 *
 * How it works: one pass over the lines.  A key=value line is only recorded,
 * as a slice of the input, in a slot table indexed by the current section's
 * known keys; that catches unknown and duplicate keys on the spot.  When a
 * section ends, the resolver for its type parses the recorded values,
 * applies Darknet's defaults and checks ranges.  See docs/cfg.md.
 */
#include "enclaveml/cfg.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A 256-layer cfg is a few KiB; the cap also keeps line numbers in int. */
#define CFG_MAX_BYTES ((size_t)16 << 20)
#define CFG_NUM_MAX 64   /* longest accepted number or word */
#define CFG_ECHO_MAX 40  /* longest excerpt of the input in a message */
#define CFG_MAX_EPOCHS 100000
#define CFG_MAX_MAX_BATCHES 1000000000L

#define SECT_NET (-1)

/* ==== names ==== */

static const char *const layer_type_names[EML_LAYER_COUNT] = {
    "connected", "convolutional", "maxpool", "avgpool", "dropout", "softmax",
    "scattering",
};
_Static_assert(sizeof(layer_type_names) / sizeof(layer_type_names[0]) ==
                   EML_LAYER_COUNT,
               "layer_type_names out of step with eml_layer_type");

static const char *const act_names[EML_ACT_COUNT] = {
    "linear", "relu", "leaky", "tanh", "logistic",
};
_Static_assert(sizeof(act_names) / sizeof(act_names[0]) == EML_ACT_COUNT,
               "act_names out of step with eml_act");

#define ACT_ALLOWED "linear, relu, leaky, tanh, logistic"
#define SECTIONS_ALLOWED                                                      \
    "net, network, convolutional, conv, connected, maxpool, avgpool, "        \
    "dropout, softmax, scattering"

const char *eml_layer_type_name(eml_layer_type t)
{
    if ((int)t < 0 || (int)t >= EML_LAYER_COUNT) return "unknown";
    return layer_type_names[t];
}

const char *eml_act_name(eml_act a)
{
    if ((int)a < 0 || (int)a >= EML_ACT_COUNT) return "unknown";
    return act_names[a];
}

eml_status eml_act_parse(const char *name, eml_act *out)
{
    if (name == NULL || out == NULL) return EML_ERR_INVALID;
    for (int i = 0; i < EML_ACT_COUNT; i++) {
        if (strcmp(name, act_names[i]) == 0) {
            *out = (eml_act)i;
            return EML_OK;
        }
    }
    return EML_ERR_INVALID;
}

void eml_cfg_free(eml_netcfg *cfg)
{
    if (cfg == NULL) return;
    free(cfg->layers);
    free(cfg);
}

/* ==== keys of each section ==== */

enum {
    NET_BATCH, NET_SUBDIVISIONS, NET_HEIGHT, NET_WIDTH, NET_CHANNELS,
    NET_LEARNING_RATE, NET_MOMENTUM, NET_DECAY, NET_ADAM, NET_B1, NET_B2,
    NET_EPS, NET_POLICY, NET_STEPS, NET_SCALES, NET_LR_MIN, NET_EPOCHS,
    NET_MAX_BATCHES, NET_EMA, NET_N_KEYS
};
static const char *const net_keys[NET_N_KEYS] = {
    "batch", "subdivisions", "height", "width", "channels",
    "learning_rate", "momentum", "decay", "adam", "B1", "B2",
    "eps", "policy", "steps", "scales", "lr_min", "epochs",
    "max_batches", "ema",
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

#define MAX_KEYS ((int)NET_N_KEYS)
_Static_assert((int)CONV_N_KEYS <= MAX_KEYS && (int)FC_N_KEYS <= MAX_KEYS &&
                   (int)POOL_N_KEYS <= MAX_KEYS &&
                   (int)DROP_N_KEYS <= MAX_KEYS &&
                   (int)SOFT_N_KEYS <= MAX_KEYS &&
                   (int)SCAT_N_KEYS <= MAX_KEYS,
               "MAX_KEYS must cover every section");

/* ==== parser state ==== */

typedef struct slice {
    const char *p;
    size_t n;
} slice;

typedef struct slot {
    slice v;  /* trimmed value, a view into the input */
    int line; /* 0 = key not given */
} slot;

typedef struct parser parser;

typedef struct section_def {
    const char *name; /* as written between the brackets */
    int type;         /* eml_layer_type, or SECT_NET */
    const char *const *keys;
    int n_keys;
    eml_status (*resolve)(parser *p);
} section_def;

struct parser {
    const char *file;
    eml_err *err;
    eml_netcfg *cfg;
    int cap_layers;
    int n_sections;         /* sections seen so far, [net] included */
    const section_def *sec; /* current section, NULL before the first */
    int sec_line;           /* line of its [header] */
    slot slots[MAX_KEYS];   /* indexed like sec->keys */
};

static eml_status resolve_net(parser *p);
static eml_status resolve_conv(parser *p);
static eml_status resolve_connected(parser *p);
static eml_status resolve_maxpool(parser *p);
static eml_status resolve_avgpool(parser *p);
static eml_status resolve_dropout(parser *p);
static eml_status resolve_softmax(parser *p);
static eml_status resolve_scattering(parser *p);

static const section_def sections[] = {
    {"net", SECT_NET, net_keys, NET_N_KEYS, resolve_net},
    {"network", SECT_NET, net_keys, NET_N_KEYS, resolve_net},
    {"convolutional", EML_LAYER_CONVOLUTIONAL, conv_keys, CONV_N_KEYS,
     resolve_conv},
    {"conv", EML_LAYER_CONVOLUTIONAL, conv_keys, CONV_N_KEYS, resolve_conv},
    {"connected", EML_LAYER_CONNECTED, fc_keys, FC_N_KEYS, resolve_connected},
    {"maxpool", EML_LAYER_MAXPOOL, pool_keys, POOL_N_KEYS, resolve_maxpool},
    {"avgpool", EML_LAYER_AVGPOOL, pool_keys, POOL_N_KEYS, resolve_avgpool},
    {"dropout", EML_LAYER_DROPOUT, drop_keys, DROP_N_KEYS, resolve_dropout},
    {"softmax", EML_LAYER_SOFTMAX, soft_keys, SOFT_N_KEYS, resolve_softmax},
    {"scattering", EML_LAYER_SCATTERING, scat_keys, SCAT_N_KEYS,
     resolve_scattering},
};
#define N_SECTIONS ((int)(sizeof(sections) / sizeof(sections[0])))

/* ==== small helpers ==== */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static slice trim(slice s)
{
    while (s.n > 0 && is_blank(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_blank(s.p[s.n - 1])) s.n--;
    return s;
}

static int slice_eq(slice s, const char *word)
{
    size_t n = strlen(word);
    return s.n == n && memcmp(s.p, word, n) == 0;
}

/* A printable excerpt of untrusted bytes for a message. */
typedef struct echo_buf {
    char s[CFG_ECHO_MAX + 4];
} echo_buf;

static const char *echo(echo_buf *b, slice s)
{
    size_t n = s.n > CFG_ECHO_MAX ? CFG_ECHO_MAX : s.n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        b->s[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n < s.n) {
        memcpy(b->s + n, "...", 4);
    } else {
        b->s[n] = '\0';
    }
    return b->s;
}

/* Formats "<file>:<line>: <message>" into p->err and returns st. */
static eml_status fail(parser *p, eml_status st, int line, const char *fmt,
                       ...) EML_PRINTF(4, 5);

static eml_status fail(parser *p, eml_status st, int line, const char *fmt,
                       ...)
{
    char msg[sizeof(((eml_err *)0)->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return eml_err_set(p->err, st, "%s:%d: %s", p->file, line, msg);
}

static const char *key_name(const parser *p, int idx)
{
    return p->sec->keys[idx];
}

static int given(const parser *p, int idx)
{
    return p->slots[idx].line != 0;
}

/* ==== values ==== */

/* Copies a number token into buf as a C string for strtol/strtod. */
static eml_status num_copy(parser *p, slice v, int line, const char *key,
                           const char *what, char buf[CFG_NUM_MAX + 1])
{
    if (v.n == 0 || v.n > CFG_NUM_MAX) {
        echo_buf e;
        return fail(p, EML_ERR_FORMAT, line,
                    "[%s] '%s' expects %s, found '%s'", p->sec->name, key,
                    what, echo(&e, v));
    }
    memcpy(buf, v.p, v.n);
    buf[v.n] = '\0';
    return EML_OK;
}

static eml_status parse_long(parser *p, slice v, int line, const char *key,
                             long *out)
{
    char buf[CFG_NUM_MAX + 1];
    eml_status st = num_copy(p, v, line, key, "an integer", buf);
    if (st != EML_OK) return st;
    echo_buf e;
    /* strtol skips leading blanks and takes a sign; tokens are trimmed, so
     * only a sign can get through, which is fine. */
    char *end = NULL;
    errno = 0;
    long x = strtol(buf, &end, 10);
    if (end == buf || *end != '\0' || is_blank(buf[0])) {
        return fail(p, EML_ERR_FORMAT, line,
                    "[%s] '%s' expects an integer, found '%s'", p->sec->name,
                    key, echo(&e, v));
    }
    if (errno == ERANGE) {
        return fail(p, EML_ERR_RANGE, line, "[%s] %s=%s is out of range",
                    p->sec->name, key, echo(&e, v));
    }
    *out = x;
    return EML_OK;
}

static eml_status parse_float(parser *p, slice v, int line, const char *key,
                              float *out)
{
    char buf[CFG_NUM_MAX + 1];
    eml_status st = num_copy(p, v, line, key, "a number", buf);
    if (st != EML_OK) return st;
    echo_buf e;
    char *end = NULL;
    /* Underflow (ERANGE with a tiny result) is harmless; overflow gives
     * HUGE_VAL and is caught as non-finite below. */
    double d = strtod(buf, &end);
    if (end == buf || *end != '\0' || is_blank(buf[0])) {
        return fail(p, EML_ERR_FORMAT, line,
                    "[%s] '%s' expects a number, found '%s'", p->sec->name,
                    key, echo(&e, v));
    }
    if (!isfinite(d) || fabs(d) > FLT_MAX) {
        return fail(p, EML_ERR_RANGE, line,
                    "[%s] %s=%s is not a finite number", p->sec->name, key,
                    echo(&e, v));
    }
    *out = (float)d;
    return EML_OK;
}

static eml_status need(parser *p, int idx)
{
    if (given(p, idx)) return EML_OK;
    return fail(p, EML_ERR_FORMAT, p->sec_line,
                "[%s] is missing required key '%s'", p->sec->name,
                key_name(p, idx));
}

/* The integer value of key idx in [lo, hi], or def when not given. */
static eml_status get_int(parser *p, int idx, long lo, long hi, long def,
                          int *out)
{
    const slot *s = &p->slots[idx];
    if (s->line == 0) {
        *out = (int)def;
        return EML_OK;
    }
    long x = 0;
    eml_status st = parse_long(p, s->v, s->line, key_name(p, idx), &x);
    if (st != EML_OK) return st;
    if (x < lo || x > hi) {
        return fail(p, EML_ERR_RANGE, s->line,
                    "[%s] %s=%ld is out of range (%ld..%ld)", p->sec->name,
                    key_name(p, idx), x, lo, hi);
    }
    *out = (int)x;
    return EML_OK;
}

static eml_status get_float(parser *p, int idx, float def, float *out)
{
    const slot *s = &p->slots[idx];
    if (s->line == 0) {
        *out = def;
        return EML_OK;
    }
    return parse_float(p, s->v, s->line, key_name(p, idx), out);
}

/* Error for a given float key whose value breaks `rule`. */
static eml_status bad_value(parser *p, int idx, const char *rule)
{
    echo_buf e;
    const slot *s = &p->slots[idx];
    return fail(p, EML_ERR_RANGE, s->line, "[%s] %s=%s %s", p->sec->name,
                key_name(p, idx), echo(&e, s->v), rule);
}

/* A key that is only accepted with one value (features we lack). */
static eml_status only_value(parser *p, int idx, int value, int allowed,
                             const char *why)
{
    if (value == allowed) return EML_OK;
    return fail(p, EML_ERR_UNSUPPORTED, p->slots[idx].line,
                "[%s] %s=%d is not supported (%s)", p->sec->name,
                key_name(p, idx), value, why);
}

/* A key that would be silently ignored is an error, like an unknown key. */
static eml_status only_with(parser *p, int idx, int ok, const char *cond)
{
    if (!given(p, idx) || ok) return EML_OK;
    return fail(p, EML_ERR_FORMAT, p->slots[idx].line,
                "[%s] '%s' applies only with %s", p->sec->name,
                key_name(p, idx), cond);
}

static eml_status get_act(parser *p, int idx, eml_act def, eml_act *out)
{
    const slot *s = &p->slots[idx];
    if (s->line == 0) {
        *out = def;
        return EML_OK;
    }
    char buf[CFG_NUM_MAX + 1];
    if (s->v.n <= CFG_NUM_MAX) {
        memcpy(buf, s->v.p, s->v.n);
        buf[s->v.n] = '\0';
        if (eml_act_parse(buf, out) == EML_OK) return EML_OK;
    }
    echo_buf e;
    return fail(p, EML_ERR_FORMAT, s->line,
                "[%s] unknown activation '%s' (allowed: " ACT_ALLOWED ")",
                p->sec->name, echo(&e, s->v));
}

/* Splits a comma list; calls item() on each trimmed element.  Empty
 * elements and more than EML_CFG_MAX_STEPS of them are errors. */
static eml_status split_list(parser *p, int idx, int *count,
                             eml_status (*item)(parser *p, int idx, slice v,
                                                int i))
{
    const slot *s = &p->slots[idx];
    slice rest = s->v;
    int n = 0;
    for (;;) {
        const char *comma = memchr(rest.p, ',', rest.n);
        size_t len = comma ? (size_t)(comma - rest.p) : rest.n;
        slice v = trim((slice){rest.p, len});
        if (v.n == 0) {
            return fail(p, EML_ERR_FORMAT, s->line,
                        "[%s] '%s' has an empty element", p->sec->name,
                        key_name(p, idx));
        }
        if (n == EML_CFG_MAX_STEPS) {
            return fail(p, EML_ERR_RANGE, s->line,
                        "[%s] '%s' has more than %d elements", p->sec->name,
                        key_name(p, idx), EML_CFG_MAX_STEPS);
        }
        eml_status st = item(p, idx, v, n);
        if (st != EML_OK) return st;
        n++;
        if (comma == NULL) break;
        rest.p = comma + 1;
        rest.n -= len + 1;
    }
    *count = n;
    return EML_OK;
}

static eml_status step_item(parser *p, int idx, slice v, int i)
{
    const slot *s = &p->slots[idx];
    long x = 0;
    eml_status st = parse_long(p, v, s->line, key_name(p, idx), &x);
    if (st != EML_OK) return st;
    if (x < 1 || x > INT_MAX) {
        echo_buf e;
        return fail(p, EML_ERR_RANGE, s->line,
                    "[%s] steps: %s is not a positive iteration count",
                    p->sec->name, echo(&e, v));
    }
    if (i > 0 && x <= p->cfg->steps[i - 1]) {
        return fail(p, EML_ERR_RANGE, s->line,
                    "[%s] steps must increase (%d then %ld)", p->sec->name,
                    p->cfg->steps[i - 1], x);
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
        return fail(p, EML_ERR_RANGE, s->line,
                    "[%s] scales: %s must be > 0", p->sec->name,
                    echo(&e, v));
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
        if (slice_eq(s->v, "constant")) {
            c->policy = EML_LR_CONSTANT;
        } else if (slice_eq(s->v, "steps")) {
            c->policy = EML_LR_STEPS;
        } else if (slice_eq(s->v, "cosine")) {
            c->policy = EML_LR_COSINE;
        } else {
            echo_buf e;
            return fail(p, EML_ERR_FORMAT, s->line,
                        "[%s] unknown policy '%s' (allowed: constant, steps, "
                        "cosine)",
                        p->sec->name, echo(&e, s->v));
        }
    }
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
        return fail(p, EML_ERR_FORMAT, p->slots[NET_SCALES].line,
                    "[%s] has %d steps but %d scales", p->sec->name,
                    c->n_steps, n_scales);
    }
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
    if ((st = only_value(p, NET_SUBDIVISIONS, subdivisions, 1,
                         "gradient accumulation; use subdivisions=1")))
        return st;
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
    return get_int(p, NET_MAX_BATCHES, 0, CFG_MAX_MAX_BATCHES, 0,
                   &c->max_batches);
}

static eml_status push_layer(parser *p, const eml_layer_cfg *l)
{
    eml_netcfg *c = p->cfg;
    /* begin_section() already refused a layer past EML_CFG_MAX_LAYERS. */
    if (c->n_layers == p->cap_layers) {
        int cap = p->cap_layers ? 2 * p->cap_layers : 8;
        if (cap > EML_CFG_MAX_LAYERS) cap = EML_CFG_MAX_LAYERS;
        eml_layer_cfg *grown =
            realloc(c->layers, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            return fail(p, EML_ERR_NOMEM, p->sec_line,
                        "out of memory for %d layers", cap);
        }
        c->layers = grown;
        p->cap_layers = cap;
    }
    c->layers[c->n_layers++] = *l;
    return EML_OK;
}

static eml_layer_cfg new_layer(const parser *p)
{
    eml_layer_cfg l;
    memset(&l, 0, sizeof(l));
    l.type = (eml_layer_type)p->sec->type;
    l.line = p->sec_line;
    l.activation = EML_ACT_LINEAR;
    return l;
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
    if ((st = no_batchnorm(p, CONV_BATCH_NORMALIZE))) return st;
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
    if ((st = only_value(p, SOFT_GROUPS, groups, 1, "only groups=1")))
        return st;
    if ((st = get_float(p, SOFT_TEMPERATURE, 1.0f, &temperature))) return st;
    if (temperature != 1.0f) {
        echo_buf e;
        return fail(p, EML_ERR_UNSUPPORTED, p->slots[SOFT_TEMPERATURE].line,
                    "[%s] temperature=%s is not supported (only 1)",
                    p->sec->name,
                    echo(&e, p->slots[SOFT_TEMPERATURE].v));
    }
    return push_layer(p, &l);
}

/* A fixed feature extractor: only as the first layer (nothing before it
 * could be trained through it). */
static eml_status resolve_scattering(parser *p)
{
    eml_layer_cfg l = new_layer(p);
    eml_status st;
    if (p->cfg->n_layers != 0)
        return fail(p, EML_ERR_FORMAT, p->sec_line,
                    "[scattering] must be the first layer");
    if ((st = get_int(p, SCAT_SCALES, 1, 3, 2, &l.scales))) return st;
    if ((st = get_int(p, SCAT_ANGLES, 1, 16, 8, &l.angles))) return st;
    if ((st = get_int(p, SCAT_GROUPS, 0, EML_CFG_MAX_CHANNELS, 0, &l.groups)))
        return st;
    int k = 1 + l.scales * l.angles +
            l.angles * l.angles * l.scales * (l.scales - 1) / 2;
    if (l.groups > 0 && k % l.groups != 0) {
        echo_buf e;
        return fail(p, EML_ERR_RANGE, p->slots[SCAT_GROUPS].line,
                    "[scattering] groups=%s must divide the %d channels",
                    echo(&e, p->slots[SCAT_GROUPS].v), k);
    }
    return push_layer(p, &l);
}

/* ==== lines ==== */

static eml_status end_section(parser *p)
{
    if (p->sec == NULL) return EML_OK;
    eml_status st = p->sec->resolve(p);
    p->sec = NULL;
    return st;
}

static eml_status begin_section(parser *p, slice ln, int line)
{
    echo_buf e;
    const char *close = memchr(ln.p, ']', ln.n);
    if (close == NULL) {
        return fail(p, EML_ERR_FORMAT, line,
                    "unterminated section header '%s'", echo(&e, ln));
    }
    if (close != ln.p + ln.n - 1) {
        return fail(p, EML_ERR_FORMAT, line, "junk after section header '%s'",
                    echo(&e, ln));
    }
    slice name = trim((slice){ln.p + 1, (size_t)(close - ln.p - 1)});
    const section_def *def = NULL;
    for (int i = 0; i < N_SECTIONS; i++) {
        if (slice_eq(name, sections[i].name)) {
            def = &sections[i];
            break;
        }
    }
    if (def == NULL) {
        return fail(p, EML_ERR_FORMAT, line,
                    "unknown section '[%s]' (supported: " SECTIONS_ALLOWED
                    ")",
                    echo(&e, name));
    }

    eml_status st = end_section(p);
    if (st != EML_OK) return st;

    if (def->type == SECT_NET && p->n_sections != 0) {
        return fail(p, EML_ERR_FORMAT, line,
                    "[%s] must be the first section and appear only once",
                    def->name);
    }
    if (def->type != SECT_NET && p->n_sections == 0) {
        return fail(p, EML_ERR_FORMAT, line,
                    "the first section must be [net], found [%s]",
                    def->name);
    }
    if (def->type != SECT_NET && p->cfg->n_layers == EML_CFG_MAX_LAYERS) {
        return fail(p, EML_ERR_RANGE, line, "more than %d layers",
                    EML_CFG_MAX_LAYERS);
    }
    p->sec = def;
    p->sec_line = line;
    p->n_sections++;
    memset(p->slots, 0, sizeof(p->slots));
    return EML_OK;
}

static eml_status key_value(parser *p, slice ln, int line)
{
    echo_buf e;
    const char *eq = memchr(ln.p, '=', ln.n);
    if (eq == NULL) {
        return fail(p, EML_ERR_FORMAT, line,
                    "expected 'key=value' or '[section]', found '%s'",
                    echo(&e, ln));
    }
    slice key = trim((slice){ln.p, (size_t)(eq - ln.p)});
    slice val = trim((slice){eq + 1, ln.n - (size_t)(eq - ln.p) - 1});
    if (key.n == 0) {
        return fail(p, EML_ERR_FORMAT, line, "missing key name before '='");
    }
    if (p->sec == NULL) {
        return fail(p, EML_ERR_FORMAT, line, "key '%s' before any [section]",
                    echo(&e, key));
    }
    int idx = -1;
    for (int i = 0; i < p->sec->n_keys; i++) {
        if (slice_eq(key, p->sec->keys[i])) {
            idx = i;
            break;
        }
    }
    if (idx < 0) {
        return fail(p, EML_ERR_FORMAT, line, "unknown key '%s' in [%s]",
                    echo(&e, key), p->sec->name);
    }
    if (p->slots[idx].line != 0) {
        return fail(p, EML_ERR_FORMAT, line,
                    "duplicate key '%s' in [%s] (first set on line %d)",
                    p->sec->keys[idx], p->sec->name, p->slots[idx].line);
    }
    if (val.n == 0) {
        return fail(p, EML_ERR_FORMAT, line, "empty value for '%s' in [%s]",
                    p->sec->keys[idx], p->sec->name);
    }
    p->slots[idx].v = val;
    p->slots[idx].line = line;
    return EML_OK;
}

static eml_status parse_line(parser *p, slice ln, int line)
{
    ln = trim(ln);
    if (ln.n == 0 || ln.p[0] == '#' || ln.p[0] == ';') return EML_OK;
    /* '#' also starts a comment after a value; no accepted value has one. */
    const char *hash = memchr(ln.p, '#', ln.n);
    if (hash != NULL) ln = trim((slice){ln.p, (size_t)(hash - ln.p)});
    if (ln.p[0] == '[') return begin_section(p, ln, line);
    return key_value(p, ln, line);
}

/* ==== entry point ==== */

eml_status eml_cfg_parse(const char *text, size_t len, const char *filename,
                         eml_netcfg **out, eml_err *err)
{
    if (out == NULL) return EML_ERR_INVALID;
    *out = NULL;
    if (text == NULL && len != 0) return EML_ERR_INVALID;

    parser p;
    memset(&p, 0, sizeof(p));
    p.file = filename != NULL ? filename : "<cfg>";
    p.err = err;

    if (len > CFG_MAX_BYTES) {
        return fail(&p, EML_ERR_RANGE, 1, "cfg is too large (%zu bytes, "
                    "limit %zu)", len, CFG_MAX_BYTES);
    }
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul != NULL) {
        int line = 1;
        for (const char *q = text; q < nul; q++) line += *q == '\n';
        return fail(&p, EML_ERR_FORMAT, line,
                    "NUL byte in cfg text (not a text file?)");
    }

    p.cfg = calloc(1, sizeof(*p.cfg));
    if (p.cfg == NULL) return fail(&p, EML_ERR_NOMEM, 1, "out of memory");

    eml_status st = EML_OK;
    size_t pos = 0;
    int line = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) pos = 3; /* BOM */
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl != NULL ? (size_t)(nl - text) : len;
        line++;
        st = parse_line(&p, (slice){text + pos, end - pos}, line);
        if (st != EML_OK) goto out;
        pos = nl != NULL ? end + 1 : len;
    }
    if (line == 0) line = 1;
    if ((st = end_section(&p)) != EML_OK) goto out;
    if (p.n_sections == 0) {
        st = fail(&p, EML_ERR_FORMAT, line, "empty cfg: no [net] section");
        goto out;
    }
    if (p.cfg->n_layers == 0) {
        st = fail(&p, EML_ERR_FORMAT, line, "no layers after [net]");
        goto out;
    }
    *out = p.cfg;
    p.cfg = NULL;
out:
    eml_cfg_free(p.cfg);
    return st;
}
