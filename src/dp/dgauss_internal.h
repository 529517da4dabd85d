/*
 * dgauss_internal.h - the exact discrete Gaussian sampler's tables and
 * exact arithmetic (dgauss.c), shared with the sampling loop (noise.c) and
 * the unit tests (internal, hidden).  docs/dp.md, "Construction", has the
 * method and the argument that it is exact.
 *
 * N_Z(0, s2) is sampled by rejection from a proposal whose probabilities
 * are integers over 2^24: a bucket j is chosen from an alias table, then a
 * point of it uniformly.  Body bucket j < nbody is [j B, (j + 1) B), B =
 * 2^bbits; bucket nbody is the tail [L, oo), L = nbody B, split further in
 * halves of probability; bucket nbody + 1 rejects (the padding to 2^24).
 * A body point x = j B + r is accepted with probability
 *     rho_j * exp(-r (2 j B + r) / (2 s2)),   rho_j = kn f_j / w_j,
 * with f_j = exp(-(j B)^2 / (2 s2)) and w_j = ceil(kn f_j): two exact
 * trials, the second on integers (CKS Algorithm 1), the first by comparing
 * a uniform number with the 64-bit bounds lo_j <= 2^64 rho_j <= hi_j and,
 * only when they do not decide, with bounds of ever more bits.
 */
#ifndef EML_DP_DGAUSS_INTERNAL_H
#define EML_DP_DGAUSS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/dp.h"

__extension__ typedef unsigned __int128 eml_u128;

#define EML_DGAUSS_COLS 256          /* alias table columns */
#define EML_DGAUSS_COL_BITS 16       /* log2 of a column's capacity */
#define EML_DGAUSS_MAX_BODY 250      /* nbody <= this */
/* Default tail start: L^2 >= 42 s2, so f(L) <= exp(-21). */
#define EML_DGAUSS_TAIL_SQ 42

/* Most fraction limbs (64 bits each) that exact comparisons use: a
 * comparison still undecided at 1024 bits (probability below 2^-900)
 * returns 0, see eml_dgauss_decide. */
#define EML_DGAUSS_MAX_LIMBS 16

/* The proposal and the acceptance bounds for one s2.  A pure function of
 * (s2, tail_sq): holds no randomness and nothing secret. */
typedef struct eml_dgauss {
    uint64_t s2;          /* sigma^2, an integer in [1, 2^43] */
    uint64_t den;         /* 2 s2 */
    unsigned bbits;       /* body bucket width B = 2^bbits */
    unsigned nbody;       /* J, body buckets; L = J B */
    uint64_t kn;          /* the scale: w_j = ceil(kn f_j) */
    uint64_t wtail;       /* the tail's weight, ceil(2 kn J f(L)) */
    struct {
        uint32_t thresh;  /* own bucket if 16 random bits are below */
        uint32_t alias;   /* otherwise this bucket */
    } col[EML_DGAUSS_COLS];
    uint64_t w[EML_DGAUSS_COLS];     /* bucket weights, sum 2^24 */
    uint64_t lo[EML_DGAUSS_COLS];    /* lo_j <= 2^64 rho_j */
    uint64_t hi_m1[EML_DGAUSS_COLS]; /* 2^64 rho_j <= hi_m1 + 1 */
} eml_dgauss;

/* The table for N_Z(0, s2), s2 in [1, 2^43], with the tail starting at
 * the first multiple L of B with L^2 >= tail_sq * s2 (tail_sq in [1, 42];
 * EML_DGAUSS_TAIL_SQ but in tests).  EML_ERR_RANGE outside these. */
eml_status eml_dgauss_init(eml_dgauss *g, uint64_t s2, unsigned tail_sq);

/* The value an exact comparison is made against: (mul 2^shl / div) *
 * exp(-num / den), which the caller guarantees is at most 1. */
typedef struct eml_dgauss_target {
    eml_u128 num;
    uint64_t den;
    uint64_t mul;
    unsigned shl; /* <= 128 */
    uint64_t div;
} eml_dgauss_target;

/* Compares U, a uniform number in [0, 1) of which the first nlimbs 64-bit
 * words are known (u[0] most significant; nlimbs a power of two in [2,
 * EML_DGAUSS_MAX_LIMBS]), with the target: 1 if U < target whatever the
 * later bits, 0 if U >= target, -1 if nlimbs words do not tell (then ask
 * again with twice as many).  At EML_DGAUSS_MAX_LIMBS it never returns -1:
 * an undecided comparison (an interval of width below 2^-900) gives 0. */
int eml_dgauss_decide(const uint64_t *u, int nlimbs,
                      const eml_dgauss_target *t);

/* Bounds lo <= exp(-num / den) <= hi as fixed-point numbers with frac
 * fraction limbs and one integer limb (little-endian limbs: lo[frac] is
 * the integer part), frac in [1, EML_DGAUSS_MAX_LIMBS]; hi - lo is a few
 * hundred units of the last place at most.  den > 0. */
void eml_dgauss_exp_bounds(eml_u128 num, uint64_t den, int frac,
                           uint64_t *lo, uint64_t *hi);

/* out[0..n) = exact samples of N_Z(0, g->s2) (noise.c). */
void eml_dgauss_sample(eml_csprng *rng, const eml_dgauss *g, int64_t *out,
                       size_t n);

#endif
