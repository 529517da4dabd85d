/*
 * node_run.c - a decentralized node inside the enclave (docs/decentral.md):
 * a TRAIN ecall with node.enabled trains on its owner's data as any run
 * does, and the trainer's step hook runs the node's rounds
 * (src/decentral/node.c) over NODE_* ocalls.  Channels are sealed and
 * keyed from hellos: each enclave draws a session nonce and makes its own
 * attestation report whose nonce binds the run, its node id and that
 * session nonce; a neighbour's hello is accepted only if its report is
 * signed by this platform, comes from this very measurement (or one the
 * run's policy names), and binds what the hello says.  The host moves the frames and learns nothing of
 * them.
 *
 *   hello: u32 "EMLH" | u32 version 1 | u32 node id | 32-byte session
 *          nonce | u32 report length | the attestation report (JSON)
 *
 * Trusted code: frames are copied out of the channel before they are
 * read; the graph is built here from the run's spec and seed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/le.h"
#include "enclave/runtime.h"
#include "enclaveml/decentral.h"

struct eml_rt_node {
    eml_enclave *e;
    uint32_t id;
    eml_topo topo;
    eml_node_opts opts;
    eml_node *node;
    uint8_t run_id[32], nonce[32];
    uint8_t *hello;
    size_t hello_len;
    uint8_t *rbuf; /* a received frame, copied out of the channel */
    size_t rcap;
    /* measurements a neighbour may run besides this one's (the run's
     * policy: another build of the same code, say) */
    uint8_t accept[EML_NODE_ACCEPT_MAX][32];
    size_t n_accept;
};

static int acceptable(const eml_rt_node *r, const uint8_t m[32])
{
    int ok = eml_ct_equal(m, r->e->measurement, 32);
    for (size_t i = 0; i < r->n_accept; i++)
        ok |= eml_ct_equal(m, r->accept[i], 32);
    return ok;
}

/* SHA-256("enclaveml node hello v1" | run id | id | session nonce): the
 * nonce of a node's attestation report. */
static eml_status binding(const uint8_t run_id[32], uint32_t id,
                          const uint8_t nonce[32], uint8_t out[32])
{
    uint8_t in[24 + 32 + 4 + 32];
    memcpy(in, "enclaveml node hello v1", 24);
    memcpy(in + 24, run_id, 32);
    eml_put_le32(in + 56, id);
    memcpy(in + 60, nonce, 32);
    return eml_sha256(out, in, sizeof(in));
}

/* ==== the transport: NODE_* ocalls ==== */

static uint64_t wait_ms(double deadline)
{
    double left = deadline - eml_wall_seconds();
    return left <= 0 ? 0 : left > 3600 ? 3600000 : (uint64_t)(left * 1000) + 1;
}

/* Frames travel through the bulk region when they fit: the host copies
 * them to and from the network there, and a frame crosses the boundary
 * without the channel's copies and wake-ups.  eml_rt_ocall collects the
 * mirror's asynchronous writes first, so the host is done with the region
 * whenever the enclave writes it or the host answers into it. */
static eml_status io_send(void *user, uint32_t peer, const uint8_t *p,
                          size_t n, double deadline, eml_err *err)
{
    eml_rt_node *r = user;
    eml_enclave *e = r->e;
    if (n > EML_NODE_FRAME_MAX)
        return eml_err_set(err, EML_ERR_RANGE, "a frame over the limit");
    eml_ocall_node_send q = {peer, wait_ms(deadline), {p, n}, 0};
    if (e->bulk != NULL && n > 0 && n <= e->bulk_n) {
        eml_status late = eml_rt_drain(e, err);
        if (late != EML_OK) return late;
        memcpy(e->bulk, p, n); /* sealed bytes; written, not read back */
        q.frame.n = 0;
        q.bulk = n;
    }
    eml_reply_node_sent a = {0};
    return eml_rt_ocall(e, EML_MSG_NODE_SEND, &q, sizeof(q), &a, sizeof(a),
                        err);
}

