/*
 * cmd_decentral.c - `enclaveml decentral`: a decentralized run of N local
 * nodes (docs/decentral.md).  It splits the training set (--partition),
 * writes each node's share into a directory of its own, reserves N
 * loopback ports and writes the peers file, starts N `enclaveml node`
 * processes, reads the one JSON line each prints per round, and prints a
 * line per round (mean, min and max test accuracy over nodes, averaging
 * time, bytes sent), and with --json one object with the series and the
 * nodes' figures.  Every node runs to a deadline per round; the whole run
 * is bounded too, and a node that fails is named.  Host side.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <ftw.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "enclaveml/decentral.h"
#include "enclaveml/enclave.h"
#include "enclaveml/idx.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_decentral.h"
#include "host/cmd_train.h"
#include "host/fileio.h"
#include "host/hostio.h"
#include "host/json.h"

static const char usage[] =
    "usage: enclaveml decentral --cfg F --nodes N --topology T\n"
    "                           --partition P --rounds R [--local-steps L]\n"
    "                           [--share full|random:F|topk:F] [--pad]\n"
    "                           [--enclave none|sim] [--seed S] [--data DIR]\n"
    "                           [--batch N] [--lr X] [--train-limit N]\n"
    "                           [--test-limit N] [--deadline-ms MS] [--json]\n"
    "                           [--dp --clip C (--noise S | --target-epsilon\n"
    "                            E) [--delta D]] [--max-epsilon E]\n"
    "\n"
    "Runs N local nodes (docs/decentral.md), each a real `enclaveml node`\n"
    "process on loopback with its share of DIR's training set: P is iid,\n"
    "shards:S or dirichlet:ALPHA; T is ring, full, regular:D,\n"
    "smallworld:K,P or an edge-list file.  Prints a line per round: the\n"
    "mean, min and max test accuracy over the nodes (on the first\n"
    "--test-limit test images, default 1000), the averaging time and the\n"
    "bytes sent.  --enclave sim puts each node in its own enclave, its\n"
    "share encrypted under its own owner's key and granted to the measured\n"
    "enclave; --enclave none (the default) is the baseline in the clear.\n";

typedef struct run_opts {
    long nodes, rounds, local, train_limit, test_limit, deadline_ms;
    const char *topology, *partition, *share;
    int pad, sim;
    uint64_t seed;
    double lr;
    uint32_t *examples; /* each node's training examples */
    char run_id[65];    /* hex */
    eml_dp_opts dp;     /* --dp ...: passed to every node */
    int have_clip;
    double max_eps;     /* --max-epsilon: each owner's budget (sim) */
} run_opts;

typedef struct round_sum {
    double mean, min, max, avg_ms, exch_s;
    uint64_t bytes;
    uint32_t reported, missed;
} round_sum;

/* ==== the nodes' data ==== */

static int write_idx(const char *dir, const char *name, const eml_idx *x,
                     eml_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_idx_write(x, &buf, &len);
    if (st == EML_OK) st = eml_file_write_atomic(path, buf, len, 0600, err);
    free(buf);
    return st == EML_OK ? 0 : -1;
}

/* n examples of src (picked by idx) as an IDX of the same item shape. */
static int subset(const eml_idx *src, const uint32_t *idx, size_t n,
                  eml_idx *out)
{
    *out = *src;
    out->count = n;
    out->dims[0] = (uint32_t)n;
    out->data = malloc((n ? n : 1) * src->item);
    if (out->data == NULL) return -1;
    for (size_t i = 0; i < n; i++)
        memcpy(out->data + i * src->item, src->data + (size_t)idx[i] * src->item,
               src->item);
    return 0;
}

