/*
 * test_enclave.c - the enclave boundary from the host's side: the frame
 * codec (every truncation, ranges, non-finite numbers, trailing bytes,
 * headers), the sandbox of the `sim` enclave process as the kernel shows
 * it (/proc: seccomp filter, no new privileges, heap and core limits, no
 * stray descriptors, not dumpable), the PROBE of forbidden calls, PING
 * round trips, and hostile ecalls: each malformed one gets an ERROR reply
 * and the enclave keeps serving; a frame that cannot even be parsed gets
 * an ERROR and the enclave exits.
 *
 * Runs with ENCLAVEML_HOME in a fresh temporary directory and the enclave
 * program from $EML_BINARY_DIR (set by CTest), or beside this test's
 * build directory when run by hand.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "enclaveml/boundary.h"
#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "enclaveml/flatjson.h"
#include "enclaveml/model.h"
#include "enclaveml/net.h"
#include "enclaveml/safetensors.h"
#include "enclaveml/train.h"
#include "host/enclave_host.h"
#include "enclave_home.h"
#include "sim/counter.h"
#include "sim/platform.h"

/* The sim heap budget (RLIMIT_DATA) cannot hold under AddressSanitizer,
 * whose shadow memory counts against it. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

static char g_home[64];

/* A small network: 784 -> 10. */
static const char small_cfg[] =
    "[net]\nheight=28\nwidth=28\nchannels=1\nbatch=32\nlearning_rate=0.1\n"
    "[connected]\noutput=10\nactivation=linear\n[softmax]\n";
/* 784 x 16384 weights: 51 MB of parameters, more again for gradients. */
static const char big_cfg[] =
    "[net]\nheight=28\nwidth=28\nchannels=1\nbatch=32\nlearning_rate=0.1\n"
    "[connected]\noutput=16384\nactivation=linear\n"
    "[connected]\noutput=10\nactivation=linear\n[softmax]\n";

/* ==== fixtures ==== */

static int group_setup(void **state)
{
    (void)state;
    return enclave_home_setup(g_home, sizeof(g_home), "eml-test-enclave");
}

static int group_teardown(void **state)
{
    (void)state;
    enclave_home_remove(g_home);
    return 0;
}

static void start(eml_enclave_host *h, eml_backend backend, unsigned heap_mb)
{
    eml_host_opts o = {backend, heap_mb, 1};
    eml_err err = {0};
    eml_status st = eml_host_start(h, &o, &err);
    if (st != EML_OK)
        fail_msg("eml_host_start: %s", eml_err_msg(&err, st));
    if (backend == EML_BACKEND_SIM) assert_true(h->pid > 0);
}

/* Sends m; the reply must be an ERROR from the enclave whose message holds
 * needle (NULL: any).  Returns its status. */
static eml_status expect_error_reply(eml_enclave_host *h, eml_msg *m,
                                     const char *needle)
{
    eml_msg_reader r;
    eml_err err = {0};
    eml_status st = eml_host_call_frame(h, m, EML_MSG_TYPE_END, &r, &err);
    eml_msg_free(m);
    if (st == EML_OK) fail_msg("expected an ERROR reply, got a reply");
    if (strncmp(err.msg, "enclave: ", 9) != 0)
        fail_msg("not an ERROR reply from the enclave: %s", err.msg);
    if (needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err.msg, needle);
    return st;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* PING with n bytes; the PONG must echo them. */
static void ping(eml_enclave_host *h, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    fill_pattern(p, n, (uint32_t)n);
    eml_err err = {0};
    eml_ecall_ping q = {{p, n}};
    eml_reply_pong a;
    eml_status st =
        eml_host_call(h, EML_MSG_PING, &q, sizeof(q), &a, sizeof(a), &err);
    if (st != EML_OK) fail_msg("PING %zu: %s", n, eml_err_msg(&err, st));
    assert_int_equal(a.payload.n, n);
    if (n > 0) assert_memory_equal(a.payload.p, p, n);
    free(p);
}

/* The fields of a TRAIN ecall, valid unless a test changes one. */
typedef struct train_fields {
    const char *cfg;
    uint64_t epochs, batch;
    double lr;
    uint64_t seed, threads, kernels;
    size_t recipient_len;
    uint64_t dp;
    double clip, noise, delta, target_epsilon;
    uint64_t fixed_batches, insecure_seed;
    uint64_t n_owners;
    const uint8_t *grant;
    size_t grant_len;
    size_t n_grants; /* grants actually sent */
    uint64_t mirror, save_every, resume;
    int trailing;    /* append a stray u64 */
    uint64_t outsource; /* v2: eml_outsource_mode, 0: none */
} train_fields;

static train_fields train_default(void)
{
    static const uint8_t junk_grant[EML_GRANT_FIXED_BYTES + 32];
    train_fields t = {small_cfg, 1, 32, 0.1, 1, 1, 0, 32,
                      0, 1.0, 1.0, 1e-5, 0, 0, 0,
                      1, junk_grant, sizeof(junk_grant), 1, 0, 1, 0, 0, 0};
    return t;
}

static void put_train(eml_msg *m, const train_fields *t)
{
    uint8_t rcpt[64] = {9};
    eml_msg_init(m, EML_MSG_TRAIN);
    eml_msg_put_bytes(m, t->cfg, strlen(t->cfg));
    eml_msg_put_u64(m, t->epochs);
    eml_msg_put_u64(m, t->batch);
    eml_msg_put_f64(m, t->lr);
    eml_msg_put_u64(m, t->seed);
    eml_msg_put_u64(m, t->threads);
    eml_msg_put_u64(m, t->kernels);
    eml_msg_put_bytes(m, rcpt, t->recipient_len);
    eml_msg_put_u64(m, t->dp);
    eml_msg_put_f64(m, t->clip);
    eml_msg_put_f64(m, t->noise);
    eml_msg_put_f64(m, t->delta);
    eml_msg_put_f64(m, t->target_epsilon);
    eml_msg_put_u64(m, t->fixed_batches);
    eml_msg_put_u64(m, t->insecure_seed);
    eml_msg_put_u64(m, t->n_owners);
    for (size_t i = 0; i < t->n_grants; i++)
        eml_msg_put_bytes(m, t->grant, t->grant_len);
    eml_msg_put_u64(m, t->mirror);
    eml_msg_put_u64(m, t->save_every);
    eml_msg_put_u64(m, t->resume);
    eml_msg_put_bytes(m, "", 0); /* report nonce */
    eml_msg_put_u64(m, t->outsource);
    if (t->outsource != 0) eml_msg_put_bytes(m, "unix:/w", 7);
    else eml_msg_put_bytes(m, "", 0);
    eml_msg_put_f64(m, 0); /* v3: every product */
    for (int i = 0; i < 7; i++) eml_msg_put_u64(m, 0); /* v4: not a node */
    eml_msg_put_bytes(m, "", 0);                       /* v4: no graph */
    eml_msg_put_bytes(m, "", 0);                       /* v4: no share */
    uint8_t run_id[32] = {0};
    eml_msg_put_bytes(m, run_id, 32);                  /* v4: run id */
    eml_msg_put_bytes(m, "", 0); /* v4: no other measurements accepted */
    if (t->trailing) eml_msg_put_u64(m, 0);
}

/* A real grant for the running enclave, for a random data key, naming
 * put_train's recipient; returns its length. */
static size_t make_grant(const eml_enclave_host *h,
                         uint8_t g[EML_GRANT_MAX_BYTES])
{
    uint8_t key[32];
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    assert_int_equal(eml_random(key, sizeof(key)), EML_OK);
    memcpy(gi.measurement, h->measurement, 32);
    memcpy(gi.enclave_pk, h->x_pk, 32);
    gi.n_recipients = 1;
    gi.recipients[0][0] = 9; /* put_train's recipient */
    assert_int_equal(eml_container_key_id(gi.key_id, key), EML_OK);
    size_t len = 0;
    assert_int_equal(eml_grant_build(g, &len, &gi, key), EML_OK);
    eml_wipe(key, sizeof(key));
    return len;
}

/* Reads /proc/<pid>/<file> into buf; returns the length or -1. */
static ssize_t read_proc(pid_t pid, const char *file, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/%s", (long)pid, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got == cap - 1) break;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* The value after "Key:" on a line of /proc/<pid>/status, or "". */
static void status_field(const char *status, const char *key, char *out,
                         size_t cap)
{
    out[0] = '\0';
    size_t kl = strlen(key);
    for (const char *p = status; p != NULL && *p; ) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            p += kl + 1;
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, "\n");
            if (n >= cap) n = cap - 1;
            memcpy(out, p, n);
            out[n] = '\0';
            return;
        }
        p = strchr(p, '\n');
        if (p != NULL) p++;
    }
}

/* Soft and hard values of a /proc/<pid>/limits line ("Max data size"). */
static void limit_values(const char *limits, const char *name, char *soft,
                         char *hard)
{
    soft[0] = hard[0] = '\0';
    const char *p = strstr(limits, name);
    if (p == NULL) return;
    p += strlen(name);
    if (sscanf(p, " %31s %31s", soft, hard) != 2) soft[0] = hard[0] = '\0';
}

/* ==== codec ==== */

static void test_codec_roundtrip(void **state)
{
    (void)state;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_TRAIN);
    eml_msg_put_u64(&m, 0x0102030405060708u);
    eml_msg_put_f64(&m, -2.5);
    eml_msg_put_bytes(&m, "abc", 3);
    eml_msg_put_bytes(&m, NULL, 0);
    eml_msg_put_u64(&m, UINT64_MAX);
    assert_false(m.failed);
    assert_int_equal(m.len, EML_MSG_HEADER + 8 + 8 + 7 + 4 + 8);
    const uint8_t *pl = m.buf + EML_MSG_HEADER;
    /* little-endian on the wire */
    assert_int_equal(pl[0], 0x08);
    assert_int_equal(pl[7], 0x01);
    assert_int_equal(pl[16], 3);
    assert_int_equal(pl[17], 0);

    eml_msg_reader r;
    uint64_t u;
    double d;
    const uint8_t *p;
    size_t n;
    eml_msg_reader_init(&r, pl, m.len - EML_MSG_HEADER);
    assert_int_equal(eml_msg_get_u64(&r, &u), EML_OK);
    assert_true(u == 0x0102030405060708u);
    assert_int_equal(eml_msg_get_f64(&r, &d), EML_OK);
    assert_true(d == -2.5);
    assert_int_equal(eml_msg_get_bytes(&r, 3, &p, &n), EML_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "abc", 3);
    assert_int_equal(eml_msg_get_bytes(&r, 0, &p, &n), EML_OK);
    assert_int_equal(n, 0);
    assert_int_equal(eml_msg_get_range(&r, 0, UINT64_MAX, &u), EML_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(eml_msg_get_end(&r), EML_OK);
    /* Past the end: fails, and stays failed. */
    assert_int_not_equal(eml_msg_get_u64(&r, &u), EML_OK);
    assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
    eml_msg_free(&m);
    assert_null(m.buf);
    eml_msg_free(&m); /* twice is fine */
}

/* Decodes a payload shaped like TRAIN with one grant; EML_OK only if every
 * field and the end check pass. */
