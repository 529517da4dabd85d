/*
 * test_http.c - the HTTP layer of the inference server (src/serve): the
 * request parser fed whole and split at every byte (the same outcome
 * either way), pipelining, keep-alive, every refusal provoked by a real
 * byte sequence with its status, the header, target and body limits at
 * and one past their edge; the response writer, routes, predict bodies
 * (JSON rows and columns, flat and nested, raw float32 and uint8) with
 * their refusals; the predictions encoder's float32 round trip; and the
 * metrics text read back line by line as Prometheus' format.
 */
#include <math.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/http.h"
#include "enclaveml/predict_io.h"
#include "formats/formats_internal.h"

/* ==== driving the parser ==== */

/* 1 if needle is somewhere in p[0..n). */
static int has(const uint8_t *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, needle, k) == 0) return 1;
    return 0;
}

typedef struct outcome {
    int code; /* the HTTP status of an error; 0 if none */
    char msg[384];
    int n_req;
    int more;       /* the stream ended needing more bytes */
    char sum[16384]; /* one line per request, then how it ended */
} outcome;

static uint32_t fnv(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static void add(outcome *o, const char *fmt, ...)
{
    size_t k = strlen(o->sum);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->sum + k, sizeof(o->sum) - k, fmt, ap);
    va_end(ap);
}

static const char *str(const char *s)
{
    return s == NULL ? "(none)" : s;
}

static void describe(outcome *o, const eml_http_request *r)
{
    assert_int_equal(strlen(r->target), r->target_len);
    add(o, "%s %s 1.%d ka=%d cont=%d cl=%d:%llu host=%s ct=%s dt=%s "
           "body=%zu:%08x size=%zu\n",
        r->method_name, r->target, r->version_minor, r->keep_alive,
        r->expect_continue, r->has_content_length,
        (unsigned long long)r->content_length, str(r->host),
        str(r->content_type), str(r->tensor_dtype), r->body_len,
        fnv(r->body, r->body_len), r->size);
}

/* Feeds len bytes to a fresh parser `step` at a time (0: all at once),
 * taking every complete request out. */
static void drive(const void *text, size_t len, size_t step,
                  const eml_http_limits *lim, outcome *o)
{
    eml_http_parser *p = NULL;
    eml_err err = {0};
    size_t pos = 0;

    memset(o, 0, sizeof(*o));
    assert_int_equal(eml_http_parser_new(lim, &p, &err), EML_OK);
    for (;;) {
        size_t chunk = len - pos, used = 0;
        const eml_http_request *req = NULL;
        int code = -1;
        eml_err e = {0};
        eml_status st;
        if (step != 0 && chunk > step) chunk = step;
        st = eml_http_feed(p, (const uint8_t *)text + pos, chunk, &used, &req,
                           &code, &e);
        pos += used;
        if (st != EML_OK) {
            assert_true(code >= 400 && code <= 505);
            assert_true(e.msg[0] != '\0');
            assert_null(strchr(e.msg, '\n'));
            o->code = code;
            snprintf(o->msg, sizeof(o->msg), "%s", e.msg);
            add(o, "error %d: %s\n", code, e.msg);
            break;
        }
        assert_int_equal(code, 0);
        if (req != NULL) {
            o->n_req++;
            describe(o, req);
            eml_http_next(p);
            continue;
        }
        if (pos == len) {
            o->more = 1;
            add(o, "more, %zu held\n", eml_http_buffered(p));
            break;
        }
        assert_true(used > 0);
    }
    eml_http_parser_free(p);
}

/* Whole, then split at every byte and in odd sizes: one outcome. */
static void drive_all(const void *text, size_t len,
                      const eml_http_limits *lim, outcome *o)
{
    static const size_t steps[] = {1, 2, 3, 5, 7, 13, 64, 1000};
    outcome *split = malloc(sizeof(*split));
    assert_non_null(split);
    drive(text, len, 0, lim, o);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        drive(text, len, steps[i], lim, split);
        if (strcmp(split->sum, o->sum) != 0)
            fail_msg("split by %zu:\n%s\nwhole:\n%s", steps[i], split->sum,
                     o->sum);
    }
    free(split);
}

static void expect_refusal(const char *text, size_t len,
                           const eml_http_limits *lim, int code,
                           const char *needle)
{
    outcome o;
    drive_all(text, len, lim, &o);
    if (o.code != code || strstr(o.msg, needle) == NULL)
        fail_msg("expected %d with \"%s\" for:\n%.*s\ngot:\n%s", code,
                 needle, (int)(len > 300 ? 300 : len), text, o.sum);
}

/* ==== the parser ==== */

static void test_one_request(void **state)
{
    (void)state;
    static const char text[] =
        "POST /v1/models/mnist:predict HTTP/1.1\r\n"
        "Host: example.org:8443\r\n"
        "User-Agent: test\r\n"
        "content-type:   application/json; charset=utf-8  \r\n"
        "Content-Length: 11\r\n"
        "X-Tensor-Dtype: float32\r\n"
        "\r\n"
        "{\"a\": true}";
    eml_http_parser *p = NULL;
    eml_err err = {0};
    const eml_http_request *r = NULL;
    size_t used = 0;
    int code = 0;
    outcome o;

    assert_int_equal(eml_http_parser_new(NULL, &p, &err), EML_OK);
    assert_int_equal(eml_http_feed(p, text, sizeof(text) - 1, &used, &r,
                                   &code, &err), EML_OK);
    assert_int_equal(used, sizeof(text) - 1);
    assert_non_null(r);
    assert_int_equal(r->method, EML_HTTP_POST);
    assert_string_equal(r->method_name, "POST");
    assert_string_equal(r->target, "/v1/models/mnist:predict");
    assert_int_equal(r->version_minor, 1);
    assert_int_equal(r->keep_alive, 1);
    assert_string_equal(r->host, "example.org:8443");
    assert_string_equal(r->content_type, "application/json; charset=utf-8");
    assert_string_equal(r->tensor_dtype, "float32");
    assert_int_equal(r->content_length, 11);
    assert_int_equal(r->body_len, 11);
    assert_memory_equal(r->body, "{\"a\": true}", 11);
    assert_int_equal(r->size, sizeof(text) - 1);
    assert_true(eml_http_media_is(r->content_type, "application/json"));
    assert_false(eml_http_media_is(r->content_type, "application/js"));
    /* the same request until it is dropped */
    assert_int_equal(eml_http_feed(p, NULL, 0, &used, &r, &code, &err),
                     EML_OK);
    assert_non_null(r);
    eml_http_next(p);
    assert_int_equal(eml_http_feed(p, NULL, 0, &used, &r, &code, &err),
                     EML_OK);
    assert_null(r);
    assert_int_equal(eml_http_buffered(p), 0);
    eml_http_parser_free(p);
    drive_all(text, sizeof(text) - 1, NULL, &o);
    assert_int_equal(o.n_req, 1);
    assert_true(o.more);
}

