/*
 * mirror.h - the encrypted, crash-consistent mirror of a training state
 * (Plinius's persistent-memory mirror, with the tags checked, the key
 * sealed and the counters authenticated), and the disk checkpoint that
 * shares its format.
 *
 * Trusted code: no I/O.  The bytes go to a *store* the host implements
 * (a libpmem2 pool, or a checkpoint file: src/host/mirror_store.c), through
 * eml_store_ops.  The store is untrusted: everything read back from it is
 * parsed strictly and authenticated before use.
 *
 * A store holds a pool header and two slots (docs/mirror.md, byte by
 * byte):
 *
 *   pool header (128 bytes at offset 0; slots start at 4096)
 *     "EMLPOOL1" | u32 version 1 | u32 4096 | run_id[16] |
 *     u64 slot_capacity | 24 zero bytes | u64 commit | 56 zero bytes
 *   commit = seq << 1 | slot: the newest committed state (0: none yet);
 *   one aligned 8-byte store, so it is failure-atomic.
 *
 *   slot (at 4096 + slot * slot_capacity)
 *     header (128 bytes): "EMLSLOT1" | u32 version 1 | u32 slot | u64 seq
 *       | run_id[16] | cfg_digest[32] | data_digest[32] | u64 state_len |
 *       u32 chunk_size | u32 0 | nonce_salt[8]
 *     chunks: AES-256-GCM(state[i*chunk ..]) || tag[16], one per
 *       chunk_size bytes of state; nonce = nonce_salt || u32 i (LE);
 *       AAD = SHA-256(slot header) || u32 i || u8 final
 *     zero padding to slot_capacity
 *   key = HKDF-SHA256(ikm = sealing secret, salt = run_id,
 *                     info = "enclaveml mirror v1" || measurement)
 *
 * A save seals the state into the slot the commit does not name, makes it
 * durable, then durably stores the new commit (seq + 1): at every instant
 * one complete, authenticated state is committed.  A load opens the slot
 * the commit names and checks that its header repeats the slot, the seq,
 * the pool's run id and this run's cfg and data digests.
 *
 *     eml_mirror *m;
 *     eml_mirror_new(&opts, &ops, &m, &err);     // reads the pool header
 *     eml_mirror_load(m, segs, n, &found, &err); // resume, if asked
 *     ... eml_mirror_save(m, segs, n, &err) every N steps ...
 *     eml_mirror_free(m);
 */
#ifndef ENCLAVEML_MIRROR_H
#define ENCLAVEML_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_POOL_HEADER_BYTES 128
#define EML_POOL_DATA_OFFSET 4096
#define EML_POOL_COMMIT_OFFSET 64
#define EML_SLOT_HEADER_BYTES 128
#define EML_RUN_ID_BYTES 16
#define EML_MIRROR_CHUNK ((uint32_t)1 << 20)

/* The untrusted store.  Slots are addressed by index (0 or 1) and offset.
 * Every call returns EML_OK or an error with err set. */
typedef struct eml_store_ops {
    void *user;
    /* The store's first EML_POOL_HEADER_BYTES; all zero when the store does
     * not exist yet. */
    eml_status (*read_header)(void *user, uint8_t *hdr, eml_err *err);
    /* Lays out a fresh store: this header, two slots of `capacity` bytes
     * (a multiple of 4096), zero-filled. */
    eml_status (*create)(void *user, const uint8_t *hdr, uint64_t capacity,
                         eml_err *err);
    /* Optional (may be NULL, or return NULL): the slot's bytes mapped in
     * this process, for sealing straight into persistent memory. */
    uint8_t *(*slot_map)(void *user, int slot);
    /* Writes n bytes at off of a slot (not needed when slot_map works). */
    eml_status (*write)(void *user, int slot, uint64_t off, const uint8_t *p,
                        size_t n, eml_err *err);
    /* Makes the slot's first len bytes durable, THEN durably stores the
     * commit word; returns after both are persistent. */
    eml_status (*commit)(void *user, int slot, uint64_t len, uint64_t word,
                         eml_err *err);
    /* Reads exactly n bytes at off of a slot (an error if it ends). */
    eml_status (*read)(void *user, int slot, uint64_t off, uint8_t *p,
                       size_t n, eml_err *err);
    /* Optional (may be NULL, or return NULL): a buffer of *cap bytes that
     * write() moves cheaply (the enclave's shared bulk region); sealed
     * chunks are gathered there, several per write. */
    uint8_t *(*staging)(void *user, size_t *cap);
} eml_store_ops;

