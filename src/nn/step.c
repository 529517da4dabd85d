/*
 * step.c - gradient steps: what one training step computes from the
 * examples its batch source picked, into the gradient buffer the
 * optimiser reads.
 *
 *   plain  forward, cross-entropy, backward: the gradient sum over the
 *          batch, divided by its size.
 *   DP     DP-SGD (Abadi et al. 2016): every example's gradient clipped to
 *          L2 norm C, summed in chunks of the net's batch size, snapped to
 *          the noise grid, plus discrete Gaussian noise of standard
 *          deviation sigma * C (dp.h), divided by the expected batch size;
 *          the accountant charged once per step, and a step that would pass
 *          the target epsilon never taken.
 *
 * Trusted code: the clipped sum is wiped when freed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

/* ==== plain ==== */

static eml_status plain_compute(eml_grad_step *g, const eml_dataset *d,
                                const eml_feat_cache *fc, const uint32_t *idx,
                                size_t m, long step, double *loss_sum,
                                long *correct, float *divisor, eml_err *err)
{
    int n = (int)m, right = 0;
    g->aug.step = step;
    eml_status st = eml_batch_forward(g->net, d, fc, idx, 0, n, g->labels, 1,
                                      &g->aug);
    if (st == EML_OK) st = eml_net_loss(g->net, n, g->labels, loss_sum, &right);
    if (st == EML_OK) st = eml_net_backward(g->net, n, NULL);
    if (st != EML_OK)
        return eml_err_set(err, st, "training step %ld failed: %s", step,
                           eml_status_str(st));
    *correct += right;
    *divisor = (float)n;
    return EML_OK;
}

static const eml_grad_ops plain_ops = {NULL, plain_compute, NULL};

