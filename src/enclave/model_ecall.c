/*
 * model_ecall.c - MODEL_LOAD: a model owner's encrypted weights, loaded
 * for inference with the key the owner's grant gives this enclave.  The
 * grant opens or nothing is read; a grant that names a network (cfg
 * digest) allows only that one; the weights file must be encrypted under
 * the grant's key in the role "model".  The loaded model (model.h) stays
 * in the enclave until the next MODEL_LOAD; only its digest and size
 * leave (and, through EVALUATE, the digests of its cfg and file, and the
 * model itself encrypted to the release key its owner's grant names, for
 * which a copy of the decrypted weights stays in locked memory; through
 * PREDICT, its outputs on a user's images, to the user, as many as the
 * grant's max_queries allows).
 *
 * Trusted code: the data key lives in locked memory and the decrypted
 * weights are wiped once the model holds them.
 */
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"
#include "enclaveml/model.h"

void eml_rt_model_release_free(eml_enclave *e)
{
    if (e->model_plain != NULL)
        eml_secure_free(e->model_plain,
                        e->model_plain_len ? e->model_plain_len : 1);
    e->model_plain = NULL;
    e->model_plain_len = 0;
    e->model_has_release = 0;
    memset(e->model_release_to, 0, 32);
}

/* Opens the grant; it must allow this network. */
static eml_status open_model_grant(eml_enclave *e,
                                   const eml_ecall_model_load *q,
                                   const uint8_t cfg_hash[32],
                                   eml_grant_info *gi, uint8_t key[32],
                                   eml_err *err)
{
    eml_err gerr = {0};
    eml_status st = eml_grant_open(q->grant.p, q->grant.n, e->measurement,
                                   e->sec->x_sk, e->x_pk, gi, key, &gerr);
    if (st != EML_OK)
        return eml_err_set(err, st, "the model's grant: %s",
                           eml_err_msg(&gerr, st));
    if (gi->has_cfg_digest && !eml_ct_equal(gi->cfg_digest, cfg_hash, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's grant allows only another network "
                           "(its cfg digest differs from this cfg)");
    if (gi->has_max_evaluations || gi->has_min_examples)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's grant sets evaluation limits, which "
                           "only a test set's grant may");
    return EML_OK;
}

eml_status eml_rt_ecall_model_load(eml_enclave *e, eml_msg_any *req,
                                   eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    /* the server and a queue worker borrow the model */
    if (e->server != NULL || e->qworker != NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "the model being served cannot be replaced");
    eml_ecall_model_load q = req->m_MODEL_LOAD;
    /* The cfg text lies in the received frame, which the file ocalls
     * reuse: copy it first. */
    uint8_t *cfg = malloc(q.cfg_text.n ? q.cfg_text.n : 1);
    uint8_t *key = eml_secure_alloc(32);
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    owner_file f;
    memset(&f, 0, sizeof(f));
    eml_model *m = NULL;
    size_t cfg_len = q.cfg_text.n;
    uint8_t cfg_hash[32];
    eml_status st = EML_OK;
    if (cfg == NULL || key == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    if (st == EML_OK) {
        memcpy(cfg, q.cfg_text.p, cfg_len);
        st = eml_sha256(cfg_hash, cfg, cfg_len);
        if (st != EML_OK) st = eml_err_set(err, st, "hash failed");
    }
    if (st == EML_OK) st = open_model_grant(e, &q, cfg_hash, &gi, key, err);
    if (st == EML_OK)
        st = eml_rt_read_sealed_file(e, EML_FILE_MODEL,
                                     EML_CONTAINER_ROLE_MODEL, "the model",
                                     key, gi.key_id, NULL, &f, err);
    if (key != NULL) eml_secure_free(key, 32);
    uint8_t file_hash[32];
    memcpy(file_hash, f.digest, 32); /* f is wiped below */
    if (st == EML_OK)
        st = eml_model_load(cfg, cfg_len, "cfg", f.plain, f.len, "the model",
                            &m, err);
    /* A model its owner lets EVALUATE release keeps its weights as they
     * were encrypted, so that the buyer gets the owner's file's contents. */
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (st == EML_OK && gi.has_release_to) {
        plain_len = f.len;
        plain = eml_secure_alloc(plain_len ? plain_len : 1);
        if (plain == NULL)
            st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        else
            memcpy(plain, f.plain, plain_len);
    }
    eml_rt_owner_file_free(&f);
    free(cfg);
    if (st != EML_OK) {
        eml_model_free(m);
        return st;
    }
    eml_model_free(e->model);
    eml_rt_model_release_free(e);
    e->model = m;
    e->model_has_release = gi.has_release_to;
    memcpy(e->model_release_to, gi.release_to, 32);
    e->model_plain = plain;
    e->model_plain_len = plain_len;
    e->model_max_queries = gi.has_max_queries ? gi.max_queries : 0;
    memcpy(e->model_cfg_sha256, cfg_hash, 32);
    memcpy(e->model_file_sha256, file_hash, 32);
    memcpy(e->model_grant_id, gi.grant_id, 16);
    eml_reply_model_loaded a;
    memcpy(a.model_sha256, eml_model_sha256(m), 32);
    a.parameters = eml_model_param_count(m);
    return eml_rt_reply(e, EML_MSG_MODEL_LOADED, &a, sizeof(a), err);
}
