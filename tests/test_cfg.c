/*
 * test_cfg.c - the .cfg parser: every section's resolved fields and
 * defaults, and the errors a strict parser owes its hostile input.
 *
 * Every parse goes through parse_exact(), which copies the text into a heap
 * buffer of exactly len bytes with no terminating NUL, so AddressSanitizer
 * catches any read past the end.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"

#define FILE_NAME "t.cfg"

static eml_status parse_exact(const char *text, size_t len, eml_netcfg **out,
                              eml_err *err)
{
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    if (len) memcpy(buf, text, len);
    eml_status st = eml_cfg_parse(buf, len, FILE_NAME, out, err);
    free(buf);
    return st;
}

/* Parses a NUL-terminated cfg that must be valid. */
static eml_netcfg *parse_ok(const char *text)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st = parse_exact(text, strlen(text), &cfg, &err);
    if (st != EML_OK) {
        fail_msg("unexpected error %d: %s", (int)st, eml_err_msg(&err, st));
    }
    assert_non_null(cfg);
    return cfg;
}

/* Parses a cfg that must fail with st and a message containing want (and
 * starting with the file name). */
static void expect_err_n(const char *text, size_t len, eml_status want_st,
                         const char *want)
{
    eml_netcfg *cfg = (eml_netcfg *)(uintptr_t)1; /* must be reset */
    eml_err err = {0};
    eml_status st = parse_exact(text, len, &cfg, &err);
    if (st != want_st || strstr(err.msg, want) == NULL ||
        strncmp(err.msg, FILE_NAME ":", strlen(FILE_NAME ":")) != 0) {
        fail_msg("want status %d with \"%s\", got %d: \"%s\"", (int)want_st,
                 want, (int)st, err.msg);
    }
    assert_null(cfg);
}

static void expect_err(const char *text, eml_status want_st, const char *want)
{
    expect_err_n(text, strlen(text), want_st, want);
}

#define NET "[net]\nheight=28\nwidth=28\nchannels=1\n"
#define ONE_LAYER "[softmax]\n"

/* ==== names ==== */

static void test_names(void **state)
{
    (void)state;
    static const char *const types[EML_LAYER_COUNT] = {
        "connected", "convolutional", "maxpool", "avgpool", "dropout",
        "softmax", "scattering", "shortcut", "route", "upsample", "cost"};
    for (int i = 0; i < EML_LAYER_COUNT; i++) {
        assert_string_equal(eml_layer_type_name((eml_layer_type)i), types[i]);
    }
    assert_string_equal(eml_layer_type_name(EML_LAYER_COUNT), "unknown");

    static const char *const acts[EML_ACT_COUNT] = {
        "linear", "relu", "leaky", "tanh", "logistic", "relie", "ramp",
        "plse", "elu", "loggy", "stair", "hardtan", "lhtan", "selu"};
    for (int i = 0; i < EML_ACT_COUNT; i++) {
        eml_act a = EML_ACT_COUNT;
        assert_string_equal(eml_act_name((eml_act)i), acts[i]);
        assert_int_equal(eml_act_parse(acts[i], &a), EML_OK);
        assert_int_equal(a, i);
    }
    assert_string_equal(eml_act_name(EML_ACT_COUNT), "unknown");
    eml_act a = EML_ACT_RELU;
    assert_int_not_equal(eml_act_parse("mish", &a), EML_OK);
    assert_int_not_equal(eml_act_parse("RELU", &a), EML_OK);
    assert_int_not_equal(eml_act_parse(NULL, &a), EML_OK);
    assert_int_equal(a, EML_ACT_RELU);
    eml_cfg_free(NULL);
}

/* ==== [net] ==== */

static void test_net_defaults(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET ONE_LAYER);
    assert_int_equal(c->batch, 128);
    assert_int_equal(c->height, 28);
    assert_int_equal(c->width, 28);
    assert_int_equal(c->channels, 1);
    assert_float_equal(c->learning_rate, 0.01f, 0);
    assert_float_equal(c->momentum, 0.9f, 0);
    assert_float_equal(c->decay, 0.0f, 0);
    assert_int_equal(c->optimizer, EML_OPT_SGD);
    assert_float_equal(c->adam_b1, 0.9f, 0);
    assert_float_equal(c->adam_b2, 0.999f, 0);
    assert_float_equal(c->adam_eps, 1e-8f, 0);
    assert_int_equal(c->policy, EML_LR_CONSTANT);
    assert_int_equal(c->n_steps, 0);
    assert_float_equal(c->lr_min, 0.0f, 0);
    assert_int_equal(c->epochs, 10);
    assert_int_equal(c->max_batches, 0);
    assert_int_equal(c->n_layers, 1);
    assert_int_equal(c->layers[0].type, EML_LAYER_SOFTMAX);
    assert_int_equal(c->layers[0].line, 5);
    eml_cfg_free(c);
}

