/*
 * fuzz_worker_request.c - libFuzzer target for the worker protocol's
 * request frame (outsource.h, docs/formats.md), what `enclaveml worker`
 * decodes from any client: eml_worker_req_header and eml_worker_req_parse
 * on arbitrary bytes.
 *
 * Beyond the sanitizers it checks the format's promises: a header that
 * parses announces a non-empty frame within the limits, with the modulus
 * 2^61 - 1; a whole frame parses only at exactly that size, with every
 * element below p, and eml_worker_req_write re-encodes the very same
 * bytes from what was parsed.  For small parsed requests it also runs the
 * worker's answer (eml_field_gemm into a reply frame) and checks that
 * eml_worker_reply_parse accepts it with the request's id and shape, and
 * that it agrees with a naive product.  Every refusal carries a message.
 * Seeds: fuzz/corpus/worker_request/ (requests of 1x1x1, 2x4 times 4x3
 * and 3x1 times 1x5, and two malformed ones).
 *
 *   ./build-fuzz/fuzz/fuzz_worker_request -max_total_time=60 \
 *       fuzz/corpus/worker_request
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

#define MAX_WORK 20000 /* m*n*k for the product check */

/* The worker's answer to q, checked against a naive product. */
static void answer(const uint8_t *frame, const eml_worker_req *q)
{
    size_t size = eml_worker_reply_size(q->m, q->n);
    CHECK(size > 0);
    uint8_t *reply = malloc(size);
    CHECK(reply != NULL);
    const uint8_t *a = frame + EML_WORKER_REQ_HEADER;
    const uint8_t *b = a + 8 * (size_t)q->m * q->k;
    eml_worker_reply_header_write(reply, q->id, EML_WORKER_DONE, q->m, q->n);
    eml_field_gemm(a, b, reply + EML_WORKER_REPLY_HEADER, q->m, q->n, q->k);
    eml_worker_reply r;
    eml_err err = {0};
    CHECK(eml_worker_reply_parse(reply, size, &r, &err) == EML_OK);
    CHECK(r.id == q->id && r.status == EML_WORKER_DONE && r.m == q->m &&
          r.n == q->n);
    for (uint32_t i = 0; i < q->m; i++)
        for (uint32_t j = 0; j < q->n; j++) {
            uint64_t s = 0;
            for (uint32_t t = 0; t < q->k; t++)
                s = eml_field_add(
                    s, eml_field_mul(eml_worker_get(a, (size_t)i * q->k + t),
                                     eml_worker_get(b, (size_t)t * q->n + j)));
            CHECK(eml_worker_get(r.c, (size_t)i * q->n + j) == s);
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
        CHECK(total == eml_worker_req_size(h.m, h.n, h.k) && total > 0);
        CHECK((uint64_t)h.m * h.k <= EML_WORKER_MAX_ELEMS &&
              (uint64_t)h.k * h.n <= EML_WORKER_MAX_ELEMS);
    }
    memset(&err, 0, sizeof(err));
    eml_status st = eml_worker_req_parse(data, size, &q, &err);
    if (st != EML_OK) {
        CHECK(err.msg[0] != '\0');
        return 0;
    }
    CHECK(hst == EML_OK && size == total);
    CHECK(q.id == h.id && q.m == h.m && q.n == h.n && q.k == h.k);
    size_t na = (size_t)q.m * q.k, nb = (size_t)q.k * q.n;
    const uint8_t *a = data + EML_WORKER_REQ_HEADER;
    CHECK((const uint8_t *)q.a == a && (const uint8_t *)q.b == a + 8 * na);
    /* Re-encode what was parsed: the same bytes. */
    uint64_t *ua = malloc(8 * na), *ub = malloc(8 * nb);
    uint8_t *again = malloc(size);
    CHECK(ua != NULL && ub != NULL && again != NULL);
    for (size_t i = 0; i < na; i++) {
        ua[i] = eml_worker_get(a, i);
        CHECK(ua[i] < EML_FIELD_P);
    }
    for (size_t i = 0; i < nb; i++) {
        ub[i] = eml_worker_get(a + 8 * na, i);
        CHECK(ub[i] < EML_FIELD_P);
    }
    eml_worker_req_write(again, q.id, q.m, q.n, q.k, ua, ub);
    CHECK(memcmp(again, data, size) == 0);
    free(ua);
    free(ub);
    free(again);
    if ((uint64_t)q.m * q.n * q.k <= MAX_WORK) answer(data, &q);
    return 0;
}
