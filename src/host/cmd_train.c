/*
 * cmd_train.c - `enclaveml train`: its options (every training option
 * into one eml_run_spec) and the plaintext path in this process (with an
 * optional mirror or checkpoint keyed by the host's own key, and
 * --outsource); the confidential path is cmd_train_enclave.c.
 *
 * Host side.  Every failure ends in one "enclaveml: error: ..." line.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "enclaveml/mirror.h"
#include "enclaveml/train.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_enclave.h"
#include "host/cmd_outsource.h"
#include "host/cmd_train.h"
#include "host/fileio.h"
#include "host/keyfile.h"
#include "host/hostio.h"
#include "host/progress.h"
#include "sim/platform.h"

#define EXIT_USAGE 2

/* ==== train ==== */

static const char train_usage[] =
    "usage: enclaveml train --cfg F [--data DIR] [--epochs N] [--batch N]\n"
    "                       [--lr X] [--seed N] [--threads N]\n"
    "                       [--kernels ref|fast] [--out W.safetensors]\n"
    "                       [--json] [--quiet]\n"
    "       enclaveml train --cfg F --data DIR --grant G [--data DIR2 --grant\n"
    "                       G2 ...] --recipient M.pub --out model.emlm\n"
    "                       [--report-out T.json] [--report-nonce HEX]\n"
    "                       [--enclave sim|none]\n"
    "                       [--heap-mb M] [...]\n"
    "\n"
    "Trains the network described by the cfg on the IDX data in DIR\n"
    "(default " EML_DEFAULT_DATA_DIR "): train-images-idx3-ubyte,\n"
    "train-labels-idx1-ubyte and the t10k test pair, gzipped or not.\n"
    "Defaults for epochs, batch and learning rate come from the cfg's [net].\n"
    "--json prints test_accuracy, train_loss, epochs, images_per_second,\n"
    "parameters and seconds as one JSON object on stdout.\n"
    "\n"
    "With --grant, training is confidential: each DIR holds one owner's\n"
    "encrypted files (<name>.emlc), the enclave (default backend sim) opens\n"
    "them with the owners' grants, and the model leaves encrypted to\n"
    "--recipient (which every grant must name), with a training report\n"
    "signed by the enclave that repeats --report-nonce (the model owner's\n"
    "freshness check).  Plaintext data (no grant) is only trained outside\n"
    "an enclave (--enclave none).\n"
    "\n"
    "Differential privacy (docs/dp.md):\n"
    "  --dp --clip C (--noise SIGMA | --target-epsilon E) [--delta D]\n"
    "  [--dp-fixed-batches] [--insecure-seed]\n"
    "\n"
    "Outsourcing (docs/outsource.md), in process: the linear layers'\n"
    "products go to a worker, every one checked:\n"
    "  --outsource ADDR (tcp:HOST:PORT or unix:PATH)\n"
    "  --outsource-mode integrity (the worker sees the operands; private,\n"
    "  the default elsewhere, blinds inference only and cannot train)\n"
    "  [--outsource-min-intensity N] (only products of at least N FLOPs\n"
    "  per element sent and checked go out; the rest stay here)\n"
    "\n"
    "Crash consistency (docs/mirror.md): the whole training state, sealed,\n"
    "  --mirror PATH [--mirror-every N]       into a two-slot persistent-\n"
    "                                         memory pool (libpmem2; a file\n"
    "                                         in /dev/shm emulates PM)\n"
    "  --checkpoint FILE [--checkpoint-every N]  or a disk checkpoint\n"
    "  --resume                               continue from the newest\n"
    "                                         committed state\n"
    "Both save after every step by default.\n";

/* The mirror of an in-process run: keyed with the host's own mirror key
 * ($ENCLAVEML_HOME/host-mirror.key; host code never holds the platform's
 * sealing secret), under a fixed label for a measurement. */
static eml_status host_seal_key(eml_platform *plat, eml_err *err)
{
    static const char label[] = "enclaveml in-process v1";
    char home[4096];
    memset(plat, 0, sizeof(*plat));
    eml_status st = eml_platform_home(home, sizeof(home), err);
    if (st == EML_OK) st = eml_host_mirror_key(home, plat->seal_secret, err);
    if (st == EML_OK)
        st = eml_sha256(plat->measurement, label, sizeof(label) - 1);
    return st;
}

