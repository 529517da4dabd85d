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
static eml_net *inference_net(eml_kernels_kind kind, int n)
{
    eml_netcfg *cfg = NULL;
    eml_net *train = make_net(qnet, kind, n, &cfg);
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
        cmocka_unit_test(test_bf16_gemm),
        cmocka_unit_test(test_int8_net),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
