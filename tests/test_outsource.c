/*
 * test_outsource.c - the arithmetic of outsourcing and the client's
 * checks, without sockets:
 *   - Z_p arithmetic against 128-bit reference arithmetic, edge values;
 *   - the exact field GEMM against a naive one;
 *   - fixed point: shifts, rounding, signs, the decode bound;
 *   - Freivalds: a right product always passes; a wrong one passes at the
 *     stated rate, measured with small primes (1/p per round), and never
 *     in 100,000 tries with p = 2^61 - 1;
 *   - the client at a net's dispatch point over an in-process worker
 *     (honest: the outputs and gradients match the reference kernels;
 *     malicious: 1,200 faults of five kinds spread over forward, input
 *     gradient, weight gradient and per-example products, all caught, each
 *     with the verification message naming the layer and the product);
 *   - private mode (inference): the pad products against the exact field
 *     GEMM; outputs as in integrity mode; the blinded operands pass a
 *     uniformity test over Z_p, a canary image's row never appears among
 *     them (and does in integrity mode, the control), pads are not reused;
 *     300 faults caught; training products refused;
 *   - why coding inputs with noise (DarKnight-style) is no substitute: one
 *     worker recovers every coded 8-bit input.
 * The real worker process over real sockets is tests/test_worker.sh.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/outsource.h"
#include "enclaveml/rng.h"
#include "host/worker_gpu.h"

static eml_rng g_rng;

static uint64_t rnd_below(uint64_t p)
{
    return eml_rng_below(&g_rng, p);
}

static uint64_t next_rng(void *user)
{
    (void)user;
    return eml_rng_next(&g_rng);
}

/* r from an 8-element set: the integer-operand check's bound made visible. */
static uint64_t next_small(void *user)
{
    (void)user;
    return eml_rng_next(&g_rng) & 7;
}

/* ==== the field ==== */

static void test_field_ops(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 1);
    const uint64_t p = EML_FIELD_P;
    uint64_t edge[] = {0, 1, 2, p - 1, p - 2, p / 2, p / 2 + 1,
                       (uint64_t)1 << 60, ((uint64_t)1 << 32) - 1};
    size_t ne = sizeof(edge) / sizeof(edge[0]);
    for (int t = 0; t < 200000; t++) {
        uint64_t a = t < (int)(ne * ne) ? edge[t % ne] : rnd_below(p);
        uint64_t b = t < (int)(ne * ne) ? edge[t / ne % ne] : rnd_below(p);
        assert_true(eml_field_mul(a, b) ==
                    (uint64_t)((unsigned __int128)a * b % p));
        assert_true(eml_field_add(a, b) == (a + b) % p);
        assert_true(eml_field_sub(a, b) == (a + p - b) % p);
    }
}

static void test_field_gemm(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 2);
    const uint32_t dims[][3] = {{1, 1, 1}, {3, 5, 7}, {1, 9, 300}, {17, 2, 65}};
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++) {
        uint32_t m = dims[d][0], n = dims[d][1], k = dims[d][2];
        uint8_t *a = malloc(8 * (size_t)m * k), *b = malloc(8 * (size_t)k * n);
        uint8_t *c = malloc(8 * (size_t)m * n);
        /* Odd sizes: full-range elements (128-bit path); even: small
         * signed ones (the 64-bit path integrity mode takes). */
        int small = d % 2 == 1;
        for (size_t i = 0; i < (size_t)m * k; i++)
            eml_worker_put(a, i,
                           small ? eml_field_of((int64_t)rnd_below(1u << 24) -
                                                (1 << 23))
                           : i % 5 == 0 ? EML_FIELD_P - 1
                                        : rnd_below(EML_FIELD_P));
        for (size_t i = 0; i < (size_t)k * n; i++)
            eml_worker_put(b, i,
                           small ? eml_field_of((int64_t)rnd_below(1u << 24) -
                                                (1 << 23))
                                 : rnd_below(EML_FIELD_P));
        eml_field_gemm(a, b, c, m, n, k);
        for (uint32_t i = 0; i < m; i++)
            for (uint32_t j = 0; j < n; j++) {
                uint64_t s = 0;
                for (uint32_t t = 0; t < k; t++)
                    s = (uint64_t)(((unsigned __int128)s +
                                    (unsigned __int128)eml_worker_get(
                                        a, (size_t)i * k + t) *
                                        eml_worker_get(b, (size_t)t * n + j)) %
                                   EML_FIELD_P);
                assert_true(eml_worker_get(c, (size_t)i * n + j) == s);
            }
        free(a);
        free(b);
        free(c);
    }
}

/* The pad products (r uniform, w small signed) against the exact field
 * GEMM, pads on either side. */
static void test_field_gemm_padded(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 12);
    const uint32_t dims[][3] = {{1, 1, 1}, {3, 5, 7}, {2, 9, 300}, {17, 2, 65}};
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++)
        for (int left = 0; left < 2; left++) {
            uint32_t m = dims[d][0], n = dims[d][1], k = dims[d][2];
            size_t nr = left ? (size_t)m * k : (size_t)k * n;
            size_t nw = left ? (size_t)k * n : (size_t)m * k;
            uint64_t *r = malloc(8 * nr), *wf = malloc(8 * nw);
            uint64_t *u = malloc(8 * (size_t)m * n), *c = malloc(8 * (size_t)m * n);
            int32_t *w = malloc(4 * nw);
            for (size_t i = 0; i < nr; i++)
                r[i] = i % 7 == 0 ? EML_FIELD_P - 1 : rnd_below(EML_FIELD_P);
            for (size_t i = 0; i < nw; i++) {
                w[i] = i % 11 == 0 ? (i % 2 ? INT32_MIN + 1 : INT32_MAX)
                                   : (int32_t)rnd_below(1u << 26) - (1 << 25);
                wf[i] = eml_field_of(w[i]);
            }
            eml_field_gemm_padded(r, w, u, m, n, k, left);
            eml_field_gemm((const uint8_t *)(left ? r : wf),
                           (const uint8_t *)(left ? wf : r), (uint8_t *)c, m,
                           n, k);
            assert_memory_equal(u, c, 8 * (size_t)m * n);
            free(r);
            free(wf);
            free(u);
            free(c);
            free(w);
        }
}