static eml_status decode_train_like(const uint8_t *p, size_t n)
{
    eml_msg_reader r;
    const uint8_t *b;
    size_t bl;
    uint64_t u;
    double d;
    uint8_t fixed[32];
    eml_msg_reader_init(&r, p, n);
    eml_status st = eml_msg_get_bytes(&r, EML_CFG_TEXT_MAX, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 100000, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 65536, &u);
    if (st == EML_OK) st = eml_msg_get_f64(&r, &d);
    if (st == EML_OK) st = eml_msg_get_u64(&r, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 1, 256, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    if (st == EML_OK) st = eml_msg_get_fixed(&r, fixed, 32);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    for (int i = 0; i < 4 && st == EML_OK; i++) st = eml_msg_get_f64(&r, &d);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 1, EML_OWNERS_MAX, &u);
    if (st == EML_OK) st = eml_msg_get_bytes(&r, EML_GRANT_MAX, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 1, 1000000000, &u);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 1, &u);
    if (st == EML_OK) st = eml_msg_get_bytes(&r, EML_NONCE_MAX, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_range(&r, 0, 2, &u); /* v2 */
    if (st == EML_OK) st = eml_msg_get_bytes(&r, EML_WORKER_ADDR_LEN, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_f64(&r, &d); /* v3 */
    for (int i = 0; i < 7 && st == EML_OK; i++) st = eml_msg_get_u64(&r, &u);
    if (st == EML_OK) st = eml_msg_get_bytes(&r, EML_NODE_GRAPH_MAX, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_bytes(&r, 64, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_bytes(&r, 32, &b, &bl); /* fixed */
    if (st == EML_OK) st = eml_msg_get_bytes(&r, 256, &b, &bl);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    /* Whatever failed, the reader must now refuse everything. */
    if (st != EML_OK) assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
    return st;
}

static void test_codec_truncations(void **state)
{
    (void)state;
    train_fields t = train_default();
    eml_msg m;
    put_train(&m, &t);
    assert_false(m.failed);
    const uint8_t *pl = m.buf + EML_MSG_HEADER;
    size_t n = m.len - EML_MSG_HEADER;
    assert_int_equal(decode_train_like(pl, n), EML_OK);
    for (size_t k = 0; k < n; k++)
        if (decode_train_like(pl, k) == EML_OK)
            fail_msg("a %zu-byte prefix of a %zu-byte frame decoded", k, n);
    /* One byte more: every field decodes, the end check does not. */
    uint8_t *longer = malloc(n + 1);
    assert_non_null(longer);
    memcpy(longer, pl, n);
    longer[n] = 0;
    assert_int_not_equal(decode_train_like(longer, n + 1), EML_OK);
    eml_msg_reader r;
    const uint8_t *b;
    size_t bl;
    eml_msg_reader_init(&r, longer, n + 1);
    assert_int_equal(eml_msg_get_bytes(&r, EML_CFG_TEXT_MAX, &b, &bl), EML_OK);
    assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
    free(longer);
    eml_msg_free(&m);
}

static void test_codec_range(void **state)
{
    (void)state;
    const uint64_t vals[] = {4, 5, 9, 10, 0, UINT64_MAX};
    const int good[] = {0, 1, 1, 0, 0, 0}; /* in [5, 9] */
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        eml_msg m;
        eml_msg_init(&m, EML_MSG_PING);
        eml_msg_put_u64(&m, vals[i]);
        eml_msg_put_u64(&m, 7);
        eml_msg_reader r;
        uint64_t v = 123;
        eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 16);
        eml_status st = eml_msg_get_range(&r, 5, 9, &v);
        if (good[i]) {
            assert_int_equal(st, EML_OK);
            assert_true(v == vals[i]);
            assert_int_equal(eml_msg_get_range(&r, 7, 7, &v), EML_OK);
            assert_int_equal(eml_msg_get_end(&r), EML_OK);
        } else {
            assert_int_equal(st, EML_ERR_RANGE);
            assert_true(v == 0); /* never the out-of-range value */
            /* sticky: the next, valid field is refused too */
            assert_int_not_equal(eml_msg_get_u64(&r, &v), EML_OK);
            assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
        }
        eml_msg_free(&m);
    }
}

static void test_codec_f64(void **state)
{
    (void)state;
    const double bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const double good[] = {0.0, -0.0, 1e-310, 1.7976931348623157e308, -1.0};
    for (size_t i = 0; i < 4; i++) {
        eml_msg m;
        eml_msg_init(&m, EML_MSG_PING);
        eml_msg_put_f64(&m, bad[i]);
        eml_msg_reader r;
        double d = 5;
        eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 8);
        assert_int_not_equal(eml_msg_get_f64(&r, &d), EML_OK);
        assert_true(d == 0);
        assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
        eml_msg_free(&m);
    }
    /* Every NaN payload, not just the canonical one. */
    uint64_t nan_bits = 0x7ff0000000000001u;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_u64(&m, nan_bits);
    eml_msg_reader r;
    double d;
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 8);
    assert_int_not_equal(eml_msg_get_f64(&r, &d), EML_OK);
    eml_msg_free(&m);
    for (size_t i = 0; i < 5; i++) {
        eml_msg_init(&m, EML_MSG_PING);
        eml_msg_put_f64(&m, good[i]);
        eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 8);
        assert_int_equal(eml_msg_get_f64(&r, &d), EML_OK);
        assert_memory_equal(&d, &good[i], sizeof(d));
        assert_int_equal(eml_msg_get_end(&r), EML_OK);
        eml_msg_free(&m);
    }
}

static void test_codec_bytes(void **state)
{
    (void)state;
    uint8_t buf[64];
    memset(buf, 0xab, sizeof(buf));
    eml_msg m;
    eml_msg_reader r;
    const uint8_t *p;
    size_t n;
    /* more than the field's maximum */
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_bytes(&m, buf, 33);
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, m.len - EML_MSG_HEADER);
    assert_int_equal(eml_msg_get_bytes(&r, 32, &p, &n), EML_ERR_RANGE);
    assert_null(p);
    assert_int_equal(n, 0);
    assert_int_not_equal(eml_msg_get_end(&r), EML_OK);
    /* exactly the maximum */
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, m.len - EML_MSG_HEADER);
    assert_int_equal(eml_msg_get_bytes(&r, 33, &p, &n), EML_OK);
    assert_int_equal(eml_msg_get_end(&r), EML_OK);
    /* get_fixed of another size */
    uint8_t out[40];
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, m.len - EML_MSG_HEADER);
    assert_int_not_equal(eml_msg_get_fixed(&r, out, 32), EML_OK);
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, m.len - EML_MSG_HEADER);
    assert_int_not_equal(eml_msg_get_fixed(&r, out, 34), EML_OK);
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, m.len - EML_MSG_HEADER);
    assert_int_equal(eml_msg_get_fixed(&r, out, 33), EML_OK);
    assert_memory_equal(out, buf, 33);
    eml_msg_free(&m);
    /* a length field past the end of the frame: 100 claimed, 4 there */
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_u64(&m, 100);
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 8);
    assert_int_not_equal(eml_msg_get_bytes(&r, 1000, &p, &n), EML_OK);
    assert_null(p);
    eml_msg_free(&m);
    /* a length of 0xffffffff: no overflow in the bounds check */
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_u64(&m, 0xffffffffu);
    eml_msg_reader_init(&r, m.buf + EML_MSG_HEADER, 8);
    assert_int_not_equal(eml_msg_get_bytes(&r, SIZE_MAX, &p, &n), EML_OK);
    eml_msg_free(&m);
    /* fewer than 4 bytes for the length */
    static const uint8_t three[3] = {1, 0, 0};
    eml_msg_reader_init(&r, three, 3);
    assert_int_not_equal(eml_msg_get_bytes(&r, 10, &p, &n), EML_OK);
}

static void test_codec_header(void **state)
{
    (void)state;
    uint8_t h[16];
    uint16_t type;
    uint32_t len;
    const uint8_t good[16] = {'E', 'M', 'L', 'M', 1, 0, EML_MSG_PING, 0,
                              0x10, 0, 0, 0, 7, 0, 0, 0};
    assert_int_equal(eml_msg_parse_header(good, &type, &len), EML_OK);
    assert_int_equal(type, EML_MSG_PING);
    assert_int_equal(len, 16);
    memcpy(h, good, 16);
    h[0] = 'X';
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    assert_int_equal(type, 0);
    memcpy(h, good, 16);
    h[4] = 2;
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    memcpy(h, good, 16);
    h[5] = 1;
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    memcpy(h, good, 16);
    h[6] = 0;
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    memcpy(h, good, 16);
    h[6] = EML_MSG_TYPE_END;
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    memcpy(h, good, 16);
    h[7] = 1; /* type 256 + PING */
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    /* length: EML_MSG_MAX is the largest */
    memcpy(h, good, 16);
    uint32_t max = (uint32_t)EML_MSG_MAX;
    for (int i = 0; i < 4; i++) h[8 + i] = (uint8_t)(max >> (8 * i));
    assert_int_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    assert_true(len == max);
    max++;
    for (int i = 0; i < 4; i++) h[8 + i] = (uint8_t)(max >> (8 * i));
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    assert_int_equal(len, 0);
    memset(h + 8, 0xff, 4);
    assert_int_not_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
    /* names */
    assert_string_equal(eml_msg_type_name(EML_MSG_TRAIN), "TRAIN");
    assert_string_equal(eml_msg_type_name(0), "?");
    assert_string_equal(eml_msg_type_name(EML_MSG_TYPE_END), "?");
    assert_string_equal(eml_msg_type_name(UINT32_MAX), "?");
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++)
        assert_string_not_equal(eml_msg_type_name(t), "?");
}

static void test_codec_builder_limits(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    eml_channel c;
    eml_channel_init(&c, sv[0]);
    static const uint8_t small[8];
    eml_msg m;
    /* A field beyond the frame maximum: refused before any copy. */
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_bytes(&m, small, EML_MSG_MAX + 1);
    assert_true(m.failed);
    eml_msg_put_u64(&m, 1); /* sticky */
    assert_int_not_equal(eml_msg_send(&c, &m), EML_OK);
    eml_msg_free(&m);
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_bytes(&m, small, (size_t)UINT32_MAX + 1);
    assert_true(m.failed);
    assert_int_not_equal(eml_msg_send(&c, &m), EML_OK);
    eml_msg_free(&m);
    /* Nothing was written. */
    uint8_t b;
    assert_true(recv(sv[1], &b, 1, MSG_DONTWAIT) < 0);
    eml_channel_free(&c);
    close(sv[0]);
    close(sv[1]);
}

typedef struct tap_count {
    size_t in, out;
} tap_count;

static void count_tap(void *user, int outgoing, const uint8_t *p, size_t n)
{
    (void)p;
    tap_count *t = user;
    if (outgoing) t->out += n;
    else t->in += n;
}

