/*
 * edl.h - the enclave boundary: every message between the host program
 * (`enclaveml`, untrusted) and the enclave program (`enclaveml-enclave`,
 * trusted), with its fields, in one place, like an SGX EDL file.
 *
 * Frames travel over one channel fd.  A frame is a 16-byte header
 *
 *     u32 magic "EMLM" | u16 version (1) | u16 type | u32 length | u32 seq
 *
 * (little-endian) and `length` payload bytes (at most EML_MSG_MAX).  A
 * payload is the message's fields in the order listed below, each either a
 * u64 (8 bytes little-endian), an f64 (IEEE-754 bits as a u64) or a byte
 * string (u32 length + bytes).  No pointers cross the boundary, only bytes.
 *
 * The enclave treats every received field as hostile: the decoder checks
 * every length against the frame and against the field's maximum, every
 * count and enum against its range, and that a frame holds exactly its
 * fields (nothing left over).
 *
 *     eml_msg m;  eml_msg_init(&m, EML_MSG_ATTEST);
 *     eml_msg_put_bytes(&m, nonce, nonce_len);
 *     eml_msg_send(fd, &m, seq);  eml_msg_free(&m);
 *
 *     eml_msg_reader r;  (after eml_msg_recv gave type and payload)
 *     eml_msg_reader_init(&r, payload, len);
 *     eml_msg_get_bytes(&r, EML_NONCE_MAX, &p, &n);  eml_msg_get_end(&r);
 */
#ifndef ENCLAVEML_EDL_H
#define ENCLAVEML_EDL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_MSG_MAGIC 0x4d4c4d45u /* "EMLM" little-endian */
#define EML_MSG_VERSION 1
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
/* The bulk region: shared memory set up at launch (untrusted, like the
 * channel).  The enclave only ever WRITES there (sealed bytes going out);
 * it never reads from it, so the host changing it underneath proves
 * nothing. */
#define EML_BULK_BYTES ((size_t)16 << 20)

/* Message types.  Values are only ever appended.
 *   ecall  = request host -> enclave, answered by one reply (or ERROR);
 *   ocall  = request enclave -> host during an ecall, answered by the host;
 *   notify = one-way, no answer. */
