/*
 * train.h - optimisers, learning-rate policies, the training loop and
 * evaluation, over in-memory datasets.
 *
 * Trusted code (it will run inside the enclave): no I/O.  Progress is
 * reported through a callback that the host turns into a progress bar.
 *
 *     eml_dataset tr = {...}, te = {...};
 *     eml_train_opts o = eml_train_opts_default(cfg);
 *     o.run.epochs = 3; o.run.seed = 1;
 *     eml_train_result res;
 *     eml_train(net, cfg, &tr, &te, &o, &res, &err);
 */
#ifndef ENCLAVEML_TRAIN_H
#define ENCLAVEML_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/dp.h"
#include "enclaveml/net.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Images as unsigned bytes (count, channels*height*width), C,H,W order;
 * pixels are scaled to [0,1] (value/255) as they enter the net. */
typedef struct eml_dataset {
    size_t count;
    size_t item;            /* bytes per image */
    const uint8_t *images;  /* borrowed */
    const uint8_t *labels;  /* borrowed, count entries */
} eml_dataset;

/* ==== optimiser ==== */
typedef struct eml_optim eml_optim;

EML_MUST_CHECK eml_status eml_optim_new(const eml_netcfg *cfg, eml_net *net,
                                        eml_optim **out);
void eml_optim_free(eml_optim *o);
/* The optimiser's state, for mirroring: n floats at *m (momentum or Adam's
 * first moment), at *v (Adam's second moment; NULL otherwise), and the
 * step counter *t. */
void eml_optim_state(eml_optim *o, float **m, float **v, size_t *n,
                     long **t);
/* Learning rate at iteration t (0-based) of a run of total iterations. */
float eml_lr_at(const eml_netcfg *cfg, float base_lr, long t, long total);
/* One update from the net's gradient SUM over n examples: uses grad / n
 * (n may be fractional: DP-SGD divides by the expected batch size). */
void eml_optim_step(eml_optim *o, float lr, float n);

/* ==== training loop ==== */
typedef struct eml_train_progress {
    int epoch, epochs;           /* 1-based epoch */
    long batch, batches;         /* 1-based batch within the epoch */
    double loss;                 /* running mean train loss this epoch */
    double images_per_second;    /* this epoch so far */
    double seconds;              /* since training started */
    double eta_seconds;          /* for the whole run */
    int epoch_done;              /* 1 on the per-epoch call */
    double test_accuracy;        /* on the per-epoch call, if a test set */
    double train_accuracy;       /* this epoch, on the per-epoch call */
    /* One call before the first step of a run with a mirror and resume:
     * resume_event = 1, resumed_step = the step the run continues from, or
     * -1 when the mirror held no committed state (a fresh start); batches
     * is then the run's total number of steps. */
    int resume_event;
    long resumed_step;
} eml_train_progress;

typedef void (*eml_progress_fn)(void *user, const eml_train_progress *p);

/* ==== a run's options ==== */

/* Every option of a training run.  Zero for epochs, batch or lr takes the
 * cfg's value.  Bounds are the TRAIN message's (src/boundary/messages.c),
 * which the command line checks first with clearer words. */
typedef struct eml_run_spec {
    int epochs;        /* 0..100000 */
    int batch;         /* 0..EML_CFG_MAX_BATCH */
    double lr;         /* 0..100 */
    uint64_t seed;     /* initialisation, shuffling, dropout */
    int threads;       /* 1..256 */
    int kernels;       /* eml_kernels_kind */
    eml_dp_opts dp;    /* dp.noise < 0: derive it from dp.target_epsilon */
    int mirror;        /* 1: save the training state through env->store */
    long save_every;   /* 1..1e9 steps */
    int resume;        /* continue from the mirror's newest state */
    int outsource;     /* 0: none; eml_outsource_mode (docs/outsource.md) */
    double outsource_min_intensity; /* FLOPs per element; 0: every product */
} eml_run_spec;

/* Command-line defaults: seed 1, one thread, fast kernels, no DP (delta
 * 1e-5, noise -1), no mirror, a save every step. */
eml_run_spec eml_run_spec_default(void);

/* After every step: where the run is.  A step hook returning anything but
 * EML_OK ends the run with that status (the mirror's save and the
 * progress report are hooks of this kind inside the trainer). */
typedef struct eml_step_info {
    int epoch, epochs;   /* 1-based epoch, epochs the run shows */
    long batch, batches; /* 1-based step within the epoch, its steps */
    long step, total;    /* steps taken, steps the run takes */
    long examples;       /* examples this step saw */
} eml_step_info;

