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
#include "enclaveml/mirror.h"
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

/* ==== fixed features ==== */

/* The outputs of the net's fixed leading layers ([scattering]) for every
 * image of a dataset, computed once: later passes start after them. */
typedef struct feat_cache {
    float *f;     /* count x dim, NULL when the net has no fixed layers */
    size_t dim, count;
    int layers;
} feat_cache;

static void feat_free(feat_cache *c)
{
    if (c->f != NULL) {
        /* derived from the (confidential) images */
        eml_wipe(c->f, c->count * c->dim * sizeof(float));
        free(c->f);
    }
    memset(c, 0, sizeof(*c));
}

static eml_status feat_build(eml_net *net, const eml_dataset *d,
                             feat_cache *c, eml_err *err)
{
    memset(c, 0, sizeof(*c));
    c->layers = eml_net_fixed_layers(net);
    if (c->layers == 0 || d == NULL || d->count == 0) return EML_OK;
    c->dim = eml_net_layer_output_size(net, c->layers - 1);
    c->count = d->count;
    if (c->dim > SIZE_MAX / sizeof(float) / d->count)
        return eml_err_set(err, EML_ERR_RANGE, "features too large");
    int mb = eml_net_max_batch(net);
    c->f = malloc(d->count * c->dim * sizeof(float));
    uint8_t *labels = malloc((size_t)mb);
    if (c->f == NULL || labels == NULL) {
        free(labels);
        free(c->f);
        c->f = NULL;
        return eml_err_set(err, EML_ERR_NOMEM,
                           "out of memory for the features of %zu images "
                           "(%zu MB)",
                           d->count,
                           d->count * c->dim * sizeof(float) >> 20);
    }
    eml_status st = EML_OK;
    for (size_t first = 0; first < d->count && st == EML_OK;
         first += (size_t)mb) {
        int n = (int)(d->count - first < (size_t)mb ? d->count - first
                                                    : (size_t)mb);
        eml_load_batch(net, d, NULL, first, n, labels);
        st = eml_net_forward_range(net, 0, c->layers, n, 0);
        if (st == EML_OK)
            memcpy(c->f + first * c->dim,
                   eml_net_layer_output(net, c->layers - 1),
                   (size_t)n * c->dim * sizeof(float));
    }
    free(labels);
    if (st != EML_OK) {
        feat_free(c);
        return eml_err_set(err, st, "feature extraction failed");
    }
    return EML_OK;
}

/* Loads examples [first, first+n) (through idx) and runs the forward
 * pass: from the cached features when there are any. */
static eml_status batch_forward(eml_net *net, const eml_dataset *d,
                                const feat_cache *c, const uint32_t *idx,
                                size_t first, int n, uint8_t *labels,
                                int train)
{
    if (c == NULL || c->f == NULL) {
        eml_load_batch(net, d, idx, first, n, labels);
        return eml_net_forward(net, n, train);
    }
    float *x = eml_net_layer_output(net, c->layers - 1);
    for (int b = 0; b < n; b++) {
        size_t j = idx != NULL ? idx[first + (size_t)b] : first + (size_t)b;
        memcpy(x + (size_t)b * c->dim, c->f + j * c->dim,
               c->dim * sizeof(float));
        labels[b] = d->labels[j];
    }
    return eml_net_forward_range(net, c->layers, eml_net_n_layers(net), n,
                                 train);
}

static eml_status evaluate(eml_net *net, const eml_dataset *d,
                           const feat_cache *c, double *loss,
                           double *accuracy, eml_err *err);

eml_status eml_evaluate(eml_net *net, const eml_dataset *d, double *loss,
                        double *accuracy, eml_err *err)
{
    return evaluate(net, d, NULL, loss, accuracy, err);
}

static eml_status evaluate(eml_net *net, const eml_dataset *d,
                           const feat_cache *c, double *loss,
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
        st = batch_forward(net, d, c, NULL, first, n, labels, 0);
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
                             const feat_cache *c, eml_train_result *res,
                             eml_err *err)
{
    ema_swap(a, net);
    eml_status st = evaluate(net, test, c, &res->test_loss,
                             &res->test_accuracy, err);
    ema_swap(a, net);
    return st;
}

