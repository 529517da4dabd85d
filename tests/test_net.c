/*
 * test_net.c - the network as a whole: gradients of every layer type
 * against finite differences, per-example gradient norms against
 * batch-size-1 gradients, ref vs fast kernels at network level, the GEMM
 * dispatch point, weights round trips and mismatches, shape errors, and
 * reproducible training.
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
#include "enclaveml/dp.h"
#include "enclaveml/model.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"
#include "host/hostio.h"
#include "enclaveml/safetensors.h"
#include "net_util.h"

/* Small networks, one per layer type, all without dropout (its mask changes
 * between passes) and with smooth activations where possible. */
static const char *const fd_nets[] = {
    /* connected + every activation */
    "[net]\nheight=3\nwidth=3\nchannels=2\n"
    "[connected]\noutput=7\nactivation=tanh\n"
    "[connected]\noutput=6\nactivation=logistic\n"
    "[connected]\noutput=5\nactivation=leaky\n"
    "[connected]\noutput=5\nactivation=relu\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n",
    /* convolution with padding and stride, maxpool with Darknet padding */
    "[net]\nheight=9\nwidth=8\nchannels=2\n"
    "[convolutional]\nfilters=3\nsize=3\nstride=2\npad=1\nactivation=tanh\n"
    "[maxpool]\nsize=2\nstride=1\n"
    "[convolutional]\nfilters=4\nsize=2\nstride=1\npadding=0\n"
    "activation=logistic\n"
    "[connected]\noutput=3\nactivation=linear\n[softmax]\n",
    /* maxpool stride 2, avgpool windowed and global */
    "[net]\nheight=8\nwidth=8\nchannels=1\n"
    "[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=tanh\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[avgpool]\nsize=2\nstride=1\n"
    "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
    "[avgpool]\n[softmax]\n",
};

static void test_finite_differences(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(fd_nets) / sizeof(fd_nets[0]); t++)
        fd_check(fd_nets[t], t, 1);
}

/* Per-example squared norms from one backward pass equal the norms of the
 * gradients computed with batch size 1. */
static void test_per_example_norms(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(fd_nets) / sizeof(fd_nets[0]); t++) {
        const int n = 5;
        eml_net *net = make_net(fd_nets[t], EML_KERNELS_REF, n, NULL);
        size_t k = eml_net_output_size(net);
        size_t in = eml_net_input_size(net);
        size_t np = eml_net_param_count(net);
        uint8_t labels[5];
        for (int b = 0; b < n; b++) labels[b] = (uint8_t)(b % k);
        random_input(net, n, 99);
        float *x = malloc((size_t)n * in * sizeof(float));
        memcpy(x, eml_net_input(net), (size_t)n * in * sizeof(float));
        float sq[5], sq2[5];
        assert_int_equal(eml_net_forward(net, n, 1), EML_OK);
        assert_int_equal(eml_net_loss(net, n, labels, NULL, NULL), EML_OK);
        /* The norms-only pass (DP-SGD's first) gives the same norms. */
        assert_int_equal(eml_net_example_norms(net, n, sq2), EML_OK);
        assert_int_equal(eml_net_backward(net, n, sq), EML_OK);
        for (int b = 0; b < n; b++) assert_float_equal(sq[b], sq2[b], 0);
        assert_int_not_equal(eml_net_example_norms(net, n, NULL), EML_OK);
        double max_diff = 0;
        for (int b = 0; b < n; b++) {
            memcpy(eml_net_input(net), x + (size_t)b * in, in * sizeof(float));
            assert_int_equal(eml_net_forward(net, 1, 1), EML_OK);
            assert_int_equal(eml_net_loss(net, 1, &labels[b], NULL, NULL),
                             EML_OK);
            assert_int_equal(eml_net_backward(net, 1, NULL), EML_OK);
            double s = 0;
            const float *g = eml_net_grads(net);
            for (size_t i = 0; i < np; i++) s += (double)g[i] * g[i];
            double d = fabs(sqrt(s) - sqrt((double)sq[b]));
            if (d > max_diff) max_diff = d;
        }
        printf("net %zu: max |per-example norm - batch-1 norm| = %g\n", t,
               max_diff);
        assert_true(max_diff < 1e-5);
        free(x);
        eml_net_free(net);
    }
}

