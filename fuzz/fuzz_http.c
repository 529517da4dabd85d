/*
 * fuzz_http.c - libFuzzer target for the inference server's HTTP layer
 * (src/serve): the request parser, routes, predict bodies and the writer.
 *
 * Input: byte 0 picks the limits (defaults, or small ones so that 413, 414
 * and 431 are in reach) and the example size; bytes 1-3 seed the split
 * sizes; the rest is a connection's byte stream.  The stream is parsed
 * twice, whole and in chunks of 1 to 64 bytes as the seed draws them, and
 * every complete request is routed, decoded as a predict body (JSON or raw
 * by its Content-Type, and as JSON and as raw regardless), its inputs
 * encoded back as predictions, and an error answer written with its body
 * bytes as the message.  Beyond the sanitizers it checks the parser's
 * promises: the outcome (every request and the final error or need for
 * more) is the same whole and split; a request's strings are NUL-free and
 * as long as it says, its target is origin-form, its body is its
 * Content-Length and it fits the limits; an error is one of the statuses
 * documented, with a one-line message; decoded inputs are finite, and
 * 1 .. max instances of `item` values; an error answer's JSON body holds
 * no raw control byte and nothing above 0x7e.
 *
 *   ./build-fuzz/fuzz/fuzz_http -max_total_time=60 fuzz/corpus/http
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/http.h"
#include "enclaveml/predict_io.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

#define MAX_INSTANCES 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    return s == NULL ? mix(h, "-", 1) : mix(h, s, strlen(s) + 1);
}

static void check_input(const eml_predict_input *in, size_t item)
{
    CHECK(in->n >= 1 && in->n <= MAX_INSTANCES && in->item == item);
    for (size_t i = 0; i < in->n * item; i++) CHECK(isfinite(in->x[i]));
}

/* Encodes the inputs as if they were predictions, both ways. */
static void encode(const eml_predict_input *in)
{
    eml_http_buf b;
    eml_err err = {0};
    const char *ct;
    eml_http_buf_init(&b, 1 << 20);
    CHECK(eml_predict_encode(&b, in->form, in->x, in->n, in->item, &ct,
                             &err) == EML_OK);
    if (in->form == EML_PREDICT_RAW)
        CHECK(b.len == in->n * in->item * 4);
    eml_http_buf_free(&b);
}

static void predict(const eml_http_request *r, size_t item)
{
    eml_predict_input in;
    eml_err err = {0};
    int code = 0;
    eml_status st = eml_predict_decode(r, item, MAX_INSTANCES, &in, &code,
                                       &err);
    if (st == EML_OK) {
        CHECK(code == 0);
        check_input(&in, item);
        encode(&in);
        eml_predict_input_free(&in);
    } else {
        CHECK(code == 400 || code == 415 || code == 500);
        CHECK(err.msg[0] != '\0' && strchr(err.msg, '\n') == NULL);
        CHECK(in.x == NULL);
    }
    memset(&err, 0, sizeof(err));
    if (eml_predict_decode_json(r->body, r->body_len, item, MAX_INSTANCES,
                                &in, &err) == EML_OK) {
        check_input(&in, item);
        eml_predict_input_free(&in);
    }
    memset(&err, 0, sizeof(err));
    if (eml_predict_decode_raw(r->body, r->body_len, EML_PREDICT_U8, item,
                               MAX_INSTANCES, &in, &err) == EML_OK) {
        check_input(&in, item);
        eml_predict_input_free(&in);
    }
}

/* An error answer with msg as its message: the body must stay JSON. */
static void answer(int status, const char *msg)
{
    eml_http_buf b;
    eml_err err = {0};
    const uint8_t *body;
    size_t i;
    eml_http_buf_init(&b, 1 << 16);
    CHECK(eml_http_write_error(&b, status, 0, NULL, msg, &err) == EML_OK);
    body = (const uint8_t *)memchr(b.p, '{', b.len);
    CHECK(body != NULL);
    for (i = (size_t)(body - b.p); i < b.len; i++)
        CHECK(b.p[i] >= 0x20 && b.p[i] <= 0x7e);
    eml_http_buf_free(&b);
}

