/*
 * serve.c - the trusted runtime's object (made from what the platform
 * hands it, freed with every secret wiped) and its ecall loop, which
 * dispatches INIT, ATTEST, TRAIN, PING, PROBE and SHUTDOWN.
 *
 * Trusted code: memory and the channel fd only.  A frame that cannot be
 * parsed gets an ERROR and ends the loop (the stream may be out of step);
 * a malformed ecall gets an ERROR and the loop goes on.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
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
    if (e->staging != NULL) {
        eml_wipe(e->staging, e->bulk_n); /* sealed bytes, but still */
        free(e->staging);
    }
    eml_channel_free(&e->ch);
    eml_wipe(e, sizeof(*e));
    free(e);
}

/* ==== the loop ==== */

eml_status eml_enclave_serve(eml_enclave *e, int fd)
{
    eml_channel_init(&e->ch, fd);
    for (;;) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        eml_status st = eml_msg_recv(&e->ch, &type, &p, &n);
        if (st == EML_ERR_TRUNCATED) return EML_OK; /* host went away */
        if (st != EML_OK) {
            /* A frame we cannot even parse: say so, then stop, since the
             * stream may be out of step. */
            if (eml_rt_send_error(e, st, "malformed frame from the host") !=
                EML_OK)
                return EML_ERR_IO;
            return st;
        }
        eml_msg_reader r;
        eml_msg_reader_init(&r, p, n);
        eml_err err = {0};
        switch (type) {
        case EML_MSG_INIT: st = eml_rt_ecall_init(e, &r, &err); break;
        case EML_MSG_ATTEST: st = eml_rt_ecall_attest(e, &r, &err); break;
        case EML_MSG_TRAIN:
            st = eml_rt_ecall_train(e, &r, &err);
            /* A run that succeeded sent its model through ocalls, which
             * collected every mirror reply; a failed one may still be owed
             * some: collect them so the channel stays in step. */
            if (st != EML_OK) {
                eml_err late = {0};
                (void)eml_rt_drain(e, &late);
            }
            break;
        case EML_MSG_PROBE: st = eml_rt_ecall_probe(e, &r, &err); break;
        case EML_MSG_PING: {
            const uint8_t *q;
            size_t ql;
            st = eml_msg_get_bytes(&r, EML_CHUNK_MAX, &q, &ql);
            if (st == EML_OK) st = eml_msg_get_end(&r);
            if (st != EML_OK) {
                eml_err_set(&err, st, "malformed PING");
                break;
            }
            eml_msg m;
            eml_msg_init(&m, EML_MSG_PONG);
            eml_msg_put_bytes(&m, q, ql);
            st = eml_msg_send(&e->ch, &m);
            eml_msg_free(&m);
            break;
        }
        case EML_MSG_SHUTDOWN: {
            st = eml_msg_get_end(&r);
            eml_msg m;
            eml_msg_init(&m, EML_MSG_SHUTDOWN_OK);
            eml_status sst = eml_msg_send(&e->ch, &m);
            eml_msg_free(&m);
            return st == EML_OK ? sst : st;
        }
        default:
            st = eml_err_set(&err, EML_ERR_FORMAT, "%s is not an ecall",
                             eml_msg_type_name(type));
        }
        if (st != EML_OK) {
            if (eml_rt_send_error(e, st, eml_err_msg(&err, st)) != EML_OK)
                return EML_ERR_IO;
        }
    }
}
