/*
 * bench_train.c - training-step speed of a cfg against this machine's fp32
 * GEMM peak, measured in the same run.
 *
 *   bench_train [--cfg F] [--batch N] [--steps N] [--threads LIST]
 *
 * For each thread count: the peak is a large oneDNN sgemm (N x N x N); the
 * training step is forward + loss + backward + optimiser on random inputs.
 * Prints images/s, the step's FLOPs counted from the cfg (2 x multiply-adds
 * of the linear layers), achieved GFLOP/s, the ratio to the peak, and
 * per-layer forward/backward times; then the ref kernels against fast on
 * one thread as a ratio.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

#include "enclaveml/cfg.h"
#include "enclaveml/dp.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"
#include "host/hostio.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best of a few runs of an n x n x n sgemm, in GFLOP/s. */
static double gemm_peak(int n)
{
    float *a = malloc((size_t)n * n * sizeof(float));
    float *b = malloc((size_t)n * n * sizeof(float));
    float *c = malloc((size_t)n * n * sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = now() - t0;
        double g = 2.0 * n * n * (double)n / dt * 1e-9;
        if (r > 0 && g > best) best = g; /* first run warms up */
    }
    free(a);
    free(b);
    free(c);
    return best;
}

typedef struct step_result {
    double images_per_second;
    double seconds_per_step;
} step_result;

/* dp: 0 plain step; 1 a DP-SGD step as train.c takes it: Poisson
 * sampling over a 60,000-example set, forward, per-example norms, clipping
 * by a second backward pass, discrete Gaussian noise, update. */
