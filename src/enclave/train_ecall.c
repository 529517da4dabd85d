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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/cfg.h"
#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/net.h"

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

/* Encrypts the weights to the recipient and streams them out; file_hash
 * gets the SHA-256 of the container exactly as sent (the model file). */
static eml_status send_model(eml_enclave *e, const uint8_t *pt, size_t len,
                             const uint8_t recipient[32],
                             uint8_t file_hash[32], eml_err *err)
{
    eml_cw *w = NULL;
    eml_sha256_ctx *fh = NULL;
    uint8_t header[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    eml_container_meta meta = {EML_CONTAINER_ROLE_MODEL, {0}};
    eml_status st = eml_sha256_new(&fh);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    st = eml_cw_new(EML_CONTAINER_RECIPIENT, recipient, 0, &meta, &w, header,
                    &hlen, err);
    if (st == EML_OK) st = eml_sha256_update(fh, header, hlen);
    if (st != EML_OK) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return st;
    }
    size_t cs = eml_cw_chunk_size(w);
    uint8_t *ct = malloc(cs + EML_CONTAINER_TAG_BYTES);
    if (ct == NULL) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    }
    eml_ocall_output q = {0, {header, hlen}, 0};
    st = eml_rt_ocall(e, EML_MSG_OUTPUT, &q, sizeof(q), NULL, 0, err);
    size_t off = 0;
    while (st == EML_OK) {
        size_t n = len - off < cs ? len - off : cs;
        int final = off + n == len;
        size_t cl = 0;
        st = eml_cw_seal(w, pt + off, n, final, ct, &cl, err);
        if (st == EML_OK) st = eml_sha256_update(fh, ct, cl);
        if (st != EML_OK) break;
        eml_ocall_output c = {0, {ct, cl}, final};
        st = eml_rt_ocall(e, EML_MSG_OUTPUT, &c, sizeof(c), NULL, 0, err);
        off += n;
        if (final) break;
    }
    if (st == EML_OK) st = eml_sha256_final(fh, file_hash);
    free(ct);
    eml_cw_free(w);
    eml_sha256_free(fh);
    return st;
}

/* Fixes the noise, before any data is decrypted; *planned is the epsilon
 * the whole run may spend.  cap (the smallest max_epsilon among the
 * grants, or infinity) refuses a larger plan and bounds the target, so
 * that training never takes a step past it.  The spend ledger's gate
 * (budget_gate) then checks what is left of each grant's budget. */
static eml_status plan_dp(eml_enclave *e, eml_ecall_train *q, int batch,
                          int epochs, size_t n_params, double cap,
                          size_t *claimed, double *planned, eml_err *err)
{
    eml_dp_opts *dp = &q->spec.dp;
    if (!(dp->clip > 0) || !(dp->delta > 0 && dp->delta < 1) ||
        dp->target_epsilon < 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "DP needs clip > 0 and delta in (0, 1)");
    eml_status st = eml_rt_claimed_count(e, q->n_grants, claimed, err);
    if (st != EML_OK) return st;
    double rate;
    long steps;
    eml_dp_plan(*claimed, batch, epochs, &rate, &steps);
    if (dp->noise < 0) {
        if (!(dp->target_epsilon > 0))
            return eml_err_set(err, EML_ERR_INVALID,
                               "DP needs a noise multiplier or a target "
                               "epsilon");
        st = eml_dp_noise_for_target(rate, steps, dp->delta,
                                     dp->target_epsilon, dp->clip, n_params,
                                     &dp->noise, err);
        if (st != EML_OK) return st;
    }
    double order;
    st = eml_dp_epsilon(rate,
                        eml_dp_effective_noise(dp->noise, dp->clip, n_params),
                        steps, dp->delta, planned, &order, err);
    if (st != EML_OK) return st;
    if (isfinite(cap) && *planned > cap * (1 + 1e-9))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the planned run spends epsilon %.4g (q %.6g, "
                           "noise %.4g, %ld steps, delta %g) but a grant "
                           "allows at most %.4g: refused before any data "
                           "was decrypted",
                           *planned, rate, dp->noise, steps, dp->delta, cap);
    if (dp->target_epsilon <= 0 || dp->target_epsilon > cap)
        dp->target_epsilon = isfinite(cap) ? cap : 0;
    return EML_OK;
}

/* snprintf that never runs past cap (the report body is sized for its
 * contents; this keeps a mistake there from becoming an overflow). */
static void append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
    EML_PRINTF(4, 5);
