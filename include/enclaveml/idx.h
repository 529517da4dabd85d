/*
 * idx.h - MNIST-style IDX files, gzip-compressed or not, from memory.
 *
 * Trusted-safe: parses a byte buffer (no I/O), so the host can hand it a
 * file and the enclave a decrypted one.  Every size is checked against the
 * buffer before use; a truncated or corrupt file (or gzip stream) is an
 * error with a message, never a crash.
 *
 *     eml_idx idx;
 *     if (eml_idx_parse(buf, len, "train-images-idx3-ubyte.gz", &idx, &err))...
 *     idx.data[i]  -- idx.dims[0] x idx.dims[1] x ... unsigned bytes
 *     eml_idx_free(&idx);
 *
 * Only element type 0x08 (unsigned byte) is supported, with 1..4 dims.
 */
#ifndef ENCLAVEML_IDX_H
#define ENCLAVEML_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_IDX_MAX_DIMS 4
#define EML_IDX_MAX_BYTES ((size_t)1 << 32) /* 4 GiB decoded, at most */

typedef struct eml_idx {
    int ndims;
    uint32_t dims[EML_IDX_MAX_DIMS];
    size_t count;   /* dims[0] */
    size_t item;    /* product of dims[1..]; 1 for labels */
    uint8_t *data;  /* count * item bytes, owned */
} eml_idx;

/* Accepts raw IDX or a gzip stream holding one (detected by the 1f 8b magic).
 * name is used in error messages only. */
EML_MUST_CHECK eml_status eml_idx_parse(const uint8_t *buf, size_t len,
                                        const char *name, eml_idx *out,
                                        eml_err *err);
void eml_idx_free(eml_idx *idx); /* zeroes it; safe on a zeroed idx */

/* Serializes an unsigned-byte IDX (raw, not gzipped) into a new buffer. */
EML_MUST_CHECK eml_status eml_idx_write(const eml_idx *idx, uint8_t **out,
                                        size_t *out_len);

/* Decompresses a gzip stream (RFC 1952, one or more members) into a new
 * buffer of at most max_out bytes.  CRC and length trailers are checked. */
EML_MUST_CHECK eml_status eml_gunzip(const uint8_t *buf, size_t len,
                                     size_t max_out, uint8_t **out,
                                     size_t *out_len, eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
