/*
 * noise.c - secure randomness for differentially private training: a
 * ChaCha20 generator, exact Bernoulli trials, and Gaussian noise that is
 * free of floating-point artefacts (the discrete Gaussian of Canonne,
 * Kamath and Steinke, "The Discrete Gaussian for Differential Privacy",
 * NeurIPS 2020, sampled exactly by rejection from a table-driven proposal
 * (dgauss.c) and scaled onto a fine binary grid).
 *
 * Trusted code: no I/O, no printing.  The single call outside the process
 * is os_entropy() (getrandom), which seeds eml_csprng_new; an SGX build
 * swaps that function for the platform's RDSEED-based source.  The
 * generator's state is secret: it is wiped when freed, the key is replaced
 * from the keystream at every refill (fast key erasure), and consumed
 * output is wiped from the buffer as it is handed out (by the Gaussian
 * sampler in bulk, before it returns or reads the generator otherwise).
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

#include "dp/dgauss_internal.h"

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

#define ROTL32(v, n) (((v) << (n)) | ((v) >> (32 - (n))))

/* Eight blocks at once in vector registers (AVX2 with the trusted build's
 * -march=x86-64-v3, plain SSE2 otherwise). */
typedef uint32_t v8u __attribute__((vector_size(32)));

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define HAVE_SHUFFLE 1
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define VECTOR_STORE 1 /* a vector's bytes are its words, little-endian */
#endif
#endif
#endif

#ifdef HAVE_SHUFFLE
/* Rotations by 16 and 8 move whole bytes: one byte shuffle each. */
typedef unsigned char v32b __attribute__((vector_size(32)));
#define SHUF __builtin_shufflevector
#define ROT16(v)                                                           \
    ((v8u)SHUF((v32b)(v), (v32b)(v), 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, \
               14, 15, 12, 13, 18, 19, 16, 17, 22, 23, 20, 21, 26, 27, 24, \
               25, 30, 31, 28, 29))
#define ROT8(v)                                                            \
    ((v8u)SHUF((v32b)(v), (v32b)(v), 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, \
               15, 12, 13, 14, 19, 16, 17, 18, 23, 20, 21, 22, 27, 24, 25, \
               26, 31, 28, 29, 30))
#else
#define ROT16(v) ROTL32(v, 16)
#define ROT8(v) ROTL32(v, 8)
#endif

#define QR(a, b, c, d)                                                     \
    do {                                                                   \
        a += b; d ^= a; d = ROT16(d);                                      \
        c += d; b ^= c; b = ROTL32(b, 12);                                 \
        a += b; d ^= a; d = ROT8(d);                                       \
        c += d; b ^= c; b = ROTL32(b, 7);                                  \
    } while (0)

#ifndef VECTOR_STORE
static void store32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
#else
/* Rows a[0..8) (lane j = block j) of eight words are stored as words
 * 0..7 of each block: an 8 x 8 transpose in three rounds of shuffles. */
