/*
 * evaluate.c - forward passes over an in-memory dataset: a batch loaded
 * through an index and scaled to [0,1], the outputs of the net's fixed
 * leading layers ([scattering]) computed once per image, and evaluation
 * (mean loss and accuracy).
 *
 * Trusted code: no I/O.  The cached features derive from confidential
 * images and are wiped when freed.
 */
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/train_internal.h"

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

eml_status eml_dataset_check(const eml_net *net, const eml_dataset *d,
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

void eml_feat_free(eml_feat_cache *c)
{
    if (c->f != NULL) {
        /* derived from the (confidential) images */
        eml_wipe(c->f, c->count * c->dim * sizeof(float));
        free(c->f);
    }
    memset(c, 0, sizeof(*c));
}

eml_status eml_feat_build(eml_net *net, const eml_dataset *d,
                          eml_feat_cache *c, eml_err *err)
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
        eml_feat_free(c);
        return eml_err_set(err, st, "feature extraction failed");
    }
    return EML_OK;
}

/* eml_load_batch with each image augmented. */
static void load_augmented(eml_net *net, const eml_dataset *d,
                           const uint32_t *idx, size_t first, int n,
                           uint8_t *labels, const eml_aug *a)
{
    float *x = eml_net_input(net);
    size_t item = d->item;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        size_t j = idx != NULL ? idx[first + (size_t)b] : first + (size_t)b;
        eml_augment_image(a->cfg, a->seed, a->step, (int)first + b,
                          d->images + j * item, a->c, a->h, a->w,
                          x + (size_t)b * item);
        labels[b] = d->labels[j];
    }
}

eml_status eml_batch_forward(eml_net *net, const eml_dataset *d,
                             const eml_feat_cache *c, const uint32_t *idx,
                             size_t first, int n, uint8_t *labels, int train,
                             const eml_aug *aug)
{
    if (aug != NULL && aug->cfg != NULL) {
        load_augmented(net, d, idx, first, n, labels, aug);
        return eml_net_forward(net, n, train);
    }
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

/* Mean loss and accuracy, and (confusion not NULL) the confusion matrix:
 * confusion[t * k + p] counts the images of class t predicted as p. */
static eml_status evaluate(eml_net *net, const eml_dataset *d,
                           const eml_feat_cache *c, double *loss,
                           double *accuracy, uint64_t *confusion,
                           eml_err *err)
{
    eml_status st = eml_dataset_check(net, d, "test", err);
    if (st != EML_OK) return st;
    int mb = eml_net_max_batch(net);
    size_t k = eml_net_output_size(net);
    uint8_t *labels = malloc((size_t)mb);
    uint32_t *pred = confusion != NULL ? malloc((size_t)mb * sizeof(*pred))
                                       : NULL;
    if (labels == NULL || (confusion != NULL && pred == NULL)) {
        free(labels);
        free(pred);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    if (confusion != NULL) memset(confusion, 0, k * k * sizeof(*confusion));
    double loss_sum = 0;
    long correct = 0;
    for (size_t first = 0; first < d->count; first += (size_t)mb) {
        int n = (int)(d->count - first < (size_t)mb ? d->count - first
                                                    : (size_t)mb);
        int right = 0;
        st = eml_batch_forward(net, d, c, NULL, first, n, labels, 0, NULL);
        if (st == EML_OK)
            st = eml_net_loss_pred(net, n, labels, &loss_sum, &right, pred);
        if (st != EML_OK) {
            free(labels);
            free(pred);
            return eml_err_set(err, st, "evaluation failed: %s",
                               eml_status_str(st));
        }
        correct += right;
        if (confusion != NULL) /* labels < k: eml_dataset_check */
            for (int b = 0; b < n; b++)
                confusion[(size_t)labels[b] * k + pred[b]]++;
    }
    free(labels);
    free(pred);
    double cnt = d->count > 0 ? (double)d->count : 1.0;
    if (loss != NULL) *loss = loss_sum / cnt;
    if (accuracy != NULL) *accuracy = (double)correct / cnt;
    return EML_OK;
}

eml_status eml_evaluate_cached(eml_net *net, const eml_dataset *d,
                               const eml_feat_cache *c, double *loss,
                               double *accuracy, eml_err *err)
{
    return evaluate(net, d, c, loss, accuracy, NULL, err);
}

eml_status eml_evaluate(eml_net *net, const eml_dataset *d, double *loss,
                        double *accuracy, eml_err *err)
{
    return evaluate(net, d, NULL, loss, accuracy, NULL, err);
}

eml_status eml_evaluate_confusion(eml_net *net, const eml_dataset *d,
                                  double *loss, double *accuracy,
                                  uint64_t *confusion, eml_err *err)
{
    if (confusion == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "no confusion matrix");
    return evaluate(net, d, NULL, loss, accuracy, confusion, err);
}

eml_status eml_quantize_on(eml_net *net, const eml_dataset *d, size_t count,
                           eml_precision p, eml_err *err)
{
    if (p != EML_PREC_INT8) /* fp32, bf16: nothing to calibrate */
        return eml_net_set_precision(net, p, err);
    eml_status st = eml_dataset_check(net, d, "calibration", err);
    if (st != EML_OK) return st;
    if (count == 0 || count > d->count) count = d->count;
    int mb = eml_net_max_batch(net);
    uint8_t *labels = malloc((size_t)mb);
    if (labels == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    st = eml_net_set_precision(net, EML_PREC_FP32, err); /* in fp32 */
    if (st == EML_OK) eml_net_calibrate(net, 1);
    for (size_t first = 0; st == EML_OK && first < count;
         first += (size_t)mb) {
        int n = (int)(count - first < (size_t)mb ? count - first : (size_t)mb);
        st = eml_batch_forward(net, d, NULL, NULL, first, n, labels, 0,
                               NULL);
    }
    eml_net_calibrate(net, 0);
    free(labels);
    if (st != EML_OK)
        return eml_err_set(err, st, "calibration failed: %s",
                           eml_status_str(st));
    return eml_net_set_precision(net, p, err);
}