static void test_net_all_keys(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok("[network]\n"
                             "batch=64\n"
                             "subdivisions=1\n"
                             "height=32\nwidth=30\nchannels=3\n"
                             "learning_rate=0.5\n"
                             "momentum=0\n"
                             "decay=0.0005\n"
                             "adam=1\nB1=0.8\nB2=0.99\neps=1e-6\n"
                             "policy=steps\n"
                             "steps=100, 200 ,300\n"
                             "scales=.1,.5,2\n"
                             "epochs=3\n"
                             "max_batches=5000\n"
                             "[dropout]\n");
    assert_int_equal(c->batch, 64);
    assert_int_equal(c->height, 32);
    assert_int_equal(c->width, 30);
    assert_int_equal(c->channels, 3);
    assert_float_equal(c->learning_rate, 0.5f, 0);
    assert_float_equal(c->momentum, 0.0f, 0);
    assert_float_equal(c->decay, 0.0005f, 0);
    assert_int_equal(c->optimizer, EML_OPT_ADAM);
    assert_float_equal(c->adam_b1, 0.8f, 0);
    assert_float_equal(c->adam_b2, 0.99f, 0);
    assert_float_equal(c->adam_eps, 1e-6f, 0);
    assert_int_equal(c->policy, EML_LR_STEPS);
    assert_int_equal(c->n_steps, 3);
    assert_int_equal(c->steps[0], 100);
    assert_int_equal(c->steps[1], 200);
    assert_int_equal(c->steps[2], 300);
    assert_float_equal(c->scales[0], 0.1f, 0);
    assert_float_equal(c->scales[1], 0.5f, 0);
    assert_float_equal(c->scales[2], 2.0f, 0);
    assert_int_equal(c->epochs, 3);
    assert_int_equal(c->max_batches, 5000);
    eml_cfg_free(c);

    c = parse_ok(NET "learning_rate=0.1\npolicy=cosine\nlr_min=0.001\n"
                 ONE_LAYER);
    assert_int_equal(c->policy, EML_LR_COSINE);
    assert_float_equal(c->lr_min, 0.001f, 0);
    eml_cfg_free(c);

    c = parse_ok(NET "policy=constant\n" ONE_LAYER);
    assert_int_equal(c->policy, EML_LR_CONSTANT);
    assert_float_equal(c->ema, 0.0f, 0);
    eml_cfg_free(c);

    c = parse_ok(NET "ema=0.99\n" ONE_LAYER);
    assert_float_equal(c->ema, 0.99f, 0);
    eml_cfg_free(c);
    expect_err(NET "ema=1\n" ONE_LAYER, EML_ERR_RANGE, "ema=1 must be in [0, 1)");
}

static void test_net_errors(void **state)
{
    (void)state;
    expect_err("[net]\nwidth=28\nchannels=1\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:1: [net] is missing required key 'height'");
    /* subdivisions only splits Darknet's step to save memory: accepted */
    eml_netcfg *sub = parse_ok(NET "subdivisions=2\n" ONE_LAYER);
    assert_int_equal(sub->batch, 128);
    eml_cfg_free(sub);
    expect_err(NET "policy=poly\npower=0\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:6: [net] power=0 must be in (0, 100]");
    expect_err(NET "power=2\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: [net] 'power' applies only with policy=poly");
    expect_err(NET "burn_in=-1\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:5: [net] burn_in=-1 is out of range");
    expect_err(NET "batch=0\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:5: [net] batch=0 is out of range");
    expect_err("[net]\nheight=28\nwidth=100000\nchannels=1\n" ONE_LAYER,
               EML_ERR_RANGE, "t.cfg:3: [net] width=100000 is out of range");
    expect_err("[net]\nheight=28\nwidth=28\nchannels=0\n" ONE_LAYER,
               EML_ERR_RANGE, "t.cfg:4: [net] channels=0");
    expect_err(NET "learning_rate=0\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:5: [net] learning_rate=0 must be > 0");
    expect_err(NET "learning_rate=-1\n" ONE_LAYER, EML_ERR_RANGE,
               "learning_rate=-1 must be > 0");
    expect_err(NET "momentum=1\n" ONE_LAYER, EML_ERR_RANGE,
               "momentum=1 must be in [0, 1)");
    expect_err(NET "decay=-0.1\n" ONE_LAYER, EML_ERR_RANGE,
               "decay=-0.1 must be >= 0");
    expect_err(NET "adam=2\n" ONE_LAYER, EML_ERR_RANGE, "adam=2");
    expect_err(NET "B1=0.5\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: [net] 'B1' applies only with adam=1");
    expect_err(NET "adam=1\neps=0\n" ONE_LAYER, EML_ERR_RANGE,
               "eps=0 must be > 0");
    expect_err(NET "policy=sigmoid\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: [net] unknown policy 'sigmoid'");
    expect_err(NET "policy=steps\nscales=.1\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:1: [net] is missing required key 'steps'");
    expect_err(NET "policy=steps\nsteps=10\n" ONE_LAYER, EML_ERR_FORMAT,
               "[net] is missing required key 'scales'");
    expect_err(NET "steps=10\nscales=.1\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: [net] 'steps' applies only with policy=steps");
    expect_err(NET "policy=steps\nsteps=10,5\nscales=.1,.1\n" ONE_LAYER,
               EML_ERR_RANGE, "t.cfg:6: [net] steps must increase");
    expect_err(NET "policy=steps\nsteps=10,10\nscales=.1,.1\n" ONE_LAYER,
               EML_ERR_RANGE, "steps must increase");
    expect_err(NET "policy=steps\nsteps=0\nscales=.1\n" ONE_LAYER,
               EML_ERR_RANGE, "steps: 0 is not a positive");
    expect_err(NET "policy=steps\nsteps=10,,20\nscales=.1,.1\n" ONE_LAYER,
               EML_ERR_FORMAT, "'steps' has an empty element");
    expect_err(NET "policy=steps\nsteps=10,\nscales=.1\n" ONE_LAYER,
               EML_ERR_FORMAT, "'steps' has an empty element");
    expect_err(NET "policy=steps\nsteps=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,"
                   "16,17\nscales=.1\n" ONE_LAYER,
               EML_ERR_RANGE, "'steps' has more than 16 elements");
    expect_err(NET "policy=steps\nsteps=10\nscales=0\n" ONE_LAYER,
               EML_ERR_RANGE, "scales: 0 must be > 0");
    expect_err(NET "policy=cosine\nlr_min=1\n" ONE_LAYER, EML_ERR_RANGE,
               "lr_min=1 must be in [0, learning_rate]");
    expect_err(NET "lr_min=0\n" ONE_LAYER, EML_ERR_FORMAT,
               "'lr_min' applies only with policy=cosine");
    expect_err(NET "epochs=0\n" ONE_LAYER, EML_ERR_RANGE, "epochs=0");
    expect_err(NET "epochs=100001\n" ONE_LAYER, EML_ERR_RANGE,
               "epochs=100001 is out of range (1..100000)");
    expect_err(NET "max_batches=-1\n" ONE_LAYER, EML_ERR_RANGE,
               "max_batches=-1");
}