static eml_status io_recv(void *user, double deadline, const uint8_t **p,
                          size_t *n, eml_err *err)
{
    eml_rt_node *r = user;
    eml_enclave *e = r->e;
    eml_ocall_node_recv q = {wait_ms(deadline), e->bulk != NULL};
    eml_reply_node_frame a = {{NULL, 0}, 0};
    *p = NULL;
    *n = 0;
    eml_status st = eml_rt_ocall(e, EML_MSG_NODE_RECV, &q, sizeof(q), &a,
                                 sizeof(a), err);
    if (st != EML_OK) return st;
    if (a.bulk > 0 && (a.frame.n > 0 || e->bulk == NULL || a.bulk > e->bulk_n))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host answered a frame both ways or beyond "
                           "the bulk region");
    const uint8_t *src = a.bulk > 0 ? e->bulk : a.frame.p;
    size_t len = a.bulk > 0 ? (size_t)a.bulk : a.frame.n;
    if (len == 0) return EML_OK;
    if (len > r->rcap) {
        uint8_t *b = realloc(r->rbuf, len);
        if (b == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        r->rbuf = b;
        r->rcap = len;
    }
    /* Copy, then check: the shared region is read once, here; what the
     * host writes there afterwards changes nothing the channel checks. */
    memcpy(r->rbuf, src, len);
    *p = r->rbuf;
    *n = len;
    return EML_OK;
}

static void report(eml_rt_node *r, uint64_t kind, const char *line)
{
    size_t n = strlen(line);
    eml_notify_node_report m = {kind,
                                {(const uint8_t *)line,
                                 n < EML_NODE_LINE_MAX ? n : EML_NODE_LINE_MAX}};
    eml_err err = {0};
    (void)eml_rt_notify(r->e, EML_MSG_NODE_REPORT, &m, sizeof(m), &err);
}

static void io_round(void *user, const char *json) { report(user, 0, json); }
static void io_note(void *user, const char *line) { report(user, 1, line); }

static eml_status io_hello_make(void *user, const uint8_t **p, size_t *n,
                                eml_err *err)
{
    eml_rt_node *r = user;
    (void)err;
    *p = r->hello;
    *n = r->hello_len;
    return EML_OK;
}

