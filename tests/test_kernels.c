/*
 * test_kernels.c - the kernel tables.
 *
 * Three kinds of check, as the house style asks for every op:
 *   - the reference ops are right: gradients against central finite
 *     differences, im2col/col2im against the header's formula and against
 *     each other (adjoint), gemm against a hand-computed example;
 *   - every fast op agrees with its reference on random data, forward and
 *     backward, on the shapes the Fashion-MNIST networks use and on odd
 *     ones; each comparison prints "op: max |fast-ref| = ...";
 *   - the GEMM dispatch point counts and refuses bad arguments, the table
 *     names parse strictly, and bad arguments give errors, not crashes.
 * Buffers are allocated at their exact sizes so the sanitizer build catches
 * a kernel writing past an end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "enclaveml/kernels.h"

/* ==== helpers ==== */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static void rng_seed(uint64_t s)
{
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

static uint64_t rng_next(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float frand(float lo, float hi)
{
    double u = (double)(rng_next() >> 11) / 9007199254740992.0;
    return (float)(lo + (hi - lo) * u);
}

static void fill(float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = frand(lo, hi);
}

static float *fbuf(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

static float *fcopy(const float *x, size_t n)
{
    float *p = fbuf(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Prints the largest |got - want| and fails unless every element is within
 * atol + rtol * |want| (a NaN anywhere fails). */
static void expect_close(const char *what, const float *got,
                         const float *want, size_t n, double atol,
                         double rtol)
{
    double max_d = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d) || d > max_d)
            max_d = isnan(d) ? INFINITY : d;
        if (!(d <= atol + rtol * fabs((double)want[i]))) {
            if (bad++ == 0)
                first_bad = i;
        }
    }
    printf("%s: max |fast-ref| = %g\n", what, max_d);
    if (bad)
        fail_msg("%s: %zu of %zu elements out of tolerance; first at %zu: "
                 "got %.9g want %.9g",
                 what, bad, n, first_bad, (double)got[first_bad],
                 (double)want[first_bad]);
}

/* The same for reference-only checks (analytic vs numeric). */
static void expect_close_d(const char *what, const double *got,
                           const double *want, size_t n, double tol)
{
    double max_d = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (isnan(d) || d > max_d)
            max_d = isnan(d) ? INFINITY : d;
        if (!(d <= tol))
            fail_msg("%s: element %zu: analytic %.9g numeric %.9g", what, i,
                     got[i], want[i]);
    }
    printf("%s: max |analytic-numeric| = %g\n", what, max_d);
}

static const eml_kernels *REF, *FAST;

static eml_kstate *state_of(const eml_kernels *k)
{
    eml_kstate *ks = NULL;
    assert_int_equal(k->state_new(&ks), EML_OK);
    assert_non_null(ks);
    return ks;
}

static const char *const act_names[EML_ACT_COUNT] = {
    "linear", "relu", "leaky", "tanh", "logistic", "relie", "ramp", "plse",
    "elu", "loggy", "stair", "hardtan", "lhtan", "selu"};

/* ==== gemm: hand-computed example ==== */

/* A = [1 2 3; 4 5 6] (2x3), B = [7 8; 9 10; 11 12] (3x2), AB = [58 64;
 * 139 154].  Every matrix is stored with one padding column holding a
 * sentinel that must neither be read into the result nor be written. */
static void gemm_hand(const eml_kernels *k, eml_kstate *ks)
{
    const float Sn = 1e30f;
    const float A[2 * 4] = {1, 2, 3, Sn, 4, 5, 6, Sn};           /* lda 4 */
    const float At[3 * 3] = {1, 4, Sn, 2, 5, Sn, 3, 6, Sn};      /* lda 3 */
    const float B[3 * 3] = {7, 8, Sn, 9, 10, Sn, 11, 12, Sn};    /* ldb 3 */
    const float Bt[2 * 4] = {7, 9, 11, Sn, 8, 10, 12, Sn};       /* ldb 4 */
    eml_gemm_dispatch d = {.fn = k->gemm, .ctx = ks};
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            const float *a = ta ? At : A;
            const float *b = tb ? Bt : B;
            int lda = ta ? 3 : 4, ldb = tb ? 4 : 3;

            /* alpha = 2, beta = 0.5 over C0 = [1 2; 3 4] */
            float C[2 * 3] = {1, 2, -7, 3, 4, -7}; /* ldc 3 */
            assert_int_equal(eml_gemm_f32(&d, ta, tb, 2, 2, 3, 2.0f, a, lda, b,
                                      ldb, 0.5f, C, 3),
                             EML_OK);
            const float want[6] = {116.5f, 129.0f, -7, 279.5f, 310.0f, -7};
            for (int i = 0; i < 6; i++)
                if (C[i] != want[i])
                    fail_msg("%s gemm ta=%d tb=%d beta=0.5: C[%d] = %g, "
                             "want %g",
                             k->name, ta, tb, i, (double)C[i],
                             (double)want[i]);

            /* beta = 0: C is not read, so NaN garbage is overwritten */
            float Cn[2 * 3] = {NAN, NAN, -7, NAN, NAN, -7};
            assert_int_equal(eml_gemm_f32(&d, ta, tb, 2, 2, 3, 1.0f, a, lda, b,
                                      ldb, 0.0f, Cn, 3),
                             EML_OK);
            const float want0[6] = {58, 64, -7, 139, 154, -7};
            for (int i = 0; i < 6; i++)
                if (Cn[i] != want0[i])
                    fail_msg("%s gemm ta=%d tb=%d beta=0: C[%d] = %g, "
                             "want %g",
                             k->name, ta, tb, i, (double)Cn[i],
                             (double)want0[i]);
        }
    }
    assert_int_equal(d.calls, 8);
    assert_true(d.flops == 8 * 2.0 * 2 * 2 * 3);

    /* K = 0: C = beta * C */
    float C[2] = {2, 4};
    assert_int_equal(
        eml_gemm_f32(&d, 0, 0, 1, 2, 0, 1.0f, NULL, 1, NULL, 2, 0.5f, C, 2),
        EML_OK);
    assert_true(C[0] == 1.0f && C[1] == 2.0f);
}

static void test_gemm_hand(void **state)
{
    (void)state;
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        const eml_kernels *k = eml_kernels_get((eml_kernels_kind)kind);
        eml_kstate *ks = state_of(k);
        gemm_hand(k, ks);
        k->state_free(ks);
    }
}

/* ==== reference gradients against finite differences ==== */

