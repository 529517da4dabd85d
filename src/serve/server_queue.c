/*
 * server_queue.c - the front end's side of the queue (serve.h,
 * docs/serve.md, "Scale-out through Redis Streams"): with the queue on,
 * a predict is sealed under the queue key K and handed to the host as an
 * entry for the request stream; the connection waits until a worker's
 * reply comes back through the host, and gets 504 if none comes in time.
 * Workers' reports come through the host too; those of this enclave's
 * own measurement, bound to this stream and their name, get K wrapped to
 * their X25519 key.
 *
 * Never answered twice: the outstanding requests are kept by id; the
 * first authentic reply for an id answers (or, if its client went away,
 * completes) it, and any later one - a claimed entry that its slow first
 * worker finished as well, or a reply after the 504 - is counted as a
 * duplicate and dropped.
 *
 * Trusted code: memory only.  K lives in locked memory; everything the
 * host hands in (replies, reports) is hostile: copied into the frame,
 * checked, authenticated, then used; a bad one is counted, logged and
 * dropped, and the server goes on.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "serve/server_internal.h"

typedef struct pending {
    uint8_t id[EML_QUEUE_ID_BYTES];
    uint32_t conn_id;
    int slot, keep_alive;
    uint64_t t0, deadline;
    size_t n;
    eml_predict_form form; /* how the answer is encoded */
} pending;

struct eml_srv_queue {
    uint8_t *key; /* K: 32 bytes of locked memory */
    uint8_t fe[EML_QUEUE_ID_BYTES];
    char fe_hex[EML_QUEUE_ID_HEX + 1];
    eml_server_queue_opts o;
    pending *pend; /* outstanding requests, in no order */
    size_t n_pend, cap;
    eml_queue_metrics m;
};

const eml_queue_metrics *eml_server_queue_metrics(const eml_server *s)
{
    return s->queue != NULL ? &s->queue->m : NULL;
}

void eml_srvq_free(struct eml_srv_queue *q)
{
    if (q == NULL) return;
    eml_secure_free(q->key, 32);
    free(q->pend);
    eml_wipe(q, sizeof(*q));
    free(q);
}

eml_status eml_server_queue_start(eml_server *s,
                                  const eml_server_queue_opts *o,
                                  uint8_t fe[EML_QUEUE_ID_BYTES],
                                  eml_err *err)
{
    if (s->queue != NULL)
        return eml_err_set(err, EML_ERR_INVALID, "the queue is on already");
    if (!eml_queue_name_ok((const uint8_t *)o->stream, strlen(o->stream)) ||
        o->timeout_ms < 1 || o->platform.backend == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "bad queue options");
    struct eml_srv_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    q->o = *o;
    q->cap = 2 * (size_t)s->n_slots;
    q->key = eml_secure_alloc(32);
    q->pend = calloc(q->cap, sizeof(*q->pend));
    eml_status st = q->key != NULL && q->pend != NULL ? EML_OK
                                                      : EML_ERR_NOMEM;
    if (st == EML_OK) st = eml_random_secret(q->key, 32);
    if (st == EML_OK) st = eml_random(q->fe, sizeof(q->fe));
    if (st != EML_OK) {
        eml_srvq_free(q);
        return eml_err_set(err, st, "cannot start the queue");
    }
    eml_hex(q->fe_hex, q->fe, sizeof(q->fe));
    memcpy(fe, q->fe, sizeof(q->fe));
    s->queue = q;
    return EML_OK;
}

/* A LOG record "queue: ..." (conn 0). */
static eml_status qlog(eml_http_buf *out, eml_err *err, const char *fmt,
                       ...) EML_PRINTF(3, 4);
static eml_status qlog(eml_http_buf *out, eml_err *err, const char *fmt, ...)
{
    char line[EML_ERRMSG_MAX + 160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0) return EML_OK;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    return eml_serve_record_put(out, 0, EML_SERVE_LOG, line, len, err);
}

