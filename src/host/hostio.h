/*
 * hostio.h - host-side loaders: cfg files, IDX datasets from a directory,
 * safetensors weights to and from a net.  Untrusted side: these read and
 * write files, then hand bytes to the (trusted-safe) parsers.
 */
#ifndef EML_HOST_HOSTIO_H
#define EML_HOST_HOSTIO_H

#include "enclaveml/cfg.h"
#include "enclaveml/idx.h"
#include "enclaveml/net.h"
#include "enclaveml/status.h"
#include "enclaveml/train.h"

#define EML_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

EML_MUST_CHECK eml_status eml_cfg_load(const char *path, eml_netcfg **out,
                                       eml_err *err);

/* A labelled image set: <dir>/<prefix>-images-idx3-ubyte[.gz] and
 * <dir>/<prefix>-labels-idx1-ubyte[.gz]; prefix "train" or "t10k". */
typedef struct eml_labelled {
    eml_idx images, labels;
    eml_dataset set;
} eml_labelled;

EML_MUST_CHECK eml_status eml_labelled_load(const char *dir,
                                            const char *prefix,
                                            eml_labelled *out, eml_err *err);
void eml_labelled_free(eml_labelled *l);

/* Loads an IDX file (gz or not) by path. */
EML_MUST_CHECK eml_status eml_idx_load(const char *path, eml_idx *out,
                                       eml_err *err);

/* Weights: every tensor of the net, by name; a file that lacks one, has an
 * extra one, or has another shape is an error naming the tensor. */
EML_MUST_CHECK eml_status eml_weights_save(eml_net *net, const char *path,
                                           eml_err *err);
EML_MUST_CHECK eml_status eml_weights_load(eml_net *net, const char *path,
                                           eml_err *err);
#endif
