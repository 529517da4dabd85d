/*
 * container.h - the encrypted chunked container (".emlc") for datasets,
 * models and mirrors, as a streaming API over memory.
 *
 * Trusted-safe: no I/O.  The host streams a file through it chunk by chunk;
 * the enclave streams messages through it.  The format (docs/container.md)
 * is a header followed by AES-256-GCM chunks whose nonce and associated data
 * bind the header digest, the chunk index and a final-chunk flag, so that
 * reordering, dropping, duplicating, truncating, appending, or moving a
 * chunk to another file all fail authentication.
 *
 * The header also says what the file is (its role: training images, test
 * labels, a model...) and which data set it belongs to (a 16-byte dataset
 * id), both authenticated with the rest of the header, so that a host
 * cannot serve an owner's training file where its test file belongs.
 *
 * Two key modes:
 *   EML_CONTAINER_SYMMETRIC (1): the owner's 32-byte data key.
 *   EML_CONTAINER_RECIPIENT (2): a recipient's X25519 public key; a random
 *     content key is wrapped to it in the header (ECIES-style), and only the
 *     matching secret key opens the file.
 *
 * Writing (out holds chunk_size + EML_CONTAINER_TAG_BYTES):
 *
 *     uint8_t hdr[EML_CONTAINER_HEADER_MAX]; size_t hlen;
 *     eml_cw *w;
 *     eml_container_meta meta = {EML_CONTAINER_ROLE_TRAIN_IMAGES, {0}};
 *     st = eml_cw_new(EML_CONTAINER_SYMMETRIC, data_key, 0, &meta, &w, hdr,
 *                     &hlen, &err);          // 0: default 1 MiB chunks
 *     write(hdr, hlen);
 *     for each chunk: every one but the last exactly chunk_size bytes,
 *                     the last 1..chunk_size bytes (0 only if all is empty)
 *         st = eml_cw_seal(w, pt, n, is_last, out, &out_len, &err);
 *         write(out, out_len);
 *     eml_cw_free(w);
 *
 * Reading (pt holds chunk_size bytes):
 *
 *     read EML_CONTAINER_PREFIX bytes; eml_cr_header_len(buf, n, &hlen, &err);
 *     read the rest of the header;
 *     eml_container_keys keys = {data_key, x25519_sk};  // either may be NULL
 *     st = eml_cr_new(hdr, hlen, &keys, &r, &err);      // wrong key: error
 *     loop: read up to eml_cr_chunk_size(r) + 16 bytes; is_last = at EOF
 *         st = eml_cr_open(r, ct, n, is_last, pt, &pt_len, &err);
 *         use pt[0..pt_len) only if st == EML_OK
 *     st = eml_cr_finish(r, &err);   // fails unless the final chunk was seen
 *     eml_cr_free(r);
 *
 * Plaintext is released only after its chunk's tag verified; a failed
 * open wipes pt.  A reader that failed once refuses everything after
 * (sticky error).  Readers and writers live in locked memory; the
 * intermediate secrets (content key, wrap key, file key, shared secret) are
 * wiped as soon as the file key's AES key schedule is set up, and that
 * schedule (inside OpenSSL's cipher context) is cleared by _free.  The
 * plaintext of every chunk belongs to the caller, who wipes it.
 */
#ifndef ENCLAVEML_CONTAINER_H
#define ENCLAVEML_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum eml_container_mode {
    EML_CONTAINER_SYMMETRIC = 1, /* key = the 32-byte data key */
    EML_CONTAINER_RECIPIENT = 2, /* key = recipient X25519 public key */
} eml_container_mode;

/* What a file is.  Values are stored in the header: only ever append. */
typedef enum eml_container_role {
    EML_CONTAINER_ROLE_NONE = 0, /* unspecified */
    EML_CONTAINER_ROLE_TRAIN_IMAGES = 1,
    EML_CONTAINER_ROLE_TRAIN_LABELS = 2,
    EML_CONTAINER_ROLE_TEST_IMAGES = 3,
    EML_CONTAINER_ROLE_TEST_LABELS = 4,
    EML_CONTAINER_ROLE_MODEL = 5,
    EML_CONTAINER_ROLE_PREDICTIONS = 6, /* predict's output (docs/evaluate.md) */
} eml_container_role;
#define EML_CONTAINER_ROLES 7 /* one past the last role */

