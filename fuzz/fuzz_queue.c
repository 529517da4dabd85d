/*
 * fuzz_queue.c - libFuzzer target for the serving queue's decoders
 * (serve.h, src/serve/queue.c, queue_worker.c, server_queue.c): what
 * Redis hands back is hostile, and so is what another process wrote to
 * the streams.  The first byte picks a part:
 *   0  a field list (eml_queue_fields_parse, _expect);
 *   1  a request plaintext, sealed here under a key we hold, then opened
 *      (so the plaintext rules are reached, not only the tag check);
 *   2  the same for a reply plaintext;
 *   3  raw bodies against both openers (they must refuse: no key);
 *   4  a worker admitted by a front end, fed ENTRY records: the rest is
 *      cut at 0xff 0xfe marks into entries, each (flags, id[16],
 *      plaintext) sealed under the queue key for the right or a wrong
 *      front end, or passed as raw fields;
 *   5  the front end with its queue on, fed the rest as a record list
 *      (REPLY and WORKER records from the host).
 * Beyond the sanitizers: whatever opens obeys its bounds, and every
 * output record list decodes.
 *
 *   ./build-fuzz/fuzz/fuzz_queue -max_total_time=60 fuzz/corpus/queue
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/serve_util.h"
#include "enclaveml/crypto.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static const char stream[] = "q";

typedef struct rig {
    serve_fixture f;
    eml_server *s;     /* a front end with its queue on */
    eml_qworker *w;    /* a worker it admitted */
    uint8_t key[32];   /* the queue key, as the worker opened it */
    uint8_t fe[16];
} rig;

static rig R;
static int ready;

static void walk(const uint8_t *p, size_t n, int *well_formed)
{
    size_t off = 0;
    eml_serve_record r;
    eml_status st;
    while ((st = eml_serve_record_next(p, n, &off, &r)) == EML_OK)
        CHECK(r.p >= p && r.p + r.n <= p + n && off <= n);
    *well_formed = st == EML_ERR_NOTFOUND;
}

/* nonce[12] || AES-256-GCM || tag[16], with the AAD of docs/serve.md */
static size_t seal_raw(uint8_t *out, const char *tag, const uint8_t *key,
                       const uint8_t id[16], const uint8_t fe[16],
                       const uint8_t *pt, size_t len)
{
    uint8_t aad[8 + sizeof(stream) + 32];
    size_t an = 7;
    memcpy(aad, tag, 7);
    aad[an++] = (uint8_t)strlen(stream);
    memcpy(aad + an, stream, strlen(stream));
    an += strlen(stream);
    memcpy(aad + an, id, 16);
    memcpy(aad + an + 16, fe, 16);
    an += 32;
    memset(out, 0x24, 12);
    CHECK(eml_aes256gcm_seal(out + 12, pt, len, aad, an, out, key) ==
          EML_OK);
    return len + 28;
}

/* The front end and its worker, the admission done as the hosts would
 * carry it (tests/test_queue.c's rig, without clients). */
