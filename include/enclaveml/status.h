/*
 * status.h - error codes shared by every enclaveml module.
 *
 * Functions that can fail return an eml_status (0 = EML_OK, negative = error)
 * and hand results back through out-pointers.  Functions that parse
 * untrusted input also take an optional eml_err, a fixed-size buffer they
 * fill with one human sentence naming the file, line or tensor at fault.
 * Only the command line prints; library code never does.
 *
 *     eml_err err = {0};
 *     eml_status st = eml_something(..., &err);
 *     if (st != EML_OK) fprintf(stderr, "enclaveml: error: %s\n",
 *                               eml_err_msg(&err, st));
 */
#ifndef ENCLAVEML_STATUS_H
#define ENCLAVEML_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define EML_MUST_CHECK __attribute__((warn_unused_result))
#define EML_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define EML_MUST_CHECK
#define EML_PRINTF(f, a)
#endif

/* Values are only ever appended. */
typedef enum eml_status {
    EML_OK = 0,
    EML_ERR_NOMEM = -1,       /* allocation failed or heap budget exceeded */
    EML_ERR_INVALID = -2,     /* a caller passed a bad argument or option */
    EML_ERR_FORMAT = -3,      /* malformed input (file, message, cfg) */
    EML_ERR_TRUNCATED = -4,   /* input ends early */
    EML_ERR_SHAPE = -5,       /* tensor or layer shapes do not match */
    EML_ERR_RANGE = -6,       /* a size or value outside what is allowed */
    EML_ERR_IO = -7,          /* the OS refused a read or write */
    EML_ERR_BACKEND = -8,     /* a kernel backend (oneDNN) failed */
    EML_ERR_UNSUPPORTED = -9, /* valid but not implemented here */
    EML_ERR_AUTH = -10,       /* authentication or signature check failed */
    EML_ERR_NOTFOUND = -11,   /* a named item does not exist */
} eml_status;

#define EML_STATUS_COUNT 12

/* Static English name of a status code; never NULL. */
const char *eml_status_str(eml_status st);

/* One-line detail for an error, filled by whoever detected it. */
typedef struct eml_err {
    char msg[384];
} eml_err;

/* Writes a message into err (if err is not NULL and still empty: the first,
 * innermost message wins) and returns st, so callers can write
 * `return eml_err_set(err, EML_ERR_FORMAT, "line %d: ...", line);`. */
eml_status eml_err_set(eml_err *err, eml_status st, const char *fmt, ...)
    EML_PRINTF(3, 4);

/* The message if one was set, otherwise eml_status_str(st). */
const char *eml_err_msg(const eml_err *err, eml_status st);

#ifdef __cplusplus
}
#endif
#endif