static void test_pipelined(void **state)
{
    (void)state;
    static const char text[] =
        "\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 5\r\n\r\nhello"
        "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        "GET /healthz HTTP/1.0\r\n\r\n"
        "GET /partial HTTP/1.1\r\nHo";
    outcome o;
    drive_all(text, sizeof(text) - 1, NULL, &o);
    assert_int_equal(o.n_req, 4);
    assert_true(o.more);
    assert_non_null(strstr(o.sum, "GET /healthz 1.1 ka=1"));
    assert_non_null(strstr(o.sum, "POST /v1/models/m:predict 1.1 ka=1 "
                                  "cont=0 cl=1:5"));
    assert_non_null(strstr(o.sum, "GET /metrics?x=1 1.1 ka=0"));
    assert_non_null(strstr(o.sum, "GET /healthz 1.0 ka=0"));
    assert_non_null(strstr(o.sum, "more, 25 held"));
    /* a stream bigger than the buffer: taken in turns as requests go */
    {
        eml_http_limits lim = {256, 64, 64};
        char *big = malloc(100 * 64);
        size_t n = 0;
        assert_non_null(big);
        for (int i = 0; i < 100; i++)
            n += (size_t)sprintf(big + n, "GET /r%02d HTTP/1.1\r\nHost: a"
                                          "\r\n\r\n", i);
        drive_all(big, n, &lim, &o);
        assert_int_equal(o.n_req, 100);
        assert_non_null(strstr(o.sum, "GET /r99 1.1"));
        free(big);
    }
}

