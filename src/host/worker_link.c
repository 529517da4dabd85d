/*
 * worker_link.c - sockets to and from an outsourcing worker (see
 * worker_link.h): address parsing, connecting with a timeout, the
 * eml_worker_link the enclave's client sends requests and receives
 * replies through, and the serving side's listen, accept and request
 * reading (shared by `enclaveml worker` and tests/worker_proxy.c).
 *
 * Every socket is non-blocking and every wait is a poll bounded by the
 * connection's timeout, so a worker that vanishes or stalls becomes one
 * error naming its address instead of a hang.  Writes use MSG_NOSIGNAL: a
 * closed peer is an error here, not a SIGPIPE that kills the process.  The
 * first error breaks the connection for good (it is sticky, like rio's):
 * after a short read the frames are out of step.
 *
 * Host side: sockets only, never prints.  A connection owns its socket and
 * its receive buffer.
 */
#include "host/worker_link.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SLICE_MS 100 /* how often a wait looks at its stop flag */

struct eml_worker_conn {
    int fd;
    int timeout_ms;
    volatile sig_atomic_t *stop;
    char name[EML_WORKER_ADDR_MAX + 16]; /* "worker tcp:...", messages */
    uint8_t *buf; /* the last frame read (owned, reused) */
    size_t cap;
    eml_status broken; /* sticky: the first error */
    eml_err broken_err;
};

/* ==== addresses ==== */

/* The address for a message: at most 80 bytes, unprintables as '?'. */
static void quote(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < n && i < 80; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    out[i] = '\0';
}

static eml_status bad_addr(eml_err *err, const char *addr, const char *why)
{
    char q[96];
    quote(q, sizeof(q), addr);
    return eml_err_set(err, EML_ERR_INVALID, "worker address '%s': %s", q,
                       why);
}

static eml_status parse_unix(const char *addr, const char *path,
                             eml_worker_addr *out, eml_err *err)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&out->sa;
    size_t len = strlen(path);
    if (len == 0) return bad_addr(err, addr, "unix: needs a path");
    if (len >= sizeof(un->sun_path))
        return bad_addr(err, addr, "unix: the path is too long for a "
                                   "socket (at most 107 bytes)");
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, len + 1);
    out->family = AF_UNIX;
    out->len = (socklen_t)sizeof(*un);
    return EML_OK;
}

