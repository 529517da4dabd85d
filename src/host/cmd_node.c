/*
 * cmd_node.c - `enclaveml node`: one node of a decentralized run
 * (docs/decentral.md).  The host's part: options, the peers file, the
 * graph (a spec, or an edge-list file read here), the node's data, the
 * run, and the transport, a ZeroMQ link (node_link.c), given to the
 * node's rounds (src/decentral/node.c, trusted code, hung on the
 * trainer's step hook).  Each round's JSON line goes to stdout with the
 * bytes the link sent and the process's peak memory; notes about
 * neighbours go to stderr.
 *
 * `--enclave none` (the baseline): the rounds run in this process and the
 * frames travel in the clear (EML_DMSG_CLEAR).  `--enclave sim`: a
 * confidential TRAIN that carries the node; the enclave runs the rounds
 * over NODE_* ocalls, which this process serves with the same link.
 * Host side.
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
#include "host/cmd_train.h"
#include "host/fileio.h"
#include "host/hostio.h"
#include "host/node_link.h"

static const char node_usage[] =
    "usage: enclaveml node --id I --peers FILE --cfg F --data DIR\n"
    "                      --topology T --rounds R [--local-steps L]\n"
    "                      [--share full|random:F|topk:F] [--pad]\n"
    "                      [--seed S] [--batch N] [--lr X] [--threads N]\n"
    "                      [--deadline-ms MS] [--start-timeout-ms MS]\n"
    "                      [--enclave none|sim]\n"
    "                      [--grant G --recipient M.pub --out M.emlm\n"
    "                       --examples N --run-id HEX --report-out R\n"
    "                       [--checkpoint FILE [--resume]]\n"
    "                       [--accept-measurement HEX ...]]\n"
    "                      [--dp --clip C (--noise S | --target-epsilon E)\n"
    "                       [--delta D]]\n"
    "\n"
    "Runs node I of a decentralized run (docs/decentral.md): FILE lists\n"
    "every node's \"ID tcp:HOST:PORT\"; this node listens on its own and\n"
    "exchanges with its neighbours in topology T (ring, full, regular:D,\n"
    "smallworld:K,P, or an edge-list file; the same --seed on every node\n"
    "gives every node the same graph).  DIR holds this node's data (train-\n"
    "and t10k- IDX pairs).  One JSON line per round on stdout.\n"
    "--enclave none (the default) runs the rounds in this process with\n"
    "frames in the clear; --enclave sim runs them in the node's enclave on\n"
    "its owner's encrypted files (DIR/*.emlc, --grant), with channels keyed\n"
    "from attested hellos, and writes the model encrypted to --recipient.\n"
    "--examples (the node's training images) sizes the run; --run-id (hex,\n"
    "the same on every node) defaults to a digest of the peers file, the\n"
    "topology and the seed.  --checkpoint seals the node's state after\n"
    "every step; a node killed and started again with --resume comes back\n"
    "from it, sends a new hello and rejoins its neighbours.  At start the\n"
    "node waits --start-timeout-ms (default 60000) for a connection to\n"
    "each neighbour, and stops with an error naming one that never\n"
    "accepted; later, a round's neighbour that misses the --deadline-ms\n"
    "is left out of that round.\n";

/* The host's side of a node: its ZeroMQ link (eml_node_io). */
typedef struct host_io {
    uint32_t id;
    eml_node_link *link;
    double start_s; /* --start-timeout-ms */
    int reached;    /* every neighbour accepted a connection */
} host_io;

/* Before the first frame moves, every neighbour must have accepted a
 * connection: one that never does stops the node with a line naming it.
 * Not earlier, so that a node the enclave refuses to start (a grant, a
 * budget) fails for that reason, not for a neighbour that did. */
static eml_status reach(host_io *h, eml_err *err)
{
    if (h->reached) return EML_OK;
    eml_status st = eml_node_link_wait_connected(h->link, h->start_s, err);
    h->reached = st == EML_OK;
    return st;
}

static eml_status io_start(void *user, eml_err *err) { return reach(user, err); }

static eml_status io_send(void *user, uint32_t peer, const uint8_t *p,
                          size_t n, double deadline, eml_err *err)
{
    host_io *h = user;
    return eml_node_link_send(h->link, peer, p, n, deadline, err);
}

