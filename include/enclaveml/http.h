/*
 * http.h - the HTTP/1.1 layer of the attested inference server: an
 * incremental, strict request parser over one connection's byte stream
 * (keep-alive and pipelining), a response writer, the routes of TensorFlow
 * Serving's REST API, and the server's Prometheus counters.
 *
 * Trusted code (src/serve/http.c, src/serve/metrics.c): TLS ends inside the
 * enclave, so these bytes are plaintext from the network and hostile.
 * Memory only, no I/O; every buffer is bounded by eml_http_limits; a
 * request that breaks a rule gets the HTTP status to answer and one
 * sentence in eml_err.  What is accepted and refused, with which status:
 * docs/serve.md, "HTTP".
 *
 *     eml_http_parser *p;
 *     if (eml_http_parser_new(NULL, &p, &err) != EML_OK) ...
 *     for (;;) {                      // bytes arrive from the TLS session
 *         size_t used; const eml_http_request *req; int code;
 *         st = eml_http_feed(p, data, n, &used, &req, &code, &err);
 *         data += used; n -= used;
 *         if (st != EML_OK) { answer code with err.msg, then close; break; }
 *         if (req == NULL) { read more bytes; continue; }
 *         ...route, answer, close unless req->keep_alive...
 *         eml_http_next(p);           // drop it; pipelined bytes stay
 *     }
 *     eml_http_parser_free(p);
 *
 * Ownership: the parser owns its buffer (wiped when freed); a request and
 * every pointer in it borrow that buffer and stay valid until
 * eml_http_next or eml_http_parser_free.  eml_http_buf owns its memory
 * when growable, borrows it when fixed.
 */
#ifndef ENCLAVEML_HTTP_H
#define ENCLAVEML_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== the request parser ==== */

#define EML_HTTP_MAX_HEADER_DEFAULT 8192            /* 431 past it */
#define EML_HTTP_MAX_TARGET_DEFAULT 2048            /* 414 past it */
#define EML_HTTP_MAX_BODY_DEFAULT ((size_t)4 << 20) /* 413 past it */
#define EML_HTTP_MAX_HEADER_CAP ((size_t)1 << 20)
#define EML_HTTP_MAX_BODY_CAP ((size_t)1 << 30)

/* 0 in a field means its default.  The header block is everything up to
 * and including the blank line that ends the headers; the target must be
 * shorter than the header block limit.  A parser holds at most
 * max_header + max_body bytes. */
typedef struct eml_http_limits {
    size_t max_header; /* at most EML_HTTP_MAX_HEADER_CAP */
    size_t max_target;
    size_t max_body; /* Content-Length; at most EML_HTTP_MAX_BODY_CAP */
} eml_http_limits;

/* Values are only ever appended. */
typedef enum eml_http_method {
    EML_HTTP_GET,
    EML_HTTP_HEAD,
    EML_HTTP_POST,
    EML_HTTP_PUT,
    EML_HTTP_DELETE,
    EML_HTTP_CONNECT,
    EML_HTTP_OPTIONS,
    EML_HTTP_TRACE,
    EML_HTTP_PATCH,
    EML_HTTP_METHOD_COUNT
} eml_http_method;

/* One complete request.  Strings are NUL-terminated, trimmed of the
 * spaces around a header value, and NULL when the header is absent; the
 * body is bytes.  Transfer-Encoding never appears: it is refused. */
typedef struct eml_http_request {
    eml_http_method method;
    const char *method_name;
    const char *target; /* origin-form ("/path?query"), as sent */
    size_t target_len;
    int version_minor;  /* 0: HTTP/1.0, 1: HTTP/1.1 */
    int keep_alive;     /* 1: the connection stays open after the answer */
    int expect_continue; /* HTTP/1.1 "Expect: 100-continue" with a body */
    int has_content_length;
    uint64_t content_length;
    const char *host;         /* "" when sent empty */
    const char *content_type; /* as sent, parameters included */
    const char *tensor_dtype; /* X-Tensor-Dtype (predict_io.h) */
    const uint8_t *body;      /* body_len bytes; not NUL-terminated */
    size_t body_len;
    size_t size; /* bytes of the stream this request took */
} eml_http_request;