static void test_fixed_point(void **state)
{
    (void)state;
    float x[] = {0.0f, 1.0f, -1.0f, 0.5f, -3.75f, 1e-6f};
    int shift = eml_field_shift(x, 6, 20); /* max 3.75 < 2^2 */
    assert_int_equal(shift, 18);
    int32_t qi[6];
    uint64_t q[6];
    eml_field_quantize_i32(x, 6, shift, qi);
    for (int i = 0; i < 6; i++) {
        q[i] = eml_field_of(qi[i]);
        double back = eml_field_signed(q[i]) * ldexp(1.0, -shift);
        assert_true(fabs(back - x[i]) <= ldexp(1.0, -shift - 1));
        if (x[i] < 0) assert_true(q[i] > EML_FIELD_P / 2);
    }
    float z[3] = {0, 0, 0};
    assert_int_equal(eml_field_shift(z, 3, 20), 0);
}

/* ==== Freivalds ==== */

/* Over Z_q (q small): a C with one element off by one passes a round with
 * probability exactly 1/q (the check fails unless r_j = 0). */
static double freivalds_pass_rate(uint64_t q, int reps, int trials)
{
    const uint32_t m = 4, n = 5, k = 3;
    uint64_t a[12], b[15], c[20];
    int passed = 0;
    for (int t = 0; t < trials; t++) {
        for (int i = 0; i < 12; i++) a[i] = rnd_below(q);
        for (int i = 0; i < 15; i++) b[i] = rnd_below(q);
        for (uint32_t i = 0; i < m; i++)
            for (uint32_t j = 0; j < n; j++) {
                uint64_t s = 0;
                for (uint32_t l = 0; l < k; l++)
                    s = (s + a[i * k + l] * b[l * n + j]) % q;
                c[i * n + j] = s;
            }
        size_t e = (size_t)rnd_below(20);
        c[e] = (c[e] + 1) % q;
        passed += eml_freivalds(a, b, c, m, n, k, q, reps, next_rng, NULL);
    }
    return (double)passed / trials;
}

static void test_freivalds_rate(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 3);
    /* A right product always passes. */
    uint64_t a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
    uint64_t c[4] = {58, 64, 139, 154};
    assert_true(eml_freivalds(a, b, c, 2, 2, 3, EML_FIELD_P, 3, next_rng,
                              NULL));
    const uint64_t primes[] = {5, 13, 101};
    for (size_t i = 0; i < 3; i++) {
        uint64_t q = primes[i];
        int trials = 200000;
        double r1 = freivalds_pass_rate(q, 1, trials);
        double r2 = freivalds_pass_rate(q, 2, trials);
        double want1 = 1.0 / (double)q, want2 = want1 * want1;
        printf("Freivalds over Z_%llu: a wrong C passed %.5f of %d (bound "
               "1/p = %.5f); two rounds %.6f (1/p^2 = %.6f)\n",
               (unsigned long long)q, r1, trials, want1, r2, want2);
        assert_true(fabs(r1 - want1) < 5 * sqrt(want1 / trials) + 1e-4);
        assert_true(r2 < want2 + 5 * sqrt(want2 / trials) + 1e-4);
    }
    /* The client's check draws r from a set S of 2^21 values; with S cut
     * to 8 values the rate 1/|S| of the bound is visible. */
    int pass_small = 0, trials = 100000;
    for (int t = 0; t < trials; t++) {
        int32_t sa[6], sb[6];
        uint64_t sc[4];
        for (int i = 0; i < 6; i++) {
            sa[i] = (int32_t)rnd_below(2001) - 1000;
            sb[i] = (int32_t)rnd_below(2001) - 1000;
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                int64_t v = 0;
                for (int l = 0; l < 3; l++)
                    v += (int64_t)sa[i * 3 + l] * sb[l * 2 + j];
                sc[i * 2 + j] = eml_field_of(v);
            }
        sc[t % 4] = eml_field_add(sc[t % 4], 1);
        pass_small += eml_freivalds_small(sa, sb, sc, 2, 2, 3, 1, next_small,
                                          NULL);
    }
    printf("integer-operand Freivalds, |S| = 8: a wrong C passed %.4f of %d (bound "
           "1/8 = 0.125)\n",
           (double)pass_small / trials, trials);
    assert_true(fabs((double)pass_small / trials - 0.125) < 0.006);
    /* p = 2^61 - 1: 1/p per round; none of 100,000 wrong products pass. */
    int passed = 0;
    for (int t = 0; t < 100000; t++) {
        uint64_t cc[4] = {58, 64, 139, 154};
        cc[t % 4] = eml_field_add(cc[t % 4], 1 + rnd_below(EML_FIELD_P - 1));
        passed += eml_freivalds(a, b, cc, 2, 2, 3, EML_FIELD_P, 1, next_rng,
                                NULL);
    }
    assert_int_equal(passed, 0);
}

/* ==== the client over an in-process worker ==== */

typedef enum fault {
    F_NONE,
    F_FLIP,      /* one element of C +/- 1 */
    F_SCALE_ROW, /* one row of C times a factor */
    F_SWAP,      /* the reply carries another request's id */
    F_REPLAY,    /* an earlier reply again */
    F_TRUNCATE,  /* the reply cut short */
    F_KINDS
} fault;

typedef struct fake_worker {
    uint8_t *reply, *last;
    size_t len, last_len, cap;
    fault f;
    int at;    /* the product (0-based) to corrupt, -1: none */
    int count; /* products answered */
    /* with capture: every request's A and B elements, in order */
    int capture;
    uint64_t *seen;
    size_t nseen, capseen;
} fake_worker;