static void test_keep_alive(void **state)
{
    (void)state;
    static const struct {
        const char *conn;
        int minor, ka;
    } cases[] = {
        {NULL, 1, 1},
        {NULL, 0, 0},
        {"close", 1, 0},
        {"Close", 1, 0},
        {"keep-alive", 0, 1},
        {"Keep-Alive, Upgrade", 0, 1},
        {"keep-alive, close", 1, 0},
        {"keep-alive,,  close", 0, 0},
        {"upgrade", 1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        outcome o;
        int n = snprintf(text, sizeof(text),
                         "GET / HTTP/1.%d\r\nHost: h\r\n%s%s%s\r\n",
                         cases[i].minor, cases[i].conn ? "Connection: " : "",
                         cases[i].conn ? cases[i].conn : "",
                         cases[i].conn ? "\r\n" : "");
        drive_all(text, (size_t)n, NULL, &o);
        assert_int_equal(o.n_req, 1);
        if (strstr(o.sum, cases[i].ka ? "ka=1" : "ka=0") == NULL)
            fail_msg("case %zu: %s", i, o.sum);
    }
}

static const struct {
    const char *text;
    int code;
    const char *needle;
} refusals[] = {
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "target is empty"},
    {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "starts with a space"},
    {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "token character"},
    {"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF"},
    {"GET / HTTP/1.1\r\nHost: a\n\r\n", 400, "bare LF"},
    {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400, "CR not followed"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400,
     "line folding"},
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, "line folding"},
    {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "and its ':'"},
    {"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400, "and its ':'"},
    {"GET / HTTP/1.1\r\nHost\r\n\r\n", 400, "without ':'"},
    {"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", 400, "empty header name"},
    {"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", 400, "token character"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400, "control"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", 400, "control"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
     "Content-Length: 1\r\n\r\nx", 400, "second Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400,
     "not a decimal"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400,
     "not a decimal"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400,
     "not a decimal"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 400,
     "not a decimal"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400,
     "not a decimal"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400,
     "is empty"},
    {"GET / HTTP/1.1\r\n\r\n", 400, "without a Host"},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "second Host"},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "Host is not"},
    {"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\nContent-Type: a\r\n"
     "\r\n", 400, "second Content-Type"},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, @\r\n\r\n", 400,
     "tokens"},
    {"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "origin form"},
    {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "origin form"},
    {"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, "two hex digits"},
    {"GET /a% HTTP/1.1\r\nHost: a\r\n\r\n", 400, "two hex digits"},
    {"GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "percent-encoded"},
    {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "HTTP version"},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "HTTP version"},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", 400, "HTTP version"},
    {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "HTTP version"},
    {"GET / HTTP/2\r\nHost: a\r\n\r\n", 400, "HTTP version"},
    {"GET /\r\n\r\n", 400, "HTTP/0.9"},
    {"GET\r\n\r\n", 400, "no target"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 5\r\n\r\nhello", 400, "smuggling"},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "HTTP/1.0"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n0\r\n\r\n", 501, "chunked"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n"
     "\r\n", 501, "chunked"},
    {"FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "not one this server"},
    {"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "not one this server"},
    {"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "longer than 7"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/2.0"},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "HTTP/1.2"},
    {"GET / HTTP/0.9\r\n\r\n", 505, "HTTP/0.9"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4194305\r\n\r\n", 413,
     "4194304-byte limit"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
     "99999999999999999999999999\r\n\r\n", 413, "limit"},
    {"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n"
     "Content-Length: 1\r\n\r\n", 417, "100-continue"},
};

static void test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
        expect_refusal(refusals[i].text, strlen(refusals[i].text), NULL,
                       refusals[i].code, refusals[i].needle);
    /* a NUL byte in a header value */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    expect_refusal(nul, sizeof(nul) - 1, NULL, 400, "control");
    /* a refusal is sticky: later bytes change nothing */
    {
        eml_http_parser *p = NULL;
        eml_err err = {0};
        const eml_http_request *r;
        size_t used;
        int code = 0;
        assert_int_equal(eml_http_parser_new(NULL, &p, &err), EML_OK);
        assert_int_equal(eml_http_feed(p, "GET / HTTP/3.0\r\n", 16, &used, &r,
                                       &code, &err),
                         EML_ERR_UNSUPPORTED);
        assert_int_equal(code, 505);
        memset(&err, 0, sizeof(err));
        code = 0;
        assert_int_equal(eml_http_feed(p, "Host: a\r\n\r\n", 11, &used, &r,
                                       &code, &err),
                         EML_ERR_UNSUPPORTED);
        assert_int_equal(code, 505);
        assert_int_equal(used, 0);
        assert_non_null(strstr(err.msg, "HTTP/3.0"));
        eml_http_parser_free(p);
    }
    /* HTTP/1.0 ignores Expect; an Expect list with 100-continue is fine */
    outcome o;
    static const char ok[] =
        "POST / HTTP/1.0\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx"
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
        "Content-Length: 1\r\n\r\ny";
    drive_all(ok, sizeof(ok) - 1, NULL, &o);
    assert_int_equal(o.n_req, 2);
    assert_non_null(strstr(o.sum, "1.0 ka=0 cont=0"));
    assert_non_null(strstr(o.sum, "1.1 ka=1 cont=1"));
}

/* A request whose header block is exactly `block` bytes. */
static size_t padded(char *buf, size_t block)
{
    static const char head[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
    size_t h = sizeof(head) - 1, pad = block - h - 4;
    memcpy(buf, head, h);
    memset(buf + h, 'p', pad);
    memcpy(buf + h + pad, "\r\n\r\n", 4);
    return block;
}

static void test_header_limit(void **state)
{
    (void)state;
    char *buf = malloc(20000);
    outcome o;
    assert_non_null(buf);
    drive_all(buf, padded(buf, 8192), NULL, &o);
    assert_int_equal(o.n_req, 1);
    assert_int_equal(o.code, 0);
    expect_refusal(buf, padded(buf, 8193), NULL, 431, "8192 bytes");
    /* 431 as soon as 8192 bytes are in without the blank line */
    padded(buf, 9000);
    drive(buf, 8191, 0, NULL, &o);
    assert_true(o.more);
    drive_all(buf, 8192, NULL, &o);
    assert_int_equal(o.code, 431);
    /* leading empty lines count */
    buf[0] = '\r';
    buf[1] = '\n';
    padded(buf + 2, 8190);
    drive_all(buf, 8192, NULL, &o);
    assert_int_equal(o.n_req, 1);
    padded(buf + 2, 8191);
    expect_refusal(buf, 8193, NULL, 431, "header block");
    /* a configured limit */
    eml_http_limits lim = {100, 50, 10};
    drive_all(buf + 2, padded(buf + 2, 100), &lim, &o);
    assert_int_equal(o.n_req, 1);
    expect_refusal(buf, padded(buf, 101), &lim, 431, "100 bytes");
    /* limits out of range */
    eml_http_parser *p = NULL;
    eml_err err = {0};
    eml_http_limits bad = {100, 100, 0};
    assert_int_equal(eml_http_parser_new(&bad, &p, &err), EML_ERR_INVALID);
    assert_null(p);
    free(buf);
}

static void test_target_limit(void **state)
{
    (void)state;
    char *buf = malloc(4096);
    outcome o;
    size_t n;
    assert_non_null(buf);
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', 2047);
    n = 5 + 2047;
    n += (size_t)sprintf(buf + n, " HTTP/1.1\r\nHost: a\r\n\r\n");
    drive_all(buf, n, NULL, &o);
    assert_int_equal(o.n_req, 1);
    memset(buf + 5, 'a', 2048);
    /* 414 with only the target's first 2049 bytes in: no line end needed */
    expect_refusal(buf, 4 + 2049, NULL, 414, "2048 bytes");
    free(buf);
}

static void test_body_limit(void **state)
{
    (void)state;
    eml_http_limits lim = {0, 0, 1000};
    static const char over[] =
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 1001\r\n\r\n";
    static const char at[] =
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 1000\r\n\r\n";
    char *buf = malloc(2000);
    outcome o;
    assert_non_null(buf);
    /* 413 from the headers alone, before any body byte */
    expect_refusal(over, sizeof(over) - 1, &lim, 413, "1000-byte limit");
    drive_all(at, sizeof(at) - 1, &lim, &o);
    assert_true(o.more);
    memcpy(buf, at, sizeof(at) - 1);
    memset(buf + sizeof(at) - 1, 'b', 1000);
    drive_all(buf, sizeof(at) - 1 + 1000, &lim, &o);
    assert_int_equal(o.n_req, 1);
    assert_non_null(strstr(o.sum, "body=1000:"));
    free(buf);
}

static void test_continue(void **state)
{
    (void)state;
    static const char head[] =
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\n"
        "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    eml_http_parser *p = NULL;
    eml_err err = {0};
    const eml_http_request *r;
    size_t used;
    int code;
    eml_http_buf out;

    assert_int_equal(eml_http_parser_new(NULL, &p, &err), EML_OK);
    assert_int_equal(eml_http_take_continue(p), 0);
    assert_int_equal(eml_http_feed(p, head, sizeof(head) - 1, &used, &r,
                                   &code, &err), EML_OK);
    assert_null(r);
    assert_int_equal(eml_http_take_continue(p), 1);
    assert_int_equal(eml_http_take_continue(p), 0);
    assert_int_equal(eml_http_feed(p, "abc", 3, &used, &r, &code, &err),
                     EML_OK);
    assert_non_null(r);
    assert_int_equal(r->expect_continue, 1);
    eml_http_parser_free(p);
    eml_http_buf_init(&out, 1024);
    assert_int_equal(eml_http_write_continue(&out, &err), EML_OK);
    assert_int_equal(out.len, 25);
    assert_memory_equal(out.p, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    eml_http_buf_free(&out);
}

/* Requests made from a few parts, pipelined, whole against every split. */
static void test_splits(void **state)
{
    (void)state;
    static const char *const parts[] = {
        "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: h\r\nContent-Type: "
        "application/octet-stream\r\nX-Tensor-Dtype: uint8\r\n"
        "Content-Length: 4\r\n\r\n\r\n\r\n",
        "GET /v1/models/m HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "\r\n",
        "DELETE /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nX: \x80\xff\r\nContent-Length: 2\r\n"
        "\r\nhi",
    };
    char buf[4096];
    uint32_t seed = 7;
    outcome o;
    for (int round = 0; round < 40; round++) {
        size_t n = 0;
        for (int k = 0; k < 6; k++) {
            seed = seed * 1103515245u + 12345u;
            const char *s = parts[(seed >> 16) % 6];
            memcpy(buf + n, s, strlen(s));
            n += strlen(s);
        }
        if (round % 3 == 1) n -= (seed >> 8) % 20; /* cut the last one */
        drive_all(buf, n, NULL, &o);
        assert_int_equal(o.code, 0);
    }
}

/* ==== the writer ==== */

static void test_writer(void **state)
{
    (void)state;
    eml_http_buf out;
    eml_err err = {0};
    uint8_t small[64];
    eml_http_header extra[] = {{"X-Model-Version", "3"},
                               {"Cache-Control", "no-store"}};
    eml_http_response r = {200, "application/json", 1, extra, 2, "{}", 2};
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 2\r\n"
                               "Connection: keep-alive\r\n"
                               "X-Model-Version: 3\r\n"
                               "Cache-Control: no-store\r\n\r\n{}";

    eml_http_buf_init(&out, 1 << 20);
    assert_int_equal(eml_http_write_response(&out, &r, &err), EML_OK);
    assert_int_equal(out.len, sizeof(want) - 1);
    assert_memory_equal(out.p, want, out.len);
    /* a fixed buffer too small: a clear error, nothing written */
    eml_http_buf fixed;
    eml_http_buf_init_fixed(&fixed, small, sizeof(small));
    assert_int_equal(eml_http_write_response(&fixed, &r, &err),
                     EML_ERR_RANGE);
    assert_int_equal(fixed.len, 0);
    assert_non_null(strstr(err.msg, "64-byte buffer"));
    /* refusals */
    eml_http_response bad = r;
    bad.status = 299;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_http_write_response(&out, &bad, &err),
                     EML_ERR_INVALID);
    eml_http_header inject[] = {{"X-A", "b\r\nSet-Cookie: x"}};
    bad = r;
    bad.extra = inject;
    bad.n_extra = 1;
    assert_int_equal(eml_http_write_response(&out, &bad, &err),
                     EML_ERR_INVALID);
    eml_http_header dup[] = {{"content-length", "5"}};
    bad.extra = dup;
    assert_int_equal(eml_http_write_response(&out, &bad, &err),
                     EML_ERR_INVALID);
    bad = r;
    bad.status = 204;
    assert_int_equal(eml_http_write_response(&out, &bad, &err),
                     EML_ERR_INVALID);
    assert_int_equal(out.len, sizeof(want) - 1);
    /* 204: no Content-Length */
    eml_http_buf_reset(&out);
    bad.body = NULL;
    bad.body_len = 0;
    bad.content_type = NULL;
    bad.n_extra = 0;
    bad.keep_alive = 0;
    assert_int_equal(eml_http_write_response(&out, &bad, &err), EML_OK);
    assert_int_equal(out.len, strlen("HTTP/1.1 204 No Content\r\n"
                                     "Connection: close\r\n\r\n"));
    /* the error body, escaped, with Allow */
    eml_http_buf_reset(&out);
    assert_int_equal(eml_http_write_error(&out, 405, 1, "POST",
                                          "say \"hi\"\\\n\x01\xc3\xa9", &err),
                     EML_OK);
    static const char werr[] =
        "HTTP/1.1 405 Method Not Allowed\r\n"
        "Content-Type: application/json\r\nContent-Length: 39\r\n"
        "Connection: keep-alive\r\nAllow: POST\r\n\r\n"
        "{\"error\": \"say \\\"hi\\\"\\\\\\u000a\\u0001??\"}";
    assert_int_equal(out.len, sizeof(werr) - 1);
    assert_memory_equal(out.p, werr, out.len);
    eml_http_buf_free(&out);
    for (int s = 100; s < 600; s++) {
        const char *reason = eml_http_reason(s);
        if (reason != NULL) assert_true(strlen(reason) > 1);
    }
    assert_string_equal(eml_http_reason(413), "Content Too Large");
    assert_string_equal(eml_http_reason(431),
                        "Request Header Fields Too Large");
}

static void test_routes(void **state)
{
    (void)state;
    static const struct {
        eml_http_method m;
        const char *target;
        eml_http_route_kind kind;
        int status;
        const char *allow, *model;
        uint64_t version;
    } cases[] = {
        {EML_HTTP_POST, "/v1/models/mnist:predict", EML_ROUTE_PREDICT, 0,
         NULL, "mnist", 0},
        {EML_HTTP_POST, "/v1/models/a.b_c-9/versions/12:predict",
         EML_ROUTE_PREDICT, 0, NULL, "a.b_c-9", 12},
        {EML_HTTP_GET, "/v1/models/mnist", EML_ROUTE_MODEL_STATUS, 0, NULL,
         "mnist", 0},
        {EML_HTTP_GET, "/v1/models/mnist/versions/3?x",
         EML_ROUTE_MODEL_STATUS, 0, NULL, "mnist", 3},
        {EML_HTTP_GET, "/healthz", EML_ROUTE_HEALTHZ, 0, NULL, "", 0},
        {EML_HTTP_GET, "/metrics?debug=1", EML_ROUTE_METRICS, 0, NULL, "",
         0},
        {EML_HTTP_GET, "/v1/models/mnist:predict", EML_ROUTE_NONE, 405,
         "POST", "mnist", 0},
        {EML_HTTP_POST, "/healthz", EML_ROUTE_NONE, 405, "GET", "", 0},
        {EML_HTTP_HEAD, "/metrics", EML_ROUTE_NONE, 405, "GET", "", 0},
        {EML_HTTP_DELETE, "/v1/models/m", EML_ROUTE_NONE, 405, "GET", "m",
         0},
        {EML_HTTP_GET, "/", EML_ROUTE_NONE, 404, NULL, "", 0},
        {EML_HTTP_GET, "/healthz/", EML_ROUTE_NONE, 404, NULL, "", 0},
        {EML_HTTP_GET, "/v1/models/", EML_ROUTE_NONE, 404, NULL, "", 0},
        {EML_HTTP_POST, "/v1/models/m:classify", EML_ROUTE_NONE, 404, NULL,
         "", 0},
        {EML_HTTP_POST, "/v1/models/a%2Fb:predict", EML_ROUTE_NONE, 404,
         NULL, "", 0},
        {EML_HTTP_POST, "/v1/models/..:predict", EML_ROUTE_NONE, 404, NULL,
         "", 0},
        {EML_HTTP_POST, "/v1/models/m/versions/0:predict", EML_ROUTE_NONE,
         404, NULL, "", 0},
        {EML_HTTP_POST, "/v1/models/m/versions/01:predict", EML_ROUTE_NONE,
         404, NULL, "", 0},
        {EML_HTTP_POST, "/v1/models/m/versions/1234567890123456789:predict",
         EML_ROUTE_NONE, 404, NULL, "", 0},
        {EML_HTTP_POST, "/v1/models/m/versions/:predict", EML_ROUTE_NONE,
         404, NULL, "", 0},
        {EML_HTTP_POST,
         "/v1/models/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         ":predict", EML_ROUTE_PREDICT, 0, NULL,
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0},
        {EML_HTTP_POST,
         "/v1/models/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         ":predict", EML_ROUTE_NONE, 404, NULL, "", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        eml_http_route r;
        eml_http_route_match(cases[i].m, cases[i].target, &r);
        if (r.kind != cases[i].kind || r.status != cases[i].status ||
            strcmp(r.model, cases[i].model) != 0 ||
            r.version != cases[i].version ||
            r.has_version != (cases[i].version != 0))
            fail_msg("route %zu (%s): kind %d status %d model %s", i,
                     cases[i].target, r.kind, r.status, r.model);
        if (cases[i].allow != NULL)
            assert_string_equal(r.allow, cases[i].allow);
    }
}

/* ==== predict bodies ==== */

static eml_status dj(const char *body, size_t item, size_t max,
                     eml_predict_input *in, eml_err *err)
{
    memset(err, 0, sizeof(*err));
    return eml_predict_decode_json(body, strlen(body), item, max, in, err);
}

static void test_json_accepts(void **state)
{
    (void)state;
    eml_predict_input in;
    eml_err err;
    assert_int_equal(dj("{\"instances\": [[1, 2, 3, 4], [-0.5, 1e-3, 0.5E+2, "
                        "-0]]}", 4, 8, &in, &err), EML_OK);
    assert_int_equal(in.n, 2);
    assert_int_equal(in.form, EML_PREDICT_ROWS);
    const float want[] = {1, 2, 3, 4, -0.5f, 1e-3f, 50, 0};
    assert_memory_equal(in.x, want, sizeof(want) - sizeof(float));
    assert_true(in.x[7] == 0 && signbit(in.x[7]));
    eml_predict_input_free(&in);
    assert_int_equal(dj(" { \"signature_name\" : \"serving_default\" ,\n"
                        "\"instances\":[[[1,2]\n,[3,4]]] } \n", 4, 8, &in,
                        &err), EML_OK);
    assert_int_equal(in.n, 1);
    assert_true(in.x[0] == 1 && in.x[3] == 4);
    eml_predict_input_free(&in);
    assert_int_equal(dj("{\"inputs\": [[[1],[2]],[[3],[4]]]}", 2, 8, &in,
                        &err), EML_OK);
    assert_int_equal(in.form, EML_PREDICT_COLUMNS);
    assert_int_equal(in.n, 2);
    eml_predict_input_free(&in);
    assert_int_equal(dj("{\"instances\": [[[[[[[[[7]]]]]]]]]}", 1, 8, &in,
                        &err), EML_OK); /* 8 levels: the most allowed */
    eml_predict_input_free(&in);
    assert_int_equal(dj("{\"instances\": [1.5, -2]}", 1, 8, &in, &err),
                     EML_OK);
    assert_int_equal(in.n, 2);
    assert_true(in.x[1] == -2);
    eml_predict_input_free(&in);
    /* 28x28x1, three instances */
    char *text = malloc(200000);
    size_t n = (size_t)sprintf(text, "{\"instances\": [");
    for (int e = 0; e < 3; e++) {
        n += (size_t)sprintf(text + n, "%s[", e ? "," : "");
        for (int r = 0; r < 28; r++) {
            n += (size_t)sprintf(text + n, "%s[", r ? "," : "");
            for (int c = 0; c < 28; c++)
                n += (size_t)sprintf(text + n, "%s[%d.25]", c ? "," : "",
                                     e * 1000 + r * 28 + c);
            n += (size_t)sprintf(text + n, "]");
        }
        n += (size_t)sprintf(text + n, "]");
    }
    sprintf(text + n, "]}");
    assert_int_equal(dj(text, 784, 3, &in, &err), EML_OK);
    assert_int_equal(in.n, 3);
    for (int e = 0; e < 3; e++)
        for (int i = 0; i < 784; i++)
            assert_true(in.x[e * 784 + i] == (float)(e * 1000 + i) + 0.25f);
    eml_predict_input_free(&in);
    assert_int_equal(dj(text, 784, 2, &in, &err), EML_ERR_RANGE);
    assert_non_null(strstr(err.msg, "more than 2 instances"));
    assert_null(in.x);
    free(text);
}

static void test_json_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        size_t item;
        const char *needle;
    } cases[] = {
        {"{\"instances\": [[1, 2, 3]]}", 4, "instance 0, byte 24: 3 values "
                                           "where the model takes 4"},
        {"{\"instances\": [[1, 2, 3, 4], [1, 2, 3]]}", 4,
         "instance 1, byte 37: an array of 3 entries"},
        {"{\"instances\": [[1, 2, 3, 4, 5]]}", 4, "more than 4 values"},
        {"{\"instances\": [[1, 2, 3, 4], [1, \"2\", 3, 4]]}", 4,
         "instance 1, byte 33: a string where a number belongs"},
        {"{\"instances\": [[1, 2, NaN, 4]]}", 4, "NaN and Infinity"},
        {"{\"instances\": [[1, 2, nan, 4]]}", 4, "NaN and Infinity"},
        {"{\"instances\": [[1, 2, Infinity, 4]]}", 4, "NaN and Infinity"},
        {"{\"instances\": [[1, 2, -Infinity, 4]]}", 4, "NaN and Infinity"},
        {"{\"instances\": [[1, 2, null, 4]]}", 4, "true, false or null"},
        {"{\"instances\": [[1, 2, true, 4]]}", 4, "true, false or null"},
        {"{\"instances\": [[1, 2, 0x10, 4]]}", 4, "expected ',' or ']'"},
        {"{\"instances\": [[1, 2, .5, 4]]}", 4, "expected a number"},
        {"{\"instances\": [[1, 2, 1e39, 4]]}", 4, "range of float32"},
        {"{\"instances\": [[1, 2, 1e999, 4]]}", 4, "range of a double"},
        {"{\"instances\": [[[[[[[[[[1]]]]]]]]]]}", 1, "deeper than 8 levels"},
        {"{\"instances\": [[[1, 2], [3, 4, 5]]]}", 4, "an array longer than "
                                                      "the 2 entries"},
        {"{\"instances\": [[[1, 2], 3, 4]]}", 4, "a number where"},
        {"{\"instances\": [[1, 2, 3, 4], 5]}", 4, "instance 1, byte 29: a "
                                                  "number where"},
        {"{\"instances\": [[1, [2], 3, 4]]}", 4, "an array where"},
        {"{\"instances\": [[]]}", 4, "an empty array"},
        {"{\"instances\": [{\"x\": [1, 2, 3, 4]}]}", 4, "an object where"},
        {"{\"instances\": []}", 4, "\"instances\" is empty"},
        {"{\"instances\": 5}", 4, "'[' to open"},
        {"{\"inputs\": {\"x\": [[1, 2, 3, 4]]}}", 4, "named inputs"},
        {"{\"instance\": [[1, 2, 3, 4]]}", 4, "unknown member"},
        {"{\"signature_name\": 5, \"instances\": [[1, 2, 3, 4]]}", 4,
         "must be a string"},
        {"{\"signature_name\": \"a\"}", 4, "no \"instances\""},
        {"{}", 4, "no \"instances\""},
        {"{\"instances\": [[1, 2, 3, 4]], \"inputs\": [[1, 2, 3, 4]]}", 4,
         "repeats a member"},
        {"{\"instances\": [[1, 2, 3, 4]]} x", 4, "bytes after the object"},
        {"{\"instances\": [[1, 2, 3, 4]],}", 4, "expected a string"},
        {"{\"instances\": [[1, 2, 3, 4]]", 4, "found the end of the text"},
        {"[[1, 2, 3, 4]]", 4, "a JSON object"},
        {"", 4, "a JSON object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        eml_predict_input in;
        eml_err err;
        eml_status st = dj(cases[i].body, cases[i].item, 2, &in, &err);
        if (st == EML_OK || strstr(err.msg, cases[i].needle) == NULL ||
            in.x != NULL)
            fail_msg("case %zu (%s): status %d, \"%s\"", i, cases[i].body,
                     st, err.msg);
        assert_non_null(strstr(err.msg, "predict request"));
    }
    eml_predict_input in;
    eml_err err;
    static const char nul[] = "{\"instances\": [[1, 2, 3, 4]]}\0";
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_predict_decode_json(nul, sizeof(nul) - 1, 4, 2, &in,
                                             &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "byte 29: bytes after the object"));
    assert_int_equal(dj("{\"instances\": [[1], [2], [3]]}", 1, 2, &in, &err),
                     EML_ERR_RANGE);
    assert_non_null(strstr(err.msg, "instance 2, byte 25: more than 2 "
                                    "instances"));
}

static void test_raw(void **state)
{
    (void)state;
    eml_predict_input in;
    eml_err err = {0};
    const float v[6] = {0.5f, -1.25f, 3e-38f, 1e30f, 0.0f, 7.0f};
    uint8_t b[24];
    for (int i = 0; i < 6; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], 4);
        for (int k = 0; k < 4; k++) b[4 * i + k] = (uint8_t)(bits >> 8 * k);
    }
    assert_int_equal(eml_predict_decode_raw(b, 24, EML_PREDICT_F32, 3, 4, &in,
                                            &err), EML_OK);
    assert_int_equal(in.n, 2);
    assert_int_equal(in.form, EML_PREDICT_RAW);
    assert_memory_equal(in.x, v, sizeof(v));
    eml_predict_input_free(&in);
    assert_int_equal(eml_predict_decode_raw(b, 23, EML_PREDICT_F32, 3, 4, &in,
                                            &err), EML_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "not a whole number of instances"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_predict_decode_raw(b, 24, EML_PREDICT_F32, 3, 1, &in,
                                            &err), EML_ERR_RANGE);
    assert_non_null(strstr(err.msg, "2 instances, more than the 1"));
    memset(&err, 0, sizeof(err));
    b[23] = 0x7f; /* the last value: 0x7f...: NaN */
    b[22] = 0xc0;
    assert_int_equal(eml_predict_decode_raw(b, 24, EML_PREDICT_F32, 3, 4, &in,
                                            &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "instance 1: value 2 is not finite"));
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_predict_decode_raw(b, 0, EML_PREDICT_F32, 3, 4, &in,
                                            &err), EML_ERR_FORMAT);
    const uint8_t px[6] = {0, 1, 128, 254, 255, 17};
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_predict_decode_raw(px, 6, EML_PREDICT_U8, 2, 3, &in,
                                            &err), EML_OK);
    assert_int_equal(in.n, 3);
    for (int i = 0; i < 6; i++)
        assert_true(in.x[i] == (float)px[i] * (1.0f / 255.0f));
    assert_true(in.x[4] == 1.0f);
    eml_predict_input_free(&in);
    assert_int_equal(eml_predict_decode_raw(px, 5, EML_PREDICT_U8, 2, 3, &in,
                                            &err), EML_ERR_SHAPE);
}

