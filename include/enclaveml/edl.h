/*
 * edl.h - the enclave boundary's interface, like an SGX EDL file: every
 * message between the host program (`enclaveml`, untrusted) and the enclave
 * program (`enclaveml-enclave`, trusted), with its number, its own version,
 * its kind, its reply and its fields, in one place.  Adding a message or a
 * field is an edit here (and, for a new request, its handler in the
 * receiver's table: src/enclave/serve.c, src/host/enclave_ocalls.c): the
 * C structs below, the codec's table (src/boundary/messages.c), the docs'
 * message list (docs/enclave.md, checked by tests/test_boundary.c), the
 * codec's tests and the fuzz targets all follow.
 *
 * Frames travel over one channel fd.  A frame is a 16-byte header
 *
 *     u32 magic "EMLM" | u16 version | u16 type | u32 length | u32 seq
 *
 * (little-endian) and `length` payload bytes (at most EML_MSG_MAX).
 *
 *   version  the message's own version (EML_MESSAGES below); a receiver
 *            refuses a frame whose version is not its type's.
 *   seq      a request's id.  Every frame that answers nothing (an ecall,
 *            an ocall, a notification, or an ERROR about a frame that could
 *            not be parsed) carries its sender's running count on the
 *            channel, 0, 1, 2, ...; a reply (ERROR included) carries the
 *            seq of the request it answers.  The host checks the seq of an
 *            ecall's reply and the enclave that of every ocall's reply
 *            (asynchronous ones too, in order), so an answer to another
 *            request is refused.
 *
 * A payload is the message's fields in the order listed below, each a u64
 * (8 bytes little-endian; U64, INT and LONG fields), an f64 (IEEE-754 bits
 * as a u64, finite only), a byte string (u32 length + bytes; BYTES, FIXED
 * and COPY fields) or a list (u64 count, then that many byte strings).  No
 * pointers cross the boundary, only bytes.  The receiver decodes with the
 * same table as the sender encodes: every length and count is checked
 * against the frame and the field's maximum, every number against its
 * range, and a frame must hold exactly its fields.
 *
 * The codec and the channel are in boundary.h.
 */
#ifndef ENCLAVEML_EDL_H
#define ENCLAVEML_EDL_H

#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/decentral.h"
#include "enclaveml/kernels.h"
#include "enclaveml/ledger.h"
#include "enclaveml/mirror.h"
#include "enclaveml/run.h"
#include "enclaveml/status.h"
#include "enclaveml/train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_MSG_MAGIC 0x4d4c4d45u /* "EMLM" little-endian */
#define EML_MSG_HEADER 16
#define EML_MSG_MAX ((size_t)64 << 20) /* 64 MiB per frame */

#define EML_NONCE_MAX 64
#define EML_CFG_TEXT_MAX ((size_t)1 << 20)
#define EML_GRANT_MAX 4096
#define EML_OWNERS_MAX 64
#define EML_ERRMSG_MAX 384
#define EML_CHUNK_MAX ((size_t)16 << 20)
#define EML_SEALED_MAX 4096
#define EML_POLICY_MAX 256
#define EML_MEASURE_LIST_MAX 16384 /* MEASURE's list of measured files */
#define EML_REPORT_MAX 8192                    /* an attestation report */
#define EML_TRAIN_REPORT_MAX ((size_t)1 << 20) /* a training report */
#define EML_EVAL_REPORT_MAX ((size_t)1 << 20) /* an evaluation report */
#define EML_EVAL_CLASSES_MAX 100 /* outputs of a network EVALUATE takes */
#define EML_WORKER_ADDR_LEN 320 /* tcp:HOST:PORT, unix:PATH, in a report */
#define EML_WORKER_FRAME_MAX (EML_MSG_MAX - 4096) /* one worker frame */
#define EML_NODE_FRAME_MAX (EML_MSG_MAX - 4096)   /* one node frame */
#define EML_NODE_GRAPH_MAX ((size_t)1 << 20) /* a topology's spec or text */
#define EML_NODE_LINE_MAX 1024
#define EML_NODE_ACCEPT_MAX 8 /* measurements a run's policy adds */
/* The bulk region: shared memory set up at launch (untrusted, like the
 * channel).  The enclave only ever WRITES there (sealed bytes going out);
 * it never reads from it, so the host changing it underneath proves
 * nothing. */
#define EML_BULK_BYTES ((size_t)16 << 20)

/* ==== the messages ==== */

/* One row per message: M(NAME, type, version, kind, reply, struct), or
 * E(NAME, type, version, kind, reply) for one without fields.  Types are
 * only ever appended; a message's version goes up when its fields change.
 *   ECALL   request host -> enclave, answered by its reply (or ERROR);
 *   OCALL   request enclave -> host during an ecall, answered likewise;
 *   NOTIFY  one-way, no answer;
 *   REPLY   the answer to one request. */
