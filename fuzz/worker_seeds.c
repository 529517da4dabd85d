/*
 * worker_seeds.c - writes the seed corpora of fuzz_worker_request and
 * fuzz_worker_reply (fuzz/corpus/worker_request, worker_reply) with the
 * protocol's own encoders, so that they follow the format when it
 * changes.  Not a fuzz target (no fuzz_ prefix); run it by hand:
 *
 *   cc -Iinclude -Isrc fuzz/worker_seeds.c build/libeml_trusted.a \
 *      -lcrypto -lz -lm -fopenmp -o /tmp/worker_seeds &&
 *   /tmp/worker_seeds fuzz/corpus
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

static int put(const char *dir, const char *sub, const char *name,
               const uint8_t *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n) {
        perror(path);
        if (f != NULL) fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

/* A request of op with geometry g (conv) or m, n, k (GEMM), operands
 * small integers in 4 or 8 bytes; written, and its reply too. */
static int request(const char *dir, const char *name, uint16_t op,
                   eml_worker_geom g, uint32_t m, uint32_t n, uint32_t k,
                   int i32)
{
    eml_worker_req q;
    memset(&q, 0, sizeof(q));
    q.id = 7;
    q.op = op;
    q.flags = i32 ? EML_WORKER_I32 : 0;
    q.g = g;
    if (op == EML_WORKER_OP_GEMM) {
        q.m = m, q.n = n, q.k = k;
    } else { /* the geometry's M, N, K */
        uint32_t oh = (g.h + 2 * g.pad - g.size) / g.stride + 1;
        uint32_t ow = (g.w + 2 * g.pad - g.size) / g.stride + 1;
        uint32_t l = g.batch * oh * ow, ckk = g.c * g.size * g.size;
        q.m = op == EML_WORKER_OP_CONV_INPUT_GRAD ? g.batch : g.f;
        q.n = op == EML_WORKER_OP_CONV_FORWARD       ? l
              : op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? ckk
                                                     : g.c * g.h * g.w;
        q.k = op == EML_WORKER_OP_CONV_FORWARD       ? ckk
              : op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? l
                                                     : g.f;
    }
    size_t size;
    eml_err err = {0};
    if (eml_worker_req_shape(&q, &size, &err) != EML_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return 1;
    }
    uint8_t *f = calloc(1, size);
    eml_worker_req_write_header(f, &q);
    uint8_t *ops = f + EML_WORKER_REQ_HEADER;
    for (size_t i = 0; i < q.na + q.nb; i++) {
        int32_t v = (int32_t)(i * 7 % 11) - 5;
        if (i32) eml_worker_put_i32(ops, i, v);
        else eml_worker_put(ops, i, eml_field_of(v));
    }
    int rc = put(dir, "worker_request", name, f, size);
    eml_worker_req parsed;
    if (rc == 0 && eml_worker_req_parse(f, size, &parsed, &err) == EML_OK) {
        size_t rs = eml_worker_reply_size(q.m, q.n);
        uint8_t *r = malloc(rs);
        eml_worker_reply_header_write(r, q.id, EML_WORKER_DONE, q.m, q.n);
        if (eml_worker_compute(&parsed, r + EML_WORKER_REPLY_HEADER) ==
            EML_OK)
            rc = put(dir, "worker_reply", name, r, rs);
        free(r);
    }
    free(f);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: worker_seeds CORPUS_DIR\n");
        return 2;
    }
    const char *d = argv[1];
    const eml_worker_geom none = {0, 0, 0, 0, 0, 0, 0, 0};
    const eml_worker_geom g1 = {2, 2, 5, 4, 3, 3, 1, 1};
    const eml_worker_geom g2 = {1, 1, 6, 6, 2, 3, 2, 0};
    int rc = 0;
    rc |= request(d, "1x1x1", EML_WORKER_OP_GEMM, none, 1, 1, 1, 0);
    rc |= request(d, "2x4x3", EML_WORKER_OP_GEMM, none, 2, 3, 4, 0);
    rc |= request(d, "3x1x5-i32", EML_WORKER_OP_GEMM, none, 3, 5, 1, 1);
    rc |= request(d, "conv-forward", EML_WORKER_OP_CONV_FORWARD, g1, 0, 0, 0, 1);
    rc |= request(d, "conv-weight-grad", EML_WORKER_OP_CONV_WEIGHT_GRAD, g1, 0,
                  0, 0, 1);
    rc |= request(d, "conv-input-grad", EML_WORKER_OP_CONV_INPUT_GRAD, g1, 0, 0,
                  0, 1);
    rc |= request(d, "conv-forward-stride2", EML_WORKER_OP_CONV_FORWARD, g2, 0,
                  0, 0, 0);
    rc |= request(d, "conv-input-grad-stride2", EML_WORKER_OP_CONV_INPUT_GRAD,
                  g2, 0, 0, 0, 1);
    /* Malformed: an element equal to p; a header announcing a huge GEMM;
     * a conv op whose M disagrees with its geometry. */
    uint64_t one = 1;
    uint8_t bad[EML_WORKER_REQ_HEADER + 16];
    eml_worker_req_write(bad, 9, 1, 1, 1, &one, &one);
    eml_worker_put(bad + EML_WORKER_REQ_HEADER, 0, EML_FIELD_P);
    rc |= put(d, "worker_request", "bad-element", bad, sizeof(bad));
    eml_worker_req_write(bad, 9, 1, 1, 1, &one, &one);
    memset(bad + 16, 0xff, 12);
    rc |= put(d, "worker_request", "header-only-huge", bad,
              EML_WORKER_REQ_HEADER);
    eml_worker_req q;
    memset(&q, 0, sizeof(q));
    q.op = EML_WORKER_OP_CONV_FORWARD;
    q.g = g1;
    q.m = 4, q.n = 40, q.k = 18;
    uint8_t h[EML_WORKER_REQ_HEADER];
    eml_worker_req_write_header(h, &q);
    rc |= put(d, "worker_request", "conv-shape-mismatch", h, sizeof(h));
    /* Replies that are not DONE. */
    uint8_t r[EML_WORKER_REPLY_HEADER + 8];
    eml_worker_reply_header_write(r, 3, EML_WORKER_REFUSED, 0, 0);
    rc |= put(d, "worker_reply", "refused", r, EML_WORKER_REPLY_HEADER);
    eml_worker_reply_header_write(r, 3, EML_WORKER_FAILED, 0, 0);
    rc |= put(d, "worker_reply", "failed", r, EML_WORKER_REPLY_HEADER);
    eml_worker_reply_header_write(r, 3, EML_WORKER_DONE, 1, 1);
    eml_worker_put(r + EML_WORKER_REPLY_HEADER, 0, EML_FIELD_P);
    rc |= put(d, "worker_reply", "bad-element", r, sizeof(r));
    return rc;
}
