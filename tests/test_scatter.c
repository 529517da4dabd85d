/*
 * test_scatter.c - the fixed scattering features (scatter.h) and the
 * [scattering] layer: channel counts, what the transform must do
 * (constant images have no wavelet energy, an edge lights the wavelets
 * across it, small shifts barely move the features, group normalisation),
 * the FFT path against a direct periodic convolution, cfg and shape
 * errors, and that training on cached features evaluates exactly like the
 * full network.
 */
#include <math.h>

#define PI 3.14159265358979323846
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"
#include "enclaveml/kernels.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/scatter.h"
#include "enclaveml/train.h"

static eml_scatter *make(int h, int w, int J, int L, int groups)
{
    eml_scatter *s = NULL;
    assert_int_equal(eml_scatter_new(h, w, J, L, groups, &s), EML_OK);
    return s;
}

static float *features(const eml_scatter *s, const float *img)
{
    float *out = calloc(eml_scatter_out_size(s), sizeof(float));
    void *ws = malloc(eml_scatter_scratch_size(s));
    assert_non_null(out);
    assert_non_null(ws);
    eml_scatter_forward(s, img, out, ws);
    free(ws);
    return out;
}

static void test_channels(void **state)
{
    (void)state;
    assert_int_equal(eml_scatter_channels(2, 8), 81);
    assert_int_equal(eml_scatter_channels(1, 8), 9);
    assert_int_equal(eml_scatter_channels(3, 4), 1 + 12 + 16 * 3);
    eml_scatter *s = make(28, 28, 2, 8, 27);
    assert_int_equal(eml_scatter_out_size(s), 81 * 7 * 7);
    eml_scatter_free(s);
    eml_scatter *bad = NULL;
    assert_int_not_equal(eml_scatter_new(30, 28, 2, 8, 0, &bad), EML_OK);
    assert_int_not_equal(eml_scatter_new(28, 28, 4, 8, 0, &bad), EML_OK);
    assert_int_not_equal(eml_scatter_new(28, 28, 2, 8, 10, &bad), EML_OK);
    assert_null(bad);
}

/* A constant image: the low-pass keeps it, every (zero-mean) wavelet
 * gives nothing. */
static void test_constant(void **state)
{
    (void)state;
    eml_scatter *s = make(28, 28, 2, 8, 0);
    float img[784];
    for (int i = 0; i < 784; i++) img[i] = 0.625f;
    float *f = features(s, img);
    for (int k = 0; k < 49; k++) assert_float_equal(f[k], 0.625f, 1e-4);
    for (size_t k = 49; k < eml_scatter_out_size(s); k++)
        assert_true(fabsf(f[k]) < 1e-4f);
    free(f);
    eml_scatter_free(s);
}

/* A vertical edge: the most energy in the wavelets that oscillate across
 * it (angle 0), none in those along it (angle L/2), symmetric in between. */
static void test_edge_orientation(void **state)
{
    (void)state;
    eml_scatter *s = make(28, 28, 2, 8, 0);
    float img[784];
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) img[y * 28 + x] = x < 14 ? 0.0f : 1.0f;
    float *f = features(s, img);
    for (int j = 0; j < 2; j++) {
        double e[8];
        for (int t = 0; t < 8; t++) {
            e[t] = 0;
            for (int k = 0; k < 49; k++) e[t] += f[(1 + j * 8 + t) * 49 + k];
        }
        for (int t = 1; t < 8; t++) assert_true(e[0] > e[t]);
        assert_true(e[4] < 1e-3 * e[0]);
        for (int t = 1; t < 4; t++) assert_float_equal(e[t], e[8 - t], 1e-3 * e[0]);
    }
    free(f);
    eml_scatter_free(s);
}

/* The first-order response through the FFTs equals a direct periodic
 * convolution with the wavelet built in the spatial domain. */
