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

#include "enclaveml/enclave.h"
#include "enclaveml/http.h"
#include "enclaveml/model.h"
#include "enclaveml/net.h"
#include "enclaveml/predict_io.h"
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
    /* the queue (docs/serve.md, "Scale-out through Redis Streams"); the
     * bytes of each are a stream entry's or a hash's fields (below) */
    /* host -> front end */
    EML_SERVE_REPLY = 7,  /* an entry of the reply stream: id, worker, body */
    EML_SERVE_WORKER = 8, /* a worker's report: name, report */
    /* host -> worker (conn: the entry's index in this call) */
    EML_SERVE_ENTRY = 9,  /* an entry of the request stream: id, fe, body */
    /* front end -> host */
    EML_SERVE_ENQUEUE = 10, /* XADD to the request stream: id, fe, body */
    EML_SERVE_ADMIT = 11,   /* HSET the worker's key: name, key */
    /* worker -> host (conn: the entry it answers) */
    EML_SERVE_ANSWER = 12, /* XADD to the reply stream, then XACK: id,
                              worker, body */
    EML_SERVE_DROP = 13,   /* the entry is refused: XACK it (no bytes) */
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
 * CLOSED, CLOSE or DROP. */
EML_MUST_CHECK eml_status eml_serve_record_next(const uint8_t *list,
                                                size_t len, size_t *off,
                                                eml_serve_record *rec);
/* Appends one record (EML_ERR_RANGE when b's limit is reached). */
EML_MUST_CHECK eml_status eml_serve_record_put(eml_http_buf *b,
                                               uint32_t conn,
                                               eml_serve_kind kind,
                                               const void *p, size_t n,
                                               eml_err *err);

/* ==== the queue's entries (src/serve/queue.c; docs/serve.md,
 * "Scale-out through Redis Streams") ====
 *
 * A stream entry or hash field travels between the host and the enclave
 * as a record's bytes: u8 count, then count times (u8 name length, name,
 * u32 value length, value), little-endian, in the order Redis gave them.
 * The host passes what Redis returned without judging it; the enclave
 * checks every field.
 *
 * Every request and reply body is nonce[12] || AES-256-GCM(K, plaintext)
 * || tag[16] under the queue key K that the front end makes, with AAD
 * "eml-req" (or "eml-rep") || u8 len || stream || id[16] || fe[16].
 *   request plaintext: u8 version 1 | u8 form | u16 0 | u32 n | u32 item
 *                      | model_sha256[32] | n * item float32
 *   reply plaintext:   u8 version 1 | u8 status | u16 0 | u32 n | u32 n_out
 *                      | n * n_out float32 (status 0; none otherwise) */

#define EML_QUEUE_FIELDS_MAX 16
#define EML_QUEUE_VALUE_MAX ((size_t)12 << 20)
#define EML_QUEUE_ID_BYTES 16  /* request ids and front end ids, raw */
#define EML_QUEUE_ID_HEX 32    /* as their fields hold them */
#define EML_QUEUE_NAME_MAX 64  /* stream and worker names */
#define EML_QUEUE_SESSION_BYTES 16
#define EML_QUEUE_REQ_HEAD 44
#define EML_QUEUE_REP_HEAD 12
#define EML_QUEUE_SEAL_OVERHEAD 28 /* nonce and tag */
#define EML_QUEUE_WRAPPED_BYTES 104
#define EML_QUEUE_GROUP "workers"

/* A reply's status: what the worker made of an authentic request. */
typedef enum eml_queue_status {
    EML_QUEUE_OK = 0,
    EML_QUEUE_FAILED = 1,      /* the forward pass failed */
    EML_QUEUE_OTHER_MODEL = 2, /* the worker serves another model */
} eml_queue_status;

typedef struct eml_queue_field {
    const uint8_t *name; /* into the record */
    size_t name_n;
    const uint8_t *p;
    size_t n;
} eml_queue_field;

/* The fields of a record's bytes, at most cap of them, into f (*n of
 * them); EML_ERR_FORMAT for a count over cap, a field past the end, a
 * value over EML_QUEUE_VALUE_MAX, an empty name, or bytes left over. */
EML_MUST_CHECK eml_status eml_queue_fields_parse(const uint8_t *p, size_t len,
                                                 eml_queue_field *f,
                                                 size_t cap, size_t *n);