static void keep(fake_worker *w, uint64_t v)
{
    if (w->nseen + 1 > w->capseen) {
        w->capseen = 2 * (w->nseen + 1);
        w->seen = realloc(w->seen, w->capseen * sizeof(uint64_t));
        assert_non_null(w->seen);
    }
    w->seen[w->nseen++] = v;
}

static eml_status fake_send(void *user, const uint8_t *p, size_t n,
                            eml_err *err)
{
    fake_worker *w = user;
    eml_worker_req q;
    eml_status st = eml_worker_req_parse(p, n, &q, err);
    if (st != EML_OK) return st;
    if (w->capture) {
        for (int side = 0; side < 2; side++)
            for (size_t i = 0; i < (side ? q.nb : q.na); i++)
                keep(w, eml_worker_req_elem(&q, side, i));
    }
    size_t size = eml_worker_reply_size(q.m, q.n);
    if (size > w->cap) {
        w->reply = realloc(w->reply, size);
        w->last = realloc(w->last, size);
        w->cap = size;
    }
    if (w->len > 0) { /* keep the previous reply for replays */
        memcpy(w->last, w->reply, w->len);
        w->last_len = w->len;
    }
    eml_worker_reply_header_write(w->reply, q.id, EML_WORKER_DONE, q.m, q.n);
    uint8_t *c = w->reply + EML_WORKER_REPLY_HEADER;
    if (eml_worker_compute(&q, c) != EML_OK) return EML_ERR_NOMEM;
    w->len = size;
    if (w->count++ != w->at) return EML_OK;
    size_t mn = (size_t)q.m * q.n;
    switch (w->f) {
    case F_FLIP: {
        size_t e = (size_t)rnd_below(mn);
        uint64_t v = eml_worker_get(c, e);
        eml_worker_put(c, e, rnd_below(2) ? eml_field_add(v, 1)
                                          : eml_field_sub(v, 1));
        break;
    }
    case F_SCALE_ROW: {
        uint32_t r = (uint32_t)rnd_below(q.m);
        uint64_t s = 2 + rnd_below(EML_FIELD_P - 2);
        for (uint32_t j = 0; j < q.n; j++) {
            size_t e = (size_t)r * q.n + j;
            eml_worker_put(c, e, eml_field_mul(eml_worker_get(c, e), s));
        }
        /* a row of zeros stays zero: make sure something changed */
        eml_worker_put(c, (size_t)r * q.n,
                       eml_field_add(eml_worker_get(c, (size_t)r * q.n), 1));
        break;
    }
    case F_SWAP:
        eml_worker_reply_header_write(w->reply, q.id + 1, EML_WORKER_DONE,
                                      q.m, q.n);
        break;
    case F_REPLAY:
        if (w->last_len > 0) {
            memcpy(w->reply, w->last, w->last_len);
            w->len = w->last_len;
        } else {
            eml_worker_reply_header_write(w->reply, q.id - 1,
                                          EML_WORKER_DONE, q.m, q.n);
        }
        break;
    case F_TRUNCATE: w->len = EML_WORKER_REPLY_HEADER + mn * 4; break;
    default: break;
    }
    return EML_OK;
}

static eml_status fake_recv(void *user, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    (void)err;
    fake_worker *w = user;
    *p = w->reply;
    *n = w->len;
    return EML_OK;
}

static const char cnn[] =
    "[net]\nheight=8\nwidth=8\nchannels=1\n"
    "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=tanh\n"
    "[connected]\noutput=5\nactivation=linear\n[softmax]\n";

static eml_net *make(eml_netcfg *cfg, int batch)
{
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = batch,
                      .seed = 3};
    eml_net *net = NULL;
    eml_err err = {0};
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    eml_net_init_params(net, 9);
    float *x = eml_net_input(net);
    eml_rng r;
    eml_rng_seed(&r, 4);
    for (size_t i = 0; i < (size_t)batch * eml_net_input_size(net); i++)
        x[i] = eml_rng_uniform(&r);
    return net;
}

/* One training step's passes: forward, loss, backward, per-example. */
static eml_status step(eml_net *net, int n, float *sq)
{
    uint8_t labels[4] = {0, 1, 2, 3};
    eml_status st = eml_net_forward(net, n, 1);
    if (st == EML_OK) st = eml_net_loss(net, n, labels, NULL, NULL);
    if (st == EML_OK) st = eml_net_example_norms(net, n, sq);
    if (st == EML_OK) st = eml_net_loss(net, n, labels, NULL, NULL);
    if (st == EML_OK) st = eml_net_backward(net, n, NULL);
    return st;
}

