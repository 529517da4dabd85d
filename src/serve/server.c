/*
 * server.c - the attested inference server inside the enclave (serve.h,
 * docs/serve.md): TLS sessions that end here, HTTP/1.1 on them, and the
 * model's predictions in dynamic batches across connections.
 *
 * A connection is a TLS session (tls.c) over the host's relayed
 * ciphertext, an HTTP parser (http.c), and what it is doing:
 *   - handshaking, then waiting for a request: the request must be whole
 *     within header_timeout_ms of its first byte (408 after), and an idle
 *     keep-alive connection is closed after idle_timeout_ms;
 *   - one request at a time: a predict joins the queue, and the
 *     connection reads nothing more until it is answered (pipelined bytes
 *     wait in the parser and the TLS session), so answers keep the order
 *     of requests without bookkeeping;
 *   - closing: the answer (and TLS close_notify) go out, then the host is
 *     told to close.
 * A connection over max_conns gets its handshake and then 503.
 *
 * The queue runs when it holds max_batch examples, or when its oldest
 * request has waited max_wait_ms: whole requests go into a forward pass
 * up to max_batch examples (a larger request runs alone, in passes).
 * With the queue on (eml_server_queue_start, server_queue.c) a predict
 * goes to the workers at once instead, and its connection waits for
 * their reply.
 *
 * Trusted code: memory only.  The events are hostile; a connection's
 * buffered ciphertext is bounded (a peer that sends faster than it is
 * served is cut off), and every buffer holding plaintext is wiped.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/predict_io.h"
#include "enclaveml/serve.h"

#include "serve/server_internal.h"

void eml_server_opts_default(eml_server_opts *o)
{
    memset(o, 0, sizeof(*o));
    snprintf(o->model_name, sizeof(o->model_name), "model");
    o->max_batch = 64;
    o->max_wait_ms = 5;
    o->max_conns = 256;
    o->header_timeout_ms = 10000;
    o->idle_timeout_ms = 60000;
    o->max_instances = 1024;
    o->kernels = EML_KERNELS_FAST;
}

const eml_metrics *eml_server_metrics(const eml_server *s)
{
    return &s->metrics;
}

/* ==== connections ==== */

static void conn_free(eml_server *s, conn *c)
{
    if (!c->live) return;
    eml_tls_conn_free(c->tls);
    eml_http_parser_free(c->http);
    if (c->rest != NULL) eml_wipe(c->rest, PLAIN_CHUNK);
    free(c->rest);
    if (!c->refuse) s->open--;
    s->metrics.connections = s->open;
    memset(c, 0, sizeof(*c));
}

static conn *conn_find(eml_server *s, uint32_t id)
{
    for (int i = 0; i < s->n_slots; i++)
        if (s->conns[i].live && s->conns[i].id == id) return &s->conns[i];
    return NULL;
}

eml_status eml_srv_log(eml_server *s, eml_http_buf *out, uint32_t id,
                           const char *what, const char *why, eml_err *err)
{
    char line[EML_ERRMSG_MAX + 96];
    int n = snprintf(line, sizeof(line), "connection %u: %s%s%s", id, what,
                     why != NULL ? ": " : "", why != NULL ? why : "");
    if (n < 0) return EML_OK;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    return eml_serve_record_put(out, id, EML_SERVE_LOG, line, len, err);
}

static eml_status conn_open(eml_server *s, uint32_t id, eml_http_buf *out,
                            eml_err *err)
{
    if (conn_find(s, id) != NULL)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host opened connection %u twice", id);
    conn *c = NULL;
    for (int i = 0; i < s->n_slots && c == NULL; i++)
        if (!s->conns[i].live) c = &s->conns[i];
    if (c == NULL) { /* not even a slot to say 503 from */
        eml_status st = eml_srv_log(s, out, id, "refused",
                                 "too many connections", err);
        if (st == EML_OK)
            st = eml_serve_record_put(out, id, EML_SERVE_CLOSE, NULL, 0, err);
        return st;
    }
    memset(c, 0, sizeof(*c));
    if (eml_tls_conn_new(s->tls, &c->tls) != EML_OK ||
        eml_http_parser_new(&s->o.limits, &c->http, err) != EML_OK ||
        (c->rest = malloc(PLAIN_CHUNK)) == NULL) {
        eml_tls_conn_free(c->tls);
        eml_http_parser_free(c->http);
        memset(c, 0, sizeof(*c));
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory for a "
                                               "connection");
    }
    c->live = 1;
    c->id = id;
    c->since = s->now;
    c->refuse = s->open >= s->o.max_conns;
    if (!c->refuse) s->open++;
    s->metrics.connections = s->open;
    return EML_OK;
}