static void test_steps_scales_mismatch(void **state)
{
    (void)state;
    expect_err(NET "policy=steps\nsteps=10,20\nscales=.1\n" ONE_LAYER,
               EML_ERR_FORMAT, "t.cfg:7: [net] has 2 steps but 1 scales");
    expect_err(NET "policy=steps\nsteps=10\nscales=.1,.1\n" ONE_LAYER,
               EML_ERR_FORMAT, "has 1 steps but 2 scales");
}

/* ==== layers ==== */

static void test_convolutional(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET
                             "[convolutional]\n"          /* line 5 */
                             "filters=16\nsize=3\n"
                             "[convolutional]\n"          /* line 8 */
                             "filters=32\nsize=5\nstride=2\npad=1\n"
                             "activation=leaky\nbatch_normalize=0\n"
                             "groups=1\n"
                             "[conv]\n"                   /* line 16 */
                             "filters=8\nsize=3\npad=1\npadding=2\n"
                             "activation=linear\n"
                             "[conv]\n"                   /* line 22 */
                             "filters=65536\nsize=64\nstride=64\n"
                             "padding=0\nactivation=relu\n"
                             "[convolutional]\n"          /* line 28 */
                             "filters=1\nsize=4\npad=1\nactivation=tanh\n");
    assert_int_equal(c->n_layers, 5);
    eml_layer_cfg *l = &c->layers[0];
    assert_int_equal(l->type, EML_LAYER_CONVOLUTIONAL);
    assert_int_equal(l->line, 5);
    assert_int_equal(l->filters, 16);
    assert_int_equal(l->size, 3);
    assert_int_equal(l->stride, 1);
    assert_int_equal(l->padding, 0);
    assert_int_equal(l->activation, EML_ACT_LOGISTIC); /* Darknet default */
    assert_int_equal(l->output, 0);
    assert_float_equal(l->probability, 0.0f, 0);

    l = &c->layers[1];
    assert_int_equal(l->line, 8);
    assert_int_equal(l->filters, 32);
    assert_int_equal(l->size, 5);
    assert_int_equal(l->stride, 2);
    assert_int_equal(l->padding, 2); /* pad=1 -> size/2 */
    assert_int_equal(l->activation, EML_ACT_LEAKY);

    l = &c->layers[2];
    assert_int_equal(l->type, EML_LAYER_CONVOLUTIONAL);
    assert_int_equal(l->line, 16);
    assert_int_equal(l->filters, 8);
    assert_int_equal(l->size, 3);
    assert_int_equal(l->padding, 2); /* padding=N overrides pad=1 */
    assert_int_equal(l->activation, EML_ACT_LINEAR);

    l = &c->layers[3];
    assert_int_equal(l->line, 22);
    assert_int_equal(l->filters, EML_CFG_MAX_CHANNELS);
    assert_int_equal(l->size, EML_CFG_MAX_KERNEL);
    assert_int_equal(l->stride, 64);
    assert_int_equal(l->padding, 0);
    assert_int_equal(l->activation, EML_ACT_RELU);

    l = &c->layers[4];
    assert_int_equal(l->size, 4);
    assert_int_equal(l->padding, 2); /* even size: size/2 */
    assert_int_equal(l->activation, EML_ACT_TANH);
    eml_cfg_free(c);
}

