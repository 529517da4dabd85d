/*
 * accountant.c - the Renyi-DP accountant of the Poisson-subsampled Gaussian
 * mechanism (DP-SGD), after Mironov, Talwar and Zhang, "Renyi Differential
 * Privacy of the Sampled Gaussian Mechanism" (2019), and its conversion to
 * (epsilon, delta)-DP after Balle et al., "Hypothesis Testing
 * Interpretations and Renyi Differential Privacy" (AISTATS 2020).
 *
 * One step at order alpha has RDP log(A) / (alpha - 1) with
 *     A = E_{z ~ N(0, sigma^2)} [(1 - q + q e^((2z-1)/(2 sigma^2)))^alpha].
 * Integer orders expand the power binomially (a finite sum); fractional
 * orders split the integral at the point z0 where the two mixture parts
 * are equal and expand each side in a convergent series (Section 3.3 of
 * the paper).  Every sum is kept in log space.  docs/dp.md has the
 * formulas and the numerical care taken.
 *
 * Trusted code: no I/O; plain arithmetic on doubles.
 */
#include "enclaveml/dp.h"

#include <limits.h>
#include <math.h>
#include <string.h>

static const double dp_orders[] = {
    1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4,
    2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8,
    3.9, 4.0, 4.1, 4.2, 4.3, 4.4, 4.5, 4.6, 4.7, 4.8, 4.9, 5.0, 5.1, 5.2,
    5.3, 5.4, 5.5, 5.6, 5.7, 5.8, 5.9, 6.0, 6.1, 6.2, 6.3, 6.4, 6.5, 6.6,
    6.7, 6.8, 6.9, 7.0, 7.1, 7.2, 7.3, 7.4, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0,
    8.1, 8.2, 8.3, 8.4, 8.5, 8.6, 8.7, 8.8, 8.9, 9.0, 9.1, 9.2, 9.3, 9.4,
    9.5, 9.6, 9.7, 9.8, 9.9, 10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6,
    10.7, 10.8, 10.9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 128, 256, 512, 1024
};
_Static_assert(sizeof(dp_orders) / sizeof(dp_orders[0]) == EML_DP_N_ORDERS,
               "dp_orders out of step with EML_DP_N_ORDERS");

size_t eml_dp_orders(const double **orders)
{
    if (orders != NULL) *orders = dp_orders;
    return EML_DP_N_ORDERS;
}

/* ==== log-space arithmetic ==== */

#define LOG_HALF (-0.69314718055994530942)
#define HALF_LOG_PI 0.57236494292470008707

/* log(exp(a) + exp(b)) */
static double log_add(double a, double b)
{
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}

/* log(1 + exp(a)) */
static double log1p_exp(double a)
{
    return a > 36 ? a + log1p(exp(-a)) : log1p(exp(a));
}

/* log(exp(c) - 1), c > 0 */
static double log_expm1(double c)
{
    return c > 1 ? c + log1p(-exp(-c)) : log(expm1(c));
}

/* log(erfc(x)) without underflow: erfc itself below x = 25, beyond it the
 * asymptotic series of log erfc (error below 1e-13 there). */
static double log_erfc(double x)
{
    if (x < 25) return log(erfc(x));
    double r = 1 / (x * x);
    return -x * x - log(x) - HALF_LOG_PI +
           r * (-0.5 + r * (0.625 + r * (-37.0 / 24 + r * (353.0 / 64))));
}

/* A signed number as sign * exp(lg); sign 0 is zero. */
typedef struct slog {
    double lg;
    int sign;
} slog;

static slog slog_add(slog x, int sy, double ly)
{
    if (sy == 0 || ly == -INFINITY) return x;
    if (x.sign == 0) return (slog){ly, sy};
    if (x.sign == sy) return (slog){log_add(x.lg, ly), sy};
    if (x.lg == ly) return (slog){-INFINITY, 0};
    if (x.lg > ly) return (slog){x.lg + log1p(-exp(ly - x.lg)), x.sign};
    return (slog){ly + log1p(-exp(x.lg - ly)), sy};
}

/* ==== one step at one order ==== */

/* log A_alpha for an integer alpha >= 2.  With s = 2 sigma^2, the binomial
 * expansion
 *     A = sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2 - k) / s)
 * has terms that sum to 1 without the exponential, so
 *     A - 1 = sum_{k>=2} C(alpha,k) (1-q)^(alpha-k) q^k expm1((k^2 - k) / s),
 * all terms positive: log A = log1p(A - 1) loses nothing when A is near 1
 * (large sigma), and the log-space sum cannot overflow (small sigma). */
