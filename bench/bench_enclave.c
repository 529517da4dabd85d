/*
 * bench_enclave.c - the boundary's costs, measured in one run:
 *
 *   bench_enclave [--pings N] [--mb N]
 *
 *   - ecall round-trip latency (PING with an empty payload), p50 and p99,
 *     for the sandboxed `sim` process and for `none` (a thread of this
 *     process, same protocol over the same kind of socket);
 *   - bulk transfer: PING with 1 MiB payloads, GB/s;
 *   - the encrypted container: seal and open of an N MB buffer in 1 MiB
 *     chunks, GB/s, one thread.
 *
 * Uses a temporary ENCLAVEML_HOME, so it never touches the user's keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "host/enclave_host.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int ping(eml_enclave_host *h, const uint8_t *p, size_t n)
{
    eml_err err = {0};
    eml_ecall_ping q = {{p, n}};
    eml_reply_pong a;
    eml_status st =
        eml_host_call(h, EML_MSG_PING, &q, sizeof(q), &a, sizeof(a), &err);
    if (st != EML_OK) {
        fprintf(stderr, "bench_enclave: %s\n", eml_err_msg(&err, st));
        return -1;
    }
    return 0;
}

static int bench_backend(eml_backend b, int pings)
{
    eml_enclave_host h;
    eml_host_opts o = {b, EML_DEFAULT_HEAP_MB, 1};
    eml_err err = {0};
    eml_status st = eml_host_start(&h, &o, &err);
    if (st != EML_OK) {
        fprintf(stderr, "bench_enclave: %s\n", eml_err_msg(&err, st));
        return -1;
    }
    const char *name = b == EML_BACKEND_SIM ? "sim " : "none";
    double *t = malloc((size_t)pings * sizeof(double));
    for (int i = 0; i < 200; i++)
        if (ping(&h, NULL, 0)) return -1;
    for (int i = 0; i < pings; i++) {
        double t0 = now();
        if (ping(&h, NULL, 0)) return -1;
        t[i] = now() - t0;
    }
    qsort(t, (size_t)pings, sizeof(double), cmp_double);
    printf("  ecall round trip, %s: p50 %.1f us, p99 %.1f us (%d calls)\n",
           name, 1e6 * t[pings / 2], 1e6 * t[(size_t)pings * 99 / 100],
           pings);
    free(t);
    size_t big = (size_t)1 << 20;
    uint8_t *buf = calloc(big, 1);
    int reps = 200;
    double t0 = now();
    for (int i = 0; i < reps; i++)
        if (ping(&h, buf, big)) return -1;
    double dt = now() - t0;
    printf("  1 MiB ecall payloads, %s: %.2f GB/s each way\n", name,
           2.0 * reps * (double)big / dt * 1e-9 / 2.0);
    free(buf);
    eml_host_stop(&h);
    return 0;
}

/* The streaming container as `enclaveml encrypt/decrypt` and the enclave
 * use it: 1 MiB chunks through one reused buffer (no page faults in the
 * timed part), over an N MB plaintext already in memory. */
static int bench_container(size_t mb)
{
    size_t n = mb << 20, cs = (size_t)1 << 20;
    uint8_t *pt = malloc(n), *ct = malloc(n + (n / cs + 1) * 16);
    uint8_t *chunk = malloc(cs + 16), key[32];
    if (pt == NULL || ct == NULL || chunk == NULL ||
        eml_random(key, 32) != EML_OK)
        return -1;
    for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)(i * 131);
    memset(ct, 0, n + (n / cs + 1) * 16);
    eml_err err = {0};
    double best_seal = 1e9, best_open = 1e9;
    for (int r = 0; r < 3; r++) {
        uint8_t header[EML_CONTAINER_HEADER_MAX];
        size_t hlen = 0, off = 0, ct_len = 0;
        eml_cw *w = NULL;
        if (eml_cw_new(EML_CONTAINER_SYMMETRIC, key, (uint32_t)cs, NULL, &w,
                       header, &hlen, &err) != EML_OK)
            return -1;
        double t0 = now();
        while (off < n) {
            size_t k = n - off < cs ? n - off : cs, cl = 0;
            if (eml_cw_seal(w, pt + off, k, off + k == n, ct + ct_len, &cl,
                            &err) != EML_OK)
                return -1;
            off += k;
            ct_len += cl;
        }
        double t1 = now();
        eml_cw_free(w);
        eml_cr *rd = NULL;
        eml_container_keys keys = {key, NULL};
        if (eml_cr_new(header, hlen, &keys, &rd, &err) != EML_OK) return -1;
        size_t pos = 0, got = 0;
        int ok = 1;
        double t2 = now();
        while (pos < ct_len) {
            size_t k = ct_len - pos < cs + 16 ? ct_len - pos : cs + 16, pl = 0;
            if (eml_cr_open(rd, ct + pos, k, pos + k == ct_len, chunk, &pl,
                            &err) != EML_OK)
                return -1;
            ok &= r > 0 || memcmp(chunk, pt + got, pl) == 0;
            pos += k;
            got += pl;
        }
        double t3 = now();
        if (eml_cr_finish(rd, &err) != EML_OK || got != n || !ok) return -1;
        eml_cr_free(rd);
        if (t1 - t0 < best_seal) best_seal = t1 - t0;
        if (t3 - t2 < best_open) best_open = t3 - t2;
    }
    printf("  container (AES-256-GCM, 1 MiB chunks), %zu MB: seal %.2f GB/s, "
           "open %.2f GB/s\n",
           mb, (double)n / best_seal * 1e-9, (double)n / best_open * 1e-9);
    free(chunk);
    free(ct);
    free(pt);
    return 0;
}

int main(int argc, char **argv)
{
    int pings = 20000;
    size_t mb = 256;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--pings") == 0) pings = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mb") == 0) mb = (size_t)atoi(argv[i + 1]);
    }
    if (pings < 100 || mb < 1) {
        fprintf(stderr, "usage: bench_enclave [--pings N>=100] [--mb N]\n");
        return 2;
    }
    char home[] = "/tmp/eml-bench-XXXXXX";
    if (mkdtemp(home) == NULL) return 1;
    setenv("ENCLAVEML_HOME", home, 1);
    printf("bench_enclave:\n");
    int rc = bench_backend(EML_BACKEND_SIM, pings) ||
             bench_backend(EML_BACKEND_NONE, pings) || bench_container(mb);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", home);
    if (system(cmd) != 0) rc = 1;
    return rc ? 1 : 0;
}
