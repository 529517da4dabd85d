/*
 * cli.h - helpers shared by the command implementations: the one-line
 * error, strict option values.  Host side.
 */
#ifndef EML_HOST_CLI_H
#define EML_HOST_CLI_H

#include <signal.h>
#include <stdint.h>

#include "enclaveml/status.h"

/* Prints "enclaveml: error: <msg>\n" to stderr; returns 1. */
int eml_fail(const char *fmt, ...) EML_PRINTF(1, 2);
/* eml_fail with the error's message. */
int eml_fail_st(eml_status st, const eml_err *err);
/* Strict number options: the whole string, in range; print the error and
 * return -1 otherwise. */
int eml_opt_long(const char *opt, const char *s, long lo, long hi, long *out);
int eml_opt_u64(const char *opt, const char *s, uint64_t *out);
/* A float in (lo, hi]. */
int eml_opt_float(const char *opt, const char *s, double lo, double hi,
                  float *out);
int eml_opt_double(const char *opt, const char *s, double lo, double hi,
                   double *out);
/* "unknown or incomplete option" for the option getopt just rejected. */
int eml_opt_unknown(const char *cmd, int argc, char **argv);
/* Exactly n bytes of hex. */
int eml_opt_hex(const char *opt, const char *s, uint8_t *out, size_t n);
/* A nonce: an even number of hex digits, at most 2 * EML_NONCE_MAX; out
 * holds EML_NONCE_MAX bytes, *n gets the length. */
int eml_opt_nonce(const char *opt, const char *s, uint8_t *out, size_t *n);
/* The stop of a long-running command (serve, serve-worker, worker): set
 * by SIGINT or SIGTERM once eml_cli_stop_on_signals has installed the
 * handler, which also ignores SIGPIPE (a peer gone is an error, not a
 * death).  0, or -1 if a handler could not be installed. */
extern volatile sig_atomic_t eml_cli_stop;
int eml_cli_stop_on_signals(void);

#endif