/* The same network through ref and fast kernels gives the same outputs and
 * gradients. */
static void test_ref_vs_fast(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(fd_nets) / sizeof(fd_nets[0]); t++)
        ref_fast_check(fd_nets[t], t);
}

/* ==== the GEMM dispatch point ==== */

typedef struct hook {
    eml_gemm_fn inner;
    void *inner_ctx;
    int calls, per_example;
} hook;

static eml_status counting_gemm(void *ctx, const eml_gemm_desc *g)
{
    hook *h = ctx;
    h->calls++;
    h->per_example += g->pass == EML_GEMM_PER_EXAMPLE;
    return h->inner(h->inner_ctx, g);
}

static void test_gemm_dispatch(void **state)
{
    (void)state;
    const int n = 2;
    eml_net *net = make_net(fd_nets[1], EML_KERNELS_REF, n, NULL);
    eml_gemm_dispatch *d = eml_net_gemm(net);
    hook h = {d->fn, d->ctx, 0, 0};
    d->fn = counting_gemm;
    d->ctx = &h;
    uint8_t labels[2] = {0, 1};
    random_input(net, n, 1);
    assert_int_equal(eml_net_forward(net, n, 1), EML_OK);
    /* 2 convolutions (one GEMM each for the whole batch) + 1 connected */
    assert_int_equal(h.calls, 3);
    assert_int_equal(eml_net_loss(net, n, labels, NULL, NULL), EML_OK);
    assert_int_equal(eml_net_backward(net, n, NULL), EML_OK);
    /* backward: connected dW + dX; conv2 dW + dX; conv1 dW (the first
     * layer computes no input gradient) */
    assert_int_equal(h.calls, 3 + 2 + 2 + 1);
    assert_int_equal((int)d->calls, h.calls);
    double expect = 2 * (eml_net_flops_forward(net) +
                         eml_net_flops_backward(net));
    printf("dispatch: %d calls, %g flops (expected %g)\n", h.calls, d->flops,
           expect);
    assert_true(fabs(d->flops - expect) < 1e-6 * expect);
    /* Per-example gradients (DP-SGD): one batched product per
     * convolution, whatever the batch size. */
    float sq[2];
    int before = h.calls;
    assert_int_equal(eml_net_forward(net, n, 1), EML_OK);
    assert_int_equal(eml_net_loss(net, n, labels, NULL, NULL), EML_OK);
    assert_int_equal(eml_net_example_norms(net, n, sq), EML_OK);
    assert_int_equal(h.per_example, 2);
    printf("per-example pass: %d calls\n", h.calls - before);
    eml_net_free(net);
}

/* ==== a layer the fast table cannot run ==== */

/* A 2x2/2 max pool over 29x29 stops one column and row short of the
 * edge, which oneDNN cannot express: under fast kernels that one layer
 * runs on the reference table, the net counts it, and the outputs match a
 * reference net's. */
static void test_pool_on_ref(void **state)
{
    (void)state;
    static const char text[] =
        "[net]\nheight=29\nwidth=29\nchannels=1\n"
        "[maxpool]\nsize=2\nstride=2\npadding=0\n"
        "[connected]\noutput=3\nactivation=linear\n[softmax]\n";
    eml_net *fast = make_net(text, EML_KERNELS_FAST, 2, NULL);
    eml_net *ref = make_net(text, EML_KERNELS_REF, 2, NULL);
    assert_int_equal(eml_net_ref_layers(fast), 1);
    assert_int_equal(eml_net_ref_layers(ref), 0);
    random_input(fast, 2, 5);
    random_input(ref, 2, 5);
    assert_int_equal(eml_net_forward(fast, 2, 0), EML_OK);
    assert_int_equal(eml_net_forward(ref, 2, 0), EML_OK);
    const float *a = eml_net_output(fast), *b = eml_net_output(ref);
    for (int i = 0; i < 6; i++) assert_true(fabsf(a[i] - b[i]) < 1e-5f);
    eml_net_free(fast);
    eml_net_free(ref);
}

