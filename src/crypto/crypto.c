/*
 * crypto.c - enclaveml's cryptographic primitives over OpenSSL 3 libcrypto
 * (see include/enclaveml/crypto.h).
 *
 * Trusted code: no file or network I/O, never prints, never exits.  Every
 * function wipes the secrets it derived (shared secrets, PRKs) before it
 * returns, on every path, and clears OpenSSL's error queue when a call
 * fails so that no detail of a failure outlives it.  OpenSSL's own copies
 * of keys (EVP_PKEY private keys, GCM key schedules) are cleared by OpenSSL
 * when they are freed, which every path here does.
 *
 * Locked memory is an anonymous mapping per allocation with guard pages on
 * both sides; it never comes from malloc, so a heap bug elsewhere cannot
 * hand a key to another allocation.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MADV_DONTDUMP with _POSIX_C_SOURCE */

#include "enclaveml/crypto.h"

#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

/* EVP takes int lengths; longer buffers go through in pieces this big. */
#define EVP_PIECE ((size_t)1 << 30)

/* OpenSSL 3.0 keeps at most 1024 bytes of HKDF info. */
#define HKDF_INFO_MAX 1024

/* Any failure inside OpenSSL: forget its details, report st. */
static eml_status ossl_fail(eml_status st)
{
    ERR_clear_error();
    return st;
}

/* A readable address for empty inputs (EVP wants non-NULL pointers). */
static const uint8_t empty_byte[1] = {0};

/* ==== wiping, comparison, randomness ==== */

void eml_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0) OPENSSL_cleanse(p, n);
}

int eml_ct_equal(const void *a, const void *b, size_t n)
{
    if (n == 0) return 1;
    return CRYPTO_memcmp(a, b, n) == 0;
}

int eml_is_zero(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    uint8_t acc = 0;
    size_t i;
    for (i = 0; i < n; i++) acc |= b[i];
    return acc == 0;
}

static eml_status random_fill(void *out, size_t n, int secret)
{
    uint8_t *p = out;
    while (n > 0) {
        int piece = n > (size_t)INT_MAX ? INT_MAX : (int)n;
        int ok = secret ? RAND_priv_bytes(p, piece) : RAND_bytes(p, piece);
        if (ok != 1) {
            eml_wipe(out, (size_t)(p - (uint8_t *)out));
            return ossl_fail(EML_ERR_BACKEND);
        }
        p += piece;
        n -= (size_t)piece;
    }
    return EML_OK;
}

eml_status eml_random(void *out, size_t n)
{
    if (out == NULL && n > 0) return EML_ERR_INVALID;
    return random_fill(out, n, 0);
}

eml_status eml_random_secret(void *out, size_t n)
{
    if (out == NULL && n > 0) return EML_ERR_INVALID;
    return random_fill(out, n, 1);
}

/* ==== locked memory ==== */

/* Each allocation: [guard page][header | user bytes ... ][guard page].
 * The header records the sizes so free can check and unmap exactly. */
#define SECURE_HDR 64
#define SECURE_MAGIC 0x454d4c5345435552ull /* "EMLSECUR" */

typedef struct secure_hdr {
    uint64_t magic;
    size_t n;        /* bytes asked for */
    size_t data_len; /* header + user bytes, rounded up to pages */
    size_t page;
} secure_hdr;

_Static_assert(sizeof(secure_hdr) <= SECURE_HDR, "secure header too big");

static atomic_size_t lock_failures;

size_t eml_secure_lock_failures(void)
{
    return atomic_load(&lock_failures);
}

void *eml_secure_alloc(size_t n)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
    if (n == 0 || n > SIZE_MAX / 2 - SECURE_HDR - 3 * page) return NULL;
    size_t data_len = (SECURE_HDR + n + page - 1) / page * page;
    size_t total = data_len + 2 * page;
    uint8_t *base = mmap(NULL, total, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return NULL;
    uint8_t *data = base + page;
    if (mprotect(base, page, PROT_NONE) != 0 ||
        mprotect(data + data_len, page, PROT_NONE) != 0) {
        munmap(base, total);
        return NULL;
    }
    if (mlock(data, data_len) != 0) atomic_fetch_add(&lock_failures, 1);
#ifdef MADV_DONTDUMP
    (void)madvise(data, data_len, MADV_DONTDUMP);
#endif
    /* Fresh anonymous pages are zero already. */
    secure_hdr h = {SECURE_MAGIC, n, data_len, page};
    memcpy(data, &h, sizeof(h));
    return data + SECURE_HDR;
}

