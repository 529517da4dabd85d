/*
 * run.c - one training run, the same in this process and in the enclave:
 * the spec over the cfg's defaults, the network, the DP plan (the noise
 * fixed and the epsilon the run may spend known before any data is read),
 * the mirror (bound to the run's options and its data), and the trainer.
 *
 * Trusted code.  The callers differ only in what they hang on the run
 * (eml_run_env): where the mirror's sealed bytes go and which key seals
 * them, where progress goes, and (in the enclave) the budget's charge.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/kernels.h"
#include "enclaveml/run.h"

struct eml_run {
    eml_netcfg *cfg;
    eml_net *net;
    eml_train_opts to;
    uint8_t cfg_sha256[32];
    int planned;
    eml_mirror *mirror;
};

eml_status eml_run_new(const eml_run_spec *spec, const uint8_t *cfg_text,
                       size_t cfg_len, const char *cfg_name, eml_run **out,
                       eml_err *err)
{
    *out = NULL;
    if (spec->kernels < 0 || spec->kernels >= EML_KERNELS_COUNT ||
        spec->threads < 1 || spec->epochs < 0 || spec->batch < 0 ||
        !(spec->lr >= 0 && spec->lr <= 100))
        return eml_err_set(err, EML_ERR_RANGE, "run options out of range");
    const eml_dp_opts *dp = &spec->dp;
    if (dp->enabled &&
        (!(dp->clip > 0) || !(dp->delta > 0 && dp->delta < 1) ||
         !(dp->target_epsilon >= 0)))
        return eml_err_set(err, EML_ERR_INVALID,
                           "DP needs clip > 0 and delta in (0, 1)");
    if (dp->enabled && !(dp->noise >= 0) && !(dp->target_epsilon > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "DP needs a noise multiplier or a target "
                           "epsilon");
    eml_run *r = calloc(1, sizeof(*r));
    if (r == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_sha256(r->cfg_sha256, cfg_text, cfg_len);
    if (st != EML_OK) st = eml_err_set(err, st, "hash failed");
    if (st == EML_OK)
        st = eml_cfg_parse((const char *)cfg_text, cfg_len, cfg_name, &r->cfg,
                           err);
    if (st != EML_OK) {
        eml_run_free(r);
        return st;
    }
    /* The spec, with the cfg's epochs, batch and learning rate where it
     * gives none (the trainer computes in float, as the cfg holds it). */
    eml_train_opts *to = &r->to;
    *to = eml_train_opts_default(r->cfg);
    eml_run_spec cfgs = to->run;
    to->run = *spec;
    if (spec->epochs <= 0) to->run.epochs = cfgs.epochs;
    if (spec->batch <= 0) to->run.batch = cfgs.batch;
    to->run.lr = spec->lr > 0 ? (double)(float)spec->lr : cfgs.lr;
    eml_net_opts no = {.kernels = (eml_kernels_kind)spec->kernels,
                       .max_batch = to->run.batch,
                       .seed = spec->seed};
    eml_err nerr = {0};
    st = eml_net_new(r->cfg, &no, &r->net, &nerr);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "%s: %s", cfg_name, eml_err_msg(&nerr, st));
        eml_run_free(r);
        return st;
    }
    eml_kernels_set_threads(spec->threads);
    *out = r;
    return EML_OK;
}

void eml_run_free(eml_run *r)
{
    if (r == NULL) return;
    eml_mirror_free(r->mirror);
    eml_net_free(r->net);
    eml_cfg_free(r->cfg);
    free(r);
}

eml_status eml_run_plan(eml_run *r, size_t train_count, double cap,
                        eml_run_plan_info *plan, eml_err *err)
{
    eml_dp_opts *dp = &r->to.run.dp;
    memset(plan, 0, sizeof(*plan));
    r->planned = 1;
    if (!dp->enabled) return EML_OK;
    size_t n_params = eml_net_param_count(r->net);
    eml_dp_plan(train_count, r->to.run.batch, r->to.run.epochs,
                &plan->sampling_rate,
                &plan->steps);
    eml_status st;
    if (dp->noise < 0) {
        st = eml_dp_noise_for_target(plan->sampling_rate, plan->steps,
                                     dp->delta, dp->target_epsilon, dp->clip,
                                     n_params, &dp->noise, err);
        if (st != EML_OK) return st;
    }
    plan->noise = dp->noise;
    double order;
    st = eml_dp_epsilon(plan->sampling_rate,
                        eml_dp_effective_noise(dp->noise, dp->clip, n_params),
                        plan->steps, dp->delta, &plan->planned, &order, err);
    if (st != EML_OK) return st;
    if (isfinite(cap) && plan->planned > cap * (1 + 1e-9))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the planned run spends epsilon %.4g (q %.6g, "
                           "noise %.4g, %ld steps, delta %g) but a grant "
                           "allows at most %.4g: refused before any data "
                           "was decrypted",
                           plan->planned, plan->sampling_rate, dp->noise,
                           plan->steps, dp->delta, cap);
    if (isfinite(cap) && (dp->target_epsilon <= 0 || dp->target_epsilon > cap))
        dp->target_epsilon = cap;
    return EML_OK;
}

/* The mirror, sealed with env's key and identity, bound to the run's
 * options (after the plan: the noise is part of them) and its data. */
static eml_status open_mirror(eml_run *r, const eml_dataset *train,
                              const eml_dataset *test, const eml_run_env *env,
                              eml_err *err)
{
    if (env->store == NULL || env->seal_secret == NULL ||
        env->measurement == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "a mirrored run needs a store and a sealing key");
    eml_mirror_opts mo;
    memset(&mo, 0, sizeof(mo));
    mo.seal_secret = env->seal_secret;
    mo.measurement = env->measurement;
    mo.every = r->to.run.save_every;
    eml_status st = eml_train_run_digest(mo.cfg_digest, r->cfg_sha256, 32,
                                         &r->to);
    if (st == EML_OK) st = eml_dataset_digest(mo.data_digest, train, test);
    if (st == EML_OK) st = eml_mirror_new(&mo, env->store, &r->mirror, err);
    return st;
}

eml_status eml_run_train(eml_run *r, const eml_dataset *train,
                         const eml_dataset *test, const eml_run_env *env,
                         eml_train_result *res, eml_err *err)
{
    memset(res, 0, sizeof(*res));
    eml_status st = EML_OK;
    if (!r->planned) {
        eml_run_plan_info plan;
        st = eml_run_plan(r, train->count, INFINITY, &plan, err);
        if (st != EML_OK) return st;
    }
    eml_train_opts *to = &r->to;
    to->progress = env->progress;
    to->progress_user = env->progress_user;
    to->on_start = env->on_start;
    to->on_start_user = env->on_start_user;
    to->on_step = env->on_step;
    to->on_step_user = env->on_step_user;
    if (to->run.mirror && r->mirror == NULL) {
        st = open_mirror(r, train, test, env, err);
        if (st != EML_OK) return st;
        to->mirror = r->mirror;
    }
    return eml_train(r->net, r->cfg, train, test, to, res, err);
}

eml_net *eml_run_net(eml_run *r)
{
    return r->net;
}

const eml_netcfg *eml_run_cfg(const eml_run *r)
{
    return r->cfg;
}

const eml_train_opts *eml_run_opts(const eml_run *r)
{
    return &r->to;
}

const uint8_t *eml_run_cfg_sha256(const eml_run *r)
{
    return r->cfg_sha256;
}