static void test_connected(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET "[connected]\noutput=100\n"
                                 "[connected]\noutput=10\nactivation=linear\n"
                                 "batch_normalize=0\n");
    assert_int_equal(c->n_layers, 2);
    eml_layer_cfg *l = &c->layers[0];
    assert_int_equal(l->type, EML_LAYER_CONNECTED);
    assert_int_equal(l->line, 5);
    assert_int_equal(l->output, 100);
    assert_int_equal(l->activation, EML_ACT_LOGISTIC);
    assert_int_equal(l->filters, 0);
    assert_int_equal(l->size, 0);
    l = &c->layers[1];
    assert_int_equal(l->line, 7);
    assert_int_equal(l->output, 10);
    assert_int_equal(l->activation, EML_ACT_LINEAR);
    eml_cfg_free(c);
}

static void test_maxpool(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET "[maxpool]\n"
                                 "[maxpool]\nsize=2\nstride=2\n"
                                 "[maxpool]\nstride=2\n"
                                 "[maxpool]\nsize=3\nstride=2\npadding=0\n"
                                 "[maxpool]\nsize=3\n");
    assert_int_equal(c->n_layers, 5);
    eml_layer_cfg *l = &c->layers[0]; /* all defaults: 1x1, stride 1 */
    assert_int_equal(l->type, EML_LAYER_MAXPOOL);
    assert_int_equal(l->line, 5);
    assert_int_equal(l->size, 1);
    assert_int_equal(l->stride, 1);
    assert_int_equal(l->padding, 0);
    assert_int_equal(l->activation, EML_ACT_LINEAR);
    l = &c->layers[1];
    assert_int_equal(l->size, 2);
    assert_int_equal(l->stride, 2);
    assert_int_equal(l->padding, 1); /* size-1 */
    l = &c->layers[2];               /* size defaults to stride */
    assert_int_equal(l->size, 2);
    assert_int_equal(l->stride, 2);
    assert_int_equal(l->padding, 1);
    l = &c->layers[3];
    assert_int_equal(l->size, 3);
    assert_int_equal(l->stride, 2);
    assert_int_equal(l->padding, 0);
    l = &c->layers[4];
    assert_int_equal(l->size, 3);
    assert_int_equal(l->stride, 1);
    assert_int_equal(l->padding, 2);
    eml_cfg_free(c);

    expect_err(NET "[maxpool]\nsize=0\n", EML_ERR_RANGE,
               "t.cfg:6: [maxpool] size=0 is out of range (1..64)");
    expect_err(NET "[maxpool]\nstride=65\n", EML_ERR_RANGE,
               "[maxpool] stride=65");
    expect_err(NET "[maxpool]\npadding=-1\n", EML_ERR_RANGE,
               "[maxpool] padding=-1");
}

static void test_avgpool(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET "[avgpool]\n"
                                 "[avgpool]\nsize=2\n"
                                 "[avgpool]\nsize=3\nstride=1\npadding=1\n"
                                 "[avgpool]\nsize=0\n");
    assert_int_equal(c->n_layers, 4);
    eml_layer_cfg *l = &c->layers[0]; /* global, Darknet's behaviour */
    assert_int_equal(l->type, EML_LAYER_AVGPOOL);
    assert_int_equal(l->line, 5);
    assert_int_equal(l->size, 0);
    assert_int_equal(l->stride, 1);
    assert_int_equal(l->padding, 0);
    l = &c->layers[1];
    assert_int_equal(l->size, 2);
    assert_int_equal(l->stride, 2); /* defaults to size */
    assert_int_equal(l->padding, 0);
    l = &c->layers[2];
    assert_int_equal(l->size, 3);
    assert_int_equal(l->stride, 1);
    assert_int_equal(l->padding, 1);
    l = &c->layers[3];
    assert_int_equal(l->size, 0);
    assert_int_equal(l->stride, 1);
    eml_cfg_free(c);

    expect_err(NET "[avgpool]\nstride=2\n", EML_ERR_FORMAT,
               "t.cfg:6: [avgpool] 'stride' applies only with size > 0");
    expect_err(NET "[avgpool]\nsize=0\npadding=1\n", EML_ERR_FORMAT,
               "t.cfg:7: [avgpool] 'padding' applies only with size > 0");
    expect_err(NET "[avgpool]\nsize=-1\n", EML_ERR_RANGE,
               "[avgpool] size=-1 is out of range (0..64)");
}

