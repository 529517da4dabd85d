/*
 * worker_proxy.c - a fault-injecting proxy between an outsourcing client
 * and a real `enclaveml worker`, for tests only (never shipped: the worker
 * itself has no such switch).  It is a real process relaying over real
 * sockets: it listens, and for each client connection opens its own
 * connection to the worker, relays every request and applies a fault to
 * every N-th reply (counted over its whole life, from 1).
 *
 *   worker_proxy --listen unix:PATH --to ADDR --fault KIND --every N
 *                --seed S [--hold-ms MS] [--timeout-ms MS]
 *                [--canary IDXFILE:INDEX]
 *
 * --canary watches the link for an image of an (uncompressed) idx file:
 * every request's operands are searched for six consecutive pixels of one
 * of its rows (non-zero, not all equal) in the client's fixed point
 * (pixel / 255 scaled by 2^s, rounded, for every s in [0, 40]), and each
 * request where they appear is logged on stderr as "worker_proxy: canary
 * row R seen in request ID".
 * Faults (a reply with a non-zero status is relayed as it is, except by
 * truncate, replay and swap):
 *   none       relay every reply unchanged
 *   flip       add or subtract 1 (mod p) to one element of C
 *   scale-row  multiply one row of C by a factor in [2, p-1]
 *   swap       hold the reply and deliver the next request's reply first.
 *              A client that waits for each reply before sending the next
 *              request sends no next request: after --hold-ms (default
 *              200) the proxy delivers the held reply relabelled with id+1,
 *              which is what such a client would see first from a worker
 *              answering out of order
 *   replay     deliver the previous reply (as it came from the worker)
 *              again instead of this one; the first reply has no previous
 *              one and is relayed unchanged
 *   truncate   deliver the reply cut short (half of it), then close
 * Like the worker it prints the address it listens on as its only line on
 * stdout, and logs each fault on stderr.  A malformed request from the
 * client gets a REFUSED reply from the proxy and the connection is closed.
 * SIGTERM or SIGINT stops it.
 */
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "enclaveml/outsource.h"
#include "host/worker_link.h"

enum fault { F_NONE, F_FLIP, F_SCALE_ROW, F_SWAP, F_REPLAY, F_TRUNCATE };
static const char *const fault_names[] = {"none", "flip", "scale-row",
                                          "swap", "replay", "truncate"};

typedef struct frame {
    uint8_t *p;
    size_t n, cap;
} frame;