static void test_act_ref_values(void **state)
{
    (void)state;
    float x[5] = {-1.0f, 0.0f, 2.0f, -3.0f, 0.5f};
    float y[5];
    memcpy(y, x, sizeof(x));
    assert_int_equal(REF->act_forward(NULL, y, 5, EML_ACT_RELU), EML_OK);
    assert_true(y[0] == 0 && y[1] == 0 && y[2] == 2 && y[3] == 0 &&
                y[4] == 0.5f);
    memcpy(y, x, sizeof(x));
    assert_int_equal(REF->act_forward(NULL, y, 5, EML_ACT_LEAKY), EML_OK);
    assert_true(fabsf(y[0] + 0.1f) < 1e-7f && y[2] == 2 &&
                fabsf(y[3] + 0.3f) < 1e-6f);
    memcpy(y, x, sizeof(x));
    assert_int_equal(REF->act_forward(NULL, y, 5, EML_ACT_LOGISTIC), EML_OK);
    assert_true(y[1] == 0.5f && fabsf(y[0] - 0.26894142f) < 1e-6f);
    memcpy(y, x, sizeof(x));
    assert_int_equal(REF->act_forward(NULL, y, 5, EML_ACT_TANH), EML_OK);
    assert_true(y[1] == 0.0f && fabsf(y[2] - 0.96402758f) < 1e-6f);
    memcpy(y, x, sizeof(x));
    assert_int_equal(REF->act_forward(NULL, y, 5, EML_ACT_LINEAR), EML_OK);
    assert_memory_equal(x, y, sizeof(x));
}

/* d f(x)/dx through act_backward(delta = 1, y = f(x)) against
 * (f(x+h) - f(x-h)) / 2h, on points at least 0.05 away from the kinks
 * (0 and +-1; plse's at +-4 are outside).  Darknet's stair is a
 * staircase whose gradient is a convention (0 on the steps' edges, 1
 * between): not a derivative, so not checked here. */
static void test_act_ref_grad(void **state)
{
    (void)state;
    enum { N = 200 };
    const float h = 1e-2f;
    float x[N], y[N], g[N], xp[N], xm[N];
    double an[N], nu[N];
    rng_seed(1);
    for (int i = 0; i < N; i++) {
        float v;
        do
            v = frand(-3.0f, 3.0f);
        while (fabsf(v) < 0.05f || fabsf(fabsf(v) - 1.0f) < 0.05f);
        x[i] = v;
    }
    for (int a = 0; a < EML_ACT_COUNT; a++) {
        if (a == EML_ACT_STAIR) continue;
        memcpy(y, x, sizeof(x));
        assert_int_equal(REF->act_forward(NULL, y, N, (eml_act)a), EML_OK);
        for (int i = 0; i < N; i++) {
            g[i] = 1.0f;
            xp[i] = x[i] + h;
            xm[i] = x[i] - h;
        }
        assert_int_equal(REF->act_backward(NULL, g, y, N, (eml_act)a),
                         EML_OK);
        assert_int_equal(REF->act_forward(NULL, xp, N, (eml_act)a), EML_OK);
        assert_int_equal(REF->act_forward(NULL, xm, N, (eml_act)a), EML_OK);
        for (int i = 0; i < N; i++) {
            an[i] = g[i];
            /* divide by the step actually taken in float */
            nu[i] = ((double)xp[i] - (double)xm[i]) /
                    ((double)(x[i] + h) - (double)(x[i] - h));
        }
        char what[64];
        snprintf(what, sizeof(what), "ref act_backward %s", act_names[a]);
        expect_close_d(what, an, nu, N, 2e-3);
    }
}

/* sum_o w[o] * pool(x)[o], accumulated in double. */
static double pool_loss(int is_max, const float *x, const float *w,
                        const eml_pool_shape *s, float *out, void *ws)
{
    size_t n_out = (size_t)s->batch * s->c * s->out_h * s->out_w;
    if (is_max)
        assert_int_equal(REF->maxpool_forward(NULL, out, ws, x, s), EML_OK);
    else
        assert_int_equal(REF->avgpool_forward(NULL, out, x, s), EML_OK);
    double L = 0.0;
    for (size_t o = 0; o < n_out; o++)
        L += (double)w[o] * (double)out[o];
    return L;
}

/* Gradient of pool_loss from *pool_backward(dout = w) against central
 * differences on every input.  Max pooling gets inputs that are a shuffled
 * ladder of distinct values 0.1 apart, so a step of 0.01 never changes
 * which tap wins. */
static void pool_grad_check(int is_max, const eml_pool_shape *s,
                            const char *what)
{
    size_t n_in = (size_t)s->batch * s->c * s->in_h * s->in_w;
    size_t n_out = (size_t)s->batch * s->c * s->out_h * s->out_w;
    float *x = fbuf(n_in), *din = fbuf(n_in), *w = fbuf(n_out);
    float *out = fbuf(n_out);
    double *an = calloc(n_in, sizeof(double));
    double *nu = calloc(n_in, sizeof(double));
    assert_true(an != NULL && nu != NULL);
    void *ws = malloc(REF->maxpool_ws_bytes(s));
    assert_non_null(ws);

    for (size_t i = 0; i < n_in; i++)
        x[i] = 0.1f * (float)i - 0.05f * (float)n_in;
    for (size_t i = n_in - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)(rng_next() % (i + 1));
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
    fill(w, n_out, -1.0f, 1.0f);

    (void)pool_loss(is_max, x, w, s, out, ws);
    if (is_max)
        assert_int_equal(REF->maxpool_backward(NULL, din, w, ws, s), EML_OK);
    else
        assert_int_equal(REF->avgpool_backward(NULL, din, w, s), EML_OK);

    const float h = 1e-2f;
    for (size_t i = 0; i < n_in; i++) {
        float x0 = x[i];
        x[i] = x0 + h;
        double step = (double)x[i];
        double Lp = pool_loss(is_max, x, w, s, out, ws);
        x[i] = x0 - h;
        step -= (double)x[i];
        double Lm = pool_loss(is_max, x, w, s, out, ws);
        x[i] = x0;
        nu[i] = (Lp - Lm) / step;
        an[i] = din[i];
    }
    expect_close_d(what, an, nu, n_in, 1e-3);
    free(x), free(din), free(w), free(out), free(an), free(nu), free(ws);
}

