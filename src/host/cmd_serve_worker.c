/*
 * cmd_serve_worker.c - `enclaveml serve-worker`: a worker enclave of an
 * attested server's queue (docs/serve.md, "Scale-out through Redis
 * Streams").  The enclave loads the model (MODEL_LOAD, as serve does)
 * and makes its attestation report for the front end; this process puts
 * the report into <stream>:workers, waits for the front end's wrapped
 * queue key in <stream>:keys, then loops: XREADGROUP new entries (and,
 * now and then, XAUTOCLAIM the ones a dead or stuck worker left pending
 * longer than --claim-idle-ms), hands them to the enclave, XADDs its
 * sealed answers to each front end's reply stream, and XACKs an entry
 * only once its answer is written (or the enclave refused it), so that
 * no request is lost to a worker's death.  Host side: it sees entry ids,
 * sizes and timing, never a plaintext instance, answer or key.
 */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "enclaveml/serve.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_serve.h"
#include "host/fileio.h"
#include "host/redis_link.h"

#define REPLY_MAXLEN 10000 /* each reply stream, trimmed to about */

static const char worker_usage[] =
    "usage: enclaveml serve-worker --queue redis://HOST:PORT --cfg F\n"
    "                              --model M.emlc --grant G [--stream NAME]\n"
    "                              [--consumer NAME] [--precision P]\n"
    "                              [--max-batch B] [--claim-idle-ms T]\n"
    "                              [--admit-timeout-s S] [--enclave sim|none]\n"
    "                              [--heap-mb M] [--threads N] [--quiet]\n"
    "\n"
    "A worker enclave of `enclaveml serve --queue` (docs/serve.md): it loads\n"
    "the model as serve does (M.emlc under the key its grant G gives this\n"
    "enclave), proves its attestation to the front end through Redis (its\n"
    "report in NAME:workers) and waits at most --admit-timeout-s (30) for\n"
    "the queue key the front end wraps to it (NAME:keys).  Then it reads\n"
    "the stream NAME (default enclaveml) as consumer --consumer (default\n"
    "worker-<host>-<pid>) of the group \"workers\", at most --max-batch (64)\n"
    "entries at a time, runs them in the enclave in shared forward passes\n"
    "of up to --max-batch examples, writes the sealed answers to each\n"
    "front end's reply stream and acknowledges each entry after its answer\n"
    "is written.  Entries another worker left pending for --claim-idle-ms\n"
    "(2000) are claimed (XAUTOCLAIM) and answered; the front end answers\n"
    "each request once.  --precision fp32|bf16|int8 as for serve.  SIGINT\n"
    "or SIGTERM stops.\n";

enum { W_QUEUE = 1000, W_MODEL, W_STREAM, W_CONSUMER, W_PRECISION,
       W_MAX_BATCH, W_CLAIM_IDLE, W_ADMIT_TIMEOUT };

typedef struct worker_args {
    const char *queue, *cfg, *model, *grant, *stream;
    char consumer[EML_QUEUE_NAME_MAX + 1];
    eml_precision precision;
    long max_batch, claim_idle, admit_timeout;
    eml_host_opts host; /* --enclave, --heap-mb, --threads */
    int quiet;
} worker_args;

/* What the loop works with. */
typedef struct wctx {
    const worker_args *a;
    eml_enclave_host *h;
    eml_redis *r;
    char fe[EML_QUEUE_ID_HEX + 1]; /* whose key the enclave holds */
    uint8_t *key_tried;            /* the wrapped key last offered */
    size_t key_tried_n;
    char cursor[48];               /* XAUTOCLAIM's */
    eml_http_buf ev;
    eml_redis_entry *ents;
    size_t n_ents, cap_ents;
    uint64_t answered, refused, claimed;
} wctx;