/* Splits the data and writes node i's into base/node-i. */
static int write_shares(const char *base, const char *data, const run_opts *o)
{
    eml_labelled tr, te;
    memset(&tr, 0, sizeof(tr));
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    eml_status st = eml_labelled_load(data, "train", &tr, &err);
    if (st == EML_OK) st = eml_labelled_load(data, "t10k", &te, &err);
    if (st != EML_OK) {
        eml_labelled_free(&tr);
        return eml_fail_st(st, &err);
    }
    size_t count = tr.set.count;
    if (o->train_limit > 0 && (size_t)o->train_limit < count)
        count = (size_t)o->train_limit;
    size_t tcount = te.set.count;
    if ((size_t)o->test_limit < tcount) tcount = (size_t)o->test_limit;
    uint32_t *off = NULL, *idx = NULL, *tidx = malloc(tcount * sizeof(uint32_t));
    int rc = 1;
    st = eml_partition(o->partition, tr.labels.data, count, 10,
                       (uint32_t)o->nodes, o->seed, &off, &idx, &err);
    if (st != EML_OK || tidx == NULL) {
        rc = eml_fail_st(st != EML_OK ? st : EML_ERR_NOMEM, &err);
        goto out;
    }
    for (size_t i = 0; i < tcount; i++) tidx[i] = (uint32_t)i;
    for (long i = 0; i < o->nodes; i++) o->examples[i] = off[i + 1] - off[i];
    for (long i = 0; i < o->nodes; i++) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/node-%ld", base, i);
        eml_idx a, b, c, d;
        if (mkdir(dir, 0700) != 0 ||
            subset(&tr.images, idx + off[i], off[i + 1] - off[i], &a) != 0 ||
            subset(&tr.labels, idx + off[i], off[i + 1] - off[i], &b) != 0 ||
            subset(&te.images, tidx, tcount, &c) != 0 ||
            subset(&te.labels, tidx, tcount, &d) != 0) {
            rc = eml_fail("decentral: cannot write %s: %s", dir,
                          strerror(errno));
            goto out;
        }
        int bad = write_idx(dir, "train-images-idx3-ubyte", &a, &err) |
                  write_idx(dir, "train-labels-idx1-ubyte", &b, &err) |
                  write_idx(dir, "t10k-images-idx3-ubyte", &c, &err) |
                  write_idx(dir, "t10k-labels-idx1-ubyte", &d, &err);
        free(a.data);
        free(b.data);
        free(c.data);
        free(d.data);
        if (bad) {
            rc = eml_fail("decentral: %s", err.msg);
            goto out;
        }
    }
    rc = 0;
out:
    free(off);
    free(idx);
    free(tidx);
    eml_labelled_free(&tr);
    eml_labelled_free(&te);
    return rc;
}

/* N free loopback ports (held open together, then released), written
 * as the peers file. */
static int write_peers(const char *path, long n)
{
    int *fds = calloc((size_t)n, sizeof(int));
    FILE *f = fopen(path, "w");
    int rc = fds == NULL || f == NULL;
    for (long i = 0; !rc && i < n; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(a);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof(a)) ||
            getsockname(fds[i], (struct sockaddr *)&a, &len)) {
            rc = 1;
            break;
        }
        fprintf(f, "%ld tcp:127.0.0.1:%u\n", i, ntohs(a.sin_port));
    }
    for (long i = 0; fds != NULL && i < n; i++)
        if (fds[i] > 0) close(fds[i]);
    if (f != NULL && fclose(f) != 0) rc = 1;
    free(fds);
    return rc ? eml_fail("decentral: cannot reserve %ld loopback ports", n)
              : 0;
}
/* ==== the nodes ==== */

typedef struct child {
    pid_t pid;
    int fd; /* its stdout; -1 once closed */
    char line[2048];
    size_t len;
    double acc, avg_cpu;
    uint64_t bytes, refused, missed, params, degree;
    uint64_t rss_kib, enclave_rss_kib, net_bytes, buffer_bytes; /* memory */
    long rounds_done;
} child;

static double jnum(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(line, k);
    return p != NULL ? strtod(p + strlen(k), NULL) : -1;
}

/* Starts `enclaveml ARGV...` with its stdout (and with both, its
 * stderr too) on *out_fd. */