#define EML_MESSAGES(M, E)                                                   \
    M(ERROR, 1, 1, REPLY, NONE, eml_reply_error)                             \
    M(INIT, 2, 1, ECALL, INIT_OK, eml_ecall_init)                            \
    M(INIT_OK, 3, 1, REPLY, NONE, eml_reply_init_ok)                         \
    M(ATTEST, 4, 1, ECALL, REPORT, eml_ecall_attest)                         \
    M(REPORT, 5, 1, REPLY, NONE, eml_reply_report)                           \
    M(TRAIN, 6, 4, ECALL, TRAIN_DONE, eml_ecall_train)                       \
    M(TRAIN_DONE, 7, 1, REPLY, NONE, eml_reply_train_done)                   \
    M(FILE_OPEN, 8, 1, OCALL, FILE_INFO, eml_ocall_file_open)                \
    M(FILE_INFO, 9, 1, REPLY, NONE, eml_reply_file_info)                     \
    M(FILE_READ, 10, 1, OCALL, FILE_DATA, eml_ocall_file_read)               \
    M(FILE_DATA, 11, 1, REPLY, NONE, eml_reply_file_data)                    \
    M(OUTPUT, 12, 1, OCALL, OUTPUT_OK, eml_ocall_output)                     \
    E(OUTPUT_OK, 13, 1, REPLY, NONE)                                         \
    M(PROGRESS, 14, 1, NOTIFY, NONE, eml_notify_progress)                    \
    M(PING, 15, 1, ECALL, PONG, eml_ecall_ping)                              \
    M(PONG, 16, 1, REPLY, NONE, eml_reply_pong)                              \
    E(PROBE, 17, 1, ECALL, PROBE_OK)                                         \
    M(PROBE_OK, 18, 1, REPLY, NONE, eml_reply_probe_ok)                      \
    E(SHUTDOWN, 19, 1, ECALL, SHUTDOWN_OK)                                   \
    E(SHUTDOWN_OK, 20, 1, REPLY, NONE)                                       \
    E(MIRROR_HEADER, 21, 1, OCALL, MIRROR_DATA)                              \
    M(MIRROR_DATA, 22, 1, REPLY, NONE, eml_reply_mirror_data)                \
    M(MIRROR_CREATE, 23, 1, OCALL, MIRROR_OK, eml_ocall_mirror_create)       \
    M(MIRROR_WRITE, 24, 1, OCALL, MIRROR_OK, eml_ocall_mirror_write)         \
    M(MIRROR_COMMIT, 25, 1, OCALL, MIRROR_OK, eml_ocall_mirror_commit)       \
    M(MIRROR_READ, 26, 1, OCALL, MIRROR_DATA, eml_ocall_mirror_read)         \
    E(MIRROR_OK, 27, 1, REPLY, NONE)                                         \
    M(MIRROR_WRITE_BULK, 28, 1, OCALL, MIRROR_OK, eml_ocall_mirror_write_bulk) \
    M(MEASURE, 29, 1, NOTIFY, NONE, eml_notify_measure)                      \
    E(LEDGER_READ, 30, 1, OCALL, LEDGER_DATA)                                \
    M(LEDGER_DATA, 31, 1, REPLY, NONE, eml_reply_ledger_data)                \
    M(LEDGER_WRITE, 32, 1, OCALL, LEDGER_OK, eml_ocall_ledger_write)         \
    E(LEDGER_OK, 33, 1, REPLY, NONE)                                         \
    M(MODEL_LOAD, 34, 1, ECALL, MODEL_LOADED, eml_ecall_model_load)          \
    M(MODEL_LOADED, 35, 1, REPLY, NONE, eml_reply_model_loaded)              \
    M(WORKER, 36, 1, OCALL, WORKER_DATA, eml_ocall_worker)                   \
    M(WORKER_DATA, 37, 1, REPLY, NONE, eml_reply_worker_data)                \
    M(NODE_SEND, 38, 2, OCALL, NODE_SENT, eml_ocall_node_send)               \
    M(NODE_SENT, 39, 1, REPLY, NONE, eml_reply_node_sent)                    \
    M(NODE_RECV, 40, 2, OCALL, NODE_FRAME, eml_ocall_node_recv)              \
    M(NODE_FRAME, 41, 2, REPLY, NONE, eml_reply_node_frame)                  \
    M(NODE_REPORT, 42, 1, NOTIFY, NONE, eml_notify_node_report)             \
    M(SERVE_START, 43, 1, ECALL, SERVE_READY, eml_ecall_serve_start)         \
    M(SERVE_READY, 44, 1, REPLY, NONE, eml_reply_serve_ready)                \
    M(SERVE_IO, 45, 1, ECALL, SERVE_OUT, eml_ecall_serve_io)                 \
    M(SERVE_OUT, 46, 1, REPLY, NONE, eml_reply_serve_out)                    \
    M(QUEUE_START, 47, 1, ECALL, QUEUE_READY, eml_ecall_queue_start)         \
    M(QUEUE_READY, 48, 1, REPLY, NONE, eml_reply_queue_ready)                \
    M(QWORKER_START, 49, 1, ECALL, QWORKER_READY, eml_ecall_qworker_start)   \
    M(QWORKER_READY, 50, 1, REPLY, NONE, eml_reply_qworker_ready)            \
    M(QWORKER_KEY, 51, 1, ECALL, QWORKER_KEYED, eml_ecall_qworker_key)       \
    M(QWORKER_KEYED, 52, 1, REPLY, NONE, eml_reply_qworker_keyed)            \
    M(QWORKER_IO, 53, 1, ECALL, QWORKER_OUT, eml_ecall_qworker_io)           \
    M(QWORKER_OUT, 54, 1, REPLY, NONE, eml_reply_qworker_out)              \
    M(EVALUATE, 55, 2, ECALL, EVALUATE_DONE, eml_ecall_evaluate)             \
    M(EVALUATE_DONE, 56, 1, REPLY, NONE, eml_reply_evaluate_done)         \
    M(PREDICT, 57, 1, ECALL, PREDICT_DONE, eml_ecall_predict)                \
    M(PREDICT_DONE, 58, 1, REPLY, NONE, eml_reply_predict_done)

