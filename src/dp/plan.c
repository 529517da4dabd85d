/*
 * plan.c - planning a DP-SGD run before it starts: how many steps at which
 * sampling rate, the noise multiplier the accountant is charged with once
 * the clipped sum is snapped to the noise grid, and the multiplier that
 * reaches a target epsilon.  Also the options' own checks.
 *
 * Trusted code: arithmetic only.  The run function (nn/run.c) calls these
 * before any data is read; the trainer's DP step (nn/step.c) uses the same
 * numbers.
 */
#include <math.h>

#include "enclaveml/dp.h"

void eml_dp_plan(size_t count, int batch, int epochs, double *q, long *steps)
{
    double n = count > 0 ? (double)count : 1.0;
    *q = (double)batch / n;
    if (*q > 1.0) *q = 1.0;
    double s = ceil((double)epochs * n / (double)batch);
    *steps = s < 1 ? 1 : (long)s;
}

double eml_dp_effective_noise(double sigma, double clip, size_t n_params)
{
    if (!(sigma > 0) || !(clip > 0)) return sigma;
    double h = eml_dp_noise_grid(sigma * clip);
    return sigma / (1.0 + h * sqrt((double)n_params) / clip);
}

eml_status eml_dp_noise_for_target(double q, long steps, double delta,
                                   double target_eps, double clip,
                                   size_t n_params, double *sigma,
                                   eml_err *err)
{
    double need;
    eml_status st = eml_dp_noise_for_epsilon(q, steps, delta, target_eps,
                                             &need, err);
    if (st != EML_OK) return st;
    /* The grid step grows with sigma, so step up until the effective
     * multiplier reaches what the target needs (a few iterations). */
    double s = need;
    for (int i = 0; i < 200 && eml_dp_effective_noise(s, clip, n_params) < need;
         i++)
        s *= 1.0 + 1e-4;
    if (eml_dp_effective_noise(s, clip, n_params) < need)
        return eml_err_set(err, EML_ERR_RANGE,
                           "cannot reach epsilon %g with this grid", target_eps);
    *sigma = s;
    return EML_OK;
}

eml_status eml_dp_opts_check(const eml_dp_opts *dp, eml_err *err)
{
    if (!(dp->clip > 0) || !isfinite(dp->clip))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--clip must be a positive number (got %g)",
                           dp->clip);
    if (!(dp->noise >= 0) || !isfinite(dp->noise))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--noise must be >= 0 (got %g)", dp->noise);
    if (!(dp->delta > 0 && dp->delta < 1))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--delta must be in (0, 1) (got %g)", dp->delta);
    if (dp->target_epsilon < 0 || !isfinite(dp->target_epsilon))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--target-epsilon must be positive");
    return EML_OK;
}
