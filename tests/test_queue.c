/*
 * test_queue.c - the serving queue's trusted parts (serve.h, queue.c,
 * queue_worker.c, server_queue.c), without Redis: the records travel
 * between a front end's server and a worker here, as the hosts would
 * carry them.
 *   - field lists: round trip; every truncation, a wrong name, order or
 *     count refused;
 *   - request and reply bodies: round trip; every single-byte flip,
 *     every truncation, another key, id, front end, stream or direction
 *     refused; plaintexts that authenticate but break a rule (version,
 *     form, reserved bits, counts, length, NaN) refused;
 *   - admission: the wrapped key opens only with the worker's X25519 key,
 *     session, name and stream; a report of another measurement, signed
 *     by another platform key, or binding another queue is refused;
 *   - the whole path: a client's predict through the front end, a worker
 *     and back equals the model's own forward pass; hostile entries are
 *     dropped and counted by the worker;
 *   - never twice: two replies for one id give one answer (the second a
 *     duplicate); a tampered reply is counted as malformed; a request
 *     nobody answers gets 504, and its late reply is a duplicate; a
 *     request whose client left is completed quietly.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/le.h"
#include "serve_util.h"

static serve_fixture F;
static const char stream[] = "q";

static int setup(void **state)
{
    (void)state;
    return serve_fixture_init(&F);
}

static int teardown(void **state)
{
    (void)state;
    serve_fixture_free(&F);
    return 0;
}

/* ==== field lists ==== */

static void test_fields(void **state)
{
    (void)state;
    eml_http_buf b;
    eml_http_buf_init(&b, 1 << 16);
    eml_queue_field f[3] = {{(const uint8_t *)"id", 2, (const uint8_t *)"a",
                             1},
                            {(const uint8_t *)"fe", 2, (const uint8_t *)"",
                             0},
                            {(const uint8_t *)"body", 4,
                             (const uint8_t *)"xyz", 3}};
    assert_int_equal(eml_queue_fields_put(&b, 7, EML_SERVE_ENQUEUE, f, 3,
                                          NULL),
                     EML_OK);
    size_t off = 0;
    eml_serve_record r;
    assert_int_equal(eml_serve_record_next(b.p, b.len, &off, &r), EML_OK);
    assert_int_equal((int)r.conn, 7);
    assert_int_equal(r.kind, EML_SERVE_ENQUEUE);
    static const char *const names[3] = {"id", "fe", "body"};
    eml_queue_field g[3];
    eml_err err = {0};
    assert_int_equal(eml_queue_fields_expect(r.p, r.n, names, 3, g, &err),
                     EML_OK);
    assert_int_equal((int)g[2].n, 3);
    assert_memory_equal(g[2].p, "xyz", 3);
    assert_int_equal((int)g[1].n, 0);
    /* every truncation, and a byte more */
    eml_queue_field h[EML_QUEUE_FIELDS_MAX];
    size_t n;
    for (size_t len = 0; len < r.n; len++)
        assert_int_equal(eml_queue_fields_parse(r.p, len, h,
                                                EML_QUEUE_FIELDS_MAX, &n),
                         EML_ERR_FORMAT);
    uint8_t more[64];
    memcpy(more, r.p, r.n);
    more[r.n] = 0;
    assert_int_equal(eml_queue_fields_parse(more, r.n + 1, h,
                                            EML_QUEUE_FIELDS_MAX, &n),
                     EML_ERR_FORMAT);
    /* another order, another count, another name */
    static const char *const order[3] = {"fe", "id", "body"};
    static const char *const two[2] = {"id", "fe"};
    static const char *const other[3] = {"id", "fe", "bodx"};
    assert_int_equal(eml_queue_fields_expect(r.p, r.n, order, 3, g, NULL),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_queue_fields_expect(r.p, r.n, two, 2, g, NULL),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_queue_fields_expect(r.p, r.n, other, 3, g, NULL),
                     EML_ERR_FORMAT);
    /* more fields than room; an empty name */
    assert_int_equal(eml_queue_fields_parse(r.p, r.n, h, 2, &n),
                     EML_ERR_FORMAT);
    more[1] = 0;
    assert_int_equal(eml_queue_fields_parse(more, r.n, h,
                                            EML_QUEUE_FIELDS_MAX, &n),
                     EML_ERR_FORMAT);
    /* ids: 32 lowercase hex digits only */
    uint8_t id[16];
    assert_int_equal(eml_queue_id_parse(id, (const uint8_t *)
                                        "00112233445566778899aabbccddeeff",
                                        32),
                     0);
    assert_int_equal(eml_queue_id_parse(id, (const uint8_t *)
                                        "00112233445566778899AABBCCDDEEFF",
                                        32),
                     -1);
    assert_int_equal(eml_queue_id_parse(id, (const uint8_t *)"0011", 4), -1);
    assert_true(eml_queue_name_ok((const uint8_t *)"a:b-c_d.e", 9));
    assert_false(eml_queue_name_ok((const uint8_t *)"a b", 3));
    assert_false(eml_queue_name_ok((const uint8_t *)"", 0));
    eml_http_buf_free(&b);
}

