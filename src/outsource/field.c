/*
 * field.c - arithmetic in Z_p, p = 2^61 - 1, for outsourced products:
 * fixed-point quantization of floats into the field, the exact product
 * (the worker's CPU backend and the tests' oracle), and Freivalds' check,
 * which costs the checker O(mk + kn + mn) per round against the product's
 * O(mkn).
 *
 * Exactness: elements are below 2^61, a product below 2^122; sums of 32
 * such products stay below 2^127, so the 128-bit accumulator is folded
 * every 32 terms and never overflows.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the worker protocol's arrays are read in place");

int eml_field_shift(const float *x, size_t n, int bits)
{
    float mx = 0;
    int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        nan |= a != a;
        mx = a > mx ? a : mx;
    }
    if (nan || !(mx > 0) || !isfinite(mx)) return 0;
    int e;
    frexpf(mx, &e); /* mx < 2^e */
    return bits - e;
}

void eml_field_quantize_i32(const float *x, size_t n, int shift,
                            int32_t *out)
{
    double scale = ldexp(1.0, shift);
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        /* |x| 2^shift < 2^31 by the caller's shift; anything else (NaN,
         * infinity, a shift not from eml_field_shift) becomes 0. */
        double v = (double)x[i] * scale;
        v = fabs(v) < 2147483647.0 ? v : 0.0; /* NaN: 0 */
        /* Round to nearest, ties to even (as nearbyint): adding and
         * taking away 1.5 * 2^52 leaves v's integer part, exact for
         * |v| < 2^51. */
        double r = (v + 6755399441055744.0) - 6755399441055744.0;
        out[i] = (int32_t)r;
    }
}

#define fold eml_field_fold128

void eml_field_decode(const uint64_t *c, size_t n, double scale, float *out)
{
    /* signed(c) as hi * 2^32 + lo with both halves converted from 32-bit
     * integers, which vectorises where 64-bit conversion does not. */
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)c[i] -
                    (c[i] > EML_FIELD_P / 2 ? (int64_t)EML_FIELD_P : 0);
        int32_t hi = (int32_t)(v >> 32);
        int32_t lo = (int32_t)((uint32_t)v ^ 0x80000000u);
        double d = (double)hi * 4294967296.0 + ((double)lo + 2147483648.0);
        out[i] = (float)(d * scale);
    }
}

/* The field element as a signed integer (v > p/2 is v - p). */
static int64_t signed_of(uint64_t v)
{
    return v > EML_FIELD_P / 2 ? (int64_t)v - (int64_t)EML_FIELD_P
                               : (int64_t)v;
}

/* Elements of x as signed integers into out; the largest magnitude. */
static uint64_t to_signed(const uint8_t *x, size_t n, int64_t *out)
{
    uint64_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = signed_of(eml_worker_get(x, i));
        uint64_t a = out[i] < 0 ? (uint64_t)-out[i] : (uint64_t)out[i];
        if (a > mx) mx = a;
    }
    return mx;
}

/* When every exact sum fits 63 bits (k * max|a| * max|b| < 2^62, as the
 * client's fixed point makes it): plain 64-bit products, row by row. */
static int gemm_small(const uint8_t *a, const uint8_t *b, uint8_t *c,
                      uint32_t m, uint32_t n, uint32_t k)
{
    size_t na = (size_t)m * k, nb = (size_t)k * n;
    int64_t *sa = malloc((na + nb) * sizeof(int64_t));
    if (sa == NULL) return 0;
    int64_t *sb = sa + na;
    uint64_t ma = to_signed(a, na, sa), mb = to_signed(b, nb, sb);
    if ((unsigned __int128)ma * mb * k >= ((unsigned __int128)1 << 62)) {
        free(sa);
        return 0;
    }
    int failed = 0;
#pragma omp parallel
    {
        int64_t *acc = malloc((size_t)n * sizeof(int64_t));
        if (acc == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < (int64_t)m; i++) {
            if (acc == NULL) continue;
            memset(acc, 0, (size_t)n * sizeof(int64_t));
            for (uint32_t t = 0; t < k; t++) {
                int64_t av = sa[(size_t)i * k + t];
                if (av == 0) continue;
                const int64_t *row = sb + (size_t)t * n;
                for (uint32_t j = 0; j < n; j++) acc[j] += av * row[j];
            }
            for (uint32_t j = 0; j < n; j++)
                eml_worker_put(c, (size_t)i * n + j, eml_field_of(acc[j]));
        }
        free(acc);
    }
    free(sa);
    return !failed;
}

