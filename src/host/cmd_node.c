/*
 * cmd_node.c - `enclaveml node`: one node of a decentralized run
 * (docs/decentral.md).  It trains on its own data with the engine's
 * trainer, and every --local-steps steps (the trainer's step hook) it
 * takes part in a round: it shares part of its flat parameter vector with
 * each neighbour, takes what the neighbours shared for this round until
 * the round's deadline, averages (Metropolis-Hastings), evaluates, and
 * prints one JSON line per round on stdout.  A neighbour that misses the
 * deadline is left out of the round (its weight stays at home) and named
 * on stderr; frames of a later round wait for it, frames of an earlier
 * one are dropped; a frame the channel refuses is counted by class.
 *
 * This slice runs the baseline, `--enclave none`: the node's training and
 * averaging run in this process and the frames travel in the clear
 * (EML_DMSG_CLEAR).  The enclave's node loop, with attested channels, is
 * the next slice.  Host side.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "enclaveml/decentral.h"
#include "enclaveml/run.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_decentral.h"
#include "host/fileio.h"
#include "host/hostio.h"
#include "host/node_link.h"

typedef struct held {
    uint8_t *p;
    size_t n;
    uint64_t round;
} held;

typedef struct node {
    uint32_t id, n, degree;
    const uint32_t *nbr; /* into topo */
    eml_topo topo;
    eml_dchan *chan;
    eml_node_link *link;
    eml_sharer *sharer;
    eml_share_spec share;
    eml_rng rng;
    long local_steps, rounds, round;
    double deadline_s;
    eml_net *net;
    const eml_dataset *test;
    double *scratch;
    uint8_t *frame;
    uint8_t **obuf;
    size_t *ocap;
    eml_share_view *views;
    const eml_share_view **vptr;
    held *hold;
    size_t nhold, caphold;
    uint64_t refused[EML_DMSG_REFUSALS], late, missed;
    double avg_cpu; /* opening and averaging, CPU seconds, summed */
    int done;
} node;

static const char node_usage[] =
    "usage: enclaveml node --id I --peers FILE --cfg F --data DIR\n"
    "                      --topology T --rounds R [--local-steps L]\n"
    "                      [--share full|random:F|topk:F] [--pad]\n"
    "                      [--seed S] [--batch N] [--lr X] [--threads N]\n"
    "                      [--deadline-ms MS] [--enclave none]\n"
    "\n"
    "Runs node I of a decentralized run (docs/decentral.md): FILE lists\n"
    "every node's \"ID tcp:HOST:PORT\"; this node listens on its own and\n"
    "exchanges with its neighbours in topology T (ring, full, regular:D,\n"
    "smallworld:K,P, or an edge-list file; the same --seed on every node\n"
    "gives every node the same graph).  DIR holds this node's data (train-\n"
    "and t10k- IDX pairs).  One JSON line per round on stdout.  This build\n"
    "runs the baseline in the clear (--enclave none); nodes in enclaves\n"
    "come next.\n";

/* Holds a copy of a frame of a later round. */
static int hold(node *nd, const uint8_t *p, size_t n, uint64_t round)
{
    if (nd->nhold == nd->caphold) {
        size_t cap = nd->caphold ? 2 * nd->caphold : 16;
        held *h = realloc(nd->hold, cap * sizeof(*h));
        if (h == NULL) return -1;
        nd->hold = h;
        nd->caphold = cap;
    }
    uint8_t *c = malloc(n);
    if (c == NULL) return -1;
    memcpy(c, p, n);
    nd->hold[nd->nhold++] = (held){c, n, round};
    return 0;
}

/* Offers one frame of this round to the channel of its claimed sender;
 * got[k] is set when neighbour k's share opened. */
