/*
 * cmd_serve.c - `enclaveml serve`: the attested inference server
 * (docs/serve.md).  The enclave loads the owner's encrypted model through
 * their grant, makes its TLS key and a certificate carrying its
 * attestation report; this process listens and relays ciphertext
 * (serve_relay.c).  With --queue the enclave hands predicts to worker
 * enclaves through a Redis stream (serve_queue.c; workers:
 * cmd_serve_worker.c).  Host side.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "enclaveml/enclave.h"
#include "enclaveml/net.h"
#include "enclaveml/serve.h"
#include "enclaveml/tls.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_serve.h"
#include "host/fileio.h"
#include "host/serve_queue.h"
#include "host/serve_relay.h"
#include "host/worker_link.h"

static const char serve_usage[] =
    "usage: enclaveml serve --cfg F --model M.emlc --grant G\n"
    "                       --listen tcp:HOST:PORT [--name NAME]\n"
    "                       [--precision fp32|bf16] [--max-batch B]\n"
    "                       [--max-wait-ms T] [--max-conns N]\n"
    "                       [--header-timeout-ms T] [--idle-timeout-ms T]\n"
    "                       [--max-body BYTES] [--ready-file F]\n"
    "                       [--cert-out C.der] [--enclave sim|none]\n"
    "                       [--heap-mb M] [--threads N] [--quiet]\n"
    "                       [--queue redis://HOST:PORT [--stream NAME]\n"
    "                        [--queue-timeout-ms T]]\n"
    "\n"
    "Serves the model over HTTPS whose TLS ends inside the enclave\n"
    "(docs/serve.md).  M.emlc is the model owner's weights encrypted with\n"
    "`enclaveml encrypt --role model` under the key their grant G gives\n"
    "this enclave.  The enclave makes its TLS key and puts its attestation\n"
    "report in the certificate; `enclaveml verify --tls HOST:PORT` checks\n"
    "it and prints the key's pin for `curl --pinnedpubkey`.\n"
    "\n"
    "TensorFlow Serving's REST API: POST /v1/models/NAME:predict with\n"
    "{\"instances\": [...]} (or application/octet-stream float32/uint8),\n"
    "GET /v1/models/NAME, GET /healthz, GET /metrics (Prometheus).\n"
    "Requests are batched across connections: up to --max-batch examples\n"
    "(64), the first waiting at most --max-wait-ms (5).  More than\n"
    "--max-conns (256) connections are answered 503; a request must\n"
    "arrive within --header-timeout-ms (10000) of its first byte (408).\n"
    "--listen with port 0 picks a free port; --ready-file gets\n"
    "\"tcp:HOST:PORT sha256//PIN\" once serving.  SIGINT or SIGTERM stops.\n"
    "\n"
    "--queue: the model runs in worker enclaves (`enclaveml serve-worker`)\n"
    "instead of this one.  Each predict goes, sealed under a key this\n"
    "enclave makes, to the Redis stream NAME (default enclaveml); workers\n"
    "whose attestation report shows this enclave's measurement get that\n"
    "key; their sealed replies come back on NAME:rep:<front end id>.  A\n"
    "request no worker answers within --queue-timeout-ms (30000) gets 504.\n";

enum {
    O_MODEL = 1000, O_LISTEN, O_NAME, O_PRECISION, O_MAX_BATCH, O_MAX_WAIT,
    O_MAX_CONNS, O_HEADER_TIMEOUT, O_IDLE_TIMEOUT, O_MAX_BODY, O_READY,
    O_CERT_OUT, O_QUEUE, O_STREAM, O_QUEUE_TIMEOUT,
};

typedef struct serve_args {
    const char *cfg, *model, *grant, *listen, *ready, *cert_out;
    const char *queue, *stream;
    long queue_timeout;
    char name[EML_HTTP_MODEL_NAME_MAX + 1];
    eml_precision precision;
    long max_batch, max_wait, max_conns, header_timeout, idle_timeout;
    uint64_t max_body;
    eml_host_opts host; /* --enclave, --heap-mb, --threads */
    int quiet;
} serve_args;