static eml_status parse_tcp(const char *addr, const char *rest,
                            eml_worker_addr *out, eml_err *err)
{
    const char *colon = strrchr(rest, ':');
    if (colon == NULL || colon == rest)
        return bad_addr(err, addr, "expected tcp:HOST:PORT");
    char host[256];
    size_t hl = (size_t)(colon - rest);
    if (hl >= sizeof(host) || memchr(rest, ':', hl) != NULL)
        return bad_addr(err, addr, "HOST must be an IPv4 address or a "
                                   "host name");
    memcpy(host, rest, hl);
    host[hl] = '\0';
    const char *ps = colon + 1;
    size_t pl = strlen(ps);
    long port = 0;
    for (size_t i = 0; i < pl && pl <= 5; i++)
        port = ps[i] >= '0' && ps[i] <= '9' ? port * 10 + (ps[i] - '0')
                                            : 1 << 20;
    if (pl == 0 || pl > 5 || port > 65535)
        return bad_addr(err, addr, "PORT must be a number in 0..65535");
    struct sockaddr_in *in = (struct sockaddr_in *)&out->sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0 || res == NULL) {
            char why[200];
            snprintf(why, sizeof(why), "cannot resolve the host: %s",
                     rc != 0 ? gai_strerror(rc) : "no IPv4 address");
            return bad_addr(err, addr, why);
        }
        in->sin_addr = ((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    out->family = AF_INET;
    out->len = (socklen_t)sizeof(*in);
    return EML_OK;
}

eml_status eml_worker_addr_parse(const char *addr, eml_worker_addr *out,
                                 eml_err *err)
{
    memset(out, 0, sizeof(*out));
    if (addr == NULL) addr = "";
    if (strlen(addr) >= sizeof(out->text))
        return bad_addr(err, addr, "too long");
    memcpy(out->text, addr, strlen(addr) + 1);
    if (strncmp(addr, "unix:", 5) == 0)
        return parse_unix(addr, addr + 5, out, err);
    if (strncmp(addr, "tcp:", 4) == 0)
        return parse_tcp(addr, addr + 4, out, err);
    return bad_addr(err, addr, "expected tcp:HOST:PORT or unix:PATH");
}

/* ==== waiting on a socket ==== */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* The connection's error, kept: every later call returns it again. */
static eml_status fail(eml_worker_conn *c, eml_err *err, eml_status st,
                       const char *what)
{
    if (c->broken == EML_OK) {
        c->broken = st;
        /* a message cut short is still the message */
        if (snprintf(c->broken_err.msg, sizeof(c->broken_err.msg), "%s: %s",
                     c->name, what) < 0)
            c->broken_err.msg[0] = '\0';
    }
    return eml_err_set(err, c->broken, "%s", c->broken_err.msg);
}

static eml_status timed_out(eml_worker_conn *c, eml_err *err)
{
    char what[64];
    snprintf(what, sizeof(what), "timed out after %g s",
             c->timeout_ms / 1000.0);
    return fail(c, err, EML_ERR_IO, what);
}

/* Waits until c's socket is ready for events: timeout_ms < 0 waits
 * without a limit (only the stop flag ends it). */
static eml_status wait_for(eml_worker_conn *c, short events, int timeout_ms,
                           eml_err *err)
{
    double end = now_ms() + timeout_ms;
    for (;;) {
        if (c->stop != NULL && *c->stop)
            return fail(c, err, EML_ERR_IO, "stopped");
        int slice = c->stop != NULL ? SLICE_MS : -1;
        if (timeout_ms >= 0) {
            double left = end - now_ms();
            if (left <= 0) return timed_out(c, err);
            if (slice < 0 || left < slice) slice = (int)left + 1;
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int rc = poll(&pfd, 1, slice);
        if (rc > 0) return EML_OK; /* ready, or an error the call will see */
        if (rc < 0 && errno != EINTR)
            return fail(c, err, EML_ERR_IO, strerror(errno));
    }
}

/* Reads exactly n bytes; first_ms bounds the wait for the first byte (the
 * others wait c->timeout_ms each).  *got counts what arrived.  With
 * eof_ok, the peer closing before the first byte is EML_OK with *got = 0
 * (a clean end between frames), not an error. */
static eml_status read_full(eml_worker_conn *c, uint8_t *p, size_t n,
                            int first_ms, int eof_ok, size_t *got,
                            eml_err *err)
{
    *got = 0;
    if (c->broken != EML_OK)
        return eml_err_set(err, c->broken, "%s", c->broken_err.msg);
    while (*got < n) {
        eml_status st = wait_for(c, POLLIN,
                                 *got == 0 ? first_ms : c->timeout_ms, err);
        if (st != EML_OK) return st;
        ssize_t r = recv(c->fd, p + *got, n - *got, 0);
        if (r == 0 && *got == 0 && eof_ok) return EML_OK;
        if (r == 0) return fail(c, err, EML_ERR_IO, "connection closed");
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            if (errno == ECONNRESET)
                return fail(c, err, EML_ERR_IO,
                            "connection closed (reset by the peer)");
            return fail(c, err, EML_ERR_IO, strerror(errno));
        }
        *got += (size_t)r;
    }
    return EML_OK;
}

eml_status eml_worker_conn_write(eml_worker_conn *c, const void *p, size_t n,
                                 eml_err *err)
{
    if (c->broken != EML_OK)
        return eml_err_set(err, c->broken, "%s", c->broken_err.msg);
    const uint8_t *b = p;
    size_t done = 0;
    while (done < n) {
        eml_status st = wait_for(c, POLLOUT, c->timeout_ms, err);
        if (st != EML_OK) return st;
        ssize_t w = send(c->fd, b + done, n - done, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            if (errno == EPIPE || errno == ECONNRESET)
                return fail(c, err, EML_ERR_IO, "connection closed");
            return fail(c, err, EML_ERR_IO, strerror(errno));
        }
        done += (size_t)w;
    }
    return EML_OK;
}

/* c's buffer holds at least n bytes. */
static eml_status reserve(eml_worker_conn *c, size_t n, eml_err *err)
{
    if (n <= c->cap) return EML_OK;
    uint8_t *q = realloc(c->buf, n);
    if (q == NULL)
        return eml_err_set(err, EML_ERR_NOMEM,
                           "%s: no memory for a %zu-byte frame", c->name, n);
    c->buf = q;
    c->cap = n;
    return EML_OK;
}

/* ==== connections ==== */

static eml_status conn_new(int fd, const char *name, int timeout_ms,
                           eml_worker_conn **out, eml_err *err)
{
    eml_worker_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return eml_err_set(err, EML_ERR_NOMEM, "%s: out of memory", name);
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    snprintf(c->name, sizeof(c->name), "%s", name);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        eml_status st = eml_err_set(err, EML_ERR_IO, "%s: %s", name,
                                    strerror(errno));
        eml_worker_disconnect(c);
        return st;
    }
    *out = c;
    return EML_OK;
}

