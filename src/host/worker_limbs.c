/*
 * worker_limbs.c - exact products in Z_p from fp64 DGEMMs of 16-bit limbs
 * (worker_gpu.h).  A field element read as a signed value s (|s| < 2^60)
 * is s = sum_i d_i 2^(16 i), with d_i in [0, 2^16) for every limb but the
 * top one, which keeps the sign (|d_top| <= 2^15).  Then
 *
 *   sum_t a_t b_t = sum_(i,j) 2^(16 (i + j)) sum_t a_(t,i) b_(t,j),
 *
 * and every inner sum over a block of at most 2^20 terms is an integer
 * below 2^52 in magnitude, which fp64 holds exactly whatever the order of
 * summation.  The limbs of A are stacked as (la m) x kb and those of B as
 * kb x (lb n), so one DGEMM per block gives every (i, j) pair; the host
 * reduces each pair's sums mod p, scales them by 2^(16 (i + j)) mod p and
 * adds them up.
 */
#include <stdlib.h>
#include <string.h>

#include "host/worker_gpu.h"

static int64_t signed_of(uint64_t v)
{
    return v > EML_FIELD_P / 2 ? (int64_t)v - (int64_t)EML_FIELD_P
                               : (int64_t)v;
}

/* Limbs the largest magnitude of n elements needs: top limb within
 * 2^15 means |s| < 2^(16 (l - 1) + 15). */
static int limbs_for(const uint64_t *x, size_t n)
{
    uint64_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t s = signed_of(x[i]);
        uint64_t a = s < 0 ? (uint64_t)-s : (uint64_t)s;
        mx = a > mx ? a : mx;
    }
    int l = 1;
    while (l < 4 && mx >= ((uint64_t)1 << (16 * (l - 1) + 15))) l++;
    return l;
}

/* Limb `i` (of l) of every element of rows x cols block of x (row stride
 * ld, starting at column c0), into out (rows x cols). */
static void limb(const uint64_t *x, size_t ld, size_t c0, size_t rows,
                 size_t cols, int i, int l, double *out)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++) {
            int64_t s = signed_of(x[r * ld + c0 + c]);
            for (int t = 0; t < i; t++) s >>= 16; /* floor: arithmetic */
            out[r * cols + c] = i == l - 1 ? (double)s : (double)(s & 0xffff);
        }
}

eml_status eml_limb_gemm(void *ctx, const uint64_t *a, const uint64_t *b,
                         uint64_t *c, uint32_t m, uint32_t n, uint32_t k)
{
    const eml_limb_ctx *lc = ctx;
    int la = limbs_for(a, (size_t)m * k), lb = limbs_for(b, (size_t)k * n);
    size_t kb = k < EML_LIMB_KBLOCK ? k : EML_LIMB_KBLOCK;
    double *sa = malloc((size_t)la * m * kb * sizeof(double));
    double *sb = malloc((size_t)lb * n * kb * sizeof(double));
    double *sc = malloc((size_t)la * m * lb * n * sizeof(double));
    double *tb = malloc((size_t)kb * n * sizeof(double));
    eml_status st = EML_OK;
    if (sa == NULL || sb == NULL || sc == NULL || tb == NULL) {
        st = EML_ERR_NOMEM;
        goto out;
    }
    /* 2^(16 s) mod p for s = i + j */
    uint64_t pow[8];
    pow[0] = 1;
    for (int s = 1; s < 8; s++) pow[s] = eml_field_mul(pow[s - 1], 1u << 16);
    memset(c, 0, (size_t)m * n * sizeof(uint64_t));
    for (size_t k0 = 0; k0 < k; k0 += kb) {
        size_t kk = k - k0 < kb ? k - k0 : kb;
        for (int i = 0; i < la; i++) /* A's limbs, stacked by rows */
            limb(a, k, k0, m, kk, i, la, sa + (size_t)i * m * kk);
        for (int j = 0; j < lb; j++) { /* B's limbs, side by side */
            limb(b + k0 * n, n, 0, kk, n, j, lb, tb);
            for (size_t r = 0; r < kk; r++)
                memcpy(sb + r * lb * n + (size_t)j * n, tb + r * n,
                       n * sizeof(double));
        }
        st = lc->dgemm(lc->user, la * (int)m, lb * (int)n, (int)kk, sa, sb,
                       sc);
        if (st != EML_OK) goto out;
        size_t w = (size_t)lb * n;
        for (int i = 0; i < la; i++)
            for (size_t r = 0; r < m; r++)
                for (int j = 0; j < lb; j++)
                    for (size_t q = 0; q < n; q++) {
                        double v = sc[((size_t)i * m + r) * w + (size_t)j * n +
                                      q];
                        uint64_t e = eml_field_mul(eml_field_of((int64_t)v),
                                                   pow[i + j]);
                        c[r * n + q] = eml_field_add(c[r * n + q], e);
                    }
    }
out:
    free(sa);
    free(sb);
    free(sc);
    free(tb);
    return st;
}