/* A request through the parser, then eml_predict_decode. */
static eml_status decode_req(const char *head, const void *body, size_t blen,
                             eml_predict_input *in, int *code, eml_err *err)
{
    char text[1024];
    int n = snprintf(text, sizeof(text),
                     "POST /v1/models/m:predict HTTP/1.1\r\nHost: a\r\n%s"
                     "Content-Length: %zu\r\n\r\n", head, blen);
    eml_http_parser *p = NULL;
    const eml_http_request *r = NULL;
    size_t used;
    int pc;
    eml_status st;
    memcpy(text + n, body, blen);
    memset(err, 0, sizeof(*err));
    assert_int_equal(eml_http_parser_new(NULL, &p, err), EML_OK);
    assert_int_equal(eml_http_feed(p, text, (size_t)n + blen, &used, &r, &pc,
                                   err), EML_OK);
    assert_non_null(r);
    st = eml_predict_decode(r, 2, 4, in, code, err);
    eml_http_parser_free(p);
    return st;
}

static void test_decode_by_type(void **state)
{
    (void)state;
    eml_predict_input in;
    eml_err err;
    int code;
    const uint8_t px[4] = {0, 255, 51, 102};
    const char *js = "{\"instances\": [[1, 2]]}";
    assert_int_equal(decode_req("Content-Type: application/octet-stream\r\n"
                                "X-Tensor-Dtype: UINT8\r\n", px, 4, &in,
                                &code, &err), EML_OK);
    assert_int_equal(code, 0);
    assert_int_equal(in.n, 2);
    assert_true(in.x[1] == 1.0f &&
                in.x[2] == (float)51 * (1.0f / 255.0f));
    eml_predict_input_free(&in);
    assert_int_equal(decode_req("Content-Type: application/octet-stream\r\n",
                                px, 4, &in, &code, &err), EML_ERR_SHAPE);
    assert_int_equal(code, 400); /* 4 bytes: half a float32 instance */
    assert_int_equal(decode_req("Content-Type: application/octet-stream\r\n"
                                "X-Tensor-Dtype: int8\r\n", px, 4, &in,
                                &code, &err), EML_ERR_FORMAT);
    assert_int_equal(code, 400);
    assert_int_equal(decode_req("Content-Type: Application/JSON; "
                                "charset=utf-8\r\n", js, strlen(js), &in,
                                &code, &err), EML_OK);
    assert_int_equal(in.n, 1);
    eml_predict_input_free(&in);
    assert_int_equal(decode_req("", js, strlen(js), &in, &code, &err),
                     EML_OK);
    eml_predict_input_free(&in);
    assert_int_equal(decode_req("Content-Type: application/json\r\n"
                                "X-Tensor-Dtype: uint8\r\n", js, strlen(js),
                                &in, &code, &err), EML_ERR_FORMAT);
    assert_int_equal(code, 400);
    assert_int_equal(decode_req("Content-Type: text/plain\r\n", js,
                                strlen(js), &in, &code, &err),
                     EML_ERR_UNSUPPORTED);
    assert_int_equal(code, 415);
    assert_null(in.x);
}