/* ==== inference: one model, several workspaces ==== */

/* A trained net's weights loaded as a model: two workspaces (two requests
 * in flight) over its one copy of the parameters predict exactly what the
 * training net computes, have no gradients, and refuse backward passes
 * and training-mode forward passes. */
static void test_model_workspaces(void **state)
{
    (void)state;
    for (int t = 0; t < 3; t++) {
        const char *text = fd_nets[t];
        eml_net *net = make_net(text, EML_KERNELS_REF, 5, NULL);
        uint8_t *w = NULL;
        size_t wlen = 0;
        assert_int_equal(eml_weights_encode(net, &w, &wlen), EML_OK);
        eml_model *m = NULL;
        eml_err err = {0};
        assert_int_equal(eml_model_load((const uint8_t *)text, strlen(text),
                                        "t.cfg", w, wlen, "w", &m, &err),
                         EML_OK);
        eml_net *a = NULL, *b = NULL;
        assert_int_equal(eml_model_workspace(m, EML_KERNELS_REF, 2, &a, &err),
                         EML_OK);
        assert_int_equal(eml_model_workspace(m, EML_KERNELS_FAST, 5, &b, &err),
                         EML_OK);
        assert_null(eml_net_grads(a));
        assert_ptr_equal(eml_net_params(a), eml_net_params(b));
        size_t item = eml_net_input_size(net), k = eml_net_output_size(net);
        uint8_t img[5 * 200];
        for (size_t i = 0; i < 5 * item; i++) img[i] = (uint8_t)(i * 37 + t);
        float *x = eml_net_input(net);
        for (size_t i = 0; i < 5 * item; i++) x[i] = img[i] * (1.0f / 255);
        assert_int_equal(eml_net_forward(net, 5, 0), EML_OK);
        uint32_t la[5], lb[5];
        float oa[5 * 16], ob[5 * 16];
        assert_int_equal(eml_net_predict(a, img, 5, item, la, oa, &err),
                         EML_OK); /* 3 batches: 2 + 2 + 1 */
        assert_int_equal(eml_net_predict(b, img, 5, item, lb, ob, &err),
                         EML_OK);
        const float *o = eml_net_output(net);
        for (size_t i = 0; i < 5 * k; i++) {
            assert_true(oa[i] == o[i]); /* same kernels: same bits */
            assert_true(fabsf(ob[i] - o[i]) < 1e-5f);
        }
        for (int i = 0; i < 5; i++) assert_int_equal(la[i], lb[i]);
        uint8_t labels[2] = {0, 0};
        assert_int_equal(eml_net_forward(a, 2, 1), EML_ERR_INVALID);
        assert_int_equal(eml_net_forward(a, 2, 0), EML_OK);
        assert_int_equal(eml_net_loss(a, 2, labels, NULL, NULL), EML_OK);
        assert_int_equal(eml_net_backward(a, 2, NULL), EML_ERR_INVALID);
        assert_int_equal(eml_net_predict(a, img, 1, item + 1, la, NULL, &err),
                         EML_ERR_SHAPE);
        eml_net_free(a);
        eml_net_free(b);
        eml_model_free(m);
        free(w);
        eml_net_free(net);
    }
}

/* ==== construction errors ==== */