static void test_dropout(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET "[dropout]\n[dropout]\nprobability=.25\n"
                                 "[dropout]\nprobability=0\n");
    assert_int_equal(c->n_layers, 3);
    assert_int_equal(c->layers[0].type, EML_LAYER_DROPOUT);
    assert_int_equal(c->layers[0].line, 5);
    assert_float_equal(c->layers[0].probability, 0.5f, 0);
    assert_int_equal(c->layers[0].activation, EML_ACT_LINEAR);
    assert_float_equal(c->layers[1].probability, 0.25f, 0);
    assert_float_equal(c->layers[2].probability, 0.0f, 0);
    eml_cfg_free(c);

    expect_err(NET "[dropout]\nprobability=1\n", EML_ERR_RANGE,
               "t.cfg:6: [dropout] probability=1 must be in [0, 1)");
    expect_err(NET "[dropout]\nprobability=-0.1\n", EML_ERR_RANGE,
               "probability=-0.1");
}

static void test_softmax(void **state)
{
    (void)state;
    eml_netcfg *c = parse_ok(NET "[connected]\noutput=10\nactivation=linear\n"
                                 "[softmax]\ngroups=1\ntemperature=1.0\n");
    assert_int_equal(c->n_layers, 2);
    eml_layer_cfg *l = &c->layers[1];
    assert_int_equal(l->type, EML_LAYER_SOFTMAX);
    assert_int_equal(l->line, 8);
    assert_int_equal(l->activation, EML_ACT_LINEAR);
    assert_int_equal(l->size, 0);
    assert_int_equal(l->output, 0);
    eml_cfg_free(c);

    c = parse_ok(NET "[softmax]\ngroups=2\ntemperature=3\n");
    assert_int_equal(c->layers[0].groups, 2);
    assert_true(c->layers[0].scale == 3.0f);
    eml_cfg_free(c);
    expect_err(NET "[softmax]\ntemperature=0\n", EML_ERR_RANGE,
               "t.cfg:6: [softmax] temperature=0 must be in [0.001, 1000]");
}

/* ==== syntax ==== */

static void test_syntax(void **state)
{
    (void)state;
    /* CRLF, blanks, comments of both kinds, '#' after a value, spaces
     * around '=' and in the header, a UTF-8 BOM, no final newline. */
    const char *text = "\xEF\xBB\xBF# a comment\r\n"
                       "; another\r\n"
                       "\r\n"
                       "[ net ]   # trailing comment\r\n"
                       "  height = 28 \r\n"
                       "\twidth\t=\t28\t# px\r\n"
                       "channels=1\r\n"
                       "   \r\n"
                       "[connected]\r\n"
                       "output = 10";
    eml_netcfg *c = parse_ok(text);
    assert_int_equal(c->height, 28);
    assert_int_equal(c->width, 28);
    assert_int_equal(c->channels, 1);
    assert_int_equal(c->n_layers, 1);
    assert_int_equal(c->layers[0].line, 9);
    assert_int_equal(c->layers[0].output, 10);
    eml_cfg_free(c);

    /* Numbers with a sign or exponent are fine; '+' is taken by strtol. */
    c = parse_ok(NET "learning_rate=1e-3\nbatch=+32\n" ONE_LAYER);
    assert_float_equal(c->learning_rate, 1e-3f, 0);
    assert_int_equal(c->batch, 32);
    eml_cfg_free(c);
}

/* ==== errors ==== */

static void test_unknown_section(void **state)
{
    (void)state;
    expect_err(NET "[reorg]\nstride=2\n", EML_ERR_FORMAT,
               "t.cfg:5: unknown section '[reorg]'");
    expect_err(NET ONE_LAYER "[yolo]\nmask=0,1\n", EML_ERR_UNSUPPORTED,
               "[yolo] is not supported: detection heads are out of scope");
    expect_err(NET "[Softmax]\n", EML_ERR_FORMAT, "unknown section");
    expect_err(NET "[softmax\n", EML_ERR_FORMAT,
               "t.cfg:5: unterminated section header");
    expect_err(NET "[softmax] x\n", EML_ERR_FORMAT,
               "t.cfg:5: junk after section header");
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\nfoo=1\n",
               EML_ERR_FORMAT, "t.cfg:8: unknown key 'foo' in [convolutional]");
    expect_err(NET "[conv]\nfilters=4\nsize=3\nfoo=1\n", EML_ERR_FORMAT,
               "t.cfg:8: unknown key 'foo' in [conv]");
    /* Darknet's colour augmentation keys are known and ignored, each
     * named once for the host's warning (its geometric ones apply:
     * test_augment); a key Darknet does not know stays an error. */
    eml_netcfg *aug = parse_ok(NET "saturation=1.5\nangle=7\nhue=.1\n"
                                   "jitter=.2\n" ONE_LAYER);
    assert_string_equal(aug->ignored, "saturation, hue, jitter");
    assert_true(aug->augment.on && aug->augment.crop);
    eml_cfg_free(aug);
    expect_err(NET "rotation=7\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: unknown key 'rotation' in [net]");
    /* Keys are case-sensitive, as in Darknet. */
    expect_err(NET "Batch=1\n" ONE_LAYER, EML_ERR_FORMAT,
               "unknown key 'Batch' in [net]");
    /* A key valid elsewhere is still unknown here. */
    expect_err(NET "[maxpool]\nfilters=3\n", EML_ERR_FORMAT,
               "t.cfg:6: unknown key 'filters' in [maxpool]");
    /* Control bytes never reach the message. */
    expect_err(NET "[softmax]\n\x1b[31mx=1\n", EML_ERR_FORMAT,
               "unknown key '?[31mx' in [softmax]");
    /* A long key is cut short in the message. */
    char big[600];
    memset(big, 'k', sizeof(big));
    char text[700];
    snprintf(text, sizeof(text), NET "%.*s=1\n" ONE_LAYER, (int)sizeof(big),
             big);
    expect_err(text, EML_ERR_FORMAT, "kkkkkkkk...' in [net]");
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_err(NET "[connected]\noutput=3\n\n[convolutional]\nsize=3\n",
               EML_ERR_FORMAT,
               "t.cfg:8: [convolutional] is missing required key 'filters'");
    expect_err(NET "[convolutional]\nfilters=3\n", EML_ERR_FORMAT,
               "t.cfg:5: [convolutional] is missing required key 'size'");
    expect_err(NET "[connected]\nactivation=relu\n", EML_ERR_FORMAT,
               "t.cfg:5: [connected] is missing required key 'output'");
    expect_err("[net]\nheight=1\nwidth=1\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:1: [net] is missing required key 'channels'");
}