/* Appends a record of kind whose bytes are the n fields f. */
EML_MUST_CHECK eml_status eml_queue_fields_put(eml_http_buf *b, uint32_t conn,
                                               eml_serve_kind kind,
                                               const eml_queue_field *f,
                                               size_t n, eml_err *err);
/* The values of exactly the fields named names[0..k), in that order; any
 * other count, name or order is EML_ERR_FORMAT. */
EML_MUST_CHECK eml_status eml_queue_fields_expect(const uint8_t *p,
                                                  size_t len,
                                                  const char *const *names,
                                                  size_t k,
                                                  eml_queue_field *out,
                                                  eml_err *err);
/* 1 for a stream or worker name: 1 to 64 of A-Z a-z 0-9 . _ : - */
int eml_queue_name_ok(const uint8_t *p, size_t n);
/* Exactly 32 lowercase hex digits into 16 bytes; -1 otherwise. */
int eml_queue_id_parse(uint8_t out[EML_QUEUE_ID_BYTES], const uint8_t *p,
                       size_t n);

/* What binds a body: the key, the stream, the request and front end. */
typedef struct eml_queue_bind {
    const uint8_t *key; /* K, 32 bytes */
    const char *stream;
    uint8_t id[EML_QUEUE_ID_BYTES];
    uint8_t fe[EML_QUEUE_ID_BYTES];
} eml_queue_bind;

/* A request body (malloc'd, *body_n bytes) for the instances x (n, item)
 * asked in form, for the model whose digest is model_sha256. */
EML_MUST_CHECK eml_status eml_queue_request_seal(
    const eml_queue_bind *b, eml_predict_form form, const float *x, size_t n,
    size_t item, const uint8_t model_sha256[32], uint8_t **body,
    size_t *body_n, eml_err *err);
/* Opens and checks a request body: version, form, reserved bits, n in 1
 * .. max_n, item (any: the caller compares), the exact length, finite
 * values.  *x (n, item) is malloc'd: the caller wipes and frees it.
 * EML_ERR_AUTH when it does not authenticate (tampered, another key,
 * stream, id or front end), EML_ERR_FORMAT for a bad plaintext. */
EML_MUST_CHECK eml_status eml_queue_request_open(
    const eml_queue_bind *b, const uint8_t *body, size_t body_n,
    size_t max_n, eml_predict_form *form, size_t *n, size_t *item,
    uint8_t model_sha256[32], float **x, eml_err *err);
/* A reply body: probabilities p (n, n_out), or a status without them. */
EML_MUST_CHECK eml_status eml_queue_reply_seal(const eml_queue_bind *b,
                                               eml_queue_status status,
                                               const float *p, size_t n,
                                               size_t n_out, uint8_t **body,
                                               size_t *body_n, eml_err *err);
/* Opens and checks a reply body; *p (n, n_out) malloc'd (NULL unless
 * status is OK): the caller wipes and frees it. */
EML_MUST_CHECK eml_status eml_queue_reply_open(
    const eml_queue_bind *b, const uint8_t *body, size_t body_n,
    size_t max_n, eml_queue_status *status, size_t *n, size_t *n_out,
    float **p, eml_err *err);

/* ==== worker admission (src/serve/queue.c) ====
 *
 * A worker's report binds nonce = SHA-256("eml-worker" || u8 len ||
 * stream || u8 len || name) || session[16] (48 bytes; session: fresh per
 * start).  The front end admits a report only if its platform key signed
 * it, its measurement is the front end's own and its nonce binds this
 * stream and the worker's name; it then wraps K to the report's X25519
 * key:
 *   wrapped = "EMLQKEY1" | fe[16] | eph_pk[32] | AES-256-GCM(K)[32] |
 *             tag[16]                                     (104 bytes)
 *   wrap key = HKDF-SHA256(X25519(eph_sk, worker_pk), salt = fe,
 *              info = "enclaveml queue key v1" || measurement ||
 *              session || u8 len || stream || u8 len || name),
 *   AAD = its first 56 bytes, nonce all zero (the wrap key is fresh). */

/* The first 32 bytes of a worker's nonce. */
EML_MUST_CHECK eml_status eml_queue_worker_nonce(uint8_t out[32],
                                                 const char *stream,
                                                 const char *name);

/* Who may be a worker, and the worker that was admitted. */
typedef struct eml_queue_admission {
    const eml_platform_key *platform; /* the front end's own */
    const uint8_t *measurement;       /* the front end's own, 32 */
    const char *stream;
} eml_queue_admission;

