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
 *     with the verification message naming the layer and the product).
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

/* r from an 8-element set: the small-r check's bound made visible. */
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
    printf("small-r Freivalds, |S| = 8: a wrong C passed %.4f of %d (bound "
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
} fake_worker;

static eml_status fake_send(void *user, const uint8_t *p, size_t n,
                            eml_err *err)
{
    fake_worker *w = user;
    eml_worker_req q;
    eml_status st = eml_worker_req_parse(p, n, &q, err);
    if (st != EML_OK) return st;
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
    eml_field_gemm((const uint8_t *)q.a, (const uint8_t *)q.b, c, q.m, q.n,
                   q.k);
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
    assert_int_equal(eml_outsource_new(&link, EML_OUTSOURCE_PRIVATE, &o,
                                       &err),
                     EML_ERR_UNSUPPORTED);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_ops),
        cmocka_unit_test(test_field_gemm),
        cmocka_unit_test(test_fixed_point),
        cmocka_unit_test(test_freivalds_rate),
        cmocka_unit_test(test_client_honest),
        cmocka_unit_test(test_client_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