typedef struct proxy {
    const char *to;
    enum fault fault;
    long every;
    uint64_t rng;
    int hold_ms, timeout_ms;
    long replies; /* replies from the worker, over the proxy's life */
    frame cur, last, next;
    /* --canary: the first value of every pattern, sorted, and the patterns */
    struct canary {
        uint64_t first;
        uint64_t v[6];
        int row;
    } *can;
    size_t ncan;
} proxy;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static uint64_t next_rand(proxy *x) /* splitmix64 */
{
    uint64_t z = (x->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void copy_frame(frame *f, const uint8_t *p, size_t n)
{
    if (n > f->cap) {
        uint8_t *q = realloc(f->p, n);
        if (q == NULL) {
            fprintf(stderr, "worker_proxy: out of memory\n");
            exit(1);
        }
        f->p = q;
        f->cap = n;
    }
    memcpy(f->p, p, n);
    f->n = n;
}

/* ==== faults on a reply frame ==== */

static uint64_t reply_id(const uint8_t *p)
{
    uint64_t id;
    memcpy(&id, p + 8, 8);
    return id;
}

static int has_matrix(const frame *f, eml_worker_reply *r)
{
    eml_err err = {0};
    return eml_worker_reply_parse(f->p, f->n, r, &err) == EML_OK &&
           r->status == EML_WORKER_DONE;
}

static void flip(proxy *x, frame *f)
{
    eml_worker_reply r;
    if (!has_matrix(f, &r)) return;
    uint8_t *c = f->p + EML_WORKER_REPLY_HEADER;
    size_t i = next_rand(x) % ((size_t)r.m * r.n);
    uint64_t v = eml_worker_get(c, i);
    int up = next_rand(x) & 1;
    eml_worker_put(c, i, up ? eml_field_add(v, 1) : eml_field_sub(v, 1));
    fprintf(stderr, "worker_proxy: flip: element %zu %s 1\n", i,
            up ? "+" : "-");
}

static void scale_row(proxy *x, frame *f)
{
    eml_worker_reply r;
    if (!has_matrix(f, &r)) return;
    uint8_t *c = f->p + EML_WORKER_REPLY_HEADER;
    uint32_t row = (uint32_t)(next_rand(x) % r.m);
    uint64_t k = 2 + next_rand(x) % (EML_FIELD_P - 2); /* 2 .. p-1 */
    for (uint32_t j = 0; j < r.n; j++) {
        size_t i = (size_t)row * r.n + j;
        eml_worker_put(c, i, eml_field_mul(eml_worker_get(c, i), k));
    }
    fprintf(stderr, "worker_proxy: scale-row: row %u times %llu\n", row,
            (unsigned long long)k);
}

/* ==== relaying ==== */

/* Sends req to the worker and copies its reply into f; 0 or -1. */
static int ask_worker(eml_worker_link *w, const uint8_t *req, size_t n,
                      frame *f)
{
    eml_err err = {0};
    const uint8_t *p;
    size_t len;
    if (w->send(w->user, req, n, &err) != EML_OK ||
        w->recv(w->user, &p, &len, &err) != EML_OK) {
        fprintf(stderr, "worker_proxy: %s\n", err.msg);
        return -1;
    }
    copy_frame(f, p, len);
    return 0;
}

static int send_frame(eml_worker_conn *cl, const uint8_t *p, size_t n)
{
    eml_err err = {0};
    if (eml_worker_conn_write(cl, p, n, &err) == EML_OK) return 0;
    fprintf(stderr, "worker_proxy: %s\n", err.msg);
    return -1;
}

/* swap: x->cur is held; relays the next request if one comes within
 * hold_ms and answers it first.  0 go on, -1 close. */
static int swap(proxy *x, eml_worker_conn *cl, int cfd, eml_worker_link *w)
{
    struct pollfd pfd = {.fd = cfd, .events = POLLIN};
    if (poll(&pfd, 1, x->hold_ms) <= 0) {
        uint64_t id = reply_id(x->cur.p) + 1;
        memcpy(x->cur.p + 8, &id, 8);
        fprintf(stderr, "worker_proxy: swap: no next request in %d ms, "
                        "the held reply goes out as id %llu\n",
                x->hold_ms, (unsigned long long)id);
        return send_frame(cl, x->cur.p, x->cur.n);
    }
    const uint8_t *p;
    size_t n;
    eml_worker_req q;
    eml_err err = {0};
    if (eml_worker_read_request(cl, &p, &n, &q, &err) != EML_OK || n == 0)
        return -1;
    if (ask_worker(w, p, n, &x->next) != 0) return -1;
    x->replies++;
    fprintf(stderr, "worker_proxy: swap: reply to id %llu before id "
                    "%llu's\n",
            (unsigned long long)q.id,
            (unsigned long long)reply_id(x->cur.p));
    if (send_frame(cl, x->next.p, x->next.n) != 0) return -1;
    return send_frame(cl, x->cur.p, x->cur.n);
}

/* Delivers x->cur, the reply to the x->replies-th request, with the fault
 * if it is due.  0 go on, -1 close the client's connection. */
static int deliver(proxy *x, eml_worker_conn *cl, int cfd,
                   eml_worker_link *w)
{
    int due = x->fault != F_NONE && x->replies % x->every == 0;
    int rc = 0;
    if (!due) {
        rc = send_frame(cl, x->cur.p, x->cur.n);
    } else if (x->fault == F_FLIP) {
        flip(x, &x->cur);
        rc = send_frame(cl, x->cur.p, x->cur.n);
    } else if (x->fault == F_SCALE_ROW) {
        scale_row(x, &x->cur);
        rc = send_frame(cl, x->cur.p, x->cur.n);
    } else if (x->fault == F_SWAP) {
        return swap(x, cl, cfd, w);
    } else if (x->fault == F_REPLAY && x->last.n > 0) {
        fprintf(stderr, "worker_proxy: replay: id %llu's reply for id %llu\n",
                (unsigned long long)reply_id(x->last.p),
                (unsigned long long)reply_id(x->cur.p));
        rc = send_frame(cl, x->last.p, x->last.n);
    } else if (x->fault == F_REPLAY) {
        rc = send_frame(cl, x->cur.p, x->cur.n);
    } else { /* F_TRUNCATE */
        size_t cut = x->cur.n / 2;
        fprintf(stderr, "worker_proxy: truncate: %zu of %zu bytes, then "
                        "close\n",
                cut, x->cur.n);
        (void)send_frame(cl, x->cur.p, cut);
        return -1;
    }
    return rc;
}

/* ==== the canary watch ==== */

static long number(const char *s, long lo, long hi);

static int by_first(const void *a, const void *b)
{
    uint64_t x = ((const struct canary *)a)->first;
    uint64_t y = ((const struct canary *)b)->first;
    return x < y ? -1 : x > y;
}

/* Loads image `index` of an idx3 file and builds the patterns. */
static int canary_load(proxy *x, const char *spec)
{
    char path[4096];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof(path)) return -1;
    memcpy(path, spec, (size_t)(colon - spec));
    path[colon - spec] = '\0';
    long index = number(colon + 1, 0, 1 << 24);
    FILE *f = fopen(path, "rb");
    uint8_t h[16], img[28 * 28];
    if (f == NULL || index < 0 || fread(h, 1, 16, f) != 16 ||
        fseek(f, 16 + index * 784L, SEEK_SET) != 0 ||
        fread(img, 1, 784, f) != 784) {
        if (f != NULL) fclose(f);
        return -1;
    }
    fclose(f);
    x->can = calloc(41 * 28 * 23, sizeof(*x->can));
    if (x->can == NULL) return -1;
    for (int sft = 0; sft <= 40; sft++)
        for (int r = 0; r < 28; r++)
            for (int c0 = 0; c0 + 6 <= 28; c0++) {
                const uint8_t *px = img + r * 28 + c0;
                int ok = 1, same = 1;
                for (int j = 0; j < 6; j++) {
                    ok &= px[j] != 0;
                    same &= px[j] == px[0];
                }
                if (!ok || same) continue;
                struct canary *k = &x->can[x->ncan++];
                for (int j = 0; j < 6; j++) {
                    float v = (float)px[j] * (1.0f / 255.0f);
                    k->v[j] = eml_field_of(
                        (int64_t)nearbyint(ldexp((double)v, sft)));
                }
                k->first = k->v[0];
                k->row = r;
            }
    qsort(x->can, x->ncan, sizeof(*x->can), by_first);
    return x->ncan > 0 ? 0 : -1;
}

/* Logs the request if its operands hold a canary pattern. */
static void canary_watch(const proxy *x, const eml_worker_req *q)
{
    size_t len[2] = {q->na, q->nb};
    for (int o = 0; o < 2; o++)
        for (size_t i = 0; i + 6 <= len[o]; i++) {
            struct canary key = {.first = eml_worker_req_elem(q, o, i)};
            const struct canary *k =
                bsearch(&key, x->can, x->ncan, sizeof(key), by_first);
            if (k == NULL) continue;
            while (k > x->can && k[-1].first == key.first) k--;
            for (; k < x->can + x->ncan && k->first == key.first; k++) {
                int j = 1;
                while (j < 6 && eml_worker_req_elem(q, o, i + j) == k->v[j])
                    j++;
                if (j == 6) {
                    fprintf(stderr,
                            "worker_proxy: canary row %d seen in request "
                            "%llu\n",
                            k->row, (unsigned long long)q->id);
                    return;
                }
            }
        }
}

/* Relays one client connection (cfd) to a fresh worker connection. */
static void relay(proxy *x, int cfd)
{
    eml_worker_conn *cl = NULL, *wc = NULL;
    eml_err err = {0};
    if (eml_worker_conn_wrap(cfd, "client", x->timeout_ms, &g_stop, &cl,
                             &err) != EML_OK ||
        eml_worker_connect(x->to, x->timeout_ms, &wc, &err) != EML_OK) {
        fprintf(stderr, "worker_proxy: %s\n", err.msg);
        eml_worker_disconnect(cl);
        return;
    }
    eml_worker_link w = eml_worker_conn_link(wc);
    for (;;) {
        const uint8_t *p;
        size_t n;
        eml_worker_req q;
        memset(&err, 0, sizeof(err));
        eml_status st = eml_worker_read_request(cl, &p, &n, &q, &err);
        if (st == EML_OK && n == 0) break;
        if (st != EML_OK) {
            fprintf(stderr, "worker_proxy: %s\n", err.msg);
            if (st != EML_ERR_IO) {
                uint8_t h[EML_WORKER_REPLY_HEADER];
                eml_worker_reply_header_write(h, q.id, EML_WORKER_REFUSED, 0,
                                              0);
                if (send_frame(cl, h, sizeof(h)) == 0)
                    eml_worker_conn_linger(cl, 1000);
            }
            break;
        }
        if (x->ncan > 0) canary_watch(x, &q);
        if (ask_worker(&w, p, n, &x->cur) != 0) break;
        x->replies++;
        int rc = deliver(x, cl, cfd, &w);
        copy_frame(&x->last, x->cur.p, x->cur.n);
        if (rc != 0) break;
    }
    eml_worker_disconnect(wc);
    eml_worker_disconnect(cl);
}

/* ==== options ==== */

static int usage(void)
{
    fputs("usage: worker_proxy --listen ADDR --to ADDR --fault "
          "none|flip|scale-row|swap|replay|truncate\n"
          "                    --every N --seed S [--hold-ms MS] "
          "[--timeout-ms MS]\n"
          "                    [--canary IDXFILE:INDEX]\n",
          stderr);
    return 2;
}

static long number(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    return *s != '\0' && *end == '\0' && v >= lo && v <= hi ? v : lo - 1;
}

/* Fills x and *listen from argv; 0 or -1. */
static int parse_args(int argc, char **argv, proxy *x, const char **listen)
{
    int have_fault = 0;
    x->every = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (strcmp(o, "--listen") == 0) *listen = v;
        else if (strcmp(o, "--to") == 0) x->to = v;
        else if (strcmp(o, "--every") == 0) x->every = number(v, 1, 1 << 30);
        else if (strcmp(o, "--seed") == 0)
            x->rng = strtoull(v, NULL, 10);
        else if (strcmp(o, "--hold-ms") == 0)
            x->hold_ms = (int)number(v, 0, 600000);
        else if (strcmp(o, "--timeout-ms") == 0)
            x->timeout_ms = (int)number(v, 1, 600000);
        else if (strcmp(o, "--canary") == 0) {
            if (canary_load(x, v) != 0) return -1;
        } else if (strcmp(o, "--fault") == 0) {
            for (int f = 0; f <= F_TRUNCATE; f++)
                if (strcmp(v, fault_names[f]) == 0) {
                    x->fault = (enum fault)f;
                    have_fault = 1;
                }
        } else
            return -1;
    }
    if (argc % 2 != 1 || *listen == NULL || x->to == NULL || !have_fault ||
        x->every < 1 || x->hold_ms < 0 || x->timeout_ms < 1)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    proxy x = {.hold_ms = 200, .timeout_ms = EML_WORKER_TIMEOUT_MS};
    const char *listen_at = NULL;
    if (parse_args(argc, argv, &x, &listen_at) != 0) return usage();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    eml_worker_addr a;
    eml_err err = {0};
    int lfd;
    char bound[EML_WORKER_ADDR_MAX];
    if (eml_worker_addr_parse(listen_at, &a, &err) != EML_OK ||
        eml_worker_listen(&a, &lfd, bound, sizeof(bound), &err) != EML_OK) {
        fprintf(stderr, "worker_proxy: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", bound);
    fflush(stdout);
    fprintf(stderr, "worker_proxy: %s -> %s, fault %s every %ld\n", bound,
            x.to, fault_names[x.fault], x.every);
    int fd, got;
    while ((got = eml_worker_accept(lfd, &g_stop, &fd)) == 1) relay(&x, fd);
    close(lfd);
    if (a.family == AF_UNIX)
        unlink(((const struct sockaddr_un *)&a.sa)->sun_path);
    free(x.cur.p);
    free(x.last.p);
    free(x.next.p);
    free(x.can);
    return got < 0 ? 1 : 0;
}
