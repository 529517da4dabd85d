/*
 * run.h - one training run, driven the same way in this process and in
 * the enclave: the trusted function that takes what the run is asked to do
 * (eml_run_spec, train.h: every training option, defined once), plans
 * differential privacy, opens the mirror and trains.
 *
 * The command line fills an eml_run_spec; the TRAIN message carries it
 * field by field (src/boundary/, one table row per field); the enclave
 * and the in-process path both hand it to eml_run_new.
 *
 *     eml_run *run;
 *     eml_run_new(&spec, cfg_text, cfg_len, "net.cfg", &run, &err);
 *     eml_run_plan(run, train.count, INFINITY, &plan, &err);
 *     eml_run_train(run, &train, &test, &env, &res, &err);
 *     eml_weights_encode(eml_run_net(run), ...);
 *     eml_run_free(run);
 *
 * Trusted code: no I/O.  The mirror's store, the progress reporter and the
 * budget's charge are hooks the caller passes in eml_run_env.
 */
#ifndef ENCLAVEML_RUN_H
#define ENCLAVEML_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/mirror.h"
#include "enclaveml/net.h"
#include "enclaveml/status.h"
#include "enclaveml/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* eml_run_spec, every option of a training run, and eml_run_spec_default
 * are in train.h (the trainer takes them as they are). */

typedef struct eml_run eml_run;

/* Checks the spec (DP needs a clip, a delta in (0, 1), and a noise
 * multiplier or a target epsilon), parses the cfg (cfg_name names it in
 * errors), applies the spec over the cfg's defaults and builds the
 * network (parameters from the seed). */
EML_MUST_CHECK eml_status eml_run_new(const eml_run_spec *spec,
                                      const uint8_t *cfg_text, size_t cfg_len,
                                      const char *cfg_name, eml_run **out,
                                      eml_err *err);
void eml_run_free(eml_run *r);

/* What the DP plan fixed (all zero without DP). */
typedef struct eml_run_plan_info {
    double sampling_rate;
    long steps;
    double noise;    /* the multiplier the run uses */
    double planned;  /* the epsilon the whole run may spend */
} eml_run_plan_info;

/* Fixes the run's DP noise for train_count examples before any data is
 * read: from the target epsilon when the spec gives none, and refuses a
 * plan that spends more than cap (INFINITY: no cap; a finite cap also
 * becomes the target, so training never takes a step past it). */
EML_MUST_CHECK eml_status eml_run_plan(eml_run *r, size_t train_count,
                                       double cap, eml_run_plan_info *plan,
                                       eml_err *err);

/* What the caller hangs on the run. */
typedef struct eml_run_env {
    /* The mirror (spec->mirror): where sealed states go, and the keys and
     * identity they are sealed to (mirror.h). */
    const eml_store_ops *store;
    const uint8_t *seal_secret;  /* 32 bytes */
    const uint8_t *measurement;  /* 32 bytes */
    eml_progress_fn progress;
    void *progress_user;
    /* See eml_train_opts.on_start (the budget's charge). */
    eml_status (*on_start)(void *user, int resumed, eml_err *err);
    void *on_start_user;
    /* See eml_train_opts.on_step (a decentralized node's exchange). */
    eml_step_fn on_step;
    void *on_step_user;
} eml_run_env;

/* Trains (plans first, with no cap, if eml_run_plan was not called). */
EML_MUST_CHECK eml_status eml_run_train(eml_run *r, const eml_dataset *train,
                                        const eml_dataset *test,
                                        const eml_run_env *env,
                                        eml_train_result *res, eml_err *err);

eml_net *eml_run_net(eml_run *r);
const eml_netcfg *eml_run_cfg(const eml_run *r);
/* The options training uses (the spec over the cfg's defaults, with the
 * planned noise and target). */
const eml_train_opts *eml_run_opts(const eml_run *r);
/* SHA-256 of the cfg text. */
const uint8_t *eml_run_cfg_sha256(const eml_run *r);

#ifdef __cplusplus
}
#endif
#endif
