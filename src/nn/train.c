/*
 * train.c - the training loop and evaluation over in-memory datasets.
 *
 * Seeded shuffling each epoch, mini-batches (the last one may be smaller),
 * forward, cross-entropy, backward, optimiser step; optional evaluation of a
 * test set after each epoch.  Trusted code: no I/O; progress goes to a
 * callback.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

eml_train_opts eml_train_opts_default(const eml_netcfg *cfg)
{
    eml_train_opts o;
    memset(&o, 0, sizeof(o));
    o.epochs = cfg->epochs > 0 ? cfg->epochs : 10;
    o.batch = cfg->batch > 0 ? cfg->batch : 128;
    o.lr = cfg->learning_rate;
    o.seed = 1;
    o.init_params = 1;
    o.eval_each_epoch = 1;
    return o;
}

void eml_load_batch(eml_net *net, const eml_dataset *d, const uint32_t *idx,
                    size_t first, int n, uint8_t *labels)
{
    float *x = eml_net_input(net);
    size_t item = d->item;
    for (int b = 0; b < n; b++) {
        size_t j = idx != NULL ? idx[first + (size_t)b] : first + (size_t)b;
        const uint8_t *img = d->images + j * item;
        float *xb = x + (size_t)b * item;
        for (size_t p = 0; p < item; p++) xb[p] = (float)img[p] * (1.0f / 255.0f);
        labels[b] = d->labels[j];
    }
}

static eml_status check_dataset(const eml_net *net, const eml_dataset *d,
                                const char *what, eml_err *err)
{
    if (d->item != eml_net_input_size(net))
        return eml_err_set(err, EML_ERR_SHAPE,
                           "%s images have %zu values each but the network "
                           "takes %zu (height x width x channels)",
                           what, d->item, eml_net_input_size(net));
    size_t k = eml_net_output_size(net);
    for (size_t i = 0; i < d->count; i++)
        if (d->labels[i] >= k)
            return eml_err_set(err, EML_ERR_RANGE,
                               "%s label %zu is %u but the network has %zu "
                               "outputs",
                               what, i, d->labels[i], k);
    if (d->count > UINT32_MAX)
        return eml_err_set(err, EML_ERR_RANGE, "%s set is too large", what);
    return EML_OK;
}

eml_status eml_evaluate(eml_net *net, const eml_dataset *d, double *loss,
                        double *accuracy, eml_err *err)
{
    eml_status st = check_dataset(net, d, "test", err);
    if (st != EML_OK) return st;
    int mb = eml_net_max_batch(net);
    uint8_t *labels = malloc((size_t)mb);
    if (labels == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    double loss_sum = 0;
    long correct = 0;
    for (size_t first = 0; first < d->count; first += (size_t)mb) {
        int n = (int)(d->count - first < (size_t)mb ? d->count - first
                                                    : (size_t)mb);
        int right = 0;
        eml_load_batch(net, d, NULL, first, n, labels);
        st = eml_net_forward(net, n, 0);
        if (st == EML_OK) st = eml_net_loss(net, n, labels, &loss_sum, &right);
        if (st != EML_OK) {
            free(labels);
            return eml_err_set(err, st, "evaluation failed: %s",
                               eml_status_str(st));
        }
        correct += right;
    }
    free(labels);
    double cnt = d->count > 0 ? (double)d->count : 1.0;
    if (loss != NULL) *loss = loss_sum / cnt;
    if (accuracy != NULL) *accuracy = (double)correct / cnt;
    return EML_OK;
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
    double el = now_seconds() - t_epoch;
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

/* ==== weight averaging ==== */

/* An exponential moving average of the parameters (Polyak averaging; for
 * DP-SGD it is post-processing, so it costs no privacy).  The decay ramps
 * up as min(d, (1 + t) / (10 + t)) so early weights do not dominate. */
typedef struct ema {
    float *avg; /* NULL when off */
    float decay;
    long t;
} ema;