typedef struct eml_http_parser eml_http_parser;

/* lim NULL: all defaults.  EML_ERR_INVALID for a limit out of range. */
EML_MUST_CHECK eml_status eml_http_parser_new(const eml_http_limits *lim,
                                              eml_http_parser **out,
                                              eml_err *err);
/* Wipes and frees the buffer; NULL is a no-op. */
void eml_http_parser_free(eml_http_parser *p);

/* Takes up to n bytes of the stream (*used says how many: fewer when the
 * buffer holds a complete request, or is full) and parses what it has;
 * data may be NULL (no new bytes: parse what is buffered).
 * EML_OK with *req NULL: more bytes are needed.  EML_OK with *req set: a
 * complete request, returned again by every call until eml_http_next.
 * An error: the request is refused and the stream cannot be trusted past
 * it; *http_status is the status to answer with (400, 413, 414, 417, 431,
 * 500, 501, 505) before closing, err the reason.  The error is sticky:
 * every later call returns it.  Bytes may arrive split anywhere; the
 * outcome does not depend on where. */
EML_MUST_CHECK eml_status eml_http_feed(eml_http_parser *p, const void *data,
                                        size_t n, size_t *used,
                                        const eml_http_request **req,
                                        int *http_status, eml_err *err);

/* Drops the complete request; parsing goes on with the bytes already
 * buffered after it.  A no-op without a complete request. */
void eml_http_next(eml_http_parser *p);

/* 1 once per request, when its headers are in, it asked for
 * "100-continue" and its body is not: the moment to send
 * eml_http_write_continue.  0 otherwise. */
int eml_http_take_continue(eml_http_parser *p);

/* Bytes held that are not part of a request returned so far. */
size_t eml_http_buffered(const eml_http_parser *p);

/* 1 if the media type of a Content-Type value is `type` ("type/subtype",
 * compared without case; parameters after ';' ignored). */
int eml_http_media_is(const char *content_type, const char *type);

/* ==== output buffers ==== */

/* A growable buffer (malloc'd, at most max bytes) or a fixed one over the
 * caller's memory.  A write that does not fit fails with EML_ERR_RANGE,
 * leaving the buffer as it was before that write. */
typedef struct eml_http_buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    size_t max;
    int fixed;
} eml_http_buf;

void eml_http_buf_init(eml_http_buf *b, size_t max);
void eml_http_buf_init_fixed(eml_http_buf *b, void *mem, size_t cap);
/* len = 0; the memory stays. */
void eml_http_buf_reset(eml_http_buf *b);
/* Wipes what was written; frees growable memory.  NULL is a no-op. */
void eml_http_buf_free(eml_http_buf *b);
EML_MUST_CHECK eml_status eml_http_buf_put(eml_http_buf *b, const void *src,
                                           size_t n, eml_err *err);
EML_MUST_CHECK eml_status eml_http_buf_printf(eml_http_buf *b, eml_err *err,
                                              const char *fmt, ...)
    EML_PRINTF(3, 4);

/* ==== the response writer ==== */

typedef struct eml_http_header {
    const char *name;  /* a token; not Content-Length, -Type, Connection */
    const char *value; /* no control bytes */
} eml_http_header;

typedef struct eml_http_response {
    int status;               /* one eml_http_reason knows */
    const char *content_type; /* NULL: no Content-Type */
    int keep_alive;           /* Connection: keep-alive, or close */
    const eml_http_header *extra;
    size_t n_extra;
    const void *body;
    size_t body_len;
} eml_http_response;

/* The standard reason phrase of a status, or NULL if it is not one this
 * writer sends. */