static double log_a_int(double q, double sigma, long alpha)
{
    double lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    double logc = 0; /* log C(alpha, k) */
    double acc = -INFINITY;
    for (long k = 1; k <= alpha; k++) {
        logc += log((double)(alpha - k + 1)) - log((double)k);
        if (k < 2) continue;
        double kd = (double)k;
        double c = (kd * kd - kd) / s2;
        double term = logc + kd * lq + (double)(alpha - k) * l1q +
                      log_expm1(c);
        acc = log_add(acc, term);
    }
    return log1p_exp(acc);
}

/* The fractional series stops once i > alpha + 1 and its terms have
 * fallen below the sum by this factor (in log); from there on the terms
 * alternate in sign and shrink, so the tail left out is smaller than the
 * last term, which is added to the sum (erring towards less privacy by
 * e^-32 relative, below 1e-13).  The terms shrink only polynomially, like
 * i^-(alpha+2), so the series is long when the two mixture parts overlap
 * (q near 1/2, large sigma, alpha near 1): 3e4 terms at q = 1/2, sigma = 1,
 * alpha = 1.1.  MAX_TERMS bounds the work in the most extreme corners; the
 * added last term keeps the result an upper bound there too. */
#define SERIES_REL_TOL 32.0
#define MAX_TERMS 4000000L

/* log A_alpha for a fractional alpha > 1 (Mironov et al. 2019, Sec. 3.3):
 * with z0 = sigma^2 log(1/q - 1) + 1/2,
 *   A = sum_i C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 sigma^2))
 *             * erfc((i - z0) / (sqrt(2) sigma)) / 2
 *     + sum_i C(alpha,i) q^(alpha-i) (1-q)^i exp((j^2-j)/(2 sigma^2))
 *             * erfc((z0 - j) / (sqrt(2) sigma)) / 2,      j = alpha - i,
 * where C(alpha, i) = alpha (alpha-1) ... (alpha-i+1) / i! changes sign
 * for i > alpha. */
static double log_a_frac(double q, double sigma, double alpha)
{
    double lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    double z0 = sigma * sigma * (l1q - lq) + 0.5;
    double rs = 1 / (sqrt(2.0) * sigma);
    slog a0 = {-INFINITY, 0}, a1 = {-INFINITY, 0};
    double logc = 0; /* log |C(alpha, i)| */
    int csign = 1;
    double last = -INFINITY;
    for (long i = 0; i < MAX_TERMS; i++) {
        double id = (double)i;
        if (i > 0) {
            double f = (alpha - id + 1) / id;
            logc += log(fabs(f));
            if (f < 0) csign = -csign;
        }
        double j = alpha - id;
        double ls0 = logc + id * lq + j * l1q + (id * id - id) / s2 +
                     LOG_HALF + log_erfc((id - z0) * rs);
        double ls1 = logc + j * lq + id * l1q + (j * j - j) / s2 +
                     LOG_HALF + log_erfc((z0 - j) * rs);
        a0 = slog_add(a0, csign, ls0);
        a1 = slog_add(a1, csign, ls1);
        last = ls0 > ls1 ? ls0 : ls1;
        if (id > alpha + 1) {
            slog sum = slog_add(a0, a1.sign, a1.lg);
            if (sum.sign > 0 && last < sum.lg - SERIES_REL_TOL) break;
        }
    }
    slog sum = slog_add(a0, a1.sign, a1.lg);
    if (sum.sign <= 0) return INFINITY; /* cannot happen; be conservative */
    return log_add(sum.lg, last); /* the tail bound, see SERIES_REL_TOL */
}

/* Largest order handled (the sums have about alpha terms or more). */
#define ALPHA_MAX 1e6