static eml_status ema_init(ema *a, const eml_netcfg *cfg, eml_net *net)
{
    memset(a, 0, sizeof(*a));
    if (!(cfg->ema > 0)) return EML_OK;
    size_t n = eml_net_param_count(net);
    a->avg = malloc((n ? n : 1) * sizeof(float));
    if (a->avg == NULL) return EML_ERR_NOMEM;
    memcpy(a->avg, eml_net_params(net), n * sizeof(float));
    a->decay = cfg->ema;
    return EML_OK;
}

static void ema_update(ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    a->t++;
    float d = (1.0f + (float)a->t) / (10.0f + (float)a->t);
    if (d > a->decay) d = a->decay;
    const float *w = eml_net_params(net);
    size_t n = eml_net_param_count(net);
    for (size_t i = 0; i < n; i++) a->avg[i] = d * a->avg[i] + (1 - d) * w[i];
}

/* Exchanges the live parameters and the average (evaluation uses the
 * average; a second call restores the live ones). */
static void ema_swap(ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    float *w = eml_net_params(net);
    size_t n = eml_net_param_count(net);
    for (size_t i = 0; i < n; i++) {
        float t = w[i];
        w[i] = a->avg[i];
        a->avg[i] = t;
    }
}

static void ema_free(ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    eml_wipe(a->avg, eml_net_param_count(net) * sizeof(float));
    free(a->avg);
    a->avg = NULL;
}

/* Evaluates the test set with the averaged weights, if any. */
static eml_status eval_epoch(eml_net *net, ema *a, const eml_dataset *test,
                             eml_train_result *res, eml_err *err)
{
    ema_swap(a, net);
    eml_status st = eml_evaluate(net, test, &res->test_loss,
                                 &res->test_accuracy, err);
    ema_swap(a, net);
    return st;
}

/* ==== differentially private SGD ==== */

void eml_dp_plan(size_t count, int batch, int epochs, double *q, long *steps)
{
    double n = count > 0 ? (double)count : 1.0;
    *q = (double)batch / n;
    if (*q > 1.0) *q = 1.0;
    double s = ceil((double)epochs * n / (double)batch);
    *steps = s < 1 ? 1 : (long)s;
}

double eml_dp_effective_noise(double sigma, double clip, size_t n_params)
{
    if (!(sigma > 0) || !(clip > 0)) return sigma;
    double h = eml_dp_noise_grid(sigma * clip);
    return sigma / (1.0 + h * sqrt((double)n_params) / clip);
}

eml_status eml_dp_noise_for_target(double q, long steps, double delta,
                                   double target_eps, double clip,
                                   size_t n_params, double *sigma,
                                   eml_err *err)
{
    double need;
    eml_status st = eml_dp_noise_for_epsilon(q, steps, delta, target_eps,
                                             &need, err);
    if (st != EML_OK) return st;
    /* The grid step grows with sigma, so step up until the effective
     * multiplier reaches what the target needs (a few iterations). */
    double s = need;
    for (int i = 0; i < 200 && eml_dp_effective_noise(s, clip, n_params) < need;
         i++)
        s *= 1.0 + 1e-4;
    if (eml_dp_effective_noise(s, clip, n_params) < need)
        return eml_err_set(err, EML_ERR_RANGE,
                           "cannot reach epsilon %g with this grid", target_eps);
    *sigma = s;
    return EML_OK;
}

static eml_status check_dp(const eml_dp_opts *dp, eml_err *err)
{
    if (!(dp->clip > 0) || !isfinite(dp->clip))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--clip must be a positive number (got %g)",
                           dp->clip);
    if (!(dp->noise >= 0) || !isfinite(dp->noise))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--noise must be >= 0 (got %g)", dp->noise);
    if (!(dp->delta > 0 && dp->delta < 1))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--delta must be in (0, 1) (got %g)", dp->delta);
    if (dp->target_epsilon < 0 || !isfinite(dp->target_epsilon))
        return eml_err_set(err, EML_ERR_INVALID,
                           "--target-epsilon must be positive");
    return EML_OK;
}

/* One DP step over the examples sel[0..m): clipped per-example gradients
 * summed (in chunks of the net's batch size) into acc, then noise. */
