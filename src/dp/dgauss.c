/*
 * dgauss.c - exact arithmetic for the discrete Gaussian sampler: bounds on
 * exp(-n/d) in multi-limb fixed point with directed rounding, the
 * per-sigma proposal table (bucket weights, alias table, 64-bit bounds of
 * the acceptance constants) and the exact comparison of a uniform number
 * with such a constant.  The sampling loop is in noise.c; the method and
 * why it is exact are in dgauss_internal.h and docs/dp.md.
 *
 * Trusted code: integer arithmetic only, no I/O, no randomness (the
 * caller hands in random words), no floating point in any decision (one
 * double picks the scale kn, which any value would leave exact).
 * Temporaries that depend on a sample are wiped.
 */
#include "dp/dgauss_internal.h"

#include <math.h>
#include <string.h>

typedef eml_u128 u128;

/* Limb arrays are little-endian.  A fixed-point number with F fraction
 * limbs has the value sum a[i] 2^(64 (i - F)). */
#define MAXN (EML_DGAUSS_MAX_LIMBS + 4)

static void wipe(void *p, size_t n)
{
    static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;
    wipe_fn(p, 0, n);
}

/* ==== multi-limb arithmetic ==== */

static void mp_inc(uint64_t *a, int n)
{
    for (int i = 0; i < n && ++a[i] == 0; i++) continue;
}

static void mp_add(uint64_t *a, const uint64_t *b, int n)
{
    uint64_t carry = 0;
    for (int i = 0; i < n; i++) {
        u128 s = (u128)a[i] + b[i] + carry;
        a[i] = (uint64_t)s;
        carry = (uint64_t)(s >> 64);
    }
}

/* a -= b; returns 1 if the result went below zero. */
static int mp_sub(uint64_t *a, const uint64_t *b, int n)
{
    uint64_t borrow = 0;
    for (int i = 0; i < n; i++) {
        uint64_t x = a[i], y = b[i];
        uint64_t d = x - y - borrow;
        borrow = (x < y) || (x == y && borrow);
        a[i] = d;
    }
    return (int)borrow;
}

