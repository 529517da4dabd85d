/*
 * safetensors_internal.h - what the parts of the safetensors reader share
 * (private to src/formats/): the parsed file's layout, the tensor table
 * entries the header yields before they are checked, and the helpers that
 * every part uses to size shapes and to show hostile names.
 *
 * The reader is three files, one job each: safetensors.c frames the file,
 * runs the other two and answers lookups; safetensors_header.c reads the
 * JSON header (over the strict reader of flatjson.c) into the tensor
 * table; safetensors_table.c checks the table as a whole (duplicate names,
 * tiling of the data section) and indexes it.  safetensors_writer.c is the
 * writer.  Trusted code: no I/O anywhere.
 */
#ifndef EML_SAFETENSORS_INTERNAL_H
#define EML_SAFETENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/safetensors.h"
#include "enclaveml/status.h"

#define EML_ST_META_KEY "__metadata__"
#define EML_ST_SHOWN 96 /* bytes of a hostile name shown in a message */

typedef struct eml_st_meta_entry {
    const char *key;
    const char *value;
} eml_st_meta_entry;

/* Ownership: t, by_name, meta, meta_by_key and arena are owned; tensor
 * data points into the caller's buffer. */
struct eml_st {
    eml_st_tensor *t; /* header order */
    size_t n, cap;
    eml_st_tensor **by_name;  /* sorted by name, for eml_st_find */
    eml_st_meta_entry *meta;  /* header order */
    size_t n_meta, cap_meta;
    eml_st_meta_entry *meta_by_key; /* sorted by key, for eml_st_meta */
    char *arena;                    /* decoded metadata strings */
    size_t arena_used, arena_cap;
};

/* What one tensor entry of the header says about its place in the data
 * section, before that is checked (ents[i] goes with st->t[i] until the
 * table check sorts them). */
typedef struct eml_st_entry {
    uint64_t begin, end; /* data_offsets, relative to the data section */
    size_t index;        /* position in the header */
} eml_st_entry;

/* Copies s into out with anything unprintable escaped as \xNN and long
 * names cut, so a hostile name cannot break a one-line message or drive a
 * terminal; returns out. */
const char *eml_st_show(char out[EML_ST_SHOWN], const char *s);

/* Elements and bytes of an F32 tensor of this shape; 0 on overflow. */
int eml_st_shape_bytes(const int64_t *shape, int ndims, size_t *count,
                       size_t *bytes);

/* Reads the JSON header (h, n bytes, starting with '{') into st's tensors
 * and metadata and *ents (malloc'd, one per tensor; freed by the caller
 * whatever the result).  Each tensor is checked against itself: dtype,
 * shape, byte length. */
EML_MUST_CHECK eml_status eml_st_header_read(eml_st *st, eml_st_entry **ents,
                                             const uint8_t *h, size_t n,
                                             eml_err *err);

/* Checks the table as a whole and indexes it: no duplicate tensor name or
 * metadata key, tensors tiling the data section exactly; then points each
 * tensor at its data.  Sorts ents. */
EML_MUST_CHECK eml_status eml_st_table_check(eml_st *st, eml_st_entry *ents,
                                             const uint8_t *data,
                                             size_t data_len, eml_err *err);

#endif
