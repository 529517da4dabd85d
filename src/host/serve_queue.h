/*
 * serve_queue.h - the front end host's side of the serving queue
 * (serve_queue.c; docs/serve.md, "Scale-out through Redis Streams"):
 * it XADDs the enclave's sealed request entries to the stream, HSETs the
 * keys it wrapped for workers, and a thread of its own picks up replies
 * (XREAD BLOCK on the front end's reply stream) and workers' reports
 * (HGETALL every 500 ms), waking the relay's epoll loop through an
 * eventfd.  Host side: ciphertext, ids, names and reports only.
 *
 *     eml_serve_queue *q;
 *     eml_serve_queue_start(url, stream, fe_hex, 30000, stderr, &q, &err);
 *     ...epoll on eml_serve_queue_fd(q); eml_serve_queue_take(q, &ev, ...)
 *     ...eml_serve_queue_out(q, &record, ...) for ENQUEUE and ADMIT...
 *     eml_serve_queue_stop(q);
 */
#ifndef EML_HOST_SERVE_QUEUE_H
#define EML_HOST_SERVE_QUEUE_H

#include <stdint.h>
#include <stdio.h>

#include "enclaveml/serve.h"

typedef struct eml_serve_queue eml_serve_queue;

/* Connects (twice: one connection for the reader thread), creates the
 * stream and its group, starts the reader.  maxlen: the request stream is
 * trimmed to about this many entries (0: never). */
EML_MUST_CHECK eml_status eml_serve_queue_start(const char *url,
                                                const char *stream,
                                                const char *fe_hex,
                                                uint64_t maxlen,
                                                eml_serve_queue **out,
                                                eml_err *err);
/* Readable when records wait for the enclave. */
int eml_serve_queue_fd(const eml_serve_queue *q);
/* Moves the waiting records (REPLY, WORKER) into ev, as many as fit; an
 * error if the reader has failed (Redis went away). */
EML_MUST_CHECK eml_status eml_serve_queue_take(eml_serve_queue *q,
                                               eml_http_buf *ev,
                                               eml_err *err);
/* Carries out an ENQUEUE (XADD) or ADMIT (HSET) record of the enclave. */
EML_MUST_CHECK eml_status eml_serve_queue_out(eml_serve_queue *q,
                                              const eml_serve_record *rec,
                                              eml_err *err);
/* Stops the reader, deletes the reply stream, disconnects.  NULL: no-op. */
void eml_serve_queue_stop(eml_serve_queue *q);
#endif