/* ==== bodies ==== */

static void bind_init(eml_queue_bind *b, const uint8_t *key, uint8_t tag)
{
    b->key = key;
    b->stream = stream;
    memset(b->id, tag, sizeof(b->id));
    memset(b->fe, tag ^ 0x55, sizeof(b->fe));
}

static void test_request_codec(void **state)
{
    (void)state;
    uint8_t key[32], other_key[32];
    assert_int_equal(eml_random(key, 32), EML_OK);
    assert_int_equal(eml_random(other_key, 32), EML_OK);
    eml_queue_bind b;
    bind_init(&b, key, 1);
    float x[3 * 5];
    for (int i = 0; i < 15; i++) x[i] = (float)i * 0.25f - 1.0f;
    uint8_t digest[32], got_digest[32];
    memset(digest, 0xd1, 32);
    uint8_t *body = NULL;
    size_t bn = 0;
    eml_err err = {0};
    assert_int_equal(eml_queue_request_seal(&b, EML_PREDICT_COLUMNS, x, 3, 5,
                                            digest, &body, &bn, &err),
                     EML_OK);
    assert_int_equal((int)bn, 28 + EML_QUEUE_REQ_HEAD + 15 * 4);
    eml_predict_form form;
    size_t n = 0, item = 0;
    float *y = NULL;
    assert_int_equal(eml_queue_request_open(&b, body, bn, 16, &form, &n,
                                            &item, got_digest, &y, &err),
                     EML_OK);
    assert_int_equal(form, EML_PREDICT_COLUMNS);
    assert_int_equal((int)n, 3);
    assert_int_equal((int)item, 5);
    assert_memory_equal(got_digest, digest, 32);
    assert_memory_equal(y, x, sizeof(x));
    free(y);
    /* every single-byte flip: refused, nothing out */
    for (size_t i = 0; i < bn; i++) {
        body[i] ^= 0x01;
        y = (float *)1;
        assert_int_equal(eml_queue_request_open(&b, body, bn, 16, &form, &n,
                                                &item, got_digest, &y, NULL),
                         EML_ERR_AUTH);
        assert_null(y);
        body[i] ^= 0x01;
    }
    /* every truncation */
    for (size_t len = 0; len < bn; len++)
        assert_int_not_equal(eml_queue_request_open(&b, body, len, 16, &form,
                                                    &n, &item, got_digest,
                                                    &y, NULL),
                             EML_OK);
    /* another key, id, front end, stream */
    eml_queue_bind o = b;
    o.key = other_key;
    assert_int_equal(eml_queue_request_open(&o, body, bn, 16, &form, &n,
                                            &item, got_digest, &y, NULL),
                     EML_ERR_AUTH);
    o = b;
    o.id[15] ^= 1;
    assert_int_equal(eml_queue_request_open(&o, body, bn, 16, &form, &n,
                                            &item, got_digest, &y, NULL),
                     EML_ERR_AUTH);
    o = b;
    o.fe[0] ^= 1;
    assert_int_equal(eml_queue_request_open(&o, body, bn, 16, &form, &n,
                                            &item, got_digest, &y, NULL),
                     EML_ERR_AUTH);
    o = b;
    o.stream = "q2";
    assert_int_equal(eml_queue_request_open(&o, body, bn, 16, &form, &n,
                                            &item, got_digest, &y, &err),
                     EML_ERR_AUTH);
    printf("another stream: %s\n", err.msg);
    /* a request opened as a reply (the direction is in the AAD) */
    eml_queue_status qs;
    size_t n_out;
    assert_int_equal(eml_queue_reply_open(&b, body, bn, 16, &qs, &n, &n_out,
                                          &y, NULL),
                     EML_ERR_AUTH);
    /* more instances than allowed */
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_queue_request_open(&b, body, bn, 2, &form, &n,
                                            &item, got_digest, &y, &err),
                     EML_ERR_FORMAT);
    free(body);
}

/* A body sealed as the docs say, around a plaintext of our own. */
static size_t seal_raw(uint8_t *out, const char *tag, const eml_queue_bind *b,
                       const uint8_t *pt, size_t len)
{
    uint8_t aad[8 + 64 + 32];
    size_t sl = strlen(b->stream), an = 7;
    memcpy(aad, tag, 7);
    aad[an++] = (uint8_t)sl;
    memcpy(aad + an, b->stream, sl);
    an += sl;
    memcpy(aad + an, b->id, 16);
    memcpy(aad + an + 16, b->fe, 16);
    an += 32;
    assert_int_equal(eml_random(out, 12), EML_OK);
    assert_int_equal(eml_aes256gcm_seal(out + 12, pt, len, aad, an, out,
                                        b->key),
                     EML_OK);
    return len + 28;
}

