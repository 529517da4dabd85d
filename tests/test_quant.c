/*
 * test_quant.c - int8 inference: the s8 GEMM of both kernel tables
 * against exact integer sums (every transpose), then a network with batch
 * norm, pooling and connected layers calibrated and switched to int8:
 * close to its fp32 outputs, the same on reference and fast kernels, and
 * the refusals (a training net, a layer calibration never saw); bf16
 * products against the float sums of the rounded operands, and a bf16
 * network close to its fp32 outputs.
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

#include "enclaveml/kernels.h"
#include "net_util.h"

static void test_s8_gemm(void **state)
{
    (void)state;
    enum { M = 37, N = 29, K = 300 };
    int8_t *a = malloc(M * K), *b = malloc(K * N);
    int32_t *want = malloc(M * N * sizeof(int32_t));
    int32_t *got = malloc(M * N * sizeof(int32_t));
    eml_rng r;
    eml_rng_seed(&r, 3);
    for (int i = 0; i < M * K; i++)
        a[i] = (int8_t)((int)(eml_rng_uniform(&r) * 255) - 127);
    for (int i = 0; i < K * N; i++)
        b[i] = (int8_t)((int)(eml_rng_uniform(&r) * 255) - 127);
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        const eml_kernels *k = eml_kernels_get((eml_kernels_kind)kind);
        eml_kstate *ks = NULL;
        assert_int_equal(k->state_new(&ks), EML_OK);
        eml_gemm_dispatch d = {.fn = k->gemm, .ctx = ks};
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                /* the same logical product from transposed storage */
                int8_t *as = malloc(M * K), *bs = malloc(K * N);
                for (int i = 0; i < M; i++)
                    for (int q = 0; q < K; q++)
                        as[ta ? q * M + i : i * K + q] = a[i * K + q];
                for (int q = 0; q < K; q++)
                    for (int j = 0; j < N; j++)
                        bs[tb ? j * K + q : q * N + j] = b[q * N + j];
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        int64_t sum = 0;
                        for (int q = 0; q < K; q++)
                            sum += (int64_t)a[i * K + q] * b[q * N + j];
                        want[i * N + j] = (int32_t)sum;
                    }
                eml_gemm_desc g = eml_gemm_desc_f32(
                    ta, tb, M, N, K, 1.0f, NULL, ta ? M : K, NULL,
                    tb ? K : N, 0.0f, NULL, N);
                g.dtype = EML_DTYPE_S8;
                g.A = as;
                g.B = bs;
                g.C = got;
                memset(got, 0x55, M * N * sizeof(int32_t));
                assert_int_equal(eml_gemm(&d, &g), EML_OK);
                assert_memory_equal(got, want, M * N * sizeof(int32_t));
                free(as);
                free(bs);
            }
        printf("%s: s8 GEMM %dx%dx%d exact, every transpose\n", k->name, M,
               N, K);
        k->state_free(ks);
    }
    free(a);
    free(b);
    free(want);
    free(got);
}

/* bf16: both tables against the float product of the rounded operands
 * (sums in float: close, not bit-equal). */
/* The int8 convolution (NHWC) of both tables against exact sums, on
 * shapes with padding, strides, 1x1 and 7x7 windows, with and without the
 * residual sum, for each activation: the same integers, but for rounding
 * ties the float arithmetic may break either way (at most 1 apart, and
 * rarely). */