static void expect_net_error(const char *text, eml_status want,
                             const char *needle)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(text, strlen(text), "x.cfg", &cfg, &err),
                     EML_OK);
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 4,
                      .seed = 1};
    eml_net *net = NULL;
    eml_status st = eml_net_new(cfg, &o, &net, &err);
    printf("expected error: %s\n", eml_err_msg(&err, st));
    assert_int_equal(st, want);
    assert_null(net);
    assert_non_null(strstr(err.msg, needle));
    eml_cfg_free(cfg);
}

static void test_shape_errors(void **state)
{
    (void)state;
    expect_net_error("[net]\nheight=4\nwidth=4\nchannels=1\n"
                     "[convolutional]\nfilters=2\nsize=7\nactivation=relu\n"
                     "[softmax]\n",
                     EML_ERR_SHAPE, "does not fit");
    expect_net_error("[net]\nheight=4\nwidth=4\nchannels=1\n"
                     "[softmax]\n[connected]\noutput=3\n",
                     EML_ERR_SHAPE, "softmax");
    expect_net_error("[net]\nheight=2\nwidth=2\nchannels=1\n"
                     "[maxpool]\nsize=5\nstride=1\npadding=0\n[softmax]\n",
                     EML_ERR_SHAPE, "does not fit");
    expect_net_error("[net]\nheight=4096\nwidth=4096\nchannels=4096\n"
                     "[connected]\noutput=65536\n[softmax]\n",
                     EML_ERR_RANGE, "large");
}

/* ==== weights ==== */

/* Calibration images travel with the weights (EML_CALIB_TENSOR): back as
 * they went; plain decoding skips them; a wrong shape is refused. */
static void test_weights_calibration(void **state)
{
    (void)state;
    eml_net *a = make_net(fd_nets[1], EML_KERNELS_REF, 2, NULL);
    size_t item = eml_net_input_size(a);
    float x[3 * 144];
    assert_true(item == 144);
    for (size_t i = 0; i < 3 * item; i++) x[i] = (float)(i % 251) / 250.0f;
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(eml_weights_encode_calib(a, x, 3, &buf, &len), EML_OK);
    eml_net *b = make_net(fd_nets[1], EML_KERNELS_REF, 2, NULL);
    eml_err err = {0};
    float *got = NULL;
    size_t n = 0;
    assert_int_equal(eml_weights_decode_calib(b, buf, len, "w", &got, &n,
                                              &err),
                     EML_OK);
    assert_int_equal((int)n, 3);
    assert_memory_equal(got, x, sizeof(x));
    assert_memory_equal(eml_net_params(a), eml_net_params(b),
                        eml_net_param_count(a) * sizeof(float));
    free(got);
    assert_int_equal(eml_weights_decode(b, buf, len, "w", &err), EML_OK);
    free(buf);
    /* images of another shape than the input's */
    eml_net *c = make_net(fd_nets[0], EML_KERNELS_REF, 2, NULL);
    assert_int_equal(eml_weights_encode_calib(c, x, 2, &buf, &len), EML_OK);
    eml_net *d = make_net(fd_nets[0], EML_KERNELS_REF, 2, NULL);
    assert_int_equal(eml_weights_decode(d, buf, len, "w", &err), EML_OK);
    free(buf);
    /* c's calibration tensor in a's file: c's input is [2, 3, 3] */
    uint8_t *ba = NULL, *bc = NULL;
    size_t la = 0, lc = 0;
    assert_int_equal(eml_weights_encode_calib(c, x, 2, &bc, &lc), EML_OK);
    assert_int_equal(eml_weights_encode(a, &ba, &la), EML_OK);
    eml_st *sa = NULL, *sc = NULL;
    assert_int_equal(eml_st_parse(ba, la, &sa, &err), EML_OK);
    assert_int_equal(eml_st_parse(bc, lc, &sc, &err), EML_OK);
    /* the writer borrows each tensor's data until eml_st_writer_finish */
    eml_st_writer *w = eml_st_writer_new();
    size_t nt = eml_st_count(sa);
    float **vals = calloc(nt + 1, sizeof(*vals));
    assert_non_null(vals);
    for (size_t i = 0; i < nt; i++) {
        const eml_st_tensor *t = eml_st_get(sa, i);
        vals[i] = malloc(t->count * sizeof(float) + 4);
        eml_st_copy(vals[i], t);
        assert_int_equal(
            eml_st_writer_add(w, t->name, t->shape, t->ndims, vals[i]),
            EML_OK);
    }
    const eml_st_tensor *ct = eml_st_find(sc, EML_CALIB_TENSOR);
    vals[nt] = malloc(ct->count * sizeof(float));
    eml_st_copy(vals[nt], ct);
    assert_int_equal(
        eml_st_writer_add(w, ct->name, ct->shape, ct->ndims, vals[nt]),
        EML_OK);
    uint8_t *mixed = NULL;
    size_t lm = 0;
    assert_int_equal(eml_st_writer_finish(w, &mixed, &lm), EML_OK);
    eml_st_writer_free(w);
    for (size_t i = 0; i <= nt; i++)
        free(vals[i]);
    free(vals);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_weights_decode(b, mixed, lm, "m.safetensors", &err),
                     EML_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "calibration.images"));
    printf("%s\n", err.msg);
    free(mixed), free(ba), free(bc);
    eml_st_free(sa), eml_st_free(sc);
    eml_net_free(a), eml_net_free(b), eml_net_free(c), eml_net_free(d);
}