static void test_encode(void **state)
{
    (void)state;
    enum { N = 200, OUT = 10 };
    float *p = malloc(N * OUT * sizeof(float));
    eml_http_buf b;
    eml_err err = {0};
    const char *ct;
    uint32_t seed = 1;
    for (int i = 0; i < N * OUT; i++) {
        uint32_t bits;
        do {
            seed = seed * 1664525u + 1013904223u;
            bits = seed;
        } while ((bits & 0x7f800000u) == 0x7f800000u);
        if (i % 3 == 0) bits &= 0x3f7fffffu; /* (0, 1), like probabilities */
        memcpy(&p[i], &bits, 4);
    }
    p[0] = 0.1f;
    p[1] = 3.4028235e38f;
    p[2] = -0.0f;
    p[3] = 1e-45f;
    eml_http_buf_init(&b, 1 << 20);
    assert_int_equal(eml_predict_encode(&b, EML_PREDICT_ROWS, p, N, OUT, &ct,
                                        &err), EML_OK);
    assert_string_equal(ct, "application/json");
    assert_memory_equal(b.p, "{\"predictions\": [[0.1, 3.4028235e+38, -0, ",
                        40);
    /* read back with the strict JSON reader: valid JSON, the same floats */
    eml_jreader r;
    char key[32];
    size_t klen;
    int more = 1, k = 0;
    eml_jreader_init(&r, b.p, b.len, "predictions", &err);
    assert_int_equal(eml_jreader_expect(&r, '{', "{"), EML_OK);
    assert_int_equal(eml_jreader_string(&r, key, sizeof(key), &klen), EML_OK);
    assert_string_equal(key, "predictions");
    assert_int_equal(eml_jreader_expect(&r, ':', ":"), EML_OK);
    assert_int_equal(eml_jreader_expect(&r, '[', "["), EML_OK);
    for (int i = 0; i < N; i++) {
        int inner = 1;
        assert_int_equal(eml_jreader_expect(&r, '[', "["), EML_OK);
        while (inner) {
            size_t at;
            double d;
            eml_jreader_ws(&r);
            at = r.pos;
            assert_int_equal(eml_jreader_number(&r, &d), EML_OK);
            float f = strtof((const char *)b.p + at, NULL);
            if (memcmp(&f, &p[k], 4) != 0 || (float)d != p[k])
                fail_msg("value %d: %.9g read back as %.9g", k,
                         (double)p[k], (double)f);
            k++;
            assert_int_equal(eml_jreader_next(&r, ']', &inner), EML_OK);
        }
        assert_int_equal(eml_jreader_next(&r, ']', &more), EML_OK);
        assert_int_equal(more, i + 1 < N);
    }
    assert_int_equal(eml_jreader_expect(&r, '}', "}"), EML_OK);
    assert_true(eml_jreader_at_end(&r));
    assert_int_equal(k, N * OUT);
    /* columns, raw, refusals */
    eml_http_buf_reset(&b);
    assert_int_equal(eml_predict_encode(&b, EML_PREDICT_COLUMNS, p, 1, 2, &ct,
                                        &err), EML_OK);
    assert_int_equal(b.len, strlen("{\"outputs\": [[0.1, 3.4028235e+38]]}"));
    eml_http_buf_reset(&b);
    assert_int_equal(eml_predict_encode(&b, EML_PREDICT_RAW, p, N, OUT, &ct,
                                        &err), EML_OK);
    assert_string_equal(ct, "application/octet-stream");
    assert_int_equal(b.len, N * OUT * 4);
    for (int i = 0; i < N * OUT; i++) {
        uint32_t bits;
        memcpy(&bits, &p[i], 4);
        for (int q = 0; q < 4; q++)
            assert_int_equal(b.p[4 * i + q], (uint8_t)(bits >> 8 * q));
    }
    eml_http_buf_reset(&b);
    p[5] = NAN;
    assert_int_equal(eml_predict_encode(&b, EML_PREDICT_ROWS, p, N, OUT, &ct,
                                        &err), EML_ERR_RANGE);
    assert_int_equal(b.len, 0);
    eml_http_buf_free(&b);
    /* a fixed buffer that cannot hold it */
    uint8_t small[100];
    eml_http_buf_init_fixed(&b, small, sizeof(small));
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_predict_encode(&b, EML_PREDICT_ROWS, p + 10, 10, OUT,
                                        &ct, &err), EML_ERR_RANGE);
    assert_int_equal(b.len, 0);
    free(p);
}