static void test_qconv(void **state)
{
    (void)state;
    static const struct {
        int batch, c, h, w, size, stride, pad, out_c;
    } shapes[] = {
        {2, 3, 9, 7, 3, 1, 1, 5},   {3, 16, 8, 8, 1, 2, 0, 32},
        {2, 64, 10, 10, 3, 2, 1, 48}, {1, 3, 20, 20, 7, 2, 3, 16},
        {2, 1, 28, 28, 3, 1, 1, 8},
    };
    eml_rng r;
    eml_rng_seed(&r, 11);
    for (size_t t = 0; t < sizeof(shapes) / sizeof(shapes[0]); t++)
        for (int variant = 0; variant < 4; variant++) {
            eml_qconv q;
            memset(&q, 0, sizeof(q));
            q.batch = shapes[t].batch;
            q.out_c = shapes[t].out_c;
            q.s = (eml_conv_shape){shapes[t].c, shapes[t].h, shapes[t].w,
                                   shapes[t].size, shapes[t].stride,
                                   shapes[t].pad, 0, 0, 0};
            q.s.out_h = (q.s.h + 2 * q.s.pad - q.s.size) / q.s.stride + 1;
            q.s.out_w = (q.s.w + 2 * q.s.pad - q.s.size) / q.s.stride + 1;
            q.act = variant == 0 ? EML_ACT_LINEAR
                    : variant == 1 ? EML_ACT_RELU
                                   : EML_ACT_LEAKY;
            q.sum_scale = variant == 3 ? 0.37f : 0.0f;
            q.key = 100 + t * 4 + (size_t)variant;
            size_t nin = (size_t)q.batch * q.s.h * q.s.w * q.s.c;
            size_t nw = (size_t)q.out_c * q.s.c * q.s.size * q.s.size;
            size_t nout = (size_t)q.batch * q.s.out_h * q.s.out_w * q.out_c;
            int8_t *x = malloc(nin), *w = malloc(nw);
            int8_t *old = malloc(nout), *out[2] = {malloc(nout),
                                                   malloc(nout)};
            float *scale = malloc(q.out_c * sizeof(float));
            float *bias = malloc(q.out_c * sizeof(float));
            for (size_t i = 0; i < nin; i++)
                x[i] = (int8_t)((int)eml_rng_below(&r, 256) - 128);
            for (size_t i = 0; i < nw; i++)
                w[i] = (int8_t)((int)eml_rng_below(&r, 255) - 127);
            for (size_t i = 0; i < nout; i++)
                old[i] = (int8_t)((int)eml_rng_below(&r, 256) - 128);
            double fan = (double)q.s.c * q.s.size * q.s.size;
            for (int j = 0; j < q.out_c; j++) {
                /* outputs of a few tens, some saturating */
                scale[j] = (float)(0.5 / sqrt(fan) / 30.0 *
                                   (0.5 + eml_rng_uniform(&r)));
                bias[j] = (eml_rng_uniform(&r) - 0.5f) * 2000.0f;
            }
            q.scale = scale;
            q.bias = bias;
            for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
                const eml_kernels *k =
                    eml_kernels_get((eml_kernels_kind)kind);
                eml_kstate *ks = NULL;
                assert_int_equal(k->state_new(&ks), EML_OK);
                memcpy(out[kind], old, nout);
                /* twice: the second call runs the cached primitive */
                for (int again = 0; again < 2; again++) {
                    memcpy(out[kind], old, nout);
                    assert_int_equal(k->qconv(ks, &q, x, w, out[kind]),
                                     EML_OK);
                }
                k->state_free(ks);
            }
            /* the exact value of a few outputs, from the definition */
            for (int probe = 0; probe < 50; probe++) {
                size_t o = eml_rng_below(&r, nout);
                int j = (int)(o % (size_t)q.out_c);
                size_t pix = o / (size_t)q.out_c;
                int ox = (int)(pix % (size_t)q.s.out_w);
                int oy = (int)(pix / (size_t)q.s.out_w % (size_t)q.s.out_h);
                int b = (int)(pix / ((size_t)q.s.out_w * q.s.out_h));
                int64_t acc = 0;
                for (int ci = 0; ci < q.s.c; ci++)
                    for (int ky = 0; ky < q.s.size; ky++)
                        for (int kx = 0; kx < q.s.size; kx++) {
                            int iy = oy * q.s.stride - q.s.pad + ky;
                            int ix = ox * q.s.stride - q.s.pad + kx;
                            if (iy < 0 || iy >= q.s.h || ix < 0 ||
                                ix >= q.s.w)
                                continue;
                            acc += (int64_t)w[((size_t)(j * q.s.c + ci) *
                                                   q.s.size + ky) *
                                                  q.s.size + kx] *
                                   x[(((size_t)b * q.s.h + iy) * q.s.w +
                                      ix) * q.s.c + ci];
                        }
                double v = ((double)acc + bias[j]) * scale[j];
                v += (double)q.sum_scale * old[o];
                if (q.act == EML_ACT_RELU && v < 0) v = 0;
                if (q.act == EML_ACT_LEAKY && v < 0) v *= 0.1;
                v = v > 127 ? 127 : v < -128 ? -128 : v;
                if (fabs(v - out[0][o]) > 0.5 + 1e-3)
                    fail_msg("shape %zu variant %d: ref %d, exact %.3f", t,
                             variant, out[0][o], v);
            }
            size_t differ = 0;
            for (size_t i = 0; i < nout; i++) {
                int d = out[0][i] - out[1][i];
                if (d < -1 || d > 1)
                    fail_msg("shape %zu variant %d: ref %d, fast %d at %zu",
                             t, variant, out[0][i], out[1][i], i);
                differ += d != 0;
            }
            assert_true(differ * 100 <= nout);
            free(x), free(w), free(old), free(out[0]), free(out[1]);
            free(scale), free(bias);
        }
}