static void test_maxpool_ref_grad(void **state)
{
    (void)state;
    rng_seed(2);
    const eml_pool_shape shapes[] = {
        /* size 2 stride 2 */
        {.batch = 2, .c = 3, .in_h = 6, .in_w = 6, .out_h = 3, .out_w = 3,
         .size_h = 2, .size_w = 2, .stride = 2},
        /* size 2 stride 1, window past the bottom/right edge (out = in) */
        {.batch = 1, .c = 2, .in_h = 5, .in_w = 5, .out_h = 5, .out_w = 5,
         .size_h = 2, .size_w = 2, .stride = 1},
        /* size 3 stride 2 pad 1 */
        {.batch = 2, .c = 1, .in_h = 7, .in_w = 7, .out_h = 4, .out_w = 4,
         .size_h = 3, .size_w = 3, .stride = 2, .pad_t = 1, .pad_l = 1},
        /* non-square */
        {.batch = 1, .c = 2, .in_h = 5, .in_w = 7, .out_h = 4, .out_w = 3,
         .size_h = 2, .size_w = 3, .stride = 2, .pad_t = 1, .pad_l = 0},
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "ref maxpool_backward shape %zu", i);
        pool_grad_check(1, &shapes[i], what);
    }

    /* Hand example: 3x3 ramp, size 2 stride 1, out 3x3. */
    const eml_pool_shape s = {.batch = 1, .c = 1, .in_h = 3, .in_w = 3,
                              .out_h = 3, .out_w = 3, .size_h = 2,
                              .size_w = 2, .stride = 1};
    const float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float out[9];
    int32_t ws[9];
    assert_int_equal(REF->maxpool_ws_bytes(&s), sizeof(ws));
    assert_int_equal(REF->maxpool_forward(NULL, out, ws, in, &s), EML_OK);
    const float want[9] = {5, 6, 6, 8, 9, 9, 8, 9, 9};
    assert_memory_equal(out, want, sizeof(want));

    /* Ties go to the first maximum in row-major window order. */
    const eml_pool_shape t = {.batch = 1, .c = 1, .in_h = 2, .in_w = 4,
                              .out_h = 1, .out_w = 2, .size_h = 2,
                              .size_w = 2, .stride = 2};
    const float tin[8] = {0, 0, 1, 3, 0, 0, 3, 3};
    float tout[2], tdin[8];
    const float tdout[2] = {1.0f, 2.0f};
    int32_t tws[2];
    assert_int_equal(REF->maxpool_forward(NULL, tout, tws, tin, &t), EML_OK);
    assert_int_equal(REF->maxpool_backward(NULL, tdin, tdout, tws, &t),
                     EML_OK);
    const float twant[8] = {1, 0, 0, 2, 0, 0, 0, 0};
    assert_memory_equal(tdin, twant, sizeof(twant));
}

static void test_avgpool_ref_grad(void **state)
{
    (void)state;
    rng_seed(3);
    const eml_pool_shape shapes[] = {
        /* global: size = input, out 1x1 */
        {.batch = 2, .c = 3, .in_h = 5, .in_w = 5, .out_h = 1, .out_w = 1,
         .size_h = 5, .size_w = 5, .stride = 1},
        /* size 3 stride 2 pad 1: edge windows average fewer taps */
        {.batch = 1, .c = 2, .in_h = 5, .in_w = 5, .out_h = 3, .out_w = 3,
         .size_h = 3, .size_w = 3, .stride = 2, .pad_t = 1, .pad_l = 1},
        /* size 2 stride 1, window past the edge */
        {.batch = 1, .c = 1, .in_h = 4, .in_w = 3, .out_h = 4, .out_w = 3,
         .size_h = 2, .size_w = 2, .stride = 1},
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "ref avgpool_backward shape %zu", i);
        pool_grad_check(0, &shapes[i], what);
    }

    /* Valid taps only: [1 2; 3 4], size 2 stride 1, out 2x2. */
    const eml_pool_shape s = {.batch = 1, .c = 1, .in_h = 2, .in_w = 2,
                              .out_h = 2, .out_w = 2, .size_h = 2,
                              .size_w = 2, .stride = 1};
    const float in[4] = {1, 2, 3, 4};
    float out[4];
    assert_int_equal(REF->avgpool_forward(NULL, out, in, &s), EML_OK);
    const float want[4] = {2.5f, 3.0f, 3.5f, 4.0f};
    assert_memory_equal(out, want, sizeof(want));
}

/* Softmax + cross-entropy: d/dlogits of -sum_b log p[b][label_b] is
 * p - onehot.  Checked against central differences of the loss computed
 * through softmax_forward. */
static double ce_loss(const float *logits, const int *label, int batch,
                      int n, float *p)
{
    assert_int_equal(REF->softmax_forward(NULL, p, logits, batch, n),
                     EML_OK);
    double L = 0.0;
    for (int b = 0; b < batch; b++)
        L -= log((double)p[b * n + label[b]]);
    return L;
}

static void test_softmax_ref_ce_grad(void **state)
{
    (void)state;
    enum { B = 3, N = 7 };
    float x[B * N], p[B * N], tmp[B * N];
    double an[B * N], nu[B * N];
    const int label[B] = {0, 4, 6};
    rng_seed(4);
    fill(x, B * N, -2.0f, 2.0f);
    (void)ce_loss(x, label, B, N, p);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++)
            an[b * N + i] = (double)p[b * N + i] - (i == label[b] ? 1.0 : 0.0);
    const float h = 1e-2f;
    for (int i = 0; i < B * N; i++) {
        float x0 = x[i];
        x[i] = x0 + h;
        double step = x[i];
        double Lp = ce_loss(x, label, B, N, tmp);
        x[i] = x0 - h;
        step -= x[i];
        double Lm = ce_loss(x, label, B, N, tmp);
        x[i] = x0;
        nu[i] = (Lp - Lm) / step;
    }
    expect_close_d("ref softmax+cross-entropy gradient (p - onehot)", an, nu,
                   B * N, 1e-3);

    /* Large logits: the row maximum is subtracted, nothing overflows. */
    const float big[4] = {1000.0f, 1001.0f, -1000.0f, -1001.0f};
    float pb[4];
    assert_int_equal(REF->softmax_forward(NULL, pb, big, 2, 2), EML_OK);
    assert_true(fabsf(pb[0] - 0.26894142f) < 1e-6f);
    assert_true(fabsf(pb[1] - 0.73105858f) < 1e-6f);
    assert_true(fabsf(pb[2] - 0.73105858f) < 1e-6f);
    assert_true(fabsf(pb[0] + pb[1] - 1.0f) < 1e-6f);
}

/* ==== im2col / col2im ==== */

static const eml_conv_shape conv_shapes[] = {
    /* c=1 28x28 size 3 pad 1 stride 1 */
    {.c = 1, .h = 28, .w = 28, .size = 3, .stride = 1, .pad = 1, .out_h = 28,
     .out_w = 28},
    /* c=32 14x14 size 3 pad 1 */
    {.c = 32, .h = 14, .w = 14, .size = 3, .stride = 1, .pad = 1, .out_h = 14,
     .out_w = 14},
    /* c=1 28x28 size 8 stride 2 pad 2 -> 13x13 */
    {.c = 1, .h = 28, .w = 28, .size = 8, .stride = 2, .pad = 2, .out_h = 13,
     .out_w = 13},
    /* small odd ones: stride 2 no pad, 1x1, kernel wider than the input */
    {.c = 3, .h = 5, .w = 7, .size = 3, .stride = 2, .pad = 0, .out_h = 2,
     .out_w = 3},
    {.c = 4, .h = 3, .w = 3, .size = 1, .stride = 1, .pad = 0, .out_h = 3,
     .out_w = 3},
    {.c = 2, .h = 4, .w = 3, .size = 5, .stride = 1, .pad = 3, .out_h = 6,
     .out_w = 5},
    {.c = 5, .h = 9, .w = 9, .size = 3, .stride = 3, .pad = 1, .out_h = 3,
     .out_w = 3},
    /* stride 1 with out_w == w (the fast path's one-copy case): wide
     * kernel, kernel wider than the input, fewer output rows than input */
    {.c = 2, .h = 6, .w = 6, .size = 5, .stride = 1, .pad = 2, .out_h = 6,
     .out_w = 6},
    {.c = 3, .h = 2, .w = 2, .size = 7, .stride = 1, .pad = 3, .out_h = 2,
     .out_w = 2},
    {.c = 2, .h = 5, .w = 4, .size = 3, .stride = 1, .pad = 1, .out_h = 3,
     .out_w = 4},
    /* big enough for the fast path to split the work among threads */
    {.c = 64, .h = 28, .w = 28, .size = 3, .stride = 1, .pad = 1,
     .out_h = 28, .out_w = 28},
    {.c = 32, .h = 64, .w = 64, .size = 3, .stride = 2, .pad = 1,
     .out_h = 32, .out_w = 32},
};
#define N_CONV_SHAPES (sizeof(conv_shapes) / sizeof(conv_shapes[0]))

