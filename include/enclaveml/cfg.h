/*
 * cfg.h - Darknet-style .cfg network descriptions.
 *
 * The parser works on a byte buffer (it is trusted-safe: no I/O), so the
 * host can read a file and the enclave can parse a cfg it received.  It is
 * strict: an unknown section or key, a missing required key, a bad value or
 * an absurd size is an error naming "<file>:<line>".  Keys mean what they
 * mean in Darknet; see docs/cfg.md for the full list and our extensions.
 *
 *     eml_netcfg *cfg = NULL;
 *     eml_err err = {0};
 *     if (eml_cfg_parse(text, len, "net.cfg", &cfg, &err) != EML_OK) ...
 *     ... cfg->layers[i].type ...
 *     eml_cfg_free(cfg);
 *
 * Shapes are NOT checked here (that needs the input size and all layers):
 * eml_net_new() checks that layers chain.
 */
#ifndef ENCLAVEML_CFG_H
#define ENCLAVEML_CFG_H

#include <stddef.h>

#include "enclaveml/kernels.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values are only ever appended. */
typedef enum eml_layer_type {
    EML_LAYER_CONNECTED = 0,
    EML_LAYER_CONVOLUTIONAL = 1,
    EML_LAYER_MAXPOOL = 2,
    EML_LAYER_AVGPOOL = 3,
    EML_LAYER_DROPOUT = 4,
    EML_LAYER_SOFTMAX = 5,
    EML_LAYER_SCATTERING = 6, /* extension: fixed scattering features */
    EML_LAYER_SHORTCUT = 7, /* the previous layer's output plus layer `from`'s */
    EML_LAYER_ROUTE = 8,    /* earlier layers' outputs, channels concatenated */
    EML_LAYER_UPSAMPLE = 9, /* nearest neighbour, by `stride` */
    EML_LAYER_COST = 10,    /* the loss on the softmax below it */
    EML_LAYER_COUNT = 11
} eml_layer_type;

/* [cost] type= (Darknet's names). */
typedef enum eml_cost_type {
    EML_COST_SSE = 0, /* sum of squared errors on the probabilities */
    EML_COST_COUNT = 1
} eml_cost_type;

typedef enum eml_optimizer {
    EML_OPT_SGD = 0, /* SGD with momentum and weight decay */
    EML_OPT_ADAM = 1,
    EML_OPT_COUNT = 2
} eml_optimizer;

typedef enum eml_lr_policy {
    EML_LR_CONSTANT = 0,
    EML_LR_STEPS = 1,  /* lr * product of scales[i] for steps[i] <= step */
    EML_LR_COSINE = 2, /* lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2 */
    EML_LR_POLY = 3,   /* lr (1 - t / T)^power (Darknet's poly) */
    EML_LR_COUNT = 4
} eml_lr_policy;

#define EML_CFG_MAX_LAYERS 256
#define EML_CFG_MAX_STEPS 16
#define EML_CFG_MAX_DIM 4096        /* height, width */
#define EML_CFG_MAX_CHANNELS 65536  /* channels, filters, output */
#define EML_CFG_MAX_KERNEL 64       /* size */
#define EML_CFG_MAX_BATCH 65536
#define EML_CFG_MAX_ROUTE 8         /* layers one [route] concatenates */
#define EML_CFG_IGNORED_MAX 256     /* the names of ignored keys */

typedef struct eml_layer_cfg {
    eml_layer_type type;
    int line;      /* line of the [section] header, 1-based */
    eml_act activation; /* connected, convolutional; default per Darknet */
    /* convolutional */
    int filters;
    int size;      /* kernel size (conv, pool); avgpool: 0 = global */
    int stride;
    int padding;   /* resolved: conv pad=1 -> size/2, padding=N overrides;
                      maxpool default size-1 (total, split size-1 as
                      top/left = padding/2); avgpool default 0 */
    /* connected */
    int output;
    /* dropout */
    float probability; /* probability of DROPPING a unit (Darknet) */
    /* scattering (scatter.h): scales J, angles L, normalisation groups;
     * softmax: groups (1) */
    int scales, angles, groups;
    /* convolutional, connected: batch normalization (Darknet's semantics,
     * docs/cfg.md) in place of the bias */
    int batch_normalize;
    /* shortcut: the absolute index of layer `from`, and out = alpha *
     * previous + beta * from (both 1 in Darknet's cfgs) */
    int from;
    float alpha, beta;
    /* route: the absolute indices of the layers concatenated */
    int n_route;
    int route[EML_CFG_MAX_ROUTE];
    /* upsample: stride (factor), scale (multiplies the output) */
    float scale;
    /* cost: type and scale (multiplies the loss) */
    eml_cost_type cost_type;
} eml_layer_cfg;

/* Darknet's geometric augmentation of training images ([net] keys flip,
 * min_crop, max_crop, angle, aspect; applied by augment.c). */
typedef struct eml_augment_cfg {
    int on;                 /* any of the keys was given */
    int flip;               /* mirror half the images left to right */
    int crop;               /* scale, rotate, stretch and crop */
    int min_crop, max_crop; /* the smaller side scaled to [min, max] */
    float angle;            /* rotation in [-angle, angle] degrees */
    float aspect;           /* width stretched by a factor between 1 and
                               aspect, or its inverse */
} eml_augment_cfg;

typedef struct eml_netcfg {
    /* [net] */
    int batch;              /* default 128 */
    int height, width, channels; /* required */
    float learning_rate;    /* default 0.01 */
    float momentum;         /* default 0.9 */
    float decay;            /* weight decay, default 0 */
    eml_optimizer optimizer; /* adam=1 selects Adam */
    float adam_b1, adam_b2, adam_eps; /* B1, B2, eps: 0.9, 0.999, 1e-8 */
    eml_lr_policy policy;   /* policy=constant|steps|cosine */
    int n_steps;
    int steps[EML_CFG_MAX_STEPS];     /* steps=1000,2000 (iterations) */
    float scales[EML_CFG_MAX_STEPS];  /* scales=.1,.1 */
    float lr_min;           /* cosine floor, extension key lr_min, default 0 */
    int epochs;             /* extension: default training length, 10 */
    int max_batches;        /* Darknet's key; 0 = use epochs */
    float ema;              /* extension: decay of an exponential moving
                               average of the weights, which evaluation and
                               the saved model use; 0 = off */
    float power;            /* policy=poly: the exponent, default 4 */
    int burn_in;            /* Darknet's warm-up: lr (t / burn_in)^4 for the
                               first burn_in steps; 0 = none */
    eml_augment_cfg augment;
    /* Keys Darknet knows that change nothing here (colour jitter and
     * the like), comma-separated, each named once: the host warns. */
    char ignored[EML_CFG_IGNORED_MAX];

    int n_layers;
    eml_layer_cfg *layers;  /* n_layers entries, owned */
} eml_netcfg;

EML_MUST_CHECK eml_status eml_cfg_parse(const char *text, size_t len,
                                        const char *filename,
                                        eml_netcfg **out, eml_err *err);
void eml_cfg_free(eml_netcfg *cfg); /* NULL is a no-op */

const char *eml_layer_type_name(eml_layer_type t); /* "connected", ... */
const char *eml_act_name(eml_act a);               /* "relu", ... */
EML_MUST_CHECK eml_status eml_act_parse(const char *name, eml_act *out);

#ifdef __cplusplus
}
#endif
#endif
