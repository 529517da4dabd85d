/*
 * ema.c - an exponential moving average of the parameters (Polyak
 * averaging), the cfg's `ema`: updated after every step, swapped in for
 * evaluation and for the model that leaves.
 *
 * Trusted code: the average is as confidential as the weights and is
 * wiped when freed.
 */
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

eml_status eml_ema_init(eml_ema *a, const eml_netcfg *cfg, eml_net *net)
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

void eml_ema_update(eml_ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    a->t++;
    float d = (1.0f + (float)a->t) / (10.0f + (float)a->t);
    if (d > a->decay) d = a->decay;
    const float *w = eml_net_params(net);
    size_t n = eml_net_param_count(net);
    for (size_t i = 0; i < n; i++) a->avg[i] = d * a->avg[i] + (1 - d) * w[i];
}

void eml_ema_swap(eml_ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    float *w = eml_net_params(net);
    size_t n = eml_net_param_count(net);
    for (size_t i = 0; i < n; i++) {
        float t = w[i];
        w[i] = a->avg[i];
        a->avg[i] = t;
    }
    eml_net_params_changed(net);
}

void eml_ema_free(eml_ema *a, eml_net *net)
{
    if (a->avg == NULL) return;
    eml_wipe(a->avg, eml_net_param_count(net) * sizeof(float));
    free(a->avg);
    a->avg = NULL;
}
