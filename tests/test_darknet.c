/*
 * test_darknet.c - Darknet's layers and files: batch normalization,
 * shortcut (equal and Darknet's mismatched shapes), route, upsample, cost,
 * softmax temperature and the added activations, each checked against
 * finite differences and reference against fast kernels; the running
 * statistics; and Darknet's own cfg files (from Debian's darknet package,
 * unpacked by scripts/install-deps.sh) building with the parameter counts
 * and convolution FLOPs Darknet itself computes for them
 * (tests/data/darknet-expected.tsv, made by scripts/darknet-oracle.sh),
 * then running forward and backward.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "host/fileio.h"
#include "net_util.h"

/* One small net per new layer, smooth activations. */
static const char *const nets[] = {
    /* batch norm in two convolutions, a residual sum over both */
    "[net]\nheight=6\nwidth=6\nchannels=2\n"
    "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\n"
    "activation=tanh\n"
    "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\n"
    "activation=loggy\n"
    "[shortcut]\nfrom=-2\nactivation=elu\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n",
    /* Darknet's mismatched shortcut: from a larger map with fewer
     * channels (stride 2), and alpha, beta */
    "[net]\nheight=8\nwidth=8\nchannels=2\n"
    "[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=tanh\n"
    "[convolutional]\nfilters=4\nsize=3\nstride=2\npad=1\nactivation=tanh\n"
    "[shortcut]\nfrom=-2\nalpha=0.5\nbeta=2\nactivation=linear\n"
    "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
    "[avgpool]\n[softmax]\n",
    /* a route joining two branches, an upsample, and from a smaller map
     * into a larger one (sample 2) */
    "[net]\nheight=8\nwidth=8\nchannels=1\n"
    "[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=tanh\n"
    "[avgpool]\nsize=2\nstride=2\n" /* a max's kinks would upset h */
    "[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=loggy\n"
    "[upsample]\nstride=2\n"
    "[route]\nlayers=-1,0\n"
    "[convolutional]\nfilters=2\nsize=1\nactivation=tanh\n"
    "[shortcut]\nfrom=2\nactivation=linear\n"
    "[connected]\noutput=3\nactivation=linear\n[softmax]\n",
    /* the squared error on a tempered softmax, batch norm, selu-free */
    "[net]\nheight=5\nwidth=5\nchannels=1\n"
    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nactivation=elu\n"
    "[connected]\noutput=3\nactivation=loggy\n"
    "[softmax]\ntemperature=2\n[cost]\ntype=sse\n",
};
#define N_NETS (sizeof(nets) / sizeof(nets[0]))

static void test_finite_differences(void **state)
{
    (void)state;
    for (size_t t = 0; t < N_NETS; t++) fd_check(nets[t], t, 0);
}

static void test_ref_vs_fast(void **state)
{
    (void)state;
    for (size_t t = 0; t < N_NETS; t++) ref_fast_check(nets[t], t);
}

/* Training moves the running statistics 1% toward the batch's; an
 * inference pass uses them and moves nothing; the tensors carry PyTorch's
 * BatchNorm2d names. */