typedef enum eml_msg_type {
    EML_MSG_ERROR = 1,
    /* reply (either direction): i64 status (as u64) | bytes message */

    EML_MSG_INIT = 2,
    /* ecall: bytes sealed_identity (0..EML_SEALED_MAX; empty on first start)
     * reply INIT_OK */
    EML_MSG_INIT_OK = 3,
    /* reply: bytes measurement[32] | bytes x25519_pk[32] | bytes
     *        ed25519_pk[32] | bytes policy | bytes sealed_identity (new blob
     *        to store, empty if unchanged) */

    EML_MSG_ATTEST = 4,
    /* ecall: bytes nonce (0..EML_NONCE_MAX)   reply REPORT */
    EML_MSG_REPORT = 5,
    /* reply: bytes report (signed JSON) */

    EML_MSG_TRAIN = 6,
    /* ecall: bytes cfg_text | u64 epochs (0 = cfg) | u64 batch (0 = cfg) |
     *        f64 lr (0 = cfg) | u64 seed | u64 threads | u64 kernels |
     *        bytes recipient_pk[32] | u64 dp (0/1) | f64 clip | f64 noise
     *        (< 0: derive from target_epsilon) | f64 delta | f64
     *        target_epsilon (0 = none) | u64 fixed_batches (0/1) |
     *        u64 insecure_seed (0/1) | u64 n_owners (1..EML_OWNERS_MAX) |
     *        n_owners x bytes grant (..EML_GRANT_MAX) | u64 mirror (0 =
     *        none, 1 = save the training state through MIRROR_* ocalls) |
     *        u64 save_every (1..1e9) | u64 resume (0/1) | bytes
     *        report_nonce (0..EML_NONCE_MAX: the model owner's, repeated in
     *        the signed report)
     * During the ecall the enclave sends FILE_OPEN/FILE_READ ocalls for
     * owner o's files (file id o*4 + kind, kind = eml_file_kind), PROGRESS
     * notifications, OUTPUT ocalls, MIRROR_* ocalls when mirroring, and
     * LEDGER_* ocalls when a grant carries a privacy budget.
     * reply TRAIN_DONE */
    EML_MSG_TRAIN_DONE = 7,
    /* reply: bytes training report (signed JSON) */

    EML_MSG_FILE_OPEN = 8,
    /* ocall: u64 file_id   reply FILE_INFO */
    EML_MSG_FILE_INFO = 9,
    /* reply: u64 size (bytes of ciphertext) */
    EML_MSG_FILE_READ = 10,
    /* ocall: u64 file_id | u64 offset | u64 length (..EML_CHUNK_MAX+64)
     * reply FILE_DATA */
    EML_MSG_FILE_DATA = 11,
    /* reply: bytes data (exactly `length` bytes unless the file ends) */

    EML_MSG_OUTPUT = 12,
    /* ocall: u64 stream (0 = model) | bytes data (..EML_CHUNK_MAX+64) |
     *        u64 last (0/1)   reply OUTPUT_OK */
    EML_MSG_OUTPUT_OK = 13,
    /* reply: (no fields) */

    EML_MSG_PROGRESS = 14,
    /* notify: u64 epoch | u64 epochs | u64 batch | u64 batches |
     *         f64 loss | f64 images_per_second | f64 seconds | f64 eta |
     *         u64 epoch_done | f64 test_accuracy | f64 train_accuracy |
     *         u64 resume_event (0/1) | u64 resumed_step + 1 (0: a fresh
     *         start) */

    EML_MSG_PING = 15,
    /* ecall: bytes payload (..EML_CHUNK_MAX)   reply PONG with the same */
    EML_MSG_PONG = 16,

    EML_MSG_PROBE = 17,
    /* ecall: (no fields)   reply PROBE_OK: asks the enclave to try calls its
     * sandbox forbids, to show they are refused */
    EML_MSG_PROBE_OK = 18,
    /* reply: u64 refused (bit mask of eml_probe_call that were refused) |
     *        u64 attempted (bit mask) */

    EML_MSG_SHUTDOWN = 19,
    /* ecall: (no fields); the enclave exits after replying SHUTDOWN_OK */
    EML_MSG_SHUTDOWN_OK = 20,

    /* The training-state mirror (mirror.h): the enclave seals, the host
     * stores the sealed bytes in its pool or checkpoint file. */
    EML_MSG_MIRROR_HEADER = 21,
    /* ocall: (no fields)   reply MIRROR_DATA with the store's first
     * EML_POOL_HEADER_BYTES (zeros if it does not exist) */
    EML_MSG_MIRROR_DATA = 22,
    /* reply: bytes data (exactly what was asked for) */
    EML_MSG_MIRROR_CREATE = 23,
    /* ocall: bytes header (EML_POOL_HEADER_BYTES) | u64 slot capacity
     * reply MIRROR_OK */
    EML_MSG_MIRROR_WRITE = 24,
    /* ocall: u64 slot (0/1) | u64 offset | bytes data (..EML_CHUNK_MAX+64)
     * reply MIRROR_OK */
    EML_MSG_MIRROR_COMMIT = 25,
    /* ocall: u64 slot | u64 length | u64 commit word: persist the slot's
     * first `length` bytes, then the commit word.  reply MIRROR_OK */
    EML_MSG_MIRROR_READ = 26,
    /* ocall: u64 slot | u64 offset | u64 length (..EML_CHUNK_MAX+64)
     * reply MIRROR_DATA */
    EML_MSG_MIRROR_OK = 27,
    /* reply: (no fields) */
    EML_MSG_MIRROR_WRITE_BULK = 28,
    /* ocall: u64 slot | u64 offset | u64 length (..EML_BULK_BYTES): like
     * MIRROR_WRITE, with the bytes in the first `length` bytes of the bulk
     * region.  reply MIRROR_OK */

    EML_MSG_MEASURE = 29,
    /* notify, the first frame of every `sim` enclave process (and the only
     * one of `enclaveml-enclave --measure`): measurement[32] | bytes policy
     * (..EML_POLICY_MAX-1) | bytes files (..EML_MEASURE_LIST_MAX: one line
     * "<sha256 hex>  <path>\n" per file mapped executable, sorted by
     * digest).  What the host learns before INIT; the signed report is
     * what a verifier trusts. */

    /* The spend ledger (ledger.h): sealed by the enclave, kept by the
     * host, checked against the platform's monotonic counter. */
    EML_MSG_LEDGER_READ = 30,
    /* ocall: (no fields)   reply LEDGER_DATA */
    EML_MSG_LEDGER_DATA = 31,
    /* reply: bytes sealed ledger (..EML_LEDGER_MAX_BYTES; empty if the host
     *        has none) */
    EML_MSG_LEDGER_WRITE = 32,
    /* ocall: bytes sealed ledger (..EML_LEDGER_MAX_BYTES): store it durably
     * (replacing the old one), then reply LEDGER_OK */
    EML_MSG_LEDGER_OK = 33,
    /* reply: (no fields) */

    EML_MSG_TYPE_END = 34
} eml_msg_type;

