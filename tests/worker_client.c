/*
 * worker_client.c - a test client of the outsourcing worker, driven by
 * tests/test_worker.sh against a real `enclaveml worker` process (directly
 * or through tests/worker_proxy.c).  It speaks through the host's link
 * (host/worker_link.h) and checks every product against the field GEMM
 * computed here, and the small ones against a naive triple loop too.
 *
 *   worker_client check ADDR          products of every shape that matters
 *   worker_client ask ADDR N          N small products on one connection
 *   worker_client malformed ADDR      bad frames: REFUSED, then closed
 *   worker_client timeout ADDR MS     a worker that never answers
 *   worker_client closed ADDR         prints "sent", then expects the
 *                                     worker to die before it answers
 *   worker_client fault ADDR KIND N   through worker_proxy --every N
 *
 * Prints "ok: ..." per check and exits 0, or "FAIL: ..." and exits 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enclaveml/outsource.h"
#include "host/worker_link.h"

static int g_failed;

#define FAIL(...)                                                             \
    do {                                                                      \
        printf("FAIL: ");                                                     \
        printf(__VA_ARGS__);                                                  \
        printf("\n");                                                         \
        g_failed = 1;                                                         \
    } while (0)

static uint64_t g_rng = 0x1234567u;

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* ==== products ==== */

enum fill { RANDOM, NEAR_TOP, SMALL, ZERO };

/* A product to ask for: operands, its request frame, the expected C. */
typedef struct product {
    uint64_t id;
    uint32_t m, n, k;
    uint64_t *a, *b;
    uint8_t *frame, *want; /* want: m*n little-endian, by eml_field_gemm */
    size_t size;
} product;

static uint64_t element(enum fill f)
{
    switch (f) {
    case RANDOM: return rnd() % EML_FIELD_P;
    case NEAR_TOP: return EML_FIELD_P - 1 - rnd() % 3; /* p-1, p-2, p-3 */
    case SMALL: return rnd() % 10;
    default: return 0;
    }
}