static void test_running_statistics(void **state)
{
    (void)state;
    const char *cfg = "[net]\nheight=4\nwidth=4\nchannels=1\n"
                      "[convolutional]\nbatch_normalize=1\nfilters=2\n"
                      "size=1\nactivation=linear\n"
                      "[connected]\noutput=2\nactivation=linear\n[softmax]\n";
    eml_net *net = make_net(cfg, EML_KERNELS_FAST, 8, NULL);
    const char *want[] = {"layers.0.weight", "layers.0.bn.weight",
                          "layers.0.bn.bias", "layers.0.bn.running_mean",
                          "layers.0.bn.running_var", "layers.1.weight",
                          "layers.1.bias"};
    assert_int_equal(eml_net_tensor_count(net), 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(eml_net_tensor_get(net, i)->name, want[i]);
    assert_int_equal(eml_net_trainable_count(net),
                     eml_net_param_count(net) - 4);
    /* weight 1 and 2 for the two filters: outputs are x and 2x */
    float *p = eml_net_params(net);
    p[0] = 1.0f;
    p[1] = 2.0f;
    float *x = eml_net_input(net);
    double sum = 0, sq = 0;
    for (int i = 0; i < 8 * 16; i++) {
        x[i] = (float)((i * 37) % 11) / 3.0f;
        sum += x[i];
    }
    double mean = sum / 128;
    for (int i = 0; i < 8 * 16; i++) sq += (x[i] - mean) * (x[i] - mean);
    double var_unbiased = sq / 127;
    const eml_net_tensor *rm = eml_net_tensor_get(net, 3);
    const eml_net_tensor *rv = eml_net_tensor_get(net, 4);
    assert_int_equal(eml_net_forward(net, 8, 1), EML_OK);
    assert_true(fabs(p[rm->offset] - 0.01 * mean) < 1e-5);
    assert_true(fabs(p[rm->offset + 1] - 0.02 * mean) < 1e-5);
    assert_true(fabs(p[rv->offset] - (0.99 + 0.01 * var_unbiased)) < 1e-4);
    assert_true(fabs(p[rv->offset + 1] - (0.99 + 0.04 * var_unbiased)) <
                1e-4);
    float keep_m = p[rm->offset], keep_v = p[rv->offset];
    assert_int_equal(eml_net_forward(net, 8, 0), EML_OK);
    assert_true(p[rm->offset] == keep_m && p[rv->offset] == keep_v);
    /* inference: (x - rm) / sqrt(rv + 1e-5) * gamma + beta, first pixel */
    float y = eml_net_layer_output(net, 0)[0];
    double want_y = (x[0] - keep_m) / sqrt(keep_v + 1e-5);
    assert_true(fabs(y - want_y) < 1e-4);
    /* DP needs examples' own gradients, which batch norm mixes */
    float norms[8];
    assert_int_equal(eml_net_example_norms(net, 8, norms),
                     EML_ERR_UNSUPPORTED);
    eml_net_free(net);
}

static void expect_net_error(const char *text, const char *needle)
{
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    eml_status st = eml_cfg_parse(text, strlen(text), "t.cfg", &cfg, &err);
    if (st == EML_OK) {
        eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 2};
        eml_net *net = NULL;
        st = eml_net_new(cfg, &o, &net, &err);
        eml_net_free(net);
        eml_cfg_free(cfg);
    }
    if (st == EML_OK || strstr(err.msg, needle) == NULL)
        fail_msg("want an error with '%s', got %d: '%s'", needle, st,
                 err.msg);
    printf("refused: %s\n", err.msg);
}

static void test_bad_references_and_shapes(void **state)
{
    (void)state;
#define NETH "[net]\nheight=8\nwidth=8\nchannels=1\n"
#define CONV "[convolutional]\nfilters=2\nsize=3\npad=1\n"
    expect_net_error(NETH CONV "[shortcut]\nfrom=-5\n",
                     "t.cfg:10: [shortcut] from: -5 names no layer before "
                     "this one (layer 1)");
    expect_net_error(NETH CONV "[shortcut]\nfrom=1\n", "names no layer");
    expect_net_error(NETH "[shortcut]\nfrom=-1\n",
                     "[shortcut] needs a layer before it");
    expect_net_error(NETH CONV "[route]\nlayers=-1,3\n",
                     "[route] layers: 3 names no layer");
    expect_net_error(NETH CONV "[route]\nlayers=\n",
                     "empty value for 'layers' in [route]");
    expect_net_error(NETH CONV "[route]\nlayers=0,,0\n",
                     "'layers' has an empty element");
    expect_net_error(NETH CONV "[route]\nlayers=0,0,0,0,0,0,0,0,0\n",
                     "[route] joins at most 8 layers");
    expect_net_error(NETH CONV "[maxpool]\nsize=2\nstride=2\n"
                               "[route]\nlayers=-1,-2\n",
                     "layer 0's output is 8x8 but layer 1's 4x4");
    expect_net_error("[net]\nheight=8\nwidth=6\nchannels=1\n" CONV
                     "[convolutional]\nfilters=2\nsize=3\nstride=3\n"
                     "[shortcut]\nfrom=0\n",
                     "layer 0's output 8x6x2 does not fit this layer's "
                     "2x2x2 (width and height must scale alike)");
    expect_net_error(NETH CONV "[upsample]\nstride=0\n",
                     "stride=0 is out of range");
    expect_net_error(NETH CONV "[upsample]\nscale=-1\n",
                     "scale=-1 must be > 0");
    expect_net_error(NETH CONV "[cost]\n",
                     "[cost] must be the last layer, right after [softmax]");
    expect_net_error(NETH CONV "[softmax]\n[cost]\ntype=masked\n",
                     "[cost] type=masked is not supported (only sse)");
    expect_net_error(NETH CONV "[softmax]\ngroups=3\n",
                     "groups=3 does not divide its 128 inputs");
    expect_net_error(NETH CONV "[softmax]\n[connected]\noutput=2\n",
                     "[softmax] must be the last layer");
    expect_net_error(NETH CONV "[shortcut]\nfrom=-1\nactivation=mish\n",
                     "unknown activation 'mish'");
    expect_net_error(NETH CONV "[shortcut]\nfrom=-1\nalpha=x\n",
                     "'alpha' expects a number");
    expect_net_error(NETH CONV "[yolo]\nmask=0\n",
                     "t.cfg:9: [yolo] is not supported: detection heads");
#undef NETH
#undef CONV
}

