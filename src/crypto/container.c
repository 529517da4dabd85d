/*
 * container.c - the encrypted chunked container (include/enclaveml/
 * container.h; byte layout in docs/container.md).
 *
 * Trusted code: no I/O, never prints.  It turns a key and a header into a
 * per-file AES-256-GCM key and then seals or opens one chunk at a time, so
 * neither side ever needs a whole file in memory.  Every intermediate
 * secret (ephemeral X25519 key, shared secret, wrap key, content key, file
 * key) lives in the writer's or reader's locked memory and is wiped as soon
 * as the GCM context holds the key schedule; the context itself is freed
 * (and cleared by OpenSSL) in _free.  A chunk's plaintext is released only
 * after its tag verified, and the reader stops for good at the first
 * failure.
 */
#include "enclaveml/container.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"

/* ==== format constants ==== */

static const uint8_t magic[4] = {'E', 'M', 'L', 'C'};
static const char label_key_id[] = "enclaveml key id v1";
static const char label_dataset_id[] = "enclaveml dataset id v1";
static const char label_wrap[] = "enclaveml recipient wrap v1";
static const char label_file[] = "enclaveml container v1";
#define LABEL_LEN(s) (sizeof(s) - 1) /* labels go in without their NUL */

/* Header offsets. */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_MODE = 6,
    OFF_CHUNK = 8,
    OFF_HLEN = 12,
    OFF_KEY_ID = 16,
    OFF_SALT = 32,
    OFF_ROLE = 64,     /* version 2 */
    OFF_RESERVED = 66, /* u16, must be 0 */
    OFF_DATASET = 68,
    OFF_EPH_PK = 84,   /* mode 2 only */
    OFF_WRAPPED = 116, /* mode 2 only; also the end of the wrap's AAD */
    OFF_WRAP_TAG = 148,
};
#define SALT_BYTES 32
#define NONCE_BYTES 12
#define AAD_BYTES (32 + 8 + 1) /* header digest || u64 index || u8 final */

_Static_assert(OFF_WRAP_TAG + 16 == EML_CONTAINER_HEADER_RCPT,
               "recipient header layout");
_Static_assert(OFF_SALT + SALT_BYTES == OFF_ROLE &&
                   OFF_DATASET + EML_CONTAINER_DATASET_ID_BYTES ==
                       EML_CONTAINER_HEADER_SYM &&
                   EML_CONTAINER_HEADER_SYM == OFF_EPH_PK,
               "symmetric header layout");
_Static_assert(EML_CONTAINER_TAG_BYTES == EML_GCM_TAG_BYTES, "tag size");
_Static_assert(EML_CONTAINER_KEY_BYTES == EML_KEY_BYTES &&
                   EML_CONTAINER_KEY_BYTES == EML_X25519_BYTES,
               "key sizes");

/* Every secret a writer or reader handles on its way to the file key, kept
 * in its locked allocation and wiped right after use. */
typedef struct key_scratch {
    uint8_t eph_sk[32];
    uint8_t shared[32];
    uint8_t wrap_key[32];
    uint8_t content_key[32];
    uint8_t file_key[32];
    uint8_t recipient_pk[32];
    uint8_t info[LABEL_LEN(label_wrap) + 64];
    uint8_t id_input[LABEL_LEN(label_key_id) + 32];
} key_scratch;

/* ==== little helpers ==== */

static const char *const role_names[EML_CONTAINER_ROLES] = {
    "none", "train-images", "train-labels", "test-images", "test-labels",
    "model"};
_Static_assert(sizeof(role_names) / sizeof(role_names[0]) ==
                   EML_CONTAINER_ROLE_MODEL + 1,
               "one name per role");

const char *eml_container_role_name(eml_container_role role)
{
    if ((unsigned)role >= EML_CONTAINER_ROLES) return NULL;
    return role_names[role];
}

eml_status eml_container_role_parse(const char *s, eml_container_role *out)
{
    if (s == NULL || out == NULL) return EML_ERR_INVALID;
    for (unsigned i = 0; i < EML_CONTAINER_ROLES; i++)
        if (strcmp(s, role_names[i]) == 0) {
            *out = (eml_container_role)i;
            return EML_OK;
        }
    return EML_ERR_INVALID;
}

