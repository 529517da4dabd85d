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
    /* Darknet's colour jitter and detection keys: accepted, said once. */
    static int warned;
    if (st == EML_OK && (*out)->ignored[0] != '\0' && !warned) {
        warned = 1;
        fprintf(stderr,
                "enclaveml: warning: %s: ignored (Darknet's colour and "
                "detection augmentation; enclaveml applies only flip, "
                "min_crop, max_crop, angle and aspect): %s\n",
                path, (*out)->ignored);
    }
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
