/*
 * train_internal.h - the parts the trainer (train.c) is made of, each in
 * a file of its own under nn/:
 *
 *   evaluate.c   forward passes over a dataset: fixed features computed
 *                once, batches loaded through an index, evaluation
 *   ema.c        the weight average
 *   batch.c      batch sources: which examples each step sees (shuffled
 *                epochs, a CSPRNG permutation, Poisson sampling)
 *   step.c       gradient steps: what a step computes from its examples
 *                (forward + loss + backward, or per-example clipping and
 *                noise for DP-SGD)
 *   run_state.c  the training state a mirror saves and a resume restores
 *
 * train.c drives one loop over a batch source and a gradient step, with
 * step hooks (the mirror, the progress reporter, the caller's) after every
 * step.  Trusted code; nothing here is public API.
 */
#ifndef EML_NN_TRAIN_INTERNAL_H
#define EML_NN_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/dp.h"
#include "enclaveml/mirror.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"

double eml_now_seconds(void);

/* ==== evaluate.c ==== */

/* The outputs of the net's fixed leading layers ([scattering]) for every
 * image of a dataset, computed once: later passes start after them. */
typedef struct eml_feat_cache {
    float *f; /* count x dim, NULL when the net has no fixed layers */
    size_t dim, count;
    int layers;
} eml_feat_cache;

EML_MUST_CHECK eml_status eml_feat_build(eml_net *net, const eml_dataset *d,
                                         eml_feat_cache *c, eml_err *err);
void eml_feat_free(eml_feat_cache *c); /* wipes: derived from the images */

/* ==== augment.c ==== */

/* Training images augmented as the cfg says: example b of step `step`
 * from a generator seeded with (seed, step, b) alone. */
typedef struct eml_aug {
    const eml_augment_cfg *cfg; /* NULL: none */
    uint64_t seed;
    long step;
    int c, h, w;
} eml_aug;

/* src: c x h x w bytes; dst: the augmented image scaled to [0, 1]. */
void eml_augment_image(const eml_augment_cfg *ac, uint64_t seed, long step,
                       int b, const uint8_t *src, int c, int h, int w,
                       float *dst);

/* Loads examples idx[first..first+n) (first..first+n without idx) and runs
 * the forward pass: from the cached features when there are any, else from
 * the images, augmented when aug is not NULL (then c must be NULL). */
EML_MUST_CHECK eml_status eml_batch_forward(eml_net *net,
                                            const eml_dataset *d,
                                            const eml_feat_cache *c,
                                            const uint32_t *idx, size_t first,
                                            int n, uint8_t *labels,
                                            int train, const eml_aug *aug);
/* eml_evaluate over the cached features (c may be NULL). */
EML_MUST_CHECK eml_status eml_evaluate_cached(eml_net *net,
                                              const eml_dataset *d,
                                              const eml_feat_cache *c,
                                              double *loss, double *accuracy,
                                              eml_err *err);
/* Image size and labels fit the net. */
EML_MUST_CHECK eml_status eml_dataset_check(const eml_net *net,
                                            const eml_dataset *d,
                                            const char *what, eml_err *err);

/* ==== ema.c ==== */

/* An exponential moving average of the parameters (Polyak averaging; for
 * DP-SGD it is post-processing, so it costs no privacy).  The decay ramps
 * up as min(d, (1 + t) / (10 + t)) so early weights do not dominate. */
typedef struct eml_ema {
    float *avg; /* NULL when off */
    float decay;
    long t;
} eml_ema;

EML_MUST_CHECK eml_status eml_ema_init(eml_ema *a, const eml_netcfg *cfg,
                                       eml_net *net);
void eml_ema_update(eml_ema *a, eml_net *net);
/* Exchanges the live parameters and the average (evaluation uses the
 * average; a second call restores the live ones). */
void eml_ema_swap(eml_ema *a, eml_net *net);
void eml_ema_free(eml_ema *a, eml_net *net);

/* ==== batch.c: batch sources ==== */

typedef struct eml_batch_source eml_batch_source;

typedef struct eml_batch_ops {
    /* Steps in epoch e (1-based; may be 0 for a Poisson epoch). */
    long (*epoch_len)(const eml_batch_source *s, int epoch);
    /* A new epoch begins (not the continuation of a resumed one). */
    void (*epoch_start)(eml_batch_source *s);
    /* The examples of step bi of the epoch: m indices at *idx, valid until
     * the next call. */
    void (*batch)(eml_batch_source *s, long bi, const uint32_t **idx,
                  size_t *m);
} eml_batch_ops;

struct eml_batch_source {
    const eml_batch_ops *ops;
    size_t count;     /* examples in the training set */
    int batch;        /* examples per step (expected, for Poisson) */
    int epochs;       /* epochs the run shows */
    long planned;     /* steps the epochs make */
    long total;       /* steps the run takes (planned, capped) */
    long per_epoch;   /* ceil(count / batch) */
    uint32_t *order;  /* count entries */
    int order_saved;  /* the order is part of the training state */
    eml_rng rng;      /* shuffled: part of the state (has_rng) */
    int has_rng;
    eml_csprng *csprng; /* permuted, Poisson: borrowed */
    double q;           /* DP: sampling rate */
    int plan_epochs;    /* DP: the epochs the planned steps split into */
};