static void test_bf16_gemm(void **state)
{
    (void)state;
    enum { M = 33, N = 47, K = 129 };
    uint16_t *a = malloc(M * K * 2), *b = malloc(K * N * 2);
    float *got = malloc(M * N * sizeof(float));
    double *want = malloc(M * N * sizeof(double));
    eml_rng r;
    eml_rng_seed(&r, 4);
    for (int i = 0; i < M * K; i++) {
        float x = 2.0f * eml_rng_uniform(&r) - 1.0f;
        uint32_t u;
        memcpy(&u, &x, 4);
        a[i] = (uint16_t)(u >> 16);
    }
    for (int i = 0; i < K * N; i++) {
        float x = 2.0f * eml_rng_uniform(&r) - 1.0f;
        uint32_t u;
        memcpy(&u, &x, 4);
        b[i] = (uint16_t)(u >> 16);
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0;
            for (int q = 0; q < K; q++) {
                uint32_t ua = (uint32_t)a[i * K + q] << 16;
                uint32_t ub = (uint32_t)b[q * N + j] << 16;
                float fa, fb;
                memcpy(&fa, &ua, 4);
                memcpy(&fb, &ub, 4);
                sum += (double)fa * fb;
            }
            want[i * N + j] = sum;
        }
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        const eml_kernels *k = eml_kernels_get((eml_kernels_kind)kind);
        eml_kstate *ks = NULL;
        assert_int_equal(k->state_new(&ks), EML_OK);
        eml_gemm_dispatch d = {.fn = k->gemm, .ctx = ks};
        eml_gemm_desc g = eml_gemm_desc_f32(0, 0, M, N, K, 1.0f, NULL, K,
                                            NULL, N, 0.0f, got, N);
        g.dtype = EML_DTYPE_BF16;
        g.A = a;
        g.B = b;
        assert_int_equal(eml_gemm(&d, &g), EML_OK);
        double most = 0;
        for (int i = 0; i < M * N; i++)
            most = fmax(most, fabs(got[i] - want[i]));
        printf("%s: bf16 GEMM %dx%dx%d, max |error| %g\n", k->name, M, N,
               K, most);
        assert_true(most < 1e-4);
        k->state_free(ks);
    }
    free(a);
    free(b);
    free(got);
    free(want);
}

static const char qnet[] =
    "[net]\nheight=12\nwidth=12\nchannels=2\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
    "activation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=relu\n"
    "[convolutional]\nfilters=6\nsize=3\nstride=2\npad=1\n"
    "activation=relu\n"
    "[convolutional]\nfilters=6\nsize=1\nactivation=leaky\n"
    "[connected]\noutput=16\nactivation=tanh\n"
    "[connected]\noutput=5\nactivation=linear\n[softmax]\n";