#define EML_MSG_ENUM_(NAME, type, ...) EML_MSG_##NAME = type,
typedef enum eml_msg_type {
    EML_MSG_NONE = 0, /* no message (never a type on the wire) */
    EML_MESSAGES(EML_MSG_ENUM_, EML_MSG_ENUM_) /* EML_MSG_<NAME> = type */
    EML_MSG_TYPE_END /* one past the last */
} eml_msg_type;

typedef enum eml_msg_kind {
    EML_MSG_KIND_ECALL = 1,
    EML_MSG_KIND_OCALL = 2,
    EML_MSG_KIND_NOTIFY = 3,
    EML_MSG_KIND_REPLY = 4
} eml_msg_kind;

/* ==== the fields ==== */

/* Each message's fields in wire order: X(S, KIND, name, bounds...), where
 * S is the message's struct, and KIND (with the member it declares):
 *   U64   name, lo, hi       uint64_t, in [lo, hi]
 *   INT   name, lo, hi       int, a u64 in [lo, hi] on the wire
 *   LONG  name, lo, hi       long, likewise
 *   F64   name, lo, hi       double, finite, in [lo, hi]
 *   BYTES name, max          eml_bytes: at most max bytes, borrowed from
 *                            the received frame (valid until the next
 *                            frame is received on that channel)
 *   FIXED name, n            uint8_t name[n]: a byte string of exactly n
 *   COPY  name, max          uint8_t name[max] + size_t name_len: at most
 *                            max bytes, copied (outlives the frame)
 *   LIST  name, lo, hi, max  eml_bytes name[hi] + size_t n_name: a u64
 *                            count in [lo, hi], then that many byte
 *                            strings of at most max bytes each
 *   EMBED type, name         `type name;`, nothing on the wire: a struct
 *                            whose members the IN_* rows below it send
 *   IN_U64, IN_INT, IN_LONG, IN_F64  path, lo, hi
 *                            a member of an embedded struct
 *                            ("spec.dp.clip"), as U64 ... F64 */
typedef struct eml_bytes {
    const uint8_t *p;
    size_t n;
} eml_bytes;

/* ERROR (either direction): why a request failed. */
#define EML_FIELDS_ERROR(X, S)                                               \
    X(S, U64, status, 0, UINT64_MAX) /* an eml_status, as an i64 */          \
    X(S, BYTES, message, EML_ERRMSG_MAX)

/* INIT: start with the identity sealed at an earlier start (empty on the
 * first start, when the enclave makes one). */
#define EML_FIELDS_INIT(X, S) X(S, BYTES, sealed_identity, EML_SEALED_MAX)

/* INIT_OK: the enclave's measurement, keys and policy, and its sealed
 * identity for the host to keep (empty if unchanged). */
#define EML_FIELDS_INIT_OK(X, S)                                             \
    X(S, FIXED, measurement, 32)                                             \
    X(S, FIXED, x25519_pk, 32)                                               \
    X(S, FIXED, ed25519_pk, 32)                                              \
    X(S, BYTES, policy, EML_POLICY_MAX - 1)                                  \
    X(S, BYTES, sealed_identity, EML_SEALED_MAX)

/* ATTEST: an attestation report binding the verifier's nonce. */
#define EML_FIELDS_ATTEST(X, S) X(S, BYTES, nonce, EML_NONCE_MAX)

/* REPORT: the attestation report (signed JSON, docs/enclave.md). */
#define EML_FIELDS_REPORT(X, S) X(S, BYTES, report, EML_REPORT_MAX)

