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

double eml_bench_gemm_peak(int n)
{
    float *a = malloc((size_t)n * n * sizeof(float));
    float *b = malloc((size_t)n * n * sizeof(float));
    float *c = malloc((size_t)n * n * sizeof(float));
    double best = 0;
    if (a == NULL || b == NULL || c == NULL) goto out;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    for (int r = 0; r < 5; r++) {
        double t0 = eml_wall_seconds();
        dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = eml_wall_seconds() - t0;
        double g = 2.0 * n * n * (double)n / dt * 1e-9;
        if (r > 0 && g > best) best = g; /* the first run warms up */
    }
out:
    free(a);
    free(b);
    free(c);
    return best;
}

double eml_bench_gemm_peak_s8(int n)
{
    int8_t *a = malloc((size_t)n * n), *b = malloc((size_t)n * n);
    int32_t *c = malloc((size_t)n * n * sizeof(int32_t));
    const int32_t co = 0;
    double best = 0;
    if (a == NULL || b == NULL || c == NULL) goto out;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (int8_t)(i % 7);
        b[i] = (int8_t)(i % 5);
    }
    for (int r = 0; r < 5; r++) {
        double t0 = eml_wall_seconds();
        dnnl_gemm_s8s8s32('N', 'N', 'F', n, n, n, 1.0f, a, n, 0, b, n, 0,
                          0.0f, c, n, &co);
        double dt = eml_wall_seconds() - t0;
        double g = 2.0 * n * n * (double)n / dt * 1e-9;
        if (r > 0 && g > best) best = g;
    }
out:
    free(a);
    free(b);
    free(c);
    return best;
}

double eml_bench_gemm_peak_bf16(int n)
{
    const eml_kernels *k = eml_kernels_get(EML_KERNELS_FAST);
    eml_kstate *ks = NULL;
    uint16_t *a = malloc((size_t)n * n * 2), *b = malloc((size_t)n * n * 2);
    float *c = malloc((size_t)n * n * sizeof(float));
    double best = 0;
    if (a == NULL || b == NULL || c == NULL || k->state_new(&ks) != EML_OK)
        goto out;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = 0x3f80; /* 1.0 */
        b[i] = 0x3f00; /* 0.5 */
    }
    eml_gemm_dispatch d = {.fn = k->gemm, .ctx = ks};
    eml_gemm_desc g = eml_gemm_desc_f32(0, 0, n, n, n, 1.0f, NULL, n, NULL,
                                        n, 0.0f, c, n);
    g.dtype = EML_DTYPE_BF16;
    g.A = a;
    g.B = b;
    for (int r = 0; r < 5; r++) {
        double t0 = eml_wall_seconds();
        if (eml_gemm(&d, &g) != EML_OK) break;
        double dt = eml_wall_seconds() - t0;
        double gf = 2.0 * n * n * (double)n / dt * 1e-9;
        if (r > 0 && gf > best) best = gf;
    }
out:
    if (ks != NULL) k->state_free(ks);
    free(a);
    free(b);
    free(c);
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
        eml_net_scale_output_delta(net, b, r->scale);
        size_t np = eml_net_param_count(net);
        st = eml_net_backward(net, b, NULL);
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
    if (o->profile) {
        res->layers = calloc((size_t)res->n_layers, sizeof(*res->layers));
        for (int i = 0; res->layers != NULL && i < res->n_layers; i++)
            eml_net_layer_stats(r.net, i, &res->layers[i].s);
    }
    run_free(&r);
    return EML_OK;
}
