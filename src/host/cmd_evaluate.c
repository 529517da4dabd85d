/*
 * cmd_evaluate.c - `enclaveml evaluate` (docs/evaluate.md): verifiable
 * evaluation, a model and test sets from different owners judged inside
 * the enclave.  The enclave loads the model owner's encrypted model
 * through their grant (MODEL_LOAD, as `serve` does), then evaluates it on
 * the test sets their owners grant to it (EVALUATE); this process serves
 * ciphertext only, and writes the signed report once it verifies against
 * the enclave it talked to.  With --release-to, the enclave also sends
 * the model encrypted to that key (if the model's grant names it), which
 * is kept only once the report names the key and the file's SHA-256.
 *
 * Host side.  Every failure ends in one "enclaveml: error: ..." line and
 * leaves no report file.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "enclaveml/flatjson.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_enclave.h"
#include "host/cmd_serve.h"
#include "host/fileio.h"
#include "host/json.h"
#include "host/keyfile.h"

static const char evaluate_usage[] =
    "usage: enclaveml evaluate --cfg F --model M.emlc --model-grant GM\n"
    "                          --data DIR --grant GD [--data DIR2\n"
    "                          --grant GD2 ...] --report-out R.json\n"
    "                          [--report-nonce HEX] [--json]\n"
    "                          [--enclave sim|none] [--heap-mb M]\n"
    "                          [--threads N] [--quiet]\n"
    "                          [--release-to ORG.pub --release-out F.emlm]\n"
    "\n"
    "Evaluates a model owner's encrypted model (M.emlc, `enclaveml encrypt\n"
    "--role model`, its key granted to this enclave in GM) on the test sets\n"
    "of one or more data owners (the t10k images and labels of each DIR,\n"
    "encrypted as for confidential training, each key granted in the GD\n"
    "given after it), inside the enclave (docs/evaluate.md).  Nothing of\n"
    "the model or the data leaves it in the clear: out comes R.json, a\n"
    "report signed by the enclave's key with the accuracy, the mean loss,\n"
    "the per-class accuracy, the confusion matrix, the number of examples\n"
    "and the SHA-256 of the cfg, of the model's file and of every test\n"
    "file.  `enclaveml verify R.json --report ATTEST.json --measurement\n"
    "HEX` checks it.  --report-nonce puts a verifier's nonce in the\n"
    "report.\n"
    "--release-to ORG.pub --release-out F.emlm: after the evaluation, the\n"
    "enclave re-encrypts the model to ORG's key (`enclaveml decrypt --key\n"
    "ORG.key` opens it), if the model's grant names that key (grant\n"
    "--release-to); the report names the key and the file's SHA-256.\n"
    "A test set's grant may limit how often any one model is evaluated on\n"
    "it (grant --max-evaluations) and how few examples an evaluation may\n"
    "count (grant --min-examples): the enclave refuses past them.\n";

enum { O_MODEL = 3000, O_MODEL_GRANT, O_RELEASE_TO, O_RELEASE_OUT };

#define MAX_SETS EML_OWNERS_MAX

static const char *const test_names[2] = {"t10k-images-idx3-ubyte.emlc",
                                          "t10k-labels-idx1-ubyte.emlc"};

typedef struct evaluate_args {
    const char *cfg, *model, *model_grant, *report_out;
    const char *release_to, *release_out;
    const char *dirs[MAX_SETS], *grants[MAX_SETS];
    int n_dirs, n_grants;
    uint8_t nonce[EML_NONCE_MAX];
    size_t nonce_len;
    eml_host_opts host; /* --enclave, --heap-mb, --threads */
    int json, quiet;
} evaluate_args;