/* TRAIN: train the network in cfg_text on the data of the owners whose
 * grants come with it; the model leaves encrypted to recipient (a key
 * every grant must name), the signed training report repeats
 * report_nonce (the model owner's).  During the ecall the enclave sends
 * FILE_OPEN/FILE_READ ocalls for owner o's files (file id o * 4 + kind,
 * kind = eml_file_kind), PROGRESS notifications, OUTPUT ocalls, MIRROR_*
 * ocalls when mirroring, and LEDGER_* ocalls when a grant carries a
 * privacy budget.  Zero epochs, batch or lr take the cfg's. */
#define EML_FIELDS_TRAIN(X, S)                                               \
    X(S, BYTES, cfg_text, EML_CFG_TEXT_MAX)                                  \
    X(S, EMBED, eml_run_spec, spec) /* every option of the run (train.h) */    \
    X(S, IN_INT, spec.epochs, 0, 100000)                                     \
    X(S, IN_INT, spec.batch, 0, EML_CFG_MAX_BATCH)                           \
    X(S, IN_F64, spec.lr, 0, 100)                                            \
    X(S, IN_U64, spec.seed, 0, UINT64_MAX)                                   \
    X(S, IN_INT, spec.threads, 1, 256)                                       \
    X(S, IN_INT, spec.kernels, 0, EML_KERNELS_COUNT - 1)                     \
    X(S, FIXED, recipient, 32) /* the model owner's X25519 key */            \
    X(S, IN_INT, spec.dp.enabled, 0, 1)                                      \
    X(S, IN_F64, spec.dp.clip, -DBL_MAX, DBL_MAX)                            \
    X(S, IN_F64, spec.dp.noise, -DBL_MAX, DBL_MAX) /* < 0: from target */    \
    X(S, IN_F64, spec.dp.delta, -DBL_MAX, DBL_MAX)                           \
    X(S, IN_F64, spec.dp.target_epsilon, -DBL_MAX, DBL_MAX) /* 0: none */    \
    X(S, IN_INT, spec.dp.fixed_batches, 0, 1)                                \
    X(S, IN_INT, spec.dp.insecure_seed, 0, 1)                                \
    X(S, LIST, grants, 1, EML_OWNERS_MAX, EML_GRANT_MAX) /* one per owner */ \
    X(S, IN_INT, spec.mirror, 0, 1) /* 1: save through MIRROR_* ocalls */    \
    X(S, IN_LONG, spec.save_every, 1, 1000000000)                            \
    X(S, IN_INT, spec.resume, 0, 1)                                          \
    X(S, COPY, report_nonce, EML_NONCE_MAX)                                  \
    X(S, IN_INT, spec.outsource, 0, 2) /* v2: eml_outsource_mode, 0: none */ \
    X(S, COPY, worker, EML_WORKER_ADDR_LEN) /* v2: for the report */        \
    X(S, IN_F64, spec.outsource_min_intensity, 0, 1e12) /* v3 */            \
    X(S, EMBED, eml_node_spec, node) /* v4: a decentralized node */         \
    X(S, IN_INT, node.enabled, 0, 1)                                         \
    X(S, IN_INT, node.id, 0, EML_DECENTRAL_MAX_NODES - 1)                    \
    X(S, IN_INT, node.nodes, 0, EML_DECENTRAL_MAX_NODES)                     \
    X(S, IN_LONG, node.rounds, 0, 1000000)                                   \
    X(S, IN_LONG, node.local_steps, 0, 1000000)                              \
    X(S, IN_LONG, node.deadline_ms, 0, 3600000)                              \
    X(S, IN_INT, node.pad, 0, 1)                                             \
    X(S, BYTES, node_graph, EML_NODE_GRAPH_MAX) /* spec or edge list */      \
    X(S, COPY, node_share, 64)                 /* full, random:F, topk:F */  \
    X(S, FIXED, node_run_id, 32)               /* salts the channel keys */ \
    X(S, BYTES, node_accept, 32 * EML_NODE_ACCEPT_MAX) /* measurements a    \
                                 neighbour may run besides this one, 32 each */

/* TRAIN_DONE: the training report (signed JSON, docs/enclave.md). */
#define EML_FIELDS_TRAIN_DONE(X, S)                                          \
    X(S, BYTES, report, EML_TRAIN_REPORT_MAX)

/* FILE_OPEN: the size of file_id's ciphertext (the host's word for it: a
 * hint, the container's authentication decides). */
#define EML_FIELDS_FILE_OPEN(X, S) X(S, U64, file_id, 0, UINT64_MAX)
#define EML_FIELDS_FILE_INFO(X, S) X(S, U64, size, 0, UINT64_MAX)

/* FILE_READ: length bytes of file_id's ciphertext from offset; FILE_DATA
 * holds exactly that many unless the file ends. */
#define EML_FIELDS_FILE_READ(X, S)                                           \
    X(S, U64, file_id, 0, UINT64_MAX)                                        \
    X(S, U64, offset, 0, UINT64_MAX)                                         \
    X(S, U64, length, 0, EML_CHUNK_MAX + 64)
