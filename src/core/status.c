/*
 * status.c - names for eml_status codes and the eml_err detail buffer.
 * No I/O: messages are formatted into caller memory only.
 */
#include "enclaveml/status.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const status_names[EML_STATUS_COUNT] = {
    "ok",
    "out of memory",
    "invalid argument",
    "malformed input",
    "input is truncated",
    "shape mismatch",
    "value out of range",
    "input/output error",
    "kernel backend failure",
    "not supported",
    "authentication failed",
    "not found",
};

_Static_assert(sizeof(status_names) / sizeof(status_names[0]) ==
                   EML_STATUS_COUNT,
               "status_names out of step with eml_status");

const char *eml_status_str(eml_status st)
{
    int i = -(int)st;
    if (i < 0 || i >= EML_STATUS_COUNT) return "unknown error";
    return status_names[i];
}

eml_status eml_err_set(eml_err *err, eml_status st, const char *fmt, ...)
{
    if (err != NULL && err->msg[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return st;
}

const char *eml_err_msg(const eml_err *err, eml_status st)
{
    if (err != NULL && err->msg[0] != '\0') return err->msg;
    return eml_status_str(st);
}
