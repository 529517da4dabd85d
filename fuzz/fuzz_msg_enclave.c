/*
 * fuzz_msg_enclave.c - libFuzzer target for the enclave side of the
 * boundary: the trusted runtime's ecall loop (src/enclave/serve.c) and
 * the boundary's codec (src/boundary/) fed a hostile host.
 *
 * The input is the byte stream a host sends: ecall frames and, during an
 * ecall, the host's answers to the enclave's ocalls (FILE_INFO, FILE_DATA,
 * OUTPUT_OK...).  A fresh eml_enclave with a fixed platform (keys,
 * measurement, policy "heap_mb=64") serves it on one end of a socketpair
 * until EOF, SHUTDOWN or a frame it cannot parse, while a thread writes
 * the input into the other end and drains the replies.  Beyond the
 * sanitizers, the loop must simply return.  Before that, the input and
 * each frame's payload in it are decoded as every message of the codec's
 * table, and whatever decodes must encode back to the same bytes.
 *
 * PROBE ecalls are turned into PINGs before the run: outside the sandbox
 * the probe's execve would replace the fuzzer.  The enclave's heap budget
 * (RLIMIT_DATA in the sim backend) is stood in for by AddressSanitizer's
 * max_allocation_size_mb, so a huge network in a TRAIN cfg is an
 * allocation failure (EML_ERR_NOMEM), as in the real enclave.
 *
 *   ./build-fuzz/fuzz/fuzz_msg_enclave -max_total_time=60 fuzz/corpus/msg_enclave
 *
 * The seeds are recorded sessions (INIT with a fixed sealed identity,
 * ATTEST, TRAIN with a valid grant and an encrypted tiny dataset, DP TRAIN,
 * malformed ecalls).  To rebuild them, and the seeds of fuzz_msg_host,
 * fuzz_grant and fuzz_report, from a normal build:
 *
 *   cc -std=c11 -D_POSIX_C_SOURCE=200809L -DEML_FUZZ_SEEDS -Iinclude -Isrc \
 *      fuzz/fuzz_msg_enclave.c build/libeml_host.a build/libeml_sim.a \
 *      build/libeml_trusted.a -ldnnl -lz -lcrypto -lseccomp -lpmem2 -fopenmp \
 *      -lm -lpthread -o /tmp/eml-seeds && /tmp/eml-seeds fuzz/corpus
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "feeder.h"
#include "enclaveml/boundary.h"
#include "enclaveml/crypto.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "enclaveml/kernels.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#endif

#ifdef FUZZ_ASAN
/* The heap budget: allocations over 256 MiB fail (NULL), as they would in
 * a 64 MiB enclave, instead of ending the run as an out-of-memory crash. */
__attribute__((visibility("default"))) const char *
__asan_default_options(void);
__attribute__((visibility("default"))) const char *
__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=256";
}
#endif

/* The platform's monotonic counter, in memory: 0 at every input. */
static uint64_t g_counter;

static eml_status counter_read(void *user, uint64_t *v, eml_err *err)
{
    (void)user;
    (void)err;
    *v = g_counter;
    return EML_OK;
}

static eml_status counter_advance(void *user, uint64_t v, eml_err *err)
{
    (void)user;
    if (v <= g_counter)
        return eml_err_set(err, EML_ERR_INVALID, "counter goes backwards");
    g_counter = v;
    return EML_OK;
}

static eml_status counter_lock(void *user, eml_err *err)
{
    (void)user;
    (void)err;
    return EML_OK;
}

static void counter_unlock(void *user) { (void)user; }

/* The fixed simulated platform (also used by the seed generator below;
 * fuzz_msg_host.c and fuzz_report.c use the same signing key). */
static void fixed_platform(eml_platform *p)
{
    memset(p, 0, sizeof(*p));
    for (int i = 0; i < 32; i++) {
        p->measurement[i] = 0x4d;
        p->sign_sk[i] = (uint8_t)(i + 1);
        p->seal_secret[i] = (uint8_t)(0xa0 + i);
    }
    memcpy(p->policy, "backend=sim;heap_mb=64",
           sizeof("backend=sim;heap_mb=64"));
    p->sim = 1;
    eml_counter_ops c = {NULL, counter_read, counter_advance, counter_lock,
                         counter_unlock};
    p->counter = c;
    g_counter = 0;
}

#ifndef EML_FUZZ_SEEDS

/* Writes the input into fd and drains whatever comes back, without ever
 * blocking (the enclave may be writing a reply while we write). */

