/*
 * worker_ocall.c - the enclave's way to an outsourcing worker: an
 * eml_worker_link whose frames travel as WORKER ocalls, relayed by the
 * host to the worker and back.  The client (src/outsource/client.c)
 * checks every reply; the host and the worker are trusted with none of
 * it.
 *
 * Trusted code: the channel only.
 */
#include <string.h>

#include "enclave/runtime.h"

static eml_status link_send(void *user, const uint8_t *p, size_t n,
                            eml_err *err)
{
    eml_rt_worker *w = user;
    if (n > EML_WORKER_FRAME_MAX)
        return eml_err_set(err, EML_ERR_RANGE,
                           "a worker request over the channel's limit");
    w->req = p;
    w->req_len = n;
    return EML_OK;
}

/* Sends the request kept by link_send and hands back the reply, which
 * lies in the channel's frame until the next receive. */
static eml_status link_recv(void *user, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    eml_rt_worker *w = user;
    if (w->req == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "no worker request");
    eml_ocall_worker q = {{w->req, w->req_len}};
    eml_reply_worker_data a = {{NULL, 0}};
    w->req = NULL;
    eml_status st = eml_rt_ocall(w->e, EML_MSG_WORKER, &q, sizeof(q), &a,
                                 sizeof(a), err);
    if (st != EML_OK) return st;
    *p = a.reply.p;
    *n = a.reply.n;
    return EML_OK;
}

eml_worker_link eml_rt_worker_link(eml_rt_worker *w, eml_enclave *e)
{
    memset(w, 0, sizeof(*w));
    w->e = e;
    eml_worker_link l = {w, link_send, link_recv};
    return l;
}
