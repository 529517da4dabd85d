/*
 * darknet_weights.c - a net's parameters to and from Darknet's binary
 * `.weights` format, so that Darknet and Plinius users bring their
 * trained models (and take them back).
 *
 * The format (Darknet 2018, parser.c save_weights/load_weights): a header
 * of three little-endian int32 (major, minor, revision) and the number of
 * images seen (uint64 when major * 10 + minor >= 2 and both are below
 * 1000, int32 otherwise); then, layer after layer in cfg order, float32:
 *   [convolutional]  biases[n], and with batch_normalize scales[n],
 *                    rolling_mean[n], rolling_variance[n]; weights[n c k k]
 *   [connected]      biases[out], weights[out in], and with
 *                    batch_normalize scales, rolling mean and variance
 * Other layers store nothing.  A major or minor above 1000 marks an old
 * file whose connected weights are stored transposed ([in][out]).
 * Darknet's biases are batch norm's beta when batch_normalize=1 (PyTorch's
 * bn.bias), its scales gamma (bn.weight).
 *
 * Decoding is strict where Darknet is lenient: the file must hold exactly
 * the net's values (a short file is refused, not read as zeros), and the
 * parameters change only once everything is checked.  Trusted code fed
 * hostile bytes: memory only, no I/O.  docs/formats.md, "Darknet weights".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "nn/net_internal.h"

#define DW_MAJOR 0
#define DW_MINOR 2

/* The spans of layer l's values in Darknet's order: pointers into the
 * parameters and their counts (at most 5). */
typedef struct span {
    float *p;
    size_t n;
} span;

static int layer_spans(const layer *l, span out[5])
{
    if (l->n_w == 0) return 0;
    int k = 0;
    if (l->type == EML_LAYER_CONVOLUTIONAL) {
        out[k++] = (span){l->b, l->n_b};
        if (l->bn) {
            out[k++] = (span){l->scale, l->n_b};
            out[k++] = (span){l->rmean, l->n_b};
            out[k++] = (span){l->rvar, l->n_b};
        }
        out[k++] = (span){l->wt, l->n_w};
    } else { /* connected */
        out[k++] = (span){l->b, l->n_b};
        out[k++] = (span){l->wt, l->n_w};
    }
    return k;
}

size_t eml_darknet_weights_size(const eml_net *net)
{
    size_t n = 0;
    for (int i = 0; i < net->n_layers; i++) {
        span s[5];
        int k = layer_spans(&net->layers[i], s);
        for (int j = 0; j < k; j++) n += s[j].n;
    }
    return 20 + 4 * n;
}

eml_status eml_darknet_weights_encode(const eml_net *net, uint64_t seen,
                                      uint8_t **out, size_t *len)
{
    size_t total = eml_darknet_weights_size(net);
    uint8_t *b = malloc(total);
    if (b == NULL) return EML_ERR_NOMEM;
    eml_put_le32(b, DW_MAJOR);
    eml_put_le32(b + 4, DW_MINOR);
    eml_put_le32(b + 8, 0);
    eml_put_le64(b + 12, seen);
    size_t at = 20;
    for (int i = 0; i < net->n_layers; i++) {
        span s[5];
        int k = layer_spans(&net->layers[i], s);
        for (int j = 0; j < k; j++)
            for (size_t v = 0; v < s[j].n; v++, at += 4) {
                uint32_t u;
                memcpy(&u, &s[j].p[v], 4);
                eml_put_le32(b + at, u);
            }
    }
    *out = b;
    *len = total;
    return EML_OK;
}

static float get_float(const uint8_t *p)
{
    uint32_t u = eml_get_le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

eml_status eml_darknet_weights_decode(eml_net *net, const uint8_t *buf,
                                      size_t len, const char *name,
                                      uint64_t *seen, eml_err *err)
{
    if (net->borrowed)
        return eml_err_set(err, EML_ERR_INVALID, "%s: a borrowed model",
                           name);
    if (len < 16)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: %zu bytes: too short for a Darknet weights "
                           "header",
                           name, len);
    uint32_t major = eml_get_le32(buf), minor = eml_get_le32(buf + 4);
    int wide = major * 10 + minor >= 2 && major < 1000 && minor < 1000;
    int transposed = major > 1000 || minor > 1000;
    size_t head = wide ? 20 : 16;
    size_t values = (eml_darknet_weights_size(net) - 20) / 4;
    size_t have = len >= head ? len - head : 0;
    if (len < head || have != 4 * values)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "%s: holds %zu bytes of values where the cfg's "
                           "network needs %zu (%zu floats): %s",
                           name, have, 4 * values, values,
                           have < 4 * values ? "truncated"
                                             : "bytes left over");
    if (seen != NULL)
        *seen = wide ? eml_get_le64(buf + 12) : eml_get_le32(buf + 12);
    /* Every value is a float: nothing else to check before writing. */
    size_t at = head;
    for (int i = 0; i < net->n_layers; i++) {
        layer *l = &net->layers[i];
        span s[5];
        int k = layer_spans(l, s);
        for (int j = 0; j < k; j++) {
            int tr = transposed && l->type == EML_LAYER_CONNECTED &&
                     s[j].p == l->wt;
            for (size_t v = 0; v < s[j].n; v++, at += 4) {
                size_t dst = v;
                if (tr) /* stored [in][out] */
                    dst = (v % l->n_b) * l->n_in + v / l->n_b;
                s[j].p[dst] = get_float(buf + at);
            }
        }
    }
    eml_net_params_changed(net);
    return EML_OK;
}