static eml_queue_bind bind_of(const struct eml_srv_queue *q,
                              const uint8_t id[EML_QUEUE_ID_BYTES])
{
    eml_queue_bind b;
    b.key = q->key;
    b.stream = q->o.stream;
    memcpy(b.id, id, EML_QUEUE_ID_BYTES);
    memcpy(b.fe, q->fe, EML_QUEUE_ID_BYTES);
    return b;
}

static void pending_drop(eml_server *s, size_t i)
{
    struct eml_srv_queue *q = s->queue;
    s->queued -= q->pend[i].n;
    q->pend[i] = q->pend[q->n_pend - 1];
    q->n_pend--;
}

/* ==== requests out ==== */

/* The entry for j: sealed, then its fields into the turn's outputs. */
static eml_status put_entry(eml_server *s, const pending *p, job *j,
                            eml_err *err)
{
    struct eml_srv_queue *q = s->queue;
    eml_queue_bind b = bind_of(q, p->id);
    uint8_t *body = NULL;
    size_t body_n = 0;
    eml_status st = eml_queue_request_seal(&b, j->in.form, j->in.x, j->in.n,
                                           s->item, eml_model_sha256(s->m),
                                           &body, &body_n, err);
    if (st != EML_OK) return st;
    char id_hex[EML_QUEUE_ID_HEX + 1];
    eml_hex(id_hex, p->id, EML_QUEUE_ID_BYTES);
    eml_queue_field f[3] = {
        {(const uint8_t *)"id", 2, (const uint8_t *)id_hex, EML_QUEUE_ID_HEX},
        {(const uint8_t *)"fe", 2, (const uint8_t *)q->fe_hex,
         EML_QUEUE_ID_HEX},
        {(const uint8_t *)"body", 4, body, body_n}};
    st = eml_queue_fields_put(s->out, 0, EML_SERVE_ENQUEUE, f, 3, err);
    free(body); /* ciphertext */
    return st;
}

eml_status eml_srvq_submit(eml_server *s, conn *c, job *j, eml_err *err)
{
    struct eml_srv_queue *q = s->queue;
    pending p;
    memset(&p, 0, sizeof(p));
    eml_status st = EML_OK;
    const char *busy = NULL;
    if (q->n_pend == q->cap) busy = "too many requests wait for workers";
    if (busy == NULL) st = eml_random(p.id, sizeof(p.id));
    if (busy == NULL && st == EML_OK) {
        eml_err perr = {0};
        st = put_entry(s, &p, j, &perr);
        if (st == EML_ERR_RANGE) busy = "the queue's turn is full";
        else if (st != EML_OK) eml_err_set(err, st, "%s", perr.msg);
    }
    p.conn_id = j->conn_id;
    p.slot = j->slot;
    p.keep_alive = j->keep_alive;
    p.t0 = j->t0;
    p.deadline = j->t0 + (uint64_t)q->o.timeout_ms;
    p.n = j->in.n;
    p.form = j->in.form;
    eml_predict_input_free(&j->in); /* wiped: it left sealed, or not */
    if (busy != NULL)
        return eml_srv_answer_error(s, c, 503, p.keep_alive, busy, NULL,
                                    p.t0, err);
    if (st != EML_OK) return st;
    q->pend[q->n_pend++] = p;
    s->queued += p.n;
    q->m.sent++;
    c->busy = 1;
    return EML_OK;
}

/* ==== replies in ==== */

/* The connection still waiting for p, or NULL (it went away). */
static conn *waiting(eml_server *s, const pending *p)
{
    conn *c = &s->conns[p->slot];
    return c->live && c->id == p->conn_id && c->busy ? c : NULL;
}