static int time_steps(const eml_netcfg *cfg, eml_kernels_kind kind, int batch,
                      int steps, int profile, step_result *res, int dp)
{
    eml_net_opts o = {.kernels = kind, .max_batch = batch,
                      .seed = 1};
    eml_net *net = NULL;
    eml_err err = {0};
    eml_status st = eml_net_new(cfg, &o, &net, &err);
    if (st != EML_OK) {
        fprintf(stderr, "bench: %s\n", eml_err_msg(&err, st));
        return -1;
    }
    eml_net_init_params(net, 1);
    eml_optim *opt = NULL;
    if (eml_optim_new(cfg, net, &opt) != EML_OK) return -1;
    eml_rng r;
    eml_rng_seed(&r, 9);
    float *x = eml_net_input(net);
    for (size_t i = 0; i < (size_t)batch * eml_net_input_size(net); i++)
        x[i] = eml_rng_uniform(&r);
    uint8_t *labels = malloc((size_t)batch);
    for (int b = 0; b < batch; b++)
        labels[b] = (uint8_t)(b % (int)eml_net_output_size(net));
    size_t np = eml_net_param_count(net);
    float *sq = malloc((size_t)batch * sizeof(float));
    float *scale = malloc((size_t)batch * sizeof(float));
    float *noise = malloc(np * sizeof(float));
    eml_csprng *rng = NULL;
    if (eml_csprng_new(&rng, &err) != EML_OK) return -1;
    /* Fixed leading layers ([scattering]) run once per image, as in the
     * training loop: once here, before the timed steps. */
    int fixed = eml_net_fixed_layers(net);
    if (fixed > 0 && eml_net_forward_range(net, 0, fixed, batch, 0) != EML_OK)
        return -1;
    double t0 = 0;
    for (int s = -2; s < steps; s++) { /* two warm-up steps */
        if (s == 0) {
            eml_net_set_profiling(net, profile);
            t0 = now();
        }
        if (dp) {
            int m = 0;
            for (int i = 0; i < 60000; i++)
                m += eml_dp_bernoulli(rng, (double)batch / 60000.0);
            (void)m; /* the timed batch stays at its expected size */
        }
        if (eml_net_forward_range(net, fixed, eml_net_n_layers(net), batch,
                                  1) != EML_OK ||
            eml_net_loss(net, batch, labels, NULL, NULL) != EML_OK ||
            (dp ? eml_net_example_norms(net, batch, sq)
                : eml_net_backward(net, batch, NULL)) != EML_OK)
            return -1;
        if (dp) {
            for (int b = 0; b < batch; b++)
                scale[b] = sq[b] > 1.0f ? 1.0f / sqrtf(sq[b]) : 1.0f;
            eml_net_scale_output_delta(net, batch, scale);
            if (eml_net_backward(net, batch, NULL) != EML_OK ||
                eml_dp_gaussian_fill(rng, noise, np, 1.0) != EML_OK)
                return -1;
            float *g = eml_net_grads(net);
            for (size_t i = 0; i < np; i++) g[i] += noise[i];
        }
        eml_optim_step(opt, 0.001f, (float)batch);
    }
    double dt = now() - t0;
    res->seconds_per_step = dt / steps;
    res->images_per_second = (double)batch * steps / dt;
    if (profile) {
        printf("    %-40s %10s %10s %8s\n", "layer", "fwd ms", "bwd ms",
               "share");
        double total = 0;
        for (int i = 0; i < eml_net_n_layers(net); i++) {
            eml_layer_stats ls;
            eml_net_layer_stats(net, i, &ls);
            total += ls.fwd_seconds + ls.bwd_seconds;
        }
        for (int i = 0; i < eml_net_n_layers(net); i++) {
            eml_layer_stats ls;
            eml_net_layer_stats(net, i, &ls);
            printf("    %-40s %10.3f %10.3f %7.1f%%\n", ls.desc,
                   1e3 * ls.fwd_seconds / steps, 1e3 * ls.bwd_seconds / steps,
                   100.0 * (ls.fwd_seconds + ls.bwd_seconds) / total);
        }
        printf("    %-40s %10.3f ms per step in layers, %.3f ms in all\n",
               "total", 1e3 * total / steps, 1e3 * res->seconds_per_step);
    }
    free(labels);
    free(sq);
    free(scale);
    free(noise);
    eml_csprng_free(rng);
    eml_optim_free(opt);
    eml_net_free(net);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cfg_path = "cfg/fmnist-cnn.cfg";
    int batch = 128, steps = 30, ref_steps = 3, gemm_n = 2048;
    const char *threads_list = "1,2";
    int dp_ratio = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cfg") && i + 1 < argc)
            cfg_path = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ref-steps") && i + 1 < argc)
            ref_steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads_list = argv[++i];
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc)
            gemm_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dp-ratio"))
            dp_ratio = 1;
        else {
            fprintf(stderr,
                    "usage: bench_train [--cfg F] [--batch N] [--steps N] "
                    "[--ref-steps N] [--threads 1,2] [--gemm N]\n");
            return 2;
        }
    }
    if (batch <= 0 || steps <= 0 || ref_steps <= 0 || gemm_n <= 0) {
        fprintf(stderr, "bench_train: sizes must be positive\n");
        return 2;
    }
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st = eml_cfg_load(cfg_path, &cfg, &err);
    if (st != EML_OK) {
        fprintf(stderr, "enclaveml: error: %s\n", eml_err_msg(&err, st));
        return 1;
    }
    eml_net_opts o = {.kernels = EML_KERNELS_FAST, .max_batch = batch,
                      .seed = 1};
    eml_net *probe = NULL;
    if (eml_net_new(cfg, &o, &probe, &err) != EML_OK) {
        fprintf(stderr, "enclaveml: error: %s\n", err.msg);
        return 1;
    }
    double flops_fwd = eml_net_flops_forward(probe);
    double flops_img = flops_fwd + eml_net_flops_backward(probe);
    size_t params = eml_net_param_count(probe);
    eml_net_free(probe);
    if (dp_ratio) {
        int t = atoi(threads_list);
        eml_kernels_set_threads(t > 0 ? t : 1);
        step_result a, b;
        /* interleaved, best of two, to damp the machine's noise */
        double pa = 0, pb = 0;
        for (int r = 0; r < 2; r++) {
            if (time_steps(cfg, EML_KERNELS_FAST, batch, steps, 0, &a, 0) ||
                time_steps(cfg, EML_KERNELS_FAST, batch, steps, 0, &b, 1))
                return 1;
            if (a.images_per_second > pa) pa = a.images_per_second;
            if (b.images_per_second > pb) pb = b.images_per_second;
        }
        printf("  %s, batch %d, %d thread(s): plain %.0f images/s, DP-SGD "
               "%.0f images/s: a DP step costs %.2fx a plain one\n",
               cfg_path, batch, t > 0 ? t : 1, pa, pb, pa / pb);
        eml_cfg_free(cfg);
        return 0;
    }
    printf("bench_train: %s, %zu parameters, batch %d, %d timed steps\n",
           cfg_path, params, batch, steps);
    printf("  step FLOPs counted from the cfg: %.2f MFLOP/image "
           "(forward %.2f), %.3f GFLOP per step\n",
           flops_img * 1e-6, flops_fwd * 1e-6, flops_img * batch * 1e-9);

    double fast1 = 0;
    char list[64];
    snprintf(list, sizeof(list), "%s", threads_list);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int t = atoi(tok);
        if (t <= 0) continue;
        eml_kernels_set_threads(t);
        double peak = gemm_peak(gemm_n);
        step_result r;
        if (time_steps(cfg, EML_KERNELS_FAST, batch, steps, 1, &r, 0) != 0) {
            fprintf(stderr, "bench_train: training step failed\n");
            return 1;
        }
        double gf = flops_img * r.images_per_second * 1e-9;
        printf("  threads %d: sgemm %dx%dx%d peak %.1f GFLOP/s; training "
               "%.0f images/s, %.1f GFLOP/s = %.1f%% of peak\n",
               t, gemm_n, gemm_n, gemm_n, peak, r.images_per_second, gf,
               100.0 * gf / peak);
        if (t == 1) fast1 = r.images_per_second;
    }
    eml_kernels_set_threads(1);
    if (fast1 <= 0) {
        step_result r;
        if (time_steps(cfg, EML_KERNELS_FAST, batch, steps, 0, &r, 0) != 0)
            return 1;
        fast1 = r.images_per_second;
    }
    step_result rr;
    if (time_steps(cfg, EML_KERNELS_REF, batch, ref_steps, 0, &rr, 0) != 0) {
        fprintf(stderr, "bench_train: ref training step failed\n");
        return 1;
    }
    printf("  kernels, 1 thread: ref %.1f images/s, fast %.0f images/s: "
           "fast/ref = %.1fx\n",
           rr.images_per_second, fast1, fast1 / rr.images_per_second);
    eml_cfg_free(cfg);
    return 0;
}