#define EML_CONTAINER_VERSION 2
#define EML_CONTAINER_KEY_BYTES 32
#define EML_CONTAINER_KEY_ID_BYTES 16
#define EML_CONTAINER_DATASET_ID_BYTES 16
#define EML_CONTAINER_TAG_BYTES 16
#define EML_CONTAINER_PREFIX 16       /* bytes that tell the header length */
#define EML_CONTAINER_HEADER_SYM 84   /* header bytes, mode 1 */
#define EML_CONTAINER_HEADER_RCPT 164 /* header bytes, mode 2 */
#define EML_CONTAINER_HEADER_MAX 164
#define EML_CONTAINER_CHUNK_MIN ((uint32_t)4 << 10)
#define EML_CONTAINER_CHUNK_MAX ((uint32_t)16 << 20)
#define EML_CONTAINER_CHUNK_DEFAULT ((uint32_t)1 << 20)

/* key_id = first 16 bytes of SHA-256("enclaveml key id v1" || key), where
 * key is the data key (mode 1) or the recipient's X25519 public key (mode
 * 2).  Names a key without revealing it. */
EML_MUST_CHECK eml_status eml_container_key_id(
    uint8_t id[EML_CONTAINER_KEY_ID_BYTES],
    const uint8_t key[EML_CONTAINER_KEY_BYTES]);

/* dataset id = first 16 bytes of SHA-256("enclaveml dataset id v1" ||
 * name), name len bytes (no NUL).  All zero means "unnamed". */
EML_MUST_CHECK eml_status eml_container_dataset_id(
    uint8_t id[EML_CONTAINER_DATASET_ID_BYTES], const char *name, size_t len);

/* "none", "train-images", "train-labels", "test-images", "test-labels",
 * "model", "predictions"; NULL for a value that is not a role. */
const char *eml_container_role_name(eml_container_role role);
/* The role named s (one of the names above); EML_ERR_INVALID otherwise. */
EML_MUST_CHECK eml_status eml_container_role_parse(const char *s,
                                                   eml_container_role *out);

/* What a writer puts in the header besides keys and sizes. */
typedef struct eml_container_meta {
    eml_container_role role;
    uint8_t dataset_id[EML_CONTAINER_DATASET_ID_BYTES];
} eml_container_meta;

/* What the first bytes of a container say (no key needed, nothing
 * authenticated yet: role and dataset_id are authenticated only once the
 * first chunk (mode 1) or the wrapped key (mode 2) opened). */
typedef struct eml_container_info {
    eml_container_mode mode;
    uint32_t chunk_size;
    size_t header_len;
    uint8_t key_id[EML_CONTAINER_KEY_ID_BYTES];
    eml_container_role role;
    uint8_t dataset_id[EML_CONTAINER_DATASET_ID_BYTES];
} eml_container_info;

/* ==== writer ==== */

typedef struct eml_cw eml_cw;

/* Starts a container.  key: the data key (mode 1) or the recipient's X25519
 * public key (mode 2), 32 bytes, borrowed.  chunk_size: a power of two in
 * EML_CONTAINER_CHUNK_MIN..MAX, or 0 for EML_CONTAINER_CHUNK_DEFAULT.  The
 * header (header_len bytes, at most EML_CONTAINER_HEADER_MAX) goes to
 * header; write it before the chunks.  Each call draws a fresh salt (and in
 * mode 2 a fresh ephemeral key and content key).  meta: the file's role
 * and dataset id, borrowed; NULL means role none and an all-zero id; an
 * unknown role is EML_ERR_INVALID. */
EML_MUST_CHECK eml_status eml_cw_new(eml_container_mode mode,
                                     const uint8_t *key, uint32_t chunk_size,
                                     const eml_container_meta *meta,
                                     eml_cw **out,
                                     uint8_t header[EML_CONTAINER_HEADER_MAX],
                                     size_t *header_len, eml_err *err);

/* Seals the next chunk: len plaintext bytes into out (len + 16 bytes,
 * *out_len set).  A non-final chunk must be exactly chunk_size bytes; the
 * final one 1..chunk_size bytes, or 0 bytes only as the first and only
 * chunk.  Nothing is accepted after the final chunk.  out may equal pt
 * (then pt must have room for the tag) but must not otherwise overlap. */
EML_MUST_CHECK eml_status eml_cw_seal(eml_cw *w, const uint8_t *pt,
                                      size_t len, int final, uint8_t *out,
                                      size_t *out_len, eml_err *err);