static void test_channel_frames(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    eml_channel a, b;
    eml_channel_init(&a, sv[0]);
    eml_channel_init(&b, sv[1]);
    tap_count ta = {0, 0}, tb = {0, 0};
    a.tap = count_tap;
    a.tap_user = &ta;
    b.tap = count_tap;
    b.tap_user = &tb;
    /* Three frames in a row, of growing size (the receive buffer grows). */
    size_t sizes[3] = {0, 10, 70000};
    uint8_t *big = malloc(sizes[2]);
    assert_non_null(big);
    fill_pattern(big, sizes[2], 3);
    eml_msg m;
    size_t sent = 0;
    for (int i = 0; i < 3; i++) {
        eml_msg_init(&m, EML_MSG_PING);
        eml_msg_put_bytes(&m, big, sizes[i]);
        sent += m.len;
        if (i < 2) assert_int_equal(eml_msg_send(&a, &m), EML_OK);
        eml_msg_free(&m);
    }
    /* The first two fit the socket buffer; the big one is written by a
     * child process while this one reads it, in parts. */
    for (int i = 0; i < 2; i++) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        assert_int_equal(eml_msg_recv(&b, &type, &p, &n), EML_OK);
        assert_int_equal(type, EML_MSG_PING);
        assert_int_equal(n, 4 + sizes[i]);
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        eml_msg_init(&m, EML_MSG_PING);
        eml_msg_put_bytes(&m, big, sizes[2]);
        _exit(eml_msg_send(&a, &m) == EML_OK ? 0 : 1);
    }
    uint16_t type;
    const uint8_t *p;
    size_t n;
    assert_int_equal(eml_msg_recv(&b, &type, &p, &n), EML_OK);
    assert_int_equal(n, 4 + sizes[2]);
    assert_memory_equal(p + 4, big, sizes[2]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(ta.out, sent - (EML_MSG_HEADER + 4 + sizes[2]));
    assert_int_equal(tb.in, sent);
    /* Sequence numbers count up from 0. */
    eml_msg_init(&m, EML_MSG_SHUTDOWN);
    assert_int_equal(eml_msg_send(&a, &m), EML_OK);
    eml_msg_free(&m);
    uint8_t hdr[16];
    assert_int_equal(read(sv[1], hdr, 16), 16);
    assert_int_equal(hdr[12], 2);
    /* A frame cut short by the peer closing: TRUNCATED, not a hang. */
    const uint8_t cut[16] = {'E', 'M', 'L', 'M', 1, 0, EML_MSG_PING, 0,
                             104, 0, 0, 0, 3, 0, 0, 0};
    assert_int_equal(write(sv[0], cut, 16), 16);
    assert_int_equal(write(sv[0], big, 50), 50);
    shutdown(sv[0], SHUT_WR);
    assert_int_equal(eml_msg_recv(&b, &type, &p, &n), EML_ERR_TRUNCATED);
    eml_channel_free(&a);
    eml_channel_free(&b);
    close(sv[0]);
    close(sv[1]);
    /* A header that does not parse. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    eml_channel_init(&b, sv[1]);
    static const uint8_t junk[17] = "GET / HTTP/1.1\r\n";
    assert_int_equal(write(sv[0], junk, 16), 16);
    assert_int_equal(eml_msg_recv(&b, &type, &p, &n), EML_ERR_FORMAT);
    eml_channel_free(&b);
    close(sv[0]);
    close(sv[1]);
    free(big);
}

/* The host checks that an ecall's reply carries the ecall's seq, and
 * answers an ocall with the ocall's seq.  The "enclave" here is the other
 * end of a socketpair whose frames are written before the host reads. */
static void test_host_reply_seq(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    eml_enclave_host h;
    memset(&h, 0, sizeof(h));
    h.pid = -1;
    h.out_fd = -1;
    eml_channel_init(&h.ch, sv[0]);
    eml_channel enc;
    eml_channel_init(&enc, sv[1]);
    eml_ecall_ping ping_q = {{(const uint8_t *)"abc", 3}};
    eml_reply_pong pong = {{(const uint8_t *)"abc", 3}}, got;
    eml_err err = {0};
    /* A PONG for request 5 answers the host's PING 0: refused. */
    assert_int_equal(eml_boundary_reply(&enc, EML_MSG_PONG, &pong,
                                        sizeof(pong), 5, NULL),
                     EML_OK);
    eml_status st = eml_host_call(&h, EML_MSG_PING, &ping_q, sizeof(ping_q),
                                  &got, sizeof(got), &err);
    assert_int_not_equal(st, EML_OK);
    if (strstr(err.msg, "PONG answers request 5, not PING 0") == NULL)
        fail_msg("wrong seq: %s", err.msg);
    /* An ERROR for another request is refused the same way. */
    eml_reply_error er = {(uint64_t)(int64_t)EML_ERR_AUTH,
                          {(const uint8_t *)"no", 2}};
    assert_int_equal(eml_boundary_reply(&enc, EML_MSG_ERROR, &er, sizeof(er),
                                        0, NULL),
                     EML_OK);
    memset(&err, 0, sizeof(err));
    st = eml_host_call(&h, EML_MSG_PING, &ping_q, sizeof(ping_q), &got,
                       sizeof(got), &err);
    assert_int_not_equal(st, EML_OK);
    if (strstr(err.msg, "ERROR answers request 0, not PING 1") == NULL)
        fail_msg("wrong seq of an ERROR: %s", err.msg);
    /* An ocall first (served: ERROR, no such file, with its seq), then
     * the PONG for PING 2: accepted. */
    eml_ocall_file_open fo = {7};
    uint32_t fo_seq;
    assert_int_equal(eml_boundary_send(&enc, EML_MSG_FILE_OPEN, &fo,
                                       sizeof(fo), &fo_seq, NULL),
                     EML_OK);
    assert_int_equal(eml_boundary_reply(&enc, EML_MSG_PONG, &pong,
                                        sizeof(pong), 2, NULL),
                     EML_OK);
    memset(&err, 0, sizeof(err));
    st = eml_host_call(&h, EML_MSG_PING, &ping_q, sizeof(ping_q), &got,
                       sizeof(got), &err);
    if (st != EML_OK) fail_msg("the right seq: %s", err.msg);
    assert_int_equal(got.payload.n, 3);
    assert_memory_equal(got.payload.p, "abc", 3);
    /* What the host sent: PING 0, 1, 2 with its running seq, and the
     * answer to FILE_OPEN with the ocall's seq. */
    uint16_t type;
    const uint8_t *p;
    size_t n;
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(eml_msg_recv(&enc, &type, &p, &n), EML_OK);
        assert_int_equal(type, EML_MSG_PING);
        assert_int_equal(enc.recv_seq, i);
        if (i < 2) continue;
        assert_int_equal(eml_msg_recv(&enc, &type, &p, &n), EML_OK);
        assert_int_equal(type, EML_MSG_ERROR);
        assert_int_equal(enc.recv_seq, fo_seq);
    }
    eml_channel_free(&enc);
    eml_channel_free(&h.ch);
    close(sv[0]);
    close(sv[1]);
}

/* ==== the sim enclave process ==== */

static void test_sim_sandbox(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    char buf[8192], v[64];
    assert_true(read_proc(h.pid, "status", buf, sizeof(buf)) > 0);
    status_field(buf, "Seccomp", v, sizeof(v));
    if (strcmp(v, "2") != 0) fail_msg("Seccomp: '%s', expected 2 (filter)", v);
    status_field(buf, "NoNewPrivs", v, sizeof(v));
    if (strcmp(v, "1") != 0) fail_msg("NoNewPrivs: '%s', expected 1", v);
    char soft[32], hard[32];
    assert_true(read_proc(h.pid, "limits", buf, sizeof(buf)) > 0);
    limit_values(buf, "Max core file size", soft, hard);
    if (strcmp(soft, "0") != 0 || strcmp(hard, "0") != 0)
        fail_msg("core file limit %s/%s, expected 0/0", soft, hard);
    limit_values(buf, "Max data size", soft, hard);
    if (TEST_ASAN) {
        print_message("AddressSanitizer build: the heap budget is not "
                      "enforced (data limit %s)\n", soft);
    } else {
        char want[32];
        snprintf(want, sizeof(want), "%llu", 256ull << 20);
        if (strcmp(soft, want) != 0 || strcmp(hard, want) != 0)
            fail_msg("data limit %s/%s, expected %s (the heap budget)", soft,
                     hard, want);
    }
    /* Only stdin/stdout (/dev/null), stderr and the channel are open: no
     * host descriptor leaked into the enclave. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)h.pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    int counter_fds = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        int fd = atoi(de->d_name);
        if (fd > 3) {
            char link[PATH_MAX], target[PATH_MAX];
            snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
            ssize_t n = readlink(link, target, sizeof(target) - 1);
            target[n > 0 ? n : 0] = '\0';
            /* ... and the monotonic counter's file, its own */
            if (strstr(target, "/counter-") != NULL &&
                strncmp(target, g_home, strlen(g_home)) == 0 &&
                counter_fds++ == 0)
                continue;
            closedir(d);
            fail_msg("the enclave holds fd %d (%s)", fd, target);
        }
    }
    closedir(d);
    /* Still serving after being looked at. */
    ping(&h, 3);
    eml_host_stop(&h);
}

/* Non-dumpable: the kernel then shows /proc/<pid> as owned by root.  As a
 * normal user that is visible directly.  As root, a child switches to
 * another group first: an ordinary program it runs shows that group, the
 * enclave shows root's. */