static void test_fft_against_direct(void **state)
{
    (void)state;
    /* 12 x 12 with J = 1: padded to 16, one scale, 4 angles. */
    eml_scatter *s = make(12, 12, 1, 4, 0);
    eml_rng r;
    eml_rng_seed(&r, 5);
    float img[144];
    for (int i = 0; i < 144; i++) img[i] = eml_rng_uniform(&r);
    float *f = features(s, img);
    /* Rebuild: the padded image, the wavelet (sigma 0.8, xi 3pi/4, slant
     * 1, angle t pi/4), |conv|, low-pass sigma 1.6 at the output points. */
    int n = 16, pad = 2;
    double xp[16][16];
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            int sy = y - pad, sx = x - pad;
            if (sy < 0) sy = -sy - 1;
            if (sy >= 12) sy = 23 - sy;
            if (sx < 0) sx = -sx - 1;
            if (sx >= 12) sx = 23 - sx;
            xp[y][x] = img[sy * 12 + sx];
        }
    for (int t = 0; t < 4; t++) {
        double th = PI * t / 4, ct = cos(th), st = sin(th);
        double gr[16][16], gi[16][16], env[16][16], sr = 0, si = 0, se = 0;
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++) {
                gr[y][x] = gi[y][x] = env[y][x] = 0;
                for (int py = -1; py <= 1; py++)
                    for (int px = -1; px <= 1; px++) {
                        double u = (x < 8 ? x : x - 16) + 16 * px;
                        double v = (y < 8 ? y : y - 16) + 16 * py;
                        double a = ct * u + st * v, b = -st * u + ct * v;
                        double e = exp(-(a * a + b * b) / (2 * 0.64));
                        gr[y][x] += e * cos(0.75 * PI * a);
                        gi[y][x] += e * sin(0.75 * PI * a);
                        env[y][x] += e;
                    }
                sr += gr[y][x];
                si += gi[y][x];
                se += env[y][x];
            }
        double norm = 2 * PI * 0.64;
        double u1[16][16];
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++) {
                double ar = 0, ai = 0;
                for (int dy = 0; dy < n; dy++)
                    for (int dx = 0; dx < n; dx++) {
                        double wr = (gr[dy][dx] - sr / se * env[dy][dx]) / norm;
                        double wi = (gi[dy][dx] - si / se * env[dy][dx]) / norm;
                        double v = xp[(y - dy + n) % n][(x - dx + n) % n];
                        ar += wr * v;
                        ai += wi * v;
                    }
                u1[y][x] = sqrt(ar * ar + ai * ai);
            }
        int R = 5;
        double g[11], gs = 0;
        for (int k = -R; k <= R; k++) gs += g[k + R] = exp(-k * k / (2 * 2.56));
        for (int oy = 0; oy < 6; oy++)
            for (int ox = 0; ox < 6; ox++) {
                int cy = pad + oy * 2, cx = pad + ox * 2;
                double acc = 0;
                for (int a = -R; a <= R; a++)
                    for (int b = -R; b <= R; b++)
                        acc += g[a + R] * g[b + R] / (gs * gs) *
                               u1[(cy + a + n) % n][(cx + b + n) % n];
                assert_float_equal(f[(1 + t) * 36 + oy * 6 + ox], acc,
                                   1e-4 + 1e-3 * fabs(acc));
            }
    }
    free(f);
    eml_scatter_free(s);
}

/* A one-pixel shift moves the (subsampled, low-passed) features little
 * compared with their size; group normalisation gives each group mean 0
 * and variance 1. */
static void test_shift_and_groups(void **state)
{
    (void)state;
    eml_scatter *s = make(28, 28, 2, 8, 0);
    float a[784], b[784];
    eml_rng r;
    eml_rng_seed(&r, 9);
    memset(a, 0, sizeof(a));
    for (int y = 6; y < 22; y++)
        for (int x = 8; x < 20; x++) a[y * 28 + x] = 0.5f + 0.5f * eml_rng_uniform(&r);
    memset(b, 0, sizeof(b));
    for (int y = 0; y < 28; y++)
        for (int x = 1; x < 28; x++) b[y * 28 + x] = a[y * 28 + x - 1];
    float *fa = features(s, a), *fb = features(s, b);
    double d = 0, m = 0;
    for (size_t k = 0; k < eml_scatter_out_size(s); k++) {
        d += (fa[k] - fb[k]) * (fa[k] - fb[k]);
        m += fa[k] * fa[k];
    }
    assert_true(d < 0.1 * m);
    free(fa);
    free(fb);
    eml_scatter_free(s);

    s = make(28, 28, 2, 8, 27);
    float *g = features(s, a);
    int unit = 0;
    for (int grp = 0; grp < 27; grp++) {
        double mean = 0, var = 0;
        for (int k = 0; k < 147; k++) mean += g[grp * 147 + k];
        mean /= 147;
        for (int k = 0; k < 147; k++)
            var += (g[grp * 147 + k] - mean) * (g[grp * 147 + k] - mean);
        assert_float_equal(mean, 0, 1e-4);
        /* 1, or less for a group of tiny variance (the 1e-5 under the
         * square root keeps noise from being blown up) */
        assert_true(var / 147 <= 1.001);
        unit += var / 147 > 0.99;
    }
    assert_true(unit >= 1); /* the low-pass group's variance is large */
    free(g);
    eml_scatter_free(s);
}

static eml_status parse_net(const char *text, eml_netcfg **cfg, eml_net **net,
                            eml_err *err)
{
    *net = NULL;
    memset(err, 0, sizeof(*err));
    eml_status st = eml_cfg_parse(text, strlen(text), "s.cfg", cfg, err);
    if (st != EML_OK) return st;
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 16,
                      .seed = 1};
    st = eml_net_new(*cfg, &o, net, err);
    if (st != EML_OK) eml_cfg_free(*cfg);
    return st;
}

