/*
 * train.c - the trainer: one loop over a batch source (batch.c: which
 * examples a step sees) and a gradient step (step.c: what it computes from
 * them), for plain training and DP-SGD alike.  Each step: the source's
 * batch, the gradient, the optimiser's update, the weight average, then
 * the step hooks in order: the caller's hook (opts->on_step: where a
 * decentralized node's exchange or an outsourcing flush hangs), the
 * mirror's save, the progress report.  The save comes after the caller's
 * hook, so a saved step is a finished one: a node killed during its
 * exchange resumes from the step before and exchanges that round again,
 * rather than skip it.  Each epoch ends with its results and, when
 * asked, the test set.
 *
 * Trusted code: no I/O; progress goes to a callback.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

double eml_now_seconds(void)
{
    return eml_wall_seconds();
}

eml_run_spec eml_run_spec_default(void)
{
    eml_run_spec s;
    memset(&s, 0, sizeof(s));
    s.seed = 1;
    s.threads = 1;
    s.kernels = EML_KERNELS_FAST;
    s.dp.delta = 1e-5;
    s.dp.noise = -1;
    s.save_every = 1;
    return s;
}

eml_train_opts eml_train_opts_default(const eml_netcfg *cfg)
{
    eml_train_opts o;
    memset(&o, 0, sizeof(o));
    o.run = eml_run_spec_default();
    memset(&o.run.dp, 0, sizeof(o.run.dp)); /* no DP unless asked */
    o.run.epochs = cfg->epochs > 0 ? cfg->epochs : 10;
    o.run.batch = cfg->batch > 0 ? cfg->batch : 128;
    o.run.lr = cfg->learning_rate;
    o.init_params = 1;
    o.eval_each_epoch = 1;
    return o;
}

/* ==== progress ==== */

static double eta(double seconds, long step, long total)
{
    return step > 0 ? (double)(total - step) * (seconds / (double)step) : 0;
}

/* After a batch: the running loss and rate of this epoch. */
static void report_step(const eml_train_opts *o, int epoch, int epochs,
                        long batch, long batches, double loss_sum, long seen,
                        double t_epoch, double t_train, long step, long total)
{
    if (o->progress == NULL) return;
    eml_train_progress p;
    memset(&p, 0, sizeof(p));
    double el = eml_now_seconds() - t_epoch;
    p.epoch = epoch;
    p.epochs = epochs;
    p.batch = batch;
    p.batches = batches;
    p.loss = seen > 0 ? loss_sum / (double)seen : 0;
    p.images_per_second = el > 0 ? (double)seen / el : 0;
    p.seconds = t_train + el;
    p.eta_seconds = eta(p.seconds, step, total);
    o->progress(o->progress_user, &p);
}

/* At the end of an epoch, with its results. */
static void report_epoch(const eml_train_opts *o, int epoch, int epochs,
                         long batches, const eml_train_result *res,
                         double images_per_second, double t_train, long step,
                         long total)
{
    if (o->progress == NULL) return;
    eml_train_progress p;
    memset(&p, 0, sizeof(p));
    p.epoch = epoch;
    p.epochs = epochs;
    p.batch = p.batches = batches;
    p.loss = res->train_loss;
    p.images_per_second = images_per_second;
    p.seconds = t_train;
    p.eta_seconds = eta(t_train, step, total);
    p.epoch_done = 1;
    p.test_accuracy = res->test_accuracy;
    p.train_accuracy = res->train_accuracy;
    o->progress(o->progress_user, &p);
}

/* ==== the trainer ==== */

#define MAX_HOOKS 4

typedef struct hook {
    eml_step_fn fn;
    void *user;
} hook;

typedef struct trainer {
    eml_net *net;
    const eml_netcfg *cfg;
    const eml_train_opts *o;
    const eml_dataset *train, *test;
    eml_train_result *res;
    eml_optim *opt;
    eml_ema avg;
    eml_feat_cache fc_train, fc_test;
    eml_batch_source src;
    eml_grad_step step;
    eml_run_state rs;
    eml_loop_pos lp;
    hook hooks[MAX_HOOKS];
    int n_hooks;
} trainer;