static pid_t spawn_to(char *const argv[], int *out_fd, int both)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        if (both) dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -1;
    }
    *out_fd = p[0];
    return pid;
}

static pid_t spawn(char *const argv[], int *out_fd)
{
    return spawn_to(argv, out_fd, 0);
}

/* One line from node i: its figures for a round. */
static void on_line(child *c, const char *line, round_sum *sums, long rounds)
{
    long r = (long)jnum(line, "round");
    if (r < 1 || r > rounds) return;
    double acc = jnum(line, "test_accuracy");
    round_sum *s = &sums[r - 1];
    if (s->reported == 0 || acc < s->min) s->min = acc;
    if (s->reported == 0 || acc > s->max) s->max = acc;
    s->mean += acc;
    double cpu = jnum(line, "average_cpu_seconds");
    s->avg_ms += 1000 * (cpu - c->avg_cpu); /* this round's share */
    s->exch_s += jnum(line, "exchange_seconds");
    uint64_t bytes = (uint64_t)jnum(line, "bytes_sent");
    s->bytes += bytes - c->bytes;
    s->missed += (uint32_t)jnum(line, "missed");
    s->reported++;
    c->acc = acc;
    c->avg_cpu = cpu;
    c->bytes = bytes;
    c->refused = (uint64_t)jnum(line, "refused");
    c->missed += (uint64_t)jnum(line, "missed");
    c->params = (uint64_t)jnum(line, "parameters");
    c->degree = (uint64_t)jnum(line, "degree");
    c->rss_kib = (uint64_t)jnum(line, "max_rss_kib");
    double e = jnum(line, "enclave_max_rss_kib");
    c->enclave_rss_kib = e > 0 ? (uint64_t)e : 0;
    c->net_bytes = (uint64_t)jnum(line, "net_bytes");
    c->buffer_bytes = (uint64_t)jnum(line, "buffer_bytes");
    c->rounds_done = r;
}

static void print_round(long r, const round_sum *s, long nodes)
{
    fprintf(stderr,
            "round %ld: test accuracy mean %.4f, min %.4f, max %.4f; "
            "averaging %.2f ms a node; %.1f KiB sent%s\n",
            r, s->mean / s->reported, s->min, s->max, s->avg_ms / s->reported,
            (double)s->bytes / 1024,
            s->missed ? " (deadlines missed)" : "");
    if (s->reported != (uint32_t)nodes)
        fprintf(stderr, "round %ld: only %u of %ld nodes reported\n", r,
                s->reported, nodes);
}

/* Reads the nodes' lines until every one has closed its output or the
 * run's time is up; prints each round once all its lines are in. */
static void watch(child *ch, long n, round_sum *sums, long rounds,
                  double limit)
{
    struct pollfd *pf = n > 0 ? calloc((size_t)n, sizeof(*pf)) : NULL;
    long printed = 0, open = n;
    double end = eml_wall_seconds() + limit;
    while (pf != NULL && open > 0 && eml_wall_seconds() < end) {
        for (long i = 0; i < n; i++)
            pf[i] = (struct pollfd){ch[i].fd, POLLIN, 0};
        if (poll(pf, (nfds_t)n, 1000) < 0 && errno != EINTR) break;
        for (long i = 0; i < n; i++) {
            if (ch[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP)))
                continue;
            child *c = &ch[i];
            ssize_t got = read(c->fd, c->line + c->len,
                               sizeof(c->line) - 1 - c->len);
            if (got <= 0) {
                close(c->fd);
                c->fd = -1;
                open--;
                continue;
            }
            c->len += (size_t)got;
            char *nl;
            while ((nl = memchr(c->line, '\n', c->len)) != NULL) {
                *nl = '\0';
                on_line(c, c->line, sums, rounds);
                size_t rest = c->len - (size_t)(nl + 1 - c->line);
                memmove(c->line, nl + 1, rest);
                c->len = rest;
            }
            if (c->len == sizeof(c->line) - 1) c->len = 0; /* no newline */
        }
        while (printed < rounds && sums[printed].reported == (uint32_t)n) {
            print_round(printed + 1, &sums[printed], n);
            printed++;
        }
    }
    for (; printed < rounds && sums[printed].reported > 0; printed++)
        print_round(printed + 1, &sums[printed], n);
    free(pf);
}

