/*
 * bench_decentral.c - what a round costs a node inside (issue 12): for a
 * model of --params parameters and --neighbours neighbours, the time to
 * open (authenticate and decrypt) each neighbour's sealed share and
 * average them (Metropolis-Hastings), per neighbour per million
 * parameters, against the same with frames in the clear (the
 * --enclave none baseline), and the time to seal one's own share.  Full
 * and topk:0.1 shares.  The median of --reps repetitions, one thread.
 *
 *   bench_decentral [--params N] [--neighbours K] [--reps R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "enclaveml/decentral.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct setup {
    eml_dchan send[16], recv[16];
    uint8_t *frame[16];
    size_t len[16];
} setup;

/* Channels from k neighbours to node 0, sealed or in the clear. */
static int channels(setup *s, int k, int clear)
{
    uint8_t sk0[32], pk0[32], run[32] = {1};
    if (eml_x25519_keygen(sk0, pk0) != EML_OK) return -1;
    for (int j = 0; j < k; j++) {
        if (clear) {
            eml_dchan_init_clear(&s->send[j], (uint32_t)j + 1, 0);
            eml_dchan_init_clear(&s->recv[j], 0, (uint32_t)j + 1);
            continue;
        }
        uint8_t skj[32], pkj[32], nj[32] = {(uint8_t)j}, n0[32] = {0xee};
        eml_err err = {0};
        if (eml_x25519_keygen(skj, pkj) != EML_OK ||
            eml_dchan_init(&s->send[j], (uint32_t)j + 1, skj, nj, 0, pk0, n0,
                           run, &err) != EML_OK ||
            eml_dchan_init(&s->recv[j], 0, sk0, n0, (uint32_t)j + 1, pkj, nj,
                           run, &err) != EML_OK)
            return -1;
    }
    return 0;
}

/* Median seconds to seal one share, and to open k and average them. */
static void measure(size_t n, int k, int reps, int clear, double frac,
                    double *seal_s, double *avg_s)
{
    setup s;
    memset(&s, 0, sizeof(s));
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    double *scratch = malloc(n * sizeof(double));
    double *ts = malloc((size_t)reps * sizeof(double));
    double *ta = malloc((size_t)reps * sizeof(double));
    uint8_t *buf[16] = {0};
    size_t cap[16] = {0};
    eml_share_view views[16];
    const eml_share_view *vp[16];
    eml_rng rng;
    eml_rng_seed(&rng, 1);
    for (size_t i = 0; i < n; i++) x[i] = y[i] = eml_rng_uniform(&rng) - 0.5f;
    eml_share_spec spec;
    eml_err err = {0};
    eml_sharer *sh = NULL;
    if (channels(&s, k, clear) != 0 ||
        eml_share_parse(frac < 1 ? "topk:0.1" : "full", 0, &spec, &err) ||
        eml_sharer_new(&spec, n, x, &sh, &err)) {
        fprintf(stderr, "bench_decentral: setup failed %s\n", err.msg);
        exit(1);
    }
    size_t fsz = eml_dmsg_size((uint32_t)n, (uint32_t)n, 0);
    for (int j = 0; j < k; j++) s.frame[j] = malloc(fsz);
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < n; i += 97) x[i] += 0.01f; /* some change */
        eml_share_view v;
        eml_sharer_select(sh, x, &rng, &v);
        double t0 = eml_cpu_seconds();
        for (int j = 0; j < k; j++) {
            s.send[j].send_seq = (uint64_t)r;
            if (eml_dmsg_seal(&s.send[j], (uint64_t)r, (uint32_t)k, &v, 0,
                              s.frame[j], &s.len[j], &err) != EML_OK)
                exit(1);
        }
        ts[r] = (eml_cpu_seconds() - t0) / k;
        t0 = eml_cpu_seconds();
        for (int j = 0; j < k; j++) {
            eml_dmsg_refusal why;
            s.recv[j].recv_seq = (uint64_t)r;
            if (eml_dmsg_open(&s.recv[j], (uint64_t)r, (uint32_t)n, s.frame[j],
                              s.len[j], &buf[j], &cap[j], &views[j], &why,
                              &err) != EML_OK) {
                fprintf(stderr, "bench_decentral: %s\n", err.msg);
                exit(1);
            }
            vp[j] = &views[j];
        }
        eml_average(y, n, (uint32_t)k, vp, (size_t)k, scratch);
        ta[r] = eml_cpu_seconds() - t0;
    }
    qsort(ts, (size_t)reps, sizeof(double), cmp_d);
    qsort(ta, (size_t)reps, sizeof(double), cmp_d);
    *seal_s = ts[reps / 2];
    *avg_s = ta[reps / 2];
    for (int j = 0; j < k; j++) {
        free(s.frame[j]);
        free(buf[j]);
        eml_dchan_free(&s.send[j]);
        eml_dchan_free(&s.recv[j]);
    }
    eml_sharer_free(sh);
    free(x);
    free(y);
    free(scratch);
    free(ts);
    free(ta);
}

int main(int argc, char **argv)
{
    size_t n = 1000000;
    int k = 4, reps = 15;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--params") == 0) n = strtoul(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--neighbours") == 0) k = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--reps") == 0) reps = atoi(argv[i + 1]);
    }
    if (n < 1 || k < 1 || k > 16 || reps < 1) {
        fprintf(stderr, "usage: bench_decentral [--params N] [--neighbours "
                        "1..16] [--reps R]\n");
        return 2;
    }
    double m = (double)n / 1e6;
    printf("  %zu parameters, %d neighbours, median of %d rounds, CPU time\n",
           n, k, reps);
    for (int f = 0; f < 2; f++) {
        double frac = f == 0 ? 1.0 : 0.1;
        double ss, sa, cs, ca;
        measure(n, k, reps, 0, frac, &ss, &sa);
        measure(n, k, reps, 1, frac, &cs, &ca);
        printf("  %-9s sealed: open + average %.3f ms per neighbour per "
               "million parameters (seal %.3f); in the clear %.3f (%.3f)\n",
               f == 0 ? "full" : "topk:0.1", 1000 * sa / k / m,
               1000 * ss / m, 1000 * ca / k / m, 1000 * cs / m);
    }
    return 0;
}
