/*
 * enclave_host.h - the untrusted side of the boundary: starts the enclave
 * (backend `sim`: the sandboxed enclaveml-enclave process; `none`: the same
 * runtime on a thread of this process, for baselines), sends ecalls, and
 * serves the enclave's ocalls (encrypted file chunks in, encrypted model
 * out, progress).  It only ever moves ciphertext.
 *
 * ENCLAVEML_TRACE=FILE appends every byte sent to or received from the
 * enclave to FILE.
 */
#ifndef EML_HOST_ENCLAVE_HOST_H
#define EML_HOST_ENCLAVE_HOST_H

#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "enclaveml/boundary.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "enclaveml/train.h"
#include "host/mirror_store.h"

typedef enum eml_backend {
    EML_BACKEND_SIM = 0,
    EML_BACKEND_NONE = 1,
} eml_backend;

EML_MUST_CHECK eml_status eml_backend_parse(const char *s, eml_backend *out);

typedef struct eml_host_opts {
    eml_backend backend;
    unsigned heap_mb; /* enclave heap budget (part of the measurement) */
    int threads;
} eml_host_opts;

#define EML_DEFAULT_HEAP_MB 2048

/* Files the enclave may ask for: files[owner * EML_FILE_KINDS + kind]. */
typedef struct eml_host_files {
    size_t n;
    char **paths;
    int *fds;
} eml_host_files;

typedef struct eml_enclave_host {
    eml_host_opts opts;
    eml_channel ch;
    pid_t pid;           /* sim */
    void *thread;        /* none: the runtime's thread */
    FILE *trace;
    char home[4096];
    uint8_t measurement[32], x_pk[32], ed_pk[32];
    char policy[EML_POLICY_MAX];
    /* ocall services */
    eml_host_files files;
    int out_fd;          /* OUTPUT stream 0 goes here */
    uint64_t out_bytes;
    eml_progress_fn progress;
    void *progress_user;
    struct eml_store *store; /* MIRROR_* ocalls go here (NULL: refused) */
    uint8_t *bulk;           /* the bulk region (edl.h), mapped here too */
    int bulk_fd;
    /* WORKER ocalls are relayed here (NULL: refused); not owned. */
    struct eml_worker_link *worker;
    /* NODE_* ocalls: a decentralized node's transport and output (NULL:
     * refused); not owned. */
    const struct eml_node_io *node;
    int node_started;  /* node->start has succeeded */
    /* An ocall service that ends the ecall says why here. */
    eml_err ocall_err;
} eml_enclave_host;

/* Path of the enclave program: $ENCLAVEML_ENCLAVE, or enclaveml-enclave
 * beside this executable. */
EML_MUST_CHECK eml_status eml_enclave_path(char *out, size_t cap,
                                           eml_err *err);
/* Measurement of a backend's enclave for a configuration.  sim: runs
 * `enclaveml-enclave --measure`, which measures its own mappings and
 * exits (no platform secrets loaded); none: this process's own mappings.
 * files (may be NULL): the measured files, "<sha256>  <path>" lines. */
EML_MUST_CHECK eml_status eml_host_measure(eml_backend backend,
                                           unsigned heap_mb, uint8_t out[32],
                                           char *policy, size_t policy_cap,
                                           char *files, size_t files_cap,
                                           eml_err *err);

/* The enclave process's peak resident set (VmHWM), KiB: 0 for the `none`
 * backend (its memory is the host's) or when it cannot be read. */
long eml_enclave_host_peak_rss_kib(const eml_enclave_host *h);

/* Starts the enclave and initialises it (unsealing or creating its
 * identity; the sealed blob lives in $ENCLAVEML_HOME). */
EML_MUST_CHECK eml_status eml_host_start(eml_enclave_host *h,
                                         const eml_host_opts *o,
                                         eml_err *err);
/* Sends the ecall `type` (req: its struct, NULL and 0 for one without
 * fields) and serves the enclave's ocalls until its reply arrives: the
 * type edl.h names, carrying the ecall's seq, decoded into reply (NULL and
 * 0 for one without fields; its BYTES point into h->ch's receive buffer,
 * valid until the next call).  An ERROR reply becomes its status with the
 * enclave's message in err. */
EML_MUST_CHECK eml_status eml_host_call(eml_enclave_host *h, uint16_t type,
                                        const void *req, size_t req_size,
                                        void *reply, size_t reply_size,
                                        eml_err *err);
/* The same for a frame built by hand (tests that send malformed ones):
 * the reply of type `want` (EML_MSG_TYPE_END: none is expected) is left
 * for *r to read. */
EML_MUST_CHECK eml_status eml_host_call_frame(eml_enclave_host *h,
                                              eml_msg *m, uint16_t want,
                                              eml_msg_reader *r,
                                              eml_err *err);
/* Serves one ocall or notification of the enclave (enclave_ocalls.c) during
 * eml_host_call: decodes it, does what it asks and answers it. */
EML_MUST_CHECK eml_status eml_host_serve_ocall(eml_enclave_host *h,
                                               uint16_t type, const uint8_t *p,
                                               size_t n, eml_err *err);
/* SHUTDOWN, wait for the process/thread, close everything. */
void eml_host_stop(eml_enclave_host *h);
#endif
