/*
 * net_util.h - what the network tests share (cmocka, header only): a net
 * from cfg text with seeded parameters, and seeded uniform input.
 */
#ifndef EML_TESTS_NET_UTIL_H
#define EML_TESTS_NET_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"

/* A net of `batch` examples from cfg text, parameters from seed 3; the
 * parsed cfg goes to *cfg_out when it is not NULL (else it is freed). */
static inline eml_net *make_net(const char *text, eml_kernels_kind kind,
                                int batch, eml_netcfg **cfg_out)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st = eml_cfg_parse(text, strlen(text), "test.cfg", &cfg, &err);
    if (st != EML_OK) fail_msg("cfg: %s", eml_err_msg(&err, st));
    eml_net_opts o = {.kernels = kind, .max_batch = batch, .seed = 7};
    eml_net *net = NULL;
    st = eml_net_new(cfg, &o, &net, &err);
    if (st != EML_OK) fail_msg("net: %s", eml_err_msg(&err, st));
    eml_net_init_params(net, 3);
    if (cfg_out != NULL)
        *cfg_out = cfg;
    else
        eml_cfg_free(cfg);
    return net;
}

/* Uniform [0, 1) input for n examples, from seed. */
static inline void random_input(eml_net *net, int n, uint64_t seed)
{
    eml_rng r;
    eml_rng_seed(&r, seed);
    float *x = eml_net_input(net);
    for (size_t i = 0; i < (size_t)n * eml_net_input_size(net); i++)
        x[i] = eml_rng_uniform(&r);
}

/* The training loss (with the batch's statistics under batch norm, which
 * is what the backward pass differentiates). */
static inline double train_loss(eml_net *net, int n, const uint8_t *labels)
{
    double loss = 0;
    assert_int_equal(eml_net_forward(net, n, 1), EML_OK);
    assert_int_equal(eml_net_loss(net, n, labels, &loss, NULL), EML_OK);
    return loss;
}

static inline int is_state_param(const eml_net *net, size_t i)
{
    for (size_t q = 0; q < eml_net_tensor_count(net); q++) {
        const eml_net_tensor *ts = eml_net_tensor_get(net, q);
        if (ts->is_state && i >= ts->offset && i < ts->offset + ts->count)
            return 1;
    }
    return 0;
}

/* Net number t of cfg text on ref kernels, 3 examples: every trained
 * parameter's gradient against central differences (h = 0.01) of the
 * training loss, relative error < 3e-2; the running statistics' gradient
 * is 0.  big: weights uniform in [-1, 1) so gradients stand above float
 * noise. */
static inline void fd_check(const char *text, size_t t, int big)
{
    const int n = 3;
    eml_net *net = make_net(text, EML_KERNELS_REF, n, NULL);
    size_t k = eml_net_output_size(net);
    uint8_t labels[3] = {0, (uint8_t)(1 % k), (uint8_t)(2 % k)};
    random_input(net, n, 11 + t);
    float *w = eml_net_params(net);
    size_t np = eml_net_param_count(net);
    eml_rng r;
    eml_rng_seed(&r, 5 + t);
    for (size_t i = 0; big && i < np; i++)
        if (!is_state_param(net, i)) w[i] = 2.0f * eml_rng_uniform(&r) - 1;
    (void)train_loss(net, n, labels);
    assert_int_equal(eml_net_backward(net, n, NULL), EML_OK);
    float *g = malloc(np * sizeof(float));
    assert_non_null(g);
    memcpy(g, eml_net_grads(net), np * sizeof(float));
    double max_err = 0;
    size_t checked = 0;
    const float h = 1e-2f;
    for (size_t i = 0; i < np; i++) {
        if (is_state_param(net, i)) {
            assert_true(g[i] == 0.0f);
            continue;
        }
        float keep = w[i];
        w[i] = keep + h;
        double lp = train_loss(net, n, labels);
        w[i] = keep - h;
        double lm = train_loss(net, n, labels);
        w[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        double e = fabs(fd - g[i]) / (1e-2 + fmax(fabs(fd), fabs(g[i])));
        if (e > max_err) max_err = e;
        checked++;
    }
    printf("net %zu: %zu parameters (%zu trained), max relative |fd - "
           "backward| = %g\n",
           t, np, checked, max_err);
    assert_int_equal(checked, eml_net_trainable_count(net));
    assert_true(max_err < 3e-2);
    free(g);
    eml_net_free(net);
}

/* Net number t on ref and on fast kernels, 4 examples, a training step's
 * forward and backward: outputs within 1e-5, gradients within 1e-4. */
static inline void ref_fast_check(const char *text, size_t t)
{
    const int n = 4;
    eml_net *a = make_net(text, EML_KERNELS_REF, n, NULL);
    eml_net *b = make_net(text, EML_KERNELS_FAST, n, NULL);
    size_t k = eml_net_output_size(a);
    uint8_t labels[4] = {0, (uint8_t)(1 % k), (uint8_t)(2 % k), 0};
    random_input(a, n, 5);
    random_input(b, n, 5);
    eml_net *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        (void)train_loss(both[i], n, labels);
        assert_int_equal(eml_net_backward(both[i], n, NULL), EML_OK);
    }
    double dout = 0, dgrad = 0;
    for (size_t i = 0; i < (size_t)n * k; i++)
        dout = fmax(dout, fabs(eml_net_output(a)[i] - eml_net_output(b)[i]));
    for (size_t i = 0; i < eml_net_param_count(a); i++)
        dgrad = fmax(dgrad, fabs(eml_net_grads(a)[i] - eml_net_grads(b)[i]));
    printf("net %zu: max |fast - ref| output %g, gradient %g\n", t, dout,
           dgrad);
    assert_true(dout < 1e-5);
    assert_true(dgrad < 1e-4);
    eml_net_free(a);
    eml_net_free(b);
}

#endif
