/*
 * fuzz_cfg.c - libFuzzer target for the .cfg parser (src/nn/cfg.c).
 *
 * Feeds arbitrary bytes to eml_cfg_parse() and frees the result.  Beyond
 * the sanitizers, it checks the parser's promises: on success every
 * resolved field lies in its documented range; on failure there is no
 * result and the message starts with "<file>:".
 *
 *   ./build-fuzz/fuzz/fuzz_cfg -max_total_time=60 fuzz/corpus/cfg
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/cfg.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static void check_layer(const eml_layer_cfg *l, int index)
{
    CHECK(l->line >= 1);
    CHECK((int)l->activation >= 0 && (int)l->activation < EML_ACT_COUNT);
    switch (l->type) {
    case EML_LAYER_CONVOLUTIONAL:
        CHECK(l->filters >= 1 && l->filters <= EML_CFG_MAX_CHANNELS);
        CHECK(l->size >= 1 && l->size <= EML_CFG_MAX_KERNEL);
        CHECK(l->stride >= 1 && l->stride <= EML_CFG_MAX_KERNEL);
        CHECK(l->padding >= 0 && l->padding <= EML_CFG_MAX_KERNEL);
        break;
    case EML_LAYER_CONNECTED:
        CHECK(l->output >= 1 && l->output <= EML_CFG_MAX_CHANNELS);
        break;
    case EML_LAYER_MAXPOOL:
        CHECK(l->size >= 1 && l->size <= EML_CFG_MAX_KERNEL);
        CHECK(l->stride >= 1 && l->stride <= EML_CFG_MAX_KERNEL);
        CHECK(l->padding >= 0 && l->padding <= EML_CFG_MAX_KERNEL);
        break;
    case EML_LAYER_AVGPOOL:
        CHECK(l->size >= 0 && l->size <= EML_CFG_MAX_KERNEL);
        CHECK(l->stride >= 1 && l->stride <= EML_CFG_MAX_KERNEL);
        CHECK(l->padding >= 0 && l->padding <= EML_CFG_MAX_KERNEL);
        break;
    case EML_LAYER_DROPOUT:
        CHECK(l->probability >= 0.0f && l->probability < 1.0f);
        break;
    case EML_LAYER_SOFTMAX:
        CHECK(l->groups >= 1 && l->scale >= 1e-3f && l->scale <= 1e3f);
        break;
    case EML_LAYER_SHORTCUT: /* references resolved to earlier layers */
        CHECK(l->from >= 0 && l->from < index);
        break;
    case EML_LAYER_ROUTE:
        CHECK(l->n_route >= 1 && l->n_route <= EML_CFG_MAX_ROUTE);
        for (int k = 0; k < l->n_route; k++)
            CHECK(l->route[k] >= 0 && l->route[k] < index);
        break;
    case EML_LAYER_UPSAMPLE:
        CHECK(l->stride >= 1 && l->scale > 0.0f);
        break;
    case EML_LAYER_COST:
        CHECK(l->scale > 0.0f);
        break;
    case EML_LAYER_SCATTERING:
        CHECK(l->scales >= 1 && l->scales <= 3);
        CHECK(l->angles >= 1 && l->angles <= 16);
        CHECK(l->groups >= 0);
        break;
    default:
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st =
        eml_cfg_parse((const char *)data, size, "fuzz.cfg", &cfg, &err);
    if (st != EML_OK) {
        CHECK(st < 0 && cfg == NULL);
        CHECK(strncmp(err.msg, "fuzz.cfg:", 9) == 0);
        return 0;
    }
    CHECK(cfg != NULL);
    CHECK(cfg->batch >= 1 && cfg->batch <= EML_CFG_MAX_BATCH);
    CHECK(cfg->height >= 1 && cfg->height <= EML_CFG_MAX_DIM);
    CHECK(cfg->width >= 1 && cfg->width <= EML_CFG_MAX_DIM);
    CHECK(cfg->channels >= 1 && cfg->channels <= EML_CFG_MAX_CHANNELS);
    CHECK(cfg->learning_rate > 0.0f);
    CHECK(cfg->lr_min >= 0.0f && cfg->lr_min <= cfg->learning_rate);
    CHECK(cfg->n_steps >= 0 && cfg->n_steps <= EML_CFG_MAX_STEPS);
    for (int i = 1; i < cfg->n_steps; i++) {
        CHECK(cfg->steps[i] > cfg->steps[i - 1]);
    }
    CHECK(cfg->n_layers >= 1 && cfg->n_layers <= EML_CFG_MAX_LAYERS);
    for (int i = 0; i < cfg->n_layers; i++) check_layer(&cfg->layers[i], i);
    CHECK(memchr(cfg->ignored, '\0', sizeof(cfg->ignored)) != NULL);
    eml_cfg_free(cfg);
    return 0;
}
