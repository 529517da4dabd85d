/*
 * counter.h - the simulated platform's monotonic counter (eml_counter_ops,
 * enclave.h), one file per measurement in the platform home:
 *
 *   counter-<measurement hex>.bin   "EMLCTR01" | u64 value (little-endian)
 *                                   16 bytes, mode 0600, value 0 at creation
 *
 * The file is opened once, before the sandbox closes; afterwards it is only
 * read with pread and advanced with pwrite + fdatasync on that descriptor
 * (the seccomp list allows those calls and flock on it and nothing else).  advance
 * refuses to go backwards or to stay equal.  The 16-byte record is written
 * in one pwrite at offset 0, inside one disk sector.
 *
 * As trustworthy as platform.key: the host's own user can rewrite the file
 * (roll the counter back); see docs/enclave.md.  Platform code, not trusted
 * code: it does file I/O.
 */
#ifndef EML_SIM_COUNTER_H
#define EML_SIM_COUNTER_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/enclave.h"
#include "enclaveml/status.h"

#define EML_COUNTER_MAGIC "EMLCTR01"
#define EML_COUNTER_BYTES 16

typedef struct eml_sim_counter {
    int fd; /* -1: closed */
} eml_sim_counter;

/* home/counter-<hex of measurement>.bin */
void eml_sim_counter_path(char *out, size_t cap, const char *home,
                          const uint8_t measurement[32]);
/* Opens path (creating it with value 0 if it does not exist) and checks its
 * format. */
EML_MUST_CHECK eml_status eml_sim_counter_open(eml_sim_counter *c,
                                               const char *path,
                                               eml_err *err);
EML_MUST_CHECK eml_status eml_sim_counter_read(eml_sim_counter *c,
                                               uint64_t *value, eml_err *err);
/* value must be > the current value; durable on return. */
EML_MUST_CHECK eml_status eml_sim_counter_advance(eml_sim_counter *c,
                                                  uint64_t value,
                                                  eml_err *err);
/* An exclusive flock on the file (waits), and its release: one enclave
 * instance at a time between reading its ledger and advancing. */
EML_MUST_CHECK eml_status eml_sim_counter_lock(eml_sim_counter *c,
                                               eml_err *err);
void eml_sim_counter_unlock(eml_sim_counter *c);
/* The ops for eml_platform.counter (user = c, borrowed). */
eml_counter_ops eml_sim_counter_ops(eml_sim_counter *c);
void eml_sim_counter_close(eml_sim_counter *c);
#endif