double eml_dp_rdp(double q, double sigma, double alpha)
{
    if (!isfinite(q) || !isfinite(sigma) || !isfinite(alpha) || !(q > 0) ||
        q > 1 || sigma < 0 || !(alpha > 1) || alpha > ALPHA_MAX)
        return NAN;
    if (sigma == 0) return INFINITY;
    if (q == 1) return alpha / (2 * sigma * sigma);
    /* Past 1e100 the sums would overflow sigma^2; the RDP is then
     * alpha q^2 / (2 sigma^2) to first order, and twice that bounds it. */
    if (sigma > 1e100) return (alpha * q / sigma) * (q / sigma);
    double la = alpha == floor(alpha) ? log_a_int(q, sigma, (long)alpha)
                                      : log_a_frac(q, sigma, alpha);
    double rdp = la / (alpha - 1);
    if (isnan(rdp)) return INFINITY; /* conservative, never reached */
    return rdp > 0 ? rdp : 0;        /* RDP is >= 0; rounding can dip */
}

/* ==== epsilon ==== */

static eml_status check_mechanism(double q, double sigma, long steps,
                                  eml_err *err)
{
    if (!isfinite(q) || !(q > 0) || q > 1)
        return eml_err_set(err, EML_ERR_INVALID,
                           "sampling rate q = %g is not in (0, 1]", q);
    if (!isfinite(sigma) || sigma < 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "noise multiplier sigma = %g is not a finite "
                           "number >= 0",
                           sigma);
    if (steps < 1)
        return eml_err_set(err, EML_ERR_INVALID,
                           "steps = %ld: at least 1 step is needed", steps);
    return EML_OK;
}

static eml_status check_delta(double delta, eml_err *err)
{
    if (!isfinite(delta) || !(delta > 0) || !(delta < 1))
        return eml_err_set(err, EML_ERR_INVALID,
                           "delta = %g is not in (0, 1)", delta);
    return EML_OK;
}

/* One step's RDP at every order. */
static void rdp_curve(double q, double sigma, double *out)
{
    for (int i = 0; i < EML_DP_N_ORDERS; i++)
        out[i] = eml_dp_rdp(q, sigma, dp_orders[i]);
}

/* The best (epsilon, order) over the orders for total RDP rdp[]:
 *   eps(alpha) = rdp + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha-1)
 * (Balle et al. 2020, Theorem 21; never larger than the classic
 * rdp + log(1/delta) / (alpha - 1) of Mironov 2017). */
static void rdp_to_eps(const double *rdp, double delta, double *eps,
                       double *order)
{
    double best = INFINITY, best_order = INFINITY;
    double ld = log(delta);
    for (int i = 0; i < EML_DP_N_ORDERS; i++) {
        double a = dp_orders[i];
        double e = rdp[i] + log1p(-1 / a) - (ld + log(a)) / (a - 1);
        if (e < best) {
            best = e;
            best_order = a;
        }
    }
    /* An (eps, delta) guarantee with eps < 0 says no more than eps = 0. */
    if (eps != NULL) *eps = best > 0 ? best : 0;
    if (order != NULL) *order = best_order;
}

eml_status eml_dp_epsilon(double q, double sigma, long steps, double delta,
                          double *eps, double *order, eml_err *err)
{
    eml_status st = check_mechanism(q, sigma, steps, err);
    if (st == EML_OK) st = check_delta(delta, err);
    if (st != EML_OK) return st;
    double rdp[EML_DP_N_ORDERS];
    rdp_curve(q, sigma, rdp);
    for (int i = 0; i < EML_DP_N_ORDERS; i++) rdp[i] *= (double)steps;
    rdp_to_eps(rdp, delta, eps, order);
    return EML_OK;
}

/* The search brackets the answer by doubling or halving from sigma = 1
 * (large sigma makes the fractional series long, so it is not visited
 * unless needed), then bisects in log space keeping eps(lo) > target >=
 * eps(hi) until hi / lo < 1 + NOISE_REL_TOL.  Then hi * (1 - 1e-4) < lo
 * misses the target, since epsilon only grows as the noise shrinks. */
#define NOISE_REL_TOL 1e-5