static uint64_t request(const eml_http_request *r, const eml_http_limits *lim,
                        size_t item, int deep)
{
    uint64_t h = 0xcbf29ce484222325ull;
    eml_http_route route;

    CHECK((int)r->method >= 0 && r->method < EML_HTTP_METHOD_COUNT);
    CHECK(r->target[0] == '/' && strlen(r->target) == r->target_len);
    CHECK(r->target_len <= lim->max_target);
    CHECK(r->version_minor == 0 || r->version_minor == 1);
    CHECK(r->keep_alive == 0 || r->keep_alive == 1);
    CHECK(r->body_len == (r->has_content_length ? r->content_length : 0));
    CHECK(r->body_len <= lim->max_body);
    CHECK(r->size >= r->body_len + 18 &&
          r->size <= r->body_len + lim->max_header);
    CHECK(r->version_minor == 0 || r->host != NULL);
    h = mix_str(h, r->method_name);
    h = mix_str(h, r->target);
    h = mix_str(h, r->host);
    h = mix_str(h, r->content_type);
    h = mix_str(h, r->tensor_dtype);
    h = mix(h, &r->keep_alive, sizeof(r->keep_alive));
    h = mix(h, &r->expect_continue, sizeof(r->expect_continue));
    h = mix(h, &r->size, sizeof(r->size));
    h = mix(h, r->body, r->body_len);
    if (!deep) return h;
    eml_http_route_match(r->method, r->target, &route);
    CHECK(route.status == 0 || route.status == 404 || route.status == 405);
    CHECK((route.kind == EML_ROUTE_NONE) == (route.status != 0));
    CHECK(strlen(route.model) <= EML_HTTP_MODEL_NAME_MAX);
    predict(r, item);
    {
        char msg[512];
        size_t n = r->body_len < sizeof(msg) - 1 ? r->body_len
                                                 : sizeof(msg) - 1;
        memcpy(msg, r->body, n);
        msg[n] = '\0';
        answer(400, msg);
    }
    return h;
}

/* Parses the stream, chunk sizes drawn from seed (0: whole); a hash of
 * the outcome. */
static uint64_t run(const uint8_t *s, size_t n, const eml_http_limits *lim,
                    uint32_t seed, size_t item, int deep)
{
    eml_http_parser *p = NULL;
    eml_err err = {0};
    uint64_t h = 1;
    size_t pos = 0;

    CHECK(eml_http_parser_new(lim, &p, &err) == EML_OK);
    for (;;) {
        size_t chunk = n - pos, used = 0;
        const eml_http_request *r = NULL;
        int code = 0;
        eml_status st;
        if (seed != 0) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            if (chunk > 1 + seed % 64) chunk = 1 + seed % 64;
        }
        memset(&err, 0, sizeof(err));
        st = eml_http_feed(p, s + pos, chunk, &used, &r, &code, &err);
        CHECK(used <= chunk);
        pos += used;
        if (st != EML_OK) {
            CHECK(code == 400 || code == 413 || code == 414 || code == 417 ||
                  code == 431 || code == 500 || code == 501 || code == 505);
            CHECK(err.msg[0] != '\0' && strchr(err.msg, '\n') == NULL);
            if (deep) answer(code, err.msg);
            h = mix(h, &code, sizeof(code));
            h = mix_str(h, err.msg);
            break;
        }
        if (r != NULL) {
            uint64_t rh = request(r, lim, item, deep);
            h = mix(h, &rh, sizeof(rh));
            (void)eml_http_take_continue(p);
            eml_http_next(p);
            continue;
        }
        if (pos == n) {
            size_t held = eml_http_buffered(p);
            h = mix(h, &held, sizeof(held));
            break;
        }
        CHECK(used > 0);
    }
    eml_http_parser_free(p);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t items[4] = {1, 3, 4, 784};
    eml_http_limits lim = {EML_HTTP_MAX_HEADER_DEFAULT,
                           EML_HTTP_MAX_TARGET_DEFAULT,
                           EML_HTTP_MAX_BODY_DEFAULT};
    uint32_t seed;
    size_t item;
    uint64_t whole, split;

    if (size < 4) return 0;
    if (data[0] & 1) {
        lim.max_header = 128;
        lim.max_target = 32;
        lim.max_body = 64;
    }
    item = items[(data[0] >> 1) & 3];
    seed = (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
    seed |= 1; /* never 0: that means whole */
    whole = run(data + 4, size - 4, &lim, 0, item, 1);
    split = run(data + 4, size - 4, &lim, seed, item, 0);
    CHECK(whole == split);
    return 0;
}
