/*
 * model.c - a loaded model and its workspaces, and prediction: the model
 * holds the parsed cfg and one inference net that owns the parameters;
 * each workspace is another inference net that borrows them, so requests
 * share one copy of the weights and never write to it.
 *
 * Trusted code: no I/O.  The parameters are the model owner's secret and
 * are wiped when the model is freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/model.h"

struct eml_model {
    eml_netcfg *cfg;
    eml_net *holder; /* owns the parameters; batch 1 */
    uint8_t sha256[32];
    float *calib;    /* the owner's calibration images, or NULL */
    size_t n_calib;
};

eml_status eml_model_load(const uint8_t *cfg_text, size_t cfg_len,
                          const char *cfg_name, const uint8_t *weights,
                          size_t wlen, const char *weights_name,
                          eml_model **out, eml_err *err)
{
    *out = NULL;
    eml_model *m = calloc(1, sizeof(*m));
    if (m == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_cfg_parse((const char *)cfg_text, cfg_len, cfg_name,
                                  &m->cfg, err);
    if (st == EML_OK) {
        eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1,
                          .inference = 1};
        st = eml_net_new(m->cfg, &o, &m->holder, err);
    }
    if (st == EML_OK)
        st = eml_weights_decode_calib(m->holder, weights, wlen, weights_name,
                                      &m->calib, &m->n_calib, err);
    if (st == EML_OK) {
        st = eml_sha256(m->sha256, weights, wlen);
        if (st != EML_OK) eml_err_set(err, st, "hash failed");
    }
    if (st != EML_OK) {
        eml_model_free(m);
        return st;
    }
    *out = m;
    return EML_OK;
}

void eml_model_free(eml_model *m)
{
    if (m == NULL) return;
    if (m->calib != NULL) /* the owner's images */
        eml_wipe(m->calib, m->n_calib * eml_net_input_size(m->holder) * 4);
    free(m->calib);
    eml_net_free(m->holder); /* wipes the parameters */
    eml_cfg_free(m->cfg);
    free(m);
}

const eml_netcfg *eml_model_cfg(const eml_model *m)
{
    return m->cfg;
}

size_t eml_model_param_count(const eml_model *m)
{
    return eml_net_param_count(m->holder);
}

size_t eml_model_input_size(const eml_model *m)
{
    return eml_net_input_size(m->holder);
}

size_t eml_model_output_size(const eml_model *m)
{
    return eml_net_output_size(m->holder);
}

const uint8_t *eml_model_sha256(const eml_model *m)
{
    return m->sha256;
}

size_t eml_model_calibration(const eml_model *m, const float **x)
{
    *x = m->calib;
    return m->n_calib;
}

eml_status eml_model_workspace(const eml_model *m, eml_kernels_kind kernels,
                               int max_batch, eml_net **out, eml_err *err)
{
    eml_net_opts o = {.kernels = kernels, .max_batch = max_batch,
                      .inference = 1,
                      .params_of = eml_net_params(m->holder),
                      .params_count = eml_net_param_count(m->holder)};
    return eml_net_new(m->cfg, &o, out, err);
}

eml_status eml_net_predict(eml_net *net, const uint8_t *images, size_t count,
                           size_t item, uint32_t *labels, float *outputs,
                           eml_err *err)
{
    if (item != 0 && count > SIZE_MAX / item)
        return eml_err_set(err, EML_ERR_RANGE, "too many images");
    if (item != eml_net_input_size(net))
        return eml_err_set(err, EML_ERR_SHAPE,
                           "images have %zu values each but the network "
                           "takes %zu",
                           item, eml_net_input_size(net));
    size_t mb = (size_t)eml_net_max_batch(net);
    size_t k = eml_net_output_size(net);
    for (size_t first = 0; first < count; first += mb) {
        size_t n = count - first < mb ? count - first : mb;
        float *x = eml_net_input(net);
        const uint8_t *img = images + first * item;
        for (size_t p = 0; p < n * item; p++)
            x[p] = (float)img[p] * (1.0f / 255.0f);
        eml_status st = eml_net_forward(net, (int)n, 0);
        if (st != EML_OK)
            return eml_err_set(err, st, "forward pass failed: %s",
                               eml_status_str(st));
        const float *o = eml_net_output(net);
        for (size_t b = 0; b < n; b++) {
            const float *ob = o + b * k;
            size_t best = 0;
            for (size_t q = 0; q < k; q++)
                if (ob[q] > ob[best]) best = q;
            labels[first + b] = (uint32_t)best;
        }
        if (outputs != NULL)
            memcpy(outputs + first * k, o, n * k * sizeof(float));
    }
    return EML_OK;
}