#define EML_FIELDS_FILE_DATA(X, S) X(S, BYTES, data, EML_CHUNK_MAX + 64)

/* OUTPUT: the next bytes of an output stream (0: the encrypted model);
 * OUTPUT_OK has no fields. */
#define EML_FIELDS_OUTPUT(X, S)                                              \
    X(S, U64, stream, 0, UINT64_MAX)                                         \
    X(S, BYTES, data, EML_CHUNK_MAX + 64)                                    \
    X(S, INT, last, 0, 1)

/* PROGRESS: how training goes (numbers the model owner sees anyway). */
#define EML_FIELDS_PROGRESS(X, S)                                            \
    X(S, EMBED, eml_train_progress, p) /* but p.resumed_step */              \
    X(S, IN_INT, p.epoch, 0, INT_MAX)                                        \
    X(S, IN_INT, p.epochs, 0, INT_MAX)                                       \
    X(S, IN_LONG, p.batch, 0, LONG_MAX)                                      \
    X(S, IN_LONG, p.batches, 0, LONG_MAX)                                    \
    X(S, IN_F64, p.loss, -DBL_MAX, DBL_MAX)                                  \
    X(S, IN_F64, p.images_per_second, -DBL_MAX, DBL_MAX)                     \
    X(S, IN_F64, p.seconds, -DBL_MAX, DBL_MAX)                               \
    X(S, IN_F64, p.eta_seconds, -DBL_MAX, DBL_MAX)                           \
    X(S, IN_INT, p.epoch_done, 0, 1)                                         \
    X(S, IN_F64, p.test_accuracy, -DBL_MAX, DBL_MAX)                         \
    X(S, IN_F64, p.train_accuracy, -DBL_MAX, DBL_MAX)                        \
    X(S, IN_INT, p.resume_event, 0, 1)                                       \
    X(S, LONG, resumed, 0, LONG_MAX) /* resumed_step + 1 (0: fresh start) */

/* PING: PONG echoes the payload.  PROBE (no fields): the enclave tries the
 * calls its sandbox forbids, to show they are refused (refused under the
 * none backend, which has no sandbox). */
#define EML_FIELDS_PING(X, S) X(S, BYTES, payload, EML_CHUNK_MAX)
#define EML_FIELDS_PONG(X, S) X(S, BYTES, payload, EML_CHUNK_MAX)
#define EML_FIELDS_PROBE_OK(X, S)                                            \
    X(S, U64, refused, 0, UINT64_MAX) /* eml_probe_call bits refused */      \
    X(S, U64, attempted, 0, UINT64_MAX) /* and tried */

/* SHUTDOWN (no fields): the enclave exits after replying SHUTDOWN_OK.  */

/* The training-state mirror (mirror.h): the enclave seals, the host
 * stores the sealed bytes in its pool or checkpoint file.  MIRROR_HEADER
 * (no fields) asks for the store's first EML_POOL_HEADER_BYTES (zeros if
 * it does not exist); MIRROR_DATA holds exactly what was asked for. */
#define EML_FIELDS_MIRROR_DATA(X, S) X(S, BYTES, data, EML_CHUNK_MAX + 64)
#define EML_FIELDS_MIRROR_CREATE(X, S)                                       \
    X(S, FIXED, header, EML_POOL_HEADER_BYTES)                               \
    X(S, U64, capacity, 0, UINT64_MAX) /* of each slot */
#define EML_FIELDS_MIRROR_WRITE(X, S)                                        \
    X(S, INT, slot, 0, 1)                                                    \
    X(S, U64, offset, 0, UINT64_MAX)                                         \
    X(S, BYTES, data, EML_CHUNK_MAX + 64)
/* MIRROR_COMMIT: persist the slot's first length bytes, then the commit
 * word. */
#define EML_FIELDS_MIRROR_COMMIT(X, S)                                       \
    X(S, INT, slot, 0, 1)                                                    \
    X(S, U64, length, 0, UINT64_MAX)                                         \
    X(S, U64, word, 0, UINT64_MAX)
#define EML_FIELDS_MIRROR_READ(X, S)                                         \
    X(S, INT, slot, 0, 1)                                                    \
    X(S, U64, offset, 0, UINT64_MAX)                                         \
    X(S, U64, length, 0, EML_CHUNK_MAX + 64)
/* MIRROR_WRITE_BULK: like MIRROR_WRITE, with the bytes in the first
 * length bytes of the bulk region. */
#define EML_FIELDS_MIRROR_WRITE_BULK(X, S)                                   \
    X(S, INT, slot, 0, 1)                                                    \
    X(S, U64, offset, 0, UINT64_MAX)                                         \
    X(S, U64, length, 0, EML_BULK_BYTES)

/* MEASURE: the first frame of every `sim` enclave process (and the only
 * one of `enclaveml-enclave --measure`): what the host learns before
 * INIT; the signed report is what a verifier trusts.  files: one line
 * "<sha256 hex>  <path>\n" per file mapped executable, sorted by digest. */