static size_t conv_in_n(const eml_conv_shape *s)
{
    return (size_t)s->c * s->h * s->w;
}

static size_t conv_col_n(const eml_conv_shape *s)
{
    return (size_t)s->c * s->size * s->size * s->out_h * s->out_w;
}

/* The header's formula, element by element. */
static float im2col_at(const float *in, const eml_conv_shape *s, int ci,
                       int ky, int kx, int oy, int ox)
{
    int iy = oy * s->stride - s->pad + ky;
    int ix = ox * s->stride - s->pad + kx;
    if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w)
        return 0.0f;
    return in[((size_t)ci * s->h + iy) * s->w + ix];
}

static void test_im2col_formula_and_adjoint(void **state)
{
    (void)state;
    rng_seed(5);
    for (int kind = 0; kind < EML_KERNELS_COUNT; kind++) {
        const eml_kernels *k = eml_kernels_get((eml_kernels_kind)kind);
        for (size_t si = 0; si < N_CONV_SHAPES; si++) {
            const eml_conv_shape *s = &conv_shapes[si];
            size_t n_in = conv_in_n(s), n_col = conv_col_n(s);
            float *x = fbuf(n_in), *col = fbuf(n_col), *c = fbuf(n_col);
            float *dx = fbuf(n_in);
            fill(x, n_in, -1.0f, 1.0f);
            fill(c, n_col, -1.0f, 1.0f);
            for (size_t i = 0; i < n_col; i++)
                col[i] = NAN; /* every entry must be written */
            k->im2col(col, x, s);
            size_t cols = (size_t)s->out_h * s->out_w;
            for (int ci = 0; ci < s->c; ci++)
                for (int ky = 0; ky < s->size; ky++)
                    for (int kx = 0; kx < s->size; kx++)
                        for (int oy = 0; oy < s->out_h; oy++)
                            for (int ox = 0; ox < s->out_w; ox++) {
                                size_t r = ((size_t)ci * s->size + ky) *
                                               s->size +
                                           kx;
                                float got = col[r * cols + (size_t)oy *
                                                               s->out_w +
                                                ox];
                                float want =
                                    im2col_at(x, s, ci, ky, kx, oy, ox);
                                if (got != want)
                                    fail_msg("%s im2col shape %zu: row %zu "
                                             "col (%d,%d) = %g, want %g",
                                             k->name, si, r, oy, ox,
                                             (double)got, (double)want);
                            }

            /* <im2col(x), c> == <x, col2im(c)> */
            memset(dx, 0, n_in * sizeof(float));
            k->col2im(dx, c, s);
            double lhs = 0.0, rhs = 0.0, mag = 0.0;
            for (size_t i = 0; i < n_col; i++) {
                lhs += (double)col[i] * c[i];
                mag += fabs((double)col[i] * c[i]);
            }
            for (size_t i = 0; i < n_in; i++)
                rhs += (double)x[i] * dx[i];
            if (fabs(lhs - rhs) > 1e-5 * (1.0 + mag))
                fail_msg("%s col2im shape %zu is not the adjoint of im2col: "
                         "<im2col(x),c> = %.9g, <x,col2im(c)> = %.9g",
                         k->name, si, lhs, rhs);
            printf("%s im2col/col2im adjoint shape %zu: |lhs-rhs| = %g\n",
                   k->name, si, fabs(lhs - rhs));
            free(x), free(col), free(c), free(dx);
        }
    }
}

/* ==== fast against ref ==== */

static void gemm_compare(eml_kstate *fks, int ta, int tb, int M, int N,
                         int K, float alpha, float beta, int pad)
{
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb;
    size_t nc = (size_t)M * ldc;
    float *A = fbuf(na), *B = fbuf(nb), *C0 = fbuf(nc);
    fill(A, na, -1.0f, 1.0f);
    fill(B, nb, -1.0f, 1.0f);
    fill(C0, nc, -1.0f, 1.0f);
    float *Cr = fcopy(C0, nc), *Cf = fcopy(C0, nc);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++)
            if (i % (size_t)ldc < (size_t)N)
                Cf[i] = Cr[i] = NAN; /* must not be read */

    eml_gemm_dispatch dr = {.fn = REF->gemm, .ctx = NULL};
    eml_gemm_dispatch df = {.fn = FAST->gemm, .ctx = fks};
    assert_int_equal(eml_gemm_f32(&dr, ta, tb, M, N, K, alpha, A, lda, B, ldb,
                              beta, Cr, ldc),
                     EML_OK);
    assert_int_equal(eml_gemm_f32(&df, ta, tb, M, N, K, alpha, A, lda, B, ldb,
                              beta, Cf, ldc),
                     EML_OK);

    /* Sums of K products of magnitude <= 1 in different orders: scale the
     * tolerance by the largest entry. */
    double scale = 1.0;
    for (size_t i = 0; i < nc; i++)
        if (fabs((double)Cr[i]) > scale)
            scale = fabs((double)Cr[i]);
    char what[128];
    snprintf(what, sizeof(what), "gemm %c%c M=%d N=%d K=%d alpha=%g beta=%g",
             ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, (double)alpha,
             (double)beta);
    expect_close(what, Cf, Cr, nc, 1e-4 * scale, 0.0);

    if ((double)M * N * K >= 1e8) { /* informational: a warm second call */
        double t0 = now_s();
        assert_int_equal(eml_gemm_f32(&df, ta, tb, M, N, K, alpha, A, lda, B,
                                  ldb, 0.0f, Cf, ldc),
                         EML_OK);
        double t = now_s() - t0;
        printf("  fast gemm %c%c M=%d N=%d K=%d: %.1f GFLOP/s\n",
               ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K,
               t > 0 ? 2.0 * M * N * K / t * 1e-9 : 0.0);
    }
    free(A), free(B), free(C0), free(Cr), free(Cf);
}

