/*
 * ocall.c - what the enclave sends the host besides its ecall loop:
 * replies to the ecall being served (with its seq), notifications, and
 * its own requests: an ocall and the check that its reply is of the type
 * wanted and carries the ocall's seq (an ERROR from the host becomes
 * EML_ERR_IO with its text), the mirror's asynchronous ocalls whose
 * replies are collected, in order, before the next one, and the file
 * ocalls that stream owners' ciphertext in.
 *
 * Trusted code: every reply is decoded strictly (boundary.h); nothing the
 * host sends is used before it is checked.
 */
#include <string.h>

#include "enclave/runtime.h"

/* ==== replies and notifications ==== */

eml_status eml_rt_reply(eml_enclave *e, uint16_t type, const void *msg,
                        size_t size, eml_err *err)
{
    return eml_boundary_reply(&e->ch, type, msg, size, e->ecall_seq, err);
}

eml_status eml_rt_reply_error(eml_enclave *e, eml_status st, const char *msg)
{
    eml_reply_error m = {(uint64_t)(int64_t)st,
                         {(const uint8_t *)msg, strnlen(msg, EML_ERRMSG_MAX)}};
    return eml_rt_reply(e, EML_MSG_ERROR, &m, sizeof(m), NULL);
}

eml_status eml_rt_notify(eml_enclave *e, uint16_t type, const void *msg,
                         size_t size, eml_err *err)
{
    return eml_boundary_send(&e->ch, type, msg, size, NULL, err);
}

/* ==== ocalls ==== */

/* Receives the host's reply to ocall `sent` (seq), of the type the table
 * names (or ERROR), and decodes it into reply.  *broken: the channel
 * itself failed (nothing more will come). */
static eml_status recv_reply(eml_enclave *e, uint16_t sent, uint32_t seq,
                             void *reply, size_t size, int *broken,
                             eml_err *err)
{
    uint16_t want = eml_msg_desc_of(sent)->reply, type;
    const uint8_t *p;
    size_t n;
    *broken = 0;
    eml_status st = eml_msg_recv(&e->ch, &type, &p, &n);
    if (st != EML_OK) {
        *broken = 1;
        return eml_err_set(err, st, "bad reply from the host: %s",
                           eml_status_str(st));
    }
    if (type != EML_MSG_ERROR && type != want)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "host answered %s where %s was expected",
                           eml_msg_type_name(type), eml_msg_type_name(want));
    if (e->ch.recv_seq != seq)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host's %s answers request %u, not %s %u",
                           eml_msg_type_name(type), (unsigned)e->ch.recv_seq,
                           eml_msg_type_name(sent), (unsigned)seq);
    if (type == EML_MSG_ERROR) {
        eml_reply_error er;
        eml_err ignore = {0};
        if (eml_boundary_decode(type, p, n, &er, sizeof(er), &ignore) ==
            EML_OK)
            return eml_err_set(err, EML_ERR_IO, "host: %.*s",
                               (int)er.message.n,
                               (const char *)er.message.p);
        return eml_err_set(err, EML_ERR_IO, "host reported an error");
    }
    return eml_boundary_decode(type, p, n, reply, size, err);
}

/* Collects the replies of the mirror ocalls sent without waiting, keeping
 * the first failure in e->late until it is reported. */
void eml_rt_collect(eml_enclave *e)
{
    for (int i = 0; i < e->pending; i++) {
        eml_err err = {0};
        int broken;
        eml_status st = recv_reply(e, e->pending_type[i], e->pending_seq[i],
                                   NULL, 0, &broken, &err);
        if (st != EML_OK && e->late_st == EML_OK) {
            e->late_st = st;
            e->late = err;
        }
        if (broken) break; /* a broken channel owes nothing more */
    }
    e->pending = 0;
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

eml_status eml_rt_ocall_async(eml_enclave *e, uint16_t type, const void *req,
                              size_t req_size, eml_err *err)
{
    if (e->pending == EML_RT_PENDING_MAX) eml_rt_collect(e);
    uint32_t seq;
    eml_status st = eml_boundary_send(&e->ch, type, req, req_size, &seq, err);
    if (st != EML_OK) return st;
    e->pending_seq[e->pending] = seq;
    e->pending_type[e->pending] = type;
    e->pending++;
    return EML_OK;
}

eml_status eml_rt_ocall(eml_enclave *e, uint16_t type, const void *req,
                        size_t req_size, void *reply, size_t reply_size,
                        eml_err *err)
{
    eml_status st = eml_rt_drain(e, err);
    if (st != EML_OK) return st;
    uint32_t seq;
    st = eml_boundary_send(&e->ch, type, req, req_size, &seq, err);
    if (st != EML_OK) return st;
    int broken;
    return recv_reply(e, type, seq, reply, reply_size, &broken, err);
}

/* ==== file ocalls ==== */

/* FILE_OPEN: the size of file id as the host reports it (untrusted: only
 * a hint; the container's authentication decides). */
eml_status eml_rt_file_open(eml_enclave *e, uint64_t id, uint64_t *size,
                            eml_err *err)
{
    eml_ocall_file_open q = {id};
    eml_reply_file_info a;
    eml_status st = eml_rt_ocall(e, EML_MSG_FILE_OPEN, &q, sizeof(q), &a,
                                 sizeof(a), err);
    *size = st == EML_OK ? a.size : 0;
    return st;
}

/* FILE_READ: up to want bytes at off; *p points into the channel's
 * receive buffer, valid until the next message. */
eml_status eml_rt_file_read(eml_enclave *e, uint64_t id, uint64_t off,
                            size_t want, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    eml_ocall_file_read q = {id, off, want};
    eml_reply_file_data a;
    *p = NULL;
    *n = 0;
    eml_status st = eml_rt_ocall(e, EML_MSG_FILE_READ, &q, sizeof(q), &a,
                                 sizeof(a), err);
    if (st != EML_OK) return st;
    if (a.data.n > want)
        return eml_err_set(err, EML_ERR_RANGE,
                           "malformed FILE_DATA message (data: more bytes "
                           "than asked for)");
    *p = a.data.p;
    *n = a.data.n;
    return EML_OK;
}