static void test_plaintext_rules(void **state)
{
    (void)state;
    uint8_t key[32];
    assert_int_equal(eml_random(key, 32), EML_OK);
    eml_queue_bind b;
    bind_init(&b, key, 9);
    uint8_t pt[EML_QUEUE_REQ_HEAD + 8], body[sizeof(pt) + 28];
    uint8_t digest[32];
    eml_predict_form form;
    size_t n, item;
    float *y = NULL;
    /* a valid one first: n 1, item 2 */
    memset(pt, 0, sizeof(pt));
    pt[0] = 1;
    eml_put_le32(pt + 4, 1);
    eml_put_le32(pt + 8, 2);
    size_t bn = seal_raw(body, "eml-req", &b, pt, sizeof(pt));
    assert_int_equal(eml_queue_request_open(&b, body, bn, 4, &form, &n,
                                            &item, digest, &y, NULL),
                     EML_OK);
    free(y);
    struct {
        size_t at;
        uint8_t v;
        const char *what;
    } bad[] = {{0, 2, "version"}, {1, 3, "form"}, {2, 1, "reserved"},
               {3, 1, "reserved"}, {4, 2, "n"}, {4, 0, "n 0"},
               {8, 3, "item"}, {8, 0, "item 0"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t q[sizeof(pt)];
        memcpy(q, pt, sizeof(pt));
        q[bad[i].at] = bad[i].v;
        bn = seal_raw(body, "eml-req", &b, q, sizeof(q));
        eml_err err = {0};
        assert_int_equal(eml_queue_request_open(&b, body, bn, 4, &form, &n,
                                                &item, digest, &y, &err),
                         EML_ERR_FORMAT);
        printf("%s: %s\n", bad[i].what, err.msg);
    }
    /* a NaN among the values */
    uint8_t q[sizeof(pt)];
    memcpy(q, pt, sizeof(pt));
    eml_put_le32(q + EML_QUEUE_REQ_HEAD + 4, 0x7fc00000u);
    bn = seal_raw(body, "eml-req", &b, q, sizeof(q));
    assert_int_equal(eml_queue_request_open(&b, body, bn, 4, &form, &n,
                                            &item, digest, &y, NULL),
                     EML_ERR_FORMAT);
    /* replies: round trip, flips, a status without values */
    float p[2 * 3] = {0.1f, 0.2f, 0.7f, 0.3f, 0.3f, 0.4f}, *r = NULL;
    uint8_t *rb = NULL;
    size_t rn = 0, n_out = 0;
    eml_queue_status st;
    assert_int_equal(eml_queue_reply_seal(&b, EML_QUEUE_OK, p, 2, 3, &rb, &rn,
                                          NULL),
                     EML_OK);
    assert_int_equal(eml_queue_reply_open(&b, rb, rn, 4, &st, &n, &n_out, &r,
                                          NULL),
                     EML_OK);
    assert_int_equal(st, EML_QUEUE_OK);
    assert_int_equal((int)n, 2);
    assert_int_equal((int)n_out, 3);
    assert_memory_equal(r, p, sizeof(p));
    free(r);
    for (size_t i = 0; i < rn; i++) {
        rb[i] ^= 0x80;
        assert_int_equal(eml_queue_reply_open(&b, rb, rn, 4, &st, &n, &n_out,
                                              &r, NULL),
                         EML_ERR_AUTH);
        rb[i] ^= 0x80;
    }
    for (size_t len = 0; len < rn; len++)
        assert_int_not_equal(eml_queue_reply_open(&b, rb, len, 4, &st, &n,
                                                  &n_out, &r, NULL),
                             EML_OK);
    free(rb);
    assert_int_equal(eml_queue_reply_seal(&b, EML_QUEUE_OTHER_MODEL, NULL, 2,
                                          3, &rb, &rn, NULL),
                     EML_OK);
    assert_int_equal(eml_queue_reply_open(&b, rb, rn, 4, &st, &n, &n_out, &r,
                                          NULL),
                     EML_OK);
    assert_int_equal(st, EML_QUEUE_OTHER_MODEL);
    assert_null(r);
    assert_int_equal((int)n_out, 0);
    free(rb);
    /* a reply whose status is OK but carries no values */
    uint8_t rp[EML_QUEUE_REP_HEAD] = {1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    uint8_t rbody[sizeof(rp) + 28];
    rn = seal_raw(rbody, "eml-rep", &b, rp, sizeof(rp));
    assert_int_equal(eml_queue_reply_open(&b, rbody, rn, 4, &st, &n, &n_out,
                                          &r, NULL),
                     EML_ERR_FORMAT);
}

/* ==== admission ==== */

/* A worker's report: measurement meas, signed by platform sk (pk). */
static char *worker_report(const uint8_t meas[32], const uint8_t psk[32],
                           const uint8_t ppk[32], const uint8_t x_pk[32],
                           const char *strm, const char *name,
                           const uint8_t session[16], size_t *len)
{
    eml_report_keys k;
    memset(&k, 0, sizeof(k));
    memcpy(k.measurement, meas, 32);
    memcpy(k.x25519, x_pk, 32);
    memset(k.ed25519, 0x42, 32);
    memcpy(k.platform_pk, ppk, 32);
    k.sign_sk = psk;
    k.sim = 1;
    k.policy = "backend=sim;heap_mb=64";
    uint8_t nonce[48];
    assert_int_equal(eml_queue_worker_nonce(nonce, strm, name), EML_OK);
    memcpy(nonce + 32, session, 16);
    char *r = NULL;
    eml_err err = {0};
    assert_int_equal(eml_attestation_make(&k, nonce, 48, &r, len, &err),
                     EML_OK);
    return r;
}

static void test_admission(void **state)
{
    (void)state;
    uint8_t x_sk[32], x_pk[32], other_sk[32], other_pk[32], session[16];
    uint8_t key[32], fe[16], wrapped[EML_QUEUE_WRAPPED_BYTES];
    assert_int_equal(eml_x25519_keygen(x_sk, x_pk), EML_OK);
    assert_int_equal(eml_x25519_keygen(other_sk, other_pk), EML_OK);
    assert_int_equal(eml_random(session, 16), EML_OK);
    assert_int_equal(eml_random(key, 32), EML_OK);
    assert_int_equal(eml_random(fe, 16), EML_OK);
    eml_platform_key pk = {{0}, "sim"};
    memcpy(pk.pk, F.platform_pk, 32);
    eml_queue_admission a = {&pk, F.measurement, stream};
    size_t len = 0;
    char *rep = worker_report(F.measurement, F.platform_sk, F.platform_pk,
                              x_pk, stream, "w1", session, &len);
    eml_err err = {0};
    assert_int_equal(eml_queue_admit(&a, "w1", rep, len, key, fe, wrapped,
                                     &err),
                     EML_OK);
    uint8_t k2[32], fe2[16];
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), x_sk,
                                          F.measurement, session, stream,
                                          "w1", k2, fe2, &err),
                     EML_OK);
    assert_memory_equal(k2, key, 32);
    assert_memory_equal(fe2, fe, 16);
    /* only with its key, session, name, stream and measurement */
    uint8_t other_session[16];
    memcpy(other_session, session, 16);
    other_session[0] ^= 1;
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), other_sk,
                                          F.measurement, session, stream,
                                          "w1", k2, fe2, NULL),
                     EML_ERR_AUTH);
    assert_true(eml_is_zero(k2, 32));
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), x_sk,
                                          F.measurement, other_session,
                                          stream, "w1", k2, fe2, NULL),
                     EML_ERR_AUTH);
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), x_sk,
                                          F.measurement, session, stream,
                                          "w2", k2, fe2, NULL),
                     EML_ERR_AUTH);
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), x_sk,
                                          F.measurement, session, "q2", "w1",
                                          k2, fe2, NULL),
                     EML_ERR_AUTH);
    uint8_t meas2[32];
    memcpy(meas2, F.measurement, 32);
    meas2[31] ^= 1;
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped), x_sk,
                                          meas2, session, stream, "w1", k2,
                                          fe2, NULL),
                     EML_ERR_AUTH);
    for (size_t i = 0; i < sizeof(wrapped); i++) {
        wrapped[i] ^= 0x10;
        assert_int_not_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped),
                                                  x_sk, F.measurement,
                                                  session, stream, "w1", k2,
                                                  fe2, NULL),
                             EML_OK);
        wrapped[i] ^= 0x10;
    }
    assert_int_equal(eml_queue_key_unwrap(wrapped, sizeof(wrapped) - 1, x_sk,
                                          F.measurement, session, stream,
                                          "w1", k2, fe2, NULL),
                     EML_ERR_FORMAT);
    /* the same report for another name: it binds w1 */
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_queue_admit(&a, "w2", rep, len, key, fe, wrapped,
                                     &err),
                     EML_ERR_AUTH);
    printf("another name: %s\n", err.msg);
    free(rep);
    /* a report of another measurement */
    rep = worker_report(meas2, F.platform_sk, F.platform_pk, x_pk, stream,
                        "w1", session, &len);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_queue_admit(&a, "w1", rep, len, key, fe, wrapped,
                                     &err),
                     EML_ERR_AUTH);
    printf("another measurement: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "another enclave"));
    free(rep);
    /* a report signed by another platform key */
    uint8_t psk[32], ppk[32];
    assert_int_equal(eml_ed25519_keygen(psk, ppk), EML_OK);
    rep = worker_report(F.measurement, psk, ppk, x_pk, stream, "w1", session,
                        &len);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_queue_admit(&a, "w1", rep, len, key, fe, wrapped,
                                     &err),
                     EML_ERR_AUTH);
    printf("another platform: %s\n", err.msg);
    free(rep);
    /* a report for another stream */
    rep = worker_report(F.measurement, F.platform_sk, F.platform_pk, x_pk,
                        "q2", "w1", session, &len);
    assert_int_equal(eml_queue_admit(&a, "w1", rep, len, key, fe, wrapped,
                                     NULL),
                     EML_ERR_AUTH);
    /* one byte of the report changed */
    rep[len / 2] ^= 1;
    assert_int_equal(eml_queue_admit(&a, "w1", rep, len, key, fe, wrapped,
                                     NULL),
                     EML_ERR_AUTH);
    free(rep);
}

