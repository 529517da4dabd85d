/*
 * serve_queue.c - the front end host's side of the serving queue
 * (serve_queue.h, docs/serve.md): XADD and HSET for the enclave, and a
 * reader thread that gathers replies and workers' reports for it.
 *
 * The reader has its own Redis connection and blocks in XREAD on the
 * reply stream <stream>:rep:<fe> (at most 200 ms, so that it polls the
 * workers' hash every 500 ms and sees a stop soon); what it reads becomes
 * records in a buffer under a mutex, and a write to an eventfd wakes the
 * relay's epoll loop, which hands them to the next SERVE_IO.  A report is
 * handed on when it is new or changed (a worker's every start makes a
 * new one), so that a restarted worker is admitted again, and a refused
 * one is not refused again every 500 ms.
 *
 * Host side: the bodies are ciphertext, the reports public; nothing here
 * is checked beyond what carrying it needs - the enclave checks it all.
 */
#include "host/serve_queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "enclaveml/crypto.h"
#include "host/redis_link.h"

#define READ_BLOCK_MS "200"
#define POLL_WORKERS_MS 500
#define WORKERS_MAX 4096

typedef struct seen {
    char name[EML_QUEUE_NAME_MAX + 1];
    uint8_t digest[32];
} seen;

struct eml_serve_queue {
    eml_redis *main, *reader;
    char stream[EML_QUEUE_NAME_MAX + 1];
    char rep[EML_QUEUE_NAME_MAX + 8 + EML_QUEUE_ID_HEX];
    char workers[EML_QUEUE_NAME_MAX + 16], keys[EML_QUEUE_NAME_MAX + 16];
    uint64_t maxlen;
    int efd;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    /* under mu */
    eml_http_buf waiting;
    int stop, failed;
    eml_err err;
    /* the reader's own */
    char last[48];
    seen *seen;
    size_t n_seen;
};

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void wake(eml_serve_queue *q)
{
    uint64_t one = 1;
    ssize_t w = write(q->efd, &one, sizeof(one));
    (void)w; /* a full counter is awake already */
}

static int stopping(eml_serve_queue *q)
{
    pthread_mutex_lock(&q->mu);
    int s = q->stop;
    pthread_mutex_unlock(&q->mu);
    return s;
}

/* Appends records (under mu), waiting while the buffer is full. */
static eml_status hand_over(eml_serve_queue *q, const eml_http_buf *b,
                            eml_err *err)
{
    for (;;) {
        pthread_mutex_lock(&q->mu);
        eml_status st = q->stop ? EML_OK
                                : eml_http_buf_put(&q->waiting, b->p, b->len,
                                                   err);
        pthread_mutex_unlock(&q->mu);
        if (st != EML_ERR_RANGE) {
            if (st == EML_OK) wake(q);
            return st;
        }
        wake(q);
        struct timespec t = {0, 10 * 1000000L};
        nanosleep(&t, NULL);
    }
}

/* Replies since the last one read. */
static eml_status read_replies(eml_serve_queue *q, eml_http_buf *b,
                               eml_err *err)
{
    const char *argv[] = {"XREAD", "COUNT", "256", "BLOCK", READ_BLOCK_MS,
                          "STREAMS", q->rep, q->last};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(q->reader, 8, argv, NULL, &x, err);
    if (st != EML_OK) return st;
    const redisReply *list = eml_redis_stream_entries(x);
    eml_redis_entry *ents = NULL;
    size_t n = 0, cap = 0;
    eml_http_buf_reset(b);
    if (list != NULL)
        st = eml_redis_entries(list, EML_SERVE_REPLY, b, &ents, &n, &cap,
                               err);
    if (st == EML_OK && n > 0) {
        snprintf(q->last, sizeof(q->last), "%s", ents[n - 1].id);
        st = hand_over(q, b, err);
    }
    free(ents);
    eml_redis_free(x);
    return st;
}

/* A worker's report, handed on if new or changed. */
static eml_status report(eml_serve_queue *q, const redisReply *k,
                         const redisReply *v, eml_http_buf *b, eml_err *err)
{
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
        k->len < 1 || k->len > EML_QUEUE_NAME_MAX ||
        v->len > EML_REPORT_MAX)
        return EML_OK; /* not one a worker host could have written */
    uint8_t d[32];
    if (eml_sha256(d, v->str, v->len) != EML_OK)
        return eml_err_set(err, EML_ERR_BACKEND, "hash failed");
    size_t i = 0;
    while (i < q->n_seen && (strlen(q->seen[i].name) != k->len ||
                             memcmp(q->seen[i].name, k->str, k->len) != 0))
        i++;
    if (i < q->n_seen && memcmp(q->seen[i].digest, d, 32) == 0)
        return EML_OK;
    if (i == q->n_seen) {
        if (q->n_seen == WORKERS_MAX) return EML_OK;
        seen *g = realloc(q->seen, (q->n_seen + 1) * sizeof(*g));
        if (g == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        q->seen = g;
        q->n_seen++;
        memcpy(g[i].name, k->str, k->len);
        g[i].name[k->len] = '\0';
    }
    memcpy(q->seen[i].digest, d, 32);
    eml_queue_field f[2] = {{(const uint8_t *)"name", 4,
                             (const uint8_t *)k->str, k->len},
                            {(const uint8_t *)"report", 6,
                             (const uint8_t *)v->str, v->len}};
    eml_http_buf_reset(b);
    eml_status st = eml_queue_fields_put(b, 0, EML_SERVE_WORKER, f, 2, err);
    return st == EML_OK ? hand_over(q, b, err) : st;
}

