/*
 * measure.h - the `sim` platform's measurement of the running process: every
 * file mapped with execute permission (the program, ld.so, libc,
 * libcrypto, libdnnl, libgomp, libseccomp, ... and anything preloaded), as
 * the kernel lists them in /proc/self/maps, each hashed with SHA-256.  The
 * measurement is then eml_measure() over those digests and the policy
 * (enclave.h; docs/enclave.md, "Identity, sealing, measurement").
 *
 * Each file is opened by the path the kernel shows and must be the very
 * file that is mapped (same device and inode), so a file replaced after it
 * was mapped is refused rather than hashed.  Anonymous executable memory
 * (oneDNN's JIT code, the vDSO) is not a file: it is made by the measured
 * code.  Platform code: it reads files, before the sandbox closes.
 */
#ifndef EML_SIM_MEASURE_H
#define EML_SIM_MEASURE_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/enclave.h"
#include "enclaveml/status.h"

#define EML_MEASURED_FILES_MAX EML_MEASURE_FILES_MAX
#define EML_MEASURED_PATH_MAX 512

typedef struct eml_measured_file {
    uint8_t sha256[32];
    unsigned long long dev, ino; /* dev as major << 32 | minor */
    char path[EML_MEASURED_PATH_MAX];
} eml_measured_file;

typedef struct eml_measured {
    size_t n;
    eml_measured_file f[EML_MEASURED_FILES_MAX]; /* sorted by sha256 */
} eml_measured;

/* Finds and hashes every file mapped executable into this process. */
EML_MUST_CHECK eml_status eml_measure_self(eml_measured *m, eml_err *err);
/* Checks that no file has been mapped executable since m was taken (run
 * just before the sandbox closes, after the libraries' initialisation). */
EML_MUST_CHECK eml_status eml_measure_self_unchanged(const eml_measured *m,
                                                     eml_err *err);
/* measurement = eml_measure(digests of m, policy). */
EML_MUST_CHECK eml_status eml_measure_of(uint8_t out[32],
                                         const eml_measured *m,
                                         const char *policy);
/* The file list as "<sha256 hex>  <path>\n" lines (sha256sum's format);
 * returns its length, or 0 if cap is too small. */
size_t eml_measure_list(char *out, size_t cap, const eml_measured *m);
#endif
