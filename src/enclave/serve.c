/*
 * serve.c - the trusted runtime's object (made from what the platform
 * hands it, freed with every secret wiped) and its ecall loop, which
 * decodes each ecall with the boundary's codec and dispatches it through
 * a table of handlers (INIT, ATTEST, TRAIN, MODEL_LOAD, EVALUATE,
 * SERVE_START, SERVE_IO, QUEUE_START, QWORKER_START, QWORKER_KEY,
 * QWORKER_IO, PING, PROBE, SHUTDOWN).
 *
 * Trusted code: memory and the channel fd only.  A frame that cannot be
 * parsed gets an ERROR and ends the loop (the stream may be out of step);
 * a malformed ecall gets an ERROR and the loop goes on.
 */
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/model.h"
#include "enclaveml/crypto.h"

void eml_enclave_set_bulk(eml_enclave *e, uint8_t *p, size_t n)
{
    e->bulk = p;
    e->bulk_n = p != NULL ? n : 0;
}

eml_status eml_enclave_new(const eml_platform *plat, eml_enclave **out)
{
    *out = NULL;
    if (strnlen(plat->policy, EML_POLICY_MAX) >= EML_POLICY_MAX)
        return EML_ERR_INVALID;
    eml_enclave *e = calloc(1, sizeof(*e));
    if (e == NULL) return EML_ERR_NOMEM;
    e->sec = eml_secure_alloc(sizeof(secrets));
    if (e->sec == NULL) {
        free(e);
        return EML_ERR_NOMEM;
    }
    memcpy(e->sec->sign_sk, plat->sign_sk, 32);
    memcpy(e->sec->seal_secret, plat->seal_secret, 32);
    memcpy(e->measurement, plat->measurement, 32);
    memcpy(e->policy, plat->policy, strlen(plat->policy) + 1);
    e->sim = plat->sim;
    e->probe = plat->probe;
    e->counter = plat->counter;
    eml_status st = eml_ed25519_public(e->platform_pk, e->sec->sign_sk);
    if (st != EML_OK) {
        eml_enclave_free(e);
        return st;
    }
    *out = e;
    return EML_OK;
}

void eml_enclave_free(eml_enclave *e)
{
    if (e == NULL) return;
    eml_secure_free(e->sec, sizeof(secrets));
    eml_rt_serve_free(e); /* before the model it borrows */
    eml_model_free(e->model);
    eml_rt_model_release_free(e);
    if (e->staging != NULL) {
        eml_wipe(e->staging, e->bulk_n); /* sealed bytes, but still */
        free(e->staging);
    }
    eml_channel_free(&e->ch);
    eml_wipe(e, sizeof(*e));
    free(e);
}

/* ==== the loop ==== */

static eml_status ecall_ping(eml_enclave *e, eml_msg_any *req, eml_err *err)
{
    eml_reply_pong a = {req->m_PING.payload};
    return eml_rt_reply(e, EML_MSG_PONG, &a, sizeof(a), err);
}

/* Replies, then ends the loop. */
static eml_status ecall_shutdown(eml_enclave *e, eml_msg_any *req,
                                 eml_err *err)
{
    (void)req;
    e->stop = 1;
    return eml_rt_reply(e, EML_MSG_SHUTDOWN_OK, NULL, 0, err);
}

typedef eml_status (*ecall_fn)(eml_enclave *e, eml_msg_any *req,
                               eml_err *err);

/* Every ecall of edl.h has its handler here (tests/test_enclave.c sends
 * each one). */
static const ecall_fn ecalls[EML_MSG_TYPE_END] = {
    [EML_MSG_INIT] = eml_rt_ecall_init,
    [EML_MSG_ATTEST] = eml_rt_ecall_attest,
    [EML_MSG_TRAIN] = eml_rt_ecall_train,
    [EML_MSG_MODEL_LOAD] = eml_rt_ecall_model_load,
    [EML_MSG_EVALUATE] = eml_rt_ecall_evaluate,
    [EML_MSG_PREDICT] = eml_rt_ecall_predict,
    [EML_MSG_SERVE_START] = eml_rt_ecall_serve_start,
    [EML_MSG_SERVE_IO] = eml_rt_ecall_serve_io,
    [EML_MSG_QUEUE_START] = eml_rt_ecall_queue_start,
    [EML_MSG_QWORKER_START] = eml_rt_ecall_qworker_start,
    [EML_MSG_QWORKER_KEY] = eml_rt_ecall_qworker_key,
    [EML_MSG_QWORKER_IO] = eml_rt_ecall_qworker_io,
    [EML_MSG_PING] = ecall_ping,
    [EML_MSG_PROBE] = eml_rt_ecall_probe,
    [EML_MSG_SHUTDOWN] = ecall_shutdown,
};

/* Decodes one ecall and runs its handler. */
static eml_status serve_one(eml_enclave *e, uint16_t type, const uint8_t *p,
                            size_t n, eml_err *err)
{
    const eml_msg_desc *d = eml_msg_desc_of(type); /* the frame parsed */
    ecall_fn fn = d->kind == EML_MSG_KIND_ECALL ? ecalls[type] : NULL;
    if (fn == NULL)
        return eml_err_set(err, EML_ERR_FORMAT, "%s is not an ecall",
                           d->name);
    eml_msg_any req;
    eml_status st = eml_boundary_decode(type, p, n, d->size ? &req : NULL,
                                        d->size, err);
    if (st != EML_OK) return st;
    return fn(e, &req, err);
}

eml_status eml_enclave_serve(eml_enclave *e, int fd)
{
    eml_channel_init(&e->ch, fd);
    e->stop = 0;
    for (;;) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        eml_status st = eml_msg_recv(&e->ch, &type, &p, &n);
        if (st == EML_ERR_TRUNCATED) return EML_OK; /* host went away */
        if (st != EML_OK) {
            /* A frame we cannot even parse: say so (it answers nothing
             * we could name, so with our own running seq), then stop,
             * since the stream may be out of step. */
            const char msg[] = "malformed frame from the host";
            eml_reply_error m = {(uint64_t)(int64_t)st,
                                 {(const uint8_t *)msg, sizeof(msg) - 1}};
            if (eml_boundary_send(&e->ch, EML_MSG_ERROR, &m, sizeof(m),
                                  NULL, NULL) != EML_OK)
                return EML_ERR_IO;
            return st;
        }
        e->ecall_seq = e->ch.recv_seq;
        eml_err err = {0};
        st = serve_one(e, type, p, n, &err);
        if (e->stop) return st;
        if (st != EML_OK) {
            /* A failed ecall may still be owed replies to asynchronous
             * ocalls: collect them so the channel stays in step. */
            eml_err late = {0};
            (void)eml_rt_drain(e, &late);
            if (eml_rt_reply_error(e, st, eml_err_msg(&err, st)) != EML_OK)
                return EML_ERR_IO;
        }
    }
}