/* An inference net of qnet with its parameters from a training net whose
 * batch norm has seen a few batches. */
static eml_net *inference_net_of(const char *text, eml_kernels_kind kind,
                                 int n)
{
    eml_netcfg *cfg = NULL;
    eml_net *train = make_net(text, kind, n, &cfg);
    random_input(train, n, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(eml_net_forward(train, n, 1), EML_OK);
    eml_net_opts o = {.kernels = kind, .max_batch = n, .inference = 1};
    eml_net *net = NULL;
    eml_err err = {0};
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    memcpy(eml_net_params(net), eml_net_params(train),
           eml_net_param_count(net) * sizeof(float));
    eml_net_params_changed(net);
    eml_net_free(train);
    eml_cfg_free(cfg);
    return net;
}

static eml_net *inference_net(eml_kernels_kind kind, int n)
{
    return inference_net_of(qnet, kind, n);
}

/* Residual blocks: a linear conv fused into the shortcut after it, a
 * shortcut whose conv is not linear (on its own), both again across a
 * change of shape (Darknet's rule), a dropout, then the layers after the
 * int8 plan (average pooling onwards). */
static const char rnet[] =
    "[net]\nheight=12\nwidth=12\nchannels=3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
    "activation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
    "activation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
    "activation=linear\n"
    "[shortcut]\nfrom=-3\nactivation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=1\n"
    "activation=relu\n"
    "[shortcut]\nfrom=-2\nactivation=linear\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[dropout]\nprobability=0.3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\nstride=2\n"
    "pad=1\nactivation=linear\n"
    "[shortcut]\nfrom=-2\nactivation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=16\nsize=3\npad=1\n"
    "activation=relu\n"
    "[shortcut]\nfrom=-5\nactivation=linear\n"
    "[avgpool]\n"
    "[connected]\noutput=5\nactivation=linear\n[softmax]\n";

static void test_int8_plan(void **state)
{
    (void)state;
    const int n = 16;
    float out[2][16 * 5], fp32[16 * 5];
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        eml_net *net = inference_net_of(rnet, (eml_kernels_kind)kind, n);
        eml_err err = {0};
        random_input(net, n, 2);
        eml_net_calibrate(net, 1);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        eml_net_calibrate(net, 0);
        random_input(net, n, 3);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        memcpy(fp32, eml_net_output(net), sizeof(fp32));
        assert_int_equal(eml_net_int8_layers(net), 0);
        assert_int_equal(eml_net_set_precision(net, EML_PREC_INT8, &err),
                         EML_OK);
        assert_int_equal(eml_net_int8_layers(net), 12); /* to avgpool */
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        memcpy(out[kind], eml_net_output(net), sizeof(fp32));
        double most = 0;
        int same = 0;
        for (int b = 0; b < n; b++) {
            int a1 = 0, a2 = 0;
            for (int j = 0; j < 5; j++) {
                most = fmax(most,
                            fabs(out[kind][b * 5 + j] - fp32[b * 5 + j]));
                if (fp32[b * 5 + j] > fp32[b * 5 + a1]) a1 = j;
                if (out[kind][b * 5 + j] > out[kind][b * 5 + a2]) a2 = j;
            }
            same += a1 == a2;
        }
        printf("%s: int8 plan against fp32, max |probability difference| "
               "%g, %d of %d predictions the same\n",
               kind ? "fast" : "ref", most, same, n);
        assert_true(most < 0.05);
        assert_true(same >= n - 2);
        assert_int_equal(eml_net_set_precision(net, EML_PREC_FP32, &err),
                         EML_OK);
        assert_int_equal(eml_net_int8_layers(net), 0);
        eml_net_free(net);
    }
    double d = 0;
    for (int i = 0; i < n * 5; i++) d = fmax(d, fabs(out[0][i] - out[1][i]));
    printf("int8 plan, ref against fast: max |difference| %g\n", d);
    assert_true(d < 0.01);
}