static void test_weights_roundtrip_and_mismatch(void **state)
{
    (void)state;
    eml_net *a = make_net(fd_nets[1], EML_KERNELS_REF, 2, NULL);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(eml_weights_encode(a, &buf, &len), EML_OK);
    eml_net *b = make_net(fd_nets[1], EML_KERNELS_REF, 2, NULL);
    memset(eml_net_params(b), 0, eml_net_param_count(b) * sizeof(float));
    eml_err err = {0};
    assert_int_equal(eml_weights_decode(b, buf, len, "w.safetensors", &err),
                     EML_OK);
    assert_memory_equal(eml_net_params(a), eml_net_params(b),
                        eml_net_param_count(a) * sizeof(float));
    /* Tensor names and PyTorch shapes. */
    const eml_net_tensor *t0 = eml_net_tensor_get(a, 0);
    assert_string_equal(t0->name, "layers.0.weight");
    assert_int_equal(t0->ndims, 4);
    assert_int_equal(t0->shape[0], 3);
    assert_int_equal(t0->shape[1], 2);
    assert_int_equal(t0->shape[2], 3);
    assert_string_equal(eml_net_tensor_get(a, 5)->name, "layers.3.bias");

    /* The same file into a net whose layer 0 has another shape. */
    const char *other =
        "[net]\nheight=9\nwidth=8\nchannels=2\n"
        "[convolutional]\nfilters=5\nsize=3\nstride=2\npad=1\n"
        "activation=tanh\n[maxpool]\nsize=2\nstride=1\n"
        "[convolutional]\nfilters=4\nsize=2\nstride=1\npadding=0\n"
        "activation=logistic\n[connected]\noutput=3\nactivation=linear\n"
        "[softmax]\n";
    eml_net *c = make_net(other, EML_KERNELS_REF, 2, NULL);
    memset(&err, 0, sizeof(err));
    eml_status st = eml_weights_decode(c, buf, len, "w.safetensors", &err);
    printf("expected error: %s\n", err.msg);
    assert_int_equal(st, EML_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "layers.0.weight"));
    assert_non_null(strstr(err.msg, "[3, 2, 3, 3]"));
    assert_non_null(strstr(err.msg, "[5, 2, 3, 3]"));

    /* A net with an extra layer: a tensor is missing from the file. */
    const char *more =
        "[net]\nheight=9\nwidth=8\nchannels=2\n"
        "[convolutional]\nfilters=3\nsize=3\nstride=2\npad=1\n"
        "activation=tanh\n[maxpool]\nsize=2\nstride=1\n"
        "[convolutional]\nfilters=4\nsize=2\nstride=1\npadding=0\n"
        "activation=logistic\n[connected]\noutput=3\nactivation=linear\n"
        "[connected]\noutput=3\nactivation=linear\n[softmax]\n";
    eml_net *d = make_net(more, EML_KERNELS_REF, 2, NULL);
    memset(&err, 0, sizeof(err));
    st = eml_weights_decode(d, buf, len, "w.safetensors", &err);
    printf("expected error: %s\n", err.msg);
    assert_int_equal(st, EML_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "layers.4.weight"));
    assert_non_null(strstr(err.msg, "missing"));

    /* Truncated files are errors. */
    for (size_t cut = 0; cut < len; cut += 7) {
        memset(&err, 0, sizeof(err));
        assert_int_not_equal(eml_weights_decode(b, buf, cut, "w", &err),
                             EML_OK);
    }
    free(buf);
    eml_net_free(a);
    eml_net_free(b);
    eml_net_free(c);
    eml_net_free(d);
}

