/*
 * serve_relay.c - the host's half of the attested inference server: it
 * owns the sockets and relays ciphertext between them and the enclave,
 * which holds every TLS session (docs/serve.md).
 *
 * One thread, one epoll loop.  Each turn gathers what happened (accepted
 * connections, bytes read, peers gone) into one SERVE_IO ecall, with the
 * monotonic clock, and carries out the answer: bytes to send, connections
 * to close, log lines.  The enclave's deadline (a batch waiting, a slow
 * client's timeout) bounds the next wait.
 *
 * With the queue on, the enclave's entries and wrapped keys go to Redis
 * (serve_queue.c), and a reader thread's replies and reports come back
 * as records through an eventfd in the same loop.
 *
 * What the host sees: who connects, when, and how many bytes go each way;
 * never a plaintext byte or a key.  What it could do: drop, delay or
 * reorder bytes, which TLS turns into failed sessions, not wrong answers.
 */
#define _GNU_SOURCE /* accept4 */
#include "host/serve_relay.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "enclaveml/serve.h"
#include "host/serve_queue.h"

#define READ_CHUNK ((size_t)64 << 10)
#define OUT_MAX ((size_t)16 << 20)    /* unsent bytes a peer may owe */
#define LISTEN_TAG UINT64_MAX
#define QUEUE_TAG (UINT64_MAX - 1)

typedef struct peer {
    int fd;
    uint32_t id;
    uint8_t *out; /* bytes the enclave sent that the socket did not take */
    size_t out_n, out_cap;
    int close_after; /* the enclave said CLOSE: once out is sent */
    int want_out;    /* EPOLLOUT is on */
} peer;

typedef struct relay {
    eml_enclave_host *h;
    int ep, lfd;
    peer *peers; /* by id % cap; ids are handed out here */
    size_t cap;
    uint32_t next_id;
    size_t open;
    eml_http_buf ev;
    uint8_t *rbuf;
    eml_serve_stats *stats;
    FILE *log;
    eml_serve_queue *q; /* NULL: no queue */
} relay;

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static peer *peer_of(relay *r, uint32_t id)
{
    peer *p = &r->peers[id % r->cap];
    return p->fd >= 0 && p->id == id ? p : NULL;
}

static void peer_close(relay *r, peer *p)
{
    epoll_ctl(r->ep, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    free(p->out);
    memset(p, 0, sizeof(*p));
    p->fd = -1;
    r->open--;
}

/* A new connection: a free slot and an id that maps to it. */
static eml_status accept_all(relay *r, eml_err *err)
{
    for (;;) {
        int fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return EML_OK;
            if (errno == EMFILE || errno == ENFILE) return EML_OK;
            return eml_err_set(err, EML_ERR_IO, "accept: %s",
                               strerror(errno));
        }
        if (r->open >= r->cap) { /* the enclave answers 503 below this */
            close(fd);
            r->stats->refused++;
            continue;
        }
        uint32_t id = r->next_id;
        while (r->peers[id % r->cap].fd >= 0) id++;
        r->next_id = id + 1;
        peer *p = &r->peers[id % r->cap];
        p->fd = fd;
        p->id = id;
        r->open++;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP,
                                .data.u64 = id};
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
            peer_close(r, p);
            continue;
        }
        eml_status st = eml_serve_record_put(&r->ev, id, EML_SERVE_OPEN,
                                             NULL, 0, err);
        if (st != EML_OK) return st;
        r->stats->accepted++;
    }
}

