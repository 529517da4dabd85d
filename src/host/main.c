/*
 * main.c - the `enclaveml` command line (untrusted host program).
 *
 * Each command parses its options strictly, loads files, calls the engine,
 * and prints either human text on stderr or one JSON object on stdout
 * (--json).  Every failure ends in exactly one line
 * "enclaveml: error: ..." on stderr and a non-zero exit.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enclaveml/cfg.h"
#include "enclaveml/dp.h"
#include "enclaveml/kernels.h"
#include "enclaveml/net.h"
#include "enclaveml/train.h"
#include "host/cli.h"
#include "host/cmd_crypto.h"
#include "host/cmd_enclave.h"
#include "host/cmd_privacy.h"
#include "host/hostio.h"
#include "host/json.h"
#include "host/pool.h"
#include "sim/platform.h"
#include "enclaveml/crypto.h"
#include "enclaveml/mirror.h"
#include "host/fileio.h"
#include "host/progress.h"

#define EXIT_USAGE 2
#define EML_GOMP_SPINCOUNT "10000"

/* Options shared by the engine commands. */
typedef struct common_opts {
    const char *cfg;
    const char *data;
    const char *weights;
    int threads;
    eml_kernels_kind kernels;
    int json;
    long batch;
} common_opts;

enum {
    OPT_CFG = 256,
    OPT_DATA,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_LR,
    OPT_SEED,
    OPT_THREADS,
    OPT_KERNELS,
    OPT_OUT,
    OPT_JSON,
    OPT_WEIGHTS,
    OPT_IMAGES,
    OPT_LIMIT,
    OPT_HELP,
    OPT_QUIET,
    OPT_GRANT,
    OPT_RECIPIENT,
    OPT_REPORT_OUT,
    OPT_ENCLAVE,
    OPT_HEAP,
    OPT_DP,
    OPT_CLIP,
    OPT_NOISE,
    OPT_TARGET_EPS,
    OPT_DELTA,
    OPT_DP_FIXED,
    OPT_INSECURE_SEED,
    OPT_MIRROR,
    OPT_MIRROR_EVERY,
    OPT_CHECKPOINT,
    OPT_CHECKPOINT_EVERY,
    OPT_RESUME,
    OPT_REPORT_NONCE,
};

static int common_opt(common_opts *c, int opt, const char *arg,
                      const char *name)
{
    long v;
    switch (opt) {
    case OPT_CFG: c->cfg = arg; return 1;
    case OPT_DATA: c->data = arg; return 1;
    case OPT_WEIGHTS: c->weights = arg; return 1;
    case OPT_JSON: c->json = 1; return 1;
    case OPT_THREADS:
        if (eml_opt_long("--threads", arg, 1, 1024, &v)) return -1;
        c->threads = (int)v;
        return 1;
    case OPT_BATCH:
        if (eml_opt_long("--batch", arg, 1, EML_CFG_MAX_BATCH, &v)) return -1;
        c->batch = v;
        return 1;
    case OPT_KERNELS:
        if (eml_kernels_parse(arg, &c->kernels) != EML_OK) {
            eml_fail("--kernels: '%s' is not one of: ref, fast", arg);
            return -1;
        }
        return 1;
    default:
        (void)name;
        return 0;
    }
}

static void common_init(common_opts *c)
{
    memset(c, 0, sizeof(*c));
    c->data = EML_DEFAULT_DATA_DIR;
    c->kernels = EML_KERNELS_FAST;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = n > 0 ? (int)n : 1;
}

/* Builds the net for cfg with the common options. */
static int build_net(const common_opts *c, eml_netcfg **cfg, eml_net **net,
                     int max_batch, uint64_t seed)
{
    eml_err err = {0};
    eml_status st = eml_cfg_load(c->cfg, cfg, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_net_opts o = {c->kernels, max_batch, seed};
    st = eml_net_new(*cfg, &o, net, &err);
    if (st != EML_OK) {
        char msg[sizeof(err.msg)];
        snprintf(msg, sizeof(msg), "%s", eml_err_msg(&err, st));
        return eml_fail("%s: %s", c->cfg, msg);
    }
    eml_kernels_set_threads(c->threads);
    return 0;
}

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
 * sealing secret), and bound to the cfg, the options and the data. */
