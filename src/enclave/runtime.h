/*
 * runtime.h - the trusted runtime's insides, shared by its files (not a
 * public header; the runtime's API is include/enclaveml/enclave.h):
 *
 *   serve.c         the enclave object and the ecall loop, which decodes
 *                   each ecall and dispatches it through a table
 *   ocall.c         replies to the host's ecall, notifications, the ocall
 *                   client (each reply checked for its type and seq),
 *                   asynchronous mirror ocalls, the file ocalls
 *   identity.c      identity and sealing (INIT), attestation (ATTEST)
 *   owner_data.c    owners' encrypted files: streamed, authenticated,
 *                   checked for role and dataset, parsed
 *   mirror_proxy.c  the mirror's store, served by the host over ocalls
 *   budget.c        privacy budgets across runs: the spend ledger; the
 *                   evaluation counts of grants' max_evaluations
 *   train_ecall.c   TRAIN: grants, plan, data, training, the model out,
 *                   the signed report
 *   model_ecall.c   MODEL_LOAD: a granted model for inference
 *   predict_ecall.c PREDICT: the model on a user's images, the outputs
 *                   encrypted to the user
 *   eval_ecall.c    EVALUATE: the loaded model on granted test sets,
 *                   the signed evaluation report
 *   serve_ecall.c   SERVE_START, SERVE_IO: the attested server; QUEUE_START:
 *                   its queue to workers; QWORKER_*: a queue worker
 *   worker_ocall.c  the outsourcing worker, reached through WORKER ocalls
 *   node_run.c      a decentralized node's rounds over NODE_* ocalls, its
 *                   channels keyed from attested hellos
 *   probe.c         PROBE: forbidden calls tried inside the sandbox
 *
 * Trusted code: no files, sockets or processes; everything from the host
 * is checked before use; secrets live in locked memory and are wiped.
 */
#ifndef EML_ENCLAVE_RUNTIME_H
#define EML_ENCLAVE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/boundary.h"
#include "enclaveml/container.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "enclaveml/http.h"
#include "enclaveml/ledger.h"
#include "enclaveml/mirror.h"
#include "enclaveml/outsource.h"
#include "enclaveml/train.h"

/* Asynchronous ocalls outstanding at most (the mirror has two: a bulk
 * write and a commit). */
#define EML_RT_PENDING_MAX 8

typedef struct secrets {
    uint8_t sign_sk[32];     /* platform */
    uint8_t seal_secret[32]; /* platform */
    uint8_t x_sk[32];        /* identity */
    uint8_t ed_sk[32];       /* identity */
} secrets;

struct eml_enclave {
    eml_channel ch;
    secrets *sec; /* locked memory */
    uint8_t measurement[32];
    uint8_t x_pk[32], ed_pk[32], platform_pk[32];
    char policy[EML_POLICY_MAX];
    int sim;
    uint64_t (*probe)(uint64_t *attempted); /* the sandbox's self-test */
    int has_identity;
    uint8_t *bulk; /* shared with the host: written, never read */
    size_t bulk_n;
    uint8_t *staging; /* private, bulk_n bytes: the mirror seals here */
    eml_counter_ops counter; /* the platform's monotonic counter */
    uint32_t ecall_seq; /* the ecall being served: its reply's seq */
    int stop;           /* SHUTDOWN was answered: the loop ends */
    /* Mirror ocalls sent without waiting (bulk writes, commits): their
     * MIRROR_OK replies are collected before the next ocall and before
     * the bulk region is written again, so the host copies and persists
     * while training goes on.  Their seqs and types, oldest first. */
    int pending;
    uint32_t pending_seq[EML_RT_PENDING_MAX];
    uint16_t pending_type[EML_RT_PENDING_MAX];
    eml_status late_st; /* the first of their failures, not yet reported */
    eml_err late;
    struct eml_model *model; /* MODEL_LOAD's, or NULL */
    /* How MODEL_LOAD opened it (EVALUATE's report): the SHA-256 of the cfg
     * and of the model's file as read, and the owner's grant id. */
    uint8_t model_cfg_sha256[32], model_file_sha256[32];
    uint8_t model_grant_id[16];
    /* The model grant's release key (EVALUATE may re-encrypt the model to
     * it), and then the weights as the owner encrypted them, locked
     * memory, wiped when the model is replaced or the enclave ends. */
    int model_has_release;
    uint8_t model_release_to[32];
    uint8_t *model_plain;
    size_t model_plain_len;
    /* The model grant's max_queries (PREDICT, per recipient), or 0. */
    uint32_t model_max_queries;
    /* SERVE_START's (serve_ecall.c), or NULL */
    struct eml_tls_key *tls_key;
    struct eml_tls_server *tls;
    struct eml_server *server;
    eml_http_buf serve_out;
    /* QWORKER_START's (serve_ecall.c), or NULL: a queue worker */
    struct eml_qworker *qworker;
};

/* ==== ocall.c ==== */

/* The reply to the ecall being served (msg: its struct, NULL for one
 * without fields), and an ERROR reply to it. */