static void test_gemm_fast_vs_ref(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    rng_seed(6);
    /* conv forward: weights (64, 288) x columns (288, 25088) */
    gemm_compare(fks, 0, 0, 64, 25088, 288, 1.0f, 0.0f, 0);
    /* conv weight gradient: delta (64, 25088) x columns^T, accumulated */
    gemm_compare(fks, 0, 1, 64, 288, 25088, 1.0f, 1.0f, 0);
    /* conv input gradient: weights^T (288, 64) x delta (64, 196) */
    gemm_compare(fks, 1, 0, 288, 196, 64, 1.0f, 0.0f, 0);
    /* connected forward/backward, odd batches */
    gemm_compare(fks, 0, 1, 128, 10, 3136, 1.0f, 0.0f, 0);
    gemm_compare(fks, 1, 0, 10, 3136, 128, 1.0f, 1.0f, 0);
    gemm_compare(fks, 0, 0, 37, 3136, 10, 1.0f, 0.0f, 0);
    gemm_compare(fks, 1, 1, 13, 17, 19, -1.5f, 0.5f, 3);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_compare(fks, ta, tb, 1, 1, 1, 1.0f, 0.0f, 0);
            gemm_compare(fks, ta, tb, 3, 37, 5, 0.75f, -2.0f, 2);
            gemm_compare(fks, ta, tb, 37, 3, 129, 1.0f, 0.0f, 1);
        }
    FAST->state_free(fks);
}

static void test_act_fast_vs_ref(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    const size_t sizes[] = {1, 3, 37, 128 * 10, (size_t)128 * 32 * 14 * 14};
    rng_seed(7);
    for (int a = 0; a < EML_ACT_COUNT; a++) {
        double max_f = 0.0, max_b = 0.0;
        for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
            size_t n = sizes[si];
            float *x = fbuf(n), *d = fbuf(n);
            fill(x, n, -4.0f, 4.0f);
            fill(d, n, -1.0f, 1.0f);
            float *yr = fcopy(x, n), *yf = fcopy(x, n);
            assert_int_equal(REF->act_forward(NULL, yr, n, (eml_act)a),
                             EML_OK);
            assert_int_equal(FAST->act_forward(fks, yf, n, (eml_act)a),
                             EML_OK);
            char what[96];
            snprintf(what, sizeof(what), "act_forward %s n=%zu", act_names[a],
                     n);
            expect_close(what, yf, yr, n, 1e-6, 1e-5);
            /* backward from the same y for both */
            float *dr = fcopy(d, n), *df = fcopy(d, n);
            assert_int_equal(REF->act_backward(NULL, dr, yr, n, (eml_act)a),
                             EML_OK);
            assert_int_equal(FAST->act_backward(fks, df, yr, n, (eml_act)a),
                             EML_OK);
            snprintf(what, sizeof(what), "act_backward %s n=%zu",
                     act_names[a], n);
            expect_close(what, df, dr, n, 1e-6, 1e-5);
            for (size_t i = 0; i < n; i++) {
                max_f = fmax(max_f, fabs((double)yf[i] - yr[i]));
                max_b = fmax(max_b, fabs((double)df[i] - dr[i]));
            }
            free(x), free(d), free(yr), free(yf), free(dr), free(df);
        }
        printf("act %s (all sizes): max |fast-ref| forward %g backward %g\n",
               act_names[a], max_f, max_b);
    }
    FAST->state_free(fks);
}

static const eml_pool_shape max_shapes[] = {
    /* size 2 stride 2: 28x28 -> 14x14 and 14x14 -> 7x7, batch 128 */
    {.batch = 128, .c = 32, .in_h = 28, .in_w = 28, .out_h = 14, .out_w = 14,
     .size_h = 2, .size_w = 2, .stride = 2},
    {.batch = 128, .c = 64, .in_h = 14, .in_w = 14, .out_h = 7, .out_w = 7,
     .size_h = 2, .size_w = 2, .stride = 2},
    {.batch = 1, .c = 1, .in_h = 28, .in_w = 28, .out_h = 14, .out_w = 14,
     .size_h = 2, .size_w = 2, .stride = 2},
    /* Darknet size 2 stride 1: padding 1 all at the bottom/right, out = in */
    {.batch = 3, .c = 16, .in_h = 14, .in_w = 14, .out_h = 14, .out_w = 14,
     .size_h = 2, .size_w = 2, .stride = 1},
    {.batch = 37, .c = 4, .in_h = 28, .in_w = 28, .out_h = 28, .out_w = 28,
     .size_h = 2, .size_w = 2, .stride = 1},
    /* odd input, stride 2, Darknet padding 1: 7x7 -> 4x4 */
    {.batch = 37, .c = 8, .in_h = 7, .in_w = 7, .out_h = 4, .out_w = 4,
     .size_h = 2, .size_w = 2, .stride = 2},
    /* size 3 stride 2 pad 1 */
    {.batch = 3, .c = 5, .in_h = 9, .in_w = 9, .out_h = 5, .out_w = 5,
     .size_h = 3, .size_w = 3, .stride = 2, .pad_t = 1, .pad_l = 1},
    /* negative right padding (window stops short): not a fast shape */
    {.batch = 3, .c = 4, .in_h = 29, .in_w = 29, .out_h = 14, .out_w = 14,
     .size_h = 2, .size_w = 2, .stride = 2},
};

static void test_maxpool_fast_vs_ref(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    rng_seed(8);
    for (size_t si = 0; si < sizeof(max_shapes) / sizeof(max_shapes[0]);
         si++) {
        const eml_pool_shape *s = &max_shapes[si];
        size_t n_in = (size_t)s->batch * s->c * s->in_h * s->in_w;
        size_t n_out = (size_t)s->batch * s->c * s->out_h * s->out_w;
        /* The fast table's max pooling is the reference's in parallel
         * (fast_pool.c): every shape, the same workspace. */
        size_t wsr_n = REF->maxpool_ws_bytes(s);
        size_t wsf_n = FAST->maxpool_ws_bytes(s);
        assert_true(wsr_n == n_out * sizeof(int32_t));
        assert_true(wsf_n > 0);
        void *wsr = malloc(wsr_n), *wsf = malloc(wsf_n); /* exact sizes */
        assert_true(wsr != NULL && wsf != NULL);
        float *x = fbuf(n_in), *dout = fbuf(n_out);
        float *yr = fbuf(n_out), *yf = fbuf(n_out);
        float *dr = fbuf(n_in), *df = fbuf(n_in);
        fill(x, n_in, -2.0f, 2.0f);
        fill(dout, n_out, -1.0f, 1.0f);
        for (size_t i = 0; i < n_in; i++)
            df[i] = NAN; /* backward overwrites din */

        assert_int_equal(REF->maxpool_forward(NULL, yr, wsr, x, s), EML_OK);
        assert_int_equal(FAST->maxpool_forward(fks, yf, wsf, x, s), EML_OK);
        char what[128];
        snprintf(what, sizeof(what),
                 "maxpool_forward b%d c%d %dx%d->%dx%d size %d stride %d "
                 "(ws %zu bytes)",
                 s->batch, s->c, s->in_h, s->in_w, s->out_h, s->out_w,
                 s->size_h, s->stride, wsf_n);
        expect_close(what, yf, yr, n_out, 0.0, 0.0);

        assert_int_equal(REF->maxpool_backward(NULL, dr, dout, wsr, s),
                         EML_OK);
        assert_int_equal(FAST->maxpool_backward(fks, df, dout, wsf, s),
                         EML_OK);
        snprintf(what, sizeof(what),
                 "maxpool_backward b%d c%d %dx%d->%dx%d size %d stride %d",
                 s->batch, s->c, s->in_h, s->in_w, s->out_h, s->out_w,
                 s->size_h, s->stride);
        expect_close(what, df, dr, n_in, 1e-6, 1e-6);

        /* Ties, as after a ReLU: both go to the first maximum of a window,
         * so the gradients match exactly. */
        for (size_t i = 0; i < n_in; i++)
            x[i] = 0.5f * (float)(rng_next() % 3);
        assert_int_equal(REF->maxpool_forward(NULL, yr, wsr, x, s), EML_OK);
        assert_int_equal(FAST->maxpool_forward(fks, yf, wsf, x, s), EML_OK);
        assert_int_equal(REF->maxpool_backward(NULL, dr, dout, wsr, s),
                         EML_OK);
        assert_int_equal(FAST->maxpool_backward(fks, df, dout, wsf, s),
                         EML_OK);
        snprintf(what, sizeof(what),
                 "maxpool_backward with ties b%d c%d %dx%d->%dx%d", s->batch,
                 s->c, s->in_h, s->in_w, s->out_h, s->out_w);
        expect_close(what, df, dr, n_in, 1e-6, 1e-6);
        free(wsr), free(wsf), free(x), free(dout), free(yr), free(yf);
        free(dr), free(df);
    }
    FAST->state_free(fks);
}