static int take_opt(serve_args *a, int opt, const char *v)
{
    switch (opt) {
    case OPT_CFG: a->cfg = v; return 0;
    case O_MODEL: a->model = v; return 0;
    case OPT_GRANT: a->grant = v; return 0;
    case O_LISTEN: a->listen = v; return 0;
    case O_READY: a->ready = v; return 0;
    case O_CERT_OUT: a->cert_out = v; return 0;
    case O_QUEUE: a->queue = v; return 0;
    case O_STREAM:
        if (!eml_queue_name_ok((const uint8_t *)v, strlen(v)))
            return eml_fail("serve: --stream is 1 to 64 of A-Z a-z 0-9 . _ "
                            ": -");
        a->stream = v;
        return 0;
    case O_QUEUE_TIMEOUT:
        return eml_opt_long("--queue-timeout-ms", v, 1, 3600000,
                            &a->queue_timeout) != 0;
    case OPT_QUIET: a->quiet = 1; return 0;
    case O_NAME:
        if (strlen(v) > EML_HTTP_MODEL_NAME_MAX)
            return eml_fail("serve: --name is at most %d characters",
                            EML_HTTP_MODEL_NAME_MAX);
        snprintf(a->name, sizeof(a->name), "%s", v);
        return 0;
    case O_PRECISION:
        if (eml_precision_parse(v, &a->precision) == EML_OK) return 0;
        return eml_fail("serve: --precision: '%s' is not one of: fp32, "
                        "bf16, int8",
                        v);
    case O_MAX_BATCH:
        return eml_opt_long("--max-batch", v, 1, 4096, &a->max_batch) != 0;
    case O_MAX_WAIT:
        return eml_opt_long("--max-wait-ms", v, 0, 60000, &a->max_wait) != 0;
    case O_MAX_CONNS:
        return eml_opt_long("--max-conns", v, 1, 65536, &a->max_conns) != 0;
    case O_HEADER_TIMEOUT:
        return eml_opt_long("--header-timeout-ms", v, 1, 3600000,
                            &a->header_timeout) != 0;
    case O_IDLE_TIMEOUT:
        return eml_opt_long("--idle-timeout-ms", v, 1, 86400000,
                            &a->idle_timeout) != 0;
    case O_MAX_BODY:
        if (eml_opt_u64("--max-body", v, &a->max_body)) return 1;
        if (a->max_body < 1 || a->max_body > ((uint64_t)1 << 30))
            return eml_fail("serve: --max-body must be 1 to 1073741824");
        return 0;
    default: return eml_enclave_opt(&a->host, "serve", opt, v);
    }
}

static int parse_args(int argc, char **argv, serve_args *a)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"model", required_argument, 0, O_MODEL},
        {"grant", required_argument, 0, OPT_GRANT},
        {"listen", required_argument, 0, O_LISTEN},
        {"name", required_argument, 0, O_NAME},
        {"precision", required_argument, 0, O_PRECISION},
        {"max-batch", required_argument, 0, O_MAX_BATCH},
        {"max-wait-ms", required_argument, 0, O_MAX_WAIT},
        {"max-conns", required_argument, 0, O_MAX_CONNS},
        {"header-timeout-ms", required_argument, 0, O_HEADER_TIMEOUT},
        {"idle-timeout-ms", required_argument, 0, O_IDLE_TIMEOUT},
        {"max-body", required_argument, 0, O_MAX_BODY},
        {"ready-file", required_argument, 0, O_READY},
        {"cert-out", required_argument, 0, O_CERT_OUT},
        {"queue", required_argument, 0, O_QUEUE},
        {"stream", required_argument, 0, O_STREAM},
        {"queue-timeout-ms", required_argument, 0, O_QUEUE_TIMEOUT},
        {"enclave", required_argument, 0, OPT_ENCLAVE},
        {"heap-mb", required_argument, 0, OPT_HEAP},
        {"threads", required_argument, 0, OPT_THREADS},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "model");
    a->max_batch = 64;
    a->max_wait = 5;
    a->max_conns = 256;
    a->header_timeout = 10000;
    a->idle_timeout = 60000;
    a->max_body = EML_HTTP_MAX_BODY_DEFAULT;
    eml_enclave_opts_init(&a->host);
    a->stream = "enclaveml";
    a->queue_timeout = 30000;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(serve_usage, stdout);
            return -1;
        }
        int r = take_opt(a, opt, optarg);
        if (r < 0) return eml_opt_unknown("serve", argc, argv);
        if (r > 0) return 1;
    }
    if (optind != argc)
        return eml_fail("serve: unexpected argument '%s'", argv[optind]);
    if (a->cfg == NULL || a->model == NULL || a->grant == NULL ||
        a->listen == NULL)
        return eml_fail("serve: --cfg, --model, --grant and --listen are "
                        "required");
    return 0;
}