static void test_int8_net(void **state)
{
    (void)state;
    const int n = 16;
    float out[2][16 * 5], fp32[16 * 5];
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        eml_net *net = inference_net((eml_kernels_kind)kind, n);
        eml_err err = {0};
        /* never calibrated: refused */
        assert_int_equal(eml_net_set_precision(net, EML_PREC_INT8, &err),
                         EML_ERR_INVALID);
        assert_non_null(strstr(err.msg, "no calibrated input range"));
        random_input(net, n, 2); /* calibration images */
        eml_net_calibrate(net, 1);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        eml_net_calibrate(net, 0);
        random_input(net, n, 3); /* other images */
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        memcpy(fp32, eml_net_output(net), sizeof(fp32));
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_net_set_precision(net, EML_PREC_INT8, &err),
                         EML_OK);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        memcpy(out[kind], eml_net_output(net), sizeof(fp32));
        double most = 0;
        int same = 0;
        for (int b = 0; b < n; b++) {
            int a1 = 0, a2 = 0;
            for (int j = 0; j < 5; j++) {
                most = fmax(most, fabs(out[kind][b * 5 + j] - fp32[b * 5 + j]));
                if (fp32[b * 5 + j] > fp32[b * 5 + a1]) a1 = j;
                if (out[kind][b * 5 + j] > out[kind][b * 5 + a2]) a2 = j;
            }
            same += a1 == a2;
        }
        printf("%s: int8 against fp32, max |probability difference| %g, "
               "%d of %d predictions the same\n",
               kind ? "fast" : "ref", most, same, n);
        assert_true(most < 0.05);
        assert_true(same >= n - 1);
        /* back to fp32: the fp32 outputs again */
        assert_int_equal(eml_net_set_precision(net, EML_PREC_FP32, &err),
                         EML_OK);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        assert_memory_equal(eml_net_output(net), fp32, sizeof(fp32));
        eml_net_free(net);
    }
    double d = 0;
    for (int i = 0; i < n * 5; i++) d = fmax(d, fabs(out[0][i] - out[1][i]));
    printf("int8, ref against fast: max |difference| %g\n", d);
    assert_true(d < 1e-5);
    /* bf16: no calibration, close to fp32 */
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        eml_net *net = inference_net((eml_kernels_kind)kind, n);
        eml_err err = {0};
        random_input(net, n, 3);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        memcpy(fp32, eml_net_output(net), sizeof(fp32));
        assert_int_equal(eml_net_set_precision(net, EML_PREC_BF16, &err),
                         EML_OK);
        assert_int_equal(eml_net_forward(net, n, 0), EML_OK);
        double most = 0;
        for (int i = 0; i < n * 5; i++)
            most = fmax(most, fabs(eml_net_output(net)[i] - fp32[i]));
        printf("%s: bf16 against fp32, max |probability difference| %g\n",
               kind ? "fast" : "ref", most);
        assert_true(most < 0.02);
        eml_net_free(net);
    }
    /* a training net is refused */
    eml_net *t = make_net(qnet, EML_KERNELS_FAST, 2, NULL);
    eml_err err = {0};
    assert_int_equal(eml_net_set_precision(t, EML_PREC_INT8, &err),
                     EML_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "inference only"));
    eml_net_free(t);
    eml_precision p;
    assert_int_equal(eml_precision_parse("int8", &p), EML_OK);
    assert_int_equal(p, EML_PREC_INT8);
    assert_int_not_equal(eml_precision_parse("int4", &p), EML_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_s8_gemm),
        cmocka_unit_test(test_qconv),
        cmocka_unit_test(test_bf16_gemm),
        cmocka_unit_test(test_int8_net),
        cmocka_unit_test(test_int8_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
