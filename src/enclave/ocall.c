/*
 * ocall.c - the enclave's side of its requests to the host: sending an
 * ocall and checking that the reply is of the type wanted (an ERROR from
 * the host becomes EML_ERR_IO with its text), the mirror's asynchronous
 * ocalls whose replies are collected before the next one, and the file
 * ocalls that stream owners' ciphertext in.
 *
 * Trusted code: every reply is decoded strictly; nothing the host sends
 * is used before it is checked.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"

/* ==== replies ==== */

eml_status eml_rt_send_error(eml_enclave *e, eml_status st, const char *msg)
{
    eml_msg m;
    eml_msg_init(&m, EML_MSG_ERROR);
    eml_msg_put_u64(&m, (uint64_t)(int64_t)st);
    size_t n = strnlen(msg, EML_ERRMSG_MAX);
    eml_msg_put_bytes(&m, msg, n);
    eml_status s2 = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return s2;
}

/* Receives one frame from the host. */
static eml_status recv_frame(eml_enclave *e, eml_msg_reader *r,
                             uint16_t *type, eml_err *err)
{
    const uint8_t *p;
    size_t n;
    eml_status st = eml_msg_recv(&e->ch, type, &p, &n);
    if (st != EML_OK)
        return eml_err_set(err, st, "bad reply from the host: %s",
                           eml_status_str(st));
    eml_msg_reader_init(r, p, n);
    return EML_OK;
}

/* A reply must be of type `want`; an ERROR reply from the host becomes
 * EML_ERR_IO with its text. */
static eml_status check_reply(uint16_t type, eml_msg_reader *r, uint16_t want,
                              eml_err *err)
{
    if (type == EML_MSG_ERROR) {
        uint64_t code;
        const uint8_t *txt;
        size_t tl;
        if (eml_msg_get_u64(r, &code) == EML_OK &&
            eml_msg_get_bytes(r, EML_ERRMSG_MAX, &txt, &tl) == EML_OK)
            return eml_err_set(err, EML_ERR_IO, "host: %.*s", (int)tl,
                               (const char *)txt);
        return eml_err_set(err, EML_ERR_IO, "host reported an error");
    }
    if (type != want)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "host answered %s where %s was expected",
                           eml_msg_type_name(type), eml_msg_type_name(want));
    return EML_OK;
}

/* Collects the replies of the mirror ocalls sent without waiting, keeping
 * the first failure in e->late until it is reported. */
void eml_rt_collect(eml_enclave *e)
{
    while (e->pending > 0) {
        eml_msg_reader r;
        uint16_t type;
        eml_err err = {0};
        eml_status st = recv_frame(e, &r, &type, &err);
        if (st != EML_OK) {
            e->pending = 0; /* a broken channel owes nothing more */
        } else {
            e->pending--;
            st = check_reply(type, &r, EML_MSG_MIRROR_OK, &err);
            if (st == EML_OK && eml_msg_get_end(&r) != EML_OK)
                st = eml_err_set(&err, EML_ERR_FORMAT, "malformed MIRROR_OK");
        }
        if (st != EML_OK && e->late_st == EML_OK) {
            e->late_st = st;
            e->late = err;
        }
    }
}

/* eml_rt_collect(), then reports (and forgets) a failure among the replies. */
eml_status eml_rt_drain(eml_enclave *e, eml_err *err)
{
    eml_rt_collect(e);
    eml_status st = e->late_st;
    if (st != EML_OK) {
        e->late_st = EML_OK;
        eml_err_set(err, st, "%s", e->late.msg);
    }
    return st;
}

/* An ocall whose reply is collected later by eml_rt_drain(). */
eml_status eml_rt_ocall_async(eml_enclave *e, eml_msg *m, eml_err *err)
{
    eml_status st = eml_msg_send(&e->ch, m);
    eml_msg_free(m);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot reach the host: %s",
                           eml_status_str(st));
    e->pending++;
    return EML_OK;
}

/* Sends an ocall and waits for its reply of type `want`, after the
 * replies still owed to earlier asynchronous ones. */
eml_status eml_rt_ocall(eml_enclave *e, eml_msg *m, uint16_t want,
                        eml_msg_reader *r, eml_err *err)
{
    eml_status st = eml_rt_drain(e, err);
    if (st != EML_OK) return st;
    st = eml_msg_send(&e->ch, m);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot reach the host: %s",
                           eml_status_str(st));
    uint16_t type;
    st = recv_frame(e, r, &type, err);
    return st != EML_OK ? st : check_reply(type, r, want, err);
}

/* ==== file ocalls ==== */

/* FILE_OPEN: the size of file id as the host reports it (untrusted: only
 * a hint; the container's authentication decides). */
eml_status eml_rt_file_open(eml_enclave *e, uint64_t id, uint64_t *size,
                            eml_err *err)
{
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_FILE_OPEN);
    eml_msg_put_u64(&m, id);
    eml_status st = eml_rt_ocall(e, &m, EML_MSG_FILE_INFO, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    st = eml_msg_get_u64(&r, size);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed FILE_INFO");
    return EML_OK;
}

/* FILE_READ: up to want bytes at off; *p points into the channel's
 * receive buffer, valid until the next message. */
eml_status eml_rt_file_read(eml_enclave *e, uint64_t id, uint64_t off,
                            size_t want, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_FILE_READ);
    eml_msg_put_u64(&m, id);
    eml_msg_put_u64(&m, off);
    eml_msg_put_u64(&m, want);
    eml_status st = eml_rt_ocall(e, &m, EML_MSG_FILE_DATA, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    st = eml_msg_get_bytes(&r, want, p, n);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed FILE_DATA");
    return EML_OK;
}