static void test_client_honest(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 5);
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(cnn, strlen(cnn), "t", &cfg, &err), EML_OK);
    eml_net *ref = make(cfg, 4), *out = make(cfg, 4);
    fake_worker w = {0};
    w.at = -1;
    eml_worker_link link = {&w, fake_send, fake_recv};
    eml_outsource *o = NULL;
    assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_INTEGRITY, &o,
                                       &err),
                     EML_OK);
    eml_outsource_attach(o, eml_net_gemm(out));
    float sq_ref[4], sq_out[4];
    assert_int_equal(step(ref, 4, sq_ref), EML_OK);
    assert_int_equal(step(out, 4, sq_out), EML_OK);
    const float *ya = eml_net_output(ref), *yb = eml_net_output(out);
    double dy = 0, dg = 0, gmax = 0;
    for (size_t i = 0; i < 4 * eml_net_output_size(ref); i++)
        dy = fmax(dy, fabs(ya[i] - yb[i]));
    const float *ga = eml_net_grads(ref), *gb = eml_net_grads(out);
    for (size_t i = 0; i < eml_net_param_count(ref); i++) {
        dg = fmax(dg, fabs(ga[i] - gb[i]));
        gmax = fmax(gmax, fabs(ga[i]));
    }
    for (int b = 0; b < 4; b++)
        assert_true(fabsf(sq_ref[b] - sq_out[b]) <= 1e-4f * sq_ref[b] + 1e-9f);
    const eml_outsource_stats *s = eml_outsource_stats_of(o);
    printf("outsourced %llu products, %llu verified; max |dy| %.3g, max "
           "|dgrad| %.3g of %.3g; %llu bytes out, %llu back\n",
           (unsigned long long)s->outsourced_products,
           (unsigned long long)s->verified_products, dy, dg, gmax,
           (unsigned long long)s->bytes_to_worker,
           (unsigned long long)s->bytes_from_worker);
    assert_true(dy < 1e-5);
    assert_true(dg < 1e-5 * gmax + 1e-7);
    assert_true(s->outsourced_products > 0);
    assert_true(s->verified_products == s->outsourced_products);
    uint64_t whole = s->outsourced_products;
    eml_outsource_free(o);
    /* Small requests (the enclave's channel has a limit): the products go
     * as blocks, each checked, and the step computes the same. */
    eml_net *blk = make(cfg, 4);
    assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_INTEGRITY, &o,
                                       &err),
                     EML_OK);
    eml_outsource_set_max_request(o, 2048);
    eml_outsource_attach(o, eml_net_gemm(blk));
    if (step(blk, 4, sq_out) != EML_OK)
        fail_msg("blocked: %s", eml_outsource_error(o));
    const float *yc = eml_net_output(blk);
    for (size_t i = 0; i < 4 * eml_net_output_size(ref); i++)
        assert_true(fabs(ya[i] - yc[i]) < 1e-5);
    s = eml_outsource_stats_of(o);
    printf("in requests of at most 2048 bytes: %llu products instead of "
           "%llu, all verified\n",
           (unsigned long long)s->outsourced_products,
           (unsigned long long)whole);
    assert_true(s->outsourced_products > whole);
    assert_true(s->verified_products == s->outsourced_products);
    eml_net_free(blk);
    eml_outsource_free(o);
    free(w.reply);
    free(w.last);
    eml_net_free(ref);
    eml_net_free(out);
    eml_cfg_free(cfg);
}

/* 1,200 faults: each kind at every product position of a step (forward,
 * per-example, backward), each caught with the message that names the
 * layer and the product. */
static void test_client_faults(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 6);
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(cnn, strlen(cnn), "t", &cfg, &err), EML_OK);
    /* How many products one step makes. */
    eml_net *net = make(cfg, 4);
    fake_worker w = {0};
    w.at = -1;
    eml_worker_link link = {&w, fake_send, fake_recv};
    eml_outsource *o = NULL;
    assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_INTEGRITY, &o,
                                       &err),
                     EML_OK);
    eml_outsource_attach(o, eml_net_gemm(net));
    float sq[4];
    assert_int_equal(step(net, 4, sq), EML_OK);
    int per_step = w.count;
    eml_outsource_free(o);
    eml_net_free(net);
    free(w.reply);
    free(w.last);
    int caught = 0, injected = 0, by_pass[5] = {0};
    const char *names[5] = {"", "forward", "input gradient",
                            "weight gradient", "per-example gradients"};
    while (injected < 1200) {
        fault f = (fault)(1 + injected % (F_KINDS - 1));
        net = make(cfg, 4);
        memset(&w, 0, sizeof(w));
        w.f = f;
        w.at = (injected / (F_KINDS - 1)) % per_step;
        assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_INTEGRITY,
                                           &o, &err),
                         EML_OK);
        eml_outsource_attach(o, eml_net_gemm(net));
        eml_status st = step(net, 4, sq);
        injected++;
        const char *msg = eml_outsource_error(o);
        if (st != EML_OK &&
            strncmp(msg, "worker result failed verification (layer ",
                    41) == 0) {
            caught++;
            for (int p = 1; p < 5; p++)
                if (strstr(msg, names[p]) != NULL) by_pass[p]++;
        } else {
            printf("NOT CAUGHT: fault %d at product %d (%s)\n", (int)f, w.at,
                   msg);
        }
        eml_outsource_free(o);
        eml_net_free(net);
        free(w.reply);
        free(w.last);
    }
    printf("%d of %d injected faults caught (%d products a step): forward "
           "%d, input gradient %d, weight gradient %d, per-example %d\n",
           caught, injected, per_step, by_pass[1], by_pass[2], by_pass[3],
           by_pass[4]);
    assert_int_equal(caught, injected);
    for (int p = 1; p < 5; p++) assert_true(by_pass[p] > 0);
    eml_cfg_free(cfg);
}

/* ==== the accelerator's limbs ==== */

static uint8_t *conv_request_fwd(eml_worker_geom g, eml_worker_req *q,
                                 int32_t **a, int32_t **b);

/* A plain row-major DGEMM: the stand-in for cuBLAS. */
static int g_dgemm_calls;
static eml_status plain_dgemm(void *ctx, int m, int n, int k, const double *a,
                              const double *b, double *c)
{
    (void)ctx;
    g_dgemm_calls++;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int t = 0; t < k; t++)
                s += a[(size_t)i * k + t] * b[(size_t)t * n + j];
            c[(size_t)i * n + j] = s;
        }
    return EML_OK;
}

/* eml_limb_gemm (the CUDA worker's arithmetic, on a plain DGEMM) against
 * the exact field GEMM: small signed operands (integrity mode), uniform
 * ones (private mode), the extremes p/2 and p/2 + 1, and an inner
 * dimension past one DGEMM's block. */
