/*
 * noise.c - secure randomness for differentially private training: a
 * ChaCha20 generator, exact Bernoulli trials, and Gaussian noise that is
 * free of floating-point artefacts (the exact discrete Gaussian sampler of
 * Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
 * Privacy", NeurIPS 2020, scaled onto a fine binary grid).
 *
 * Trusted code: no I/O, no printing.  The single call outside the process
 * is os_entropy() (getrandom), which seeds eml_csprng_new; an SGX build
 * swaps that function for the platform's RDSEED-based source.  The
 * generator's state is secret: it is wiped when freed, the key is replaced
 * from the keystream at every refill (fast key erasure), and consumed
 * output is wiped from the buffer as it is handed out.
 *
 * Why not Box-Muller on a uniform float: a floating-point sampler produces
 * a distribution with holes and lumps at the bit level, and Mironov (CCS
 * 2012) showed that an adversary can read the unnoised value back from the
 * low bits.  Here every sample is an integer k drawn exactly from the
 * discrete Gaussian with integer-only arithmetic, and the float returned is
 * k * 2^-g, which is exact (no rounding) for |k| < 2^24.
 */
#include "enclaveml/dp.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#if !defined(__GNUC__)
#error "noise.c needs GCC or Clang: vector extensions, __int128, __builtin_clz"
#endif

/* Unsigned 128-bit integers for products of 64-bit values. */
__extension__ typedef unsigned __int128 u128;

/* ==== ChaCha20 (RFC 8439 block function, 64-bit counter) ==== */

#define CHACHA_BLOCK 64
#define CHACHA_LANES 8 /* blocks computed side by side */
#define CSPRNG_BUF 4096
#define CSPRNG_KEY 32

struct eml_csprng {
    uint32_t key[8];
    int seeded;
    size_t pos;             /* next unread byte of buf */
    u128 win;               /* bits not yet used, see bitsrc */
    unsigned nwin;
    unsigned char buf[CSPRNG_BUF];
};

static void wipe(void *p, size_t n)
{
    /* A volatile function pointer keeps the compiler from dropping the
     * store to memory that is about to be freed. */
    static void *(*const volatile wipe_fn)(void *, int, size_t) = memset;
    if (p != NULL && n > 0) wipe_fn(p, 0, n);
}

static uint32_t load32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void store32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

#define ROTL32(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
#define QR(a, b, c, d)                                                     \
    do {                                                                   \
        a += b; d ^= a; d = ROTL32(d, 16);                                 \
        c += d; b ^= c; b = ROTL32(b, 12);                                 \
        a += b; d ^= a; d = ROTL32(d, 8);                                  \
        c += d; b ^= c; b = ROTL32(b, 7);                                  \
    } while (0)

/* Eight blocks at once in vector registers (AVX2 with the trusted build's
 * -march=x86-64-v3, plain SSE2 otherwise). */
typedef uint32_t v8u __attribute__((vector_size(32)));

static void chacha_blocks(const uint32_t key[8], uint64_t counter,
                          unsigned char *out)
{
    static const uint32_t sigma[4] = {0x61707865, 0x3320646e, 0x79622d32,
                                      0x6b206574};
    v8u in[16], x[16];
    for (int i = 0; i < 4; i++) in[i] = (v8u){0} + sigma[i];
    for (int i = 0; i < 8; i++) in[4 + i] = (v8u){0} + key[i];
    for (int j = 0; j < CHACHA_LANES; j++) {
        uint64_t c = counter + (uint64_t)j;
        in[12][j] = (uint32_t)c;
        in[13][j] = (uint32_t)(c >> 32);
    }
    in[14] = (v8u){0};
    in[15] = (v8u){0};
    for (int i = 0; i < 16; i++) x[i] = in[i];
    for (int r = 0; r < 10; r++) {
        QR(x[0], x[4], x[8], x[12]);
        QR(x[1], x[5], x[9], x[13]);
        QR(x[2], x[6], x[10], x[14]);
        QR(x[3], x[7], x[11], x[15]);
        QR(x[0], x[5], x[10], x[15]);
        QR(x[1], x[6], x[11], x[12]);
        QR(x[2], x[7], x[8], x[13]);
        QR(x[3], x[4], x[9], x[14]);
    }
    /* Lane j of word i is word i of block j: transpose on the way out. */
    uint32_t w[16][CHACHA_LANES];
    for (int i = 0; i < 16; i++) {
        v8u v = x[i] + in[i];
        memcpy(w[i], &v, sizeof(v));
    }
    for (int j = 0; j < CHACHA_LANES; j++)
        for (int i = 0; i < 16; i++)
            store32le(out + (size_t)j * CHACHA_BLOCK + 4 * (size_t)i,
                      w[i][j]);
    /* The key and the state are secrets: leave no copy on the stack. */
    wipe(w, sizeof(w));
    wipe(x, sizeof(x));
    wipe(in, sizeof(in));
}