void eml_secure_free(void *p, size_t n)
{
    if (p == NULL) return;
    uint8_t *data = (uint8_t *)p - SECURE_HDR;
    secure_hdr h;
    memcpy(&h, data, sizeof(h));
    /* Not ours (or a corrupted header): touching it further would be
     * worse than leaking it.  A correct program never gets here. */
    if (h.magic != SECURE_MAGIC || h.n != n) return;
    OPENSSL_cleanse(data, h.data_len);
    (void)munlock(data, h.data_len);
    munmap(data - h.page, h.data_len + 2 * h.page);
}

/* ==== SHA-256 ==== */

eml_status eml_sha256(uint8_t out[EML_SHA256_BYTES], const void *data,
                      size_t len)
{
    if (out == NULL || (data == NULL && len > 0)) return EML_ERR_INVALID;
    if (EVP_Digest(len ? data : empty_byte, len, out, NULL, EVP_sha256(),
                   NULL) != 1)
        return ossl_fail(EML_ERR_BACKEND);
    return EML_OK;
}

struct eml_sha256_ctx {
    EVP_MD_CTX *md;
};

eml_status eml_sha256_new(eml_sha256_ctx **out)
{
    *out = NULL;
    eml_sha256_ctx *c = OPENSSL_zalloc(sizeof(*c));
    if (c == NULL) return EML_ERR_NOMEM;
    c->md = EVP_MD_CTX_new();
    if (c->md == NULL) {
        OPENSSL_free(c);
        return ossl_fail(EML_ERR_NOMEM);
    }
    if (EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        eml_sha256_free(c);
        return ossl_fail(EML_ERR_BACKEND);
    }
    *out = c;
    return EML_OK;
}

eml_status eml_sha256_update(eml_sha256_ctx *c, const void *data, size_t len)
{
    if (c == NULL || (data == NULL && len > 0)) return EML_ERR_INVALID;
    if (len == 0) return EML_OK;
    if (EVP_DigestUpdate(c->md, data, len) != 1)
        return ossl_fail(EML_ERR_BACKEND);
    return EML_OK;
}

eml_status eml_sha256_final(eml_sha256_ctx *c, uint8_t out[EML_SHA256_BYTES])
{
    if (c == NULL || out == NULL) return EML_ERR_INVALID;
    if (EVP_DigestFinal_ex(c->md, out, NULL) != 1)
        return ossl_fail(EML_ERR_BACKEND);
    return EML_OK;
}

void eml_sha256_free(eml_sha256_ctx *c)
{
    if (c == NULL) return;
    EVP_MD_CTX_free(c->md); /* cleanses the digest state */
    OPENSSL_free(c);
}

/* ==== HMAC-SHA256 ==== */

eml_status eml_hmac_sha256(uint8_t out[EML_SHA256_BYTES], const uint8_t *key,
                           size_t key_len, const void *data, size_t len)
{
    size_t out_len = 0;
    if (out == NULL || (key == NULL && key_len > 0) ||
        (data == NULL && len > 0))
        return EML_ERR_INVALID;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL,
                  key_len ? key : empty_byte, key_len,
                  len ? data : empty_byte, len, out, EML_SHA256_BYTES,
                  &out_len) == NULL ||
        out_len != EML_SHA256_BYTES) {
        eml_wipe(out, EML_SHA256_BYTES);
        return ossl_fail(EML_ERR_BACKEND);
    }
    return EML_OK;
}

/* ==== HKDF-SHA256 ==== */

static eml_status hkdf_run(int mode, uint8_t *out, size_t out_len,
                           const uint8_t *key, size_t key_len,
                           const uint8_t *salt, size_t salt_len,
                           const uint8_t *info, size_t info_len)
{
    OSSL_PARAM params[6], *p = params;
    eml_status st = EML_OK;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;

    if (out == NULL || out_len == 0 || out_len > EML_HKDF_MAX_OUT ||
        (key == NULL && key_len > 0) || (salt == NULL && salt_len > 0) ||
        (info == NULL && info_len > 0))
        return EML_ERR_INVALID;
    if (info_len > HKDF_INFO_MAX) return EML_ERR_RANGE;

    kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
    if (kdf == NULL) return ossl_fail(EML_ERR_UNSUPPORTED);
    kctx = EVP_KDF_CTX_new(kdf);
    if (kctx == NULL) {
        st = ossl_fail(EML_ERR_NOMEM);
        goto out;
    }
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                            (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    *p++ = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_KEY, (void *)(key_len ? key : empty_byte), key_len);
    if (salt_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                 (void *)salt, salt_len);
    if (info_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                 (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, out, out_len, params) != 1) {
        eml_wipe(out, out_len);
        st = ossl_fail(EML_ERR_BACKEND);
    }
out:
    EVP_KDF_CTX_free(kctx); /* clears the key material it copied */
    EVP_KDF_free(kdf);
    return st;
}

