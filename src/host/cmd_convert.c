/*
 * cmd_convert.c - `enclaveml convert`: a network's weights between
 * Darknet's binary .weights format and safetensors (PyTorch's names and
 * shapes, batch norm as BatchNorm2d's tensors), checked against the cfg
 * both ways.  Untrusted side: plaintext files of the user's own.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/net.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/fileio.h"
#include "host/hostio.h"

static const char convert_usage[] =
    "usage: enclaveml convert --cfg F --from IN --out OUT\n"
    "                         [--calibration DIR [--calibrate N]]\n"
    "\n"
    "Converts the weights of the network in cfg F between Darknet's\n"
    "binary format (.weights) and safetensors (.safetensors), whichever\n"
    "way the file names say.  The file read must hold exactly the cfg's\n"
    "network: a truncated or oversized .weights file, or a tensor of the\n"
    "wrong shape, is an error and nothing is written.  Batch-normalized\n"
    "layers map Darknet's biases, scales, rolling mean and variance to\n"
    "layers.<i>.bn.bias, .bn.weight, .bn.running_mean, .bn.running_var\n"
    "(docs/cfg.md, \"Weight names\").\n"
    "\n"
    "--calibration DIR adds the first --calibrate N (1000) training images\n"
    "of DIR to a .safetensors OUT as calibration.images: an int8 server\n"
    "(`enclaveml serve --precision int8`) calibrates on them inside the\n"
    "enclave, so a model owner's file carries them encrypted with the\n"
    "model.  safetensors to safetensors is allowed with it.\n";

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads IN into the net, whichever format its name says. */
static eml_status convert_read(eml_net *net, const char *in, int darknet,
                               uint64_t *seen, eml_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(in, &buf, &len, err);
    if (st != EML_OK) return st;
    st = darknet ? eml_darknet_weights_decode(net, buf, len, in, seen, err)
                 : eml_weights_decode(net, buf, len, in, err);
    free(buf);
    return st;
}

/* The first n training images of dir, scaled to [0, 1]. */
static eml_status calibration_images(const eml_net *net, const char *dir,
                                     size_t n, float **x, size_t *got,
                                     eml_err *err)
{
    eml_labelled set;
    eml_status st = eml_labelled_load(dir, "train", &set, err);
    if (st != EML_OK) return st;
    size_t item = set.images.item;
    if (item != eml_net_input_size(net)) {
        eml_labelled_free(&set);
        return eml_err_set(err, EML_ERR_SHAPE,
                           "%s: images of %zu values, but the network takes "
                           "%zu",
                           dir, item, eml_net_input_size(net));
    }
    *got = n < set.images.count ? n : set.images.count;
    *x = malloc(*got * item * sizeof(float));
    if (*x == NULL) st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == EML_OK && i < *got * item; i++)
        (*x)[i] = (float)set.images.data[i] * (1.0f / 255.0f);
    eml_labelled_free(&set);
    return st;
}

int eml_cmd_convert(int argc, char **argv)
{
    enum { O_FROM = 1000, O_OUT, O_HELP, O_CALIB_DIR, O_CALIB_N };
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"from", required_argument, 0, O_FROM},
        {"out", required_argument, 0, O_OUT},
        {"calibration", required_argument, 0, O_CALIB_DIR},
        {"calibrate", required_argument, 0, O_CALIB_N},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    const char *cfg_path = NULL, *in = NULL, *out = NULL, *calib = NULL;
    long calib_n = 1000;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_CFG: cfg_path = optarg; break;
        case O_FROM: in = optarg; break;
        case O_OUT: out = optarg; break;
        case O_CALIB_DIR: calib = optarg; break;
        case O_CALIB_N:
            if (eml_opt_long("--calibrate", optarg, 1, EML_CALIB_MAX,
                             &calib_n))
                return 1;
            break;
        case O_HELP: fputs(convert_usage, stdout); return 0;
        default:
            return eml_fail("convert: unknown option '%s' (see enclaveml "
                            "convert --help)",
                            argv[optind - 1]);
        }
    }
    if (optind < argc)
        return eml_fail("convert: unexpected argument '%s'", argv[optind]);
    if (cfg_path == NULL || in == NULL || out == NULL)
        return eml_fail("convert: --cfg, --from and --out are required");
    int from_dk = ends_with(in, ".weights"), to_dk = ends_with(out, ".weights");
    int from_st = ends_with(in, ".safetensors");
    int to_st = ends_with(out, ".safetensors");
    if (!((from_dk && to_st) || (from_st && to_dk) ||
          (calib != NULL && from_st && to_st)))
        return eml_fail("convert: one of --from and --out must end in "
                        ".weights (Darknet) and the other in .safetensors");
    if (calib != NULL && !to_st)
        return eml_fail("convert: --calibration goes into a .safetensors "
                        "--out");
    eml_err err = {0};
    eml_netcfg *cfg = NULL;
    eml_status st = eml_cfg_load(cfg_path, &cfg, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_net_opts no = {.kernels = EML_KERNELS_REF, .max_batch = 1,
                       .inference = 1};
    eml_net *net = NULL;
    st = eml_net_new(cfg, &no, &net, &err);
    eml_cfg_free(cfg);
    if (st != EML_OK) return eml_fail_st(st, &err);
    uint64_t seen = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    st = convert_read(net, in, from_dk, &seen, &err);
    float *cx = NULL;
    size_t cn = 0;
    if (st == EML_OK && calib != NULL)
        st = calibration_images(net, calib, (size_t)calib_n, &cx, &cn, &err);
    if (st == EML_OK)
        st = to_dk ? eml_darknet_weights_encode(net, seen, &buf, &len)
                   : eml_weights_encode_calib(net, cx, cn, &buf, &len);
    free(cx);
    if (st == EML_OK)
        st = eml_file_write_atomic(out, buf, len, 0644, &err);
    size_t params = eml_net_trainable_count(net);
    free(buf);
    eml_net_free(net);
    if (st != EML_OK) return eml_fail_st(st, &err);
    fprintf(stderr, "convert: %s -> %s: %zu parameters%s\n", in, out, params,
            calib != NULL ? ", calibration images" : "");
    return 0;
}