/* Fills buf with the keystream of the current key (block counter from 0),
 * then takes the first 32 bytes as the next key and wipes them: the
 * "fast key erasure" construction (Bernstein, 2017). */
static void refill(eml_csprng *r)
{
    for (size_t off = 0; off < CSPRNG_BUF;
         off += CHACHA_LANES * CHACHA_BLOCK)
        chacha_blocks(r->key, off / CHACHA_BLOCK, r->buf + off);
    for (int i = 0; i < 8; i++) r->key[i] = load32le(r->buf + 4 * i);
    wipe(r->buf, CSPRNG_KEY);
    r->pos = CSPRNG_KEY;
}

/* ==== the generator ==== */

/* The one call outside the process: 32 bytes from the kernel's CSPRNG. */
static int os_entropy(unsigned char *out, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = getrandom(out + got, n - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)k;
    }
    return 0;
}

static eml_status csprng_make(const unsigned char key[CSPRNG_KEY],
                              int seeded, eml_csprng **out, eml_err *err)
{
    eml_csprng *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "csprng: out of memory");
    for (int i = 0; i < 8; i++) r->key[i] = load32le(key + 4 * i);
    r->seeded = seeded;
    refill(r);
    *out = r;
    return EML_OK;
}

eml_status eml_csprng_new(eml_csprng **out, eml_err *err)
{
    if (out == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "csprng: out is NULL");
    *out = NULL;
    unsigned char key[CSPRNG_KEY];
    if (os_entropy(key, sizeof(key)) != 0) {
        wipe(key, sizeof(key));
        return eml_err_set(err, EML_ERR_IO,
                           "csprng: the OS gave no random bytes (getrandom)");
    }
    eml_status st = csprng_make(key, 0, out, err);
    wipe(key, sizeof(key));
    return st;
}

eml_status eml_csprng_new_seeded(uint64_t seed, eml_csprng **out,
                                 eml_err *err)
{
    if (out == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "csprng: out is NULL");
    *out = NULL;
    unsigned char key[CSPRNG_KEY] = {0};
    for (int i = 0; i < 8; i++) key[i] = (unsigned char)(seed >> (8 * i));
    return csprng_make(key, 1, out, err);
}

void *eml_csprng_state(eml_csprng *rng, size_t *n)
{
    *n = sizeof(*rng);
    return rng;
}

void eml_csprng_free(eml_csprng *rng)
{
    if (rng == NULL) return;
    wipe(rng, sizeof(*rng));
    free(rng);
}

int eml_csprng_is_seeded(const eml_csprng *rng)
{
    return rng != NULL && rng->seeded;
}

void eml_csprng_bytes(eml_csprng *rng, void *out, size_t n)
{
    unsigned char *o = out;
    while (n > 0) {
        if (rng->pos == CSPRNG_BUF) refill(rng);
        size_t k = CSPRNG_BUF - rng->pos;
        if (k > n) k = n;
        memcpy(o, rng->buf + rng->pos, k);
        wipe(rng->buf + rng->pos, k);
        rng->pos += k;
        o += k;
        n -= k;
    }
}