static int dumpable_child(void)
{
    gid_t g = 65534;
    if (setgid(g) != 0) return 77;
    eml_enclave_host h;
    eml_host_opts o = {EML_BACKEND_SIM, 256, 1};
    eml_err err = {0};
    if (eml_host_start(&h, &o, &err) != EML_OK) return 10;
    char path[64];
    struct stat sb;
    snprintf(path, sizeof(path), "/proc/%ld/status", (long)h.pid);
    int enclave_gid = stat(path, &sb) == 0 ? (int)sb.st_gid : -1;
    eml_host_stop(&h);
    /* the control: sleep(1) run the same way */
    pid_t pid = fork();
    if (pid < 0) return 11;
    if (pid == 0) {
        execl("/bin/sleep", "sleep", "5", (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
    int control_gid = -1;
    for (int i = 0; i < 400; i++) {
        char comm[32] = "";
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, comm, sizeof(comm) - 1);
            comm[n > 0 ? n : 0] = '\0';
            close(fd);
        }
        if (strncmp(comm, "sleep", 5) == 0) {
            snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
            if (stat(path, &sb) == 0) control_gid = (int)sb.st_gid;
            break;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (control_gid != (int)g) return 12; /* the method does not work here */
    return enclave_gid == 0 ? 0 : 13;
}

static void test_sim_not_dumpable(void **state)
{
    (void)state;
    if (getuid() != 0) {
        eml_enclave_host h;
        start(&h, EML_BACKEND_SIM, 256);
        char path[64];
        struct stat sb;
        snprintf(path, sizeof(path), "/proc/%ld/status", (long)h.pid);
        assert_int_equal(stat(path, &sb), 0);
        uid_t owner = sb.st_uid;
        eml_host_stop(&h);
        if (owner != 0)
            fail_msg("/proc/<enclave>/status owned by uid %ld: the enclave "
                     "is dumpable", (long)owner);
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(dumpable_child());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    switch (WEXITSTATUS(status)) {
    case 0: break;
    case 77: skip(); break; /* no CAP_SETGID here */
    case 12: fail_msg("control process does not show its group in /proc");
    case 13: fail_msg("the enclave is dumpable (/proc shows its own group)");
    default: fail_msg("dumpable check: child failed (%d)", WEXITSTATUS(status));
    }
}

static void test_sim_probe(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    eml_msg m;
    eml_err err = {0};
    eml_reply_probe_ok a;
    eml_status st =
        eml_host_call(&h, EML_MSG_PROBE, NULL, 0, &a, sizeof(a), &err);
    if (st != EML_OK) fail_msg("PROBE: %s", eml_err_msg(&err, st));
    uint64_t refused = a.refused, attempted = a.attempted;
    const uint64_t must = EML_PROBE_OPENAT | EML_PROBE_SOCKET |
                          EML_PROBE_EXECVE | EML_PROBE_PTRACE |
                          EML_PROBE_CONNECT | EML_PROBE_FORK |
                          EML_PROBE_WRITE_FD | EML_PROBE_READ_FD |
                          EML_PROBE_PRLIMIT | EML_PROBE_TGKILL |
                          EML_PROBE_STAT_PATH;
    if ((attempted & must) != must)
        fail_msg("PROBE attempted 0x%llx, expected at least 0x%llx",
                 (unsigned long long)attempted, (unsigned long long)must);
    if (refused != attempted)
        fail_msg("sandbox let through 0x%llx (attempted 0x%llx, refused "
                 "0x%llx)",
                 (unsigned long long)(attempted & ~refused),
                 (unsigned long long)attempted,
                 (unsigned long long)refused);
    /* PROBE with a stray field is malformed. */
    eml_msg_init(&m, EML_MSG_PROBE);
    eml_msg_put_u64(&m, 1);
    expect_error_reply(&h, &m, "PROBE");
    ping(&h, 1);
    eml_host_stop(&h);
}

static void test_sim_ping(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    ping(&h, 0);
    ping(&h, 1);
    ping(&h, (size_t)1 << 20);
    ping(&h, 5);
    ping(&h, EML_CHUNK_MAX);
    /* One byte over the PING maximum: refused, still serving. */
    uint8_t *p = calloc(EML_CHUNK_MAX + 1, 1);
    assert_non_null(p);
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_bytes(&m, p, EML_CHUNK_MAX + 1);
    free(p);
    expect_error_reply(&h, &m, "PING");
    ping(&h, 2);
    eml_host_stop(&h);
}

static void test_sim_malformed_ecalls(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    eml_msg m;
    train_fields t;

    /* Types that are not ecalls. */
    const eml_msg_type not_ecalls[] = {
        EML_MSG_ERROR, EML_MSG_INIT_OK, EML_MSG_REPORT, EML_MSG_TRAIN_DONE,
        EML_MSG_FILE_OPEN, EML_MSG_FILE_INFO, EML_MSG_FILE_READ,
        EML_MSG_FILE_DATA, EML_MSG_OUTPUT, EML_MSG_OUTPUT_OK,
        EML_MSG_PROGRESS, EML_MSG_PONG, EML_MSG_PROBE_OK,
        EML_MSG_SHUTDOWN_OK, EML_MSG_MIRROR_HEADER, EML_MSG_MIRROR_DATA,
        EML_MSG_MIRROR_CREATE, EML_MSG_MIRROR_WRITE, EML_MSG_MIRROR_COMMIT,
        EML_MSG_MIRROR_READ, EML_MSG_MIRROR_OK, EML_MSG_MIRROR_WRITE_BULK};
    for (size_t i = 0; i < sizeof(not_ecalls) / sizeof(not_ecalls[0]); i++) {
        eml_msg_init(&m, not_ecalls[i]);
        eml_msg_put_u64(&m, 1);
        expect_error_reply(&h, &m, "not an ecall");
    }
    ping(&h, 1);

    /* PING: a length past the frame, trailing bytes, nothing at all. */
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_u64(&m, 100); /* u32 length 100, then 4 bytes */
    expect_error_reply(&h, &m, "PING");
    eml_msg_init(&m, EML_MSG_PING);
    eml_msg_put_bytes(&m, "ab", 2);
    eml_msg_put_u64(&m, 0);
    expect_error_reply(&h, &m, "PING");
    eml_msg_init(&m, EML_MSG_PING);
    expect_error_reply(&h, &m, "PING");
    ping(&h, 1);

    /* ATTEST: a nonce over the maximum; INIT again (a second identity
     * would replace the attested one). */
    uint8_t nonce[EML_NONCE_MAX + 1] = {0};
    eml_msg_init(&m, EML_MSG_ATTEST);
    eml_msg_put_bytes(&m, nonce, sizeof(nonce));
    expect_error_reply(&h, &m, "ATTEST");
    eml_msg_init(&m, EML_MSG_ATTEST);
    eml_msg_put_bytes(&m, nonce, 4);
    eml_msg_put_u64(&m, 0);
    expect_error_reply(&h, &m, "ATTEST");

    /* TRAIN, one bad field at a time. */
    t = train_default();
    t.trailing = 1;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.n_owners = 1000;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.n_owners = UINT64_MAX;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.n_owners = 0;
    t.n_grants = 0;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.n_owners = 3; /* three announced, one sent */
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    const double bad_lr[] = {NAN, INFINITY, -INFINITY, -0.5, 1e9};
    for (size_t i = 0; i < 5; i++) {
        t = train_default();
        t.lr = bad_lr[i];
        put_train(&m, &t);
        expect_error_reply(&h, &m, "malformed TRAIN");
    }
    t = train_default();
    t.threads = 0;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.kernels = 99;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.epochs = UINT64_MAX;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.batch = (uint64_t)1 << 40;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.recipient_len = 31;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.dp = 2;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.clip = NAN;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.delta = INFINITY;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.fixed_batches = 2;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.insecure_seed = UINT64_MAX;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.mirror = 2;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.save_every = 0;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.resume = 7;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    t = train_default();
    t.grant_len = 0;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "grant 1");
    /* A cfg length field past the frame, and over the cfg maximum. */
    eml_msg_init(&m, EML_MSG_TRAIN);
    eml_msg_put_u64(&m, 0x1000);
    expect_error_reply(&h, &m, "malformed TRAIN");
    eml_msg_init(&m, EML_MSG_TRAIN);
    eml_msg_put_u64(&m, 0x7fffffff);
    expect_error_reply(&h, &m, "malformed TRAIN");
    /* A grant that is not one (the junk grant of the defaults). */
    t = train_default();
    put_train(&m, &t);
    expect_error_reply(&h, &m, "grant 1");
    /* A real grant, then a cfg that does not parse: refused by name,
     * before any file is asked for. */
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t glen = make_grant(&h, g);
    t = train_default();
    t.grant = g;
    t.grant_len = glen;
    t.cfg = "[net]\nheight=28\nwidth=28\nchannels=1\n[bogus]\n";
    put_train(&m, &t);
    expect_error_reply(&h, &m, "cfg:5");
    /* DP with a clip of 0: refused before any file is asked for. */
    t = train_default();
    t.grant = g;
    t.grant_len = glen;
    t.dp = 1;
    t.clip = 0;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "clip");
    /* The same grant twice. */
    t = train_default();
    t.grant = g;
    t.grant_len = glen;
    t.n_owners = 2;
    t.n_grants = 2;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "replays");
    /* Private outsourcing cannot train: refused by the enclave itself
     * (a host that skipped its own check), then a grant without
     * --allow-outsource. */
    t = train_default();
    t.grant = g;
    t.grant_len = glen;
    t.outsource = 2;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "private does not train");
    t.outsource = 1;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "does not allow outsourcing");
    /* A grant made for evaluations (a limit, a release key): no
     * training on it, refused before any file is asked for. */
    for (int which = 0; which < 2; which++) {
        eml_grant_info gi;
        uint8_t eg[EML_GRANT_MAX_BYTES], ekey[32];
        size_t eglen = 0;
        eml_err gerr = {0};
        assert_int_equal(eml_grant_parse(g, glen, &gi, &gerr), EML_OK);
        assert_int_equal(eml_random(ekey, 32), EML_OK);
        assert_int_equal(eml_container_key_id(gi.key_id, ekey), EML_OK);
        if (which == 0) {
            gi.has_max_evaluations = 1;
            gi.max_evaluations = 5;
        } else {
            gi.has_release_to = 1;
            memset(gi.release_to, 0x21, 32);
        }
        assert_int_equal(eml_grant_build(eg, &eglen, &gi, ekey), EML_OK);
        t = train_default();
        t.grant = eg;
        t.grant_len = eglen;
        put_train(&m, &t);
        expect_error_reply(&h, &m, "for evaluations only");
    }
    /* Valid: the enclave asks the host for owner 1's files, which this
     * host does not have; the host's refusal comes back as the error. */
    t = train_default();
    t.grant = g;
    t.grant_len = glen;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "no file 0");
    ping(&h, (size_t)1 << 16);
    /* SHUTDOWN still works after all that. */
    eml_host_stop(&h);
}

/* A second INIT must not touch the identity that was attested: grants made
 * for it must still open afterwards (a failed unseal once wiped the live
 * keys; an empty one once made a new identity). */
static void train_reaches_files(eml_enclave_host *h, const char *when)
{
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t glen = make_grant(h, g);
    train_fields t = train_default();
    t.grant = g;
    t.grant_len = glen;
    eml_msg m;
    put_train(&m, &t);
    eml_msg_reader r;
    eml_err err = {0};
    eml_status st = eml_host_call_frame(h, &m, EML_MSG_TYPE_END, &r, &err);
    eml_msg_free(&m);
    /* The grant opens: the enclave goes on to ask for files. */
    if (st == EML_OK || strstr(err.msg, "no file 0") == NULL)
        fail_msg("%s: a grant for the attested key: %s", when, err.msg);
}

static void test_sim_reinit(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    train_reaches_files(&h, "at start");
    uint8_t blob[100];
    memset(blob, 0x5a, sizeof(blob));
    memcpy(blob, "EMLSEAL1", 8);
    eml_msg m;
    eml_msg_init(&m, EML_MSG_INIT);
    eml_msg_put_bytes(&m, blob, sizeof(blob));
    expect_error_reply(&h, &m, NULL);
    train_reaches_files(&h, "after INIT with a forged sealed blob");
    eml_ecall_init q = {{NULL, 0}};
    eml_reply_init_ok a;
    eml_err err = {0};
    eml_status st =
        eml_host_call(&h, EML_MSG_INIT, &q, sizeof(q), &a, sizeof(a), &err);
    if (st == EML_OK) {
        /* Allowed only if it kept the same keys. */
        assert_memory_equal(a.x25519_pk, h.x_pk, 32);
    }
    train_reaches_files(&h, "after a second, empty INIT");
    ping(&h, 1);
    eml_host_stop(&h);
}

/* Writes a raw 16-byte header; the enclave must answer ERROR and exit. */
static void unparseable(const uint8_t hdr[16], const char *what)
{
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    ping(&h, 1);
    assert_int_equal(write(h.ch.fd, hdr, 16), 16);
    uint16_t type;
    const uint8_t *p;
    size_t n;
    eml_status st = eml_msg_recv(&h.ch, &type, &p, &n);
    if (st != EML_OK)
        fail_msg("%s: no reply (%s)", what, eml_status_str(st));
    if (type != EML_MSG_ERROR)
        fail_msg("%s: reply %s, expected ERROR", what,
                 eml_msg_type_name(type));
    eml_msg_reader r;
    uint64_t code;
    const uint8_t *txt;
    size_t tl;
    eml_msg_reader_init(&r, p, n);
    assert_int_equal(eml_msg_get_u64(&r, &code), EML_OK);
    assert_true((int64_t)code < 0);
    assert_int_equal(eml_msg_get_bytes(&r, EML_ERRMSG_MAX, &txt, &tl), EML_OK);
    assert_int_equal(eml_msg_get_end(&r), EML_OK);
    /* Then the channel closes and the process exits with a failure. */
    st = eml_msg_recv(&h.ch, &type, &p, &n);
    if (st != EML_ERR_TRUNCATED)
        fail_msg("%s: after the ERROR: %s, expected the channel to close",
                 what, eml_status_str(st));
    int status;
    assert_int_equal(waitpid(h.pid, &status, 0), h.pid);
    h.pid = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0)
        fail_msg("%s: enclave status 0x%x, expected a failing exit", what,
                 status);
    eml_host_stop(&h);
}

static void test_sim_unparseable_frames(void **state)
{
    (void)state;
    const uint8_t good[16] = {'E', 'M', 'L', 'M', 1, 0, EML_MSG_PING, 0,
                              4, 0, 0, 0, 9, 0, 0, 0};
    uint8_t h[16];
    memcpy(h, good, 16);
    h[0] = 'X';
    unparseable(h, "bad magic");
    memcpy(h, good, 16);
    h[4] = 7;
    unparseable(h, "version 7");
    memcpy(h, good, 16);
    h[6] = 0;
    unparseable(h, "type 0");
    memcpy(h, good, 16);
    h[6] = 99;
    unparseable(h, "type 99");
    memcpy(h, good, 16);
    h[11] = 0x7f; /* 2 GiB payload */
    unparseable(h, "length over the maximum");
}

/* The host going away (EOF) ends the enclave quietly. */
static void test_sim_host_eof(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    ping(&h, 1);
    /* half a frame, then EOF */
    static const uint8_t part[10] = {'E', 'M', 'L', 'M', 1, 0, 15, 0, 4, 0};
    assert_int_equal(write(h.ch.fd, part, sizeof(part)), (ssize_t)sizeof(part));
    shutdown(h.ch.fd, SHUT_WR);
    int status;
    assert_int_equal(waitpid(h.pid, &status, 0), h.pid);
    h.pid = -1;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    eml_host_stop(&h);
}

/* The heap budget: a network that does not fit in 64 MiB is refused with
 * EML_ERR_NOMEM, one that fits goes on to ask for data, and the enclave
 * keeps serving. */
static void test_sim_heap_budget(void **state)
{
    (void)state;
    if (TEST_ASAN) {
        print_message("AddressSanitizer build: no heap budget to test\n");
        skip();
    }
    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 64);
    assert_string_equal(h.policy, "backend=sim;heap_mb=64");
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t glen = make_grant(&h, g);
    eml_msg m;
    train_fields t = train_default();
    t.grant = g;
    t.grant_len = glen;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "no file 0");
    t.cfg = big_cfg;
    put_train(&m, &t);
    eml_status st = expect_error_reply(&h, &m, NULL);
    assert_int_equal(st, EML_ERR_NOMEM);
    ping(&h, (size_t)1 << 20);
    eml_host_stop(&h);
    /* The same network fits a 1 GiB budget. */
    start(&h, EML_BACKEND_SIM, 1024);
    glen = make_grant(&h, g);
    t.grant_len = glen;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "no file 0");
    eml_host_stop(&h);
}

