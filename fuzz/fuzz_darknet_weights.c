/*
 * fuzz_darknet_weights.c - libFuzzer target for Darknet's .weights reader
 * (src/nn/darknet_weights.c), against the network of
 * tests/data/darknet-small.cfg (batch norm, shortcut, route, connected).
 *
 * Checks the reader's promises: it accepts exactly the inputs of the
 * network's size (a 16- or 20-byte header by version, then every value),
 * and on success writing the parameters back gives a file of the size the
 * network needs.
 *
 *   ./build-fuzz/fuzz/fuzz_darknet_weights -max_total_time=60 \
 *       fuzz/corpus/darknet_weights
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/cfg.h"
#include "enclaveml/net.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static const char small_cfg[] =
    "[net]\nbatch=1\nheight=8\nwidth=8\nchannels=3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\n"
    "activation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\n"
    "activation=linear\n"
    "[shortcut]\nfrom=-2\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[convolutional]\nfilters=6\nsize=1\nstride=1\npad=1\nactivation=relu\n"
    "[route]\nlayers=-1,-2\n[avgpool]\n"
    "[connected]\noutput=5\nactivation=linear\n[softmax]\n";

static eml_net *net;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_err err = {0};
    if (net == NULL) {
        eml_netcfg *cfg = NULL;
        CHECK(eml_cfg_parse(small_cfg, sizeof(small_cfg) - 1, "small", &cfg,
                            &err) == EML_OK);
        eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1,
                          .inference = 1};
        CHECK(eml_net_new(cfg, &o, &net, &err) == EML_OK);
        eml_cfg_free(cfg);
    }
    size_t body = eml_darknet_weights_size(net) - 20;
    uint64_t seen = 0;
    eml_status st =
        eml_darknet_weights_decode(net, data, size, "fuzz", &seen, &err);
    int wide = 0;
    if (size >= 8) {
        uint32_t major = eml_get_le32(data), minor = eml_get_le32(data + 4);
        wide = major * 10 + minor >= 2 && major < 1000 && minor < 1000;
    }
    int fits = size >= 16 && size == (wide ? 20 : 16) + body;
    CHECK((st == EML_OK) == fits);
    if (st != EML_OK) {
        CHECK(strncmp(err.msg, "fuzz:", 5) == 0);
        return 0;
    }
    uint8_t *out = NULL;
    size_t len = 0;
    CHECK(eml_darknet_weights_encode(net, seen, &out, &len) == EML_OK);
    CHECK(len == 20 + body);
    free(out);
    return 0;
}