static void test_limb_gemm(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 20);
    eml_limb_ctx lc = {plain_dgemm, NULL};
    const uint32_t dims[][3] = {{1, 1, 1},  {3, 5, 7},  {4, 3, 33},
                                {2, 2, 64}, {1, 1, EML_LIMB_KBLOCK + 3}};
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++)
        for (int kind = 0; kind < 3; kind++) {
            uint32_t m = dims[d][0], n = dims[d][1], k = dims[d][2];
            uint64_t *a = malloc(8 * (size_t)m * k), *b = malloc(8 * (size_t)k * n);
            uint64_t *c = malloc(8 * (size_t)m * n), *want = malloc(8 * (size_t)m * n);
            for (size_t i = 0; i < (size_t)m * k + (size_t)k * n; i++) {
                uint64_t v = kind == 0 ? eml_field_of((int64_t)rnd_below(1u << 31) -
                                                      (1 << 30))
                             : kind == 1 ? rnd_below(EML_FIELD_P)
                             : i % 2   ? EML_FIELD_P / 2
                                       : EML_FIELD_P / 2 + 1;
                if (i < (size_t)m * k) a[i] = v;
                else b[i - (size_t)m * k] = v;
            }
            g_dgemm_calls = 0;
            assert_int_equal(eml_limb_gemm(&lc, a, b, c, m, n, k), EML_OK);
            eml_field_gemm((const uint8_t *)a, (const uint8_t *)b,
                           (uint8_t *)want, m, n, k);
            assert_memory_equal(c, want, 8 * (size_t)m * n);
            assert_int_equal(g_dgemm_calls, (k + EML_LIMB_KBLOCK - 1) /
                                                EML_LIMB_KBLOCK);
            free(a);
            free(b);
            free(c);
            free(want);
        }
    /* A conv op on the limb backend: the same answer as on the CPU. */
    eml_worker_req q;
    int32_t *qa, *qb;
    eml_worker_geom g = {2, 3, 5, 6, 4, 3, 1, 1};
    uint8_t *fr = conv_request_fwd(g, &q, &qa, &qb);
    uint64_t *c1 = malloc(8 * (size_t)q.m * q.n), *c2 = malloc(8 * (size_t)q.m * q.n);
    assert_int_equal(eml_worker_compute(&q, (uint8_t *)c1), EML_OK);
    assert_int_equal(eml_worker_compute_on(&q, (uint8_t *)c2, eml_limb_gemm, &lc),
                     EML_OK);
    assert_memory_equal(c1, c2, 8 * (size_t)q.m * q.n);
    free(c1);
    free(c2);
    free(fr);
    free(qa);
    free(qb);
}

/* ==== the convolution ops ==== */

/* A conv request over random small operands (|v| < 2^lim_bits) with
 * geometry g, as a frame; *q parsed from it.  Returns the frame. */
static uint8_t *conv_request(uint16_t op, eml_worker_geom g, int lim_bits,
                             eml_worker_req *q, int32_t **a, int32_t **b)
{
    eml_worker_req h;
    memset(&h, 0, sizeof(h));
    h.op = op;
    h.flags = EML_WORKER_I32;
    h.g = g;
    size_t oh = (g.h + 2 * g.pad - g.size) / g.stride + 1;
    size_t ow = (g.w + 2 * g.pad - g.size) / g.stride + 1;
    size_t l = g.batch * oh * ow, ckk = (size_t)g.c * g.size * g.size;
    size_t chw = (size_t)g.c * g.h * g.w;
    h.m = op == EML_WORKER_OP_CONV_INPUT_GRAD ? g.batch : g.f;
    h.n = op == EML_WORKER_OP_CONV_FORWARD       ? (uint32_t)l
          : op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? (uint32_t)ckk
                                                 : (uint32_t)chw;
    h.k = op == EML_WORKER_OP_CONV_FORWARD       ? (uint32_t)ckk
          : op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? (uint32_t)l
                                                 : g.f;
    size_t size;
    eml_err err = {0};
    if (eml_worker_req_shape(&h, &size, &err) != EML_OK) fail_msg("%s", err.msg);
    uint8_t *fr = malloc(size);
    eml_worker_req_write_header(fr, &h);
    *a = malloc(4 * h.na);
    *b = malloc(4 * h.nb);
    for (size_t i = 0; i < h.na; i++)
        (*a)[i] = (int32_t)rnd_below(2u << lim_bits) - (1 << lim_bits);
    for (size_t i = 0; i < h.nb; i++)
        (*b)[i] = (int32_t)rnd_below(2u << lim_bits) - (1 << lim_bits);
    memcpy(fr + EML_WORKER_REQ_HEADER, *a, 4 * h.na);
    memcpy(fr + EML_WORKER_REQ_HEADER + 4 * h.na, *b, 4 * h.nb);
    assert_int_equal(eml_worker_req_parse(fr, size, q, &err), EML_OK);
    return fr;
}

/* The direct convolution, in 64-bit integers, as the oracle: C of op. */
static int64_t direct(const eml_worker_req *q, const int32_t *a,
                      const int32_t *b, size_t row, size_t col)
{
    const eml_worker_geom *g = &q->g;
    size_t oh = q->out_h, ow = q->out_w, hw = oh * ow, ks = g->size;
    size_t ckk = (size_t)g->c * ks * ks, chw = (size_t)g->c * g->h * g->w;
    size_t l = g->batch * hw;
    int64_t s = 0;
    /* pixel(bb, ci, oy, ox, ky, kx): the input under that tap or none */
#define PIX(bb, ci, oy, ox, ky, kx, out)                                      \
    do {                                                                      \
        long iy_ = (long)((oy) * g->stride + (ky)) - (long)g->pad;            \
        long ix_ = (long)((ox) * g->stride + (kx)) - (long)g->pad;            \
        (out) = iy_ >= 0 && iy_ < (long)g->h && ix_ >= 0 && ix_ < (long)g->w  \
                    ? (long)(((bb) * g->c + (ci)) * g->h * g->w +            \
                             (size_t)iy_ * g->w + (size_t)ix_)                \
                    : -1;                                                     \
    } while (0)
    if (q->op == EML_WORKER_OP_CONV_FORWARD) { /* row j, col (bb, oy, ox) */
        size_t bb = col / hw, oy = col % hw / ow, ox = col % ow;
        for (size_t k = 0; k < ckk; k++) {
            long p;
            PIX(bb, k / (ks * ks), oy, ox, k / ks % ks, k % ks, p);
            if (p >= 0) s += (int64_t)a[row * ckk + k] * b[p];
        }
    } else if (q->op == EML_WORKER_OP_CONV_WEIGHT_GRAD) { /* j, k */
        for (size_t c = 0; c < l; c++) {
            size_t bb = c / hw, oy = c % hw / ow, ox = c % ow;
            long p;
            PIX(bb, col / (ks * ks), oy, ox, col / ks % ks, col % ks, p);
            if (p >= 0) s += (int64_t)a[row * l + c] * b[p];
        }
    } else { /* din[bb = row][col]: every tap that reads it */
        for (size_t j = 0; j < g->f; j++)
            for (size_t k = 0; k < ckk; k++)
                for (size_t o = 0; o < hw; o++) {
                    long p;
                    PIX(row, k / (ks * ks), o / ow, o % ow, k / ks % ks, k % ks,
                        p);
                    if (p == (long)(row * chw + col))
                        s += (int64_t)a[j * ckk + k] * b[j * l + row * hw + o];
                }
    }
#undef PIX
    return s;
}

