/*
 * safetensors.h - read and write safetensors files (F32 tensors) in memory.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {"k": "v"}}, then the data bytes.  Offsets are relative
 * to the start of the data section, tensors are contiguous, little-endian,
 * and must tile the data section exactly with no overlap.
 *
 * Trusted-safe (no I/O).  The reader is strict: bad JSON, a dtype other than
 * F32, overlapping or out-of-range offsets, a shape whose product does not
 * match its byte length, or duplicate names are errors with a message.
 *
 *     eml_st_writer *w = eml_st_writer_new();
 *     eml_st_writer_add(w, "layers.0.weight", shape, 4, data);
 *     eml_st_writer_finish(w, &buf, &len);   // buf: malloc'd file bytes
 *
 *     eml_st *st; eml_st_parse(buf, len, &st, &err);
 *     const eml_st_tensor *t = eml_st_find(st, "layers.0.weight");
 */
#ifndef ENCLAVEML_SAFETENSORS_H
#define ENCLAVEML_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_ST_MAX_DIMS 8
#define EML_ST_MAX_NAME 256
#define EML_ST_MAX_HEADER ((size_t)100 << 20) /* 100 MB, as upstream */

typedef struct eml_st_tensor {
    char name[EML_ST_MAX_NAME];
    int ndims;
    int64_t shape[EML_ST_MAX_DIMS];
    size_t count;       /* product of shape */
    const float *data;  /* points into the parsed buffer (may be unaligned:
                           use memcpy, or eml_st_copy) */
} eml_st_tensor;

typedef struct eml_st eml_st; /* parsed view; borrows the input buffer */

EML_MUST_CHECK eml_status eml_st_parse(const uint8_t *buf, size_t len,
                                       eml_st **out, eml_err *err);
void eml_st_free(eml_st *st);
size_t eml_st_count(const eml_st *st);
const eml_st_tensor *eml_st_get(const eml_st *st, size_t i);
const eml_st_tensor *eml_st_find(const eml_st *st, const char *name);
/* Copies t's data into dst (t->count floats), from little-endian bytes. */
void eml_st_copy(float *dst, const eml_st_tensor *t);
/* Metadata value for key, or NULL. */
const char *eml_st_meta(const eml_st *st, const char *key);

typedef struct eml_st_writer eml_st_writer;
eml_st_writer *eml_st_writer_new(void);
/* Copies nothing: data must stay valid until finish. */
EML_MUST_CHECK eml_status eml_st_writer_add(eml_st_writer *w,
                                            const char *name,
                                            const int64_t *shape, int ndims,
                                            const float *data);
EML_MUST_CHECK eml_status eml_st_writer_meta(eml_st_writer *w,
                                             const char *key,
                                             const char *value);
/* Produces the file bytes (malloc'd, caller frees).  Deterministic: the same
 * tensors in the same order give the same bytes. */
EML_MUST_CHECK eml_status eml_st_writer_finish(eml_st_writer *w,
                                               uint8_t **out, size_t *len);
void eml_st_writer_free(eml_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
