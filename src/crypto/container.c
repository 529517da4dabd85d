/*
 * container.c - the encrypted chunked container (include/enclaveml/
 * container.h; byte layout in docs/container.md): what its writer and
 * reader share.
 *
 * Trusted code: no I/O, never prints.  This file names roles, makes key and
 * dataset ids, parses and checks the header's fixed fields, and derives
 * the keys: a wrap key from an X25519 shared secret (recipient mode) and
 * the per-file AES-256-GCM key from the content key.  The writer
 * (container_writer.c) and reader (container_reader.c) turn a key and a
 * header into a per-file key with these and then seal or open one chunk
 * at a time, so neither side ever needs a whole file in memory.  Every
 * intermediate secret (ephemeral X25519 key, shared secret, wrap key,
 * content key, file key) lives in the writer's or reader's locked memory
 * and is wiped as soon as the GCM context holds the key schedule; the
 * context itself is freed (and cleared by OpenSSL) in _free.
 */
#include "enclaveml/container.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "crypto/container_internal.h"
#include "enclaveml/crypto.h"

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

/* ==== roles and ids ==== */

static const char *const role_names[EML_CONTAINER_ROLES] = {
    "none", "train-images", "train-labels", "test-images", "test-labels",
    "model", "predictions"};
_Static_assert(sizeof(role_names) / sizeof(role_names[0]) ==
                   EML_CONTAINER_ROLE_PREDICTIONS + 1,
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
        st = eml_sha256_update(h, (const uint8_t *)LABEL_DATASET_ID,
                               LABEL_LEN(LABEL_DATASET_ID));
    if (st == EML_OK && len > 0)
        st = eml_sha256_update(h, (const uint8_t *)name, len);
    if (st == EML_OK) st = eml_sha256_final(h, digest);
    eml_sha256_free(h);
    if (st == EML_OK) memcpy(id, digest, EML_CONTAINER_DATASET_ID_BYTES);
    return st;
}

/* ==== chunks and keys ==== */

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

int eml_container_chunk_size_ok(uint32_t cs)
{
    return cs >= EML_CONTAINER_CHUNK_MIN && cs <= EML_CONTAINER_CHUNK_MAX &&
           (cs & (cs - 1)) == 0;
}

size_t eml_container_header_len_for(eml_container_mode mode)
{
    return mode == EML_CONTAINER_RECIPIENT ? EML_CONTAINER_HEADER_RCPT
                                           : EML_CONTAINER_HEADER_SYM;
}

void eml_container_chunk_nonce_aad(uint8_t nonce[NONCE_BYTES],
                                   uint8_t aad[AAD_BYTES],
                                   const uint8_t digest[32], uint64_t index,
                                   int final)
{
    put_be64(nonce, index);
    put_be32(nonce + 8, final ? 1u : 0u);
    memcpy(aad, digest, 32);
    put_be64(aad + 32, index);
    aad[40] = final ? 1 : 0;
}

eml_status eml_container_key_id_with(eml_container_scratch *s,
                                     uint8_t id[16], const uint8_t key[32])
{
    uint8_t digest[EML_SHA256_BYTES];
    memcpy(s->id_input, LABEL_KEY_ID, LABEL_LEN(LABEL_KEY_ID));
    memcpy(s->id_input + LABEL_LEN(LABEL_KEY_ID), key, 32);
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
    eml_container_scratch *s = eml_secure_alloc(sizeof(*s));
    if (s == NULL) return EML_ERR_NOMEM;
    eml_status st = eml_container_key_id_with(s, id, key);
    eml_secure_free(s, sizeof(*s));
    return st;
}

eml_status eml_container_derive_wrap_key(eml_container_scratch *s,
                                         const uint8_t *hdr)
{
    size_t l = LABEL_LEN(LABEL_WRAP);
    memcpy(s->info, LABEL_WRAP, l);
    memcpy(s->info + l, hdr + OFF_EPH_PK, 32);
    memcpy(s->info + l + 32, s->recipient_pk, 32);
    return eml_hkdf_sha256(s->wrap_key, 32, s->shared, 32, hdr + OFF_SALT,
                           SALT_BYTES, s->info, sizeof(s->info));
}

eml_status eml_container_derive_file_state(eml_container_scratch *s,
                                           const uint8_t *content_key,
                                           const uint8_t *hdr, size_t hlen,
                                           eml_gcm **gcm, uint8_t digest[32])
{
    eml_status st = eml_hkdf_sha256(
        s->file_key, 32, content_key, 32, hdr + OFF_SALT, SALT_BYTES,
        (const uint8_t *)LABEL_FILE, LABEL_LEN(LABEL_FILE));
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
    if (memcmp(buf + OFF_MAGIC, CONTAINER_MAGIC, 4) != 0)
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
    if (!eml_container_chunk_size_ok(cs))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "container chunk size %" PRIu32
                           " is not a power of two in %" PRIu32 "..%" PRIu32,
                           cs, EML_CONTAINER_CHUNK_MIN,
                           EML_CONTAINER_CHUNK_MAX);
    uint32_t hlen = eml_get_le32(buf + OFF_HLEN);
    size_t want = eml_container_header_len_for((eml_container_mode)mode);
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

/* ==== sizes ==== */

eml_status eml_container_sealed_size(eml_container_mode mode,
                                     uint32_t chunk_size, uint64_t pt_len,
                                     uint64_t *out)
{
    if (out == NULL) return EML_ERR_INVALID;
    *out = 0;
    if (mode != EML_CONTAINER_SYMMETRIC && mode != EML_CONTAINER_RECIPIENT)
        return EML_ERR_INVALID;
    if (chunk_size == 0) chunk_size = EML_CONTAINER_CHUNK_DEFAULT;
    if (!eml_container_chunk_size_ok(chunk_size)) return EML_ERR_RANGE;
    uint64_t chunks = pt_len == 0 ? 1 : pt_len / chunk_size +
                                            (pt_len % chunk_size != 0);
    uint64_t hlen = eml_container_header_len_for(mode);
    /* chunks <= 2^52, so the product cannot overflow; the sum can. */
    uint64_t tags = chunks * EML_CONTAINER_TAG_BYTES;
    if (pt_len > UINT64_MAX - tags - hlen) return EML_ERR_RANGE;
    *out = hlen + pt_len + tags;
    return EML_OK;
}