/* ==== the training state, for mirrors ==== */

/* Where a training loop is: everything besides the big buffers. */
typedef struct loop_pos {
    int epoch;           /* 1-based */
    long bi;             /* next batch within the epoch */
    long step, total, seen, correct, total_seen;
    double loss_sum;     /* this epoch */
    double t_train;      /* finished epochs' seconds */
    double t_epoch0;     /* when this epoch started (clock) */
} loop_pos;

#define STATE_MAGIC 0x31544154534c4d45ULL /* "EMLSTAT1" */

/* The scalars of a saved state (first segment), native layout: the state
 * only ever travels sealed and is read back by the same program. */
typedef struct run_scalars {
    uint64_t magic, n_params, count, dp;
    int64_t epoch, bi, step, total, seen, correct, total_seen;
    double loss_sum, t_train, t_epoch;
    uint64_t shuffle_rng[4], net_rng[4];
    int64_t optim_t, ema_t, acc_steps;
    double acc_rdp[EML_DP_N_ORDERS];
} run_scalars;

typedef struct run_state {
    run_scalars sc;
    eml_seg segs[8];
    int nseg;
} run_state;

static void add_seg(run_state *rs, void *p, size_t n)
{
    if (p == NULL || n == 0) return;
    rs->segs[rs->nseg].p = p;
    rs->segs[rs->nseg].n = n;
    rs->nseg++;
}

/* The state is: scalars | parameters | optimiser moments | weight average
 * | data order (perm, if the loop keeps one) | CSPRNG (DP). */
static void run_state_layout(run_state *rs, eml_net *net, eml_optim *opt,
                             ema *avg, uint32_t *perm, size_t count,
                             eml_csprng *rng)
{
    memset(rs, 0, sizeof(*rs));
    float *m, *v;
    size_t n;
    long *t;
    eml_optim_state(opt, &m, &v, &n, &t);
    size_t np = eml_net_param_count(net);
    add_seg(rs, &rs->sc, sizeof(rs->sc));
    add_seg(rs, eml_net_params(net), np * sizeof(float));
    add_seg(rs, m, n * sizeof(float));
    add_seg(rs, v, n * sizeof(float));
    add_seg(rs, avg->avg, np * sizeof(float));
    add_seg(rs, perm, count * sizeof(uint32_t));
    if (rng != NULL) {
        size_t k;
        void *p = eml_csprng_state(rng, &k);
        add_seg(rs, p, k);
    }
}

static eml_status mirror_save(run_state *rs, const eml_train_opts *o,
                              const loop_pos *lp, eml_net *net,
                              eml_optim *opt, const ema *avg,
                              const eml_rng *shuffle,
                              const eml_dp_accountant *acc, size_t count,
                              eml_train_result *res, eml_err *err)
{
    double t0 = now_seconds();
    run_scalars *s = &rs->sc;
    float *m, *v;
    size_t n;
    long *t;
    eml_optim_state(opt, &m, &v, &n, &t);
    memset(s, 0, sizeof(*s));
    s->magic = STATE_MAGIC;
    s->n_params = eml_net_param_count(net);
    s->count = count;
    s->dp = acc != NULL;
    s->epoch = lp->epoch;
    s->bi = lp->bi;
    s->step = lp->step;
    s->total = lp->total;
    s->seen = lp->seen;
    s->correct = lp->correct;
    s->total_seen = lp->total_seen;
    s->loss_sum = lp->loss_sum;
    s->t_train = lp->t_train;
    s->t_epoch = t0 - lp->t_epoch0;
    if (shuffle != NULL) memcpy(s->shuffle_rng, shuffle->s, sizeof(shuffle->s));
    memcpy(s->net_rng, eml_net_rng(net)->s, sizeof(s->net_rng));
    s->optim_t = *t;
    s->ema_t = avg->t;
    if (acc != NULL) {
        s->acc_steps = acc->steps;
        memcpy(s->acc_rdp, acc->rdp, sizeof(s->acc_rdp));
    }
    eml_status st = eml_mirror_save(o->mirror, rs->segs, rs->nseg, err);
    memset(s, 0, sizeof(*s));
    if (st == EML_OK) res->mirror_saves++;
    res->mirror_seconds += now_seconds() - t0;
    return st;
}