/* ==== answers ==== */

/* The answer to a request of c (already written into s->resp) through
 * TLS; closing unless keep_alive. */
static eml_status send_resp(eml_server *s, conn *c, int status, int keep,
                            uint64_t t0)
{
    eml_status st = eml_tls_conn_write(c->tls, s->resp.p, s->resp.len);
    eml_wipe(s->resp.p, s->resp.len);
    eml_http_buf_reset(&s->resp);
    eml_metrics_request(&s->metrics, status,
                        (double)(s->now - t0) / 1000.0);
    if (st != EML_OK || !keep) c->closing = 1;
    c->since = s->now;
    return EML_OK;
}

eml_status eml_srv_answer_error(eml_server *s, conn *c, int status, int keep,
                               const char *msg, const char *allow,
                               uint64_t t0, eml_err *err)
{
    eml_http_buf_reset(&s->resp);
    eml_status st = eml_http_write_error(&s->resp, status, keep, allow, msg,
                                         err);
    if (st != EML_OK) return st;
    return send_resp(s, c, status, keep, t0);
}

eml_status eml_srv_answer(eml_server *s, conn *c, int status, int keep,
                         const char *ctype, const void *body, size_t n,
                         uint64_t t0, eml_err *err)
{
    eml_http_buf_reset(&s->resp);
    eml_http_response r = {status, ctype, keep, NULL, 0, body, n};
    eml_status st = eml_http_write_response(&s->resp, &r, err);
    if (st != EML_OK) return st;
    return send_resp(s, c, status, keep, t0);
}

static eml_status answer_metrics(eml_server *s, conn *c, int keep,
                                 eml_err *err)
{
    eml_http_buf_reset(&s->body);
    s->metrics.queue_depth = (int64_t)s->queued;
    eml_status st = eml_metrics_render(&s->metrics, &s->body, err);
    if (st == EML_OK && s->queue != NULL)
        st = eml_srvq_metrics(s, &s->body, err);
    if (st != EML_OK) return st;
    return eml_srv_answer(s, c, 200, keep, EML_METRICS_CONTENT_TYPE,
                          s->body.p, s->body.len, s->now, err);
}

static eml_status answer_status(eml_server *s, conn *c, int keep,
                                eml_err *err)
{
    static const char body[] =
        "{\"model_version_status\": [{\"version\": \"1\", \"state\": "
        "\"AVAILABLE\", \"status\": {\"error_code\": \"OK\", "
        "\"error_message\": \"\"}}]}";
    return eml_srv_answer(s, c, 200, keep, "application/json", body,
                  sizeof(body) - 1, s->now, err);
}

/* ==== the queue ==== */

static eml_status enqueue(eml_server *s, conn *c,
                          const eml_http_request *req, eml_err *err)
{
    job j;
    memset(&j, 0, sizeof(j));
    int code = 0;
    eml_err perr = {0};
    eml_status st = eml_predict_decode(req, s->item, s->o.max_instances,
                                       &j.in, &code, &perr);
    if (st == EML_ERR_NOMEM) return eml_err_set(err, st, "out of memory");
    if (st != EML_OK)
        return eml_srv_answer_error(s, c, code, req->keep_alive, perr.msg,
                                    NULL, s->now, err);
    if (s->queue == NULL && s->qn == s->qcap) {
        int cap = s->qcap * 2;
        job *q = malloc((size_t)cap * sizeof(*q));
        if (q == NULL) {
            eml_predict_input_free(&j.in);
            return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        }
        for (int i = 0; i < s->qn; i++) q[i] = s->q[(s->qh + i) % s->qcap];
        free(s->q);
        s->q = q;
        s->qh = 0;
        s->qcap = cap;
    }
    j.conn_id = c->id;
    j.slot = (int)(c - s->conns);
    j.keep_alive = req->keep_alive;
    j.t0 = s->now;
    if (s->queue != NULL) return eml_srvq_submit(s, c, &j, err);
    s->q[(s->qh + s->qn) % s->qcap] = j;
    s->qn++;
    s->queued += j.in.n;
    c->busy = 1;
    return EML_OK;
}