/* The first reply for p: its answer to the client, if still there. */
static eml_status complete(eml_server *s, const pending *p,
                           eml_queue_status status, const float *probs,
                           eml_err *err)
{
    conn *c = waiting(s, p);
    if (c == NULL) return EML_OK; /* the client went away: dropped */
    c->busy = 0;
    if (status != EML_QUEUE_OK)
        return eml_srv_answer_error(
            s, c, 500, p->keep_alive,
            status == EML_QUEUE_OTHER_MODEL
                ? "the worker serves another model"
                : "the worker could not run the model",
            NULL, p->t0, err);
    eml_http_buf_reset(&s->body);
    const char *ctype = NULL;
    eml_status st = eml_predict_encode(&s->body, p->form, probs, p->n, s->n_out,
                                       &ctype, err);
    if (st != EML_OK)
        return eml_srv_answer_error(s, c, 500, 0,
                                    "the answer could not be encoded", NULL,
                                    p->t0, err);
    st = eml_srv_answer(s, c, 200, p->keep_alive, ctype, s->body.p,
                        s->body.len, p->t0, err);
    eml_wipe(s->body.p, s->body.len);
    return st;
}

static eml_status reply(eml_server *s, const eml_serve_record *r,
                        eml_http_buf *out, eml_err *err)
{
    static const char *const names[3] = {"id", "worker", "body"};
    struct eml_srv_queue *q = s->queue;
    eml_queue_field f[3];
    uint8_t id[EML_QUEUE_ID_BYTES];
    eml_err why = {0};
    eml_status st = eml_queue_fields_expect(r->p, r->n, names, 3, f, &why);
    if (st == EML_OK && eml_queue_id_parse(id, f[0].p, f[0].n) != 0)
        st = eml_err_set(&why, EML_ERR_FORMAT, "its id is not 32 hex digits");
    eml_queue_status status = EML_QUEUE_OK;
    size_t n = 0, n_out = 0;
    float *probs = NULL;
    if (st == EML_OK) {
        eml_queue_bind b = bind_of(q, id);
        st = eml_queue_reply_open(&b, f[2].p, f[2].n, s->o.max_instances,
                                  &status, &n, &n_out, &probs, &why);
    }
    if (st == EML_ERR_NOMEM) return eml_err_set(err, st, "out of memory");
    size_t i = 0;
    while (st == EML_OK && i < q->n_pend &&
           !eml_ct_equal(q->pend[i].id, id, EML_QUEUE_ID_BYTES))
        i++;
    if (st == EML_OK && i == q->n_pend) { /* answered already */
        q->m.duplicates++;
        if (probs != NULL) eml_wipe(probs, n * n_out * sizeof(float));
        free(probs);
        return EML_OK;
    }
    if (st == EML_OK &&
        (n != q->pend[i].n || (status == EML_QUEUE_OK && n_out != s->n_out)))
        st = eml_err_set(&why, EML_ERR_FORMAT,
                         "%zu answers of %zu values for a request of %zu "
                         "instances", n, n_out, q->pend[i].n);
    if (st == EML_OK) {
        pending p = q->pend[i];
        pending_drop(s, i);
        q->m.answered++;
        st = complete(s, &p, status, probs, err);
    } else {
        s->metrics.stream_malformed++;
        st = qlog(out, err, "queue: a reply entry refused: %s", why.msg);
    }
    if (probs != NULL) eml_wipe(probs, n * n_out * sizeof(float));
    free(probs);
    return st;
}

/* ==== workers ==== */