/* ==== the whole path, in memory ==== */

/* One SERVE_IO turn of s: the clients' bytes and extra records in; SEND
 * and CLOSE to the clients, queue records (ENQUEUE, ADMIT) appended to
 * q.  Returns the number of log lines. */
static int turn(eml_server *s, mem_client *cs, int n, uint64_t now,
                const eml_http_buf *extra, eml_http_buf *q)
{
    eml_http_buf ev, out;
    eml_http_buf_init(&ev, EML_SERVE_IO_MAX);
    eml_http_buf_init(&out, EML_SERVE_IO_MAX);
    if (extra != NULL && extra->len > 0)
        assert_int_equal(eml_http_buf_put(&ev, extra->p, extra->len, NULL),
                         EML_OK);
    for (int i = 0; i < n; i++)
        if (!cs[i].closed) mem_client_flush(&cs[i], &ev);
    eml_err err = {0};
    uint64_t dl = 0;
    eml_status st = eml_server_io(s, now, ev.p, ev.len, &out, &dl, &err);
    if (st != EML_OK) fail_msg("server: %s", eml_err_msg(&err, st));
    size_t off = 0;
    eml_serve_record r;
    int logs = 0;
    while (eml_serve_record_next(out.p, out.len, &off, &r) == EML_OK) {
        if (r.kind == EML_SERVE_LOG) {
            printf("  log: %.*s\n", (int)r.n, (const char *)r.p);
            logs++;
        } else if (r.kind == EML_SERVE_ENQUEUE || r.kind == EML_SERVE_ADMIT) {
            assert_non_null(q);
            assert_int_equal(eml_serve_record_put(q, r.conn, r.kind, r.p,
                                                  r.n, NULL),
                             EML_OK);
        }
        for (int i = 0; i < n; i++) {
            if (cs[i].id != r.conn) continue;
            if (r.kind == EML_SERVE_SEND)
                assert_true(BIO_write(cs[i].in, r.p, (int)r.n) == (int)r.n);
            if (r.kind == EML_SERVE_CLOSE) cs[i].closed = 1;
        }
    }
    for (int i = 0; i < n; i++) mem_client_read(&cs[i]);
    eml_http_buf_free(&ev);
    eml_http_buf_free(&out);
    return logs;
}