eml_status eml_container_dataset_id(
    uint8_t id[EML_CONTAINER_DATASET_ID_BYTES], const char *name, size_t len)
{
    uint8_t digest[EML_SHA256_BYTES];
    eml_sha256_ctx *h = NULL;
    if (id == NULL || (name == NULL && len > 0)) return EML_ERR_INVALID;
    eml_status st = eml_sha256_new(&h);
    if (st == EML_OK)
        st = eml_sha256_update(h, (const uint8_t *)label_dataset_id,
                               LABEL_LEN(label_dataset_id));
    if (st == EML_OK && len > 0)
        st = eml_sha256_update(h, (const uint8_t *)name, len);
    if (st == EML_OK) st = eml_sha256_final(h, digest);
    eml_sha256_free(h);
    if (st == EML_OK) memcpy(id, digest, EML_CONTAINER_DATASET_ID_BYTES);
    return st;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void hex16(char out[33], const uint8_t id[16])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[32] = '\0';
}

static int chunk_size_ok(uint32_t cs)
{
    return cs >= EML_CONTAINER_CHUNK_MIN && cs <= EML_CONTAINER_CHUNK_MAX &&
           (cs & (cs - 1)) == 0;
}

static size_t header_len_for(eml_container_mode mode)
{
    return mode == EML_CONTAINER_RECIPIENT ? EML_CONTAINER_HEADER_RCPT
                                           : EML_CONTAINER_HEADER_SYM;
}

/* Chunk i's nonce (u64 BE i || u32 BE final) and AAD (H || u64 BE i ||
 * u8 final). */
static void chunk_nonce_aad(uint8_t nonce[NONCE_BYTES], uint8_t aad[AAD_BYTES],
                            const uint8_t digest[32], uint64_t index,
                            int final)
{
    put_be64(nonce, index);
    put_be32(nonce + 8, final ? 1u : 0u);
    memcpy(aad, digest, 32);
    put_be64(aad + 32, index);
    aad[40] = final ? 1 : 0;
}

static eml_status key_id_with(key_scratch *s, uint8_t id[16],
                              const uint8_t key[32])
{
    uint8_t digest[EML_SHA256_BYTES];
    memcpy(s->id_input, label_key_id, LABEL_LEN(label_key_id));
    memcpy(s->id_input + LABEL_LEN(label_key_id), key, 32);
    eml_status st = eml_sha256(digest, s->id_input, sizeof(s->id_input));
    eml_wipe(s->id_input, sizeof(s->id_input));
    if (st == EML_OK) memcpy(id, digest, EML_CONTAINER_KEY_ID_BYTES);
    eml_wipe(digest, sizeof(digest));
    return st;
}

eml_status eml_container_key_id(uint8_t id[EML_CONTAINER_KEY_ID_BYTES],
                                const uint8_t key[EML_CONTAINER_KEY_BYTES])
{
    if (id == NULL || key == NULL) return EML_ERR_INVALID;
    key_scratch *s = eml_secure_alloc(sizeof(*s));
    if (s == NULL) return EML_ERR_NOMEM;
    eml_status st = key_id_with(s, id, key);
    eml_secure_free(s, sizeof(*s));
    return st;
}

/* wrap key = HKDF(X25519 shared, salt, "enclaveml recipient wrap v1" ||
 * eph_pk || recipient_pk); s->shared and s->recipient_pk are set. */
static eml_status derive_wrap_key(key_scratch *s, const uint8_t *hdr)
{
    size_t l = LABEL_LEN(label_wrap);
    memcpy(s->info, label_wrap, l);
    memcpy(s->info + l, hdr + OFF_EPH_PK, 32);
    memcpy(s->info + l + 32, s->recipient_pk, 32);
    return eml_hkdf_sha256(s->wrap_key, 32, s->shared, 32, hdr + OFF_SALT,
                           SALT_BYTES, s->info, sizeof(s->info));
}

/* file key = HKDF(content key, salt, "enclaveml container v1"), straight
 * into a GCM context; the header digest H alongside. */