static eml_status admit(eml_server *s, const eml_serve_record *r,
                        eml_http_buf *out, eml_err *err)
{
    static const char *const names[2] = {"name", "report"};
    struct eml_srv_queue *q = s->queue;
    eml_queue_field f[2];
    eml_err why = {0};
    char name[EML_QUEUE_NAME_MAX + 1] = "?";
    eml_status st = eml_queue_fields_expect(r->p, r->n, names, 2, f, &why);
    if (st == EML_OK && !eml_queue_name_ok(f[0].p, f[0].n))
        st = eml_err_set(&why, EML_ERR_FORMAT, "not a worker name");
    if (st == EML_OK) {
        memcpy(name, f[0].p, f[0].n);
        name[f[0].n] = '\0';
        if (f[1].n > EML_REPORT_MAX)
            st = eml_err_set(&why, EML_ERR_FORMAT, "a report over %d bytes",
                             EML_REPORT_MAX);
    }
    uint8_t wrapped[EML_QUEUE_WRAPPED_BYTES];
    if (st == EML_OK) {
        eml_queue_admission a = {&q->o.platform, q->o.measurement,
                                 q->o.stream};
        st = eml_queue_admit(&a, name, (const char *)f[1].p, f[1].n, q->key,
                             q->fe, wrapped, &why);
    }
    if (st != EML_OK) {
        q->m.refused++;
        return qlog(out, err, "queue: worker '%s' refused: %s", name,
                    why.msg);
    }
    q->m.admitted++;
    eml_queue_field k[2] = {{(const uint8_t *)"name", 4, f[0].p, f[0].n},
                            {(const uint8_t *)"key", 3, wrapped,
                             sizeof(wrapped)}};
    st = eml_queue_fields_put(out, 0, EML_SERVE_ADMIT, k, 2, err);
    if (st == EML_OK)
        st = qlog(out, err, "queue: worker '%s' admitted (its enclave is "
                            "this one's)", name);
    return st;
}

eml_status eml_srvq_event(eml_server *s, const eml_serve_record *r,
                          eml_http_buf *out, eml_err *err)
{
    return r->kind == EML_SERVE_REPLY ? reply(s, r, out, err)
                                      : admit(s, r, out, err);
}

/* ==== timeouts, metrics ==== */

eml_status eml_srvq_timeouts(eml_server *s, eml_http_buf *out, eml_err *err)
{
    struct eml_srv_queue *q = s->queue;
    size_t i = 0;
    while (i < q->n_pend) {
        if (s->now < q->pend[i].deadline) {
            i++;
            continue;
        }
        pending p = q->pend[i];
        pending_drop(s, i);
        q->m.timeouts++;
        conn *c = waiting(s, &p);
        if (c == NULL) continue;
        c->busy = 0;
        char msg[96];
        snprintf(msg, sizeof(msg), "no worker answered within %d ms",
                 q->o.timeout_ms);
        eml_status st = eml_srv_log(s, out, c->id, "gateway timeout (504)",
                                    msg, err);
        if (st == EML_OK)
            st = eml_srv_answer_error(s, c, 504, p.keep_alive, msg, NULL,
                                      p.t0, err);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

uint64_t eml_srvq_deadline(const eml_server *s)
{
    const struct eml_srv_queue *q = s->queue;
    uint64_t d = 0;
    for (size_t i = 0; i < q->n_pend; i++)
        if (d == 0 || q->pend[i].deadline < d) d = q->pend[i].deadline;
    return d;
}

eml_status eml_srvq_metrics(const eml_server *s, eml_http_buf *body,
                            eml_err *err)
{
    const eml_queue_metrics *m = &s->queue->m;
    const struct {
        const char *name, *help;
        uint64_t v;
    } rows[] = {
        {"enclaveml_queue_sent_total", "Requests sent to the workers.",
         m->sent},
        {"enclaveml_queue_answered_total",
         "Requests a worker's reply completed (the first reply for each).",
         m->answered},
        {"enclaveml_queue_duplicates_total",
         "Worker replies dropped: their request was answered already.",
         m->duplicates},
        {"enclaveml_queue_timeouts_total",
         "Requests no worker answered in time (504).", m->timeouts},
        {"enclaveml_queue_workers_admitted_total",
         "Workers whose report was accepted and who got the queue key.",
         m->admitted},
        {"enclaveml_queue_workers_refused_total",
         "Workers whose report was refused.", m->refused},
    };
    eml_status st = EML_OK;
    for (size_t i = 0; st == EML_OK && i < sizeof(rows) / sizeof(rows[0]);
         i++)
        st = eml_http_buf_printf(body, err,
                                 "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
                                 rows[i].name, rows[i].help, rows[i].name,
                                 rows[i].name, (unsigned long long)rows[i].v);
    return st;
}
