/*
 * probe.c - the PROBE ecall: asks the platform's sandbox to try the calls
 * it forbids (eml_platform.probe; src/sim/sandbox.c) and reports which
 * were refused.  Refused where there is no sandbox (the none backend),
 * where they would succeed.  Trusted code: no system calls of its own.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"

/* ==== sandbox probe ==== */

eml_status eml_rt_ecall_probe(eml_enclave *e, eml_msg_reader *r, eml_err *err)
{
    eml_status st = eml_msg_get_end(r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed PROBE");
    /* Outside the sandbox these calls would succeed (execve would replace
     * the host process of the `none` backend): refuse to try. */
    if (e->probe == NULL)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "PROBE needs the sim sandbox (this backend has "
                           "none)");
    uint64_t attempted = 0, refused = e->probe(&attempted);
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PROBE_OK);
    eml_msg_put_u64(&m, refused);
    eml_msg_put_u64(&m, attempted);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return st;
}