/* "sha256//<base64 of the SHA-256 of the key's SubjectPublicKeyInfo>",
 * curl's --pinnedpubkey form. */
void eml_tls_pin(const uint8_t spki_sha256[32], char out[EML_TLS_PIN_LEN])
{
    memcpy(out, "sha256//", 8);
    EVP_EncodeBlock((unsigned char *)out + 8, spki_sha256, 32);
}

eml_status eml_serve_model_load(eml_enclave_host *h, const uint8_t *cfg,
                                size_t cfg_len, const char *model,
                                const char *grant, eml_err *err)
{
    uint8_t *g = NULL;
    size_t glen = 0;
    eml_status st = eml_file_read(grant, &g, &glen, err);
    if (st != EML_OK) return st;
    char *paths[1] = {(char *)model};
    int fds[1] = {-1};
    h->files.n = 1;
    h->files.paths = paths;
    h->files.fds = fds;
    eml_ecall_model_load lq = {{cfg, cfg_len}, {g, glen}};
    eml_reply_model_loaded la;
    st = eml_host_call(h, EML_MSG_MODEL_LOAD, &lq, sizeof(lq), &la,
                       sizeof(la), err);
    if (fds[0] >= 0) close(fds[0]);
    h->files.n = 0;
    h->files.paths = NULL;
    h->files.fds = NULL;
    free(g);
    return st;
}

/* MODEL_LOAD, then SERVE_START; the certificate and its pin. */
static eml_status start_serving(eml_enclave_host *h, const serve_args *a,
                                const uint8_t *cfg, size_t cfg_len,
                                char pin[EML_TLS_PIN_LEN], eml_err *err)
{
    eml_status st = eml_serve_model_load(h, cfg, cfg_len, a->model, a->grant,
                                         err);
    if (st != EML_OK) return st;
    eml_ecall_serve_start q = {
        {(const uint8_t *)a->name, strlen(a->name)},
        (int)a->precision,
        (int)a->max_batch,
        (int)a->max_wait,
        (int)a->max_conns,
        (int)a->header_timeout,
        (int)a->idle_timeout,
        1024,
        EML_HTTP_MAX_HEADER_DEFAULT,
        a->max_body};
    eml_reply_serve_ready r;
    st = eml_host_call(h, EML_MSG_SERVE_START, &q, sizeof(q), &r, sizeof(r),
                       err);
    if (st != EML_OK) return st;
    uint8_t *report = NULL, spki[32];
    size_t rlen = 0;
    st = eml_ratls_report(r.cert.p, r.cert.n, &report, &rlen, spki, err);
    free(report);
    if (st != EML_OK) return st;
    eml_tls_pin(spki, pin);
    if (a->cert_out != NULL)
        st = eml_file_write_atomic(a->cert_out, r.cert.p, r.cert.n, 0644, err);
    return st;
}

/* QUEUE_START, then the host's side of the queue. */
static eml_status start_queue(eml_enclave_host *h, const serve_args *a,
                              eml_serve_queue **q,
                              char fe_hex[EML_QUEUE_ID_HEX + 1], eml_err *err)
{
    eml_ecall_queue_start qs = {
        {(const uint8_t *)a->stream, strlen(a->stream)},
        (int)a->queue_timeout};
    eml_reply_queue_ready r;
    eml_status st = eml_host_call(h, EML_MSG_QUEUE_START, &qs, sizeof(qs), &r,
                                  sizeof(r), err);
    if (st != EML_OK) return st;
    eml_hex(fe_hex, r.fe, EML_QUEUE_ID_BYTES);
    /* the stream is trimmed far behind anything still pending: the
     * enclave keeps at most 2 (max_conns + 16) requests outstanding */
    return eml_serve_queue_start(a->queue, a->stream, fe_hex,
                                 100000 + 4 * (uint64_t)a->max_conns, q, err);
}

