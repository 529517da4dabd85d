/*
 * cmd_enclave.c - the commands around the enclave: measure, attest,
 * verify, grant, and confidential training (train with --grant).
 *
 * Host side.  Verification always checks a signature over the exact bytes
 * of a report before believing any field in it.  Outputs are written to a
 * temporary file and renamed only when everything has checked, so a
 * failure leaves no output file behind.
 */
#include "host/cmd_enclave.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "host/cli.h"
#include "host/enclave_host.h"
#include "host/fileio.h"
#include "enclaveml/flatjson.h"
#include "host/json.h"
#include "host/keyfile.h"
#include "host/progress.h"
#include "host/cmd_serve.h"
#include "host/tls_client.h"
#include "sim/platform.h"

enum {
    O_HEAP = 300, O_JSON, O_HELP, O_NONCE, O_OUT, O_ENCLAVE, O_MEAS,
    O_ALLOW_SIM, O_REPORT, O_KEY, O_MAXEPS, O_CFG, O_DATA, O_GRANT,
    O_RECIPIENT, O_REPORT_OUT, O_EPOCHS, O_BATCH, O_LR, O_SEED, O_THREADS,
    O_KERNELS, O_QUIET, O_MODEL, O_REPORT_NONCE, O_CFG_DIGEST, O_ALLOW_NONE,
    O_ALLOW_OUTSOURCE,
    O_FILES, O_TLS, O_MAX_EVALS, O_MIN_EXAMPLES, O_RELEASE_TO,
    O_MAX_QUERIES,
};

static int opt_heap(const char *s, unsigned *out)
{
    long v;
    if (eml_opt_long("--heap-mb", s, 64, 1 << 20, &v) != 0) return -1;
    *out = (unsigned)v;
    return 0;
}

/* ==== measure ==== */

static const char measure_usage[] =
    "usage: enclaveml measure [--heap-mb M] [--enclave sim|none] [--files]\n"
    "                         [--json]\n"
    "\n"
    "Prints the measurement of the enclave: SHA-256 over the digests of\n"
    "every file mapped executable into it (the program and its shared\n"
    "libraries) and its policy (backend, heap budget).  For sim it runs\n"
    "the enclave program in its measure-only mode, which loads no secrets;\n"
    "--files also lists the measured files (sha256sum format).\n";