static eml_status io_recv(void *user, double deadline, const uint8_t **p,
                          size_t *n, eml_err *err)
{
    host_io *h = user;
    return eml_node_link_recv(h->link, deadline, p, n, err);
}

/* The round's line, with what only the host knows: bytes sent, memory. */
static void io_round(void *user, const char *json)
{
    host_io *h = user;
    size_t len = strlen(json);
    if (len == 0 || json[len - 1] != '}') return;
    printf("%.*s,\"bytes_sent\":%llu,\"max_rss_kib\":%ld}\n", (int)len - 1,
           json, (unsigned long long)eml_node_link_bytes_sent(h->link),
           eml_peak_rss_kib(0));
    fflush(stdout);
}

static void io_note(void *user, const char *line)
{
    host_io *h = user;
    fprintf(stderr, "node %u: %s\n", h->id, line);
}

/* ==== setting up ==== */

typedef struct node_opts {
    long id, rounds, local_steps, deadline_ms, start_ms, examples;
    const char *peers, *topology, *share;
    int pad, sim;
    uint64_t seed;
    double lr;
    /* --enclave sim: the owner's grant, the model's recipient and file */
    const char *grant, *recipient, *out, *report_out, *run_id;
    const char *checkpoint; /* the sealed training state, after each step */
    int resume;
    eml_dp_opts dp; /* --dp: DP-SGD on the node's own data */
    int have_clip;
    const char *accept[EML_NODE_ACCEPT_MAX]; /* --accept-measurement HEX */
    int n_accept;
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
    O_START_TIMEOUT,
    O_ENCLAVE,
    O_GRANT,
    O_RECIPIENT,
    O_OUT,
    O_REPORT_OUT,
    O_RUN_ID,
    O_EXAMPLES,
    O_CHECKPOINT,
    O_RESUME,
    O_ACCEPT,
    O_HELP,
};