static int take_opt(evaluate_args *a, int opt, const char *v)
{
    switch (opt) {
    case OPT_CFG: a->cfg = v; return 0;
    case O_MODEL: a->model = v; return 0;
    case O_MODEL_GRANT: a->model_grant = v; return 0;
    case O_RELEASE_TO: a->release_to = v; return 0;
    case O_RELEASE_OUT: a->release_out = v; return 0;
    case OPT_REPORT_OUT: a->report_out = v; return 0;
    case OPT_DATA:
        if (a->n_dirs == MAX_SETS)
            return eml_fail("evaluate: at most %d --data", MAX_SETS);
        a->dirs[a->n_dirs++] = v;
        return 0;
    case OPT_GRANT:
        if (a->n_grants == MAX_SETS)
            return eml_fail("evaluate: at most %d --grant", MAX_SETS);
        a->grants[a->n_grants++] = v;
        return 0;
    case OPT_REPORT_NONCE:
        return eml_opt_nonce("--report-nonce", v, a->nonce, &a->nonce_len);
    case OPT_JSON: a->json = 1; return 0;
    case OPT_QUIET: a->quiet = 1; return 0;
    default: return eml_enclave_opt(&a->host, "evaluate", opt, v);
    }
}

/* 0, -1 after --help, 1 after the error line. */
static int parse_args(int argc, char **argv, evaluate_args *a)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"model", required_argument, 0, O_MODEL},
        {"model-grant", required_argument, 0, O_MODEL_GRANT},
        {"release-to", required_argument, 0, O_RELEASE_TO},
        {"release-out", required_argument, 0, O_RELEASE_OUT},
        {"data", required_argument, 0, OPT_DATA},
        {"grant", required_argument, 0, OPT_GRANT},
        {"report-out", required_argument, 0, OPT_REPORT_OUT},
        {"report-nonce", required_argument, 0, OPT_REPORT_NONCE},
        {"json", no_argument, 0, OPT_JSON},
        {"enclave", required_argument, 0, OPT_ENCLAVE},
        {"heap-mb", required_argument, 0, OPT_HEAP},
        {"threads", required_argument, 0, OPT_THREADS},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof(*a));
    eml_enclave_opts_init(&a->host);
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(evaluate_usage, stdout);
            return -1;
        }
        int r = take_opt(a, opt, optarg);
        if (r < 0) return eml_opt_unknown("evaluate", argc, argv);
        if (r > 0) return 1;
    }
    if (optind != argc)
        return eml_fail("evaluate: unexpected argument '%s'", argv[optind]);
    if (a->cfg == NULL || a->model == NULL || a->model_grant == NULL ||
        a->report_out == NULL || a->n_dirs == 0)
        return eml_fail("evaluate: --cfg, --model, --model-grant, --data, "
                        "--grant and --report-out are required");
    if (a->n_grants != a->n_dirs)
        return eml_fail("evaluate: %d --data directories but %d --grant "
                        "files: one grant per test set, after its --data",
                        a->n_dirs, a->n_grants);
    if ((a->release_to == NULL) != (a->release_out == NULL))
        return eml_fail("evaluate: --release-to and --release-out go "
                        "together");
    return 0;
}

/* The files the enclave may ask for during EVALUATE: owner o's test
 * images and labels as file ids o * 4 + EML_FILE_TEST_*, the other slots
 * not served (NULL).  Each set's files must exist.  0, or 1 after the
 * error line. */
static int test_files(const evaluate_args *a, char **paths, int *fds)
{
    for (size_t i = 0; i < (size_t)a->n_dirs * EML_FILE_KINDS; i++)
        fds[i] = -1;
    for (int o = 0; o < a->n_dirs; o++)
        for (int f = 0; f < 2; f++) {
            size_t id = (size_t)o * EML_FILE_KINDS +
                        (f ? EML_FILE_TEST_LABELS : EML_FILE_TEST_IMAGES);
            size_t cap = strlen(a->dirs[o]) + 64;
            paths[id] = malloc(cap);
            if (paths[id] == NULL) return eml_fail("out of memory");
            snprintf(paths[id], cap, "%s/%s", a->dirs[o], test_names[f]);
            if (access(paths[id], R_OK) != 0)
                return eml_fail("evaluate: %s: no encrypted test set there "
                                "(%s: %s)",
                                a->dirs[o], paths[id], strerror(errno));
        }
    return 0;
}

/* MODEL_LOAD, then EVALUATE with the test sets' grants; the report (a
 * string, the caller frees), verified against this enclave's key. */