/* Evaluates the test set with the averaged weights, if any. */
static eml_status eval_epoch(trainer *t, eml_err *err)
{
    eml_ema_swap(&t->avg, t->net);
    eml_status st = eml_evaluate_cached(t->net, t->test, &t->fc_test,
                                        &t->res->test_loss,
                                        &t->res->test_accuracy, err);
    eml_ema_swap(&t->avg, t->net);
    return st;
}

/* Starts epoch `epoch`: 1 when it is the epoch a resumed run stopped in
 * (lp, the data order and the generators as restored: go on from lp->bi),
 * else 0 with the epoch's counters reset. */
static int epoch_begin(eml_loop_pos *lp, int epoch, int resumed)
{
    if (resumed && epoch == lp->epoch) return 1;
    lp->epoch = epoch;
    lp->t_epoch0 = eml_now_seconds();
    lp->loss_sum = 0;
    lp->seen = lp->correct = 0;
    return 0;
}

/* Ends an epoch: its results, the test set when asked (or last), and the
 * per-epoch progress line. */
static eml_status epoch_finish(trainer *t, int epochs_n, long batches,
                               int last, eml_err *err)
{
    eml_loop_pos *lp = &t->lp;
    eml_train_result *res = t->res;
    const eml_train_opts *opts = t->o;
    const eml_dataset *test = t->test;
    double el = eml_now_seconds() - lp->t_epoch0;
    lp->t_train += el;
    res->epochs = lp->epoch;
    res->train_loss = lp->loss_sum / (double)(lp->seen ? lp->seen : 1);
    res->train_accuracy =
        (double)lp->correct / (double)(lp->seen ? lp->seen : 1);
    if (test != NULL && test->count > 0 && (opts->eval_each_epoch || last)) {
        eml_status st = eval_epoch(t, err);
        if (st != EML_OK) return st;
    }
    report_epoch(opts, lp->epoch, epochs_n, batches, res,
                 el > 0 ? (double)lp->seen / el : 0, lp->t_train, lp->step,
                 lp->total);
    return EML_OK;
}

/* ==== step hooks ==== */

/* The mirror: the whole state every eml_mirror_every steps. */
static eml_status mirror_hook(void *user, const eml_step_info *s,
                              eml_err *err)
{
    trainer *t = user;
    if (s->step % eml_mirror_every(t->o->mirror) != 0) return EML_OK;
    double t0 = eml_now_seconds();
    eml_status st = eml_run_state_save(&t->rs, t->o->mirror, &t->lp, err);
    if (st == EML_OK) t->res->mirror_saves++;
    t->res->mirror_seconds += eml_now_seconds() - t0;
    return st;
}

static eml_status progress_hook(void *user, const eml_step_info *s,
                                eml_err *err)
{
    (void)err;
    trainer *t = user;
    report_step(t->o, s->epoch, s->epochs, s->batch, s->batches,
                t->lp.loss_sum, t->lp.seen, t->lp.t_epoch0, t->lp.t_train,
                s->step, s->total);
    return EML_OK;
}

static void add_hook(trainer *t, eml_step_fn fn, void *user)
{
    t->hooks[t->n_hooks].fn = fn;
    t->hooks[t->n_hooks].user = user;
    t->n_hooks++;
}

/* ==== one step, one run ==== */

/* Step bi of the epoch; *stop = 1 when the gradient step ends the run
 * before it (DP: the target epsilon). */
static eml_status run_step(trainer *t, int epoch, long bi, long len,
                           int *stop, eml_err *err)
{
    eml_loop_pos *lp = &t->lp;
    eml_grad_step *g = &t->step;
    *stop = 0;
    eml_status st = EML_OK;
    if (g->ops->before != NULL) {
        st = g->ops->before(g, stop, err);
        if (st != EML_OK || *stop) return st;
    }
    const uint32_t *idx;
    size_t m;
    float divisor;
    t->src.ops->batch(&t->src, bi, &idx, &m);
    st = g->ops->compute(g, t->train, &t->fc_train, idx, m, lp->step,
                         &lp->loss_sum, &lp->correct, &divisor, err);
    if (st != EML_OK) return st;
    eml_optim_step(t->opt,
                   eml_lr_at(t->cfg, (float)t->o->run.lr, lp->step, t->src.total),
                   divisor);
    eml_ema_update(&t->avg, t->net);
    if (g->ops->after != NULL) {
        st = g->ops->after(g, err);
        if (st != EML_OK) return st;
    }
    lp->step++;
    lp->seen += (long)m;
    lp->total_seen += (long)m;
    lp->bi = bi + 1;
    eml_step_info s = {epoch, t->src.epochs, bi + 1, len, lp->step,
                       lp->total, (long)m};
    for (int h = 0; h < t->n_hooks && st == EML_OK; h++)
        st = t->hooks[h].fn(t->hooks[h].user, &s, err);
    return st;
}

