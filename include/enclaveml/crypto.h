/*
 * crypto.h - the primitives enclaveml builds on: wiping, constant-time
 * comparison, randomness, locked memory, SHA-256, HMAC-SHA256,
 * HKDF-SHA256, AES-256-GCM, X25519 and Ed25519.
 *
 * Trusted-safe: no I/O, never prints, never exits.  Everything goes through
 * OpenSSL 3 libcrypto; this header is the only place the rest of the code
 * base meets it, so a port to another library touches one file.  Functions
 * wipe every secret they derived on every path; secrets the caller passes
 * stay the caller's to wipe.  Authentication failures of any kind return
 * EML_ERR_AUTH and nothing more; an open that fails has wiped its output.
 *
 *     uint8_t key[EML_KEY_BYTES], nonce[EML_GCM_NONCE_BYTES];
 *     if (eml_random_secret(key, sizeof(key)) != EML_OK) ...
 *     ... nonce must never repeat under one key ...
 *     uint8_t *ct = malloc(len + EML_GCM_TAG_BYTES);     // ciphertext || tag
 *     st = eml_aes256gcm_seal(ct, pt, len, aad, aad_len, nonce, key);
 *     st = eml_aes256gcm_open(pt, ct, len + EML_GCM_TAG_BYTES, aad, aad_len,
 *                             nonce, key);
 *     if (st == EML_ERR_AUTH) ... pt is all zero: tampered or wrong key ...
 *     eml_wipe(key, sizeof(key));
 *
 *     uint8_t *k = eml_secure_alloc(64);                  // locked, zeroed
 *     ...
 *     eml_secure_free(k, 64);                             // wiped, unlocked
 *
 * Library failures inside OpenSSL (out of memory, a missing provider) come
 * back as EML_ERR_NOMEM, EML_ERR_UNSUPPORTED or EML_ERR_BACKEND; OpenSSL's
 * error queue is cleared so nothing about a failure lingers in it.
 */
#ifndef ENCLAVEML_CRYPTO_H
#define ENCLAVEML_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_KEY_BYTES 32          /* AES-256 keys, HKDF outputs, data keys */
#define EML_SHA256_BYTES 32
#define EML_GCM_NONCE_BYTES 12
#define EML_GCM_TAG_BYTES 16
#define EML_X25519_BYTES 32       /* secret, public keys; shared secrets */
#define EML_ED25519_SK_BYTES 32   /* the RFC 8032 seed */
#define EML_ED25519_PK_BYTES 32
#define EML_ED25519_SIG_BYTES 64
#define EML_HKDF_MAX_OUT (255 * EML_SHA256_BYTES)

/* ==== wiping, comparison, randomness ==== */

/* Overwrites n bytes with zeros in a way the compiler may not elide.
 * NULL with n == 0 is a no-op. */
void eml_wipe(void *p, size_t n);

/* 1 if the n bytes at a and b are equal, else 0, in time that depends only
 * on n (for tags, keys, MACs). */
int eml_ct_equal(const void *a, const void *b, size_t n);

/* 1 if all n bytes are zero, else 0, in time that depends only on n. */
int eml_is_zero(const void *p, size_t n);

/* Public randomness (salts, nonces) from OpenSSL's DRBG. */
EML_MUST_CHECK eml_status eml_random(void *out, size_t n);
/* Randomness that becomes a secret (keys), from OpenSSL's private DRBG. */
EML_MUST_CHECK eml_status eml_random_secret(void *out, size_t n);

/* ==== locked memory ==== */

/* n bytes (n >= 1) of zeroed memory for secrets: its own anonymous mapping
 * between two inaccessible guard pages, locked against swapping (mlock) and
 * excluded from core dumps where the OS allows.  If locking fails the memory
 * is still returned; eml_secure_lock_failures() counts such allocations.
 * Returns NULL when out of memory.  The pointer is 64-byte aligned. */
void *eml_secure_alloc(size_t n);
/* Wipes, unlocks and unmaps memory from eml_secure_alloc.  n is the size
 * asked for; it is checked against what was recorded, and a mismatch
 * leaves the memory alone rather than unmap the wrong range.  NULL is a
 * no-op. */
void eml_secure_free(void *p, size_t n);
/* How many eml_secure_alloc calls so far could not lock their memory
 * (typically RLIMIT_MEMLOCK); 0 means every secret was locked. */
size_t eml_secure_lock_failures(void);

/* ==== SHA-256, HMAC-SHA256, HKDF-SHA256 ==== */

EML_MUST_CHECK eml_status eml_sha256(uint8_t out[EML_SHA256_BYTES],
                                     const void *data, size_t len);

/* Incremental SHA-256 (opaque).  _free of NULL is a no-op; a finished
 * context must be freed, not reused. */
typedef struct eml_sha256_ctx eml_sha256_ctx;
EML_MUST_CHECK eml_status eml_sha256_new(eml_sha256_ctx **out);
EML_MUST_CHECK eml_status eml_sha256_update(eml_sha256_ctx *c,
                                            const void *data, size_t len);
EML_MUST_CHECK eml_status eml_sha256_final(eml_sha256_ctx *c,
                                           uint8_t out[EML_SHA256_BYTES]);
void eml_sha256_free(eml_sha256_ctx *c);