eml_status eml_rt_reply(eml_enclave *e, uint16_t type, const void *msg,
                        size_t size, eml_err *err);
eml_status eml_rt_reply_error(eml_enclave *e, eml_status st, const char *msg);
/* A notification (PROGRESS). */
eml_status eml_rt_notify(eml_enclave *e, uint16_t type, const void *msg,
                         size_t size, eml_err *err);
/* Sends ocall `type` and waits for its reply (the table's reply type, with
 * its seq), decoded into reply (NULL for one without fields), after the
 * replies still owed to earlier asynchronous ocalls.  An ERROR from the
 * host becomes EML_ERR_IO with its text. */
eml_status eml_rt_ocall(eml_enclave *e, uint16_t type, const void *req,
                        size_t req_size, void *reply, size_t reply_size,
                        eml_err *err);
/* An ocall whose reply (without fields) is collected later. */
eml_status eml_rt_ocall_async(eml_enclave *e, uint16_t type, const void *req,
                              size_t req_size, eml_err *err);
void eml_rt_collect(eml_enclave *e);
eml_status eml_rt_drain(eml_enclave *e, eml_err *err);
eml_status eml_rt_file_open(eml_enclave *e, uint64_t id, uint64_t *size,
                            eml_err *err);
eml_status eml_rt_file_read(eml_enclave *e, uint64_t id, uint64_t off,
                            size_t want, const uint8_t **p, size_t *n,
                            eml_err *err);

/* ==== identity.c ==== */

/* The ecalls take their decoded request (serve.c's table). */
eml_status eml_rt_ecall_init(eml_enclave *e, eml_msg_any *req, eml_err *err);
eml_status eml_rt_ecall_attest(eml_enclave *e, eml_msg_any *req,
                               eml_err *err);
/* This enclave's attestation report binding nonce (signed JSON, malloc'd). */
eml_status eml_rt_make_report(eml_enclave *e, const uint8_t *nonce,
                              size_t nlen, char **out, size_t *out_len,
                              eml_err *err);

/* ==== node_run.c: a decentralized node inside TRAIN ==== */

typedef struct eml_rt_node eml_rt_node;
/* NULL (and EML_OK) unless q->node.enabled; else the node's graph, share
 * spec and hello, made before any ocall (q's byte fields point into the
 * request frame). */
eml_status eml_rt_node_prepare(eml_enclave *e, const eml_ecall_train *q,
                               eml_rt_node **out, eml_err *err);
/* Hangs the node's rounds on env's step hook, over NODE_* ocalls. */
eml_status eml_rt_node_start(eml_rt_node *r, eml_net *net,
                             const eml_dataset *test, eml_run_env *env,
                             eml_err *err);
int eml_rt_node_finished(const eml_rt_node *r);
long eml_rt_node_rounds(const eml_rt_node *r);
void eml_rt_node_free(eml_rt_node *r);

/* ==== owner_data.c ==== */

typedef struct owner_file {
    uint8_t *plain; /* decrypted bytes (wiped on free) */
    size_t len;
    uint8_t digest[32]; /* SHA-256 of the ciphertext as read */
    uint8_t dataset_id[EML_CONTAINER_DATASET_ID_BYTES]; /* from its header */
} owner_file;

/* Appends the images and labels of one owner's pair to a dataset. */
typedef struct data_acc {
    uint8_t *images, *labels;
    size_t count, item;
} data_acc;

/* One encrypted file served as file_id in `role`, named `what` in errors:
 * streamed, authenticated chunk by chunk, its header checked first (the
 * grant's key, the role, and want_dataset if not NULL). */
eml_status eml_rt_read_sealed_file(eml_enclave *e, uint64_t file_id,
                                   eml_container_role role, const char *what,
                                   const uint8_t data_key[32],
                                   const uint8_t key_id[16],
                                   const uint8_t *want_dataset,
                                   owner_file *out, eml_err *err);
/* An owner's file: file_id o * 4 + kind, in kind's role. */
eml_status eml_rt_read_owner_file(eml_enclave *e, uint64_t file_id,
                                  const uint8_t data_key[32],
                                  const uint8_t key_id[16],
                                  const uint8_t *want_dataset,
                                  owner_file *out, eml_err *err);
void eml_rt_owner_file_free(owner_file *f);
void eml_rt_data_acc_free(data_acc *a);
eml_status eml_rt_data_acc_add(data_acc *a, const owner_file *img,
                               const owner_file *lab, const char *what,
                               eml_err *err);
eml_status eml_rt_claimed_count(eml_enclave *e, uint64_t n_owners,
                                size_t *out, eml_err *err);

/* ==== mirror_proxy.c ==== */

/* The store ops through which the mirror reaches the host (MIRROR_*). */
eml_store_ops eml_rt_store_ops(eml_enclave *e);

/* ==== budget.c ==== */

/* The budgeted grants of one run and the spend ledger (ledger.h): a fresh
 * run is admitted only if every budgeted grant has its planned epsilon
 * left, and is charged, durably, before its first step. */