static eml_status derive_file_state(key_scratch *s, const uint8_t *content_key,
                                    const uint8_t *hdr, size_t hlen,
                                    eml_gcm **gcm, uint8_t digest[32])
{
    eml_status st = eml_hkdf_sha256(
        s->file_key, 32, content_key, 32, hdr + OFF_SALT, SALT_BYTES,
        (const uint8_t *)label_file, LABEL_LEN(label_file));
    if (st == EML_OK) st = eml_gcm_new(s->file_key, gcm);
    eml_wipe(s->file_key, sizeof(s->file_key));
    if (st == EML_OK) st = eml_sha256(digest, hdr, hlen);
    if (st != EML_OK) {
        eml_gcm_free(*gcm);
        *gcm = NULL;
    }
    return st;
}

/* ==== header parsing ==== */

static eml_status parse_prefix(const uint8_t *buf, size_t len,
                               eml_container_info *info, eml_err *err)
{
    if (buf == NULL && len > 0)
        return eml_err_set(err, EML_ERR_INVALID, "container: no buffer");
    if (len < EML_CONTAINER_PREFIX)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "container header is truncated: %zu bytes, at "
                           "least %d needed",
                           len, EML_CONTAINER_PREFIX);
    if (memcmp(buf + OFF_MAGIC, magic, 4) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "not an enclaveml container (bad magic)");
    unsigned version = eml_get_le16(buf + OFF_VERSION);
    if (version == 1)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "container version 1 is no longer supported "
                           "(re-encrypt it with this version of enclaveml)");
    if (version != EML_CONTAINER_VERSION)
        return eml_err_set(err, version == 0 ? EML_ERR_FORMAT
                                             : EML_ERR_UNSUPPORTED,
                           "container version %u is not supported (this "
                           "build reads version %d)",
                           version, EML_CONTAINER_VERSION);
    unsigned mode = eml_get_le16(buf + OFF_MODE);
    if (mode != EML_CONTAINER_SYMMETRIC && mode != EML_CONTAINER_RECIPIENT)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "container key mode %u is unknown (1 = data key, "
                           "2 = recipient)",
                           mode);
    uint32_t cs = eml_get_le32(buf + OFF_CHUNK);
    if (!chunk_size_ok(cs))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "container chunk size %" PRIu32
                           " is not a power of two in %" PRIu32 "..%" PRIu32,
                           cs, EML_CONTAINER_CHUNK_MIN,
                           EML_CONTAINER_CHUNK_MAX);
    uint32_t hlen = eml_get_le32(buf + OFF_HLEN);
    size_t want = header_len_for((eml_container_mode)mode);
    if (hlen != want)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "container header length %" PRIu32
                           " does not match key mode %u (expected %zu)",
                           hlen, mode, want);
    info->mode = (eml_container_mode)mode;
    info->chunk_size = cs;
    info->header_len = hlen;
    memset(info->key_id, 0, sizeof(info->key_id));
    return EML_OK;
}

eml_status eml_cr_header_len(const uint8_t *buf, size_t len,
                             size_t *header_len, eml_err *err)
{
    eml_container_info info;
    if (header_len == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "container: no output");
    *header_len = 0;
    eml_status st = parse_prefix(buf, len, &info, err);
    if (st == EML_OK) *header_len = info.header_len;
    return st;
}

eml_status eml_container_peek(const uint8_t *buf, size_t len,
                              eml_container_info *info, eml_err *err)
{
    if (info == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "container: no output");
    memset(info, 0, sizeof(*info));
    eml_status st = parse_prefix(buf, len, info, err);
    if (st != EML_OK) return st;
    if (len < info->header_len) {
        size_t need = info->header_len;
        memset(info, 0, sizeof(*info));
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "container header is truncated: %zu of %zu bytes",
                           len, need);
    }
    unsigned role = eml_get_le16(buf + OFF_ROLE);
    unsigned reserved = eml_get_le16(buf + OFF_RESERVED);
    if (role >= EML_CONTAINER_ROLES || reserved != 0) {
        memset(info, 0, sizeof(*info));
        if (reserved != 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "container header: reserved bytes 66..67 are "
                               "not zero");
        return eml_err_set(err, EML_ERR_FORMAT,
                           "container role %u is unknown (0..%d)", role,
                           EML_CONTAINER_ROLES - 1);
    }
    memcpy(info->key_id, buf + OFF_KEY_ID, EML_CONTAINER_KEY_ID_BYTES);
    info->role = (eml_container_role)role;
    memcpy(info->dataset_id, buf + OFF_DATASET,
           EML_CONTAINER_DATASET_ID_BYTES);
    return EML_OK;
}