/* ==== training ==== */

/* A tiny synthetic problem: the label is the brightest quadrant. */
static void make_quadrants(uint8_t *img, uint8_t *lab, size_t count,
                           uint64_t seed)
{
    eml_rng r;
    eml_rng_seed(&r, seed);
    for (size_t i = 0; i < count; i++) {
        uint8_t q = (uint8_t)eml_rng_below(&r, 4);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int qq = (y >= 4) * 2 + (x >= 4);
                int v = (int)eml_rng_below(&r, 100) + (qq == q ? 120 : 0);
                img[i * 64 + (size_t)(y * 8 + x)] = (uint8_t)v;
            }
        lab[i] = q;
    }
}

static const char quad_cfg[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.05\n"
    "momentum=0.9\ndecay=0.0005\nepochs=3\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[dropout]\nprobability=0.1\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

static void train_quadrants(eml_kernels_kind kind, float *params_out,
                            size_t *np_out, double *acc_out)
{
    enum { N = 512, T = 128 };
    static uint8_t img[N * 64], lab[N], timg[T * 64], tlab[T];
    make_quadrants(img, lab, N, 1);
    make_quadrants(timg, tlab, T, 2);
    eml_netcfg *cfg = NULL;
    eml_net *net = make_net(quad_cfg, kind, 16, &cfg);
    eml_dataset tr = {N, 64, img, lab}, te = {T, 64, timg, tlab};
    eml_train_opts o = eml_train_opts_default(cfg);
    o.run.seed = 1234;
    eml_train_result res;
    eml_err err = {0};
    eml_status st = eml_train(net, cfg, &tr, &te, &o, &res, &err);
    if (st != EML_OK) fail_msg("train: %s", eml_err_msg(&err, st));
    *np_out = eml_net_param_count(net);
    memcpy(params_out, eml_net_params(net), *np_out * sizeof(float));
    *acc_out = res.test_accuracy;
    eml_net_free(net);
    eml_cfg_free(cfg);
}

static void test_training_learns_and_is_reproducible(void **state)
{
    (void)state;
    eml_kernels_set_threads(1);
    static float p1[4096], p2[4096];
    size_t n1, n2;
    double a1, a2;
    train_quadrants(EML_KERNELS_REF, p1, &n1, &a1);
    train_quadrants(EML_KERNELS_REF, p2, &n2, &a2);
    printf("quadrants: test accuracy %.3f\n", a1);
    assert_true(a1 > 0.9);
    assert_int_equal(n1, n2);
    assert_memory_equal(p1, p2, n1 * sizeof(float));
    train_quadrants(EML_KERNELS_FAST, p2, &n2, &a2);
    printf("quadrants (fast): test accuracy %.3f\n", a2);
    assert_true(a2 > 0.9);
}

/* DP-SGD's clipping: with one example and no noise, the clipped gradient
 * has norm min(norm, C). */
/* DP-SGD's clipped sum from the norms' pass alone (eml_net_clipped_grads)
 * equals the sum a second backward pass over the scaled loss gradient
 * gives, on both tables. */
static void test_clipped_sum_one_pass(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof(fd_nets) / sizeof(fd_nets[0]); t++)
        for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
            const int n = 6;
            eml_net *net = make_net(fd_nets[t], (eml_kernels_kind)kind, n,
                                    NULL);
            size_t k = eml_net_output_size(net);
            size_t np = eml_net_param_count(net);
            uint8_t labels[6];
            float sq[6], s[6] = {1.0f, 0.25f, 0.0f, 3.0f, 0.5f, 1e-3f};
            for (int b = 0; b < n; b++) labels[b] = (uint8_t)(b % k);
            random_input(net, n, 41);
            assert_int_equal(eml_net_forward(net, n, 1), EML_OK);
            assert_int_equal(eml_net_loss(net, n, labels, NULL, NULL),
                             EML_OK);
            assert_int_equal(eml_net_example_norms(net, n, sq), EML_OK);
            assert_int_equal(eml_net_clipped_grads(net, n, s), EML_OK);
            float *one = malloc(np * sizeof(float));
            memcpy(one, eml_net_grads(net), np * sizeof(float));
            /* the two-pass way, from the same forward pass */
            assert_int_equal(eml_net_loss(net, n, labels, NULL, NULL),
                             EML_OK);
            eml_net_scale_output_delta(net, n, s);
            assert_int_equal(eml_net_backward(net, n, NULL), EML_OK);
            const float *two = eml_net_grads(net);
            double diff = 0, mag = 0;
            for (size_t i = 0; i < np; i++) {
                diff = fmax(diff, fabs((double)one[i] - two[i]));
                mag = fmax(mag, fabs((double)two[i]));
            }
            printf("net %zu (%s): one pass against two, max |difference| "
                   "%g of %g\n",
                   t, kind ? "fast" : "ref", diff, mag);
            assert_true(mag > 0);
            assert_true(diff <= 1e-5 * mag);
            free(one);
            eml_net_free(net);
        }
}

