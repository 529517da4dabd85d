/*
 * cmd_client.c - `enclaveml client` and `enclaveml verify --tls`: a client
 * of the attested inference server that checks the enclave's attestation
 * in its TLS certificate before it sends anything (tls_client.c), then
 * sends test images and counts what comes back (docs/serve.md).  Host
 * side.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "enclaveml/enclave.h"
#include "enclaveml/idx.h"
#include "host/cli.h"
#include "host/cmd_serve.h"
#include "host/hostio.h"
#include "host/json.h"
#include "host/tls_client.h"

#define CLIENT_TIMEOUT_MS 60000

int eml_verify_tls(const char *addr, const uint8_t measurement[32], int allow,
                   int json)
{
    eml_err err = {0};
    eml_tls_client *c = NULL;
    eml_ratls_info info;
    eml_status st = eml_tls_client_open(addr, measurement, allow,
                                        CLIENT_TIMEOUT_MS, &c, &info, &err);
    eml_tls_client_close(c);
    if (st != EML_OK) return eml_fail("verify: %s", eml_err_msg(&err, st));
    char pin[EML_TLS_PIN_LEN], mh[65];
    eml_tls_pin(info.spki_sha256, pin);
    eml_hex(mh, info.measurement, 32);
    if (json) {
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_bool(&o, "verified", 1);
        eml_json_str(&o, "measurement", mh);
        eml_json_bool(&o, "sim", info.sim);
        eml_json_str(&o, "pin", pin);
        eml_json_end(&o);
    } else {
        printf("attestation verified%s: %s runs enclave %s; its TLS key is "
               "%s (curl --pinnedpubkey '%s')\n",
               info.sim ? " (simulated platform)" : "", addr, mh, pin, pin);
    }
    return 0;
}

static const char client_usage[] =
    "usage: enclaveml client --tls HOST:PORT --measurement HEX\n"
    "                        [--allow-sim [--allow-none]] [--data DIR]\n"
    "                        [--count N] [--batch K] [--name NAME]\n"
    "                        [--format json|raw] [--json]\n"
    "\n"
    "Connects to an attested server (`enclaveml serve`), checks the\n"
    "attestation report in its TLS certificate (platform signature,\n"
    "measurement, binding to the TLS key) before sending anything, then\n"
    "posts the first --count (1000) test images of DIR (default the\n"
    "Debian Fashion-MNIST folder) to /v1/models/NAME:predict (NAME\n"
    "default model), --batch (16) instances a request, one connection;\n"
    "--format json sends {\"instances\": ...} (the default), raw sends\n"
    "uint8 pixels as application/octet-stream.  Prints the accuracy of\n"
    "the answers, requests per second and latency percentiles.\n";

enum { C_TLS = 2000, C_MEAS, C_SIM, C_NONE, C_DATA, C_COUNT, C_BATCH,
       C_NAME, C_FORMAT, C_JSON, C_HELP };

typedef struct client_args {
    const char *tls, *data, *name;
    uint8_t meas[32];
    int have_meas, allow, json, raw;
    long count, batch;
} client_args;

static int client_parse(int argc, char **argv, client_args *a)
{
    static const struct option opts[] = {
        {"tls", required_argument, 0, C_TLS},
        {"measurement", required_argument, 0, C_MEAS},
        {"allow-sim", no_argument, 0, C_SIM},
        {"allow-none", no_argument, 0, C_NONE},
        {"data", required_argument, 0, C_DATA},
        {"count", required_argument, 0, C_COUNT},
        {"batch", required_argument, 0, C_BATCH},
        {"name", required_argument, 0, C_NAME},
        {"format", required_argument, 0, C_FORMAT},
        {"json", no_argument, 0, C_JSON},
        {"help", no_argument, 0, C_HELP},
        {0, 0, 0, 0}};
    memset(a, 0, sizeof(*a));
    a->data = EML_DEFAULT_DATA_DIR;
    a->name = "model";
    a->count = 1000;
    a->batch = 16;
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case C_TLS: a->tls = optarg; break;
        case C_MEAS:
            if (eml_opt_hex("--measurement", optarg, a->meas, 32)) return 1;
            a->have_meas = 1;
            break;
        case C_SIM: a->allow |= EML_ALLOW_SIM; break;
        case C_NONE: a->allow |= EML_ALLOW_NONE; break;
        case C_DATA: a->data = optarg; break;
        case C_COUNT:
            if (eml_opt_long("--count", optarg, 1, 10000000, &a->count))
                return 1;
            break;
        case C_BATCH:
            if (eml_opt_long("--batch", optarg, 1, 1024, &a->batch)) return 1;
            break;
        case C_NAME: a->name = optarg; break;
        case C_FORMAT:
            if (strcmp(optarg, "json") != 0 && strcmp(optarg, "raw") != 0)
                return eml_fail("client: --format is json or raw");
            a->raw = strcmp(optarg, "raw") == 0;
            break;
        case C_JSON: a->json = 1; break;
        case C_HELP: fputs(client_usage, stdout); return -1;
        default: return eml_opt_unknown("client", argc, argv);
        }
    }
    if (optind != argc)
        return eml_fail("client: unexpected argument '%s'", argv[optind]);
    if (a->tls == NULL || !a->have_meas)
        return eml_fail("client: --tls and --measurement are required");
    return 0;
}

/* The request for images [first, first + n): headers, then the body. */
static eml_status build_request(const client_args *a, const eml_idx *img,
                                size_t first, size_t n, eml_http_buf *body,
                                eml_http_buf *req, eml_err *err)
{
    size_t item = img->item;
    const uint8_t *px = img->data + first * item;
    eml_http_buf_reset(body);
    eml_http_buf_reset(req);
    eml_status st = EML_OK;
    if (a->raw) {
        st = eml_http_buf_put(body, px, n * item, err);
    } else {
        st = eml_http_buf_printf(body, err, "{\"instances\": [");
        for (size_t i = 0; st == EML_OK && i < n; i++) {
            st = eml_http_buf_printf(body, err, "%s[", i ? ", " : "");
            for (size_t k = 0; st == EML_OK && k < item; k++)
                st = eml_http_buf_printf(body, err, "%s%.6g", k ? "," : "",
                                         px[i * item + k] / 255.0);
            if (st == EML_OK) st = eml_http_buf_printf(body, err, "]");
        }
        if (st == EML_OK) st = eml_http_buf_printf(body, err, "]}");
    }
    if (st != EML_OK) return st;
    return eml_http_buf_printf(
        req, err,
        "POST /v1/models/%s:predict HTTP/1.1\r\nHost: enclave\r\n"
        "Content-Type: %s\r\n%sContent-Length: %zu\r\n\r\n",
        a->name, a->raw ? "application/octet-stream" : "application/json",
        a->raw ? "X-Tensor-Dtype: uint8\r\n" : "", body->len);
}

