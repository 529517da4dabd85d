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
 * section ends, the resolver for its type (cfg_sections.c, which holds
 * every section's keys and rules) parses the recorded values, applies
 * Darknet's defaults and checks ranges.  This file is the line and
 * section reader, the names of layer types and activations, and the entry
 * point.  See docs/cfg.md.
 */
#include "enclaveml/cfg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/cfg_internal.h"

/* A 256-layer cfg is a few KiB; the cap also keeps line numbers in int. */
#define CFG_MAX_BYTES ((size_t)16 << 20)

#define SECTIONS_ALLOWED                                                      \
    "net, network, convolutional, conv, connected, conn, maxpool, max, "     \
    "avgpool, avg, dropout, softmax, soft, scattering, shortcut, route, "    \
    "upsample, cost"

/* ==== names ==== */

static const char *const layer_type_names[EML_LAYER_COUNT] = {
    "connected", "convolutional", "maxpool", "avgpool", "dropout", "softmax",
    "scattering", "shortcut", "route", "upsample", "cost",
};
_Static_assert(sizeof(layer_type_names) / sizeof(layer_type_names[0]) ==
                   EML_LAYER_COUNT,
               "layer_type_names out of step with eml_layer_type");

static const char *const act_names[EML_ACT_COUNT] = {
    "linear", "relu", "leaky", "tanh", "logistic", "relie", "ramp", "plse",
    "elu", "loggy", "stair", "hardtan", "lhtan", "selu",
};
_Static_assert(sizeof(act_names) / sizeof(act_names[0]) == EML_ACT_COUNT,
               "act_names out of step with eml_act");

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

/* ==== slices and messages ==== */

int eml_cfg_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

slice eml_cfg_trim(slice s)
{
    while (s.n > 0 && eml_cfg_is_blank(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && eml_cfg_is_blank(s.p[s.n - 1])) s.n--;
    return s;
}

int eml_cfg_slice_eq(slice s, const char *word)
{
    size_t n = strlen(word);
    return s.n == n && memcmp(s.p, word, n) == 0;
}

const char *eml_cfg_echo(echo_buf *b, slice s)
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

eml_status eml_cfg_fail(parser *p, eml_status st, int line, const char *fmt,
                        ...)
{
    char msg[sizeof(((eml_err *)0)->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return eml_err_set(p->err, st, "%s:%d: %s", p->file, line, msg);
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
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "unterminated section header '%s'",
                            eml_cfg_echo(&e, ln));
    }
    if (close != ln.p + ln.n - 1) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "junk after section header '%s'",
                            eml_cfg_echo(&e, ln));
    }
    slice name = eml_cfg_trim((slice){ln.p + 1, (size_t)(close - ln.p - 1)});
    const section_def *def = eml_cfg_section_find(name);
    if (def == NULL) {
        return eml_cfg_fail(
            p, EML_ERR_FORMAT, line,
            "unknown section '[%s]' (supported: " SECTIONS_ALLOWED ")",
            eml_cfg_echo(&e, name));
    }

    if (def->refused != NULL)
        return eml_cfg_fail(p, EML_ERR_UNSUPPORTED, line,
                            "[%s] is not supported: %s", def->name,
                            def->refused);
    eml_status st = end_section(p);
    if (st != EML_OK) return st;

    if (def->type == SECT_NET && p->n_sections != 0) {
        return eml_cfg_fail(
            p, EML_ERR_FORMAT, line,
            "[%s] must be the first section and appear only once", def->name);
    }
    if (def->type != SECT_NET && p->n_sections == 0) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "the first section must be [net], found [%s]",
                            def->name);
    }
    if (def->type != SECT_NET && p->cfg->n_layers == EML_CFG_MAX_LAYERS) {
        return eml_cfg_fail(p, EML_ERR_RANGE, line, "more than %d layers",
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
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "expected 'key=value' or '[section]', found '%s'",
                            eml_cfg_echo(&e, ln));
    }
    slice key = eml_cfg_trim((slice){ln.p, (size_t)(eq - ln.p)});
    slice val = eml_cfg_trim((slice){eq + 1, ln.n - (size_t)(eq - ln.p) - 1});
    if (key.n == 0) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "missing key name before '='");
    }
    if (p->sec == NULL) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "key '%s' before any [section]",
                            eml_cfg_echo(&e, key));
    }
    int idx = -1;
    for (int i = 0; i < p->sec->n_keys; i++) {
        if (eml_cfg_slice_eq(key, p->sec->keys[i])) {
            idx = i;
            break;
        }
    }
    if (idx < 0) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "unknown key '%s' in [%s]", eml_cfg_echo(&e, key),
                            p->sec->name);
    }
    if (p->slots[idx].line != 0) {
        return eml_cfg_fail(
            p, EML_ERR_FORMAT, line,
            "duplicate key '%s' in [%s] (first set on line %d)",
            p->sec->keys[idx], p->sec->name, p->slots[idx].line);
    }
    if (val.n == 0) {
        return eml_cfg_fail(p, EML_ERR_FORMAT, line,
                            "empty value for '%s' in [%s]", p->sec->keys[idx],
                            p->sec->name);
    }
    p->slots[idx].v = val;
    p->slots[idx].line = line;
    return EML_OK;
}

static eml_status parse_line(parser *p, slice ln, int line)
{
    ln = eml_cfg_trim(ln);
    if (ln.n == 0 || ln.p[0] == '#' || ln.p[0] == ';') return EML_OK;
    /* '#' also starts a comment after a value; no accepted value has one. */
    const char *hash = memchr(ln.p, '#', ln.n);
    if (hash != NULL) ln = eml_cfg_trim((slice){ln.p, (size_t)(hash - ln.p)});
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
        return eml_cfg_fail(&p, EML_ERR_RANGE, 1,
                            "cfg is too large (%zu bytes, "
                            "limit %zu)",
                            len, CFG_MAX_BYTES);
    }
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul != NULL) {
        int line = 1;
        for (const char *q = text; q < nul; q++) line += *q == '\n';
        return eml_cfg_fail(&p, EML_ERR_FORMAT, line,
                            "NUL byte in cfg text (not a text file?)");
    }

    p.cfg = calloc(1, sizeof(*p.cfg));
    if (p.cfg == NULL)
        return eml_cfg_fail(&p, EML_ERR_NOMEM, 1, "out of memory");

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
        st = eml_cfg_fail(&p, EML_ERR_FORMAT, line,
                          "empty cfg: no [net] section");
        goto out;
    }
    if (p.cfg->n_layers == 0) {
        st = eml_cfg_fail(&p, EML_ERR_FORMAT, line, "no layers after [net]");
        goto out;
    }
    *out = p.cfg;
    p.cfg = NULL;
out:
    eml_cfg_free(p.cfg);
    return st;
}