static void test_absurd_sizes(void **state)
{
    (void)state;
    expect_err(NET "[convolutional]\nfilters=0\nsize=3\n", EML_ERR_RANGE,
               "t.cfg:6: [convolutional] filters=0 is out of range "
               "(1..65536)");
    expect_err(NET "[convolutional]\nfilters=4\nsize=100000\n",
               EML_ERR_RANGE,
               "t.cfg:7: [convolutional] size=100000 is out of range (1..64)");
    expect_err(NET "[convolutional]\nfilters=65537\nsize=3\n", EML_ERR_RANGE,
               "filters=65537 is out of range");
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\nstride=0\n",
               EML_ERR_RANGE, "t.cfg:8: [convolutional] stride=0");
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\npad=2\n",
               EML_ERR_RANGE, "[convolutional] pad=2 is out of range (0..1)");
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\npadding=-1\n",
               EML_ERR_RANGE, "[convolutional] padding=-1");
    expect_err(NET "[connected]\noutput=-5\n", EML_ERR_RANGE,
               "t.cfg:6: [connected] output=-5 is out of range");
    expect_err(NET "[connected]\noutput=99999999999999999999999\n",
               EML_ERR_RANGE, "t.cfg:6: [connected] output=");
    expect_err("[net]\nheight=4097\nwidth=28\nchannels=1\n" ONE_LAYER,
               EML_ERR_RANGE, "t.cfg:2: [net] height=4097 is out of range");
    expect_err(NET "batch=65537\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:5: [net] batch=65537 is out of range");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\nsize=5\n",
               EML_ERR_FORMAT,
               "t.cfg:8: duplicate key 'size' in [convolutional] (first set "
               "on line 7)");
    expect_err("[net]\nheight=28\nheight=28\nwidth=28\nchannels=1\n"
               ONE_LAYER,
               EML_ERR_FORMAT, "t.cfg:3: duplicate key 'height' in [net]");
    /* The same key in two sections is fine. */
    eml_netcfg *c = parse_ok(NET "[maxpool]\nsize=2\n[maxpool]\nsize=2\n");
    assert_int_equal(c->n_layers, 2);
    eml_cfg_free(c);
}

static void test_net_placement(void **state)
{
    (void)state;
    expect_err("[convolutional]\nfilters=1\nsize=1\n" NET, EML_ERR_FORMAT,
               "t.cfg:1: the first section must be [net], found "
               "[convolutional]");
    expect_err("# only a layer\n[softmax]\n", EML_ERR_FORMAT,
               "t.cfg:2: the first section must be [net]");
    expect_err(NET ONE_LAYER "[net]\n", EML_ERR_FORMAT,
               "t.cfg:6: [net] must be the first section and appear only "
               "once");
    expect_err(NET "[network]\n", EML_ERR_FORMAT,
               "t.cfg:5: [network] must be the first section");
    expect_err("batch=1\n" NET ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:1: key 'batch' before any [section]");
}

static void test_no_layers(void **state)
{
    (void)state;
    expect_err(NET, EML_ERR_FORMAT, "t.cfg:4: no layers after [net]");
    expect_err(NET "\n# end\n", EML_ERR_FORMAT,
               "t.cfg:6: no layers after [net]");
}

static void test_too_many_layers(void **state)
{
    (void)state;
    size_t cap = 64 + (EML_CFG_MAX_LAYERS + 1) * 10;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t n = (size_t)snprintf(text, cap, "%s", NET);
    for (int i = 0; i < EML_CFG_MAX_LAYERS; i++) {
        n += (size_t)snprintf(text + n, cap - n, "[dropout]\n");
    }
    eml_netcfg *c = parse_ok(text);
    assert_int_equal(c->n_layers, EML_CFG_MAX_LAYERS);
    for (int i = 0; i < EML_CFG_MAX_LAYERS; i++) {
        assert_int_equal(c->layers[i].line, 5 + i);
        assert_int_equal(c->layers[i].type, EML_LAYER_DROPOUT);
    }
    eml_cfg_free(c);
    n += (size_t)snprintf(text + n, cap - n, "[dropout]\n");
    expect_err(text, EML_ERR_RANGE, "t.cfg:261: more than 256 layers");
    free(text);
}

static void test_bad_activation(void **state)
{
    (void)state;
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\nactivation=mish\n",
               EML_ERR_FORMAT,
               "t.cfg:8: [convolutional] unknown activation 'mish' (allowed: "
               "linear, relu, leaky, tanh, logistic, relie, ramp, plse, elu, "
               "loggy, stair, hardtan, lhtan, selu)");
    expect_err(NET "[connected]\noutput=3\nactivation=RELU\n",
               EML_ERR_FORMAT, "[connected] unknown activation 'RELU'");
    expect_err(NET "[connected]\noutput=3\nactivation=relu"
                   "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu"
                   "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\n",
               EML_ERR_FORMAT, "unknown activation 'reluuuu");
}