static eml_status open_mirror(const eml_confidential_args *ca,
                              const char *cfg_path, const eml_train_opts *to,
                              const eml_dataset *tr, const eml_dataset *te,
                              int quiet, eml_store **store,
                              eml_mirror **mirror, eml_err *err)
{
    static const char label[] = "enclaveml in-process v1";
    char home[4096];
    eml_platform plat;
    eml_mirror_opts mo;
    uint8_t *text = NULL;
    size_t tlen = 0;
    memset(&plat, 0, sizeof(plat));
    memset(&mo, 0, sizeof(mo));
    eml_status st = eml_store_setup(ca->mirror, ca->checkpoint, ca->resume,
                                    quiet, store, err);
    if (st == EML_OK) st = eml_platform_home(home, sizeof(home), err);
    if (st == EML_OK) st = eml_host_mirror_key(home, plat.seal_secret, err);
    if (st == EML_OK)
        st = eml_sha256(plat.measurement, label, sizeof(label) - 1);
    if (st == EML_OK) st = eml_file_read(cfg_path, &text, &tlen, err);
    if (st == EML_OK) st = eml_train_run_digest(mo.cfg_digest, text, tlen, to);
    if (st == EML_OK) st = eml_dataset_digest(mo.data_digest, tr, te);
    if (st == EML_OK) {
        mo.seal_secret = plat.seal_secret;
        mo.measurement = plat.measurement;
        mo.every = ca->save_every;
        st = eml_mirror_new(&mo, eml_store_ops_of(*store), mirror, err);
    }
    eml_wipe(&plat, sizeof(plat));
    free(text);
    return st;
}