/* ==== Darknet's own files ==== */

static const char *darknet_dir(void)
{
    const char *d = getenv("EML_DARKNET_CFG");
    return d != NULL ? d : "/usr/local/share/enclaveml/darknet/cfg";
}

static void test_darknet_files(void **state)
{
    (void)state;
    const char *src = getenv("EML_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/data/darknet-expected.tsv",
             src != NULL ? src : ".");
    uint8_t *tsv = NULL;
    size_t len = 0;
    eml_err err = {0};
    eml_status st = eml_file_read(path, &tsv, &len, &err);
    if (st != EML_OK) fail_msg("%s", eml_err_msg(&err, st));
    char *text = realloc(tsv, len + 1);
    assert_non_null(text);
    text[len] = '\0';
    int files = 0;
    for (char *line = strtok(text, "\n"); line != NULL;
         line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char name[128];
        int layers;
        unsigned long long params;
        double flops;
        assert_int_equal(sscanf(line, "%127s %d %llu %lf", name, &layers,
                                &params, &flops),
                         4);
        snprintf(path, sizeof(path), "%s/%s", darknet_dir(), name);
        uint8_t *cfgtext = NULL;
        size_t cl = 0;
        st = eml_file_read(path, &cfgtext, &cl, &err);
        if (st != EML_OK)
            fail_msg("%s (Darknet's cfg files: scripts/install-deps.sh "
                     "unpacks Debian's darknet package there, or set "
                     "EML_DARKNET_CFG)",
                     eml_err_msg(&err, st));
        eml_netcfg *cfg = NULL;
        st = eml_cfg_parse((const char *)cfgtext, cl, name, &cfg, &err);
        free(cfgtext);
        if (st != EML_OK) fail_msg("%s", eml_err_msg(&err, st));
        eml_net_opts o = {.kernels = EML_KERNELS_FAST, .max_batch = 1,
                          .seed = 1};
        eml_net *net = NULL;
        st = eml_net_new(cfg, &o, &net, &err);
        if (st != EML_OK) fail_msg("%s: %s", name, eml_err_msg(&err, st));
        eml_net_init_params(net, 1);
        double conv = 0;
        for (int i = 0; i < eml_net_n_layers(net); i++) {
            eml_layer_stats s;
            eml_net_layer_stats(net, i, &s);
            if (s.type == EML_LAYER_CONVOLUTIONAL) conv += s.flops;
        }
        double loss = 0;
#if defined(__SANITIZE_ADDRESS__)
        /* The sanitized debug build runs the three smallest (under 3
         * GFLOPs) and counts the rest: minutes of ResNets otherwise. */
        int run = flops < 3e9;
#else
        int run = 1;
#endif
        if (run) {
            random_input(net, 1, 3);
            uint8_t label = 1;
            loss = train_loss(net, 1, &label);
            assert_int_equal(eml_net_backward(net, 1, NULL), EML_OK);
        }
        printf("%-16s %3d layers, %10zu parameters (Darknet %llu), %.3f "
               "conv BFLOPs (Darknet %.3f), loss %.3f\n",
               name, cfg->n_layers, eml_net_trainable_count(net), params,
               conv / 1e9, flops / 1e9, loss);
        assert_int_equal(cfg->n_layers, layers);
        assert_int_equal(eml_net_trainable_count(net), params);
        assert_true(conv == flops);
        assert_true(isfinite(loss));
        eml_net_free(net);
        eml_cfg_free(cfg);
        files++;
    }
    assert_true(files >= 8);
    free(text);
}

/* ==== Darknet's .weights ==== */