static eml_status dp_step(eml_net *net, const eml_dataset *d,
                          const uint32_t *sel, size_t m, float *acc,
                          float *sq, float *scale, uint8_t *labels,
                          double clip, double *loss_sum, long *correct)
{
    size_t np = eml_net_param_count(net);
    int mb = eml_net_max_batch(net);
    memset(acc, 0, np * sizeof(float));
    for (size_t first = 0; first < m; first += (size_t)mb) {
        int n = (int)(m - first < (size_t)mb ? m - first : (size_t)mb);
        int right = 0;
        eml_load_batch(net, d, sel, first, n, labels);
        eml_status st = eml_net_forward(net, n, 1);
        if (st == EML_OK) st = eml_net_loss(net, n, labels, loss_sum, &right);
        if (st == EML_OK) st = eml_net_backward(net, n, sq);
        if (st != EML_OK) return st;
        /* Flat clipping: scale example b by min(1, C / |g_b|); the loss
         * gradient is linear in what flows back, so a second backward pass
         * gives the sum of the clipped gradients. */
        for (int b = 0; b < n; b++) {
            double norm = sqrt((double)sq[b]);
            scale[b] = norm > clip ? (float)(clip / norm) : 1.0f;
        }
        eml_net_scale_output_delta(net, n, scale);
        st = eml_net_backward(net, n, NULL);
        if (st != EML_OK) return st;
        const float *g = eml_net_grads(net);
        for (size_t i = 0; i < np; i++) acc[i] += g[i];
        *correct += right;
    }
    return EML_OK;
}