typedef struct budget {
    eml_enclave *e;
    const eml_grant_info *g; /* the run's grants */
    uint64_t n;
    eml_ledger ledger;
    double planned;
} budget;

eml_status eml_rt_ledger_load(budget *b, int catch_up, eml_err *err);
eml_status eml_rt_budget_gate(const budget *b, eml_err *err);
eml_status eml_rt_budget_charge(void *user, int resumed, eml_err *err);

/* Evaluation limits (docs/evaluate.md), kept in the same ledger: one
 * entry per (grant, model), keyed by eml_rt_eval_key, holding the count
 * of evaluations made. */
typedef struct eml_rt_eval_limit {
    uint8_t id[16];   /* eml_rt_eval_key(grant id, model sha256) */
    uint32_t max;     /* the grant's max_evaluations */
    unsigned set;     /* its test set (0-based), for messages */
} eml_rt_eval_limit;

eml_status eml_rt_eval_key(uint8_t id[16], const uint8_t grant_id[16],
                           const uint8_t model_sha256[32]);
/* Every limit must have one evaluation left (charge 0: a check, as the
 * ledger stands); with charge 1, under the counter's lock, checked again
 * and each counted once more: the ledger stored, then the counter
 * advanced, before the caller releases anything. */
eml_status eml_rt_eval_limits(eml_enclave *e, const eml_rt_eval_limit *lim,
                              size_t n, int charge, eml_err *err);

/* Query limits (PREDICT, docs/evaluate.md "Private prediction"): one
 * entry per (model grant, recipient), keyed by eml_rt_query_key, holding
 * the count of predictions sent.  eml_rt_query_limit: `ask` more must fit
 * under max (charge 0: a check; charge 1: under the counter's lock,
 * checked again and counted, the ledger stored and the counter advanced);
 * *spent gets the count before this request. */
eml_status eml_rt_query_key(uint8_t id[16], const uint8_t grant_id[16],
                            const uint8_t recipient[32]);
eml_status eml_rt_query_limit(eml_enclave *e, const uint8_t id[16],
                              uint32_t max, uint64_t ask, int charge,
                              uint64_t *spent, eml_err *err);

/* ==== train_ecall.c, probe.c ==== */

/* Encrypts pt to recipient (an X25519 key, role "model": the .emlm of
 * `train --recipient`) and streams it out as OUTPUT stream 0; file_hash
 * gets the SHA-256 of the container exactly as sent.  Shared by TRAIN and
 * EVALUATE's release. */
eml_status eml_rt_send_model(eml_enclave *e, const uint8_t *pt, size_t len,
                             const uint8_t recipient[32],
                             uint8_t file_hash[32], eml_err *err);
/* The same in any role (PREDICT's predictions). */
eml_status eml_rt_send_sealed(eml_enclave *e, eml_container_role role,
                              const uint8_t *pt, size_t len,
                              const uint8_t recipient[32],
                              uint8_t file_hash[32], eml_err *err);

/* Appends to a report body: snprintf that never runs past cap (a body is
 * sized for its contents; this keeps a mistake there from becoming an
 * overflow).  Shared by the training and evaluation reports. */
void eml_rt_append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
    EML_PRINTF(4, 5);

/* ==== worker_ocall.c ==== */

typedef struct eml_rt_worker {
    eml_enclave *e;
    const uint8_t *req; /* the request between send and recv */
    size_t req_len;
} eml_rt_worker;

/* A link over WORKER ocalls (w must outlive it). */
eml_worker_link eml_rt_worker_link(eml_rt_worker *w, eml_enclave *e);

/* ==== serve_ecall.c ==== */

eml_status eml_rt_ecall_serve_start(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err);
eml_status eml_rt_ecall_serve_io(eml_enclave *e, eml_msg_any *req,
                                 eml_err *err);
eml_status eml_rt_ecall_queue_start(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err);
eml_status eml_rt_ecall_qworker_start(eml_enclave *e, eml_msg_any *req,
                                      eml_err *err);
eml_status eml_rt_ecall_qworker_key(eml_enclave *e, eml_msg_any *req,
                                    eml_err *err);
eml_status eml_rt_ecall_qworker_io(eml_enclave *e, eml_msg_any *req,
                                   eml_err *err);
/* The server, its TLS and key, the queue worker, freed (and wiped by
 * their owners). */
void eml_rt_serve_free(eml_enclave *e);

eml_status eml_rt_ecall_model_load(eml_enclave *e, eml_msg_any *req,
                                   eml_err *err);
/* The model's release state, wiped and freed. */
void eml_rt_model_release_free(eml_enclave *e);
eml_status eml_rt_ecall_evaluate(eml_enclave *e, eml_msg_any *req,
                                 eml_err *err);
eml_status eml_rt_ecall_predict(eml_enclave *e, eml_msg_any *req,
                                eml_err *err);
eml_status eml_rt_ecall_train(eml_enclave *e, eml_msg_any *req,
                              eml_err *err);
eml_status eml_rt_ecall_probe(eml_enclave *e, eml_msg_any *req,
                              eml_err *err);

#endif