/* ==== metrics ==== */

static void test_metrics(void **state)
{
    (void)state;
    eml_metrics m;
    eml_http_buf b;
    eml_err err = {0};
    regex_t sample;
    char *text, *line, *save = NULL, family[128] = "", type[32] = "";
    int samples = 0;
    unsigned long long inf_bucket = 0, last = 0;

    eml_metrics_init(&m);
    for (int i = 0; i < 50; i++)
        eml_metrics_request(&m, i % 5 ? 200 : 400, 0.0007 * i);
    eml_metrics_request(&m, 431, NAN);
    eml_metrics_request(&m, 99, 1.0); /* not counted by code */
    eml_metrics_batch(&m, 1);
    eml_metrics_batch(&m, 64);
    eml_metrics_batch(&m, 1000);
    m.queue_depth = 3;
    m.connections = -1;
    m.tls_handshake_failures = 2;
    m.stream_malformed = UINT64_MAX;
    eml_http_buf_init(&b, 1 << 16);
    assert_int_equal(eml_metrics_render(&m, &b, &err), EML_OK);
    text = malloc(b.len + 1);
    memcpy(text, b.p, b.len);
    text[b.len] = '\0';
    assert_int_equal(text[b.len - 1], '\n');
    assert_int_equal(regcomp(&sample,
                             "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
                             "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\""
                             "(,[a-zA-Z_][a-zA-Z0-9_]*=\"[^\"\\\\]*\")*\\})?"
                             " ([-+0-9.eE]+|\\+Inf)$",
                             REG_EXTENDED),
                     0);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        regmatch_t g[5];
        char name[128], *end;
        if (strncmp(line, "# HELP ", 7) == 0) continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s %31s", family, type), 2);
            continue;
        }
        if (regexec(&sample, line, 5, g, 0) != 0)
            fail_msg("not a Prometheus sample line: %s", line);
        snprintf(name, sizeof(name), "%.*s", (int)(g[1].rm_eo - g[1].rm_so),
                 line);
        assert_true(strncmp(name, family, strlen(family)) == 0);
        if (strcmp(type, "histogram") == 0)
            assert_true(strcmp(name + strlen(family), "_bucket") == 0 ||
                        strcmp(name + strlen(family), "_sum") == 0 ||
                        strcmp(name + strlen(family), "_count") == 0);
        else
            assert_string_equal(name, family);
        strtod(line + g[4].rm_so, &end);
        assert_true(*end == '\0' || strcmp(line + g[4].rm_so, "+Inf") == 0);
        if (strstr(line, "request_seconds_bucket") != NULL) {
            unsigned long long v = strtoull(line + g[4].rm_so, NULL, 10);
            assert_true(v >= last);
            last = v;
            if (strstr(line, "le=\"+Inf\"") != NULL) inf_bucket = v;
        }
        samples++;
    }
    assert_int_equal(inf_bucket, 51 + 1);
    assert_true(samples > 30);
    regfree(&sample);
    free(text);
    assert_true(has(b.p, b.len, "enclaveml_requests_total{code=\"200\"} "
                                       "40\n"));
    assert_true(has(b.p, b.len, "enclaveml_request_seconds_count 52\n"));
    assert_true(has(b.p, b.len, "enclaveml_batch_size_bucket{le=\"64\"}"
                                       " 2\n"));
    assert_true(has(b.p, b.len, "enclaveml_batch_size_sum 1065\n"));
    assert_true(has(b.p, b.len, "enclaveml_connections -1\n"));
    assert_true(has(b.p, b.len, "enclaveml_stream_malformed_total "
                                       "18446744073709551615\n"));
    eml_http_buf_free(&b);
}