static int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
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
        {"dp", no_argument, 0, OPT_DP},
        {"clip", required_argument, 0, OPT_CLIP},
        {"noise", required_argument, 0, OPT_NOISE},
        {"target-epsilon", required_argument, 0, OPT_TARGET_EPS},
        {"delta", required_argument, 0, OPT_DELTA},
        {"dp-fixed-batches", no_argument, 0, OPT_DP_FIXED},
        {"insecure-seed", no_argument, 0, OPT_INSECURE_SEED},
        {"mirror", required_argument, 0, OPT_MIRROR},
        {"mirror-every", required_argument, 0, OPT_MIRROR_EVERY},
        {"checkpoint", required_argument, 0, OPT_CHECKPOINT},
        {"checkpoint-every", required_argument, 0, OPT_CHECKPOINT_EVERY},
        {"resume", no_argument, 0, OPT_RESUME},
        {"report-nonce", required_argument, 0, OPT_REPORT_NONCE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    common_opts c;
    common_init(&c);
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
    ca.save_every = 1;
    long epochs = 0;
    float lr = 0;
    uint64_t seed = 1;
    const char *out = NULL;
    int quiet = 0, opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_DATA) {
            if (ca.n_dirs == EML_OWNERS_MAX)
                return eml_fail("train: at most %d --data", EML_OWNERS_MAX);
            ca.dirs[ca.n_dirs++] = optarg;
        }
        int r = common_opt(&c, opt, optarg, "train");
        if (r < 0) return 1;
        if (r > 0) continue;
        switch (opt) {
        case OPT_GRANT:
            if (ca.n_grants == EML_OWNERS_MAX)
                return eml_fail("train: at most %d --grant", EML_OWNERS_MAX);
            ca.grants[ca.n_grants++] = optarg;
            break;
        case OPT_RECIPIENT: ca.recipient = optarg; break;
        case OPT_REPORT_OUT: ca.report_out = optarg; break;
        case OPT_ENCLAVE:
            if (eml_backend_parse(optarg, &ca.backend) != EML_OK)
                return eml_fail("--enclave: '%s' is not one of: sim, none",
                                optarg);
            have_backend = 1;
            break;
        case OPT_HEAP: {
            long v;
            if (eml_opt_long("--heap-mb", optarg, 64, 1 << 20, &v)) return 1;
            ca.heap_mb = (unsigned)v;
            break;
        }
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
        case OPT_DP: dp.enabled = 1; break;
        case OPT_CLIP:
            if (eml_opt_double("--clip", optarg, 0, 1e6, &dp.clip)) return 1;
            have_clip = 1;
            break;
        case OPT_NOISE:
            if (eml_opt_double("--noise", optarg, -1e300, 1e4, &dp.noise))
                return 1;
            if (dp.noise < 0)
                return eml_fail("--noise: the noise multiplier must be >= 0 "
                                "(got %s)", optarg);
            break;
        case OPT_TARGET_EPS:
            if (eml_opt_double("--target-epsilon", optarg, 0, 1e6,
                               &dp.target_epsilon))
                return 1;
            break;
        case OPT_DELTA:
            if (eml_opt_double("--delta", optarg, -1e300, 1e300, &dp.delta) ||
                !(dp.delta > 0 && dp.delta < 1))
                return eml_fail("--delta: '%s' is not a number in (0, 1)",
                                optarg);
            break;
        case OPT_DP_FIXED: dp.fixed_batches = 1; break;
        case OPT_INSECURE_SEED: dp.insecure_seed = 1; break;
        case OPT_MIRROR: ca.mirror = optarg; break;
        case OPT_CHECKPOINT: ca.checkpoint = optarg; break;
        case OPT_MIRROR_EVERY:
        case OPT_CHECKPOINT_EVERY: {
            long v;
            if (eml_opt_long(opt == OPT_MIRROR_EVERY ? "--mirror-every"
                                                     : "--checkpoint-every",
                             optarg, 1, 1000000000L, &v))
                return 1;
            if (opt == OPT_MIRROR_EVERY) have_mirror_every = 1;
            else have_ckpt_every = 1;
            ca.save_every = v;
            break;
        }
        case OPT_RESUME: ca.resume = 1; break;
        case OPT_REPORT_NONCE: ca.report_nonce = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: fputs(train_usage, stdout); return 0;
        default: return eml_opt_unknown("train", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("train: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL) return eml_fail("train: --cfg is required");
    if (ca.mirror != NULL && ca.checkpoint != NULL)
        return eml_fail("train: give --mirror or --checkpoint, not both");
    if (have_mirror_every && ca.mirror == NULL)
        return eml_fail("train: --mirror-every needs --mirror PATH");
    if (have_ckpt_every && ca.checkpoint == NULL)
        return eml_fail("train: --checkpoint-every needs --checkpoint FILE");
    if (ca.resume && ca.mirror == NULL && ca.checkpoint == NULL)
        return eml_fail("train: --resume needs --mirror PATH or --checkpoint "
                        "FILE");
    if (!dp.enabled && (have_clip || dp.noise >= 0 || dp.target_epsilon > 0 ||
                        dp.fixed_batches || dp.insecure_seed))
        return eml_fail("train: --clip, --noise, --target-epsilon, "
                        "--dp-fixed-batches and --insecure-seed need --dp");
    if (dp.enabled) {
        if (!have_clip) return eml_fail("train: --dp needs --clip C");
        if ((dp.noise >= 0) == (dp.target_epsilon > 0))
            return eml_fail("train: --dp needs exactly one of --noise SIGMA "
                            "and --target-epsilon E");
        if (have_seed && !dp.insecure_seed)
            return eml_fail("train: --seed cannot seed a DP run's noise and "
                            "sampling (they come from a CSPRNG); add "
                            "--insecure-seed to seed them anyway (the report "
                            "then says so)");
        if (!have_seed && !dp.insecure_seed) seed = 1;
    }
    ca.dp = dp;
    if (ca.n_grants > 0) {
        ca.cfg = c.cfg;
        ca.out = out;
        ca.epochs = (int)epochs;
        ca.batch = (int)c.batch;
        ca.lr = lr;
        ca.seed = seed;
        ca.threads = c.threads;
        ca.kernels = c.kernels;
        ca.json = c.json;
        ca.quiet = quiet;
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

    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_store *store = NULL;
    eml_mirror *mirror = NULL;
    eml_labelled tr, te;
    memset(&tr, 0, sizeof(tr));
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    eml_status st;
    int rc = 1;

    /* Peek at the cfg for the batch size before building the net. */
    st = eml_cfg_load(c.cfg, &cfg, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_train_opts to = eml_train_opts_default(cfg);
    eml_cfg_free(cfg);
    cfg = NULL;
    if (c.batch > 0) to.batch = (int)c.batch;
    if (epochs > 0) to.epochs = (int)epochs;
    if (lr > 0) to.lr = lr;
    to.seed = seed;
    if (build_net(&c, &cfg, &net, to.batch, seed)) goto out;

    st = eml_labelled_load(c.data, "train", &tr, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (tr.set.item != eml_net_input_size(net) ||
        te.set.item != eml_net_input_size(net)) {
        rc = eml_fail("images in %s have %zu values each but %s takes %zu "
                  "(height x width x channels)",
                  c.data, tr.set.item, c.cfg,
                  eml_net_input_size(net));
        goto out;
    }
    to.dp = dp;
    if (dp.enabled) {
        double q;
        long steps;
        eml_dp_plan(tr.set.count, to.batch, to.epochs, &q, &steps);
        if (dp.target_epsilon > 0) {
            st = eml_dp_noise_for_target(q, steps, dp.delta,
                                         dp.target_epsilon, dp.clip,
                                         eml_net_param_count(net),
                                         &to.dp.noise, &err);
            if (st != EML_OK) {
                rc = eml_fail_st(st, &err);
                goto out;
            }
        }
        if (!quiet)
            fprintf(stderr,
                    "DP-SGD: clip %g, noise multiplier %.4g, sampling rate "
                    "%.6g, %ld steps, delta %g%s\n",
                    dp.clip, to.dp.noise, q, steps, dp.delta,
                    dp.fixed_batches ? ", fixed batches (the bound assumes "
                                       "Poisson sampling)"
                                     : ", Poisson sampling");
    }
    eml_progress prog;
    eml_progress_init(&prog, quiet);
    to.progress = eml_progress_cb;
    to.progress_user = &prog;
    if (ca.mirror != NULL || ca.checkpoint != NULL) {
        st = open_mirror(&ca, c.cfg, &to, &tr.set, &te.set, quiet, &store,
                         &mirror, &err);
        if (st != EML_OK) {
            rc = eml_fail_st(st, &err);
            goto out;
        }
        to.mirror = mirror;
        to.resume = ca.resume;
    }
    if (!quiet)
        fprintf(stderr,
                "training %s: %zu parameters, %zu images, %d epochs, batch "
                "%d, %s kernels, %d threads\n",
                c.cfg, eml_net_param_count(net), tr.set.count, to.epochs,
                to.batch, eml_net_kernels(net)->name, c.threads);
    eml_train_result res;
    st = eml_train(net, cfg, &tr.set, &te.set, &to, &res, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (out != NULL) {
        st = eml_weights_save(net, out, &err);
        if (st != EML_OK) {
            rc = eml_fail_st(st, &err);
            goto out;
        }
    }
    if (c.json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_num(&j, "test_accuracy", res.test_accuracy);
        eml_json_num(&j, "test_loss", res.test_loss);
        eml_json_num(&j, "train_loss", res.train_loss);
        eml_json_num(&j, "train_accuracy", res.train_accuracy);
        eml_json_int(&j, "epochs", res.epochs);
        eml_json_int(&j, "steps", res.steps);
        eml_json_num(&j, "images_per_second", res.images_per_second);
        eml_json_int(&j, "parameters", (long long)eml_net_param_count(net));
        eml_json_num(&j, "seconds", res.seconds);
        eml_json_str(&j, "kernels", eml_net_kernels(net)->name);
        eml_json_int(&j, "threads", c.threads);
        if (dp.enabled) {
            eml_json_bool(&j, "dp", 1);
            eml_json_num(&j, "epsilon", res.epsilon);
            eml_json_num(&j, "delta", dp.delta);
            eml_json_num(&j, "noise", to.dp.noise);
            eml_json_num(&j, "clip", dp.clip);
            eml_json_num(&j, "sampling_rate", res.sampling_rate);
            eml_json_str(&j, "accountant",
                         dp.fixed_batches
                             ? "rdp-sampled-gaussian (assumes Poisson "
                               "sampling; batches were fixed)"
                             : "rdp-sampled-gaussian (Mironov et al. 2019)");
            eml_json_bool(&j, "insecure_seed", dp.insecure_seed);
            eml_json_bool(&j, "stopped_at_target", res.dp_stopped_early);
        }
        if (out != NULL) eml_json_str(&j, "weights", out);
        if (mirror != NULL) {
            eml_json_int(&j, "resumed_step", res.resumed_step);
            eml_json_int(&j, "mirror_saves", res.mirror_saves);
            eml_json_num(&j, "mirror_seconds", res.mirror_seconds);
            eml_json_str(&j, ca.mirror ? "mirror_mode" : "checkpoint_mode",
                         eml_store_mode(store));
        }
        eml_json_end(&j);
    } else if (!quiet) {
        if (dp.enabled)
            fprintf(stderr, "privacy spent: epsilon %.3f at delta %g (RDP "
                            "order %g)%s\n",
                    res.epsilon, dp.delta, res.order,
                    res.dp_stopped_early ? ", stopped at the target" : "");
        fprintf(stderr, "test accuracy %.2f%% after %d epochs (%.1f s, %.0f "
                        "images/s)%s%s\n",
                100.0 * res.test_accuracy, res.epochs, res.seconds,
                res.images_per_second, out ? ", weights written to " : "",
                out ? out : "");
    }
    if (mirror != NULL && !quiet && !c.json)
        fprintf(stderr, "%s: %ld saves, %.3f s in all (%.2f ms each)\n",
                ca.mirror ? "mirror" : "checkpoint", res.mirror_saves,
                res.mirror_seconds,
                res.mirror_saves ? 1e3 * res.mirror_seconds /
                                       (double)res.mirror_saves
                                 : 0.0);
    rc = 0;
out:
    eml_mirror_free(mirror);
    eml_store_close(store);
    eml_labelled_free(&tr);
    eml_labelled_free(&te);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

/* ==== eval ==== */

static const char eval_usage[] =
    "usage: enclaveml eval --cfg F --weights W.safetensors [--data DIR]\n"
    "                      [--batch N] [--threads N] [--kernels ref|fast]\n"
    "                      [--json]\n"
    "\n"
    "Evaluates the weights on the t10k test pair in DIR; prints\n"
    "test_accuracy, test_loss and count.\n";

static int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"weights", required_argument, 0, OPT_WEIGHTS},
        {"data", required_argument, 0, OPT_DATA},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    common_opts c;
    common_init(&c);
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = common_opt(&c, opt, optarg, "eval");
        if (r < 0) return 1;
        if (r > 0) continue;
        if (opt == OPT_HELP) {
            fputs(eval_usage, stdout);
            return 0;
        }
        return eml_opt_unknown("eval", argc, argv);
    }
    if (optind < argc)
        return eml_fail("eval: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL || c.weights == NULL)
        return eml_fail("eval: --cfg and --weights are required");
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_labelled te;
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    int rc = 1;
    if (build_net(&c, &cfg, &net, c.batch > 0 ? (int)c.batch : 256, 1))
        goto out;
    eml_status st = eml_weights_load(net, c.weights, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    double loss = 0, acc = 0;
    if (st == EML_OK) st = eml_evaluate(net, &te.set, &loss, &acc, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (c.json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_num(&j, "test_accuracy", acc);
        eml_json_num(&j, "test_loss", loss);
        eml_json_int(&j, "count", (long long)te.set.count);
        eml_json_end(&j);
    } else {
        printf("test accuracy %.2f%%, test loss %.4f, %zu images\n",
               100.0 * acc, loss, te.set.count);
    }
    rc = 0;
out:
    eml_labelled_free(&te);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

/* ==== predict ==== */

static const char predict_usage[] =
    "usage: enclaveml predict --cfg F --weights W.safetensors --images IDX\n"
    "                         [--limit N] [--threads N]\n"
    "                         [--kernels ref|fast] [--json]\n"
    "\n"
    "Runs the network on the images of an IDX file (gzipped or not) and\n"
    "prints the outputs of the final layer and the argmax predictions.\n";

static int cmd_predict(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"weights", required_argument, 0, OPT_WEIGHTS},
        {"images", required_argument, 0, OPT_IMAGES},
        {"limit", required_argument, 0, OPT_LIMIT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    common_opts c;
    common_init(&c);
    const char *images = NULL;
    long limit = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = common_opt(&c, opt, optarg, "predict");
        if (r < 0) return 1;
        if (r > 0) continue;
        switch (opt) {
        case OPT_IMAGES: images = optarg; break;
        case OPT_LIMIT:
            if (eml_opt_long("--limit", optarg, 0, LONG_MAX, &limit)) return 1;
            break;
        case OPT_HELP: fputs(predict_usage, stdout); return 0;
        default: return eml_opt_unknown("predict", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("predict: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL || c.weights == NULL || images == NULL)
        return eml_fail("predict: --cfg, --weights and --images are required");
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_idx idx;
    memset(&idx, 0, sizeof(idx));
    eml_err err = {0};
    int rc = 1;
    int mb = c.batch > 0 ? (int)c.batch : 256;
    if (build_net(&c, &cfg, &net, mb, 1)) goto out;
    eml_status st = eml_weights_load(net, c.weights, &err);
    if (st == EML_OK) st = eml_idx_load(images, &idx, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (idx.item != eml_net_input_size(net)) {
        rc = eml_fail("%s: images have %zu values each but %s takes %zu", images,
                  idx.item, c.cfg, eml_net_input_size(net));
        goto out;
    }
    size_t count = idx.count;
    if (limit >= 0 && (size_t)limit < count) count = (size_t)limit;
    size_t k = eml_net_output_size(net);
    eml_json j;
    if (c.json) {
        eml_json_begin(&j, stdout);
        eml_json_int(&j, "count", (long long)count);
        eml_json_array_begin(&j, "outputs");
    }
    size_t *pred = malloc((count ? count : 1) * sizeof(size_t));
    if (pred == NULL) {
        rc = eml_fail("out of memory");
        goto out;
    }
    for (size_t first = 0; first < count; first += (size_t)mb) {
        int n = (int)(count - first < (size_t)mb ? count - first : (size_t)mb);
        float *x = eml_net_input(net);
        const uint8_t *img = idx.data + first * idx.item;
        for (size_t p = 0; p < (size_t)n * idx.item; p++)
            x[p] = (float)img[p] * (1.0f / 255.0f);
        st = eml_net_forward(net, n, 0);
        if (st != EML_OK) {
            free(pred);
            rc = eml_fail("forward pass failed: %s", eml_status_str(st));
            goto out;
        }
        const float *o = eml_net_output(net);
        for (int b = 0; b < n; b++) {
            const float *ob = o + (size_t)b * k;
            size_t best = 0;
            for (size_t q = 0; q < k; q++)
                if (ob[q] > ob[best]) best = q;
            pred[first + (size_t)b] = best;
            if (c.json) {
                eml_json_array_begin(&j, NULL);
                for (size_t q = 0; q < k; q++) eml_json_num(&j, NULL, ob[q]);
                eml_json_array_end(&j);
            }
        }
    }
    if (c.json) {
        eml_json_array_end(&j);
        eml_json_array_begin(&j, "predictions");
        for (size_t i = 0; i < count; i++) eml_json_int(&j, NULL, (long long)pred[i]);
        eml_json_array_end(&j);
        eml_json_end(&j);
    } else {
        for (size_t i = 0; i < count; i++) printf("%zu\t%zu\n", i, pred[i]);
    }
    free(pred);
    rc = 0;
out:
    eml_idx_free(&idx);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

/* ==== dispatch ==== */

static const char main_usage[] =
    "usage: enclaveml <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     train a network described by a Darknet-style cfg\n"
    "  eval      evaluate weights on a test set\n"
    "  predict   run a network on the images of an IDX file\n"
    "  keygen    make an owner's key pair (NAME.key, NAME.pub)\n"
    "  encrypt   encrypt a file into the chunked container (.emlc)\n"
    "  decrypt   decrypt a container\n"
    "  measure   print the enclave program's measurement\n"
    "  attest    get the enclave's signed attestation report\n"
    "  verify    check an attestation or training report\n"
    "  grant     release a data key to an attested enclave\n"
    "  privacy   compute epsilon (or the noise for a target epsilon)\n"
    "\n"
    "'enclaveml <command> --help' describes each command's options.\n";

/* OpenMP threads spin-wait at every barrier by default.  On a small machine
 * shared with other work (2 cores here) a spinning thread that lost its
 * core stalls every barrier: a 2-thread training step ran 3.6x slower than
 * with passive waiting.  libgomp reads its settings when it loads, so the
 * only way to change the default is to set it and start again; a setting
 * the user gave is left alone. */
static void openmp_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") != NULL || getenv("GOMP_SPINCOUNT") != NULL)
        return;
    if (setenv("GOMP_SPINCOUNT", EML_GOMP_SPINCOUNT, 0) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default */
}

int main(int argc, char **argv)
{
    openmp_wait_policy(argv);
    if (argc < 2) {
        fputs(main_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        puts("enclaveml 0.1.0");
        return 0;
    }
    /* getopt_long sees the command's own arguments. */
    argc--;
    argv++;
    opterr = 0;
    if (strcmp(cmd, "train") == 0) return cmd_train(argc, argv);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc, argv);
    if (strcmp(cmd, "predict") == 0) return cmd_predict(argc, argv);
    if (strcmp(cmd, "keygen") == 0) return eml_cmd_keygen(argc, argv);
    if (strcmp(cmd, "encrypt") == 0) return eml_cmd_encrypt(argc, argv);
    if (strcmp(cmd, "decrypt") == 0) return eml_cmd_decrypt(argc, argv);
    if (strcmp(cmd, "privacy") == 0) return eml_cmd_privacy(argc, argv);
    if (strcmp(cmd, "measure") == 0) return eml_cmd_measure(argc, argv);
    if (strcmp(cmd, "attest") == 0) return eml_cmd_attest(argc, argv);
    if (strcmp(cmd, "verify") == 0) return eml_cmd_verify(argc, argv);
    if (strcmp(cmd, "grant") == 0) return eml_cmd_grant(argc, argv);
    eml_fail("unknown command '%s' (see enclaveml --help)", cmd);
    return EXIT_USAGE;
}
