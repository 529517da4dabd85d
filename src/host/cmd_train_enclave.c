/*
 * cmd_train_enclave.c - `enclaveml train --grant ...`, confidential
 * training in the enclave: the owners' ciphertext served to it, the
 * outsourcing worker's frames relayed (--outsource), the model written to
 * OUT.partial and renamed only after the signed report verifies.
 *
 * Host side.  Every failure ends in one "enclaveml: error: ..." line.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "host/cli.h"
#include "host/cmd_enclave.h"
#include "host/cmd_train.h"
#include "host/fileio.h"
#include "host/json.h"
#include "host/keyfile.h"
#include "host/progress.h"
#include "host/worker_link.h"

/* ==== confidential training ==== */

#define MAX_DIRS EML_OWNERS_MAX

static const char *const enc_names[EML_FILE_KINDS] = {
    "train-images-idx3-ubyte.emlc", "train-labels-idx1-ubyte.emlc",
    "t10k-images-idx3-ubyte.emlc", "t10k-labels-idx1-ubyte.emlc"};

/* The paths of every owner's four files, in file-id order, and their fds
 * (-1: not open yet).  0, or -1 out of memory. */
static int served_files(const eml_confidential_args *a, size_t nf,
                        char ***paths_out, int **fds_out)
{
    char **paths = calloc(nf, sizeof(char *));
    int *fds = malloc(nf * sizeof(int));
    if (paths == NULL || fds == NULL) {
        free(paths);
        free(fds);
        return -1;
    }
    for (size_t i = 0; i < nf; i++) {
        fds[i] = -1;
        size_t cap = strlen(a->dirs[i / EML_FILE_KINDS]) + 64;
        paths[i] = malloc(cap);
        if (paths[i] != NULL)
            snprintf(paths[i], cap, "%s/%s", a->dirs[i / EML_FILE_KINDS],
                     enc_names[i % EML_FILE_KINDS]);
    }
    *paths_out = paths;
    *fds_out = fds;
    return 0;
}

/* The model grows in OUT.partial, renamed to OUT once the report
 * verifies.  One fixed name: a run killed midway leaves it behind, and the
 * next run to the same output (a resume or a repeat) takes it over; the
 * lock keeps two live runs from sharing it.  0, or -1 after the error
 * line. */