uint32_t eml_cw_chunk_size(const eml_cw *w);
/* Wipes the key material and frees.  NULL is a no-op.  A writer freed
 * before its final chunk simply made an incomplete (unreadable) file. */
void eml_cw_free(eml_cw *w);

/* ==== reader ==== */

typedef struct eml_cr eml_cr;

/* Keys the reader may use; it picks by the header's mode.  Both borrowed,
 * 32 bytes each, either may be NULL. */
typedef struct eml_container_keys {
    const uint8_t *data_key;  /* for EML_CONTAINER_SYMMETRIC */
    const uint8_t *x25519_sk; /* for EML_CONTAINER_RECIPIENT */
} eml_container_keys;

/* From the first len >= EML_CONTAINER_PREFIX bytes: checks magic, version,
 * mode, chunk size and header length, and gives the full header length.
 * EML_ERR_TRUNCATED if len is too small, EML_ERR_FORMAT (not a container,
 * bad mode or sizes), EML_ERR_UNSUPPORTED (version 1, which is no longer
 * read, or a newer version). */
EML_MUST_CHECK eml_status eml_cr_header_len(const uint8_t *buf, size_t len,
                                            size_t *header_len, eml_err *err);
/* The same checks, and the header's fields (needs the whole header); an
 * unknown role or non-zero reserved bytes are EML_ERR_FORMAT. */
EML_MUST_CHECK eml_status eml_container_peek(const uint8_t *buf, size_t len,
                                             eml_container_info *info,
                                             eml_err *err);

/* Parses and checks a complete header (len must be exactly its length) and
 * derives the file key.  A key whose id differs from the header's is
 * EML_ERR_AUTH "key does not match: ..."; a missing key for the header's
 * mode is EML_ERR_INVALID; in mode 2 a wrapped key that does not
 * authenticate (tampered header) is EML_ERR_AUTH. */
EML_MUST_CHECK eml_status eml_cr_new(const uint8_t *header, size_t len,
                                     const eml_container_keys *keys,
                                     eml_cr **out, eml_err *err);

/* Opens the next chunk (ciphertext || tag, len bytes) into pt (room for
 * len - 16 bytes, which is at most chunk_size).  is_last: the caller has
 * no more bytes after this one (end of file or of the stream); the chunk
 * must then be the final chunk.
 * A chunk that is not last must be exactly chunk_size + 16 bytes.  Any
 * tampering is EML_ERR_AUTH with pt wiped and *pt_len 0; after a failure
 * the reader refuses everything. */
EML_MUST_CHECK eml_status eml_cr_open(eml_cr *r, const uint8_t *ct,
                                      size_t len, int is_last, uint8_t *pt,
                                      size_t *pt_len, eml_err *err);

/* EML_OK only if the final chunk has been opened and nothing failed;
 * EML_ERR_TRUNCATED if the stream stopped before its final chunk. */
EML_MUST_CHECK eml_status eml_cr_finish(const eml_cr *r, eml_err *err);

uint32_t eml_cr_chunk_size(const eml_cr *r);
eml_container_mode eml_cr_mode(const eml_cr *r);
/* Plaintext bytes released so far. */
uint64_t eml_cr_plaintext_bytes(const eml_cr *r);
void eml_cr_free(eml_cr *r); /* wipes the file key; NULL is a no-op */

/* ==== whole buffers ==== */

/* Size of the container for pt_len plaintext bytes, or EML_ERR_RANGE on
 * overflow.  chunk_size 0 means the default. */
EML_MUST_CHECK eml_status eml_container_sealed_size(eml_container_mode mode,
                                                    uint32_t chunk_size,
                                                    uint64_t pt_len,
                                                    uint64_t *out);

/* Seals pt into a new malloc'd container (*out, caller frees); meta as
 * for eml_cw_new. */
EML_MUST_CHECK eml_status eml_container_seal_buffer(
    eml_container_mode mode, const uint8_t *key, uint32_t chunk_size,
    const eml_container_meta *meta, const uint8_t *pt, size_t len,
    uint8_t **out, size_t *out_len, eml_err *err);

/* Opens a whole container into a new malloc'd buffer (*out: never NULL on
 * success, even for 0 bytes).  The plaintext is the caller's: wipe it
 * (eml_wipe) before free.  On failure nothing is allocated and every
 * partial plaintext has been wiped. */
EML_MUST_CHECK eml_status eml_container_open_buffer(
    const uint8_t *buf, size_t len, const eml_container_keys *keys,
    uint8_t **out, size_t *out_len, eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
