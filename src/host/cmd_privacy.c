/*
 * cmd_privacy.c - `enclaveml privacy`: how private DP-SGD settings are, or
 * how much noise a target epsilon needs (untrusted host side; the
 * accounting itself is the trusted accountant in src/dp).
 *
 * Options are parsed strictly (host/cli.h); every failure is one line
 * "enclaveml: error: ..." on stderr and exit status 1.  Printed
 * privacy numbers are rounded towards less privacy: epsilon up, and the
 * noise up to six significant digits (so that the printed noise itself
 * meets the target); JSON carries the same values at full precision.
 */
#include "host/cmd_privacy.h"

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "enclaveml/dp.h"
#include "host/cli.h"
#include "host/json.h"

static const char privacy_usage[] =
    "usage: enclaveml privacy --sampling-rate Q --steps T --delta D\n"
    "                         (--noise SIGMA | --target-epsilon E) [--json]\n"
    "\n"
    "Privacy of DP-SGD: T steps of the Poisson-subsampled Gaussian\n"
    "mechanism, each record in a batch with probability Q (batch size over\n"
    "data set size), Gaussian noise of SIGMA times the clipping norm.\n"
    "Renyi DP accounting at orders 1.1 to 1024, converted to (epsilon,\n"
    "delta)-DP.\n"
    "  --noise SIGMA          prints epsilon and the best Renyi order\n"
    "  --target-epsilon E     prints the smallest noise (to 1e-4 relative,\n"
    "                         between 0.01 and 10000) whose epsilon is <= E\n"
    "                         (E in (0, 1e6])\n"
    "--json prints epsilon, order, noise, sampling_rate, steps, delta (and\n"
    "target_epsilon) as one JSON object on stdout.\n";

/* ==== option values ==== */

/* A finite number v with lo < v < hi (lo <= v if lo_incl): strict, like
 * the shared option parsers in cli.h, for the ranges they do not cover. */
static int opt_number(const char *opt, const char *s, double lo, int lo_incl,
                      double hi, const char *range, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) ||
        (lo_incl ? v < lo : v <= lo) || v >= hi) {
        eml_fail("%s: '%s' is not a number %s", opt, s, range);
        return -1;
    }
    *out = v;
    return 0;
}

/* v rounded up to `digits` significant decimal digits. */
static double round_up(double v, int digits)
{
    if (!isfinite(v) || v <= 0) return v;
    double p = pow(10, digits - 1 - (int)floor(log10(v)));
    /* the factor keeps an exact decimal (3 * 1000) from going up a step
     * through rounding in the product */
    return ceil(v * p * (1 - 4 * DBL_EPSILON)) / p;
}

/* ==== the command ==== */

enum {
    OPT_Q = 256,
    OPT_NOISE,
    OPT_STEPS,
    OPT_DELTA,
    OPT_TARGET,
    OPT_JSON,
    OPT_HELP,
};

int eml_cmd_privacy(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sampling-rate", required_argument, 0, OPT_Q},
        {"noise", required_argument, 0, OPT_NOISE},
        {"steps", required_argument, 0, OPT_STEPS},
        {"delta", required_argument, 0, OPT_DELTA},
        {"target-epsilon", required_argument, 0, OPT_TARGET},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    double q = NAN, sigma = NAN, delta = NAN, target = NAN;
    long steps = 0;
    int have_q = 0, have_sigma = 0, have_delta = 0, have_target = 0;
    int json = 0, opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_Q:
            if (eml_opt_double("--sampling-rate", optarg, 0, 1, &q)) return 1;
            have_q = 1;
            break;
        case OPT_NOISE:
            if (opt_number("--noise", optarg, 0, 1, INFINITY, ">= 0",
                           &sigma))
                return 1;
            have_sigma = 1;
            break;
        case OPT_STEPS:
            if (eml_opt_long("--steps", optarg, 1, LONG_MAX, &steps))
                return 1;
            break;
        case OPT_DELTA:
            if (opt_number("--delta", optarg, 0, 0, 1, "in (0, 1)", &delta))
                return 1;
            have_delta = 1;
            break;
        case OPT_TARGET:
            if (eml_opt_double("--target-epsilon", optarg, 0, 1e6, &target))
                return 1;
            have_target = 1;
            break;
        case OPT_JSON: json = 1; break;
        case OPT_HELP: fputs(privacy_usage, stdout); return 0;
        default: return eml_opt_unknown("privacy", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("privacy: unexpected argument '%s'", argv[optind]);
    if (!have_q) return eml_fail("privacy: --sampling-rate is required");
    if (steps == 0) return eml_fail("privacy: --steps is required");
    if (!have_delta) return eml_fail("privacy: --delta is required");
    if (have_sigma == have_target)
        return eml_fail("privacy: give exactly one of --noise and "
                        "--target-epsilon");

    eml_err err = {0};
    eml_status st;
    double eps = NAN, order = NAN;
    if (have_target) {
        st = eml_dp_noise_for_epsilon(q, steps, delta, target, &sigma, &err);
        if (st != EML_OK)
            return eml_fail("privacy: %s", eml_err_msg(&err, st));
        /* The noise as printed must meet the target itself. */
        double shown = round_up(sigma, 6);
        double e_shown;
        st = eml_dp_epsilon(q, shown, steps, delta, &e_shown, &order, &err);
        if (st != EML_OK)
            return eml_fail("privacy: %s", eml_err_msg(&err, st));
        if (e_shown <= target) sigma = shown;
    }
    st = eml_dp_epsilon(q, sigma, steps, delta, &eps, &order, &err);
    if (st != EML_OK) return eml_fail("privacy: %s", eml_err_msg(&err, st));

    if (json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_num(&j, "epsilon", eps); /* null if infinite */
        eml_json_num(&j, "order", order);
        eml_json_num(&j, "noise", sigma);
        eml_json_num(&j, "sampling_rate", q);
        eml_json_int(&j, "steps", steps);
        eml_json_num(&j, "delta", delta);
        if (have_target) eml_json_num(&j, "target_epsilon", target);
        eml_json_end(&j);
    } else if (isinf(eps)) {
        printf("epsilon inf: without noise there is no privacy guarantee "
               "(q=%.4g, sigma=0, %ld steps, delta=%g)\n",
               q, steps, delta);
    } else if (have_target) {
        printf("noise %.6g gives epsilon %.4g at order %g (target %g; "
               "q=%.4g, %ld steps, delta=%g)\n",
               sigma, round_up(eps, 4), order, target, q, steps, delta);
    } else {
        printf("epsilon %.4g at order %g (q=%.4g, sigma=%g, %ld steps, "
               "delta=%g)\n",
               round_up(eps, 4), order, q, sigma, steps, delta);
    }
    if (fflush(stdout) != 0)
        return eml_fail("privacy: cannot write the output");
    return 0;
}