/* The run starts (or continues): opts->on_start has the last word. */
static eml_status run_starts(const eml_train_opts *o, int resumed,
                             eml_err *err)
{
    return o->on_start != NULL ? o->on_start(o->on_start_user, resumed, err)
                               : EML_OK;
}

/* Loads the mirror's newest state, if resuming and there is one; tells the
 * progress callback either way.  res->resumed_step is -1 otherwise.  Then
 * run_starts(). */
static eml_status mirror_resume(run_state *rs, const eml_train_opts *o,
                                loop_pos *lp, eml_net *net, eml_optim *opt,
                                ema *avg, eml_rng *shuffle,
                                eml_dp_accountant *acc, size_t count,
                                eml_train_result *res, eml_err *err)
{
    res->resumed_step = -1;
    if (o->mirror == NULL || !o->resume) return run_starts(o, 0, err);
    int found = 0;
    eml_status st = eml_mirror_load(o->mirror, rs->segs, rs->nseg, &found,
                                    err);
    if (st != EML_OK) return st;
    const run_scalars *s = &rs->sc;
    if (found) {
        if (s->magic != STATE_MAGIC ||
            s->n_params != eml_net_param_count(net) || s->count != count ||
            s->dp != (acc != NULL) || s->epoch < 1 || s->bi < 0 ||
            s->step < 0 || s->step > s->total || s->total != lp->total ||
            s->acc_steps < 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "the mirror's state does not fit this run");
        lp->epoch = (int)s->epoch;
        lp->bi = (long)s->bi;
        lp->step = (long)s->step;
        lp->seen = (long)s->seen;
        lp->correct = (long)s->correct;
        lp->total_seen = (long)s->total_seen;
        lp->loss_sum = s->loss_sum;
        lp->t_train = s->t_train;
        lp->t_epoch0 = now_seconds() - s->t_epoch;
        if (shuffle != NULL)
            memcpy(shuffle->s, s->shuffle_rng, sizeof(shuffle->s));
        memcpy(eml_net_rng(net)->s, s->net_rng, sizeof(s->net_rng));
        float *m, *v;
        size_t n;
        long *t;
        eml_optim_state(opt, &m, &v, &n, &t);
        *t = (long)s->optim_t;
        avg->t = (long)s->ema_t;
        if (acc != NULL) {
            eml_dp_accountant_init(acc);
            acc->steps = (long)s->acc_steps;
            memcpy(acc->rdp, s->acc_rdp, sizeof(acc->rdp));
        }
        res->resumed_step = lp->step;
    }
    if (o->progress != NULL) {
        eml_train_progress p;
        memset(&p, 0, sizeof(p));
        p.resume_event = 1;
        p.resumed_step = res->resumed_step;
        p.epoch = found ? lp->epoch : 1;
        p.batch = found ? lp->step : 0;
        p.batches = lp->total;
        o->progress(o->progress_user, &p);
    }
    return run_starts(o, found, err);
}

eml_status eml_train_run_digest(uint8_t out[32], const uint8_t *cfg_text,
                                size_t cfg_len, const eml_train_opts *o)
{
    static const char label[] = "enclaveml run v1";
    eml_sha256_ctx *h = NULL;
    eml_status st = eml_sha256_new(&h);
    double v[12] = {(double)o->epochs, (double)o->batch, (double)o->lr,
                    (double)(o->seed >> 32), (double)(o->seed & 0xffffffffu),
                    (double)o->init_params, (double)o->dp.enabled,
                    o->dp.clip, o->dp.noise, o->dp.delta,
                    o->dp.target_epsilon,
                    (double)(o->dp.fixed_batches * 2 + o->dp.insecure_seed)};
    uint64_t len = cfg_len;
    if (st == EML_OK) st = eml_sha256_update(h, label, sizeof(label) - 1);
    if (st == EML_OK) st = eml_sha256_update(h, &len, sizeof(len));
    if (st == EML_OK) st = eml_sha256_update(h, cfg_text, cfg_len);
    if (st == EML_OK) st = eml_sha256_update(h, v, sizeof(v));
    if (st == EML_OK) st = eml_sha256_final(h, out);
    eml_sha256_free(h);
    return st;
}

