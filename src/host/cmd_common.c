/*
 * cmd_common.c - the options the engine commands share, and building the
 * network of a cfg (see cmd_common.h).  Host side.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "host/cli.h"
#include "enclaveml/outsource.h"
#include "host/cmd_common.h"
#include "host/hostio.h"


int eml_common_opt(eml_common_opts *c, int opt, const char *arg,
                      const char *name)
{
    long v;
    switch (opt) {
    case OPT_CFG: c->cfg = arg; return 1;
    case OPT_DATA: c->data = arg; return 1;
    case OPT_WEIGHTS: c->weights = arg; return 1;
    case OPT_JSON: c->json = 1; return 1;
    case OPT_THREADS:
        if (eml_opt_long("--threads", arg, 1, 1024, &v)) return -1;
        c->threads = (int)v;
        return 1;
    case OPT_BATCH:
        if (eml_opt_long("--batch", arg, 1, EML_CFG_MAX_BATCH, &v)) return -1;
        c->batch = v;
        return 1;
    case OPT_KERNELS:
        if (eml_kernels_parse(arg, &c->kernels) != EML_OK) {
            eml_fail("--kernels: '%s' is not one of: ref, fast", arg);
            return -1;
        }
        return 1;
    case OPT_OUTSOURCE: c->outsource = arg; return 1;
    case OPT_OUTSOURCE_MODE:
        if (strcmp(arg, "private") == 0) {
            c->outsource_mode = EML_OUTSOURCE_PRIVATE;
        } else if (strcmp(arg, "integrity") == 0) {
            c->outsource_mode = EML_OUTSOURCE_INTEGRITY;
        } else {
            eml_fail("--outsource-mode: '%s' is not one of: private, "
                     "integrity",
                     arg);
            return -1;
        }
        return 1;
    case OPT_OUTSOURCE_MIN_INTENSITY:
        if (eml_opt_double("--outsource-min-intensity", arg, 0, 1e12,
                           &c->outsource_min_intensity))
            return -1;
        return 1;
    default:
        (void)name;
        return 0;
    }
}

void eml_common_init(eml_common_opts *c)
{
    memset(c, 0, sizeof(*c));
    c->data = EML_DEFAULT_DATA_DIR;
    c->kernels = EML_KERNELS_FAST;
    c->outsource_mode = EML_OUTSOURCE_PRIVATE;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = n > 0 ? (int)n : 1;
}

/* Builds the net for cfg with the common options. */
int eml_build_net(const eml_common_opts *c, eml_netcfg **cfg, eml_net **net,
                  int max_batch, uint64_t seed, int inference)
{
    eml_err err = {0};
    eml_status st = eml_cfg_load(c->cfg, cfg, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_net_opts o = {.kernels = c->kernels, .max_batch = max_batch,
                      .seed = seed, .inference = inference};
    st = eml_net_new(*cfg, &o, net, &err);
    if (st != EML_OK) {
        char msg[sizeof(err.msg)];
        snprintf(msg, sizeof(msg), "%s", eml_err_msg(&err, st));
        return eml_fail("%s: %s", c->cfg, msg);
    }
    eml_kernels_set_threads(c->threads);
    return 0;
}


int eml_enclave_opt(eml_host_opts *o, const char *cmd, int opt,
                    const char *v)
{
    long n = 0;
    switch (opt) {
    case OPT_ENCLAVE:
        if (eml_backend_parse(v, &o->backend) == EML_OK) return 0;
        return eml_fail("%s: --enclave: '%s' is not one of: sim, none", cmd,
                        v);
    case OPT_HEAP:
        if (eml_opt_long("--heap-mb", v, 64, 1 << 20, &n) != 0) return 1;
        o->heap_mb = (unsigned)n;
        return 0;
    case OPT_THREADS:
        if (eml_opt_long("--threads", v, 1, 1024, &n) != 0) return 1;
        o->threads = (int)n;
        return 0;
    default: return -1;
    }
}

void eml_enclave_opts_init(eml_host_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->backend = EML_BACKEND_SIM;
    o->heap_mb = EML_DEFAULT_HEAP_MB;
}