/* Walks the frames as the enclave will read them, round-trips each
 * payload through the table and turns each PROBE into a PING (stops where
 * a header would not parse: so does the enclave). */
static void defuse_probes(uint8_t *p, size_t n)
{
    size_t off = 0;
    while (n - off >= EML_MSG_HEADER) {
        uint16_t type;
        uint32_t len;
        if (eml_msg_parse_header(p + off, &type, &len) != EML_OK) return;
        if (type == EML_MSG_PROBE) p[off + 6] = EML_MSG_PING;
        off += EML_MSG_HEADER;
        if (len > n - off) return;
        roundtrip_table(p + off, len);
        off += len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *in = malloc(size ? size : 1);
    if (in == NULL) return 0;
    if (size) memcpy(in, data, size);
    roundtrip_table(in, size);
    defuse_probes(in, size);

    eml_platform plat;
    fixed_platform(&plat);
    eml_enclave *e = NULL;
    if (eml_enclave_new(&plat, &e) != EML_OK) abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
    feeder f = {sv[0], in, size};
    pthread_t tid;
    if (pthread_create(&tid, NULL, feed, &f) != 0) abort();
    if (eml_enclave_serve(e, sv[1]) != EML_OK) {
        /* a malformed frame or a lost host: both fine */
    }
    close(sv[1]);
    pthread_join(tid, NULL);
    close(sv[0]);
    eml_enclave_free(e);
    free(in);
    eml_kernels_set_threads(1);
    return 0;
}

#else /* EML_FUZZ_SEEDS: the seed generator */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "enclaveml/container.h"
#include "host/enclave_host.h"

/* Data key of the seeds' one data owner. */
static const uint8_t owner_key[32] = {
    0x0d, 0x0a, 0x7a, 0x6b, 0x65, 0x79, 0x30, 0x31, 0x02, 0x03, 0x05,
    0x07, 0x0b, 0x0d, 0x11, 0x13, 0x17, 0x1d, 0x1f, 0x25, 0x29, 0x2b,
    0x2f, 0x35, 0x3b, 0x3d, 0x43, 0x47, 0x49, 0x4f, 0x53, 0x59};
/* fuzz_grant.c's enclave key pair: secret bytes 0x60 + i. */
static void grant_keys(uint8_t sk[32], uint8_t pk[32])
{
    for (int i = 0; i < 32; i++) sk[i] = (uint8_t)(0x60 + i);
    if (eml_x25519_public(pk, sk) != EML_OK) abort();
}

static void die(const char *what)
{
    fprintf(stderr, "eml-seeds: %s\n", what);
    exit(1);
}

static void write_file(const char *dir, const char *name, const void *p,
                       size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) die(path);
    printf("%s (%zu bytes)\n", path, n);
}

/* A growable byte buffer for the recordings. */
typedef struct rec {
    uint8_t *p;
    size_t n, cap;
} rec;

static void rec_add(rec *r, const uint8_t *p, size_t n)
{
    if (r->n + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->n + n) cap *= 2;
        r->p = realloc(r->p, cap);
        if (r->p == NULL) die("out of memory");
        r->cap = cap;
    }
    memcpy(r->p + r->n, p, n);
    r->n += n;
}

typedef struct recs {
    rec to_enclave, to_host;
} recs;

static void tap(void *user, int outgoing, const uint8_t *p, size_t n)
{
    recs *r = user;
    rec_add(outgoing ? &r->to_enclave : &r->to_host, p, n);
}

typedef struct enclave_thread {
    pthread_t tid;
    eml_enclave *e;
    int fd;
} enclave_thread;

static void *serve_main(void *arg)
{
    enclave_thread *t = arg;
    if (eml_enclave_serve(t->e, t->fd) != EML_OK) {
    }
    close(t->fd);
    return NULL;
}

/* Where the seed sessions' host keeps the sealed ledger. */
static char g_seed_home[64];

/* Starts the fixed-platform enclave on a thread, talking to h. */
static void session_start(eml_enclave_host *h, enclave_thread *t, recs *r)
{
    eml_platform plat;
    fixed_platform(&plat);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    memset(h, 0, sizeof(*h));
    h->pid = -1;
    h->out_fd = -1;
    snprintf(h->home, sizeof(h->home), "%s", g_seed_home);
    memcpy(h->measurement, plat.measurement, 32); /* names the ledger file */
    eml_channel_init(&h->ch, sv[0]);
    if (r != NULL) {
        h->ch.tap = tap;
        h->ch.tap_user = r;
    }
    if (eml_enclave_new(&plat, &t->e) != EML_OK) die("eml_enclave_new");
    t->fd = sv[1];
    if (pthread_create(&t->tid, NULL, serve_main, t) != 0) die("thread");
}

