/*
 * rng.c - xoshiro256** (Blackman & Vigna) seeded through splitmix64.
 * Deterministic across machines: only integer arithmetic until the final
 * float conversion.  No I/O.
 */
#include "enclaveml/rng.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void eml_rng_seed(eml_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t eml_rng_next(eml_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t eml_rng_below(eml_rng *r, uint64_t bound)
{
    /* Rejection sampling: discard the top partial range. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do {
        x = eml_rng_next(r);
    } while (x >= limit);
    return x % bound;
}

float eml_rng_uniform(eml_rng *r)
{
    return (float)(eml_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

void eml_rng_shuffle(eml_rng *r, uint32_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)eml_rng_below(r, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