static void transpose_store(const v8u *a, unsigned char *out)
{
    v8u t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = SHUF(a[2 * k], a[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[2 * k + 1] =
            SHUF(a[2 * k], a[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int k = 0; k < 2; k++)
        for (int h = 0; h < 2; h++) {
            v8u p = t[4 * k + h], q = t[4 * k + 2 + h];
            u[4 * k + 2 * h] = SHUF(p, q, 0, 1, 8, 9, 4, 5, 12, 13);
            u[4 * k + 2 * h + 1] = SHUF(p, q, 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int l = 0; l < 4; l++) {
        v8u lo = SHUF(u[l], u[4 + l], 0, 1, 2, 3, 8, 9, 10, 11);
        v8u hi = SHUF(u[l], u[4 + l], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(out + (size_t)l * CHACHA_BLOCK, &lo, sizeof(lo));
        memcpy(out + (size_t)(l + 4) * CHACHA_BLOCK, &hi, sizeof(hi));
    }
    /* the keystream holds the next key: no copy stays on the stack */
    wipe(t, sizeof(t));
    wipe(u, sizeof(u));
}
#endif

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
    /* Lane j of word i is word i of block j: transpose on the way out
     * (little-endian words: the byte order of the RFC). */
    for (int i = 0; i < 16; i++) x[i] += in[i];
#ifdef VECTOR_STORE
    transpose_store(x, out);
    transpose_store(x + 8, out + 32);
#else
    for (int j = 0; j < CHACHA_LANES; j++)
        for (int i = 0; i < 16; i++)
            store32le(out + (size_t)j * CHACHA_BLOCK + 4 * (size_t)i,
                      x[i][j]);
#endif
    /* The key and the state are secrets: leave no copy on the stack. */
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

/* ==== the discrete Gaussian ==== */

/* N_Z(0, s2) by rejection from the bucket proposal of dgauss_internal.h;
 * docs/dp.md, "Construction", has the argument that every step is exact.
 * Seven bytes of keystream per proposal, read straight from the buffer as
 * a 56-bit word v (the bit window serves only the rare cases):
 *     bits 55..48  alias column          bits 13..6  first 8 bits of the
 *     bits 47..32  column threshold                  exp(-y) trial
 *     bit  31      sign                  bits 5..0   first 6 bits of the
 *     bits 30..31-bb  offset in bucket               rho_j trial
 * (bb <= 17, so the offset ends at bit 14 or above).  With probability
 * about 0.96 these bits decide everything: no division, no window, two
 * well-predicted branches.  The rest (the exp(-y) trial going on, up to
 * 3%; rho_j needing more bits, 1.6%; the tail, 10^-7) take the functions
 * below, which draw from the window. */

/* Uniform integer in [0, t), t >= 1. */
static uint64_t uniform_below(bitsrc *b, uint64_t t)
{
    if (t == 1) return 0;
    unsigned bits = 64 - (unsigned)__builtin_clzll(t - 1);
    for (;;) {
        uint64_t u = rbits(b, bits);
        if (u < t) return u;
    }
}

/* 1 with probability equal to the target (at most 1), exactly: a uniform U
 * drawn 64 bits at a time is compared with bounds of the target of 128,
 * 256, ... bits until they tell (dgauss.c).  first: U's first 64 bits if
 * the caller has drawn them.  Taken with probability about 2^-62 per
 * sample, and in the tail. */
static int exact_below(bitsrc *b, const uint64_t *first,
                       const eml_dgauss_target *t)
{
    uint64_t u[EML_DGAUSS_MAX_LIMBS];
    int have = 0, res = -1;
    if (first != NULL) u[have++] = *first;
    for (int nl = 2; res < 0; nl *= 2) {
        while (have < nl) u[have++] = rbits(b, 64);
        res = eml_dgauss_decide(u, nl, t);
    }
    wipe(u, sizeof(u));
    return res;
}

#define COLD static __attribute__((noinline, cold))

/* CKS Algorithm 1 for exp(-n/d), 0 <= n <= d, when the first 8 bits w8 of
 * the first trial's uniform U did not show U > n/d: the first trial,
 * Bernoulli(n/d), is finished (w8 below the first 8 bits of n/d decides
 * success, a tie goes on with the remainder), then K counts up while
 * Bernoulli(n / (d K)) succeeds; 1 iff K ends odd.  d K < 2^63 as d <
 * 2^57 and K stops at 64 (reaching it has probability below 1/63!, and
 * then the parity so far is returned). */
COLD int exp_rest(eml_csprng *r, uint64_t n, uint64_t d, uint64_t w8)
{
    bitsrc b = bits_open(r);
    uint64_t x = n << 8, wm = w8 * d; /* < 2^52 */
    int res = 1;
    if (wm + d <= x || bern_frac(&b, x - wm, d)) {
        uint64_t k = 2;
        while (k < 64 && bern_frac(&b, n, d * k)) k++;
        res = (int)(k & 1);
    }
    bits_close(&b);
    return res;
}

/* Bernoulli(rho_j) when U's first 6 bits p6 agree with lo_j's or hi_j's:
 * 58 more bits, compared with the 64-bit bounds; U between them (width a
 * few 2^-64) goes to exact_below. */
COLD int rho_rest(eml_csprng *r, const eml_dgauss *g, unsigned j,
                  uint64_t p6)
{
    bitsrc b = bits_open(r);
    uint64_t u = p6 << 58 | rbits(&b, 58);
    int res = u < g->lo[j];
    if (!res && u <= g->hi_m1[j]) {
        uint64_t jb = (uint64_t)j << g->bbits;
        eml_dgauss_target t = {(u128)jb * jb, g->den, g->kn, 0, g->w[j]};
        res = exact_below(&b, &u, &t);
    }
    bits_close(&b);
    return res;
}

/* The tail bucket, x >= L = J B: x in [L 2^i, L 2^(i+1)) with probability
 * 2^-(i+1), uniform in there, accepted with probability
 * (2 kn J 4^i / w_tail) exp(-x^2 / (2 s2)) <= 1 (docs/dp.md).  Returns x,
 * or 0 to reject.  i >= 36 is rejected: it proposes x >= 2^36 sigma,
 * whose probability under the target is below exp(-2^71). */
COLD uint64_t tail_draw(eml_csprng *r, const eml_dgauss *g)
{
    bitsrc b = bits_open(r);
    unsigned i = 0;
    for (;;) {
        uint64_t v = peek64(&b);
        if (v != 0) {
            unsigned z = (unsigned)__builtin_clzll(v);
            consume(&b, z + 1);
            i += z;
            break;
        }
        consume(&b, 64);
        i += 64;
    }
    uint64_t x = 0;
    if (i < 36) {
        uint64_t start = (uint64_t)g->nbody << g->bbits << i; /* < 2^61 */
        x = start + uniform_below(&b, start);
        eml_dgauss_target t = {(u128)x * x, g->den, 2 * g->kn * g->nbody,
                               2 * i, g->wtail};
        if (!exact_below(&b, NULL, &t)) x = 0;
    }
    bits_close(&b);
    return x;
}

/* The bits of the first 7 of 8 bytes loaded in host order. */
HOT uint64_t le56(uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return v >> 8;
#else
    return v & (UINT64_MAX >> 8);
#endif
}

/* n samples into iout, or fout[i] = sample * h.  The buffer position is
 * kept in a register; the words used are wiped in bulk (from `last` to
 * pos) before anything else reads the generator and before returning, so
 * that no store per word stands in the loop's way. */
HOT void dgauss_batch(eml_csprng *r, const eml_dgauss *g, int64_t *iout,
                      float *fout, double h, size_t n)
{
    const unsigned bb = g->bbits, nbody = g->nbody;
    const uint64_t den = g->den;
    size_t pos = r->pos, last = pos;
#define SYNC (wipe(r->buf + last, pos - last), r->pos = pos)
#define RESYNC (pos = last = r->pos)
    for (size_t i = 0; i < n;) {
        if (pos + 8 > CSPRNG_BUF) {
            refill(r); /* overwrites the whole buffer */
            RESYNC;
        }
        uint64_t v; /* 8 bytes read, the first 7 used: any order is uniform */
        memcpy(&v, r->buf + pos, 8);
        pos += 7;
        v = le56(v);
        unsigned col = (unsigned)(v >> 48);
        uint32_t u = (uint32_t)(v >> 32) & 0xffff;
        unsigned j = u < g->col[col].thresh ? col : g->col[col].alias;
        int neg = (int)(v >> 31 & 1);
        uint64_t off = (v & 0x7fffffff) >> (31 - bb);
        uint64_t x;
        if (__builtin_expect(j < nbody, 1)) {
            x = ((uint64_t)j << bb) + off;
            /* exp(-y), y = (x^2 - (j B)^2) / (2 s2) = ny / den < 1, then
             * rho_j: each usually settled by its bits of v */
            uint64_t ny = off * (((uint64_t)j << (bb + 1)) + off);
            uint64_t w8 = v >> 6 & 0xff, p6 = v & 0x3f;
            int more_y = w8 * den <= ny << 8;
            int more_rho = p6 >= g->lo[j] >> 58;
            if (__builtin_expect(more_y | more_rho, 0)) {
                SYNC;
                int ok = !more_y || exp_rest(r, ny, den, w8);
                if (ok && more_rho)
                    ok = p6 <= g->hi_m1[j] >> 58 && rho_rest(r, g, j, p6);
                RESYNC;
                if (!ok) continue;
            }
        } else if (j == nbody) {
            SYNC;
            x = tail_draw(r, g);
            RESYNC;
            if (x == 0) continue;
        } else {
            continue; /* the padding */
        }
        if (neg && x == 0) continue; /* -0 and +0 are the same point */
        int64_t k = neg ? -(int64_t)x : (int64_t)x;
        if (fout != NULL)
            fout[i++] = (float)((double)k * h);
        else
            iout[i++] = k;
    }
    SYNC;
#undef SYNC
#undef RESYNC
}

void eml_dgauss_sample(eml_csprng *rng, const eml_dgauss *g, int64_t *out,
                       size_t n)
{
    dgauss_batch(rng, g, out, NULL, 0, n);
}

eml_status eml_dp_discrete_gaussian(eml_csprng *rng, int64_t *out, size_t n,
                                    uint32_t sigma2)
{
    if (rng == NULL || (out == NULL && n > 0)) return EML_ERR_INVALID;
    if (sigma2 < 1 || sigma2 > (UINT32_C(1) << 28)) return EML_ERR_RANGE;
    eml_dgauss g;
    eml_status st = eml_dgauss_init(&g, sigma2, EML_DGAUSS_TAIL_SQ);
    if (st != EML_OK) return st;
    dgauss_batch(rng, &g, out, NULL, 0, n);
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
    /* sigma^2 = t m with t the power of two nearest s and m = ceil(s^2/t):
     * an integer, sigma >= s, and sigma / s - 1 <= t / (2 s^2) <= 2^-20.
     * (Any integer sigma^2 >= s^2 would do now; t m, which the earlier
     * sampler needed, keeps the documented distribution.)  s = M
     * 2^-32 with M an integer below 2^53, so s^2 / t = M^2 / (t 2^64)
     * exactly. */
    unsigned tbits = s < 0x1.6a09e667f3bcdp+20 ? 20 : 21; /* 2^20.5 */
    uint64_t t = (uint64_t)1 << tbits;
    uint64_t big_m = (uint64_t)ldexp(s, 32);
    u128 num = (u128)big_m * big_m;
    u128 div = (u128)t << 64;
    uint64_t m = (uint64_t)((num + div - 1) / div);
    eml_dgauss g;
    eml_status st = eml_dgauss_init(&g, t * m, EML_DGAUSS_TAIL_SQ);
    if (st != EML_OK) return st; /* t m <= 2^42: cannot happen */
    double h = ldexp(1.0, -gb);
    dgauss_batch(rng, &g, NULL, out, h, n);
    return EML_OK;
}
