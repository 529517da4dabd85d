/*
 * serve.h - the attested inference server inside the enclave
 * (docs/serve.md): connections whose TLS ends here, HTTP on them, the
 * model's predictions in dynamic batches across connections; and the
 * record lists through which the host, which only relays ciphertext,
 * talks to it.
 *
 * The host owns the sockets.  Each SERVE_IO ecall carries what happened
 * since the last one (a list of events: a connection opened, ciphertext
 * arrived, the peer went away) and the host's clock; the answer is a list
 * of outputs (ciphertext for a connection, "close it after this", a log
 * line) and the time the server wants to be called again (a batch's
 * deadline, a slow client's timeout).
 *
 *     eml_server *s;
 *     eml_server_new(model, tls, &opts, &s, &err);
 *     eml_server_io(s, now_ms, events, len, &out, &deadline, &err);
 *     ...the host sends out's records, calls again by the deadline...
 *     eml_server_free(s);
 *
 * Trusted code: memory only.  The events are hostile bytes; every record
 * is checked before it is used.
 */
#ifndef ENCLAVEML_SERVE_H
#define ENCLAVEML_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/http.h"
#include "enclaveml/model.h"
#include "enclaveml/status.h"
#include "enclaveml/tls.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== records: u32 conn, u8 kind, u32 length, then length bytes (all
 * little-endian), one after another ==== */

typedef enum eml_serve_kind {
    /* host -> enclave */
    EML_SERVE_OPEN = 1,   /* a connection was accepted (no bytes) */
    EML_SERVE_DATA = 2,   /* ciphertext from the peer */
    EML_SERVE_CLOSED = 3, /* the peer closed or reset (no bytes) */
    /* enclave -> host */
    EML_SERVE_SEND = 4,   /* ciphertext for the peer */
    EML_SERVE_CLOSE = 5,  /* close it once what was sent is out */
    EML_SERVE_LOG = 6,    /* a line for the operator (conn: which one) */
} eml_serve_kind;

#define EML_SERVE_RECORD_HEAD 9
#define EML_SERVE_IO_MAX ((size_t)16 << 20) /* one list, either way */

typedef struct eml_serve_record {
    uint32_t conn;
    eml_serve_kind kind;
    const uint8_t *p; /* into the list */
    size_t n;
} eml_serve_record;

/* The record at *off of list (len bytes), *off moved past it.  EML_OK
 * with rec filled; EML_ERR_NOTFOUND at the end; EML_ERR_FORMAT for a
 * record that runs past the end, an unknown kind, or bytes on an OPEN,
 * CLOSED or CLOSE. */
EML_MUST_CHECK eml_status eml_serve_record_next(const uint8_t *list,
                                                size_t len, size_t *off,
                                                eml_serve_record *rec);
/* Appends one record (EML_ERR_RANGE when b's limit is reached). */
EML_MUST_CHECK eml_status eml_serve_record_put(eml_http_buf *b,
                                               uint32_t conn,
                                               eml_serve_kind kind,
                                               const void *p, size_t n,
                                               eml_err *err);

/* ==== the server ==== */

typedef struct eml_server_opts {
    char model_name[EML_HTTP_MODEL_NAME_MAX + 1]; /* the name in URLs */
    int max_batch;       /* examples a forward pass takes */
    int max_wait_ms;     /* how long the first request of a batch waits */
    int max_conns;       /* open connections; more are answered 503 */
    int header_timeout_ms; /* a request's headers must arrive within */
    int idle_timeout_ms;   /* a keep-alive connection may idle this long */
    size_t max_instances;  /* in one request */
    eml_http_limits limits;
    eml_kernels_kind kernels;
    /* int8 calibrates on the images the model's file carries (model.h),
     * here in the enclave, before the first request */
    eml_precision precision;
} eml_server_opts;

/* Fills o with the defaults: batch 64, wait 5 ms, 256 connections,
 * headers within 10 s, idle 60 s, 1024 instances, the HTTP defaults. */
void eml_server_opts_default(eml_server_opts *o);

typedef struct eml_server eml_server;

/* A server over the model (borrowed: it must outlive the server) and the
 * TLS server (borrowed likewise). */
EML_MUST_CHECK eml_status eml_server_new(const eml_model *m,
                                         eml_tls_server *tls,
                                         const eml_server_opts *o,
                                         eml_server **out, eml_err *err);
void eml_server_free(eml_server *s); /* NULL is a no-op */

/* Takes the host's events (now_ms: its monotonic clock), runs what is
 * due, and appends the outputs to out; *deadline_ms is when to call again
 * with no events (0: only when something happens).  An error is the
 * server's own (no memory, a broken event list): it cannot go on. */
EML_MUST_CHECK eml_status eml_server_io(eml_server *s, uint64_t now_ms,
                                        const uint8_t *events, size_t len,
                                        eml_http_buf *out,
                                        uint64_t *deadline_ms, eml_err *err);

/* The counters behind GET /metrics. */
const eml_metrics *eml_server_metrics(const eml_server *s);

#ifdef __cplusplus
}
#endif
#endif