static uint8_t *conv_request_fwd(eml_worker_geom g, eml_worker_req *q,
                                 int32_t **a, int32_t **b)
{
    return conv_request(EML_WORKER_OP_CONV_FORWARD, g, 20, q, a, b);
}

static const eml_worker_geom geoms[] = {
    {2, 3, 5, 6, 4, 3, 1, 1}, {1, 2, 7, 5, 3, 3, 2, 0},
    {3, 1, 4, 4, 2, 1, 1, 0}, {2, 2, 6, 6, 3, 5, 2, 2},
};

/* The worker's conv ops against the direct convolution, and the check
 * passing every right product. */
static void test_conv_ops(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 18);
    uint16_t ops[3] = {EML_WORKER_OP_CONV_FORWARD,
                       EML_WORKER_OP_CONV_WEIGHT_GRAD,
                       EML_WORKER_OP_CONV_INPUT_GRAD};
    for (size_t gi = 0; gi < sizeof(geoms) / sizeof(geoms[0]); gi++)
        for (int o = 0; o < 3; o++) {
            eml_worker_req q;
            int32_t *a, *b;
            uint8_t *fr = conv_request(ops[o], geoms[gi], 12, &q, &a, &b);
            uint64_t *c = malloc(8 * (size_t)q.m * q.n);
            assert_int_equal(eml_worker_compute(&q, (uint8_t *)c), EML_OK);
            for (size_t i = 0; i < q.m; i++)
                for (size_t j = 0; j < q.n; j++)
                    assert_true(c[i * q.n + j] ==
                                eml_field_of(direct(&q, a, b, i, j)));
            for (int t = 0; t < 20; t++)
                assert_true(eml_freivalds_conv(q.op, &q.g, a, b, c, next_rng,
                                               NULL));
            free(c);
            free(fr);
            free(a);
            free(b);
        }
}

/* A wrong C (one element off by one) passes the structured check at the
 * rate its polynomial allows: with every random value from an 8-element
 * set, a single-element error survives when one of the 3 (forward) or 4
 * (gradients) factors of its monomial is 0: 1 - (7/8)^3 = 0.330 and
 * 1 - (7/8)^4 = 0.414, below the bounds 3/8 and 4/8.  Over Z_p: never. */
static void test_freivalds_conv_rate(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 19);
    uint16_t ops[3] = {EML_WORKER_OP_CONV_FORWARD,
                       EML_WORKER_OP_CONV_WEIGHT_GRAD,
                       EML_WORKER_OP_CONV_INPUT_GRAD};
    const double expect[3] = {0.330, 0.414, 0.414};
    for (int o = 0; o < 3; o++) {
        eml_worker_req q;
        int32_t *a, *b;
        uint8_t *fr = conv_request(ops[o], geoms[0], 10, &q, &a, &b);
        size_t mn = (size_t)q.m * q.n;
        uint64_t *c = malloc(8 * mn);
        assert_int_equal(eml_worker_compute(&q, (uint8_t *)c), EML_OK);
        int trials = 20000, passed = 0, passed_p = 0;
        for (int t = 0; t < trials; t++) {
            size_t e = (size_t)rnd_below(mn);
            uint64_t keep_v = c[e];
            c[e] = eml_field_add(keep_v, 1);
            passed += eml_freivalds_conv(q.op, &q.g, a, b, c, next_small, NULL);
            if (t < 2000)
                passed_p += eml_freivalds_conv(q.op, &q.g, a, b, c, next_rng,
                                               NULL);
            c[e] = keep_v;
        }
        double rate = (double)passed / trials;
        printf("conv op %u: a wrong C passed %.4f of %d with |S| = 8 "
               "(expected %.3f, bound %d/8); 0 of 2000 expected over Z_p: "
               "%d\n",
               (unsigned)q.op, rate, trials, expect[o], o == 0 ? 3 : 4,
               passed_p);
        assert_true(fabs(rate - expect[o]) < 0.02);
        assert_int_equal(passed_p, 0);
        free(c);
        free(fr);
        free(a);
        free(b);
    }
}

/* ==== private mode ==== */

/* An inference pass (forward, train 0) of the small CNN over input x. */
static eml_status infer(eml_net *net, const float *x, int n)
{
    memcpy(eml_net_input(net), x, (size_t)n * eml_net_input_size(net) * 4);
    return eml_net_forward(net, n, 0);
}

/* Whether the canary row (8 values j/64) appears, at any fixed-point
 * shift, as consecutive elements of what the worker was sent. */