eml_status eml_dataset_digest(uint8_t out[32], const eml_dataset *train,
                              const eml_dataset *test)
{
    static const char label[] = "enclaveml data v1";
    eml_sha256_ctx *h = NULL;
    eml_status st = eml_sha256_new(&h);
    if (st == EML_OK) st = eml_sha256_update(h, label, sizeof(label) - 1);
    for (int k = 0; k < 2 && st == EML_OK; k++) {
        const eml_dataset *d = k == 0 ? train : test;
        uint64_t dims[2] = {d ? d->count : 0, d ? d->item : 0};
        st = eml_sha256_update(h, dims, sizeof(dims));
        if (st == EML_OK && d != NULL)
            st = eml_sha256_update(h, d->images, d->count * d->item);
        if (st == EML_OK && d != NULL)
            st = eml_sha256_update(h, d->labels, d->count);
    }
    if (st == EML_OK) st = eml_sha256_final(h, out);
    eml_sha256_free(h);
    return st;
}

/* ==== epochs, shared by both loops ==== */

/* Starts epoch `epoch`: 1 when it is the epoch a resumed run stopped in
 * (lp, the data order and the generators as restored: go on from lp->bi),
 * else 0 with the epoch's counters reset. */
static int epoch_begin(loop_pos *lp, int epoch, int resumed)
{
    if (resumed && epoch == lp->epoch) return 1;
    lp->epoch = epoch;
    lp->t_epoch0 = now_seconds();
    lp->loss_sum = 0;
    lp->seen = lp->correct = 0;
    return 0;
}

/* Ends an epoch: its results, the test set when asked (or last), and the
 * per-epoch progress line. */