static eml_status train_dp(eml_net *net, const eml_netcfg *cfg,
                           const eml_dataset *train, const eml_dataset *test,
                           const eml_train_opts *opts, eml_optim *opt,
                           ema *avg, eml_train_result *res, eml_err *err)
{
    const eml_dp_opts *dp = &opts->dp;
    eml_status st = check_dp(dp, err);
    if (st != EML_OK) return st;
    double q;
    long total;
    eml_dp_plan(train->count, opts->batch, opts->epochs, &q, &total);
    if (cfg->max_batches > 0 && cfg->max_batches < total)
        total = cfg->max_batches;
    long per_epoch = (long)ceil((double)train->count / (double)opts->batch);
    size_t np = eml_net_param_count(net);
    int mb = eml_net_max_batch(net);
    eml_csprng *rng = NULL;
    uint32_t *sel = malloc(train->count * sizeof(uint32_t));
    float *acc = malloc(np * sizeof(float));
    float *noise = malloc(np * sizeof(float));
    float *sq = malloc((size_t)mb * sizeof(float));
    float *scale = malloc((size_t)mb * sizeof(float));
    uint8_t *labels = malloc((size_t)mb);
    if (sel == NULL || acc == NULL || noise == NULL || sq == NULL ||
        scale == NULL || labels == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = dp->insecure_seed ? eml_csprng_new_seeded(opts->seed, &rng, err)
                           : eml_csprng_new(&rng, err);
    if (st != EML_OK) goto out;
    eml_dp_accountant accnt;
    eml_dp_accountant_init(&accnt);
    res->sampling_rate = q;
    double grid = dp->noise > 0 ? eml_dp_noise_grid(dp->noise * dp->clip) : 0;
    double sigma_acc = eml_dp_effective_noise(dp->noise, dp->clip, np);
    double t_train = 0;
    long step = 0, total_seen = 0;
    double expected = q * (double)train->count;
    for (int epoch = 1; step < total; epoch++) {
        double t_epoch = now_seconds(), loss_sum = 0;
        long seen = 0, correct = 0;
        if (dp->fixed_batches) {
            for (size_t i = 0; i < train->count; i++) sel[i] = (uint32_t)i;
            for (size_t i = train->count; i > 1; i--) {
                uint64_t r;
                eml_csprng_bytes(rng, &r, sizeof(r));
                /* rejection keeps the permutation unbiased */
                uint64_t lim = UINT64_MAX - UINT64_MAX % i;
                while (r >= lim) eml_csprng_bytes(rng, &r, sizeof(r));
                size_t j = (size_t)(r % i);
                uint32_t t = sel[i - 1];
                sel[i - 1] = sel[j];
                sel[j] = t;
            }
        }
        long bi;
        for (bi = 0; bi < per_epoch && step < total; bi++) {
            if (dp->target_epsilon > 0) {
                double eps_next, ord;
                st = eml_dp_accountant_epsilon_after(&accnt, q, sigma_acc, 1,
                                                     dp->delta, &eps_next,
                                                     &ord, err);
                if (st != EML_OK) goto out;
                if (eps_next > dp->target_epsilon) {
                    res->dp_stopped_early = 1;
                    total = step;
                    break;
                }
            }
            const uint32_t *batch;
            size_t m;
            if (dp->fixed_batches) {
                size_t first = (size_t)bi * (size_t)opts->batch;
                m = train->count - first < (size_t)opts->batch
                        ? train->count - first
                        : (size_t)opts->batch;
                batch = sel + first;
            } else {
                m = 0;
                for (size_t i = 0; i < train->count; i++)
                    if (eml_dp_bernoulli(rng, q)) sel[m++] = (uint32_t)i;
                batch = sel;
            }
            st = dp_step(net, train, batch, m, acc, sq, scale, labels,
                         dp->clip, &loss_sum, &correct);
            if (st != EML_OK) {
                eml_err_set(err, st, "DP training step %ld failed: %s", step,
                            eml_status_str(st));
                goto out;
            }
            st = eml_dp_gaussian_fill(rng, noise, np, dp->noise * dp->clip);
            if (st != EML_OK) {
                eml_err_set(err, st, "noise generation failed");
                goto out;
            }
            /* Snap the clipped sum to the noise grid, then add the noise:
             * the double sum is exactly on the grid (free of floating-point
             * artefacts); rounding it to float is post-processing. */
            float *g = eml_net_grads(net);
            if (grid > 0)
                for (size_t i = 0; i < np; i++)
                    g[i] = (float)(rint((double)acc[i] / grid) * grid +
                                   (double)noise[i]);
            else
                for (size_t i = 0; i < np; i++) g[i] = acc[i];
            eml_optim_step(opt, eml_lr_at(cfg, opts->lr, step, total),
                           (float)expected);
            ema_update(avg, net);
            st = eml_dp_accountant_add(&accnt, q, sigma_acc, 1, err);
            if (st != EML_OK) goto out;
            step++;
            seen += (long)m;
            total_seen += (long)m;
            report_step(opts, epoch, (int)((total + per_epoch - 1) / per_epoch),
                        bi + 1, per_epoch, loss_sum, seen, t_epoch, t_train,
                        step, total);
        }
        double el = now_seconds() - t_epoch;
        t_train += el;
        res->epochs = epoch;
        res->train_loss = loss_sum / (double)(seen ? seen : 1);
        res->train_accuracy = (double)correct / (double)(seen ? seen : 1);
        int last = step >= total;
        if (test != NULL && test->count > 0 && (opts->eval_each_epoch || last)) {
            st = eval_epoch(net, avg, test, res, err);
            if (st != EML_OK) goto out;
        }
        report_epoch(opts, epoch, (int)((total + per_epoch - 1) / per_epoch),
                     per_epoch, res, el > 0 ? (double)seen / el : 0, t_train,
                     step, total);
        if (bi == 0 && step >= total) break;
    }
    res->steps = step;
    res->seconds = t_train;
    res->images_per_second = t_train > 0 ? (double)total_seen / t_train : 0;
    st = eml_dp_accountant_epsilon(&accnt, dp->delta, &res->epsilon,
                                   &res->order, err);
out:
    eml_csprng_free(rng);
    free(sel);
    if (acc != NULL) eml_wipe(acc, np * sizeof(float));
    free(acc);
    free(noise);
    free(sq);
    free(scale);
    free(labels);
    return st;
}

eml_status eml_train(eml_net *net, const eml_netcfg *cfg,
                     const eml_dataset *train, const eml_dataset *test,
                     const eml_train_opts *opts, eml_train_result *res,
                     eml_err *err)
{
    memset(res, 0, sizeof(*res));
    res->test_accuracy = -1;
    if (opts->epochs <= 0 || opts->batch <= 0 ||
        opts->batch > eml_net_max_batch(net))
        return eml_err_set(err, EML_ERR_INVALID,
                           "epochs (%d) and batch (%d) must be positive and "
                           "batch at most %d",
                           opts->epochs, opts->batch, eml_net_max_batch(net));
    if (!(opts->lr > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "learning rate must be positive");
    if (train->count == 0)
        return eml_err_set(err, EML_ERR_INVALID, "the training set is empty");
    eml_status st = check_dataset(net, train, "training", err);
    if (st != EML_OK) return st;
    if (test != NULL) {
        st = check_dataset(net, test, "test", err);
        if (st != EML_OK) return st;
    }

    eml_optim *opt = NULL;
    ema avg;
    memset(&avg, 0, sizeof(avg));
    uint32_t *idx = malloc(train->count * sizeof(uint32_t));
    uint8_t *labels = malloc((size_t)opts->batch);
    st = eml_optim_new(cfg, net, &opt);
    if (idx == NULL || labels == NULL || st != EML_OK) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opts->init_params) eml_net_init_params(net, opts->seed);
    st = ema_init(&avg, cfg, net);
    if (st != EML_OK) {
        eml_err_set(err, st, "out of memory");
        goto out;
    }
    if (opts->dp.enabled) {
        st = train_dp(net, cfg, train, test, opts, opt, &avg, res, err);
        goto out;
    }
    eml_rng rng;
    eml_rng_seed(&rng, opts->seed ^ 0x5851f42d4c957f2dULL);
    for (size_t i = 0; i < train->count; i++) idx[i] = (uint32_t)i;

    long batches = (long)((train->count + (size_t)opts->batch - 1) /
                          (size_t)opts->batch);
    long total = batches * opts->epochs;
    if (cfg->max_batches > 0 && cfg->max_batches < total)
        total = cfg->max_batches;
    double t_train = 0;
    long step = 0, total_seen = 0;
    for (int epoch = 1; epoch <= opts->epochs && step < total; epoch++) {
        eml_rng_shuffle(&rng, idx, train->count);
        double t_epoch = now_seconds();
        double loss_sum = 0;
        long seen = 0, correct = 0;
        for (long bi = 0; bi < batches && step < total; bi++) {
            size_t first = (size_t)bi * (size_t)opts->batch;
            int n = (int)(train->count - first < (size_t)opts->batch
                              ? train->count - first
                              : (size_t)opts->batch);
            int right = 0;
            eml_load_batch(net, train, idx, first, n, labels);
            st = eml_net_forward(net, n, 1);
            if (st == EML_OK)
                st = eml_net_loss(net, n, labels, &loss_sum, &right);
            if (st == EML_OK) st = eml_net_backward(net, n, NULL);
            if (st != EML_OK) {
                eml_err_set(err, st, "training step %ld failed: %s", step,
                            eml_status_str(st));
                goto out;
            }
            eml_optim_step(opt, eml_lr_at(cfg, opts->lr, step, total),
                           (float)n);
            ema_update(&avg, net);
            step++;
            seen += n;
            total_seen += n;
            correct += right;
            report_step(opts, epoch, opts->epochs, bi + 1, batches, loss_sum,
                        seen, t_epoch, t_train, step, total);
        }
        double el = now_seconds() - t_epoch;
        t_train += el;
        res->epochs = epoch;
        res->train_loss = loss_sum / (double)(seen ? seen : 1);
        res->train_accuracy = (double)correct / (double)(seen ? seen : 1);
        res->images_per_second = el > 0 ? (double)seen / el : 0;
        int last = epoch == opts->epochs || step >= total;
        if (test != NULL && test->count > 0 && (opts->eval_each_epoch || last)) {
            st = eval_epoch(net, &avg, test, res, err);
            if (st != EML_OK) goto out;
        }
        report_epoch(opts, epoch, opts->epochs, batches, res,
                     res->images_per_second, t_train, step, total);
    }
    res->steps = step;
    res->seconds = t_train;
    res->images_per_second = t_train > 0 ? (double)total_seen / t_train : 0;
out:
    /* The model that leaves is the average, when there is one. */
    if (st == EML_OK) ema_swap(&avg, net);
    ema_free(&avg, net);
    eml_optim_free(opt);
    free(idx);
    free(labels);
    return st;
}
