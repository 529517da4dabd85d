/*
 * bench_core.h - timing a network on this machine, for `enclaveml bench`
 * and bench/bench_train: the fp32 GEMM peak, and training or inference
 * steps on synthetic input of the cfg's shape.  Host side.
 */
#ifndef EML_HOST_BENCH_CORE_H
#define EML_HOST_BENCH_CORE_H

#include <stddef.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/status.h"

/* Best of four timed runs (after a warm-up) of an n x n x n oneDNN
 * sgemm, GFLOP/s, on the kernels' current thread count. */
double eml_bench_gemm_peak(int n);
/* The same for oneDNN's s8 x s8 -> s32 GEMM, in GOP/s (2 n^3 / s). */
double eml_bench_gemm_peak_s8(int n);
/* The same for the fast table's bf16 x bf16 -> f32 product (oneDNN's
 * matmul), GFLOP/s. */
double eml_bench_gemm_peak_bf16(int n);

typedef struct eml_bench_opts {
    int train;              /* 1: forward, loss, backward, update; 0: forward */
    int batch;
    int steps;              /* timed steps; 0: as many as fit in seconds */
    double seconds;
    int dp;                 /* train as DP-SGD (per-example clipping, noise) */
    int profile;            /* per-layer times */
    eml_precision precision; /* inference: calibrated on the synthetic
                                input, then switched */
    eml_kernels_kind kernels;
} eml_bench_opts;

typedef struct eml_bench_layer {
    eml_layer_stats s; /* seconds summed over the timed steps */
} eml_bench_layer;

typedef struct eml_bench_result {
    double images_per_second, seconds_per_step;
    int steps;
    double flops_per_image; /* this mode's: forward, or forward + backward */
    size_t parameters;      /* trainable */
    int int8_layers;        /* int8: leading layers on int8 tensors */
    int n_layers;
    eml_bench_layer *layers; /* with profile: n_layers entries (free()) */
} eml_bench_result;

/* Builds cfg's network for o->batch, gives it random input and labels,
 * runs two warm-up steps, then the timed ones. */
EML_MUST_CHECK eml_status eml_bench_run(const eml_netcfg *cfg,
                                        const eml_bench_opts *o,
                                        eml_bench_result *res, eml_err *err);

#endif