/* n examples x through the net into probs, in passes of at most
 * max_batch. */
static eml_status forward(eml_server *s, const float *x, size_t n,
                          float *probs)
{
    size_t mb = (size_t)s->o.max_batch;
    for (size_t first = 0; first < n; first += mb) {
        size_t k = n - first < mb ? n - first : mb;
        memcpy(eml_net_input(s->ws), x + first * s->item,
               k * s->item * sizeof(float));
        eml_status st = eml_net_forward(s->ws, (int)k, 0);
        if (st != EML_OK) return st;
        memcpy(probs + first * s->n_out, eml_net_output(s->ws),
               k * s->n_out * sizeof(float));
    }
    return EML_OK;
}

/* The answer to a job whose probabilities are p. */
static eml_status finish(eml_server *s, job *j, const float *p, eml_err *err)
{
    conn *c = &s->conns[j->slot];
    if (!c->live || c->id != j->conn_id) return EML_OK; /* it went away */
    c->busy = 0;
    eml_http_buf_reset(&s->body);
    const char *ctype = NULL;
    eml_status st = eml_predict_encode(&s->body, j->in.form, p, j->in.n,
                                       s->n_out, &ctype, err);
    if (st != EML_OK)
        return eml_srv_answer_error(s, c, 500, 0,
                                    "the answer could not be encoded", NULL,
                                    j->t0, err);
    st = eml_srv_answer(s, c, 200, j->keep_alive, ctype, s->body.p,
                        s->body.len, j->t0, err);
    eml_wipe(s->body.p, s->body.len);
    return st;
}

/* One batch from the front of the queue: whole jobs up to max_batch
 * examples (at least one job). */
