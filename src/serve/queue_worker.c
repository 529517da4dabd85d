/*
 * queue_worker.c - a worker enclave's side of the queue (serve.h,
 * docs/serve.md, "Scale-out through Redis Streams"): it holds the queue
 * key K the front end wrapped to it, opens the request entries its host
 * read from the stream, runs them through the model in shared forward
 * passes, and seals each answer for the front end's reply stream.
 *
 * Every entry is hostile until checked: its fields, its ids, then its
 * body authenticated under K for this stream, its id and the front end
 * whose key this is, then the plaintext field by field.  An entry that
 * fails any check is counted, logged and dropped (the host acks it so
 * that it does not come back); it is never decoded further.  An
 * authentic request for another model (another digest or input size) is
 * answered with that status rather than dropped, so its client hears.
 *
 * Trusted code: memory only.  K lives in locked memory; the instances
 * and probabilities are wiped once sealed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/serve.h"

struct eml_qworker {
    const eml_model *m;
    eml_qworker_opts o;
    eml_net *ws;
    size_t item, n_out;
    uint8_t session[EML_QUEUE_SESSION_BYTES];
    uint8_t *key; /* K: 32 bytes of locked memory */
    int keyed;
    uint8_t fe[EML_QUEUE_ID_BYTES];
    uint64_t done, malformed;
};

/* One authentic request of this call. */
typedef struct wjob {
    uint32_t entry;
    uint8_t id[EML_QUEUE_ID_BYTES];
    float *x;      /* (n, x_item) */
    float *probs;  /* (n, n_out) */
    size_t n, x_item;
    eml_queue_status status;
} wjob;

