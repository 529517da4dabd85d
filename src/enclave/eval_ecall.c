/*
 * eval_ecall.c - the EVALUATE ecall (docs/evaluate.md): the model that
 * MODEL_LOAD opened with its owner's grant, evaluated on test sets that
 * other owners grant to this enclave, and a signed evaluation report
 * (accuracy, loss, per-class accuracy, the confusion matrix, and the
 * digests of the cfg, the model's file and every test file).  Every grant
 * is opened and checked before any test file is read; the files are
 * authenticated as owner_data.c reads them; only the report leaves, and,
 * if the model's grant names a release key and the host asks for that
 * key, the model encrypted to it.  A test set's grant may limit the
 * evaluations of any one model (counted in the sealed spend ledger,
 * budget.c, before anything leaves) and require a minimum of examples.
 *
 * Trusted code: no I/O but ocalls; the data keys live in locked memory and
 * are wiped once the files are decrypted; the decrypted test sets are
 * wiped when freed; error messages never hold decrypted content.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"
#include "enclaveml/model.h"
#include "enclaveml/train.h"

/* The batch of the evaluation pass: `enclaveml eval`'s default, so that the
 * two compute the same figures. */
#define EVAL_BATCH 256

/* Everything one EVALUATE holds, freed (and wiped) by job_free. */
typedef struct eval_job {
    eml_enclave *e;
    eml_ecall_evaluate q; /* the request, copied (ocalls reuse the frame) */
    size_t n;             /* test sets (= grants) */
    uint8_t *keys;        /* their data keys, locked memory */
    eml_grant_info *ginfo;
    data_acc test;
    uint8_t digests[EML_OWNERS_MAX][2][32]; /* images, labels ciphertext */
    uint8_t dataset_ids[EML_OWNERS_MAX][EML_CONTAINER_DATASET_ID_BYTES];
    /* The grants' limits on evaluations of this model (docs/evaluate.md,
     * "Limits set in the grants"): counted in the sealed spend ledger. */
    eml_rt_eval_limit limits[EML_OWNERS_MAX];
    size_t n_limits;
    uint8_t release_file_sha256[32]; /* q.release: the container sent */
    size_t k;            /* classes: the network's outputs */
    uint64_t *confusion; /* k x k: [true * k + predicted] */
    double loss, accuracy;
} eval_job;

static void job_free(eval_job *j)
{
    if (j->keys != NULL) eml_secure_free(j->keys, 32 * j->n);
    free(j->ginfo);
    eml_rt_data_acc_free(&j->test);
    free(j->confusion);
    free(j);
}

/* Grant o opens for this enclave, is not a replay of an earlier one in the
 * request, names no other network than the model's, and sets no privacy
 * budget (these figures are exact, not differentially private). */
