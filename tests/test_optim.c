/*
 * test_optim.c - the optimisers of src/nn/optim.c against values worked
 * out by hand: SGD with momentum and weight decay (Darknet's update) and
 * Adam with bias correction, three steps each on a 6-parameter net whose
 * parameters and gradients the test sets; the optimiser state it exposes
 * for mirroring; and the learning-rate policies of eml_lr_at (constant,
 * steps, cosine) at chosen iterations.  The expected numbers are literals
 * (computed in double from the formula quoted next to them), so a change
 * in the update rule fails here.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/train.h"

#define N_PARAMS 6

/* Parameters and gradient SUMS the optimiser tests start from: a 2x2
 * weight (out, in) then a bias of 2. */
static const float W0[N_PARAMS] = {1.0f, -2.0f, 0.5f, 3.0f, 0.25f, -1.0f};
static const float G[N_PARAMS] = {2.0f, 4.0f, -6.0f, 0.0f, 1.0f, -3.0f};

static eml_netcfg *parse(const char *text)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st = eml_cfg_parse(text, strlen(text), "optim.cfg", &cfg, &err);
    if (st != EML_OK) fail_msg("cfg: %s", eml_err_msg(&err, st));
    return cfg;
}

/* A 2 -> 2 connected layer (4 weights, 2 biases) with the [net] keys given,
 * its parameters set to W0 and its gradient buffer to G. */
static eml_net *make_net(const char *net_keys, eml_netcfg **cfg_out)
{
    char text[512];
    snprintf(text, sizeof(text),
             "[net]\nheight=1\nwidth=1\nchannels=2\n%s"
             "[connected]\noutput=2\nactivation=linear\n[softmax]\n",
             net_keys);
    eml_netcfg *cfg = parse(text);
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1,
                      .seed = 1};
    eml_net *net = NULL;
    eml_err err = {0};
    eml_status st = eml_net_new(cfg, &o, &net, &err);
    if (st != EML_OK) fail_msg("net: %s", eml_err_msg(&err, st));
    assert_int_equal(eml_net_param_count(net), N_PARAMS);
    /* The layout the expected values assume: weight at 0, bias at 4. */
    assert_int_equal(eml_net_tensor_count(net), 2);
    const eml_net_tensor *tw = eml_net_tensor_get(net, 0);
    const eml_net_tensor *tb = eml_net_tensor_get(net, 1);
    assert_true(tw->is_weight && tw->offset == 0 && tw->count == 4);
    assert_true(!tb->is_weight && tb->offset == 4 && tb->count == 2);
    memcpy(eml_net_params(net), W0, sizeof(W0));
    memcpy(eml_net_grads(net), G, sizeof(G));
    *cfg_out = cfg;
    return net;
}

static void expect_params(const float *got, const double *want, int step,
                          const char *what)
{
    double maxd = 0;
    for (int i = 0; i < N_PARAMS; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > maxd) maxd = d;
        if (d > 1e-5 * fmax(1.0, fabs(want[i])))
            fail_msg("%s step %d: param %d is %.9g, expected %.9g "
                     "(diff %.3g)",
                     what, step, i, (double)got[i], want[i], d);
    }
    printf("%s step %d: max diff %.3g\n", what, step, maxd);
}

/* ==== SGD with momentum and weight decay ==== */

/* Darknet's update, with the gradient sum divided by n and decay only on
 * weights (dec_i = 1 for i < 4, 0 for the biases):
 *   g_i = G_i / n + dec_i * decay * w_i
 *   m_i = momentum * m_i - lr * g_i
 *   w_i = w_i + m_i
 * momentum 0.9, decay 0.1, lr 0.1, n 2.  Step 1, w_0: g = 2/2 + 0.1 * 1 =
 * 1.1, m = -0.11, w = 0.89; bias w_4: g = 0.5, m = -0.05, w = 0.2. */
static const double SGD_W[3][N_PARAMS] = {
    {0.89, -2.18, 0.795, 2.97, 0.2, -0.85},
    {0.6821, -2.5202, 1.35255, 2.9133, 0.105, -0.565},
    {0.388169, -3.001178, 2.1408195, 2.833137, -0.0305, -0.1585},
};
static const double SGD_M3[N_PARAMS] = {-0.293931, -0.480978, 0.7882695,
                                        -0.080163, -0.1355,   0.4065};

