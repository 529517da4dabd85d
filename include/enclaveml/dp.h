/*
 * dp.h - differential privacy for DP-SGD: the Renyi-DP accountant of the
 * Poisson-subsampled Gaussian mechanism, and the noise that mechanism adds,
 * drawn from a cryptographically secure generator.  docs/dp.md has the
 * formulas, the sampler's construction and the reasons behind both.
 *
 * Trusted code (it runs inside the enclave): no I/O, no printing.  The only
 * call outside the process is the one that seeds eml_csprng_new from the OS
 * (getrandom); an SGX build replaces that one function.
 *
 *     // How private are 60 epochs of MNIST with batch 256 and noise 1.1?
 *     double eps, order;
 *     eml_err err = {0};
 *     if (eml_dp_epsilon(256.0 / 60000, 1.1, 14063, 1e-5, &eps, &order,
 *                        &err) != EML_OK) ...;      // eps 2.60 at order 8.1
 *     // Which noise reaches epsilon 3 instead?
 *     double sigma;
 *     eml_dp_noise_for_epsilon(256.0 / 60000, 14063, 1e-5, 3.0, &sigma, &err);
 *
 *     // In the training loop: account as you go, refuse a step past the
 *     // budget, and draw the noise for the clipped gradient sum.
 *     eml_dp_accountant acc;
 *     eml_dp_accountant_init(&acc);
 *     eml_csprng *rng = NULL;
 *     eml_csprng_new(&rng, &err);                  // seeded from the OS
 *     for (;;) {
 *         eml_dp_accountant_epsilon_after(&acc, q, sigma, 1, 1e-5, &eps,
 *                                         &order, &err);
 *         if (eps > budget) break;
 *         for (i = 0; i < n_train; i++)           // Poisson sampling
 *             take[i] = eml_dp_bernoulli(rng, q);
 *         ... clipped gradient sum g (n_params floats) ...
 *         eml_dp_gaussian_fill(rng, noise, n_params, sigma * clip);
 *         ... g += noise ...
 *         eml_dp_accountant_add(&acc, q, sigma, 1, &err);
 *     }
 *     eml_csprng_free(rng);                        // wipes its state
 */
#ifndef ENCLAVEML_DP_H
#define ENCLAVEML_DP_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== accountant ==== */

/* The Renyi orders the accountant tracks: 1.1, 1.2, ..., 10.9, 11, 12, ...,
 * 63, 128, 256, 512, 1024. */
#define EML_DP_N_ORDERS 156

/* eml_dp_noise_for_epsilon searches noise multipliers in this range. */
#define EML_DP_SIGMA_MIN 0.01
#define EML_DP_SIGMA_MAX 1e4

/* The orders above, ascending; returns EML_DP_N_ORDERS.  The table is
 * static: do not free it. */
size_t eml_dp_orders(const double **orders);

/* Renyi DP, at order alpha > 1, of ONE step of the sampled Gaussian
 * mechanism: each record is in the batch with probability q (Poisson
 * sampling), and Gaussian noise of standard deviation sigma times the L2
 * sensitivity is added.  Integer orders to ~1e-12 relative; fractional
 * orders by the exact series, to ~3e-13 absolute (1e-8 relative where the
 * value is >= 1e-5).  q = 1 is the plain Gaussian, alpha / (2 sigma^2);
 * sigma = 0 gives +inf.  Returns NaN for arguments outside q in (0, 1],
 * sigma >= 0, alpha in (1, 1e6] (all finite). */
double eml_dp_rdp(double q, double sigma, double alpha);

/* (epsilon, delta)-DP of `steps` steps of the mechanism above: the minimum
 * over the orders of the RDP-to-DP conversion of Balle et al. (2020),
 *     eps = steps * rdp(alpha) + log1p(-1/alpha)
 *           - (log(delta) + log(alpha)) / (alpha - 1),
 * clamped at 0.  *order is the minimising order.  sigma = 0 (no noise) is
 * valid and gives *eps = +inf, *order = +inf.  Errors (EML_ERR_INVALID, with
 * a message naming the argument): q outside (0, 1], sigma < 0, steps < 1,
 * delta outside (0, 1), or any non-finite value. */