/* Loads the mirror's newest state, if resuming and there is one; tells the
 * progress callback either way.  res->resumed_step is -1 otherwise.  Then
 * opts->on_start has the last word. */
static eml_status run_start(trainer *t, eml_err *err)
{
    const eml_train_opts *o = t->o;
    int found = 0;
    t->res->resumed_step = -1;
    if (o->mirror != NULL && o->run.resume) {
        eml_status st = eml_run_state_load(&t->rs, o->mirror, &t->lp, &found,
                                           err);
        if (st != EML_OK) return st;
        if (found) t->res->resumed_step = t->lp.step;
        if (o->progress != NULL) {
            eml_train_progress p;
            memset(&p, 0, sizeof(p));
            p.resume_event = 1;
            p.resumed_step = t->res->resumed_step;
            p.epoch = found ? t->lp.epoch : 1;
            p.batch = found ? t->lp.step : 0;
            p.batches = t->lp.total;
            o->progress(o->progress_user, &p);
        }
    }
    return o->on_start != NULL ? o->on_start(o->on_start_user, found, err)
                               : EML_OK;
}

/* The epochs, from where run_start left the loop. */
static eml_status run_epochs(trainer *t, eml_err *err)
{
    eml_loop_pos *lp = &t->lp;
    eml_batch_source *src = &t->src;
    int resumed = t->res->resumed_step >= 0;
    for (int epoch = lp->epoch;
         epoch <= src->epochs &&
         (lp->step < lp->total || (resumed && epoch == lp->epoch));
         epoch++) {
        long len = src->ops->epoch_len(src, epoch);
        if (len <= 0 && !(resumed && epoch == lp->epoch)) continue;
        int cont = epoch_begin(lp, epoch, resumed);
        long bi = cont ? lp->bi : 0;
        if (!cont) src->ops->epoch_start(src);
        for (; bi < len && lp->step < lp->total; bi++) {
            int stop;
            eml_status st = run_step(t, epoch, bi, len, &stop, err);
            if (st != EML_OK) return st;
            if (stop) {
                lp->total = lp->step;
                break;
            }
        }
        int last = epoch == src->epochs || lp->step >= lp->total;
        eml_status st = epoch_finish(t, src->epochs, len, last, err);
        if (st != EML_OK) return st;
        resumed = 0;
        if (last) break;
    }
    return EML_OK;
}

static eml_status check_run(eml_net *net, const eml_dataset *train,
                            const eml_dataset *test,
                            const eml_train_opts *opts, eml_err *err)
{
    const eml_run_spec *r = &opts->run;
    if (r->epochs <= 0 || r->batch <= 0 || r->batch > eml_net_max_batch(net))
        return eml_err_set(err, EML_ERR_INVALID,
                           "epochs (%d) and batch (%d) must be positive and "
                           "batch at most %d",
                           r->epochs, r->batch, eml_net_max_batch(net));
    if (!((float)r->lr > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "learning rate must be positive");
    if (train->count == 0)
        return eml_err_set(err, EML_ERR_INVALID, "the training set is empty");
    if (r->dp.enabled &&
        eml_net_trainable_count(net) != eml_net_param_count(net))
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "DP-SGD needs each example's own gradient, and "
                           "batch normalization mixes the examples of a "
                           "batch: use a network without batch_normalize=1");
    eml_status st = eml_dataset_check(net, train, "training", err);
    if (st == EML_OK && test != NULL)
        st = eml_dataset_check(net, test, "test", err);
    return st;
}