/* Records of q, rekinded (ENQUEUE -> ENTRY with conn = index, ANSWER ->
 * REPLY), appended to out; how many. */
static int rekind(const eml_http_buf *q, eml_serve_kind from,
                  eml_serve_kind to, eml_http_buf *out)
{
    size_t off = 0;
    eml_serve_record r;
    int k = 0;
    while (eml_serve_record_next(q->p, q->len, &off, &r) == EML_OK)
        if (r.kind == from)
            assert_int_equal(eml_serve_record_put(out, (uint32_t)k++, to,
                                                  r.p, r.n, NULL),
                             EML_OK);
    return k;
}

typedef struct rig {
    eml_server *s;
    eml_qworker *w;
    uint8_t x_sk[32], x_pk[32], fe[16];
    mem_client cs[3];
} rig;

/* A server with its queue on, a worker it admitted, three clients. */
static void rig_init(rig *g)
{
    memset(g, 0, sizeof(*g));
    eml_server_opts o;
    eml_server_opts_default(&o);
    o.max_batch = 8;
    o.max_conns = 8;
    o.kernels = EML_KERNELS_REF;
    o.limits.max_body = 64 * 1024;
    eml_err err = {0};
    assert_int_equal(eml_server_new(F.model, F.tls, &o, &g->s, &err), EML_OK);
    eml_server_queue_opts qo;
    memset(&qo, 0, sizeof(qo));
    snprintf(qo.stream, sizeof(qo.stream), "%s", stream);
    qo.timeout_ms = 1000;
    memcpy(qo.platform.pk, F.platform_pk, 32);
    qo.platform.backend = "sim";
    memcpy(qo.measurement, F.measurement, 32);
    assert_int_equal(eml_server_queue_start(g->s, &qo, g->fe, &err), EML_OK);
    eml_qworker_opts wo;
    memset(&wo, 0, sizeof(wo));
    snprintf(wo.stream, sizeof(wo.stream), "%s", stream);
    snprintf(wo.name, sizeof(wo.name), "w1");
    wo.max_batch = 4;
    wo.max_instances = 64;
    wo.kernels = EML_KERNELS_REF;
    assert_int_equal(eml_qworker_new(F.model, &wo, &g->w, &err), EML_OK);
    assert_int_equal(eml_x25519_keygen(g->x_sk, g->x_pk), EML_OK);
    uint8_t nonce[48];
    eml_qworker_nonce(g->w, nonce);
    size_t len = 0;
    char *rep = worker_report(F.measurement, F.platform_sk, F.platform_pk,
                              g->x_pk, stream, "w1", nonce + 32, &len);
    eml_http_buf ev, q;
    eml_http_buf_init(&ev, 1 << 20);
    eml_http_buf_init(&q, 1 << 20);
    eml_queue_field f[2] = {{(const uint8_t *)"name", 4,
                             (const uint8_t *)"w1", 2},
                            {(const uint8_t *)"report", 6,
                             (const uint8_t *)rep, len}};
    assert_int_equal(eml_queue_fields_put(&ev, 0, EML_SERVE_WORKER, f, 2,
                                          NULL),
                     EML_OK);
    free(rep);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mem_client_new(&g->cs[i], 10 + (uint32_t)i), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(eml_serve_record_put(&ev, g->cs[i].id,
                                              EML_SERVE_OPEN, NULL, 0, NULL),
                         EML_OK);
    turn(g->s, g->cs, 3, 1000, &ev, &q);
    for (int round = 0; round < 4; round++)
        turn(g->s, g->cs, 3, 1000, NULL, NULL);
    /* the ADMIT record: the worker opens the key in it */
    size_t off = 0;
    eml_serve_record r;
    assert_int_equal(eml_serve_record_next(q.p, q.len, &off, &r), EML_OK);
    assert_int_equal(r.kind, EML_SERVE_ADMIT);
    static const char *const names[2] = {"name", "key"};
    eml_queue_field k[2];
    assert_int_equal(eml_queue_fields_expect(r.p, r.n, names, 2, k, NULL),
                     EML_OK);
    uint8_t fe[16];
    assert_int_equal(eml_qworker_set_key(g->w, k[1].p, k[1].n, g->x_sk,
                                         F.measurement, fe, &err),
                     EML_OK);
    assert_memory_equal(fe, g->fe, 16);
    assert_int_equal((int)eml_server_queue_metrics(g->s)->admitted, 1);
    eml_http_buf_free(&ev);
    eml_http_buf_free(&q);
}

