/*
 * cmd_worker.c - `enclaveml worker`: the untrusted outsourcing worker.  It
 * listens on a TCP or unix socket (host/worker_link.h) and answers the
 * worker protocol's requests (outsource.h, docs/formats.md): each one a
 * product C = A * B mod p computed exactly with eml_field_gemm, the CPU
 * backend.
 *
 * The worker knows nothing but the request in hand and keeps no state
 * between requests: the enclave verifies every product it gets back, so
 * nothing here is trusted.  Connections are served one after another, the
 * requests of each in order.  A malformed request gets a REFUSED reply and
 * the connection is closed (after a bad frame the stream is out of step).
 * SIGINT or SIGTERM ends the worker cleanly (exit 0) once the reply in
 * hand is written; so does --max-requests, for tests.
 *
 * Host side: sockets and printing.  stdout carries exactly one line, the
 * address listened on; everything else goes to stderr.
 */
#include "host/cmd_worker.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "enclaveml/kernels.h"
#include "enclaveml/outsource.h"
#include "host/cli.h"
#include "host/worker_link.h"
#include "host/worker_gpu.h"

static const char worker_usage[] =
    "usage: enclaveml worker --listen ADDR [--device cpu|cuda] [--threads N]\n"
    "                        [--max-requests N] [--quiet]\n"
    "\n"
    "Serves outsourced matrix products (C = A * B mod 2^61 - 1) to enclaves\n"
    "that verify every result (docs/outsource.md).  ADDR is tcp:HOST:PORT\n"
    "(PORT 0 picks a free port) or unix:PATH.  The address listened on is\n"
    "printed as the only line on stdout.  Connections are served one at a\n"
    "time; SIGINT or SIGTERM stops the worker.\n"
    "  --device cpu|cuda     the backend (cpu: exact field GEMM, OpenMP;\n"
    "                        cuda: cuBLAS DGEMMs of 16-bit limbs on GPU 0)\n"
    "  --threads N           OpenMP threads (default: every CPU)\n"
    "  --max-requests N      stop after answering N requests\n"
    "  --quiet               nothing on stderr but errors\n";

enum {
    OPT_LISTEN = 256,
    OPT_DEVICE,
    OPT_THREADS,
    OPT_MAX,
    OPT_QUIET,
    OPT_HELP,
};

/* What the serving loop needs. */
typedef struct worker {
    const char *bound; /* the address listened on */
    eml_field_gemm_fn gemm; /* NULL: the CPU's */
    void *gemm_ctx;
    long max_requests; /* 0: no limit */
    long served;       /* requests answered, refusals included */
    int quiet;
    uint8_t *reply; /* the reply frame (reused) */
    size_t cap;
} worker;

#define LINGER_MS 1000 /* for the client to read a REFUSED and close */

/* One line "worker: ..." on stderr, unless --quiet. */
static void note(const worker *w, const char *fmt, ...) EML_PRINTF(2, 3);

