/*
 * train_ecall.c - the TRAIN ecall: decode the request, open every grant
 * and check what it allows (recipient, network, budget) before any data is
 * read, plan DP, read and authenticate the owners' data, train (with the
 * mirror and the budget's charge hooked in), send the model out encrypted
 * to its recipient, and sign the training report.
 *
 * Trusted code: data keys in locked memory, wiped as soon as the data is
 * decrypted; the plaintext weights never leave except encrypted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/cfg.h"
#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/net.h"
#include "enclaveml/run.h"

typedef struct progress_ctx {
    eml_enclave *e;
    int failed;
    eml_err err; /* why the first PROGRESS did not go out */
} progress_ctx;

static void send_progress(void *user, const eml_train_progress *p)
{
    progress_ctx *pc = user;
    if (pc->failed) return;
    eml_notify_progress m;
    m.p = *p;
    m.resumed = p->resume_event ? p->resumed_step + 1 : 0;
    if (eml_rt_notify(pc->e, EML_MSG_PROGRESS, &m, sizeof(m), &pc->err) !=
        EML_OK)
        pc->failed = 1;
}

/* Everything one TRAIN ecall holds, freed (and wiped) by job_free. */
typedef struct train_job {
    eml_enclave *e;
    eml_ecall_train q;   /* the request, copied (ocalls reuse the frame) */
    uint8_t cfg_hash[32];
    uint8_t *keys;           /* the owners' data keys, locked memory */
    eml_grant_info *ginfo;
    double cap;              /* the smallest max_epsilon, or infinity */
    eml_run *run;
    eml_run_plan_info plan;
    budget bud;
    data_acc train_set, test_set;
    uint8_t digests[EML_OWNERS_MAX][EML_FILE_KINDS][32];
    /* Each owner's dataset id (the same in its four files). */
    uint8_t dataset_ids[EML_OWNERS_MAX][EML_CONTAINER_DATASET_ID_BYTES];
    eml_train_result res;
    uint8_t model_hash[32], model_file_hash[32];
    eml_outsource_stats outsourced; /* spec.outsource: what went out */
    eml_rt_node *node; /* node.enabled: a decentralized node */
} train_job;

static void job_free(train_job *j)
{
    eml_ledger_free(&j->bud.ledger);
    if (j->keys != NULL) eml_secure_free(j->keys, 32 * (size_t)j->q.n_grants);
    free(j->ginfo);
    eml_rt_data_acc_free(&j->train_set);
    eml_rt_data_acc_free(&j->test_set);
    eml_rt_node_free(j->node);
    eml_run_free(j->run); /* parameters are wiped by the allocator */
    free(j);
}

/* Grant o allows this run: it opens, is not a replay of an earlier one,
 * names the recipient and this network, and a budget means DP. */