static uint8_t *read_data(const char *name, size_t *len)
{
    const char *src = getenv("EML_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/data/%s", src ? src : ".", name);
    uint8_t *buf = NULL;
    eml_err err = {0};
    eml_status st = eml_file_read(path, &buf, len, &err);
    if (st != EML_OK) fail_msg("%s", eml_err_msg(&err, st));
    return buf;
}

/* Reads n numbers, one per line, from tests/data/NAME. */
static void read_floats(const char *name, float *out, size_t n)
{
    size_t len = 0;
    char *text = (char *)read_data(name, &len);
    char *p = text;
    for (size_t i = 0; i < n; i++) {
        char *end = NULL;
        out[i] = strtof(p, &end);
        assert_true(end != p);
        p = end;
    }
    free(text);
}

/* Darknet's own save of a small network (batch norm, shortcut, route):
 * loaded here, it gives Darknet's own output for the same input; saved
 * again, the same bytes; through safetensors and back, the same bytes. */
static void test_darknet_weights(void **state)
{
    (void)state;
    size_t clen = 0, wlen = 0;
    char *cfgtext = (char *)read_data("darknet-small.cfg", &clen);
    uint8_t *w = read_data("darknet-small.weights", &wlen);
    eml_netcfg *cfg = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(cfgtext, clen, "small", &cfg, &err),
                     EML_OK);
    eml_net_opts o = {.kernels = EML_KERNELS_FAST, .max_batch = 1,
                      .inference = 1};
    eml_net *net = NULL, *back = NULL;
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    assert_int_equal(eml_net_new(cfg, &o, &back, &err), EML_OK);
    assert_int_equal(eml_darknet_weights_size(net), wlen);
    uint64_t seen = 99;
    eml_status st = eml_darknet_weights_decode(net, w, wlen, "small", &seen,
                                               &err);
    if (st != EML_OK) fail_msg("%s", err.msg);
    assert_int_equal(seen, 0);
    read_floats("darknet-small.in", eml_net_input(net),
                eml_net_input_size(net));
    assert_int_equal(eml_net_forward(net, 1, 0), EML_OK);
    float want[5];
    read_floats("darknet-small.out", want, 5);
    double most = 0;
    for (int i = 0; i < 5; i++)
        most = fmax(most, fabs(eml_net_output(net)[i] - want[i]));
    printf("Darknet's output against ours: max |difference| %g\n", most);
    assert_true(most < 1e-4);
    uint8_t *again = NULL, *st_bytes = NULL, *third = NULL;
    size_t alen = 0, slen = 0, tlen = 0;
    assert_int_equal(eml_darknet_weights_encode(net, seen, &again, &alen),
                     EML_OK);
    assert_int_equal(alen, wlen);
    assert_memory_equal(again, w, wlen);
    assert_int_equal(eml_weights_encode(net, &st_bytes, &slen), EML_OK);
    assert_int_equal(eml_weights_decode(back, st_bytes, slen, "st", &err),
                     EML_OK);
    assert_int_equal(eml_darknet_weights_encode(back, 0, &third, &tlen),
                     EML_OK);
    assert_memory_equal(third, w, wlen);
    /* truncated, or a float too many: refused, nothing changed */
    float keep = eml_net_params(back)[0];
    st = eml_darknet_weights_decode(back, w, wlen - 1, "short.weights", NULL,
                                    &err);
    assert_int_equal(st, EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "short.weights: holds"));
    assert_non_null(strstr(err.msg, "truncated"));
    printf("refused: %s\n", err.msg);
    uint8_t *longer = calloc(wlen + 4, 1);
    memcpy(longer, w, wlen);
    memset(&err, 0, sizeof(err));
    st = eml_darknet_weights_decode(back, longer, wlen + 4, "long", NULL,
                                    &err);
    assert_int_equal(st, EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bytes left over"));
    memset(&err, 0, sizeof(err));
    st = eml_darknet_weights_decode(back, w, 10, "tiny", NULL, &err);
    assert_int_equal(st, EML_ERR_FORMAT);
    assert_true(eml_net_params(back)[0] == keep);
    free(longer);
    free(again);
    free(st_bytes);
    free(third);
    eml_net_free(net);
    eml_net_free(back);
    eml_cfg_free(cfg);
    free(cfgtext);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_ref_vs_fast),
        cmocka_unit_test(test_running_statistics),
        cmocka_unit_test(test_bad_references_and_shapes),
        cmocka_unit_test(test_darknet_files),
        cmocka_unit_test(test_darknet_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