static const eml_pool_shape avg_shapes[] = {
    /* global average: size = input, out 1x1 (stride 1 or = size) */
    {.batch = 128, .c = 64, .in_h = 7, .in_w = 7, .out_h = 1, .out_w = 1,
     .size_h = 7, .size_w = 7, .stride = 1},
    {.batch = 37, .c = 10, .in_h = 7, .in_w = 7, .out_h = 1, .out_w = 1,
     .size_h = 7, .size_w = 7, .stride = 7},
    {.batch = 1, .c = 3, .in_h = 5, .in_w = 4, .out_h = 1, .out_w = 1,
     .size_h = 5, .size_w = 4, .stride = 1},
    {.batch = 3, .c = 8, .in_h = 28, .in_w = 28, .out_h = 14, .out_w = 14,
     .size_h = 2, .size_w = 2, .stride = 2},
    /* edge windows average fewer taps */
    {.batch = 3, .c = 2, .in_h = 5, .in_w = 5, .out_h = 3, .out_w = 3,
     .size_h = 3, .size_w = 3, .stride = 2, .pad_t = 1, .pad_l = 1},
    {.batch = 1, .c = 1, .in_h = 5, .in_w = 5, .out_h = 5, .out_w = 5,
     .size_h = 2, .size_w = 2, .stride = 1},
    /* not a fast shape */
    {.batch = 2, .c = 3, .in_h = 9, .in_w = 9, .out_h = 4, .out_w = 4,
     .size_h = 2, .size_w = 2, .stride = 2},
};

static void test_avgpool_fast_vs_ref(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    rng_seed(9);
    for (size_t si = 0; si < sizeof(avg_shapes) / sizeof(avg_shapes[0]);
         si++) {
        const eml_pool_shape *s = &avg_shapes[si];
        if (!FAST->pool_supported(s)) {
            float y[1];
            assert_int_equal(FAST->avgpool_forward(fks, y, y, s),
                             EML_ERR_UNSUPPORTED);
            printf("avgpool b%d c%d %dx%d->%dx%d: not a fast shape\n",
                   s->batch, s->c, s->in_h, s->in_w, s->out_h, s->out_w);
            continue;
        }
        size_t n_in = (size_t)s->batch * s->c * s->in_h * s->in_w;
        size_t n_out = (size_t)s->batch * s->c * s->out_h * s->out_w;
        float *x = fbuf(n_in), *dout = fbuf(n_out);
        float *yr = fbuf(n_out), *yf = fbuf(n_out);
        float *dr = fbuf(n_in), *df = fbuf(n_in);
        fill(x, n_in, -2.0f, 2.0f);
        fill(dout, n_out, -1.0f, 1.0f);
        for (size_t i = 0; i < n_in; i++)
            df[i] = NAN;
        assert_int_equal(REF->avgpool_forward(NULL, yr, x, s), EML_OK);
        assert_int_equal(FAST->avgpool_forward(fks, yf, x, s), EML_OK);
        char what[128];
        snprintf(what, sizeof(what),
                 "avgpool_forward b%d c%d %dx%d->%dx%d size %dx%d stride %d",
                 s->batch, s->c, s->in_h, s->in_w, s->out_h, s->out_w,
                 s->size_h, s->size_w, s->stride);
        expect_close(what, yf, yr, n_out, 1e-6, 1e-5);
        assert_int_equal(REF->avgpool_backward(NULL, dr, dout, s), EML_OK);
        assert_int_equal(FAST->avgpool_backward(fks, df, dout, s), EML_OK);
        snprintf(what, sizeof(what),
                 "avgpool_backward b%d c%d %dx%d->%dx%d size %dx%d stride %d",
                 s->batch, s->c, s->in_h, s->in_w, s->out_h, s->out_w,
                 s->size_h, s->size_w, s->stride);
        expect_close(what, df, dr, n_in, 1e-6, 1e-5);
        free(x), free(dout), free(yr), free(yf), free(dr), free(df);
    }
    FAST->state_free(fks);
}

static void test_softmax_fast_vs_ref(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    const int shapes[][2] = {{128, 10}, {1, 10}, {37, 1000}, {3, 1},
                             {3, 37}};
    rng_seed(10);
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int b = shapes[si][0], n = shapes[si][1];
        size_t m = (size_t)b * n;
        float *x = fbuf(m), *pr = fbuf(m), *pf = fbuf(m);
        fill(x, m, -10.0f, 10.0f);
        x[0] = 80.0f; /* exp(80) overflows float without the max shift */
        assert_int_equal(REF->softmax_forward(NULL, pr, x, b, n), EML_OK);
        assert_int_equal(FAST->softmax_forward(fks, pf, x, b, n), EML_OK);
        char what[64];
        snprintf(what, sizeof(what), "softmax_forward %dx%d", b, n);
        expect_close(what, pf, pr, m, 1e-6, 1e-5);
        free(x), free(pr), free(pf);
    }
    FAST->state_free(fks);
}