/* --json: what the run did, as one object on stdout. */
static void print_json(const eml_common_opts *c, const eml_run *run,
                       const eml_train_result *res, const char *out,
                       const eml_confidential_args *ca, eml_store *store,
                       const eml_outsourced *os)
{
    const eml_dp_opts *dp = &eml_run_opts(run)->run.dp;
    eml_net *net = eml_run_net((eml_run *)run);
    eml_json j;
    eml_json_begin(&j, stdout);
    eml_json_num(&j, "test_accuracy", res->test_accuracy);
    eml_json_num(&j, "test_loss", res->test_loss);
    eml_json_num(&j, "train_loss", res->train_loss);
    eml_json_num(&j, "train_accuracy", res->train_accuracy);
    eml_json_int(&j, "epochs", res->epochs);
    eml_json_int(&j, "steps", res->steps);
    eml_json_num(&j, "images_per_second", res->images_per_second);
    eml_json_int(&j, "parameters", (long long)eml_net_trainable_count(net));
    eml_json_num(&j, "seconds", res->seconds);
    eml_json_str(&j, "kernels", eml_net_kernels(net)->name);
    eml_json_int(&j, "threads", c->threads);
    if (dp->enabled) {
        eml_json_bool(&j, "dp", 1);
        eml_json_num(&j, "epsilon", res->epsilon);
        eml_json_num(&j, "delta", dp->delta);
        eml_json_num(&j, "noise", dp->noise);
        eml_json_num(&j, "clip", dp->clip);
        eml_json_num(&j, "sampling_rate", res->sampling_rate);
        eml_json_str(&j, "accountant",
                     dp->fixed_batches
                         ? "rdp-sampled-gaussian (assumes Poisson "
                           "sampling; batches were fixed)"
                         : "rdp-sampled-gaussian (Mironov et al. 2019)");
        eml_json_bool(&j, "insecure_seed", dp->insecure_seed);
        eml_json_bool(&j, "stopped_at_target", res->dp_stopped_early);
    }
    if (out != NULL) eml_json_str(&j, "weights", out);
    if (store != NULL) {
        eml_json_int(&j, "resumed_step", res->resumed_step);
        eml_json_int(&j, "mirror_saves", res->mirror_saves);
        eml_json_num(&j, "mirror_seconds", res->mirror_seconds);
        eml_json_str(&j, ca->mirror ? "mirror_mode" : "checkpoint_mode",
                     eml_store_mode(store));
    }
    eml_outsourced_json(os, c, &j);
    eml_json_end(&j);
}

/* The lines a person reads at the end of a run. */
static void print_summary(const eml_run *run, const eml_train_result *res,
                          const char *out, const eml_confidential_args *ca,
                          eml_store *store)
{
    const eml_dp_opts *dp = &eml_run_opts(run)->run.dp;
    if (dp->enabled)
        fprintf(stderr, "privacy spent: epsilon %.3f at delta %g (RDP "
                        "order %g)%s\n",
                res->epsilon, dp->delta, res->order,
                res->dp_stopped_early ? ", stopped at the target" : "");
    fprintf(stderr, "test accuracy %.2f%% after %d epochs (%.1f s, %.0f "
                    "images/s)%s%s\n",
            100.0 * res->test_accuracy, res->epochs, res->seconds,
            res->images_per_second, out ? ", weights written to " : "",
            out ? out : "");
    if (store != NULL)
        fprintf(stderr, "%s: %ld saves, %.3f s in all (%.2f ms each)\n",
                ca->mirror ? "mirror" : "checkpoint", res->mirror_saves,
                res->mirror_seconds,
                res->mirror_saves ? 1e3 * res->mirror_seconds /
                                        (double)res->mirror_saves
                                  : 0.0);
}