typedef enum eml_file_kind {
    EML_FILE_TRAIN_IMAGES = 0,
    EML_FILE_TRAIN_LABELS = 1,
    EML_FILE_TEST_IMAGES = 2,
    EML_FILE_TEST_LABELS = 3,
    EML_FILE_KINDS = 4
} eml_file_kind;

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

/* Name of a type ("ATTEST"), or "?" */
const char *eml_msg_type_name(uint32_t type);

/* ==== building a payload ==== */
typedef struct eml_msg {
    uint16_t type;
    uint8_t *buf; /* header + payload */
    size_t len, cap;
    int failed;   /* sticky: an append ran out of memory or over the max */
} eml_msg;

void eml_msg_init(eml_msg *m, eml_msg_type type);
void eml_msg_put_u64(eml_msg *m, uint64_t v);
void eml_msg_put_f64(eml_msg *m, double v);
void eml_msg_put_bytes(eml_msg *m, const void *p, size_t n);
void eml_msg_free(eml_msg *m); /* wipes the buffer */

/* ==== reading a payload ==== */
typedef struct eml_msg_reader {
    const uint8_t *p;
    size_t len, pos;
    int failed;
} eml_msg_reader;

void eml_msg_reader_init(eml_msg_reader *r, const uint8_t *p, size_t len);
EML_MUST_CHECK eml_status eml_msg_get_u64(eml_msg_reader *r, uint64_t *v);
/* A u64 that must lie in [lo, hi]. */
EML_MUST_CHECK eml_status eml_msg_get_range(eml_msg_reader *r, uint64_t lo,
                                            uint64_t hi, uint64_t *v);
/* A finite f64. */
EML_MUST_CHECK eml_status eml_msg_get_f64(eml_msg_reader *r, double *v);
/* Byte string of at most max bytes; *p points into the frame. */
EML_MUST_CHECK eml_status eml_msg_get_bytes(eml_msg_reader *r, size_t max,
                                            const uint8_t **p, size_t *n);
/* A byte string of exactly n bytes copied to out. */
EML_MUST_CHECK eml_status eml_msg_get_fixed(eml_msg_reader *r, void *out,
                                            size_t n);
/* Every byte consumed: a frame with trailing bytes is malformed. */
EML_MUST_CHECK eml_status eml_msg_get_end(eml_msg_reader *r);

/* ==== framing over an fd ==== */

/* A tap that sees every frame's bytes (ENCLAVEML_TRACE on the host). */
typedef void (*eml_msg_tap)(void *user, int outgoing, const uint8_t *p,
                            size_t n);

typedef struct eml_channel {
    int fd;
    uint32_t seq_out;
    uint8_t *rbuf; /* last received frame's payload (owned, reused) */
    size_t rcap;
    eml_msg_tap tap;
    void *tap_user;
    uint8_t *ibuf; /* read-ahead: a frame usually arrives in one read() */
    size_t ipos, ilen;
} eml_channel;

void eml_channel_init(eml_channel *c, int fd);
void eml_channel_free(eml_channel *c); /* wipes and frees rbuf */
EML_MUST_CHECK eml_status eml_msg_send(eml_channel *c, eml_msg *m);
/* Receives one frame; *payload is valid until the next receive.  Checks
 * magic, version, type range and length before reading the payload. */
EML_MUST_CHECK eml_status eml_msg_recv(eml_channel *c, uint16_t *type,
                                       const uint8_t **payload, size_t *len);

/* Parses a frame header (for the fuzz target and tests). */
EML_MUST_CHECK eml_status eml_msg_parse_header(const uint8_t hdr[16],
                                               uint16_t *type, uint32_t *len);

#ifdef __cplusplus
}
#endif
#endif
