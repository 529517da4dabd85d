/*
 * fuzz_worker_request.c - libFuzzer target for the worker protocol's
 * request frame (outsource.h, docs/formats.md), what `enclaveml worker`
 * decodes from any client: eml_worker_req_header and eml_worker_req_parse
 * on arbitrary bytes.
 *
 * Beyond the sanitizers it checks the format's promises: a header that
 * parses announces a non-empty frame within the limits, with the modulus
 * 2^61 - 1, whose size is the op's operand counts times the element
 * size; a whole frame parses only at exactly that size, with every u64
 * element below p, and the writer re-encodes the very same bytes from
 * what was parsed.  For small parsed requests it also runs the worker's
 * answer (eml_worker_compute into a reply frame) and checks that
 * eml_worker_reply_parse accepts it with the request's id and shape, that
 * a GEMM agrees with a naive product and that a conv op's result with
 * integer operands passes Freivalds' conv check (an honest answer always
 * does).  Every refusal carries a message.  Seeds: fuzz/corpus/
 * worker_request/ (GEMMs in both element widths, each conv op at stride 1
 * and 2, and malformed ones), written by tests/worker_seeds.c.
 *
 *   ./build-fuzz/fuzz/fuzz_worker_request -max_total_time=60 \
 *       fuzz/corpus/worker_request
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

static uint64_t next(void *user) /* splitmix64: the check's randomness */
{
    uint64_t *s = user, z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

#define MAX_WORK 20000 /* m*n*k for the product check */

/* The worker's answer to q: for a GEMM checked against a naive product,
 * for a conv op with integer operands against Freivalds' conv check. */
static void answer(const eml_worker_req *q)
{
    size_t size = eml_worker_reply_size(q->m, q->n);
    CHECK(size > 0);
    uint8_t *reply = malloc(size);
    CHECK(reply != NULL);
    eml_worker_reply_header_write(reply, q->id, EML_WORKER_DONE, q->m, q->n);
    CHECK(eml_worker_compute(q, reply + EML_WORKER_REPLY_HEADER) == EML_OK);
    eml_worker_reply r;
    eml_err err = {0};
    CHECK(eml_worker_reply_parse(reply, size, &r, &err) == EML_OK);
    CHECK(r.id == q->id && r.status == EML_WORKER_DONE && r.m == q->m &&
          r.n == q->n);
    if (q->op == EML_WORKER_OP_GEMM) {
        for (uint32_t i = 0; i < q->m; i++)
            for (uint32_t j = 0; j < q->n; j++) {
                uint64_t s = 0;
                for (uint32_t t = 0; t < q->k; t++)
                    s = eml_field_add(
                        s, eml_field_mul(
                               eml_worker_req_elem(q, 0, (size_t)i * q->k + t),
                               eml_worker_req_elem(q, 1,
                                                   (size_t)t * q->n + j)));
                CHECK(eml_worker_get(r.c, (size_t)i * q->n + j) == s);
            }
    } else if (q->flags & EML_WORKER_I32) {
        uint64_t *c = malloc(8 * (size_t)q->m * q->n);
        CHECK(c != NULL);
        memcpy(c, r.c, 8 * (size_t)q->m * q->n);
        uint64_t state = 1;
        CHECK(eml_freivalds_conv(q->op, &q->g, (const int32_t *)q->a,
                                 (const int32_t *)q->b, c, next, &state));
        free(c);
    }
    free(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_worker_req h, q;
    size_t total = 1;
    eml_err err = {0};
    eml_status hst = eml_worker_req_header(data, size, &h, &total, &err);
    if (hst != EML_OK) {
        CHECK(err.msg[0] != '\0' && total == 0);
    } else {
        CHECK(size >= EML_WORKER_REQ_HEADER && h.p == EML_FIELD_P);
        CHECK(total > 0 && h.na <= EML_WORKER_MAX_ELEMS &&
              h.nb <= EML_WORKER_MAX_ELEMS &&
              (uint64_t)h.m * h.n <= EML_WORKER_MAX_ELEMS);
        size_t es = (h.flags & EML_WORKER_I32) ? 4 : 8;
        CHECK(total == EML_WORKER_REQ_HEADER + es * (h.na + h.nb));
        if (h.op == EML_WORKER_OP_GEMM)
            CHECK(h.na == (size_t)h.m * h.k && h.nb == (size_t)h.k * h.n);
    }
    memset(&err, 0, sizeof(err));
    eml_status st = eml_worker_req_parse(data, size, &q, &err);
    if (st != EML_OK) {
        CHECK(err.msg[0] != '\0');
        return 0;
    }
    CHECK(hst == EML_OK && size == total);
    CHECK(q.id == h.id && q.m == h.m && q.n == h.n && q.k == h.k &&
          q.op == h.op && q.flags == h.flags && q.na == h.na && q.nb == h.nb);
    size_t es = (q.flags & EML_WORKER_I32) ? 4 : 8;
    CHECK(q.a == data + EML_WORKER_REQ_HEADER && q.b == q.a + es * q.na);
    /* Re-encode what was parsed: the same bytes. */
    uint8_t *again = malloc(size);
    CHECK(again != NULL);
    eml_worker_req_write_header(again, &q);
    for (int side = 0; side < 2; side++)
        for (size_t i = 0; i < (side ? q.nb : q.na); i++) {
            uint64_t v = eml_worker_req_elem(&q, side, i);
            CHECK(v < EML_FIELD_P);
            uint8_t *base = again + EML_WORKER_REQ_HEADER + (side ? es * q.na : 0);
            if (es == 8) eml_worker_put(base, i, v);
            else eml_worker_put_i32(base, i, (int32_t)eml_field_signed(v));
        }
    CHECK(memcmp(again, data, size) == 0);
    free(again);
    double work = (double)q.m * q.n * q.k;
    if (q.op != EML_WORKER_OP_GEMM)
        work = (double)q.m * q.n * q.k * q.g.size * q.g.size;
    if (work <= MAX_WORK) answer(&q);
    return 0;
}