static eml_status run_batch(eml_server *s, eml_err *err)
{
    size_t mb = (size_t)s->o.max_batch, total = 0;
    int take = 0;
    while (take < s->qn) {
        size_t n = s->q[(s->qh + take) % s->qcap].in.n;
        if (take > 0 && total + n > mb) break;
        total += n;
        take++;
    }
    eml_status st = EML_OK;
    if (take == 1) {
        job *j = &s->q[s->qh];
        float *p = total <= mb ? s->probs : malloc(total * s->n_out * 4);
        if (p == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        st = forward(s, j->in.x, total, p);
        if (st == EML_OK) st = finish(s, j, p, err);
        else st = eml_err_set(err, st, "the forward pass failed");
        if (p != s->probs) free(p);
    } else {
        float *x = eml_net_input(s->ws);
        size_t at = 0;
        for (int i = 0; i < take; i++) {
            const job *j = &s->q[(s->qh + i) % s->qcap];
            memcpy(x + at * s->item, j->in.x, j->in.n * s->item * 4);
            at += j->in.n;
        }
        st = eml_net_forward(s->ws, (int)total, 0);
        if (st != EML_OK) return eml_err_set(err, st, "the forward pass "
                                                      "failed");
        memcpy(s->probs, eml_net_output(s->ws), total * s->n_out * 4);
        at = 0;
        for (int i = 0; i < take && st == EML_OK; i++) {
            job *j = &s->q[(s->qh + i) % s->qcap];
            st = finish(s, j, s->probs + at * s->n_out, err);
            at += j->in.n;
        }
    }
    eml_metrics_batch(&s->metrics, total);
    for (int i = 0; i < take; i++) {
        job *j = &s->q[s->qh];
        s->queued -= j->in.n;
        eml_predict_input_free(&j->in);
        s->qh = (s->qh + 1) % s->qcap;
        s->qn--;
    }
    return st;
}

static eml_status run_due(eml_server *s, eml_err *err)
{
    eml_status st = EML_OK;
    while (st == EML_OK && s->qn > 0 &&
           (s->queued >= (size_t)s->o.max_batch ||
            s->now >= s->q[s->qh].t0 + (uint64_t)s->o.max_wait_ms))
        st = run_batch(s, err);
    return st;
}

/* ==== requests ==== */

static eml_status handle(eml_server *s, conn *c, const eml_http_request *req,
                         eml_err *err)
{
    int keep = req->keep_alive;
    eml_http_route r;
    eml_http_route_match(req->method, req->target, &r);
    if (r.kind == EML_ROUTE_NONE)
        return eml_srv_answer_error(s, c, r.status, keep,
                            r.status == 405 ? "method not allowed here"
                                            : "no such path",
                            r.allow, s->now, err);
    if (r.kind == EML_ROUTE_HEALTHZ)
        return eml_srv_answer(s, c, 200, keep, "text/plain", "ok\n", 3,
                              s->now, err);
    if (r.kind == EML_ROUTE_METRICS) return answer_metrics(s, c, keep, err);
    if (strcmp(r.model, s->o.model_name) != 0 ||
        (r.has_version && r.version != 1)) {
        char msg[3 * EML_HTTP_MODEL_NAME_MAX + 64];
        snprintf(msg, sizeof(msg), "no model '%s'%s; this server has '%s'",
                 r.model, r.has_version ? " of that version" : "",
                 s->o.model_name);
        return eml_srv_answer_error(s, c, 404, keep, msg, NULL, s->now, err);
    }
    if (r.kind == EML_ROUTE_MODEL_STATUS) return answer_status(s, c, keep, err);
    return enqueue(s, c, req, err);
}

/* Feeds what c has decrypted into its parser and acts on each complete
 * request, until it waits for a predict, needs more bytes, or closes. */
static eml_status pump(eml_server *s, conn *c, eml_http_buf *out,
                       eml_err *err)
{
    while (!c->busy && !c->closing) {
        size_t used = 0;
        const eml_http_request *req = NULL;
        int code = 0;
        eml_err herr = {0};
        eml_status st = eml_http_feed(c->http, c->rest_n ? c->rest : NULL,
                                      c->rest_n, &used, &req, &code, &herr);
        memmove(c->rest, c->rest + used, c->rest_n - used);
        c->rest_n -= used;
        if (st != EML_OK) {
            st = eml_srv_log(s, out, c->id, "a bad request", herr.msg, err);
            if (st == EML_OK)
                st = eml_srv_answer_error(s, c, code, 0, herr.msg, NULL,
                                          s->now, err);
            return st;
        }
        if (req != NULL) {
            if (c->refuse) {
                st = eml_srv_answer_error(s, c, 503, 0, "too many connections",
                                  NULL, s->now, err);
            } else {
                st = handle(s, c, req, err);
            }
            eml_http_next(c->http);
            if (st != EML_OK) return st;
            continue;
        }
        if (c->rest_n > 0) {
            if (used == 0) return EML_OK; /* cannot happen: wait (408) */
            continue; /* the parser took some: again */
        }
        size_t got = 0;
        int closed = 0;
        st = eml_tls_conn_read(c->tls, c->rest, PLAIN_CHUNK, &got, &closed);
        if (st != EML_OK) {
            if (!c->established) s->metrics.tls_handshake_failures++;
            c->closing = 1;
            return eml_srv_log(s, out, c->id,
                            c->established ? "a broken TLS record"
                                           : "the TLS handshake failed",
                            NULL, err);
        }
        if (!c->established && eml_tls_conn_established(c->tls)) {
            c->established = 1;
            c->since = s->now;
        }
        if (got > 0 && eml_http_buffered(c->http) == 0)
            c->since = s->now; /* a request's first bytes: its clock */
        c->rest_n = got;
        if (got == 0) {
            if (closed) c->closing = 1;
            return EML_OK;
        }
    }
    return EML_OK;
}

/* ==== timeouts and output ==== */

/* When c's wait ends (0: never), and whether that is a 408. */
static uint64_t conn_deadline(const eml_server *s, const conn *c, int *is408)
{
    *is408 = 0;
    if (!c->live || c->busy || c->closing) return 0;
    if (!c->established || c->rest_n > 0 || eml_http_buffered(c->http) > 0) {
        *is408 = c->established;
        return c->since + (uint64_t)s->o.header_timeout_ms;
    }
    return c->since + (uint64_t)s->o.idle_timeout_ms;
}

static eml_status timeouts(eml_server *s, eml_http_buf *out, eml_err *err)
{
    for (int i = 0; i < s->n_slots; i++) {
        conn *c = &s->conns[i];
        int is408;
        uint64_t d = conn_deadline(s, c, &is408);
        if (d == 0 || s->now < d) continue;
        eml_status st = eml_srv_log(s, out, c->id,
                                    is408 ? "request timeout (408)"
                                          : "closed after its timeout",
                                    NULL, err);
        if (st == EML_OK && is408)
            st = eml_srv_answer_error(s, c, 408, 0,
                                      "the request took too long", NULL,
                                      c->since, err);
        c->closing = 1;
        if (st != EML_OK) return st;
    }
    return s->queue != NULL ? eml_srvq_timeouts(s, out, err) : EML_OK;
}

/* Each connection's ciphertext out, and CLOSE for those done. */
static eml_status outputs(eml_server *s, eml_http_buf *out, eml_err *err)
{
    for (int i = 0; i < s->n_slots; i++) {
        conn *c = &s->conns[i];
        if (!c->live) continue;
        if (c->closing) eml_tls_conn_close(c->tls);
        size_t n = eml_tls_conn_pending(c->tls);
        while (n > 0) {
            size_t piece = n < PLAIN_CHUNK ? n : PLAIN_CHUNK;
            uint8_t *buf = s->plain;
            size_t got = eml_tls_conn_pull(c->tls, buf, piece);
            if (got == 0) break;
            eml_status st = eml_serve_record_put(out, c->id, EML_SERVE_SEND,
                                                 buf, got, err);
            if (st != EML_OK) return st;
            n -= got;
        }
        if (c->closing) {
            eml_status st = eml_serve_record_put(out, c->id, EML_SERVE_CLOSE,
                                                 NULL, 0, err);
            if (st != EML_OK) return st;
            conn_free(s, c);
        }
    }
    return EML_OK;
}

static uint64_t next_deadline(const eml_server *s)
{
    uint64_t d = 0;
    if (s->qn > 0) d = s->q[s->qh].t0 + (uint64_t)s->o.max_wait_ms;
    if (s->queue != NULL) d = eml_srvq_deadline(s);
    for (int i = 0; i < s->n_slots; i++) {
        int is408;
        uint64_t c = conn_deadline(s, &s->conns[i], &is408);
        if (c != 0 && (d == 0 || c < d)) d = c;
    }
    return d;
}

/* ==== the host's events ==== */

static eml_status event(eml_server *s, const eml_serve_record *r,
                        eml_http_buf *out, eml_err *err)
{
    if (r->kind == EML_SERVE_OPEN) return conn_open(s, r->conn, out, err);
    if (r->kind == EML_SERVE_REPLY || r->kind == EML_SERVE_WORKER) {
        if (s->queue == NULL)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "a queue record, but the queue is off");
        return eml_srvq_event(s, r, out, err);
    }
    if (r->kind != EML_SERVE_DATA && r->kind != EML_SERVE_CLOSED)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host sent a record of kind %d", (int)r->kind);
    conn *c = conn_find(s, r->conn);
    if (c == NULL) return EML_OK; /* closed here already */
    if (r->kind == EML_SERVE_CLOSED) {
        conn_free(s, c);
        return EML_OK;
    }
    if (c->closing) return EML_OK;
    if (eml_tls_conn_push(c->tls, r->p, r->n) != EML_OK)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    /* A peer that sends far more than one request's worth while it
     * waits is cut off: what it sent stays bounded. */
    size_t limit = 2 * (s->o.limits.max_header + s->o.limits.max_body) +
                   ((size_t)1 << 20);
    if (c->busy && eml_tls_conn_buffered_in(c->tls) > limit) {
        c->closing = 1;
        return eml_srv_log(s, out, c->id, "cut off",
                           "it sent too much ahead", err);
    }
    return pump(s, c, out, err);
}

