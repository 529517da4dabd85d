/*
 * predict_ecall.c - the PREDICT ecall (docs/evaluate.md, "Private
 * prediction"): private ML as a service.  The model that MODEL_LOAD opened
 * with its provider's grant runs on a user's images, which the user's own
 * grant lets this enclave decrypt; the outputs leave only encrypted to a
 * recipient key that the user's grant names, as a safetensors file with
 * `probabilities` [n, classes] and `predictions` [n] (the argmax).  The
 * model never leaves.  The provider's grant may bound the predictions any
 * one recipient obtains from the model (max_queries: a brake on model
 * extraction), counted in the sealed spend ledger (budget.c) before the
 * predictions leave.
 *
 * Trusted code: no I/O but ocalls; the user's grant is opened and checked
 * before the first ocall (the request frame is reused); the data key lives
 * in locked memory and is wiped once the file is decrypted; the images,
 * the outputs and the plaintext safetensors are wiped when freed; error
 * messages hold no number read from the decrypted file but its count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"
#include "enclaveml/idx.h"
#include "enclaveml/model.h"
#include "enclaveml/safetensors.h"

/* The batch of the forward pass: `enclaveml predict`'s default. */
#define PREDICT_BATCH 256

/* Everything one PREDICT holds, freed (and wiped) by job_free. */
typedef struct predict_job {
    eml_enclave *e;
    uint8_t recipient[32];
    uint8_t *key; /* the user's data key, locked memory, or NULL */
    eml_grant_info g;
    eml_idx images;  /* the user's images, decrypted */
    size_t k;        /* classes: the network's outputs */
    uint32_t *labels;
    float *outputs, *argmax; /* count x k; count */
    uint8_t *st;             /* the safetensors file, plaintext */
    size_t st_len;
    uint8_t query_id[16];
    uint64_t spent;
    eml_reply_predict_done done;
} predict_job;

static void job_free(predict_job *j)
{
    size_t n = j->images.count;
    if (j->key != NULL) eml_secure_free(j->key, 32);
    if (j->images.data != NULL) eml_wipe(j->images.data, n * j->images.item);
    eml_idx_free(&j->images);
    if (j->outputs != NULL) eml_wipe(j->outputs, n * j->k * sizeof(float));
    if (j->argmax != NULL) eml_wipe(j->argmax, n * sizeof(float));
    if (j->labels != NULL) eml_wipe(j->labels, n * sizeof(uint32_t));
    if (j->st != NULL) eml_wipe(j->st, j->st_len);
    free(j->outputs);
    free(j->argmax);
    free(j->labels);
    free(j->st);
    free(j);
}

/* The user's grant opens for this enclave, is not the model's, names the
 * recipient, names no other network, and sets no limit that only an
 * evaluation or the model's grant may carry. */
static eml_status check_grant(predict_job *j, const eml_bytes *grant,
                              eml_err *err)
{
    eml_enclave *e = j->e;
    eml_grant_info *g = &j->g;
    eml_err gerr = {0};
    eml_status st = eml_grant_open(grant->p, grant->n, e->measurement,
                                   e->sec->x_sk, e->x_pk, g, j->key, &gerr);
    if (st != EML_OK)
        return eml_err_set(err, st, "the user's grant: %s",
                           eml_err_msg(&gerr, st));
    if (memcmp(e->model_grant_id, g->grant_id, 16) == 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the user's grant is the model's grant");
    if (!eml_grant_allows_recipient(g, j->recipient))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the user's grant does not name this recipient: "
                           "its owner did not agree that this key gets the "
                           "predictions");
    if (g->has_cfg_digest &&
        !eml_ct_equal(g->cfg_digest, e->model_cfg_sha256, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the user's grant allows only another network "
                           "(its cfg digest differs from the model's cfg)");
    if (g->has_max_epsilon)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the user's grant allows only differentially "
                           "private use (max epsilon %g); predictions are "
                           "exact",
                           g->max_epsilon);
    if (g->has_max_evaluations || g->has_min_examples || g->has_release_to ||
        g->has_max_queries)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the user's grant sets evaluation or query "
                           "limits or a release key, which a prediction's "
                           "data grant may not");
    return EML_OK;
}

/* Reads, authenticates and decrypts the user's images (file id
 * EML_FILE_TEST_IMAGES, role test-images); the key is wiped once done. */
static eml_status read_images(predict_job *j, eml_err *err)
{
    owner_file f;
    memset(&f, 0, sizeof(f));
    eml_status st = eml_rt_read_sealed_file(
        j->e, EML_FILE_TEST_IMAGES, EML_CONTAINER_ROLE_TEST_IMAGES,
        "the user's images", j->key, j->g.key_id, NULL, &f, err);
    eml_secure_free(j->key, 32);
    j->key = NULL;
    if (st == EML_OK)
        st = eml_idx_parse(f.plain, f.len, "the user's images", &j->images,
                           err);
    eml_rt_owner_file_free(&f);
    if (st != EML_OK) return st;
    /* Messages with no number read from the decrypted file. */
    if (j->images.ndims < 2)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the user's images file does not have the "
                           "dimensions of images (2 or more)");
    if (j->images.count == 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the user's images file holds no images");
    if (j->images.item != eml_model_input_size(j->e->model))
        return eml_err_set(err, EML_ERR_SHAPE,
                           "the user's images are not the size of the "
                           "network's input");
    return EML_OK;
}