eml_status eml_hkdf_sha256(uint8_t *out, size_t out_len, const uint8_t *ikm,
                           size_t ikm_len, const uint8_t *salt,
                           size_t salt_len, const uint8_t *info,
                           size_t info_len)
{
    return hkdf_run(EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, out, out_len, ikm,
                    ikm_len, salt, salt_len, info, info_len);
}

eml_status eml_hkdf_sha256_extract(uint8_t prk[EML_SHA256_BYTES],
                                   const uint8_t *ikm, size_t ikm_len,
                                   const uint8_t *salt, size_t salt_len)
{
    return hkdf_run(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, prk, EML_SHA256_BYTES,
                    ikm, ikm_len, salt, salt_len, NULL, 0);
}

eml_status eml_hkdf_sha256_expand(uint8_t *out, size_t out_len,
                                  const uint8_t prk[EML_SHA256_BYTES],
                                  const uint8_t *info, size_t info_len)
{
    return hkdf_run(EVP_KDF_HKDF_MODE_EXPAND_ONLY, out, out_len, prk,
                    EML_SHA256_BYTES, NULL, 0, info, info_len);
}

/* ==== AES-256-GCM ==== */

struct eml_gcm {
    EVP_CIPHER_CTX *c;
};

eml_status eml_gcm_new(const uint8_t key[EML_KEY_BYTES], eml_gcm **out)
{
    if (out == NULL) return EML_ERR_INVALID;
    *out = NULL;
    if (key == NULL) return EML_ERR_INVALID;
    eml_gcm *g = OPENSSL_zalloc(sizeof(*g));
    if (g == NULL) return EML_ERR_NOMEM;
    g->c = EVP_CIPHER_CTX_new();
    if (g->c == NULL) {
        OPENSSL_free(g);
        return ossl_fail(EML_ERR_NOMEM);
    }
    /* Key now, nonce per message; the default IV length is 12 bytes. */
    if (EVP_EncryptInit_ex(g->c, EVP_aes_256_gcm(), NULL, key, NULL) != 1) {
        eml_gcm_free(g);
        return ossl_fail(EML_ERR_BACKEND);
    }
    *out = g;
    return EML_OK;
}

void eml_gcm_free(eml_gcm *g)
{
    if (g == NULL) return;
    EVP_CIPHER_CTX_free(g->c); /* the provider clears the key schedule */
    OPENSSL_free(g);
}

/* Feeds AAD (enc/dec alike: out == NULL) in pieces EVP can take. */
static int gcm_aad(EVP_CIPHER_CTX *c, const uint8_t *aad, size_t aad_len)
{
    while (aad_len > 0) {
        size_t n = aad_len > EVP_PIECE ? EVP_PIECE : aad_len;
        int outl = 0;
        if (EVP_CipherUpdate(c, NULL, &outl, aad, (int)n) != 1) return 0;
        aad += n;
        aad_len -= n;
    }
    return 1;
}

static int gcm_data(EVP_CIPHER_CTX *c, uint8_t *out, const uint8_t *in,
                    size_t len)
{
    while (len > 0) {
        size_t n = len > EVP_PIECE ? EVP_PIECE : len;
        int outl = 0;
        if (EVP_CipherUpdate(c, out, &outl, in, (int)n) != 1 ||
            (size_t)outl != n)
            return 0;
        out += n;
        in += n;
        len -= n;
    }
    return 1;
}

eml_status eml_gcm_seal(eml_gcm *g, uint8_t *out, const uint8_t *pt,
                        size_t len, const uint8_t *aad, size_t aad_len,
                        const uint8_t nonce[EML_GCM_NONCE_BYTES])
{
    int outl = 0;
    if (g == NULL || out == NULL || nonce == NULL ||
        (pt == NULL && len > 0) || (aad == NULL && aad_len > 0))
        return EML_ERR_INVALID;
    if (len > SIZE_MAX - EML_GCM_TAG_BYTES) return EML_ERR_RANGE;
    if (EVP_EncryptInit_ex(g->c, NULL, NULL, NULL, nonce) != 1 ||
        !gcm_aad(g->c, aad, aad_len) || !gcm_data(g->c, out, pt, len) ||
        EVP_EncryptFinal_ex(g->c, out + len, &outl) != 1 || outl != 0 ||
        EVP_CIPHER_CTX_ctrl(g->c, EVP_CTRL_GCM_GET_TAG, EML_GCM_TAG_BYTES,
                            out + len) != 1) {
        /* Never hand out half a ciphertext: it may be keystream-xor-zero. */
        eml_wipe(out, len + EML_GCM_TAG_BYTES);
        return ossl_fail(EML_ERR_BACKEND);
    }
    return EML_OK;
}