/* ==== writer ==== */

struct eml_cw {
    key_scratch s;
    eml_gcm *gcm;
    uint8_t digest[32];
    uint32_t chunk_size;
    uint64_t index; /* of the next chunk */
    int done;       /* the final chunk was sealed */
    int failed;
};

/* Fills the header; in mode 2 leaves the fresh content key in
 * w->s.content_key for the caller to derive from and wipe. */
static eml_status writer_header(eml_cw *w, eml_container_mode mode,
                                const uint8_t *key,
                                const eml_container_meta *meta, uint8_t *h,
                                size_t hlen, eml_err *err)
{
    /* The wrap key encrypts exactly one message (this file's content key):
     * it comes from a fresh ephemeral X25519 key and a fresh salt, so the
     * constant all-zero nonce is never used twice under one key. */
    static const uint8_t zero_nonce[NONCE_BYTES] = {0};
    key_scratch *s = &w->s;
    eml_status st;

    memcpy(h + OFF_MAGIC, magic, 4);
    eml_put_le16(h + OFF_VERSION, EML_CONTAINER_VERSION);
    eml_put_le16(h + OFF_MODE, (uint16_t)mode);
    eml_put_le32(h + OFF_CHUNK, w->chunk_size);
    eml_put_le32(h + OFF_HLEN, (uint32_t)hlen);
    if (meta != NULL) {
        eml_put_le16(h + OFF_ROLE, (uint16_t)meta->role);
        memcpy(h + OFF_DATASET, meta->dataset_id,
               EML_CONTAINER_DATASET_ID_BYTES);
    }
    st = key_id_with(s, h + OFF_KEY_ID, key);
    if (st == EML_OK) st = eml_random(h + OFF_SALT, SALT_BYTES);
    if (st != EML_OK)
        return eml_err_set(err, st, "container: cannot make a header: %s",
                           eml_status_str(st));
    if (mode != EML_CONTAINER_RECIPIENT) return EML_OK;

    memcpy(s->recipient_pk, key, 32);
    st = eml_x25519_keygen(s->eph_sk, h + OFF_EPH_PK);
    if (st == EML_OK) {
        st = eml_x25519_shared(s->shared, s->eph_sk, s->recipient_pk);
        eml_wipe(s->eph_sk, sizeof(s->eph_sk));
        if (st == EML_ERR_AUTH)
            return eml_err_set(err, EML_ERR_INVALID,
                               "container: the recipient public key is "
                               "invalid (small order)");
    }
    if (st == EML_OK) st = derive_wrap_key(s, h);
    eml_wipe(s->shared, sizeof(s->shared));
    if (st == EML_OK) st = eml_random_secret(s->content_key, 32);
    /* wrapped_key || wrap_tag = GCM(wrap key, 0, AAD = header[0..116)). */
    if (st == EML_OK)
        st = eml_aes256gcm_seal(h + OFF_WRAPPED, s->content_key, 32, h,
                                OFF_WRAPPED, zero_nonce, s->wrap_key);
    eml_wipe(s->wrap_key, sizeof(s->wrap_key));
    if (st != EML_OK) {
        eml_wipe(s->content_key, sizeof(s->content_key));
        return eml_err_set(err, st, "container: key wrap failed: %s",
                           eml_status_str(st));
    }
    return EML_OK;
}