/* A piece of the state: the state is the concatenation of its segments. */
typedef struct eml_seg {
    void *p;
    size_t n;
} eml_seg;

typedef struct eml_mirror_opts {
    const uint8_t *seal_secret;  /* 32 bytes, borrowed */
    const uint8_t *measurement;  /* 32 bytes, borrowed */
    uint8_t cfg_digest[32];      /* the run's configuration (cfg + options) */
    uint8_t data_digest[32];     /* the run's datasets */
    long every;                  /* save every N steps (>= 1) */
} eml_mirror_opts;

typedef struct eml_mirror eml_mirror;

/* Reads and checks the store's header.  A fresh store gets a random run
 * id (created on the first save).  A store from another run configuration
 * is still accepted here; eml_mirror_load refuses its state. */
EML_MUST_CHECK eml_status eml_mirror_new(const eml_mirror_opts *o,
                                         const eml_store_ops *ops,
                                         eml_mirror **out, eml_err *err);
void eml_mirror_free(eml_mirror *m); /* wipes the key; NULL is a no-op */

long eml_mirror_every(const eml_mirror *m);
/* The sequence number of the newest committed state (0: none). */
uint64_t eml_mirror_seq(const eml_mirror *m);
const uint8_t *eml_mirror_run_id(const eml_mirror *m);

/* Seals the state (the segments, in order) into the free slot and commits
 * it.  The state's total size must not change during a run. */
EML_MUST_CHECK eml_status eml_mirror_save(eml_mirror *m, const eml_seg *segs,
                                          int nseg, eml_err *err);

/* Loads the newest committed state into the segments, whose sizes must
 * add up to the saved state's size.  *found = 0 (segments untouched) when
 * nothing is committed yet.  Anything that does not authenticate, or that
 * was written for another slot, seq, run, configuration or dataset, or
 * that is older than a state this process already saw for the run, is an
 * error (EML_ERR_AUTH or EML_ERR_FORMAT), never a load; the segments may
 * then hold partial plaintext, which this wipes. */
EML_MUST_CHECK eml_status eml_mirror_load(eml_mirror *m, const eml_seg *segs,
                                          int nseg, int *found,
                                          eml_err *err);

/* Timings of the last save or load, seconds: total and AES-GCM alone. */
void eml_mirror_last_times(const eml_mirror *m, double *total,
                           double *crypto);

/* ==== parsing (shared with the host and the fuzz target) ==== */

typedef struct eml_pool_info {
    int fresh;               /* 1: all-zero header (no store yet) */
    uint8_t run_id[EML_RUN_ID_BYTES];
    uint64_t capacity;       /* per slot */
    uint64_t commit;         /* seq << 1 | slot, 0 = nothing committed */
} eml_pool_info;

/* Strict: magic, version, data offset, capacity (a non-zero multiple of
 * 4096 below 2^48), zero reserved bytes.  An all-zero header is fresh. */
EML_MUST_CHECK eml_status eml_pool_header_parse(const uint8_t *hdr,
                                                size_t len,
                                                eml_pool_info *info,
                                                eml_err *err);
void eml_pool_header_build(uint8_t *hdr, const uint8_t run_id[16],
                           uint64_t capacity, uint64_t commit);

/* Bytes a slot needs for a state of state_len bytes (before padding). */
uint64_t eml_slot_bytes(uint64_t state_len);

#ifdef __cplusplus
}
#endif
#endif
