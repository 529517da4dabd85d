/*
 * cmd_model.c - `enclaveml eval` and `enclaveml predict`: a network and
 * its weights (safetensors) on the t10k set, or on the images of any IDX
 * file.  Host side.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/hostio.h"
#include "host/json.h"
#include "enclaveml/idx.h"
#include "enclaveml/net.h"
#include "enclaveml/train.h"

#define EXIT_USAGE 2

/* ==== eval ==== */

static const char eval_usage[] =
    "usage: enclaveml eval --cfg F --weights W.safetensors [--data DIR]\n"
    "                      [--batch N] [--threads N] [--kernels ref|fast]\n"
    "                      [--json]\n"
    "\n"
    "Evaluates the weights on the t10k test pair in DIR; prints\n"
    "test_accuracy, test_loss and count.\n";

int eml_cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"weights", required_argument, 0, OPT_WEIGHTS},
        {"data", required_argument, 0, OPT_DATA},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    eml_common_opts c;
    eml_common_init(&c);
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(&c, opt, optarg, "eval");
        if (r < 0) return 1;
        if (r > 0) continue;
        if (opt == OPT_HELP) {
            fputs(eval_usage, stdout);
            return 0;
        }
        return eml_opt_unknown("eval", argc, argv);
    }
    if (optind < argc)
        return eml_fail("eval: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL || c.weights == NULL)
        return eml_fail("eval: --cfg and --weights are required");
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_labelled te;
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    int rc = 1;
    if (eml_build_net(&c, &cfg, &net, c.batch > 0 ? (int)c.batch : 256, 1))
        goto out;
    eml_status st = eml_weights_load(net, c.weights, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    double loss = 0, acc = 0;
    if (st == EML_OK) st = eml_evaluate(net, &te.set, &loss, &acc, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (c.json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_num(&j, "test_accuracy", acc);
        eml_json_num(&j, "test_loss", loss);
        eml_json_int(&j, "count", (long long)te.set.count);
        eml_json_end(&j);
    } else {
        printf("test accuracy %.2f%%, test loss %.4f, %zu images\n",
               100.0 * acc, loss, te.set.count);
    }
    rc = 0;
out:
    eml_labelled_free(&te);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

/* ==== predict ==== */

static const char predict_usage[] =
    "usage: enclaveml predict --cfg F --weights W.safetensors --images IDX\n"
    "                         [--limit N] [--threads N]\n"
    "                         [--kernels ref|fast] [--json]\n"
    "\n"
    "Runs the network on the images of an IDX file (gzipped or not) and\n"
    "prints the outputs of the final layer and the argmax predictions.\n";

int eml_cmd_predict(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"weights", required_argument, 0, OPT_WEIGHTS},
        {"images", required_argument, 0, OPT_IMAGES},
        {"limit", required_argument, 0, OPT_LIMIT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    eml_common_opts c;
    eml_common_init(&c);
    const char *images = NULL;
    long limit = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(&c, opt, optarg, "predict");
        if (r < 0) return 1;
        if (r > 0) continue;
        switch (opt) {
        case OPT_IMAGES: images = optarg; break;
        case OPT_LIMIT:
            if (eml_opt_long("--limit", optarg, 0, LONG_MAX, &limit)) return 1;
            break;
        case OPT_HELP: fputs(predict_usage, stdout); return 0;
        default: return eml_opt_unknown("predict", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("predict: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL || c.weights == NULL || images == NULL)
        return eml_fail("predict: --cfg, --weights and --images are required");
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_idx idx;
    memset(&idx, 0, sizeof(idx));
    eml_err err = {0};
    int rc = 1;
    int mb = c.batch > 0 ? (int)c.batch : 256;
    if (eml_build_net(&c, &cfg, &net, mb, 1)) goto out;
    eml_status st = eml_weights_load(net, c.weights, &err);
    if (st == EML_OK) st = eml_idx_load(images, &idx, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out;
    }
    if (idx.item != eml_net_input_size(net)) {
        rc = eml_fail("%s: images have %zu values each but %s takes %zu", images,
                  idx.item, c.cfg, eml_net_input_size(net));
        goto out;
    }
    size_t count = idx.count;
    if (limit >= 0 && (size_t)limit < count) count = (size_t)limit;
    size_t k = eml_net_output_size(net);
    eml_json j;
    if (c.json) {
        eml_json_begin(&j, stdout);
        eml_json_int(&j, "count", (long long)count);
        eml_json_array_begin(&j, "outputs");
    }
    size_t *pred = malloc((count ? count : 1) * sizeof(size_t));
    if (pred == NULL) {
        rc = eml_fail("out of memory");
        goto out;
    }
    for (size_t first = 0; first < count; first += (size_t)mb) {
        int n = (int)(count - first < (size_t)mb ? count - first : (size_t)mb);
        float *x = eml_net_input(net);
        const uint8_t *img = idx.data + first * idx.item;
        for (size_t p = 0; p < (size_t)n * idx.item; p++)
            x[p] = (float)img[p] * (1.0f / 255.0f);
        st = eml_net_forward(net, n, 0);
        if (st != EML_OK) {
            free(pred);
            rc = eml_fail("forward pass failed: %s", eml_status_str(st));
            goto out;
        }
        const float *o = eml_net_output(net);
        for (int b = 0; b < n; b++) {
            const float *ob = o + (size_t)b * k;
            size_t best = 0;
            for (size_t q = 0; q < k; q++)
                if (ob[q] > ob[best]) best = q;
            pred[first + (size_t)b] = best;
            if (c.json) {
                eml_json_array_begin(&j, NULL);
                for (size_t q = 0; q < k; q++) eml_json_num(&j, NULL, ob[q]);
                eml_json_array_end(&j);
            }
        }
    }
    if (c.json) {
        eml_json_array_end(&j);
        eml_json_array_begin(&j, "predictions");
        for (size_t i = 0; i < count; i++) eml_json_int(&j, NULL, (long long)pred[i]);
        eml_json_array_end(&j);
        eml_json_end(&j);
    } else {
        for (size_t i = 0; i < count; i++) printf("%zu\t%zu\n", i, pred[i]);
    }
    free(pred);
    rc = 0;
out:
    eml_idx_free(&idx);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