/* The model's forward pass on the images, in batches. */
static eml_status run_model(predict_job *j, eml_err *err)
{
    size_t n = j->images.count;
    if (n > SIZE_MAX / sizeof(float) / j->k)
        return eml_err_set(err, EML_ERR_RANGE, "too many images");
    j->labels = malloc(n * sizeof(uint32_t));
    j->outputs = malloc(n * j->k * sizeof(float));
    j->argmax = malloc(n * sizeof(float));
    if (j->labels == NULL || j->outputs == NULL || j->argmax == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    eml_net *ws = NULL;
    eml_status st = eml_model_workspace(j->e->model, EML_KERNELS_FAST,
                                        PREDICT_BATCH, &ws, err);
    if (st == EML_OK)
        st = eml_net_predict(ws, j->images.data, n, j->images.item,
                             j->labels, j->outputs, err);
    eml_net_free(ws);
    for (size_t i = 0; st == EML_OK && i < n; i++)
        j->argmax[i] = (float)j->labels[i];
    return st;
}

/* The predictions as a safetensors file (plaintext, in the job). */
static eml_status build_file(predict_job *j, eml_err *err)
{
    eml_st_writer *w = eml_st_writer_new();
    if (w == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    int64_t ps[2] = {(int64_t)j->images.count, (int64_t)j->k};
    int64_t ls[1] = {(int64_t)j->images.count};
    char mh[65];
    eml_hex(mh, eml_model_sha256(j->e->model), 32);
    eml_status st = eml_st_writer_add(w, "probabilities", ps, 2, j->outputs);
    if (st == EML_OK) st = eml_st_writer_add(w, "predictions", ls, 1, j->argmax);
    if (st == EML_OK) st = eml_st_writer_meta(w, "model_sha256", mh);
    if (st == EML_OK) st = eml_st_writer_finish(w, &j->st, &j->st_len);
    eml_st_writer_free(w);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot write the predictions");
    return EML_OK;
}

/* The model grant's max_queries for this recipient: checked (charge 0)
 * or counted (charge 1). */
static eml_status query_limit(predict_job *j, int charge, eml_err *err)
{
    eml_enclave *e = j->e;
    if (e->model_max_queries == 0) return EML_OK;
    return eml_rt_query_limit(e, j->query_id, e->model_max_queries,
                              j->images.count, charge, &j->spent, err);
}

eml_status eml_rt_ecall_predict(eml_enclave *e, eml_msg_any *req,
                                eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    if (e->model == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "no model to predict with (MODEL_LOAD first)");
    size_t k = eml_model_output_size(e->model);
    if (k < 1 || k > EML_EVAL_CLASSES_MAX)
        return eml_err_set(err, EML_ERR_SHAPE,
                           "the network has %zu outputs; a prediction "
                           "takes 1 to %d classes",
                           k, EML_EVAL_CLASSES_MAX);
    predict_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    j->e = e;
    j->k = k;
    memcpy(j->recipient, req->m_PREDICT.recipient, 32);
    eml_status st = EML_OK;
    j->key = eml_secure_alloc(32);
    if (j->key == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    /* The grant lies in the request frame, which the ocalls reuse: it is
     * opened and checked before the first one. */
    if (st == EML_OK) st = check_grant(j, &req->m_PREDICT.grant, err);
    if (st == EML_OK) {
        st = eml_rt_query_key(j->query_id, e->model_grant_id, j->recipient);
        if (st != EML_OK) st = eml_err_set(err, st, "hash failed");
    }
    if (st == EML_OK) st = read_images(j, err);
    if (st == EML_OK) st = query_limit(j, 0, err);
    if (st == EML_OK) st = run_model(j, err);
    if (st == EML_OK) st = build_file(j, err);
    /* Counted (ledger stored, counter advanced) before anything leaves. */
    if (st == EML_OK) st = query_limit(j, 1, err);
    if (st == EML_OK)
        st = eml_rt_send_sealed(e, EML_CONTAINER_ROLE_PREDICTIONS, j->st,
                                j->st_len, j->recipient,
                                j->done.file_sha256, err);
    if (st == EML_OK) {
        j->done.count = j->images.count;
        j->done.classes = k;
        j->done.queries_max = e->model_max_queries;
        j->done.queries_spent =
            e->model_max_queries ? j->spent + j->images.count : 0;
        st = eml_rt_reply(e, EML_MSG_PREDICT_DONE, &j->done,
                          sizeof(j->done), err);
    }
    job_free(j);
    return st;
}