static void rig_free(rig *g)
{
    for (int i = 0; i < 3; i++) mem_client_free(&g->cs[i]);
    eml_qworker_free(g->w);
    eml_server_free(g->s);
}

/* A raw float32 predict of n images x. */
static void predict(mem_client *c, const float *x, int n)
{
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/models/model:predict HTTP/1.1\r\nHost: e\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      "Content-Length: %d\r\n\r\n", n * 64 * 4);
    assert_int_equal(mem_client_write(c, head, (size_t)hn), 0);
    assert_int_equal(mem_client_write(c, x, (size_t)n * 64 * 4), 0);
}

/* The worker's outputs for the entries in: ANSWERs become REPLY records
 * in replies; the number of DROPs. */
static int work(eml_qworker *w, const eml_http_buf *in, eml_http_buf *replies)
{
    eml_http_buf out;
    eml_http_buf_init(&out, EML_SERVE_IO_MAX);
    eml_err err = {0};
    eml_status st = eml_qworker_io(w, in->p, in->len, &out, &err);
    if (st != EML_OK) fail_msg("worker: %s", eml_err_msg(&err, st));
    size_t off = 0;
    eml_serve_record r;
    int drops = 0;
    while (eml_serve_record_next(out.p, out.len, &off, &r) == EML_OK) {
        if (r.kind == EML_SERVE_DROP) drops++;
        if (r.kind == EML_SERVE_LOG)
            printf("  worker: %.*s\n", (int)r.n, (const char *)r.p);
    }
    rekind(&out, EML_SERVE_ANSWER, EML_SERVE_REPLY, replies);
    eml_http_buf_free(&out);
    return drops;
}

