/*
 * channel.c - a share sealed for one neighbour's enclave, and opened from
 * one (decentral.h, docs/formats.md "Decentralized share").
 *
 *   header (48 bytes, the AEAD's associated data):
 *     u32 magic "EMLD" | u16 version 1 | u16 flags | u32 sender |
 *     u32 receiver | u64 round | u64 seq | u32 degree | u32 count |
 *     u32 total | u32 payload bytes
 *   AES-256-GCM(payload) | 16-byte tag
 *   payload: sparse: count u32 indices then count f32 values, padded
 *   with zeros to 8 * total bytes when PADDED; dense: count f32 values.
 *
 * The nonce is the sequence number (each direction has its own key, and
 * keys are new with every session: both session nonces go into them).
 * A frame is checked for shape first, then for its pair, round and
 * sequence number, then authenticated and decrypted; only then are its
 * indices read (strictly increasing, below total).  Each refusal has its
 * class, which the node counts.
 *
 * Trusted code: no I/O; frames are hostile.
 */
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/decentral.h"

eml_status eml_dchan_init(eml_dchan *c, uint32_t me,
                          const uint8_t my_sk[EML_X25519_BYTES],
                          const uint8_t my_nonce[32], uint32_t peer,
                          const uint8_t peer_pk[EML_X25519_BYTES],
                          const uint8_t peer_nonce[32],
                          const uint8_t run_id[32], eml_err *err)
{
    memset(c, 0, sizeof(*c));
    if (me == peer)
        return eml_err_set(err, EML_ERR_INVALID, "a channel to itself");
    uint8_t my_pk[EML_X25519_BYTES], shared[EML_X25519_BYTES];
    uint8_t keys[2 * EML_KEY_BYTES];
    eml_status st = eml_x25519_public(my_pk, my_sk);
    if (st == EML_OK) st = eml_x25519_shared(shared, my_sk, peer_pk);
    if (st != EML_OK) {
        eml_wipe(shared, sizeof(shared));
        return eml_err_set(err, st, "channel to node %u: key agreement "
                                    "failed",
                           peer);
    }
    /* info: label | lower id | higher id | their public keys and session
     * nonces, lower id's first */
    int lower = me < peer;
    uint8_t info[24 + 8 + 4 * 32];
    memcpy(info, "enclaveml decentral v1\0\0", 24);
    eml_put_le32(info + 24, lower ? me : peer);
    eml_put_le32(info + 28, lower ? peer : me);
    memcpy(info + 32, lower ? my_pk : peer_pk, 32);
    memcpy(info + 64, lower ? peer_pk : my_pk, 32);
    memcpy(info + 96, lower ? my_nonce : peer_nonce, 32);
    memcpy(info + 128, lower ? peer_nonce : my_nonce, 32);
    st = eml_hkdf_sha256(keys, sizeof(keys), shared, sizeof(shared), run_id,
                         32, info, sizeof(info));
    eml_wipe(shared, sizeof(shared));
    if (st == EML_OK)
        st = eml_gcm_new(keys + (lower ? 0 : EML_KEY_BYTES), &c->send);
    if (st == EML_OK)
        st = eml_gcm_new(keys + (lower ? EML_KEY_BYTES : 0), &c->recv);
    eml_wipe(keys, sizeof(keys));
    if (st != EML_OK) {
        eml_dchan_free(c);
        return eml_err_set(err, st, "channel to node %u: no keys", peer);
    }
    c->me = me;
    c->peer = peer;
    return EML_OK;
}

void eml_dchan_init_clear(eml_dchan *c, uint32_t me, uint32_t peer)
{
    memset(c, 0, sizeof(*c));
    c->me = me;
    c->peer = peer;
    c->clear = 1;
}

void eml_dchan_free(eml_dchan *c)
{
    if (c == NULL) return;
    eml_gcm_free(c->send);
    eml_gcm_free(c->recv);
    memset(c, 0, sizeof(*c));
}

static size_t payload_size(uint32_t count, uint32_t total, uint32_t flags)
{
    if (flags & EML_DMSG_DENSE) return 4 * (size_t)count;
    return 8 * (size_t)((flags & EML_DMSG_PADDED) ? total : count);
}

size_t eml_dmsg_size(uint32_t count, uint32_t total, uint32_t flags)
{
    return EML_DMSG_HEADER + payload_size(count, total, flags) +
           EML_GCM_TAG_BYTES;
}

