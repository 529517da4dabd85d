/*
 * rng.h - a small, seedable, reproducible generator (xoshiro256**, seeded
 * through splitmix64) for weight initialisation, shuffling and dropout.
 *
 * NOT a cryptographic generator: anything that protects privacy (DP noise,
 * sampling) must use a CSPRNG instead.
 *
 *     eml_rng r; eml_rng_seed(&r, 42);
 *     uint32_t k = eml_rng_below(&r, 10);   // unbiased, 0..9
 *     float u = eml_rng_uniform(&r);        // [0, 1)
 */
#ifndef ENCLAVEML_RNG_H
#define ENCLAVEML_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eml_rng {
    uint64_t s[4];
} eml_rng;

void eml_rng_seed(eml_rng *r, uint64_t seed);
uint64_t eml_rng_next(eml_rng *r);
/* Uniform integer in [0, bound), bound > 0, without modulo bias. */
uint64_t eml_rng_below(eml_rng *r, uint64_t bound);
/* Uniform float in [0, 1) with 24 random bits. */
float eml_rng_uniform(eml_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void eml_rng_shuffle(eml_rng *r, uint32_t *idx, size_t n);

#ifdef __cplusplus
}
#endif
#endif