static eml_status run_enclave(const evaluate_args *a, const uint8_t *cfg,
                              size_t cfg_len, uint8_t *const *grants,
                              const size_t *glen, char **paths, int *fds,
                              const uint8_t *release_to, int out_fd,
                              char **report, size_t *rlen, eml_err *err)
{
    eml_enclave_host h;
    eml_host_opts ho = a->host;
    eml_status st = eml_host_start(&h, &ho, err);
    if (st != EML_OK) return st;
    h.out_fd = out_fd;
    st = eml_serve_model_load(&h, cfg, cfg_len, a->model, a->model_grant,
                              err);
    eml_ecall_evaluate *q = NULL;
    if (st == EML_OK) {
        q = calloc(1, sizeof(*q));
        if (q == NULL) st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    if (st == EML_OK) {
        q->n_grants = (size_t)a->n_grants;
        for (int i = 0; i < a->n_grants; i++) {
            q->grants[i].p = grants[i];
            q->grants[i].n = glen[i];
        }
        memcpy(q->report_nonce, a->nonce, a->nonce_len);
        q->report_nonce_len = a->nonce_len;
        if (release_to != NULL) {
            q->release = 1;
            memcpy(q->release_to, release_to, 32);
        }
        h.files.n = (size_t)a->n_dirs * EML_FILE_KINDS;
        h.files.paths = paths;
        h.files.fds = fds;
        eml_reply_evaluate_done done = {{NULL, 0}};
        st = eml_host_call(&h, EML_MSG_EVALUATE, q, sizeof(*q), &done,
                           sizeof(done), err);
        if (st == EML_OK) {
            *report = malloc(done.report.n + 1);
            if (*report == NULL) {
                st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
            } else {
                memcpy(*report, done.report.p, done.report.n);
                (*report)[done.report.n] = '\0';
                *rlen = done.report.n;
            }
        }
        h.files.n = 0;
        h.files.paths = NULL;
        h.files.fds = NULL;
    }
    free(q);
    /* The report must verify against the enclave we talked to before it
     * is kept. */
    if (st == EML_OK && eml_report_verify(*report, *rlen, h.ed_pk) != EML_OK)
        st = eml_err_set(err, EML_ERR_AUTH,
                         "the evaluation report does not verify");
    eml_host_stop(&h);
    return st;
}

/* The released file grows in F.partial (0, or 1 after the error line). */
static int open_release(const evaluate_args *a, char **tmp, int *fd)
{
    size_t cap = strlen(a->release_out) + 16;
    *tmp = malloc(cap);
    if (*tmp == NULL) return eml_fail("out of memory");
    snprintf(*tmp, cap, "%s.partial", a->release_out);
    *fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (*fd < 0) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        return eml_fail("evaluate: %s.partial: %s", a->release_out,
                        strerror(e));
    }
    return 0;
}

/* The signed report must name the release key asked for and the SHA-256
 * of the file this process received. */
static eml_status check_release(const evaluate_args *a, const char *report,
                                size_t rlen, const uint8_t pk[32],
                                const char *tmp, eml_err *err)
{
    eml_flatjson j;
    eml_status st = eml_flatjson_parse(report, rlen, &j, err);
    if (st != EML_OK) return st;
    uint8_t to[32], want[32], got[32], *buf = NULL;
    size_t len = 0;
    if (eml_report_hex(&j, "released_to", to, 32, err) != EML_OK ||
        eml_report_hex(&j, "released_file_sha256", want, 32, err) != EML_OK)
        st = EML_ERR_FORMAT;
    eml_flatjson_free(&j);
    if (st == EML_OK) st = eml_file_read(tmp, &buf, &len, err);
    if (st == EML_OK) st = eml_sha256(got, buf, len);
    free(buf);
    if (st == EML_OK &&
        (!eml_ct_equal(to, pk, 32) || !eml_ct_equal(want, got, 32)))
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s: the report names another release key or "
                         "file than the one received",
                         a->release_out);
    return st;
}