eml_status eml_dp_noise_for_epsilon(double q, long steps, double delta,
                                    double target_eps, double *sigma,
                                    eml_err *err)
{
    eml_status st = check_mechanism(q, 1, steps, err);
    if (st == EML_OK) st = check_delta(delta, err);
    if (st != EML_OK) return st;
    if (!isfinite(target_eps) || !(target_eps > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "target epsilon = %g is not a finite number > 0",
                           target_eps);
    if (sigma == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "sigma is NULL");
    double lo = 1, hi = 1, e;
    st = eml_dp_epsilon(q, 1, steps, delta, &e, NULL, err);
    if (st != EML_OK) return st;
    if (e <= target_eps) {
        /* lo meets the target: halve until it does not, or the floor. */
        for (;;) {
            if (lo <= EML_DP_SIGMA_MIN) {
                *sigma = EML_DP_SIGMA_MIN;
                return EML_OK;
            }
            double next = lo / 2 > EML_DP_SIGMA_MIN ? lo / 2
                                                    : EML_DP_SIGMA_MIN;
            st = eml_dp_epsilon(q, next, steps, delta, &e, NULL, err);
            if (st != EML_OK) return st;
            hi = lo;
            lo = next;
            if (e > target_eps) break;
        }
    } else {
        /* hi misses the target: double until it meets it, or the cap. */
        for (;;) {
            if (hi >= EML_DP_SIGMA_MAX)
                return eml_err_set(err, EML_ERR_RANGE,
                                   "target epsilon %g is out of reach: even "
                                   "noise multiplier %g gives epsilon %g",
                                   target_eps, EML_DP_SIGMA_MAX, e);
            double next = hi * 2 < EML_DP_SIGMA_MAX ? hi * 2
                                                    : EML_DP_SIGMA_MAX;
            st = eml_dp_epsilon(q, next, steps, delta, &e, NULL, err);
            if (st != EML_OK) return st;
            lo = hi;
            hi = next;
            if (e <= target_eps) break;
        }
    }
    while (hi > lo * (1 + NOISE_REL_TOL)) {
        double mid = sqrt(lo * hi);
        st = eml_dp_epsilon(q, mid, steps, delta, &e, NULL, err);
        if (st != EML_OK) return st;
        if (e <= target_eps)
            hi = mid;
        else
            lo = mid;
    }
    *sigma = hi;
    return EML_OK;
}

/* ==== the accountant ==== */

void eml_dp_accountant_init(eml_dp_accountant *acc)
{
    memset(acc, 0, sizeof(*acc));
    acc->cache_q = 0;
    acc->cache_sigma = -1;
}

/* The per-step curve of (q, sigma), from the cache when it matches. */
static const double *accountant_curve(eml_dp_accountant *acc, double q,
                                      double sigma)
{
    if (acc->cache_q != q || acc->cache_sigma != sigma) {
        rdp_curve(q, sigma, acc->cache_rdp);
        acc->cache_q = q;
        acc->cache_sigma = sigma;
    }
    return acc->cache_rdp;
}

eml_status eml_dp_accountant_add(eml_dp_accountant *acc, double q,
                                 double sigma, long steps, eml_err *err)
{
    if (acc == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "accountant is NULL");
    eml_status st = check_mechanism(q, sigma, steps, err);
    if (st != EML_OK) return st;
    if (steps > LONG_MAX - acc->steps)
        return eml_err_set(err, EML_ERR_RANGE,
                           "accountant: step count overflows");
    const double *c = accountant_curve(acc, q, sigma);
    for (int i = 0; i < EML_DP_N_ORDERS; i++)
        acc->rdp[i] += (double)steps * c[i];
    acc->steps += steps;
    return EML_OK;
}

eml_status eml_dp_accountant_epsilon(const eml_dp_accountant *acc,
                                     double delta, double *eps, double *order,
                                     eml_err *err)
{
    if (acc == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "accountant is NULL");
    eml_status st = check_delta(delta, err);
    if (st != EML_OK) return st;
    if (acc->steps == 0) {
        if (eps != NULL) *eps = 0;
        if (order != NULL) *order = INFINITY;
        return EML_OK;
    }
    rdp_to_eps(acc->rdp, delta, eps, order);
    return EML_OK;
}

eml_status eml_dp_accountant_epsilon_after(eml_dp_accountant *acc, double q,
                                           double sigma, long steps,
                                           double delta, double *eps,
                                           double *order, eml_err *err)
{
    if (acc == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "accountant is NULL");
    eml_status st = check_mechanism(q, sigma, steps, err);
    if (st == EML_OK) st = check_delta(delta, err);
    if (st != EML_OK) return st;
    const double *c = accountant_curve(acc, q, sigma);
    double rdp[EML_DP_N_ORDERS];
    for (int i = 0; i < EML_DP_N_ORDERS; i++)
        rdp[i] = acc->rdp[i] + (double)steps * c[i];
    rdp_to_eps(rdp, delta, eps, order);
    return EML_OK;
}
