/*
 * probe.c - the PROBE ecall: asks the platform's sandbox to try the calls
 * it forbids (eml_platform.probe; src/sim/sandbox.c) and reports which
 * were refused.  Refused where there is no sandbox (the none backend),
 * where they would succeed.  Trusted code: no system calls of its own.
 */
#include "enclave/runtime.h"

/* ==== sandbox probe ==== */

eml_status eml_rt_ecall_probe(eml_enclave *e, eml_msg_any *req, eml_err *err)
{
    (void)req; /* PROBE has no fields */
    /* Outside the sandbox these calls would succeed (execve would replace
     * the host process of the `none` backend): refuse to try. */
    if (e->probe == NULL)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "PROBE needs the sim sandbox (this backend has "
                           "none)");
    eml_reply_probe_ok a;
    a.attempted = 0;
    a.refused = e->probe(&a.attempted);
    return eml_rt_reply(e, EML_MSG_PROBE_OK, &a, sizeof(a), err);
}
