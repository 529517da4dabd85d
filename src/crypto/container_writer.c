/*
 * container_writer.c - the container's writer (eml_cw_*) and
 * eml_container_seal_buffer (include/enclaveml/container.h; layout in
 * docs/container.md).
 *
 * Trusted code: no I/O, never prints.  A writer makes a header with a
 * fresh salt (and, to a recipient, a fresh ephemeral X25519 key and a
 * fresh content key wrapped to it), derives the file key from it
 * (container.c) and then seals one chunk at a time; only the last chunk
 * may be short, and nothing follows it.  The writer lives in locked memory;
 * every secret on the way to the file key is wiped as soon as the GCM
 * context holds it, and the context is cleared in eml_cw_free.
 */
#include "enclaveml/container.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "crypto/container_internal.h"
#include "enclaveml/crypto.h"

struct eml_cw {
    eml_container_scratch s;
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
    eml_container_scratch *s = &w->s;
    eml_status st;

    memcpy(h + OFF_MAGIC, CONTAINER_MAGIC, 4);
    eml_put_le16(h + OFF_VERSION, EML_CONTAINER_VERSION);
    eml_put_le16(h + OFF_MODE, (uint16_t)mode);
    eml_put_le32(h + OFF_CHUNK, w->chunk_size);
    eml_put_le32(h + OFF_HLEN, (uint32_t)hlen);
    if (meta != NULL) {
        eml_put_le16(h + OFF_ROLE, (uint16_t)meta->role);
        memcpy(h + OFF_DATASET, meta->dataset_id,
               EML_CONTAINER_DATASET_ID_BYTES);
    }
    st = eml_container_key_id_with(s, h + OFF_KEY_ID, key);
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
    if (st == EML_OK) st = eml_container_derive_wrap_key(s, h);
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
    if (!eml_container_chunk_size_ok(chunk_size))
        return eml_err_set(err, EML_ERR_RANGE,
                           "container: chunk size %" PRIu32
                           " is not a power of two in %" PRIu32 "..%" PRIu32,
                           chunk_size, EML_CONTAINER_CHUNK_MIN,
                           EML_CONTAINER_CHUNK_MAX);
    eml_cw *w = eml_secure_alloc(sizeof(*w));
    if (w == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "container: out of memory");
    w->chunk_size = chunk_size;
    size_t hlen = eml_container_header_len_for(mode);
    uint8_t h[EML_CONTAINER_HEADER_MAX];
    memset(h, 0, sizeof(h));

    eml_status st = writer_header(w, mode, key, meta, h, hlen, err);
    if (st == EML_OK) {
        const uint8_t *content_key =
            mode == EML_CONTAINER_RECIPIENT ? w->s.content_key : key;
        st = eml_container_derive_file_state(&w->s, content_key, h, hlen,
                                             &w->gcm, w->digest);
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
    eml_container_chunk_nonce_aad(nonce, aad, w->digest, w->index, final);
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

/* ==== a whole buffer ==== */

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
