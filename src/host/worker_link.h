/*
 * worker_link.h - the host's sockets to an outsourcing worker
 * (include/enclaveml/outsource.h, docs/formats.md "Worker protocol"):
 * worker addresses, a connection whose eml_worker_link the enclave's
 * client talks through, and the listening and frame-reading helpers the
 * worker (`enclaveml worker`) and the tests' fault proxy share.
 *
 *     eml_worker_conn *c;
 *     eml_err err = {0};
 *     if (eml_worker_connect("tcp:127.0.0.1:5555", EML_WORKER_TIMEOUT_MS,
 *                            &c, &err) != EML_OK) ...
 *     eml_worker_link link = eml_worker_conn_link(c);
 *     ... eml_outsource_new(&link, ...) ...
 *     eml_worker_disconnect(c);
 *
 * Addresses: `tcp:HOST:PORT` (HOST an IPv4 literal or a name that
 * resolves to IPv4, PORT 0..65535) or `unix:PATH` (PATH shorter than
 * sun_path).  Every wait on a socket is bounded by the connection's
 * timeout (no progress for that long is an error); errors name the
 * address: "worker tcp:127.0.0.1:5555: connection closed", "... timed out
 * after 30 s", "... cannot connect: Connection refused".  After an error a
 * connection is broken for good: every later call returns the same error
 * (the stream is out of step).  Host side: sockets, no printing.
 */
#ifndef EML_HOST_WORKER_LINK_H
#define EML_HOST_WORKER_LINK_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "enclaveml/outsource.h"
#include "enclaveml/status.h"

#define EML_WORKER_TIMEOUT_MS 30000 /* what callers use unless told */
#define EML_WORKER_ADDR_MAX 320     /* longest address text, with its NUL */

/* A parsed address.  text is the address as given (for messages). */
typedef struct eml_worker_addr {
    struct sockaddr_storage sa;
    socklen_t len;
    int family; /* AF_INET or AF_UNIX */
    char text[EML_WORKER_ADDR_MAX];
} eml_worker_addr;

/* Parses tcp:HOST:PORT or unix:PATH (names through getaddrinfo, IPv4);
 * anything else is EML_ERR_INVALID with a message quoting the address. */
EML_MUST_CHECK eml_status eml_worker_addr_parse(const char *addr,
                                                eml_worker_addr *out,
                                                eml_err *err);

typedef struct eml_worker_conn eml_worker_conn;

/* Connects to a worker, waiting at most timeout_ms (> 0) for the
 * connection and then for each read or write. */
EML_MUST_CHECK eml_status eml_worker_connect(const char *addr, int timeout_ms,
                                             eml_worker_conn **out,
                                             eml_err *err);
/* Closes the socket and frees the connection (NULL is a no-op). */
void eml_worker_disconnect(eml_worker_conn *c);
/* The link over c (borrowed: c outlives every use of the link): send
 * writes one whole frame, recv reads one reply frame (its header first,
 * refusing a bad header or a size over the protocol's limit) into a buffer
 * c owns, valid until the next recv. */
eml_worker_link eml_worker_conn_link(eml_worker_conn *c);

/* ==== the serving side (the worker, the tests' proxy) ==== */

/* Binds and listens on a: TCP with SO_REUSEADDR (port 0 picks a free
 * port), unix after unlinking a stale socket file (a live one, or a file
 * that is not a socket, is an error).  *fd gets the listening socket,
 * bound the actual address ("tcp:127.0.0.1:40123"), bound_n bytes. */
EML_MUST_CHECK eml_status eml_worker_listen(const eml_worker_addr *a,
                                            int *fd, char *bound,
                                            size_t bound_n, eml_err *err);
/* Waits for and accepts one connection on a listening socket, checking
 * *stop every 100 ms: 1 a connection (*out, a new fd), 0 stopped, -1 an
 * error (errno). */
int eml_worker_accept(int lfd, volatile sig_atomic_t *stop, int *out);

/* Wraps an accepted socket (taken over: disconnect closes it).  name
 * prefixes error messages ("client unix:/tmp/w.sock"); stop (may be NULL)
 * is checked every 100 ms while waiting: once set, the wait ends with
 * EML_ERR_IO "... stopped". */
EML_MUST_CHECK eml_status eml_worker_conn_wrap(int fd, const char *name,
                                               int timeout_ms,
                                               volatile sig_atomic_t *stop,
                                               eml_worker_conn **out,
                                               eml_err *err);
/* Reads one request frame into c's buffer: *n = 0 if the peer closed the
 * connection cleanly before the frame's first byte (the wait for that
 * byte has no timeout, only stop).  EML_ERR_IO for the socket; any other
 * error is a malformed request (q->id is the frame's id if its header got
 * that far, else 0), after which the stream cannot be trusted.  On
 * EML_OK, *p and *q describe a frame that eml_worker_req_parse accepted. */
EML_MUST_CHECK eml_status eml_worker_read_request(eml_worker_conn *c,
                                                  const uint8_t **p,
                                                  size_t *n,
                                                  eml_worker_req *q,
                                                  eml_err *err);
/* Writes n bytes (a whole frame or a piece of one). */
EML_MUST_CHECK eml_status eml_worker_conn_write(eml_worker_conn *c,
                                                const void *p, size_t n,
                                                eml_err *err);
/* Ends c's side of the stream (shutdown for writing) and discards what
 * the peer still sends, until it closes or ms have passed: closing a
 * socket with unread input resets the connection, and the peer could lose
 * the last reply (a REFUSED) before reading it. */
void eml_worker_conn_linger(eml_worker_conn *c, int ms);
#endif
