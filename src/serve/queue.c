/*
 * queue.c - the queue's entries between the front end and its workers
 * (serve.h, docs/serve.md, "Scale-out through Redis Streams"): the field
 * lists the host carries, the sealed request and reply bodies, and the
 * admission of a worker, whose report earns it the queue key wrapped to
 * its X25519 key.
 *
 * Trusted code, shared with the host (which only uses the field codec):
 * memory only.  Everything here reads bytes that came through Redis and
 * are hostile: a body is authenticated before a byte of it is believed,
 * then checked field by field, and a plaintext that fails is wiped.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "enclaveml/serve.h"

/* ==== field lists ==== */

eml_status eml_queue_fields_parse(const uint8_t *p, size_t len,
                                  eml_queue_field *f, size_t cap, size_t *n)
{
    *n = 0;
    if (len < 1) return EML_ERR_FORMAT;
    size_t count = p[0], at = 1;
    if (count > cap) return EML_ERR_FORMAT;
    for (size_t i = 0; i < count; i++) {
        if (len - at < 1) return EML_ERR_FORMAT;
        size_t nn = p[at++];
        if (nn == 0 || len - at < nn + 4) return EML_ERR_FORMAT;
        f[i].name = p + at;
        f[i].name_n = nn;
        at += nn;
        uint32_t vn = eml_get_le32(p + at);
        at += 4;
        if (vn > EML_QUEUE_VALUE_MAX || vn > len - at) return EML_ERR_FORMAT;
        f[i].p = p + at;
        f[i].n = vn;
        at += vn;
    }
    if (at != len) return EML_ERR_FORMAT;
    *n = count;
    return EML_OK;
}

eml_status eml_queue_fields_put(eml_http_buf *b, uint32_t conn,
                                eml_serve_kind kind, const eml_queue_field *f,
                                size_t n, eml_err *err)
{
    size_t total = 1;
    if (n > EML_QUEUE_FIELDS_MAX)
        return eml_err_set(err, EML_ERR_INVALID, "too many fields");
    for (size_t i = 0; i < n; i++) {
        if (f[i].name_n < 1 || f[i].name_n > 255 ||
            f[i].n > EML_QUEUE_VALUE_MAX)
            return eml_err_set(err, EML_ERR_INVALID, "a malformed field");
        total += 1 + f[i].name_n + 4 + f[i].n;
    }
    uint8_t head[EML_SERVE_RECORD_HEAD];
    eml_put_le32(head, conn);
    head[4] = (uint8_t)kind;
    eml_put_le32(head + 5, (uint32_t)total);
    size_t before = b->len;
    uint8_t c = (uint8_t)n;
    eml_status st = eml_http_buf_put(b, head, sizeof(head), err);
    if (st == EML_OK) st = eml_http_buf_put(b, &c, 1, err);
    for (size_t i = 0; st == EML_OK && i < n; i++) {
        uint8_t nn = (uint8_t)f[i].name_n, vn[4];
        eml_put_le32(vn, (uint32_t)f[i].n);
        st = eml_http_buf_put(b, &nn, 1, err);
        if (st == EML_OK) st = eml_http_buf_put(b, f[i].name, nn, err);
        if (st == EML_OK) st = eml_http_buf_put(b, vn, 4, err);
        if (st == EML_OK && f[i].n > 0)
            st = eml_http_buf_put(b, f[i].p, f[i].n, err);
    }
    if (st != EML_OK) b->len = before;
    return st;
}

eml_status eml_queue_fields_expect(const uint8_t *p, size_t len,
                                   const char *const *names, size_t k,
                                   eml_queue_field *out, eml_err *err)
{
    eml_queue_field f[EML_QUEUE_FIELDS_MAX];
    size_t n = 0;
    if (eml_queue_fields_parse(p, len, f, EML_QUEUE_FIELDS_MAX, &n) !=
        EML_OK)
        return eml_err_set(err, EML_ERR_FORMAT, "not a field list");
    if (n != k)
        return eml_err_set(err, EML_ERR_FORMAT, "%zu fields where %zu are "
                                                "expected", n, k);
    for (size_t i = 0; i < k; i++) {
        size_t nl = strlen(names[i]);
        if (f[i].name_n != nl || memcmp(f[i].name, names[i], nl) != 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "field %zu is not \"%s\"", i + 1, names[i]);
        out[i] = f[i];
    }
    return EML_OK;
}