#define EML_FIELDS_MEASURE(X, S)                                             \
    X(S, FIXED, measurement, 32)                                             \
    X(S, BYTES, policy, EML_POLICY_MAX - 1)                                  \
    X(S, BYTES, files, EML_MEASURE_LIST_MAX)

/* The spend ledger (ledger.h): sealed by the enclave, kept by the host,
 * checked against the platform's monotonic counter.  LEDGER_READ (no
 * fields) asks for it (empty if the host has none); LEDGER_WRITE stores it
 * durably, replacing the old one, before LEDGER_OK. */
#define EML_FIELDS_LEDGER_DATA(X, S)                                         \
    X(S, BYTES, ledger, EML_LEDGER_MAX_BYTES)
#define EML_FIELDS_LEDGER_WRITE(X, S)                                        \
    X(S, BYTES, ledger, EML_LEDGER_MAX_BYTES)

/* MODEL_LOAD: load a model for inference (model.h): the network in
 * cfg_text, its weights (safetensors, encrypted with role "model" under
 * a data key) read through FILE_OPEN/FILE_READ as file id
 * EML_FILE_MODEL and opened with the key the model owner's grant gives
 * this enclave; a grant with a cfg digest allows only that network.  It
 * replaces any model loaded before.  MODEL_LOADED: the SHA-256 of the
 * weights as decrypted (what the owner encrypted) and their count. */
#define EML_FIELDS_MODEL_LOAD(X, S)                                          \
    X(S, BYTES, cfg_text, EML_CFG_TEXT_MAX)                                  \
    X(S, BYTES, grant, EML_GRANT_MAX)
#define EML_FIELDS_MODEL_LOADED(X, S)                                        \
    X(S, FIXED, model_sha256, 32)                                            \
    X(S, U64, parameters, 0, UINT64_MAX)

/* WORKER: one request frame for the outsourcing worker (docs/formats.md,
 * "Worker protocol"), which the host relays; WORKER_DATA: the worker's
 * reply frame as it came.  The enclave checks every reply (id, shape,
 * Freivalds) and trusts the host with none of it. */
#define EML_FIELDS_WORKER(X, S) X(S, BYTES, request, EML_WORKER_FRAME_MAX)
#define EML_FIELDS_WORKER_DATA(X, S) X(S, BYTES, reply, EML_WORKER_FRAME_MAX)

/* NODE_SEND: a frame for a neighbour (a sealed share or the node's hello,
 * docs/decentral.md), which the host sends within wait_ms: in `frame`, or
 * (frame empty) in the first `bulk` bytes of the bulk region; NODE_SENT:
 * the bytes the host has sent for this node so far.  NODE_RECV: the next
 * frame from any neighbour, waiting at most wait_ms; with bulk 1 the host
 * may answer through the bulk region.  NODE_FRAME: the frame (in `frame`,
 * or in the first `bulk` bytes of the region), or nothing when the wait
 * ran out.  NODE_REPORT: a round's JSON line (kind 0) or a note about a
 * neighbour (kind 1), for the host to print. */
#define EML_FIELDS_NODE_SEND(X, S)                                           \
    X(S, U64, peer, 0, EML_DECENTRAL_MAX_NODES - 1)                          \
    X(S, U64, wait_ms, 0, 3600000)                                           \
    X(S, BYTES, frame, EML_NODE_FRAME_MAX)                                   \
    X(S, U64, bulk, 0, EML_BULK_BYTES)
#define EML_FIELDS_NODE_SENT(X, S) X(S, U64, sent, 0, UINT64_MAX)
#define EML_FIELDS_NODE_RECV(X, S)                                           \
    X(S, U64, wait_ms, 0, 3600000)                                           \
    X(S, U64, bulk, 0, 1)
#define EML_FIELDS_NODE_FRAME(X, S)                                          \
    X(S, BYTES, frame, EML_NODE_FRAME_MAX)                                   \
    X(S, U64, bulk, 0, EML_BULK_BYTES)
#define EML_FIELDS_NODE_REPORT(X, S)                                         \
    X(S, U64, kind, 0, 1)                                                    \
    X(S, BYTES, line, EML_NODE_LINE_MAX)

/* SERVE_START: serve the model MODEL_LOAD loaded (docs/serve.md) under the
 * name in URLs, with these limits; the enclave makes its TLS key and a
 * certificate carrying its attestation report (nonce: the SHA-256 of the
 * key's SubjectPublicKeyInfo).  SERVE_READY: that certificate (DER) and
 * report.  SERVE_IO: the host's events since the last call (serve.h's
 * records) and its monotonic clock; SERVE_OUT: the outputs (records) and
 * when to call again with no events (0: only on an event). */
