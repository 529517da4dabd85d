/*
 * fuzz_msg_host.c - libFuzzer target for the host side of the boundary:
 * eml_host_call (src/host/enclave_host.c) and the parsing the commands do
 * of the enclave's replies, fed a hostile enclave.
 *
 * The input is the byte stream an enclave program sends: replies
 * (INIT_OK, REPORT, TRAIN_DONE, PONG, SHUTDOWN_OK, ERROR) and, during
 * TRAIN, ocalls (FILE_OPEN, FILE_READ, OUTPUT, PROGRESS).  No enclave is
 * started: a thread writes the input into one end of a socketpair (and
 * drains what the host sends), the host's channel is the other end.  The
 * host makes the calls of a confidential training run in order: INIT,
 * ATTEST, TRAIN, PING, SHUTDOWN, and decodes each reply as the commands
 * do (INIT_OK fields, report signature and JSON).  Its ocall services work
 * for real: four readable files, and OUTPUT into /dev/null.  Beyond the
 * sanitizers, nothing must hang or crash.  First, the input is decoded as
 * every message of the codec's table, and whatever decodes must encode
 * back to the same bytes.
 *
 *   ./build-fuzz/fuzz/fuzz_msg_host -max_total_time=60 fuzz/corpus/msg_host
 *
 * Seeds: recorded sessions (see fuzz_msg_enclave.c for the generator).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "feeder.h"
#include "enclaveml/boundary.h"
#include "enclaveml/crypto.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "host/enclave_host.h"
#include "enclaveml/flatjson.h"

#define N_FILES 4

static char g_dir[] = "/tmp/eml-fuzz-host-XXXXXX";
static char *g_paths[N_FILES];
static int g_null = -1;
static uint8_t g_platform_pk[32];


static void cleanup(void)
{
    for (int i = 0; i < N_FILES; i++)
        if (g_paths[i] != NULL) unlink(g_paths[i]);
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (mkdtemp(g_dir) == NULL) abort();
    atexit(cleanup);
    /* Files of 0, 100, 5000 and 70000 bytes for FILE_OPEN / FILE_READ. */
    static const size_t sizes[N_FILES] = {0, 100, 5000, 70000};
    for (int i = 0; i < N_FILES; i++) {
        g_paths[i] = malloc(sizeof(g_dir) + 16);
        if (g_paths[i] == NULL) abort();
        snprintf(g_paths[i], sizeof(g_dir) + 16, "%s/f%d", g_dir, i);
        FILE *f = fopen(g_paths[i], "wb");
        if (f == NULL) abort();
        for (size_t k = 0; k < sizes[i]; k++) fputc((int)(k * 31 % 251), f);
        fclose(f);
    }
    g_null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (g_null < 0) abort();
    /* fuzz_msg_enclave.c's fixed platform key: secret bytes 1..32. */
    uint8_t sk[32];
    for (int i = 0; i < 32; i++) sk[i] = (uint8_t)(i + 1);
    if (eml_ed25519_public(g_platform_pk, sk) != EML_OK) abort();
    return 0;
}

static volatile double g_sink;

static void progress(void *user, const eml_train_progress *p)
{
    (void)user;
    g_sink = p->loss + p->images_per_second + p->seconds + p->eta_seconds +
             p->test_accuracy + p->train_accuracy + p->epoch + p->epochs +
             (double)p->batch + (double)p->batches + p->epoch_done;
}

/* What the commands do with a signed report: verify, then parse. */
static void report(const uint8_t *p, size_t n, const uint8_t pk[32])
{
    char *text = malloc(n + 1);
    if (text == NULL) return;
    memcpy(text, p, n);
    text[n] = '\0';
    if (eml_report_verify(text, n, pk) != EML_OK) {
        /* forged: the commands stop here, but parse anyway */
    }
    eml_flatjson j;
    eml_err err = {0};
    if (eml_flatjson_parse(text, n, &j, &err) == EML_OK) {
        for (size_t i = 0; i < j.n; i++) {
            double d;
            int b;
            g_sink = (double)strlen(j.m[i].key);
            if (eml_flatjson_str(&j, j.m[i].key) != NULL)
                g_sink = (double)strlen(eml_flatjson_str(&j, j.m[i].key));
            if (eml_flatjson_num(&j, j.m[i].key, &d) == 0) g_sink = d;
            if (eml_flatjson_bool(&j, j.m[i].key, &b) == 0) g_sink = b;
        }
        eml_flatjson_free(&j);
    }
    free(text);
}