int eml_queue_name_ok(const uint8_t *p, size_t n)
{
    if (n < 1 || n > EML_QUEUE_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int eml_queue_id_parse(uint8_t out[EML_QUEUE_ID_BYTES], const uint8_t *p,
                       size_t n)
{
    if (n != EML_QUEUE_ID_HEX) return -1;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return -1;
    return eml_unhex(out, EML_QUEUE_ID_BYTES, (const char *)p, n);
}

/* ==== sealed bodies ==== */

#define AAD_MAX (8 + 1 + EML_QUEUE_NAME_MAX + 2 * EML_QUEUE_ID_BYTES)

static size_t aad(uint8_t out[AAD_MAX], const char *tag,
                  const eml_queue_bind *b)
{
    size_t sl = strlen(b->stream), at = 7;
    memcpy(out, tag, 7);
    out[at++] = (uint8_t)sl;
    memcpy(out + at, b->stream, sl);
    at += sl;
    memcpy(out + at, b->id, EML_QUEUE_ID_BYTES);
    at += EML_QUEUE_ID_BYTES;
    memcpy(out + at, b->fe, EML_QUEUE_ID_BYTES);
    return at + EML_QUEUE_ID_BYTES;
}

static int bind_ok(const eml_queue_bind *b)
{
    size_t sl = b->stream != NULL ? strlen(b->stream) : 0;
    return b->key != NULL && sl >= 1 && sl <= EML_QUEUE_NAME_MAX;
}

/* nonce || AES-GCM(key, pt) || tag into a new buffer. */
static eml_status seal(const eml_queue_bind *b, const char *tag,
                       const uint8_t *pt, size_t len, uint8_t **body,
                       size_t *body_n, eml_err *err)
{
    *body = NULL;
    *body_n = 0;
    if (!bind_ok(b) || len > EML_QUEUE_VALUE_MAX - EML_QUEUE_SEAL_OVERHEAD)
        return eml_err_set(err, EML_ERR_RANGE, "a body too large to queue");
    uint8_t a[AAD_MAX];
    size_t an = aad(a, tag, b);
    uint8_t *out = malloc(len + EML_QUEUE_SEAL_OVERHEAD);
    if (out == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_random(out, EML_GCM_NONCE_BYTES);
    if (st == EML_OK)
        st = eml_aes256gcm_seal(out + EML_GCM_NONCE_BYTES, pt, len, a, an,
                                out, b->key);
    if (st != EML_OK) {
        free(out);
        return eml_err_set(err, st, "cannot seal a queue entry");
    }
    *body = out;
    *body_n = len + EML_QUEUE_SEAL_OVERHEAD;
    return EML_OK;
}

/* The plaintext of body (malloc'd, *len bytes), authenticated. */
static eml_status open_body(const eml_queue_bind *b, const char *tag,
                            const uint8_t *body, size_t body_n, size_t head,
                            uint8_t **pt, size_t *len, eml_err *err)
{
    *pt = NULL;
    *len = 0;
    if (!bind_ok(b))
        return eml_err_set(err, EML_ERR_INVALID, "no queue key");
    if (body_n < EML_QUEUE_SEAL_OVERHEAD + head ||
        body_n > EML_QUEUE_VALUE_MAX)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "a body of %zu bytes cannot be an entry's",
                           body_n);
    uint8_t a[AAD_MAX];
    size_t an = aad(a, tag, b), n = body_n - EML_QUEUE_SEAL_OVERHEAD;
    uint8_t *out = malloc(n);
    if (out == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_aes256gcm_open(out, body + EML_GCM_NONCE_BYTES,
                                       n + EML_GCM_TAG_BYTES, a, an, body,
                                       b->key);
    if (st != EML_OK) {
        free(out); /* wiped by the open */
        return eml_err_set(err, EML_ERR_AUTH,
                           "the body does not authenticate (tampered, or "
                           "another key, stream, id or front end)");
    }
    *pt = out;
    *len = n;
    return EML_OK;
}

static int all_finite(const uint8_t *p, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t bits = eml_get_le32(p + 4 * i);
        if ((bits & 0x7f800000u) == 0x7f800000u) return 0;
    }
    return 1;
}

static void floats_out(uint8_t *dst, const float *x, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], 4);
        eml_put_le32(dst + 4 * i, bits);
    }
}