/* Backend none: the same runtime on a thread, same answers. */
/* ==== MODEL_LOAD ==== */

/* A grant for the running enclave and data key `key` (cfg_digest: NULL
 * for any network). */
static size_t model_grant(const eml_enclave_host *h, const uint8_t key[32],
                          const uint8_t *cfg_digest,
                          uint8_t g[EML_GRANT_MAX_BYTES])
{
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    memcpy(gi.measurement, h->measurement, 32);
    memcpy(gi.enclave_pk, h->x_pk, 32);
    gi.n_recipients = 1;
    gi.recipients[0][0] = 9;
    if (cfg_digest != NULL) {
        gi.has_cfg_digest = 1;
        memcpy(gi.cfg_digest, cfg_digest, 32);
    }
    assert_int_equal(eml_container_key_id(gi.key_id, key), EML_OK);
    size_t len = 0;
    assert_int_equal(eml_grant_build(g, &len, &gi, key), EML_OK);
    return len;
}

/* Writes pt encrypted under key in `role` to path. */
static void write_sealed(const char *path, const uint8_t key[32],
                         eml_container_role role, const uint8_t *pt,
                         size_t len)
{
    eml_container_meta meta = {role, {0}};
    uint8_t *ct = NULL;
    size_t clen = 0;
    eml_err err = {0};
    assert_int_equal(eml_container_seal_buffer(EML_CONTAINER_SYMMETRIC, key,
                                               0, &meta, pt, len, &ct, &clen,
                                               &err),
                     EML_OK);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(ct, 1, clen, f), clen);
    fclose(f);
    free(ct);
}

/* MODEL_LOAD with file 0 = path; the enclave's status, err filled. */
static eml_status model_load(eml_enclave_host *h, const char *path,
                             const char *cfg, const uint8_t *g, size_t glen,
                             eml_reply_model_loaded *a, eml_err *err)
{
    char *paths[1] = {(char *)path};
    int fds[1] = {-1};
    h->files.n = 1;
    h->files.paths = paths;
    h->files.fds = fds;
    memset(err, 0, sizeof(*err));
    eml_ecall_model_load q = {{(const uint8_t *)cfg, strlen(cfg)}, {g, glen}};
    eml_status st = eml_host_call(h, EML_MSG_MODEL_LOAD, &q, sizeof(q), a,
                                  sizeof(*a), err);
    if (fds[0] >= 0) close(fds[0]);
    h->files.n = 0;
    h->files.paths = NULL;
    h->files.fds = NULL;
    return st;
}

/* A model owner's weights, encrypted in the role "model" under the key
 * of their grant, load: the enclave answers with the SHA-256 of exactly
 * those weights.  A file in another role, under another key, or a grant
 * that names another network is refused, and nothing is loaded. */