static void take(node *nd, const uint8_t *p, size_t n, int *got)
{
    uint32_t sender = n >= EML_DMSG_HEADER ? (uint32_t)p[8] | (uint32_t)p[9] << 8 |
                                                 (uint32_t)p[10] << 16 |
                                                 (uint32_t)p[11] << 24
                                           : UINT32_MAX;
    uint32_t k = 0;
    while (k < nd->degree && nd->nbr[k] != sender) k++;
    if (k == nd->degree) {
        nd->refused[EML_DMSG_CROSS_PAIR]++;
        return;
    }
    eml_dchan *c = &nd->chan[k];
    c->recv_seq = (uint64_t)nd->round; /* one frame a round each way */
    eml_dmsg_refusal why;
    eml_err err = {0};
    double c0 = eml_cpu_seconds();
    eml_status st = eml_dmsg_open(c, (uint64_t)nd->round,
                                  (uint32_t)eml_net_param_count(nd->net), p, n,
                                  &nd->obuf[k], &nd->ocap[k], &nd->views[k],
                                  &why, &err);
    nd->avg_cpu += eml_cpu_seconds() - c0;
    if (st == EML_OK && !got[k]) got[k] = 1;
    else if (st != EML_OK) nd->refused[why < EML_DMSG_REFUSALS ? why : 0]++;
}

/* Collects this round's shares until every neighbour's is in or the
 * deadline passes; the number received. */
static uint32_t collect(node *nd, double deadline, int *got, eml_err *err)
{
    uint32_t have = 0;
    for (size_t i = 0; i < nd->nhold;) { /* frames that came early */
        if (nd->hold[i].round == (uint64_t)nd->round) {
            take(nd, nd->hold[i].p, nd->hold[i].n, got);
            free(nd->hold[i].p);
            nd->hold[i] = nd->hold[--nd->nhold];
        } else {
            i++;
        }
    }
    for (;;) {
        have = 0;
        for (uint32_t k = 0; k < nd->degree; k++) have += got[k] != 0;
        if (have == nd->degree) return have;
        const uint8_t *p;
        size_t n;
        if (eml_node_link_recv(nd->link, deadline, &p, &n, err) != EML_OK ||
            n == 0)
            return have;
        uint64_t r = 0;
        for (int b = 0; n >= EML_DMSG_HEADER && b < 8; b++)
            r |= (uint64_t)p[16 + b] << (8 * b);
        if (r > (uint64_t)nd->round) {
            if (hold(nd, p, n, r) != 0) nd->late++;
        } else if (r < (uint64_t)nd->round) {
            nd->late++;
        } else {
            take(nd, p, n, got);
        }
    }
}

/* The process's peak resident set (VmHWM), KiB; 0 if unknown. */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (f != NULL) fclose(f);
    return kib;
}

/* One round: share, collect, average, evaluate, report. */
static eml_status exchange(node *nd, eml_err *err)
{
    double t0 = eml_wall_seconds();
    float *x = eml_net_params(nd->net);
    size_t np = eml_net_param_count(nd->net);
    eml_share_view v;
    eml_sharer_select(nd->sharer, x, &nd->rng, &v);
    double deadline = t0 + nd->deadline_s;
    for (uint32_t k = 0; k < nd->degree; k++) {
        size_t len;
        nd->chan[k].send_seq = (uint64_t)nd->round;
        eml_status st = eml_dmsg_seal(&nd->chan[k], (uint64_t)nd->round,
                                      nd->degree, &v, nd->share.pad,
                                      nd->frame, &len, err);
        if (st == EML_OK)
            st = eml_node_link_send(nd->link, nd->nbr[k], nd->frame, len,
                                    deadline, err);
        if (st != EML_OK)
            fprintf(stderr, "node %u: round %ld: to node %u: %s\n", nd->id,
                    nd->round, nd->nbr[k], err->msg);
        memset(err, 0, sizeof(*err));
    }
    int got[EML_DECENTRAL_MAX_NODES] = {0};
    uint32_t have = collect(nd, deadline, got, err);
    size_t k2 = 0;
    for (uint32_t k = 0; k < nd->degree; k++) {
        if (got[k]) nd->vptr[k2++] = &nd->views[k];
        else
            fprintf(stderr,
                    "node %u: round %ld: node %u missed the deadline (its "
                    "weight stays here)\n",
                    nd->id, nd->round, nd->nbr[k]);
    }
    nd->missed += nd->degree - have;
    double c0 = eml_cpu_seconds();
    eml_average(x, np, nd->degree, nd->vptr, k2, nd->scratch);
    eml_net_params_changed(nd->net);
    nd->avg_cpu += eml_cpu_seconds() - c0;
    double wall = eml_wall_seconds() - t0;
    double loss = 0, acc = 0;
    eml_status st = eml_evaluate(nd->net, nd->test, &loss, &acc, err);
    if (st != EML_OK) return st;
    uint64_t refused = 0;
    for (int r = 1; r < EML_DMSG_REFUSALS; r++) refused += nd->refused[r];
    printf("{\"node\":%u,\"round\":%ld,\"test_accuracy\":%.6f,"
           "\"test_loss\":%.6f,\"received\":%u,\"missed\":%u,"
           "\"exchange_seconds\":%.6f,\"average_cpu_seconds\":%.6f,"
           "\"bytes_sent\":%llu,\"refused\":%llu,\"late\":%llu,"
           "\"parameters\":%zu,\"degree\":%u,\"max_rss_kib\":%ld}\n",
           nd->id, nd->round, acc, loss, have, nd->degree - have, wall,
           nd->avg_cpu, (unsigned long long)eml_node_link_bytes_sent(nd->link),
           (unsigned long long)refused, (unsigned long long)nd->late, np,
           nd->degree, peak_rss_kib());
    fflush(stdout);
    return EML_OK;
}