#define EML_SERVE_CERT_MAX 16384
#define EML_FIELDS_SERVE_START(X, S)                                         \
    X(S, BYTES, name, 64)                                                    \
    X(S, INT, precision, 0, 2)                                               \
    X(S, INT, max_batch, 1, 4096)                                            \
    X(S, INT, max_wait_ms, 0, 60000)                                         \
    X(S, INT, max_conns, 1, 65536)                                           \
    X(S, INT, header_timeout_ms, 1, 3600000)                                 \
    X(S, INT, idle_timeout_ms, 1, 86400000)                                  \
    X(S, INT, max_instances, 1, 65536)                                       \
    X(S, U64, max_header, 256, 1 << 20)                                      \
    X(S, U64, max_body, 1, 1 << 30)
#define EML_FIELDS_SERVE_READY(X, S)                                         \
    X(S, BYTES, cert, EML_SERVE_CERT_MAX)                                    \
    X(S, BYTES, report, EML_REPORT_MAX)
#define EML_FIELDS_SERVE_IO(X, S)                                            \
    X(S, U64, now_ms, 0, UINT64_MAX)                                         \
    X(S, BYTES, events, (size_t)16 << 20)
#define EML_FIELDS_SERVE_OUT(X, S)                                           \
    X(S, BYTES, out, (size_t)16 << 20)                                       \
    X(S, U64, deadline_ms, 0, UINT64_MAX)

/* The queue to worker enclaves (docs/serve.md, "Scale-out through Redis
 * Streams").  QUEUE_START (after SERVE_START): predicts go to workers
 * through the stream named here, sealed under a queue key the enclave
 * makes; a request unanswered for timeout_ms gets 504.  QUEUE_READY: the
 * front end's id (its reply stream is <stream>:rep:<hex fe>).  From then
 * on SERVE_IO also carries the queue's records (serve.h: REPLY and
 * WORKER in, ENQUEUE and ADMIT out).
 * QWORKER_START (after MODEL_LOAD): be a worker of the stream under this
 * name; QWORKER_READY: its attestation report (nonce: serve.h's worker
 * binding).  QWORKER_KEY: the key a front end wrapped to it; QWORKER_KEYED:
 * that front end's id.  QWORKER_IO: request entries (serve.h's ENTRY
 * records); QWORKER_OUT: an ANSWER or a DROP for each, and the entries
 * answered and refused so far. */
#define EML_FIELDS_QUEUE_START(X, S)                                         \
    X(S, BYTES, stream, 64)                                                  \
    X(S, INT, timeout_ms, 1, 3600000)
#define EML_FIELDS_QUEUE_READY(X, S) X(S, FIXED, fe, 16)
#define EML_FIELDS_QWORKER_START(X, S)                                       \
    X(S, BYTES, stream, 64)                                                  \
    X(S, BYTES, name, 64)                                                    \
    X(S, INT, precision, 0, 2)                                               \
    X(S, INT, max_batch, 1, 4096)                                            \
    X(S, INT, max_instances, 1, 65536)
#define EML_FIELDS_QWORKER_READY(X, S) X(S, BYTES, report, EML_REPORT_MAX)
#define EML_FIELDS_QWORKER_KEY(X, S) X(S, BYTES, wrapped, 256)
#define EML_FIELDS_QWORKER_KEYED(X, S) X(S, FIXED, fe, 16)
#define EML_FIELDS_QWORKER_IO(X, S) X(S, BYTES, entries, (size_t)16 << 20)
#define EML_FIELDS_QWORKER_OUT(X, S)                                         \
    X(S, BYTES, out, (size_t)16 << 20)                                       \
    X(S, U64, done, 0, UINT64_MAX)                                           \
    X(S, U64, malformed, 0, UINT64_MAX)

/* EVALUATE (after MODEL_LOAD; docs/evaluate.md): evaluate the loaded
 * model on the test sets of the owners whose grants come with it, one
 * grant per test set (a grant that names a network must name the
 * model's; one with a privacy budget is refused).  Owner o's test images
 * and labels are read through FILE_OPEN/FILE_READ as file ids o * 4 +
 * EML_FILE_TEST_IMAGES and o * 4 + EML_FILE_TEST_LABELS.  A grant's
 * max_evaluations is counted in the spend ledger (LEDGER_* ocalls) before
 * the report leaves; its min_examples must be met.  With release 1, the
 * model's grant must name release_to as its release key (checked before
 * any file is read), and after the evaluation the model's weights leave
 * as OUTPUT stream 0, encrypted to release_to as `train --recipient`
 * writes a model (version 2: release, release_to).
 * EVALUATE_DONE: the signed evaluation report, which repeats
 * report_nonce (the verifier's) and names the release. */
#define EML_FIELDS_EVALUATE(X, S)                                            \
    X(S, LIST, grants, 1, EML_OWNERS_MAX, EML_GRANT_MAX) /* one per set */   \
    X(S, COPY, report_nonce, EML_NONCE_MAX)                                  \
    X(S, INT, release, 0, 1)                                                 \
    X(S, FIXED, release_to, 32)