static int open_partial(const char *out, char tmp_model[PATH_MAX],
                        int *out_fd)
{
    if ((size_t)snprintf(tmp_model, PATH_MAX, "%s.partial", out) >=
        PATH_MAX) {
        eml_fail("%s: path too long", out);
        return -1;
    }
    int fd = open(tmp_model, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        eml_fail("%s: another run is writing this model", tmp_model);
        return -1;
    }
    if (fd < 0 || ftruncate(fd, 0) != 0) {
        eml_fail("%s: %s", tmp_model, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    *out_fd = fd;
    return 0;
}

/* --json: the signed report's fields and where things went; else one
 * line for a person. */
static void print_done(const eml_confidential_args *a, const char *report,
                       size_t rlen)
{
    eml_err err = {0};
    if (a->json) {
        eml_flatjson j;
        if (eml_flatjson_parse(report, rlen, &j, &err) == EML_OK) {
            eml_json o;
            eml_json_begin(&o, stdout);
            eml_json_members(&o, &j);
            eml_json_str(&o, "model", a->out);
            eml_json_end(&o);
            eml_flatjson_free(&j);
        }
    } else if (!a->quiet) {
        fprintf(stderr, "encrypted model written to %s%s%s\n", a->out,
                a->report_out ? ", signed report to " : "",
                a->report_out ? a->report_out : "");
    }
}

/* Starts the enclave and hands it what the host serves: the owners'
 * files, the model's output, the mirror's store, progress. */
static eml_status start_host(eml_enclave_host *h,
                             const eml_confidential_args *a, size_t nf,
                             char **paths, int *fds, int out_fd,
                             eml_store *store, eml_progress *prog,
                             eml_worker_conn **worker, eml_worker_link *wl,
                             eml_err *err)
{
    eml_host_opts ho = {a->backend, a->heap_mb, a->spec.threads};
    eml_status st = EML_OK;
    if (a->outsource != NULL) { /* WORKER ocalls go there */
        st = eml_worker_connect(a->outsource, EML_WORKER_TIMEOUT_MS, worker,
                                err);
        if (st != EML_OK) return st;
        *wl = eml_worker_conn_link(*worker);
    }
    st = eml_host_start(h, &ho, err);
    if (st != EML_OK) {
        eml_worker_disconnect(*worker);
        *worker = NULL;
        return st;
    }
    h->worker = *worker != NULL ? wl : NULL;
    h->node = a->node_io;
    h->files.n = nf;
    h->files.paths = paths;
    h->files.fds = fds;
    h->out_fd = out_fd;
    h->store = store;
    h->progress = eml_progress_cb;
    h->progress_user = prog;
    if (!a->quiet) {
        char mh[65];
        eml_hex(mh, h->measurement, 32);
        fprintf(stderr,
                "confidential training in the enclave (backend %s, "
                "measurement %.16s...), %d owner(s)\n",
                a->backend == EML_BACKEND_SIM ? "sim" : "none", mh,
                a->n_dirs);
    }
    return EML_OK;
}

/* The TRAIN request: the cfg, every option, the recipient, the grants,
 * the nonce, and the worker's address for the report. */
static void fill_request(eml_ecall_train *q, const eml_confidential_args *a,
                         const uint8_t *cfg, size_t cfg_len,
                         const uint8_t rpk[32], uint8_t *const *grants,
                         const size_t *glen, const uint8_t *rnonce,
                         size_t rnlen)
{
    q->cfg_text.p = cfg;
    q->cfg_text.n = cfg_len;
    q->spec = a->spec;
    memcpy(q->recipient, rpk, 32);
    q->n_grants = (size_t)a->n_grants;
    for (int i = 0; i < a->n_grants; i++) {
        q->grants[i].p = grants[i];
        q->grants[i].n = glen[i];
    }
    memcpy(q->report_nonce, rnonce, rnlen);
    q->report_nonce_len = rnlen;
    if (a->outsource != NULL) {
        size_t n = strlen(a->outsource);
        q->worker_len = n < EML_WORKER_ADDR_LEN ? n : EML_WORKER_ADDR_LEN;
        memcpy(q->worker, a->outsource, q->worker_len);
    }
    q->node = a->node;
    if (a->node.enabled) {
        q->node_graph.p = (const uint8_t *)a->node_graph;
        q->node_graph.n = strlen(a->node_graph);
        size_t n = strlen(a->node_share);
        q->node_share_len = n < sizeof(q->node_share) ? n : sizeof(q->node_share);
        memcpy(q->node_share, a->node_share, q->node_share_len);
        memcpy(q->node_run_id, a->node_run_id, 32);
        q->node_accept.p = &a->node_accept[0][0];
        q->node_accept.n = 32 * (size_t)a->n_node_accept;
    }
}

/* TRAIN, and the report it answers with (a string, the caller frees). */
static eml_status call_train(eml_enclave_host *h, const eml_ecall_train *q,
                             char **report, size_t *rlen, eml_err *err)
{
    eml_reply_train_done done = {{NULL, 0}};
    eml_status st = eml_host_call(h, EML_MSG_TRAIN, q, sizeof(*q), &done,
                                  sizeof(done), err);
    if (st != EML_OK) return st;
    *report = malloc(done.report.n + 1);
    if (*report == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    memcpy(*report, done.report.p, done.report.n);
    (*report)[done.report.n] = '\0';
    *rlen = done.report.n;
    return EML_OK;
}

int eml_train_confidential(const eml_confidential_args *a)
{
    eml_err err = {0};
    eml_status st;
    if (a->n_grants != a->n_dirs)
        return eml_fail("train: %d --data directories but %d --grant files: "
                        "one grant per owner's directory",
                        a->n_dirs, a->n_grants);
    if (a->recipient == NULL || a->out == NULL)
        return eml_fail("train: --recipient and --out are required with "
                        "--grant");
    uint8_t rpk[32], rnonce[EML_NONCE_MAX];
    size_t rnlen = 0;
    if (a->report_nonce != NULL &&
        eml_opt_nonce("--report-nonce", a->report_nonce, rnonce, &rnlen))
        return 1;
    st = eml_pubfile_load(a->recipient, rpk, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    uint8_t *cfg = NULL, *grants[MAX_DIRS] = {0};
    size_t cfg_len = 0, glen[MAX_DIRS] = {0};
    st = eml_file_read(a->cfg, &cfg, &cfg_len, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    int rc = 1;
    eml_store *store = NULL;
    st = eml_store_setup(a->mirror, a->checkpoint, a->spec.resume, a->quiet,
                         &store, &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        goto out_files;
    }
    for (int i = 0; i < a->n_grants; i++) {
        st = eml_file_read(a->grants[i], &grants[i], &glen[i], &err);
        if (st != EML_OK) {
            rc = eml_fail_st(st, &err);
            goto out_files;
        }
    }
    /* The files the enclave may ask for. */
    size_t nf = (size_t)a->n_dirs * EML_FILE_KINDS;
    char **paths = NULL;
    int *fds = NULL;
    if (served_files(a, nf, &paths, &fds) != 0) {
        rc = eml_fail("out of memory");
        goto out_files;
    }
    char tmp_model[PATH_MAX];
    int out_fd = -1;
    if (open_partial(a->out, tmp_model, &out_fd) != 0) goto out_paths;
    eml_enclave_host h;
    eml_progress prog;
    eml_progress_init(&prog, a->quiet);
    eml_worker_conn *worker = NULL;
    eml_worker_link wl;
    st = start_host(&h, a, nf, paths, fds, out_fd, store, &prog, &worker, &wl,
                    &err);
    if (st != EML_OK) {
        rc = eml_fail_st(st, &err);
        close(out_fd);
        unlink(tmp_model);
        goto out_paths;
    }
    eml_ecall_train *q = calloc(1, sizeof(*q));
    char *report = NULL;
    size_t rlen = 0;
    if (q == NULL) {
        st = eml_err_set(&err, EML_ERR_NOMEM, "out of memory");
    } else {
        fill_request(q, a, cfg, cfg_len, rpk, grants, glen, rnonce, rnlen);
        q->spec.mirror = store != NULL;
        st = call_train(&h, q, &report, &rlen, &err);
        free(q);
    }
    /* The report must verify against the enclave we talked to before the
     * model is kept. */
    if (st == EML_OK && eml_report_verify(report, rlen, h.ed_pk) != EML_OK)
        st = eml_err_set(&err, EML_ERR_AUTH,
                         "the training report does not verify");
    if (st == EML_OK && fsync(out_fd) != 0)
        st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    h.files.paths = NULL;
    h.files.fds = NULL;
    h.files.n = 0;
    for (size_t i = 0; i < nf; i++)
        if (fds[i] >= 0) close(fds[i]);
    eml_host_stop(&h);
    eml_worker_disconnect(worker);
    if (close(out_fd) != 0 && st == EML_OK)
        st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    if (st == EML_OK && a->report_out != NULL)
        st = eml_file_write_atomic(a->report_out, report, rlen, 0644, &err);
    if (st == EML_OK && rename(tmp_model, a->out) != 0)
        st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    if (st != EML_OK) {
        unlink(tmp_model);
        free(report);
        rc = eml_fail_st(st, &err);
        goto out_paths;
    }
    print_done(a, report, rlen);
    free(report);
    rc = 0;
out_paths:
    for (size_t i = 0; i < nf; i++) free(paths[i]);
    free(paths);
    free(fds);
out_files:
    eml_store_close(store);
    free(cfg);
    for (int i = 0; i < a->n_grants; i++) free(grants[i]);
    return rc;
}
