/*
 * frame.c - the boundary's frames (boundary.h, edl.h): building one field
 * by field, reading one field by field, and the channel that sends and
 * receives them, stamping and reading each frame's version (its type's)
 * and seq.
 *
 * Used on both sides: the enclave decodes what the host sends and the host
 * decodes what the enclave sends, and neither trusts the other's bytes.
 * Every length is checked before use; building a message has a sticky
 * error flag checked once at send (the rio habit).  Only read()/write() on
 * the channel fd: no files, no sockets opened here.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "enclaveml/boundary.h"

/* ==== building ==== */

static int reserve(eml_msg *m, size_t extra)
{
    if (m->failed) return 0;
    if (extra > EML_MSG_MAX + EML_MSG_HEADER - m->len) {
        m->failed = 1;
        return 0;
    }
    if (m->len + extra <= m->cap) return 1;
    size_t cap = m->cap ? m->cap : 256;
    while (cap < m->len + extra) cap *= 2;
    uint8_t *nb = malloc(cap);
    if (nb == NULL) {
        m->failed = 1;
        return 0;
    }
    if (m->buf != NULL) {
        memcpy(nb, m->buf, m->len);
        eml_wipe(m->buf, m->cap);
        free(m->buf);
    }
    m->buf = nb;
    m->cap = cap;
    return 1;
}

void eml_msg_init(eml_msg *m, eml_msg_type type)
{
    memset(m, 0, sizeof(*m));
    m->type = (uint16_t)type;
    if (reserve(m, EML_MSG_HEADER)) {
        memset(m->buf, 0, EML_MSG_HEADER);
        m->len = EML_MSG_HEADER;
    }
}

void eml_msg_put_u64(eml_msg *m, uint64_t v)
{
    if (!reserve(m, 8)) return;
    eml_put_le64(m->buf + m->len, v);
    m->len += 8;
}

void eml_msg_put_f64(eml_msg *m, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    eml_msg_put_u64(m, bits);
}

void eml_msg_put_bytes(eml_msg *m, const void *p, size_t n)
{
    if (n > UINT32_MAX || !reserve(m, 4 + n)) {
        m->failed = 1;
        return;
    }
    eml_put_le32(m->buf + m->len, (uint32_t)n);
    m->len += 4;
    if (n > 0) memcpy(m->buf + m->len, p, n);
    m->len += n;
}

void eml_msg_free(eml_msg *m)
{
    if (m->buf != NULL) {
        eml_wipe(m->buf, m->cap);
        free(m->buf);
    }
    memset(m, 0, sizeof(*m));
}

/* ==== reading ==== */

void eml_msg_reader_init(eml_msg_reader *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->failed = 0;
}

static eml_status reader_fail(eml_msg_reader *r)
{
    r->failed = 1;
    return EML_ERR_FORMAT;
}

eml_status eml_msg_get_u64(eml_msg_reader *r, uint64_t *v)
{
    *v = 0;
    if (r->failed || r->len - r->pos < 8) return reader_fail(r);
    *v = eml_get_le64(r->p + r->pos);
    r->pos += 8;
    return EML_OK;
}

eml_status eml_msg_get_range(eml_msg_reader *r, uint64_t lo, uint64_t hi,
                             uint64_t *v)
{
    eml_status st = eml_msg_get_u64(r, v);
    if (st != EML_OK) return st;
    if (*v < lo || *v > hi) {
        *v = 0;
        r->failed = 1;
        return EML_ERR_RANGE;
    }
    return EML_OK;
}

eml_status eml_msg_get_f64(eml_msg_reader *r, double *v)
{
    uint64_t bits;
    *v = 0;
    eml_status st = eml_msg_get_u64(r, &bits);
    if (st != EML_OK) return st;
    double d;
    memcpy(&d, &bits, sizeof(d));
    if (!isfinite(d)) return reader_fail(r);
    *v = d;
    return EML_OK;
}

eml_status eml_msg_get_bytes(eml_msg_reader *r, size_t max, const uint8_t **p,
                             size_t *n)
{
    *p = NULL;
    *n = 0;
    if (r->failed || r->len - r->pos < 4) return reader_fail(r);
    uint32_t len = eml_get_le32(r->p + r->pos);
    if (len > max) {
        r->failed = 1;
        return EML_ERR_RANGE;
    }
    if (r->len - r->pos - 4 < len) return reader_fail(r);
    *p = r->p + r->pos + 4;
    *n = len;
    r->pos += 4 + (size_t)len;
    return EML_OK;
}

eml_status eml_msg_get_fixed(eml_msg_reader *r, void *out, size_t n)
{
    const uint8_t *p;
    size_t got;
    eml_status st = eml_msg_get_bytes(r, n, &p, &got);
    if (st != EML_OK) return st;
    if (got != n) return reader_fail(r);
    memcpy(out, p, n);
    return EML_OK;
}

eml_status eml_msg_get_end(eml_msg_reader *r)
{
    if (r->failed || r->pos != r->len) return reader_fail(r);
    return EML_OK;
}

/* ==== channel ==== */

void eml_channel_init(eml_channel *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
}

#define CHANNEL_READAHEAD 65536

static void free_rbuf(eml_channel *c)
{
    if (c->rbuf != NULL) {
        eml_wipe(c->rbuf, c->rcap);
        free(c->rbuf);
    }
    c->rbuf = NULL;
    c->rcap = 0;
}

void eml_channel_free(eml_channel *c)
{
    free_rbuf(c);
    if (c->ibuf != NULL) {
        eml_wipe(c->ibuf, CHANNEL_READAHEAD);
        free(c->ibuf);
    }
    c->ibuf = NULL;
    c->ipos = c->ilen = 0;
}