static eml_status on_step(void *user, const eml_step_info *s, eml_err *err)
{
    node *nd = user;
    if (nd->done || s->step % nd->local_steps != 0) return EML_OK;
    nd->round++;
    eml_status st = exchange(nd, err);
    if (st != EML_OK) return st;
    if (nd->round < nd->rounds) return EML_OK;
    nd->done = 1;
    return EML_ERR_RANGE; /* the run is over: stops the trainer */
}

/* ==== setting up ==== */

typedef struct node_opts {
    long id, rounds, local_steps, deadline_ms;
    const char *peers, *topology, *share;
    int pad, enclave_none;
    uint64_t seed;
    double lr;
} node_opts;

enum {
    O_ID = 512,
    O_PEERS,
    O_TOPOLOGY,
    O_ROUNDS,
    O_LOCAL,
    O_SHARE,
    O_PAD,
    O_SEED,
    O_LR,
    O_DEADLINE,
    O_ENCLAVE,
    O_HELP,
};

/* 0 go on, 1 help printed, -1 error printed. */
static int parse(int argc, char **argv, eml_common_opts *c, node_opts *o)
{
    static const struct option opts[] = {
        {"id", required_argument, 0, O_ID},
        {"peers", required_argument, 0, O_PEERS},
        {"topology", required_argument, 0, O_TOPOLOGY},
        {"rounds", required_argument, 0, O_ROUNDS},
        {"local-steps", required_argument, 0, O_LOCAL},
        {"share", required_argument, 0, O_SHARE},
        {"pad", no_argument, 0, O_PAD},
        {"seed", required_argument, 0, O_SEED},
        {"lr", required_argument, 0, O_LR},
        {"deadline-ms", required_argument, 0, O_DEADLINE},
        {"enclave", required_argument, 0, O_ENCLAVE},
        {"cfg", required_argument, 0, OPT_CFG},
        {"data", required_argument, 0, OPT_DATA},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(c, opt, optarg, "node");
        if (r < 0) return -1;
        if (r > 0) continue;
        switch (opt) {
        case O_ID:
            if (eml_opt_long("--id", optarg, 0, EML_DECENTRAL_MAX_NODES - 1,
                             &o->id))
                return -1;
            break;
        case O_PEERS: o->peers = optarg; break;
        case O_TOPOLOGY: o->topology = optarg; break;
        case O_ROUNDS:
            if (eml_opt_long("--rounds", optarg, 1, 1000000, &o->rounds))
                return -1;
            break;
        case O_LOCAL:
            if (eml_opt_long("--local-steps", optarg, 1, 1000000,
                             &o->local_steps))
                return -1;
            break;
        case O_SHARE: o->share = optarg; break;
        case O_PAD: o->pad = 1; break;
        case O_SEED:
            if (eml_opt_u64("--seed", optarg, &o->seed)) return -1;
            break;
        case O_LR:
            if (eml_opt_double("--lr", optarg, 0, 100, &o->lr)) return -1;
            break;
        case O_DEADLINE:
            if (eml_opt_long("--deadline-ms", optarg, 1, 3600000,
                             &o->deadline_ms))
                return -1;
            break;
        case O_ENCLAVE:
            if (strcmp(optarg, "none") != 0) {
                eml_fail("node: --enclave %s: this build runs nodes without "
                         "enclaves only (--enclave none); nodes in enclaves "
                         "come with the attested channels",
                         optarg);
                return -1;
            }
            o->enclave_none = 1;
            break;
        case O_HELP: fputs(node_usage, stdout); return 1;
        default: eml_opt_unknown("node", argc, argv); return -1;
        }
    }
    if (optind < argc) {
        eml_fail("node: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if (o->id < 0 || o->peers == NULL || c->cfg == NULL ||
        o->topology == NULL || o->rounds < 1) {
        eml_fail("node: --id, --peers, --cfg, --topology and --rounds are "
                 "required");
        return -1;
    }
    return 0;
}

/* The graph: a spec, or an edge-list file when the name is a file. */
static eml_status graph(const char *spec, uint32_t n, uint64_t seed,
                        eml_topo *t, eml_err *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    eml_err ferr = {0};
    if (strchr(spec, '/') != NULL || strchr(spec, '.') != NULL) {
        eml_status st = eml_file_read(spec, &text, &len, &ferr);
        if (st != EML_OK)
            return eml_err_set(err, st, "topology: %s", ferr.msg);
        st = eml_topo_parse((const char *)text, len, spec, n, t, err);
        free(text);
        return st;
    }
    return eml_topo_make(spec, n, seed, t, err);
}

/* Everything a node holds besides the run. */
static eml_status node_setup(node *nd, const node_opts *o,
                             char (*addrs)[EML_PEER_ADDR_MAX], eml_err *err)
{
    eml_status st = graph(o->topology, nd->n, o->seed, &nd->topo, err);
    if (st != EML_OK) return st;
    if (!eml_topo_connected(&nd->topo))
        return eml_err_set(err, EML_ERR_INVALID,
                           "topology %s is not connected on %u nodes",
                           o->topology, nd->n);
    nd->degree = eml_topo_degree(&nd->topo, nd->id);
    nd->nbr = nd->topo.nbr + nd->topo.off[nd->id];
    size_t np = eml_net_param_count(nd->net), d = nd->degree;
    nd->chan = calloc(d ? d : 1, sizeof(*nd->chan));
    nd->obuf = calloc(d ? d : 1, sizeof(*nd->obuf));
    nd->ocap = calloc(d ? d : 1, sizeof(*nd->ocap));
    nd->views = calloc(d ? d : 1, sizeof(*nd->views));
    nd->vptr = calloc(d ? d : 1, sizeof(*nd->vptr));
    nd->scratch = malloc(np * sizeof(double));
    nd->frame = malloc(eml_dmsg_size((uint32_t)np, (uint32_t)np, 0));
    if (nd->chan == NULL || nd->obuf == NULL || nd->ocap == NULL ||
        nd->views == NULL || nd->vptr == NULL || nd->scratch == NULL ||
        nd->frame == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    st = eml_share_parse(o->share ? o->share : "full", o->pad, &nd->share, err);
    if (st == EML_OK)
        st = eml_sharer_new(&nd->share, np, eml_net_params(nd->net),
                            &nd->sharer, err);
    if (st == EML_OK)
        st = eml_node_link_open(addrs[nd->id], nd->n, &nd->link, err);
    for (uint32_t k = 0; st == EML_OK && k < nd->degree; k++) {
        eml_dchan_init_clear(&nd->chan[k], nd->id, nd->nbr[k]);
        st = eml_node_link_connect(nd->link, nd->nbr[k], addrs[nd->nbr[k]],
                                   err);
    }
    return st;
}

static void node_free(node *nd)
{
    for (uint32_t k = 0; nd->chan != NULL && k < nd->degree; k++) {
        eml_dchan_free(&nd->chan[k]);
        free(nd->obuf[k]);
    }
    for (size_t i = 0; i < nd->nhold; i++) free(nd->hold[i].p);
    free(nd->hold);
    free(nd->chan);
    free(nd->obuf);
    free(nd->ocap);
    free(nd->views);
    free(nd->vptr);
    free(nd->scratch);
    free(nd->frame);
    eml_sharer_free(nd->sharer);
    eml_node_link_close(nd->link);
    eml_topo_free(&nd->topo);
}

/* Trains with the exchange hooked after every step. */
static eml_status node_run(node *nd, eml_run *run, const eml_dataset *tr,
                           eml_err *err)
{
    eml_run_env env;
    memset(&env, 0, sizeof(env));
    env.on_step = on_step;
    env.on_step_user = nd;
    eml_train_result res;
    eml_status st = eml_run_train(run, tr, NULL, &env, &res, err);
    if (nd->done) {
        memset(err, 0, sizeof(*err));
        return EML_OK;
    }
    return st != EML_OK ? st
                        : eml_err_set(err, EML_ERR_RANGE,
                                      "training ended after %ld of %ld "
                                      "rounds",
                                      nd->round, nd->rounds);
}

int eml_cmd_node(int argc, char **argv)
{
    eml_common_opts c;
    eml_common_init(&c);
    node_opts o = {.id = -1, .local_steps = 10, .deadline_ms = 60000,
                   .seed = 1};
    int rc = parse(argc, argv, &c, &o);
    if (rc != 0) return rc < 0 ? 1 : 0;
    eml_err err = {0};
    uint32_t n;
    char(*addrs)[EML_PEER_ADDR_MAX] = NULL;
    eml_status st = eml_peers_load(o.peers, &n, &addrs, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    if ((uint32_t)o.id >= n) {
        free(addrs);
        return eml_fail("node: --id %ld is not one of the %u nodes in %s",
                        o.id, n, o.peers);
    }
    eml_labelled tr, te;
    memset(&tr, 0, sizeof(tr));
    memset(&te, 0, sizeof(te));
    node nd;
    memset(&nd, 0, sizeof(nd));
    nd.id = (uint32_t)o.id;
    nd.n = n;
    nd.rounds = o.rounds;
    nd.local_steps = o.local_steps;
    nd.deadline_s = (double)o.deadline_ms / 1000;
    eml_rng_seed(&nd.rng, o.seed * 7919 + nd.id);
    eml_run *run = NULL;
    uint8_t *text = NULL;
    size_t tlen = 0;
    eml_run_spec spec = eml_run_spec_default();
    spec.batch = (int)c.batch;
    spec.lr = o.lr;
    spec.seed = o.seed; /* the same initial model on every node */
    spec.threads = c.threads;
    spec.kernels = (int)c.kernels;
    st = eml_labelled_load(c.data, "train", &tr, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    if (st == EML_OK) st = eml_file_read(c.cfg, &text, &tlen, &err);
    if (st == EML_OK) {
        /* enough epochs for rounds * local steps */
        eml_run *probe = NULL;
        st = eml_run_new(&spec, text, tlen, c.cfg, &probe, &err);
        if (st == EML_OK) {
            long batch = eml_run_opts(probe)->run.batch;
            long per = ((long)tr.set.count + batch - 1) / batch;
            spec.epochs = (int)((o.rounds * o.local_steps + per - 1) / per);
            eml_run_free(probe);
            st = eml_run_new(&spec, text, tlen, c.cfg, &run, &err);
        }
    }
    free(text);
    if (st == EML_OK) {
        nd.net = eml_run_net(run);
        nd.test = &te.set;
        eml_kernels_set_threads(c.threads);
        st = node_setup(&nd, &o, addrs, &err);
    }
    if (st == EML_OK) st = node_run(&nd, run, &tr.set, &err);
    rc = st == EML_OK ? 0 : eml_fail("node %u: %s", nd.id, eml_err_msg(&err, st));
    node_free(&nd);
    eml_run_free(run);
    eml_labelled_free(&tr);
    eml_labelled_free(&te);
    free(addrs);
    return rc;
}
