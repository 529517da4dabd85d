/*
 * cmd_predict.c - `enclaveml predict --model-grant` (docs/evaluate.md,
 * "Private prediction"): private ML as a service.  The enclave loads the
 * provider's encrypted model through its grant (MODEL_LOAD, as `serve`
 * and `evaluate` do), then runs it on a user's encrypted images, which the
 * user's own grant opens to it (PREDICT); the predictions come out
 * encrypted to a key the user's grant names, which `enclaveml decrypt`
 * opens.  This process serves ciphertext only: it never sees the model,
 * the images or the predictions in the clear.
 *
 * Host side.  Every failure ends in one "enclaveml: error: ..." line and
 * leaves no output file: the container grows in OUT.partial, renamed once
 * the enclave's reply names its SHA-256.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_enclave.h"
#include "host/cmd_serve.h"
#include "host/fileio.h"
#include "host/json.h"
#include "host/keyfile.h"

static const char predict_enclave_usage[] =
    "usage: enclaveml predict --cfg F --model M.emlc --model-grant GM\n"
    "                         --images X.emlc --grant GX --recipient U.pub\n"
    "                         --out P.emlc [--json] [--enclave sim|none]\n"
    "                         [--heap-mb M] [--threads N] [--quiet]\n"
    "\n"
    "Private prediction (docs/evaluate.md): runs a provider's encrypted\n"
    "model (M.emlc, `enclaveml encrypt --role model`, its key granted to\n"
    "this enclave in GM) on a user's encrypted images (X.emlc, an IDX file\n"
    "encrypted with `enclaveml encrypt --role test-images`, its key granted\n"
    "in GX) inside the enclave.  The predictions leave encrypted to U.pub,\n"
    "which the user's grant must name (grant --recipient): P.emlc, a\n"
    "safetensors file with `probabilities` [n, classes] and `predictions`\n"
    "[n] (the argmax), opened with `enclaveml decrypt --key U.key`.  The\n"
    "model never leaves the enclave; the model's grant may bound the\n"
    "predictions one recipient gets from it (grant --max-queries).\n";

enum { O_MODEL = 3100, O_MODEL_GRANT };

typedef struct predict_args {
    const char *cfg, *model, *model_grant, *images, *grant, *recipient, *out;
    eml_host_opts host; /* --enclave, --heap-mb, --threads */
    int json, quiet;
} predict_args;

static int take_opt(predict_args *a, int opt, const char *v)
{
    switch (opt) {
    case OPT_CFG: a->cfg = v; return 0;
    case O_MODEL: a->model = v; return 0;
    case O_MODEL_GRANT: a->model_grant = v; return 0;
    case OPT_IMAGES: a->images = v; return 0;
    case OPT_GRANT: a->grant = v; return 0;
    case OPT_RECIPIENT: a->recipient = v; return 0;
    case OPT_OUT: a->out = v; return 0;
    case OPT_JSON: a->json = 1; return 0;
    case OPT_QUIET: a->quiet = 1; return 0;
    default: return eml_enclave_opt(&a->host, "predict", opt, v);
    }
}

/* 0, -1 after --help, 1 after the error line. */
static int parse_args(int argc, char **argv, predict_args *a)
{
    static const struct option opts[] = {
        {"cfg", required_argument, 0, OPT_CFG},
        {"model", required_argument, 0, O_MODEL},
        {"model-grant", required_argument, 0, O_MODEL_GRANT},
        {"images", required_argument, 0, OPT_IMAGES},
        {"grant", required_argument, 0, OPT_GRANT},
        {"recipient", required_argument, 0, OPT_RECIPIENT},
        {"out", required_argument, 0, OPT_OUT},
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
            fputs(predict_enclave_usage, stdout);
            return -1;
        }
        int r = take_opt(a, opt, optarg);
        if (r < 0) return eml_opt_unknown("predict", argc, argv);
        if (r > 0) return 1;
    }
    if (optind != argc)
        return eml_fail("predict: unexpected argument '%s'", argv[optind]);
    if (a->cfg == NULL || a->model == NULL || a->model_grant == NULL ||
        a->images == NULL || a->grant == NULL || a->recipient == NULL ||
        a->out == NULL)
        return eml_fail("predict: with --model-grant, --cfg, --model, "
                        "--images, --grant, --recipient and --out are "
                        "required");
    return 0;
}

/* 1 if argv asks for the enclave mode (--model-grant given). */
int eml_predict_wants_enclave(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return 0;
        if (strcmp(argv[i], "--model-grant") == 0 ||
            strncmp(argv[i], "--model-grant=", 14) == 0)
            return 1;
    }
    return 0;
}

/* MODEL_LOAD, then PREDICT with the user's grant; the container goes to
 * out_fd, *done gets the enclave's account of it. */
