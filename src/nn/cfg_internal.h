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
#define CFG_MAX_KEYS 19 /* the most keys of any section ([net]'s) */

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

#endif