/* The in-process mirror's store and key, hung on env. */
static eml_status mirror_env(const eml_confidential_args *ca, int quiet,
                             eml_store **store, eml_platform *plat,
                             eml_run_env *env, eml_err *err)
{
    eml_status st = eml_store_setup(ca->mirror, ca->checkpoint,
                                    ca->spec.resume, quiet, store, err);
    if (st == EML_OK) st = host_seal_key(plat, err);
    if (st != EML_OK) return st;
    env->store = eml_store_ops_of(*store);
    env->seal_secret = plat->seal_secret;
    env->measurement = plat->measurement;
    return EML_OK;
}

/* Plaintext training in this process: the same run function as the
 * enclave's (run.h), with the host's own mirror key; --outsource puts the
 * worker at the net's dispatch point. */
static int train_in_process(const eml_common_opts *c,
                            const eml_confidential_args *ca, const char *out,
                            int quiet)
{
    eml_run *run = NULL;
    eml_store *store = NULL;
    eml_platform plat;
    eml_labelled tr, te;
    memset(&plat, 0, sizeof(plat));
    memset(&tr, 0, sizeof(tr));
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    eml_outsourced os;
    memset(&os, 0, sizeof(os));
    int rc = 1;
    uint8_t *text = NULL;
    size_t tlen = 0;
    eml_status st = eml_file_read(c->cfg, &text, &tlen, &err);
    if (st == EML_OK)
        st = eml_run_new(&ca->spec, text, tlen, c->cfg, &run, &err);
    free(text);
    if (st == EML_OK) st = eml_labelled_load(c->data, "train", &tr, &err);
    if (st == EML_OK) st = eml_labelled_load(c->data, "t10k", &te, &err);
    if (st != EML_OK) goto fail;
    eml_net *net = eml_run_net(run);
    if (tr.set.item != eml_net_input_size(net) ||
        te.set.item != eml_net_input_size(net)) {
        st = eml_err_set(&err, EML_ERR_SHAPE,
                         "images in %s have %zu values each but %s takes %zu "
                         "(height x width x channels)",
                         c->data, tr.set.item, c->cfg,
                         eml_net_input_size(net));
        goto fail;
    }
    eml_run_plan_info plan;
    st = eml_run_plan(run, tr.set.count, INFINITY, &plan, &err);
    if (st != EML_OK) goto fail;
    const eml_train_opts *to = eml_run_opts(run);
    const eml_dp_opts *dp = &to->run.dp;
    if (dp->enabled && !quiet)
        fprintf(stderr,
                "DP-SGD: clip %g, noise multiplier %.4g, sampling rate "
                "%.6g, %ld steps, delta %g%s\n",
                dp->clip, plan.noise, plan.sampling_rate, plan.steps,
                dp->delta,
                dp->fixed_batches ? ", fixed batches (the bound assumes "
                                       "Poisson sampling)"
                                     : ", Poisson sampling");
    eml_progress prog;
    eml_progress_init(&prog, quiet);
    eml_run_env env;
    memset(&env, 0, sizeof(env));
    env.progress = eml_progress_cb;
    env.progress_user = &prog;
    if (ca->spec.mirror) {
        st = mirror_env(ca, quiet, &store, &plat, &env, &err);
        if (st != EML_OK) goto fail;
    }
    if (!quiet)
        fprintf(stderr,
                "training %s: %zu parameters, %zu images, %d epochs, batch "
                "%d, %s kernels, %d threads\n",
                c->cfg, eml_net_trainable_count(net), tr.set.count,
                to->run.epochs, to->run.batch, eml_net_kernels(net)->name,
                c->threads);
    if (!quiet && eml_net_ref_layers(net) > 0)
        fprintf(stderr,
                "note: %d layer(s) run on the ref kernels (pooling shapes "
                "oneDNN cannot express)\n",
                eml_net_ref_layers(net));
    if (eml_outsourced_begin(c, net, 1, &os)) {
        rc = 1;
        goto out;
    }
    eml_train_result res;
    st = eml_run_train(run, &tr.set, &te.set, &env, &res, &err);
    eml_outsourced_stop(&os);
    if (st == EML_OK && out != NULL) st = eml_weights_save(net, out, &err);
    if (st != EML_OK) goto fail;
    if (c->json) print_json(c, run, &res, out, ca, store, &os);
    else if (!quiet) print_summary(run, &res, out, ca, store);
    rc = 0;
    goto out;
fail:
    rc = eml_outsourced_fail(&os, st, &err);
out:
    eml_outsourced_end(&os);
    eml_wipe(&plat, sizeof(plat));
    eml_run_free(run);
    eml_store_close(store);
    eml_labelled_free(&tr);
    eml_labelled_free(&te);
    return rc;
}

