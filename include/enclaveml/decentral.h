/*
 * decentral.h - decentralized learning's trusted parts (docs/decentral.md):
 * the graph of nodes, the split of a data set over them, what a node
 * shares of its flat parameter vector each round, Metropolis-Hastings
 * averaging of what its neighbours shared, and the channel that carries a
 * share between two attested enclaves: AES-256-GCM under keys from
 * X25519 + HKDF, with sender, receiver, round and sequence number bound in
 * the associated data.
 *
 *     eml_topo t;
 *     eml_topo_make("regular:4", 16, seed, &t, &err);     // who talks
 *     eml_sharer *s; eml_sharer_new(&spec, n_params, &s, &err);
 *     ... each round: local steps, then
 *     eml_sharer_select(s, params, rng, &view);           // what goes out
 *     eml_dmsg_seal(&chan, round, degree, &view, frame, &len, &err);
 *     ... frames from neighbours:
 *     eml_dmsg_open(&chan, round, frame, len, &view, &why, &err);
 *     eml_average(params, n_params, degree, views, k, scratch);
 *
 * Trusted code: no I/O; a frame's bytes are the host's, hostile, and are
 * checked before and while they are decrypted.
 */
#ifndef ENCLAVEML_DECENTRAL_H
#define ENCLAVEML_DECENTRAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/rng.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_DECENTRAL_MAX_NODES 4096

/* ==== the graph ==== */

/* An undirected simple graph on nodes 0..n-1: node i's neighbours are
 * nbr[off[i] .. off[i+1]), sorted. */
typedef struct eml_topo {
    uint32_t n;
    uint32_t *off; /* n + 1 */
    uint32_t *nbr;
} eml_topo;

/* ring; full; regular:D (a random D-regular graph, seeded, n*D even,
 * D < n); smallworld:K,P (Watts-Strogatz: a ring lattice of K nearest
 * neighbours, K even, each edge rewired with probability P, seeded).
 * Errors name the spec. */
EML_MUST_CHECK eml_status eml_topo_make(const char *spec, uint32_t n,
                                        uint64_t seed, eml_topo *t,
                                        eml_err *err);
/* An edge list: one "i j" pair per line (0-based ids < n), '#' comments;
 * duplicate edges are merged, self-loops refused. */
EML_MUST_CHECK eml_status eml_topo_parse(const char *text, size_t len,
                                         const char *name, uint32_t n,
                                         eml_topo *t, eml_err *err);
static inline uint32_t eml_topo_degree(const eml_topo *t, uint32_t i)
{
    return t->off[i + 1] - t->off[i];
}
/* 1 if every node reaches every other. */
int eml_topo_connected(const eml_topo *t);
/* 1 if j is a neighbour of i. */
int eml_topo_has_edge(const eml_topo *t, uint32_t i, uint32_t j);
void eml_topo_free(eml_topo *t);

/* ==== the data's split ==== */

/* Splits `count` labelled examples over `nodes`: iid (a seeded shuffle
 * dealt in equal parts); shards:S (sorted by label, cut into nodes*S
 * shards, each node given S at random: decentralizepy's non-IID split);
 * dirichlet:ALPHA (each class's examples divided by proportions drawn
 * from Dirichlet(ALPHA) over the nodes).  Node i gets the example
 * indices idx[off[i] .. off[i+1]); both arrays are malloc'd. */
EML_MUST_CHECK eml_status eml_partition(const char *spec,
                                        const uint8_t *labels, size_t count,
                                        uint32_t classes, uint32_t nodes,
                                        uint64_t seed, uint32_t **off,
                                        uint32_t **idx, eml_err *err);

/* ==== what a node shares ==== */

typedef enum eml_share_kind {
    EML_SHARE_FULL = 0,   /* every parameter */
    EML_SHARE_RANDOM = 1, /* a fresh random fraction each round */
    EML_SHARE_TOPK = 2    /* the fraction with the largest change since
                             each was last shared */
} eml_share_kind;

typedef struct eml_share_spec {
    eml_share_kind kind;
    double fraction; /* (0, 1] for random and topk */
    int pad;         /* messages padded to the full model's size */
} eml_share_spec;

/* full | random:F | topk:F, then pad from --pad. */
EML_MUST_CHECK eml_status eml_share_parse(const char *spec, int pad,
                                          eml_share_spec *s, eml_err *err);

/* A share as it is sealed or was opened: count values, at indices idx
 * (NULL: the dense vector 0..count-1), the sender's degree. */
typedef struct eml_share_view {
    uint32_t sender, degree;
    uint32_t total; /* parameters in the model */
    uint32_t count;
    const uint32_t *idx; /* strictly increasing, < total; NULL: dense */
    const float *val;
} eml_share_view;

typedef struct eml_sharer eml_sharer;