static void note(const worker *w, const char *fmt, ...)
{
    if (w->quiet) return;
    va_list ap;
    fputs("worker: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ==== serving ==== */

/* Writes a reply carrying no matrix (REFUSED or FAILED). */
static eml_status reply_status(eml_worker_conn *c, uint64_t id,
                               uint16_t status, eml_err *err)
{
    uint8_t h[EML_WORKER_REPLY_HEADER];
    eml_worker_reply_header_write(h, id, status, 0, 0);
    return eml_worker_conn_write(c, h, sizeof(h), err);
}

/* Computes and writes the reply to a parsed request frame p. */
static eml_status answer(worker *w, eml_worker_conn *c, const uint8_t *p,
                         const eml_worker_req *q, eml_err *err)
{
    size_t size = eml_worker_reply_size(q->m, q->n); /* non-zero: parsed */
    if (size > w->cap) {
        uint8_t *r = realloc(w->reply, size);
        if (r == NULL) return reply_status(c, q->id, EML_WORKER_FAILED, err);
        w->reply = r;
        w->cap = size;
    }
    (void)p;
    eml_worker_reply_header_write(w->reply, q->id, EML_WORKER_DONE, q->m,
                                  q->n);
    if (eml_worker_compute_on(q, w->reply + EML_WORKER_REPLY_HEADER, w->gemm,
                              w->gemm_ctx) != EML_OK)
        return reply_status(c, q->id, EML_WORKER_FAILED, err);
    return eml_worker_conn_write(c, w->reply, size, err);
}

/* Serves one connection until the peer closes it, it fails, a request is
 * malformed, the worker is stopped or has served its --max-requests. */
static void serve(worker *w, int fd)
{
    eml_worker_conn *c;
    eml_err err = {0};
    char name[EML_WORKER_ADDR_MAX + 16];
    snprintf(name, sizeof(name), "client on %s", w->bound);
    if (eml_worker_conn_wrap(fd, name, EML_WORKER_TIMEOUT_MS, &eml_cli_stop, &c,
                             &err) != EML_OK) {
        note(w, "%s", err.msg);
        return;
    }
    long before = w->served;
    for (;;) {
        const uint8_t *p;
        size_t n;
        eml_worker_req q;
        eml_err e = {0};
        eml_status st = eml_worker_read_request(c, &p, &n, &q, &e);
        if (st == EML_OK && n == 0) break; /* the client is done */
        if (st == EML_ERR_IO) {
            if (!eml_cli_stop) note(w, "%s (connection dropped)", e.msg);
            break;
        }
        if (st != EML_OK) {
            note(w, "refused a request: %s", e.msg);
            uint16_t status =
                st == EML_ERR_NOMEM ? EML_WORKER_FAILED : EML_WORKER_REFUSED;
            if (reply_status(c, q.id, status, &e) == EML_OK) {
                w->served++;
                eml_worker_conn_linger(c, LINGER_MS);
            }
            break;
        }
        if (answer(w, c, p, &q, &e) != EML_OK) {
            if (!eml_cli_stop) note(w, "%s (connection dropped)", e.msg);
            break;
        }
        w->served++;
        if (w->max_requests > 0 && w->served >= w->max_requests) break;
    }
    long n = w->served - before;
    note(w, "connection closed after %ld request%s", n, n == 1 ? "" : "s");
    eml_worker_disconnect(c);
}

/* ==== the command ==== */

typedef struct worker_opts {
    const char *listen;
    int cuda;
    long threads;
    long max_requests;
    int quiet;
} worker_opts;

/* Parses the options: 0 go on, 1 done (help printed), -1 error printed. */
static int parse_opts(int argc, char **argv, worker_opts *o)
{
    static const struct option opts[] = {
        {"listen", required_argument, 0, OPT_LISTEN},
        {"device", required_argument, 0, OPT_DEVICE},
        {"threads", required_argument, 0, OPT_THREADS},
        {"max-requests", required_argument, 0, OPT_MAX},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_LISTEN: o->listen = optarg; break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") == 0) o->cuda = 0;
            else if (strcmp(optarg, "cuda") == 0) o->cuda = 1;
            else {
                eml_fail("worker: --device: '%s' is not one of: cpu, cuda",
                         optarg);
                return -1;
            }
            break;
        case OPT_THREADS:
            if (eml_opt_long("--threads", optarg, 1, 1024, &o->threads))
                return -1;
            break;
        case OPT_MAX:
            if (eml_opt_long("--max-requests", optarg, 1, LONG_MAX,
                             &o->max_requests))
                return -1;
            break;
        case OPT_QUIET: o->quiet = 1; break;
        case OPT_HELP: fputs(worker_usage, stdout); return 1;
        default: eml_opt_unknown("worker", argc, argv); return -1;
        }
    }
    if (optind < argc) {
        eml_fail("worker: unexpected argument '%s'", argv[optind]);
        return -1;
    }
    return 0;
}

int eml_cmd_worker(int argc, char **argv)
{
    worker_opts o = {0};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    o.threads = ncpu > 0 ? ncpu : 1;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 1 : 0;
    if (o.listen == NULL)
        return eml_fail("worker: --listen ADDR is required (tcp:HOST:PORT "
                        "or unix:PATH)");
    eml_worker_addr addr;
    eml_err err = {0};
    eml_status st = eml_worker_addr_parse(o.listen, &addr, &err);
    if (st != EML_OK)
        return eml_fail("worker: --listen: %s", eml_err_msg(&err, st));
    eml_cuda *gpu = NULL;
    eml_limb_ctx limbs = {eml_cuda_dgemm, NULL};
    if (o.cuda) {
        st = eml_cuda_open(&gpu, &err);
        if (st != EML_OK)
            return eml_fail("worker: --device cuda: %s",
                            eml_err_msg(&err, st));
        limbs.user = gpu;
    }
    if (eml_cli_stop_on_signals() != 0) {
        eml_cuda_close(gpu);
        return eml_fail("worker: cannot install signal handlers");
    }
    eml_kernels_set_threads((int)o.threads);
    int lfd;
    char bound[EML_WORKER_ADDR_MAX];
    st = eml_worker_listen(&addr, &lfd, bound, sizeof(bound), &err);
    if (st != EML_OK) {
        eml_cuda_close(gpu);
        return eml_fail("worker: %s", eml_err_msg(&err, st));
    }
    printf("%s\n", bound);
    fflush(stdout);
    worker w = {.bound = bound, .max_requests = o.max_requests,
                .quiet = o.quiet};
    if (gpu != NULL) {
        w.gemm = eml_limb_gemm;
        w.gemm_ctx = &limbs;
    }
    note(&w, "listening on %s (%s)", bound,
         gpu != NULL ? eml_cuda_name(gpu) : "CPU");
    rc = 0;
    while (!eml_cli_stop && (w.max_requests == 0 || w.served < w.max_requests)) {
        int fd;
        int got = eml_worker_accept(lfd, &eml_cli_stop, &fd);
        if (got < 0) {
            rc = eml_fail("worker: accepting on %s: %s", bound,
                          strerror(errno));
            break;
        }
        if (got == 0) break;
        serve(&w, fd);
    }
    close(lfd);
    if (addr.family == AF_UNIX)
        unlink(((const struct sockaddr_un *)&addr.sa)->sun_path);
    free(w.reply);
    eml_cuda_close(gpu);
    note(&w, "stopped after %ld request%s", w.served,
         w.served == 1 ? "" : "s");
    return rc;
}
