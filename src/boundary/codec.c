/*
 * codec.c - the boundary's one encoder and one decoder (boundary.h): a
 * message's struct to a frame and a payload back to the struct, field by
 * field as the table (messages.c) lists them, with every bound checked on
 * both sides: the decoder refuses what a hostile peer may send, and the
 * encoder refuses to send what the peer would refuse.
 *
 * Trusted code: memory only, apart from the channel write of
 * eml_boundary_send/reply.  Decoded BYTES and LIST members borrow the
 * payload; nothing is allocated.
 */
#include <math.h>
#include <string.h>

#include "enclaveml/boundary.h"

/* ==== decoding ==== */

/* Why a field was refused, for the error message. */
static const char *why_bytes(eml_status st)
{
    return st == EML_ERR_RANGE ? "longer than its maximum" : "cut short";
}

static eml_status get_int(eml_msg_reader *r, const eml_field *f, uint8_t *s,
                          const char **why)
{
    uint64_t v;
    eml_status st = eml_msg_get_u64(r, &v);
    if (st != EML_OK) {
        *why = "cut short";
        return st;
    }
    if (v < f->lo || v > f->hi) {
        *why = "out of range";
        return EML_ERR_RANGE;
    }
    if (f->kind == EML_FIELD_U64) *(uint64_t *)(s + f->off) = v;
    else if (f->kind == EML_FIELD_INT) *(int *)(s + f->off) = (int)v;
    else *(long *)(s + f->off) = (long)v;
    return EML_OK;
}

static eml_status get_f64(eml_msg_reader *r, const eml_field *f, uint8_t *s,
                          const char **why)
{
    double d;
    int short_ = r->len - r->pos < 8;
    eml_status st = eml_msg_get_f64(r, &d);
    if (st != EML_OK) {
        *why = short_ ? "cut short" : "not finite";
        return st;
    }
    if (!(d >= f->flo && d <= f->fhi)) {
        *why = "out of range";
        return EML_ERR_RANGE;
    }
    *(double *)(s + f->off) = d;
    return EML_OK;
}

static eml_status get_list(eml_msg_reader *r, const eml_field *f, uint8_t *s,
                           const char **why)
{
    uint64_t count;
    eml_status st = eml_msg_get_range(r, f->lo, f->hi, &count);
    if (st != EML_OK) {
        *why = st == EML_ERR_RANGE ? "count out of range" : "cut short";
        return st;
    }
    eml_bytes *items = (eml_bytes *)(s + f->off);
    for (uint64_t i = 0; i < count; i++) {
        st = eml_msg_get_bytes(r, f->max, &items[i].p, &items[i].n);
        if (st != EML_OK) {
            *why = st == EML_ERR_RANGE ? "an item longer than its maximum"
                                       : "cut short";
            return st;
        }
    }
    *(size_t *)(s + f->len_off) = (size_t)count;
    return EML_OK;
}

static eml_status get_field(eml_msg_reader *r, const eml_field *f,
                            uint8_t *s, const char **why)
{
    const uint8_t *p;
    size_t n;
    eml_status st;
    switch (f->kind) {
    case EML_FIELD_U64:
    case EML_FIELD_INT:
    case EML_FIELD_LONG: return get_int(r, f, s, why);
    case EML_FIELD_F64: return get_f64(r, f, s, why);
    case EML_FIELD_LIST: return get_list(r, f, s, why);
    case EML_FIELD_BYTES:
    case EML_FIELD_FIXED:
    case EML_FIELD_COPY:
        st = eml_msg_get_bytes(r, f->max, &p, &n);
        if (st != EML_OK) {
            *why = why_bytes(st);
            return st;
        }
        if (f->kind == EML_FIELD_BYTES) {
            eml_bytes *b = (eml_bytes *)(s + f->off);
            b->p = p;
            b->n = n;
        } else if (f->kind == EML_FIELD_FIXED) {
            if (n != f->max) {
                *why = "not of its fixed length";
                r->failed = 1;
                return EML_ERR_FORMAT;
            }
            memcpy(s + f->off, p, n);
        } else {
            if (n > 0) memcpy(s + f->off, p, n);
            *(size_t *)(s + f->len_off) = n;
        }
        return EML_OK;
    }
    *why = "of no known kind";
    return EML_ERR_INVALID;
}

/* The row of type, and a check that the caller's struct is its struct. */
static eml_status find(uint16_t type, const void *msg, size_t size,
                       const eml_msg_desc **out, eml_err *err)
{
    const eml_msg_desc *d = eml_msg_desc_of(type);
    *out = d;
    if (d == NULL)
        return eml_err_set(err, EML_ERR_FORMAT, "no message of type %u",
                           (unsigned)type);
    if (size != d->size || (size > 0 && msg == NULL))
        return eml_err_set(err, EML_ERR_INVALID,
                           "%s given a struct of %zu bytes, not its %zu",
                           d->name, size, d->size);
    return EML_OK;
}