static void test_sgd_momentum_decay(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net = make_net("momentum=0.9\ndecay=0.1\n", &cfg);
    eml_optim *o = NULL;
    assert_int_equal(eml_optim_new(cfg, net, &o), EML_OK);
    for (int s = 0; s < 3; s++) {
        eml_optim_step(o, 0.1f, 2.0f);
        expect_params(eml_net_params(net), SGD_W[s], s + 1, "sgd");
    }
    /* The state a mirror saves: the velocity, no second moment, t = 3. */
    float *m = NULL, *v = NULL;
    size_t n = 0;
    long *t = NULL;
    eml_optim_state(o, &m, &v, &n, &t);
    assert_int_equal(n, N_PARAMS);
    assert_null(v);
    assert_int_equal(*t, 3);
    expect_params(m, SGD_M3, 3, "sgd velocity");
    /* The gradient buffer is read, never changed. */
    assert_memory_equal(eml_net_grads(net), G, sizeof(G));
    eml_optim_free(o);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* Without momentum or decay one step is w - lr * G / n; n <= 0 counts as 1
 * and a fractional n (DP-SGD's expected batch) divides as it is. */
static void test_sgd_plain_and_n(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net = make_net("momentum=0\ndecay=0\n", &cfg);
    eml_optim *o = NULL;
    assert_int_equal(eml_optim_new(cfg, net, &o), EML_OK);
    eml_optim_step(o, 0.5f, 0.0f); /* n = 0 -> 1: w - 0.5 * G */
    double want[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++) want[i] = W0[i] - 0.5 * G[i];
    expect_params(eml_net_params(net), want, 1, "sgd n=0");
    eml_optim_step(o, 0.5f, 2.5f); /* - 0.5 * G / 2.5 = - 0.2 G */
    for (int i = 0; i < N_PARAMS; i++) want[i] -= 0.2 * G[i];
    expect_params(eml_net_params(net), want, 2, "sgd n=2.5");
    eml_optim_free(o);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* ==== Adam ==== */

/* With decay folded into the gradient like SGD's:
 *   g_i = G_i / n + dec_i * decay * w_i
 *   m_i = b1 m_i + (1 - b1) g_i,   v_i = b2 v_i + (1 - b2) g_i^2
 *   w_i -= lr * (m_i / (1 - b1^t)) / (sqrt(v_i / (1 - b2^t)) + eps)
 * b1 0.9, b2 0.99, eps 0.1 (large, so that it shows), decay 0.1, lr 0.01,
 * n 2.  At t = 1 the bias correction makes m^ = g, v^ = g^2, so the step is
 * lr * g / (|g| + eps): w_0 = 1 - 0.01 * 1.1 / 1.2 = 0.990833333. */
static const double ADAM_W[3][N_PARAMS] = {
    {0.990833333, -2.00947368, 0.509672131, 2.9925, 0.241666667, -0.990625},
    {0.981667169, -2.01894712, 0.519344134, 2.98500281, 0.233333333,
     -0.98125},
    {0.972501631, -2.02842022, 0.529015959, 2.97750874, 0.225, -0.971875},
};

static void test_adam_bias_correction(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net =
        make_net("adam=1\nB1=0.9\nB2=0.99\neps=0.1\ndecay=0.1\n", &cfg);
    assert_int_equal(cfg->optimizer, EML_OPT_ADAM);
    eml_optim *o = NULL;
    assert_int_equal(eml_optim_new(cfg, net, &o), EML_OK);
    for (int s = 0; s < 3; s++) {
        eml_optim_step(o, 0.01f, 2.0f);
        expect_params(eml_net_params(net), ADAM_W[s], s + 1, "adam");
    }
    float *m = NULL, *v = NULL;
    size_t n = 0;
    long *t = NULL;
    eml_optim_state(o, &m, &v, &n, &t);
    assert_non_null(v);
    assert_int_equal(*t, 3);
    /* The bias of index 5 has a constant g = -1.5 (no decay), so
     * m = -1.5 (1 - 0.9^3) and v = 2.25 (1 - 0.99^3). */
    assert_float_equal(m[5], -1.5 * (1 - 0.729), 1e-6);
    assert_float_equal(v[5], 2.25 * (1 - 0.970299), 1e-6);
    eml_optim_free(o);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* Adam's defaults (B1 0.9, B2 0.999, eps 1e-8): the first step moves every
 * parameter with a non-zero gradient by lr * sign(g) (to within eps). */
static void test_adam_defaults_first_step(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net = make_net("adam=1\n", &cfg);
    assert_float_equal(cfg->adam_b1, 0.9, 1e-7);
    assert_float_equal(cfg->adam_b2, 0.999, 1e-7);
    assert_float_equal(cfg->adam_eps, 1e-8, 1e-12);
    eml_optim *o = NULL;
    assert_int_equal(eml_optim_new(cfg, net, &o), EML_OK);
    eml_optim_step(o, 0.01f, 2.0f);
    double want[N_PARAMS];
    for (int i = 0; i < N_PARAMS; i++)
        want[i] = W0[i] - (G[i] > 0 ? 0.01 : G[i] < 0 ? -0.01 : 0.0);
    expect_params(eml_net_params(net), want, 1, "adam defaults");
    eml_optim_free(o);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* ==== learning-rate policies ==== */

static void test_lr_constant(void **state)
{
    (void)state;
    eml_netcfg *cfg = parse("[net]\nheight=1\nwidth=1\nchannels=1\n"
                            "learning_rate=0.05\n[connected]\noutput=2\n"
                            "[softmax]\n");
    assert_int_equal(cfg->policy, EML_LR_CONSTANT);
    long ts[] = {0, 1, 99, 100000};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++)
        assert_float_equal(eml_lr_at(cfg, 0.05f, ts[i], 100), 0.05, 1e-9);
    eml_cfg_free(cfg);
}

/* lr = base * product of scales[i] over steps[i] <= t:
 * 0.1 before 10, 0.1 * 0.5 = 0.05 from 10, 0.05 * 0.1 = 0.005 from 20. */
static void test_lr_steps(void **state)
{
    (void)state;
    eml_netcfg *cfg = parse("[net]\nheight=1\nwidth=1\nchannels=1\n"
                            "learning_rate=0.1\npolicy=steps\n"
                            "steps=10,20\nscales=0.5,0.1\n"
                            "[connected]\noutput=2\n[softmax]\n");
    assert_int_equal(cfg->policy, EML_LR_STEPS);
    static const struct {
        long t;
        double lr;
    } cases[] = {{0, 0.1},    {9, 0.1},     {10, 0.05},
                 {19, 0.05},  {20, 0.005},  {1000, 0.005}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float lr = eml_lr_at(cfg, 0.1f, cases[i].t, 100);
        if (fabs(lr - cases[i].lr) > 1e-7)
            fail_msg("steps: lr at %ld is %.9g, expected %.9g", cases[i].t,
                     (double)lr, cases[i].lr);
    }
    eml_cfg_free(cfg);
}

/* lr = lr_min + (base - lr_min) (1 + cos(pi t / (total - 1))) / 2, t past
 * the end clamped; base 0.1, lr_min 0.01, total 11: t = 5 is the middle,
 * (0.1 + 0.01) / 2 = 0.055; t = 2: 0.01 + 0.045 (1 + cos(0.2 pi)) =
 * 0.0914057647. */
static void test_lr_cosine(void **state)
{
    (void)state;
    eml_netcfg *cfg = parse("[net]\nheight=1\nwidth=1\nchannels=1\n"
                            "learning_rate=0.1\npolicy=cosine\nlr_min=0.01\n"
                            "[connected]\noutput=2\n[softmax]\n");
    assert_int_equal(cfg->policy, EML_LR_COSINE);
    static const struct {
        long t;
        double lr;
    } cases[] = {{0, 0.1}, {2, 0.0914057647}, {5, 0.055}, {10, 0.01},
                 {20, 0.01}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float lr = eml_lr_at(cfg, 0.1f, cases[i].t, 11);
        if (fabs(lr - cases[i].lr) > 1e-7)
            fail_msg("cosine: lr at %ld is %.9g, expected %.9g", cases[i].t,
                     (double)lr, cases[i].lr);
    }
    /* A run of one iteration keeps the base rate. */
    assert_float_equal(eml_lr_at(cfg, 0.1f, 0, 1), 0.1, 1e-9);
    eml_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_momentum_decay),
        cmocka_unit_test(test_sgd_plain_and_n),
        cmocka_unit_test(test_adam_bias_correction),
        cmocka_unit_test(test_adam_defaults_first_step),
        cmocka_unit_test(test_lr_constant),
        cmocka_unit_test(test_lr_steps),
        cmocka_unit_test(test_lr_cosine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