static int canary_seen(const fake_worker *w, const float *row)
{
    for (int shift = 0; shift <= 40; shift++) {
        uint64_t want[8];
        for (int j = 0; j < 8; j++)
            want[j] = eml_field_of((int64_t)llround(ldexp(row[j], shift)));
        for (size_t i = 0; i + 8 <= w->nseen; i++)
            if (w->seen[i] == want[0] &&
                memcmp(&w->seen[i], want, sizeof(want)) == 0)
                return 1;
    }
    return 0;
}

/* Pearson's chi-square of the top 8 bits and of the low 8 bits of the
 * blinded elements against the uniform distribution over Z_p; 255
 * degrees of freedom, whose 10^-6 critical value is 377.2 (Wilson-Hilferty),
 * so an honest run fails once in 500,000. */
static void uniformity(const uint64_t *v, size_t n, double *top, double *low)
{
    double ct[256] = {0}, cl[256] = {0};
    for (size_t i = 0; i < n; i++) {
        ct[v[i] >> 53]++;
        cl[v[i] & 255]++;
    }
    double e = (double)n / 256;
    *top = *low = 0;
    for (int b = 0; b < 256; b++) {
        *top += (ct[b] - e) * (ct[b] - e) / e;
        *low += (cl[b] - e) * (cl[b] - e) / e;
    }
}

static void test_private_inference(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 13);
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(cnn, strlen(cnn), "t", &cfg, &err), EML_OK);
    eml_net *ref = make(cfg, 4), *prv = make(cfg, 4), *itg = make(cfg, 4);
    size_t in = eml_net_input_size(ref), no = eml_net_output_size(ref);
    /* Four images; the first is the canary: row 3 holds eight values j/64
     * that the worker must never see. */
    float x[4 * 64], row[8];
    eml_rng r;
    eml_rng_seed(&r, 14);
    for (size_t i = 0; i < 4 * in; i++) x[i] = eml_rng_uniform(&r);
    for (int j = 0; j < 8; j++) x[3 * 8 + j] = row[j] = (float)(7 + 5 * j) / 64;
    fake_worker wp = {0}, wi = {0};
    wp.at = wi.at = -1;
    wp.capture = wi.capture = 1;
    eml_worker_link lp = {&wp, fake_send, fake_recv};
    eml_worker_link li = {&wi, fake_send, fake_recv};
    eml_outsource *op = NULL, *oi = NULL;
    assert_int_equal(eml_outsource_new(&lp, EML_OUTSOURCE_PRIVATE, &op, &err),
                     EML_OK);
    assert_int_equal(eml_outsource_new(&li, EML_OUTSOURCE_INTEGRITY, &oi, &err),
                     EML_OK);
    eml_outsource_attach(op, eml_net_gemm(prv));
    eml_outsource_attach(oi, eml_net_gemm(itg));
    assert_int_equal(infer(ref, x, 4), EML_OK);
    if (infer(prv, x, 4) != EML_OK) fail_msg("%s", eml_outsource_error(op));
    assert_int_equal(infer(itg, x, 4), EML_OK);
    double dy = 0;
    for (size_t i = 0; i < 4 * no; i++) {
        dy = fmax(dy, fabs(eml_net_output(ref)[i] - eml_net_output(prv)[i]));
        /* the same fixed point, the same decoded product */
        assert_true(eml_net_output(prv)[i] == eml_net_output(itg)[i]);
    }
    assert_true(dy < 1e-5);
    const eml_outsource_stats *s = eml_outsource_stats_of(op);
    assert_true(s->verified_products == s->outsourced_products);
    assert_true(s->pad_seconds > 0 && s->pad_seconds <= s->enclave_seconds);
    /* The canary: in the clear on the integrity link (so the search
     * works), nowhere on the private one. */
    assert_true(canary_seen(&wi, row));
    assert_false(canary_seen(&wp, row));
    /* Pads are fresh: the same images again give other blinded values. */
    size_t first = wp.nseen, same = 0;
    assert_int_equal(infer(prv, x, 4), EML_OK);
    assert_int_equal(wp.nseen, 2 * first);
    for (size_t i = 0; i < first; i++) {
        uint64_t v = wp.seen[i];
        int small = v < (1ULL << 40) || v > EML_FIELD_P - (1ULL << 40);
        if (!small && v == wp.seen[first + i]) same++;
    }
    assert_int_equal(same, 0);
    /* Uniformity over many passes: the data operands (the weights are
     * sent in the clear, small, and left out: conv weights are A, the
     * connected layer's are B). */
    for (int pass = 0; pass < 160; pass++)
        assert_int_equal(infer(prv, x, 4), EML_OK);
    size_t nblind = 0;
    uint64_t *blind = malloc(wp.nseen * sizeof(uint64_t));
    for (size_t i = 0; i < wp.nseen; i++) {
        uint64_t v = wp.seen[i];
        if (v >= (1ULL << 40) && v <= EML_FIELD_P - (1ULL << 40))
            blind[nblind++] = v;
    }
    double top, low;
    uniformity(blind, nblind, &top, &low);
    printf("private: max |dy| %.3g; %zu blinded elements, chi-square (255 "
           "dof, 1e-6 critical 377.2) top bits %.1f, low bits %.1f; canary "
           "on the integrity link: yes, on the private link: no\n",
           dy, nblind, top, low);
    assert_true(nblind > 100000);
    assert_true(top < 377.2 && low < 377.2);
    free(blind);
    /* Training products are refused, and nothing is sent for them. */
    int before = wp.count;
    assert_int_equal(eml_outsource_mode_check(EML_OUTSOURCE_PRIVATE, 1, &err),
                     EML_ERR_UNSUPPORTED);
    uint8_t labels[4] = {0, 1, 2, 3};
    eml_status st = eml_net_forward(prv, 4, 1);
    if (st == EML_OK) st = eml_net_loss(prv, 4, labels, NULL, NULL);
    if (st == EML_OK) st = eml_net_backward(prv, 4, NULL);
    assert_int_equal(st, EML_ERR_UNSUPPORTED);
    assert_non_null(strstr(eml_outsource_error(op), "blinds inference only"));
    assert_int_equal(wp.count - before, 3); /* the forward pass only */
    eml_outsource_free(op);
    eml_outsource_free(oi);
    free(wp.reply);
    free(wp.last);
    free(wp.seen);
    free(wi.reply);
    free(wi.last);
    free(wi.seen);
    eml_net_free(ref);
    eml_net_free(prv);
    eml_net_free(itg);
    eml_cfg_free(cfg);
}