int eml_dp_opt(int opt, const char *arg, eml_dp_opts *dp, int *have_clip)
{
    switch (opt) {
    case OPT_DP: dp->enabled = 1; return 0;
    case OPT_DP_FIXED: dp->fixed_batches = 1; return 0;
    case OPT_INSECURE_SEED: dp->insecure_seed = 1; return 0;
    case OPT_CLIP:
        *have_clip = 1;
        return eml_opt_double("--clip", arg, 0, 1e6, &dp->clip);
    case OPT_NOISE:
        if (eml_opt_double("--noise", arg, -1e300, 1e4, &dp->noise)) return 1;
        if (dp->noise < 0)
            return eml_fail("--noise: the noise multiplier must be >= 0 "
                            "(got %s)", arg);
        return 0;
    case OPT_TARGET_EPS:
        return eml_opt_double("--target-epsilon", arg, 0, 1e6,
                              &dp->target_epsilon);
    case OPT_DELTA:
        if (eml_opt_double("--delta", arg, -1e300, 1e300, &dp->delta) ||
            !(dp->delta > 0 && dp->delta < 1))
            return eml_fail("--delta: '%s' is not a number in (0, 1)", arg);
        return 0;
    default: return 0;
    }
}

int eml_dp_check(const char *cmd, const eml_dp_opts *dp, int have_clip,
                 int have_seed)
{
    if (!dp->enabled && (have_clip || dp->noise >= 0 ||
                         dp->target_epsilon > 0 || dp->fixed_batches ||
                         dp->insecure_seed))
        return eml_fail("%s: --clip, --noise, --target-epsilon, "
                        "--dp-fixed-batches and --insecure-seed need --dp",
                        cmd);
    if (!dp->enabled) return 0;
    if (!have_clip) return eml_fail("%s: --dp needs --clip C", cmd);
    if ((dp->noise >= 0) == (dp->target_epsilon > 0))
        return eml_fail("%s: --dp needs exactly one of --noise SIGMA and "
                        "--target-epsilon E",
                        cmd);
    if (have_seed && !dp->insecure_seed)
        return eml_fail("train: --seed cannot seed a DP run's noise and "
                        "sampling (they come from a CSPRNG); add "
                        "--insecure-seed to seed them anyway (the report then "
                        "says so)");
    return 0;
}

/* The confidential path's options: 0, or 1 after the error line. */
static int enclave_opt(int opt, const char *arg, eml_confidential_args *ca,
                       int *have_backend)
{
    long v;
    switch (opt) {
    case OPT_GRANT:
        if (ca->n_grants == EML_OWNERS_MAX)
            return eml_fail("train: at most %d --grant", EML_OWNERS_MAX);
        ca->grants[ca->n_grants++] = arg;
        return 0;
    case OPT_RECIPIENT: ca->recipient = arg; return 0;
    case OPT_REPORT_OUT: ca->report_out = arg; return 0;
    case OPT_REPORT_NONCE: ca->report_nonce = arg; return 0;
    case OPT_ENCLAVE:
        if (eml_backend_parse(arg, &ca->backend) != EML_OK)
            return eml_fail("--enclave: '%s' is not one of: sim, none", arg);
        *have_backend = 1;
        return 0;
    case OPT_HEAP:
        if (eml_opt_long("--heap-mb", arg, 64, 1 << 20, &v)) return 1;
        ca->heap_mb = (unsigned)v;
        return 0;
    default: return 0;
    }
}