EML_MUST_CHECK eml_status eml_sharer_new(const eml_share_spec *spec,
                                         size_t n, const float *initial,
                                         eml_sharer **out, eml_err *err);
void eml_sharer_free(eml_sharer *s);
/* Bytes the sharer holds (its permutation, picks and top-k base). */
size_t eml_sharer_bytes(const eml_sharer *s);
/* This round's share of x (n parameters) into *v (indices and values in
 * the sharer's buffers, valid until the next call); topk then counts
 * the selected parameters as shared at their current values. */
void eml_sharer_select(eml_sharer *s, const float *x, eml_rng *rng,
                       eml_share_view *v);
/* Parameters shared each round (n for full). */
uint32_t eml_sharer_count(const eml_sharer *s);

/* ==== averaging ==== */

/* Metropolis-Hastings weight of neighbour j at node i. */
static inline double eml_mh_weight(uint32_t deg_i, uint32_t deg_j)
{
    return 1.0 / (double)((deg_i > deg_j ? deg_i : deg_j) + 1);
}

/* x (n) <- x + sum over shares v of w(deg, v->degree) (v - x) at the
 * indices v holds: with every share dense this is Metropolis-Hastings
 * averaging (self weight 1 - sum of the neighbours'); a parameter a
 * neighbour did not send keeps that neighbour's weight at home (the EPFL
 * study's Algorithm 1).  scratch holds n doubles.  Shares whose total is
 * not n are skipped (the caller refused them already). */
void eml_average(float *x, size_t n, uint32_t degree,
                 const eml_share_view *const *v, size_t k, double *scratch);

/* ==== the channel between two enclaves ==== */

#define EML_DMSG_MAGIC 0x444c4d45u /* "EMLD" */
#define EML_DMSG_VERSION 1
#define EML_DMSG_HEADER 48
#define EML_DMSG_DENSE 1u  /* flags: values only, indices 0..count-1 */
#define EML_DMSG_PADDED 2u /* flags: the payload is padded to total */
#define EML_DMSG_CLEAR 4u  /* flags: not encrypted (--enclave none only) */
#define EML_DMSG_MAX_PARAMS ((uint32_t)1 << 28)

/* One direction-pair of keys between two nodes, and the sequence
 * numbers each way.  Keys: X25519(own secret, peer public) through HKDF
 * with the run's id as salt and both ids and both session nonces (fresh
 * at each node's start) as info; 64 bytes: the lower id's sending key,
 * then the higher id's. */
typedef struct eml_dchan {
    uint32_t me, peer;
    eml_gcm *send, *recv;
    uint64_t send_seq, recv_seq; /* the next to use / to accept */
    int clear; /* the baseline without enclaves: frames in the clear */
} eml_dchan;

EML_MUST_CHECK eml_status eml_dchan_init(
    eml_dchan *c, uint32_t me, const uint8_t my_sk[EML_X25519_BYTES],
    const uint8_t my_nonce[32], uint32_t peer,
    const uint8_t peer_pk[EML_X25519_BYTES], const uint8_t peer_nonce[32],
    const uint8_t run_id[32], eml_err *err);
/* A channel for `--enclave none`, the baseline: the same frames, the
 * payload in the clear and a zero tag.  A sealed channel refuses such
 * frames (tampered), and this one refuses sealed ones. */
void eml_dchan_init_clear(eml_dchan *c, uint32_t me, uint32_t peer);
void eml_dchan_free(eml_dchan *c);

/* The size of a sealed frame of count entries (padded: of total). */
size_t eml_dmsg_size(uint32_t count, uint32_t total, uint32_t flags);
/* Seals v for c's peer in this round (sequence number c->send_seq, then
 * incremented): header (all of it authenticated) and ciphertext of the
 * indices (sparse) and values, padded to the full model when pad.  out
 * holds eml_dmsg_size bytes. */
EML_MUST_CHECK eml_status eml_dmsg_seal(eml_dchan *c, uint64_t round,
                                        uint32_t degree,
                                        const eml_share_view *v, int pad,
                                        uint8_t *out, size_t *out_len,
                                        eml_err *err);

/* Why a frame was refused (counted by the node). */
typedef enum eml_dmsg_refusal {
    EML_DMSG_OK = 0,
    EML_DMSG_MALFORMED,  /* not a frame, or one that does not add up */
    EML_DMSG_CROSS_PAIR, /* not from this peer to this node */
    EML_DMSG_CROSS_ROUND,
    EML_DMSG_REPLAYED,   /* a sequence number already accepted */
    EML_DMSG_REORDERED,  /* a later one, with an earlier one missing */
    EML_DMSG_TAMPERED,   /* authentication failed */
    EML_DMSG_REFUSALS
} eml_dmsg_refusal;

const char *eml_dmsg_refusal_name(eml_dmsg_refusal r);