static int rig_init(rig *g)
{
    if (serve_fixture_init(&g->f) != 0) return 1;
    eml_err err = {0};
    eml_server_opts o;
    eml_server_opts_default(&o);
    o.max_batch = 4;
    o.max_conns = 4;
    o.kernels = EML_KERNELS_REF;
    o.limits.max_body = 4096;
    if (eml_server_new(g->f.model, g->f.tls, &o, &g->s, &err) != EML_OK)
        return 1;
    eml_server_queue_opts qo;
    memset(&qo, 0, sizeof(qo));
    memcpy(qo.stream, stream, sizeof(stream));
    qo.timeout_ms = 100;
    memcpy(qo.platform.pk, g->f.platform_pk, 32);
    qo.platform.backend = "sim";
    memcpy(qo.measurement, g->f.measurement, 32);
    uint8_t fe[16];
    if (eml_server_queue_start(g->s, &qo, fe, &err) != EML_OK) return 1;
    eml_qworker_opts wo;
    memset(&wo, 0, sizeof(wo));
    memcpy(wo.stream, stream, sizeof(stream));
    memcpy(wo.name, "w1", 3);
    wo.max_batch = 4;
    wo.max_instances = 16;
    wo.kernels = EML_KERNELS_REF;
    if (eml_qworker_new(g->f.model, &wo, &g->w, &err) != EML_OK) return 1;
    uint8_t x_sk[32], x_pk[32], nonce[48];
    if (eml_x25519_keygen(x_sk, x_pk) != EML_OK) return 1;
    eml_qworker_nonce(g->w, nonce);
    eml_report_keys k;
    memset(&k, 0, sizeof(k));
    memcpy(k.measurement, g->f.measurement, 32);
    memcpy(k.x25519, x_pk, 32);
    memset(k.ed25519, 0x42, 32);
    memcpy(k.platform_pk, g->f.platform_pk, 32);
    k.sign_sk = g->f.platform_sk;
    k.sim = 1;
    k.policy = "backend=sim;heap_mb=64";
    char *rep = NULL;
    size_t rlen = 0;
    if (eml_attestation_make(&k, nonce, 48, &rep, &rlen, &err) != EML_OK)
        return 1;
    eml_http_buf ev, out;
    eml_http_buf_init(&ev, 1 << 20);
    eml_http_buf_init(&out, EML_SERVE_IO_MAX);
    eml_queue_field f[2] = {
        {(const uint8_t *)"name", 4, (const uint8_t *)"w1", 2},
        {(const uint8_t *)"report", 6, (const uint8_t *)rep, rlen}};
    int bad = eml_queue_fields_put(&ev, 0, EML_SERVE_WORKER, f, 2, NULL) !=
              EML_OK;
    free(rep);
    uint64_t dl = 0;
    if (!bad)
        bad = eml_server_io(g->s, 1, ev.p, ev.len, &out, &dl, &err) != EML_OK;
    size_t off = 0;
    eml_serve_record r;
    bad = bad || eml_serve_record_next(out.p, out.len, &off, &r) != EML_OK ||
          r.kind != EML_SERVE_ADMIT;
    static const char *const names[2] = {"name", "key"};
    eml_queue_field kf[2];
    if (!bad)
        bad = eml_queue_fields_expect(r.p, r.n, names, 2, kf, NULL) !=
                  EML_OK ||
              eml_queue_key_unwrap(kf[1].p, kf[1].n, x_sk, g->f.measurement,
                                   nonce + 32, stream, "w1", g->key, g->fe,
                                   &err) != EML_OK ||
              eml_qworker_set_key(g->w, kf[1].p, kf[1].n, x_sk,
                                  g->f.measurement, fe, &err) != EML_OK;
    eml_http_buf_free(&ev);
    eml_http_buf_free(&out);
    return bad;
}

static void open_request(const uint8_t *body, size_t n, const uint8_t *key,
                         const uint8_t id[16], const uint8_t fe[16])
{
    eml_queue_bind b = {.key = key, .stream = stream};
    memcpy(b.id, id, 16);
    memcpy(b.fe, fe, 16);
    eml_predict_form form;
    size_t cnt = 0, item = 0;
    uint8_t digest[32];
    float *x = NULL;
    eml_err err = {0};
    if (eml_queue_request_open(&b, body, n, 8, &form, &cnt, &item, digest,
                               &x, &err) == EML_OK) {
        CHECK(cnt >= 1 && cnt <= 8 && x != NULL);
        CHECK(n == EML_QUEUE_SEAL_OVERHEAD + EML_QUEUE_REQ_HEAD +
                       cnt * item * sizeof(float));
        for (size_t i = 0; i < cnt * item; i++) CHECK(isfinite(x[i]));
    }
    free(x);
}

static void open_reply(const uint8_t *body, size_t n, const uint8_t *key,
                       const uint8_t id[16], const uint8_t fe[16])
{
    eml_queue_bind b = {.key = key, .stream = stream};
    memcpy(b.id, id, 16);
    memcpy(b.fe, fe, 16);
    eml_queue_status status;
    size_t cnt = 0, n_out = 0;
    float *p = NULL;
    eml_err err = {0};
    if (eml_queue_reply_open(&b, body, n, 8, &status, &cnt, &n_out, &p,
                             &err) == EML_OK) {
        CHECK(cnt <= 8);
        CHECK(status == EML_QUEUE_OK ? p != NULL : p == NULL);
    }
    free(p);
}