static int take_opt(worker_args *a, int opt, const char *v)
{
    switch (opt) {
    case W_QUEUE: a->queue = v; return 0;
    case OPT_CFG: a->cfg = v; return 0;
    case W_MODEL: a->model = v; return 0;
    case OPT_GRANT: a->grant = v; return 0;
    case OPT_QUIET: a->quiet = 1; return 0;
    case W_STREAM:
    case W_CONSUMER:
        if (!eml_queue_name_ok((const uint8_t *)v, strlen(v)))
            return eml_fail("serve-worker: --%s is 1 to 64 of A-Z a-z 0-9 "
                            ". _ : -",
                            opt == W_STREAM ? "stream" : "consumer");
        if (opt == W_STREAM) a->stream = v;
        else snprintf(a->consumer, sizeof(a->consumer), "%s", v);
        return 0;
    case W_PRECISION:
        if (eml_precision_parse(v, &a->precision) == EML_OK) return 0;
        return eml_fail("serve-worker: --precision: '%s' is not one of: "
                        "fp32, bf16, int8", v);
    case W_MAX_BATCH:
        return eml_opt_long("--max-batch", v, 1, 4096, &a->max_batch) != 0;
    case W_CLAIM_IDLE:
        return eml_opt_long("--claim-idle-ms", v, 10, 3600000,
                            &a->claim_idle) != 0;
    case W_ADMIT_TIMEOUT:
        return eml_opt_long("--admit-timeout-s", v, 1, 86400,
                            &a->admit_timeout) != 0;
    default: return eml_enclave_opt(&a->host, "serve-worker", opt, v);
    }
}

static void default_consumer(worker_args *a)
{
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    for (char *c = host; *c; c++)
        if (!eml_queue_name_ok((const uint8_t *)c, 1)) *c = '-';
    snprintf(a->consumer, sizeof(a->consumer), "worker-%.40s-%ld", host,
             (long)getpid());
}

