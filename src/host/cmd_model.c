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
#include "host/cmd_enclave.h"
#include "host/cmd_outsource.h"
#include "host/fileio.h"
#include "host/hostio.h"
#include "host/json.h"
#include "enclaveml/crypto.h"
#include "enclaveml/idx.h"
#include "enclaveml/net.h"
#include "enclaveml/model.h"
#include "enclaveml/train.h"

#define EXIT_USAGE 2

/* ==== eval ==== */

static const char eval_usage[] =
    "usage: enclaveml eval --cfg F --weights W.safetensors [--data DIR]\n"
    "                      [--batch N] [--threads N] [--kernels ref|fast]\n"
    "                      [--precision fp32|int8|bf16 [--calibrate N]]\n"
    "                      [--json] [--outsource ADDR\n"
    "                      [--outsource-mode private|integrity]\n"
    "                      [--outsource-min-intensity N]]\n"
    "\n"
    "Evaluates the weights on the t10k test pair in DIR; prints\n"
    "test_accuracy, test_loss and count.  --outsource sends the linear\n"
    "layers' products to a worker (tcp:HOST:PORT or unix:PATH) and checks\n"
    "every one (docs/outsource.md); private (the default) blinds the\n"
    "inputs with one-time pads, integrity shows them to the worker.\n"
    "--precision int8 runs the convolutions' and connected layers'\n"
    "products in int8 (weights per output channel, inputs with scales\n"
    "calibrated on the first --calibrate N training images of DIR,\n"
    "default 1000; docs/cfg.md, \"Reduced precision\"); bf16 rounds\n"
    "their weights and inputs to bfloat16.\n";

enum { O_PRECISION = 2000, O_CALIBRATE };

/* --precision and --calibrate of eval and predict: 1 if opt was one of
 * them, -1 on a bad value (said), 0 otherwise. */
static int precision_opt(int opt, const char *arg, const char *cmd,
                         eml_precision *prec, long *calibrate)
{
    if (opt == O_PRECISION) {
        if (eml_precision_parse(arg, prec) == EML_OK) return 1;
        eml_fail("%s: --precision: '%s' is not one of: fp32, int8, bf16", cmd,
                 arg);
        return -1;
    }
    if (opt == O_CALIBRATE)
        return eml_opt_long("--calibrate", arg, 1, 1000000, calibrate) ? -1
                                                                        : 1;
    return 0;
}

/* Calibrates on the first `calibrate` training images of c->data and
 * switches the net to prec (nothing for fp32). */
static eml_status quantize_from(const eml_common_opts *c, eml_net *net,
                                eml_precision prec, long calibrate,
                                eml_err *err)
{
    if (prec == EML_PREC_FP32) return EML_OK;
    if (prec == EML_PREC_BF16) return eml_net_set_precision(net, prec, err);
    eml_labelled cal;
    memset(&cal, 0, sizeof(cal));
    eml_status st = eml_labelled_load(c->data, "train", &cal, err);
    if (st == EML_OK)
        st = eml_quantize_on(net, &cal.set, (size_t)calibrate, prec, err);
    eml_labelled_free(&cal);
    return st;
}

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
        {"outsource", required_argument, 0, OPT_OUTSOURCE},
        {"outsource-mode", required_argument, 0, OPT_OUTSOURCE_MODE},
        {"outsource-min-intensity", required_argument, 0,
         OPT_OUTSOURCE_MIN_INTENSITY},
        {"precision", required_argument, 0, O_PRECISION},
        {"calibrate", required_argument, 0, O_CALIBRATE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    eml_common_opts c;
    eml_common_init(&c);
    eml_precision prec = EML_PREC_FP32;
    long calibrate = 1000;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(&c, opt, optarg, "eval");
        if (r < 0) return 1;
        if (r > 0) continue;
        if (opt == OPT_HELP) {
            fputs(eval_usage, stdout);
            return 0;
        }
        int q = precision_opt(opt, optarg, "eval", &prec, &calibrate);
        if (q < 0) return 1;
        if (q > 0) continue;
        return eml_opt_unknown("eval", argc, argv);
    }
    if (prec != EML_PREC_FP32 && c.outsource != NULL)
        return eml_fail("eval: --precision %s runs here, not with "
                        "--outsource (its products are exact over a field)",
                        eml_precision_name(prec));
    if (optind < argc)
        return eml_fail("eval: unexpected argument '%s'", argv[optind]);
    if (c.cfg == NULL || c.weights == NULL)
        return eml_fail("eval: --cfg and --weights are required");
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_labelled te;
    memset(&te, 0, sizeof(te));
    eml_err err = {0};
    eml_outsourced os;
    memset(&os, 0, sizeof(os));
    int rc = 1;
    if (eml_build_net(&c, &cfg, &net, c.batch > 0 ? (int)c.batch : 256, 1,
                      prec != EML_PREC_FP32))
        goto out;
    eml_status st = eml_weights_load(net, c.weights, &err);
    if (st == EML_OK) st = eml_labelled_load(c.data, "t10k", &te, &err);
    if (st == EML_OK) st = quantize_from(&c, net, prec, calibrate, &err);
    if (st == EML_OK && eml_outsourced_begin(&c, net, 0, &os)) goto out;
    double loss = 0, acc = 0;
    if (st == EML_OK) st = eml_evaluate(net, &te.set, &loss, &acc, &err);
    eml_outsourced_stop(&os);
    if (st != EML_OK) {
        rc = eml_outsourced_fail(&os, st, &err);
        goto out;
    }
    if (c.json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_num(&j, "test_accuracy", acc);
        eml_json_num(&j, "test_loss", loss);
        eml_json_int(&j, "count", (long long)te.set.count);
        eml_json_str(&j, "precision", eml_precision_name(prec));
        eml_outsourced_json(&os, &c, &j);
        eml_json_end(&j);
    } else {
        printf("test accuracy %.2f%%, test loss %.4f, %zu images\n",
               100.0 * acc, loss, te.set.count);
    }
    rc = 0;