static void test_bad_number(void **state)
{
    (void)state;
    expect_err(NET "[connected]\noutput=12abc\n", EML_ERR_FORMAT,
               "t.cfg:6: [connected] 'output' expects an integer, found "
               "'12abc'");
    expect_err(NET "[connected]\noutput=1.5\n", EML_ERR_FORMAT,
               "'output' expects an integer, found '1.5'");
    expect_err(NET "[connected]\noutput=0x10\n", EML_ERR_FORMAT,
               "expects an integer");
    expect_err(NET "[connected]\noutput=1 0\n", EML_ERR_FORMAT,
               "expects an integer, found '1 0'");
    expect_err(NET "[connected]\noutput=\n", EML_ERR_FORMAT,
               "t.cfg:6: empty value for 'output' in [connected]");
    expect_err(NET "[connected]\noutput=   # nothing\n", EML_ERR_FORMAT,
               "empty value for 'output'");
    expect_err(NET "[connected]\noutput\n", EML_ERR_FORMAT,
               "t.cfg:6: expected 'key=value' or '[section]'");
    expect_err(NET "[connected]\n=3\n", EML_ERR_FORMAT,
               "t.cfg:6: missing key name before '='");
    expect_err(NET "learning_rate=0.1x\n" ONE_LAYER, EML_ERR_FORMAT,
               "t.cfg:5: [net] 'learning_rate' expects a number, found "
               "'0.1x'");
    expect_err(NET "learning_rate=nan\n" ONE_LAYER, EML_ERR_RANGE,
               "t.cfg:5: [net] learning_rate=nan is not a finite number");
    expect_err(NET "learning_rate=inf\n" ONE_LAYER, EML_ERR_RANGE,
               "not a finite number");
    expect_err(NET "momentum=-infinity\n" ONE_LAYER, EML_ERR_RANGE,
               "not a finite number");
    expect_err(NET "learning_rate=1e39\n" ONE_LAYER, EML_ERR_RANGE,
               "learning_rate=1e39 is not a finite number");
    expect_err(NET "learning_rate=1e999\n" ONE_LAYER, EML_ERR_RANGE,
               "not a finite number");
    expect_err(NET "policy=steps\nsteps=10\nscales=x\n" ONE_LAYER,
               EML_ERR_FORMAT, "'scales' expects a number, found 'x'");
    expect_err(NET "policy=steps\nsteps=1e3\nscales=.1\n" ONE_LAYER,
               EML_ERR_FORMAT, "'steps' expects an integer, found '1e3'");
    /* A 70-digit number is refused, not copied past a buffer. */
    expect_err(NET "batch=0000000000000000000000000000000000000000000000000"
                   "00000000000000000001\n" ONE_LAYER,
               EML_ERR_FORMAT, "'batch' expects an integer");
}

static void test_unsupported(void **state)
{
    (void)state;
    eml_netcfg *bn =
        parse_ok(NET "[convolutional]\nfilters=4\nsize=3\nbatch_normalize=1\n");
    assert_int_equal(bn->layers[0].batch_normalize, 1);
    eml_cfg_free(bn);
    expect_err(NET "[connected]\noutput=4\nbatch_normalize=1\n",
               EML_ERR_UNSUPPORTED,
               "t.cfg:7: [connected] batch_normalize=1 is not supported");
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\nbatch_normalize=2\n",
               EML_ERR_RANGE, "batch_normalize=2 is out of range (0..1)");
    expect_err(NET "[convolutional]\nfilters=4\nsize=3\ngroups=2\n",
               EML_ERR_UNSUPPORTED,
               "t.cfg:8: [convolutional] groups=2 is not supported");
}