static int parse_args(int argc, char **argv, worker_args *a)
{
    static const struct option opts[] = {
        {"queue", required_argument, 0, W_QUEUE},
        {"cfg", required_argument, 0, OPT_CFG},
        {"model", required_argument, 0, W_MODEL},
        {"grant", required_argument, 0, OPT_GRANT},
        {"stream", required_argument, 0, W_STREAM},
        {"consumer", required_argument, 0, W_CONSUMER},
        {"precision", required_argument, 0, W_PRECISION},
        {"max-batch", required_argument, 0, W_MAX_BATCH},
        {"claim-idle-ms", required_argument, 0, W_CLAIM_IDLE},
        {"admit-timeout-s", required_argument, 0, W_ADMIT_TIMEOUT},
        {"enclave", required_argument, 0, OPT_ENCLAVE},
        {"heap-mb", required_argument, 0, OPT_HEAP},
        {"threads", required_argument, 0, OPT_THREADS},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof(*a));
    a->stream = "enclaveml";
    a->max_batch = 64;
    a->claim_idle = 2000;
    a->admit_timeout = 30;
    eml_enclave_opts_init(&a->host);
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(worker_usage, stdout);
            return -1;
        }
        int r = take_opt(a, opt, optarg);
        if (r < 0) return eml_opt_unknown("serve-worker", argc, argv);
        if (r > 0) return 1;
    }
    if (optind != argc)
        return eml_fail("serve-worker: unexpected argument '%s'",
                        argv[optind]);
    if (a->queue == NULL || a->cfg == NULL || a->model == NULL ||
        a->grant == NULL)
        return eml_fail("serve-worker: --queue, --cfg, --model and --grant "
                        "are required");
    if (a->consumer[0] == '\0') default_consumer(a);
    return 0;
}

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void note(const wctx *w, const char *fmt, ...) EML_PRINTF(2, 3);
static void note(const wctx *w, const char *fmt, ...)
{
    if (w->a->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "enclaveml: serve-worker: %s: ", w->a->consumer);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ==== the key ==== */

/* The wrapped key in <stream>:keys for this worker, offered to the
 * enclave if it is not the one tried last.  *got: the enclave took it. */
static eml_status try_key(wctx *w, int *got, eml_err *err)
{
    char keys[EML_QUEUE_NAME_MAX + 16];
    snprintf(keys, sizeof(keys), "%s:keys", w->a->stream);
    const char *argv[] = {"HGET", keys, w->a->consumer};
    redisReply *x = NULL;
    *got = 0;
    eml_status st = eml_redis_cmd(w->r, 3, argv, NULL, &x, err);
    if (st != EML_OK) return st;
    if (x->type != REDIS_REPLY_STRING ||
        (x->len == w->key_tried_n && w->key_tried != NULL &&
         memcmp(x->str, w->key_tried, x->len) == 0)) {
        eml_redis_free(x);
        return EML_OK;
    }
    free(w->key_tried);
    w->key_tried = malloc(x->len ? x->len : 1);
    w->key_tried_n = w->key_tried != NULL ? x->len : 0;
    if (w->key_tried != NULL) memcpy(w->key_tried, x->str, x->len);
    eml_ecall_qworker_key q = {{(const uint8_t *)x->str, x->len}};
    eml_reply_qworker_keyed k;
    eml_err kerr = {0};
    st = eml_host_call(w->h, EML_MSG_QWORKER_KEY, &q, sizeof(q), &k,
                       sizeof(k), &kerr);
    eml_redis_free(x);
    if (st == EML_OK) {
        eml_hex(w->fe, k.fe, EML_QUEUE_ID_BYTES);
        *got = 1;
    } else if (st == EML_ERR_AUTH || st == EML_ERR_FORMAT) {
        note(w, "a key it cannot open (%s): waiting for another",
             eml_err_msg(&kerr, st));
        st = EML_OK; /* a stale key, or a forged one: wait */
    } else {
        st = eml_err_set(err, st, "%s", eml_err_msg(&kerr, st));
    }
    return st;
}

/* The report into <stream>:workers, then the key, within the timeout. */
static eml_status admission(wctx *w, const char *report, size_t rlen,
                            eml_err *err)
{
    char workers[EML_QUEUE_NAME_MAX + 16];
    snprintf(workers, sizeof(workers), "%s:workers", w->a->stream);
    const char *argv[] = {"HSET", workers, w->a->consumer, report};
    size_t len[] = {4, strlen(workers), strlen(w->a->consumer), rlen};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(w->r, 4, argv, len, &x, err);
    eml_redis_free(x);
    double until = wall_s() + (double)w->a->admit_timeout;
    int got = 0;
    while (st == EML_OK && !got && !eml_cli_stop) {
        st = try_key(w, &got, err);
        if (st != EML_OK || got) break;
        if (wall_s() > until)
            return eml_err_set(err, EML_ERR_AUTH,
                               "no front end admitted this worker within "
                               "%ld s (is `enclaveml serve --queue` running "
                               "on stream %s, with this enclave's "
                               "measurement?)",
                               w->a->admit_timeout, w->a->stream);
        struct timespec t = {0, 200 * 1000000L};
        nanosleep(&t, NULL);
    }
    if (st == EML_OK && !got)
        st = eml_err_set(err, EML_ERR_IO, "stopped before admission");
    return st;
}

/* ==== entries ==== */

static eml_status xack(wctx *w, const char *id, eml_err *err)
{
    const char *argv[] = {"XACK", w->a->stream, EML_QUEUE_GROUP, id};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(w->r, 4, argv, NULL, &x, err);
    eml_redis_free(x);
    return st;
}

/* The enclave's outputs: an answer is written, then its entry acked; a
 * dropped entry is acked. */
static eml_status outcomes(wctx *w, const uint8_t *out, size_t len,
                           eml_err *err)
{
    size_t off = 0;
    eml_serve_record rec;
    eml_status st = EML_OK;
    while (st == EML_OK &&
           eml_serve_record_next(out, len, &off, &rec) == EML_OK) {
        if (rec.kind == EML_SERVE_LOG) {
            note(w, "%.*s", (int)rec.n, (const char *)rec.p);
            continue;
        }
        if (rec.conn >= w->n_ents ||
            (rec.kind != EML_SERVE_ANSWER && rec.kind != EML_SERVE_DROP))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "the enclave sent a record of kind %d for "
                               "entry %u", (int)rec.kind, rec.conn);
        const eml_redis_entry *e = &w->ents[rec.conn];
        if (rec.kind == EML_SERVE_ANSWER) {
            char rep[EML_QUEUE_NAME_MAX + 8 + EML_QUEUE_ID_HEX];
            snprintf(rep, sizeof(rep), "%s:rep:%s", w->a->stream, e->fe);
            st = eml_redis_xadd(w->r, rep, REPLY_MAXLEN, rec.p, rec.n, err);
            w->answered++;
        } else {
            w->refused++;
        }
        if (st == EML_OK) st = xack(w, e->id, err);
    }
    return st;
}