static eml_status call(eml_enclave_host *h, uint16_t type, const void *req,
                       size_t req_size, void *reply, size_t reply_size)
{
    eml_err err = {0};
    eml_status st =
        eml_host_call(h, type, req, req_size, reply, reply_size, &err);
    if (st != EML_OK && (err.msg[0] == '\0' || strchr(err.msg, '\n') != NULL))
        abort(); /* every failure names itself, on one line */
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    roundtrip_table(data, size);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
    feeder f = {sv[1], data, size};
    pthread_t tid;
    if (pthread_create(&tid, NULL, feed, &f) != 0) abort();

    eml_enclave_host h;
    memset(&h, 0, sizeof(h));
    h.pid = -1;
    eml_channel_init(&h.ch, sv[0]);
    int fds[N_FILES];
    for (int i = 0; i < N_FILES; i++) fds[i] = -1;
    h.files.n = N_FILES;
    h.files.paths = g_paths;
    h.files.fds = fds;
    h.out_fd = g_null;
    h.progress = progress;

    /* INIT -> INIT_OK, decoded as eml_host_start does. */
    eml_ecall_init init = {{NULL, 0}};
    eml_reply_init_ok init_ok;
    if (call(&h, EML_MSG_INIT, &init, sizeof(init), &init_ok,
             sizeof(init_ok)) == EML_OK) {
        memcpy(h.measurement, init_ok.measurement, 32);
        memcpy(h.x_pk, init_ok.x25519_pk, 32);
        memcpy(h.ed_pk, init_ok.ed25519_pk, 32);
        memcpy(h.policy, init_ok.policy.p, init_ok.policy.n);
        h.policy[init_ok.policy.n] = '\0';
    }
    /* ATTEST -> REPORT, signed by the platform. */
    eml_ecall_attest attest = {{(const uint8_t *)"\x00\x11", 2}};
    eml_reply_report rep;
    if (call(&h, EML_MSG_ATTEST, &attest, sizeof(attest), &rep,
             sizeof(rep)) == EML_OK)
        report(rep.report.p, rep.report.n, g_platform_pk);
    /* TRAIN -> ocalls, then TRAIN_DONE signed by the enclave. */
    static const uint8_t grant[EML_GRANT_FIXED_BYTES + 32];
    eml_ecall_train train;
    memset(&train, 0, sizeof(train));
    train.cfg_text.p = (const uint8_t *)"[net]\n";
    train.cfg_text.n = 6;
    train.spec.epochs = train.spec.batch = train.spec.threads = 1;
    train.spec.lr = 1;
    train.spec.save_every = 1;
    train.n_grants = 1;
    train.grants[0].p = grant;
    train.grants[0].n = sizeof(grant);
    eml_reply_train_done done;
    if (call(&h, EML_MSG_TRAIN, &train, sizeof(train), &done,
             sizeof(done)) == EML_OK)
        report(done.report.p, done.report.n, h.ed_pk);
    /* PING -> PONG */
    eml_ecall_ping ping = {{(const uint8_t *)"ping", 4}};
    eml_reply_pong pong;
    if (call(&h, EML_MSG_PING, &ping, sizeof(ping), &pong, sizeof(pong)) ==
        EML_OK)
        g_sink = (double)pong.payload.n;
    /* SHUTDOWN -> SHUTDOWN_OK */
    if (call(&h, EML_MSG_SHUTDOWN, NULL, 0, NULL, 0) == EML_OK) g_sink = 0;

    close(sv[0]);
    pthread_join(tid, NULL);
    close(sv[1]);
    eml_channel_free(&h.ch);
    for (int i = 0; i < N_FILES; i++)
        if (fds[i] >= 0) close(fds[i]);
    return 0;
}