#define EML_FIELDS_EVALUATE_DONE(X, S)                                       \
    X(S, BYTES, report, EML_EVAL_REPORT_MAX)

/* PREDICT (after MODEL_LOAD; docs/evaluate.md, "Private prediction"): the
 * loaded model run on a user's images.  grant is the user's (it must name
 * recipient among its recipients); the images are read through
 * FILE_OPEN/FILE_READ as file id EML_FILE_TEST_IMAGES, in the role
 * test-images, under the grant's key.  The model's grant's max_queries
 * (per recipient) is counted in the spend ledger (LEDGER_* ocalls) before
 * anything leaves; then the predictions leave as OUTPUT stream 0, a
 * container encrypted to recipient (role predictions: safetensors with
 * `probabilities` [n, classes] and `predictions` [n]).
 * PREDICT_DONE: the count of images and classes, the SHA-256 of the
 * container as sent, and the recipient's queries spent and allowed (0:
 * no limit) after this request. */
#define EML_FIELDS_PREDICT(X, S)                                             \
    X(S, BYTES, grant, EML_GRANT_MAX)                                        \
    X(S, FIXED, recipient, 32)
#define EML_FIELDS_PREDICT_DONE(X, S)                                        \
    X(S, U64, count, 0, UINT64_MAX)                                          \
    X(S, U64, classes, 1, EML_EVAL_CLASSES_MAX)                              \
    X(S, FIXED, file_sha256, 32)                                             \
    X(S, U64, queries_spent, 0, UINT64_MAX)                                  \
    X(S, U64, queries_max, 0, UINT32_MAX)

/* ==== the structs: one per message with fields, made from its rows ==== */

#define EML_MEMBER_(S, KIND, ...) EML_MEMBER_##KIND(__VA_ARGS__)
#define EML_MEMBER_U64(name, lo, hi) uint64_t name;
#define EML_MEMBER_INT(name, lo, hi) int name;
#define EML_MEMBER_LONG(name, lo, hi) long name;
#define EML_MEMBER_F64(name, lo, hi) double name;
#define EML_MEMBER_BYTES(name, max) eml_bytes name;
#define EML_MEMBER_FIXED(name, n) uint8_t name[n];
#define EML_MEMBER_COPY(name, max) uint8_t name[max]; size_t name##_len;
#define EML_MEMBER_LIST(name, lo, hi, max) eml_bytes name[hi]; size_t n_##name;
#define EML_MEMBER_EMBED(type, name) type name;
#define EML_MEMBER_IN_U64(path, lo, hi)
#define EML_MEMBER_IN_INT(path, lo, hi)
#define EML_MEMBER_IN_LONG(path, lo, hi)
#define EML_MEMBER_IN_F64(path, lo, hi)

#define EML_STRUCT_(NAME, type, version, kind, reply, T)                     \
    typedef struct T {                                                       \
        EML_FIELDS_##NAME(EML_MEMBER_, T)                                    \
    } T;
#define EML_NO_STRUCT_(...)
EML_MESSAGES(EML_STRUCT_, EML_NO_STRUCT_)

/* Room for any message (what a receiver decodes into before it knows). */
#define EML_UNION_(NAME, type, version, kind, reply, T) T m_##NAME;
typedef union eml_msg_any {
    EML_MESSAGES(EML_UNION_, EML_NO_STRUCT_)
} eml_msg_any;

/* ==== enums carried in fields ==== */

typedef enum eml_file_kind {
    EML_FILE_TRAIN_IMAGES = 0,
    EML_FILE_TRAIN_LABELS = 1,
    EML_FILE_TEST_IMAGES = 2,
    EML_FILE_TEST_LABELS = 3,
    EML_FILE_KINDS = 4
} eml_file_kind;

/* The file id of the model during MODEL_LOAD. */
#define EML_FILE_MODEL 0

typedef enum eml_probe_call {
    EML_PROBE_OPENAT = 1 << 0,
    EML_PROBE_SOCKET = 1 << 1,
    EML_PROBE_EXECVE = 1 << 2,
    EML_PROBE_PTRACE = 1 << 3,
    EML_PROBE_CONNECT = 1 << 4,
    EML_PROBE_FORK = 1 << 5,
    EML_PROBE_WRITE_FD = 1 << 6,    /* write to fd 1, not the channel */
    EML_PROBE_PRLIMIT = 1 << 7,     /* prlimit64 on pid 1 and on its own
                                       pid by number (only 0 passes) */
    EML_PROBE_TGKILL = 1 << 8,      /* tgkill(1, 1, 0) */
    EML_PROBE_STAT_PATH = 1 << 9,   /* newfstatat(AT_FDCWD, "/etc/passwd") */
    EML_PROBE_READ_FD = 1 << 10,    /* read from fd 0, not the channel */
} eml_probe_call;

#ifdef __cplusplus
}
#endif
#endif