/* The mirror's options fit together: 0, or 1 after the error line. */
static int mirror_check(const eml_confidential_args *ca,
                        int have_mirror_every, int have_ckpt_every,
                        int resume)
{
    if (ca->mirror != NULL && ca->checkpoint != NULL)
        return eml_fail("train: give --mirror or --checkpoint, not both");
    if (have_mirror_every && ca->mirror == NULL)
        return eml_fail("train: --mirror-every needs --mirror PATH");
    if (have_ckpt_every && ca->checkpoint == NULL)
        return eml_fail("train: --checkpoint-every needs --checkpoint FILE");
    if (resume && ca->mirror == NULL && ca->checkpoint == NULL)
        return eml_fail("train: --resume needs --mirror PATH or --checkpoint "
                        "FILE");
    return 0;
}

static const struct option train_options[] = {
    {"cfg", required_argument, 0, OPT_CFG},
    {"data", required_argument, 0, OPT_DATA},
    {"epochs", required_argument, 0, OPT_EPOCHS},
    {"batch", required_argument, 0, OPT_BATCH},
    {"lr", required_argument, 0, OPT_LR},
    {"seed", required_argument, 0, OPT_SEED},
    {"threads", required_argument, 0, OPT_THREADS},
    {"kernels", required_argument, 0, OPT_KERNELS},
    {"out", required_argument, 0, OPT_OUT},
    {"json", no_argument, 0, OPT_JSON},
    {"quiet", no_argument, 0, OPT_QUIET},
    {"grant", required_argument, 0, OPT_GRANT},
    {"recipient", required_argument, 0, OPT_RECIPIENT},
    {"report-out", required_argument, 0, OPT_REPORT_OUT},
    {"enclave", required_argument, 0, OPT_ENCLAVE},
    {"heap-mb", required_argument, 0, OPT_HEAP},
    EML_DP_LONG_OPTIONS,
    {"dp-fixed-batches", no_argument, 0, OPT_DP_FIXED},
    {"insecure-seed", no_argument, 0, OPT_INSECURE_SEED},
    {"mirror", required_argument, 0, OPT_MIRROR},
    {"mirror-every", required_argument, 0, OPT_MIRROR_EVERY},
    {"checkpoint", required_argument, 0, OPT_CHECKPOINT},
    {"checkpoint-every", required_argument, 0, OPT_CHECKPOINT_EVERY},
    {"resume", no_argument, 0, OPT_RESUME},
    {"report-nonce", required_argument, 0, OPT_REPORT_NONCE},
    {"outsource", required_argument, 0, OPT_OUTSOURCE},
    {"outsource-mode", required_argument, 0, OPT_OUTSOURCE_MODE},
    {"outsource-min-intensity", required_argument, 0,
     OPT_OUTSOURCE_MIN_INTENSITY},
    {"help", no_argument, 0, OPT_HELP},
    {0, 0, 0, 0}};

/* Whether the outsourcing mode can train, before anything is read or
 * sent: 0, or 1 with the error printed. */
static int outsource_check(const eml_run_spec *spec)
{
    if (spec->outsource == 0) return 0;
    eml_err err = {0};
    eml_status st = eml_outsource_mode_check(
        (eml_outsource_mode)spec->outsource, 1, &err);
    return st == EML_OK ? 0 : eml_fail_st(st, &err);
}

