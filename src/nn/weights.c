/*
 * weights.c - a net's parameters to and from safetensors bytes.
 *
 * Every tensor of the net by name (layers.<i>.weight / .bias, PyTorch
 * shapes), and optionally the model owner's calibration images for int8
 * (EML_CALIB_TENSOR).  Decoding checks everything before it touches the
 * parameters: a missing tensor, an extra one or a shape that differs is
 * an error naming the tensor and both shapes.  Trusted code: memory only,
 * no I/O.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/net.h"
#include "enclaveml/safetensors.h"

eml_status eml_weights_encode_calib(eml_net *net, const float *x, size_t n,
                                    uint8_t **out, size_t *len)
{
    if (n > EML_CALIB_MAX) return EML_ERR_RANGE;
    eml_st_writer *w = eml_st_writer_new();
    if (w == NULL) return EML_ERR_NOMEM;
    eml_status st = eml_st_writer_meta(w, "format", "enclaveml");
    const float *params = eml_net_params(net);
    for (size_t i = 0; st == EML_OK && i < eml_net_tensor_count(net); i++) {
        const eml_net_tensor *t = eml_net_tensor_get(net, i);
        st = eml_st_writer_add(w, t->name, t->shape, t->ndims,
                               params + t->offset);
    }
    if (st == EML_OK && n > 0) {
        int c, h, wd;
        eml_net_input_dims(net, &c, &h, &wd);
        int64_t shape[4] = {(int64_t)n, c, h, wd};
        st = eml_st_writer_add(w, EML_CALIB_TENSOR, shape, 4, x);
    }
    if (st == EML_OK) st = eml_st_writer_finish(w, out, len);
    eml_st_writer_free(w);
    return st;
}

eml_status eml_weights_encode(eml_net *net, uint8_t **out, size_t *len)
{
    return eml_weights_encode_calib(net, NULL, 0, out, len);
}

/* The calibration tensor's shape fits the net: [N, c, h, w]. */
static int calib_shape_ok(const eml_net *net, const eml_st_tensor *f)
{
    int c, h, w;
    eml_net_input_dims(net, &c, &h, &w);
    return f->ndims == 4 && f->shape[0] >= 1 &&
           f->shape[0] <= EML_CALIB_MAX && f->shape[1] == c &&
           f->shape[2] == h && f->shape[3] == w;
}

static void shape_str(char *buf, size_t cap, const int64_t *shape, int nd)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int d = 0; d < nd && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "",
                              (long long)shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

eml_status eml_weights_decode(eml_net *net, const uint8_t *buf, size_t len,
                              const char *name, eml_err *err)
{
    return eml_weights_decode_calib(net, buf, len, name, NULL, NULL, err);
}

eml_status eml_weights_decode_calib(eml_net *net, const uint8_t *buf,
                                    size_t len, const char *name, float **x,
                                    size_t *n, eml_err *err)
{
    if (x != NULL) *x = NULL;
    if (n != NULL) *n = 0;
    eml_st *st_file = NULL;
    eml_status st = eml_st_parse(buf, len, &st_file, err);
    if (st != EML_OK) {
        char tmp[sizeof(err->msg)];
        snprintf(tmp, sizeof(tmp), "%s: %s", name, eml_err_msg(err, st));
        if (err != NULL) snprintf(err->msg, sizeof(err->msg), "%s", tmp);
        return st;
    }
    /* Check everything before touching the parameters. */
    size_t nt = eml_net_tensor_count(net);
    for (size_t i = 0; i < nt; i++) {
        const eml_net_tensor *t = eml_net_tensor_get(net, i);
        const eml_st_tensor *f = eml_st_find(st_file, t->name);
        if (f == NULL) {
            char b[96];
            shape_str(b, sizeof(b), t->shape, t->ndims);
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: tensor %s is missing (the cfg needs shape "
                             "%s)",
                             name, t->name, b);
            goto out;
        }
        int same = f->ndims == t->ndims;
        for (int d = 0; same && d < t->ndims; d++)
            same = f->shape[d] == t->shape[d];
        if (!same) {
            char a[96], b[96];
            shape_str(a, sizeof(a), f->shape, f->ndims);
            shape_str(b, sizeof(b), t->shape, t->ndims);
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: tensor %s has shape %s but the cfg needs %s",
                             name, t->name, a, b);
            goto out;
        }
    }
    for (size_t i = 0; i < eml_st_count(st_file); i++) {
        const eml_st_tensor *f = eml_st_get(st_file, i);
        int known = 0;
        for (size_t j = 0; j < nt && !known; j++)
            known = strcmp(eml_net_tensor_get(net, j)->name, f->name) == 0;
        if (!known && strcmp(f->name, EML_CALIB_TENSOR) == 0) {
            if (calib_shape_ok(net, f)) continue;
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: tensor %s is not [N, channels, height, "
                             "width] of the cfg's input",
                             name, f->name);
            goto out;
        }
        if (!known) {
            st = eml_err_set(err, EML_ERR_SHAPE,
                             "%s: tensor %s is not part of the cfg's network",
                             name, f->name);
            goto out;
        }
    }
    float *params = eml_net_params(net);
    for (size_t i = 0; i < nt; i++) {
        const eml_net_tensor *t = eml_net_tensor_get(net, i);
        eml_st_copy(params + t->offset, eml_st_find(st_file, t->name));
    }
    eml_net_params_changed(net);
    const eml_st_tensor *cal = eml_st_find(st_file, EML_CALIB_TENSOR);
    if (cal != NULL && x != NULL) {
        size_t count = (size_t)cal->shape[0] * eml_net_input_size(net);
        *x = malloc(count * sizeof(float));
        if (*x == NULL) {
            st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
            goto out;
        }
        eml_st_copy(*x, cal);
        *n = (size_t)cal->shape[0];
    }
out:
    eml_st_free(st_file);
    return st;
}

