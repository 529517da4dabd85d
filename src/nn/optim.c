/*
 * optim.c - SGD with momentum and weight decay (Darknet's update), Adam,
 * and the learning-rate policies.  Works on the net's one parameter buffer
 * and one gradient buffer; weight decay applies to weights, not biases.
 * Trusted code: no I/O.  The optimiser owns its state buffers.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/train.h"

#define EML_PI 3.14159265358979323846

struct eml_optim {
    eml_net *net;
    eml_optimizer kind;
    float momentum, decay, b1, b2, eps;
    size_t n;
    float *m; /* SGD velocity or Adam first moment */
    float *v; /* Adam second moment */
    uint8_t *decays; /* 1 where weight decay applies */
    long t;
};

eml_status eml_optim_new(const eml_netcfg *cfg, eml_net *net, eml_optim **out)
{
    *out = NULL;
    eml_optim *o = calloc(1, sizeof(*o));
    if (o == NULL) return EML_ERR_NOMEM;
    o->net = net;
    o->kind = cfg->optimizer;
    o->momentum = cfg->momentum;
    o->decay = cfg->decay;
    o->b1 = cfg->adam_b1;
    o->b2 = cfg->adam_b2;
    o->eps = cfg->adam_eps;
    o->n = eml_net_param_count(net);
    size_t n = o->n ? o->n : 1;
    o->m = calloc(n, sizeof(float));
    o->v = o->kind == EML_OPT_ADAM ? calloc(n, sizeof(float)) : NULL;
    o->decays = calloc(n, 1);
    if (o->m == NULL || o->decays == NULL ||
        (o->kind == EML_OPT_ADAM && o->v == NULL)) {
        eml_optim_free(o);
        return EML_ERR_NOMEM;
    }
    for (size_t i = 0; i < eml_net_tensor_count(net); i++) {
        const eml_net_tensor *t = eml_net_tensor_get(net, i);
        if (t->is_weight) memset(o->decays + t->offset, 1, t->count);
    }
    *out = o;
    return EML_OK;
}

void eml_optim_state(eml_optim *o, float **m, float **v, size_t *n,
                     long **t)
{
    *m = o->m;
    *v = o->v;
    *n = o->n;
    *t = &o->t;
}

void eml_optim_free(eml_optim *o)
{
    if (o == NULL) return;
    /* Moments are derived from the (confidential) gradients. */
    if (o->m != NULL) eml_wipe(o->m, o->n * sizeof(float));
    if (o->v != NULL) eml_wipe(o->v, o->n * sizeof(float));
    free(o->m);
    free(o->v);
    free(o->decays);
    free(o);
}

float eml_lr_at(const eml_netcfg *cfg, float base_lr, long t, long total)
{
    /* Darknet's burn-in: a warm-up of the first burn_in steps, power 4. */
    if (cfg->burn_in > 0 && t < cfg->burn_in)
        return base_lr * powf((float)t / (float)cfg->burn_in, 4.0f);
    switch (cfg->policy) {
    case EML_LR_STEPS: {
        float lr = base_lr;
        for (int i = 0; i < cfg->n_steps; i++)
            if (t >= cfg->steps[i]) lr *= cfg->scales[i];
        return lr;
    }
    case EML_LR_COSINE: {
        if (total <= 1) return base_lr;
        double frac = (double)t / (double)(total - 1);
        if (frac > 1) frac = 1;
        return cfg->lr_min + (base_lr - cfg->lr_min) * 0.5f *
                                 (float)(1.0 + cos(EML_PI * frac));
    }
    case EML_LR_POLY: {
        if (total <= 0) return base_lr;
        double frac = (double)t / (double)total;
        if (frac > 1) frac = 1;
        return base_lr * (float)pow(1.0 - frac, (double)cfg->power);
    }
    default:
        return base_lr;
    }
}

void eml_optim_step(eml_optim *o, float lr, float n)
{
    float *w = eml_net_params(o->net);
    const float *g = eml_net_grads(o->net);
    float inv_n = 1.0f / (n > 0 ? n : 1.0f);
    float decay = o->decay;
    size_t count = o->n;
    o->t++;
    eml_net_params_changed(o->net);
    if (o->kind == EML_OPT_ADAM) {
        float b1 = o->b1, b2 = o->b2, eps = o->eps;
        float c1 = 1.0f / (1.0f - powf(b1, (float)o->t));
        float c2 = 1.0f / (1.0f - powf(b2, (float)o->t));
        float *m = o->m, *v = o->v;
#pragma omp parallel for schedule(static) if (count > 65536)
        for (size_t i = 0; i < count; i++) {
            float gi = g[i] * inv_n + (o->decays[i] ? decay * w[i] : 0.0f);
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            w[i] -= lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
        }
    } else {
        float mom = o->momentum;
        float *m = o->m;
#pragma omp parallel for schedule(static) if (count > 65536)
        for (size_t i = 0; i < count; i++) {
            float gi = g[i] * inv_n + (o->decays[i] ? decay * w[i] : 0.0f);
            m[i] = mom * m[i] - lr * gi;
            w[i] += m[i];
        }
    }
}