/* The optimiser, initial parameters, fixed features, weight average, the
 * batch source and the gradient step. */
static eml_status trainer_open(trainer *t, eml_err *err)
{
    const eml_train_opts *o = t->o;
    size_t count = t->train->count;
    long max_steps = t->cfg->max_batches;
    eml_status st = eml_optim_new(t->cfg, t->net, &t->opt);
    if (st != EML_OK) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    if (o->init_params) eml_net_init_params(t->net, o->run.seed);
    /* Fixed features ([scattering]): once per image, before the first
     * step; augmented training images go through them every step. */
    const eml_augment_cfg *aug = t->cfg->augment.on ? &t->cfg->augment : NULL;
    if (aug == NULL) st = eml_feat_build(t->net, t->train, &t->fc_train, err);
    if (st == EML_OK) st = eml_feat_build(t->net, t->test, &t->fc_test, err);
    if (st != EML_OK) return st;
    st = eml_ema_init(&t->avg, t->cfg, t->net);
    if (st != EML_OK) return eml_err_set(err, st, "out of memory");
    const eml_run_spec *r = &o->run;
    if (r->dp.enabled) {
        st = eml_batch_dp(&t->src, count, r->batch, r->epochs, max_steps,
                          r->dp.fixed_batches, NULL);
        if (st != EML_OK) return eml_err_set(err, st, "out of memory");
        st = eml_grad_dp(&t->step, t->net, &r->dp, t->src.q, count, r->seed,
                         err);
        t->src.csprng = t->step.csprng;
        t->res->sampling_rate = t->src.q;
    } else {
        st = eml_batch_shuffled(&t->src, count, r->batch, r->epochs,
                                max_steps, r->seed);
        if (st != EML_OK) return eml_err_set(err, st, "out of memory");
        st = eml_grad_plain(&t->step, t->net, r->batch, err);
    }
    if (st != EML_OK) return st;
    t->step.aug = (eml_aug){aug, o->run.seed ^ 0x2545f4914f6cdd1dULL, 0,
                            t->cfg->channels, t->cfg->height,
                            t->cfg->width};
    t->lp.total = t->src.total;
    t->lp.epoch = 1;
    eml_run_state_layout(&t->rs, t->net, t->opt, &t->avg, &t->src,
                         &t->step);
    if (o->on_step != NULL) add_hook(t, o->on_step, o->on_step_user);
    if (o->mirror != NULL) add_hook(t, mirror_hook, t);
    add_hook(t, progress_hook, t);
    return EML_OK;
}

eml_status eml_train(eml_net *net, const eml_netcfg *cfg,
                     const eml_dataset *train, const eml_dataset *test,
                     const eml_train_opts *opts, eml_train_result *res,
                     eml_err *err)
{
    memset(res, 0, sizeof(*res));
    res->test_accuracy = -1;
    eml_status st = check_run(net, train, test, opts, err);
    if (st != EML_OK) return st;
    trainer t;
    memset(&t, 0, sizeof(t));
    t.net = net;
    t.cfg = cfg;
    t.o = opts;
    t.train = train;
    t.test = test;
    t.res = res;
    st = trainer_open(&t, err);
    if (st == EML_OK) st = run_start(&t, err);
    if (st == EML_OK) st = run_epochs(&t, err);
    if (st == EML_OK) {
        res->steps = t.lp.step;
        res->seconds = t.lp.t_train;
        res->images_per_second =
            t.lp.t_train > 0 ? (double)t.lp.total_seen / t.lp.t_train : 0;
    }
    if (st == EML_OK && opts->run.dp.enabled) {
        res->dp_stopped_early = t.step.stopped_early;
        st = eml_grad_epsilon(&t.step, &res->epsilon, &res->order, err);
    }
    /* The model that leaves is the average, when there is one. */
    if (st == EML_OK) eml_ema_swap(&t.avg, net);
    eml_ema_free(&t.avg, net);
    eml_feat_free(&t.fc_train);
    eml_feat_free(&t.fc_test);
    eml_grad_free(&t.step);
    eml_batch_free(&t.src);
    eml_optim_free(t.opt);
    return st;
}