int eml_cmd_measure(int argc, char **argv)
{
    static const struct option opts[] = {
        {"heap-mb", required_argument, 0, O_HEAP},
        {"enclave", required_argument, 0, O_ENCLAVE},
        {"files", no_argument, 0, O_FILES},
        {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    unsigned heap = EML_DEFAULT_HEAP_MB;
    eml_backend backend = EML_BACKEND_SIM;
    int json = 0, list = 0, opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case O_HEAP: if (opt_heap(optarg, &heap)) return 1; break;
        case O_ENCLAVE:
            if (eml_backend_parse(optarg, &backend) != EML_OK)
                return eml_fail("--enclave: '%s' is not one of: sim, none",
                                optarg);
            break;
        case O_FILES: list = 1; break;
        case O_JSON: json = 1; break;
        case O_HELP: fputs(measure_usage, stdout); return 0;
        default: return eml_opt_unknown("measure", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("measure: unexpected argument '%s'", argv[optind]);
    uint8_t meas[32];
    char policy[EML_POLICY_MAX], hex[65];
    static char files[EML_MEASURE_LIST_MAX + 1];
    eml_err err = {0};
    eml_status st = eml_host_measure(backend, heap, meas, policy,
                                     sizeof(policy), files, sizeof(files),
                                     &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_hex(hex, meas, 32);
    if (json) {
        eml_json j;
        eml_json_begin(&j, stdout);
        eml_json_str(&j, "measurement", hex);
        eml_json_str(&j, "policy", policy);
        if (list) eml_json_str(&j, "files", files);
        eml_json_end(&j);
    } else {
        printf("%s\n", hex);
        if (list) fputs(files, stdout);
    }
    return 0;
}

/* ==== attest ==== */

static const char attest_usage[] =
    "usage: enclaveml attest [--nonce HEX] --out R.json [--heap-mb M]\n"
    "                        [--enclave sim|none]\n"
    "\n"
    "Starts the enclave and writes its attestation report: measurement,\n"
    "public keys, nonce and policy, signed by the platform (simulated\n"
    "platforms mark the report \"sim\": true).\n";

int eml_cmd_attest(int argc, char **argv)
{
    static const struct option opts[] = {
        {"nonce", required_argument, 0, O_NONCE},
        {"out", required_argument, 0, O_OUT},
        {"heap-mb", required_argument, 0, O_HEAP},
        {"enclave", required_argument, 0, O_ENCLAVE},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    eml_host_opts ho = {EML_BACKEND_SIM, EML_DEFAULT_HEAP_MB, 1};
    uint8_t nonce[EML_NONCE_MAX];
    size_t nlen = 0;
    const char *out = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case O_NONCE: if (eml_opt_nonce("--nonce", optarg, nonce, &nlen)) return 1; break;
        case O_OUT: out = optarg; break;
        case O_HEAP: if (opt_heap(optarg, &ho.heap_mb)) return 1; break;
        case O_ENCLAVE:
            if (eml_backend_parse(optarg, &ho.backend) != EML_OK)
                return eml_fail("--enclave: '%s' is not one of: sim, none",
                                optarg);
            break;
        case O_HELP: fputs(attest_usage, stdout); return 0;
        default: return eml_opt_unknown("attest", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("attest: unexpected argument '%s'", argv[optind]);
    if (out == NULL) return eml_fail("attest: --out is required");
    eml_enclave_host h;
    eml_err err = {0};
    eml_status st = eml_host_start(&h, &ho, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_ecall_attest q = {{nonce, nlen}};
    eml_reply_report rep;
    st = eml_host_call(&h, EML_MSG_ATTEST, &q, sizeof(q), &rep, sizeof(rep),
                       &err);
    if (st == EML_OK)
        st = eml_file_write_atomic(out, rep.report.p, rep.report.n, 0644,
                                   &err);
    eml_host_stop(&h);
    if (st != EML_OK) return eml_fail_st(st, &err);
    fprintf(stderr, "attestation report written to %s\n", out);
    return 0;
}

/* ==== verification ==== */

typedef struct attested {
    uint8_t measurement[32], x25519[32], ed25519[32];
    int sim;
} attested;

void eml_json_members(eml_json *o, const eml_flatjson *j)
{
    for (size_t i = 0; i < j->n; i++) {
        const eml_flatjson_member *m = &j->m[i];
        if (m->kind == EML_JSON_STRING)
            eml_json_str(o, m->key, m->str);
        else if (m->kind == EML_JSON_NUMBER)
            eml_json_num(o, m->key, m->num);
        else
            eml_json_bool(o, m->key, m->boolean);
    }
}

static int hex_field(const eml_flatjson *j, const char *key, uint8_t *out,
                     size_t n, const char *path)
{
    eml_err err = {0};
    eml_status st = eml_report_hex(j, key, out, n, &err);
    if (st != EML_OK) {
        eml_fail("%s: %s", path, eml_err_msg(&err, st));
        return -1;
    }
    return 0;
}

static int read_text(const char *path, char **text, size_t *len)
{
    uint8_t *buf = NULL;
    eml_err err = {0};
    eml_status st = eml_file_read(path, &buf, len, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    if (*len > EML_FLATJSON_MAX_TEXT) {
        free(buf);
        return eml_fail("%s: too large for a report", path);
    }
    *text = (char *)buf;
    return 0;
}

/* Verifies an attestation report file; fills a on success. */
static int verify_attestation(const char *path, const uint8_t meas[32],
                              const uint8_t *nonce, size_t nlen, int have_nonce,
                              int allow_sim, attested *a)
{
    char *text = NULL;
    size_t len = 0;
    if (read_text(path, &text, &len)) return 1;
    eml_err err = {0};
    /* allow_sim: bit 0 accepts simulated reports, bit 1 also the `none`
     * backend's platform key (--allow-none), which never verifies as sim. */
    eml_platform_key keys[2];
    size_t n_keys = 0;
    eml_status st = eml_verifier_keys(allow_sim, keys, &n_keys, &err);
    if (st != EML_OK) {
        free(text);
        return eml_fail_st(st, &err);
    }
    /* The checks every verifier makes (trusted code, shared with enclaves
     * that attest each other), then this command's choices. */
    eml_attestation at;
    st = eml_attestation_check(text, len, keys, n_keys, &at, &err);
    free(text);
    if (st != EML_OK) return eml_fail("%s: %s", path, eml_err_msg(&err, st));
    memcpy(a->measurement, at.measurement, 32);
    memcpy(a->x25519, at.x25519, 32);
    memcpy(a->ed25519, at.ed25519, 32);
    a->sim = at.sim;
    if (a->sim && !(allow_sim & 1))
        return eml_fail("%s: simulated attestation refused (a `sim` platform "
                        "proves nothing about hardware; pass --allow-sim to "
                        "accept it)",
                        path);
    if (!eml_ct_equal(a->measurement, meas, 32)) {
        char h[65];
        eml_hex(h, a->measurement, 32);
        return eml_fail("%s: measurement %s is not the expected one", path,
                        h);
    }
    if (have_nonce &&
        (at.nonce_len != nlen || memcmp(at.nonce, nonce, nlen) != 0))
        return eml_fail("%s: nonce does not match (a replayed report?)",
                        path);
    return 0;
}

/* What a training report is checked against, beyond its signature. */
typedef struct training_checks {
    const char *model;          /* the model file it must describe */
    const uint8_t *nonce;       /* the model owner's report nonce */
    size_t nonce_len;
    int have_nonce;
    const uint8_t *recipient;   /* the key the model must be encrypted to */
} training_checks;

/* The model file is the container the enclave sent (its SHA-256), and that
 * container is encrypted to the report's recipient. */
static int check_model(const char *path, const char *model,
                       const eml_flatjson *j, const uint8_t recipient[32])
{
    uint8_t want[32], got[32];
    if (hex_field(j, "model_file_sha256", want, 32, path)) return 1;
    eml_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(model, &buf, &len, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    if (eml_sha256(got, buf, len) != EML_OK || !eml_ct_equal(want, got, 32)) {
        free(buf);
        return eml_fail("%s: the report does not describe this model (its "
                        "model_file_sha256 differs from %s's SHA-256)",
                        path, model);
    }
    eml_container_info info;
    uint8_t kid[16];
    size_t hl = len < EML_CONTAINER_HEADER_MAX ? len : EML_CONTAINER_HEADER_MAX;
    size_t hlen = 0;
    st = eml_cr_header_len(buf, hl, &hlen, &err);
    if (st == EML_OK && hlen > hl) st = EML_ERR_TRUNCATED;
    if (st == EML_OK) st = eml_container_peek(buf, hlen, &info, &err);
    free(buf);
    if (st != EML_OK) return eml_fail("%s: not a model container", model);
    if (eml_container_key_id(kid, recipient) != EML_OK ||
        info.mode != EML_CONTAINER_RECIPIENT ||
        !eml_ct_equal(kid, info.key_id, 16))
        return eml_fail("%s: not encrypted to the report's recipient", model);
    return 0;
}

/* The report's report_nonce is well formed and, if one was given, the
 * verifier's. */
static int check_nonce(const char *path, const eml_flatjson *j,
                       const training_checks *c)
{
    uint8_t rn[EML_NONCE_MAX];
    const char *nonce_hex = eml_flatjson_str(j, "report_nonce");
    size_t rnl = nonce_hex != NULL ? strlen(nonce_hex) : 1;
    if (rnl % 2 != 0 || rnl / 2 > EML_NONCE_MAX ||
        eml_unhex(rn, rnl / 2, nonce_hex, rnl) != 0)
        return eml_fail("%s: malformed report_nonce", path);
    if (c->have_nonce &&
        (rnl / 2 != c->nonce_len || memcmp(rn, c->nonce, c->nonce_len) != 0))
        return eml_fail("%s: report_nonce does not match (a report of "
                        "another run?)",
                        path);
    return 0;
}

/* An evaluation report (docs/evaluate.md), its signature already checked:
 * made by the attested measurement, with the verifier's nonce, and (with
 * --model) about that model file. */
static int verify_evaluation(const char *path, const attested *a,
                             const training_checks *c, const eml_flatjson *j,
                             int json)
{
    double version = 0, acc = 0, loss = 0, n = 0, sets = 0, classes = 0;
    uint8_t meas[32], want[32], cfg[32];
    int sim;
    if (eml_flatjson_num(j, "version", &version) != 0 || version != 1)
        return eml_fail("%s: evaluation report version %g is not supported",
                        path, version);
    if (hex_field(j, "measurement", meas, 32, path) ||
        hex_field(j, "model_file_sha256", want, 32, path) ||
        hex_field(j, "cfg_sha256", cfg, 32, path))
        return 1;
    if (!eml_ct_equal(meas, a->measurement, 32))
        return eml_fail("%s: made by another enclave measurement", path);
    if (eml_flatjson_bool(j, "sim", &sim) != 0 || sim != a->sim)
        return eml_fail("%s: sim flag differs from the attestation", path);
    if (check_nonce(path, j, c)) return 1;
    if (c->recipient != NULL)
        return eml_fail("%s: an evaluation report sends no model to a "
                        "recipient (--recipient checks training reports)",
                        path);
    if (eml_flatjson_num(j, "accuracy", &acc) != 0 ||
        eml_flatjson_num(j, "loss", &loss) != 0 ||
        eml_flatjson_num(j, "examples", &n) != 0 ||
        eml_flatjson_num(j, "test_sets", &sets) != 0 ||
        eml_flatjson_num(j, "classes", &classes) != 0 ||
        eml_flatjson_str(j, "confusion") == NULL ||
        eml_flatjson_str(j, "datasets") == NULL)
        return eml_fail("%s: an evaluation report without its figures", path);
    if (c->model != NULL) {
        uint8_t *buf = NULL, got[32];
        size_t len = 0;
        eml_err err = {0};
        eml_status st = eml_file_read(c->model, &buf, &len, &err);
        if (st != EML_OK) return eml_fail_st(st, &err);
        st = eml_sha256(got, buf, len);
        free(buf);
        if (st != EML_OK || !eml_ct_equal(want, got, 32))
            return eml_fail("%s: the report is about another model (its "
                            "model_file_sha256 differs from %s's SHA-256)",
                            path, c->model);
    }
    if (json) {
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_bool(&o, "verified", 1);
        eml_json_bool(&o, "model_checked", c->model != NULL);
        eml_json_members(&o, j);
        eml_json_end(&o);
    } else {
        char mh[65], ch[65], rel[64] = "";
        eml_hex(mh, want, 32);
        eml_hex(ch, cfg, 32);
        const char *to = eml_flatjson_str(j, "released_to");
        if (to != NULL)
            snprintf(rel, sizeof(rel), ", model released to %.16s...", to);
        printf("evaluation report verified: signed by the attested "
               "enclave%s, accuracy %.2f%%, loss %.4f, %.0f examples in "
               "%.0f test set(s), %.0f classes, model file %.16s..., cfg "
               "%.16s...%s\n",
               c->model != NULL ? ", about the model file" : "", 100.0 * acc,
               loss, n, sets, classes, mh, ch, rel);
    }
    return 0;
}

static int verify_training(const char *path, const attested *a,
                           const training_checks *c, int json)
{
    char *text = NULL;
    size_t len = 0;
    if (read_text(path, &text, &len)) return 1;
    eml_status st = eml_report_verify(text, len, a->ed25519);
    if (st != EML_OK) {
        free(text);
        return eml_fail("%s: %s", path,
                        st == EML_ERR_AUTH
                            ? "enclave signature does not verify (forged or "
                              "altered, or signed by another enclave)"
                            : "not a signed enclaveml report");
    }
    eml_flatjson j;
    eml_err err = {0};
    st = eml_flatjson_parse(text, len, &j, &err);
    free(text);
    if (st != EML_OK) return eml_fail("%s: %s", path, eml_err_msg(&err, st));
    int rc = 1, sim;
    uint8_t meas[32], rcpt[32];
    double version = 0;
    const char *type = eml_flatjson_str(&j, "type");
    if (type != NULL && strcmp(type, "enclaveml-evaluation-report") == 0) {
        rc = verify_evaluation(path, a, c, &j, json);
        goto out;
    }
    if (type == NULL || strcmp(type, "enclaveml-training-report") != 0) {
        eml_fail("%s: not a training report", path);
        goto out;
    }
    if (eml_flatjson_num(&j, "version", &version) != 0 || version != 2) {
        eml_fail("%s: training report version %g is no longer supported "
                 "(it binds no model file, grants or nonce)",
                 path, version);
        goto out;
    }
    if (hex_field(&j, "measurement", meas, 32, path) ||
        hex_field(&j, "recipient", rcpt, 32, path))
        goto out;
    if (!eml_ct_equal(meas, a->measurement, 32)) {
        eml_fail("%s: made by another enclave measurement", path);
        goto out;
    }
    if (eml_flatjson_bool(&j, "sim", &sim) != 0 || sim != a->sim) {
        eml_fail("%s: sim flag differs from the attestation", path);
        goto out;
    }
    if (check_nonce(path, &j, c)) goto out;
    if (c->recipient != NULL && !eml_ct_equal(rcpt, c->recipient, 32)) {
        eml_fail("%s: the model went to another recipient than the one "
                 "given",
                 path);
        goto out;
    }
    if (c->model != NULL && check_model(path, c->model, &j, rcpt)) goto out;
    double acc = 0;
    (void)eml_flatjson_num(&j, "test_accuracy", &acc);
    if (json) {
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_bool(&o, "verified", 1);
        eml_json_bool(&o, "model_checked", c->model != NULL);
        eml_json_members(&o, &j);
        eml_json_end(&o);
    } else {
        printf("training report verified: signed by the attested enclave%s, "
               "test accuracy %.2f%%\n",
               c->model != NULL ? ", describes the model file" : "",
               100.0 * acc);
    }
    rc = 0;
out:
    eml_flatjson_free(&j);
    return rc;
}

static const char verify_usage[] =
    "usage: enclaveml verify R.json --measurement HEX [--nonce HEX]\n"
    "                        [--allow-sim [--allow-none]] [--json]\n"
    "       enclaveml verify --tls HOST:PORT --measurement HEX\n"
    "                        [--allow-sim [--allow-none]] [--json]\n"
    "       enclaveml verify T.json --report R.json --measurement HEX\n"
    "                        [--model M.emlm|M.emlc] [--report-nonce HEX]\n"
    "                        [--recipient M.pub] [--allow-sim] [--json]\n"
    "\n"
    "Checks an attestation report (platform signature, measurement, nonce,\n"
    "binding of keys and policy), or a training or evaluation report\n"
    "against the attestation of the enclave that signed it; with --model,\n"
    "that the report describes that model file (its SHA-256) and, for a\n"
    "training report, that the file is encrypted to the report's\n"
    "recipient; with --report-nonce, that the report carries the nonce\n"
    "given to `train` or `evaluate --report-nonce`; with --recipient, that\n"
    "the model went to that key.  Exits 0 only if everything checks.\n"
    "Simulated reports are refused without --allow-sim;\n"
    "reports of the in-process `none` backend (its own platform key) also\n"
    "need --allow-none.  With --tls, the attested server there (`enclaveml\n"
    "serve`): the report in its TLS certificate, and that the report binds\n"
    "the certificate's key; prints the key's pin for curl --pinnedpubkey.\n";

int eml_cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"measurement", required_argument, 0, O_MEAS},
        {"nonce", required_argument, 0, O_NONCE},
        {"allow-sim", no_argument, 0, O_ALLOW_SIM},
        {"allow-none", no_argument, 0, O_ALLOW_NONE},
        {"report", required_argument, 0, O_REPORT},
        {"model", required_argument, 0, O_MODEL},
        {"report-nonce", required_argument, 0, O_REPORT_NONCE},
        {"recipient", required_argument, 0, O_RECIPIENT},
        {"json", no_argument, 0, O_JSON},
        {"tls", required_argument, 0, O_TLS},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    uint8_t meas[32], nonce[EML_NONCE_MAX], rnonce[EML_NONCE_MAX], rpk[32];
    const char *tls = NULL;
    size_t nlen = 0;
    int have_meas = 0, have_nonce = 0, allow_sim = 0, json = 0, opt;
    const char *report = NULL, *recipient = NULL;
    training_checks tc;
    memset(&tc, 0, sizeof(tc));
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case O_MEAS:
            if (eml_opt_hex("--measurement", optarg, meas, 32)) return 1;
            have_meas = 1;
            break;
        case O_NONCE:
            if (eml_opt_nonce("--nonce", optarg, nonce, &nlen)) return 1;
            have_nonce = 1;
            break;
        case O_ALLOW_SIM: allow_sim |= 1; break;
        case O_ALLOW_NONE: allow_sim |= 2; break;
        case O_REPORT: report = optarg; break;
        case O_MODEL: tc.model = optarg; break;
        case O_REPORT_NONCE:
            if (eml_opt_nonce("--report-nonce", optarg, rnonce, &tc.nonce_len))
                return 1;
            tc.nonce = rnonce;
            tc.have_nonce = 1;
            break;
        case O_RECIPIENT: recipient = optarg; break;
        case O_JSON: json = 1; break;
        case O_TLS: tls = optarg; break;
        case O_HELP: fputs(verify_usage, stdout); return 0;
        default: return eml_opt_unknown("verify", argc, argv);
        }
    }
    if (tls != NULL) {
        if (optind != argc || !have_meas || report || have_nonce)
            return eml_fail("verify: --tls takes --measurement (and "
                            "--allow-sim, --allow-none, --json) only");
        return eml_verify_tls(tls, meas, allow_sim, json);
    }
    if (optind + 1 != argc)
        return eml_fail("verify: give exactly one report file");
    if (!have_meas) return eml_fail("verify: --measurement is required");
    const char *path = argv[optind];
    attested a;
    if (report == NULL && (tc.model || tc.have_nonce || recipient))
        return eml_fail("verify: --model, --report-nonce and --recipient "
                        "check a training or evaluation report: give "
                        "--report R.json");
    if (recipient != NULL) {
        eml_err err = {0};
        eml_status st = eml_pubfile_load(recipient, rpk, &err);
        if (st != EML_OK) return eml_fail_st(st, &err);
        tc.recipient = rpk;
    }
    if (report != NULL) {
        if (verify_attestation(report, meas, nonce, nlen, have_nonce,
                               allow_sim, &a))
            return 1;
        return verify_training(path, &a, &tc, json);
    }
    if (verify_attestation(path, meas, nonce, nlen, have_nonce, allow_sim, &a))
        return 1;
    if (json) {
        char h[65];
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_bool(&o, "verified", 1);
        eml_hex(h, a.measurement, 32);
        eml_json_str(&o, "measurement", h);
        eml_hex(h, a.x25519, 32);
        eml_json_str(&o, "x25519", h);
        eml_hex(h, a.ed25519, 32);
        eml_json_str(&o, "ed25519", h);
        eml_json_bool(&o, "sim", a.sim);
        eml_json_end(&o);
    } else {
        printf("attestation verified%s\n", a.sim ? " (simulated platform)" : "");
    }
    return 0;
}

/* ==== grant ==== */

static const char grant_usage[] =
    "usage: enclaveml grant --key NAME.key --report R.json --measurement HEX\n"
    "                       --recipient M.pub [--recipient M2.pub ...]\n"
    "                       [--cfg-digest HEX] [--max-epsilon E]\n"
    "                       [--nonce HEX] [--allow-sim] [--allow-none]\n"
    "                       [--allow-outsource] [--max-evaluations N]\n"
    "                       [--min-examples M] [--release-to ORG.pub]\n"
    "                       [--max-queries N] --out NAME.grant\n"
    "\n"
    "Verifies the enclave's attestation report, then wraps the owner's data\n"
    "key to the enclave's X25519 key, bound to the measurement.  The grant\n"
    "says what the data may be used for, and the enclave refuses any other\n"
    "run:\n"
    "  --recipient M.pub   a model trained on this data may be encrypted to\n"
    "                      this key only (repeatable, up to 16).  Required:\n"
    "                      a grant naming no recipient is refused, since the\n"
    "                      host would then choose who gets the model.\n"
    "  --cfg-digest HEX    only the network whose cfg file has this SHA-256\n"
    "                      (sha256sum F.cfg)\n"
    "  --max-epsilon E     only differentially private training, spending\n"
    "                      at most E in total over every run that uses this\n"
    "                      grant (the enclave keeps a sealed spend ledger;\n"
    "                      docs/dp.md)\n"
    "  --allow-outsource   the run may send its linear layers' products to\n"
    "                      an untrusted worker (integrity mode: the worker\n"
    "                      sees activations, weights and gradients;\n"
    "                      docs/outsource.md).  Off by default.\n"
    "For `enclaveml evaluate` (docs/evaluate.md):\n"
    "  --max-evaluations N a test-data owner's: at most N evaluations of any\n"
    "                      one model on this data (counted in the sealed\n"
    "                      spend ledger, across restarts)\n"
    "  --min-examples M    a test-data owner's: an evaluation using this\n"
    "                      grant must count at least M examples in all\n"
    "  --release-to ORG.pub a model owner's: after an evaluation the enclave\n"
    "                      may re-encrypt the model to this key (evaluate\n"
    "                      --release-to), and to no other\n"
    "For `enclaveml predict --model-grant` (docs/evaluate.md):\n"
    "  --max-queries N     a model owner's: at most N predictions (images)\n"
    "                      of this model to any one recipient key, counted\n"
    "                      in the sealed spend ledger: a brake on model\n"
    "                      extraction, not a proof against it\n";

/* The recipients' public keys (each once) and the release key into gi;
 * 0, or 1 with the error printed. */
static int load_grant_keys(eml_grant_info *gi, const char *const *recipients,
                           const char *release)
{
    for (unsigned i = 0; i < gi->n_recipients; i++) {
        eml_err rerr = {0};
        eml_status rst = eml_pubfile_load(recipients[i], gi->recipients[i],
                                          &rerr);
        if (rst != EML_OK) return eml_fail_st(rst, &rerr);
        for (unsigned p = 0; p < i; p++)
            if (memcmp(gi->recipients[p], gi->recipients[i], 32) == 0)
                return eml_fail("grant: %s names the same key as %s",
                                recipients[i], recipients[p]);
    }
    if (release != NULL) {
        eml_err rerr = {0};
        eml_status rst = eml_pubfile_load(release, gi->release_to, &rerr);
        if (rst != EML_OK) return eml_fail_st(rst, &rerr);
        gi->has_release_to = 1;
    }
    return 0;
}

/* --max-evaluations, --min-examples, --max-queries into gi; 0, or 1
 * with the error printed. */
static int limit_opt(eml_grant_info *gi, int opt, const char *v)
{
    long lv = 0;
    switch (opt) {
    case O_MAX_EVALS:
        if (eml_opt_long("--max-evaluations", v, 1, 1000000000L, &lv))
            return 1;
        gi->has_max_evaluations = 1;
        gi->max_evaluations = (uint32_t)lv;
        return 0;
    case O_MAX_QUERIES:
        if (eml_opt_long("--max-queries", v, 1, 1000000000L, &lv)) return 1;
        gi->has_max_queries = 1;
        gi->max_queries = (uint32_t)lv;
        return 0;
    default:
        if (eml_opt_u64("--min-examples", v, &gi->min_examples)) return 1;
        if (gi->min_examples == 0)
            return eml_fail("grant: --min-examples must be at least 1");
        gi->has_min_examples = 1;
        return 0;
    }
}

int eml_cmd_grant(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, O_KEY},
        {"report", required_argument, 0, O_REPORT},
        {"measurement", required_argument, 0, O_MEAS},
        {"nonce", required_argument, 0, O_NONCE},
        {"allow-sim", no_argument, 0, O_ALLOW_SIM},
        {"allow-none", no_argument, 0, O_ALLOW_NONE},
        {"max-epsilon", required_argument, 0, O_MAXEPS},
        {"recipient", required_argument, 0, O_RECIPIENT},
        {"cfg-digest", required_argument, 0, O_CFG_DIGEST},
        {"allow-outsource", no_argument, 0, O_ALLOW_OUTSOURCE},
        {"max-evaluations", required_argument, 0, O_MAX_EVALS},
        {"min-examples", required_argument, 0, O_MIN_EXAMPLES},
        {"release-to", required_argument, 0, O_RELEASE_TO},
        {"max-queries", required_argument, 0, O_MAX_QUERIES},
        {"out", required_argument, 0, O_OUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    const char *key = NULL, *report = NULL, *out = NULL, *release = NULL;
    const char *recipients[EML_GRANT_RECIPIENTS_MAX];
    uint8_t meas[32], nonce[EML_NONCE_MAX];
    size_t nlen = 0;
    int have_meas = 0, have_nonce = 0, allow_sim = 0, opt;
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case O_KEY: key = optarg; break;
        case O_REPORT: report = optarg; break;
        case O_OUT: out = optarg; break;
        case O_MEAS:
            if (eml_opt_hex("--measurement", optarg, meas, 32)) return 1;
            have_meas = 1;
            break;
        case O_NONCE:
            if (eml_opt_nonce("--nonce", optarg, nonce, &nlen)) return 1;
            have_nonce = 1;
            break;
        case O_ALLOW_SIM: allow_sim |= 1; break;
        case O_ALLOW_NONE: allow_sim |= 2; break;
        case O_MAXEPS:
            if (eml_opt_double("--max-epsilon", optarg, 0, 1e6,
                               &gi.max_epsilon))
                return 1;
            gi.has_max_epsilon = 1;
            break;
        case O_RECIPIENT:
            if (gi.n_recipients == EML_GRANT_RECIPIENTS_MAX)
                return eml_fail("grant: at most %d --recipient",
                                EML_GRANT_RECIPIENTS_MAX);
            recipients[gi.n_recipients++] = optarg;
            break;
        case O_CFG_DIGEST:
            if (eml_opt_hex("--cfg-digest", optarg, gi.cfg_digest, 32))
                return 1;
            gi.has_cfg_digest = 1;
            break;
        case O_ALLOW_OUTSOURCE: gi.allow_outsource = 1; break;
        case O_MAX_EVALS:
        case O_MIN_EXAMPLES:
        case O_MAX_QUERIES:
            if (limit_opt(&gi, opt, optarg)) return 1;
            break;
        case O_RELEASE_TO: release = optarg; break;
        case O_HELP: fputs(grant_usage, stdout); return 0;
        default: return eml_opt_unknown("grant", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("grant: unexpected argument '%s'", argv[optind]);
    if (key == NULL || report == NULL || out == NULL || !have_meas)
        return eml_fail("grant: --key, --report, --measurement and --out are "
                        "required");
    if (gi.n_recipients == 0)
        return eml_fail("grant: name at least one --recipient M.pub (the key "
                        "a model trained on this data may be encrypted to); "
                        "a grant naming none is refused, since the host "
                        "would then choose who gets the model");
    if (load_grant_keys(&gi, recipients, release)) return 1;
    attested a;
    if (verify_attestation(report, meas, nonce, nlen, have_nonce, allow_sim,
                           &a))
        return 1;
    eml_keyfile *k = NULL;
    eml_err err = {0};
    eml_status st = eml_keyfile_load(key, &k, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    memcpy(gi.measurement, a.measurement, 32);
    memcpy(gi.enclave_pk, a.x25519, 32);
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t glen = 0;
    st = eml_container_key_id(gi.key_id, k->data_key);
    if (st == EML_OK) st = eml_grant_build(g, &glen, &gi, k->data_key);
    eml_keyfile_free(k);
    if (st == EML_OK) st = eml_file_write_atomic(out, g, glen, 0644, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    fprintf(stderr, "grant written to %s\n", out);
    return 0;
}