static void test_dp_clipping(void **state)
{
    (void)state;
    eml_net *net = make_net(fd_nets[1], EML_KERNELS_REF, 1, NULL);
    size_t np = eml_net_param_count(net);
    const double clips[] = {1e-3, 0.05, 1.0, 1e3};
    for (size_t c = 0; c < 4; c++) {
        uint8_t label = 1;
        float sq, scale;
        random_input(net, 1, 17);
        assert_int_equal(eml_net_forward(net, 1, 1), EML_OK);
        assert_int_equal(eml_net_loss(net, 1, &label, NULL, NULL), EML_OK);
        assert_int_equal(eml_net_backward(net, 1, &sq), EML_OK);
        double norm = sqrt((double)sq);
        scale = norm > clips[c] ? (float)(clips[c] / norm) : 1.0f;
        eml_net_scale_output_delta(net, 1, &scale);
        assert_int_equal(eml_net_backward(net, 1, NULL), EML_OK);
        double s = 0;
        for (size_t i = 0; i < np; i++)
            s += (double)eml_net_grads(net)[i] * eml_net_grads(net)[i];
        double want = norm < clips[c] ? norm : clips[c];
        printf("clip %g: norm %g -> %g (want %g)\n", clips[c], norm, sqrt(s),
               want);
        assert_true(fabs(sqrt(s) - want) <= 1e-6 * (1 + want));
    }
    eml_net_free(net);
}

/* A DP run: finite epsilon, the target is never passed, batches may be
 * empty (expected batch size 1 over 512 examples), seeded runs repeat. */