typedef eml_status (*eml_step_fn)(void *user, const eml_step_info *s,
                                  eml_err *err);

typedef struct eml_train_opts {
    /* The run's options with the cfg's defaults in (epochs, batch and lr
     * never 0).  The trainer reads epochs, batch, lr, seed, dp and resume;
     * threads, kernels, mirror and save_every are eml_run's business (the
     * net is built and the mirror opened before eml_train). */
    eml_run_spec run;
    int init_params;     /* 1: initialise weights from seed first */
    int eval_each_epoch; /* evaluate the test set after every epoch */
    eml_progress_fn progress;
    void *progress_user;
    /* Mirroring (mirror.h): the whole training state (parameters, optimiser
     * and averaging state, step, epoch, data order, generators, privacy
     * accountant) is saved every eml_mirror_every(mirror) steps; NULL: off.
     * run.resume: continue from the mirror's newest committed state, if
     * any. */
    struct eml_mirror *mirror;
    /* Called once before the first step, after the resume was decided:
     * resumed = 1 when the run continues a committed mirror state.  A
     * status other than EML_OK ends the run before any step (the enclave
     * charges privacy budgets here).  NULL: nothing to do. */
    eml_status (*on_start)(void *user, int resumed, eml_err *err);
    void *on_start_user;
    /* Called after every step, after the mirror and the progress report.
     * NULL: nothing to do. */
    eml_step_fn on_step;
    void *on_step_user;
} eml_train_opts;

/* Defaults from the cfg: epochs, batch, learning rate; seed 1. */
eml_train_opts eml_train_opts_default(const eml_netcfg *cfg);

typedef struct eml_train_result {
    int epochs;
    long steps;
    double train_loss;      /* mean over the last epoch */
    double train_accuracy;  /* last epoch, with dropout active */
    double test_accuracy;   /* -1 without a test set */
    double test_loss;
    double seconds;         /* training only, evaluation excluded */
    double images_per_second;
    /* DP runs */
    double epsilon;         /* spent, at dp.delta */
    double order;           /* the RDP order that gave it */
    double sampling_rate;
    int dp_stopped_early;   /* 1: the target epsilon ended the run */
    /* mirror */
    long resumed_step;      /* -1: started from the beginning */
    long mirror_saves;
    double mirror_seconds;  /* spent saving */
} eml_train_result;

EML_MUST_CHECK eml_status eml_train(eml_net *net, const eml_netcfg *cfg,
                                    const eml_dataset *train,
                                    const eml_dataset *test,
                                    const eml_train_opts *opts,
                                    eml_train_result *res, eml_err *err);

/* SHA-256 naming a run for its mirror: the cfg (eml_run passes the cfg
 * text's SHA-256 as cfg_text) and every option that changes what training
 * computes (epochs, batch, learning rate, seed, initialisation, DP
 * settings).  Threads and kernels are not part of it. */
EML_MUST_CHECK eml_status eml_train_run_digest(uint8_t out[32],
                                               const uint8_t *cfg_text,
                                               size_t cfg_len,
                                               const eml_train_opts *o);
/* SHA-256 over the images and labels of both sets (test may be NULL). */
EML_MUST_CHECK eml_status eml_dataset_digest(uint8_t out[32],
                                             const eml_dataset *train,
                                             const eml_dataset *test);

/* Mean loss and accuracy of the net on a dataset. */
EML_MUST_CHECK eml_status eml_evaluate(eml_net *net, const eml_dataset *d,
                                       double *loss, double *accuracy,
                                       eml_err *err);
/* eml_evaluate, and the confusion matrix (k x k, k the net's output
 * size): confusion[t * k + p] counts the images of true class t that the
 * net predicts as p (the argmax, the first on ties, as the accuracy
 * counts them). */
EML_MUST_CHECK eml_status eml_evaluate_confusion(eml_net *net,
                                                 const eml_dataset *d,
                                                 double *loss,
                                                 double *accuracy,
                                                 uint64_t *confusion,
                                                 eml_err *err);

/* Calibrates the net on the first `count` images of d (0: all) in fp32,
 * then switches it to precision p (eml_net_set_precision). */
EML_MUST_CHECK eml_status eml_quantize_on(eml_net *net, const eml_dataset *d,
                                          size_t count, eml_precision p,
                                          eml_err *err);

/* Loads images [first, first+n) of d (in the order of idx if not NULL) into
 * the net's input, scaled to [0,1], and their labels into labels. */
void eml_load_batch(eml_net *net, const eml_dataset *d, const uint32_t *idx,
                    size_t first, int n, uint8_t *labels);

#ifdef __cplusplus
}
#endif
#endif
