/*
 * darknet-oracle.c - what Darknet itself says about its own cfg files: for
 * each file, its layer count, trainable parameters (weights, biases and
 * batch-norm scales of convolutional and connected layers) and the sum of
 * the convolutional layers' FLOPs by the formula Darknet prints them with
 * (2 n size^2 c/groups out_h out_w).  It calls Debian's libdarknet
 * (package darknet, git 2018-09-14) through its public header; the
 * package's OpenCV dependencies are stubbed out, as parsing never calls
 * them.  scripts/darknet-oracle.sh builds and runs it; its output is
 * tests/data/darknet-expected.tsv.  A tool, not part of enclaveml.
 */
#include <stdio.h>
#include <string.h>

#include "darknet.h"

int main(int argc, char **argv)
{
    printf("# cfg\tlayers\tparameters\tconv_flops\tinput\n");
    for (int i = 1; i < argc; i++) {
        network *net = parse_network_cfg(argv[i]);
        double flops = 0;
        long long params = 0;
        for (int j = 0; j < net->n; j++) {
            layer *l = &net->layers[j];
            if (l->type == CONVOLUTIONAL) {
                params += (long long)l->nweights + l->n;
                if (l->batch_normalize) params += l->n;
                flops += 2.0 * l->n * l->size * l->size * l->c / l->groups *
                         l->out_h * l->out_w;
            } else if (l->type == CONNECTED) {
                params += (long long)l->inputs * l->outputs + l->outputs;
                if (l->batch_normalize) params += l->outputs;
            }
        }
        const char *base = strrchr(argv[i], '/');
        printf("%s\t%d\t%lld\t%.0f\t%dx%dx%d\n", base ? base + 1 : argv[i],
               net->n, params, flops, net->h, net->w, net->c);
        fflush(stdout);
    }
    return 0;
}