static eml_status poll_workers(eml_serve_queue *q, eml_http_buf *b,
                               eml_err *err)
{
    const char *argv[] = {"HGETALL", q->workers};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(q->reader, 2, argv, NULL, &x, err);
    if (st != EML_OK) return st;
    if (x->type == REDIS_REPLY_ARRAY && x->elements % 2 == 0)
        for (size_t i = 0; st == EML_OK && i < x->elements; i += 2)
            st = report(q, x->element[i], x->element[i + 1], b, err);
    eml_redis_free(x);
    return st;
}

static void *reader_main(void *arg)
{
    eml_serve_queue *q = arg;
    eml_http_buf b;
    eml_http_buf_init(&b, EML_SERVE_IO_MAX);
    eml_err err = {0};
    eml_status st = EML_OK;
    uint64_t polled = 0;
    while (st == EML_OK && !stopping(q)) {
        if (now_ms() - polled >= POLL_WORKERS_MS) {
            polled = now_ms();
            st = poll_workers(q, &b, &err);
        }
        if (st == EML_OK) st = read_replies(q, &b, &err);
    }
    if (st != EML_OK) {
        pthread_mutex_lock(&q->mu);
        q->failed = 1;
        q->err = err;
        pthread_mutex_unlock(&q->mu);
        wake(q);
    }
    eml_http_buf_free(&b);
    return NULL;
}

eml_status eml_serve_queue_start(const char *url, const char *stream,
                                 const char *fe_hex, uint64_t maxlen,
                                 eml_serve_queue **out, eml_err *err)
{
    *out = NULL;
    eml_serve_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&q->mu, NULL);
    eml_http_buf_init(&q->waiting, EML_SERVE_IO_MAX);
    snprintf(q->stream, sizeof(q->stream), "%s", stream);
    snprintf(q->rep, sizeof(q->rep), "%s:rep:%s", stream, fe_hex);
    snprintf(q->workers, sizeof(q->workers), "%s:workers", stream);
    snprintf(q->keys, sizeof(q->keys), "%s:keys", stream);
    snprintf(q->last, sizeof(q->last), "0-0"); /* the stream is new */
    q->maxlen = maxlen;
    eml_status st = q->efd >= 0 ? EML_OK
                                : eml_err_set(err, EML_ERR_IO, "eventfd: %s",
                                              strerror(errno));
    if (st == EML_OK) st = eml_redis_open(url, 5000, &q->main, err);
    if (st == EML_OK) st = eml_redis_open(url, 5000, &q->reader, err);
    if (st == EML_OK) st = eml_redis_group_create(q->main, stream, err);
    if (st == EML_OK && pthread_create(&q->th, NULL, reader_main, q) != 0)
        st = eml_err_set(err, EML_ERR_IO, "cannot start the queue reader");
    if (st != EML_OK) {
        eml_serve_queue_stop(q);
        return st;
    }
    q->started = 1;
    *out = q;
    return EML_OK;
}

int eml_serve_queue_fd(const eml_serve_queue *q)
{
    return q->efd;
}

eml_status eml_serve_queue_take(eml_serve_queue *q, eml_http_buf *ev,
                                eml_err *err)
{
    uint64_t v;
    ssize_t r = read(q->efd, &v, sizeof(v));
    (void)r; /* EAGAIN: woken already */
    pthread_mutex_lock(&q->mu);
    eml_status st = EML_OK;
    if (q->failed) {
        st = eml_err_set(err, EML_ERR_IO, "the queue: %s",
                         eml_err_msg(&q->err, EML_ERR_IO));
    } else {
        /* whole records, as many as ev takes; the rest on the next turn */
        size_t off = 0, take = 0;
        eml_serve_record rec;
        while (eml_serve_record_next(q->waiting.p, q->waiting.len, &off,
                                     &rec) == EML_OK &&
               ev->len + off <= ev->max)
            take = off;
        if (take > 0) st = eml_http_buf_put(ev, q->waiting.p, take, err);
        if (st == EML_OK) {
            memmove(q->waiting.p, q->waiting.p + take,
                    q->waiting.len - take);
            q->waiting.len -= take;
            if (q->waiting.len > 0) wake(q);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

eml_status eml_serve_queue_out(eml_serve_queue *q,
                               const eml_serve_record *rec, eml_err *err)
{
    if (rec->kind == EML_SERVE_ENQUEUE)
        return eml_redis_xadd(q->main, q->stream, q->maxlen, rec->p, rec->n,
                              err);
    static const char *const names[2] = {"name", "key"};
    eml_queue_field f[2];
    if (rec->kind != EML_SERVE_ADMIT ||
        eml_queue_fields_expect(rec->p, rec->n, names, 2, f, NULL) != EML_OK)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the enclave sent a malformed queue record");
    const char *argv[] = {"HSET", q->keys, (const char *)f[0].p,
                          (const char *)f[1].p};
    size_t len[] = {4, strlen(q->keys), f[0].n, f[1].n};
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(q->main, 4, argv, len, &x, err);
    eml_redis_free(x);
    return st;
}

void eml_serve_queue_stop(eml_serve_queue *q)
{
    if (q == NULL) return;
    if (q->started) {
        pthread_mutex_lock(&q->mu);
        q->stop = 1;
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->th, NULL);
    }
    if (q->main != NULL) { /* nobody reads the reply stream any more */
        const char *argv[] = {"DEL", q->rep};
        redisReply *x = NULL;
        eml_err err = {0};
        if (eml_redis_cmd(q->main, 2, argv, NULL, &x, &err) == EML_OK)
            eml_redis_free(x);
    }
    eml_redis_close(q->main);
    eml_redis_close(q->reader);
    if (q->efd >= 0) close(q->efd);
    pthread_mutex_destroy(&q->mu);
    eml_http_buf_free(&q->waiting);
    free(q->seen);
    free(q);
}