static void test_sim_model_load(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_err err = {0};
    assert_int_equal(eml_cfg_parse(small_cfg, strlen(small_cfg), "small",
                                   &cfg, &err),
                     EML_OK);
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1, .seed = 1};
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    eml_net_init_params(net, 5);
    uint8_t *w = NULL;
    size_t wlen = 0;
    assert_int_equal(eml_weights_encode(net, &w, &wlen), EML_OK);
    uint8_t want[32], key[32], other[32], cfg_hash[32], big_hash[32];
    assert_int_equal(eml_sha256(want, w, wlen), EML_OK);
    assert_int_equal(eml_sha256(cfg_hash, small_cfg, strlen(small_cfg)),
                     EML_OK);
    assert_int_equal(eml_sha256(big_hash, big_cfg, strlen(big_cfg)), EML_OK);
    assert_int_equal(eml_random(key, 32), EML_OK);
    assert_int_equal(eml_random(other, 32), EML_OK);
    char path[128], wrong_role[128];
    snprintf(path, sizeof(path), "%s/model.emlc", g_home);
    snprintf(wrong_role, sizeof(wrong_role), "%s/images.emlc", g_home);
    write_sealed(path, key, EML_CONTAINER_ROLE_MODEL, w, wlen);
    write_sealed(wrong_role, key, EML_CONTAINER_ROLE_TRAIN_IMAGES, w, wlen);

    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    uint8_t g[EML_GRANT_MAX_BYTES];
    eml_reply_model_loaded a;
    memset(&a, 0, sizeof(a));
    size_t glen = model_grant(&h, key, cfg_hash, g);
    assert_int_equal(model_load(&h, path, small_cfg, g, glen, &a, &err),
                     EML_OK);
    assert_memory_equal(a.model_sha256, want, 32);
    assert_int_equal(a.parameters, eml_net_param_count(net));
    printf("loaded: %llu parameters\n", (unsigned long long)a.parameters);

    assert_int_not_equal(
        model_load(&h, wrong_role, small_cfg, g, glen, &a, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "role"));
    eml_status st = model_load(&h, path, big_cfg, g, glen, &a, &err);
    printf("refused (%d): %s\n", (int)st, err.msg);
    assert_int_not_equal(st, EML_OK);
    assert_non_null(strstr(err.msg, "another network"));
    size_t olen = model_grant(&h, other, NULL, g);
    assert_int_not_equal(model_load(&h, path, small_cfg, g, olen, &a, &err),
                         EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "key"));

    /* A queue worker borrows the loaded model: a second MODEL_LOAD, and
     * a server beside it, are refused while it lives. */
    glen = model_grant(&h, key, cfg_hash, g);
    assert_int_equal(model_load(&h, path, small_cfg, g, glen, &a, &err),
                     EML_OK);
    eml_ecall_qworker_start qs = {{(const uint8_t *)"q", 1},
                                  {(const uint8_t *)"w1", 2}, 0, 4, 64};
    eml_reply_qworker_ready qr;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_host_call(&h, EML_MSG_QWORKER_START, &qs,
                                   sizeof(qs), &qr, sizeof(qr), &err),
                     EML_OK);
    assert_int_not_equal(model_load(&h, path, small_cfg, g, glen, &a, &err),
                         EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cannot be replaced"));
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(eml_host_call(&h, EML_MSG_QWORKER_START, &qs,
                                       sizeof(qs), &qr, sizeof(qr), &err),
                         EML_OK);
    assert_non_null(strstr(err.msg, "already serving"));
    eml_host_stop(&h);
    eml_wipe(key, 32);
    free(w);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

/* ==== EVALUATE ==== */

/* An IDX file's bytes: count images of 28 x 28 (ndims 3) or labels. */
static uint8_t *idx_bytes(const uint8_t *data, size_t count, int images,
                          size_t *len)
{
    size_t hdr = images ? 16 : 8, item = images ? 784 : 1;
    *len = hdr + count * item;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    uint8_t h[16] = {0, 0, 8, images ? 3 : 1,
                     (uint8_t)(count >> 24), (uint8_t)(count >> 16),
                     (uint8_t)(count >> 8), (uint8_t)count,
                     0, 0, 0, 28, 0, 0, 0, 28};
    memcpy(b, h, hdr);
    memcpy(b + hdr, data, count * item);
    return b;
}

/* EVALUATE with one test set: its images and labels at img and lab (file
 * ids 2 and 3), its grant g; the report (malloc'd) if report is not
 * NULL. */
static eml_status evaluate_release(eml_enclave_host *h, const char *img,
                                   const char *lab, const uint8_t *g,
                                   size_t glen, const uint8_t *release_to,
                                   char **report, eml_err *err);

static eml_status evaluate_call(eml_enclave_host *h, const char *img,
                                const char *lab, const uint8_t *g,
                                size_t glen, char **report, eml_err *err)
{
    return evaluate_release(h, img, lab, g, glen, NULL, report, err);
}

/* The same, asking for the model's release to release_to (if not NULL;
 * the model comes out through h->out_fd). */
static eml_status evaluate_release(eml_enclave_host *h, const char *img,
                                   const char *lab, const uint8_t *g,
                                   size_t glen, const uint8_t *release_to,
                                   char **report, eml_err *err)
{
    char *paths[EML_FILE_KINDS] = {NULL, NULL, (char *)img, (char *)lab};
    int fds[EML_FILE_KINDS] = {-1, -1, -1, -1};
    h->files.n = EML_FILE_KINDS;
    h->files.paths = paths;
    h->files.fds = fds;
    memset(err, 0, sizeof(*err));
    eml_ecall_evaluate q;
    memset(&q, 0, sizeof(q));
    q.n_grants = 1;
    q.grants[0].p = g;
    q.grants[0].n = glen;
    q.report_nonce[0] = 0x5a;
    q.report_nonce_len = 1;
    if (release_to != NULL) {
        q.release = 1;
        memcpy(q.release_to, release_to, 32);
    }
    eml_reply_evaluate_done a;
    eml_status st = eml_host_call(h, EML_MSG_EVALUATE, &q, sizeof(q), &a,
                                  sizeof(a), err);
    if (st == EML_OK && report != NULL) {
        *report = malloc(a.report.n + 1);
        assert_non_null(*report);
        memcpy(*report, a.report.p, a.report.n);
        (*report)[a.report.n] = '\0';
    }
    for (int i = 0; i < EML_FILE_KINDS; i++)
        if (fds[i] >= 0) close(fds[i]);
    h->files.n = 0;
    h->files.paths = NULL;
    h->files.fds = NULL;
    return st;
}

/* dg's grant rebuilt with limits: max_evaluations 1 (the second
 * evaluation of the model refused, the count in the sealed ledger), and
 * min_examples one more than the test set holds (refused) or exactly it;
 * a test set's grant naming a release key is refused. */
static void evaluate_limits(eml_enclave_host *h, const char *ipath,
                            const char *lpath, const uint8_t *dg, size_t dglen,
                            const uint8_t dkey[32], size_t n)
{
    eml_err err = {0};
    eml_grant_info gi;
    uint8_t lg[EML_GRANT_MAX_BYTES];
    size_t lglen = 0;
    assert_int_equal(eml_grant_parse(dg, dglen, &gi, &err), EML_OK);
    gi.has_max_evaluations = 1;
    gi.max_evaluations = 1;
    assert_int_equal(eml_grant_build(lg, &lglen, &gi, dkey), EML_OK);
    assert_int_equal(evaluate_call(h, ipath, lpath, lg, lglen, NULL, &err),
                     EML_OK);
    assert_int_not_equal(
        evaluate_call(h, ipath, lpath, lg, lglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(
        strstr(err.msg, "allows 1 evaluation of this model; 1 spent"));
    assert_int_equal(eml_grant_parse(dg, dglen, &gi, &err), EML_OK);
    gi.has_min_examples = 1;
    gi.min_examples = n + 1;
    assert_int_equal(eml_grant_build(lg, &lglen, &gi, dkey), EML_OK);
    assert_int_not_equal(
        evaluate_call(h, ipath, lpath, lg, lglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "at least"));
    gi.min_examples = n;
    assert_int_equal(eml_grant_build(lg, &lglen, &gi, dkey), EML_OK);
    assert_int_equal(evaluate_call(h, ipath, lpath, lg, lglen, NULL, &err),
                     EML_OK);
    assert_int_equal(eml_grant_parse(dg, dglen, &gi, &err), EML_OK);
    gi.has_release_to = 1;
    memset(gi.release_to, 0x42, 32);
    assert_int_equal(eml_grant_build(lg, &lglen, &gi, dkey), EML_OK);
    assert_int_not_equal(
        evaluate_call(h, ipath, lpath, lg, lglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "release key"));
}

/* The model's release: refused when its grant names no release key or
 * another; with the grant's key, the model comes out encrypted to it
 * (what `train --recipient` writes), opens with its secret key to the
 * owner's weights, and the report names the key and the file's SHA-256. */
static void evaluate_releases(eml_enclave_host *h, const char *mpath,
                              const char *ipath, const char *lpath,
                              const uint8_t mkey[32],
                              const uint8_t cfg_hash[32], const uint8_t *mg,
                              size_t mglen, const uint8_t *dg, size_t dglen,
                              const uint8_t *w, size_t wlen)
{
    eml_err err = {0};
    uint8_t org_sk[32], org_pk[32], other[32];
    assert_int_equal(eml_x25519_keygen(org_sk, org_pk), EML_OK);
    memset(other, 0x33, 32);
    char opath[160];
    snprintf(opath, sizeof(opath), "%s/eval-released.emlm", g_home);
    int fd = open(opath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    h->out_fd = fd;
    /* The loaded model's grant (mg) names no release key. */
    assert_int_not_equal(
        evaluate_release(h, ipath, lpath, dg, dglen, org_pk, NULL, &err),
        EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "allows no release"));
    eml_grant_info gi;
    uint8_t rg[EML_GRANT_MAX_BYTES];
    size_t rglen = 0;
    assert_int_equal(eml_grant_parse(mg, mglen, &gi, &err), EML_OK);
    assert_true(gi.has_cfg_digest &&
                memcmp(gi.cfg_digest, cfg_hash, 32) == 0);
    gi.has_release_to = 1;
    memcpy(gi.release_to, org_pk, 32);
    assert_int_equal(eml_grant_build(rg, &rglen, &gi, mkey), EML_OK);
    eml_reply_model_loaded a;
    assert_int_equal(model_load(h, mpath, small_cfg, rg, rglen, &a, &err),
                     EML_OK);
    assert_int_not_equal(
        evaluate_release(h, ipath, lpath, dg, dglen, other, NULL, &err),
        EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "another key"));
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_size, 0); /* nothing left on refusals */
    char *report = NULL;
    assert_int_equal(
        evaluate_release(h, ipath, lpath, dg, dglen, org_pk, &report, &err),
        EML_OK);
    h->out_fd = -1;
    assert_int_equal(fstat(fd, &sb), 0);
    size_t clen = (size_t)sb.st_size;
    uint8_t *c = malloc(clen), *pt = NULL, hash[32];
    assert_non_null(c);
    assert_int_equal(pread(fd, c, clen, 0), (ssize_t)clen);
    close(fd);
    eml_container_keys keys = {NULL, org_sk};
    size_t plen = 0;
    assert_int_equal(
        eml_container_open_buffer(c, clen, &keys, &pt, &plen, &err), EML_OK);
    assert_int_equal(plen, wlen);
    assert_memory_equal(pt, w, wlen);
    assert_int_equal(eml_sha256(hash, c, clen), EML_OK);
    char hh[65], kh[65];
    eml_hex(hh, hash, 32);
    eml_hex(kh, org_pk, 32);
    eml_flatjson j;
    assert_int_equal(eml_flatjson_parse(report, strlen(report), &j, &err),
                     EML_OK);
    assert_string_equal(eml_flatjson_str(&j, "released_to"), kh);
    assert_string_equal(eml_flatjson_str(&j, "released_file_sha256"), hh);
    eml_flatjson_free(&j);
    eml_wipe(pt, plen);
    free(pt);
    free(c);
    free(report);
    unlink(opath);
    eml_wipe(org_sk, 32);
}

/* A granted model evaluated on a granted test set: the signed report's
 * figures are the ones the same code computes here (eml_evaluate_confusion
 * on the plaintext).  Refused: EVALUATE before MODEL_LOAD, a test set's
 * grant that is the model's, that names another network or sets a privacy
 * budget, the labels served as the images, the images of another key. */
static void test_sim_evaluate(void **state)
{
    (void)state;
    enum { N = 77 };
    eml_err err = {0};
    eml_model *m = NULL;
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    assert_int_equal(eml_cfg_parse(small_cfg, strlen(small_cfg), "small",
                                   &cfg, &err),
                     EML_OK);
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1, .seed = 1};
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    eml_net_init_params(net, 7);
    uint8_t *w = NULL;
    size_t wlen = 0;
    assert_int_equal(eml_weights_encode(net, &w, &wlen), EML_OK);
    uint8_t mkey[32], dkey[32], other[32], cfg_hash[32], big_hash[32];
    assert_int_equal(eml_random(mkey, 32), EML_OK);
    assert_int_equal(eml_random(dkey, 32), EML_OK);
    assert_int_equal(eml_random(other, 32), EML_OK);
    assert_int_equal(eml_sha256(cfg_hash, small_cfg, strlen(small_cfg)),
                     EML_OK);
    assert_int_equal(eml_sha256(big_hash, big_cfg, strlen(big_cfg)), EML_OK);
    static uint8_t pix[N * 784];
    uint8_t lab[N];
    assert_int_equal(eml_random(pix, sizeof(pix)), EML_OK);
    assert_int_equal(eml_random(lab, sizeof(lab)), EML_OK);
    for (int i = 0; i < N; i++) lab[i] %= 10;
    size_t ilen = 0, llen = 0;
    uint8_t *ib = idx_bytes(pix, N, 1, &ilen), *lb = idx_bytes(lab, N, 0,
                                                              &llen);
    char mpath[128], ipath[128], lpath[128], opath[128];
    snprintf(mpath, sizeof(mpath), "%s/eval-model.emlc", g_home);
    snprintf(ipath, sizeof(ipath), "%s/eval-images.emlc", g_home);
    snprintf(lpath, sizeof(lpath), "%s/eval-labels.emlc", g_home);
    snprintf(opath, sizeof(opath), "%s/eval-other.emlc", g_home);
    write_sealed(mpath, mkey, EML_CONTAINER_ROLE_MODEL, w, wlen);
    write_sealed(ipath, dkey, EML_CONTAINER_ROLE_TEST_IMAGES, ib, ilen);
    write_sealed(lpath, dkey, EML_CONTAINER_ROLE_TEST_LABELS, lb, llen);
    write_sealed(opath, other, EML_CONTAINER_ROLE_TEST_IMAGES, ib, ilen);

    /* What the enclave must report: the same code here. */
    eml_kernels_set_threads(1);
    assert_int_equal(eml_model_load((const uint8_t *)small_cfg,
                                    strlen(small_cfg), "small", w, wlen, "w",
                                    &m, &err),
                     EML_OK);
    eml_net *ws = NULL;
    assert_int_equal(eml_model_workspace(m, EML_KERNELS_FAST, 256, &ws, &err),
                     EML_OK);
    eml_dataset d = {N, 784, pix, lab};
    double loss = 0, acc = 0;
    uint64_t conf[100];
    assert_int_equal(eml_evaluate_confusion(ws, &d, &loss, &acc, conf, &err),
                     EML_OK);
    char want[2048];
    size_t k = 0;
    for (int t = 0; t < 10; t++)
        for (int p = 0; p < 10; p++)
            k += (size_t)snprintf(want + k, sizeof(want) - k, "%s%llu",
                                  p ? "," : (t ? ";" : ""),
                                  (unsigned long long)conf[t * 10 + p]);

    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    uint8_t mg[EML_GRANT_MAX_BYTES], dg[EML_GRANT_MAX_BYTES];
    size_t mglen = model_grant(&h, mkey, cfg_hash, mg);
    size_t dglen = model_grant(&h, dkey, NULL, dg);
    char *report = NULL;
    assert_int_not_equal(
        evaluate_call(&h, ipath, lpath, dg, dglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "MODEL_LOAD"));
    eml_reply_model_loaded a;
    assert_int_equal(model_load(&h, mpath, small_cfg, mg, mglen, &a, &err),
                     EML_OK);
    assert_int_not_equal(
        evaluate_call(&h, ipath, lpath, mg, mglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "the model's grant"));
    uint8_t bg[EML_GRANT_MAX_BYTES];
    size_t bglen = model_grant(&h, dkey, big_hash, bg);
    assert_int_not_equal(
        evaluate_call(&h, ipath, lpath, bg, bglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "another network"));
    eml_grant_info gi;
    assert_int_equal(eml_grant_parse(dg, dglen, &gi, &err), EML_OK);
    gi.has_max_epsilon = 1;
    gi.max_epsilon = 8;
    assert_int_equal(eml_grant_build(bg, &bglen, &gi, dkey), EML_OK);
    assert_int_not_equal(
        evaluate_call(&h, ipath, lpath, bg, bglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "differentially private"));
    assert_int_not_equal(
        evaluate_call(&h, lpath, lpath, dg, dglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "role"));
    assert_int_not_equal(
        evaluate_call(&h, opath, lpath, dg, dglen, NULL, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "key"));

    assert_int_equal(evaluate_call(&h, ipath, lpath, dg, dglen, &report,
                                   &err),
                     EML_OK);
    assert_int_equal(eml_report_verify(report, strlen(report), h.ed_pk),
                     EML_OK);
    eml_flatjson j;
    assert_int_equal(eml_flatjson_parse(report, strlen(report), &j, &err),
                     EML_OK);
    double got_acc = -1, got_loss = -1, n = 0;
    assert_int_equal(eml_flatjson_num(&j, "accuracy", &got_acc), 0);
    assert_int_equal(eml_flatjson_num(&j, "loss", &got_loss), 0);
    assert_int_equal(eml_flatjson_num(&j, "examples", &n), 0);
    printf("report: accuracy %.4f (here %.4f), loss %.6f (here %.6f)\n",
           got_acc, acc, got_loss, loss);
    assert_true(n == N);
    assert_true(fabs(got_acc - acc) < 1e-9);
    assert_true(fabs(got_loss - loss) < 1e-6 * (1 + loss));
    assert_string_equal(eml_flatjson_str(&j, "confusion"), want);
    assert_string_equal(eml_flatjson_str(&j, "report_nonce"), "5a");
    char ch[65];
    eml_hex(ch, cfg_hash, 32);
    assert_string_equal(eml_flatjson_str(&j, "cfg_sha256"), ch);
    eml_flatjson_free(&j);
    free(report);
    report = NULL;
    evaluate_limits(&h, ipath, lpath, dg, dglen, dkey, N);
    evaluate_releases(&h, mpath, ipath, lpath, mkey, cfg_hash, mg, mglen, dg,
                      dglen, w, wlen);
    eml_host_stop(&h);
    free(ib);
    free(lb);
    eml_net_free(ws);
    eml_model_free(m);
    eml_wipe(mkey, 32);
    eml_wipe(dkey, 32);
    free(w);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

static void test_none_backend(void **state)
{
    (void)state;
    eml_enclave_host h, s;
    start(&h, EML_BACKEND_NONE, 256);
    assert_true(h.pid <= 0);
    ping(&h, 0);
    ping(&h, (size_t)1 << 20);
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PONG);
    expect_error_reply(&h, &m, "not an ecall");
    train_fields t = train_default();
    t.trailing = 1;
    put_train(&m, &t);
    expect_error_reply(&h, &m, "malformed TRAIN");
    /* No sandbox here: the probe must not try forbidden calls (execve
     * would replace this process). */
    eml_msg_init(&m, EML_MSG_PROBE);
    expect_error_reply(&h, &m, "needs the sim sandbox");
    /* Another enclave: its own measurement (the policy names the backend,
     * and the code is this process's), so it never holds the sim
     * enclave's sealed identity. */
    assert_string_equal(h.policy, "backend=none;heap_mb=256");
    start(&s, EML_BACKEND_SIM, 256);
    assert_string_equal(s.policy, "backend=sim;heap_mb=256");
    if (memcmp(h.measurement, s.measurement, 32) == 0)
        fail_msg("backends none and sim have the same measurement");
    if (memcmp(h.x_pk, s.x_pk, 32) == 0)
        fail_msg("backends none and sim share an identity");
    eml_host_stop(&s);
    eml_host_stop(&h);
    /* ... and the same for the measure command's function. */
    uint8_t mn[32], ms[32];
    char pn[EML_POLICY_MAX], ps[EML_POLICY_MAX];
    eml_err err = {0};
    assert_int_equal(eml_host_measure(EML_BACKEND_NONE, 256, mn, pn,
                                      sizeof(pn), NULL, 0, &err), EML_OK);
    assert_int_equal(eml_host_measure(EML_BACKEND_SIM, 256, ms, ps,
                                      sizeof(ps), NULL, 0, &err), EML_OK);
    assert_memory_equal(mn, h.measurement, 32);
    assert_memory_equal(ms, s.measurement, 32);
    /* The host never read the sim platform's secret key; none has its
     * own. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/platform-none.key", g_home);
    assert_int_equal(access(path, R_OK), 0);
}

/* ==== the environment and the measurement ==== */

/* Starts argv with envp and a socketpair end as fd 3; returns our end. */
static int launch(char *const argv[], char *const envp[], pid_t *pid)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                     0);
    fflush(NULL);
    *pid = fork();
    assert_true(*pid >= 0);
    if (*pid == 0) {
        int c = fcntl(sv[1], F_DUPFD, 10);
        if (c < 0 || dup2(c, 3) < 0) _exit(126);
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 0);
        dup2(dn, 1);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    close(sv[1]);
    return sv[0];
}