/* Each epoch a fresh shuffle (eml_rng seeded from seed), every example
 * once; max_steps > 0 caps the run. */
EML_MUST_CHECK eml_status eml_batch_shuffled(eml_batch_source *s,
                                             size_t count, int batch,
                                             int epochs, long max_steps,
                                             uint64_t seed);
/* DP-SGD: the planned steps over fixed-size batches of a CSPRNG
 * permutation (fixed = 1), or Poisson samples at rate q (fixed = 0),
 * epoch e being the steps [end(e-1), end(e)) of an even split. */
EML_MUST_CHECK eml_status eml_batch_dp(eml_batch_source *s, size_t count,
                                       int batch, int epochs, long max_steps,
                                       int fixed, eml_csprng *rng);
void eml_batch_free(eml_batch_source *s);

/* ==== step.c: gradient steps ==== */

typedef struct eml_grad_step eml_grad_step;

typedef struct eml_grad_ops {
    /* Before a step: *stop = 1 ends the run here.  NULL: never stops. */
    eml_status (*before)(eml_grad_step *g, int *stop, eml_err *err);
    /* The gradient for idx[0..m) into the net's gradient buffer, as the
     * optimiser takes it (a sum, divided by *divisor); adds to the loss sum
     * and the count of right answers.  step names the step in errors. */
    eml_status (*compute)(eml_grad_step *g, const eml_dataset *d,
                          const eml_feat_cache *fc, const uint32_t *idx,
                          size_t m, long step, double *loss_sum,
                          long *correct, float *divisor, eml_err *err);
    /* After the optimiser's update.  NULL: nothing. */
    eml_status (*after)(eml_grad_step *g, eml_err *err);
} eml_grad_ops;

struct eml_grad_step {
    const eml_grad_ops *ops;
    eml_net *net;
    /* DP-SGD: part of the training state */
    eml_csprng *csprng;
    eml_dp_accountant *acc;
    /* private */
    eml_dp_opts dp;
    eml_dp_accountant accountant;
    double q, sigma_acc, grid, expected;
    size_t n_params;
    float *sum, *noise, *sq, *scale;
    uint8_t *labels;
    int stopped_early;
    eml_aug aug; /* cfg NULL: no augmentation */
};

EML_MUST_CHECK eml_status eml_grad_plain(eml_grad_step *g, eml_net *net,
                                         int batch, eml_err *err);
/* DP-SGD with expected batch q * count; the CSPRNG is made here (and
 * shared with the batch source). */
EML_MUST_CHECK eml_status eml_grad_dp(eml_grad_step *g, eml_net *net,
                                      const eml_dp_opts *dp, double q,
                                      size_t count, uint64_t seed,
                                      eml_err *err);
/* DP: epsilon spent so far. */
EML_MUST_CHECK eml_status eml_grad_epsilon(const eml_grad_step *g,
                                           double *eps, double *order,
                                           eml_err *err);
void eml_grad_free(eml_grad_step *g);

/* ==== run_state.c: what a mirror saves ==== */

/* Where a training loop is: everything besides the big buffers. */
typedef struct eml_loop_pos {
    int epoch;           /* 1-based */
    long bi;             /* next batch within the epoch */
    long step, total, seen, correct, total_seen;
    double loss_sum;     /* this epoch */
    double t_train;      /* finished epochs' seconds */
    double t_epoch0;     /* when this epoch started (clock) */
} eml_loop_pos;

/* The scalars of a saved state (first segment), native layout: the state
 * only ever travels sealed and is read back by the same program. */
typedef struct eml_run_scalars {
    uint64_t magic, n_params, count, dp;
    int64_t epoch, bi, step, total, seen, correct, total_seen;
    double loss_sum, t_train, t_epoch;
    uint64_t shuffle_rng[4], net_rng[4];
    int64_t optim_t, ema_t, acc_steps;
    double acc_rdp[EML_DP_N_ORDERS];
} eml_run_scalars;

/* What the state is made of: scalars | parameters | optimiser moments |
 * weight average | data order (if the source keeps one) | CSPRNG (DP). */
typedef struct eml_run_state {
    eml_run_scalars sc;
    eml_seg segs[8];
    int nseg;
    eml_net *net;
    eml_optim *opt;
    eml_ema *avg;
    eml_batch_source *src;
    eml_grad_step *step;
} eml_run_state;

void eml_run_state_layout(eml_run_state *rs, eml_net *net, eml_optim *opt,
                          eml_ema *avg, eml_batch_source *src,
                          eml_grad_step *step);
/* Seals the state at lp into the mirror. */
EML_MUST_CHECK eml_status eml_run_state_save(eml_run_state *rs,
                                             eml_mirror *mirror,
                                             const eml_loop_pos *lp,
                                             eml_err *err);
/* Loads the mirror's newest state into the buffers and lp, if there is
 * one (*found).  lp->total must hold this run's total. */
EML_MUST_CHECK eml_status eml_run_state_load(eml_run_state *rs,
                                             eml_mirror *mirror,
                                             eml_loop_pos *lp, int *found,
                                             eml_err *err);

#endif