static int mp_cmp(const uint64_t *a, const uint64_t *b, int n)
{
    for (int i = n - 1; i >= 0; i--)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

/* a *= m; the product must fit in n limbs. */
static void mp_mul1(uint64_t *a, int n, uint64_t m)
{
    uint64_t carry = 0;
    for (int i = 0; i < n; i++) {
        u128 p = (u128)a[i] * m + carry;
        a[i] = (uint64_t)p;
        carry = (uint64_t)(p >> 64);
    }
}

/* a = a / d rounded down, or up if up; d > 0. */
static void mp_div1(uint64_t *a, int n, uint64_t d, int up)
{
    uint64_t rem = 0;
    for (int i = n - 1; i >= 0; i--) {
        u128 x = (u128)rem << 64 | a[i];
        a[i] = (uint64_t)(x / d);
        rem = (uint64_t)(x % d);
    }
    if (up && rem != 0) mp_inc(a, n);
}

/* a <<= s bits, s <= 128; the result must fit in n limbs. */
static void mp_shl(uint64_t *a, int n, unsigned s)
{
    unsigned limbs = s / 64, bits = s % 64;
    for (int i = n - 1; i >= 0; i--) {
        int k = i - (int)limbs;
        uint64_t hi = k >= 0 ? a[k] : 0, lo = k >= 1 ? a[k - 1] : 0;
        a[i] = bits ? hi << bits | lo >> (64 - bits) : hi;
    }
}

/* r = a b with f fraction limbs (f + 1 limbs each), rounded down or up;
 * the integer part of the product must fit one limb.  r may be a or b. */
static void mp_mulfix(uint64_t *r, const uint64_t *a, const uint64_t *b,
                      int f, int up)
{
    int n = f + 1;
    uint64_t t[2 * MAXN] = {0};
    for (int i = 0; i < n; i++) {
        uint64_t carry = 0;
        for (int j = 0; j < n; j++) {
            u128 p = (u128)a[i] * b[j] + t[i + j] + carry;
            t[i + j] = (uint64_t)p;
            carry = (uint64_t)(p >> 64);
        }
        t[i + n] = carry;
    }
    int dropped = 0;
    for (int i = 0; i < f; i++) dropped |= t[i] != 0;
    memcpy(r, t + f, (size_t)n * sizeof(*r));
    if (up && dropped) mp_inc(r, n);
    wipe(t, sizeof(t));
}

static void mp_set_one(uint64_t *a, int f)
{
    memset(a, 0, (size_t)(f + 1) * sizeof(*a));
    a[f] = 1;
}

/* ==== exp(-n/d) ==== */

/* lo <= exp(-p/q) <= hi for 0 <= p <= q, by the Taylor series: terms
 * T_k = T_(k-1) p / (q k), computed rounded down for lo and up for hi,
 * added with alternating signs.  The terms do not increase, so the series
 * left off at the first term T_K <= 1 unit in the last place differs from
 * the sum so far by at most T_K (zero for p = 0: exp(0) is exactly 1). */
static void exp_series(uint64_t p, uint64_t q, int f, uint64_t *lo,
                       uint64_t *hi)
{
    int n = f + 1;
    uint64_t tlo[MAXN], thi[MAXN], plo[MAXN], phi[MAXN];
    uint64_t nlo[MAXN] = {0}, nhi[MAXN] = {0}, one[MAXN] = {0};
    one[0] = 1;
    mp_set_one(tlo, f);
    mp_set_one(thi, f);
    mp_set_one(plo, f);
    mp_set_one(phi, f);
    for (uint64_t k = 1;; k++) {
        /* floor(floor(a / q) / k) = floor(a / (q k)), ceil likewise */
        mp_mul1(tlo, n, p);
        mp_mul1(thi, n, p);
        if (q <= UINT64_MAX / k) {
            mp_div1(tlo, n, q * k, 0);
            mp_div1(thi, n, q * k, 1);
        } else {
            mp_div1(tlo, n, q, 0);
            mp_div1(tlo, n, k, 0);
            mp_div1(thi, n, q, 1);
            mp_div1(thi, n, k, 1);
        }
        if (mp_cmp(thi, one, n) <= 0) break;
        if (k & 1) {
            mp_add(nlo, tlo, n);
            mp_add(nhi, thi, n);
        } else {
            mp_add(plo, tlo, n);
            mp_add(phi, thi, n);
        }
    }
    /* lo = sum of even terms (low) - odd terms (high) - T_K (high), at
     * least 0; hi = even (high) - odd (low) + T_K (high). */
    memcpy(lo, plo, (size_t)n * sizeof(*lo));
    if (mp_sub(lo, nhi, n) || mp_sub(lo, thi, n))
        memset(lo, 0, (size_t)n * sizeof(*lo));
    memcpy(hi, phi, (size_t)n * sizeof(*hi));
    mp_sub(hi, nlo, n); /* even terms outweigh odd ones: exp > 0 */
    mp_add(hi, thi, n);
    wipe(tlo, sizeof(tlo));
    wipe(thi, sizeof(thi));
    wipe(plo, sizeof(plo));
    wipe(phi, sizeof(phi));
    wipe(nlo, sizeof(nlo));
    wipe(nhi, sizeof(nhi));
}

void eml_dgauss_exp_bounds(u128 num, uint64_t den, int frac, uint64_t *lo,
                           uint64_t *hi)
{
    int n = frac + 1;
    u128 m = num / den;
    uint64_t rem = (uint64_t)(num % den);
    if (m > (u128)46 * (unsigned)frac) {
        /* exp(-num/den) <= e^-m < 2^(-66 frac): below one unit. */
        memset(lo, 0, (size_t)n * sizeof(*lo));
        memset(hi, 0, (size_t)n * sizeof(*hi));
        hi[0] = 1;
        return;
    }
    exp_series(rem, den, frac, lo, hi);
    if (m == 0) return;
    /* times e^-m, by squaring and multiplying the bounds of e^-1 */
    uint64_t elo[MAXN], ehi[MAXN], plo[MAXN], phi[MAXN];
    exp_series(1, 1, frac, elo, ehi);
    mp_set_one(plo, frac);
    mp_set_one(phi, frac);
    for (int bit = 63 - __builtin_clzll((uint64_t)m); bit >= 0; bit--) {
        mp_mulfix(plo, plo, plo, frac, 0);
        mp_mulfix(phi, phi, phi, frac, 1);
        if ((uint64_t)m >> bit & 1) {
            mp_mulfix(plo, plo, elo, frac, 0);
            mp_mulfix(phi, phi, ehi, frac, 1);
        }
    }
    mp_mulfix(lo, lo, plo, frac, 0);
    mp_mulfix(hi, hi, phi, frac, 1);
    wipe(plo, sizeof(plo));
    wipe(phi, sizeof(phi));
}

int eml_dgauss_decide(const uint64_t *u, int nlimbs,
                      const eml_dgauss_target *t)
{
    /* nlimbs fraction limbs and 4 integer limbs: (mul 2^shl) times a
     * bound of at most 1 stays below 2^193. */
    int f = nlimbs, n = nlimbs + 4, res = -1;
    uint64_t lo[MAXN] = {0}, hi[MAXN] = {0}, ul[MAXN] = {0};
    eml_dgauss_exp_bounds(t->num, t->den, f, lo, hi);
    mp_mul1(lo, n, t->mul);
    mp_shl(lo, n, t->shl);
    mp_div1(lo, n, t->div, 0);
    mp_mul1(hi, n, t->mul);
    mp_shl(hi, n, t->shl);
    mp_div1(hi, n, t->div, 1);
    /* U lies in [ul, ul + 1 unit) */
    for (int i = 0; i < f; i++) ul[f - 1 - i] = u[i];
    if (mp_cmp(ul, hi, n) >= 0)
        res = 0;
    else {
        mp_inc(ul, n);
        if (mp_cmp(ul, lo, n) <= 0) res = 1;
    }
    if (res < 0 && nlimbs >= EML_DGAUSS_MAX_LIMBS) res = 0;
    wipe(lo, sizeof(lo));
    wipe(hi, sizeof(hi));
    wipe(ul, sizeof(ul));
    return res;
}

/* ==== the table ==== */

/* f_j = exp(-(j B)^2 / (2 s2)) = r^(j^2), r = exp(-B^2 / (2 s2)), walked
 * with f_j = f_(j-1) g_j, g_j = r^(2j - 1) = g_(j-1) r^2, in 128-bit
 * fixed point (F = 2), rounded down for the lower and up for the upper
 * bounds. */
#define TF 2
typedef struct fwalk {
    uint64_t flo[TF + 1], fhi[TF + 1]; /* bounds of f_j */
    uint64_t glo[TF + 1], ghi[TF + 1]; /* bounds of g_(j+1) */
    uint64_t r2lo[TF + 1], r2hi[TF + 1];
} fwalk;

static void fwalk_start(fwalk *w, uint64_t bsq, uint64_t den)
{
    eml_dgauss_exp_bounds(bsq, den, TF, w->glo, w->ghi);
    mp_mulfix(w->r2lo, w->glo, w->glo, TF, 0);
    mp_mulfix(w->r2hi, w->ghi, w->ghi, TF, 1);
    mp_set_one(w->flo, TF);
    mp_set_one(w->fhi, TF);
}

static void fwalk_next(fwalk *w)
{
    mp_mulfix(w->flo, w->flo, w->glo, TF, 0);
    mp_mulfix(w->fhi, w->fhi, w->ghi, TF, 1);
    mp_mulfix(w->glo, w->glo, w->r2lo, TF, 0);
    mp_mulfix(w->ghi, w->ghi, w->r2hi, TF, 1);
}

static double fix_to_double(const uint64_t *a)
{
    return (double)a[2] + 0x1p-64 * (double)a[1] + 0x1p-128 * (double)a[0];
}

/* ceil(k a) for a fixed-point a with TF fraction limbs. */
static uint64_t ceil_times(const uint64_t *a, uint64_t k)
{
    uint64_t x[TF + 2] = {a[0], a[1], a[2], 0};
    mp_mul1(x, TF + 2, k);
    return x[2] + (x[0] != 0 || x[1] != 0);
}

/* floor or ceil of 2^64 k a / w: a bound of 2^64 rho for a = f_j. */
static u128 rho_bound(const uint64_t *a, uint64_t k, uint64_t w, int up)
{
    uint64_t x[TF + 2] = {a[0], a[1], a[2], 0};
    mp_mul1(x, TF + 2, k);
    mp_div1(x, TF + 2, w, up); /* 2^128 k a / w <= 2^128: x[3] = 0 */
    int frac = x[0] != 0;      /* then divide by 2^64 */
    u128 v = (u128)x[2] << 64 | x[1];
    return v + (u128)(up && frac);
}

#define TOTAL ((uint64_t)EML_DGAUSS_COLS << EML_DGAUSS_COL_BITS) /* 2^24 */

/* Vose's alias method on integer weights summing to TOTAL:
 * column c keeps its own bucket for thresh of its 2^COL_BITS slots and
 * gives the rest to alias, so P(bucket k) = w_k / TOTAL exactly. */
static eml_status build_alias(eml_dgauss *g)
{
    const uint64_t cap = (uint64_t)1 << EML_DGAUSS_COL_BITS;
    uint64_t rem[EML_DGAUSS_COLS];
    unsigned small[EML_DGAUSS_COLS], large[EML_DGAUSS_COLS];
    unsigned ns = 0, nl = 0;
    for (unsigned i = 0; i < EML_DGAUSS_COLS; i++) {
        rem[i] = g->w[i];
        if (rem[i] < cap)
            small[ns++] = i;
        else
            large[nl++] = i;
    }
    while (ns > 0 && nl > 0) {
        unsigned s = small[--ns], l = large[--nl];
        g->col[s].thresh = (uint32_t)rem[s];
        g->col[s].alias = l;
        rem[l] -= cap - rem[s];
        if (rem[l] < cap)
            small[ns++] = l;
        else
            large[nl++] = l;
    }
    /* With an exact total every column left holds exactly cap. */
    while (nl > 0) {
        unsigned l = large[--nl];
        if (rem[l] != cap) return EML_ERR_RANGE;
        g->col[l].thresh = (uint32_t)cap;
        g->col[l].alias = l;
    }
    return ns == 0 ? EML_OK : EML_ERR_RANGE;
}

/* J for the first L = J B with L^2 >= need (need < 2^50). */
static unsigned body_buckets(uint64_t need, unsigned bbits)
{
    uint64_t l = (uint64_t)sqrt((double)need);
    while (l * l < need) l++;
    while (l > 0 && (l - 1) * (l - 1) >= need) l--;
    return (unsigned)((l + ((uint64_t)1 << bbits) - 1) >> bbits);
}

eml_status eml_dgauss_init(eml_dgauss *g, uint64_t s2, unsigned tail_sq)
{
    if (s2 < 1 || s2 > (UINT64_C(1) << 43) || tail_sq < 1 || tail_sq > 42)
        return EML_ERR_RANGE;
    memset(g, 0, sizeof(*g));
    g->s2 = s2;
    g->den = 2 * s2;
    /* B = 2^bbits with sigma / B in [16, 32), or B = 1 for sigma < 16 */
    unsigned lg = 63 - (unsigned)__builtin_clzll(s2);
    g->bbits = lg / 2 >= 4 ? lg / 2 - 4 : 0;
    unsigned j_n = body_buckets(tail_sq * s2, g->bbits);
    uint64_t bsq = (uint64_t)1 << (2 * g->bbits);
    /* J <= sqrt(42) 32 + 1 = 209; J B^2 <= s2 keeps every body exponent
     * r (2 j B + r) / (2 s2) below 1 (CKS Algorithm 1 needs that). */
    if (j_n < 1 || j_n > EML_DGAUSS_MAX_BODY ||
        (g->bbits > 0 && j_n * bsq > s2))
        return EML_ERR_RANGE;
    g->nbody = j_n;

    /* The scale kn: as large as lets sum ceil(kn f_j) + the tail's
     * weight stay within TOTAL (the padding then rejects < 2^-14). */
    fwalk w;
    fwalk_start(&w, bsq, g->den);
    double sum = 0;
    for (unsigned j = 0; j < j_n; j++, fwalk_next(&w))
        sum += fix_to_double(w.fhi);
    sum += 2.0 * j_n * fix_to_double(w.fhi);
    g->kn = (uint64_t)(((double)TOTAL - 4.0 * (j_n + 2)) /
                       (sum * (1 + 0x1p-30)));

    fwalk_start(&w, bsq, g->den);
    uint64_t total = 0;
    for (unsigned j = 0; j < j_n; j++, fwalk_next(&w)) {
        g->w[j] = ceil_times(w.fhi, g->kn);
        u128 lo = rho_bound(w.flo, g->kn, g->w[j], 0);
        u128 hi = rho_bound(w.fhi, g->kn, g->w[j], 1);
        g->lo[j] = lo >> 64 ? UINT64_MAX : (uint64_t)lo;
        g->hi_m1[j] = hi > (u128)1 << 64 || hi == 0 ? UINT64_MAX
                                                    : (uint64_t)(hi - 1);
        total += g->w[j];
    }
    /* w now holds the bounds of f(L), L = J B */
    g->wtail = ceil_times(w.fhi, 2 * g->kn * j_n);
    g->w[j_n] = g->wtail;
    total += g->wtail;
    if (total > TOTAL) return EML_ERR_RANGE;
    g->w[j_n + 1] = TOTAL - total;
    return build_alias(g);
}