/* ==== the pieces together ==== */

static void test_end_to_end(void **state)
{
    (void)state;
    static const char text[] =
        "POST /v1/models/fmnist/versions/2:predict HTTP/1.1\r\n"
        "Host: enclave\r\nContent-Type: application/json\r\n"
        "Content-Length: 39\r\n\r\n"
        "{\"instances\": [[0, 0.5, 1], [1, 1, 0]]}";
    eml_http_parser *p = NULL;
    eml_err err = {0};
    const eml_http_request *r = NULL;
    eml_http_route route;
    eml_predict_input in;
    eml_http_buf body, out;
    const char *ct;
    size_t used;
    int code;
    float probs[4];

    assert_int_equal(eml_http_parser_new(NULL, &p, &err), EML_OK);
    assert_int_equal(eml_http_feed(p, text, sizeof(text) - 1, &used, &r,
                                   &code, &err), EML_OK);
    assert_non_null(r);
    eml_http_route_match(r->method, r->target, &route);
    assert_int_equal(route.kind, EML_ROUTE_PREDICT);
    assert_string_equal(route.model, "fmnist");
    assert_int_equal(route.version, 2);
    assert_int_equal(eml_predict_decode(r, 3, 8, &in, &code, &err), EML_OK);
    for (size_t i = 0; i < in.n; i++) {
        float s = in.x[3 * i] + in.x[3 * i + 1] + in.x[3 * i + 2];
        probs[2 * i] = in.x[3 * i] / s;
        probs[2 * i + 1] = 1 - probs[2 * i];
    }
    eml_http_buf_init(&body, 1 << 16);
    eml_http_buf_init(&out, 1 << 16);
    assert_int_equal(eml_predict_encode(&body, in.form, probs, in.n, 2, &ct,
                                        &err), EML_OK);
    eml_http_response resp = {200, ct, r->keep_alive, NULL, 0, body.p,
                              body.len};
    assert_int_equal(eml_http_write_response(&out, &resp, &err), EML_OK);
    static const char want[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Content-Length: 37\r\nConnection: keep-alive\r\n\r\n"
        "{\"predictions\": [[0, 1], [0.5, 0.5]]}";
    assert_int_equal(out.len, sizeof(want) - 1);
    assert_memory_equal(out.p, want, out.len);
    eml_predict_input_free(&in);
    eml_http_buf_free(&body);
    eml_http_buf_free(&out);
    eml_http_next(p);
    eml_http_parser_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_request),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_header_limit),
        cmocka_unit_test(test_target_limit),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_continue),
        cmocka_unit_test(test_splits),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_json_accepts),
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_raw),
        cmocka_unit_test(test_decode_by_type),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_end_to_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