void eml_field_gemm(const uint8_t *a, const uint8_t *b, uint8_t *c,
                    uint32_t m, uint32_t n, uint32_t k)
{
    if (gemm_small(a, b, c, m, n, k)) return;
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t i = 0; i < (int64_t)m; i++) {
        for (uint32_t j = 0; j < n; j++) {
            unsigned __int128 acc = 0;
            uint64_t sum = 0;
            for (uint32_t t = 0; t < k; t++) {
                acc += (unsigned __int128)eml_worker_get(a, (size_t)i * k + t) *
                       eml_worker_get(b, (size_t)t * n + j);
                if ((t & 31) == 31) {
                    sum = eml_field_add(sum, fold(acc));
                    acc = 0;
                }
            }
            sum = eml_field_add(sum, fold(acc));
            eml_worker_put(c, (size_t)i * n + j, sum);
        }
    }
}

/* A signed 128-bit sum (|v| < 2^126) mod p. */
static uint64_t fold_signed(__int128 v)
{
    if (v >= 0) return fold((unsigned __int128)v);
    uint64_t r = fold((unsigned __int128)-v);
    return r == 0 ? 0 : EML_FIELD_P - r;
}

void eml_field_gemm_padded(const uint64_t *r, const int32_t *w, uint64_t *u,
                           uint32_t m, uint32_t n, uint32_t k, int r_left)
{
    /* Row i of u is the sum over t of left[i][t] * right row t; each term
     * is below 2^92 in magnitude, so 2^34 of them fit the accumulator. */
#pragma omp parallel
    {
        __int128 *acc = malloc((size_t)n * sizeof(__int128));
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)m; i++) {
            if (acc == NULL) { /* slower, without the row buffer */
                for (uint32_t j = 0; j < n; j++) {
                    __int128 s = 0;
                    for (uint32_t t = 0; t < k; t++)
                        s += r_left ? (__int128)r[(size_t)i * k + t] *
                                          w[(size_t)t * n + j]
                                    : (__int128)w[(size_t)i * k + t] *
                                          (__int128)r[(size_t)t * n + j];
                    u[(size_t)i * n + j] = fold_signed(s);
                }
                continue;
            }
            memset(acc, 0, (size_t)n * sizeof(__int128));
            for (uint32_t t = 0; t < k; t++) {
                if (r_left) {
                    __int128 rv = (__int128)r[(size_t)i * k + t];
                    const int32_t *row = w + (size_t)t * n;
                    for (uint32_t j = 0; j < n; j++) acc[j] += rv * row[j];
                } else {
                    __int128 wv = w[(size_t)i * k + t];
                    if (wv == 0) continue;
                    const uint64_t *row = r + (size_t)t * n;
                    for (uint32_t j = 0; j < n; j++)
                        acc[j] += wv * (__int128)row[j];
                }
            }
            for (uint32_t j = 0; j < n; j++)
                u[(size_t)i * n + j] = fold_signed(acc[j]);
        }
        free(acc);
    }
}

/* (a * b) mod p for any modulus p < 2^63. */
static uint64_t mulmod(uint64_t a, uint64_t b, uint64_t p)
{
    if (p == EML_FIELD_P) return eml_field_mul(a, b);
    return (uint64_t)((unsigned __int128)a * b % p);
}

static uint64_t addmod(uint64_t a, uint64_t b, uint64_t p)
{
    uint64_t s = a + b;
    return s >= p ? s - p : s;
}