/* The entries of list through the enclave. */
static eml_status process(wctx *w, const redisReply *list, int claimed,
                          eml_err *err)
{
    eml_http_buf_reset(&w->ev);
    w->n_ents = 0;
    eml_status st = eml_redis_entries(list, EML_SERVE_ENTRY, &w->ev,
                                      &w->ents, &w->n_ents, &w->cap_ents,
                                      err);
    if (st != EML_OK || w->n_ents == 0) return st;
    for (size_t i = 0; i < w->n_ents; i++) /* a new front end's key? */
        if (w->ents[i].fe[0] != '\0' && strcmp(w->ents[i].fe, w->fe) != 0) {
            int got = 0;
            st = try_key(w, &got, err);
            if (got) note(w, "now keyed by front end %s", w->fe);
            if (st != EML_OK) return st;
            break;
        }
    eml_ecall_qworker_io q = {{w->ev.p, w->ev.len}};
    eml_reply_qworker_out a;
    st = eml_host_call(w->h, EML_MSG_QWORKER_IO, &q, sizeof(q), &a,
                       sizeof(a), err);
    if (st == EML_OK) st = outcomes(w, a.out.p, a.out.n, err);
    if (st == EML_OK && claimed) {
        w->claimed += w->n_ents;
        note(w, "claimed %zu entries left pending over %ld ms (first %s); "
                "answered at %.3f",
             w->n_ents, w->a->claim_idle, w->ents[0].id, wall_s());
    }
    return st;
}

/* XAUTOCLAIM from the cursor on: entries pending too long elsewhere. */
static eml_status claim(wctx *w, eml_err *err)
{
    char idle[32], count[32];
    snprintf(idle, sizeof(idle), "%ld", w->a->claim_idle);
    snprintf(count, sizeof(count), "%ld", w->a->max_batch);
    const char *argv[] = {"XAUTOCLAIM", w->a->stream, EML_QUEUE_GROUP,
                          w->a->consumer, idle, w->cursor, "COUNT", count};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(w->r, 8, argv, NULL, &x, err);
    if (st != EML_OK) return st;
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 2 ||
        x->element[0]->type != REDIS_REPLY_STRING ||
        x->element[0]->len >= sizeof(w->cursor)) {
        eml_redis_free(x);
        return eml_err_set(err, EML_ERR_FORMAT, "Redis: a strange "
                                                "XAUTOCLAIM reply");
    }
    memcpy(w->cursor, x->element[0]->str, x->element[0]->len);
    w->cursor[x->element[0]->len] = '\0';
    st = process(w, x->element[1], 1, err);
    eml_redis_free(x);
    return st;
}

/* XREADGROUP: from "0", this consumer's own pending entries (a restart
 * under the same name); from ">", new ones, waiting at most block_ms. */
static eml_status read_group(wctx *w, const char *from, long block_ms,
                             eml_err *err)
{
    char count[32], block[32];
    snprintf(count, sizeof(count), "%ld", w->a->max_batch);
    snprintf(block, sizeof(block), "%ld", block_ms);
    const char *argv[] = {"XREADGROUP", "GROUP", EML_QUEUE_GROUP,
                          w->a->consumer, "COUNT", count, "BLOCK", block,
                          "STREAMS", w->a->stream, from};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(w->r, 11, argv, NULL, &x, err);
    if (st != EML_OK) return st;
    const redisReply *list = eml_redis_stream_entries(x);
    if (list != NULL) st = process(w, list, 0, err);
    eml_redis_free(x);
    return st;
}

