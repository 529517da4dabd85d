/*
 * feeder.h - for the message fuzz targets: a thread that writes the fuzz
 * input into one end of a socketpair and drains whatever the other side
 * sends back, never blocking, so neither side can deadlock on a full
 * socket buffer; and the codec's round trip over the whole table (every
 * message of edl.h, a new one included without an edit here).
 * Header-only; fuzz targets only.
 */
#ifndef EML_FUZZ_FEEDER_H
#define EML_FUZZ_FEEDER_H

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "enclaveml/boundary.h"

typedef struct feeder {
    int fd;
    const uint8_t *p;
    size_t n;
} feeder;

static void *feed(void *arg)
{
    feeder *f = arg;
    size_t off = 0;
    int wdone = 0;
    uint8_t sink[65536];
    if (f->n == 0) {
        wdone = 1;
        shutdown(f->fd, SHUT_WR);
    }
    for (;;) {
        struct pollfd pf = {f->fd, (short)(POLLIN | (wdone ? 0 : POLLOUT)), 0};
        if (poll(&pf, 1, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (!wdone && (pf.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(f->fd, f->p + off, f->n - off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) off = f->n;
            if (off == f->n) {
                wdone = 1;
                shutdown(f->fd, SHUT_WR);
            }
        }
        if (pf.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = recv(f->fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (r == 0) break;
            if (r < 0 && errno != EAGAIN && errno != EINTR) break;
        }
    }
    return NULL;
}

/* Decodes the input as the payload of every message in the table; one
 * that decodes must encode back to exactly the input's bytes (the codec
 * reads what it writes and nothing else). */
static void roundtrip_table(const uint8_t *p, size_t n)
{
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of(t);
        if (d == NULL) abort(); /* a hole in the table */
        eml_msg_any m;
        void *mp = d->size ? &m : NULL;
        if (eml_boundary_decode((uint16_t)t, p, n, mp, d->size, NULL) !=
            EML_OK)
            continue;
        eml_msg out;
        if (eml_boundary_encode((uint16_t)t, mp, d->size, &out, NULL) !=
                EML_OK ||
            out.len - EML_MSG_HEADER != n ||
            (n > 0 && memcmp(out.buf + EML_MSG_HEADER, p, n) != 0))
            abort();
        eml_msg_free(&out);
    }
}

#endif