EML_MUST_CHECK eml_status eml_hmac_sha256(uint8_t out[EML_SHA256_BYTES],
                                          const uint8_t *key, size_t key_len,
                                          const void *data, size_t len);

/* RFC 5869 with SHA-256.  eml_hkdf_sha256 is extract then expand;
 * out_len is 1..EML_HKDF_MAX_OUT; salt and info may be NULL when their
 * length is 0 (an absent salt is HashLen zero bytes, as in the RFC). */
EML_MUST_CHECK eml_status eml_hkdf_sha256(uint8_t *out, size_t out_len,
                                          const uint8_t *ikm, size_t ikm_len,
                                          const uint8_t *salt,
                                          size_t salt_len,
                                          const uint8_t *info,
                                          size_t info_len);
EML_MUST_CHECK eml_status eml_hkdf_sha256_extract(
    uint8_t prk[EML_SHA256_BYTES], const uint8_t *ikm, size_t ikm_len,
    const uint8_t *salt, size_t salt_len);
EML_MUST_CHECK eml_status eml_hkdf_sha256_expand(
    uint8_t *out, size_t out_len, const uint8_t prk[EML_SHA256_BYTES],
    const uint8_t *info, size_t info_len);

/* ==== AES-256-GCM ==== */

/* out receives len bytes of ciphertext followed by the 16-byte tag.  out may
 * be pt (same address) but must not otherwise overlap it.  aad may be NULL
 * when aad_len is 0.  The (key, nonce) pair must never be used twice. */
EML_MUST_CHECK eml_status eml_aes256gcm_seal(
    uint8_t *out, const uint8_t *pt, size_t len, const uint8_t *aad,
    size_t aad_len, const uint8_t nonce[EML_GCM_NONCE_BYTES],
    const uint8_t key[EML_KEY_BYTES]);

/* ct is ciphertext || tag, ct_len >= 16; out receives ct_len - 16 bytes.
 * The plaintext is only valid if EML_OK is returned: on any failure
 * (EML_ERR_AUTH for a wrong tag, AAD, nonce, key or length) out has been
 * wiped.  out may be ct (same address). */
EML_MUST_CHECK eml_status eml_aes256gcm_open(
    uint8_t *out, const uint8_t *ct, size_t ct_len, const uint8_t *aad,
    size_t aad_len, const uint8_t nonce[EML_GCM_NONCE_BYTES],
    const uint8_t key[EML_KEY_BYTES]);

/* A GCM context bound to one key, for many messages under it (the
 * container's chunks): the key schedule is computed once.  Opaque; holds
 * the expanded key, wiped by _free.  Same contracts as the one-shot calls.
 * One thread at a time per context. */
typedef struct eml_gcm eml_gcm;
EML_MUST_CHECK eml_status eml_gcm_new(const uint8_t key[EML_KEY_BYTES],
                                      eml_gcm **out);
EML_MUST_CHECK eml_status eml_gcm_seal(
    eml_gcm *g, uint8_t *out, const uint8_t *pt, size_t len,
    const uint8_t *aad, size_t aad_len,
    const uint8_t nonce[EML_GCM_NONCE_BYTES]);
EML_MUST_CHECK eml_status eml_gcm_open(
    eml_gcm *g, uint8_t *out, const uint8_t *ct, size_t ct_len,
    const uint8_t *aad, size_t aad_len,
    const uint8_t nonce[EML_GCM_NONCE_BYTES]);
void eml_gcm_free(eml_gcm *g);

/* ==== X25519 (RFC 7748) ==== */

/* A fresh key pair; sk is 32 random bytes (clamped when used). */
EML_MUST_CHECK eml_status eml_x25519_keygen(uint8_t sk[EML_X25519_BYTES],
                                            uint8_t pk[EML_X25519_BYTES]);
EML_MUST_CHECK eml_status eml_x25519_public(uint8_t pk[EML_X25519_BYTES],
                                            const uint8_t sk[EML_X25519_BYTES]);
/* shared = X25519(sk, peer_pk).  A peer key of small order (all-zero
 * result) is refused with EML_ERR_AUTH and shared is wiped.  Hash the
 * result (HKDF) before use; never use it as a key directly. */
EML_MUST_CHECK eml_status eml_x25519_shared(
    uint8_t shared[EML_X25519_BYTES], const uint8_t sk[EML_X25519_BYTES],
    const uint8_t peer_pk[EML_X25519_BYTES]);

/* ==== Ed25519 (RFC 8032, pure) ==== */

EML_MUST_CHECK eml_status eml_ed25519_keygen(uint8_t sk[EML_ED25519_SK_BYTES],
                                             uint8_t pk[EML_ED25519_PK_BYTES]);
EML_MUST_CHECK eml_status eml_ed25519_public(
    uint8_t pk[EML_ED25519_PK_BYTES], const uint8_t sk[EML_ED25519_SK_BYTES]);
EML_MUST_CHECK eml_status eml_ed25519_sign(
    uint8_t sig[EML_ED25519_SIG_BYTES], const void *msg, size_t len,
    const uint8_t sk[EML_ED25519_SK_BYTES]);
/* EML_OK for a valid signature, EML_ERR_AUTH for anything else (including
 * a malformed public key or signature). */
EML_MUST_CHECK eml_status eml_ed25519_verify(
    const uint8_t sig[EML_ED25519_SIG_BYTES], const void *msg, size_t len,
    const uint8_t pk[EML_ED25519_PK_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
