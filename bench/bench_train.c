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

#include "enclaveml/cfg.h"
#include "enclaveml/dp.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"
#include "host/bench_core.h"
#include "host/hostio.h"

typedef struct step_result {
    double images_per_second;
    double seconds_per_step;
} step_result;

/* dp: 0 plain step; 1 a DP-SGD step (per-example norms, clipping by a
 * second backward pass, discrete Gaussian noise, update); through
 * src/host/bench_core.c, as `enclaveml bench` times it. */
static int time_steps(const eml_netcfg *cfg, eml_kernels_kind kind, int batch,
                      int steps, int profile, step_result *res, int dp)
{
    eml_bench_opts o = {.train = 1, .batch = batch, .steps = steps,
                        .dp = dp, .profile = profile, .kernels = kind};
    eml_bench_result r;
    eml_err err = {0};
    eml_status st = eml_bench_run(cfg, &o, &r, &err);
    if (st != EML_OK) {
        fprintf(stderr, "bench: %s\n", eml_err_msg(&err, st));
        return -1;
    }
    res->seconds_per_step = r.seconds_per_step;
    res->images_per_second = r.images_per_second;
    if (profile && r.layers != NULL) {
        printf("    %-40s %10s %10s %8s\n", "layer", "fwd ms", "bwd ms",
               "share");
        double total = 0;
        for (int i = 0; i < r.n_layers; i++)
            total += r.layers[i].s.fwd_seconds + r.layers[i].s.bwd_seconds;
        for (int i = 0; i < r.n_layers; i++) {
            const eml_layer_stats *ls = &r.layers[i].s;
            printf("    %-40s %10.3f %10.3f %7.1f%%\n", ls->desc,
                   1e3 * ls->fwd_seconds / steps, 1e3 * ls->bwd_seconds / steps,
                   100.0 * (ls->fwd_seconds + ls->bwd_seconds) / total);
        }
        printf("    %-40s %10.3f ms per step in layers, %.3f ms in all\n",
               "total", 1e3 * total / steps, 1e3 * res->seconds_per_step);
    }
    free(r.layers);
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
        double peak = eml_bench_gemm_peak(gemm_n);
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