/* Reads what p has (a chunk per turn, for fairness). */
static eml_status read_peer(relay *r, peer *p, eml_err *err)
{
    ssize_t n = read(p->fd, r->rbuf, READ_CHUNK);
    if (n > 0) {
        r->stats->bytes_in += (uint64_t)n;
        return eml_serve_record_put(&r->ev, p->id, EML_SERVE_DATA, r->rbuf,
                                    (size_t)n, err);
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return EML_OK;
    uint32_t id = p->id; /* end of stream or an error: gone */
    peer_close(r, p);
    return eml_serve_record_put(&r->ev, id, EML_SERVE_CLOSED, NULL, 0, err);
}

static void want_out(relay *r, peer *p, int on)
{
    if (p->want_out == on) return;
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP |
                                      (on ? EPOLLOUT : 0),
                            .data.u64 = p->id};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, p->fd, &e);
    p->want_out = on;
}

/* Sends what p owes; 0, or -1 when the peer is gone (closed here). */
static int flush_peer(relay *r, peer *p)
{
    size_t sent = 0;
    while (sent < p->out_n) {
        ssize_t n = send(p->fd, p->out + sent, p->out_n - sent,
                         MSG_NOSIGNAL);
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    r->stats->bytes_out += sent;
    if (sent > 0) /* p->out is NULL while nothing was ever queued */
        memmove(p->out, p->out + sent, p->out_n - sent);
    p->out_n -= sent;
    want_out(r, p, p->out_n > 0);
    if (p->out_n == 0 && p->close_after) return -1;
    return 0;
}

static int queue_out(peer *p, const uint8_t *b, size_t n)
{
    if (p->out_n + n > OUT_MAX) return -1; /* it does not read: drop it */
    if (p->out_n + n > p->out_cap) {
        size_t cap = p->out_cap ? p->out_cap : 16384;
        while (cap < p->out_n + n) cap *= 2;
        uint8_t *q = realloc(p->out, cap);
        if (q == NULL) return -1;
        p->out = q;
        p->out_cap = cap;
    }
    memcpy(p->out + p->out_n, b, n);
    p->out_n += n;
    return 0;
}

/* Carries out the enclave's outputs; peers that are gone become CLOSED
 * events for the next turn. */
static eml_status outputs(relay *r, const uint8_t *out, size_t len,
                          eml_err *err)
{
    size_t off = 0;
    eml_serve_record rec;
    eml_status st;
    while ((st = eml_serve_record_next(out, len, &off, &rec)) == EML_OK) {
        if (rec.kind == EML_SERVE_LOG) {
            if (r->log != NULL)
                fprintf(r->log, "enclaveml: serve: %.*s\n", (int)rec.n,
                        (const char *)rec.p);
            continue;
        }
        if (rec.kind == EML_SERVE_ENQUEUE || rec.kind == EML_SERVE_ADMIT) {
            if (r->q == NULL)
                return eml_err_set(err, EML_ERR_FORMAT,
                                   "a queue record, but the queue is off");
            st = eml_serve_queue_out(r->q, &rec, err);
            if (st != EML_OK) return st;
            continue;
        }
        peer *p = peer_of(r, rec.conn);
        if (p == NULL) continue; /* gone already; the enclave knows */
        int gone = 0;
        if (rec.kind == EML_SERVE_SEND) gone = queue_out(p, rec.p, rec.n);
        else if (rec.kind == EML_SERVE_CLOSE) p->close_after = 1;
        else
            return eml_err_set(err, EML_ERR_FORMAT,
                               "the enclave sent a record of kind %d",
                               (int)rec.kind);
        if (!gone) gone = flush_peer(r, p);
        if (gone) {
            int told = p->close_after; /* the enclave closed it itself */
            uint32_t id = p->id;
            peer_close(r, p);
            if (!told &&
                (st = eml_serve_record_put(&r->ev, id, EML_SERVE_CLOSED, NULL,
                                           0, err)) != EML_OK)
                return st;
        }
    }
    if (st != EML_ERR_NOTFOUND)
        return eml_err_set(err, st, "a malformed output list from the "
                                    "enclave");
    return EML_OK;
}

static eml_status turn(relay *r, eml_err *err)
{
    eml_ecall_serve_io q = {now_ms(), {r->ev.p, r->ev.len}};
    eml_reply_serve_out a;
    eml_status st = eml_host_call(r->h, EML_MSG_SERVE_IO, &q, sizeof(q), &a,
                                  sizeof(a), err);
    if (st != EML_OK) return st;
    eml_http_buf_reset(&r->ev);
    r->stats->turns++;
    st = outputs(r, a.out.p, a.out.n, err);
    r->stats->deadline = a.deadline_ms;
    return st;
}

eml_status eml_serve_relay(eml_enclave_host *h, int lfd, size_t max_peers,
                           struct eml_serve_queue *q,
                           volatile sig_atomic_t *stop, eml_serve_stats *stats,
                           FILE *log, eml_err *err)
{
    relay r;
    memset(&r, 0, sizeof(r));
    r.h = h;
    r.lfd = lfd;
    r.cap = max_peers;
    r.stats = stats;
    r.log = log;
    r.q = q;
    r.next_id = 1;
    r.peers = calloc(r.cap, sizeof(*r.peers));
    r.rbuf = malloc(READ_CHUNK);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    eml_http_buf_init(&r.ev, EML_SERVE_IO_MAX);
    eml_status st = EML_OK;
    if (r.peers == NULL || r.rbuf == NULL || r.ep < 0) {
        st = eml_err_set(err, EML_ERR_NOMEM, "cannot start the relay");
        goto out;
    }
    for (size_t i = 0; i < r.cap; i++) r.peers[i].fd = -1;
    (void)fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    struct epoll_event le = {.events = EPOLLIN, .data.u64 = LISTEN_TAG};
    struct epoll_event qe = {.events = EPOLLIN, .data.u64 = QUEUE_TAG};
    if (epoll_ctl(r.ep, EPOLL_CTL_ADD, lfd, &le) != 0 ||
        (q != NULL &&
         epoll_ctl(r.ep, EPOLL_CTL_ADD, eml_serve_queue_fd(q), &qe) != 0)) {
        st = eml_err_set(err, EML_ERR_IO, "epoll: %s", strerror(errno));
        goto out;
    }
    struct epoll_event evs[256];
    stats->deadline = 0;
    while (!*stop) {
        int wait = 1000; /* wake up to look at *stop */
        if (stats->deadline != 0) {
            uint64_t t = now_ms();
            wait = stats->deadline <= t ? 0
                   : stats->deadline - t < 1000 ? (int)(stats->deadline - t)
                                                : 1000;
        }
        int n = epoll_wait(r.ep, evs, 256, wait);
        if (n < 0 && errno != EINTR) {
            st = eml_err_set(err, EML_ERR_IO, "epoll: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n && st == EML_OK; i++) {
            if (evs[i].data.u64 == LISTEN_TAG) {
                st = accept_all(&r, err);
                continue;
            }
            if (evs[i].data.u64 == QUEUE_TAG) {
                st = eml_serve_queue_take(q, &r.ev, err);
                continue;
            }
            peer *p = peer_of(&r, (uint32_t)evs[i].data.u64);
            if (p == NULL) continue;
            if ((evs[i].events & EPOLLOUT) && flush_peer(&r, p)) {
                int told = p->close_after;
                uint32_t id = p->id;
                peer_close(&r, p);
                if (!told)
                    st = eml_serve_record_put(&r.ev, id, EML_SERVE_CLOSED,
                                              NULL, 0, err);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                st = read_peer(&r, p, err);
        }
        if (st != EML_OK) break;
        uint64_t t = now_ms();
        if (r.ev.len > 0 || (stats->deadline != 0 && t >= stats->deadline))
            st = turn(&r, err);
        if (st != EML_OK) break;
    }
out:
    for (size_t i = 0; r.peers != NULL && i < r.cap; i++)
        if (r.peers[i].fd >= 0) peer_close(&r, &r.peers[i]);
    if (r.ep >= 0) close(r.ep);
    free(r.peers);
    free(r.rbuf);
    eml_http_buf_free(&r.ev);
    return st;
}
