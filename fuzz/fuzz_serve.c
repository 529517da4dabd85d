/*
 * fuzz_serve.c - libFuzzer target for the enclave's server (serve.h):
 * the host's event lists, which are hostile.  The input is split at 0xff
 * 0xfe marks into several SERVE_IO turns of one server (the clock moving
 * on by the turn's first byte in ms), so connections open in one turn
 * and get bytes, garbage TLS and timeouts in later ones.  Beyond the
 * sanitizers: every record list is first walked alone (each record in
 * bounds), a well-formed list never makes the server fail but for lack
 * of memory, and its outputs always decode.
 *
 *   ./build-fuzz/fuzz/fuzz_serve -max_total_time=60 fuzz/corpus/serve
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/serve_util.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static serve_fixture F;
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready) {
        CHECK(serve_fixture_init(&F) == 0);
        ready = 1;
    }
    eml_server_opts o;
    eml_server_opts_default(&o);
    o.max_batch = 4;
    o.max_wait_ms = 3;
    o.max_conns = 4;
    o.header_timeout_ms = 50;
    o.idle_timeout_ms = 100;
    o.kernels = EML_KERNELS_REF;
    o.limits.max_body = 4096;
    eml_server *s = NULL;
    eml_err err = {0};
    CHECK(eml_server_new(F.model, F.tls, &o, &s, &err) == EML_OK);
    eml_http_buf out;
    eml_http_buf_init(&out, EML_SERVE_IO_MAX);
    uint64_t now = 1;
    size_t at = 0;
    while (at <= size) {
        size_t end = at;
        while (end + 1 < size && !(data[end] == 0xff && data[end + 1] == 0xfe))
            end++;
        if (end + 1 >= size) end = size;
        const uint8_t *turn = data + at;
        size_t n = end - at;
        int well;
        walk(turn, n, &well);
        now += n > 0 ? turn[0] : 1;
        uint64_t dl = 0;
        eml_err e = {0};
        eml_http_buf_reset(&out);
        eml_status st = eml_server_io(s, now, turn, n, &out, &dl, &e);
        if (well) CHECK(st == EML_OK || st == EML_ERR_NOMEM ||
                        st == EML_ERR_FORMAT); /* FORMAT: an OPEN twice */
        int ok_out;
        walk(out.p, out.len, &ok_out);
        CHECK(ok_out);
        if (st != EML_OK) break;
        at = end + 2;
    }
    eml_http_buf_free(&out);
    eml_server_free(s);
    return 0;
}