static eml_status check_grant(eval_job *j, size_t o, eml_err *err)
{
    eml_enclave *e = j->e;
    eml_grant_info *g = &j->ginfo[o];
    eml_err gerr = {0};
    eml_status st = eml_grant_open(j->q.grants[o].p, j->q.grants[o].n,
                                   e->measurement, e->sec->x_sk, e->x_pk, g,
                                   j->keys + 32 * o, &gerr);
    if (st != EML_OK)
        return eml_err_set(err, st, "test set %u's grant: %s",
                           (unsigned)o + 1, eml_err_msg(&gerr, st));
    for (size_t p = 0; p < o; p++)
        if (memcmp(j->ginfo[p].grant_id, g->grant_id, 16) == 0)
            return eml_err_set(err, EML_ERR_AUTH,
                               "test set %u's grant replays test set %u's",
                               (unsigned)o + 1, (unsigned)p + 1);
    if (memcmp(e->model_grant_id, g->grant_id, 16) == 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "test set %u's grant is the model's grant",
                           (unsigned)o + 1);
    if (g->has_cfg_digest &&
        !eml_ct_equal(g->cfg_digest, e->model_cfg_sha256, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "test set %u's grant allows only another network "
                           "(its cfg digest differs from the model's cfg)",
                           (unsigned)o + 1);
    if (g->has_max_epsilon)
        return eml_err_set(err, EML_ERR_AUTH,
                           "test set %u's grant allows only differentially "
                           "private use (max epsilon %g); an evaluation's "
                           "figures are exact",
                           (unsigned)o + 1, g->max_epsilon);
    if (g->has_release_to || g->has_max_queries)
        return eml_err_set(err, EML_ERR_AUTH,
                           "test set %u's grant names a release key or a "
                           "query limit, which only the model's grant may",
                           (unsigned)o + 1);
    if (g->has_max_evaluations) {
        eml_rt_eval_limit *l = &j->limits[j->n_limits];
        st = eml_rt_eval_key(l->id, g->grant_id, eml_model_sha256(e->model));
        if (st != EML_OK) return eml_err_set(err, st, "hash failed");
        l->max = g->max_evaluations;
        l->set = (unsigned)o;
        j->n_limits++;
    }
    return EML_OK;
}

/* Every grant's min_examples: the test sets together must count that
 * many, so that a report never singles out a few of an owner's examples.
 * The message holds no number read from the decrypted files. */
static eml_status check_min_examples(const eval_job *j, eml_err *err)
{
    for (size_t o = 0; o < j->n; o++) {
        const eml_grant_info *g = &j->ginfo[o];
        if (g->has_min_examples && (uint64_t)j->test.count < g->min_examples)
            return eml_err_set(err, EML_ERR_AUTH,
                               "test set %u's owner allows only evaluations "
                               "that count at least %llu examples; these "
                               "test sets hold fewer",
                               (unsigned)o + 1,
                               (unsigned long long)g->min_examples);
    }
    return EML_OK;
}

/* Reads, authenticates and decrypts every owner's test images and labels
 * (file ids o * 4 + kind); the keys are wiped once done with. */
static eml_status read_test_sets(eval_job *j, eml_err *err)
{
    eml_status st = EML_OK;
    for (size_t o = 0; o < j->n && st == EML_OK; o++) {
        owner_file img, lab;
        memset(&img, 0, sizeof(img));
        memset(&lab, 0, sizeof(lab));
        uint64_t base = (uint64_t)o * EML_FILE_KINDS;
        char wi[48], wl[48];
        snprintf(wi, sizeof(wi), "test set %u's images", (unsigned)o + 1);
        snprintf(wl, sizeof(wl), "test set %u's labels", (unsigned)o + 1);
        st = eml_rt_read_sealed_file(
            j->e, base + EML_FILE_TEST_IMAGES, EML_CONTAINER_ROLE_TEST_IMAGES,
            wi, j->keys + 32 * o, j->ginfo[o].key_id, NULL, &img, err);
        if (st == EML_OK)
            st = eml_rt_read_sealed_file(
                j->e, base + EML_FILE_TEST_LABELS,
                EML_CONTAINER_ROLE_TEST_LABELS, wl, j->keys + 32 * o,
                j->ginfo[o].key_id, img.dataset_id, &lab, err);
        for (size_t p = 0; p < o && st == EML_OK; p++)
            if (memcmp(j->digests[p][0], img.digest, 32) == 0)
                st = eml_err_set(err, EML_ERR_AUTH,
                                 "test set %u's images are test set %u's "
                                 "file (a test set counted twice)",
                                 (unsigned)o + 1, (unsigned)p + 1);
        if (st == EML_OK) {
            memcpy(j->digests[o][0], img.digest, 32);
            memcpy(j->digests[o][1], lab.digest, 32);
            memcpy(j->dataset_ids[o], img.dataset_id,
                   sizeof(j->dataset_ids[o]));
            char what[32];
            snprintf(what, sizeof(what), "test set %u", (unsigned)o + 1);
            st = eml_rt_data_acc_add(&j->test, &img, &lab, what, err);
        }
        eml_rt_owner_file_free(&img);
        eml_rt_owner_file_free(&lab);
    }
    eml_secure_free(j->keys, 32 * j->n);
    j->keys = NULL;
    if (st != EML_OK) return st;
    if (j->test.count == 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the test sets hold no images");
    /* Checked here, with messages that hold no number read from the
     * decrypted files (eml_dataset_check's would). */
    if (j->test.item != eml_model_input_size(j->e->model))
        return eml_err_set(err, EML_ERR_SHAPE,
                           "the test images are not the size of the "
                           "network's input");
    for (size_t i = 0; i < j->test.count; i++)
        if (j->test.labels[i] >= j->k)
            return eml_err_set(err, EML_ERR_RANGE,
                               "a test label is not one of the network's "
                               "%zu classes",
                               j->k);
    return EML_OK;
}

/* The loaded model on the test sets, in an inference workspace. */
static eml_status run_eval(eval_job *j, eml_err *err)
{
    eml_net *ws = NULL;
    eml_status st = eml_model_workspace(j->e->model, EML_KERNELS_FAST,
                                        EVAL_BATCH, &ws, err);
    if (st != EML_OK) return st;
    eml_dataset te = {j->test.count, j->test.item, j->test.images,
                      j->test.labels};
    st = eml_evaluate_confusion(ws, &te, &j->loss, &j->accuracy,
                                j->confusion, err);
    eml_net_free(ws);
    return st;
}

/* The report's per-class members: examples and accuracy per class ("-"
 * for a class with none), and the confusion matrix, rows (true classes)
 * separated by ';', columns (predictions) by ','. */
static void report_classes(const eval_job *j, char *body, size_t bcap,
                           size_t *at)
{
    size_t k = j->k;
    eml_rt_append(body, bcap, at, ",\"class_examples\":\"");
    for (size_t t = 0; t < k; t++) {
        uint64_t row = 0;
        for (size_t p = 0; p < k; p++) row += j->confusion[t * k + p];
        eml_rt_append(body, bcap, at, "%s%llu", t ? "," : "",
                      (unsigned long long)row);
    }
    eml_rt_append(body, bcap, at, "\",\"class_accuracy\":\"");
    for (size_t t = 0; t < k; t++) {
        uint64_t row = 0;
        for (size_t p = 0; p < k; p++) row += j->confusion[t * k + p];
        if (row == 0)
            eml_rt_append(body, bcap, at, "%s-", t ? "," : "");
        else
            eml_rt_append(body, bcap, at, "%s%.9g", t ? "," : "",
                          (double)j->confusion[t * k + t] / (double)row);
    }
    eml_rt_append(body, bcap, at, "\",\"confusion\":\"");
    for (size_t t = 0; t < k; t++)
        for (size_t p = 0; p < k; p++)
            eml_rt_append(body, bcap, at, "%s%llu",
                          p ? "," : (t ? ";" : ""),
                          (unsigned long long)j->confusion[t * k + p]);
    eml_rt_append(body, bcap, at, "\"");
}

/* The report's per-test-set lists: the SHA-256 of each set's images and
 * labels files as read (ciphertext), their dataset ids and grant ids. */
static void report_sets(const eval_job *j, char *body, size_t bcap,
                        size_t *at)
{
    eml_rt_append(body, bcap, at, ",\"datasets\":\"");
    for (size_t o = 0; o < j->n; o++)
        for (int f = 0; f < 2; f++) {
            char dh[65];
            eml_hex(dh, j->digests[o][f], 32);
            eml_rt_append(body, bcap, at, "%s%s", (o || f) ? "," : "", dh);
        }
    eml_rt_append(body, bcap, at, "\",\"dataset_ids\":\"");
    for (size_t o = 0; o < j->n; o++) {
        char dh[2 * EML_CONTAINER_DATASET_ID_BYTES + 1];
        eml_hex(dh, j->dataset_ids[o], EML_CONTAINER_DATASET_ID_BYTES);
        eml_rt_append(body, bcap, at, "%s%s", o ? "," : "", dh);
    }
    eml_rt_append(body, bcap, at, "\",\"grants\":\"");
    for (size_t o = 0; o < j->n; o++) {
        char gh[33];
        eml_hex(gh, j->ginfo[o].grant_id, 16);
        eml_rt_append(body, bcap, at, "%s%s", o ? "," : "", gh);
    }
    eml_rt_append(body, bcap, at, "\"");
    if (j->q.release) {
        char rh[65], fh[65];
        eml_hex(rh, j->q.release_to, 32);
        eml_hex(fh, j->release_file_sha256, 32);
        eml_rt_append(body, bcap, at,
                      ",\"released_to\":\"%s\",\"released_file_sha256\":"
                      "\"%s\"",
                      rh, fh);
    }
}

/* The model's release key must be the one its owner's grant names. */
static eml_status check_release(const eval_job *j, eml_err *err)
{
    const eml_enclave *e = j->e;
    if (!j->q.release) return EML_OK;
    if (!e->model_has_release || e->model_plain == NULL)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's grant allows no release (its owner "
                           "named no release key: grant --release-to)");
    if (!eml_ct_equal(e->model_release_to, j->q.release_to, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's grant allows a release to another "
                           "key only");
    return EML_OK;
}

/* The signed evaluation report, sent as EVALUATE_DONE. */
static eml_status send_report(eval_job *j, eml_err *err)
{
    eml_enclave *e = j->e;
    /* Every number below fits in 24 characters with its separator. */
    size_t bcap = 2048 + 2 * EML_NONCE_MAX + j->n * (2 * 65 + 34 + 34) +
                  (j->q.release ? 256 : 0) +
                  j->k * 48 + j->k * j->k * 24;
    char *body = malloc(bcap);
    if (body == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    char meas[65], edh[65], ch[65], mh[65], mfh[65], gh[33];
    char nh[2 * EML_NONCE_MAX + 1];
    eml_hex(meas, e->measurement, 32);
    eml_hex(edh, e->ed_pk, 32);
    eml_hex(ch, e->model_cfg_sha256, 32);
    eml_hex(mh, eml_model_sha256(e->model), 32);
    eml_hex(mfh, e->model_file_sha256, 32);
    eml_hex(gh, e->model_grant_id, 16);
    eml_hex(nh, j->q.report_nonce, j->q.report_nonce_len);
    uint64_t correct = 0;
    for (size_t t = 0; t < j->k; t++) correct += j->confusion[t * j->k + t];
    size_t at = 0;
    eml_rt_append(body, bcap, &at,
        "{\"type\":\"enclaveml-evaluation-report\",\"version\":1,"
        "\"sim\":%s,\"measurement\":\"%s\",\"ed25519\":\"%s\","
        "\"report_nonce\":\"%s\",\"cfg_sha256\":\"%s\","
        "\"model_sha256\":\"%s\",\"model_file_sha256\":\"%s\","
        "\"model_grant\":\"%s\",\"parameters\":%zu,\"test_sets\":%zu,"
        "\"examples\":%zu,\"correct\":%llu,\"accuracy\":%.9g,"
        "\"loss\":%.9g,\"classes\":%zu",
        e->sim ? "true" : "false", meas, edh, nh, ch, mh, mfh, gh,
        eml_model_param_count(e->model), j->n, j->test.count,
        (unsigned long long)correct, j->accuracy, j->loss, j->k);
    report_classes(j, body, bcap, &at);
    report_sets(j, body, bcap, &at);
    if (at + 1 >= bcap) { /* cannot happen: bcap covers every member */
        free(body);
        return eml_err_set(err, EML_ERR_RANGE,
                           "the evaluation report outgrew its buffer");
    }
    char *report = NULL;
    size_t rlen = 0;
    eml_status st = eml_report_sign(body, e->sec->ed_sk, &report, &rlen);
    free(body);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot sign the evaluation report");
    eml_reply_evaluate_done done = {{(const uint8_t *)report, rlen}};
    st = eml_rt_reply(e, EML_MSG_EVALUATE_DONE, &done, sizeof(done), err);
    free(report);
    return st;
}

eml_status eml_rt_ecall_evaluate(eml_enclave *e, eml_msg_any *req,
                                 eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    if (e->model == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "no model to evaluate (MODEL_LOAD first)");
    size_t k = eml_model_output_size(e->model);
    if (k < 1 || k > EML_EVAL_CLASSES_MAX)
        return eml_err_set(err, EML_ERR_SHAPE,
                           "the network has %zu outputs; an evaluation "
                           "takes 1 to %d classes",
                           k, EML_EVAL_CLASSES_MAX);
    eval_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    j->e = e;
    j->q = req->m_EVALUATE;
    j->n = j->q.n_grants; /* 1..EML_OWNERS_MAX: the codec checked it */
    j->k = k;
    eml_status st = EML_OK;
    j->keys = eml_secure_alloc(32 * j->n);
    j->ginfo = calloc(j->n, sizeof(*j->ginfo));
    j->confusion = calloc(k * k, sizeof(*j->confusion));
    if (j->keys == NULL || j->ginfo == NULL || j->confusion == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    /* The grants lie in the request frame, which the file ocalls reuse:
     * every one is opened and checked before the first ocall. */
    for (size_t o = 0; o < j->n && st == EML_OK; o++)
        st = check_grant(j, o, err);
    /* A release the model's grant does not allow, and a spent limit, are
     * refused before any file is read; the count is taken (ledger stored,
     * counter advanced) before the model or the report leaves. */
    if (st == EML_OK) st = check_release(j, err);
    if (st == EML_OK)
        st = eml_rt_eval_limits(e, j->limits, j->n_limits, 0, err);
    if (st == EML_OK) st = read_test_sets(j, err);
    if (st == EML_OK) st = check_min_examples(j, err);
    if (st == EML_OK) st = run_eval(j, err);
    if (st == EML_OK)
        st = eml_rt_eval_limits(e, j->limits, j->n_limits, 1, err);
    if (st == EML_OK && j->q.release)
        st = eml_rt_send_model(e, e->model_plain, e->model_plain_len,
                               j->q.release_to, j->release_file_sha256, err);
    if (st == EML_OK) st = send_report(j, err);
    job_free(j);
    return st;
}