static void append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
{
    if (*k + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *k, cap - *k, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    *k += (size_t)n;
    if (*k >= cap) *k = cap - 1;
}

eml_status eml_rt_ecall_train(eml_enclave *e, eml_msg_any *req, eml_err *err)
{
    eml_ecall_train q = req->m_TRAIN; /* plan_dp fixes q.spec.dp */
    eml_status st;
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");

    uint8_t *keys = eml_secure_alloc(32 * (size_t)q.n_grants);
    eml_grant_info *ginfo = calloc((size_t)q.n_grants, sizeof(*ginfo));
    data_acc train_set, test_set;
    memset(&train_set, 0, sizeof(train_set));
    memset(&test_set, 0, sizeof(test_set));
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    uint8_t *weights = NULL;
    size_t wlen = 0;
    char *report = NULL;
    size_t rlen = 0;
    uint8_t digests[EML_OWNERS_MAX][EML_FILE_KINDS][32];
    /* Each owner's dataset id (the same in its four files), for the
     * report. */
    uint8_t dataset_ids[EML_OWNERS_MAX][EML_CONTAINER_DATASET_ID_BYTES];
    eml_mirror *mirror = NULL;
    budget bud;
    memset(&bud, 0, sizeof(bud));
    eml_ledger_init(&bud.ledger);
    if (keys == NULL || ginfo == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    /* The cfg text lies in the received frame, which the ocalls below
     * reuse: hash it now. */
    uint8_t cfg_hash[32];
    st = eml_sha256(cfg_hash, q.cfg_text.p, q.cfg_text.n);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "hash failed");
        goto out;
    }
    /* Grants first: nothing is decrypted unless every grant opens and
     * allows this recipient and this network.  The smallest max_epsilon
     * among them caps the run. */
    double cap = INFINITY;
    for (uint64_t o = 0; o < q.n_grants; o++) {
        eml_err gerr = {0};
        st = eml_grant_open(q.grants[o].p, q.grants[o].n, e->measurement,
                            e->sec->x_sk, e->x_pk, &ginfo[o], keys + 32 * o,
                            &gerr);
        if (st != EML_OK) {
            st = eml_err_set(err, st, "grant %u: %s", (unsigned)o + 1,
                             eml_err_msg(&gerr, st));
            goto out;
        }
        for (uint64_t p = 0; p < o; p++)
            if (memcmp(ginfo[p].grant_id, ginfo[o].grant_id, 16) == 0) {
                st = eml_err_set(err, EML_ERR_AUTH,
                                 "grant %u replays grant %u",
                                 (unsigned)o + 1, (unsigned)p + 1);
                goto out;
            }
        if (!eml_grant_allows_recipient(&ginfo[o], q.recipient)) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "grant %u does not name this run's recipient: "
                             "its owner did not agree that this key gets "
                             "the model",
                             (unsigned)o + 1);
            goto out;
        }
        if (ginfo[o].has_cfg_digest &&
            !eml_ct_equal(ginfo[o].cfg_digest, cfg_hash, 32)) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "grant %u allows only another network (its cfg "
                             "digest differs from this run's cfg)",
                             (unsigned)o + 1);
            goto out;
        }
        if (ginfo[o].has_max_epsilon) {
            if (!q.spec.dp.enabled) {
                st = eml_err_set(err, EML_ERR_AUTH,
                                 "grant %u allows only differentially "
                                 "private training (max epsilon %g); this "
                                 "run is not private",
                                 (unsigned)o + 1, ginfo[o].max_epsilon);
                goto out;
            }
            if (!(cap <= ginfo[o].max_epsilon)) cap = ginfo[o].max_epsilon;
        }
    }
    /* The network, before any data is decrypted. */
    st = eml_cfg_parse((const char *)q.cfg_text.p, q.cfg_text.n, "cfg",
                       &cfg, err);
    if (st != EML_OK) goto out;
    eml_train_opts to = eml_train_opts_default(cfg);
    if (q.spec.epochs > 0) to.epochs = (int)q.spec.epochs;
    if (q.spec.batch > 0) to.batch = (int)q.spec.batch;
    if (q.spec.lr > 0) to.lr = (float)q.spec.lr;
    to.seed = q.spec.seed;
    eml_net_opts no = {(eml_kernels_kind)q.spec.kernels, to.batch, q.spec.seed};
    st = eml_net_new(cfg, &no, &net, err);
    if (st != EML_OK) goto out;
    eml_kernels_set_threads((int)q.spec.threads);

    size_t claimed = 0;
    if (isfinite(cap)) {
        /* --insecure-seed lets the host choose the noise and the sampling:
         * never against an owner's budget.  Fixed-size batches are not
         * what the accountant assumes (Poisson sampling). */
        if (q.spec.dp.insecure_seed) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "a grant sets a privacy budget, so the noise "
                             "must come from the enclave's own randomness: "
                             "--insecure-seed is refused");
            goto out;
        }
        if (q.spec.dp.fixed_batches) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "a grant sets a privacy budget, and the "
                             "accountant's bound holds for Poisson sampling "
                             "only: --dp-fixed-batches is refused");
            goto out;
        }
        bud.e = e;
        bud.g = ginfo;
        bud.n = q.n_grants;
        st = eml_rt_ledger_load(&bud, 0, err);
        if (st != EML_OK) goto out;
    }
    if (q.spec.dp.enabled) {
        st = plan_dp(e, &q, to.batch, to.epochs, eml_net_param_count(net),
                     cap, &claimed, &bud.planned, err);
        if (st != EML_OK) goto out;
        to.dp = q.spec.dp;
    }
    if (isfinite(cap)) {
        /* A fresh run is checked here, before any data is decrypted (an
         * early answer: the binding check is made again under the counter
         * lock when it is charged); one that may resume is checked when
         * training starts, once it is known whether it continues a run
         * that was already charged. */
        if (!q.spec.resume) {
            st = eml_rt_budget_gate(&bud, err);
            if (st != EML_OK) goto out;
        }
        to.on_start = eml_rt_budget_charge;
        to.on_start_user = &bud;
    }

    for (uint64_t o = 0; o < q.n_grants; o++) {
        owner_file f[EML_FILE_KINDS];
        memset(f, 0, sizeof(f));
        for (int k = 0; k < EML_FILE_KINDS && st == EML_OK; k++) {
            st = eml_rt_read_owner_file(
                e, o * EML_FILE_KINDS + (uint64_t)k, keys + 32 * o,
                ginfo[o].key_id, k > 0 ? f[0].dataset_id : NULL, &f[k], err);
            if (st == EML_OK) memcpy(digests[o][k], f[k].digest, 32);
        }
        if (st == EML_OK)
            memcpy(dataset_ids[o], f[0].dataset_id, sizeof(dataset_ids[o]));
        char what[32];
        snprintf(what, sizeof(what), "owner %u", (unsigned)o + 1);
        if (st == EML_OK)
            st = eml_rt_data_acc_add(&train_set, &f[0], &f[1], what, err);
        if (st == EML_OK)
            st = eml_rt_data_acc_add(&test_set, &f[2], &f[3], what, err);
        for (int k = 0; k < EML_FILE_KINDS; k++) eml_rt_owner_file_free(&f[k]);
        if (st != EML_OK) goto out;
    }
    eml_secure_free(keys, 32 * (size_t)q.n_grants);
    keys = NULL;
    if (q.spec.dp.enabled && train_set.count != claimed) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "the privacy budget was planned for %zu training "
                         "images (from the label files' sizes) but the "
                         "decrypted files hold another number: encrypt raw, "
                         "not gzipped, label files for DP runs",
                         claimed);
        goto out;
    }

    eml_dataset tr = {train_set.count, train_set.item, train_set.images,
                      train_set.labels};
    eml_dataset te = {test_set.count, test_set.item, test_set.images,
                      test_set.labels};
    progress_ctx pc;
    memset(&pc, 0, sizeof(pc));
    pc.e = e;
    to.progress = send_progress;
    to.progress_user = &pc;
    if (q.spec.mirror) {
        /* Sealed to this measurement, bound to the run and its data. */
        eml_store_ops ops = eml_rt_store_ops(e);
        eml_mirror_opts mo;
        memset(&mo, 0, sizeof(mo));
        mo.seal_secret = e->sec->seal_secret;
        mo.measurement = e->measurement;
        mo.every = (long)q.spec.save_every;
        st = eml_train_run_digest(mo.cfg_digest, cfg_hash, 32, &to);
        if (st == EML_OK) st = eml_dataset_digest(mo.data_digest, &tr, &te);
        if (st == EML_OK) st = eml_mirror_new(&mo, &ops, &mirror, err);
        if (st != EML_OK) goto out;
        to.mirror = mirror;
        to.resume = (int)q.spec.resume;
    }
    eml_train_result res;
    st = eml_train(net, cfg, &tr, &te, &to, &res, err);
    if (st != EML_OK) goto out;
    if (pc.failed) {
        st = eml_err_set(err, EML_ERR_IO, "lost the host during training (%s)",
                         pc.err.msg);
        goto out;
    }
    st = eml_weights_encode(net, &weights, &wlen);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "cannot encode the weights");
        goto out;
    }
    uint8_t model_hash[32], model_file_hash[32];
    st = eml_sha256(model_hash, weights, wlen);
    if (st == EML_OK)
        st = send_model(e, weights, wlen, q.recipient, model_file_hash, err);
    if (st != EML_OK) goto out;

    /* The signed training report. */
    size_t bcap = 2560 + (size_t)q.n_grants * (EML_FILE_KINDS * 66 + 68) +
                 2 * EML_NONCE_MAX;
    char *body = malloc(bcap);
    if (body == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    char meas[65], edh[65], mh[65], mfh[65], ch[65], rh[65];
    char nh[2 * EML_NONCE_MAX + 1];
    eml_hex(meas, e->measurement, 32);
    eml_hex(edh, e->ed_pk, 32);
    eml_hex(mh, model_hash, 32);
    eml_hex(mfh, model_file_hash, 32);
    eml_hex(ch, cfg_hash, 32);
    eml_hex(rh, q.recipient, 32);
    eml_hex(nh, q.report_nonce, q.report_nonce_len);
    size_t k = (size_t)snprintf(
        body, bcap,
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
        (unsigned)q.n_grants, train_set.count, test_set.count, res.epochs,
        res.steps, eml_net_param_count(net), res.train_loss,
        res.test_accuracy, res.test_loss, res.seconds, res.images_per_second,
        q.spec.mirror ? "true" : "false", res.resumed_step, res.mirror_saves,
        q.spec.dp.enabled ? "true" : "false");
    if (k >= bcap) k = bcap - 1;
    for (uint64_t o = 0; o < q.n_grants; o++)
        for (int f = 0; f < EML_FILE_KINDS; f++) {
            char dh[65];
            eml_hex(dh, digests[o][f], 32);
            append(body, bcap, &k, "%s%s", (o == 0 && f == 0) ? "" : ",", dh);
        }
    append(body, bcap, &k, "\",\"dataset_ids\":\"");
    for (uint64_t o = 0; o < q.n_grants; o++) {
        char dh[2 * EML_CONTAINER_DATASET_ID_BYTES + 1];
        eml_hex(dh, dataset_ids[o], EML_CONTAINER_DATASET_ID_BYTES);
        append(body, bcap, &k, "%s%s", o == 0 ? "" : ",", dh);
    }
    append(body, bcap, &k, "\",\"grants\":\"");
    for (uint64_t o = 0; o < q.n_grants; o++) {
        char gh[33];
        eml_hex(gh, ginfo[o].grant_id, 16);
        append(body, bcap, &k, "%s%s", o == 0 ? "" : ",", gh);
    }
    append(body, bcap, &k, "\"");
    if (q.spec.dp.enabled && !isfinite(res.epsilon))
        append(body, bcap, &k, ",\"epsilon\":\"inf\"");
    else if (q.spec.dp.enabled)
        append(body, bcap, &k, ",\"epsilon\":%.9g", res.epsilon);
    if (q.spec.dp.enabled)
        append(body, bcap, &k,
                 ",\"delta\":%.9g,\"noise\":%.9g,"
                 "\"clip\":%.9g,\"sampling_rate\":%.9g,\"dp_steps\":%ld,"
                 "\"budget\":%.9g,\"stopped_at_budget\":%s,"
                 "\"sampling\":\"%s\",\"insecure_seed\":%s,"
                 "\"accountant\":\"rdp-sampled-gaussian%s\"",
                 q.spec.dp.delta, q.spec.dp.noise, q.spec.dp.clip,
                 res.sampling_rate, res.steps,
                 q.spec.dp.target_epsilon,
                 res.dp_stopped_early ? "true" : "false",
                 q.spec.dp.fixed_batches ? "fixed" : "poisson",
                 q.spec.dp.insecure_seed ? "true" : "false",
                 q.spec.dp.fixed_batches ? " (assumes poisson sampling)" : "");
    if (q.spec.dp.enabled)
        append(body, bcap, &k, ",\"epsilon_planned\":%.9g", bud.planned);
    if (isfinite(cap))
        append(body, bcap, &k, ",\"budget_charged\":%s",
               res.resumed_step >= 0 ? "false" : "true");
    st = eml_report_sign(body, e->sec->ed_sk, &report, &rlen);
    free(body);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "cannot sign the training report");
        goto out;
    }
    eml_reply_train_done done = {{(const uint8_t *)report, rlen}};
    st = eml_rt_reply(e, EML_MSG_TRAIN_DONE, &done, sizeof(done), err);
out:
    eml_ledger_free(&bud.ledger);
    eml_mirror_free(mirror);
    if (keys != NULL) eml_secure_free(keys, 32 * (size_t)q.n_grants);
    free(ginfo);
    eml_rt_data_acc_free(&train_set);
    eml_rt_data_acc_free(&test_set);
    if (weights != NULL) {
        eml_wipe(weights, wlen);
        free(weights);
    }
    free(report);
    eml_net_free(net); /* parameters are wiped by the allocator below */
    eml_cfg_free(cfg);
    return st;
}