/* The first frame of a launched enclave: MEASURE (0, measurement in out)
 * or ERROR (its message in msg). */
static int first_frame(int fd, uint8_t out[32], char *msg, size_t cap)
{
    eml_channel ch;
    eml_channel_init(&ch, fd);
    uint16_t type;
    const uint8_t *p;
    size_t n;
    int rc = -1;
    msg[0] = '\0';
    if (eml_msg_recv(&ch, &type, &p, &n) == EML_OK) {
        eml_msg_reader r;
        eml_msg_reader_init(&r, p, n);
        uint64_t code;
        const uint8_t *t;
        size_t tl;
        if (type == EML_MSG_MEASURE &&
            eml_msg_get_fixed(&r, out, 32) == EML_OK)
            rc = 0;
        else if (type == EML_MSG_ERROR &&
                 eml_msg_get_u64(&r, &code) == EML_OK &&
                 eml_msg_get_bytes(&r, EML_ERRMSG_MAX, &t, &tl) == EML_OK) {
            snprintf(msg, cap, "%.*s", (int)tl, (const char *)t);
            rc = 1;
        }
    }
    eml_channel_free(&ch);
    return rc;
}

static int wait_exit(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A library this test has loaded and the enclave program does not link:
 * what a hostile host would preload. */
static int foreign_library(char *out, size_t cap)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024];
    int found = 0;
    while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
        char *p = strstr(line, "/libcmocka");
        if (p == NULL) continue;
        p = strchr(line, '/');
        p[strcspn(p, "\n")] = '\0';
        snprintf(out, cap, "%s", p);
        found = 1;
    }
    if (f != NULL) fclose(f);
    return found;
}

static const char *ld_so(void)
{
    static const char *const c[] = {"/lib64/ld-linux-x86-64.so.2",
                                    "/lib/ld-linux-aarch64.so.1"};
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        if (access(c[i], X_OK) == 0) return c[i];
    return NULL;
}

/* The enclave program refuses an environment it did not set itself,
 * LD_PRELOAD included; and a library preloaded without the environment
 * (ld.so --preload) changes the measurement. */
static void test_sim_environment(void **state)
{
    (void)state;
    char prog[PATH_MAX], lib[PATH_MAX], pre[PATH_MAX + 16], msg[EML_ERRMSG_MAX];
    snprintf(prog, sizeof(prog), "%s", getenv("ENCLAVEML_ENCLAVE"));
    assert_true(foreign_library(lib, sizeof(lib)));
    snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", lib);
    uint8_t base[32], m[32];
    char policy[EML_POLICY_MAX];
    eml_err err = {0};
    assert_int_equal(eml_host_measure(EML_BACKEND_SIM, 2048, base, policy,
                                      sizeof(policy), NULL, 0, &err), EML_OK);
    char *serve[] = {prog, "--fd", "3", "--home", g_home, NULL};
    char *measure[] = {prog, "--measure", "--fd", "3", "--heap-mb", "2048",
                       NULL};
    char *foo[] = {"FOO=bar", NULL};
    char *preload[] = {pre, NULL};
    char *gomp_and_foo[] = {"GOMP_SPINCOUNT=10000", "FOO=bar", NULL};
    char *const *bad_envs[] = {foo, preload, gomp_and_foo};
    for (size_t i = 0; i < 3; i++) {
        for (int mode = 0; mode < 2; mode++) {
            pid_t pid;
            int fd = launch(mode ? measure : serve, bad_envs[i], &pid);
            int k = first_frame(fd, m, msg, sizeof(msg));
            close(fd);
            int code = wait_exit(pid);
            if (k != 1 || strstr(msg, "environment") == NULL || code == 0)
                fail_msg("%s with %s: frame %d '%s', exit %d, expected a "
                         "refusal", mode ? "--measure" : "serving",
                         bad_envs[i][0], k, msg, code);
        }
    }
    /* Empty environment: measure mode agrees with the host. */
    char *empty[] = {NULL};
    pid_t pid;
    int fd = launch(measure, empty, &pid);
    assert_int_equal(first_frame(fd, m, msg, sizeof(msg)), 0);
    close(fd);
    assert_int_equal(wait_exit(pid), 0);
    assert_memory_equal(m, base, 32);
    /* ld.so --preload: no environment, but another file in the process. */
    const char *ld = ld_so();
    if (ld == NULL) {
        print_message("no ld.so found: preload through the loader not tried\n");
        return;
    }
    char *pm[] = {(char *)ld, "--preload", lib, prog, "--measure", "--fd", "3",
                  "--heap-mb", "2048", NULL};
    fd = launch(pm, empty, &pid);
    int k = first_frame(fd, m, msg, sizeof(msg));
    close(fd);
    int code = wait_exit(pid);
    if (k != 0 || code != 0)
        fail_msg("ld.so --preload --measure: frame %d '%s', exit %d", k, msg,
                 code);
    if (memcmp(m, base, 32) == 0)
        fail_msg("a preloaded %s does not change the measurement", lib);
    /* The same loader without the preload: the same files, the same
     * measurement (the loader is measured either way). */
    char *pl[] = {(char *)ld, prog, "--measure", "--fd", "3", "--heap-mb",
                  "2048", NULL};
    fd = launch(pl, empty, &pid);
    assert_int_equal(first_frame(fd, m, msg, sizeof(msg)), 0);
    close(fd);
    assert_int_equal(wait_exit(pid), 0);
    assert_memory_equal(m, base, 32);
}

/* The platform's counter file: starts at 0, advances only upwards,
 * persists, and a corrupt file is refused. */
static void test_counter_file(void **state)
{
    (void)state;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/counter-test.bin", g_home);
    unlink(path);
    eml_sim_counter c = {-1};
    eml_err err = {0};
    uint64_t v = 99;
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_OK);
    eml_counter_ops ops = eml_sim_counter_ops(&c);
    assert_int_equal(ops.read(ops.user, &v, &err), EML_OK);
    assert_int_equal(v, 0);
    assert_int_equal(ops.advance(ops.user, 1, &err), EML_OK);
    assert_int_equal(ops.advance(ops.user, 5, &err), EML_OK);
    /* The lock is exclusive across open file descriptions (two enclave
     * instances), and released by unlock. */
    assert_int_equal(ops.lock(ops.user, &err), EML_OK);
    int other = open(path, O_RDWR | O_CLOEXEC);
    assert_true(other >= 0);
    assert_int_not_equal(flock(other, LOCK_EX | LOCK_NB), 0);
    ops.unlock(ops.user);
    assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
    close(other);
    eml_sim_counter_close(&c);
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_OK);
    assert_int_equal(eml_sim_counter_read(&c, &v, &err), EML_OK);
    assert_int_equal(v, 5);
    assert_int_equal(eml_sim_counter_advance(&c, 5, &err), EML_ERR_INVALID);
    assert_int_equal(eml_sim_counter_advance(&c, 3, &err), EML_ERR_INVALID);
    assert_int_equal(eml_sim_counter_advance(&c, 0, &err), EML_ERR_INVALID);
    assert_int_equal(eml_sim_counter_read(&c, &v, &err), EML_OK);
    assert_int_equal(v, 5);
    eml_sim_counter_close(&c);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, EML_COUNTER_BYTES);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* corrupt: a flipped magic byte, a short file, a long file */
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "X", 1, 0), 1);
    close(fd);
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_ERR_FORMAT);
    assert_int_equal(c.fd, -1);
    assert_int_equal(truncate(path, 9), 0);
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_ERR_FORMAT);
    unlink(path);
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_OK);
    eml_sim_counter_close(&c);
    fd = open(path, O_WRONLY | O_APPEND);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    assert_int_equal(eml_sim_counter_open(&c, path, &err), EML_ERR_FORMAT);
    unlink(path);
}

/* The sealed identity ("EMLSEAL1" | nonce | AES-256-GCM(keys) | tag, kept
 * by the host as sealed-<measurement>.bin): a restart unseals the same
 * keys; a blob with any byte changed, cut short or grown is refused, and
 * the host does not fall back to a new identity. */
static void test_sealed_identity(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_NONE, 256);
    uint8_t x_pk[32], meas[32];
    memcpy(x_pk, h.x_pk, 32);
    memcpy(meas, h.measurement, 32);
    eml_host_stop(&h);
    char hex[65], path[PATH_MAX];
    eml_hex(hex, meas, 32);
    snprintf(path, sizeof(path), "%s/sealed-%s.bin", g_home, hex);
    uint8_t blob[128];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(blob, 1, sizeof(blob), f);
    fclose(f);
    assert_int_equal(n, 100);
    assert_memory_equal(blob, "EMLSEAL1", 8);
    start(&h, EML_BACKEND_NONE, 256);
    assert_memory_equal(h.x_pk, x_pk, 32); /* the round trip */
    eml_host_stop(&h);
    eml_host_opts o = {EML_BACKEND_NONE, 256, 1};
    for (size_t len = 99; len <= 101; len++) {
        for (size_t i = 0; i < (len == 100 ? n : 1); i++) {
            uint8_t bad[128];
            memcpy(bad, blob, sizeof(bad));
            bad[100] = 0;
            if (len == 100) bad[i] ^= (uint8_t)(1 << (i % 8));
            f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(bad, 1, len, f), len);
            fclose(f);
            eml_err err = {0};
            eml_status st = eml_host_start(&h, &o, &err);
            if (st == EML_OK)
                fail_msg("a sealed identity of %zu bytes with byte %zu "
                         "changed was accepted", len, i);
            if (strstr(err.msg, "sealed identity") == NULL)
                fail_msg("byte %zu: \"%s\" does not name the sealed "
                         "identity", i, err.msg);
        }
    }
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(blob, 1, n, f), n);
    fclose(f);
    start(&h, EML_BACKEND_NONE, 256);
    assert_memory_equal(h.x_pk, x_pk, 32);
    eml_host_stop(&h);
}

/* The trusted check of attestation reports (eml_attestation_check), on a
 * real report of the none backend: accepted with its own key and backend
 * only, its fields as the enclave stated them, and every byte changed
 * refused. */
