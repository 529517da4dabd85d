/*
 * run_state.c - the training state a mirror saves and a resume restores:
 * where the loop is (epoch, step, running sums), the parameters, the
 * optimiser's moments, the weight average, the batch source's order and
 * generator, and for DP-SGD the CSPRNG and the accountant.  Also the two
 * digests a mirror is bound to (the run's options, its data).
 *
 * Trusted code.  The state travels only sealed (mirror.c) and is read back
 * by the same program, so the scalars keep their native layout.
 */
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

#define STATE_MAGIC 0x31544154534c4d45ULL /* "EMLSTAT1" */

static void add_seg(eml_run_state *rs, void *p, size_t n)
{
    if (p == NULL || n == 0) return;
    rs->segs[rs->nseg].p = p;
    rs->segs[rs->nseg].n = n;
    rs->nseg++;
}

void eml_run_state_layout(eml_run_state *rs, eml_net *net, eml_optim *opt,
                          eml_ema *avg, eml_batch_source *src,
                          eml_grad_step *step)
{
    memset(rs, 0, sizeof(*rs));
    rs->net = net;
    rs->opt = opt;
    rs->avg = avg;
    rs->src = src;
    rs->step = step;
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
    if (src->order_saved)
        add_seg(rs, src->order, src->count * sizeof(uint32_t));
    if (step->csprng != NULL) {
        size_t k;
        void *p = eml_csprng_state(step->csprng, &k);
        add_seg(rs, p, k);
    }
}

eml_status eml_run_state_save(eml_run_state *rs, eml_mirror *mirror,
                              const eml_loop_pos *lp, eml_err *err)
{
    eml_run_scalars *s = &rs->sc;
    const eml_dp_accountant *acc = rs->step->acc;
    float *m, *v;
    size_t n;
    long *t;
    eml_optim_state(rs->opt, &m, &v, &n, &t);
    memset(s, 0, sizeof(*s));
    s->magic = STATE_MAGIC;
    s->n_params = eml_net_param_count(rs->net);
    s->count = rs->src->count;
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
    s->t_epoch = eml_now_seconds() - lp->t_epoch0;
    if (rs->src->has_rng)
        memcpy(s->shuffle_rng, rs->src->rng.s, sizeof(s->shuffle_rng));
    memcpy(s->net_rng, eml_net_rng(rs->net)->s, sizeof(s->net_rng));
    s->optim_t = *t;
    s->ema_t = rs->avg->t;
    if (acc != NULL) {
        s->acc_steps = acc->steps;
        memcpy(s->acc_rdp, acc->rdp, sizeof(s->acc_rdp));
    }
    eml_status st = eml_mirror_save(mirror, rs->segs, rs->nseg, err);
    memset(s, 0, sizeof(*s));
    return st;
}

eml_status eml_run_state_load(eml_run_state *rs, eml_mirror *mirror,
                              eml_loop_pos *lp, int *found, eml_err *err)
{
    eml_dp_accountant *acc = rs->step->acc;
    *found = 0;
    eml_status st = eml_mirror_load(mirror, rs->segs, rs->nseg, found, err);
    if (st != EML_OK || !*found) return st;
    const eml_run_scalars *s = &rs->sc;
    if (s->magic != STATE_MAGIC ||
        s->n_params != eml_net_param_count(rs->net) ||
        s->count != rs->src->count || s->dp != (acc != NULL) ||
        s->epoch < 1 || s->bi < 0 || s->step < 0 || s->step > s->total ||
        s->total != lp->total || s->acc_steps < 0)
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
    lp->t_epoch0 = eml_now_seconds() - s->t_epoch;
    if (rs->src->has_rng)
        memcpy(rs->src->rng.s, s->shuffle_rng, sizeof(s->shuffle_rng));
    memcpy(eml_net_rng(rs->net)->s, s->net_rng, sizeof(s->net_rng));
    eml_net_params_changed(rs->net);
    float *m, *v;
    size_t n;
    long *t;
    eml_optim_state(rs->opt, &m, &v, &n, &t);
    *t = (long)s->optim_t;
    rs->avg->t = (long)s->ema_t;
    if (acc != NULL) {
        eml_dp_accountant_init(acc);
        acc->steps = (long)s->acc_steps;
        memcpy(acc->rdp, s->acc_rdp, sizeof(acc->rdp));
    }
    return EML_OK;
}

eml_status eml_train_run_digest(uint8_t out[32], const uint8_t *cfg_text,
                                size_t cfg_len, const eml_train_opts *o)
{
    static const char label[] = "enclaveml run v1";
    eml_sha256_ctx *h = NULL;
    eml_status st = eml_sha256_new(&h);
    const eml_run_spec *r = &o->run;
    double v[12] = {(double)r->epochs, (double)r->batch, (double)(float)r->lr,
                    (double)(r->seed >> 32), (double)(r->seed & 0xffffffffu),
                    (double)o->init_params, (double)r->dp.enabled,
                    r->dp.clip, r->dp.noise, r->dp.delta,
                    r->dp.target_epsilon,
                    (double)(r->dp.fixed_batches * 2 + r->dp.insecure_seed)};
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
