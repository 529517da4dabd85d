/*
 * formats_internal.h - helpers shared by the format parsers (idx.c,
 * gunzip.c, safetensors*.c, flatjson.c) and their tests and fuzz targets.
 * Not part of the public API: nothing here is exported from the library
 * (hidden visibility), and nothing here does I/O.
 */
#ifndef EML_FORMATS_INTERNAL_H
#define EML_FORMATS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/safetensors.h"
#include "enclaveml/status.h"

/* eml_gunzip with the file name put in front of every error message
 * ("t10k-labels-idx1-ubyte.gz: gzip stream is corrupt (...)"); name may be
 * NULL for no prefix.  eml_gunzip(...) is eml_gunzip_named(..., NULL, ...). */
EML_MUST_CHECK eml_status eml_gunzip_named(const uint8_t *buf, size_t len,
                                           size_t max_out, const char *name,
                                           uint8_t **out, size_t *out_len,
                                           eml_err *err);

/* Overwrites n bytes with zeros in a way the compiler may not drop, for
 * decoded plaintext about to be freed. */
void eml_fmt_wipe(void *p, size_t n);

/* Metadata entries of a parsed file in header order, for tools that must
 * see all of them (the fuzz target re-serializes a parsed file). */
size_t eml_st_meta_count(const eml_st *st);
void eml_st_meta_at(const eml_st *st, size_t i, const char **key,
                    const char **value);

/* ==== the strict JSON reader (flatjson.c) ====
 *
 * A cursor over hostile JSON text, one token at a time, for parsers that
 * walk their own schema (the safetensors header, flat report objects).  It
 * has no generic value parser and does not recurse, so the caller's schema
 * bounds the nesting.  Every function that fails sets one line in r->err,
 * "<what>, byte <pos>: ...", and returns EML_ERR_TRUNCATED where the text
 * ends too early, EML_ERR_FORMAT where it breaks a rule, EML_ERR_RANGE
 * where a number does not fit.  The rules are in flatjson.c.
 *
 *     eml_jreader r;
 *     eml_jreader_init(&r, text, len, "safetensors header", err);
 *     st = eml_jreader_expect(&r, '{', "'{'");
 *     if (!eml_jreader_take(&r, '}')) do {
 *         st = eml_jreader_string(&r, key, sizeof(key), &klen); ...
 *         st = eml_jreader_expect(&r, ':', "':' after a key"); ...
 *         st = eml_jreader_uint(&r, &v); ...
 *     } while ((st = eml_jreader_next(&r, '}', &more)) == EML_OK && more);
 *     if (!eml_jreader_at_end(&r)) ...trailing bytes...
 */
typedef struct eml_jreader {
    const uint8_t *s; /* the text (borrowed) */
    size_t n;         /* its length */
    size_t pos;       /* the next byte to read */
    const char *what; /* names the text in messages */
    eml_err *err;
} eml_jreader;

void eml_jreader_init(eml_jreader *r, const void *text, size_t len,
                      const char *what, eml_err *err);
/* Sets "<what>, byte <pos>: <fmt...>" in r->err; returns st. */
eml_status eml_jreader_fail(eml_jreader *r, eml_status st, const char *fmt,
                            ...) EML_PRINTF(3, 4);
void eml_jreader_ws(eml_jreader *r);
/* The next byte (no whitespace skipped), or -1 at the end. */
int eml_jreader_peek(const eml_jreader *r);
/* The next byte for a message ("']'", "byte 0x07", "the end of the
 * text"), in buf or a constant string. */
const char *eml_jreader_found(const eml_jreader *r, char buf[16]);
/* Skips whitespace; consumes c and returns 1 if c is next, else 0. */
int eml_jreader_take(eml_jreader *r, char c);
/* Skips whitespace, then consumes c or fails naming `what` expected. */
EML_MUST_CHECK eml_status eml_jreader_expect(eml_jreader *r, char c,
                                             const char *what);
/* After a member or element: ',' (*more = 1) or close (*more = 0). */
EML_MUST_CHECK eml_status eml_jreader_next(eml_jreader *r, char close,
                                           int *more);
/* Skips whitespace; 1 if nothing else is left. */
int eml_jreader_at_end(eml_jreader *r);
/* Decodes a string into dst (cap bytes, NUL-terminated, cut if it does not
 * fit; dst may be NULL to measure); *dlen is its full decoded length,
 * never more than its JSON text. */
EML_MUST_CHECK eml_status eml_jreader_string(eml_jreader *r, char *dst,
                                             size_t cap, size_t *dlen);
/* An unsigned decimal integer below 2^64: no sign, no leading zero, no
 * fraction or exponent. */
EML_MUST_CHECK eml_status eml_jreader_uint(eml_jreader *r, uint64_t *v);
/* A JSON number as a finite double. */
EML_MUST_CHECK eml_status eml_jreader_number(eml_jreader *r, double *v);

/* 1 if the C string s is valid UTF-8 by the reader's rules. */
int eml_fmt_utf8_valid(const char *s);

#endif