eml_status eml_cw_new(eml_container_mode mode, const uint8_t *key,
                      uint32_t chunk_size, const eml_container_meta *meta,
                      eml_cw **out,
                      uint8_t header[EML_CONTAINER_HEADER_MAX],
                      size_t *header_len, eml_err *err)
{
    if (out == NULL || header == NULL || header_len == NULL || key == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    *out = NULL;
    *header_len = 0;
    if (mode != EML_CONTAINER_SYMMETRIC && mode != EML_CONTAINER_RECIPIENT)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: key mode %d is unknown", (int)mode);
    if (meta != NULL && (unsigned)meta->role >= EML_CONTAINER_ROLES)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: role %d is unknown", (int)meta->role);
    if (chunk_size == 0) chunk_size = EML_CONTAINER_CHUNK_DEFAULT;
    if (!chunk_size_ok(chunk_size))
        return eml_err_set(err, EML_ERR_RANGE,
                           "container: chunk size %" PRIu32
                           " is not a power of two in %" PRIu32 "..%" PRIu32,
                           chunk_size, EML_CONTAINER_CHUNK_MIN,
                           EML_CONTAINER_CHUNK_MAX);
    eml_cw *w = eml_secure_alloc(sizeof(*w));
    if (w == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "container: out of memory");
    w->chunk_size = chunk_size;
    size_t hlen = header_len_for(mode);
    uint8_t h[EML_CONTAINER_HEADER_MAX];
    memset(h, 0, sizeof(h));

    eml_status st = writer_header(w, mode, key, meta, h, hlen, err);
    if (st == EML_OK) {
        const uint8_t *content_key =
            mode == EML_CONTAINER_RECIPIENT ? w->s.content_key : key;
        st = derive_file_state(&w->s, content_key, h, hlen, &w->gcm,
                               w->digest);
        eml_wipe(w->s.content_key, sizeof(w->s.content_key));
        if (st != EML_OK)
            eml_err_set(err, st, "container: key derivation failed: %s",
                        eml_status_str(st));
    }
    if (st != EML_OK) {
        eml_cw_free(w);
        return st;
    }
    memcpy(header, h, hlen);
    *header_len = hlen;
    *out = w;
    return EML_OK;
}

eml_status eml_cw_seal(eml_cw *w, const uint8_t *pt, size_t len, int final,
                       uint8_t *out, size_t *out_len, eml_err *err)
{
    uint8_t nonce[NONCE_BYTES], aad[AAD_BYTES];
    if (out_len != NULL) *out_len = 0;
    if (w == NULL || out == NULL || out_len == NULL ||
        (pt == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    if (w->failed)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: the writer failed earlier");
    if (w->done)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: the final chunk was already written");
    if (!final && len != w->chunk_size)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: chunk %" PRIu64 " holds %zu bytes; "
                           "every chunk but the final one holds exactly "
                           "%" PRIu32,
                           w->index, len, w->chunk_size);
    if (final && len > w->chunk_size)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: final chunk holds %zu bytes, more "
                           "than the chunk size %" PRIu32,
                           len, w->chunk_size);
    if (final && len == 0 && w->index > 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: an empty final chunk is only allowed "
                           "for an empty plaintext; mark the last full chunk "
                           "final instead");
    if (w->index == UINT64_MAX)
        return eml_err_set(err, EML_ERR_RANGE, "container: too many chunks");
    chunk_nonce_aad(nonce, aad, w->digest, w->index, final);
    eml_status st = eml_gcm_seal(w->gcm, out, pt, len, aad, sizeof(aad),
                                 nonce);
    if (st != EML_OK) {
        w->failed = 1;
        return eml_err_set(err, st, "container: sealing chunk %" PRIu64
                           " failed: %s", w->index, eml_status_str(st));
    }
    *out_len = len + EML_CONTAINER_TAG_BYTES;
    w->index++;
    if (final) w->done = 1;
    return EML_OK;
}

uint32_t eml_cw_chunk_size(const eml_cw *w)
{
    return w != NULL ? w->chunk_size : 0;
}

void eml_cw_free(eml_cw *w)
{
    if (w == NULL) return;
    eml_gcm_free(w->gcm);
    eml_secure_free(w, sizeof(*w));
}

/* ==== reader ==== */

struct eml_cr {
    key_scratch s;
    eml_gcm *gcm;
    uint8_t digest[32];
    eml_container_mode mode;
    uint32_t chunk_size;
    uint64_t index; /* of the next chunk */
    uint64_t pt_bytes;
    int final_seen;
    eml_status failed; /* sticky: the first failure, or EML_OK */
};

/* Mode 2: recover the content key into r->s.content_key. */
static eml_status reader_unwrap(eml_cr *r, const uint8_t *h,
                                const uint8_t *sk, eml_err *err)
{
    static const uint8_t zero_nonce[NONCE_BYTES] = {0};
    key_scratch *s = &r->s;
    eml_status st = eml_x25519_shared(s->shared, sk, h + OFF_EPH_PK);
    if (st == EML_OK) st = derive_wrap_key(s, h);
    eml_wipe(s->shared, sizeof(s->shared));
    if (st == EML_OK)
        st = eml_aes256gcm_open(s->content_key, h + OFF_WRAPPED,
                                32 + EML_GCM_TAG_BYTES, h, OFF_WRAPPED,
                                zero_nonce, s->wrap_key);
    eml_wipe(s->wrap_key, sizeof(s->wrap_key));
    if (st == EML_ERR_AUTH)
        return eml_err_set(err, EML_ERR_AUTH,
                           "container header failed authentication (the "
                           "wrapped key does not open: tampered header)");
    if (st != EML_OK)
        return eml_err_set(err, st, "container: key unwrap failed: %s",
                           eml_status_str(st));
    return EML_OK;
}

eml_status eml_cr_new(const uint8_t *header, size_t len,
                      const eml_container_keys *keys, eml_cr **out,
                      eml_err *err)
{
    eml_container_info info;
    uint8_t id[EML_CONTAINER_KEY_ID_BYTES];
    char want_hex[33], have_hex[33];
    const uint8_t *key = NULL;

    if (out == NULL || keys == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    *out = NULL;
    eml_status st = eml_container_peek(header, len, &info, err);
    if (st != EML_OK) return st;
    if (len != info.header_len)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: %zu bytes given for a %zu-byte header",
                           len, info.header_len);
    key = info.mode == EML_CONTAINER_SYMMETRIC ? keys->data_key
                                               : keys->x25519_sk;
    if (key == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           info.mode == EML_CONTAINER_SYMMETRIC
                               ? "container is encrypted with a data key "
                                 "(mode 1) and no data key was given"
                               : "container is encrypted to an X25519 "
                                 "recipient (mode 2) and no X25519 secret "
                                 "key was given");

    eml_cr *r = eml_secure_alloc(sizeof(*r));
    if (r == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "container: out of memory");
    r->mode = info.mode;
    r->chunk_size = info.chunk_size;

    const uint8_t *content_key = key;
    if (info.mode == EML_CONTAINER_RECIPIENT) {
        st = eml_x25519_public(r->s.recipient_pk, key);
        if (st == EML_OK) st = key_id_with(&r->s, id, r->s.recipient_pk);
        content_key = r->s.content_key;
    } else {
        st = key_id_with(&r->s, id, key);
    }
    if (st != EML_OK) {
        eml_err_set(err, st, "container: key id: %s", eml_status_str(st));
        goto out;
    }
    /* Key ids are public; comparing them tells a wrong key from a
     * tampered file before any decryption is tried. */
    if (memcmp(id, info.key_id, sizeof(id)) != 0) {
        hex16(want_hex, info.key_id);
        hex16(have_hex, id);
        st = eml_err_set(err, EML_ERR_AUTH,
                         "key does not match: the container needs key id "
                         "%s (%s), the given key has id %s",
                         want_hex,
                         info.mode == EML_CONTAINER_SYMMETRIC
                             ? "data key"
                             : "X25519 recipient",
                         have_hex);
        goto out;
    }
    if (info.mode == EML_CONTAINER_RECIPIENT) {
        st = reader_unwrap(r, header, key, err);
        if (st != EML_OK) goto out;
    }
    st = derive_file_state(&r->s, content_key, header, info.header_len,
                           &r->gcm, r->digest);
    if (st != EML_OK)
        eml_err_set(err, st, "container: key derivation failed: %s",
                    eml_status_str(st));
out:
    eml_wipe(r->s.content_key, sizeof(r->s.content_key));
    if (st != EML_OK) {
        eml_cr_free(r);
        return st;
    }
    *out = r;
    return EML_OK;
}

static eml_status reader_fail(eml_cr *r, eml_status st)
{
    if (r->failed == EML_OK) r->failed = st;
    return st;
}

eml_status eml_cr_open(eml_cr *r, const uint8_t *ct, size_t len, int is_last,
                       uint8_t *pt, size_t *pt_len, eml_err *err)
{
    uint8_t nonce[NONCE_BYTES], aad[AAD_BYTES];

    if (pt_len != NULL) *pt_len = 0;
    if (r == NULL || pt_len == NULL || (ct == NULL && len > 0) ||
        (pt == NULL && len > EML_CONTAINER_TAG_BYTES))
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    if (r->failed != EML_OK)
        return eml_err_set(err, r->failed,
                           "container: an earlier chunk failed; the reader "
                           "accepts nothing more");
    const size_t full = (size_t)r->chunk_size + EML_CONTAINER_TAG_BYTES;
    if (r->final_seen)
        return reader_fail(
            r, eml_err_set(err, EML_ERR_FORMAT,
                           "container: data after the final chunk (chunk "
                           "%" PRIu64 ")",
                           r->index - 1));
    if (len < EML_CONTAINER_TAG_BYTES || (!is_last && len < full))
        return reader_fail(
            r, eml_err_set(err, EML_ERR_TRUNCATED,
                           "container: chunk %" PRIu64 " is truncated (%zu "
                           "bytes, %s %zu)",
                           r->index, len,
                           is_last ? "at least" : "expected",
                           is_last ? (size_t)EML_CONTAINER_TAG_BYTES : full));
    if (len > full)
        return reader_fail(
            r, eml_err_set(err, EML_ERR_FORMAT,
                           "container: chunk %" PRIu64 " has %zu bytes, "
                           "more than %zu",
                           r->index, len, full));
    if (r->index == UINT64_MAX)
        return reader_fail(r, eml_err_set(err, EML_ERR_RANGE,
                                          "container: too many chunks"));

    chunk_nonce_aad(nonce, aad, r->digest, r->index, is_last);
    eml_status st = eml_gcm_open(r->gcm, pt, ct, len, aad, sizeof(aad),
                                 nonce);
    if (st != EML_OK)
        return reader_fail(
            r, eml_err_set(err, st == EML_ERR_AUTH ? EML_ERR_AUTH : st,
                           "container: chunk %" PRIu64 " failed "
                           "authentication (tampered, reordered, truncated, "
                           "or from another file)",
                           r->index));
    *pt_len = len - EML_CONTAINER_TAG_BYTES;
    r->pt_bytes += *pt_len;
    r->index++;
    if (is_last) r->final_seen = 1;
    return EML_OK;
}

eml_status eml_cr_finish(const eml_cr *r, eml_err *err)
{
    if (r == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    if (r->failed != EML_OK)
        return eml_err_set(err, r->failed,
                           "container: a chunk failed; the plaintext is "
                           "incomplete");
    if (!r->final_seen)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "container is truncated: it ends after %" PRIu64
                           " chunks without its final chunk",
                           r->index);
    return EML_OK;
}

uint32_t eml_cr_chunk_size(const eml_cr *r)
{
    return r != NULL ? r->chunk_size : 0;
}

eml_container_mode eml_cr_mode(const eml_cr *r)
{
    return r != NULL ? r->mode : (eml_container_mode)0;
}

uint64_t eml_cr_plaintext_bytes(const eml_cr *r)
{
    return r != NULL ? r->pt_bytes : 0;
}

void eml_cr_free(eml_cr *r)
{
    if (r == NULL) return;
    eml_gcm_free(r->gcm);
    eml_secure_free(r, sizeof(*r));
}

/* ==== whole buffers ==== */

eml_status eml_container_sealed_size(eml_container_mode mode,
                                     uint32_t chunk_size, uint64_t pt_len,
                                     uint64_t *out)
{
    if (out == NULL) return EML_ERR_INVALID;
    *out = 0;
    if (mode != EML_CONTAINER_SYMMETRIC && mode != EML_CONTAINER_RECIPIENT)
        return EML_ERR_INVALID;
    if (chunk_size == 0) chunk_size = EML_CONTAINER_CHUNK_DEFAULT;
    if (!chunk_size_ok(chunk_size)) return EML_ERR_RANGE;
    uint64_t chunks = pt_len == 0 ? 1 : pt_len / chunk_size +
                                            (pt_len % chunk_size != 0);
    uint64_t hlen = header_len_for(mode);
    /* chunks <= 2^52, so the product cannot overflow; the sum can. */
    uint64_t tags = chunks * EML_CONTAINER_TAG_BYTES;
    if (pt_len > UINT64_MAX - tags - hlen) return EML_ERR_RANGE;
    *out = hlen + pt_len + tags;
    return EML_OK;
}

eml_status eml_container_seal_buffer(eml_container_mode mode,
                                     const uint8_t *key, uint32_t chunk_size,
                                     const eml_container_meta *meta,
                                     const uint8_t *pt, size_t len,
                                     uint8_t **out, size_t *out_len,
                                     eml_err *err)
{
    uint8_t hdr[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0, pos = 0, off = 0;
    uint64_t total = 0;
    eml_cw *w = NULL;

    if (out == NULL || out_len == NULL || (pt == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    *out = NULL;
    *out_len = 0;
    if (chunk_size == 0) chunk_size = EML_CONTAINER_CHUNK_DEFAULT;
    eml_status st = eml_container_sealed_size(mode, chunk_size, len, &total);
    if (st == EML_OK && total > SIZE_MAX) st = EML_ERR_RANGE;
    if (st != EML_OK)
        return eml_err_set(err, st, "container: cannot seal %zu bytes with "
                           "chunk size %" PRIu32 " in mode %d",
                           len, chunk_size, (int)mode);
    uint8_t *buf = malloc((size_t)total);
    if (buf == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "container: out of memory");
    st = eml_cw_new(mode, key, chunk_size, meta, &w, hdr, &hlen, err);
    if (st != EML_OK) goto out;
    memcpy(buf, hdr, hlen);
    pos = hlen;
    do {
        size_t n = len - off < chunk_size ? len - off : chunk_size;
        size_t got = 0;
        int final = off + n == len;
        st = eml_cw_seal(w, pt + off, n, final, buf + pos, &got, err);
        if (st != EML_OK) goto out;
        off += n;
        pos += got;
    } while (off < len);
    if (pos != total)
        st = eml_err_set(err, EML_ERR_RANGE, "container: size mismatch");
out:
    eml_cw_free(w);
    if (st != EML_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *out_len = pos;
    return EML_OK;
}

eml_status eml_container_open_buffer(const uint8_t *buf, size_t len,
                                     const eml_container_keys *keys,
                                     uint8_t **out, size_t *out_len,
                                     eml_err *err)
{
    size_t hlen = 0, pos = 0, got = 0, cap = 0;
    uint8_t *pt = NULL;
    eml_cr *r = NULL;

    if (out == NULL || out_len == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "container: missing argument");
    *out = NULL;
    *out_len = 0;
    eml_status st = eml_cr_header_len(buf, len, &hlen, err);
    if (st != EML_OK) return st;
    if (len < hlen)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "container header is truncated: %zu of %zu bytes",
                           len, hlen);
    st = eml_cr_new(buf, hlen, keys, &r, err);
    if (st != EML_OK) return st;
    /* The plaintext is never longer than what follows the header. */
    cap = len - hlen;
    pt = malloc(cap > 0 ? cap : 1);
    if (pt == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "container: out of memory");
        goto out;
    }
    const size_t full = (size_t)eml_cr_chunk_size(r) + EML_CONTAINER_TAG_BYTES;
    pos = hlen;
    while (pos < len) {
        size_t n = len - pos < full ? len - pos : full, m = 0;
        st = eml_cr_open(r, buf + pos, n, pos + n == len, pt + got, &m, err);
        if (st != EML_OK) goto out;
        pos += n;
        got += m;
    }
    st = eml_cr_finish(r, err);
out:
    eml_cr_free(r);
    if (st != EML_OK) {
        if (pt != NULL) eml_wipe(pt, got);
        free(pt);
        return st;
    }
    *out = pt;
    *out_len = got;
    return EML_OK;
}