static void nonce_of(uint64_t seq, uint8_t n[EML_GCM_NONCE_BYTES])
{
    eml_put_le64(n, seq);
    eml_put_le32(n + 8, 0);
}

eml_status eml_dmsg_seal(eml_dchan *c, uint64_t round, uint32_t degree,
                         const eml_share_view *v, int pad, uint8_t *out,
                         size_t *out_len, eml_err *err)
{
    uint32_t flags = v->idx == NULL ? EML_DMSG_DENSE : 0;
    if (pad && v->idx != NULL) flags |= EML_DMSG_PADDED;
    if (c->clear) flags |= EML_DMSG_CLEAR;
    if (v->total < 1 || v->total > EML_DMSG_MAX_PARAMS || v->count < 1 ||
        v->count > v->total || (v->idx == NULL && v->count != v->total))
        return eml_err_set(err, EML_ERR_RANGE, "a share of %u of %u values",
                           v->count, v->total);
    size_t pl = payload_size(v->count, v->total, flags);
    uint8_t *h = out, *p = out + EML_DMSG_HEADER;
    eml_put_le32(h, EML_DMSG_MAGIC);
    eml_put_le16(h + 4, EML_DMSG_VERSION);
    eml_put_le16(h + 6, (uint16_t)flags);
    eml_put_le32(h + 8, c->me);
    eml_put_le32(h + 12, c->peer);
    eml_put_le64(h + 16, round);
    eml_put_le64(h + 24, c->send_seq);
    eml_put_le32(h + 32, degree);
    eml_put_le32(h + 36, v->count);
    eml_put_le32(h + 40, v->total);
    eml_put_le32(h + 44, (uint32_t)pl);
    size_t k = 0;
    if (v->idx != NULL) {
        for (uint32_t i = 0; i < v->count; i++, k += 4)
            eml_put_le32(p + k, v->idx[i]);
    }
    memcpy(p + k, v->val, 4 * (size_t)v->count); /* little-endian f32 */
    k += 4 * (size_t)v->count;
    memset(p + k, 0, pl - k);
    uint8_t nonce[EML_GCM_NONCE_BYTES];
    nonce_of(c->send_seq, nonce);
    if (c->clear) {
        memset(p + pl, 0, EML_GCM_TAG_BYTES);
    } else {
        eml_status st =
            eml_gcm_seal(c->send, p, p, pl, h, EML_DMSG_HEADER, nonce);
        if (st != EML_OK) return eml_err_set(err, st, "sealing a share failed");
    }
    c->send_seq++;
    *out_len = EML_DMSG_HEADER + pl + EML_GCM_TAG_BYTES;
    return EML_OK;
}

eml_status eml_hello_parse(const uint8_t *p, size_t n, uint32_t *id,
                           uint8_t nonce[32], const char **report,
                           size_t *rlen, eml_err *err)
{
    if (n < EML_HELLO_FIXED || eml_get_le32(p) != EML_HELLO_MAGIC ||
        eml_get_le32(p + 4) != 1 ||
        eml_get_le32(p + 44) != n - EML_HELLO_FIXED)
        return eml_err_set(err, EML_ERR_FORMAT, "not a hello");
    *id = eml_get_le32(p + 8);
    memcpy(nonce, p + 12, 32);
    *report = (const char *)p + EML_HELLO_FIXED;
    *rlen = n - EML_HELLO_FIXED;
    return EML_OK;
}

const char *eml_dmsg_refusal_name(eml_dmsg_refusal r)
{
    switch (r) {
    case EML_DMSG_OK: return "accepted";
    case EML_DMSG_MALFORMED: return "malformed";
    case EML_DMSG_CROSS_PAIR: return "cross-pair";
    case EML_DMSG_CROSS_ROUND: return "cross-round";
    case EML_DMSG_REPLAYED: return "replayed";
    case EML_DMSG_REORDERED: return "reordered";
    case EML_DMSG_TAMPERED: return "tampered";
    default: return "unknown";
    }
}

static eml_status refuse(eml_dmsg_refusal *why, eml_dmsg_refusal r,
                         eml_err *err, const char *what)
{
    *why = r;
    return eml_err_set(err, EML_ERR_AUTH, "share refused (%s): %s",
                       eml_dmsg_refusal_name(r), what);
}