eml_status eml_server_io(eml_server *s, uint64_t now_ms,
                         const uint8_t *events, size_t len, eml_http_buf *out,
                         uint64_t *deadline_ms, eml_err *err)
{
    if (now_ms > s->now) s->now = now_ms; /* the host's clock, not trusted
                                             to go forward */
    s->out = out;
    size_t off = 0;
    eml_serve_record r;
    eml_status st;
    while ((st = eml_serve_record_next(events, len, &off, &r)) == EML_OK) {
        st = event(s, &r, out, err);
        if (st != EML_OK) return st;
    }
    if (st != EML_ERR_NOTFOUND)
        return eml_err_set(err, st, "a malformed event list");
    st = run_due(s, err);
    /* answered connections take their next pipelined request */
    for (int i = 0; st == EML_OK && i < s->n_slots; i++)
        if (s->conns[i].live && !s->conns[i].busy && !s->conns[i].closing)
            st = pump(s, &s->conns[i], out, err);
    if (st == EML_OK) st = run_due(s, err);
    if (st == EML_OK) st = timeouts(s, out, err);
    if (st == EML_OK) st = outputs(s, out, err);
    *deadline_ms = next_deadline(s);
    return st;
}

/* ==== life ==== */

/* int8: the ranges of the model owner's calibration images, run through
 * the workspace in fp32, here in the enclave. */