eml_status eml_gcm_open(eml_gcm *g, uint8_t *out, const uint8_t *ct,
                        size_t ct_len, const uint8_t *aad, size_t aad_len,
                        const uint8_t nonce[EML_GCM_NONCE_BYTES])
{
    uint8_t tag[EML_GCM_TAG_BYTES], fin[EML_GCM_TAG_BYTES];
    int outl = 0;
    if (g == NULL || nonce == NULL || (aad == NULL && aad_len > 0) ||
        (ct == NULL && ct_len > 0))
        return EML_ERR_INVALID;
    if (ct_len < EML_GCM_TAG_BYTES) return EML_ERR_AUTH;
    size_t len = ct_len - EML_GCM_TAG_BYTES;
    if (out == NULL && len > 0) return EML_ERR_INVALID;
    /* Copy the tag first: out may be ct. */
    memcpy(tag, ct + len, EML_GCM_TAG_BYTES);
    if (EVP_DecryptInit_ex(g->c, NULL, NULL, NULL, nonce) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->c, EVP_CTRL_GCM_SET_TAG, EML_GCM_TAG_BYTES,
                            tag) != 1 ||
        !gcm_aad(g->c, aad, aad_len) ||
        !gcm_data(g->c, out, ct, len) ||
        EVP_DecryptFinal_ex(g->c, fin, &outl) != 1 || outl != 0) {
        /* Decrypted but unverified bytes never leave. */
        eml_wipe(out, len);
        return ossl_fail(EML_ERR_AUTH);
    }
    return EML_OK;
}

eml_status eml_aes256gcm_seal(uint8_t *out, const uint8_t *pt, size_t len,
                              const uint8_t *aad, size_t aad_len,
                              const uint8_t nonce[EML_GCM_NONCE_BYTES],
                              const uint8_t key[EML_KEY_BYTES])
{
    eml_gcm *g = NULL;
    eml_status st = eml_gcm_new(key, &g);
    if (st != EML_OK) return st;
    st = eml_gcm_seal(g, out, pt, len, aad, aad_len, nonce);
    eml_gcm_free(g);
    return st;
}

eml_status eml_aes256gcm_open(uint8_t *out, const uint8_t *ct, size_t ct_len,
                              const uint8_t *aad, size_t aad_len,
                              const uint8_t nonce[EML_GCM_NONCE_BYTES],
                              const uint8_t key[EML_KEY_BYTES])
{
    eml_gcm *g = NULL;
    eml_status st = eml_gcm_new(key, &g);
    if (st != EML_OK) {
        /* Same promise as on a bad tag: no unverified plaintext. */
        if (out != NULL && ct_len > EML_GCM_TAG_BYTES)
            eml_wipe(out, ct_len - EML_GCM_TAG_BYTES);
        return st;
    }
    st = eml_gcm_open(g, out, ct, ct_len, aad, aad_len, nonce);
    eml_gcm_free(g);
    return st;
}

/* ==== X25519 and Ed25519 ==== */

/* The public half of a raw private key of the given type. */
static eml_status raw_public(int type, uint8_t pk[32], const uint8_t sk[32])
{
    size_t len = 32;
    if (pk == NULL || sk == NULL) return EML_ERR_INVALID;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(type, NULL, sk, 32);
    if (k == NULL) return ossl_fail(EML_ERR_BACKEND);
    int ok = EVP_PKEY_get_raw_public_key(k, pk, &len) == 1 && len == 32;
    EVP_PKEY_free(k); /* clears its copy of sk */
    if (!ok) {
        eml_wipe(pk, 32);
        return ossl_fail(EML_ERR_BACKEND);
    }
    return EML_OK;
}

/* A key pair from 32 fresh private random bytes. */
static eml_status raw_keygen(int type, uint8_t sk[32], uint8_t pk[32])
{
    if (sk == NULL || pk == NULL) return EML_ERR_INVALID;
    eml_status st = eml_random_secret(sk, 32);
    if (st == EML_OK) st = raw_public(type, pk, sk);
    if (st != EML_OK) eml_wipe(sk, 32);
    return st;
}

