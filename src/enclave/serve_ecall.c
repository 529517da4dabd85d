/*
 * serve_ecall.c - SERVE_START and SERVE_IO: the attested inference server
 * (serve.h, docs/serve.md) over the model MODEL_LOAD loaded.
 *
 * SERVE_START makes the TLS key here, asks this enclave for a report whose
 * nonce is the SHA-256 of the key's SubjectPublicKeyInfo, and puts the
 * report into the key's self-signed certificate (tls.c): a client that
 * checks the report and that binding talks to this enclave and no one
 * else.  SERVE_IO hands the host's events to the server and its outputs
 * back.  QUEUE_START turns the server's queue to workers on; the
 * QWORKER_* ecalls make this enclave a worker of such a queue: its report
 * for the front end, the key the front end wrapped to it, and the
 * entries it answers (serve.h, docs/serve.md).
 *
 * Trusted code: the TLS key never leaves this process; the events lie in
 * the received frame, in the enclave's own memory.
 */
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/serve.h"

static int name_ok(const uint8_t *p, size_t n)
{
    if (n < 1 || n > EML_HTTP_MODEL_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void eml_rt_serve_free(eml_enclave *e)
{
    eml_qworker_free(e->qworker);
    e->qworker = NULL;
    eml_server_free(e->server);
    eml_tls_server_free(e->tls);
    eml_tls_key_free(e->tls_key);
    eml_http_buf_free(&e->serve_out);
    e->server = NULL;
    e->tls = NULL;
    e->tls_key = NULL;
}

/* SERVE_START's and QWORKER_START's preconditions: an identity, a loaded
 * model whose grant does not count queries, and no server or worker yet
 * (one per enclave). */
static eml_status can_serve(const eml_enclave *e, eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    if (e->model == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "no model to serve (MODEL_LOAD first)");
    if (e->server != NULL || e->qworker != NULL)
        return eml_err_set(err, EML_ERR_INVALID, "already serving");
    if (e->model_max_queries != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's grant limits predictions per "
                           "recipient (grant --max-queries), which serving "
                           "cannot count: use predict");
    return EML_OK;
}

eml_status eml_rt_ecall_serve_start(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err)
{
    const eml_ecall_serve_start *q = &req->m_SERVE_START;
    eml_status st = can_serve(e, err);
    if (st != EML_OK) return st;
    if (!name_ok(q->name.p, q->name.n))
        return eml_err_set(err, EML_ERR_INVALID,
                           "a model name is 1 to 64 of A-Z a-z 0-9 . _ -");
    eml_server_opts o;
    eml_server_opts_default(&o);
    memcpy(o.model_name, q->name.p, q->name.n);
    o.model_name[q->name.n] = '\0';
    o.precision = (eml_precision)q->precision;
    o.max_batch = q->max_batch;
    o.max_wait_ms = q->max_wait_ms;
    o.max_conns = q->max_conns;
    o.header_timeout_ms = q->header_timeout_ms;
    o.idle_timeout_ms = q->idle_timeout_ms;
    o.max_instances = (size_t)q->max_instances;
    o.limits.max_header = (size_t)q->max_header;
    o.limits.max_body = (size_t)q->max_body;

    uint8_t spki[32];
    char *report = NULL;
    size_t rlen = 0;
    st = eml_tls_key_new(&e->tls_key, spki, err);
    if (st == EML_OK)
        st = eml_rt_make_report(e, spki, sizeof(spki), &report, &rlen, err);
    if (st == EML_OK)
        st = eml_tls_server_new(e->tls_key, (const uint8_t *)report, rlen,
                                &e->tls, err);
    if (st == EML_OK) st = eml_server_new(e->model, e->tls, &o, &e->server,
                                          err);
    if (st != EML_OK) {
        free(report);
        eml_rt_serve_free(e);
        return st;
    }
    eml_http_buf_init(&e->serve_out, EML_SERVE_IO_MAX);
    eml_reply_serve_ready a;
    a.cert.p = eml_tls_server_cert(e->tls, &a.cert.n);
    a.report.p = (const uint8_t *)report;
    a.report.n = rlen;
    st = eml_rt_reply(e, EML_MSG_SERVE_READY, &a, sizeof(a), err);
    free(report);
    return st;
}

eml_status eml_rt_ecall_serve_io(eml_enclave *e, eml_msg_any *req,
                                 eml_err *err)
{
    const eml_ecall_serve_io *q = &req->m_SERVE_IO;
    if (e->server == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "not serving (SERVE_START first)");
    eml_http_buf_reset(&e->serve_out);
    eml_reply_serve_out a;
    eml_status st = eml_server_io(e->server, q->now_ms, q->events.p,
                                  q->events.n, &e->serve_out, &a.deadline_ms,
                                  err);
    if (st != EML_OK) return st;
    a.out.p = e->serve_out.p;
    a.out.n = e->serve_out.len;
    st = eml_rt_reply(e, EML_MSG_SERVE_OUT, &a, sizeof(a), err);
    eml_wipe(e->serve_out.p, e->serve_out.len); /* ciphertext, but still */
    return st;
}

/* ==== the queue ==== */

/* A byte string that must be a stream or worker name, into out. */
static int take_name(char out[EML_QUEUE_NAME_MAX + 1], const eml_bytes *b)
{
    if (!eml_queue_name_ok(b->p, b->n)) return 0;
    memcpy(out, b->p, b->n);
    out[b->n] = '\0';
    return 1;
}

eml_status eml_rt_ecall_queue_start(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err)
{
    const eml_ecall_queue_start *q = &req->m_QUEUE_START;
    if (e->server == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "not serving (SERVE_START first)");
    eml_server_queue_opts o;
    memset(&o, 0, sizeof(o));
    if (!take_name(o.stream, &q->stream))
        return eml_err_set(err, EML_ERR_INVALID,
                           "a stream name is 1 to 64 of A-Z a-z 0-9 . _ : -");
    o.timeout_ms = q->timeout_ms;
    memcpy(o.platform.pk, e->platform_pk, 32);
    o.platform.backend = e->sim ? "sim" : "none";
    memcpy(o.measurement, e->measurement, 32);
    eml_reply_queue_ready a;
    eml_status st = eml_server_queue_start(e->server, &o, a.fe, err);
    if (st != EML_OK) return st;
    return eml_rt_reply(e, EML_MSG_QUEUE_READY, &a, sizeof(a), err);
}

eml_status eml_rt_ecall_qworker_start(eml_enclave *e, eml_msg_any *req,
                                      eml_err *err)
{
    const eml_ecall_qworker_start *q = &req->m_QWORKER_START;
    eml_status st = can_serve(e, err);
    if (st != EML_OK) return st;
    eml_qworker_opts o;
    memset(&o, 0, sizeof(o));
    if (!take_name(o.stream, &q->stream) || !take_name(o.name, &q->name))
        return eml_err_set(err, EML_ERR_INVALID,
                           "a stream or worker name is 1 to 64 of A-Z a-z "
                           "0-9 . _ : -");
    o.max_batch = q->max_batch;
    o.max_instances = (size_t)q->max_instances;
    o.kernels = EML_KERNELS_FAST;
    o.precision = (eml_precision)q->precision;
    st = eml_qworker_new(e->model, &o, &e->qworker, err);
    if (st != EML_OK) return st;
    uint8_t nonce[48];
    eml_qworker_nonce(e->qworker, nonce);
    char *report = NULL;
    size_t rlen = 0;
    st = eml_rt_make_report(e, nonce, sizeof(nonce), &report, &rlen, err);
    if (st != EML_OK) {
        eml_qworker_free(e->qworker);
        e->qworker = NULL;
        return st;
    }
    eml_reply_qworker_ready a = {{(const uint8_t *)report, rlen}};
    st = eml_rt_reply(e, EML_MSG_QWORKER_READY, &a, sizeof(a), err);
    free(report);
    return st;
}

eml_status eml_rt_ecall_qworker_key(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err)
{
    const eml_ecall_qworker_key *q = &req->m_QWORKER_KEY;
    if (e->qworker == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "not a worker (QWORKER_START first)");
    eml_reply_qworker_keyed a;
    eml_status st = eml_qworker_set_key(e->qworker, q->wrapped.p,
                                        q->wrapped.n, e->sec->x_sk,
                                        e->measurement, a.fe, err);
    if (st != EML_OK) return st;
    return eml_rt_reply(e, EML_MSG_QWORKER_KEYED, &a, sizeof(a), err);
}

eml_status eml_rt_ecall_qworker_io(eml_enclave *e, eml_msg_any *req,
                                   eml_err *err)
{
    const eml_ecall_qworker_io *q = &req->m_QWORKER_IO;
    if (e->qworker == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "not a worker (QWORKER_START first)");
    if (e->serve_out.max == 0) eml_http_buf_init(&e->serve_out,
                                                 EML_SERVE_IO_MAX);
    eml_http_buf_reset(&e->serve_out);
    eml_status st = eml_qworker_io(e->qworker, q->entries.p, q->entries.n,
                                   &e->serve_out, err);
    if (st != EML_OK) return st;
    eml_reply_qworker_out a;
    a.out.p = e->serve_out.p;
    a.out.n = e->serve_out.len;
    eml_qworker_counts(e->qworker, &a.done, &a.malformed);
    st = eml_rt_reply(e, EML_MSG_QWORKER_OUT, &a, sizeof(a), err);
    eml_wipe(e->serve_out.p, e->serve_out.len); /* ciphertext, but still */
    return st;
}