static eml_status calibrate(const eml_model *m, eml_net *ws, size_t mb,
                            eml_err *err)
{
    const float *x = NULL;
    size_t n = eml_model_calibration(m, &x), item = eml_model_input_size(m);
    if (n == 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "int8 needs calibration images in the model's "
                           "file (enclaveml convert --calibration DIR)");
    eml_net_calibrate(ws, 1);
    eml_status st = EML_OK;
    for (size_t first = 0; first < n && st == EML_OK; first += mb) {
        size_t k = n - first < mb ? n - first : mb;
        memcpy(eml_net_input(ws), x + first * item, k * item * sizeof(float));
        st = eml_net_forward(ws, (int)k, 0);
    }
    eml_net_calibrate(ws, 0);
    return st == EML_OK ? EML_OK
                        : eml_err_set(err, st, "calibration failed");
}

eml_status eml_serve_workspace(const eml_model *m, eml_kernels_kind kernels,
                               eml_precision precision, int max_batch,
                               eml_net **out, eml_err *err)
{
    eml_net *ws = NULL;
    *out = NULL;
    eml_status st = eml_model_workspace(m, kernels, max_batch, &ws, err);
    if (st != EML_OK) return st;
    if (precision == EML_PREC_INT8)
        st = calibrate(m, ws, (size_t)max_batch, err);
    if (st == EML_OK) st = eml_net_set_precision(ws, precision, err);
    if (st != EML_OK) {
        eml_net_free(ws);
        return st;
    }
    *out = ws;
    return EML_OK;
}

eml_status eml_server_new(const eml_model *m, eml_tls_server *tls,
                          const eml_server_opts *o, eml_server **out,
                          eml_err *err)
{
    *out = NULL;
    if (o->max_batch < 1 || o->max_batch > 4096 || o->max_wait_ms < 0 ||
        o->max_conns < 1 || o->max_conns > 65536 ||
        o->header_timeout_ms < 1 || o->idle_timeout_ms < 1 ||
        o->max_instances < 1)
        return eml_err_set(err, EML_ERR_INVALID, "bad server options");
    eml_server *s = calloc(1, sizeof(*s));
    if (s == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    s->m = m;
    s->tls = tls;
    s->o = *o;
    if (s->o.limits.max_header == 0)
        s->o.limits.max_header = EML_HTTP_MAX_HEADER_DEFAULT;
    if (s->o.limits.max_body == 0)
        s->o.limits.max_body = EML_HTTP_MAX_BODY_DEFAULT;
    s->item = eml_model_input_size(m);
    s->n_out = eml_model_output_size(m);
    s->n_slots = o->max_conns + REFUSE_SLOTS;
    s->qcap = 64;
    eml_metrics_init(&s->metrics);
    eml_http_buf_init(&s->resp, EML_SERVE_IO_MAX);
    eml_http_buf_init(&s->body, EML_SERVE_IO_MAX);
    eml_status st = eml_serve_workspace(m, o->kernels, o->precision,
                                        o->max_batch, &s->ws, err);
    if (st != EML_OK) {
        free(s);
        return st;
    }
    s->conns = calloc((size_t)s->n_slots, sizeof(*s->conns));
    s->q = malloc((size_t)s->qcap * sizeof(*s->q));
    s->plain = malloc(PLAIN_CHUNK);
    s->probs = malloc((size_t)o->max_batch * s->n_out * sizeof(float));
    if (s->conns == NULL || s->q == NULL || s->plain == NULL ||
        s->probs == NULL) {
        eml_server_free(s);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return EML_OK;
}

void eml_server_free(eml_server *s)
{
    if (s == NULL) return;
    for (int i = 0; s->conns != NULL && i < s->n_slots; i++)
        conn_free(s, &s->conns[i]);
    for (int i = 0; s->q != NULL && i < s->qn; i++)
        eml_predict_input_free(&s->q[(s->qh + i) % s->qcap].in);
    eml_srvq_free(s->queue);
    free(s->conns);
    free(s->q);
    if (s->plain != NULL) eml_wipe(s->plain, PLAIN_CHUNK);
    free(s->plain);
    free(s->probs);
    eml_http_buf_free(&s->resp);
    eml_http_buf_free(&s->body);
    eml_net_free(s->ws);
    free(s);
}