static eml_status write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return EML_ERR_IO;
        p += w;
        n -= (size_t)w;
    }
    return EML_OK;
}

/* A reply usually comes within microseconds; blocking at once would add
 * two scheduler wake-ups to every round trip.  So poll without blocking for
 * a short while (CHANNEL_SPIN_NS), then block. */
#define CHANNEL_SPIN_NS 60000L

static long elapsed_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static ssize_t spin_read(int fd, uint8_t *p, size_t n)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            if (errno == ENOTSOCK) break; /* a pipe or file: just block */
            return r;
        }
        if (elapsed_ns(&t0) > CHANNEL_SPIN_NS) break;
    }
    return read(fd, p, n);
}

/* Reads exactly n bytes: first from the read-ahead buffer, then small
 * requests refill it with whatever the peer has sent (usually the whole
 * frame, so a round trip costs one read() per side), and large ones go
 * straight to the destination. */
static eml_status read_all(eml_channel *c, uint8_t *p, size_t n)
{
    if (c->ibuf == NULL) {
        c->ibuf = malloc(CHANNEL_READAHEAD);
        if (c->ibuf == NULL) return EML_ERR_NOMEM;
        c->ipos = c->ilen = 0;
    }
    while (n > 0) {
        if (c->ipos < c->ilen) {
            size_t k = c->ilen - c->ipos < n ? c->ilen - c->ipos : n;
            memcpy(p, c->ibuf + c->ipos, k);
            c->ipos += k;
            p += k;
            n -= k;
            continue;
        }
        ssize_t r;
        if (n >= CHANNEL_READAHEAD) {
            r = read(c->fd, p, n);
            if (r > 0) {
                p += r;
                n -= (size_t)r;
            }
        } else {
            r = spin_read(c->fd, c->ibuf, CHANNEL_READAHEAD);
            if (r > 0) {
                c->ipos = 0;
                c->ilen = (size_t)r;
            }
        }
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return EML_ERR_TRUNCATED;
        if (r < 0) return EML_ERR_IO;
    }
    return EML_OK;
}

static eml_status send_frame(eml_channel *c, eml_msg *m, uint32_t seq)
{
    if (m->failed || m->buf == NULL) return EML_ERR_NOMEM;
    size_t payload = m->len - EML_MSG_HEADER;
    if (payload > EML_MSG_MAX) return EML_ERR_RANGE;
    const eml_msg_desc *d = eml_msg_desc_of(m->type);
    uint16_t version = d != NULL ? d->version : 0;
    eml_put_le32(m->buf, EML_MSG_MAGIC);
    m->buf[4] = (uint8_t)(version & 0xff);
    m->buf[5] = (uint8_t)(version >> 8);
    m->buf[6] = (uint8_t)(m->type & 0xff);
    m->buf[7] = (uint8_t)(m->type >> 8);
    eml_put_le32(m->buf + 8, (uint32_t)payload);
    eml_put_le32(m->buf + 12, seq);
    c->sent_seq = seq;
    if (c->tap != NULL) c->tap(c->tap_user, 1, m->buf, m->len);
    return write_all(c->fd, m->buf, m->len);
}

eml_status eml_msg_send(eml_channel *c, eml_msg *m)
{
    if (m->failed || m->buf == NULL) return EML_ERR_NOMEM;
    return send_frame(c, m, c->seq_out++);
}

eml_status eml_msg_send_reply(eml_channel *c, eml_msg *m, uint32_t seq)
{
    return send_frame(c, m, seq);
}

eml_status eml_msg_parse_header(const uint8_t hdr[16], uint16_t *type,
                                uint32_t *len)
{
    *type = 0;
    *len = 0;
    if (eml_get_le32(hdr) != EML_MSG_MAGIC) return EML_ERR_FORMAT;
    uint16_t version = (uint16_t)(hdr[4] | hdr[5] << 8);
    uint16_t t = (uint16_t)(hdr[6] | hdr[7] << 8);
    const eml_msg_desc *d = eml_msg_desc_of(t);
    if (d == NULL) return EML_ERR_FORMAT;
    if (version != d->version) return EML_ERR_UNSUPPORTED;
    uint32_t n = eml_get_le32(hdr + 8);
    if (n > EML_MSG_MAX) return EML_ERR_RANGE;
    *type = t;
    *len = n;
    return EML_OK;
}

eml_status eml_msg_recv(eml_channel *c, uint16_t *type,
                        const uint8_t **payload, size_t *len)
{
    uint8_t hdr[EML_MSG_HEADER];
    *payload = NULL;
    *len = 0;
    eml_status st = read_all(c, hdr, sizeof(hdr));
    if (st != EML_OK) return st;
    uint32_t n;
    st = eml_msg_parse_header(hdr, type, &n);
    if (st != EML_OK) return st;
    if (n > c->rcap) {
        size_t cap = c->rcap ? c->rcap : 4096;
        while (cap < n) cap *= 2;
        uint8_t *nb = malloc(cap);
        if (nb == NULL) return EML_ERR_NOMEM;
        free_rbuf(c);
        c->rbuf = nb;
        c->rcap = cap;
    }
    st = read_all(c, c->rbuf, n);
    if (st != EML_OK) return st;
    c->recv_seq = eml_get_le32(hdr + 12);
    if (c->tap != NULL) {
        c->tap(c->tap_user, 0, hdr, sizeof(hdr));
        c->tap(c->tap_user, 0, c->rbuf, n);
    }
    *payload = c->rbuf;
    *len = n;
    return EML_OK;
}