static void session_stop(eml_enclave_host *h, enclave_thread *t)
{
    eml_err err = {0};
    if (eml_host_call(h, EML_MSG_SHUTDOWN, NULL, 0, NULL, 0, &err) != EML_OK)
        die("SHUTDOWN");
    pthread_join(t->tid, NULL);
    close(h->ch.fd);
    eml_channel_free(&h->ch);
    eml_enclave_free(t->e);
}

/* An ecall (req: its struct) and its reply. */
static eml_status call(eml_enclave_host *h, uint16_t type, const void *req,
                       size_t req_size, void *reply, size_t reply_size)
{
    eml_err err = {0};
    eml_status st =
        eml_host_call(h, type, req, req_size, reply, reply_size, &err);
    if (st != EML_OK) fprintf(stderr, "eml-seeds: %s\n", err.msg);
    return st;
}

/* A frame built by hand (a malformed ecall): its answer is an ERROR. */
static void call_frame(eml_enclave_host *h, eml_msg *m)
{
    eml_err err = {0};
    eml_msg_reader r;
    if (eml_host_call_frame(h, m, EML_MSG_TYPE_END, &r, &err) == EML_OK)
        die("a malformed ecall was answered");
    eml_msg_free(m);
}

/* INIT (with blob, or empty); returns the sealed blob of a first start. */
static void do_init(eml_enclave_host *h, const uint8_t *blob, size_t blen,
                    uint8_t *sealed_out, size_t *sealed_len)
{
    eml_ecall_init q = {{blob, blen}};
    eml_reply_init_ok a;
    if (call(h, EML_MSG_INIT, &q, sizeof(q), &a, sizeof(a)) != EML_OK)
        die("INIT");
    memcpy(h->measurement, a.measurement, 32);
    memcpy(h->x_pk, a.x25519_pk, 32);
    memcpy(h->ed_pk, a.ed25519_pk, 32);
    if (sealed_out != NULL) {
        memcpy(sealed_out, a.sealed_identity.p, a.sealed_identity.n);
        *sealed_len = a.sealed_identity.n;
    }
}

/* An IDX file of count items (images 28x28 or labels), encrypted under
 * owner_key in 4 KiB chunks, in the role of file kind `kind` (0..3). */
static void make_container(const char *path, int kind, uint32_t count)
{
    int images = kind % 2 == 0;
    eml_container_meta meta = {(eml_container_role)(kind + 1), {0}};
    size_t item = images ? 784 : 1, hl = images ? 16 : 8;
    size_t n = hl + (size_t)count * item;
    uint8_t *pt = calloc(n, 1);
    if (pt == NULL) die("out of memory");
    pt[2] = 0x08;
    pt[3] = images ? 3 : 1;
    for (int i = 0; i < 4; i++) pt[4 + i] = (uint8_t)(count >> (24 - 8 * i));
    if (images) {
        pt[11] = 28;
        pt[15] = 28;
    }
    for (size_t i = hl; i < n; i++)
        pt[i] = images ? (uint8_t)((i * 2654435761u) >> 13)
                       : (uint8_t)((i - hl) % 10);
    eml_cw *w = NULL;
    uint8_t hdr[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    eml_err err = {0};
    if (eml_cw_new(EML_CONTAINER_SYMMETRIC, owner_key, 4096, &meta, &w, hdr,
                   &hlen, &err) != EML_OK)
        die(err.msg);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(hdr, 1, hlen, f) != hlen) die(path);
    uint8_t ct[4096 + 16];
    for (size_t off = 0; off < n; off += 4096) {
        size_t k = n - off < 4096 ? n - off : 4096;
        size_t cl = 0;
        if (eml_cw_seal(w, pt + off, k, off + k == n, ct, &cl, &err) != EML_OK)
            die(err.msg);
        if (fwrite(ct, 1, cl, f) != cl) die(path);
    }
    if (fclose(f) != 0) die(path);
    eml_cw_free(w);
    free(pt);
}

/* The model owner of the seeds: a fixed X25519 key pair. */
static const uint8_t *seed_recipient(void)
{
    static uint8_t rcpt[32];
    uint8_t rcpt_sk[32];
    for (int i = 0; i < 32; i++) rcpt_sk[i] = (uint8_t)(0x33 + i);
    if (eml_x25519_public(rcpt, rcpt_sk) != EML_OK) die("x25519");
    return rcpt;
}