/* The argmax of each of n answers: raw float32 rows, or the rows of
 * {"predictions": [[...], ...]}; the number of classes follows from the
 * count of values.  -1 when the body is not n such rows. */
static int argmaxes(const uint8_t *b, size_t len, int raw, size_t n,
                    int *out)
{
    size_t cap = len / 2 + 1, got = 0;
    float *v = malloc(cap * sizeof(float));
    if (v == NULL) return -1;
    if (raw) {
        got = len / 4;
        memcpy(v, b, got * 4);
    } else {
        const char *p = (const char *)b, *end = p + len;
        while (p < end && got < cap) {
            if ((*p >= '0' && *p <= '9') || *p == '-') {
                char tmp[64];
                size_t k = 0;
                while (p < end && k < sizeof(tmp) - 1 &&
                       strchr("0123456789+-.eE", *p) != NULL)
                    tmp[k++] = *p++;
                tmp[k] = 0;
                v[got++] = strtof(tmp, NULL);
            } else {
                p++;
            }
        }
    }
    if (got == 0 || got % n != 0) {
        free(v);
        return -1;
    }
    size_t k = got / n;
    for (size_t i = 0; i < n; i++) {
        int best = 0;
        for (size_t j = 1; j < k; j++)
            if (v[i * k + j] > v[i * k + (size_t)best]) best = (int)j;
        out[i] = best;
    }
    free(v);
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void report(const client_args *a, long right, long total,
                   double *lat, size_t nreq, double wall)
{
    qsort(lat, nreq, sizeof(double), cmp_double);
    double p50 = lat[nreq / 2], p99 = lat[(size_t)((double)nreq * 0.99)];
    double acc = total ? (double)right / (double)total : 0;
    if (a->json) {
        eml_json o;
        eml_json_begin(&o, stdout);
        eml_json_num(&o, "accuracy", acc);
        eml_json_int(&o, "count", total);
        eml_json_int(&o, "requests", (long long)nreq);
        eml_json_num(&o, "requests_per_second", (double)nreq / wall);
        eml_json_num(&o, "latency_p50_ms", p50 * 1e3);
        eml_json_num(&o, "latency_p99_ms", p99 * 1e3);
        eml_json_end(&o);
    } else {
        printf("%ld of %ld right (%.2f%%) in %zu requests: %.1f requests/s, "
               "latency p50 %.2f ms, p99 %.2f ms\n",
               right, total, 100 * acc, nreq, (double)nreq / wall,
               p50 * 1e3, p99 * 1e3);
    }
}

static int run_client(const client_args *a, const eml_idx *img,
                      const eml_idx *lab, eml_tls_client *c)
{
    size_t count = (size_t)a->count < img->count ? (size_t)a->count
                                                 : img->count;
    size_t nreq = (count + (size_t)a->batch - 1) / (size_t)a->batch;
    double *lat = calloc(nreq ? nreq : 1, sizeof(double));
    int *pred = malloc((size_t)a->batch * sizeof(int));
    eml_http_buf body, req, resp;
    eml_http_buf_init(&body, (size_t)1 << 30);
    eml_http_buf_init(&req, 4096);
    eml_http_buf_init(&resp, (size_t)1 << 30);
    eml_err err = {0};
    eml_status st = lat && pred ? EML_OK : EML_ERR_NOMEM;
    long right = 0;
    double t0 = now_s();
    int rc = 0;
    for (size_t r = 0; st == EML_OK && r < nreq; r++) {
        size_t first = r * (size_t)a->batch;
        size_t n = count - first < (size_t)a->batch ? count - first
                                                    : (size_t)a->batch;
        int code = 0;
        size_t off = 0, blen = 0;
        double t = now_s();
        st = build_request(a, img, first, n, &body, &req, &err);
        if (st == EML_OK) st = eml_tls_client_write(c, req.p, req.len, &err);
        if (st == EML_OK) st = eml_tls_client_write(c, body.p, body.len, &err);
        if (st == EML_OK)
            st = eml_tls_client_response(c, &resp, &code, &off, &blen, &err);
        lat[r] = now_s() - t;
        if (st == EML_OK && code != 200) {
            rc = eml_fail("client: the server answered %d: %.*s", code,
                          (int)blen, (const char *)resp.p + off);
            break;
        }
        if (st == EML_OK && argmaxes(resp.p + off, blen, a->raw, n, pred)) {
            rc = eml_fail("client: an answer that is not %zu predictions", n);
            break;
        }
        for (size_t i = 0; st == EML_OK && i < n; i++)
            right += pred[i] == (int)lab->data[first + i];
    }
    if (st != EML_OK) rc = eml_fail("client: %s", eml_err_msg(&err, st));
    if (rc == 0) report(a, right, (long)count, lat, nreq, now_s() - t0);
    free(lat);
    free(pred);
    eml_http_buf_free(&body);
    eml_http_buf_free(&req);
    eml_http_buf_free(&resp);
    return rc;
}

int eml_cmd_client(int argc, char **argv)
{
    client_args a;
    int r = client_parse(argc, argv, &a);
    if (r) return r < 0 ? 0 : 1;
    eml_labelled test;
    eml_err err = {0};
    eml_status st = eml_labelled_load(a.data, "t10k", &test, &err);
    if (st != EML_OK) return eml_fail_st(st, &err);
    eml_tls_client *c = NULL;
    st = eml_tls_client_open(a.tls, a.meas, a.allow, CLIENT_TIMEOUT_MS, &c,
                             NULL, &err);
    if (st != EML_OK) {
        eml_labelled_free(&test);
        return eml_fail("client: %s", eml_err_msg(&err, st));
    }
    r = run_client(&a, &test.images, &test.labels, c);
    eml_tls_client_close(c);
    eml_labelled_free(&test);
    return r;
}