static void test_im2col_fast_vs_ref(void **state)
{
    (void)state;
    rng_seed(11);
    for (size_t si = 0; si < N_CONV_SHAPES; si++) {
        const eml_conv_shape *s = &conv_shapes[si];
        size_t n_in = conv_in_n(s), n_col = conv_col_n(s);
        float *x = fbuf(n_in), *cr = fbuf(n_col), *cf = fbuf(n_col);
        fill(x, n_in, -1.0f, 1.0f);
        for (size_t i = 0; i < n_col; i++)
            cf[i] = NAN;
        REF->im2col(cr, x, s);
        FAST->im2col(cf, x, s);
        char what[128];
        snprintf(what, sizeof(what),
                 "im2col c%d %dx%d size %d stride %d pad %d -> %dx%d", s->c,
                 s->h, s->w, s->size, s->stride, s->pad, s->out_h, s->out_w);
        expect_close(what, cf, cr, n_col, 0.0, 0.0); /* a copy: exact */

        /* col2im accumulates into din */
        float *g = fbuf(n_col), *dr = fbuf(n_in);
        fill(g, n_col, -1.0f, 1.0f);
        fill(dr, n_in, -1.0f, 1.0f);
        float *df = fcopy(dr, n_in);
        REF->col2im(dr, g, s);
        FAST->col2im(df, g, s);
        snprintf(what, sizeof(what),
                 "col2im c%d %dx%d size %d stride %d pad %d -> %dx%d", s->c,
                 s->h, s->w, s->size, s->stride, s->pad, s->out_h, s->out_w);
        expect_close(what, df, dr, n_in, 1e-6, 1e-6);
        free(x), free(cr), free(cf), free(g), free(dr), free(df);
    }

    /* The conv layers of a batch of 128: time the fast im2col. */
    const eml_conv_shape *s = &conv_shapes[1];
    size_t n_in = conv_in_n(s), n_col = conv_col_n(s);
    float *x = fbuf(n_in), *col = fbuf(n_col);
    fill(x, n_in, -1.0f, 1.0f);
    double t0 = now_s();
    for (int b = 0; b < 128; b++)
        FAST->im2col(col, x, s);
    double t1 = now_s();
    for (int b = 0; b < 128; b++)
        REF->im2col(col, x, s);
    double t2 = now_s();
    printf("im2col c32 14x14 size 3, 128 examples: fast %.2f ms, ref %.2f "
           "ms\n",
           1e3 * (t1 - t0), 1e3 * (t2 - t1));
    free(x), free(col);
}

/* Many shapes through one state: the primitive cache evicts and rebuilds
 * without mixing shapes up. */
static void test_fast_cache_churn(void **state)
{
    (void)state;
    eml_kstate *fks = state_of(FAST);
    rng_seed(12);
    for (int round = 0; round < 2; round++) {
        for (size_t n = 1; n <= 45; n++) {
            float x[45], yr[45], yf[45], d[45], dr[45], df[45];
            fill(x, n, -3.0f, 3.0f);
            fill(d, n, -1.0f, 1.0f);
            memcpy(yr, x, n * sizeof(float));
            memcpy(yf, x, n * sizeof(float));
            memcpy(dr, d, n * sizeof(float));
            memcpy(df, d, n * sizeof(float));
            eml_act a = (eml_act)(n % EML_ACT_COUNT);
            assert_int_equal(REF->act_forward(NULL, yr, n, a), EML_OK);
            assert_int_equal(FAST->act_forward(fks, yf, n, a), EML_OK);
            assert_int_equal(REF->act_backward(NULL, dr, yr, n, a), EML_OK);
            assert_int_equal(FAST->act_backward(fks, df, yr, n, a), EML_OK);
            for (size_t i = 0; i < n; i++) {
                assert_true(fabsf(yf[i] - yr[i]) <=
                            1e-6f + 1e-5f * fabsf(yr[i]));
                assert_true(fabsf(df[i] - dr[i]) <=
                            1e-6f + 1e-5f * fabsf(dr[i]));
            }
            float p[45], q[45];
            assert_int_equal(REF->softmax_forward(NULL, p, x, 1, (int)n),
                             EML_OK);
            assert_int_equal(FAST->softmax_forward(fks, q, x, 1, (int)n),
                             EML_OK);
            for (size_t i = 0; i < n; i++)
                assert_true(fabsf(p[i] - q[i]) <= 1e-6f + 1e-5f * p[i]);
        }
    }
    FAST->state_free(fks);
}

/* ==== dispatch, names, bad arguments ==== */

static int hook_calls;

static eml_status hook_gemm(void *ctx, const eml_gemm_desc *g)
{
    assert_ptr_equal(ctx, &hook_calls);
    hook_calls++;
    return REF->gemm(NULL, g);
}

static void test_gemm_dispatch(void **state)
{
    (void)state;
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, 0, 1, 1, 1}, C[4];
    eml_gemm_dispatch d = {.fn = hook_gemm, .ctx = &hook_calls};
    hook_calls = 0;
    /* (2x3) x (3x2) */
    assert_int_equal(eml_gemm_f32(&d, 0, 0, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2),
                     EML_OK);
    assert_int_equal(hook_calls, 1);
    assert_int_equal(d.calls, 1);
    assert_true(d.flops == 24.0);
    const float want[4] = {4, 5, 10, 11};
    assert_memory_equal(C, want, sizeof(want));
    assert_int_equal(eml_gemm_f32(&d, 1, 1, 3, 3, 2, 1.0f, A, 3, B, 2, 0.0f,
                              (float[9]){0}, 3),
                     EML_OK);
    assert_int_equal(d.calls, 2);
    assert_true(d.flops == 24.0 + 36.0);

    /* rejected: nothing counted, the hook never runs */
    struct {
        int ta, tb, M, N, K, lda, ldb, ldc;
        int null_a, null_b, null_c;
    } bad[] = {
        {0, 0, -1, 2, 3, 3, 2, 2, 0, 0, 0},
        {0, 0, 2, -1, 3, 3, 2, 2, 0, 0, 0},
        {0, 0, 2, 2, -3, 3, 2, 2, 0, 0, 0},
        {0, 0, 2, 2, 3, 2, 2, 2, 0, 0, 0}, /* lda < K */
        {1, 0, 2, 2, 3, 1, 2, 2, 0, 0, 0}, /* lda < M (A is K x M) */
        {0, 0, 2, 2, 3, 3, 1, 2, 0, 0, 0}, /* ldb < N */
        {0, 1, 2, 2, 3, 3, 2, 2, 0, 0, 0}, /* ldb < K (B is N x K) */
        {0, 0, 2, 2, 3, 3, 2, 1, 0, 0, 0}, /* ldc < N */
        {0, 0, 2, 2, 3, 3, 2, 2, 0, 0, 0}, /* ldc ok, lda 0 below */
        {0, 0, 2, 2, 3, 3, 2, 2, 1, 0, 0},
        {0, 0, 2, 2, 3, 3, 2, 2, 0, 1, 0},
        {0, 0, 2, 2, 3, 3, 2, 2, 0, 0, 1},
    };
    bad[8].lda = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        float Cb[4] = {0};
        eml_status st =
            eml_gemm_f32(&d, bad[i].ta, bad[i].tb, bad[i].M, bad[i].N, bad[i].K,
                     1.0f, bad[i].null_a ? NULL : A, bad[i].lda,
                     bad[i].null_b ? NULL : B, bad[i].ldb, 0.0f,
                     bad[i].null_c ? NULL : Cb, bad[i].ldc);
        if (st != EML_ERR_INVALID)
            fail_msg("bad gemm case %zu accepted (status %d)", i, (int)st);
    }
    assert_int_equal(hook_calls, 2);
    assert_int_equal(d.calls, 2);
    assert_int_equal(eml_gemm_f32(NULL, 0, 0, 1, 1, 1, 1.0f, A, 1, B, 1, 0.0f, C,
                              1),
                     EML_ERR_INVALID);
    eml_gemm_dispatch nofn = {.fn = NULL, .ctx = NULL};
    assert_int_equal(eml_gemm_f32(&nofn, 0, 0, 1, 1, 1, 1.0f, A, 1, B, 1, 0.0f,
                              C, 1),
                     EML_ERR_INVALID);

    /* Empty products are fine and write nothing; NULL is allowed there. */
    assert_int_equal(eml_gemm_f32(&d, 0, 0, 0, 5, 3, 1.0f, NULL, 3, B, 5, 0.0f,
                              NULL, 5),
                     EML_OK);
    assert_int_equal(hook_calls, 2);
}

