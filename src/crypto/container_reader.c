/*
 * container_reader.c - the container's reader (eml_cr_*) and
 * eml_container_open_buffer (include/enclaveml/container.h; layout in
 * docs/container.md).
 *
 * Trusted code: no I/O, never prints.  A reader checks the header, tells a
 * wrong key from a tampered file by the (public) key id, unwraps the
 * content key in recipient mode, derives the file key (container.c) and
 * then opens one chunk at a time.  A chunk's plaintext is released only
 * after its tag verified, and the reader stops for good at the first
 * failure (sticky error); the file is complete only once its final chunk
 * opened (eml_cr_finish).  The reader lives in locked memory; every secret
 * on the way to the file key is wiped as soon as the GCM context holds it,
 * and the context is cleared in eml_cr_free.
 */
#include "enclaveml/container.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/container_internal.h"
#include "enclaveml/crypto.h"

static void hex16(char out[33], const uint8_t id[16])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[32] = '\0';
}

struct eml_cr {
    eml_container_scratch s;
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
    eml_container_scratch *s = &r->s;
    eml_status st = eml_x25519_shared(s->shared, sk, h + OFF_EPH_PK);
    if (st == EML_OK) st = eml_container_derive_wrap_key(s, h);
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
        if (st == EML_OK)
            st = eml_container_key_id_with(&r->s, id, r->s.recipient_pk);
        content_key = r->s.content_key;
    } else {
        st = eml_container_key_id_with(&r->s, id, key);
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
    st = eml_container_derive_file_state(&r->s, content_key, header,
                                         info.header_len, &r->gcm, r->digest);
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

    eml_container_chunk_nonce_aad(nonce, aad, r->digest, r->index, is_last);
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

/* ==== a whole buffer ==== */

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