/* The model's own probabilities for images x (n of them). */
static void direct(const float *x, int n, float *p)
{
    eml_net *ws = NULL;
    eml_err err = {0};
    assert_int_equal(eml_model_workspace(F.model, EML_KERNELS_REF, n, &ws,
                                         &err),
                     EML_OK);
    memcpy(eml_net_input(ws), x, (size_t)n * 64 * sizeof(float));
    assert_int_equal(eml_net_forward(ws, n, 0), EML_OK);
    memcpy(p, eml_net_output(ws), (size_t)n * 4 * sizeof(float));
    eml_net_free(ws);
}

/* c's one answer: its status, and its raw probabilities into p. */
static int answer_of(const mem_client *c, float *p, size_t n)
{
    if (c->got_n < 12 || memcmp(c->got, "HTTP/1.1 ", 9) != 0) return -1;
    const char *b = strstr((const char *)c->got, "\r\n\r\n");
    if (b != NULL && p != NULL) memcpy(p, b + 4, n * sizeof(float));
    return atoi((const char *)c->got + 9);
}

static int answers(const mem_client *c)
{
    int k = 0;
    for (size_t i = 0; i + 9 <= c->got_n; i++)
        k += memcmp(c->got + i, "HTTP/1.1 ", 9) == 0;
    return k;
}

static void test_queue_path(void **state)
{
    (void)state;
    rig g;
    rig_init(&g);
    float x[8 * 64], want[8 * 4], got[8 * 4];
    eml_rng r;
    eml_rng_seed(&r, 4);
    for (int i = 0; i < 8 * 64; i++) x[i] = eml_rng_uniform(&r);
    direct(x, 8, want);
    predict(&g.cs[0], x, 3);          /* 3 images */
    predict(&g.cs[1], x + 3 * 64, 5); /* 5: more than the worker's batch */
    eml_http_buf q, entries, replies;
    eml_http_buf_init(&q, EML_SERVE_IO_MAX);
    eml_http_buf_init(&entries, EML_SERVE_IO_MAX);
    eml_http_buf_init(&replies, EML_SERVE_IO_MAX);
    turn(g.s, g.cs, 3, 2000, NULL, &q);
    assert_int_equal(rekind(&q, EML_SERVE_ENQUEUE, EML_SERVE_ENTRY,
                            &entries),
                     2);
    assert_int_equal((int)g.cs[0].got_n, 0); /* it waits for a worker */
    /* and two hostile entries: garbage, and entry 0 with a byte flipped */
    eml_queue_field junk = {(const uint8_t *)"foo", 3,
                            (const uint8_t *)"bar", 3};
    assert_int_equal(eml_queue_fields_put(&entries, 2, EML_SERVE_ENTRY,
                                          &junk, 1, NULL),
                     EML_OK);
    size_t off = 0;
    eml_serve_record e0;
    assert_int_equal(eml_serve_record_next(entries.p, entries.len, &off,
                                           &e0), EML_OK);
    uint8_t *bad = malloc(e0.n);
    memcpy(bad, e0.p, e0.n);
    bad[e0.n - 20] ^= 4; /* in the body's tag */
    assert_int_equal(eml_serve_record_put(&entries, 3, EML_SERVE_ENTRY, bad,
                                          e0.n, NULL),
                     EML_OK);
    free(bad);
    assert_int_equal(work(g.w, &entries, &replies), 2);
    uint64_t done, malformed;
    eml_qworker_counts(g.w, &done, &malformed);
    assert_int_equal((int)done, 2);
    assert_int_equal((int)malformed, 2);
    turn(g.s, g.cs, 3, 2010, &replies, NULL);
    assert_int_equal(answer_of(&g.cs[0], got, 3 * 4), 200);
    assert_int_equal(answer_of(&g.cs[1], got + 3 * 4, 5 * 4), 200);
    double worst = 0;
    for (int i = 0; i < 8 * 4; i++)
        worst = fmax(worst, fabs((double)got[i] - (double)want[i]));
    printf("through the queue: max difference %g\n", worst);
    assert_true(worst < 1e-6);
    const eml_queue_metrics *m = eml_server_queue_metrics(g.s);
    assert_int_equal((int)m->sent, 2);
    assert_int_equal((int)m->answered, 2);
    /* every single-byte flip of an entry's bytes: dropped or (a flip in
     * the name of a field) still dropped; never answered */
    for (size_t i = 0; i < e0.n; i++) {
        eml_http_buf one, none;
        eml_http_buf_init(&one, 1 << 20);
        eml_http_buf_init(&none, 1 << 20);
        uint8_t *b = malloc(e0.n);
        memcpy(b, e0.p, e0.n);
        b[i] ^= 0x20;
        assert_int_equal(eml_serve_record_put(&one, 0, EML_SERVE_ENTRY, b,
                                              e0.n, NULL),
                         EML_OK);
        assert_int_equal(work(g.w, &one, &none), 1);
        assert_int_equal((int)none.len, 0);
        free(b);
        eml_http_buf_free(&one);
        eml_http_buf_free(&none);
    }
    eml_http_buf_free(&q);
    eml_http_buf_free(&entries);
    eml_http_buf_free(&replies);
    rig_free(&g);
}