/* The header's own consistency: magic, version, flags, sizes. */
static int header_ok(const uint8_t *h, size_t len, uint32_t total)
{
    uint32_t flags = eml_get_le16(h + 6), count = eml_get_le32(h + 36);
    uint32_t t = eml_get_le32(h + 40), pl = eml_get_le32(h + 44);
    if (eml_get_le32(h) != EML_DMSG_MAGIC ||
        eml_get_le16(h + 4) != EML_DMSG_VERSION ||
        (flags & ~(EML_DMSG_DENSE | EML_DMSG_PADDED | EML_DMSG_CLEAR)) != 0 ||
        flags == (EML_DMSG_DENSE | EML_DMSG_PADDED) || t != total ||
        count < 1 || count > t || ((flags & EML_DMSG_DENSE) && count != t))
        return 0;
    return pl == payload_size(count, t, flags) &&
           len == EML_DMSG_HEADER + (size_t)pl + EML_GCM_TAG_BYTES;
}

eml_status eml_dmsg_open(eml_dchan *c, uint64_t round, uint32_t total,
                         const uint8_t *frame, size_t len, uint8_t **buf,
                         size_t *cap, eml_share_view *v,
                         eml_dmsg_refusal *why, eml_err *err)
{
    memset(v, 0, sizeof(*v));
    *why = EML_DMSG_OK;
    if (len < EML_DMSG_HEADER + EML_GCM_TAG_BYTES ||
        total > EML_DMSG_MAX_PARAMS)
        return refuse(why, EML_DMSG_MALFORMED, err, "too short");
    uint8_t h[EML_DMSG_HEADER]; /* read once: copy, then check */
    memcpy(h, frame, sizeof(h));
    if (!header_ok(h, len, total))
        return refuse(why, EML_DMSG_MALFORMED, err, "a bad header");
    if (eml_get_le32(h + 8) != c->peer || eml_get_le32(h + 12) != c->me)
        return refuse(why, EML_DMSG_CROSS_PAIR, err,
                      "not from this neighbour to this node");
    if (eml_get_le64(h + 16) != round)
        return refuse(why, EML_DMSG_CROSS_ROUND, err, "another round's");
    uint64_t seq = eml_get_le64(h + 24);
    if (seq < c->recv_seq)
        return refuse(why, EML_DMSG_REPLAYED, err, "an old sequence number");
    if (seq > c->recv_seq)
        return refuse(why, EML_DMSG_REORDERED, err, "a sequence number "
                                                    "ahead of the next");
    size_t pl = eml_get_le32(h + 44);
    if (pl + 8 > *cap) { /* + 8: room to align the values */
        /* A new buffer, the old one wiped: it held a neighbour's
         * parameters. */
        uint8_t *nb = malloc(pl + 8);
        if (nb == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        if (*buf != NULL) eml_wipe(*buf, *cap);
        free(*buf);
        *buf = nb;
        *cap = pl + 8;
    }
    uint32_t flags = eml_get_le16(h + 6), count = eml_get_le32(h + 36);
    if (((flags & EML_DMSG_CLEAR) != 0) != (c->clear != 0))
        return refuse(why, EML_DMSG_TAMPERED, err,
                      c->clear ? "a sealed frame on a channel in the clear"
                               : "a frame in the clear on a sealed channel");
    uint8_t nonce[EML_GCM_NONCE_BYTES];
    nonce_of(seq, nonce);
    if (c->clear)
        memcpy(*buf, frame + EML_DMSG_HEADER, pl);
    else if (eml_gcm_open(c->recv, *buf, frame + EML_DMSG_HEADER,
                          pl + EML_GCM_TAG_BYTES, h, EML_DMSG_HEADER,
                          nonce) != EML_OK)
        return refuse(why, EML_DMSG_TAMPERED, err, "authentication failed");
    if (!(flags & EML_DMSG_DENSE)) {
        const uint32_t *idx = (const uint32_t *)(void *)*buf;
        for (uint32_t i = 0; i < count; i++)
            if (idx[i] >= total || (i > 0 && idx[i] <= idx[i - 1])) {
                eml_wipe(*buf, pl);
                return refuse(why, EML_DMSG_MALFORMED, err,
                              "indices not increasing below the total");
            }
        v->idx = idx;
    }
    c->recv_seq++;
    v->sender = c->peer;
    v->degree = eml_get_le32(h + 32);
    v->total = total;
    v->count = count;
    v->val = (const float *)(void *)(*buf + (v->idx != NULL ? 4 * (size_t)count
                                                            : 0));
    return EML_OK;
}
