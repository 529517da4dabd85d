/*
 * cmd_train.h - `enclaveml train` (cmd_train.c): the arguments its two
 * paths take from the command line.  Host side.
 */
#ifndef EML_HOST_CMD_TRAIN_H
#define EML_HOST_CMD_TRAIN_H

#include <stdint.h>

#include "enclaveml/edl.h"
#include "enclaveml/kernels.h"
#include "enclaveml/run.h"
#include "enclaveml/train.h"
#include "host/cmd_common.h"
#include "host/enclave_host.h"

typedef struct eml_confidential_args {
    const char *cfg;
    const char *dirs[EML_OWNERS_MAX];
    int n_dirs;
    const char *grants[EML_OWNERS_MAX];
    int n_grants;
    const char *recipient, *out, *report_out;
    const char *report_nonce; /* hex, or NULL */
    eml_backend backend;
    unsigned heap_mb;
    int json, quiet;
    eml_run_spec spec; /* every training option (train.h) */
    const char *outsource; /* the worker's address, or NULL */
    /* the training-state mirror (a libpmem2 pool) or disk checkpoint */
    const char *mirror, *checkpoint;
    /* A decentralized node (node.enabled): its graph (a spec or an edge
     * list's text), share spec, run id, and the transport the NODE_*
     * ocalls use (docs/decentral.md). */
    eml_node_spec node;
    const char *node_graph, *node_share;
    uint8_t node_run_id[32];
    uint8_t node_accept[EML_NODE_ACCEPT_MAX][32]; /* the run's policy */
    int n_node_accept;
    const struct eml_node_io *node_io;
} eml_confidential_args;

int eml_train_confidential(const eml_confidential_args *a);

/* The DP options (OPT_DP, OPT_CLIP, ... of cmd_common.h) into dp: 0, or
 * 1 after the error line; and whether they fit together (cmd names the
 * command in the error; have_seed: --seed was given, which a DP run must
 * not use for its noise unless --insecure-seed). */
int eml_dp_opt(int opt, const char *arg, eml_dp_opts *dp, int *have_clip);
/* The getopt rows of the DP options every training command takes, and
 * whether an option is one of them. */
#define EML_DP_LONG_OPTIONS                                                  \
    {"dp", no_argument, 0, OPT_DP}, {"clip", required_argument, 0, OPT_CLIP}, \
        {"noise", required_argument, 0, OPT_NOISE},                          \
        {"target-epsilon", required_argument, 0, OPT_TARGET_EPS},            \
        {"delta", required_argument, 0, OPT_DELTA}
static inline int eml_is_dp_opt(int opt)
{
    return opt == OPT_DP || opt == OPT_CLIP || opt == OPT_NOISE ||
           opt == OPT_TARGET_EPS || opt == OPT_DELTA;
}
int eml_dp_check(const char *cmd, const eml_dp_opts *dp, int have_clip,
                 int have_seed);
#endif
