/*
 * model.h - a trained network for inference: a model (the cfg and the
 * parameters, read-only once loaded) and per-request workspaces (an
 * inference-only net over the model's parameters, with its own activation
 * buffers), so that several requests run against one loaded model; and
 * prediction (pixels scaled to [0,1], the forward pass, the argmax).
 *
 * Trusted code: the enclave loads a model through a grant (MODEL_LOAD,
 * edl.h) and serves predictions from it; `enclaveml predict` runs the same
 * functions in this process.
 *
 *     eml_model *m;
 *     eml_model_load(cfg, cfg_len, "net.cfg", w, wlen, "w", &m, &err);
 *     eml_net *ws;                            // one per concurrent request
 *     eml_model_workspace(m, EML_KERNELS_FAST, 256, &ws, &err);
 *     eml_net_predict(ws, images, count, item, labels, NULL, &err);
 *     eml_net_free(ws);
 *     eml_model_free(m);
 */
#ifndef ENCLAVEML_MODEL_H
#define ENCLAVEML_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/cfg.h"
#include "enclaveml/kernels.h"
#include "enclaveml/net.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eml_model eml_model;

/* Parses the cfg and loads the weights (safetensors bytes: every tensor
 * of the cfg's network, exactly); the names are used in messages. */
EML_MUST_CHECK eml_status eml_model_load(const uint8_t *cfg_text,
                                         size_t cfg_len, const char *cfg_name,
                                         const uint8_t *weights, size_t wlen,
                                         const char *weights_name,
                                         eml_model **out, eml_err *err);
void eml_model_free(eml_model *m); /* wipes the parameters */

const eml_netcfg *eml_model_cfg(const eml_model *m);
size_t eml_model_param_count(const eml_model *m);
size_t eml_model_input_size(const eml_model *m);  /* per example */
size_t eml_model_output_size(const eml_model *m); /* per example */
/* SHA-256 of the weights as loaded. */
const uint8_t *eml_model_sha256(const eml_model *m);
/* The calibration images the model's file carried (EML_CALIB_TENSOR):
 * their count, *x pointing at them (count x input size floats). */
size_t eml_model_calibration(const eml_model *m, const float **x);

/* A workspace for requests of up to max_batch examples: an inference-only
 * net over the model's parameters (eml_net_opts.inference, params_of).
 * Free it with eml_net_free before the model. */
EML_MUST_CHECK eml_status eml_model_workspace(const eml_model *m,
                                              eml_kernels_kind kernels,
                                              int max_batch, eml_net **out,
                                              eml_err *err);

/* Runs the net on count images of item bytes each (C,H,W order, pixels
 * scaled to [0,1]) in batches of its max_batch: labels[i] gets the argmax
 * of image i's outputs (the first on ties), outputs (if not NULL,
 * count x output size) the outputs themselves. */
EML_MUST_CHECK eml_status eml_net_predict(eml_net *net, const uint8_t *images,
                                          size_t count, size_t item,
                                          uint32_t *labels, float *outputs,
                                          eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