/* --json: the report's members and where it went; else one line. */
static void print_done(const evaluate_args *a, const char *report,
                       size_t rlen)
{
    eml_flatjson j;
    eml_err err = {0};
    if (eml_flatjson_parse(report, rlen, &j, &err) != EML_OK) return;
    if (a->json) {
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_members(&o, &j);
        eml_json_str(&o, "report", a->report_out);
        eml_json_end(&o);
    } else if (!a->quiet) {
        double acc = 0, loss = 0, n = 0;
        (void)eml_flatjson_num(&j, "accuracy", &acc);
        (void)eml_flatjson_num(&j, "loss", &loss);
        (void)eml_flatjson_num(&j, "examples", &n);
        const char *m = eml_flatjson_str(&j, "measurement");
        fprintf(stderr,
                "evaluated in the enclave (backend %s, measurement "
                "%.16s...): accuracy %.2f%%, loss %.4f, %.0f examples in %d "
                "test set(s); signed report written to %s\n",
                a->host.backend == EML_BACKEND_SIM ? "sim" : "none",
                m != NULL ? m : "?", 100.0 * acc, loss, n, a->n_dirs,
                a->report_out);
    }
    eml_flatjson_free(&j);
}

int eml_cmd_evaluate(int argc, char **argv)
{
    evaluate_args a;
    int r = parse_args(argc, argv, &a);
    if (r) return r < 0 ? 0 : 1;
    size_t nf = (size_t)a.n_dirs * EML_FILE_KINDS;
    char **paths = calloc(nf, sizeof(char *));
    int *fds = malloc(nf * sizeof(int));
    uint8_t *cfg = NULL, *grants[MAX_SETS] = {0};
    size_t cfg_len = 0, glen[MAX_SETS] = {0};
    char *report = NULL;
    size_t rlen = 0;
    eml_err err = {0};
    eml_status st = EML_OK;
    int rc = 1;
    if (paths == NULL || fds == NULL) {
        eml_fail("out of memory");
        goto out;
    }
    if (test_files(&a, paths, fds)) goto out;
    uint8_t release_pk[32];
    char *tmp_release = NULL;
    int out_fd = -1, released = 0;
    if (a.release_to != NULL) {
        st = eml_pubfile_load(a.release_to, release_pk, &err);
        if (st != EML_OK) {
            eml_fail_st(st, &err);
            goto out;
        }
        if (open_release(&a, &tmp_release, &out_fd)) goto out;
    }
    st = eml_file_read(a.cfg, &cfg, &cfg_len, &err);
    for (int i = 0; i < a.n_grants && st == EML_OK; i++)
        st = eml_file_read(a.grants[i], &grants[i], &glen[i], &err);
    if (st == EML_OK)
        st = run_enclave(&a, cfg, cfg_len, grants, glen, paths, fds,
                         a.release_to != NULL ? release_pk : NULL, out_fd,
                         &report, &rlen, &err);
    for (size_t i = 0; i < nf; i++)
        if (fds[i] >= 0) close(fds[i]);
    if (out_fd >= 0) {
        if (st == EML_OK && fsync(out_fd) != 0)
            st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a.release_out,
                             strerror(errno));
        if (close(out_fd) != 0 && st == EML_OK)
            st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a.release_out,
                             strerror(errno));
        if (st == EML_OK)
            st = check_release(&a, report, rlen, release_pk, tmp_release,
                               &err);
        if (st == EML_OK && rename(tmp_release, a.release_out) != 0)
            st = eml_err_set(&err, EML_ERR_IO, "%s: %s", a.release_out,
                             strerror(errno));
        if (st == EML_OK)
            released = 1;
        else
            unlink(tmp_release);
    }
    if (st == EML_OK)
        st = eml_file_write_atomic(a.report_out, (const uint8_t *)report,
                                   rlen, 0644, &err);
    if (st != EML_OK && released)
        unlink(a.release_out); /* the report could not be written */
    free(tmp_release);
    if (st != EML_OK) {
        eml_fail("evaluate: %s", eml_err_msg(&err, st));
        goto out;
    }
    print_done(&a, report, rlen);
    rc = 0;
out:
    if (paths != NULL)
        for (size_t i = 0; i < nf; i++) free(paths[i]);
    free(paths);
    free(fds);
    free(report);
    free(cfg);
    for (int i = 0; i < a.n_grants; i++) free(grants[i]);
    return rc;
}