static eml_status check_grant(train_job *j, uint64_t o, eml_err *err)
{
    eml_enclave *e = j->e;
    eml_grant_info *g = &j->ginfo[o];
    eml_err gerr = {0};
    eml_status st = eml_grant_open(j->q.grants[o].p, j->q.grants[o].n,
                                   e->measurement, e->sec->x_sk, e->x_pk, g,
                                   j->keys + 32 * o, &gerr);
    if (st != EML_OK)
        return eml_err_set(err, st, "grant %u: %s", (unsigned)o + 1,
                           eml_err_msg(&gerr, st));
    for (uint64_t p = 0; p < o; p++)
        if (memcmp(j->ginfo[p].grant_id, g->grant_id, 16) == 0)
            return eml_err_set(err, EML_ERR_AUTH, "grant %u replays grant %u",
                               (unsigned)o + 1, (unsigned)p + 1);
    if (!eml_grant_allows_recipient(g, j->q.recipient))
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant %u does not name this run's recipient: "
                           "its owner did not agree that this key gets "
                           "the model",
                           (unsigned)o + 1);
    if (g->has_cfg_digest && !eml_ct_equal(g->cfg_digest, j->cfg_hash, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant %u allows only another network (its cfg "
                           "digest differs from this run's cfg)",
                           (unsigned)o + 1);
    /* Limits and a release key are for evaluations (docs/evaluate.md);
     * training on such data would step around them. */
    if (g->has_max_evaluations || g->has_min_examples || g->has_release_to ||
        g->has_max_queries)
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant %u is for evaluations only (it sets "
                           "evaluation or query limits or a release key): "
                           "no training",
                           (unsigned)o + 1);
    if (g->has_max_epsilon) {
        if (!j->q.spec.dp.enabled)
            return eml_err_set(err, EML_ERR_AUTH,
                               "grant %u allows only differentially "
                               "private training (max epsilon %g); this "
                               "run is not private",
                               (unsigned)o + 1, g->max_epsilon);
        if (!(j->cap <= g->max_epsilon)) j->cap = g->max_epsilon;
    }
    return EML_OK;
}

/* A budgeted run: the noise must be the enclave's and the sampling what
 * the accountant assumes; the ledger is loaded. */
static eml_status open_budget(train_job *j, eml_err *err)
{
    /* --insecure-seed lets the host choose the noise and the sampling:
     * never against an owner's budget.  Fixed-size batches are not what
     * the accountant assumes (Poisson sampling). */
    if (j->q.spec.dp.insecure_seed)
        return eml_err_set(err, EML_ERR_AUTH,
                           "a grant sets a privacy budget, so the noise "
                           "must come from the enclave's own randomness: "
                           "--insecure-seed is refused");
    if (j->q.spec.dp.fixed_batches)
        return eml_err_set(err, EML_ERR_AUTH,
                           "a grant sets a privacy budget, and the "
                           "accountant's bound holds for Poisson sampling "
                           "only: --dp-fixed-batches is refused");
    j->bud.e = j->e;
    j->bud.g = j->ginfo;
    j->bud.n = j->q.n_grants;
    return eml_rt_ledger_load(&j->bud, 0, err);
}

/* Outsourcing needs every owner's consent (the worker sees activations,
 * weights and gradients), and an address the report can hold. */
static eml_status check_outsource(const train_job *j, eml_err *err)
{
    if (j->q.spec.outsource == 0) return EML_OK;
    eml_status st = eml_outsource_mode_check(
        (eml_outsource_mode)j->q.spec.outsource, 1, err);
    if (st != EML_OK) return st;
    for (uint64_t o = 0; o < j->q.n_grants; o++)
        if (!j->ginfo[o].allow_outsource)
            return eml_err_set(err, EML_ERR_AUTH,
                               "grant %u does not allow outsourcing (its "
                               "owner did not grant --allow-outsource): the "
                               "worker would see the data's activations",
                               (unsigned)o + 1);
    for (size_t i = 0; i < j->q.worker_len; i++) {
        uint8_t c = j->q.worker[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return eml_err_set(err, EML_ERR_FORMAT,
                               "the worker's address has a character a "
                               "report cannot hold");
    }
    return EML_OK;
}

/* Everything decided before any data is decrypted: the grants, the
 * network, the budget, and the DP plan (for the training-set size the
 * label files' headers claim; checked again once they are decrypted). */
static eml_status admit(train_job *j, size_t *claimed, eml_err *err)
{
    eml_status st;
    j->cap = INFINITY;
    /* The node's graph first: it lies in the request frame, which the
     * first ocall reuses. */
    st = eml_rt_node_prepare(j->e, &j->q, &j->node, err);
    if (st != EML_OK) return st;
    for (uint64_t o = 0; o < j->q.n_grants; o++) {
        st = check_grant(j, o, err);
        if (st != EML_OK) return st;
    }
    st = check_outsource(j, err);
    if (st != EML_OK) return st;
    st = eml_run_new(&j->q.spec, j->q.cfg_text.p, j->q.cfg_text.n, "cfg",
                     &j->run, err);
    if (st != EML_OK) return st;
    if (isfinite(j->cap)) {
        st = open_budget(j, err);
        if (st != EML_OK) return st;
    }
    if (j->q.spec.dp.enabled) {
        st = eml_rt_claimed_count(j->e, j->q.n_grants, claimed, err);
        if (st == EML_OK)
            st = eml_run_plan(j->run, *claimed, j->cap, &j->plan, err);
        if (st != EML_OK) return st;
        j->bud.planned = j->plan.planned;
    }
    /* A fresh run is checked here, before any data is decrypted (an early
     * answer: the binding check is made again under the counter lock when
     * it is charged); one that may resume is checked when training starts,
     * once it is known whether it continues a run that was already
     * charged. */
    if (isfinite(j->cap) && !j->q.spec.resume)
        return eml_rt_budget_gate(&j->bud, err);
    return EML_OK;
}

/* Reads, authenticates and decrypts every owner's four files; the data
 * keys are wiped as soon as they are done with. */
static eml_status read_owners(train_job *j, size_t claimed, eml_err *err)
{
    eml_status st = EML_OK;
    for (uint64_t o = 0; o < j->q.n_grants && st == EML_OK; o++) {
        owner_file f[EML_FILE_KINDS];
        memset(f, 0, sizeof(f));
        for (int k = 0; k < EML_FILE_KINDS && st == EML_OK; k++) {
            st = eml_rt_read_owner_file(
                j->e, o * EML_FILE_KINDS + (uint64_t)k, j->keys + 32 * o,
                j->ginfo[o].key_id, k > 0 ? f[0].dataset_id : NULL, &f[k],
                err);
            if (st == EML_OK) memcpy(j->digests[o][k], f[k].digest, 32);
        }
        if (st == EML_OK)
            memcpy(j->dataset_ids[o], f[0].dataset_id,
                   sizeof(j->dataset_ids[o]));
        char what[32];
        snprintf(what, sizeof(what), "owner %u", (unsigned)o + 1);
        if (st == EML_OK)
            st = eml_rt_data_acc_add(&j->train_set, &f[0], &f[1], what, err);
        if (st == EML_OK)
            st = eml_rt_data_acc_add(&j->test_set, &f[2], &f[3], what, err);
        for (int k = 0; k < EML_FILE_KINDS; k++) eml_rt_owner_file_free(&f[k]);
    }
    if (st != EML_OK) return st;
    eml_secure_free(j->keys, 32 * (size_t)j->q.n_grants);
    j->keys = NULL;
    if (j->q.spec.dp.enabled && j->train_set.count != claimed)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the privacy budget was planned for %zu training "
                           "images (from the label files' sizes) but the "
                           "decrypted files hold another number: encrypt "
                           "raw, not gzipped, label files for DP runs",
                           claimed);
    return EML_OK;
}

/* eml_run_train, with spec.outsource: the verifying client at the net's
 * dispatch point over WORKER ocalls, for the training and no longer. */
static eml_status outsourced_train(train_job *j, const eml_dataset *tr,
                                   const eml_dataset *te,
                                   const eml_run_env *env, eml_err *err)
{
    if (j->q.spec.outsource == 0)
        return eml_run_train(j->run, tr, te, env, &j->res, err);
    eml_rt_worker w;
    eml_worker_link link = eml_rt_worker_link(&w, j->e);
    eml_outsource *o = NULL;
    eml_status st = eml_outsource_new(
        &link, (eml_outsource_mode)j->q.spec.outsource, &o, err);
    if (st != EML_OK) return st;
    eml_outsource_set_max_request(o, EML_WORKER_FRAME_MAX);
    eml_outsource_set_min_intensity(o, j->q.spec.outsource_min_intensity);
    eml_gemm_dispatch *d = eml_net_gemm(eml_run_net(j->run));
    eml_gemm_dispatch saved = *d;
    eml_outsource_attach(o, d);
    st = eml_run_train(j->run, tr, te, env, &j->res, err);
    if (st != EML_OK && eml_outsource_error(o)[0] != '\0') {
        if (err != NULL) err->msg[0] = '\0';
        st = eml_err_set(err, EML_ERR_AUTH, "%s", eml_outsource_error(o));
    }
    j->outsourced = *eml_outsource_stats_of(o);
    d->fn = saved.fn;
    d->ctx = saved.ctx;
    eml_outsource_free(o);
    return st;
}

/* Trains (the mirror sealed to this measurement, the budget charged when
 * training starts) and sends the model out encrypted to the recipient. */
static eml_status train_and_send(train_job *j, eml_err *err)
{
    eml_enclave *e = j->e;
    eml_dataset tr = {j->train_set.count, j->train_set.item,
                      j->train_set.images, j->train_set.labels};
    eml_dataset te = {j->test_set.count, j->test_set.item,
                      j->test_set.images, j->test_set.labels};
    progress_ctx pc;
    memset(&pc, 0, sizeof(pc));
    pc.e = e;
    eml_store_ops ops = eml_rt_store_ops(e);
    eml_run_env env;
    memset(&env, 0, sizeof(env));
    env.store = &ops;
    env.seal_secret = e->sec->seal_secret;
    env.measurement = e->measurement;
    if (j->node == NULL) { /* a node reports per round (NODE_REPORT) */
        env.progress = send_progress;
        env.progress_user = &pc;
    }
    if (isfinite(j->cap)) {
        env.on_start = eml_rt_budget_charge;
        env.on_start_user = &j->bud;
    }
    eml_status st = EML_OK;
    if (j->node != NULL)
        st = eml_rt_node_start(j->node, eml_run_net(j->run), &te, &env, err);
    if (st == EML_OK) st = outsourced_train(j, &tr, &te, &env, err);
    if (st != EML_OK && j->node != NULL && eml_rt_node_finished(j->node)) {
        /* The node's last round stopped the trainer: the model is the
         * averaged one; its test figures are taken now. */
        if (err != NULL) memset(err, 0, sizeof(*err));
        st = eml_evaluate(eml_run_net(j->run), &te, &j->res.test_loss,
                          &j->res.test_accuracy, err);
    }
    if (st != EML_OK) return st;
    if (pc.failed)
        return eml_err_set(err, EML_ERR_IO,
                           "lost the host during training (%s)", pc.err.msg);
    uint8_t *weights = NULL;
    size_t wlen = 0;
    st = eml_weights_encode(eml_run_net(j->run), &weights, &wlen);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot encode the weights");
    st = eml_sha256(j->model_hash, weights, wlen);
    if (st == EML_OK)
        st = eml_rt_send_model(e, weights, wlen, j->q.recipient,
                               j->model_file_hash, err);
    eml_wipe(weights, wlen);
    free(weights);
    return st;
}

/* The report's hex lists: every owner's file digests, dataset ids and
 * grant ids. */
static void report_lists(const train_job *j, char *body, size_t bcap,
                         size_t *k)
{
    uint64_t n = j->q.n_grants;
    for (uint64_t o = 0; o < n; o++)
        for (int f = 0; f < EML_FILE_KINDS; f++) {
            char dh[65];
            eml_hex(dh, j->digests[o][f], 32);
            eml_rt_append(body, bcap, k, "%s%s",
                          (o == 0 && f == 0) ? "" : ",", dh);
        }
    eml_rt_append(body, bcap, k, "\",\"dataset_ids\":\"");
    for (uint64_t o = 0; o < n; o++) {
        char dh[2 * EML_CONTAINER_DATASET_ID_BYTES + 1];
        eml_hex(dh, j->dataset_ids[o], EML_CONTAINER_DATASET_ID_BYTES);
        eml_rt_append(body, bcap, k, "%s%s", o == 0 ? "" : ",", dh);
    }
    eml_rt_append(body, bcap, k, "\",\"grants\":\"");
    for (uint64_t o = 0; o < n; o++) {
        char gh[33];
        eml_hex(gh, j->ginfo[o].grant_id, 16);
        eml_rt_append(body, bcap, k, "%s%s", o == 0 ? "" : ",", gh);
    }
    eml_rt_append(body, bcap, k, "\"");
}

/* The DP members of the report. */
static void report_dp(const train_job *j, char *body, size_t bcap, size_t *k)
{
    const eml_dp_opts *dp = &eml_run_opts(j->run)->run.dp;
    const eml_train_result *res = &j->res;
    if (!dp->enabled) return;
    if (!isfinite(res->epsilon))
        eml_rt_append(body, bcap, k, ",\"epsilon\":\"inf\"");
    else
        eml_rt_append(body, bcap, k, ",\"epsilon\":%.9g", res->epsilon);
    eml_rt_append(body, bcap, k,
                  ",\"delta\":%.9g,\"noise\":%.9g,"
                  "\"clip\":%.9g,\"sampling_rate\":%.9g,\"dp_steps\":%ld,"
                  "\"budget\":%.9g,\"stopped_at_budget\":%s,"
                  "\"sampling\":\"%s\",\"insecure_seed\":%s,"
                  "\"accountant\":\"rdp-sampled-gaussian%s\"",
                  dp->delta, dp->noise, dp->clip, res->sampling_rate,
                  res->steps, dp->target_epsilon,
                  res->dp_stopped_early ? "true" : "false",
                  dp->fixed_batches ? "fixed" : "poisson",
                  dp->insecure_seed ? "true" : "false",
                  dp->fixed_batches ? " (assumes poisson sampling)" : "");
    eml_rt_append(body, bcap, k, ",\"epsilon_planned\":%.9g",
                  j->bud.planned);
}

/* The signed training report, sent as TRAIN_DONE. */
static eml_status send_report(train_job *j, eml_err *err)
{
    eml_enclave *e = j->e;
    const eml_train_result *res = &j->res;
    size_t bcap = 2560 + (size_t)j->q.n_grants * (EML_FILE_KINDS * 66 + 68) +
                  2 * EML_NONCE_MAX + 512 + EML_WORKER_ADDR_LEN;
    char *body = malloc(bcap);
    if (body == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    char meas[65], edh[65], mh[65], mfh[65], ch[65], rh[65];
    char nh[2 * EML_NONCE_MAX + 1];
    eml_hex(meas, e->measurement, 32);
    eml_hex(edh, e->ed_pk, 32);
    eml_hex(mh, j->model_hash, 32);
    eml_hex(mfh, j->model_file_hash, 32);
    eml_hex(ch, j->cfg_hash, 32);
    eml_hex(rh, j->q.recipient, 32);
    eml_hex(nh, j->q.report_nonce, j->q.report_nonce_len);
    size_t k = 0;
    eml_rt_append(body, bcap, &k,
        "{\"type\":\"enclaveml-training-report\",\"version\":2,\"sim\":%s,"
        "\"measurement\":\"%s\",\"ed25519\":\"%s\",\"report_nonce\":\"%s\","
        "\"cfg_sha256\":\"%s\",\"model_sha256\":\"%s\","
        "\"model_file_sha256\":\"%s\",\"recipient\":\"%s\",\"owners\":%u,"
        "\"train_images\":%zu,\"test_images\":%zu,\"epochs\":%d,"
        "\"steps\":%ld,\"parameters\":%zu,\"train_loss\":%.9g,"
        "\"test_accuracy\":%.9g,\"test_loss\":%.9g,\"seconds\":%.6g,"
        "\"images_per_second\":%.6g,\"mirror\":%s,\"resumed_step\":%ld,"
        "\"mirror_saves\":%ld,\"dp\":%s,\"datasets\":\"",
        e->sim ? "true" : "false", meas, edh, nh, ch, mh, mfh, rh,
        (unsigned)j->q.n_grants, j->train_set.count, j->test_set.count,
        res->epochs, res->steps, eml_net_trainable_count(eml_run_net(j->run)),
        res->train_loss, res->test_accuracy, res->test_loss, res->seconds,
        res->images_per_second, j->q.spec.mirror ? "true" : "false",
        res->resumed_step, res->mirror_saves,
        j->q.spec.dp.enabled ? "true" : "false");
    report_lists(j, body, bcap, &k);
    report_dp(j, body, bcap, &k);
    if (isfinite(j->cap))
        eml_rt_append(body, bcap, &k, ",\"budget_charged\":%s",
                      res->resumed_step >= 0 ? "false" : "true");
    if (j->q.spec.outsource != 0)
        eml_rt_append(body, bcap, &k,
                      ",\"outsource\":\"%s\",\"worker\":\"%.*s\","
                      "\"outsourced_products\":%llu,"
                      "\"verified_products\":%llu,\"local_products\":%llu,"
                      "\"outsource_min_intensity\":%.17g",
                      j->q.spec.outsource == EML_OUTSOURCE_PRIVATE
                          ? "private"
                          : "integrity",
                      (int)j->q.worker_len, (const char *)j->q.worker,
                      (unsigned long long)j->outsourced.outsourced_products,
                      (unsigned long long)j->outsourced.verified_products,
                      (unsigned long long)j->outsourced.local_products,
                      j->q.spec.outsource_min_intensity);
    if (j->node != NULL)
        eml_rt_append(body, bcap, &k,
                      ",\"node\":%d,\"nodes\":%d,\"node_rounds\":%ld",
                      j->q.node.id, j->q.node.nodes,
                      eml_rt_node_rounds(j->node));
    char *report = NULL;
    size_t rlen = 0;
    eml_status st = eml_report_sign(body, e->sec->ed_sk, &report, &rlen);
    free(body);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot sign the training report");
    eml_reply_train_done done = {{(const uint8_t *)report, rlen}};
    st = eml_rt_reply(e, EML_MSG_TRAIN_DONE, &done, sizeof(done), err);
    free(report);
    return st;
}

eml_status eml_rt_ecall_train(eml_enclave *e, eml_msg_any *req, eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    train_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    j->e = e;
    j->q = req->m_TRAIN;
    eml_ledger_init(&j->bud.ledger);
    eml_status st = EML_OK;
    j->keys = eml_secure_alloc(32 * (size_t)j->q.n_grants);
    j->ginfo = calloc((size_t)j->q.n_grants, sizeof(*j->ginfo));
    if (j->keys == NULL || j->ginfo == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    /* The cfg text lies in the received frame, which the ocalls below
     * reuse: hash it now (eml_run_new parses it before the first ocall). */
    if (st == EML_OK) {
        st = eml_sha256(j->cfg_hash, j->q.cfg_text.p, j->q.cfg_text.n);
        if (st != EML_OK) st = eml_err_set(err, st, "hash failed");
    }
    size_t claimed = 0;
    if (st == EML_OK) st = admit(j, &claimed, err);
    if (st == EML_OK) st = read_owners(j, claimed, err);
    if (st == EML_OK) st = train_and_send(j, err);
    if (st == EML_OK) st = send_report(j, err);
    job_free(j);
    return st;
}