eml_status eml_boundary_decode(uint16_t type, const uint8_t *p, size_t n,
                               void *msg, size_t size, eml_err *err)
{
    const eml_msg_desc *d;
    eml_status st = find(type, msg, size, &d, err);
    if (st != EML_OK) return st;
    if (size > 0) memset(msg, 0, size);
    eml_msg_reader r;
    eml_msg_reader_init(&r, p, n);
    const char *why = NULL;
    for (size_t i = 0; i < d->n_fields; i++) {
        st = get_field(&r, &d->fields[i], msg, &why);
        if (st != EML_OK) {
            if (size > 0) memset(msg, 0, size);
            return eml_err_set(err, st, "malformed %s message (%s: %s)",
                               d->name, d->fields[i].name, why);
        }
    }
    if (eml_msg_get_end(&r) != EML_OK) {
        if (size > 0) memset(msg, 0, size);
        return eml_err_set(err, EML_ERR_FORMAT,
                           "malformed %s message (%zu bytes after its "
                           "fields)",
                           d->name, n - r.pos);
    }
    return EML_OK;
}

/* ==== encoding ==== */

static eml_status put_int(eml_msg *m, const eml_field *f, const uint8_t *s)
{
    uint64_t v;
    if (f->kind == EML_FIELD_U64) {
        v = *(const uint64_t *)(s + f->off);
    } else {
        long x = f->kind == EML_FIELD_INT ? *(const int *)(s + f->off)
                                          : *(const long *)(s + f->off);
        if (x < 0) return EML_ERR_RANGE;
        v = (uint64_t)x;
    }
    if (v < f->lo || v > f->hi) return EML_ERR_RANGE;
    eml_msg_put_u64(m, v);
    return EML_OK;
}

static eml_status put_bytes(eml_msg *m, const eml_bytes *b, size_t max)
{
    if (b->n > max) return EML_ERR_RANGE;
    if (b->n > 0 && b->p == NULL) return EML_ERR_INVALID;
    eml_msg_put_bytes(m, b->p, b->n);
    return EML_OK;
}

static eml_status put_field(eml_msg *m, const eml_field *f, const uint8_t *s)
{
    double d;
    size_t n;
    switch (f->kind) {
    case EML_FIELD_U64:
    case EML_FIELD_INT:
    case EML_FIELD_LONG: return put_int(m, f, s);
    case EML_FIELD_F64:
        d = *(const double *)(s + f->off);
        if (!isfinite(d)) return EML_ERR_FORMAT;
        if (!(d >= f->flo && d <= f->fhi)) return EML_ERR_RANGE;
        eml_msg_put_f64(m, d);
        return EML_OK;
    case EML_FIELD_BYTES:
        return put_bytes(m, (const eml_bytes *)(s + f->off), f->max);
    case EML_FIELD_FIXED:
        eml_msg_put_bytes(m, s + f->off, f->max);
        return EML_OK;
    case EML_FIELD_COPY:
        n = *(const size_t *)(s + f->len_off);
        if (n > f->max) return EML_ERR_RANGE;
        eml_msg_put_bytes(m, s + f->off, n);
        return EML_OK;
    case EML_FIELD_LIST: {
        n = *(const size_t *)(s + f->len_off);
        if (n < f->lo || n > f->hi) return EML_ERR_RANGE;
        eml_msg_put_u64(m, n);
        const eml_bytes *items = (const eml_bytes *)(s + f->off);
        for (size_t i = 0; i < n; i++) {
            eml_status st = put_bytes(m, &items[i], f->max);
            if (st != EML_OK) return st;
        }
        return EML_OK;
    }
    }
    return EML_ERR_INVALID;
}

eml_status eml_boundary_encode(uint16_t type, const void *msg, size_t size,
                               eml_msg *out, eml_err *err)
{
    memset(out, 0, sizeof(*out));
    const eml_msg_desc *d;
    eml_status st = find(type, msg, size, &d, err);
    if (st != EML_OK) return st;
    eml_msg_init(out, (eml_msg_type)type);
    for (size_t i = 0; i < d->n_fields; i++) {
        st = put_field(out, &d->fields[i], msg);
        if (st != EML_OK) {
            eml_msg_free(out);
            return eml_err_set(err, st, "cannot encode %s (%s: %s)",
                               d->name, d->fields[i].name,
                               st == EML_ERR_RANGE ? "out of range"
                                                   : "not finite or unset");
        }
    }
    if (out->failed) {
        eml_msg_free(out);
        return eml_err_set(err, EML_ERR_NOMEM,
                           "cannot encode %s (out of memory, or over the "
                           "frame maximum)",
                           d->name);
    }
    return EML_OK;
}

/* ==== sending ==== */

static eml_status send_as(eml_channel *c, uint16_t type, const void *msg,
                          size_t size, int reply, uint32_t seq,
                          uint32_t *sent, eml_err *err)
{
    eml_msg m;
    eml_status st = eml_boundary_encode(type, msg, size, &m, err);
    if (st != EML_OK) return st;
    st = reply ? eml_msg_send_reply(c, &m, seq) : eml_msg_send(c, &m);
    eml_msg_free(&m);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot send %s: %s",
                           eml_msg_type_name(type), eml_status_str(st));
    if (sent != NULL) *sent = c->sent_seq;
    return EML_OK;
}

eml_status eml_boundary_send(eml_channel *c, uint16_t type, const void *msg,
                             size_t size, uint32_t *seq, eml_err *err)
{
    return send_as(c, type, msg, size, 0, 0, seq, err);
}

eml_status eml_boundary_reply(eml_channel *c, uint16_t type, const void *msg,
                              size_t size, uint32_t seq, eml_err *err)
{
    return send_as(c, type, msg, size, 1, seq, NULL, err);
}