/* A neighbour's hello: its report verified and bound, then the channel. */
static eml_status io_hello_open(void *user, const uint8_t *p, size_t n,
                                uint32_t *peer, uint8_t nonce[32],
                                eml_dchan *chan, eml_err *err)
{
    eml_rt_node *r = user;
    eml_enclave *e = r->e;
    uint32_t id;
    const char *rep;
    size_t rlen;
    eml_status st = eml_hello_parse(p, n, &id, nonce, &rep, &rlen, err);
    if (st != EML_OK) return st;
    eml_platform_key key;
    memcpy(key.pk, e->platform_pk, 32);
    key.backend = e->sim ? "sim" : "none";
    eml_attestation a;
    st = eml_attestation_check(rep, rlen, &key, 1, &a, err);
    if (st != EML_OK) return st;
    uint8_t want[32];
    st = binding(r->run_id, id, nonce, want);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    if (!acceptable(r, a.measurement))
        return eml_err_set(err, EML_ERR_AUTH,
                           "node %u runs another enclave (its measurement "
                           "is neither this one's nor one the run's policy "
                           "names): it gets no channel",
                           id);
    if (a.nonce_len != 32 || !eml_ct_equal(a.nonce, want, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "node %u's report does not bind its hello (another "
                           "run, id or session)",
                           id);
    *peer = id;
    return eml_dchan_init(chan, r->id, e->sec->x_sk, r->nonce, id, a.x25519,
                          nonce, r->run_id, err);
}

/* ==== the node's life ==== */

/* The graph: a spec ("ring", "regular:4", ...) built from the run's seed,
 * or an edge list's text. */
static eml_status graph(eml_rt_node *r, const eml_ecall_train *q,
                        eml_err *err)
{
    const uint8_t *g = q->node_graph.p;
    size_t n = q->node_graph.n;
    uint32_t nodes = (uint32_t)q->node.nodes;
    if (n == 0) return eml_err_set(err, EML_ERR_INVALID, "a node needs a graph");
    if ((g[0] >= '0' && g[0] <= '9') || g[0] == '#' || memchr(g, '\n', n))
        return eml_topo_parse((const char *)g, n, "the node's graph", nodes,
                              &r->topo, err);
    char spec[128];
    if (n >= sizeof(spec))
        return eml_err_set(err, EML_ERR_RANGE, "a graph spec over 127 bytes");
    memcpy(spec, g, n);
    spec[n] = '\0';
    return eml_topo_make(spec, nodes, q->spec.seed, &r->topo, err);
}

/* The hello: the report binding (run, id, session nonce), framed. */
static eml_status make_hello(eml_rt_node *r, eml_err *err)
{
    uint8_t bind[32];
    char *rep = NULL;
    size_t rlen = 0;
    eml_status st = eml_random(r->nonce, 32);
    if (st == EML_OK) st = binding(r->run_id, r->id, r->nonce, bind);
    if (st != EML_OK) return eml_err_set(err, st, "no session nonce");
    st = eml_rt_make_report(r->e, bind, 32, &rep, &rlen, err);
    if (st != EML_OK) return st;
    r->hello = malloc(EML_HELLO_FIXED + rlen);
    if (r->hello == NULL) {
        free(rep);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    eml_put_le32(r->hello, EML_HELLO_MAGIC);
    eml_put_le32(r->hello + 4, 1);
    eml_put_le32(r->hello + 8, r->id);
    memcpy(r->hello + 12, r->nonce, 32);
    eml_put_le32(r->hello + 44, (uint32_t)rlen);
    memcpy(r->hello + EML_HELLO_FIXED, rep, rlen);
    r->hello_len = EML_HELLO_FIXED + rlen;
    free(rep);
    return EML_OK;
}

eml_status eml_rt_node_prepare(eml_enclave *e, const eml_ecall_train *q,
                               eml_rt_node **out, eml_err *err)
{
    *out = NULL;
    if (!q->node.enabled) return EML_OK;
    const eml_node_spec *s = &q->node;
    if (s->nodes < 2 || s->id >= s->nodes || s->rounds < 1 ||
        s->local_steps < 1 || s->deadline_ms < 1)
        return eml_err_set(err, EML_ERR_INVALID,
                           "node %d of %d, %ld rounds of %ld steps, a %ld ms "
                           "deadline: not a node",
                           s->id, s->nodes, s->rounds, s->local_steps,
                           s->deadline_ms);
    eml_rt_node *r = calloc(1, sizeof(*r));
    if (r == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    r->e = e;
    r->id = (uint32_t)s->id;
    memcpy(r->run_id, q->node_run_id, 32);
    if (q->node_accept.n % 32 != 0) {
        eml_rt_node_free(r);
        return eml_err_set(err, EML_ERR_FORMAT,
                           "accepted measurements are 32 bytes each");
    }
    for (size_t i = 0; i < q->node_accept.n / 32; i++)
        memcpy(r->accept[r->n_accept++], q->node_accept.p + 32 * i, 32);
    char share[65];
    size_t sl = q->node_share_len < 64 ? q->node_share_len : 64;
    memcpy(share, q->node_share, sl);
    share[sl] = '\0';
    eml_status st = graph(r, q, err);
    if (st == EML_OK && !eml_topo_connected(&r->topo))
        st = eml_err_set(err, EML_ERR_INVALID, "the graph is not connected");
    if (st == EML_OK) st = eml_share_parse(share, s->pad, &r->opts.share, err);
    if (st == EML_OK) st = make_hello(r, err);
    if (st != EML_OK) {
        eml_rt_node_free(r);
        return st;
    }
    r->opts.id = r->id;
    r->opts.topo = &r->topo;
    r->opts.rounds = s->rounds;
    r->opts.local_steps = s->local_steps;
    r->opts.deadline_s = (double)s->deadline_ms / 1000;
    r->opts.seed = q->spec.seed;
    r->opts.clear = 0;
    *out = r;
    return EML_OK;
}

eml_status eml_rt_node_start(eml_rt_node *r, eml_net *net,
                             const eml_dataset *test, eml_run_env *env,
                             eml_err *err)
{
    eml_node_io io = {r,       io_send,       io_recv,       io_round,
                      io_note, io_hello_make, io_hello_open, NULL};
    eml_status st = eml_node_new(&r->opts, net, test, &io, &r->node, err);
    if (st != EML_OK) return st;
    env->on_step = eml_node_step;
    env->on_step_user = r->node;
    return EML_OK;
}

int eml_rt_node_finished(const eml_rt_node *r)
{
    return r->node != NULL && eml_node_finished(r->node);
}

long eml_rt_node_rounds(const eml_rt_node *r)
{
    return r->node != NULL ? eml_node_rounds_done(r->node) : 0;
}

void eml_rt_node_free(eml_rt_node *r)
{
    if (r == NULL) return;
    eml_node_free(r->node);
    eml_topo_free(&r->topo);
    free(r->hello);
    free(r->rbuf);
    eml_wipe(r->nonce, sizeof(r->nonce));
    free(r);
}