out:
    eml_outsourced_end(&os);
    eml_labelled_free(&te);
    eml_net_free(net);
    eml_cfg_free(cfg);
    return rc;
}

/* ==== predict ==== */

static const char predict_usage[] =
    "usage: enclaveml predict --cfg F --weights W.safetensors --images IDX\n"
    "                         [--limit N] [--threads N]\n"
    "                         [--precision fp32|int8|bf16 [--calibrate N]\n"
    "                          [--data DIR]]\n"
    "                         [--kernels ref|fast] [--json]\n"
    "                         [--outsource ADDR\n"
    "                         [--outsource-mode private|integrity]\n"
    "                         [--outsource-min-intensity N]]\n"
    "\n"
    "Runs the network on the images of an IDX file (gzipped or not) and\n"
    "prints the outputs of the final layer and the argmax predictions.\n"
    "--outsource sends the linear layers' products to a worker\n"
    "(tcp:HOST:PORT or unix:PATH) and checks every one\n"
    "(docs/outsource.md); private (the default) blinds the images with\n"
    "one-time pads, integrity shows them to the worker.  --precision int8\n"
    "calibrates on the first --calibrate N (1000) training images of DIR\n"
    "(docs/cfg.md, \"Reduced precision\").\n"
    "With --model-grant, predict runs an owner's encrypted model on a\n"
    "user's encrypted images inside the enclave (private prediction,\n"
    "docs/evaluate.md; `predict --model-grant GM --help` lists its options).\n";

/* predict's output: JSON (outputs, predictions, what was outsourced), or
 * one "index<TAB>class" line per image. */
static void print_predictions(const eml_common_opts *c,
                              const eml_outsourced *os, size_t count,
                              size_t k, const float *outs,
                              const uint32_t *pred)
{
    if (!c->json) {
        for (size_t i = 0; i < count; i++)
            printf("%zu\t%u\n", i, (unsigned)pred[i]);
        return;
    }
    eml_json j;
    eml_json_begin(&j, stdout);
    eml_json_int(&j, "count", (long long)count);
    eml_json_array_begin(&j, "outputs");
    for (size_t i = 0; i < count; i++) {
        eml_json_array_begin(&j, NULL);
        for (size_t q = 0; q < k; q++) eml_json_num(&j, NULL, outs[i * k + q]);
        eml_json_array_end(&j);
    }
    eml_json_array_end(&j);
    eml_json_array_begin(&j, "predictions");
    for (size_t i = 0; i < count; i++)
        eml_json_int(&j, NULL, (long long)pred[i]);
    eml_json_array_end(&j);
    eml_outsourced_json(os, c, &j);
    eml_json_end(&j);
}