static int write_ready(const char *path, const char *addr, const char *pin)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "%s %s\n", addr, pin);
    eml_err err = {0};
    eml_status st = eml_file_write_atomic(path, (const uint8_t *)line,
                                          (size_t)n, 0644, &err);
    return st == EML_OK ? 0 : eml_fail_st(st, &err);
}

int eml_cmd_serve(int argc, char **argv)
{
    serve_args a;
    int r = parse_args(argc, argv, &a);
    if (r) return r < 0 ? 0 : 1;
    eml_err err = {0};
    uint8_t *cfg = NULL;
    size_t cfg_len = 0;
    eml_status st = eml_file_read(a.cfg, &cfg, &cfg_len, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_worker_addr addr;
    st = eml_worker_addr_parse(a.listen, &addr, &err);
    if (st == EML_OK && addr.family != AF_INET)
        st = eml_err_set(&err, EML_ERR_INVALID,
                         "--listen takes tcp:HOST:PORT");
    int lfd = -1;
    char bound[EML_WORKER_ADDR_MAX];
    if (st == EML_OK)
        st = eml_worker_listen(&addr, &lfd, bound, sizeof(bound), &err);
    if (st != EML_OK) {
        free(cfg);
        return eml_fail("serve: %s", eml_err_msg(&err, st));
    }
    (void)listen(lfd, 1024); /* a deeper backlog than the worker's */
    eml_enclave_host h;
    eml_host_opts ho = a.host;
    char pin[EML_TLS_PIN_LEN], fe_hex[EML_QUEUE_ID_HEX + 1] = "";
    eml_serve_queue *q = NULL;
    st = eml_host_start(&h, &ho, &err);
    if (st == EML_OK) {
        st = start_serving(&h, &a, cfg, cfg_len, pin, &err);
        if (st == EML_OK && a.queue != NULL)
            st = start_queue(&h, &a, &q, fe_hex, &err);
        if (st != EML_OK) eml_host_stop(&h);
    }
    free(cfg);
    if (st != EML_OK) {
        close(lfd);
        return eml_fail("serve: %s", eml_err_msg(&err, st));
    }
    if (!a.quiet) {
        char mh[65];
        eml_hex(mh, h.measurement, 32);
        fprintf(stderr,
                "serving %s as '%s' on %s (enclave %s, measurement %s, TLS "
                "key %s)\n",
                a.cfg, a.name, bound,
                a.host.backend == EML_BACKEND_SIM ? "sim" : "none", mh, pin);
        if (q != NULL)
            fprintf(stderr,
                    "queueing predicts to %s, stream %s, as front end %s "
                    "(replies on %s:rep:%s)\n",
                    a.queue, a.stream, fe_hex, a.stream, fe_hex);
    }
    if (a.ready != NULL && write_ready(a.ready, bound, pin)) {
        eml_serve_queue_stop(q);
        eml_host_stop(&h);
        close(lfd);
        return 1;
    }
    (void)eml_cli_stop_on_signals();
    eml_serve_stats stats;
    memset(&stats, 0, sizeof(stats));
    st = eml_serve_relay(&h, lfd, (size_t)a.max_conns + 64, q, &eml_cli_stop,
                         &stats, a.quiet ? NULL : stderr, &err);
    eml_serve_queue_stop(q);
    eml_host_stop(&h);
    close(lfd);
    if (st != EML_OK) return eml_fail("serve: %s", eml_err_msg(&err, st));
    if (!a.quiet)
        fprintf(stderr,
                "serve: stopped: %llu connections, %llu bytes in, %llu "
                "out\n",
                (unsigned long long)stats.accepted,
                (unsigned long long)stats.bytes_in,
                (unsigned long long)stats.bytes_out);
    return 0;
}
