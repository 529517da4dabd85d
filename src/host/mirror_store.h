/*
 * mirror_store.h - the host half of the mirror (nn/mirror.c is the
 * sealing half): the stores for sealed training states (mirror.h): a
 * two-slot pool mapped with PMDK's libpmem2 (persistent memory in DAX
 * mode, or a regular file / tmpfs as emulated PM), and the disk checkpoint
 * baseline (write a temporary file, fsync, rename).
 *
 * Untrusted code: it only moves sealed bytes and never sees a key.  The
 * persist order it implements is in docs/mirror.md.
 */
#ifndef EML_HOST_MIRROR_STORE_H
#define EML_HOST_MIRROR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/mirror.h"

typedef struct eml_store eml_store;

/* A pool at path (created on the first save if missing).  A file that
 * exists but is not a pool, or whose size disagrees with its header, is
 * an error. */
EML_MUST_CHECK eml_status eml_store_open_pool(const char *path,
                                              eml_store **out, eml_err *err);
/* A checkpoint file at path (written on each save). */
EML_MUST_CHECK eml_status eml_store_open_checkpoint(const char *path,
                                                    eml_store **out,
                                                    eml_err *err);
void eml_store_close(eml_store *s); /* unmaps; NULL is a no-op */

/* The callbacks mirror.h calls. */
const eml_store_ops *eml_store_ops_of(eml_store *s);
/* What the store runs on, in words ("emulated persistent memory (tmpfs,
 * ...)"). */
const char *eml_store_mode(const eml_store *s);
/* 1 if the store already holds a pool or checkpoint. */
int eml_store_exists(const eml_store *s);

/* Opens the store a train command asked for (mirror or checkpoint; both
 * NULL: *out = NULL) and says on stderr what it runs on.  Without resume,
 * a store that already holds a state is refused rather than overwritten. */
EML_MUST_CHECK eml_status eml_store_setup(const char *mirror,
                                          const char *checkpoint, int resume,
                                          int quiet, eml_store **out,
                                          eml_err *err);

#endif
