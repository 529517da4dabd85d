/*
 * cmd_bench.c - `enclaveml bench`: how fast a network runs on this
 * machine, against this machine's peak for the precision measured in the
 * same run, on synthetic input of the cfg's shape (no data, no enclave:
 * the engine alone).  Host side.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/kernels.h"
#include "host/bench_core.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/hostio.h"
#include "host/json.h"

static const char bench_usage[] =
    "usage: enclaveml bench --cfg F [--batch N] [--mode train|infer]\n"
    "                       [--precision fp32|int8|bf16] [--threads T]\n"
    "                       [--seconds S] [--layers] [--json]\n"
    "\n"
    "Runs the network of cfg F on synthetic input of its shape (default:\n"
    "the cfg's batch, training steps, 1 thread, 3 seconds after two\n"
    "warm-up steps) and prints images/s, GFLOP/s and the share of this\n"
    "machine's peak for the precision, measured in the same run (a\n"
    "2048^3 oneDNN GEMM on the same threads).  FLOPs count the\n"
    "convolutions and connected layers as Darknet does (2 x multiply-\n"
    "adds; training adds the weight and input gradients).  --layers adds\n"
    "one line per layer; --json one object with images_per_second,\n"
    "gflops_per_second, peak_gflops, peak_share, parameters (trainable),\n"
    "flops_per_image and, with --layers, the layers.  --precision int8\n"
    "(inference) calibrates on the synthetic input, runs the products in\n"
    "int8, and compares with oneDNN's int8 GEMM peak (GOP/s); bf16 with\n"
    "its bf16 matmul peak.\n";

typedef struct bench_args {
    const char *cfg, *precision;
    eml_precision prec;
    int batch, train, threads, layers, json;
    double seconds;
} bench_args;

static int parse_args(int argc, char **argv, bench_args *a)
{
    enum { O_MODE = 1000, O_PRECISION, O_SECONDS, O_LAYERS, O_HELP };
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"json", no_argument, 0, OPT_JSON},
        {"mode", required_argument, 0, O_MODE},
        {"precision", required_argument, 0, O_PRECISION},
        {"seconds", required_argument, 0, O_SECONDS},
        {"layers", no_argument, 0, O_LAYERS},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    long v = 0;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_CFG: a->cfg = optarg; break;
        case OPT_JSON: a->json = 1; break;
        case O_LAYERS: a->layers = 1; break;
        case O_HELP: fputs(bench_usage, stdout); return 1;
        case OPT_BATCH:
            if (eml_opt_long("--batch", optarg, 1, EML_CFG_MAX_BATCH, &v))
                return -1;
            a->batch = (int)v;
            break;
        case OPT_THREADS:
            if (eml_opt_long("--threads", optarg, 1, 256, &v)) return -1;
            a->threads = (int)v;
            break;
        case O_SECONDS:
            if (eml_opt_double("--seconds", optarg, 0.1, 3600, &a->seconds))
                return -1;
            break;
        case O_MODE:
            if (strcmp(optarg, "train") && strcmp(optarg, "infer")) {
                eml_fail("bench: --mode: '%s' is not one of: train, infer",
                         optarg);
                return -1;
            }
            a->train = strcmp(optarg, "train") == 0;
            break;
        case O_PRECISION: a->precision = optarg; break;
        default:
            eml_fail("bench: unknown option '%s' (see enclaveml bench "
                     "--help)",
                     argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        eml_fail("bench: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if (a->cfg == NULL) {
        eml_fail("bench: --cfg is required");
        return -1;
    }
    if (eml_precision_parse(a->precision, &a->prec) != EML_OK) {
        eml_fail("bench: --precision %s: is not one of: fp32, bf16, int8",
                 a->precision);
        return -1;
    }
    if (a->prec != EML_PREC_FP32 && a->train) {
        eml_fail("bench: --precision %s is for inference: add --mode infer",
                 a->precision);
        return -1;
    }
    return 0;
}

static void print_layers(const eml_bench_result *r, int train, int json,
                         eml_json *j)
{
    if (json) eml_json_array_begin(j, "layers");
    for (int i = 0; i < r->n_layers; i++) {
        const eml_layer_stats *s = &r->layers[i].s;
        double ms = 1e3 * (s->fwd_seconds + s->bwd_seconds) / r->steps;
        if (json) {
            eml_json_object_begin(j, NULL);
            eml_json_int(j, "index", i);
            eml_json_str(j, "layer", s->desc);
            eml_json_num(j, "forward_ms", 1e3 * s->fwd_seconds / r->steps);
            if (train)
                eml_json_num(j, "backward_ms",
                             1e3 * s->bwd_seconds / r->steps);
            eml_json_num(j, "bflops", s->flops / 1e9);
            eml_json_object_end(j);
        } else {
            printf("%4d %-44s %7.3f BFLOPs %9.3f ms\n", i, s->desc,
                   s->flops / 1e9, ms);
        }
    }
    if (json) eml_json_array_end(j);
}

int eml_cmd_bench(int argc, char **argv)
{
    bench_args a = {.precision = "fp32", .train = 1, .threads = 1,
                    .seconds = 3};
    int rc = parse_args(argc, argv, &a);
    if (rc != 0) return rc < 0 ? 1 : 0;
    eml_err err = {0};
    eml_netcfg *cfg = NULL;
    eml_status st = eml_cfg_load(a.cfg, &cfg, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    int batch = a.batch > 0 ? a.batch : cfg->batch;
    eml_kernels_set_threads(a.threads);
    fprintf(stderr, "bench: %s, batch %d, %s, %s, %d thread(s): measuring "
                    "the peak, then %.0f s of steps\n",
            a.cfg, batch, a.train ? "training" : "inference", a.precision,
            a.threads, a.seconds);
    double peak = a.prec == EML_PREC_INT8   ? eml_bench_gemm_peak_s8(2048)
                  : a.prec == EML_PREC_BF16 ? eml_bench_gemm_peak_bf16(2048)
                                            : eml_bench_gemm_peak(2048);
    eml_bench_opts o = {.train = a.train, .batch = batch, .seconds = a.seconds,
                        .profile = a.layers, .kernels = EML_KERNELS_FAST,
                        .precision = a.prec};
    eml_bench_result r;
    st = eml_bench_run(cfg, &o, &r, &err);
    eml_cfg_free(cfg);
    if (st != EML_OK) return eml_fail_st(st, &err);
    double gflops = r.flops_per_image * r.images_per_second * 1e-9;
    if (a.json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_str(&j, "cfg", a.cfg);
        eml_json_str(&j, "mode", a.train ? "train" : "infer");
        eml_json_str(&j, "precision", a.precision);
        eml_json_int(&j, "batch", batch);
        eml_json_int(&j, "threads", a.threads);
        eml_json_int(&j, "steps", r.steps);
        eml_json_num(&j, "images_per_second", r.images_per_second);
        eml_json_num(&j, "gflops_per_second", gflops);
        eml_json_num(&j, "peak_gflops", peak);
        eml_json_num(&j, "peak_share", peak > 0 ? gflops / peak : 0);
        eml_json_int(&j, "parameters", (long long)r.parameters);
        eml_json_num(&j, "flops_per_image", r.flops_per_image);
        if (a.prec == EML_PREC_INT8)
            eml_json_int(&j, "int8_layers", r.int8_layers);
        if (a.layers) print_layers(&r, a.train, 1, &j);
        eml_json_end(&j);
    } else {
        if (a.layers) print_layers(&r, a.train, 0, NULL);
        printf("%s: %zu parameters, %.3f GFLOPs an image (%s)\n", a.cfg,
               r.parameters, r.flops_per_image / 1e9,
               a.train ? "forward and backward" : "forward");
        printf("%.1f images/s, %.1f GFLOP/s = %.1f%% of this machine's %s "
               "peak (%.1f GFLOP/s on %d thread(s))\n",
               r.images_per_second, gflops,
               peak > 0 ? 100 * gflops / peak : 0, a.precision, peak,
               a.threads);
        if (a.prec == EML_PREC_INT8)
            printf("int8 from layer to layer: the first %d of %d layers\n",
                   r.int8_layers, r.n_layers);
    }
    free(r.layers);
    return 0;
}