int eml_cmd_train(int argc, char **argv)
{
    eml_common_opts c;
    eml_common_init(&c);
    eml_dp_opts dp;
    memset(&dp, 0, sizeof(dp));
    dp.delta = 1e-5;
    dp.noise = -1;
    int have_seed = 0, have_clip = 0;
    eml_confidential_args ca;
    memset(&ca, 0, sizeof(ca));
    ca.heap_mb = EML_DEFAULT_HEAP_MB;
    int have_backend = 0;
    int have_mirror_every = 0, have_ckpt_every = 0;
    long save_every = 1;
    int resume = 0;
    long epochs = 0;
    float lr = 0;
    uint64_t seed = 1;
    const char *out = NULL;
    int quiet = 0, opt;
    while ((opt = getopt_long(argc, argv, "", train_options, NULL)) != -1) {
        if (opt == OPT_DATA) {
            if (ca.n_dirs == EML_OWNERS_MAX)
                return eml_fail("train: at most %d --data", EML_OWNERS_MAX);
            ca.dirs[ca.n_dirs++] = optarg;
        }
        int r = eml_common_opt(&c, opt, optarg, "train");
        if (r < 0) return 1;
        if (r > 0) continue;
        switch (opt) {
        case OPT_GRANT:
        case OPT_RECIPIENT:
        case OPT_REPORT_OUT:
        case OPT_REPORT_NONCE:
        case OPT_ENCLAVE:
        case OPT_HEAP:
            if (enclave_opt(opt, optarg, &ca, &have_backend)) return 1;
            break;
        case OPT_EPOCHS:
            if (eml_opt_long("--epochs", optarg, 1, 100000, &epochs)) return 1;
            break;
        case OPT_LR:
            if (eml_opt_float("--lr", optarg, 0, 100, &lr)) return 1;
            break;
        case OPT_SEED:
            if (eml_opt_u64("--seed", optarg, &seed)) return 1;
            have_seed = 1;
            break;
        case OPT_DP:
        case OPT_CLIP:
        case OPT_NOISE:
        case OPT_TARGET_EPS:
        case OPT_DELTA:
        case OPT_DP_FIXED:
        case OPT_INSECURE_SEED:
            if (eml_dp_opt(opt, optarg, &dp, &have_clip)) return 1;
            break;
        case OPT_MIRROR: ca.mirror = optarg; break;
        case OPT_CHECKPOINT: ca.checkpoint = optarg; break;
        case OPT_MIRROR_EVERY:
        case OPT_CHECKPOINT_EVERY:
            if (eml_opt_long(opt == OPT_MIRROR_EVERY ? "--mirror-every"
                                                     : "--checkpoint-every",
                             optarg, 1, 1000000000L, &save_every))
                return 1;
            if (opt == OPT_MIRROR_EVERY) have_mirror_every = 1;
            else have_ckpt_every = 1;
            break;
        case OPT_RESUME: resume = 1; break;
        case OPT_OUT: out = optarg; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: fputs(train_usage, stdout); return 0;
        default: return eml_opt_unknown("train", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("train: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL) return eml_fail("train: --cfg is required");
    if (mirror_check(&ca, have_mirror_every, have_ckpt_every, resume))
        return 1;
    if (eml_dp_check("train", &dp, have_clip, have_seed)) return 1;
    /* Every training option, once (run.h); DP's fields are zero when
     * it is off. */
    eml_run_spec *spec = &ca.spec;
    *spec = eml_run_spec_default();
    spec->epochs = (int)epochs;
    spec->batch = (int)c.batch;
    spec->lr = lr;
    spec->seed = seed;
    spec->threads = c.threads;
    spec->kernels = (int)c.kernels;
    if (dp.enabled) spec->dp = dp;
    else memset(&spec->dp, 0, sizeof(spec->dp));
    spec->mirror = ca.mirror != NULL || ca.checkpoint != NULL;
    spec->save_every = save_every;
    spec->resume = resume;
    spec->outsource = c.outsource != NULL ? c.outsource_mode : 0;
    spec->outsource_min_intensity = c.outsource_min_intensity;
    ca.outsource = c.outsource;
    if (outsource_check(spec)) return 1;
    ca.cfg = c.cfg;
    ca.out = out;
    ca.json = c.json;
    ca.quiet = quiet;
    if (ca.n_grants > 0) {
        if (!have_backend) ca.backend = EML_BACKEND_SIM;
        return eml_train_confidential(&ca);
    }
    if (have_backend && ca.backend == EML_BACKEND_SIM)
        return eml_fail("train: the enclave only takes encrypted data: give "
                        "one --grant per --data directory (plaintext data "
                        "trains with --enclave none)");
    if (ca.recipient != NULL || ca.report_out != NULL ||
        ca.report_nonce != NULL)
        return eml_fail("train: --recipient, --report-out and --report-nonce "
                        "need --grant");
    if (ca.n_dirs > 1)
        return eml_fail("train: several --data directories need --grant");

    return train_in_process(&c, &ca, out, quiet);
}