static eml_status work(wctx *w, eml_err *err)
{
    long every = w->a->claim_idle / 2 > 100 ? w->a->claim_idle / 2 : 100;
    long block = every < 500 ? every : 500;
    double next_claim = wall_s() + (double)every / 1000;
    eml_status st = read_group(w, "0", 0, err);
    snprintf(w->cursor, sizeof(w->cursor), "0-0");
    while (st == EML_OK && !eml_cli_stop) {
        if (wall_s() >= next_claim) {
            st = claim(w, err);
            if (strcmp(w->cursor, "0-0") == 0)
                next_claim = wall_s() + (double)every / 1000;
            continue; /* more to claim: at once */
        }
        st = read_group(w, ">", block, err);
    }
    return st;
}

/* ==== the command ==== */

/* The enclave: model, worker, report, admission. */
static eml_status start_worker(wctx *w, const uint8_t *cfg, size_t cfg_len,
                               eml_err *err)
{
    const worker_args *a = w->a;
    eml_status st = eml_serve_model_load(w->h, cfg, cfg_len, a->model,
                                         a->grant, err);
    if (st != EML_OK) return st;
    eml_ecall_qworker_start q = {
        {(const uint8_t *)a->stream, strlen(a->stream)},
        {(const uint8_t *)a->consumer, strlen(a->consumer)},
        (int)a->precision, (int)a->max_batch, 65536};
    eml_reply_qworker_ready r;
    st = eml_host_call(w->h, EML_MSG_QWORKER_START, &q, sizeof(q), &r,
                       sizeof(r), err);
    if (st != EML_OK) return st;
    char *report = malloc(r.report.n + 1);
    if (report == NULL) return eml_err_set(err, EML_ERR_NOMEM, "no memory");
    memcpy(report, r.report.p, r.report.n);
    st = admission(w, report, r.report.n, err);
    free(report);
    return st;
}

static void forget(wctx *w)
{
    char workers[EML_QUEUE_NAME_MAX + 16], keys[EML_QUEUE_NAME_MAX + 16];
    snprintf(workers, sizeof(workers), "%s:workers", w->a->stream);
    snprintf(keys, sizeof(keys), "%s:keys", w->a->stream);
    const char *h1[] = {"HDEL", workers, w->a->consumer};
    const char *h2[] = {"HDEL", keys, w->a->consumer};
    redisReply *x = NULL;
    eml_err err = {0};
    if (eml_redis_cmd(w->r, 3, h1, NULL, &x, &err) == EML_OK)
        eml_redis_free(x);
    if (eml_redis_cmd(w->r, 3, h2, NULL, &x, &err) == EML_OK)
        eml_redis_free(x);
}

int eml_cmd_serve_worker(int argc, char **argv)
{
    worker_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : 1;
    eml_err err = {0};
    uint8_t *cfg = NULL;
    size_t cfg_len = 0;
    eml_status st = eml_file_read(a.cfg, &cfg, &cfg_len, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    wctx w;
    memset(&w, 0, sizeof(w));
    w.a = &a;
    eml_http_buf_init(&w.ev, EML_SERVE_IO_MAX);
    eml_enclave_host h;
    eml_host_opts ho = a.host;
    int started = 0;
    st = eml_redis_open(a.queue, 5000, &w.r, &err);
    if (st == EML_OK) st = eml_redis_group_create(w.r, a.stream, &err);
    if (st == EML_OK) st = eml_host_start(&h, &ho, &err);
    if (st == EML_OK) {
        started = 1;
        w.h = &h;
        (void)eml_cli_stop_on_signals();
        st = start_worker(&w, cfg, cfg_len, &err);
    }
    free(cfg);
    if (st == EML_OK) {
        note(&w, "admitted by front end %s; reading stream %s", w.fe,
             a.stream);
        st = work(&w, &err);
    }
    if (w.r != NULL && started) forget(&w);
    if (started) eml_host_stop(&h);
    eml_redis_close(w.r);
    eml_http_buf_free(&w.ev);
    free(w.ents);
    free(w.key_tried);
    if (st != EML_OK)
        return eml_fail("serve-worker: %s", eml_err_msg(&err, st));
    note(&w, "stopped: %llu entries answered (%llu claimed), %llu refused",
         (unsigned long long)w.answered, (unsigned long long)w.claimed,
         (unsigned long long)w.refused);
    return 0;
}
