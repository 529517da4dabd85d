/*
 * batch.c - batch sources: which training examples each step sees.
 *
 *   shuffled   every example once per epoch, in an order shuffled afresh
 *              each epoch by a seeded generator (plain training);
 *   permuted   the same with a CSPRNG permutation and the planned number
 *              of steps (DP-SGD with --dp-fixed-batches);
 *   Poisson    each example joins each step with probability q, drawn
 *              from the CSPRNG (DP-SGD, what the accountant assumes).
 *
 * Poisson sampling makes no passes, so a DP epoch e is the steps
 * [end(e-1), end(e)) with end(e) = round(e * planned / epochs): a run of E
 * epochs shows E of them (7 or 8 steps each for 60,000 images in batches
 * of 8192, rather than 8 and too few epochs).
 *
 * Trusted code.  The trainer (train.c) saves a source's order and
 * generator with the training state.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

static eml_status source_init(eml_batch_source *s, size_t count, int batch,
                              int epochs)
{
    memset(s, 0, sizeof(*s));
    s->count = count;
    s->batch = batch;
    s->epochs = epochs;
    s->per_epoch = (long)((count + (size_t)batch - 1) / (size_t)batch);
    s->order = malloc((count ? count : 1) * sizeof(uint32_t));
    return s->order != NULL ? EML_OK : EML_ERR_NOMEM;
}

/* Steps [first, first + batch) of the order, the last one maybe short. */
static void slice(eml_batch_source *s, long bi, const uint32_t **idx,
                  size_t *m)
{
    size_t first = (size_t)bi * (size_t)s->batch;
    *m = s->count - first < (size_t)s->batch ? s->count - first
                                             : (size_t)s->batch;
    *idx = s->order + first;
}

/* ==== shuffled ==== */

static long shuffled_len(const eml_batch_source *s, int epoch)
{
    (void)epoch;
    return s->per_epoch;
}

static void shuffled_start(eml_batch_source *s)
{
    eml_rng_shuffle(&s->rng, s->order, s->count);
}

static const eml_batch_ops shuffled_ops = {shuffled_len, shuffled_start,
                                           slice};

eml_status eml_batch_shuffled(eml_batch_source *s, size_t count, int batch,
                              int epochs, long max_steps, uint64_t seed)
{
    eml_status st = source_init(s, count, batch, epochs);
    if (st != EML_OK) return st;
    s->ops = &shuffled_ops;
    for (size_t i = 0; i < count; i++) s->order[i] = (uint32_t)i;
    eml_rng_seed(&s->rng, seed ^ 0x5851f42d4c957f2dULL);
    s->has_rng = 1;
    s->order_saved = 1;
    s->planned = s->per_epoch * epochs;
    s->total = max_steps > 0 && max_steps < s->planned ? max_steps
                                                       : s->planned;
    return EML_OK;
}

/* ==== DP: permuted and Poisson ==== */

static long dp_epoch_end(const eml_batch_source *s, int e)
{
    int fixed = s->order_saved;
    if (fixed) return (long)e * s->per_epoch;
    if (e >= s->plan_epochs)
        return s->planned + (long)(e - s->plan_epochs) * s->per_epoch;
    return (long)floor((double)s->planned * e / s->plan_epochs + 0.5);
}

static long dp_len(const eml_batch_source *s, int epoch)
{
    return dp_epoch_end(s, epoch) - dp_epoch_end(s, epoch - 1);
}

static void permuted_start(eml_batch_source *s)
{
    for (size_t i = 0; i < s->count; i++) s->order[i] = (uint32_t)i;
    for (size_t i = s->count; i > 1; i--) {
        uint64_t r;
        eml_csprng_bytes(s->csprng, &r, sizeof(r));
        /* rejection keeps the permutation unbiased */
        uint64_t lim = UINT64_MAX - UINT64_MAX % i;
        while (r >= lim) eml_csprng_bytes(s->csprng, &r, sizeof(r));
        size_t j = (size_t)(r % i);
        uint32_t t = s->order[i - 1];
        s->order[i - 1] = s->order[j];
        s->order[j] = t;
    }
}

static void poisson_start(eml_batch_source *s)
{
    (void)s;
}

static void poisson_batch(eml_batch_source *s, long bi, const uint32_t **idx,
                          size_t *m)
{
    (void)bi;
    size_t k = 0;
    for (size_t i = 0; i < s->count; i++)
        if (eml_dp_bernoulli(s->csprng, s->q)) s->order[k++] = (uint32_t)i;
    *idx = s->order;
    *m = k;
}

static const eml_batch_ops permuted_ops = {dp_len, permuted_start, slice};
static const eml_batch_ops poisson_ops = {dp_len, poisson_start,
                                          poisson_batch};

eml_status eml_batch_dp(eml_batch_source *s, size_t count, int batch,
                        int epochs, long max_steps, int fixed,
                        eml_csprng *rng)
{
    eml_status st = source_init(s, count, batch, epochs);
    if (st != EML_OK) return st;
    s->ops = fixed ? &permuted_ops : &poisson_ops;
    s->order_saved = fixed;
    s->csprng = rng;
    s->plan_epochs = epochs;
    s->per_epoch = (long)ceil((double)count / (double)batch);
    eml_dp_plan(count, batch, epochs, &s->q, &s->planned);
    s->total = max_steps > 0 && max_steps < s->planned ? max_steps
                                                       : s->planned;
    int n = 1;
    while (dp_epoch_end(s, n) < s->total) n++;
    s->epochs = n;
    return EML_OK;
}

void eml_batch_free(eml_batch_source *s)
{
    if (s->order != NULL) {
        eml_wipe(s->order, s->count * sizeof(uint32_t));
        free(s->order);
    }
    memset(s, 0, sizeof(*s));
}
