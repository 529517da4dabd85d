/*
 * serve_relay.h - the host's half of the attested inference server
 * (serve_relay.c): the sockets, and the ciphertext between them and the
 * enclave's server.  Host side.
 */
#ifndef EML_HOST_SERVE_RELAY_H
#define EML_HOST_SERVE_RELAY_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "host/enclave_host.h"

/* What the relay counts. */
typedef struct eml_serve_stats {
    uint64_t accepted, refused; /* refused: over max_peers, at TCP level */
    uint64_t bytes_in, bytes_out, turns;
    uint64_t deadline; /* the enclave's last one (ms, monotonic) */
} eml_serve_stats;

struct eml_serve_queue;

/* Serves the listening socket lfd through h (SERVE_START done) until
 * *stop: at most max_peers connections at once (more are closed at once;
 * the enclave answers 503 above its own limit, which should be lower).
 * With q (QUEUE_START done; NULL: no queue) the queue's records travel
 * too: replies and reports in, entries and keys out (serve_queue.h).
 * Log lines from the enclave go to log (NULL: dropped).  Returns on *stop
 * (EML_OK) or when the enclave, the sockets or the queue fail. */
EML_MUST_CHECK eml_status eml_serve_relay(eml_enclave_host *h, int lfd,
                                          size_t max_peers,
                                          struct eml_serve_queue *q,
                                          volatile sig_atomic_t *stop,
                                          eml_serve_stats *stats, FILE *log,
                                          eml_err *err);
#endif