/* Mode 4: entries for the worker. */
static void feed_worker(const uint8_t *data, size_t size)
{
    eml_http_buf in, out;
    eml_http_buf_init(&in, 1 << 20);
    eml_http_buf_init(&out, EML_SERVE_IO_MAX);
    uint8_t *body = malloc(size + 64);
    CHECK(body != NULL);
    uint32_t k = 0;
    size_t at = 0;
    while (at < size && k < 8) {
        size_t end = at;
        while (end + 1 < size && !(data[end] == 0xff && data[end + 1] == 0xfe))
            end++;
        if (end + 1 >= size) end = size;
        const uint8_t *e = data + at;
        size_t n = end - at;
        at = end + 2;
        if (n < 17) continue;
        uint8_t flags = e[0], id[16], fe[16];
        memcpy(id, e + 1, 16);
        memcpy(fe, R.fe, 16);
        if (flags & 1) fe[0] ^= 1; /* another front end's */
        char id_hex[33], fe_hex[33];
        eml_hex(id_hex, id, 16);
        eml_hex(fe_hex, fe, 16);
        size_t bn;
        if (flags & 2) { /* raw: the body as it came */
            memcpy(body, e + 17, n - 17);
            bn = n - 17;
        } else {
            bn = seal_raw(body, "eml-req", R.key, id, fe, e + 17, n - 17);
        }
        eml_queue_field f[3] = {
            {(const uint8_t *)"id", 2, (const uint8_t *)id_hex, 32},
            {(const uint8_t *)"fe", 2, (const uint8_t *)fe_hex, 32},
            {(const uint8_t *)"body", 4, body, bn}};
        CHECK(eml_queue_fields_put(&in, k++, EML_SERVE_ENTRY, f,
                                   (flags & 4) ? 2 : 3, NULL) == EML_OK);
    }
    free(body);
    eml_err err = {0};
    eml_status st = eml_qworker_io(R.w, in.p, in.len, &out, &err);
    CHECK(st == EML_OK || st == EML_ERR_NOMEM);
    int ok_out;
    walk(out.p, out.len, &ok_out);
    CHECK(ok_out);
    eml_http_buf_free(&in);
    eml_http_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        CHECK(rig_init(&R) == 0);
        ready = 1;
    }
    if (size < 1) return 0;
    uint8_t mode = data[0] % 6;
    data++, size--;
    static const uint8_t zero[16];
    uint8_t *body = NULL;
    switch (mode) {
    case 0: {
        eml_queue_field f[EML_QUEUE_FIELDS_MAX];
        size_t n = 0;
        if (eml_queue_fields_parse(data, size, f, EML_QUEUE_FIELDS_MAX, &n) ==
            EML_OK) {
            CHECK(n <= EML_QUEUE_FIELDS_MAX);
            for (size_t i = 0; i < n; i++)
                CHECK(f[i].name >= data && f[i].name + f[i].name_n <=
                                               data + size &&
                      f[i].p >= data && f[i].p + f[i].n <= data + size);
        }
        static const char *const names[3] = {"id", "fe", "body"};
        eml_queue_field g[3];
        eml_err err = {0};
        (void)eml_queue_fields_expect(data, size, names, 3, g, &err);
        uint8_t id[16];
        (void)eml_queue_id_parse(id, data, size);
        (void)eml_queue_name_ok(data, size);
        break;
    }
    case 1:
    case 2:
        body = malloc(size + 28);
        CHECK(body != NULL);
        if (mode == 1) {
            size_t n = seal_raw(body, "eml-req", R.key, zero, zero, data,
                                size);
            open_request(body, n, R.key, zero, zero);
        } else {
            size_t n = seal_raw(body, "eml-rep", R.key, zero, zero, data,
                                size);
            open_reply(body, n, R.key, zero, zero);
        }
        break;
    case 3:
        open_request(data, size, R.key, zero, zero);
        open_reply(data, size, R.key, zero, zero);
        break;
    case 4:
        feed_worker(data, size);
        break;
    default: {
        /* only the queue's records: the front end lives across inputs,
         * and connections are fuzz_serve's part */
        eml_http_buf in, out;
        eml_http_buf_init(&in, 1 << 20);
        eml_http_buf_init(&out, EML_SERVE_IO_MAX);
        size_t off = 0;
        eml_serve_record r;
        while (eml_serve_record_next(data, size, &off, &r) == EML_OK)
            if (r.kind == EML_SERVE_REPLY || r.kind == EML_SERVE_WORKER)
                CHECK(eml_serve_record_put(&in, r.conn, r.kind, r.p, r.n,
                                           NULL) == EML_OK);
        uint64_t dl = 0;
        eml_err err = {0};
        static uint64_t now = 10;
        now += 7;
        eml_status st = eml_server_io(R.s, now, in.p, in.len, &out, &dl,
                                      &err);
        CHECK(st == EML_OK || st == EML_ERR_NOMEM);
        eml_http_buf_free(&in);
        int ok_out;
        walk(out.p, out.len, &ok_out);
        CHECK(ok_out);
        eml_http_buf_free(&out);
        break;
    }
    }
    free(body);
    return 0;
}