static eml_status epoch_finish(eml_net *net, ema *avg,
                               const eml_dataset *test, const feat_cache *fc,
                               const eml_train_opts *opts, loop_pos *lp,
                               int epochs_n, long batches, int last,
                               eml_train_result *res, eml_err *err)
{
    double el = now_seconds() - lp->t_epoch0;
    lp->t_train += el;
    res->epochs = lp->epoch;
    res->train_loss = lp->loss_sum / (double)(lp->seen ? lp->seen : 1);
    res->train_accuracy =
        (double)lp->correct / (double)(lp->seen ? lp->seen : 1);
    if (test != NULL && test->count > 0 && (opts->eval_each_epoch || last)) {
        eml_status st = eval_epoch(net, avg, test, fc, res, err);
        if (st != EML_OK) return st;
    }
    report_epoch(opts, lp->epoch, epochs_n, batches, res,
                 el > 0 ? (double)lp->seen / el : 0, lp->t_train, lp->step,
                 lp->total);
    return EML_OK;
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
                          const feat_cache *fc, const uint32_t *sel,
                          size_t m, float *acc,
                          float *sq, float *scale, uint8_t *labels,
                          double clip, double *loss_sum, long *correct)
{
    size_t np = eml_net_param_count(net);
    int mb = eml_net_max_batch(net);
    memset(acc, 0, np * sizeof(float));
    for (size_t first = 0; first < m; first += (size_t)mb) {
        int n = (int)(m - first < (size_t)mb ? m - first : (size_t)mb);
        int right = 0;
        eml_status st = batch_forward(net, d, fc, sel, first, n, labels, 1);
        if (st == EML_OK) st = eml_net_loss(net, n, labels, loss_sum, &right);
        if (st == EML_OK) st = eml_net_example_norms(net, n, sq);
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

/* Epochs of a DP run.  Fixed batches: one pass over the data each.
 * Poisson sampling makes no passes, so epoch e is the steps [end(e-1),
 * end(e)) with end(e) = round(e * planned / epochs): a run of E epochs
 * shows E of them (7 or 8 steps each for 60,000 images in batches of
 * 8192, rather than 8 and too few epochs). */
typedef struct dp_epochs {
    int fixed;
    long per_epoch, planned;
    int epochs;
} dp_epochs;

static long dp_epoch_end(const dp_epochs *p, int e)
{
    if (p->fixed) return (long)e * p->per_epoch;
    if (e >= p->epochs) return p->planned + (long)(e - p->epochs) * p->per_epoch;
    return (long)floor((double)p->planned * e / p->epochs + 0.5);
}

static eml_status train_dp(eml_net *net, const eml_netcfg *cfg,
                           const eml_dataset *train, const eml_dataset *test,
                           const feat_cache *fc_train,
                           const feat_cache *fc_test,
                           const eml_train_opts *opts, eml_optim *opt,
                           ema *avg, eml_train_result *res, eml_err *err)
{
    const eml_dp_opts *dp = &opts->dp;
    eml_status st = check_dp(dp, err);
    if (st != EML_OK) return st;
    double q;
    long total;
    eml_dp_plan(train->count, opts->batch, opts->epochs, &q, &total);
    long planned = total;
    if (cfg->max_batches > 0 && cfg->max_batches < total)
        total = cfg->max_batches;
    long per_epoch = (long)ceil((double)train->count / (double)opts->batch);
    dp_epochs ep = {dp->fixed_batches, per_epoch, planned, opts->epochs};
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
    double expected = q * (double)train->count;
    loop_pos lp;
    memset(&lp, 0, sizeof(lp));
    lp.total = total;
    lp.epoch = 1;
    run_state rs;
    run_state_layout(&rs, net, opt, avg, dp->fixed_batches ? sel : NULL,
                     train->count, rng);
    st = mirror_resume(&rs, opts, &lp, net, opt, avg, NULL, &accnt,
                       train->count, res, err);
    if (st != EML_OK) goto out;
    int resumed = res->resumed_step >= 0;
    int epochs_n = 1;
    while (dp_epoch_end(&ep, epochs_n) < total) epochs_n++;
    for (int epoch = lp.epoch;
         lp.step < lp.total || (resumed && epoch == lp.epoch); epoch++) {
        long len = dp_epoch_end(&ep, epoch) - dp_epoch_end(&ep, epoch - 1);
        if (len <= 0 && !(resumed && epoch == lp.epoch)) continue;
        int cont = epoch_begin(&lp, epoch, resumed);
        long bi = cont ? lp.bi : 0;
        if (dp->fixed_batches && !cont) {
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
        int stopped = 0;
        for (; bi < len && lp.step < lp.total; bi++) {
            if (dp->target_epsilon > 0) {
                double eps_next, ord;
                st = eml_dp_accountant_epsilon_after(&accnt, q, sigma_acc, 1,
                                                     dp->delta, &eps_next,
                                                     &ord, err);
                if (st != EML_OK) goto out;
                if (eps_next > dp->target_epsilon) {
                    res->dp_stopped_early = 1;
                    lp.total = lp.step;
                    stopped = 1;
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
            st = dp_step(net, train, fc_train, batch, m, acc, sq, scale,
                         labels,
                         dp->clip, &lp.loss_sum, &lp.correct);
            if (st != EML_OK) {
                eml_err_set(err, st, "DP training step %ld failed: %s",
                            lp.step, eml_status_str(st));
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
            eml_optim_step(opt, eml_lr_at(cfg, opts->lr, lp.step, total),
                           (float)expected);
            ema_update(avg, net);
            st = eml_dp_accountant_add(&accnt, q, sigma_acc, 1, err);
            if (st != EML_OK) goto out;
            lp.step++;
            lp.seen += (long)m;
            lp.total_seen += (long)m;
            lp.bi = bi + 1;
            if (opts->mirror != NULL &&
                lp.step % eml_mirror_every(opts->mirror) == 0) {
                st = mirror_save(&rs, opts, &lp, net, opt, avg, NULL, &accnt,
                                 train->count, res, err);
                if (st != EML_OK) goto out;
            }
            report_step(opts, epoch, epochs_n, bi + 1, len,
                        lp.loss_sum, lp.seen, lp.t_epoch0, lp.t_train,
                        lp.step, lp.total);
        }
        int last = lp.step >= lp.total;
        st = epoch_finish(net, avg, test, fc_test, opts, &lp, epochs_n, len,
                          last, res, err);
        if (st != EML_OK) goto out;
        resumed = 0;
        if (stopped || last) break;
    }
    res->steps = lp.step;
    res->seconds = lp.t_train;
    res->images_per_second =
        lp.t_train > 0 ? (double)lp.total_seen / lp.t_train : 0;
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
    feat_cache fc_train, fc_test;
    memset(&fc_train, 0, sizeof(fc_train));
    memset(&fc_test, 0, sizeof(fc_test));
    uint32_t *idx = malloc(train->count * sizeof(uint32_t));
    uint8_t *labels = malloc((size_t)opts->batch);
    st = eml_optim_new(cfg, net, &opt);
    if (idx == NULL || labels == NULL || st != EML_OK) {
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opts->init_params) eml_net_init_params(net, opts->seed);
    /* Fixed features ([scattering]): once per image, before the first
     * step. */
    st = feat_build(net, train, &fc_train, err);
    if (st == EML_OK) st = feat_build(net, test, &fc_test, err);
    if (st != EML_OK) goto out;
    st = ema_init(&avg, cfg, net);
    if (st != EML_OK) {
        eml_err_set(err, st, "out of memory");
        goto out;
    }
    if (opts->dp.enabled) {
        st = train_dp(net, cfg, train, test, &fc_train, &fc_test, opts, opt,
                      &avg, res, err);
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
    loop_pos lp;
    memset(&lp, 0, sizeof(lp));
    lp.total = total;
    lp.epoch = 1;
    run_state rs;
    run_state_layout(&rs, net, opt, &avg, idx, train->count, NULL);
    st = mirror_resume(&rs, opts, &lp, net, opt, &avg, &rng, NULL,
                       train->count, res, err);
    if (st != EML_OK) goto out;
    int resumed = res->resumed_step >= 0;
    for (int epoch = lp.epoch;
         epoch <= opts->epochs &&
         (lp.step < total || (resumed && epoch == lp.epoch));
         epoch++) {
        int cont = epoch_begin(&lp, epoch, resumed);
        long bi = cont ? lp.bi : 0;
        if (!cont) eml_rng_shuffle(&rng, idx, train->count);
        for (; bi < batches && lp.step < total; bi++) {
            size_t first = (size_t)bi * (size_t)opts->batch;
            int n = (int)(train->count - first < (size_t)opts->batch
                              ? train->count - first
                              : (size_t)opts->batch);
            int right = 0;
            st = batch_forward(net, train, &fc_train, idx, first, n, labels,
                               1);
            if (st == EML_OK)
                st = eml_net_loss(net, n, labels, &lp.loss_sum, &right);
            if (st == EML_OK) st = eml_net_backward(net, n, NULL);
            if (st != EML_OK) {
                eml_err_set(err, st, "training step %ld failed: %s", lp.step,
                            eml_status_str(st));
                goto out;
            }
            eml_optim_step(opt, eml_lr_at(cfg, opts->lr, lp.step, total),
                           (float)n);
            ema_update(&avg, net);
            lp.step++;
            lp.seen += n;
            lp.total_seen += n;
            lp.correct += right;
            lp.bi = bi + 1;
            if (opts->mirror != NULL &&
                lp.step % eml_mirror_every(opts->mirror) == 0) {
                st = mirror_save(&rs, opts, &lp, net, opt, &avg, &rng, NULL,
                                 train->count, res, err);
                if (st != EML_OK) goto out;
            }
            report_step(opts, epoch, opts->epochs, bi + 1, batches,
                        lp.loss_sum, lp.seen, lp.t_epoch0, lp.t_train,
                        lp.step, total);
        }
        int last = epoch == opts->epochs || lp.step >= total;
        st = epoch_finish(net, &avg, test, &fc_test, opts, &lp, opts->epochs,
                          batches, last, res, err);
        if (st != EML_OK) goto out;
        resumed = 0;
    }
    res->steps = lp.step;
    res->seconds = lp.t_train;
    res->images_per_second =
        lp.t_train > 0 ? (double)lp.total_seen / lp.t_train : 0;
out:
    /* The model that leaves is the average, when there is one. */
    if (st == EML_OK) ema_swap(&avg, net);
    ema_free(&avg, net);
    feat_free(&fc_train);
    feat_free(&fc_test);
    eml_optim_free(opt);
    free(idx);
    free(labels);
    return st;
}