/* ==== random bits ==== */

/* Samplers read the keystream as a bit stream through a window held in a
 * local bitsrc (so that it lives in registers), written back to the
 * generator when they return.  Bits past the ones a decision needed are
 * left in the window: they are still fresh. */
typedef struct bitsrc {
    eml_csprng *r;
    u128 win;      /* next bits, most significant first */
    unsigned nwin; /* valid bits in win */
} bitsrc;

/* The samplers' helpers are inlined so that the bit window stays in
 * registers. */
#define HOT static inline __attribute__((always_inline))

static uint64_t take64(eml_csprng *r)
{
    if (r->pos + 8 > CSPRNG_BUF) refill(r);
    uint64_t v;
    memcpy(&v, r->buf + r->pos, 8); /* any byte order is uniform */
    memset(r->buf + r->pos, 0, 8);
    r->pos += 8;
    return v;
}

static bitsrc bits_open(eml_csprng *r)
{
    bitsrc b = {r, r->win, r->nwin};
    return b;
}

static void bits_close(const bitsrc *b)
{
    b->r->win = b->win;
    b->r->nwin = b->nwin;
}

/* The next 64 bits, not consumed. */
HOT uint64_t peek64(bitsrc *b)
{
    if (b->nwin < 64) {
        b->win |= (u128)take64(b->r) << (64 - b->nwin);
        b->nwin += 64;
    }
    return (uint64_t)(b->win >> 64);
}

/* Drops the first c (1..64) bits. */
HOT void consume(bitsrc *b, unsigned c)
{
    b->win <<= c;
    b->nwin -= c;
}

/* k (1..64) uniformly random bits. */
HOT uint64_t rbits(bitsrc *b, unsigned k)
{
    uint64_t v = peek64(b) >> (64 - k);
    consume(b, k);
    return v;
}

/* ==== exact Bernoulli trials ==== */

/* 1 with probability n/m exactly, m < 2^63.  Compares a uniform U in [0,1)
 * with n/m, CHUNK binary digits at a time: with w the next CHUNK bits of U
 * and p = floor(2^CHUNK n / m) the next digits of n/m, w < p decides 1 and
 * w > p decides 0, both found by multiplying (w m against 2^CHUNK n)
 * rather than dividing.  A tie (probability 2^-CHUNK) goes on with the
 * remainder. */
#define CHUNK 8
HOT int bern_frac(bitsrc *b, uint64_t n, uint64_t m)
{
    if (n >= m) return 1;
    while (n != 0) {
        uint64_t w = rbits(b, CHUNK);
        u128 x = (u128)n << CHUNK;
        u128 wm = (u128)w * m;
        if (wm + m <= x) return 1; /* (w + 1) m <= x: w < p */
        if (wm > x) return 0;      /* w > p */
        n = (uint64_t)(x - wm);    /* w == p: x - p m < m */
    }
    return 0; /* n/m ended in zeros while U matched: U >= n/m */
}

/* 1 with probability exp(-n/d), 0 <= n <= d (CKS Algorithm 1 for gamma in
 * [0, 1]): count K up while Bernoulli(gamma / K) succeeds; 1 iff K ends
 * odd.  Needs d * K < 2^63: d < 2^57 here, and K stops at 64 (reaching it
 * has probability below 1/63!, and then the parity so far is returned). */
HOT int bern_exp_frac(bitsrc *b, uint64_t n, uint64_t d)
{
    if (n == 0) return 1;
    uint64_t k = 1;
    while (k < 64 && bern_frac(b, n, d * k)) k++;
    return (int)(k & 1);
}

/* 1 with probability exp(-1) (the same with gamma = 1; K = 1 always
 * succeeds). */
HOT int bern_exp1(bitsrc *b)
{
    if (!rbits(b, 1)) return 0; /* K = 2: Bernoulli(1/2) is one bit */
    uint64_t k = 3;
    while (bern_frac(b, 1, k)) k++;
    return (int)(k & 1);
}