static void test_nul_and_empty(void **state)
{
    (void)state;
    static const char with_nul[] = NET "[soft\0max]\n";
    expect_err_n(with_nul, sizeof(with_nul) - 1, EML_ERR_FORMAT,
                 "t.cfg:5: NUL byte");
    static const char nul_in_value[] = NET "batch=1\0" "2\n" ONE_LAYER;
    expect_err_n(nul_in_value, sizeof(nul_in_value) - 1, EML_ERR_FORMAT,
                 "t.cfg:5: NUL byte");
    expect_err_n("", 0, EML_ERR_FORMAT, "t.cfg:1: empty cfg");
    expect_err("\n\n  \n# nothing\n", EML_ERR_FORMAT,
               "t.cfg:4: empty cfg: no [net] section");

    /* NULL text with len 0 is an empty cfg; bad arguments are refused. */
    eml_netcfg *c = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(NULL, 0, "x.cfg", &c, &err),
                     EML_ERR_FORMAT);
    assert_null(c);
    assert_int_equal(eml_cfg_parse(NULL, 5, "x.cfg", &c, NULL),
                     EML_ERR_INVALID);
    assert_int_equal(eml_cfg_parse(NET, strlen(NET), "x.cfg", NULL, NULL),
                     EML_ERR_INVALID);
    /* A NULL filename and a NULL err are fine. */
    assert_int_equal(eml_cfg_parse(NET ONE_LAYER, strlen(NET ONE_LAYER),
                                   NULL, &c, NULL),
                     EML_OK);
    eml_cfg_free(c);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_cfg_parse("[x]", 3, NULL, &c, &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "<cfg>:1: unknown section"));
}

/* Every prefix of a valid cfg parses or fails cleanly with file:line. */
static void test_truncation(void **state)
{
    (void)state;
    const char *full = "# truncation\r\n"
                       "[net]\r\n"
                       "batch=32\r\nheight=28\r\nwidth=28\r\nchannels=1\r\n"
                       "learning_rate=0.05\r\npolicy=steps\r\n"
                       "steps=100,200\r\nscales=.1,.1\r\n"
                       "adam=1\r\nB1=0.9\r\n"
                       "[convolutional]\r\nfilters=8\r\nsize=3\r\npad=1\r\n"
                       "activation=relu\r\n"
                       "[maxpool]\r\nsize=2\r\nstride=2\r\n"
                       "[avgpool]\r\n"
                       "[dropout]\r\nprobability=0.25\r\n"
                       "[connected]\r\noutput=10\r\nactivation=linear\r\n"
                       "[softmax]\r\ngroups=1\r\n";
    size_t len = strlen(full);
    int n_ok = 0;
    for (size_t i = 0; i <= len; i++) {
        eml_netcfg *c = NULL;
        eml_err err = {0};
        eml_status st = parse_exact(full, i, &c, &err);
        if (st == EML_OK) {
            assert_non_null(c);
            assert_true(c->n_layers >= 1 && c->n_layers <= 6);
            n_ok++;
            eml_cfg_free(c);
        } else {
            assert_null(c);
            assert_true(st < 0);
            if (strncmp(err.msg, FILE_NAME ":", strlen(FILE_NAME ":")) != 0) {
                fail_msg("prefix %zu: message without file:line: \"%s\"", i,
                         err.msg);
            }
        }
    }
    /* The full text parses, and so do the prefixes ending in a layer. */
    eml_netcfg *c = parse_ok(full);
    assert_int_equal(c->n_layers, 6);
    assert_int_equal(c->layers[0].padding, 1);
    assert_int_equal(c->layers[1].padding, 1);
    assert_int_equal(c->layers[2].size, 0);
    eml_cfg_free(c);
    assert_true(n_ok > 20);
}

/* The cfg files shipped in cfg/ must load (skipped without
 * EML_SOURCE_DIR, which CTest sets). */
static void test_shipped_cfgs(void **state)
{
    (void)state;
    const char *src = getenv("EML_SOURCE_DIR");
    if (src == NULL) skip();
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/cfg", src);
    DIR *d = opendir(dir);
    if (d == NULL) skip();
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".cfg") != 0) continue;
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char text[1 << 16];
        size_t len = fread(text, 1, sizeof(text), f);
        fclose(f);
        assert_true(len < sizeof(text));
        eml_netcfg *c = NULL;
        eml_err err = {0};
        eml_status st = eml_cfg_parse(text, len, e->d_name, &c, &err);
        if (st != EML_OK) fail_msg("%s: %s", path, eml_err_msg(&err, st));
        assert_true(c->n_layers > 0);
        eml_cfg_free(c);
        n_files++;
    }
    closedir(d);
    assert_true(n_files > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_net_defaults),
        cmocka_unit_test(test_net_all_keys),
        cmocka_unit_test(test_net_errors),
        cmocka_unit_test(test_steps_scales_mismatch),
        cmocka_unit_test(test_convolutional),
        cmocka_unit_test(test_connected),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_avgpool),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_absurd_sizes),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_net_placement),
        cmocka_unit_test(test_no_layers),
        cmocka_unit_test(test_too_many_layers),
        cmocka_unit_test(test_bad_activation),
        cmocka_unit_test(test_bad_number),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_nul_and_empty),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_shipped_cfgs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