eml_status eml_qworker_new(const eml_model *m, const eml_qworker_opts *o,
                           eml_qworker **out, eml_err *err)
{
    *out = NULL;
    if (!eml_queue_name_ok((const uint8_t *)o->stream, strlen(o->stream)) ||
        !eml_queue_name_ok((const uint8_t *)o->name, strlen(o->name)))
        return eml_err_set(err, EML_ERR_INVALID,
                           "a stream or worker name is 1 to 64 of A-Z a-z "
                           "0-9 . _ : -");
    if (o->max_batch < 1 || o->max_batch > 4096 || o->max_instances < 1)
        return eml_err_set(err, EML_ERR_INVALID, "bad worker options");
    eml_qworker *w = calloc(1, sizeof(*w));
    if (w == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    w->m = m;
    w->o = *o;
    w->item = eml_model_input_size(m);
    w->n_out = eml_model_output_size(m);
    w->key = eml_secure_alloc(32);
    eml_status st = w->key != NULL ? EML_OK : EML_ERR_NOMEM;
    if (st == EML_OK) st = eml_random(w->session, sizeof(w->session));
    if (st != EML_OK) {
        eml_qworker_free(w);
        return eml_err_set(err, st, "cannot start the worker");
    }
    st = eml_serve_workspace(m, o->kernels, o->precision, o->max_batch,
                             &w->ws, err);
    if (st != EML_OK) {
        eml_qworker_free(w);
        return st;
    }
    *out = w;
    return EML_OK;
}

void eml_qworker_free(eml_qworker *w)
{
    if (w == NULL) return;
    eml_secure_free(w->key, 32);
    eml_net_free(w->ws);
    eml_wipe(w, sizeof(*w));
    free(w);
}

void eml_qworker_nonce(const eml_qworker *w, uint8_t out[48])
{
    if (eml_queue_worker_nonce(out, w->o.stream, w->o.name) != EML_OK)
        memset(out, 0, 32); /* cannot happen: the names were checked */
    memcpy(out + 32, w->session, EML_QUEUE_SESSION_BYTES);
}

eml_status eml_qworker_set_key(eml_qworker *w, const uint8_t *wrapped,
                               size_t n, const uint8_t x_sk[32],
                               const uint8_t measurement[32],
                               uint8_t fe[EML_QUEUE_ID_BYTES], eml_err *err)
{
    uint8_t *k = eml_secure_alloc(32);
    if (k == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_queue_key_unwrap(wrapped, n, x_sk, measurement,
                                         w->session, w->o.stream, w->o.name,
                                         k, fe, err);
    if (st == EML_OK) { /* the new front end's key replaces the old */
        memcpy(w->key, k, 32);
        memcpy(w->fe, fe, EML_QUEUE_ID_BYTES);
        w->keyed = 1;
    }
    eml_secure_free(k, 32);
    return st;
}

void eml_qworker_counts(const eml_qworker *w, uint64_t *done,
                        uint64_t *malformed)
{
    *done = w->done;
    *malformed = w->malformed;
}

/* ==== one call's entries ==== */

static eml_queue_bind bind_of(const eml_qworker *w,
                              const uint8_t id[EML_QUEUE_ID_BYTES])
{
    eml_queue_bind b;
    b.key = w->key;
    b.stream = w->o.stream;
    memcpy(b.id, id, EML_QUEUE_ID_BYTES);
    memcpy(b.fe, w->fe, EML_QUEUE_ID_BYTES);
    return b;
}

/* Checks entry r (copied in the frame already) into j; EML_ERR_FORMAT or
 * EML_ERR_AUTH with the reason in why for one to drop. */
static eml_status open_entry(eml_qworker *w, const eml_serve_record *r,
                             wjob *j, eml_err *why)
{
    static const char *const names[3] = {"id", "fe", "body"};
    eml_queue_field f[3];
    uint8_t fe[EML_QUEUE_ID_BYTES], digest[32];
    eml_status st = eml_queue_fields_expect(r->p, r->n, names, 3, f, why);
    if (st != EML_OK) return st;
    if (eml_queue_id_parse(j->id, f[0].p, f[0].n) != 0 ||
        eml_queue_id_parse(fe, f[1].p, f[1].n) != 0)
        return eml_err_set(why, EML_ERR_FORMAT,
                           "its id or fe is not 32 hex digits");
    if (!eml_ct_equal(fe, w->fe, EML_QUEUE_ID_BYTES))
        return eml_err_set(why, EML_ERR_AUTH,
                           "an entry for another front end than the one "
                           "whose key this worker holds");
    eml_queue_bind b = bind_of(w, j->id);
    eml_predict_form form;
    st = eml_queue_request_open(&b, f[2].p, f[2].n, w->o.max_instances,
                                &form, &j->n, &j->x_item, digest, &j->x,
                                why);
    if (st != EML_OK) return st;
    j->status = EML_QUEUE_OK;
    if (j->x_item != w->item || !eml_ct_equal(digest, eml_model_sha256(w->m), 32))
        j->status = EML_QUEUE_OTHER_MODEL;
    return EML_OK;
}

/* Jobs [first, end) (at most max_batch examples together, or one job
 * larger than that) through the net. */
static void run(eml_qworker *w, wjob *jobs, size_t first, size_t end)
{
    size_t mb = (size_t)w->o.max_batch;
    if (end - first == 1 && jobs[first].n > mb) {
        wjob *j = &jobs[first];
        for (size_t at = 0; at < j->n && j->status == EML_QUEUE_OK;
             at += mb) {
            size_t k = j->n - at < mb ? j->n - at : mb;
            memcpy(eml_net_input(w->ws), j->x + at * w->item,
                   k * w->item * sizeof(float));
            if (eml_net_forward(w->ws, (int)k, 0) != EML_OK)
                j->status = EML_QUEUE_FAILED;
            else
                memcpy(j->probs + at * w->n_out, eml_net_output(w->ws),
                       k * w->n_out * sizeof(float));
        }
        return;
    }
    float *x = eml_net_input(w->ws);
    size_t at = 0;
    for (size_t i = first; i < end; i++) {
        memcpy(x + at * w->item, jobs[i].x, jobs[i].n * w->item * 4);
        at += jobs[i].n;
    }
    int failed = eml_net_forward(w->ws, (int)at, 0) != EML_OK;
    const float *p = eml_net_output(w->ws);
    at = 0;
    for (size_t i = first; i < end; i++) {
        if (failed) jobs[i].status = EML_QUEUE_FAILED;
        else memcpy(jobs[i].probs, p + at * w->n_out,
                    jobs[i].n * w->n_out * 4);
        at += jobs[i].n;
    }
}

/* Every job's forward passes: whole jobs, in order, packed up to
 * max_batch examples. */
static void run_all(eml_qworker *w, wjob *jobs, size_t n_jobs)
{
    size_t mb = (size_t)w->o.max_batch, i = 0;
    while (i < n_jobs) {
        if (jobs[i].status != EML_QUEUE_OK) {
            i++;
            continue;
        }
        size_t end = i, total = 0;
        while (end < n_jobs && jobs[end].status == EML_QUEUE_OK &&
               (end == i || total + jobs[end].n <= mb)) {
            total += jobs[end].n;
            end++;
        }
        run(w, jobs, i, end);
        i = end;
    }
}

static eml_status answer(eml_qworker *w, const wjob *j, eml_http_buf *out,
                         eml_err *err)
{
    eml_queue_bind b = bind_of(w, j->id);
    uint8_t *body = NULL;
    size_t body_n = 0;
    eml_status st = eml_queue_reply_seal(&b, j->status, j->probs, j->n,
                                         w->n_out, &body, &body_n, err);
    if (st != EML_OK) return st;
    char id_hex[EML_QUEUE_ID_HEX + 1];
    eml_hex(id_hex, j->id, EML_QUEUE_ID_BYTES);
    eml_queue_field f[3] = {
        {(const uint8_t *)"id", 2, (const uint8_t *)id_hex, EML_QUEUE_ID_HEX},
        {(const uint8_t *)"worker", 6, (const uint8_t *)w->o.name,
         strlen(w->o.name)},
        {(const uint8_t *)"body", 4, body, body_n}};
    st = eml_queue_fields_put(out, j->entry, EML_SERVE_ANSWER, f, 3, err);
    free(body); /* ciphertext */
    if (st == EML_OK) w->done++;
    return st;
}

static eml_status drop(eml_qworker *w, uint32_t entry, const char *why,
                       eml_http_buf *out, eml_err *err)
{
    char line[EML_ERRMSG_MAX + 64];
    int n = snprintf(line, sizeof(line), "entry %u refused: %s", entry, why);
    size_t len = n < 0 ? 0
                 : (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    w->malformed++;
    eml_status st = eml_serve_record_put(out, entry, EML_SERVE_DROP, NULL, 0,
                                         err);
    if (st == EML_OK)
        st = eml_serve_record_put(out, entry, EML_SERVE_LOG, line, len, err);
    return st;
}

static void jobs_free(wjob *jobs, size_t n, size_t n_out)
{
    for (size_t i = 0; jobs != NULL && i < n; i++) {
        if (jobs[i].x != NULL)
            eml_wipe(jobs[i].x, jobs[i].n * jobs[i].x_item * 4);
        if (jobs[i].probs != NULL)
            eml_wipe(jobs[i].probs, jobs[i].n * n_out * 4);
        free(jobs[i].x);
        free(jobs[i].probs);
    }
    free(jobs);
}

eml_status eml_qworker_io(eml_qworker *w, const uint8_t *in, size_t len,
                          eml_http_buf *out, eml_err *err)
{
    if (!w->keyed)
        return eml_err_set(err, EML_ERR_INVALID,
                           "no queue key yet (no front end admitted this "
                           "worker)");
    size_t off = 0, count = 0;
    eml_serve_record r;
    eml_status st;
    while ((st = eml_serve_record_next(in, len, &off, &r)) == EML_OK) {
        if (r.kind != EML_SERVE_ENTRY)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "the host sent a record of kind %d",
                               (int)r.kind);
        count++;
    }
    if (st != EML_ERR_NOTFOUND)
        return eml_err_set(err, st, "a malformed entry list");
    wjob *jobs = calloc(count ? count : 1, sizeof(*jobs));
    if (jobs == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    size_t n_jobs = 0;
    off = 0;
    st = EML_OK;
    while (st == EML_OK &&
           eml_serve_record_next(in, len, &off, &r) == EML_OK) {
        wjob *j = &jobs[n_jobs];
        memset(j, 0, sizeof(*j));
        j->entry = r.conn;
        eml_err why = {0};
        eml_status est = open_entry(w, &r, j, &why);
        if (est == EML_ERR_NOMEM) st = eml_err_set(err, est, "out of memory");
        else if (est != EML_OK) st = drop(w, r.conn, why.msg, out, err);
        else if (j->status == EML_QUEUE_OK &&
                 (j->probs = malloc(j->n * w->n_out * 4)) == NULL)
            st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        if (est == EML_OK) n_jobs++;
    }
    if (st == EML_OK) run_all(w, jobs, n_jobs);
    for (size_t i = 0; st == EML_OK && i < n_jobs; i++)
        st = answer(w, &jobs[i], out, err);
    jobs_free(jobs, n_jobs, w->n_out);
    return st;
}