/* 1 with probability exp(-n/d) for any n >= 0, d < 2^57 (CKS Algorithm 1
 * for gamma > 1: floor(gamma) trials of exp(-1), stopping at the first
 * failure, then one for the fraction).  Subtracting instead of dividing:
 * the trials fail early, after 1.6 on average whatever gamma is. */
HOT int bern_exp(bitsrc *b, u128 n, uint64_t d)
{
    while (n >= d) {
        if (!bern_exp1(b)) return 0;
        n -= d;
    }
    return bern_exp_frac(b, (uint64_t)n, d);
}

int eml_dp_bernoulli(eml_csprng *rng, double q)
{
    if (!(q > 0)) return 0; /* also NaN */
    if (q >= 1) return 1;
    /* q = f * 2^e exactly, f in [0.5, 1), e <= 0.  U < q needs the first
     * -e bits of U to be zero (otherwise U >= 2^e > q), and then the rest
     * of U, read as a fraction, to be below f = mant / 2^53. */
    int e;
    double f = frexp(q, &e);
    uint64_t p = (uint64_t)ldexp(f, 53) << 11; /* f as a 64-bit fraction */
    unsigned zeros = (unsigned)(-e);
    bitsrc b = bits_open(rng);
    int res = -1;
    while (zeros > 0 && res < 0) {
        unsigned k = zeros > 64 ? 64 : zeros;
        uint64_t u = peek64(&b) >> (64 - k);
        if (u != 0) {
            consume(&b, (unsigned)__builtin_clzll(u) - (64 - k) + 1);
            res = 0;
        } else {
            consume(&b, k);
            zeros -= k;
        }
    }
    if (res < 0) {
        uint64_t u = peek64(&b);
        if (u == p) {
            consume(&b, 64); /* the rest of f is zero: U >= f */
            res = 0;
        } else {
            consume(&b, (unsigned)__builtin_clzll(u ^ p) + 1);
            res = p > u;
        }
    }
    bits_close(&b);
    return res;
}

/* ==== the discrete Gaussian (CKS 2020, Algorithm 3) ==== */

/* N_Z(0, sigma^2) through a discrete Laplace proposal of scale t, accepted
 * with probability exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)).  Any t > 0 is
 * correct; t near sigma keeps the acceptance rate high (0.76 at t =
 * sigma, 0.65 at t = sigma * 2^(+-1/2)).  With sigma^2 / t = cn / cd the
 * exponent is (|y| cd - cn)^2 / den, den = 2 sigma^2 cd^2, all integers. */
typedef struct dgauss {
    uint64_t t;
    unsigned tbits; /* t = 2^tbits, or 0 if t is not a power of two */
    uint64_t cn, cd;
    uint64_t den; /* < 2^57, so den * K stays below 2^63 */
} dgauss;

/* The Laplace proposal's geometric part beyond this restarts the loop: an
 * event of probability exp(-2^30), kept so that |y| cd < 2^63. */
#define V_MAX ((uint64_t)1 << 30)

/* Uniform integer in [0, t), t >= 2. */
HOT uint64_t uniform_below(bitsrc *b, uint64_t t)
{
    unsigned bits = 64 - (unsigned)__builtin_clzll(t - 1);
    for (;;) {
        uint64_t u = rbits(b, bits);
        if (u < t) return u;
    }
}

HOT int64_t dgauss_one(bitsrc *b, const dgauss *g)
{
    for (;;) {
        /* Discrete Laplace of scale t (CKS Algorithm 2 with s = 1): |y| =
         * u + t v, u on [0, t) with weights exp(-u/t) (uniform, then
         * Bernoulli(exp(-u/t))), v geometric with P(v >= j) = exp(-j). */
        uint64_t u = g->tbits ? rbits(b, g->tbits) : uniform_below(b, g->t);
        if (!bern_exp_frac(b, u, g->t)) continue;
        uint64_t v = 0;
        while (bern_exp1(b)) v++;
        if (v > V_MAX) continue;
        uint64_t x = u + g->t * v;
        int neg = (int)rbits(b, 1);
        if (neg && x == 0) continue; /* -0 and +0 are the same point */
        /* Accept with probability exp(-(x cd - cn)^2 / den). */
        u128 xc = (u128)x * g->cd;
        u128 a = xc > g->cn ? xc - g->cn : (u128)g->cn - xc;
        if (bern_exp(b, a * a, g->den))
            return neg ? -(int64_t)x : (int64_t)x;
    }
}