static eml_ecall_train train_request(const uint8_t *grant, size_t glen,
                                     int dp)
{
    static const char cfg[] =
        "[net]\nheight=28\nwidth=28\nchannels=1\nbatch=8\n"
        "learning_rate=0.1\n[connected]\noutput=10\nactivation=linear\n"
        "[softmax]\n";
    eml_ecall_train q;
    memset(&q, 0, sizeof(q));
    q.cfg_text.p = (const uint8_t *)cfg;
    q.cfg_text.n = sizeof(cfg) - 1;
    q.spec.epochs = 1;
    q.spec.batch = 8;
    q.spec.lr = 0.1;
    q.spec.seed = 7;
    q.spec.threads = 1;
    q.spec.kernels = 0;
    memcpy(q.recipient, seed_recipient(), 32);
    q.spec.dp.enabled = dp;
    q.spec.dp.clip = 1.0;
    q.spec.dp.noise = 1.1;
    q.spec.dp.delta = 1e-5;
    q.n_grants = 1;
    q.grants[0].p = grant;
    q.grants[0].n = glen;
    q.spec.save_every = 1; /* no mirror, no resume */
    memcpy(q.report_nonce, "\x5e\xed", 2);
    q.report_nonce_len = 2;
    return q;
}

int main(int argc, char **argv)
{
    if (argc != 2) die("usage: eml-seeds CORPUS_DIR");
    const char *root = argv[1];
    char dir[4096], tmp[] = "/tmp/eml-seeds-XXXXXX";
    if (mkdtemp(tmp) == NULL) die("mkdtemp");
    snprintf(g_seed_home, sizeof(g_seed_home), "%s", tmp);
    static const char *const sub[] = {"msg_enclave", "msg_host", "grant",
                                      "report"};
    for (int i = 0; i < 4; i++) {
        snprintf(dir, sizeof(dir), "%s/%s", root, sub[i]);
        mkdir(dir, 0755);
    }

    /* The identity: a first start seals it; the seeds INIT with it. */
    eml_enclave_host h;
    enclave_thread t;
    uint8_t sealed[EML_SEALED_MAX];
    size_t sealed_len = 0;
    session_start(&h, &t, NULL);
    do_init(&h, NULL, 0, sealed, &sealed_len);
    session_stop(&h, &t);

    /* One owner's tiny encrypted dataset. */
    char *paths[4];
    int fds[4];
    static const char *const names[4] = {"train-images", "train-labels",
                                         "test-images", "test-labels"};
    for (int k = 0; k < 4; k++) {
        paths[k] = malloc(4200);
        snprintf(paths[k], 4200, "%s/%s.emlc", tmp, names[k]);
        make_container(paths[k], k, k < 2 ? 40 : 10);
        fds[k] = -1;
    }

    for (int dp = 0; dp < 2; dp++) {
        recs r;
        memset(&r, 0, sizeof(r));
        session_start(&h, &t, &r);
        do_init(&h, sealed, sealed_len, NULL, NULL);
        eml_grant_info gi;
        memset(&gi, 0, sizeof(gi));
        memcpy(gi.measurement, h.measurement, 32);
        memcpy(gi.enclave_pk, h.x_pk, 32);
        gi.has_max_epsilon = dp;
        gi.max_epsilon = dp ? 50.0 : 0.0;
        gi.n_recipients = 1;
        memcpy(gi.recipients[0], seed_recipient(), 32);
        if (eml_container_key_id(gi.key_id, owner_key) != EML_OK) die("key id");
        uint8_t grant[EML_GRANT_MAX_BYTES];
        size_t glen = 0;
        if (eml_grant_build(grant, &glen, &gi, owner_key) != EML_OK)
            die("grant");
        eml_ecall_attest aq = {{(const uint8_t *)"\x00\x11", 2}};
        eml_reply_report rep;
        if (call(&h, EML_MSG_ATTEST, &aq, sizeof(aq), &rep, sizeof(rep)) !=
            EML_OK)
            die("ATTEST");
        snprintf(dir, sizeof(dir), "%s/report", root);
        if (!dp)
            write_file(dir, "attestation.json", rep.report.p, rep.report.n);
        h.files.n = 4;
        h.files.paths = paths;
        h.files.fds = fds;
        h.out_fd = open("/dev/null", O_WRONLY);
        eml_ecall_train tq = train_request(grant, glen, dp);
        eml_reply_train_done done;
        if (call(&h, EML_MSG_TRAIN, &tq, sizeof(tq), &done, sizeof(done)) !=
            EML_OK)
            die("TRAIN");
        write_file(dir, dp ? "training-dp.json" : "training.json",
                   done.report.p, done.report.n);
        close(h.out_fd);
        for (int k = 0; k < 4; k++) {
            if (fds[k] >= 0) close(fds[k]);
            fds[k] = -1;
        }
        h.files.n = 0;
        eml_ecall_ping pq = {{(const uint8_t *)"ping", 4}};
        eml_reply_pong pong;
        if (call(&h, EML_MSG_PING, &pq, sizeof(pq), &pong, sizeof(pong)) !=
            EML_OK)
            die("PING");
        session_stop(&h, &t);
        snprintf(dir, sizeof(dir), "%s/msg_enclave", root);
        write_file(dir, dp ? "session-dp-train" : "session-train",
                   r.to_enclave.p, r.to_enclave.n);
        snprintf(dir, sizeof(dir), "%s/msg_host", root);
        write_file(dir, dp ? "session-dp-train" : "session-train",
                   r.to_host.p, r.to_host.n);
        free(r.to_enclave.p);
        free(r.to_host.p);
    }

    /* A session of refusals: not-ecalls, malformed TRAIN, a bad nonce. */
    {
        recs r;
        memset(&r, 0, sizeof(r));
        session_start(&h, &t, &r);
        do_init(&h, NULL, 0, NULL, NULL);
        eml_msg m;
        eml_msg_init(&m, EML_MSG_PONG);
        call_frame(&h, &m);
        uint8_t junk[EML_GRANT_FIXED_BYTES + 32] = {0};
        eml_ecall_train tq = train_request(junk, sizeof(junk), 0);
        if (eml_boundary_encode(EML_MSG_TRAIN, &tq, sizeof(tq), &m, NULL) !=
            EML_OK)
            die("TRAIN");
        eml_msg_put_u64(&m, 1); /* a stray field */
        call_frame(&h, &m);
        uint8_t nonce[EML_NONCE_MAX + 1] = {0};
        eml_msg_init(&m, EML_MSG_ATTEST);
        eml_msg_put_bytes(&m, nonce, sizeof(nonce));
        call_frame(&h, &m);
        session_stop(&h, &t);
        snprintf(dir, sizeof(dir), "%s/msg_enclave", root);
        write_file(dir, "session-refusals", r.to_enclave.p, r.to_enclave.n);
        snprintf(dir, sizeof(dir), "%s/msg_host", root);
        write_file(dir, "session-refusals", r.to_host.p, r.to_host.n);
        free(r.to_enclave.p);
        free(r.to_host.p);
    }

    /* Grants for fuzz_grant's fixed enclave key and measurement. */
    uint8_t sk[32];
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    grant_keys(sk, gi.enclave_pk);
    memset(gi.measurement, 0x4d, 32);
    if (eml_container_key_id(gi.key_id, owner_key) != EML_OK) die("key id");
    gi.n_recipients = 1;
    memcpy(gi.recipients[0], seed_recipient(), 32);
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t glen = 0;
    snprintf(dir, sizeof(dir), "%s/grant", root);
    if (eml_grant_build(g, &glen, &gi, owner_key) != EML_OK) die("grant");
    write_file(dir, "plain.grant", g, glen);
    gi.has_max_epsilon = 1;
    gi.max_epsilon = 3.0;
    gi.has_cfg_digest = 1;
    memset(gi.cfg_digest, 0xc5, 32);
    gi.n_recipients = 3;
    memset(gi.recipients[1], 0x11, 32);
    memset(gi.recipients[2], 0x22, 32);
    if (eml_grant_build(g, &glen, &gi, owner_key) != EML_OK) die("grant");
    write_file(dir, "epsilon.grant", g, glen);

    for (int k = 0; k < 4; k++) {
        unlink(paths[k]);
        free(paths[k]);
    }
    uint8_t meas[32];
    char mhex[65];
    memset(meas, 0x4d, 32);
    eml_hex(mhex, meas, 32);
    snprintf(dir, sizeof(dir), "%s/ledger-%s.bin", tmp, mhex);
    unlink(dir);
    rmdir(tmp);
    return 0;
}

#endif /* EML_FUZZ_SEEDS */
