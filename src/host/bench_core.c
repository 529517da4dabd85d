/*
 * bench_core.c - timing a network on this machine (bench_core.h).  Host
 * side: synthetic inputs, wall-clock timing, nothing secret.
 */
#include "host/bench_core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "core/clock.h"
#include "enclaveml/dp.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"

/* One n x n x n product of one kind on buffers best_rate filled; 0 on
 * success. */
typedef int (*peak_fn)(int n, const void *a, const void *b, void *c,
                       void *ctx);

/* Best of four timed runs after a warm-up, 2 n^3 operations a run, in
 * G per second; 0 if the buffers or a run failed. */
static double best_rate(int n, size_t elem, size_t out, const void *fill_a,
                        const void *fill_b, peak_fn run, void *ctx)
{
    size_t nn = (size_t)n * (size_t)n;
    uint8_t *a = malloc(nn * elem), *b = malloc(nn * elem);
    void *c = malloc(nn * out);
    double best = 0;
    for (size_t i = 0; a != NULL && b != NULL && i < nn; i++) {
        memcpy(a + i * elem, fill_a, elem);
        memcpy(b + i * elem, fill_b, elem);
    }
    for (int r = 0; a != NULL && b != NULL && c != NULL && r < 5; r++) {
        double t0 = eml_wall_seconds();
        if (run(n, a, b, c, ctx) != 0) break;
        double g = 2.0 * (double)nn * n / (eml_wall_seconds() - t0) * 1e-9;
        if (r > 0 && g > best) best = g; /* the first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static int run_f32(int n, const void *a, const void *b, void *c, void *ctx)
{
    (void)ctx;
    return dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) !=
           dnnl_success;
}

static int run_s8(int n, const void *a, const void *b, void *c, void *ctx)
{
    (void)ctx;
    const int32_t co = 0;
    return dnnl_gemm_s8s8s32('N', 'N', 'F', n, n, n, 1.0f, a, n, 0, b, n, 0,
                             0.0f, c, n, &co) != dnnl_success;
}

/* bf16 through the fast table's GEMM entry (a cached oneDNN matmul). */
static int run_bf16(int n, const void *a, const void *b, void *c, void *ctx)
{
    eml_gemm_dispatch *d = ctx;
    eml_gemm_desc g = eml_gemm_desc_f32(0, 0, n, n, n, 1.0f, NULL, n, NULL,
                                        n, 0.0f, c, n);
    g.dtype = EML_DTYPE_BF16;
    g.A = a;
    g.B = b;
    return eml_gemm(d, &g) != EML_OK;
}

double eml_bench_gemm_peak(int n)
{
    const float fa = 0.3f, fb = 0.2f;
    return best_rate(n, sizeof(float), sizeof(float), &fa, &fb, run_f32,
                     NULL);
}

double eml_bench_gemm_peak_s8(int n)
{
    const int8_t qa = 3, qb = 2;
    return best_rate(n, 1, sizeof(int32_t), &qa, &qb, run_s8, NULL);
}

double eml_bench_gemm_peak_bf16(int n)
{
    const eml_kernels *k = eml_kernels_get(EML_KERNELS_FAST);
    eml_kstate *ks = NULL;
    if (k->state_new(&ks) != EML_OK) return 0;
    eml_gemm_dispatch d = {.fn = k->gemm, .ctx = ks};
    const uint16_t one = 0x3f80, half = 0x3f00; /* 1.0, 0.5 */
    double best = best_rate(n, sizeof(uint16_t), sizeof(float), &one, &half,
                            run_bf16, &d);
    k->state_free(ks);
    return best;
}

/* The scratch of a timed run. */
typedef struct bench_run {
    eml_net *net;
    eml_optim *opt;
    uint8_t *labels;
    float *sq, *scale, *noise;
    eml_csprng *rng;
} bench_run;

static void run_free(bench_run *r)
{
    free(r->labels);
    free(r->sq);
    free(r->scale);
    free(r->noise);
    eml_csprng_free(r->rng);
    eml_optim_free(r->opt);
    eml_net_free(r->net);
}

static eml_status run_open(bench_run *r, const eml_netcfg *cfg,
                           const eml_bench_opts *o, eml_err *err)
{
    memset(r, 0, sizeof(*r));
    eml_net_opts no = {.kernels = o->kernels, .max_batch = o->batch,
                       .seed = 1, .inference = !o->train};
    eml_status st = eml_net_new(cfg, &no, &r->net, err);
    if (st != EML_OK) return st;
    eml_net_init_params(r->net, 1);
    int b = o->batch;
    size_t np = eml_net_param_count(r->net);
    r->labels = malloc((size_t)b);
    r->sq = malloc((size_t)b * sizeof(float));
    r->scale = malloc((size_t)b * sizeof(float));
    r->noise = malloc(np * sizeof(float));
    if (r->labels == NULL || r->sq == NULL || r->scale == NULL ||
        r->noise == NULL ||
        (o->train && eml_optim_new(cfg, r->net, &r->opt) != EML_OK))
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    if (o->dp && (st = eml_csprng_new(&r->rng, err)) != EML_OK) return st;
    eml_rng g;
    eml_rng_seed(&g, 9);
    float *x = eml_net_input(r->net);
    for (size_t i = 0; i < (size_t)b * eml_net_input_size(r->net); i++)
        x[i] = eml_rng_uniform(&g);
    size_t k = eml_net_output_size(r->net);
    for (int i = 0; i < b; i++) r->labels[i] = (uint8_t)((size_t)i % k);
    return EML_OK;
}

/* One step: a forward pass, or a whole training step (DP-SGD's: per
 * example norms, clipping by a second backward pass, noise). */
static eml_status one_step(bench_run *r, const eml_bench_opts *o, int fixed)
{
    eml_net *net = r->net;
    int b = o->batch, n = eml_net_n_layers(net);
    eml_status st = eml_net_forward_range(net, fixed, n, b, o->train);
    if (st != EML_OK || !o->train) return st;
    st = eml_net_loss(net, b, r->labels, NULL, NULL);
    if (st == EML_OK)
        st = o->dp ? eml_net_example_norms(net, b, r->sq)
                   : eml_net_backward(net, b, NULL);
    if (st == EML_OK && o->dp) {
        for (int i = 0; i < b; i++)
            r->scale[i] = r->sq[i] > 1.0f ? 1.0f / sqrtf(r->sq[i]) : 1.0f;
        size_t np = eml_net_param_count(net);
        st = eml_net_clipped_grads(net, b, r->scale);
        if (st == EML_OK) st = eml_dp_gaussian_fill(r->rng, r->noise, np, 1.0);
        float *g = eml_net_grads(net);
        for (size_t i = 0; st == EML_OK && i < np; i++) g[i] += r->noise[i];
    }
    if (st == EML_OK) eml_optim_step(r->opt, 0.001f, (float)b);
    return st;
}

eml_status eml_bench_run(const eml_netcfg *cfg, const eml_bench_opts *o,
                         eml_bench_result *res, eml_err *err)
{
    memset(res, 0, sizeof(*res));
    bench_run r;
    eml_status st = run_open(&r, cfg, o, err);
    /* Fixed leading layers ([scattering]) run once per image in training:
     * once here, before the timed steps. */
    int fixed = st == EML_OK ? eml_net_fixed_layers(r.net) : 0;
    if (st == EML_OK && fixed > 0)
        st = eml_net_forward_range(r.net, 0, fixed, o->batch, 0);
    if (st == EML_OK && o->precision == EML_PREC_BF16)
        st = eml_net_set_precision(r.net, o->precision, err);
    if (st == EML_OK && o->precision == EML_PREC_INT8) {
        /* calibrated on the synthetic input itself */
        eml_net_calibrate(r.net, 1);
        st = eml_net_forward_range(r.net, fixed, eml_net_n_layers(r.net),
                                   o->batch, 0);
        eml_net_calibrate(r.net, 0);
        if (st == EML_OK)
            st = eml_net_set_precision(r.net, o->precision, err);
        if (st != EML_OK) {
            run_free(&r);
            return st;
        }
    }
    double t0 = 0, dt = 0;
    int s = -2; /* two warm-up steps */
    while (st == EML_OK) {
        if (s == 0) {
            eml_net_set_profiling(r.net, o->profile);
            t0 = eml_wall_seconds();
        }
        st = one_step(&r, o, fixed);
        s++;
        dt = s > 0 ? eml_wall_seconds() - t0 : 0;
        if (s > 0 && (o->steps > 0 ? s >= o->steps
                                   : s >= 3 && dt >= o->seconds))
            break;
    }
    if (st != EML_OK) {
        run_free(&r);
        return eml_err_set(err, st, "bench: a %s step failed",
                           o->train ? "training" : "forward");
    }
    res->steps = s;
    res->seconds_per_step = dt / s;
    res->images_per_second = (double)o->batch * s / dt;
    res->flops_per_image = eml_net_flops_forward(r.net) +
                           (o->train ? eml_net_flops_backward(r.net) : 0);
    res->parameters = eml_net_trainable_count(r.net);
    res->n_layers = eml_net_n_layers(r.net);
    res->int8_layers = eml_net_int8_layers(r.net);
    if (o->profile) {
        res->layers = calloc((size_t)res->n_layers, sizeof(*res->layers));
        for (int i = 0; res->layers != NULL && i < res->n_layers; i++)
            eml_net_layer_stats(r.net, i, &res->layers[i].s);
    }
    run_free(&r);
    return EML_OK;
}