eml_status eml_x25519_keygen(uint8_t sk[EML_X25519_BYTES],
                             uint8_t pk[EML_X25519_BYTES])
{
    return raw_keygen(EVP_PKEY_X25519, sk, pk);
}

eml_status eml_x25519_public(uint8_t pk[EML_X25519_BYTES],
                             const uint8_t sk[EML_X25519_BYTES])
{
    return raw_public(EVP_PKEY_X25519, pk, sk);
}

eml_status eml_x25519_shared(uint8_t shared[EML_X25519_BYTES],
                             const uint8_t sk[EML_X25519_BYTES],
                             const uint8_t peer_pk[EML_X25519_BYTES])
{
    EVP_PKEY *priv = NULL, *peer = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = EML_X25519_BYTES;
    eml_status st = EML_OK;

    if (shared == NULL || sk == NULL || peer_pk == NULL)
        return EML_ERR_INVALID;
    priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk,
                                        EML_X25519_BYTES);
    peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pk,
                                       EML_X25519_BYTES);
    if (priv == NULL || peer == NULL) {
        st = ossl_fail(EML_ERR_BACKEND);
        goto out;
    }
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    if (ctx == NULL) {
        st = ossl_fail(EML_ERR_NOMEM);
        goto out;
    }
    /* OpenSSL itself refuses an all-zero result; so do we, below, in case
     * a future provider does not. */
    if (EVP_PKEY_derive_init(ctx) != 1 ||
        EVP_PKEY_derive_set_peer(ctx, peer) != 1 ||
        EVP_PKEY_derive(ctx, shared, &len) != 1 || len != EML_X25519_BYTES ||
        eml_is_zero(shared, EML_X25519_BYTES)) {
        st = ossl_fail(EML_ERR_AUTH);
        goto out;
    }
out:
    if (st != EML_OK) eml_wipe(shared, EML_X25519_BYTES);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(peer);
    return st;
}

eml_status eml_ed25519_keygen(uint8_t sk[EML_ED25519_SK_BYTES],
                              uint8_t pk[EML_ED25519_PK_BYTES])
{
    return raw_keygen(EVP_PKEY_ED25519, sk, pk);
}

eml_status eml_ed25519_public(uint8_t pk[EML_ED25519_PK_BYTES],
                              const uint8_t sk[EML_ED25519_SK_BYTES])
{
    return raw_public(EVP_PKEY_ED25519, pk, sk);
}

eml_status eml_ed25519_sign(uint8_t sig[EML_ED25519_SIG_BYTES],
                            const void *msg, size_t len,
                            const uint8_t sk[EML_ED25519_SK_BYTES])
{
    EVP_PKEY *k = NULL;
    EVP_MD_CTX *md = NULL;
    size_t sig_len = EML_ED25519_SIG_BYTES;
    eml_status st = EML_OK;

    if (sig == NULL || sk == NULL || (msg == NULL && len > 0))
        return EML_ERR_INVALID;
    k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, sk,
                                     EML_ED25519_SK_BYTES);
    md = EVP_MD_CTX_new();
    if (k == NULL || md == NULL) {
        st = ossl_fail(EML_ERR_NOMEM);
        goto out;
    }
    if (EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, k, NULL) != 1 ||
        EVP_DigestSign(md, sig, &sig_len, len ? msg : empty_byte, len) != 1 ||
        sig_len != EML_ED25519_SIG_BYTES) {
        eml_wipe(sig, EML_ED25519_SIG_BYTES);
        st = ossl_fail(EML_ERR_BACKEND);
    }
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return st;
}

eml_status eml_ed25519_verify(const uint8_t sig[EML_ED25519_SIG_BYTES],
                              const void *msg, size_t len,
                              const uint8_t pk[EML_ED25519_PK_BYTES])
{
    EVP_PKEY *k = NULL;
    EVP_MD_CTX *md = NULL;
    eml_status st = EML_ERR_AUTH;

    if (sig == NULL || pk == NULL || (msg == NULL && len > 0))
        return EML_ERR_INVALID;
    k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk,
                                    EML_ED25519_PK_BYTES);
    md = EVP_MD_CTX_new();
    if (k != NULL && md != NULL &&
        EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, k, NULL) == 1 &&
        EVP_DigestVerify(md, sig, EML_ED25519_SIG_BYTES,
                         len ? msg : empty_byte, len) == 1)
        st = EML_OK;
    if (st != EML_OK) ERR_clear_error();
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return st;
}
