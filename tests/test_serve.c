/*
 * test_serve.c - the attested inference server inside the enclave
 * (serve.h, tls.c, server.c), driven as the host drives it, with real
 * OpenSSL clients over memory:
 *   - RA-TLS: the certificate's report verifies with the platform key and
 *     binds the certificate's key; another platform key, a certificate
 *     whose key the report does not bind, or none at all are refused;
 *   - predictions, JSON and raw, equal the model's own forward pass;
 *   - requests of several connections share one batch; max_batch starts
 *     one early; pipelined requests are answered in order;
 *   - the limits: 431, 413, 408 after the header timeout, 503 above
 *     max_conns, 404; garbage instead of a TLS handshake is counted and
 *     closed, and the server goes on answering others;
 *   - malformed event lists are refused.
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
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "serve_util.h"

static serve_fixture F;

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

/* One SERVE_IO turn: the clients' pending bytes (and extra records),
 * then the outputs back to them.  Returns the number of log lines. */
static int turn(eml_server *s, mem_client *cs, int n, uint64_t now,
                const eml_http_buf *extra, uint64_t *deadline)
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
    if (deadline != NULL) *deadline = dl;
    size_t off = 0;
    eml_serve_record r;
    int logs = 0;
    while (eml_serve_record_next(out.p, out.len, &off, &r) == EML_OK) {
        if (r.kind == EML_SERVE_LOG) {
            printf("  log: %.*s\n", (int)r.n, (const char *)r.p);
            logs++;
            continue;
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

static void open_all(eml_server *s, mem_client *cs, int n, uint32_t first)
{
    eml_http_buf ev;
    eml_http_buf_init(&ev, 4096);
    for (int i = 0; i < n; i++) {
        assert_int_equal(mem_client_new(&cs[i], first + (uint32_t)i), 0);
        assert_int_equal(eml_serve_record_put(&ev, cs[i].id, EML_SERVE_OPEN,
                                              NULL, 0, NULL),
                         EML_OK);
    }
    turn(s, cs, n, 1000, &ev, NULL);
    for (int round = 0; round < 4; round++) turn(s, cs, n, 1000, NULL, NULL);
    eml_http_buf_free(&ev);
}

static eml_server *server(int max_batch, int max_wait, int max_conns)
{
    eml_server_opts o;
    eml_server_opts_default(&o);
    o.max_batch = max_batch;
    o.max_wait_ms = max_wait;
    o.max_conns = max_conns;
    o.header_timeout_ms = 2000;
    o.kernels = EML_KERNELS_REF;
    o.limits.max_body = 64 * 1024;
    eml_server *s = NULL;
    eml_err err = {0};
    assert_int_equal(eml_server_new(F.model, F.tls, &o, &s, &err), EML_OK);
    return s;
}

static int status_of(const mem_client *c)
{
    if (c->got_n < 12 || memcmp(c->got, "HTTP/1.1 ", 9) != 0) return -1;
    return atoi((const char *)c->got + 9);
}

static const char *body_of(const mem_client *c)
{
    const char *p = strstr((const char *)c->got, "\r\n\r\n");
    return p != NULL ? p + 4 : NULL;
}

static void test_ratls(void **state)
{
    (void)state;
    size_t len = 0;
    const uint8_t *der = eml_tls_server_cert(F.tls, &len);
    eml_platform_key keys[1] = {{{0}, "sim"}};
    memcpy(keys[0].pk, F.platform_pk, 32);
    eml_attestation a;
    uint8_t spki[32];
    eml_err err = {0};
    assert_int_equal(eml_ratls_check(der, len, keys, 1, &a, spki, &err),
                     EML_OK);
    assert_memory_equal(spki, F.spki, 32);
    assert_memory_equal(a.measurement, F.measurement, 32);
    assert_true(a.sim);
    /* another platform's key: refused */
    eml_platform_key other[1] = {{{0}, "sim"}};
    uint8_t sk[32];
    assert_int_equal(eml_ed25519_keygen(sk, other[0].pk), EML_OK);
    assert_int_equal(eml_ratls_check(der, len, other, 1, &a, spki, &err),
                     EML_ERR_AUTH);
    memset(&err, 0, sizeof(err));
    /* the same report in the certificate of another key: refused */
    uint8_t *report = NULL, spki2[32];
    size_t rlen = 0;
    assert_int_equal(eml_ratls_report(der, len, &report, &rlen, spki, &err),
                     EML_OK);
    eml_tls_key *k2 = NULL;
    eml_tls_server *t2 = NULL;
    assert_int_equal(eml_tls_key_new(&k2, spki2, &err), EML_OK);
    assert_int_equal(eml_tls_server_new(k2, report, rlen, &t2, &err), EML_OK);
    size_t len2 = 0;
    const uint8_t *der2 = eml_tls_server_cert(t2, &len2);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_ratls_check(der2, len2, keys, 1, &a, spki, &err),
                     EML_ERR_AUTH);
    printf("forged binding: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "binds"));
    /* not a certificate; truncated: refused */
    assert_int_equal(eml_ratls_check(der, len / 2, keys, 1, &a, spki, &err),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_ratls_check(report, rlen, keys, 1, &a, spki, &err),
                     EML_ERR_FORMAT);
    free(report);
    eml_tls_server_free(t2);
    eml_tls_key_free(k2);
}

/* The model's own probabilities for images x (n of 64). */
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

static size_t json_request(char *buf, size_t cap, const float *x, int n,
                           int keep)
{
    char body[8192];
    size_t b = (size_t)snprintf(body, sizeof(body), "{\"instances\": [");
    for (int i = 0; i < n; i++) {
        b += (size_t)snprintf(body + b, sizeof(body) - b, "%s[", i ? "," : "");
        for (int k = 0; k < 64; k++)
            b += (size_t)snprintf(body + b, sizeof(body) - b, "%s%.9g",
                                  k ? "," : "", (double)x[i * 64 + k]);
        b += (size_t)snprintf(body + b, sizeof(body) - b, "]");
    }
    b += (size_t)snprintf(body + b, sizeof(body) - b, "]}");
    return (size_t)snprintf(buf, cap,
                            "POST /v1/models/model:predict HTTP/1.1\r\n"
                            "Host: e\r\nContent-Type: application/json\r\n"
                            "%sContent-Length: %zu\r\n\r\n%s",
                            keep ? "" : "Connection: close\r\n", b, body);
}

static void test_predict_and_batching(void **state)
{
    (void)state;
    eml_server *s = server(8, 50, 16);
    mem_client cs[3];
    open_all(s, cs, 3, 10);
    float x[3 * 64], want[3 * 4];
    eml_rng r;
    eml_rng_seed(&r, 9);
    for (int i = 0; i < 3 * 64; i++) x[i] = eml_rng_uniform(&r);
    direct(x, 3, want);
    char req[16384];
    for (int i = 0; i < 3; i++) {
        size_t n = json_request(req, sizeof(req), x + i * 64, 1, 1);
        assert_int_equal(mem_client_write(&cs[i], req, n), 0);
    }
    uint64_t dl = 0;
    turn(s, cs, 3, 2000, NULL, &dl);
    /* queued: nobody answered before max_wait */
    for (int i = 0; i < 3; i++) assert_int_equal((int)cs[i].got_n, 0);
    assert_true(dl == 2050);
    turn(s, cs, 3, 2050, NULL, &dl);
    const eml_metrics *m = eml_server_metrics(s);
    assert_int_equal((int)m->batch_count, 1); /* one batch of three */
    assert_int_equal((int)m->batch_sum, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(status_of(&cs[i]), 200);
        const char *b = body_of(&cs[i]);
        assert_non_null(strstr(b, "\"predictions\""));
        const char *p = strstr(b, "[[") + 2;
        for (int k = 0; k < 4; k++) {
            float v = strtof(p, (char **)&p);
            assert_true(fabsf(v - want[i * 4 + k]) < 1e-6f);
            p++;
        }
        cs[i].got_n = 0;
    }
    /* raw uint8, and two requests pipelined on one connection: answered
     * in order; with max_batch 2 the second pair runs without waiting */
    uint8_t px[2 * 64];
    float xs[2 * 64], w2[2 * 4];
    for (int i = 0; i < 2 * 64; i++) {
        px[i] = (uint8_t)eml_rng_below(&r, 256);
        xs[i] = (float)px[i] * (1.0f / 255.0f);
    }
    direct(xs, 2, w2);
    char two[1024];
    size_t n = 0;
    for (int i = 0; i < 2; i++) {
        n += (size_t)snprintf(two + n, sizeof(two) - n,
                              "POST /v1/models/model:predict HTTP/1.1\r\n"
                              "Host: e\r\nContent-Type: "
                              "application/octet-stream\r\nX-Tensor-Dtype: "
                              "uint8\r\nContent-Length: 64\r\n\r\n");
        memcpy(two + n, px + i * 64, 64);
        n += 64;
    }
    assert_int_equal(mem_client_write(&cs[0], two, n), 0);
    turn(s, cs, 3, 2100, NULL, NULL);
    turn(s, cs, 3, 2200, NULL, NULL);
    turn(s, cs, 3, 2300, NULL, NULL);
    const uint8_t *g = cs[0].got;
    for (int i = 0; i < 2; i++) {
        const uint8_t *b = (const uint8_t *)strstr((const char *)g,
                                                   "\r\n\r\n");
        assert_non_null(b);
        b += 4;
        float p[4];
        memcpy(p, b, sizeof(p));
        for (int k = 0; k < 4; k++)
            assert_true(fabsf(p[k] - w2[i * 4 + k]) < 1e-6f);
        g = b + 16;
    }
    for (int i = 0; i < 3; i++) mem_client_free(&cs[i]);
    eml_server_free(s);
}

static void send_text(mem_client *c, const char *t)
{
    assert_int_equal(mem_client_write(c, t, strlen(t)), 0);
}

static void test_limits(void **state)
{
    (void)state;
    eml_server *s = server(4, 5, 3);
    mem_client cs[5];
    open_all(s, cs, 5, 100);
    /* a header block over 8 KiB */
    char big[10000];
    int n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: e\r\n"
                                       "X-Pad: ");
    memset(big + n, 'a', 9000);
    big[n + 9000] = 0;
    send_text(&cs[0], big);
    /* a body over the limit, said before it comes */
    send_text(&cs[1], "POST /v1/models/model:predict HTTP/1.1\r\nHost: e\r\n"
                      "Content-Length: 999999\r\n\r\n");
    /* half a request, then nothing */
    send_text(&cs[2], "GET /heal");
    turn(s, cs, 5, 3000, NULL, NULL);
    assert_int_equal(status_of(&cs[0]), 431);
    assert_true(cs[0].closed);
    assert_int_equal(status_of(&cs[1]), 413);
    /* over max_conns (3): the fourth and fifth get 503 */
    send_text(&cs[3], "GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n");
    turn(s, cs, 5, 3000, NULL, NULL);
    assert_int_equal(status_of(&cs[3]), 503);
    /* the slow one: 408 once the header timeout has passed */
    assert_int_equal((int)cs[2].got_n, 0);
    turn(s, cs, 5, 3000 + 1999, NULL, NULL);
    assert_int_equal((int)cs[2].got_n, 0);
    turn(s, cs, 5, 3000 + 2000, NULL, NULL);
    assert_int_equal(status_of(&cs[2]), 408);
    assert_true(cs[2].closed);
    /* garbage for a handshake: counted and closed */
    eml_http_buf ev;
    eml_http_buf_init(&ev, 4096);
    assert_int_equal(eml_serve_record_put(&ev, 900, EML_SERVE_OPEN, NULL, 0,
                                          NULL),
                     EML_OK);
    assert_int_equal(eml_serve_record_put(&ev, 900, EML_SERVE_DATA,
                                          "GET / HTTP/1.1\r\n\r\n", 18, NULL),
                     EML_OK);
    int logs = turn(s, cs, 5, 3100, &ev, NULL);
    assert_true(logs >= 1);
    assert_int_equal((int)eml_server_metrics(s)->tls_handshake_failures, 1);
    /* and the server goes on: 404 for a model it does not have */
    mem_client c;
    assert_int_equal(mem_client_new(&c, 901), 0);
    eml_http_buf_reset(&ev);
    assert_int_equal(eml_serve_record_put(&ev, 901, EML_SERVE_OPEN, NULL, 0,
                                          NULL),
                     EML_OK);
    turn(s, &c, 1, 3200, &ev, NULL);
    for (int i = 0; i < 4; i++) turn(s, &c, 1, 3200, NULL, NULL);
    send_text(&c, "POST /v1/models/other:predict HTTP/1.1\r\nHost: e\r\n"
                  "Content-Length: 2\r\n\r\n{}");
    turn(s, &c, 1, 3300, NULL, NULL);
    assert_int_equal(status_of(&c), 404);
    mem_client_free(&c);
    eml_http_buf_free(&ev);
    for (int i = 0; i < 5; i++) mem_client_free(&cs[i]);
    eml_server_free(s);
}

static void test_bad_events(void **state)
{
    (void)state;
    eml_server *s = server(4, 5, 3);
    eml_http_buf out;
    eml_http_buf_init(&out, 4096);
    uint64_t dl;
    eml_err err = {0};
    /* a record that runs past the end; an unknown kind; a worker's kind
     * (ENTRY) and an output's kind (SEND); bytes on OPEN */
    uint8_t cut[] = {1, 0, 0, 0, 2, 100, 0, 0, 0, 'x'};
    uint8_t kind[] = {1, 0, 0, 0, 99, 0, 0, 0, 0};
    uint8_t entry[] = {1, 0, 0, 0, EML_SERVE_ENTRY, 0, 0, 0, 0};
    uint8_t send[] = {1, 0, 0, 0, EML_SERVE_SEND, 0, 0, 0, 0};
    assert_int_equal(eml_server_io(s, 1, entry, sizeof(entry), &out, &dl,
                                   &err),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_server_io(s, 1, send, sizeof(send), &out, &dl,
                                   &err),
                     EML_ERR_FORMAT);
    /* queue records while the queue is off */
    uint8_t rep[] = {1, 0, 0, 0, EML_SERVE_REPLY, 0, 0, 0, 0};
    assert_int_equal(eml_server_io(s, 1, rep, sizeof(rep), &out, &dl, &err),
                     EML_ERR_FORMAT);
    uint8_t open_bytes[] = {1, 0, 0, 0, 1, 1, 0, 0, 0, 'x'};
    assert_int_equal(eml_server_io(s, 1, cut, sizeof(cut), &out, &dl, &err),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_server_io(s, 1, kind, sizeof(kind), &out, &dl, &err),
                     EML_ERR_FORMAT);
    assert_int_equal(eml_server_io(s, 1, open_bytes, sizeof(open_bytes), &out,
                                   &dl, &err),
                     EML_ERR_FORMAT);
    /* data for a connection it does not have: nothing happens; opening
     * one twice is the host's error */
    uint8_t stray[] = {7, 0, 0, 0, 2, 1, 0, 0, 0, 'x'};
    assert_int_equal(eml_server_io(s, 1, stray, sizeof(stray), &out, &dl,
                                   &err),
                     EML_OK);
    uint8_t twice[] = {5, 0, 0, 0, 1, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0};
    assert_int_equal(eml_server_io(s, 1, twice, sizeof(twice), &out, &dl,
                                   &err),
                     EML_ERR_FORMAT);
    eml_http_buf_free(&out);
    eml_server_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratls),
        cmocka_unit_test(test_predict_and_batching),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_events),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