static void test_never_twice(void **state)
{
    (void)state;
    rig g;
    rig_init(&g);
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)i / 64.0f;
    eml_http_buf q, entries, replies;
    eml_http_buf_init(&q, EML_SERVE_IO_MAX);
    eml_http_buf_init(&entries, EML_SERVE_IO_MAX);
    eml_http_buf_init(&replies, EML_SERVE_IO_MAX);
    /* two replies for one id (a claimed entry the first worker finished
     * as well), in one turn: one answer, one duplicate */
    predict(&g.cs[0], x, 1);
    turn(g.s, g.cs, 3, 2000, NULL, &q);
    rekind(&q, EML_SERVE_ENQUEUE, EML_SERVE_ENTRY, &entries);
    work(g.w, &entries, &replies);
    work(g.w, &entries, &replies);
    turn(g.s, g.cs, 3, 2001, &replies, NULL);
    turn(g.s, g.cs, 3, 2002, NULL, NULL);
    assert_int_equal(answers(&g.cs[0]), 1);
    assert_int_equal(answer_of(&g.cs[0], NULL, 0), 200);
    const eml_queue_metrics *m = eml_server_queue_metrics(g.s);
    assert_int_equal((int)m->answered, 1);
    assert_int_equal((int)m->duplicates, 1);
    /* the same reply with a byte flipped: malformed, counted */
    uint8_t *b = malloc(replies.len);
    memcpy(b, replies.p, replies.len);
    b[replies.len - 3] ^= 1;
    eml_http_buf one;
    eml_http_buf_init(&one, 1 << 20);
    assert_int_equal(eml_http_buf_put(&one, b, replies.len / 2, NULL),
                     EML_OK);
    free(b);
    one.p[one.len - 3] ^= 1; /* inside the first reply's body */
    assert_int_equal(turn(g.s, g.cs, 3, 2003, &one, NULL), 1);
    assert_int_equal((int)eml_server_metrics(g.s)->stream_malformed, 1);
    assert_int_equal((int)m->duplicates, 1);
    /* no reply in time: 504; the late reply is a duplicate */
    eml_http_buf_reset(&q);
    eml_http_buf_reset(&entries);
    eml_http_buf_reset(&replies);
    predict(&g.cs[1], x, 1);
    turn(g.s, g.cs, 3, 3000, NULL, &q);
    rekind(&q, EML_SERVE_ENQUEUE, EML_SERVE_ENTRY, &entries);
    turn(g.s, g.cs, 3, 3999, NULL, NULL);
    assert_int_equal((int)g.cs[1].got_n, 0);
    turn(g.s, g.cs, 3, 4000, NULL, NULL);
    assert_int_equal(answer_of(&g.cs[1], NULL, 0), 504);
    assert_non_null(strstr((const char *)g.cs[1].got,
                           "{\"error\": \"no worker answered within 1000 "
                           "ms\"}"));
    assert_int_equal((int)m->timeouts, 1);
    work(g.w, &entries, &replies);
    turn(g.s, g.cs, 3, 4001, &replies, NULL);
    assert_int_equal(answers(&g.cs[1]), 1);
    assert_int_equal((int)m->duplicates, 2);
    /* a client that went away: its request completes quietly */
    eml_http_buf_reset(&q);
    eml_http_buf_reset(&entries);
    eml_http_buf_reset(&replies);
    predict(&g.cs[2], x, 1);
    turn(g.s, g.cs, 3, 5000, NULL, &q);
    rekind(&q, EML_SERVE_ENQUEUE, EML_SERVE_ENTRY, &entries);
    eml_http_buf gone;
    eml_http_buf_init(&gone, 64);
    assert_int_equal(eml_serve_record_put(&gone, g.cs[2].id,
                                          EML_SERVE_CLOSED, NULL, 0, NULL),
                     EML_OK);
    g.cs[2].closed = 1;
    turn(g.s, g.cs, 3, 5001, &gone, NULL);
    work(g.w, &entries, &replies);
    turn(g.s, g.cs, 3, 5002, &replies, NULL);
    assert_int_equal((int)m->answered, 2);
    assert_int_equal((int)g.cs[2].got_n, 0);
    assert_int_equal((int)eml_server_metrics(g.s)->queue_depth, 0);
    eml_http_buf_free(&gone);
    eml_http_buf_free(&one);
    eml_http_buf_free(&q);
    eml_http_buf_free(&entries);
    eml_http_buf_free(&replies);
    rig_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_request_codec),
        cmocka_unit_test(test_plaintext_rules),
        cmocka_unit_test(test_admission),
        cmocka_unit_test(test_queue_path),
        cmocka_unit_test(test_never_twice),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