/* ==== the command ==== */

enum {
    D_NODES = 600,
    D_TOPOLOGY,
    D_PARTITION,
    D_ROUNDS,
    D_LOCAL,
    D_SHARE,
    D_PAD,
    D_ENCLAVE,
    D_SEED,
    D_LR,
    D_TRAIN_LIMIT,
    D_TEST_LIMIT,
    D_DEADLINE,
    D_JSON,
    D_MAX_EPS,
    D_HELP,
};

static int parse(int argc, char **argv, eml_common_opts *c, run_opts *o)
{
    static const struct option opts[] = {
        {"nodes", required_argument, 0, D_NODES},
        {"topology", required_argument, 0, D_TOPOLOGY},
        {"partition", required_argument, 0, D_PARTITION},
        {"rounds", required_argument, 0, D_ROUNDS},
        {"local-steps", required_argument, 0, D_LOCAL},
        {"share", required_argument, 0, D_SHARE},
        {"pad", no_argument, 0, D_PAD},
        {"enclave", required_argument, 0, D_ENCLAVE},
        {"seed", required_argument, 0, D_SEED},
        {"lr", required_argument, 0, D_LR},
        {"train-limit", required_argument, 0, D_TRAIN_LIMIT},
        {"test-limit", required_argument, 0, D_TEST_LIMIT},
        {"deadline-ms", required_argument, 0, D_DEADLINE},
        {"json", no_argument, 0, D_JSON},
        {"max-epsilon", required_argument, 0, D_MAX_EPS},
        EML_DP_LONG_OPTIONS,
        {"cfg", required_argument, 0, OPT_CFG},
        {"data", required_argument, 0, OPT_DATA},
        {"batch", required_argument, 0, OPT_BATCH},
        {"help", no_argument, 0, D_HELP},
        {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(c, opt, optarg, "decentral");
        if (r < 0) return -1;
        if (r > 0) continue;
        long *lv = opt == D_NODES         ? &o->nodes
                   : opt == D_ROUNDS      ? &o->rounds
                   : opt == D_LOCAL       ? &o->local
                   : opt == D_TRAIN_LIMIT ? &o->train_limit
                   : opt == D_TEST_LIMIT  ? &o->test_limit
                   : opt == D_DEADLINE    ? &o->deadline_ms
                                          : NULL;
        long hi = opt == D_NODES ? EML_DECENTRAL_MAX_NODES : 100000000;
        if (lv != NULL) {
            if (eml_opt_long(argv[optind - 1], optarg, 1, hi, lv)) return -1;
            continue;
        }
        if (eml_is_dp_opt(opt)) {
            if (eml_dp_opt(opt, optarg, &o->dp, &o->have_clip)) return -1;
            continue;
        }
        switch (opt) {
        case D_MAX_EPS:
            if (eml_opt_double("--max-epsilon", optarg, 0, 1e6, &o->max_eps))
                return -1;
            break;
        case D_TOPOLOGY: o->topology = optarg; break;
        case D_PARTITION: o->partition = optarg; break;
        case D_SHARE: o->share = optarg; break;
        case D_PAD: o->pad = 1; break;
        case D_JSON: c->json = 1; break;
        case D_SEED:
            if (eml_opt_u64("--seed", optarg, &o->seed)) return -1;
            break;
        case D_LR:
            if (eml_opt_double("--lr", optarg, 0, 100, &o->lr)) return -1;
            break;
        case D_ENCLAVE:
            if (strcmp(optarg, "none") != 0 && strcmp(optarg, "sim") != 0) {
                eml_fail("decentral: --enclave: '%s' is not one of: sim, "
                         "none",
                         optarg);
                return -1;
            }
            o->sim = strcmp(optarg, "sim") == 0;
            break;
        case D_HELP: fputs(usage, stdout); return 1;
        default: eml_opt_unknown("decentral", argc, argv); return -1;
        }
    }
    if (eml_dp_check("decentral", &o->dp, o->have_clip, 0)) return -1;
    if (o->max_eps > 0 && !o->sim) {
        eml_fail("decentral: --max-epsilon is a grant's budget: it needs "
                 "--enclave sim");
        return -1;
    }
    if (optind < argc || c->cfg == NULL || o->nodes < 2 ||
        o->topology == NULL || o->partition == NULL || o->rounds < 1) {
        eml_fail("decentral: --cfg, --nodes (>= 2), --topology, --partition "
                 "and --rounds are required");
        return -1;
    }
    return 0;
}

/* The topology, checked here before any node starts. */
static int check_graph(const run_opts *o)
{
    eml_topo t;
    eml_err err = {0};
    eml_status st =
        eml_node_graph(o->topology, (uint32_t)o->nodes, o->seed, &t, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    int ok = eml_topo_connected(&t);
    eml_topo_free(&t);
    return ok ? 0
              : eml_fail("decentral: topology %s is not connected on %ld "
                         "nodes",
                         o->topology, o->nodes);
}

static int remove_one(const char *path, const struct stat *st, int type,
                      struct FTW *f)
{
    (void)st, (void)type, (void)f;
    return remove(path) != 0 && errno != ENOENT;
}

/* The scratch directory and everything in it. */
static void remove_tree(const char *base)
{
    nftw(base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Runs `enclaveml ARGS...` and waits, its output kept: the first line
 * into out (if not NULL); all of it shown only if it fails.  0, or 1
 * with the error printed. */
static int run_cmd(char *const argv[], char *out, size_t cap)
{
    int fd = -1;
    pid_t pid = spawn_to(argv, &fd, 1);
    if (pid < 0) return eml_fail("decentral: cannot run %s", argv[1]);
    char text[2048];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fd, text + got, sizeof(text) - 1 - got)) > 0)
        got += (size_t)r;
    text[got] = '\0';
    close(fd);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return eml_fail("decentral: `enclaveml %s` failed: %s", argv[1],
                        text);
    if (out != NULL) {
        size_t n = strcspn(text, "\n");
        n = n < cap - 1 ? n : cap - 1;
        memcpy(out, text, n);
        out[n] = '\0';
    }
    return 0;
}

/* --enclave sim: each node's data encrypted under its own owner's key and
 * granted to the measured enclave, for one model recipient. */
static int prepare_enclaves(const char *base, const run_opts *o)
{
    static const char *const files[] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char model[4200], report[4200], meas[80];
    snprintf(model, sizeof(model), "%s/model", base);
    snprintf(report, sizeof(report), "%s/attestation.json", base);
    char *keygen[] = {"enclaveml", "keygen", "--out", model, "--quiet", NULL};
    char *measure[] = {"enclaveml", "measure", NULL};
    char *attest[] = {"enclaveml", "attest", "--out", report, NULL};
    if (run_cmd(keygen, NULL, 0) || run_cmd(measure, meas, sizeof(meas)) ||
        run_cmd(attest, NULL, 0))
        return 1;
    for (long i = 0; i < o->nodes; i++) {
        char dir[4200], owner[4300], key[4300], pub[4300], grant[4300];
        snprintf(dir, sizeof(dir), "%s/node-%ld", base, i);
        snprintf(owner, sizeof(owner), "%s/owner", dir);
        snprintf(key, sizeof(key), "%s/owner.key", dir);
        snprintf(pub, sizeof(pub), "%s/model.pub", base);
        snprintf(grant, sizeof(grant), "%s/owner.grant", dir);
        char *kg[] = {"enclaveml", "keygen", "--out", owner, "--quiet", NULL};
        if (run_cmd(kg, NULL, 0)) return 1;
        for (int f = 0; f < 4; f++) {
            char in[4400], enc[4400];
            snprintf(in, sizeof(in), "%s/%s", dir, files[f]);
            snprintf(enc, sizeof(enc), "%s/%s.emlc", dir, files[f]);
            char *e[] = {"enclaveml", "encrypt", "--key", key, "--in", in,
                         "--out", enc, "--quiet", NULL};
            if (run_cmd(e, NULL, 0)) return 1;
            unlink(in);
        }
        char eps[32];
        snprintf(eps, sizeof(eps), "%g", o->max_eps);
        char *g[] = {"enclaveml", "grant", "--key", key, "--report", report,
                     "--measurement", meas, "--allow-sim", "--recipient",
                     pub, "--out", grant,
                     o->max_eps > 0 ? "--max-epsilon" : NULL, eps, NULL};
        if (run_cmd(g, NULL, 0)) return 1;
    }
    fprintf(stderr,
            "decentral: each node's data encrypted under its own owner's key "
            "and granted to enclave %.16s...\n",
            meas);
    return 0;
}

static void report_json(const run_opts *o, const child *ch,
                        const round_sum *sums, double seconds, double prep)
{
    eml_json j;
    eml_json_begin(&j, stdout);
    eml_json_int(&j, "nodes", o->nodes);
    eml_json_str(&j, "topology", o->topology);
    eml_json_str(&j, "partition", o->partition);
    eml_json_str(&j, "share", o->share ? o->share : "full");
    eml_json_str(&j, "enclave", o->sim ? "sim" : "none");
    eml_json_num(&j, "seconds", seconds);
    eml_json_num(&j, "prepare_seconds", prep); /* data split, keys, grants */
    eml_json_num(&j, "run_seconds", seconds - prep);
    eml_json_array_begin(&j, "rounds");
    for (long r = 0; r < o->rounds && sums[r].reported > 0; r++) {
        eml_json_object_begin(&j, NULL);
        eml_json_int(&j, "round", r + 1);
        eml_json_int(&j, "reported", sums[r].reported);
        eml_json_num(&j, "mean_accuracy", sums[r].mean / sums[r].reported);
        eml_json_num(&j, "min_accuracy", sums[r].min);
        eml_json_num(&j, "max_accuracy", sums[r].max);
        eml_json_num(&j, "averaging_ms", sums[r].avg_ms / sums[r].reported);
        eml_json_num(&j, "exchange_seconds", sums[r].exch_s / sums[r].reported);
        eml_json_int(&j, "bytes_sent", (long long)sums[r].bytes);
        eml_json_int(&j, "missed", sums[r].missed);
        eml_json_object_end(&j);
    }
    eml_json_array_end(&j);
    eml_json_array_begin(&j, "per_node");
    for (long i = 0; i < o->nodes; i++) {
        eml_json_object_begin(&j, NULL);
        eml_json_int(&j, "id", i);
        eml_json_int(&j, "degree", (long long)ch[i].degree);
        eml_json_int(&j, "rounds", ch[i].rounds_done);
        eml_json_num(&j, "test_accuracy", ch[i].acc);
        eml_json_int(&j, "bytes_sent", (long long)ch[i].bytes);
        eml_json_int(&j, "refused", (long long)ch[i].refused);
        eml_json_int(&j, "missed", (long long)ch[i].missed);
        eml_json_num(&j, "averaging_cpu_seconds", ch[i].avg_cpu);
        eml_json_int(&j, "parameters", (long long)ch[i].params);
        eml_json_int(&j, "max_rss_kib", (long long)ch[i].rss_kib);
        if (o->sim)
            eml_json_int(&j, "enclave_max_rss_kib",
                         (long long)ch[i].enclave_rss_kib);
        eml_json_int(&j, "net_bytes", (long long)ch[i].net_bytes);
        eml_json_int(&j, "buffer_bytes", (long long)ch[i].buffer_bytes);
        eml_json_object_end(&j);
    }
    eml_json_array_end(&j);
    eml_json_end(&j);
}

/* Starts the nodes, watches them, waits for them; 0 if all succeeded. */
static int run_nodes(const eml_common_opts *c, const run_opts *o,
                     const char *base, child *ch, round_sum *sums)
{
    char num[6][32], peers[4200];
    snprintf(peers, sizeof(peers), "%s/peers.txt", base);
    snprintf(num[1], 32, "%ld", o->rounds);
    snprintf(num[2], 32, "%ld", o->local);
    snprintf(num[3], 32, "%llu", (unsigned long long)o->seed);
    snprintf(num[4], 32, "%ld", o->deadline_ms);
    snprintf(num[5], 32, "%g", o->lr);
    int failed = 0;
    for (long i = 0; i < o->nodes; i++) {
        char dir[4200], bs[32];
        snprintf(dir, sizeof(dir), "%s/node-%ld", base, i);
        snprintf(num[0], 32, "%ld", i);
        snprintf(bs, sizeof(bs), "%ld", c->batch);
        char *argv[64]; /* the fixed ones and every option: < 64 */
        int a = 0;
        char *fixed[] = {"enclaveml", "node", "--id", num[0], "--peers", peers,
                         "--cfg", (char *)c->cfg, "--data", dir, "--topology",
                         (char *)o->topology, "--rounds", num[1],
                         "--local-steps", num[2], "--seed", num[3],
                         "--deadline-ms", num[4], "--share",
                         (char *)(o->share ? o->share : "full"), "--threads",
                         "1", "--enclave", (char *)(o->sim ? "sim" : "none")};
        for (size_t f = 0; f < sizeof(fixed) / sizeof(fixed[0]); f++)
            argv[a++] = fixed[f];
        if (o->pad) argv[a++] = "--pad";
        char clip[32], sig[32], delta[32];
        if (o->dp.enabled) {
            snprintf(clip, sizeof(clip), "%.17g", o->dp.clip);
            snprintf(sig, sizeof(sig), "%.17g",
                     o->dp.noise >= 0 ? o->dp.noise : o->dp.target_epsilon);
            snprintf(delta, sizeof(delta), "%.17g", o->dp.delta);
            char *d[] = {"--dp", "--clip", clip,
                         o->dp.noise >= 0 ? "--noise" : "--target-epsilon",
                         sig, "--delta", delta};
            for (size_t m = 0; m < sizeof(d) / sizeof(d[0]); m++)
                argv[a++] = d[m];
        }
        char ex[32], grant[4300], out[4300], rcpt[4300];
        if (o->sim) {
            snprintf(ex, sizeof(ex), "%u", o->examples[i]);
            snprintf(grant, sizeof(grant), "%s/owner.grant", dir);
            snprintf(out, sizeof(out), "%s/model.emlm", dir);
            snprintf(rcpt, sizeof(rcpt), "%s/model.pub", base);
            char *more[] = {"--grant", grant, "--recipient", rcpt, "--out",
                            out, "--examples", ex, "--run-id",
                            (char *)o->run_id};
            for (size_t m = 0; m < sizeof(more) / sizeof(more[0]); m++)
                argv[a++] = more[m];
        }
        if (o->lr > 0) {
            argv[a++] = "--lr";
            argv[a++] = num[5];
        }
        if (c->batch > 0) {
            argv[a++] = "--batch";
            argv[a++] = bs;
        }
        argv[a] = NULL;
        ch[i].fd = -1;
        ch[i].pid = spawn(argv, &ch[i].fd);
        if (ch[i].pid < 0) {
            failed = eml_fail("decentral: cannot start node %ld", i);
            break;
        }
    }
    double limit = 120 + (double)o->rounds * (o->deadline_ms / 1000.0 + 60);
    if (!failed) watch(ch, o->nodes, sums, o->rounds, limit);
    /* Output closed: give each node a few seconds to flush its sockets
     * (ZeroMQ's linger) and exit. */
    double grace = eml_wall_seconds() + 10;
    for (long i = 0; i < o->nodes; i++) {
        if (ch[i].pid <= 0) continue;
        int status = 0;
        pid_t w;
        while ((w = waitpid(ch[i].pid, &status, WNOHANG)) == 0 &&
               eml_wall_seconds() < grace) {
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        if (w == 0) {
            kill(ch[i].pid, SIGKILL);
            waitpid(ch[i].pid, &status, 0);
            if (!failed)
                failed = eml_fail("decentral: node %ld did not finish in "
                                  "time",
                                  i);
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            if (!failed)
                failed = eml_fail("decentral: node %ld failed (see its "
                                  "error above)",
                                  i);
        }
        if (ch[i].fd >= 0) close(ch[i].fd);
    }
    return failed;
}

int eml_cmd_decentral(int argc, char **argv)
{
    eml_common_opts c;
    eml_common_init(&c);
    run_opts o = {.local = 10, .test_limit = 1000, .deadline_ms = 60000,
                  .seed = 1};
    o.dp = eml_run_spec_default().dp;
    int rc = parse(argc, argv, &c, &o);
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (check_graph(&o)) return 1;
    const char *tmp = getenv("TMPDIR");
    char base[4096];
    snprintf(base, sizeof(base), "%s/eml-decentral-XXXXXX",
             tmp != NULL && *tmp ? tmp : "/tmp");
    if (mkdtemp(base) == NULL)
        return eml_fail("decentral: cannot make a scratch directory: %s",
                        strerror(errno));
    child *ch = calloc((size_t)o.nodes, sizeof(*ch));
    o.examples = calloc((size_t)o.nodes, sizeof(uint32_t));
    uint8_t rid[32];
    if (eml_random(rid, sizeof(rid)) != EML_OK) {
        rmdir(base);
        return eml_fail("decentral: no randomness for the run's id");
    }
    eml_hex(o.run_id, rid, sizeof(rid));
    round_sum *sums = calloc((size_t)o.rounds, sizeof(*sums));
    char peers[4200];
    snprintf(peers, sizeof(peers), "%s/peers.txt", base);
    double t0 = eml_wall_seconds(), prep = 0;
    rc = ch == NULL || sums == NULL ? eml_fail("decentral: out of memory")
         : write_shares(base, c.data, &o) ? 1
         : write_peers(peers, o.nodes)    ? 1
         : o.sim && prepare_enclaves(base, &o) ? 1
                                               : 0;
    if (rc == 0) {
        prep = eml_wall_seconds() - t0;
        rc = run_nodes(&c, &o, base, ch, sums);
    }
    double seconds = eml_wall_seconds() - t0;
    if (rc == 0 && c.json) report_json(&o, ch, sums, seconds, prep);
    if (rc == 0) {
        long big = 0; /* the node with the largest resident set */
        for (long i = 1; i < o.nodes; i++)
            if (ch[i].rss_kib + ch[i].enclave_rss_kib >
                ch[big].rss_kib + ch[big].enclave_rss_kib)
                big = i;
        const child *b = &ch[big];
        fprintf(stderr,
                "decentral: %ld nodes, %ld rounds in %.1f s (%.1f s of it "
                "preparing the data%s)\n",
                o.nodes, o.rounds, seconds, prep,
                o.sim ? ", owners' keys and grants" : "");
        char split[96] = "";
        if (o.sim)
            snprintf(split, sizeof(split), " (host %.1f, enclave %.1f)",
                     (double)b->rss_kib / 1024,
                     (double)b->enclave_rss_kib / 1024);
        fprintf(stderr,
                "decentral: largest node %.1f MiB resident%s; of it the "
                "network %.1f MiB, message buffers %.1f MiB\n",
                (double)(b->rss_kib + b->enclave_rss_kib) / 1024, split,
                (double)b->net_bytes / (1 << 20),
                (double)b->buffer_bytes / (1 << 20));
    }
    remove_tree(base);
    free(ch);
    free(sums);
    free(o.examples);
    return rc;
}