/* The options fit together: 0, or -1 after the error line. */
static int check_opts(const eml_common_opts *c, const node_opts *o)
{
    if (o->id < 0 || o->peers == NULL || c->cfg == NULL ||
        o->topology == NULL || o->rounds < 1) {
        eml_fail("node: --id, --peers, --cfg, --topology and --rounds are "
                 "required");
        return -1;
    }
    /* The seed makes every node's first model and graph the same; a DP
     * run's noise and sampling never come from it (the CSPRNG's). */
    if (eml_dp_check("node", &o->dp, o->have_clip, 0)) return -1;
    if ((o->checkpoint != NULL || o->resume) && !o->sim) {
        eml_fail("node: --checkpoint and --resume need --enclave sim (the "
                 "state is sealed by the node's enclave)");
        return -1;
    }
    if (o->resume && o->checkpoint == NULL) {
        eml_fail("node: --resume needs --checkpoint FILE");
        return -1;
    }
    if (o->sim && (o->grant == NULL || o->recipient == NULL || o->out == NULL)) {
        eml_fail("node: --enclave sim needs --grant, --recipient and --out "
                 "(the owner's grant for this node's encrypted data, and "
                 "where the model goes)");
        return -1;
    }
    return 0;
}

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
        {"start-timeout-ms", required_argument, 0, O_START_TIMEOUT},
        {"enclave", required_argument, 0, O_ENCLAVE},
        {"grant", required_argument, 0, O_GRANT},
        {"recipient", required_argument, 0, O_RECIPIENT},
        {"out", required_argument, 0, O_OUT},
        {"report-out", required_argument, 0, O_REPORT_OUT},
        {"run-id", required_argument, 0, O_RUN_ID},
        {"examples", required_argument, 0, O_EXAMPLES},
        {"checkpoint", required_argument, 0, O_CHECKPOINT},
        {"resume", no_argument, 0, O_RESUME},
        {"accept-measurement", required_argument, 0, O_ACCEPT},
        EML_DP_LONG_OPTIONS,
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
        if (eml_is_dp_opt(opt)) {
            if (eml_dp_opt(opt, optarg, &o->dp, &o->have_clip)) return -1;
            continue;
        }
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
        case O_START_TIMEOUT:
            if (eml_opt_long("--start-timeout-ms", optarg, 1, 3600000,
                             &o->start_ms))
                return -1;
            break;
        case O_ENCLAVE:
            if (strcmp(optarg, "none") != 0 && strcmp(optarg, "sim") != 0) {
                eml_fail("node: --enclave: '%s' is not one of: sim, none",
                         optarg);
                return -1;
            }
            o->sim = strcmp(optarg, "sim") == 0;
            break;
        case O_GRANT: o->grant = optarg; break;
        case O_RECIPIENT: o->recipient = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_REPORT_OUT: o->report_out = optarg; break;
        case O_RUN_ID: o->run_id = optarg; break;
        case O_CHECKPOINT: o->checkpoint = optarg; break;
        case O_RESUME: o->resume = 1; break;
        case O_ACCEPT:
            if (o->n_accept == EML_NODE_ACCEPT_MAX) {
                eml_fail("node: at most %d --accept-measurement",
                         EML_NODE_ACCEPT_MAX);
                return -1;
            }
            o->accept[o->n_accept++] = optarg;
            break;
        case O_EXAMPLES:
            if (eml_opt_long("--examples", optarg, 1, 1L << 31, &o->examples))
                return -1;
            break;
        case O_HELP: fputs(node_usage, stdout); return 1;
        default: eml_opt_unknown("node", argc, argv); return -1;
        }
    }
    if (optind < argc) {
        eml_fail("node: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return check_opts(c, o);
}

eml_status eml_node_graph(const char *spec, uint32_t n, uint64_t seed,
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

/* The graph (checked connected) and the link: this node's address bound,
 * a socket to each neighbour. */
static eml_status link_up(const node_opts *o, uint32_t n,
                          char (*addrs)[EML_PEER_ADDR_MAX], eml_topo *topo,
                          eml_node_link **link, eml_err *err)
{
    eml_status st = eml_node_graph(o->topology, n, o->seed, topo, err);
    if (st == EML_OK && !eml_topo_connected(topo))
        st = eml_err_set(err, EML_ERR_INVALID,
                         "topology %s is not connected on %u nodes",
                         o->topology, n);
    if (st == EML_OK) st = eml_node_link_open(addrs[o->id], n, link, err);
    uint32_t id = (uint32_t)o->id;
    for (uint32_t e = st == EML_OK ? topo->off[id] : 0;
         st == EML_OK && e < topo->off[id + 1]; e++)
        st = eml_node_link_connect(*link, topo->nbr[e], addrs[topo->nbr[e]],
                                   err);
    return st;
}

/* Trains with the node's rounds hooked after every step. */
static eml_status node_run(eml_node *nd, eml_run *run, const eml_dataset *tr,
                           eml_err *err)
{
    eml_run_env env;
    memset(&env, 0, sizeof(env));
    env.on_step = eml_node_step;
    env.on_step_user = nd;
    eml_train_result res;
    eml_status st = eml_run_train(run, tr, NULL, &env, &res, err);
    if (eml_node_finished(nd)) {
        memset(err, 0, sizeof(*err));
        return EML_OK;
    }
    return st != EML_OK ? st
                        : eml_err_set(err, EML_ERR_RANGE,
                                      "training ended after %ld rounds",
                                      eml_node_rounds_done(nd));
}

/* The graph, the link, the node; then the run. */
static eml_status node_main(const node_opts *o, uint32_t n,
                            char (*addrs)[EML_PEER_ADDR_MAX], eml_run *run,
                            const eml_dataset *tr, const eml_dataset *te,
                            eml_err *err)
{
    eml_topo topo;
    memset(&topo, 0, sizeof(topo));
    host_io h = {(uint32_t)o->id, NULL, (double)o->start_ms / 1000, 0};
    eml_node *nd = NULL;
    eml_node_opts no;
    memset(&no, 0, sizeof(no));
    eml_status st = eml_share_parse(o->share ? o->share : "full", o->pad,
                                    &no.share, err);
    if (st == EML_OK) st = link_up(o, n, addrs, &topo, &h.link, err);
    if (st == EML_OK) st = reach(&h, err);
    if (st == EML_OK) {
        no.id = (uint32_t)o->id;
        no.topo = &topo;
        no.rounds = o->rounds;
        no.local_steps = o->local_steps;
        no.deadline_s = (double)o->deadline_ms / 1000;
        no.seed = o->seed;
        no.clear = 1;
        eml_node_io io = {.user = &h, .send = io_send, .recv = io_recv,
                          .round = io_round, .note = io_note};
        st = eml_node_new(&no, eml_run_net(run), te, &io, &nd, err);
    }
    if (st == EML_OK) st = node_run(nd, run, tr, err);
    eml_node_free(nd);
    eml_node_link_close(h.link);
    eml_topo_free(&topo);
    return st;
}

/* Epochs enough for rounds * local steps over `examples` (the cfg's
 * batch unless --batch); the node's last round stops the trainer.  With
 * no count known, as many as allowed. */
static int epochs_for(const eml_common_opts *c, const node_opts *o,
                      long examples, const uint8_t *text, size_t tlen,
                      eml_err *err, eml_status *st)
{
    if (examples <= 0) return 100000;
    eml_run_spec spec = eml_run_spec_default();
    spec.batch = (int)c->batch;
    eml_run *probe = NULL;
    *st = eml_run_new(&spec, text, tlen, c->cfg, &probe, err);
    if (*st != EML_OK) return 0;
    long batch = eml_run_opts(probe)->run.batch;
    eml_run_free(probe);
    long per = (examples + batch - 1) / batch;
    return (int)((o->rounds * o->local_steps + per - 1) / per);
}

/* The run's id: --run-id, or SHA-256 of the peers file, the topology and
 * the seed (the same on every node of the run). */
static eml_status run_id_of(const node_opts *o, uint8_t id[32], eml_err *err)
{
    if (o->run_id != NULL)
        return eml_unhex(id, 32, o->run_id, strlen(o->run_id)) == 0
                   ? EML_OK
                   : eml_err_set(err, EML_ERR_INVALID,
                                 "--run-id: 64 hex digits expected");
    uint8_t *text = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(o->peers, &text, &len, err);
    if (st != EML_OK) return st;
    char tail[160];
    int tl = snprintf(tail, sizeof(tail), "\n%s\n%llu", o->topology,
                      (unsigned long long)o->seed);
    uint8_t *all = realloc(text, len + (size_t)tl);
    if (all == NULL) {
        free(text);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    memcpy(all + len, tail, (size_t)tl);
    st = eml_sha256(id, all, len + (size_t)tl);
    free(all);
    return st;
}

/* --enclave sim: the node's training and rounds run in its enclave (a
 * confidential TRAIN carrying the node's fields); this process serves
 * its files and moves its frames. */
static int node_sim(const eml_common_opts *c, const node_opts *o, uint32_t n,
                    char (*addrs)[EML_PEER_ADDR_MAX])
{
    eml_err err = {0};
    eml_topo topo;
    memset(&topo, 0, sizeof(topo));
    host_io h = {(uint32_t)o->id, NULL, (double)o->start_ms / 1000, 0};
    uint8_t *gtext = NULL, *cfg = NULL;
    size_t glen = 0, clen = 0;
    int rc = 1;
    eml_status st = link_up(o, n, addrs, &topo, &h.link, &err);
    int is_file = strchr(o->topology, '/') != NULL ||
                  strchr(o->topology, '.') != NULL;
    if (st == EML_OK && is_file) {
        st = eml_file_read(o->topology, &gtext, &glen, &err);
        uint8_t *z = st == EML_OK ? realloc(gtext, glen + 1) : NULL;
        if (st == EML_OK && z == NULL)
            st = eml_err_set(&err, EML_ERR_NOMEM, "out of memory");
        if (z != NULL) {
            gtext = z;
            gtext[glen] = '\0'; /* the enclave gets it as text */
        }
    }
    if (st == EML_OK) st = eml_file_read(c->cfg, &cfg, &clen, &err);
    eml_confidential_args ca;
    memset(&ca, 0, sizeof(ca));
    if (st == EML_OK) st = run_id_of(o, ca.node_run_id, &err);
    ca.spec = eml_run_spec_default();
    if (st == EML_OK)
        ca.spec.epochs = epochs_for(c, o, o->examples, cfg, clen, &err, &st);
    if (st != EML_OK) {
        rc = eml_fail("node %ld: %s", o->id, eml_err_msg(&err, st));
        goto out;
    }
    const char *graph_text = is_file ? (const char *)gtext : o->topology;
    ca.cfg = c->cfg;
    ca.dirs[0] = c->data;
    ca.n_dirs = 1;
    ca.grants[0] = o->grant;
    ca.n_grants = 1;
    ca.recipient = o->recipient;
    ca.out = o->out;
    ca.report_out = o->report_out;
    ca.backend = EML_BACKEND_SIM;
    ca.heap_mb = EML_DEFAULT_HEAP_MB;
    ca.quiet = 1;
    ca.spec.batch = (int)c->batch;
    ca.spec.lr = o->lr;
    ca.spec.seed = o->seed;
    ca.spec.threads = c->threads;
    ca.spec.kernels = (int)c->kernels;
    if (o->dp.enabled) ca.spec.dp = o->dp;
    if (o->checkpoint != NULL) { /* sealed after every step */
        ca.checkpoint = o->checkpoint;
        ca.spec.mirror = 1;
        ca.spec.save_every = 1;
        ca.spec.resume = o->resume;
    }
    ca.node = (eml_node_spec){1, (int)o->id, (int)n, o->rounds,
                              o->local_steps, o->deadline_ms, o->pad};
    ca.node_graph = graph_text;
    for (int i = 0; i < o->n_accept; i++, ca.n_node_accept++)
        if (eml_unhex(ca.node_accept[i], 32, o->accept[i],
                      strlen(o->accept[i])) != 0) {
            rc = eml_fail("node %ld: --accept-measurement: 64 hex digits "
                          "expected",
                          o->id);
            goto out;
        }
    ca.node_share = o->share ? o->share : "full";
    eml_node_io io = {.user = &h, .send = io_send, .recv = io_recv,
                      .round = io_round, .note = io_note, .start = io_start};
    ca.node_io = &io;
    rc = eml_train_confidential(&ca);
out:
    free(gtext);
    free(cfg);
    eml_node_link_close(h.link);
    eml_topo_free(&topo);
    return rc;
}

int eml_cmd_node(int argc, char **argv)
{
    eml_common_opts c;
    eml_common_init(&c);
    node_opts o = {.id = -1, .local_steps = 10, .deadline_ms = 60000,
                   .start_ms = 60000,
                   .seed = 1};
    o.dp = eml_run_spec_default().dp;
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
    if (o.sim) {
        rc = node_sim(&c, &o, n, addrs);
        free(addrs);
        return rc;
    }
    eml_labelled tr, te;
    memset(&tr, 0, sizeof(tr));
    memset(&te, 0, sizeof(te));
    eml_run *run = NULL;
    uint8_t *text = NULL;
    size_t tlen = 0;
    eml_run_spec spec = eml_run_spec_default();
    spec.batch = (int)c.batch;
    spec.lr = o.lr;
    spec.seed = o.seed; /* the same initial model on every node */
    if (o.dp.enabled) spec.dp = o.dp;
    spec.threads = c.threads;
    spec.kernels = (int)c.kernels;
    st = eml_labelled_load(c.data, "train", &tr, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    if (st == EML_OK) st = eml_file_read(c.cfg, &text, &tlen, &err);
    if (st == EML_OK)
        spec.epochs =
            epochs_for(&c, &o, (long)tr.set.count, text, tlen, &err, &st);
    if (st == EML_OK) st = eml_run_new(&spec, text, tlen, c.cfg, &run, &err);
    free(text);
    if (st == EML_OK) {
        eml_kernels_set_threads(c.threads);
        st = node_main(&o, n, addrs, run, &tr.set, &te.set, &err);
    }
    rc = st == EML_OK ? 0
                      : eml_fail("node %ld: %s", o.id, eml_err_msg(&err, st));
    eml_run_free(run);
    eml_labelled_free(&tr);
    eml_labelled_free(&te);
    free(addrs);
    return rc;
}
