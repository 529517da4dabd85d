/*
 * darknet-oracle.c - what Darknet itself says about its own cfg files: for
 * each file, its layer count, trainable parameters (weights, biases and
 * batch-norm scales of convolutional and connected layers) and the sum of
 * the convolutional layers' FLOPs by the formula Darknet prints them with
 * (2 n size^2 c/groups out_h out_w).  It calls Debian's libdarknet
 * (package darknet, git 2018-09-14) through its public header; the
 * package's OpenCV dependencies are stubbed out, as parsing never calls
 * them.  scripts/darknet-oracle.sh builds and runs it; its output is
 * tests/data/darknet-expected.tsv.  With --fixture it also makes a small
 * network's .weights file and Darknet's own output for one input
 * (tests/data/darknet-small.*).  A tool, not part of enclaveml.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "darknet.h"

/* Deterministic values in [-1, 1). */
static float value(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 23) - 1.0f;
}

/* `oracle --fixture CFG OUT`: gives CFG's network deterministic
 * parameters (rolling variances in [0.5, 1.5)), saves them as
 * OUT.weights, and writes Darknet's inference output for a deterministic
 * input as OUT.out (one %.9g per line) after the input as OUT.in. */
static int fixture(char *cfg, const char *out)
{
    network *net = parse_network_cfg(cfg);
    set_batch_network(net, 1);
    unsigned st = 12345;
    for (int j = 0; j < net->n; j++) {
        layer *l = &net->layers[j];
        int nb = l->type == CONVOLUTIONAL ? l->n : l->outputs;
        if (l->type != CONVOLUTIONAL && l->type != CONNECTED) continue;
        for (int i = 0; i < l->nweights; i++) l->weights[i] = value(&st);
        if (l->type == CONNECTED)
            for (int i = 0; i < l->inputs * l->outputs; i++)
                l->weights[i] = value(&st);
        for (int i = 0; i < nb; i++) l->biases[i] = value(&st);
        if (l->batch_normalize)
            for (int i = 0; i < nb; i++) {
                l->scales[i] = value(&st) + 1.5f;
                l->rolling_mean[i] = value(&st);
                l->rolling_variance[i] = value(&st) * 0.5f + 1.0f;
            }
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s.weights", out);
    save_weights(net, path);
    int n = net->inputs;
    float *x = calloc((size_t)n, sizeof(float));
    for (int i = 0; i < n; i++) x[i] = value(&st) * 0.5f + 0.5f;
    snprintf(path, sizeof(path), "%s.in", out);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < n; i++) fprintf(f, "%.9g\n", x[i]);
    fclose(f);
    net->train = 0;
    float *y = network_predict(net, x);
    snprintf(path, sizeof(path), "%s.out", out);
    f = fopen(path, "w");
    for (int i = 0; i < net->outputs; i++) fprintf(f, "%.9g\n", y[i]);
    fclose(f);
    free(x);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--fixture") == 0)
        return fixture(argv[2], argv[3]);
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