/* Why private mode does not train by coding (docs/outsource.md): a
 * DarKnight-style encoding of one input x with one fresh noise vector r,
 * E1 = a x + b r and E2 = c x + d r over Z_p (a, b, c, d secret, uniform),
 * lets one worker that sees both recover x when x is fixed point (here
 * 8-bit pixels): x is proportional to E2 - l E1 for the one l = d / b
 * that cancels r, and guessing two pixels fixes l.  Measured: guesses
 * until x comes back, over 20 random images. */
static uint64_t inv_mod(uint64_t a) /* a^(p-2) */
{
    uint64_t r = 1, e = EML_FIELD_P - 2;
    while (e) {
        if (e & 1) r = eml_field_mul(r, a);
        a = eml_field_mul(a, a);
        e >>= 1;
    }
    return r;
}

static void test_coding_leaks(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 17);
    enum { N = 784 };
    uint64_t x[N], e1[N], e2[N], t[N];
    long total = 0;
    for (int img = 0; img < 20; img++) {
        for (int i = 0; i < N; i++) x[i] = 1 + rnd_below(255);
        uint64_t a = 1 + rnd_below(EML_FIELD_P - 1),
                 b = 1 + rnd_below(EML_FIELD_P - 1),
                 c = 1 + rnd_below(EML_FIELD_P - 1),
                 d = 1 + rnd_below(EML_FIELD_P - 1);
        for (int i = 0; i < N; i++) {
            uint64_t r = rnd_below(EML_FIELD_P);
            e1[i] = eml_field_add(eml_field_mul(a, x[i]), eml_field_mul(b, r));
            e2[i] = eml_field_add(eml_field_mul(c, x[i]), eml_field_mul(d, r));
        }
        /* The worker's side: only e1, e2. */
        int found = 0;
        long tries = 0;
        for (uint64_t g0 = 1; g0 < 256 && !found; g0++)
            for (uint64_t g1 = 1; g1 < 256 && !found; g1++) {
                tries++;
                /* l = (e2_0 g1 - e2_1 g0) / (e1_0 g1 - e1_1 g0) */
                uint64_t num = eml_field_sub(eml_field_mul(e2[0], g1),
                                             eml_field_mul(e2[1], g0));
                uint64_t den = eml_field_sub(eml_field_mul(e1[0], g1),
                                             eml_field_mul(e1[1], g0));
                if (den == 0) continue;
                uint64_t l = eml_field_mul(num, inv_mod(den));
                uint64_t t0 = eml_field_sub(e2[0], eml_field_mul(l, e1[0]));
                if (t0 == 0) continue;
                uint64_t s = eml_field_mul(g0, inv_mod(t0));
                int i = 0;
                for (; i < N; i++) { /* every pixel must come out 8-bit */
                    t[i] = eml_field_mul(
                        s, eml_field_sub(e2[i], eml_field_mul(l, e1[i])));
                    if (t[i] >= 256) break;
                }
                found = i == N;
            }
        assert_true(found);
        assert_memory_equal(t, x, sizeof(x));
        total += tries;
    }
    printf("one input coded with one noise vector: all 20 inputs recovered "
           "from the worker's view, %.0f guesses each on average (of "
           "65,025)\n",
           (double)total / 20);
}

/* 300 faults on private inference products, all caught. */
static void test_private_faults(void **state)
{
    (void)state;
    eml_rng_seed(&g_rng, 15);
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(cnn, strlen(cnn), "t", &cfg, &err), EML_OK);
    float x[4 * 64];
    eml_rng r;
    eml_rng_seed(&r, 16);
    for (size_t i = 0; i < 4 * 64; i++) x[i] = eml_rng_uniform(&r);
    int caught = 0, injected = 0;
    while (injected < 300) {
        fault f = (fault)(1 + injected % (F_KINDS - 1));
        eml_net *net = make(cfg, 4);
        fake_worker w = {0};
        w.f = f;
        w.at = (injected / (F_KINDS - 1)) % 3;
        eml_worker_link link = {&w, fake_send, fake_recv};
        eml_outsource *o = NULL;
        assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_PRIVATE, &o,
                                           &err),
                         EML_OK);
        eml_outsource_attach(o, eml_net_gemm(net));
        eml_status st = infer(net, x, 4);
        injected++;
        if (st != EML_OK &&
            strncmp(eml_outsource_error(o),
                    "worker result failed verification (layer ", 41) == 0 &&
            strstr(eml_outsource_error(o), "forward") != NULL)
            caught++;
        else
            printf("NOT CAUGHT: fault %d at product %d (%s)\n", (int)f, w.at,
                   eml_outsource_error(o));
        eml_outsource_free(o);
        eml_net_free(net);
        free(w.reply);
        free(w.last);
    }
    printf("private inference: %d of %d injected faults caught\n", caught,
           injected);
    assert_int_equal(caught, injected);
    eml_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_ops),
        cmocka_unit_test(test_field_gemm),
        cmocka_unit_test(test_field_gemm_padded),
        cmocka_unit_test(test_fixed_point),
        cmocka_unit_test(test_freivalds_rate),
        cmocka_unit_test(test_conv_ops),
        cmocka_unit_test(test_freivalds_conv_rate),
        cmocka_unit_test(test_limb_gemm),
        cmocka_unit_test(test_client_honest),
        cmocka_unit_test(test_client_faults),
        cmocka_unit_test(test_private_inference),
        cmocka_unit_test(test_private_faults),
        cmocka_unit_test(test_coding_leaks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
