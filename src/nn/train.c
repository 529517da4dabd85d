/*
 * train.c - the training loop and evaluation over in-memory datasets.
 *
 * Seeded shuffling each epoch, mini-batches (the last one may be smaller),
 * forward, cross-entropy, backward, optimiser step; optional evaluation of a
 * test set after each epoch.  Trusted code: no I/O; progress goes to a
 * callback.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    uint32_t *idx = malloc(train->count * sizeof(uint32_t));
    uint8_t *labels = malloc((size_t)opts->batch);
    st = eml_optim_new(cfg, net, &opt);
    if (idx == NULL || labels == NULL || st != EML_OK) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opts->init_params) eml_net_init_params(net, opts->seed);
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
            eml_optim_step(opt, eml_lr_at(cfg, opts->lr, step, total), n);
            step++;
            seen += n;
            total_seen += n;
            correct += right;
            if (opts->progress != NULL) {
                eml_train_progress p;
                memset(&p, 0, sizeof(p));
                double el = now_seconds() - t_epoch;
                p.epoch = epoch;
                p.epochs = opts->epochs;
                p.batch = bi + 1;
                p.batches = batches;
                p.loss = loss_sum / (double)seen;
                p.images_per_second = el > 0 ? (double)seen / el : 0;
                p.seconds = t_train + el;
                p.eta_seconds = (double)(total - step) * (p.seconds / (double)step);
                opts->progress(opts->progress_user, &p);
            }
        }
        double el = now_seconds() - t_epoch;
        t_train += el;
        res->epochs = epoch;
        res->train_loss = loss_sum / (double)(seen ? seen : 1);
        res->train_accuracy = (double)correct / (double)(seen ? seen : 1);
        res->images_per_second = el > 0 ? (double)seen / el : 0;
        int last = epoch == opts->epochs || step >= total;
        if (test != NULL && test->count > 0 && (opts->eval_each_epoch || last)) {
            st = eml_evaluate(net, test, &res->test_loss, &res->test_accuracy,
                              err);
            if (st != EML_OK) goto out;
        }
        if (opts->progress != NULL) {
            eml_train_progress p;
            memset(&p, 0, sizeof(p));
            p.epoch = epoch;
            p.epochs = opts->epochs;
            p.batch = p.batches = batches;
            p.loss = res->train_loss;
            p.images_per_second = res->images_per_second;
            p.seconds = t_train;
            p.eta_seconds = (double)(total - step) * (t_train / (double)step);
            p.epoch_done = 1;
            p.test_accuracy = res->test_accuracy;
            p.train_accuracy = res->train_accuracy;
            opts->progress(opts->progress_user, &p);
        }
    }
    res->steps = step;
    res->seconds = t_train;
    res->images_per_second = t_train > 0 ? (double)total_seen / t_train : 0;
out:
    eml_optim_free(opt);
    free(idx);
    free(labels);
    return st;
}