EML_MUST_CHECK eml_status eml_dp_epsilon(double q, double sigma, long steps,
                                         double delta, double *eps,
                                         double *order, eml_err *err);

/* The smallest noise multiplier sigma in [EML_DP_SIGMA_MIN,
 * EML_DP_SIGMA_MAX] whose epsilon (as eml_dp_epsilon) is <= target_eps,
 * to 1e-4 relative: the returned sigma meets the target and
 * sigma * (1 - 1e-4) does not.  If even EML_DP_SIGMA_MIN meets the target,
 * that is returned.  Errors: the arguments of eml_dp_epsilon, target_eps not
 * finite and > 0 (EML_ERR_INVALID), or a target that needs more noise than
 * EML_DP_SIGMA_MAX (EML_ERR_RANGE). */
EML_MUST_CHECK eml_status eml_dp_noise_for_epsilon(double q, long steps,
                                                   double delta,
                                                   double target_eps,
                                                   double *sigma,
                                                   eml_err *err);

/* Accumulated RDP over steps whose q and sigma may change.  A plain value:
 * copy it to try steps without committing them.  The per-step RDP curve of
 * the last (q, sigma) is cached, so adding one step at a time is cheap. */
typedef struct eml_dp_accountant {
    double rdp[EML_DP_N_ORDERS]; /* sum of steps * rdp(q, sigma, order) */
    long steps;                  /* steps accounted so far */
    double cache_q, cache_sigma; /* the (q, sigma) of cache_rdp, or 0, -1 */
    double cache_rdp[EML_DP_N_ORDERS];
} eml_dp_accountant;

/* An accountant with no steps (epsilon 0). */
void eml_dp_accountant_init(eml_dp_accountant *acc);
/* Accounts `steps` more steps with sampling rate q and noise sigma
 * (checked as in eml_dp_epsilon; sigma = 0 makes epsilon infinite). */
EML_MUST_CHECK eml_status eml_dp_accountant_add(eml_dp_accountant *acc,
                                                double q, double sigma,
                                                long steps, eml_err *err);
/* Epsilon at delta of the steps accounted so far, and its order; 0 (and
 * order +inf) before any step. */
EML_MUST_CHECK eml_status eml_dp_accountant_epsilon(
    const eml_dp_accountant *acc, double delta, double *eps, double *order,
    eml_err *err);
/* Epsilon at delta if `steps` more steps (q, sigma) were added, without
 * adding them (only the cache changes): the test a training loop makes
 * before a step. */
EML_MUST_CHECK eml_status eml_dp_accountant_epsilon_after(
    eml_dp_accountant *acc, double q, double sigma, long steps, double delta,
    double *eps, double *order, eml_err *err);

/* ==== secure randomness and noise ==== */

/* A ChaCha20 keystream generator with fast key erasure: the key is
 * replaced from its own output every 4 KiB, so a later copy of the state
 * does not reveal earlier output.  Opaque; eml_csprng_free wipes it. */
typedef struct eml_csprng eml_csprng;

/* Seeded with 32 bytes from the OS (getrandom).  EML_ERR_IO if the OS
 * gives none, EML_ERR_NOMEM. */
EML_MUST_CHECK eml_status eml_csprng_new(eml_csprng **out, eml_err *err);
/* INSECURE, deterministic: the key is the seed's 8 little-endian bytes
 * followed by 24 zero bytes.  For tests and --insecure-seed only; reports
 * must say so (see eml_csprng_is_seeded). */
EML_MUST_CHECK eml_status eml_csprng_new_seeded(uint64_t seed,
                                                eml_csprng **out,
                                                eml_err *err);
/* Wipes and frees; NULL is a no-op. */
void eml_csprng_free(eml_csprng *rng);
/* The generator's whole state as *n plain bytes (no pointers): a mirror
 * saves them, and writing them back resumes exactly the same stream.  They
 * are as secret as the noise they will produce. */
void *eml_csprng_state(eml_csprng *rng, size_t *n);
/* 1 if rng came from eml_csprng_new_seeded. */
int eml_csprng_is_seeded(const eml_csprng *rng);
/* n uniformly random bytes. */
void eml_csprng_bytes(eml_csprng *rng, void *out, size_t n);

