/*
 * fuzz_worker_reply.c - libFuzzer target for the worker protocol's reply
 * frame (outsource.h, docs/formats.md), what the host's link and the
 * enclave's client decode from an untrusted worker:
 * eml_worker_reply_header and eml_worker_reply_parse on arbitrary bytes.
 *
 * Beyond the sanitizers it checks the format's promises: a header that
 * parses announces a frame of exactly 24 bytes for a non-zero status and
 * of 24 + 8 m n bytes (non-empty, within the limit) for status 0; a whole
 * frame parses only at exactly that size, with every element of C below
 * p, and eml_worker_reply_header_write followed by C re-encodes the very
 * same bytes.  Every refusal carries a message.  Seeds:
 * fuzz/corpus/worker_reply/ (the replies to the request seeds, GEMMs and
 * conv ops, a REFUSED and a FAILED one, and one with an element equal to
 * p), written by fuzz/worker_seeds.c.
 *
 *   ./build-fuzz/fuzz/fuzz_worker_reply -max_total_time=60 \
 *       fuzz/corpus/worker_reply
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_worker_reply h, r;
    size_t total = 1;
    eml_err err = {0};
    eml_status hst = eml_worker_reply_header(data, size, &h, &total, &err);
    if (hst != EML_OK) {
        CHECK(err.msg[0] != '\0' && total == 0);
    } else if (h.status != EML_WORKER_DONE) {
        CHECK(total == EML_WORKER_REPLY_HEADER);
    } else {
        CHECK(total == eml_worker_reply_size(h.m, h.n) && total > 0);
        CHECK((uint64_t)h.m * h.n <= EML_WORKER_MAX_ELEMS);
    }
    memset(&err, 0, sizeof(err));
    eml_status st = eml_worker_reply_parse(data, size, &r, &err);
    if (st != EML_OK) {
        CHECK(err.msg[0] != '\0');
        return 0;
    }
    CHECK(hst == EML_OK && size == total);
    CHECK(r.id == h.id && r.status == h.status && r.m == h.m && r.n == h.n);
    uint8_t *again = malloc(size);
    CHECK(again != NULL);
    eml_worker_reply_header_write(again, r.id, r.status, r.m, r.n);
    if (r.status == EML_WORKER_DONE) {
        CHECK(r.c == data + EML_WORKER_REPLY_HEADER);
        size_t mn = (size_t)r.m * r.n;
        for (size_t i = 0; i < mn; i++) {
            uint64_t v = eml_worker_get(r.c, i);
            CHECK(v < EML_FIELD_P);
            eml_worker_put(again + EML_WORKER_REPLY_HEADER, i, v);
        }
    } else {
        CHECK(r.c == NULL);
    }
    CHECK(memcmp(again, data, size) == 0);
    free(again);
    return 0;
}
