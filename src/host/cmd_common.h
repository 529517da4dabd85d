/*
 * cmd_common.h - what the engine commands (train, eval, predict) share:
 * their option ids and common options (cfg, data, weights, threads,
 * kernels, json, batch), and building the network a cfg describes.  Host
 * side.
 */
#ifndef EML_HOST_CMD_COMMON_H
#define EML_HOST_CMD_COMMON_H

#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/kernels.h"
#include "enclaveml/net.h"
#include "host/enclave_host.h"

/* Options shared by the engine commands. */
typedef struct eml_common_opts {
    const char *cfg;
    const char *data;
    const char *weights;
    int threads;
    eml_kernels_kind kernels;
    int json;
    long batch;
    /* --outsource ADDR [--outsource-mode private|integrity]: the linear
     * layers' products go to a worker (cmd_outsource.h); NULL: not. */
    const char *outsource;
    int outsource_mode; /* eml_outsource_mode */
    double outsource_min_intensity; /* --outsource-min-intensity, 0: all */
} eml_common_opts;

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
    OPT_OUTSOURCE,
    OPT_OUTSOURCE_MODE,
    OPT_OUTSOURCE_MIN_INTENSITY,
};

/* Takes a common option: 1 taken, 0 not a common one, -1 bad value (the
 * error is printed). */
int eml_common_opt(eml_common_opts *c, int opt, const char *arg,
                   const char *name);
/* Defaults: the Debian Fashion-MNIST folder, fast kernels, all cores. */
void eml_common_init(eml_common_opts *c);
/* The options of the commands that start an enclave (evaluate, predict,
 * serve, serve-worker): --enclave sim|none, --heap-mb M, --threads N,
 * into o.  0 taken, 1 a bad value (the error line printed, naming cmd),
 * -1 not one of them. */
int eml_enclave_opt(eml_host_opts *o, const char *cmd, int opt,
                    const char *v);
/* Their defaults: sim, EML_DEFAULT_HEAP_MB, every online CPU (0). */
void eml_enclave_opts_init(eml_host_opts *o);
/* Loads the cfg and builds its net for at most max_batch examples (an
 * inference net, without gradients, if inference); 0, or 1 with the error
 * printed. */
int eml_build_net(const eml_common_opts *c, eml_netcfg **cfg, eml_net **net,
                  int max_batch, uint64_t seed, int inference);

/* The commands (argv[0] is the command's name). */
int eml_cmd_train(int argc, char **argv);
int eml_cmd_eval(int argc, char **argv);
int eml_cmd_predict(int argc, char **argv);
int eml_cmd_convert(int argc, char **argv);
int eml_cmd_bench(int argc, char **argv);
#endif
