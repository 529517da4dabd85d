/*
 * hostio.c - reads cfg, IDX and safetensors files for the host program and
 * checks that what they hold fits the network.  Untrusted side.
 */
#include "host/hostio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enclaveml/safetensors.h"
#include "host/fileio.h"

eml_status eml_cfg_load(const char *path, eml_netcfg **out, eml_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(path, &buf, &len, err);
    if (st != EML_OK) return st;
    st = eml_cfg_parse((const char *)buf, len, path, out, err);
    free(buf);
    return st;
}

eml_status eml_idx_load(const char *path, eml_idx *out, eml_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof(*out));
    eml_status st = eml_file_read(path, &buf, &len, err);
    if (st != EML_OK) return st;
    st = eml_idx_parse(buf, len, path, out, err);
    free(buf);
    return st;
}

/* Finds <dir>/<base> or <dir>/<base>.gz. */
static eml_status find_file(const char *dir, const char *base, char *path,
                            size_t cap, eml_err *err)
{
    snprintf(path, cap, "%s/%s", dir, base);
    if (access(path, R_OK) == 0) return EML_OK;
    snprintf(path, cap, "%s/%s.gz", dir, base);
    if (access(path, R_OK) == 0) return EML_OK;
    return eml_err_set(err, EML_ERR_NOTFOUND,
                       "%s/%s(.gz) not found (install Debian's "
                       "dataset-fashion-mnist or pass --data DIR)",
                       dir, base);
}

eml_status eml_labelled_load(const char *dir, const char *prefix,
                             eml_labelled *out, eml_err *err)
{
    memset(out, 0, sizeof(*out));
    char ipath[4096], lpath[4096], base[64];
    snprintf(base, sizeof(base), "%s-images-idx3-ubyte", prefix);
    eml_status st = find_file(dir, base, ipath, sizeof(ipath), err);
    if (st != EML_OK) return st;
    snprintf(base, sizeof(base), "%s-labels-idx1-ubyte", prefix);
    st = find_file(dir, base, lpath, sizeof(lpath), err);
    if (st != EML_OK) return st;
    st = eml_idx_load(ipath, &out->images, err);
    if (st == EML_OK) st = eml_idx_load(lpath, &out->labels, err);
    if (st != EML_OK) goto fail;
    if (out->images.ndims < 2) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: images need at least 2 dimensions, found %d",
                         ipath, out->images.ndims);
        goto fail;
    }
    if (out->labels.ndims != 1) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: labels must have 1 dimension, found %d", lpath,
                         out->labels.ndims);
        goto fail;
    }
    if (out->images.count != out->labels.count) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s has %zu images but %s has %zu labels", ipath,
                         out->images.count, lpath, out->labels.count);
        goto fail;
    }
    out->set.count = out->images.count;
    out->set.item = out->images.item;
    out->set.images = out->images.data;
    out->set.labels = out->labels.data;
    return EML_OK;
fail:
    eml_labelled_free(out);
    return st;
}

void eml_labelled_free(eml_labelled *l)
{
    eml_idx_free(&l->images);
    eml_idx_free(&l->labels);
    memset(l, 0, sizeof(*l));
}

eml_status eml_weights_encode(eml_net *net, uint8_t **out, size_t *len)
{
    eml_st_writer *w = eml_st_writer_new();
    if (w == NULL) return EML_ERR_NOMEM;
    eml_status st = eml_st_writer_meta(w, "format", "enclaveml");
    const float *params = eml_net_params(net);
    for (size_t i = 0; st == EML_OK && i < eml_net_tensor_count(net); i++) {
        const eml_net_tensor *t = eml_net_tensor_get(net, i);
        st = eml_st_writer_add(w, t->name, t->shape, t->ndims,
                               params + t->offset);
    }
    if (st == EML_OK) st = eml_st_writer_finish(w, out, len);
    eml_st_writer_free(w);
    return st;
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
out:
    eml_st_free(st_file);
    return st;
}

eml_status eml_weights_save(eml_net *net, const char *path, eml_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_weights_encode(net, &buf, &len);
    if (st != EML_OK)
        return eml_err_set(err, st, "%s: cannot encode weights: %s", path,
                           eml_status_str(st));
    st = eml_file_write_atomic(path, buf, len, 0644, err);
    free(buf);
    return st;
}

eml_status eml_weights_load(eml_net *net, const char *path, eml_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(path, &buf, &len, err);
    if (st != EML_OK) return st;
    st = eml_weights_decode(net, buf, len, path, err);
    free(buf);
    return st;
}