eml_status eml_worker_conn_wrap(int fd, const char *name, int timeout_ms,
                                volatile sig_atomic_t *stop,
                                eml_worker_conn **out, eml_err *err)
{
    *out = NULL;
    eml_status st = conn_new(fd, name, timeout_ms, out, err);
    if (st == EML_OK) (*out)->stop = stop;
    return st;
}

eml_status eml_worker_connect(const char *addr, int timeout_ms,
                              eml_worker_conn **out, eml_err *err)
{
    *out = NULL;
    eml_worker_addr a;
    eml_status st = eml_worker_addr_parse(addr, &a, err);
    if (st != EML_OK) return st;
    if (timeout_ms <= 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "worker %s: the timeout must be positive", a.text);
    char name[sizeof(a.text) + 8];
    snprintf(name, sizeof(name), "worker %s", a.text);
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: cannot connect: %s", name,
                           strerror(errno));
    eml_worker_conn *c;
    st = conn_new(fd, name, timeout_ms, &c, err);
    if (st != EML_OK) return st;
    if (connect(fd, (struct sockaddr *)&a.sa, a.len) != 0) {
        int e = errno;
        if (e == EINPROGRESS) {
            st = wait_for(c, POLLOUT, timeout_ms, err);
            socklen_t el = sizeof(e);
            if (st == EML_OK &&
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
                e = errno;
        }
        if (st == EML_OK && e != 0 && e != EINPROGRESS) {
            char what[160];
            snprintf(what, sizeof(what), "cannot connect: %s", strerror(e));
            st = fail(c, err, EML_ERR_IO, what);
        }
        if (st != EML_OK) {
            eml_worker_disconnect(c);
            return st;
        }
    }
    if (a.family == AF_INET) {
        int one = 1; /* a request is one write; do not hold its tail back */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    *out = c;
    return EML_OK;
}

void eml_worker_disconnect(eml_worker_conn *c)
{
    if (c == NULL) return;
    if (c->fd >= 0) close(c->fd);
    free(c->buf);
    free(c);
}

/* ==== the link ==== */

static eml_status link_send(void *user, const uint8_t *p, size_t n,
                            eml_err *err)
{
    return eml_worker_conn_write(user, p, n, err);
}

static eml_status link_recv(void *user, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    eml_worker_conn *c = user;
    *p = NULL;
    *n = 0;
    size_t got, total;
    eml_status st = reserve(c, EML_WORKER_REPLY_HEADER, err);
    if (st == EML_OK)
        st = read_full(c, c->buf, EML_WORKER_REPLY_HEADER, c->timeout_ms, 0,
                       &got, err);
    if (st != EML_OK) return st;
    eml_worker_reply r;
    eml_err perr = {0};
    st = eml_worker_reply_header(c->buf, EML_WORKER_REPLY_HEADER, &r, &total,
                                 &perr);
    if (st != EML_OK) return fail(c, err, st, perr.msg);
    st = reserve(c, total, err);
    if (st != EML_OK) return fail(c, err, st, "no memory for the reply");
    st = read_full(c, c->buf + EML_WORKER_REPLY_HEADER,
                   total - EML_WORKER_REPLY_HEADER, c->timeout_ms, 0, &got,
                   err);
    if (st != EML_OK) return st;
    *p = c->buf;
    *n = total;
    return EML_OK;
}

eml_worker_link eml_worker_conn_link(eml_worker_conn *c)
{
    eml_worker_link l = {.user = c, .send = link_send, .recv = link_recv};
    return l;
}

/* ==== the serving side ==== */

eml_status eml_worker_read_request(eml_worker_conn *c, const uint8_t **p,
                                   size_t *n, eml_worker_req *q, eml_err *err)
{
    *p = NULL;
    *n = 0;
    memset(q, 0, sizeof(*q));
    size_t got, total;
    eml_status st = reserve(c, EML_WORKER_REQ_HEADER, err);
    if (st != EML_OK) return st;
    st = read_full(c, c->buf, EML_WORKER_REQ_HEADER, -1, 1, &got, err);
    if (st != EML_OK || got == 0) return st; /* got 0: the peer is done */
    st = eml_worker_req_header(c->buf, EML_WORKER_REQ_HEADER, q, &total, err);
    if (st != EML_OK) return st;
    st = reserve(c, total, err);
    if (st != EML_OK) return st;
    st = read_full(c, c->buf + EML_WORKER_REQ_HEADER,
                   total - EML_WORKER_REQ_HEADER, c->timeout_ms, 0, &got, err);
    if (st != EML_OK) return st;
    uint64_t id = q->id;
    st = eml_worker_req_parse(c->buf, total, q, err);
    if (st != EML_OK) {
        q->id = id;
        return st;
    }
    *p = c->buf;
    *n = total;
    return EML_OK;
}

void eml_worker_conn_linger(eml_worker_conn *c, int ms)
{
    if (shutdown(c->fd, SHUT_WR) != 0) return;
    double end = now_ms() + ms;
    uint8_t sink[4096];
    for (;;) {
        double left = end - now_ms();
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left + 1) <= 0) return;
        ssize_t r = recv(c->fd, sink, sizeof(sink), 0);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) return;
    }
}

