/*
 * formats_internal.h - helpers shared by the format parsers (idx.c,
 * gunzip.c, safetensors.c) and their tests and fuzz targets.  Not part of
 * the public API: nothing here is exported from the library (hidden
 * visibility), and nothing here does I/O.
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

#endif