/* The operands and request frame only (want stays NULL). */
static product make_request(uint64_t id, uint32_t m, uint32_t n, uint32_t k,
                            enum fill f)
{
    product x = {.id = id, .m = m, .n = n, .k = k};
    x.size = eml_worker_req_size(m, n, k);
    x.a = malloc(sizeof(uint64_t) * m * k);
    x.b = malloc(sizeof(uint64_t) * k * n);
    x.frame = malloc(x.size);
    if (!x.a || !x.b || !x.frame) {
        printf("FAIL: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < (size_t)m * k; i++) x.a[i] = element(f);
    for (size_t i = 0; i < (size_t)k * n; i++) x.b[i] = element(f);
    eml_worker_req_write(x.frame, id, m, n, k, x.a, x.b);
    return x;
}

/* A product with its expected C, by eml_field_gemm. */
static product make(uint64_t id, uint32_t m, uint32_t n, uint32_t k,
                    enum fill f)
{
    product x = make_request(id, m, n, k, f);
    x.want = malloc(8 * (size_t)m * n);
    if (x.want == NULL) {
        printf("FAIL: out of memory\n");
        exit(1);
    }
    const uint8_t *pa = x.frame + EML_WORKER_REQ_HEADER;
    eml_field_gemm(pa, pa + 8 * (size_t)m * k, x.want, m, n, k);
    return x;
}

static void drop(product *x)
{
    free(x->a);
    free(x->b);
    free(x->frame);
    free(x->want);
}

/* The oracle's oracle: a naive triple loop over eml_field_mul/add, for
 * products small enough. */
static int naive_agrees(const product *x)
{
    for (uint32_t i = 0; i < x->m; i++)
        for (uint32_t j = 0; j < x->n; j++) {
            uint64_t s = 0;
            for (uint32_t t = 0; t < x->k; t++)
                s = eml_field_add(s,
                                  eml_field_mul(x->a[(size_t)i * x->k + t],
                                                x->b[(size_t)t * x->n + j]));
            if (s != eml_worker_get(x->want, (size_t)i * x->n + j)) return 0;
        }
    return 1;
}

/* Receives one reply and parses it; 0, or -1 with err set. */
static int receive(eml_worker_link *l, eml_worker_reply *r, eml_err *err)
{
    const uint8_t *p;
    size_t n;
    if (l->recv(l->user, &p, &n, err) != EML_OK) return -1;
    return eml_worker_reply_parse(p, n, r, err) == EML_OK ? 0 : -1;
}

/* Elements of the reply's C that differ from x's expected C. */
static size_t differences(const product *x, const eml_worker_reply *r)
{
    size_t d = 0;
    for (size_t i = 0; i < (size_t)x->m * x->n; i++)
        d += eml_worker_get(r->c, i) != eml_worker_get(x->want, i);
    return d;
}

/* The reply is x's product, exactly. */
static int exact(const product *x, const eml_worker_reply *r)
{
    return r->status == EML_WORKER_DONE && r->id == x->id && r->m == x->m &&
           r->n == x->n && differences(x, r) == 0;
}

/* Sends x, receives its reply into *r: 0 or -1 (printed). */
static int ask(eml_worker_link *l, const product *x, eml_worker_reply *r,
               const char *what)
{
    eml_err err = {0};
    if (l->send(l->user, x->frame, x->size, &err) != EML_OK ||
        receive(l, r, &err) != 0) {
        FAIL("%s: %s", what, err.msg);
        return -1;
    }
    return 0;
}

/* ==== check: products of every shape ==== */

static void check_one(eml_worker_link *l, product x, const char *what)
{
    eml_worker_reply r;
    double t0 = now_s();
    if (ask(l, &x, &r, what) == 0) {
        if (exact(&x, &r))
            printf("ok: %s (%ux%u times %ux%u, %.3f s)\n", what, x.m, x.k, x.k,
                   x.n, now_s() - t0);
        else
            FAIL("%s: status %u id %" PRIu64 " %ux%u, %zu wrong elements",
                 what, r.status, r.id, r.m, r.n,
                 r.status == 0 ? differences(&x, &r) : 0);
    }
    drop(&x);
}

static int connect_to(const char *addr, int timeout_ms, eml_worker_conn **c)
{
    eml_err err = {0};
    if (eml_worker_connect(addr, timeout_ms, c, &err) == EML_OK) return 0;
    FAIL("connect: %s", err.msg);
    return -1;
}

static int check(const char *addr)
{
    eml_worker_conn *c;
    if (connect_to(addr, 60000, &c) != 0) return 1;
    eml_worker_link l = eml_worker_conn_link(c);
    product one = make(0, 1, 1, 1, ZERO);
    one.a[0] = EML_FIELD_P - 1;
    one.b[0] = EML_FIELD_P - 1; /* (-1)(-1) = 1 */
    eml_worker_req_write(one.frame, 0, 1, 1, 1, one.a, one.b);
    eml_worker_put(one.want, 0, 1);
    check_one(&l, one, "1x1x1, (p-1)^2 = 1, id 0");
    product k5 = make(UINT64_MAX, 3, 2, 5000, NEAR_TOP);
    if (!naive_agrees(&k5)) FAIL("the local oracles disagree at K = 5000");
    check_one(&l, k5, "K = 5000, elements p-1..p-3, id 2^64-1");
    check_one(&l, make(7, 4000, 2, 3, RANDOM), "tall-thin");
    check_one(&l, make(8, 2, 3, 4000, RANDOM), "short-fat (K = 4000)");
    product top = make(9, 33, 31, 65, NEAR_TOP);
    if (!naive_agrees(&top)) FAIL("the local oracles disagree near p");
    check_one(&l, top, "33x65x31 near p-1");
    check_one(&l, make(10, 64, 48, 80, RANDOM), "64x80 times 80x48");
    check_one(&l, make(11, 5, 6, 7, ZERO), "zeros");
    eml_worker_disconnect(c);
    /* The worker serves the next connection once this one closed. */
    if (connect_to(addr, 60000, &c) != 0) return 1;
    l = eml_worker_conn_link(c);
    check_one(&l, make(12, 9, 9, 9, SMALL), "a second connection");
    eml_worker_disconnect(c);
    return g_failed;
}

/* count small products on one connection. */
static int ask_many(const char *addr, int count)
{
    eml_worker_conn *c;
    if (connect_to(addr, 20000, &c) != 0) return 1;
    eml_worker_link l = eml_worker_conn_link(c);
    for (int i = 0; i < count && !g_failed; i++)
        check_one(&l, make(100 + (uint64_t)i, 3, 4, 5, RANDOM), "ask");
    eml_worker_disconnect(c);
    return g_failed;
}

/* ==== malformed requests ==== */

/* Sends a raw frame on a fresh connection: expects a REFUSED reply with
 * the given id, then the connection closed. */
static void refused(const char *addr, const uint8_t *f, size_t n, uint64_t id,
                    const char *what)
{
    eml_worker_conn *c;
    if (connect_to(addr, 10000, &c) != 0) return;
    eml_worker_link l = eml_worker_conn_link(c);
    eml_worker_reply r;
    eml_err err = {0};
    if (l.send(l.user, f, n, &err) != EML_OK || receive(&l, &r, &err) != 0) {
        FAIL("%s: %s", what, err.msg);
    } else if (r.status != EML_WORKER_REFUSED || r.id != id) {
        FAIL("%s: status %u id %" PRIu64 ", expected REFUSED id %" PRIu64,
             what, r.status, r.id, id);
    } else {
        memset(&err, 0, sizeof(err));
        if (receive(&l, &r, &err) == 0 || !strstr(err.msg, "connection "
                                                           "closed"))
            FAIL("%s: the connection stayed open (%s)", what, err.msg);
        else
            printf("ok: %s: REFUSED id %" PRIu64 ", then %s\n", what, id,
                   err.msg);
    }
    eml_worker_disconnect(c);
}

static int malformed(const char *addr)
{
    uint8_t junk[EML_WORKER_REQ_HEADER + 8];
    memset(junk, 'X', sizeof(junk));
    refused(addr, junk, sizeof(junk), 0, "bad magic");
    product x = make(77, 2, 2, 2, SMALL);
    eml_worker_put(x.frame + EML_WORKER_REQ_HEADER, 3, EML_FIELD_P);
    refused(addr, x.frame, x.size, 77, "an element equal to p");
    eml_worker_req_write(x.frame, 78, 2, 2, 2, x.a, x.b);
    x.frame[4] = 1; /* version 1 */
    refused(addr, x.frame, x.size, 0, "version 1");
    eml_worker_req_write(x.frame, 79, 2, 2, 2, x.a, x.b);
    x.frame[32] ^= 1; /* another modulus */
    refused(addr, x.frame, x.size, 79, "modulus 2^61 - 2");
    eml_worker_req_write(x.frame, 80, 2, 2, 2, x.a, x.b);
    memset(x.frame + 16, 0xff, 12); /* m = n = k = 2^32 - 1 */
    refused(addr, x.frame, EML_WORKER_REQ_HEADER, 80, "a 2^32 x 2^32 product");
    eml_worker_req_write(x.frame, 81, 2, 2, 2, x.a, x.b);
    x.frame[28] = 2; /* an unknown flag */
    refused(addr, x.frame, x.size, 81, "an unknown flag");
    eml_worker_req_write(x.frame, 82, 2, 2, 2, x.a, x.b);
    x.frame[6] = EML_WORKER_OP_CONV_FORWARD; /* a conv op, zero geometry */
    refused(addr, x.frame, EML_WORKER_REQ_HEADER, 82,
            "a convolution without a geometry");
    eml_worker_req_write(x.frame, 83, 2, 2, 2, x.a, x.b);
    x.frame[40] = 1; /* a GEMM with a geometry */
    refused(addr, x.frame, x.size, 83, "a GEMM with a geometry");
    drop(&x);
    return g_failed;
}

/* ==== a stalled or vanished worker ==== */

static int timeout(const char *addr, int ms)
{
    eml_worker_conn *c;
    if (connect_to(addr, ms, &c) != 0) return 1;
    eml_worker_link l = eml_worker_conn_link(c);
    product x = make(5, 2, 2, 2, SMALL);
    eml_worker_reply r;
    eml_err err = {0};
    double t0 = now_s();
    int rc = l.send(l.user, x.frame, x.size, &err) == EML_OK
                 ? receive(&l, &r, &err)
                 : -1;
    double took = now_s() - t0;
    if (rc == 0 || !strstr(err.msg, "timed out after"))
        FAIL("timeout: expected a timeout, got: %s",
             rc == 0 ? "a reply" : err.msg);
    else if (took < 0.9 * ms / 1000.0 || took > ms / 1000.0 + 5)
        FAIL("timeout: %s, but after %.3f s", err.msg, took);
    else
        printf("ok: %s (after %.3f s)\n", err.msg, took);
    /* The error is sticky: the stream is out of step. */
    memset(&err, 0, sizeof(err));
    if (l.send(l.user, x.frame, x.size, &err) == EML_OK ||
        !strstr(err.msg, "timed out after"))
        FAIL("timeout: the connection was usable after the timeout");
    drop(&x);
    eml_worker_disconnect(c);
    return g_failed;
}

static int closed(const char *addr)
{
    eml_worker_conn *c;
    if (connect_to(addr, 120000, &c) != 0) return 1;
    eml_worker_link l = eml_worker_conn_link(c);
    /* 10^9 multiply-adds: about 2 s on one thread, far longer than the
     * test takes to kill the worker once it reads "sent" */
    product x = make_request(6, 500, 500, 4000, SMALL);
    eml_worker_reply r;
    eml_err err = {0};
    if (l.send(l.user, x.frame, x.size, &err) != EML_OK) {
        FAIL("closed: send: %s", err.msg);
    } else {
        printf("sent\n");
        fflush(stdout);
        if (receive(&l, &r, &err) == 0)
            FAIL("closed: a reply came; the worker was not killed in time");
        else if (!strstr(err.msg, "connection closed"))
            FAIL("closed: %s", err.msg);
        else
            printf("ok: %s\n", err.msg);
    }
    drop(&x);
    eml_worker_disconnect(c);
    return g_failed;
}

/* ==== through the fault proxy ==== */

/* The modular inverse of a non-zero v (Fermat). */
static uint64_t inverse(uint64_t v)
{
    uint64_t r = 1, e = EML_FIELD_P - 2;
    for (; e != 0; e >>= 1) {
        if (e & 1) r = eml_field_mul(r, v);
        v = eml_field_mul(v, v);
    }
    return r;
}

/* r is x's product with one row times a factor other than 0 and 1. */
static int one_row_scaled(const product *x, const eml_worker_reply *r)
{
    int rows = 0;
    for (uint32_t i = 0; i < x->m; i++) {
        uint64_t f = 0;
        int differs = 0;
        for (uint32_t j = 0; j < x->n; j++) {
            size_t e = (size_t)i * x->n + j;
            uint64_t want = eml_worker_get(x->want, e);
            uint64_t got = eml_worker_get(r->c, e);
            differs |= want != got;
            if (want == 0) {
                if (got != 0) return 0;
                continue;
            }
            uint64_t g = eml_field_mul(got, inverse(want));
            if (f != 0 && g != f) return 0;
            f = g;
        }
        rows += differs;
    }
    return rows == 1;
}

/* One element off by +-1. */
static int one_flipped(const product *x, const eml_worker_reply *r)
{
    if (differences(x, r) != 1) return 0;
    for (size_t i = 0; i < (size_t)x->m * x->n; i++) {
        uint64_t w = eml_worker_get(x->want, i), g = eml_worker_get(r->c, i);
        if (w != g)
            return g == eml_field_add(w, 1) || g == eml_field_sub(w, 1);
    }
    return 0;
}

/* Sends x[i] and x[j] back to back, then reads two replies: a true swap
 * gives x[j]'s first. */
static void pipelined_swap(eml_worker_link *l, product *x, int i, int j)
{
    eml_worker_reply r1, r2;
    eml_err err = {0};
    if (l->send(l->user, x[i].frame, x[i].size, &err) != EML_OK ||
        l->send(l->user, x[j].frame, x[j].size, &err) != EML_OK ||
        receive(l, &r1, &err) != 0 || !exact(&x[j], &r1) ||
        receive(l, &r2, &err) != 0 || !exact(&x[i], &r2))
        FAIL("swap: requests %d and %d pipelined: no swapped pair (%s)", i + 1,
             j + 1, err.msg);
    else
        printf("ok: swap: id %" PRIu64 "'s reply came before id %" PRIu64
               "'s\n",
               x[j].id, x[i].id);
}

/* Checks reply number i+1 (1-based count) for a fault due on it. */
static void check_fault(const char *kind, product *x, int i,
                        const eml_worker_reply *r)
{
    int ok;
    if (strcmp(kind, "flip") == 0)
        ok = r->id == x[i].id && one_flipped(&x[i], r);
    else if (strcmp(kind, "scale-row") == 0)
        ok = r->id == x[i].id && one_row_scaled(&x[i], r);
    else if (strcmp(kind, "replay") == 0)
        ok = i > 0 && exact(&x[i - 1], r);
    else if (strcmp(kind, "swap") == 0) /* a client waiting for each reply */
        ok = r->id == x[i].id + 1 && differences(&x[i], r) == 0;
    else
        ok = exact(&x[i], r);
    if (ok)
        printf("ok: %s on reply %d (id %" PRIu64 ")\n", kind, i + 1, r->id);
    else
        FAIL("%s on reply %d: not the fault expected (id %" PRIu64 ")", kind,
             i + 1, r->id);
}

static int fault(const char *addr, const char *kind, int every)
{
    enum { COUNT = 6 };
    eml_worker_conn *c;
    if (connect_to(addr, 20000, &c) != 0) return 1;
    eml_worker_link l = eml_worker_conn_link(c);
    product x[COUNT];
    for (int i = 0; i < COUNT; i++) x[i] = make(1000 + i, 6, 5, 7, RANDOM);
    for (int i = 0; i < COUNT && !g_failed; i++) {
        eml_worker_reply r;
        int due = strcmp(kind, "none") != 0 && (i + 1) % every == 0;
        if (strcmp(kind, "swap") == 0 && due && i + 1 < COUNT &&
            i + 1 == every) {
            pipelined_swap(&l, x, i, i + 1);
            i++;
            continue;
        }
        if (strcmp(kind, "truncate") == 0 && due) {
            eml_err err = {0};
            if (l.send(l.user, x[i].frame, x[i].size, &err) != EML_OK ||
                receive(&l, &r, &err) == 0 ||
                !strstr(err.msg, "connection closed"))
                FAIL("truncate on reply %d: %s", i + 1,
                     err.msg[0] ? err.msg : "a whole reply came");
            else
                printf("ok: truncate on reply %d: %s\n", i + 1, err.msg);
            break;
        }
        if (ask(&l, &x[i], &r, kind) != 0) break;
        if (due)
            check_fault(kind, x, i, &r);
        else if (!exact(&x[i], &r))
            FAIL("%s: reply %d changed", kind, i + 1);
    }
    if (!g_failed) printf("ok: fault %s every %d\n", kind, every);
    for (int i = 0; i < COUNT; i++) drop(&x[i]);
    eml_worker_disconnect(c);
    return g_failed;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "check") == 0) return check(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "ask") == 0)
        return ask_many(argv[2], atoi(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "malformed") == 0)
        return malformed(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "timeout") == 0)
        return timeout(argv[2], atoi(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "closed") == 0) return closed(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "fault") == 0)
        return fault(argv[2], argv[3], atoi(argv[4]));
    fprintf(stderr, "usage: worker_client check|malformed|closed ADDR\n"
                    "       worker_client ask ADDR N\n"
                    "       worker_client timeout ADDR MS\n"
                    "       worker_client fault ADDR KIND EVERY\n");
    return 2;
}