/* A unix socket file at path that a live server answers on. */
static int unix_live(const eml_worker_addr *a)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int live = connect(fd, (const struct sockaddr *)&a->sa, a->len) == 0;
    close(fd);
    return live;
}

static eml_status unlink_stale(const eml_worker_addr *a, eml_err *err)
{
    const char *path = ((const struct sockaddr_un *)&a->sa)->sun_path;
    struct stat sb;
    if (lstat(path, &sb) != 0) return EML_OK;
    if (!S_ISSOCK(sb.st_mode))
        return eml_err_set(err, EML_ERR_IO,
                           "cannot listen on %s: the file exists and is not "
                           "a socket",
                           a->text);
    if (unix_live(a))
        return eml_err_set(err, EML_ERR_IO,
                           "cannot listen on %s: a server is already "
                           "listening there",
                           a->text);
    if (unlink(path) != 0)
        return eml_err_set(err, EML_ERR_IO,
                           "cannot listen on %s: removing the stale socket: "
                           "%s",
                           a->text, strerror(errno));
    return EML_OK;
}

/* The bound address as text: the actual port for TCP. */
static void bound_text(int fd, const eml_worker_addr *a, char *out, size_t n)
{
    if (a->family == AF_UNIX) {
        snprintf(out, n, "%s", a->text);
        return;
    }
    struct sockaddr_in in;
    socklen_t len = sizeof(in);
    char ip[INET_ADDRSTRLEN] = "?";
    if (getsockname(fd, (struct sockaddr *)&in, &len) == 0)
        inet_ntop(AF_INET, &in.sin_addr, ip, sizeof(ip));
    else
        in.sin_port = 0;
    snprintf(out, n, "tcp:%s:%u", ip, (unsigned)ntohs(in.sin_port));
}

eml_status eml_worker_listen(const eml_worker_addr *a, int *fd, char *bound,
                             size_t bound_n, eml_err *err)
{
    *fd = -1;
    if (a->family == AF_UNIX) {
        eml_status st = unlink_stale(a, err);
        if (st != EML_OK) return st;
    }
    int s = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return eml_err_set(err, EML_ERR_IO, "cannot listen on %s: %s",
                           a->text, strerror(errno));
    int one = 1;
    if (a->family == AF_INET)
        (void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (const struct sockaddr *)&a->sa, a->len) != 0 ||
        listen(s, 8) != 0) {
        int e = errno;
        close(s);
        return eml_err_set(err, EML_ERR_IO, "cannot listen on %s: %s",
                           a->text, strerror(e));
    }
    bound_text(s, a, bound, bound_n);
    *fd = s;
    return EML_OK;
}

int eml_worker_accept(int lfd, volatile sig_atomic_t *stop, int *out)
{
    *out = -1;
    for (;;) {
        if (stop != NULL && *stop) return 0;
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int rc = poll(&pfd, 1, stop != NULL ? SLICE_MS : -1);
        if (rc < 0 && errno != EINTR) return -1;
        if (rc <= 0) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0) {
            (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
            *out = fd;
            return 1;
        }
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED &&
            errno != EWOULDBLOCK)
            return -1;
    }
}
