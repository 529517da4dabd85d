/*
 * enclave_ocalls.c - the host's side of the enclave's ocalls: a table of
 * services (ciphertext files in, the encrypted model out, progress, the
 * mirror's store, the spend ledger), each given the decoded request and
 * answering with its seq.  Untrusted side; it only moves ciphertext, and
 * what the enclave asks for is decoded with the boundary's codec
 * (boundary.h) before anything is done.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "enclaveml/decentral.h"
#include "enclaveml/ledger.h"
#include "enclaveml/outsource.h"
#include "host/enclave_host.h"
#include "host/fileio.h"

/* Each handler answers the enclave's request seq (a reply or an ERROR)
 * and fails only when it cannot. */
typedef eml_status (*ocall_fn)(eml_enclave_host *h, eml_msg_any *q,
                               uint32_t seq);

static eml_status reply(eml_enclave_host *h, uint16_t type, const void *msg,
                        size_t size, uint32_t seq)
{
    return eml_boundary_reply(&h->ch, type, msg, size, seq, NULL);
}

static eml_status reply_error(eml_enclave_host *h, uint32_t seq,
                              const char *fmt, ...) EML_PRINTF(3, 4);
static eml_status reply_error(eml_enclave_host *h, uint32_t seq,
                              const char *fmt, ...)
{
    char msg[EML_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    eml_reply_error m = {(uint64_t)(int64_t)EML_ERR_IO,
                         {(const uint8_t *)msg, strlen(msg)}};
    return reply(h, EML_MSG_ERROR, &m, sizeof(m), seq);
}

static eml_status serve_file_open(eml_enclave_host *h, eml_msg_any *q,
                                  uint32_t seq)
{
    uint64_t id = q->m_FILE_OPEN.file_id;
    if (id >= h->files.n || h->files.paths[id] == NULL) /* NULL: not served */
        return reply_error(h, seq, "no file %llu", (unsigned long long)id);
    if (h->files.fds[id] < 0) {
        h->files.fds[id] = open(h->files.paths[id], O_RDONLY | O_CLOEXEC);
        if (h->files.fds[id] < 0)
            return reply_error(h, seq, "%s: %s", h->files.paths[id],
                               strerror(errno));
    }
    struct stat sb;
    if (fstat(h->files.fds[id], &sb) != 0)
        return reply_error(h, seq, "%s: %s", h->files.paths[id],
                           strerror(errno));
    eml_reply_file_info a = {(uint64_t)sb.st_size};
    return reply(h, EML_MSG_FILE_INFO, &a, sizeof(a), seq);
}

static eml_status serve_file_read(eml_enclave_host *h, eml_msg_any *q,
                                  uint32_t seq)
{
    uint64_t id = q->m_FILE_READ.file_id, off = q->m_FILE_READ.offset;
    size_t len = (size_t)q->m_FILE_READ.length;
    if (id >= h->files.n || h->files.fds[id] < 0 || off > (uint64_t)LLONG_MAX)
        return reply_error(h, seq, "file %llu is not open",
                           (unsigned long long)id);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return reply_error(h, seq, "out of memory");
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(h->files.fds[id], buf + got, len - got,
                          (off_t)(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            free(buf);
            return reply_error(h, seq, "%s: %s", h->files.paths[id],
                               strerror(errno));
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    eml_reply_file_data a = {{buf, got}};
    eml_status st = reply(h, EML_MSG_FILE_DATA, &a, sizeof(a), seq);
    free(buf);
    return st;
}

static eml_status serve_output(eml_enclave_host *h, eml_msg_any *q,
                               uint32_t seq)
{
    const eml_ocall_output *o = &q->m_OUTPUT;
    if (o->stream != 0 || h->out_fd < 0)
        return reply_error(h, seq, "no output stream %llu",
                           (unsigned long long)o->stream);
    int e = eml_fd_write_all(h->out_fd, o->data.p, o->data.n);
    if (e != 0)
        return reply_error(h, seq, "cannot write the output: %s",
                           strerror(e));
    h->out_bytes += o->data.n;
    return reply(h, EML_MSG_OUTPUT_OK, NULL, 0, seq);
}

static eml_status serve_progress(eml_enclave_host *h, eml_msg_any *q,
                                 uint32_t seq)
{
    (void)seq; /* a notification: no answer */
    eml_train_progress p = q->m_PROGRESS.p;
    p.resumed_step = q->m_PROGRESS.resumed - 1;
    if (h->progress != NULL) h->progress(h->progress_user, &p);
    return EML_OK;
}

/* The mirror's store: the host keeps the sealed bytes and never sees the
 * key; the enclave checks everything it reads back.  Each MIRROR_* ocall
 * is answered by mirror_done. */
static const eml_store_ops *store_ops(eml_enclave_host *h)
{
    return h->store != NULL ? eml_store_ops_of(h->store) : NULL;
}

/* buf (n bytes, freed here) goes back as MIRROR_DATA; NULL: MIRROR_OK. */
static eml_status mirror_done(eml_enclave_host *h, uint32_t seq,
                              eml_status st, const eml_err *err, uint8_t *buf,
                              size_t n)
{
    if (st != EML_OK) {
        free(buf);
        return reply_error(h, seq, "%s", eml_err_msg(err, st));
    }
    if (buf == NULL) return reply(h, EML_MSG_MIRROR_OK, NULL, 0, seq);
    eml_reply_mirror_data a = {{buf, n}};
    st = reply(h, EML_MSG_MIRROR_DATA, &a, sizeof(a), seq);
    free(buf);
    return st;
}

static eml_status serve_mirror_header(eml_enclave_host *h, eml_msg_any *q,
                                      uint32_t seq)
{
    (void)q;
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    uint8_t *buf = malloc(EML_POOL_HEADER_BYTES);
    if (buf == NULL) return reply_error(h, seq, "out of memory");
    eml_err err = {0};
    eml_status st = ops->read_header(ops->user, buf, &err);
    return mirror_done(h, seq, st, &err, buf, EML_POOL_HEADER_BYTES);
}

static eml_status serve_mirror_create(eml_enclave_host *h, eml_msg_any *q,
                                      uint32_t seq)
{
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    eml_err err = {0};
    eml_status st = ops->create(ops->user, q->m_MIRROR_CREATE.header,
                                q->m_MIRROR_CREATE.capacity, &err);
    return mirror_done(h, seq, st, &err, NULL, 0);
}

static eml_status serve_mirror_write(eml_enclave_host *h, eml_msg_any *q,
                                     uint32_t seq)
{
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    const eml_ocall_mirror_write *w = &q->m_MIRROR_WRITE;
    eml_err err = {0};
    eml_status st = ops->write(ops->user, w->slot, w->offset, w->data.p,
                               w->data.n, &err);
    return mirror_done(h, seq, st, &err, NULL, 0);
}

static eml_status serve_mirror_bulk(eml_enclave_host *h, eml_msg_any *q,
                                    uint32_t seq)
{
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    if (h->bulk == NULL) return reply_error(h, seq, "no bulk region");
    const eml_ocall_mirror_write_bulk *w = &q->m_MIRROR_WRITE_BULK;
    eml_err err = {0};
    eml_status st = ops->write(ops->user, w->slot, w->offset, h->bulk,
                               (size_t)w->length, &err);
    return mirror_done(h, seq, st, &err, NULL, 0);
}

static eml_status serve_mirror_commit(eml_enclave_host *h, eml_msg_any *q,
                                      uint32_t seq)
{
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    const eml_ocall_mirror_commit *c = &q->m_MIRROR_COMMIT;
    eml_err err = {0};
    eml_status st = ops->commit(ops->user, c->slot, c->length, c->word, &err);
    return mirror_done(h, seq, st, &err, NULL, 0);
}

static eml_status serve_mirror_read(eml_enclave_host *h, eml_msg_any *q,
                                    uint32_t seq)
{
    const eml_store_ops *ops = store_ops(h);
    if (ops == NULL) return reply_error(h, seq, "no mirror was asked for");
    const eml_ocall_mirror_read *r = &q->m_MIRROR_READ;
    size_t n = (size_t)r->length;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) return reply_error(h, seq, "out of memory");
    eml_err err = {0};
    eml_status st = ops->read(ops->user, r->slot, r->offset, buf, n, &err);
    return mirror_done(h, seq, st, &err, buf, n);
}

/* The spend ledger (ledger.h): sealed by the enclave, kept here as
 * $ENCLAVEML_HOME/ledger-<measurement>.bin; the host cannot read it, and
 * the platform counter refuses an old copy. */
static void ledger_path(const eml_enclave_host *h, char *out, size_t cap)
{
    char hex[65];
    eml_hex(hex, h->measurement, 32);
    snprintf(out, cap, "%s/ledger-%s.bin", h->home, hex);
}

static eml_status serve_ledger_read(eml_enclave_host *h, eml_msg_any *q,
                                    uint32_t seq)
{
    (void)q;
    char path[4400];
    ledger_path(h, path, sizeof(path));
    eml_err err = {0};
    uint8_t *buf = NULL;
    size_t n = 0;
    if (access(path, F_OK) == 0) {
        eml_status st = eml_file_read(path, &buf, &n, &err);
        if (st != EML_OK)
            return reply_error(h, seq, "%s", eml_err_msg(&err, st));
    }
    eml_reply_ledger_data a = {{buf, n}};
    eml_status st = reply(h, EML_MSG_LEDGER_DATA, &a, sizeof(a), seq);
    free(buf);
    return st;
}

/* WORKER: the request to the worker, its reply back as it came (the
 * enclave checks it). */
static eml_status serve_worker(eml_enclave_host *h, eml_msg_any *q,
                               uint32_t seq)
{
    const eml_worker_link *w = h->worker;
    if (w == NULL) return reply_error(h, seq, "no worker was asked for");
    eml_err err = {0};
    const uint8_t *p = NULL;
    size_t n = 0;
    eml_status st = w->send(w->user, q->m_WORKER.request.p,
                            q->m_WORKER.request.n, &err);
    if (st == EML_OK) st = w->recv(w->user, &p, &n, &err);
    if (st != EML_OK) return reply_error(h, seq, "%s", err.msg);
    eml_reply_worker_data a = {{p, n}};
    return reply(h, EML_MSG_WORKER_DATA, &a, sizeof(a), seq);
}

/* NODE_SEND / NODE_RECV: a node's frames over its link (sealed by the
 * enclave; the host moves bytes).  NODE_REPORT: its lines, printed. */
/* Every NODE_* ocall's first step: the host must be serving a node, and
 * its start hook runs once before the first frame moves.  1 with *n set;
 * 0 with *st what the ocall returns: an ERROR reply's sending, or the
 * hook's failure, which ends the run (the reason in h->ocall_err). */
static int node_ready(eml_enclave_host *h, uint32_t seq,
                      const eml_node_io **n, eml_status *st)
{
    *n = h->node;
    if (*n == NULL) {
        *st = reply_error(h, seq, "this is not a node");
        return 0;
    }
    if (h->node_started || (*n)->start == NULL) return 1;
    *st = (*n)->start((*n)->user, &h->ocall_err);
    h->node_started = *st == EML_OK;
    return h->node_started;
}

static eml_status serve_node_send(eml_enclave_host *h, eml_msg_any *q,
                                  uint32_t seq)
{
    const eml_node_io *n;
    eml_status not_ready;
    if (!node_ready(h, seq, &n, &not_ready)) return not_ready;
    eml_err err = {0};
    const eml_ocall_node_send *s = &q->m_NODE_SEND;
    double deadline = eml_wall_seconds() + (double)s->wait_ms / 1000;
    const uint8_t *frame = s->frame.p;
    size_t len = s->frame.n;
    if (s->bulk > 0) {
        if (h->bulk == NULL || len > 0)
            return reply_error(h, seq, "a frame both ways or no bulk region");
        frame = h->bulk;
        len = (size_t)s->bulk;
    }
    eml_status st = n->send(n->user, (uint32_t)s->peer, frame, len, deadline,
                            &err);
    if (st != EML_OK) return reply_error(h, seq, "%s", err.msg);
    eml_reply_node_sent a = {0};
    return reply(h, EML_MSG_NODE_SENT, &a, sizeof(a), seq);
}

static eml_status serve_node_recv(eml_enclave_host *h, eml_msg_any *q,
                                  uint32_t seq)
{
    const eml_node_io *n;
    eml_status not_ready;
    if (!node_ready(h, seq, &n, &not_ready)) return not_ready;
    eml_err err = {0};
    const uint8_t *p = NULL;
    size_t len = 0;
    double deadline =
        eml_wall_seconds() + (double)q->m_NODE_RECV.wait_ms / 1000;
    eml_status st = n->recv(n->user, deadline, &p, &len, &err);
    if (st != EML_OK) return reply_error(h, seq, "%s", err.msg);
    eml_reply_node_frame a = {{p, len}, 0};
    if (q->m_NODE_RECV.bulk && h->bulk != NULL && len > 0 &&
        len <= EML_BULK_BYTES) {
        /* The enclave is waiting for this reply: the region is free. */
        memcpy(h->bulk, p, len);
        a.frame.n = 0;
        a.bulk = len;
    }
    return reply(h, EML_MSG_NODE_FRAME, &a, sizeof(a), seq);
}

static eml_status serve_node_report(eml_enclave_host *h, eml_msg_any *q,
                                    uint32_t seq)
{
    (void)seq;
    const eml_node_io *n = h->node;
    const eml_bytes *b = &q->m_NODE_REPORT.line;
    char line[EML_NODE_LINE_MAX + 64];
    memcpy(line, b->p, b->n);
    line[b->n] = '\0';
    long kib = eml_enclave_host_peak_rss_kib(h);
    if (q->m_NODE_REPORT.kind == 0 && b->n > 0 && line[b->n - 1] == '}' &&
        kib > 0) /* the round's line, with the enclave's memory */
        snprintf(line + b->n - 1, sizeof(line) - (b->n - 1),
                 ",\"enclave_max_rss_kib\":%ld}", kib);
    if (n != NULL && q->m_NODE_REPORT.kind == 0 && n->round != NULL)
        n->round(n->user, line);
    else if (n != NULL && n->note != NULL)
        n->note(n->user, line);
    return EML_OK;
}

static eml_status serve_ledger_write(eml_enclave_host *h, eml_msg_any *q,
                                     uint32_t seq)
{
    char path[4400];
    ledger_path(h, path, sizeof(path));
    eml_err err = {0};
    const eml_bytes *b = &q->m_LEDGER_WRITE.ledger;
    eml_status st = eml_file_write_atomic(path, b->p, b->n, 0600, &err);
    if (st != EML_OK) return reply_error(h, seq, "%s", eml_err_msg(&err, st));
    return reply(h, EML_MSG_LEDGER_OK, NULL, 0, seq);
}

/* What the enclave may send during an ecall besides its reply. */
static const ocall_fn ocalls[EML_MSG_TYPE_END] = {
    [EML_MSG_FILE_OPEN] = serve_file_open,
    [EML_MSG_FILE_READ] = serve_file_read,
    [EML_MSG_OUTPUT] = serve_output,
    [EML_MSG_PROGRESS] = serve_progress,
    [EML_MSG_MIRROR_HEADER] = serve_mirror_header,
    [EML_MSG_MIRROR_CREATE] = serve_mirror_create,
    [EML_MSG_MIRROR_WRITE] = serve_mirror_write,
    [EML_MSG_MIRROR_WRITE_BULK] = serve_mirror_bulk,
    [EML_MSG_MIRROR_COMMIT] = serve_mirror_commit,
    [EML_MSG_MIRROR_READ] = serve_mirror_read,
    [EML_MSG_LEDGER_READ] = serve_ledger_read,
    [EML_MSG_LEDGER_WRITE] = serve_ledger_write,
    [EML_MSG_WORKER] = serve_worker,
    [EML_MSG_NODE_SEND] = serve_node_send,
    [EML_MSG_NODE_RECV] = serve_node_recv,
    [EML_MSG_NODE_REPORT] = serve_node_report,
};

eml_status eml_host_serve_ocall(eml_enclave_host *h, uint16_t type,
                              const uint8_t *p, size_t n, eml_err *err)
{
    const eml_msg_desc *d = eml_msg_desc_of(type); /* the frame parsed */
    ocall_fn fn = d->kind == EML_MSG_KIND_OCALL ||
                          d->kind == EML_MSG_KIND_NOTIFY
                      ? ocalls[type]
                      : NULL;
    eml_msg_any q;
    eml_err derr = {0};
    eml_status st = EML_ERR_FORMAT;
    if (fn != NULL) {
        st = eml_boundary_decode(type, p, n, d->size ? &q : NULL, d->size,
                                 &derr);
        if (st != EML_OK)
            return eml_err_set(err, st, "protocol error: %s from the enclave",
                               derr.msg);
        st = fn(h, &q, h->ch.recv_seq);
    }
    if (st != EML_OK && h->ocall_err.msg[0] != '\0') {
        eml_err_set(err, st, "%s", h->ocall_err.msg);
        memset(&h->ocall_err, 0, sizeof(h->ocall_err)); /* said once */
        return st;
    }
    if (st != EML_OK)
        return eml_err_set(err, st, "protocol error: unexpected or "
                                    "malformed %s from the enclave",
                           d->name);
    return EML_OK;
}