/* y (rows) = X (rows x cols) * v (cols) mod p. */
static void matvec(const uint64_t *x, const uint64_t *v, uint64_t *y,
                   uint32_t rows, uint32_t cols, uint64_t p)
{
    for (uint32_t i = 0; i < rows; i++) {
        uint64_t s = 0;
        const uint64_t *row = x + (size_t)i * cols;
        for (uint32_t j = 0; j < cols; j++)
            s = addmod(s, mulmod(row[j], v[j], p), p);
        y[i] = s;
    }
}

int eml_freivalds(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                  uint32_t m, uint32_t n, uint32_t k, uint64_t p, int reps,
                  uint64_t (*next)(void *user), void *user)
{
    /* Scratch on the stack would not do for big n: the caller's sizes
     * bound these, and the allocation is per check. */
    size_t cap = (size_t)n + k + 2 * (size_t)m;
    uint64_t *buf = malloc(cap * sizeof(uint64_t));
    if (buf == NULL) return 0;
    uint64_t *r = buf, *br = r + n, *abr = br + k, *cr = abr + m;
    int ok = 1;
    for (int rep = 0; rep < reps && ok; rep++) {
        for (uint32_t j = 0; j < n; j++) r[j] = next(user) % p;
        matvec(b, r, br, k, n, p);
        matvec(a, br, abr, m, k, p);
        matvec(c, r, cr, m, n, p);
        ok = memcmp(abr, cr, (size_t)m * sizeof(uint64_t)) == 0;
    }
    free(buf);
    return ok;
}

/* A signed 128-bit sum (|v| < 2^126) mod p. */
static uint64_t fold_s128(__int128 v)
{
    if (v >= 0) return fold((unsigned __int128)v);
    uint64_t r = fold((unsigned __int128)-v);
    return r == 0 ? 0 : EML_FIELD_P - r;
}

/* y = X v mod p, X (rows x cols) small signed integers (|x| < 2^31), v
 * field elements: each term below 2^92, so a row's exact sum fits a
 * signed 128-bit accumulator for up to 2^34 columns. */
static void matvec_i32(const int32_t *x, const uint64_t *v, uint64_t *y,
                       uint32_t rows, uint32_t cols)
{
    for (uint32_t i = 0; i < rows; i++) {
        const int32_t *row = x + (size_t)i * cols;
        __int128 acc = 0;
        for (uint32_t j = 0; j < cols; j++)
            acc += (__int128)row[j] * (__int128)v[j];
        y[i] = fold_s128(acc);
    }
}

int eml_freivalds_small(const int32_t *a, const int32_t *b,
                        const uint64_t *c, uint32_t m, uint32_t n,
                        uint32_t k, int reps, uint64_t (*next)(void *user),
                        void *user)
{
    size_t cap = (size_t)n + (size_t)k + 2 * (size_t)m;
    uint64_t *buf = malloc(cap * sizeof(uint64_t));
    if (buf == NULL) return 0;
    uint64_t *r = buf, *br = r + n, *abr = br + k, *cr = abr + m;
    int ok = 1;
    for (int rep = 0; rep < reps && ok; rep++) {
        for (uint32_t j = 0; j < n; j++) r[j] = next(user) % EML_FIELD_P;
        matvec_i32(b, r, br, k, n);  /* B r */
        matvec_i32(a, br, abr, m, k); /* A (B r) */
        for (uint32_t i = 0; i < m; i++) { /* C r, folded every 32 terms */
            const uint64_t *row = c + (size_t)i * n;
            uint64_t s = 0;
            for (uint32_t j0 = 0; j0 < n; j0 += 32) {
                uint32_t j1 = n - j0 < 32 ? n : j0 + 32;
                unsigned __int128 acc = 0;
                for (uint32_t j = j0; j < j1; j++)
                    acc += (unsigned __int128)row[j] * r[j];
                s = eml_field_add(s, fold(acc));
            }
            cr[i] = s;
        }
        ok = memcmp(abr, cr, (size_t)m * sizeof(uint64_t)) == 0;
    }
    free(buf);
    return ok;
}