/* Opens a frame from c's peer for this round into buf (grown with
 * *cap; the view's arrays point into it): header checked, then
 * authenticated decryption, then the indices checked (strictly
 * increasing, below total).  On success c->recv_seq moves on.  On
 * refusal *why says which class and the channel is unchanged. */
EML_MUST_CHECK eml_status eml_dmsg_open(eml_dchan *c, uint64_t round,
                                        uint32_t total, const uint8_t *frame,
                                        size_t len, uint8_t **buf,
                                        size_t *cap, eml_share_view *v,
                                        eml_dmsg_refusal *why, eml_err *err);

/* ==== a node's rounds ==== */

/* What makes a training run a decentralized node (the TRAIN message
 * carries it; enabled = 0: an ordinary run).  The graph and the share
 * spec travel beside it as text. */
typedef struct eml_node_spec {
    int enabled;
    int id, nodes;
    long rounds, local_steps;
    long deadline_ms;
    int pad;
} eml_node_spec;

struct eml_net;
struct eml_dataset;
struct eml_step_info;

/* How a node reaches its neighbours: its host's transport (ZeroMQ in the
 * host process, ocalls from an enclave).  Deadlines are wall seconds
 * (core/clock.h). */
typedef struct eml_node_io {
    void *user;
    eml_status (*send)(void *user, uint32_t peer, const uint8_t *p, size_t n,
                       double deadline, eml_err *err);
    /* The next frame from any neighbour (*p valid until the next call),
     * or *n = 0 once the deadline has passed. */
    eml_status (*recv)(void *user, double deadline, const uint8_t **p,
                       size_t *n, eml_err *err);
    /* One JSON object (no newline) after each round. */
    void (*round)(void *user, const char *json);
    /* One line about a neighbour: it missed a deadline, a send failed. */
    void (*note)(void *user, const char *line);
    /* Sealed channels (both NULL for the baseline in the clear): this
     * node's hello (made once, the node sends it to each neighbour before
     * anything else, and again to one whose hello is new), and a
     * neighbour's hello checked and turned into the channel to it, with
     * the session nonce it was keyed with. */
    eml_status (*hello_make)(void *user, const uint8_t **p, size_t *n,
                             eml_err *err);
    eml_status (*hello_open)(void *user, const uint8_t *p, size_t n,
                             uint32_t *peer, uint8_t nonce[32],
                             eml_dchan *chan, eml_err *err);
    /* Host side, may be NULL: called once before the first frame moves
     * through an enclave's NODE_* ocalls; a failure ends the run. */
    eml_status (*start)(void *user, eml_err *err);
} eml_node_io;

/* A hello frame starts with this (docs/formats.md, "Node hello"). */
#define EML_HELLO_MAGIC 0x484c4d45u /* "EMLH" */
#define EML_HELLO_FIXED 48

/* A hello's fields: the sender's id, its session nonce, and its
 * attestation report (pointing into p), which the caller must still
 * check.  EML_ERR_FORMAT for anything that is not a hello. */
EML_MUST_CHECK eml_status eml_hello_parse(const uint8_t *p, size_t n,
                                          uint32_t *id, uint8_t nonce[32],
                                          const char **report, size_t *rlen,
                                          eml_err *err);

typedef struct eml_node_opts {
    uint32_t id;
    const eml_topo *topo; /* every node builds the same graph */
    long rounds, local_steps;
    double deadline_s;    /* a round's wait, from sending */
    eml_share_spec share;
    uint64_t seed;        /* the node's sampling of random shares */
    int clear;            /* 1: the baseline's frames in the clear */
} eml_node_opts;

typedef struct eml_node eml_node;

/* A node over net (its flat parameters are what is shared), evaluated
 * after each round on test.  opts->clear: channels in the clear (the
 * baseline); else sealed channels from the neighbours' hellos (io's
 * hello hooks), and no neighbour is sent a byte of model before its
 * hello has been checked. */
EML_MUST_CHECK eml_status eml_node_new(const eml_node_opts *o,
                                       struct eml_net *net,
                                       const struct eml_dataset *test,
                                       const eml_node_io *io, eml_node **out,
                                       eml_err *err);
/* The trainer's step hook (eml_step_fn, user: the node): every
 * local_steps steps a round - share, seal, send, collect until the
 * deadline (holding frames of later rounds, dropping earlier ones,
 * counting refusals), average, evaluate, report.  After the last round
 * it returns EML_ERR_RANGE to stop the trainer, with
 * eml_node_finished() true. */
EML_MUST_CHECK eml_status eml_node_step(void *node,
                                        const struct eml_step_info *s,
                                        eml_err *err);
int eml_node_finished(const eml_node *nd);
long eml_node_rounds_done(const eml_node *nd);
void eml_node_free(eml_node *nd);

#ifdef __cplusplus
}
#endif
#endif