static eml_status run_enclave(const predict_args *a, const uint8_t *cfg,
                              size_t cfg_len, const uint8_t *grant,
                              size_t glen, const uint8_t recipient[32],
                              int out_fd, eml_reply_predict_done *done,
                              eml_err *err)
{
    eml_enclave_host h;
    eml_host_opts ho = a->host;
    eml_status st = eml_host_start(&h, &ho, err);
    if (st != EML_OK) return st;
    h.out_fd = out_fd;
    st = eml_serve_model_load(&h, cfg, cfg_len, a->model, a->model_grant,
                              err);
    char *paths[EML_FILE_KINDS] = {0};
    int fds[EML_FILE_KINDS] = {-1, -1, -1, -1};
    paths[EML_FILE_TEST_IMAGES] = (char *)a->images;
    if (st == EML_OK) {
        eml_ecall_predict q;
        memset(&q, 0, sizeof(q));
        q.grant.p = grant;
        q.grant.n = glen;
        memcpy(q.recipient, recipient, 32);
        h.files.n = EML_FILE_KINDS;
        h.files.paths = paths;
        h.files.fds = fds;
        st = eml_host_call(&h, EML_MSG_PREDICT, &q, sizeof(q), done,
                           sizeof(*done), err);
        h.files.n = 0;
        h.files.paths = NULL;
        h.files.fds = NULL;
    }
    for (int i = 0; i < EML_FILE_KINDS; i++)
        if (fds[i] >= 0) close(fds[i]);
    eml_host_stop(&h);
    return st;
}

/* The file received must be the one the enclave says it sent; fsynced,
 * closed, then renamed from OUT.partial to OUT. */
static eml_status finish_out(const predict_args *a, const char *tmp,
                             int fd, const eml_reply_predict_done *done,
                             eml_err *err)
{
    eml_status st = EML_OK;
    if (fsync(fd) != 0)
        st = eml_err_set(err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    if (close(fd) != 0 && st == EML_OK)
        st = eml_err_set(err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    uint8_t *buf = NULL, got[32];
    size_t len = 0;
    if (st == EML_OK) st = eml_file_read(tmp, &buf, &len, err);
    if (st == EML_OK) st = eml_sha256(got, buf, len);
    free(buf);
    if (st == EML_OK && !eml_ct_equal(got, done->file_sha256, 32))
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s: the file received is not the one the enclave "
                         "sent",
                         a->out);
    if (st == EML_OK && rename(tmp, a->out) != 0)
        st = eml_err_set(err, EML_ERR_IO, "%s: %s", a->out, strerror(errno));
    return st;
}

static void print_done(const predict_args *a,
                       const eml_reply_predict_done *d)
{
    if (a->json) {
        char fh[65];
        eml_hex(fh, d->file_sha256, 32);
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_int(&o, "count", (long long)d->count);
        eml_json_int(&o, "classes", (long long)d->classes);
        eml_json_str(&o, "out", a->out);
        eml_json_str(&o, "out_sha256", fh);
        if (d->queries_max != 0) {
            eml_json_int(&o, "queries_spent", (long long)d->queries_spent);
            eml_json_int(&o, "queries_max", (long long)d->queries_max);
        }
        eml_json_end(&o);
    } else if (!a->quiet) {
        fprintf(stderr,
                "predicted in the enclave (backend %s): %llu image(s), %llu "
                "classes; encrypted to the recipient in %s",
                a->host.backend == EML_BACKEND_SIM ? "sim" : "none",
                (unsigned long long)d->count, (unsigned long long)d->classes,
                a->out);
        if (d->queries_max != 0)
            fprintf(stderr, " (%llu of %llu predictions spent)",
                    (unsigned long long)d->queries_spent,
                    (unsigned long long)d->queries_max);
        fputc('\n', stderr);
    }
}

int eml_cmd_predict_enclave(int argc, char **argv)
{
    predict_args a;
    int r = parse_args(argc, argv, &a);
    if (r) return r < 0 ? 0 : 1;
    uint8_t *cfg = NULL, *grant = NULL, rpk[32];
    size_t cfg_len = 0, glen = 0;
    eml_err err = {0};
    if (access(a.images, R_OK) != 0)
        return eml_fail("predict: %s: %s", a.images, strerror(errno));
    eml_status st = eml_pubfile_load(a.recipient, rpk, &err);
    if (st == EML_OK) st = eml_file_read(a.cfg, &cfg, &cfg_len, &err);
    if (st == EML_OK) st = eml_file_read(a.grant, &grant, &glen, &err);
    if (st != EML_OK) {
        free(cfg);
        return eml_fail("predict: %s", eml_err_msg(&err, st));
    }
    size_t cap = strlen(a.out) + 16;
    char *tmp = malloc(cap);
    int fd = -1;
    if (tmp != NULL) {
        snprintf(tmp, cap, "%s.partial", a.out);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        int e = errno;
        free(tmp);
        free(cfg);
        free(grant);
        return eml_fail("predict: %s.partial: %s", a.out, strerror(e));
    }
    eml_reply_predict_done done;
    memset(&done, 0, sizeof(done));
    st = run_enclave(&a, cfg, cfg_len, grant, glen, rpk, fd, &done, &err);
    if (st == EML_OK) {
        st = finish_out(&a, tmp, fd, &done, &err);
    } else {
        close(fd);
    }
    if (st != EML_OK) unlink(tmp);
    free(tmp);
    free(cfg);
    free(grant);
    if (st != EML_OK) return eml_fail("predict: %s", eml_err_msg(&err, st));
    print_done(&a, &done);
    return 0;
}