const char *eml_http_reason(int status);

/* Appends "HTTP/1.1 <status> <reason>", Content-Type, Content-Length,
 * Connection, the extra headers and the body.  EML_ERR_INVALID for an
 * unknown status, a malformed extra header, or a body on 1xx/204/304;
 * EML_ERR_RANGE when it does not fit. */
EML_MUST_CHECK eml_status eml_http_write_response(eml_http_buf *out,
                                                  const eml_http_response *r,
                                                  eml_err *err);
/* "HTTP/1.1 100 Continue" and a blank line. */
EML_MUST_CHECK eml_status eml_http_write_continue(eml_http_buf *out,
                                                  eml_err *err);
/* A response with TensorFlow Serving's error body {"error": "<msg>"}
 * (application/json; msg JSON-escaped, bytes above 0x7e shown as '?');
 * allow, if not NULL, becomes an Allow header (405). */
EML_MUST_CHECK eml_status eml_http_write_error(eml_http_buf *out, int status,
                                               int keep_alive,
                                               const char *allow,
                                               const char *msg, eml_err *err);

/* ==== routes (TensorFlow Serving's REST API) ==== */

#define EML_HTTP_MODEL_NAME_MAX 64

typedef enum eml_http_route_kind {
    EML_ROUTE_NONE,         /* status says 404 or 405 */
    EML_ROUTE_PREDICT,      /* POST /v1/models/NAME[/versions/N]:predict */
    EML_ROUTE_MODEL_STATUS, /* GET /v1/models/NAME[/versions/N] */
    EML_ROUTE_HEALTHZ,      /* GET /healthz */
    EML_ROUTE_METRICS,      /* GET /metrics */
} eml_http_route_kind;

typedef struct eml_http_route {
    eml_http_route_kind kind;
    int status;        /* 0 when routed, else 404 or 405 */
    const char *allow; /* for 405: the Allow header's value */
    char model[EML_HTTP_MODEL_NAME_MAX + 1]; /* [A-Za-z0-9._-]{1,64} */
    int has_version;
    uint64_t version; /* 1 .. 10^18 - 1 */
} eml_http_route;

/* Matches a target's path (the query is ignored) and method. */
void eml_http_route_match(eml_http_method method, const char *target,
                          eml_http_route *out);

/* ==== metrics (src/serve/metrics.c) ==== */

#define EML_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define EML_METRICS_LATENCY_BUCKETS 14 /* 1 ms .. 10 s, then +Inf */
#define EML_METRICS_BATCH_BUCKETS 10   /* 1 .. 256, then +Inf */

/* The server's counters: a plain struct, updated under the server's own
 * lock.  Histogram buckets count the observations that fell in each
 * bucket alone; the renderer makes them cumulative. */
typedef struct eml_metrics {
    uint64_t requests[500]; /* by status code - 100 */
    uint64_t latency[EML_METRICS_LATENCY_BUCKETS];
    double latency_sum; /* seconds */
    uint64_t latency_count;
    uint64_t batch[EML_METRICS_BATCH_BUCKETS];
    uint64_t batch_sum;
    uint64_t batch_count;
    int64_t queue_depth;
    int64_t connections;
    uint64_t tls_handshake_failures;
    uint64_t stream_malformed; /* queue entries refused as malformed */
} eml_metrics;

void eml_metrics_init(eml_metrics *m);
/* One answered request: its status (100..599; others are not counted)
 * and the seconds it took (a negative or non-finite time counts as 0). */
void eml_metrics_request(eml_metrics *m, int status, double seconds);
/* One batch run through the model. */
void eml_metrics_batch(eml_metrics *m, size_t batch);
/* Appends the Prometheus text exposition (version 0.0.4) of m. */
EML_MUST_CHECK eml_status eml_metrics_render(const eml_metrics *m,
                                             eml_http_buf *out, eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