static void test_attestation_check(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h, EML_BACKEND_NONE, 256);
    eml_err err = {0};
    eml_ecall_attest q = {{(const uint8_t *)"\x01\x02\x03", 3}};
    eml_reply_report rep;
    eml_status st = eml_host_call(&h, EML_MSG_ATTEST, &q, sizeof(q), &rep,
                                  sizeof(rep), &err);
    if (st != EML_OK) fail_msg("ATTEST: %s", eml_err_msg(&err, st));
    const uint8_t *p = rep.report.p;
    size_t n = rep.report.n;
    char *text = malloc(n + 1);
    assert_non_null(text);
    memcpy(text, p, n);
    text[n] = '\0';
    eml_platform_key keys[2] = {{{0}, "sim"}, {{0}, "none"}};
    assert_int_equal(eml_platform_load_pub(g_home, EML_PLATFORM_SIM,
                                           keys[0].pk, &err),
                     EML_OK);
    assert_int_equal(eml_platform_load_pub(g_home, EML_PLATFORM_NONE,
                                           keys[1].pk, &err),
                     EML_OK);
    eml_attestation a;
    st = eml_attestation_check(text, n, keys, 2, &a, &err);
    if (st != EML_OK) fail_msg("a real report: %s", err.msg);
    assert_int_equal(a.key, 1);
    assert_memory_equal(a.measurement, h.measurement, 32);
    assert_memory_equal(a.x25519, h.x_pk, 32);
    assert_memory_equal(a.ed25519, h.ed_pk, 32);
    assert_int_equal(a.nonce_len, 3);
    assert_memory_equal(a.nonce, "\x01\x02\x03", 3);
    assert_string_equal(a.policy, h.policy);
    assert_true(a.sim);
    /* Only the sim key: no signature verifies. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_attestation_check(text, n, keys, 1, &a, &err),
                     EML_ERR_AUTH);
    assert_non_null(strstr(err.msg, "signature"));
    /* The none key, claimed for the sim backend: its policy says none. */
    eml_platform_key as_sim = keys[1];
    as_sim.backend = "sim";
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_attestation_check(text, n, &as_sim, 1, &a, &err),
                     EML_ERR_AUTH);
    assert_non_null(strstr(err.msg, "not a sim enclave's"));
    /* Every byte changed: refused. */
    for (size_t i = 0; i < n; i++) {
        text[i] ^= 0x01;
        eml_err e2 = {0};
        if (eml_attestation_check(text, n, keys, 2, &a, &e2) == EML_OK)
            fail_msg("byte %zu changed: the report was accepted", i);
        assert_true(e2.msg[0] != '\0');
        text[i] ^= 0x01;
    }
    free(text);
    eml_host_stop(&h);
}

/* ==== PREDICT ==== */

/* PREDICT of the images at img (file id 2) with the user's grant g, the
 * predictions to recipient (through h->out_fd). */
static eml_status predict_call(eml_enclave_host *h, const char *img,
                               const uint8_t *g, size_t glen,
                               const uint8_t recipient[32],
                               eml_reply_predict_done *done, eml_err *err)
{
    char *paths[EML_FILE_KINDS] = {NULL, NULL, (char *)img, NULL};
    int fds[EML_FILE_KINDS] = {-1, -1, -1, -1};
    h->files.n = EML_FILE_KINDS;
    h->files.paths = paths;
    h->files.fds = fds;
    memset(err, 0, sizeof(*err));
    eml_ecall_predict q;
    memset(&q, 0, sizeof(q));
    q.grant.p = g;
    q.grant.n = glen;
    memcpy(q.recipient, recipient, 32);
    eml_status st = eml_host_call(h, EML_MSG_PREDICT, &q, sizeof(q), done,
                                  sizeof(*done), err);
    for (int i = 0; i < EML_FILE_KINDS; i++)
        if (fds[i] >= 0) close(fds[i]);
    h->files.n = 0;
    h->files.paths = NULL;
    h->files.fds = NULL;
    return st;
}

/* g's grant rebuilt under key: naming recipient, or (max_queries > 0)
 * limiting queries. */
static size_t regrant(const uint8_t *g, size_t glen, const uint8_t key[32],
                      const uint8_t *recipient, uint32_t max_queries,
                      uint8_t out[EML_GRANT_MAX_BYTES])
{
    eml_err err = {0};
    eml_grant_info gi;
    assert_int_equal(eml_grant_parse(g, glen, &gi, &err), EML_OK);
    if (recipient != NULL) memcpy(gi.recipients[0], recipient, 32);
    if (max_queries > 0) {
        gi.has_max_queries = 1;
        gi.max_queries = max_queries;
    }
    size_t len = 0;
    assert_int_equal(eml_grant_build(out, &len, &gi, key), EML_OK);
    return len;
}

/* The container the enclave wrote to fd, opened with the user's secret
 * key: the predictions must be `want` (labels) and `outs` (outputs). */
static void check_predictions(int fd, const uint8_t u_sk[32],
                              const eml_reply_predict_done *done, size_t n,
                              const uint32_t *want, const float *outs)
{
    eml_err err = {0};
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    size_t clen = (size_t)sb.st_size;
    uint8_t *c = malloc(clen), *pt = NULL, hash[32];
    assert_non_null(c);
    assert_int_equal(pread(fd, c, clen, 0), (ssize_t)clen);
    assert_int_equal(eml_sha256(hash, c, clen), EML_OK);
    assert_memory_equal(hash, done->file_sha256, 32);
    eml_container_keys keys = {NULL, u_sk};
    size_t plen = 0;
    assert_int_equal(
        eml_container_open_buffer(c, clen, &keys, &pt, &plen, &err), EML_OK);
    eml_st *st = NULL;
    assert_int_equal(eml_st_parse(pt, plen, &st, &err), EML_OK);
    const eml_st_tensor *p = eml_st_find(st, "probabilities");
    const eml_st_tensor *l = eml_st_find(st, "predictions");
    assert_non_null(p);
    assert_non_null(l);
    assert_int_equal(p->count, n * 10);
    assert_int_equal(l->count, n);
    float *pv = malloc(n * 10 * sizeof(float)), *lv = malloc(n * sizeof(float));
    assert_non_null(pv);
    assert_non_null(lv);
    eml_st_copy(pv, p);
    eml_st_copy(lv, l);
    for (size_t i = 0; i < n; i++) assert_true(lv[i] == (float)want[i]);
    for (size_t i = 0; i < n * 10; i++)
        assert_true(fabsf(pv[i] - outs[i]) <= 1e-6f);
    free(pv);
    free(lv);
    eml_st_free(st);
    eml_wipe(pt, plen);
    free(pt);
    free(c);
}

/* A provider's model on a user's images: the predictions come out
 * encrypted to the user's key, the same as the same code computes here.
 * Refused: PREDICT before MODEL_LOAD, a recipient the user's grant does
 * not name, the model's grant as the user's, a file in another role, a
 * second request past the model grant's max_queries (nothing written). */
static void test_sim_predict(void **state)
{
    (void)state;
    enum { N = 37 };
    eml_err err = {0};
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    assert_int_equal(eml_cfg_parse(small_cfg, strlen(small_cfg), "small",
                                   &cfg, &err),
                     EML_OK);
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1, .seed = 1};
    assert_int_equal(eml_net_new(cfg, &o, &net, &err), EML_OK);
    eml_net_init_params(net, 11);
    uint8_t *w = NULL;
    size_t wlen = 0;
    assert_int_equal(eml_weights_encode(net, &w, &wlen), EML_OK);
    uint8_t mkey[32], ukey[32], cfg_hash[32], u_sk[32], u_pk[32], other[32];
    assert_int_equal(eml_random(mkey, 32), EML_OK);
    assert_int_equal(eml_random(ukey, 32), EML_OK);
    assert_int_equal(eml_x25519_keygen(u_sk, u_pk), EML_OK);
    memset(other, 0x33, 32);
    assert_int_equal(eml_sha256(cfg_hash, small_cfg, strlen(small_cfg)),
                     EML_OK);
    static uint8_t pix[N * 784];
    assert_int_equal(eml_random(pix, sizeof(pix)), EML_OK);
    size_t ilen = 0;
    uint8_t *ib = idx_bytes(pix, N, 1, &ilen);
    char mpath[128], ipath[128], rpath[128], opath[160];
    snprintf(mpath, sizeof(mpath), "%s/pred-model.emlc", g_home);
    snprintf(ipath, sizeof(ipath), "%s/pred-images.emlc", g_home);
    snprintf(rpath, sizeof(rpath), "%s/pred-role.emlc", g_home);
    snprintf(opath, sizeof(opath), "%s/pred-out.emlc", g_home);
    write_sealed(mpath, mkey, EML_CONTAINER_ROLE_MODEL, w, wlen);
    write_sealed(ipath, ukey, EML_CONTAINER_ROLE_TEST_IMAGES, ib, ilen);
    write_sealed(rpath, ukey, EML_CONTAINER_ROLE_TRAIN_IMAGES, ib, ilen);

    /* What the enclave must send: the same code here. */
    eml_model *m = NULL;
    eml_net *ws = NULL;
    eml_kernels_set_threads(1);
    assert_int_equal(eml_model_load((const uint8_t *)small_cfg,
                                    strlen(small_cfg), "small", w, wlen, "w",
                                    &m, &err),
                     EML_OK);
    assert_int_equal(eml_model_workspace(m, EML_KERNELS_FAST, 256, &ws, &err),
                     EML_OK);
    static uint32_t want[N];
    static float outs[N * 10];
    assert_int_equal(eml_net_predict(ws, pix, N, 784, want, outs, &err),
                     EML_OK);

    eml_enclave_host h;
    start(&h, EML_BACKEND_SIM, 256);
    int fd = open(opath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    h.out_fd = fd;
    uint8_t g0[EML_GRANT_MAX_BYTES], mg[EML_GRANT_MAX_BYTES];
    uint8_t ug[EML_GRANT_MAX_BYTES];
    size_t g0len = model_grant(&h, mkey, cfg_hash, g0);
    size_t mglen = regrant(g0, g0len, mkey, NULL, N + N / 2, mg);
    g0len = model_grant(&h, ukey, NULL, g0);
    size_t uglen = regrant(g0, g0len, ukey, u_pk, 0, ug);
    eml_reply_predict_done done;
    assert_int_not_equal(
        predict_call(&h, ipath, ug, uglen, u_pk, &done, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "MODEL_LOAD"));
    eml_reply_model_loaded a;
    assert_int_equal(model_load(&h, mpath, small_cfg, mg, mglen, &a, &err),
                     EML_OK);
    assert_int_not_equal(
        predict_call(&h, ipath, ug, uglen, other, &done, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "does not name this recipient"));
    assert_int_not_equal(
        predict_call(&h, ipath, mg, mglen, u_pk, &done, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "the model's grant"));
    assert_int_not_equal(
        predict_call(&h, rpath, ug, uglen, u_pk, &done, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "role"));
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_size, 0); /* nothing left on refusals */

    assert_int_equal(predict_call(&h, ipath, ug, uglen, u_pk, &done, &err),
                     EML_OK);
    assert_int_equal(done.count, N);
    assert_int_equal(done.classes, 10);
    assert_int_equal(done.queries_spent, N);
    assert_int_equal(done.queries_max, N + N / 2);
    check_predictions(fd, u_sk, &done, N, want, outs);
    off_t size = 0;
    assert_int_equal(fstat(fd, &sb), 0);
    size = sb.st_size;
    assert_int_not_equal(
        predict_call(&h, ipath, ug, uglen, u_pk, &done, &err), EML_OK);
    printf("refused: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "allows 55 predictions to this "
                                    "recipient; 37 spent, this request "
                                    "asks 37"));
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_size, size);
    h.out_fd = -1;
    close(fd);
    unlink(opath);
    eml_host_stop(&h);
    eml_wipe(u_sk, 32);
    free(ib);
    eml_net_free(ws);
    eml_model_free(m);
    free(w);
    eml_net_free(net);
    eml_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_truncations),
        cmocka_unit_test(test_codec_range),
        cmocka_unit_test(test_codec_f64),
        cmocka_unit_test(test_codec_bytes),
        cmocka_unit_test(test_codec_header),
        cmocka_unit_test(test_codec_builder_limits),
        cmocka_unit_test(test_channel_frames),
        cmocka_unit_test(test_host_reply_seq),
        cmocka_unit_test(test_sim_sandbox),
        cmocka_unit_test(test_sim_not_dumpable),
        cmocka_unit_test(test_sim_probe),
        cmocka_unit_test(test_sim_ping),
        cmocka_unit_test(test_sim_malformed_ecalls),
        cmocka_unit_test(test_sim_reinit),
        cmocka_unit_test(test_sim_model_load),
        cmocka_unit_test(test_sim_evaluate),
        cmocka_unit_test(test_sim_predict),
        cmocka_unit_test(test_sim_unparseable_frames),
        cmocka_unit_test(test_sim_host_eof),
        cmocka_unit_test(test_sim_heap_budget),
        cmocka_unit_test(test_none_backend),
        cmocka_unit_test(test_sealed_identity),
        cmocka_unit_test(test_attestation_check),
        cmocka_unit_test(test_sim_environment),
        cmocka_unit_test(test_counter_file),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