eml_status eml_dp_discrete_gaussian(eml_csprng *rng, int64_t *out, size_t n,
                                    uint32_t sigma2)
{
    if (rng == NULL || (out == NULL && n > 0)) return EML_ERR_INVALID;
    if (sigma2 < 1 || sigma2 > (UINT32_C(1) << 28)) return EML_ERR_RANGE;
    uint64_t s2 = sigma2;
    uint64_t root = (uint64_t)sqrt((double)s2);
    while (root * root > s2) root--;
    while ((root + 1) * (root + 1) <= s2) root++;
    dgauss g;
    g.t = root + 1; /* floor(sigma) + 1, as CKS choose */
    g.tbits = 0;
    g.cn = s2;      /* sigma^2 / t = s2 / t */
    g.cd = g.t;
    g.den = 2 * s2 * g.t * g.t; /* <= 2^29 (2^14 + 1)^2 < 2^57.01 */
    bitsrc b = bits_open(rng);
    for (size_t i = 0; i < n; i++) out[i] = dgauss_one(&b, &g);
    bits_close(&b);
    return EML_OK;
}

double eml_dp_noise_grid(double stddev)
{
    if (!(stddev >= 0x1p-100 && stddev <= 0x1p100)) return 0;
    return ldexp(1.0, ilogb(stddev) - EML_DP_GRID_BITS);
}

eml_status eml_dp_gaussian_fill(eml_csprng *rng, float *out, size_t n,
                                double stddev)
{
    if (rng == NULL || (out == NULL && n > 0)) return EML_ERR_INVALID;
    if (!isfinite(stddev) || stddev < 0) return EML_ERR_RANGE;
    if (stddev == 0) {
        if (n > 0) memset(out, 0, n * sizeof(*out));
        return EML_OK;
    }
    if (stddev < 0x1p-100 || stddev > 0x1p100) return EML_ERR_RANGE;

    /* The grid h = 2^-gb puts s = stddev / h in [2^20, 2^21): the noise is
     * resolved to a millionth of its spread, and |k| < 2^24 (8 standard
     * deviations at least) makes k * h an exact float. */
    int gb = EML_DP_GRID_BITS - ilogb(stddev);
    double s = ldexp(stddev, gb); /* exact: a power-of-two scaling */
    /* sigma^2 = t m with t the power of two nearest s and m = ceil(s^2/t),
     * so that sigma^2 / t = m is an integer, sigma >= s, and sigma / s - 1
     * <= t / (2 s^2) <= 2^-20.  s = M 2^-32 with M an integer below 2^53,
     * so s^2 / t = M^2 / (t 2^64) exactly. */
    unsigned tbits = s < 0x1.6a09e667f3bcdp+20 ? 20 : 21; /* 2^20.5 */
    uint64_t t = (uint64_t)1 << tbits;
    uint64_t big_m = (uint64_t)ldexp(s, 32);
    u128 num = (u128)big_m * big_m;
    u128 div = (u128)t << 64;
    uint64_t m = (uint64_t)((num + div - 1) / div);
    dgauss g = {t, tbits, m, 1, 2 * t * m}; /* den <= 2^44 */
    double h = ldexp(1.0, -gb);
    bitsrc b = bits_open(rng);
    for (size_t i = 0; i < n; i++)
        out[i] = (float)((double)dgauss_one(&b, &g) * h);
    bits_close(&b);
    return EML_OK;
}