static void test_parse_and_get(void **state)
{
    (void)state;
    eml_kernels_kind k = EML_KERNELS_COUNT;
    assert_int_equal(eml_kernels_parse("ref", &k), EML_OK);
    assert_int_equal(k, EML_KERNELS_REF);
    assert_int_equal(eml_kernels_parse("fast", &k), EML_OK);
    assert_int_equal(eml_kernels_parse("dnnl", &k), EML_ERR_INVALID);
    assert_int_equal(k, EML_KERNELS_FAST); /* untouched on error */
    const char *bad[] = {"", "Ref", "FAST", "fast ", " ref", "refx", "fas",
                         "onednn"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (eml_kernels_parse(bad[i], &k) != EML_ERR_INVALID)
            fail_msg("eml_kernels_parse accepted \"%s\"", bad[i]);
    assert_int_equal(eml_kernels_parse(NULL, &k), EML_ERR_INVALID);
    assert_int_equal(eml_kernels_parse("ref", NULL), EML_ERR_INVALID);

    for (int i = 0; i < EML_KERNELS_COUNT; i++) {
        const eml_kernels *t = eml_kernels_get((eml_kernels_kind)i);
        assert_non_null(t);
        assert_int_equal(t->kind, i);
        assert_int_equal(eml_kernels_parse(t->name, &k), EML_OK);
        assert_int_equal(k, i);
    }
    assert_null(eml_kernels_get(EML_KERNELS_COUNT));
    assert_null(eml_kernels_get((eml_kernels_kind)-1));
}

static void test_bad_arguments(void **state)
{
    (void)state;
    REF->state_free(NULL);
    FAST->state_free(NULL);
    assert_int_equal(REF->state_new(NULL), EML_ERR_INVALID);
    assert_int_equal(FAST->state_new(NULL), EML_ERR_INVALID);

    eml_kstate *rks = state_of(REF), *fks = state_of(FAST);
    float x[4] = {1, 2, 3, 4}, y[4];
    /* fast ops need a fast state */
    assert_int_equal(FAST->act_forward(NULL, x, 4, EML_ACT_RELU),
                     EML_ERR_INVALID);
    assert_int_equal(FAST->act_forward(rks, x, 4, EML_ACT_RELU),
                     EML_ERR_INVALID);
    for (int t = 0; t < EML_KERNELS_COUNT; t++) {
        const eml_kernels *k = eml_kernels_get((eml_kernels_kind)t);
        eml_kstate *ks = t == EML_KERNELS_REF ? rks : fks;
        assert_int_equal(k->act_forward(ks, x, 4, EML_ACT_COUNT),
                         EML_ERR_INVALID);
        assert_int_equal(k->act_forward(ks, x, 4, (eml_act)-1),
                         EML_ERR_INVALID);
        assert_int_equal(k->act_backward(ks, x, NULL, 4, EML_ACT_TANH),
                         EML_ERR_INVALID);
        assert_int_equal(k->act_forward(ks, NULL, 0, EML_ACT_TANH), EML_OK);
        assert_int_equal(k->softmax_forward(ks, x, x, 1, 4), EML_ERR_INVALID);
        assert_int_equal(k->softmax_forward(ks, y, x, -1, 4),
                         EML_ERR_INVALID);
        eml_pool_shape s = {.batch = 1, .c = 1, .in_h = 2, .in_w = 2,
                            .out_h = 1, .out_w = 1, .size_h = 2,
                            .size_w = 2, .stride = 0};
        int32_t ws[4];
        assert_int_equal(k->maxpool_forward(ks, y, ws, x, &s),
                         EML_ERR_INVALID);
        assert_int_equal(k->avgpool_forward(ks, y, x, &s), EML_ERR_INVALID);
        assert_int_equal(k->maxpool_ws_bytes(&s), 0);
        s.stride = 2;
        s.pad_t = -1;
        assert_int_equal(k->avgpool_backward(ks, y, x, &s), EML_ERR_INVALID);
        s.pad_t = 0;
        assert_int_equal(k->maxpool_forward(ks, y, NULL, x, &s),
                         EML_ERR_INVALID);
        assert_int_equal(k->maxpool_forward(ks, y, ws, x, NULL),
                         EML_ERR_INVALID);
        /* im2col on a bad shape leaves the output alone */
        eml_conv_shape c = {.c = 1, .h = 2, .w = 2, .size = 0, .stride = 1,
                            .pad = 0, .out_h = 2, .out_w = 2};
        memcpy(y, x, sizeof(x));
        k->im2col(y, x, &c);
        k->col2im(y, x, &c);
        assert_memory_equal(y, x, sizeof(x));
    }
    /* a forged reference workspace is refused, not followed */
    eml_pool_shape s = {.batch = 1, .c = 1, .in_h = 2, .in_w = 2, .out_h = 1,
                        .out_w = 1, .size_h = 2, .size_w = 2, .stride = 2};
    int32_t forged = 4;
    assert_int_equal(REF->maxpool_backward(rks, y, x, &forged, &s),
                     EML_ERR_INVALID);
    REF->state_free(rks);
    FAST->state_free(fks);
}

int main(void)
{
    REF = eml_kernels_get(EML_KERNELS_REF);
    FAST = eml_kernels_get(EML_KERNELS_FAST);
    if (REF == NULL || FAST == NULL)
        return 1;
    eml_kernels_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_get),
        cmocka_unit_test(test_gemm_dispatch),
        cmocka_unit_test(test_gemm_hand),
        cmocka_unit_test(test_act_ref_values),
        cmocka_unit_test(test_act_ref_grad),
        cmocka_unit_test(test_maxpool_ref_grad),
        cmocka_unit_test(test_avgpool_ref_grad),
        cmocka_unit_test(test_softmax_ref_ce_grad),
        cmocka_unit_test(test_im2col_formula_and_adjoint),
        cmocka_unit_test(test_gemm_fast_vs_ref),
        cmocka_unit_test(test_act_fast_vs_ref),
        cmocka_unit_test(test_maxpool_fast_vs_ref),
        cmocka_unit_test(test_avgpool_fast_vs_ref),
        cmocka_unit_test(test_softmax_fast_vs_ref),
        cmocka_unit_test(test_im2col_fast_vs_ref),
        cmocka_unit_test(test_fast_cache_churn),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
