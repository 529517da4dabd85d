/*
 * cfg_internal.h - what the two halves of the .cfg parser share (private
 * to src/nn/): the parser's state, the table of section types, and the
 * helpers for slices of the input and for messages.
 *
 * cfg.c reads lines: it finds sections and records each key=value as a
 * slice of the input in a slot table indexed by the section's known keys
 * (catching unknown and duplicate keys on the spot).  cfg_sections.c knows
 * the sections: their keys, and the resolver that, when a section ends,
 * parses its recorded values, applies Darknet's defaults and checks
 * ranges.  Trusted code fed hostile bytes: no I/O, no printing, no exit,
 * no global state.  See docs/cfg.md.
 */
#ifndef EML_CFG_INTERNAL_H
#define EML_CFG_INTERNAL_H

#include <stddef.h>

#include "enclaveml/cfg.h"
#include "enclaveml/status.h"

#define CFG_NUM_MAX 64  /* longest accepted number or word */
#define CFG_ECHO_MAX 40 /* longest excerpt of the input in a message */
#define CFG_MAX_KEYS 36 /* the most keys of any section ([net]'s) */

#define SECT_NET (-1)

/* A view into the input text (not NUL-terminated). */
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
    const char *refused; /* a section Darknet knows and we refuse: why */
} section_def;

struct parser {
    const char *file;
    eml_err *err;
    eml_netcfg *cfg;
    int cap_layers;
    int n_sections;         /* sections seen so far, [net] included */
    const section_def *sec; /* current section, NULL before the first */
    int sec_line;           /* line of its [header] */
    slot slots[CFG_MAX_KEYS]; /* indexed like sec->keys */
    int route[EML_CFG_MAX_ROUTE]; /* a [route]'s layers, while parsed */
};

/* The section named name ("net", "conv", ...), or NULL (cfg_sections.c). */
const section_def *eml_cfg_section_find(slice name);

/* A printable excerpt of untrusted bytes for a message. */
typedef struct echo_buf {
    char s[CFG_ECHO_MAX + 4];
} echo_buf;

/* Space, tab, CR, VT, FF (not LF: lines are split before). */
int eml_cfg_is_blank(char c);
slice eml_cfg_trim(slice s);
int eml_cfg_slice_eq(slice s, const char *word);
/* s cut to CFG_ECHO_MAX bytes with control and non-ASCII bytes as '?'. */
const char *eml_cfg_echo(echo_buf *b, slice s);
/* Formats "<file>:<line>: <message>" into p->err and returns st. */
eml_status eml_cfg_fail(parser *p, eml_status st, int line, const char *fmt,
                        ...) EML_PRINTF(4, 5);

/* ==== cfg_values.c: a section's recorded values ==== */

#define ACT_ALLOWED                                                          \
    "linear, relu, leaky, tanh, logistic, relie, ramp, plse, elu, loggy, "   \
    "stair, hardtan, lhtan, selu"

const char *eml_cfg_key_name(const parser *p, int idx);
int eml_cfg_given(const parser *p, int idx); /* the key was written */
eml_status eml_cfg_num_copy(parser *p, slice v, int line, const char *key,
                            const char *what, char buf[CFG_NUM_MAX + 1]);
eml_status eml_cfg_parse_long(parser *p, slice v, int line, const char *key,
                              long *out);
eml_status eml_cfg_parse_float(parser *p, slice v, int line,
                               const char *key, float *out);
/* Fails unless key idx was given. */
eml_status eml_cfg_need(parser *p, int idx);
/* The integer value of key idx in [lo, hi], or def when not given. */
eml_status eml_cfg_get_int(parser *p, int idx, long lo, long hi, long def,
                           int *out);
eml_status eml_cfg_get_float(parser *p, int idx, float def, float *out);
/* Error for a given float key whose value breaks `rule`. */
eml_status eml_cfg_bad_value(parser *p, int idx, const char *rule);
/* A key that is only accepted with one value (features we lack). */
eml_status eml_cfg_only_value(parser *p, int idx, int value, int allowed,
                              const char *why);
/* A key that would be silently ignored is an error, like an unknown key. */
eml_status eml_cfg_only_with(parser *p, int idx, int ok, const char *cond);
eml_status eml_cfg_get_act(parser *p, int idx, eml_act def, eml_act *out);
/* Splits a comma list; calls item() on each trimmed element.  Empty
 * elements and more than EML_CFG_MAX_STEPS of them are errors. */
eml_status eml_cfg_split_list(parser *p, int idx, int *count,
                              eml_status (*item)(parser *p, int idx,
                                                 slice v, int i));
eml_status eml_cfg_push_layer(parser *p, const eml_layer_cfg *l);
eml_layer_cfg eml_cfg_new_layer(const parser *p);

/* Short names inside the parser's files. */
#define key_name(p, i) eml_cfg_key_name(p, i)
#define given(p, i) eml_cfg_given(p, i)
#define num_copy(...) eml_cfg_num_copy(__VA_ARGS__)
#define parse_long(...) eml_cfg_parse_long(__VA_ARGS__)
#define parse_float(...) eml_cfg_parse_float(__VA_ARGS__)
#define need(p, i) eml_cfg_need(p, i)
#define get_int(...) eml_cfg_get_int(__VA_ARGS__)
#define get_float(...) eml_cfg_get_float(__VA_ARGS__)
#define bad_value(...) eml_cfg_bad_value(__VA_ARGS__)
#define only_value(...) eml_cfg_only_value(__VA_ARGS__)
#define only_with(...) eml_cfg_only_with(__VA_ARGS__)
#define get_act(...) eml_cfg_get_act(__VA_ARGS__)
#define split_list(...) eml_cfg_split_list(__VA_ARGS__)
#define push_layer(p, l) eml_cfg_push_layer(p, l)
#define new_layer(p) eml_cfg_new_layer(p)

/* ==== cfg_darknet.c: Darknet's sections beyond the plain ones ==== */

extern const section_def eml_cfg_darknet_sections[];
extern const int eml_cfg_darknet_n_sections;

#endif
