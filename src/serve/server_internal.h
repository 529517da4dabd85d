/*
 * server_internal.h - what the enclave's server (server.c) shares with
 * its queue to the workers (server_queue.c): the connection and job
 * records, the server object, and the answers.  Not a public header.
 *
 * Trusted code: memory only.
 */
#ifndef EML_SERVE_SERVER_INTERNAL_H
#define EML_SERVE_SERVER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/predict_io.h"
#include "enclaveml/serve.h"

#define PLAIN_CHUNK ((size_t)64 << 10) /* decrypted bytes per read */
#define REFUSE_SLOTS 16                /* beyond max_conns: answered 503 */

typedef struct conn {
    uint32_t id;
    int live;
    eml_tls_conn *tls;
    eml_http_parser *http;
    uint8_t *rest; /* decrypted bytes the parser did not take yet */
    size_t rest_n;
    uint64_t since;   /* when it began to wait for its current request */
    int busy;         /* its predict is queued (or with a worker) */
    int refuse;       /* over max_conns: 503 after the handshake */
    int closing;      /* close once the output is out */
    int established;
} conn;

typedef struct job {
    uint32_t conn_id;
    int slot;
    int keep_alive;
    uint64_t t0; /* ms: when the request was complete */
    eml_predict_input in;
} job;

struct eml_server {
    const eml_model *m;
    eml_tls_server *tls;
    eml_server_opts o;
    eml_net *ws;
    size_t item, n_out;
    conn *conns;
    int n_slots, open;
    job *q; /* FIFO of queued predicts: q[qh .. qh + qn) modulo qcap */
    int qh, qn, qcap;
    size_t queued;
    eml_metrics metrics;
    uint8_t *plain; /* PLAIN_CHUNK */
    float *probs;   /* (max_batch, n_out) */
    eml_http_buf resp, body;
    uint64_t now;
    eml_http_buf *out; /* this turn's outputs (eml_server_io) */
    struct eml_srv_queue *queue; /* server_queue.c; NULL: the model runs
                                    here */
};

/* ==== server.c ==== */

/* The answer to c's request (written through TLS); closing unless keep.
 * t0: when the request was complete (its latency). */
eml_status eml_srv_answer(eml_server *s, conn *c, int status, int keep,
                          const char *ctype, const void *body, size_t n,
                          uint64_t t0, eml_err *err);
eml_status eml_srv_answer_error(eml_server *s, conn *c, int status, int keep,
                                const char *msg, const char *allow,
                                uint64_t t0, eml_err *err);
/* A LOG record "connection ID: what[: why]". */
eml_status eml_srv_log(eml_server *s, eml_http_buf *out, uint32_t id,
                       const char *what, const char *why, eml_err *err);

/* ==== server_queue.c ==== */

/* Sends j (decoded; its input is taken and wiped) to the workers. */
eml_status eml_srvq_submit(eml_server *s, conn *c, job *j, eml_err *err);
/* A REPLY or WORKER record from the host. */
eml_status eml_srvq_event(eml_server *s, const eml_serve_record *r,
                          eml_http_buf *out, eml_err *err);
/* 504 for the requests no worker answered in time. */
eml_status eml_srvq_timeouts(eml_server *s, eml_http_buf *out, eml_err *err);
/* The earliest of those deadlines (0: none). */
uint64_t eml_srvq_deadline(const eml_server *s);
/* The queue's counters, appended to a /metrics body. */
eml_status eml_srvq_metrics(const eml_server *s, eml_http_buf *body,
                            eml_err *err);
void eml_srvq_free(struct eml_srv_queue *q);

#endif
