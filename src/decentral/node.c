/*
 * node.c - a decentralized node's rounds (decentral.h), hung on the
 * trainer's step hook: every local_steps steps the node shares part of its
 * flat parameter vector with each neighbour, takes what the neighbours
 * shared for this round until the deadline, averages (Metropolis-
 * Hastings), evaluates, and reports a JSON line.  A neighbour that misses
 * the deadline is left out of the round (its weight stays at home); a
 * frame of a later round waits for it; one of an earlier round is
 * dropped; a frame the channel refuses is counted by class.  The
 * transport is the caller's (eml_node_io): the host's ZeroMQ link, or the
 * enclave's ocalls.
 *
 * Trusted code: no I/O of its own; frames are hostile until their channel
 * has opened them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/le.h"
#include "enclaveml/decentral.h"
#include "enclaveml/net.h"
#include "enclaveml/train.h"

typedef struct held {
    uint8_t *p;
    size_t n;
    uint64_t round;
} held;

struct eml_node {
    uint32_t id, degree;
    const uint32_t *nbr; /* into the caller's topology */
    eml_node_io io;
    eml_dchan *chan;
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
    int *got;
    int clear, hello_sent;
    int *ready;          /* a channel to neighbour k exists */
    int *spurned;        /* neighbour k's hello was refused (a hint only:
                            it ends the wait for hellos, grants nothing) */
    uint8_t (*keyed)[32]; /* the nonce neighbour k's channel was keyed with */
    uint64_t unkeyed;    /* shares from a neighbour without a channel */
    eml_share_view *views;
    const eml_share_view **vptr;
    held *hold;
    size_t nhold, caphold;
    eml_share_view cur; /* this round's share, while it is collected */
    int sharing;        /* cur is valid */
    uint64_t refused[EML_DMSG_REFUSALS], late, missed;
    double avg_cpu; /* opening and averaging, CPU seconds, summed */
    int done;
};

static void note(eml_node *nd, const char *fmt, ...) EML_PRINTF(2, 3);

static void note(eml_node *nd, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (nd->io.note != NULL) nd->io.note(nd->io.user, line);
}

/* The node's message buffers, bytes: its own frame, one open buffer per
 * neighbour, frames held for a later round, the averaging scratch and
 * the sharer's state. */
static size_t buffer_bytes(const eml_node *nd)
{
    size_t np = eml_net_param_count(nd->net);
    size_t n = eml_dmsg_size((uint32_t)np, (uint32_t)np, 0) +
               np * sizeof(double) + eml_sharer_bytes(nd->sharer);
    for (uint32_t k = 0; k < nd->degree; k++) n += nd->ocap[k];
    for (size_t h = 0; h < nd->nhold; h++) n += nd->hold[h].n;
    return n;
}

/* Holds a copy of a frame of a later round. */
static int hold(eml_node *nd, const uint8_t *p, size_t n, uint64_t round)
{
    if (nd->nhold == nd->caphold) {
        size_t cap = nd->caphold ? 2 * nd->caphold : 16;
        held *h = realloc(nd->hold, cap * sizeof(*h));
        if (h == NULL) return -1;
        nd->hold = h;
        nd->caphold = cap;
    }
    uint8_t *c = malloc(n ? n : 1);
    if (c == NULL) return -1;
    memcpy(c, p, n);
    nd->hold[nd->nhold++] = (held){c, n, round};
    return 0;
}

/* Offers one frame of this round to the channel of its claimed sender;
 * got[k] is set when neighbour k's share opened. */