/* 1 with probability q exactly (q is compared, as the binary fraction it
 * is, with a uniform number drawn bit by bit; about 2 bits per call).  q is
 * clamped to [0, 1]; NaN gives 0.  For Poisson sampling of a batch. */
int eml_dp_bernoulli(eml_csprng *rng, double q);

/* Bits of resolution per standard deviation of the noise grid: see
 * eml_dp_gaussian_fill. */
#define EML_DP_GRID_BITS 20

/* out[0..n) = independent Gaussian noise of standard deviation stddev, free
 * of floating-point artefacts: each value is k * h, k an exact discrete
 * Gaussian sample (Canonne, Kamath, Steinke 2020) of variance
 * (stddev / h)^2 rounded up to a grid-friendly integer, on the grid
 * h = 2^(floor(log2 stddev) - EML_DP_GRID_BITS).  Every value within
 * 8 standard deviations is a float exactly, so no rounding happens; the
 * effective standard deviation is in [stddev, stddev * (1 + 2^-20)].
 * stddev = 0 fills zeros.  EML_ERR_RANGE unless stddev is 0 or in
 * [2^-100, 2^100]. */
EML_MUST_CHECK eml_status eml_dp_gaussian_fill(eml_csprng *rng, float *out,
                                               size_t n, double stddev);

/* The grid step h of eml_dp_gaussian_fill's noise for this stddev (a
 * power of two); 0 for stddev 0 or outside [2^-100, 2^100].  A value
 * rounded to a multiple of h before the noise is added stays on the grid,
 * which keeps the float sum free of artefacts (docs/dp.md, "Using the
 * noise"). */
double eml_dp_noise_grid(double stddev);

/* out[0..n) = exact samples of the discrete Gaussian N_Z(0, sigma2):
 * P(k) proportional to exp(-k^2 / (2 sigma2)).  EML_ERR_RANGE unless
 * sigma2 is in [1, 2^28]. */
EML_MUST_CHECK eml_status eml_dp_discrete_gaussian(eml_csprng *rng,
                                                   int64_t *out, size_t n,
                                                   uint32_t sigma2);

/* ==== DP-SGD: the options and the plan (plan.c) ====
 *
 * Differentially private SGD (Abadi et al. 2016) with the RDP accountant
 * of dp.h.  Every example's gradient is clipped to L2 norm `clip` over all
 * parameters; Gaussian noise of standard deviation noise * clip is added to
 * the sum, which is divided by the expected batch size.  Batches are
 * Poisson samples (each example joins a step with probability q =
 * batch / count), unless fixed_batches (shuffled fixed-size batches, whose
 * accounting then ASSUMES Poisson sampling: the report says so).  Noise and
 * sampling come from a CSPRNG seeded by the OS; insecure_seed seeds it
 * from the training seed instead (tests only; the report says so). */
typedef struct eml_dp_opts {
    int enabled;
    double clip;           /* C > 0 */
    double noise;          /* sigma >= 0 (the noise multiplier) */
    double delta;          /* in (0, 1) */
    double target_epsilon; /* > 0: never take a step past it; 0: no limit */
    int fixed_batches;
    int insecure_seed;
} eml_dp_opts;

/* The sampling rate and number of steps a DP run of `epochs` epochs over
 * `count` examples with expected batch size `batch` takes. */
void eml_dp_plan(size_t count, int batch, int epochs, double *q, long *steps);

/* The clipped gradient sum is rounded to the noise grid h (dp.h) before the
 * discrete noise is added, which can move it by h/2 per coordinate: the
 * sensitivity grows from C to C + h sqrt(d), so the accountant is charged
 * with the smaller multiplier sigma / (1 + h sqrt(d) / C). */
double eml_dp_effective_noise(double sigma, double clip, size_t n_params);
/* The smallest multiplier whose effective noise reaches target_eps. */
EML_MUST_CHECK eml_status eml_dp_noise_for_target(double q, long steps,
                                                  double delta,
                                                  double target_eps,
                                                  double clip,
                                                  size_t n_params,
                                                  double *sigma, eml_err *err);

/* The options as the trainer takes them: "clip must be positive" and so
 * on, with the command line's option names in the message. */
EML_MUST_CHECK eml_status eml_dp_opts_check(const eml_dp_opts *dp,
                                            eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