static void test_dp_training(void **state)
{
    (void)state;
    enum { N = 512 };
    static uint8_t img[N * 64], lab[N];
    make_quadrants(img, lab, N, 3);
    eml_dataset tr = {N, 64, img, lab};
    float p1[4096];
    for (int run = 0; run < 3; run++) {
        eml_netcfg *cfg = NULL;
        eml_net *net = make_net(quad_cfg, EML_KERNELS_REF, 4, &cfg);
        eml_train_opts o = eml_train_opts_default(cfg);
        o.run.epochs = 2;
        o.run.batch = run == 2 ? 1 : 4;
        o.run.seed = 5;
        o.run.dp.enabled = 1;
        o.run.dp.clip = 1.0;
        o.run.dp.noise = 1.0;
        o.run.dp.delta = 1e-5;
        o.run.dp.insecure_seed = 1;
        long planned_steps = 0;
        if (run == 2) {
            /* A target below what the whole run would spend. */
            double q, full, order;
            eml_dp_plan(N, o.run.batch, o.run.epochs, &q, &planned_steps);
            eml_err e2 = {0};
            assert_int_equal(
                eml_dp_epsilon(q,
                               eml_dp_effective_noise(
                                   1.0, 1.0, eml_net_param_count(net)),
                               planned_steps / 2, 1e-5, &full, &order, &e2),
                EML_OK);
            /* what half the run spends (summing step by step rounds a
             * little differently from multiplying) */
            o.run.dp.target_epsilon = full * (1 + 1e-9);
        }
        eml_train_result res;
        eml_err err = {0};
        eml_status st = eml_train(net, cfg, &tr, NULL, &o, &res, &err);
        if (st != EML_OK) fail_msg("dp train: %s", eml_err_msg(&err, st));
        printf("dp run %d: %ld steps, epsilon %g, stopped %d\n", run,
               res.steps, res.epsilon, res.dp_stopped_early);
        assert_true(isfinite(res.epsilon) && res.epsilon > 0);
        if (run == 2) {
            assert_true(res.epsilon <= o.run.dp.target_epsilon);
            assert_true(res.dp_stopped_early);
            assert_true(res.steps >= planned_steps / 2 &&
                        res.steps < planned_steps);
        }
        size_t np = eml_net_param_count(net);
        if (run == 0) memcpy(p1, eml_net_params(net), np * sizeof(float));
        if (run == 1)
            assert_memory_equal(p1, eml_net_params(net), np * sizeof(float));
        eml_net_free(net);
        eml_cfg_free(cfg);
    }
}

static void test_lr_policies(void **state)
{
    (void)state;
    eml_netcfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.policy = EML_LR_STEPS;
    cfg.n_steps = 2;
    cfg.steps[0] = 10;
    cfg.steps[1] = 20;
    cfg.scales[0] = 0.1f;
    cfg.scales[1] = 0.5f;
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 9, 100), 1.0f, 1e-7);
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 10, 100), 0.1f, 1e-7);
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 25, 100), 0.05f, 1e-7);
    cfg.policy = EML_LR_COSINE;
    cfg.lr_min = 0.01f;
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 0, 101), 1.0f, 1e-6);
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 50, 101), 0.505f, 1e-6);
    assert_float_equal(eml_lr_at(&cfg, 1.0f, 100, 101), 0.01f, 1e-6);
    cfg.policy = EML_LR_CONSTANT;
    assert_float_equal(eml_lr_at(&cfg, 0.3f, 77, 100), 0.3f, 1e-7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_per_example_norms),
        cmocka_unit_test(test_ref_vs_fast),
        cmocka_unit_test(test_gemm_dispatch),
        cmocka_unit_test(test_pool_on_ref),
        cmocka_unit_test(test_model_workspaces),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_weights_roundtrip_and_mismatch),
        cmocka_unit_test(test_weights_calibration),
        cmocka_unit_test(test_training_learns_and_is_reproducible),
        cmocka_unit_test(test_lr_policies),
        cmocka_unit_test(test_clipped_sum_one_pass),
        cmocka_unit_test(test_dp_clipping),
        cmocka_unit_test(test_dp_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