static void floats_in(float *x, const uint8_t *src, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t bits = eml_get_le32(src + 4 * i);
        memcpy(&x[i], &bits, 4);
    }
}

/* n * m * 4 + head without overflow, within the value limit. */
static int body_size(size_t n, size_t m, size_t head, size_t *out)
{
    size_t lim = EML_QUEUE_VALUE_MAX - EML_QUEUE_SEAL_OVERHEAD - head;
    if (m != 0 && n > lim / 4 / m) return 0;
    *out = head + n * m * 4;
    return 1;
}

eml_status eml_queue_request_seal(const eml_queue_bind *b,
                                  eml_predict_form form, const float *x,
                                  size_t n, size_t item,
                                  const uint8_t model_sha256[32],
                                  uint8_t **body, size_t *body_n,
                                  eml_err *err)
{
    size_t len;
    if (n < 1 || n > UINT32_MAX || item < 1 || item > UINT32_MAX ||
        !body_size(n, item, EML_QUEUE_REQ_HEAD, &len))
        return eml_err_set(err, EML_ERR_RANGE, "a request too large to "
                                               "queue");
    uint8_t *pt = malloc(len);
    if (pt == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    memset(pt, 0, EML_QUEUE_REQ_HEAD);
    pt[0] = 1;
    pt[1] = (uint8_t)form;
    eml_put_le32(pt + 4, (uint32_t)n);
    eml_put_le32(pt + 8, (uint32_t)item);
    memcpy(pt + 12, model_sha256, 32);
    floats_out(pt + EML_QUEUE_REQ_HEAD, x, n * item);
    eml_status st = seal(b, "eml-req", pt, len, body, body_n, err);
    eml_wipe(pt, len);
    free(pt);
    return st;
}

eml_status eml_queue_request_open(const eml_queue_bind *b,
                                  const uint8_t *body, size_t body_n,
                                  size_t max_n, eml_predict_form *form,
                                  size_t *n, size_t *item,
                                  uint8_t model_sha256[32], float **x,
                                  eml_err *err)
{
    *x = NULL;
    uint8_t *pt = NULL;
    size_t len = 0, want = 0;
    eml_status st = open_body(b, "eml-req", body, body_n, EML_QUEUE_REQ_HEAD,
                              &pt, &len, err);
    if (st != EML_OK) return st;
    size_t nn = eml_get_le32(pt + 4), it = eml_get_le32(pt + 8);
    if (pt[0] != 1)
        st = eml_err_set(err, EML_ERR_FORMAT, "request version %u", pt[0]);
    else if (pt[1] > EML_PREDICT_RAW || pt[2] != 0 || pt[3] != 0)
        st = eml_err_set(err, EML_ERR_FORMAT, "a bad request header");
    else if (nn < 1 || nn > max_n || it < 1 ||
             !body_size(nn, it, EML_QUEUE_REQ_HEAD, &want) || want != len)
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%zu instances of %zu values in %zu bytes", nn, it,
                         len);
    else if (!all_finite(pt + EML_QUEUE_REQ_HEAD, nn * it))
        st = eml_err_set(err, EML_ERR_FORMAT, "a value that is not finite");
    else if ((*x = malloc(nn * it * sizeof(float))) == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    if (st == EML_OK) {
        floats_in(*x, pt + EML_QUEUE_REQ_HEAD, nn * it);
        *form = (eml_predict_form)pt[1];
        *n = nn;
        *item = it;
        memcpy(model_sha256, pt + 12, 32);
    }
    eml_wipe(pt, len);
    free(pt);
    return st;
}

eml_status eml_queue_reply_seal(const eml_queue_bind *b,
                                eml_queue_status status, const float *p,
                                size_t n, size_t n_out, uint8_t **body,
                                size_t *body_n, eml_err *err)
{
    size_t m = status == EML_QUEUE_OK ? n_out : 0, len;
    if (n > UINT32_MAX || m > UINT32_MAX ||
        !body_size(n, m, EML_QUEUE_REP_HEAD, &len))
        return eml_err_set(err, EML_ERR_RANGE, "a reply too large to queue");
    uint8_t *pt = malloc(len);
    if (pt == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    memset(pt, 0, EML_QUEUE_REP_HEAD);
    pt[0] = 1;
    pt[1] = (uint8_t)status;
    eml_put_le32(pt + 4, (uint32_t)n);
    eml_put_le32(pt + 8, (uint32_t)m);
    if (m > 0) floats_out(pt + EML_QUEUE_REP_HEAD, p, n * m);
    eml_status st = seal(b, "eml-rep", pt, len, body, body_n, err);
    eml_wipe(pt, len);
    free(pt);
    return st;
}

eml_status eml_queue_reply_open(const eml_queue_bind *b, const uint8_t *body,
                                size_t body_n, size_t max_n,
                                eml_queue_status *status, size_t *n,
                                size_t *n_out, float **p, eml_err *err)
{
    *p = NULL;
    uint8_t *pt = NULL;
    size_t len = 0, want = 0;
    eml_status st = open_body(b, "eml-rep", body, body_n, EML_QUEUE_REP_HEAD,
                              &pt, &len, err);
    if (st != EML_OK) return st;
    size_t nn = eml_get_le32(pt + 4), m = eml_get_le32(pt + 8);
    int ok = pt[1] == EML_QUEUE_OK;
    if (pt[0] != 1)
        st = eml_err_set(err, EML_ERR_FORMAT, "reply version %u", pt[0]);
    else if (pt[1] > EML_QUEUE_OTHER_MODEL || pt[2] != 0 || pt[3] != 0 ||
             (ok && m < 1) || (!ok && m != 0))
        st = eml_err_set(err, EML_ERR_FORMAT, "a bad reply header");
    else if (nn < 1 || nn > max_n ||
             !body_size(nn, m, EML_QUEUE_REP_HEAD, &want) || want != len)
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%zu answers of %zu values in %zu bytes", nn, m,
                         len);
    else if (!all_finite(pt + EML_QUEUE_REP_HEAD, nn * m))
        st = eml_err_set(err, EML_ERR_FORMAT, "a value that is not finite");
    else if (ok && (*p = malloc(nn * m * sizeof(float))) == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    if (st == EML_OK) {
        if (ok) floats_in(*p, pt + EML_QUEUE_REP_HEAD, nn * m);
        *status = (eml_queue_status)pt[1];
        *n = nn;
        *n_out = m;
    }
    eml_wipe(pt, len);
    free(pt);
    return st;
}

/* ==== admission ==== */

#define WRAP_MAGIC "EMLQKEY1"
#define WRAP_AAD 56 /* magic, fe, eph_pk */

eml_status eml_queue_worker_nonce(uint8_t out[32], const char *stream,
                                  const char *name)
{
    static const char tag[] = "eml-worker";
    uint8_t in[sizeof(tag) - 1 + 2 + 2 * EML_QUEUE_NAME_MAX];
    size_t sl = strlen(stream), nl = strlen(name), at = sizeof(tag) - 1;
    if (sl > EML_QUEUE_NAME_MAX || nl > EML_QUEUE_NAME_MAX)
        return EML_ERR_RANGE;
    memcpy(in, tag, at);
    in[at++] = (uint8_t)sl;
    memcpy(in + at, stream, sl);
    at += sl;
    in[at++] = (uint8_t)nl;
    memcpy(in + at, name, nl);
    return eml_sha256(out, in, at + nl);
}

/* The wrap key for one worker's session. */
static eml_status wrap_key(uint8_t key[32], const uint8_t shared[32],
                           const uint8_t fe[EML_QUEUE_ID_BYTES],
                           const uint8_t measurement[32],
                           const uint8_t session[EML_QUEUE_SESSION_BYTES],
                           const char *stream, const char *name)
{
    static const char tag[] = "enclaveml queue key v1";
    uint8_t info[sizeof(tag) - 1 + 32 + EML_QUEUE_SESSION_BYTES + 2 +
                 2 * EML_QUEUE_NAME_MAX];
    size_t sl = strlen(stream), nl = strlen(name), at = sizeof(tag) - 1;
    if (sl > EML_QUEUE_NAME_MAX || nl > EML_QUEUE_NAME_MAX)
        return EML_ERR_RANGE;
    memcpy(info, tag, at);
    memcpy(info + at, measurement, 32);
    at += 32;
    memcpy(info + at, session, EML_QUEUE_SESSION_BYTES);
    at += EML_QUEUE_SESSION_BYTES;
    info[at++] = (uint8_t)sl;
    memcpy(info + at, stream, sl);
    at += sl;
    info[at++] = (uint8_t)nl;
    memcpy(info + at, name, nl);
    return eml_hkdf_sha256(key, 32, shared, 32, fe, EML_QUEUE_ID_BYTES, info,
                           at + nl);
}

eml_status eml_queue_admit(const eml_queue_admission *a, const char *name,
                           const char *report, size_t len,
                           const uint8_t key[32],
                           const uint8_t fe[EML_QUEUE_ID_BYTES],
                           uint8_t wrapped[EML_QUEUE_WRAPPED_BYTES],
                           eml_err *err)
{
    static const uint8_t zero_nonce[EML_GCM_NONCE_BYTES];
    if (!eml_queue_name_ok((const uint8_t *)name, strlen(name)))
        return eml_err_set(err, EML_ERR_AUTH, "not a worker name");
    eml_attestation at;
    eml_err rerr = {0};
    eml_status st = eml_attestation_check(report, len, a->platform, 1, &at,
                                          &rerr);
    if (st != EML_OK)
        return eml_err_set(err, EML_ERR_AUTH, "its report: %s",
                           eml_err_msg(&rerr, st));
    if (!eml_ct_equal(at.measurement, a->measurement, 32)) {
        char mh[65];
        eml_hex(mh, at.measurement, 32);
        return eml_err_set(err, EML_ERR_AUTH,
                           "it runs another enclave (measurement %s), not "
                           "this front end's", mh);
    }
    uint8_t want[32], eph_sk[32], shared[32], wk[32];
    st = eml_queue_worker_nonce(want, a->stream, name);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    if (at.nonce_len != 32 + EML_QUEUE_SESSION_BYTES ||
        !eml_ct_equal(at.nonce, want, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "its report does not bind this stream and its "
                           "name (a report made for another queue)");
    memcpy(wrapped, WRAP_MAGIC, 8);
    memcpy(wrapped + 8, fe, EML_QUEUE_ID_BYTES);
    st = eml_random_secret(eph_sk, 32);
    if (st == EML_OK) st = eml_x25519_public(wrapped + 24, eph_sk);
    if (st == EML_OK) st = eml_x25519_shared(shared, eph_sk, at.x25519);
    if (st == EML_OK)
        st = wrap_key(wk, shared, fe, a->measurement, at.nonce + 32,
                      a->stream, name);
    if (st == EML_OK)
        st = eml_aes256gcm_seal(wrapped + WRAP_AAD, key, 32, wrapped,
                                WRAP_AAD, zero_nonce, wk);
    eml_wipe(eph_sk, sizeof(eph_sk));
    eml_wipe(shared, sizeof(shared));
    eml_wipe(wk, sizeof(wk));
    if (st != EML_OK) {
        eml_wipe(wrapped, EML_QUEUE_WRAPPED_BYTES);
        return eml_err_set(err, EML_ERR_AUTH, "cannot wrap the key to it "
                                              "(a bad X25519 key)");
    }
    return EML_OK;
}

eml_status eml_queue_key_unwrap(const uint8_t *wrapped, size_t n,
                                const uint8_t x_sk[32],
                                const uint8_t measurement[32],
                                const uint8_t session[EML_QUEUE_SESSION_BYTES],
                                const char *stream, const char *name,
                                uint8_t key[32],
                                uint8_t fe[EML_QUEUE_ID_BYTES], eml_err *err)
{
    static const uint8_t zero_nonce[EML_GCM_NONCE_BYTES];
    memset(key, 0, 32);
    if (n != EML_QUEUE_WRAPPED_BYTES || memcmp(wrapped, WRAP_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "not a wrapped queue key");
    uint8_t shared[32], wk[32];
    eml_status st = eml_x25519_shared(shared, x_sk, wrapped + 24);
    if (st == EML_OK)
        st = wrap_key(wk, shared, wrapped + 8, measurement, session, stream,
                      name);
    if (st == EML_OK)
        st = eml_aes256gcm_open(key, wrapped + WRAP_AAD, 32 + 16, wrapped,
                                WRAP_AAD, zero_nonce, wk);
    eml_wipe(shared, sizeof(shared));
    eml_wipe(wk, sizeof(wk));
    if (st != EML_OK) {
        eml_wipe(key, 32);
        return eml_err_set(err, EML_ERR_AUTH,
                           "the wrapped queue key does not open (made for "
                           "another worker, session or enclave, or "
                           "tampered)");
    }
    memcpy(fe, wrapped + 8, EML_QUEUE_ID_BYTES);
    return EML_OK;
}