static void take(eml_node *nd, const uint8_t *p, size_t n)
{
    uint32_t sender = n >= EML_DMSG_HEADER ? eml_get_le32(p + 8) : UINT32_MAX;
    uint32_t k = 0;
    while (k < nd->degree && nd->nbr[k] != sender) k++;
    if (k == nd->degree) {
        nd->refused[EML_DMSG_CROSS_PAIR]++;
        return;
    }
    if (!nd->ready[k]) {
        nd->unkeyed++;
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
    if (st == EML_OK) nd->got[k] = 1;
    else nd->refused[why < EML_DMSG_REFUSALS ? why : 0]++;
}

/* Sends this node's hello to neighbour k (all: k = degree). */
static void send_hello(eml_node *nd, uint32_t only, double deadline)
{
    const uint8_t *p;
    size_t n;
    eml_err err = {0};
    if (nd->io.hello_make(nd->io.user, &p, &n, &err) != EML_OK) {
        note(nd, "cannot make this node's hello: %s", err.msg);
        return;
    }
    for (uint32_t k = 0; k < nd->degree; k++) {
        if (only < nd->degree && k != only) continue;
        memset(&err, 0, sizeof(err));
        if (nd->io.send(nd->io.user, nd->nbr[k], p, n, deadline, &err) !=
            EML_OK)
            note(nd, "hello to node %u: %s", nd->nbr[k], err.msg);
    }
}

/* Seals this round's share for neighbour k and sends it. */
static void send_share(eml_node *nd, uint32_t k, double deadline)
{
    size_t len;
    eml_err err = {0};
    if (!nd->ready[k]) return; /* no attested channel: not a byte */
    nd->chan[k].send_seq = (uint64_t)nd->round;
    eml_status st = eml_dmsg_seal(&nd->chan[k], (uint64_t)nd->round,
                                  nd->degree, &nd->cur, nd->share.pad,
                                  nd->frame, &len, &err);
    if (st == EML_OK)
        st = nd->io.send(nd->io.user, nd->nbr[k], nd->frame, len, deadline,
                         &err);
    if (st != EML_OK)
        note(nd, "round %ld: to node %u: %s", nd->round, nd->nbr[k],
             err.msg);
}

/* A neighbour's hello: checked; a new one keys the channel to it (and
 * gets this node's hello back, for a neighbour that restarted, and this
 * round's share again if it was sent already: the neighbour's previous
 * life took it with it). */
static void take_hello(eml_node *nd, const uint8_t *p, size_t n,
                       double deadline)
{
    uint32_t peer = UINT32_MAX;
    uint8_t nonce[32];
    eml_dchan c;
    eml_err err = {0};
    if (nd->io.hello_open(nd->io.user, p, n, &peer, nonce, &c, &err) !=
        EML_OK) {
        nd->refused[EML_DMSG_TAMPERED]++;
        note(nd, "a hello refused: %s", err.msg);
        uint32_t claimed = n >= 12 ? eml_get_le32(p + 8) : UINT32_MAX;
        for (uint32_t k = 0; k < nd->degree; k++)
            if (nd->nbr[k] == claimed) nd->spurned[k] = 1;
        return;
    }
    uint32_t k = 0;
    while (k < nd->degree && nd->nbr[k] != peer) k++;
    if (k == nd->degree || (nd->ready[k] && !memcmp(nd->keyed[k], nonce, 32))) {
        eml_dchan_free(&c); /* not a neighbour, or a hello seen before */
        return;
    }
    eml_dchan_free(&nd->chan[k]);
    nd->chan[k] = c;
    nd->ready[k] = 1;
    memcpy(nd->keyed[k], nonce, 32);
    send_hello(nd, k, deadline);
    if (nd->sharing) send_share(nd, k, deadline);
}

/* Collects this round's shares until every neighbour's is in (hellos:
 * until every neighbour has a channel) or the deadline passes; the
 * number of neighbours whose share is in. */
static uint32_t collect(eml_node *nd, double deadline, int hellos,
                        eml_err *err)
{
    uint8_t magic[4];
    for (size_t i = 0; i < nd->nhold;) { /* frames that came early */
        if (nd->hold[i].round == (uint64_t)nd->round) {
            take(nd, nd->hold[i].p, nd->hold[i].n);
            free(nd->hold[i].p);
            nd->hold[i] = nd->hold[--nd->nhold];
        } else {
            i++;
        }
    }
    for (;;) {
        uint32_t have = 0, keyed = 0;
        for (uint32_t k = 0; k < nd->degree; k++) {
            have += nd->got[k] != 0;
            keyed += nd->ready[k] != 0 || nd->spurned[k] != 0;
        }
        if (have == nd->degree || (hellos && keyed == nd->degree))
            return have;
        const uint8_t *p;
        size_t n = 0;
        if (nd->io.recv(nd->io.user, deadline, &p, &n, err) != EML_OK ||
            n == 0)
            return have;
        eml_put_le32(magic, EML_HELLO_MAGIC);
        if (!nd->clear && n >= 4 && memcmp(p, magic, 4) == 0) {
            take_hello(nd, p, n, deadline);
            continue;
        }
        uint64_t r = n >= EML_DMSG_HEADER ? eml_get_le64(p + 16) : 0;
        if (r > (uint64_t)nd->round) {
            if (hold(nd, p, n, r) != 0) nd->late++;
        } else if (r < (uint64_t)nd->round) {
            nd->late++;
        } else {
            take(nd, p, n);
        }
    }
}

/* Shares this round's selection with every neighbour; it stays in
 * nd->cur (the parameters do not change until the round's average) for a
 * neighbour that comes back during the round. */
static void send_all(eml_node *nd, double deadline)
{
    eml_sharer_select(nd->sharer, eml_net_params(nd->net), &nd->rng,
                      &nd->cur);
    nd->sharing = 1;
    for (uint32_t k = 0; k < nd->degree; k++) send_share(nd, k, deadline);
}

/* One round: share, collect, average, evaluate, report. */
static eml_status exchange(eml_node *nd, eml_err *err)
{
    double t0 = eml_wall_seconds(), deadline = t0 + nd->deadline_s;
    memset(nd->got, 0, nd->degree * sizeof(int));
    if (!nd->clear && !nd->hello_sent) {
        /* The hellos go first, and each neighbour's comes before its
         * shares on its link; a wait of its own collects them (until each
         * neighbour's is in or refused), then the round's deadline
         * starts. */
        send_hello(nd, nd->degree, deadline);
        nd->hello_sent = 1;
        (void)collect(nd, deadline, 1, err);
        memset(err, 0, sizeof(*err));
        t0 = eml_wall_seconds();
        deadline = t0 + nd->deadline_s;
    }
    send_all(nd, deadline);
    uint32_t have = collect(nd, deadline, 0, err);
    nd->sharing = 0;
    memset(err, 0, sizeof(*err));
    size_t k2 = 0;
    for (uint32_t k = 0; k < nd->degree; k++) {
        if (nd->got[k]) nd->vptr[k2++] = &nd->views[k];
        else
            note(nd,
                 "round %ld: node %u missed the deadline (its weight stays "
                 "here)",
                 nd->round, nd->nbr[k]);
    }
    nd->missed += nd->degree - have;
    double c0 = eml_cpu_seconds();
    eml_average(eml_net_params(nd->net), eml_net_param_count(nd->net),
                nd->degree, nd->vptr, k2, nd->scratch);
    eml_net_params_changed(nd->net);
    nd->avg_cpu += eml_cpu_seconds() - c0;
    double wall = eml_wall_seconds() - t0, loss = 0, acc = 0;
    eml_status st = eml_evaluate(nd->net, nd->test, &loss, &acc, err);
    if (st != EML_OK) return st;
    uint64_t refused = nd->unkeyed;
    for (int r = 1; r < EML_DMSG_REFUSALS; r++) refused += nd->refused[r];
    char line[512];
    snprintf(line, sizeof(line),
             "{\"node\":%u,\"round\":%ld,\"test_accuracy\":%.6f,"
             "\"test_loss\":%.6f,\"received\":%u,\"missed\":%u,"
             "\"exchange_seconds\":%.6f,\"average_cpu_seconds\":%.6f,"
             "\"refused\":%llu,\"late\":%llu,\"parameters\":%zu,"
             "\"degree\":%u,\"net_bytes\":%zu,\"buffer_bytes\":%zu}",
             nd->id, nd->round, acc, loss, have, nd->degree - have, wall,
             nd->avg_cpu, (unsigned long long)refused,
             (unsigned long long)nd->late, eml_net_param_count(nd->net),
             nd->degree, eml_net_memory_bytes(nd->net), buffer_bytes(nd));
    if (nd->io.round != NULL) nd->io.round(nd->io.user, line);
    return EML_OK;
}

eml_status eml_node_step(void *user, const eml_step_info *s, eml_err *err)
{
    eml_node *nd = user;
    if (nd->done || s->step % nd->local_steps != 0) return EML_OK;
    /* From the step count, not counted here: a node that resumes from its
     * mirror takes up the round it was in. */
    nd->round = s->step / nd->local_steps;
    eml_status st = exchange(nd, err);
    if (st != EML_OK) return st;
    if (nd->round < nd->rounds) return EML_OK;
    nd->done = 1;
    return EML_ERR_RANGE; /* the run is over: stops the trainer */
}

int eml_node_finished(const eml_node *nd)
{
    return nd->done;
}

long eml_node_rounds_done(const eml_node *nd)
{
    return nd->round;
}

eml_status eml_node_new(const eml_node_opts *o, eml_net *net,
                        const eml_dataset *test, const eml_node_io *io,
                        eml_node **out, eml_err *err)
{
    *out = NULL;
    if (!o->clear && (io->hello_make == NULL || io->hello_open == NULL))
        return eml_err_set(err, EML_ERR_INVALID,
                           "sealed channels need the enclaves' hellos");
    if (o->id >= o->topo->n || o->rounds < 1 || o->local_steps < 1)
        return eml_err_set(err, EML_ERR_INVALID, "node %u of %u", o->id,
                           o->topo->n);
    eml_node *nd = calloc(1, sizeof(*nd));
    if (nd == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    nd->id = o->id;
    nd->io = *io;
    nd->degree = eml_topo_degree(o->topo, o->id);
    nd->nbr = o->topo->nbr + o->topo->off[o->id];
    nd->share = o->share;
    nd->rounds = o->rounds;
    nd->local_steps = o->local_steps;
    nd->deadline_s = o->deadline_s;
    nd->net = net;
    nd->test = test;
    eml_rng_seed(&nd->rng, o->seed * 7919 + o->id);
    size_t np = eml_net_param_count(net), d = nd->degree ? nd->degree : 1;
    nd->chan = calloc(d, sizeof(*nd->chan));
    nd->obuf = calloc(d, sizeof(*nd->obuf));
    nd->ocap = calloc(d, sizeof(*nd->ocap));
    nd->got = calloc(d, sizeof(*nd->got));
    nd->ready = calloc(d, sizeof(*nd->ready));
    nd->spurned = calloc(d, sizeof(*nd->spurned));
    nd->keyed = calloc(d, sizeof(*nd->keyed));
    nd->clear = o->clear;
    nd->views = calloc(d, sizeof(*nd->views));
    nd->vptr = calloc(d, sizeof(*nd->vptr));
    nd->scratch = malloc(np * sizeof(double));
    nd->frame = malloc(eml_dmsg_size((uint32_t)np, (uint32_t)np, 0));
    eml_status st = EML_OK;
    if (nd->chan == NULL || nd->obuf == NULL || nd->ocap == NULL ||
        nd->got == NULL || nd->ready == NULL || nd->keyed == NULL ||
        nd->spurned == NULL ||
        nd->views == NULL || nd->vptr == NULL ||
        nd->scratch == NULL || nd->frame == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    if (st == EML_OK)
        st = eml_sharer_new(&nd->share, np, eml_net_params(net), &nd->sharer,
                            err);
    for (uint32_t k = 0; st == EML_OK && o->clear && k < nd->degree; k++) {
        eml_dchan_init_clear(&nd->chan[k], nd->id, nd->nbr[k]);
        nd->ready[k] = 1;
    }
    if (st != EML_OK) {
        eml_node_free(nd);
        return st;
    }
    *out = nd;
    return EML_OK;
}

void eml_node_free(eml_node *nd)
{
    if (nd == NULL) return;
    for (uint32_t k = 0; nd->chan != NULL && k < nd->degree; k++) {
        eml_dchan_free(&nd->chan[k]);
        if (nd->obuf != NULL && nd->obuf[k] != NULL) { /* parameters */
            eml_wipe(nd->obuf[k], nd->ocap[k]);
            free(nd->obuf[k]);
        }
    }
    for (size_t i = 0; i < nd->nhold; i++) free(nd->hold[i].p);
    free(nd->hold);
    free(nd->chan);
    free(nd->obuf);
    free(nd->ocap);
    free(nd->got);
    free(nd->ready);
    free(nd->spurned);
    free(nd->keyed);
    free(nd->views);
    free(nd->vptr);
    if (nd->scratch != NULL)
        eml_wipe(nd->scratch,
                 eml_net_param_count(nd->net) * sizeof(double));
    free(nd->scratch);
    free(nd->frame);
    eml_sharer_free(nd->sharer);
    free(nd);
}