static void test_cfg_errors(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_err err = {0};
    eml_status st = parse_net("[net]\nheight=8\nwidth=8\nchannels=1\n"
                              "[connected]\noutput=4\n[scattering]\n"
                              "[softmax]\n",
                              &cfg, &net, &err);
    assert_int_not_equal(st, EML_OK);
    assert_non_null(strstr(eml_err_msg(&err, st), "first layer"));
    st = parse_net("[net]\nheight=8\nwidth=8\nchannels=1\n"
                   "[scattering]\ngroups=4\n[softmax]\n",
                   &cfg, &net, &err);
    assert_int_not_equal(st, EML_OK);
    assert_non_null(strstr(eml_err_msg(&err, st), "divide"));
    st = parse_net("[net]\nheight=10\nwidth=8\nchannels=1\n"
                   "[scattering]\n[connected]\noutput=2\n[softmax]\n",
                   &cfg, &net, &err);
    assert_int_equal(st, EML_ERR_SHAPE);
    st = parse_net("[net]\nheight=8\nwidth=8\nchannels=3\n"
                   "[scattering]\n[connected]\noutput=2\n[softmax]\n",
                   &cfg, &net, &err);
    assert_int_equal(st, EML_ERR_SHAPE);
    st = parse_net("[net]\nheight=8\nwidth=8\nchannels=1\n"
                   "[scattering]\nscales=1\nangles=4\ngroups=5\n"
                   "[connected]\noutput=2\n[softmax]\n",
                   &cfg, &net, &err);
    assert_int_equal(st, EML_OK);
    assert_int_equal(eml_net_fixed_layers(net), 1);
    assert_int_equal(eml_net_param_count(net), 5 * 16 * 2 + 2);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* Training runs on features cached once per image; evaluating the trained
 * net through the whole network (eml_evaluate, no cache) gives the same
 * loss and accuracy, for plain and DP training. */
static void test_cached_training(void **state)
{
    (void)state;
    enum { N = 96, T = 40 };
    static uint8_t img[N * 64], lab[N], timg[T * 64], tlab[T];
    eml_rng r;
    eml_rng_seed(&r, 3);
    for (int i = 0; i < N + T; i++) {
        uint8_t *p = i < N ? img + i * 64 : timg + (i - N) * 64;
        int label = (int)eml_rng_below(&r, 2);
        for (int k = 0; k < 64; k++) {
            int x = k % 8, y = k / 8;
            int stripe = label ? (x / 2) % 2 : (y / 2) % 2;
            p[k] = (uint8_t)(stripe * 200 + eml_rng_below(&r, 40));
        }
        if (i < N) lab[i] = (uint8_t)label;
        else tlab[i - N] = (uint8_t)label;
    }
    for (int dp = 0; dp < 2; dp++) {
        eml_netcfg *cfg = NULL;
        eml_net *net = NULL;
        eml_err err = {0};
        assert_int_equal(parse_net("[net]\nheight=8\nwidth=8\nchannels=1\n"
                                   "batch=16\nlearning_rate=0.2\n"
                                   "momentum=0.5\n"
                                   "[scattering]\nscales=1\nangles=4\n"
                                   "groups=5\n[connected]\noutput=2\n"
                                   "[softmax]\n",
                                   &cfg, &net, &err),
                         EML_OK);
        eml_dataset tr = {N, 64, img, lab}, te = {T, 64, timg, tlab};
        eml_train_opts o = eml_train_opts_default(cfg);
        o.run.epochs = 3;
        o.run.dp.enabled = dp;
        o.run.dp.clip = 1;
        o.run.dp.noise = 0.5;
        o.run.dp.delta = 1e-5;
        o.run.dp.insecure_seed = 1;
        eml_train_result res;
        eml_status st = eml_train(net, cfg, &tr, &te, &o, &res, &err);
        if (st != EML_OK) fail_msg("%s", eml_err_msg(&err, st));
        double loss, acc;
        assert_int_equal(eml_evaluate(net, &te, &loss, &acc, &err), EML_OK);
        assert_float_equal(acc, res.test_accuracy, 1e-12);
        assert_float_equal(loss, res.test_loss, 1e-5 * (1 + loss));
        if (!dp) assert_true(acc > 0.9);
        eml_net_free(net);
        eml_cfg_free(cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_constant),
        cmocka_unit_test(test_edge_orientation),
        cmocka_unit_test(test_fft_against_direct),
        cmocka_unit_test(test_shift_and_groups),
        cmocka_unit_test(test_cfg_errors),
        cmocka_unit_test(test_cached_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
