/*
 * cfg_values.c - reading a section's recorded values for the resolvers of
 * cfg_sections.c and cfg_darknet.c: numbers, ranges, defaults, words,
 * comma lists, and appending a layer.  Every error is one sentence
 * starting "<file>:<line>: " naming the key at fault.
 *
 * Trusted code fed hostile bytes: no I/O, no printing, no exit.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_internal.h"
const char *eml_cfg_key_name(const parser *p, int idx)
{
    return p->sec->keys[idx];
}

int eml_cfg_given(const parser *p, int idx)
{
    return p->slots[idx].line != 0;
}

/* Copies a number token into buf as a C string for strtol/strtod. */
eml_status eml_cfg_num_copy(parser *p, slice v, int line, const char *key,
                           const char *what, char buf[CFG_NUM_MAX + 1])
{
    if (v.n == 0 || v.n > CFG_NUM_MAX) {
        echo_buf e;
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "[%s] '%s' expects %s, found '%s'", p->sec->name,
                            key, what, eml_cfg_echo(&e, v));
    }
    memcpy(buf, v.p, v.n);
    buf[v.n] = '\0';
    return EML_OK;
}

eml_status eml_cfg_parse_long(parser *p, slice v, int line, const char *key,
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
    if (end == buf || *end != '\0' || eml_cfg_is_blank(buf[0])) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "[%s] '%s' expects an integer, found '%s'",
                            p->sec->name, key, eml_cfg_echo(&e, v));
    }
    if (errno == ERANGE) {
        return eml_cfg_fail(p, EML_ERR_RANGE, line,
                            "[%s] %s=%s is out of range", p->sec->name, key,
                            eml_cfg_echo(&e, v));
    }
    *out = x;
    return EML_OK;
}

eml_status eml_cfg_parse_float(parser *p, slice v, int line, const char *key,
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
    if (end == buf || *end != '\0' || eml_cfg_is_blank(buf[0])) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "[%s] '%s' expects a number, found '%s'",
                            p->sec->name, key, eml_cfg_echo(&e, v));
    }
    if (!isfinite(d) || fabs(d) > FLT_MAX) {
        return eml_cfg_fail(p, EML_ERR_RANGE, line,
                            "[%s] %s=%s is not a finite number", p->sec->name,
                            key, eml_cfg_echo(&e, v));
    }
    *out = (float)d;
    return EML_OK;
}

eml_status eml_cfg_need(parser *p, int idx)
{
    if (given(p, idx)) return EML_OK;
    return eml_cfg_fail(p, EML_ERR_FORMAT, p->sec_line,
                        "[%s] is missing required key '%s'", p->sec->name,
                        key_name(p, idx));
}

/* The integer value of key idx in [lo, hi], or def when not given. */
eml_status eml_cfg_get_int(parser *p, int idx, long lo, long hi, long def,
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
        return eml_cfg_fail(p, EML_ERR_RANGE, s->line,
                            "[%s] %s=%ld is out of range (%ld..%ld)",
                            p->sec->name, key_name(p, idx), x, lo, hi);
    }
    *out = (int)x;
    return EML_OK;
}

eml_status eml_cfg_get_float(parser *p, int idx, float def, float *out)
{
    const slot *s = &p->slots[idx];
    if (s->line == 0) {
        *out = def;
        return EML_OK;
    }
    return parse_float(p, s->v, s->line, key_name(p, idx), out);
}

/* Error for a given float key whose value breaks `rule`. */
eml_status eml_cfg_bad_value(parser *p, int idx, const char *rule)
{
    echo_buf e;
    const slot *s = &p->slots[idx];
    return eml_cfg_fail(p, EML_ERR_RANGE, s->line, "[%s] %s=%s %s",
                        p->sec->name, key_name(p, idx), eml_cfg_echo(&e, s->v),
                        rule);
}

/* A key that is only accepted with one value (features we lack). */
eml_status eml_cfg_only_value(parser *p, int idx, int value, int allowed,
                             const char *why)
{
    if (value == allowed) return EML_OK;
    return eml_cfg_fail(p, EML_ERR_UNSUPPORTED, p->slots[idx].line,
                        "[%s] %s=%d is not supported (%s)", p->sec->name,
                        key_name(p, idx), value, why);
}

/* A key that would be silently ignored is an error, like an unknown key. */
eml_status eml_cfg_only_with(parser *p, int idx, int ok, const char *cond)
{
    if (!given(p, idx) || ok) return EML_OK;
    return eml_cfg_fail(p, EML_ERR_FORMAT, p->slots[idx].line,
                        "[%s] '%s' applies only with %s", p->sec->name,
                        key_name(p, idx), cond);
}

eml_status eml_cfg_get_act(parser *p, int idx, eml_act def, eml_act *out)
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
    return eml_cfg_fail(p, EML_ERR_FORMAT, s->line,
                        "[%s] unknown activation '%s' (allowed: " ACT_ALLOWED
                        ")",
                        p->sec->name, eml_cfg_echo(&e, s->v));
}

/* Splits a comma list; calls item() on each trimmed element.  Empty
 * elements and more than EML_CFG_MAX_STEPS of them are errors. */
eml_status eml_cfg_split_list(parser *p, int idx, int *count,
                             eml_status (*item)(parser *p, int idx, slice v,
                                                int i))
{
    const slot *s = &p->slots[idx];
    slice rest = s->v;
    int n = 0;
    for (;;) {
        const char *comma = memchr(rest.p, ',', rest.n);
        size_t len = comma ? (size_t)(comma - rest.p) : rest.n;
        slice v = eml_cfg_trim((slice){rest.p, len});
        if (v.n == 0) {
            return eml_cfg_fail(p, EML_ERR_FORMAT, s->line,
                                "[%s] '%s' has an empty element", p->sec->name,
                                key_name(p, idx));
        }
        if (n == EML_CFG_MAX_STEPS) {
            return eml_cfg_fail(p, EML_ERR_RANGE, s->line,
                                "[%s] '%s' has more than %d elements",
                                p->sec->name, key_name(p, idx),
                                EML_CFG_MAX_STEPS);
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

eml_status eml_cfg_push_layer(parser *p, const eml_layer_cfg *l)
{
    eml_netcfg *c = p->cfg;
    /* begin_section() already refused a layer past EML_CFG_MAX_LAYERS. */
    if (c->n_layers == p->cap_layers) {
        int cap = p->cap_layers ? 2 * p->cap_layers : 8;
        if (cap > EML_CFG_MAX_LAYERS) cap = EML_CFG_MAX_LAYERS;
        eml_layer_cfg *grown =
            realloc(c->layers, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            return eml_cfg_fail(p, EML_ERR_NOMEM, p->sec_line,
                                "out of memory for %d layers", cap);
        }
        c->layers = grown;
        p->cap_layers = cap;
    }
    c->layers[c->n_layers++] = *l;
    return EML_OK;
}

eml_layer_cfg eml_cfg_new_layer(const parser *p)
{
    eml_layer_cfg l;
    memset(&l, 0, sizeof(l));
    l.type = (eml_layer_type)p->sec->type;
    l.line = p->sec_line;
    l.activation = EML_ACT_LINEAR;
    return l;
}