int eml_cmd_predict(int argc, char **argv)
{
    if (eml_predict_wants_enclave(argc, argv))
        return eml_cmd_predict_enclave(argc, argv);
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"weights", required_argument, 0, OPT_WEIGHTS},
        {"images", required_argument, 0, OPT_IMAGES},
        {"limit", required_argument, 0, OPT_LIMIT},
        {"batch", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS},
        {"kernels", required_argument, 0, OPT_KERNELS},
        {"json", no_argument, 0, OPT_JSON},
        {"outsource", required_argument, 0, OPT_OUTSOURCE},
        {"outsource-mode", required_argument, 0, OPT_OUTSOURCE_MODE},
        {"outsource-min-intensity", required_argument, 0,
         OPT_OUTSOURCE_MIN_INTENSITY},
        {"data", required_argument, 0, OPT_DATA},
        {"precision", required_argument, 0, O_PRECISION},
        {"calibrate", required_argument, 0, O_CALIBRATE},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    eml_common_opts c;
    eml_common_init(&c);
    const char *images = NULL;
    long limit = -1, calibrate = 1000;
    eml_precision prec = EML_PREC_FP32;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = eml_common_opt(&c, opt, optarg, "predict");
        if (r < 0) return 1;
        if (r > 0) continue;
        int q = precision_opt(opt, optarg, "predict", &prec, &calibrate);
        if (q < 0) return 1;
        if (q > 0) continue;
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
    if (prec != EML_PREC_FP32 && c.outsource != NULL)
        return eml_fail("predict: --precision %s runs here, not with "
                        "--outsource",
                        eml_precision_name(prec));
    eml_model *model = NULL;
    eml_net *net = NULL;
    eml_idx idx;
    memset(&idx, 0, sizeof(idx));
    eml_err err = {0};
    uint8_t *text = NULL, *wbuf = NULL;
    size_t tlen = 0, wlen = 0;
    uint32_t *pred = NULL;
    float *outs = NULL;
    eml_outsourced os;
    memset(&os, 0, sizeof(os));
    int rc = 1;
    int mb = c.batch > 0 ? (int)c.batch : 256;
    /* The trusted inference path (model.h), as the enclave runs it: a
     * model, one workspace, eml_net_predict. */
    eml_status st = eml_file_read(c.cfg, &text, &tlen, &err);
    if (st == EML_OK) st = eml_file_read(c.weights, &wbuf, &wlen, &err);
    if (st == EML_OK)
        st = eml_model_load(text, tlen, c.cfg, wbuf, wlen, c.weights, &model,
                            &err);
    if (st == EML_OK) st = eml_model_workspace(model, c.kernels, mb, &net, &err);
    if (st == EML_OK) eml_kernels_set_threads(c.threads);
    if (st == EML_OK) st = quantize_from(&c, net, prec, calibrate, &err);
    if (st == EML_OK) st = eml_idx_load(images, &idx, &err);
    if (st == EML_OK && idx.item != eml_net_input_size(net))
        st = eml_err_set(&err, EML_ERR_SHAPE,
                         "%s: images have %zu values each but %s takes %zu",
                         images, idx.item, c.cfg, eml_net_input_size(net));
    size_t count = idx.count;
    if (limit >= 0 && (size_t)limit < count) count = (size_t)limit;
    size_t k = net != NULL ? eml_net_output_size(net) : 0;
    if (st == EML_OK) {
        pred = malloc((count ? count : 1) * sizeof(*pred));
        outs = malloc((count ? count : 1) * k * sizeof(float));
        if (pred == NULL || outs == NULL)
            st = eml_err_set(&err, EML_ERR_NOMEM, "out of memory");
    }
    if (st == EML_OK && eml_outsourced_begin(&c, net, 0, &os)) goto out;
    if (st == EML_OK)
        st = eml_net_predict(net, idx.data, count, idx.item, pred, outs, &err);
    eml_outsourced_stop(&os);
    if (st != EML_OK) {
        rc = eml_outsourced_fail(&os, st, &err);
        goto out;
    }
    print_predictions(&c, &os, count, k, outs, pred);
    rc = 0;
out:
    eml_outsourced_end(&os);
    free(pred);
    free(outs);
    free(text);
    if (wbuf != NULL) eml_wipe(wbuf, wlen);
    free(wbuf);
    eml_idx_free(&idx);
    eml_net_free(net);
    eml_model_free(model);
    return rc;
}