/* Checks a worker's report (len bytes) for worker `name` and, when it
 * passes, wraps key (fe) to it into wrapped.  EML_ERR_AUTH with the
 * reason otherwise; nothing is wrapped. */
EML_MUST_CHECK eml_status eml_queue_admit(
    const eml_queue_admission *a, const char *name, const char *report,
    size_t len, const uint8_t key[32], const uint8_t fe[EML_QUEUE_ID_BYTES],
    uint8_t wrapped[EML_QUEUE_WRAPPED_BYTES], eml_err *err);
/* The worker's side: K (and the front end's id) from wrapped, with its
 * X25519 secret key, for its measurement, session, stream and name.  key
 * is wiped on failure (EML_ERR_AUTH, EML_ERR_FORMAT). */
EML_MUST_CHECK eml_status eml_queue_key_unwrap(
    const uint8_t *wrapped, size_t n, const uint8_t x_sk[32],
    const uint8_t measurement[32],
    const uint8_t session[EML_QUEUE_SESSION_BYTES], const char *stream,
    const char *name, uint8_t key[32], uint8_t fe[EML_QUEUE_ID_BYTES],
    eml_err *err);

/* ==== a worker (src/serve/queue_worker.c) ==== */

typedef struct eml_qworker_opts {
    char stream[EML_QUEUE_NAME_MAX + 1];
    char name[EML_QUEUE_NAME_MAX + 1];
    int max_batch; /* examples a forward pass takes */
    size_t max_instances;
    eml_kernels_kind kernels;
    eml_precision precision;
} eml_qworker_opts;

typedef struct eml_qworker eml_qworker;

/* A worker over the model (borrowed); draws its session. */
EML_MUST_CHECK eml_status eml_qworker_new(const eml_model *m,
                                          const eml_qworker_opts *o,
                                          eml_qworker **out, eml_err *err);
void eml_qworker_free(eml_qworker *w); /* NULL is a no-op; wipes K */
/* The 48-byte nonce its report must bind. */
void eml_qworker_nonce(const eml_qworker *w, uint8_t out[48]);
/* Takes K from a wrapped key (eml_queue_key_unwrap); *fe: whose it is. */
EML_MUST_CHECK eml_status eml_qworker_set_key(
    eml_qworker *w, const uint8_t *wrapped, size_t n, const uint8_t x_sk[32],
    const uint8_t measurement[32], uint8_t fe[EML_QUEUE_ID_BYTES],
    eml_err *err);
/* Takes ENTRY records (conn: the entry's index) and appends, for each, an
 * ANSWER (the reply entry's fields) or a DROP and a LOG line (a malformed
 * or tampered entry, counted).  Requests run in forward passes of at most
 * max_batch examples.  An error is the worker's own (no key, no memory, a
 * broken record list). */
EML_MUST_CHECK eml_status eml_qworker_io(eml_qworker *w, const uint8_t *in,
                                         size_t len, eml_http_buf *out,
                                         eml_err *err);
/* Entries answered and refused so far. */
void eml_qworker_counts(const eml_qworker *w, uint64_t *done,
                        uint64_t *malformed);

/* The model's workspace for max_batch examples at a precision (int8
 * calibrates on the images the model's file carries). */
EML_MUST_CHECK eml_status eml_serve_workspace(const eml_model *m,
                                              eml_kernels_kind kernels,
                                              eml_precision precision,
                                              int max_batch, eml_net **out,
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

/* ==== the server's queue (src/serve/server_queue.c) ==== */

typedef struct eml_server_queue_opts {
    char stream[EML_QUEUE_NAME_MAX + 1];
    int timeout_ms; /* a request unanswered this long gets 504 */
    eml_platform_key platform; /* workers' reports must be signed so */
    uint8_t measurement[32];   /* and be of this enclave */
} eml_server_queue_opts;

/* The queue's counters (GET /metrics adds them). */
typedef struct eml_queue_metrics {
    uint64_t sent, answered, duplicates, timeouts;
    uint64_t admitted, refused;
} eml_queue_metrics;

/* From now on predicts go to workers through the stream: the server makes
 * K and its front end id (*fe).  Once only. */
EML_MUST_CHECK eml_status eml_server_queue_start(
    eml_server *s, const eml_server_queue_opts *o,
    uint8_t fe[EML_QUEUE_ID_BYTES], eml_err *err);
/* NULL unless the queue is on. */
const eml_queue_metrics *eml_server_queue_metrics(const eml_server *s);

#ifdef __cplusplus
}
#endif
#endif