eml_status eml_grad_plain(eml_grad_step *g, eml_net *net, int batch,
                          eml_err *err)
{
    memset(g, 0, sizeof(*g));
    g->ops = &plain_ops;
    g->net = net;
    g->labels = malloc((size_t)batch);
    if (g->labels == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    return EML_OK;
}

/* ==== DP-SGD ==== */

static eml_status dp_before(eml_grad_step *g, int *stop, eml_err *err)
{
    *stop = 0;
    if (!(g->dp.target_epsilon > 0)) return EML_OK;
    double eps_next, ord;
    eml_status st = eml_dp_accountant_epsilon_after(
        &g->accountant, g->q, g->sigma_acc, 1, g->dp.delta, &eps_next, &ord,
        err);
    if (st != EML_OK) return st;
    if (eps_next > g->dp.target_epsilon) {
        g->stopped_early = 1;
        *stop = 1;
    }
    return EML_OK;
}

/* The clipped per-example gradients of sel[0..m), summed into g->sum. */
static eml_status clipped_sum(eml_grad_step *g, const eml_dataset *d,
                              const eml_feat_cache *fc, const uint32_t *sel,
                              size_t m, double *loss_sum, long *correct)
{
    eml_net *net = g->net;
    int mb = eml_net_max_batch(net);
    memset(g->sum, 0, g->n_params * sizeof(float));
    for (size_t first = 0; first < m; first += (size_t)mb) {
        int n = (int)(m - first < (size_t)mb ? m - first : (size_t)mb);
        int right = 0;
        eml_status st = eml_batch_forward(net, d, fc, sel, first, n,
                                          g->labels, 1, &g->aug);
        if (st == EML_OK)
            st = eml_net_loss(net, n, g->labels, loss_sum, &right);
        if (st == EML_OK) st = eml_net_example_norms(net, n, g->sq);
        if (st != EML_OK) return st;
        /* Flat clipping: scale example b by min(1, C / |g_b|).  Each
         * layer's gradient is linear in its deltas, so the clipped sum
         * comes from what the norms' pass left, without a second backward
         * pass. */
        for (int b = 0; b < n; b++) {
            double norm = sqrt((double)g->sq[b]);
            g->scale[b] = norm > g->dp.clip ? (float)(g->dp.clip / norm)
                                            : 1.0f;
        }
        st = eml_net_clipped_grads(net, n, g->scale);
        if (st != EML_OK) return st;
        const float *gr = eml_net_grads(net);
        for (size_t i = 0; i < g->n_params; i++) g->sum[i] += gr[i];
        *correct += right;
    }
    return EML_OK;
}

static eml_status dp_compute(eml_grad_step *g, const eml_dataset *d,
                             const eml_feat_cache *fc, const uint32_t *idx,
                             size_t m, long step, double *loss_sum,
                             long *correct, float *divisor, eml_err *err)
{
    g->aug.step = step;
    eml_status st = clipped_sum(g, d, fc, idx, m, loss_sum, correct);
    if (st != EML_OK)
        return eml_err_set(err, st, "DP training step %ld failed: %s", step,
                           eml_status_str(st));
    st = eml_dp_gaussian_fill(g->csprng, g->noise, g->n_params,
                              g->dp.noise * g->dp.clip);
    if (st != EML_OK)
        return eml_err_set(err, st, "noise generation failed");
    /* Snap the clipped sum to the noise grid, then add the noise: the
     * double sum is exactly on the grid (free of floating-point artefacts);
     * rounding it to float is post-processing. */
    float *gr = eml_net_grads(g->net);
    if (g->grid > 0)
        for (size_t i = 0; i < g->n_params; i++)
            gr[i] = (float)(rint((double)g->sum[i] / g->grid) * g->grid +
                            (double)g->noise[i]);
    else
        for (size_t i = 0; i < g->n_params; i++) gr[i] = g->sum[i];
    *divisor = (float)g->expected;
    return EML_OK;
}

static eml_status dp_after(eml_grad_step *g, eml_err *err)
{
    return eml_dp_accountant_add(&g->accountant, g->q, g->sigma_acc, 1, err);
}

static const eml_grad_ops dp_ops = {dp_before, dp_compute, dp_after};

eml_status eml_grad_dp(eml_grad_step *g, eml_net *net, const eml_dp_opts *dp,
                       double q, size_t count, uint64_t seed, eml_err *err)
{
    memset(g, 0, sizeof(*g));
    eml_status st = eml_dp_opts_check(dp, err);
    if (st != EML_OK) return st;
    g->ops = &dp_ops;
    g->net = net;
    g->dp = *dp;
    g->n_params = eml_net_param_count(net);
    size_t mb = (size_t)eml_net_max_batch(net);
    g->sum = malloc(g->n_params * sizeof(float));
    g->noise = malloc(g->n_params * sizeof(float));
    g->sq = malloc(mb * sizeof(float));
    g->scale = malloc(mb * sizeof(float));
    g->labels = malloc(mb);
    if (g->sum == NULL || g->noise == NULL || g->sq == NULL ||
        g->scale == NULL || g->labels == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    st = dp->insecure_seed ? eml_csprng_new_seeded(seed, &g->csprng, err)
                           : eml_csprng_new(&g->csprng, err);
    if (st != EML_OK) return st;
    eml_dp_accountant_init(&g->accountant);
    g->acc = &g->accountant;
    g->q = q;
    g->grid = dp->noise > 0 ? eml_dp_noise_grid(dp->noise * dp->clip) : 0;
    g->sigma_acc = eml_dp_effective_noise(dp->noise, dp->clip, g->n_params);
    g->expected = q * (double)count;
    return EML_OK;
}

eml_status eml_grad_epsilon(const eml_grad_step *g, double *eps,
                            double *order, eml_err *err)
{
    return eml_dp_accountant_epsilon(&g->accountant, g->dp.delta, eps, order,
                                     err);
}

void eml_grad_free(eml_grad_step *g)
{
    eml_csprng_free(g->csprng);
    if (g->sum != NULL) eml_wipe(g->sum, g->n_params * sizeof(float));
    free(g->sum);
    free(g->noise);
    free(g->sq);
    free(g->scale);
    free(g->labels);
    memset(g, 0, sizeof(*g));
}
