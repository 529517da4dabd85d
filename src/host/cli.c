/*
 * cli.c - the command line's shared helpers (see cli.h).
 */
#include "host/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/enclave.h"

int eml_fail(const char *fmt, ...)
{
    /* One write: nodes and the launcher share a terminal, and a line
     * written in pieces interleaves with another process's. */
    char line[2048];
    int n = snprintf(line, sizeof(line), "enclaveml: error: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len] = '\n';
    fflush(stderr);
    (void)fwrite(line, 1, len + 1, stderr);
    fflush(stderr);
    return 1;
}

int eml_fail_st(eml_status st, const eml_err *err)
{
    return eml_fail("%s", eml_err_msg(err, st));
}

/* The whole string is the number: strto* would skip leading white space
 * and take a '+' (and strtoull a '-', negating the value). */
static int starts_number(const char *s, int fraction_ok)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    return isdigit((unsigned char)d[0]) || (fraction_ok && d[0] == '.');
}

int eml_opt_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    long v = 0;
    int ok = starts_number(s, 0);
    errno = 0;
    if (ok) v = strtol(s, &end, 10);
    if (!ok || errno != 0 || *end != '\0' || v < lo || v > hi) {
        eml_fail("%s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int eml_opt_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)s[0])) {
        eml_fail("%s: '%s' is not a non-negative integer", opt, s);
        return -1;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        eml_fail("%s: '%s' is not a non-negative integer", opt, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int eml_opt_double(const char *opt, const char *s, double lo, double hi,
                   double *out)
{
    char *end = NULL;
    double v = 0;
    int ok = starts_number(s, 1);
    errno = 0;
    if (ok) v = strtod(s, &end);
    if (!ok || errno != 0 || *end != '\0' || !isfinite(v) || v <= lo ||
        v > hi) {
        eml_fail("%s: '%s' is not a number in (%g, %g]", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int eml_opt_float(const char *opt, const char *s, double lo, double hi,
                  float *out)
{
    double v;
    if (eml_opt_double(opt, s, lo, hi, &v) != 0) return -1;
    *out = (float)v;
    return 0;
}

int eml_opt_unknown(const char *cmd, int argc, char **argv)
{
    const char *bad = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
    return eml_fail("%s: unknown or incomplete option '%s' (see enclaveml %s "
                    "--help)",
                    cmd, bad, cmd);
}

int eml_opt_hex(const char *opt, const char *s, uint8_t *out, size_t n)
{
    if (eml_unhex(out, n, s, strlen(s)) != 0) {
        eml_fail("%s: expected %zu hex digits", opt, 2 * n);
        return -1;
    }
    return 0;
}

int eml_opt_nonce(const char *opt, const char *s, uint8_t *out, size_t *n)
{
    size_t len = strlen(s);
    if (len % 2 != 0 || len / 2 > EML_NONCE_MAX ||
        eml_unhex(out, len / 2, s, len) != 0) {
        eml_fail("%s: expected an even number of hex digits, at most %d", opt,
                 2 * EML_NONCE_MAX);
        return -1;
    }
    *n = len / 2;
    return 0;
}

volatile sig_atomic_t eml_cli_stop;

static void stop_on_signal(int sig)
{
    (void)sig;
    eml_cli_stop = 1;
}

int eml_cli_stop_on_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = stop_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGTERM, &sa, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}
