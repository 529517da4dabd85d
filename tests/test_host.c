/*
 * test_host.c - host modules tested directly: the strict option parsers
 * of src/host/cli.c (valid values, range ends, trailing junk, overflow,
 * and the one "enclaveml: error:" line on stderr), the key files of
 * src/host/keyfile.c (keygen/load round trip, modes, no clobbering, wrong
 * magic, truncated and overlong files, a .pub given as a .key and the
 * reverse), and the libpmem2 pool of src/host/mirror_store.c (create, write,
 * commit, read back, reopen, the single-writer lock, truncated and foreign
 * files refused, eml_store_setup without --resume).  Files live in a fresh
 * directory under /dev/shm (or /tmp), removed at the end.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "enclaveml/mirror.h"
#include "host/cli.h"
#include "host/keyfile.h"
#include "host/mirror_store.h"

static char g_dir[256];

/* ==== helpers ==== */

static int setup_dir(void **state)
{
    (void)state;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_dir, sizeof(g_dir), "%s/eml-test-host-XXXXXX", base);
    if (mkdtemp(g_dir) == NULL) return -1;
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* stderr captured into a temporary file between capture_begin and
 * capture_end, which returns what was written (static buffer).  No
 * assertion runs in between, so cmocka's own messages are never lost. */
static int saved_stderr = -1;
static FILE *capture_file;

static void capture_begin(void)
{
    fflush(stderr);
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

static const char *capture_end(void)
{
    static char buf[2048];
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    rewind(capture_file);
    size_t n = fread(buf, 1, sizeof(buf) - 1, capture_file);
    buf[n] = '\0';
    fclose(capture_file);
    return buf;
}

/* Exactly one line, "enclaveml: error: " + want. */
static void expect_error_line(const char *got, const char *want)
{
    char line[1024];
    snprintf(line, sizeof(line), "enclaveml: error: %s\n", want);
    if (strcmp(got, line) != 0)
        fail_msg("stderr was \"%s\", expected \"%s\"", got, line);
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* ==== cli.c: option parsers ==== */

static void test_opt_long(void **state)
{
    (void)state;
    long v = -7;
    long a = 0, b = 0, c = 0;
    capture_begin();
    int r = eml_opt_long("--epochs", "42", 1, 100, &v);
    r |= eml_opt_long("--epochs", "1", 1, 100, &a);
    r |= eml_opt_long("--epochs", "100", 1, 100, &b);
    r |= eml_opt_long("--x", "-5", -10, 10, &c);
    assert_string_equal(capture_end(), "");
    assert_int_equal(r, 0);
    assert_int_equal(v, 42);
    assert_int_equal(a, 1);
    assert_int_equal(b, 100);
    assert_int_equal(c, -5);

    static const char *bad[] = {"0", "101", "12x", "", "4 2", "1.5",
                                "99999999999999999999999", "x", " 5",
                                "\t5", "+5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = -7;
        capture_begin();
        r = eml_opt_long("--epochs", bad[i], 1, 100, &v);
        const char *out = capture_end();
        if (r != -1) fail_msg("'%s' accepted as %ld", bad[i], v);
        assert_int_equal(v, -7); /* untouched on error */
        char want[200];
        snprintf(want, sizeof(want),
                 "--epochs: '%s' is not an integer in 1..100", bad[i]);
        expect_error_line(out, want);
    }
}

static void test_opt_u64(void **state)
{
    (void)state;
    uint64_t v = 7;
    uint64_t m = 0;
    capture_begin();
    int r = eml_opt_u64("--seed", "0", &v);
    r |= eml_opt_u64("--seed", "18446744073709551615", &m);
    assert_string_equal(capture_end(), "");
    assert_int_equal(r, 0);
    assert_true(v == 0);
    assert_true(m == UINT64_MAX);

    static const char *bad[] = {"18446744073709551616", "-1", "", "12x",
                                "0x10", " -1", " 5", "+5", "\n7"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        capture_begin();
        r = eml_opt_u64("--seed", bad[i], &v);
        const char *out = capture_end();
        if (r != -1) fail_msg("'%s' accepted", bad[i]);
        assert_true(v == 7);
        char want[200];
        snprintf(want, sizeof(want),
                 "--seed: '%s' is not a non-negative integer", bad[i]);
        expect_error_line(out, want);
    }
}

static void test_opt_double_float(void **state)
{
    (void)state;
    double d = -1;
    float f = -1;
    double d1 = -1, d2 = -1;
    capture_begin();
    int r = eml_opt_double("--delta", "0.5", 0, 1, &d);
    /* (lo, hi]: hi itself is allowed. */
    r |= eml_opt_double("--delta", "1", 0, 1, &d1);
    r |= eml_opt_double("--delta", "1e-5", 0, 1, &d2);
    r |= eml_opt_float("--lr", "0.25", 0, 10, &f);
    assert_string_equal(capture_end(), "");
    assert_int_equal(r, 0);
    assert_true(d == 0.5);
    assert_true(d1 == 1.0);
    assert_true(d2 == 1e-5);
    assert_true(f == 0.25f);

    /* lo excluded, above hi, junk, non-finite, overflow. */
    static const char *bad[] = {"0",   "-0.1", "1.5",  "0.5x", "",
                                "nan", "inf",  "1e999", "0.5 ", " 0.5",
                                "\t0.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d = -1;
        capture_begin();
        r = eml_opt_double("--delta", bad[i], 0, 1, &d);
        const char *out = capture_end();
        if (r != -1) fail_msg("'%s' accepted as %g", bad[i], d);
        assert_true(d == -1);
        char want[200];
        snprintf(want, sizeof(want),
                 "--delta: '%s' is not a number in (0, 1]", bad[i]);
        expect_error_line(out, want);
    }
    f = -1;
    capture_begin();
    r = eml_opt_float("--lr", "11", 0, 10, &f);
    expect_error_line(capture_end(), "--lr: '11' is not a number in (0, 10]");
    assert_int_equal(r, -1);
    assert_true(f == -1);
}

static void test_opt_hex(void **state)
{
    (void)state;
    uint8_t out[3] = {0};
    capture_begin();
    int r0 = eml_opt_hex("--id", "00fF10", out, 3);
    assert_string_equal(capture_end(), "");
    assert_int_equal(r0, 0);
    assert_int_equal(out[0], 0x00);
    assert_int_equal(out[1], 0xff);
    assert_int_equal(out[2], 0x10);
    static const char *bad[] = {"00ff1", "00ff1000", "", "00fg10", "0xff10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        capture_begin();
        int r = eml_opt_hex("--id", bad[i], out, 3);
        const char *o = capture_end();
        if (r != -1) fail_msg("'%s' accepted", bad[i]);
        expect_error_line(o, "--id: expected 6 hex digits");
    }
}

static void test_fail_one_line(void **state)
{
    (void)state;
    capture_begin();
    int r = eml_fail("%s: line %d: bad", "net.cfg", 7);
    const char *o = capture_end();
    assert_int_equal(r, 1);
    expect_error_line(o, "net.cfg: line 7: bad");
    eml_err err = {0};
    eml_status st = eml_err_set(&err, EML_ERR_FORMAT, "x.key: bad magic");
    capture_begin();
    r = eml_fail_st(st, &err);
    o = capture_end();
    assert_int_equal(r, 1);
    expect_error_line(o, eml_err_msg(&err, st));
    assert_non_null(strstr(o, "x.key: bad magic"));
}

/* ==== keyfile.c ==== */

static void test_keyfile_round_trip(void **state)
{
    (void)state;
    char name[300], key[320], pub[320];
    path_in(name, sizeof(name), "alice");
    eml_err err = {0};
    char *kp = NULL, *pp = NULL;
    eml_status st = eml_keyfile_generate(name, 0, &kp, &pp, &err);
    if (st != EML_OK) fail_msg("keygen: %s", eml_err_msg(&err, st));
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(pub, sizeof(pub), "%s.pub", name);
    assert_string_equal(kp, key);
    assert_string_equal(pp, pub);
    free(kp);
    free(pp);

    struct stat sb;
    assert_int_equal(stat(key, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, EML_KEYFILE_BYTES);
    assert_int_equal(stat(pub, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);
    assert_int_equal(sb.st_size, EML_PUBFILE_BYTES);

    uint8_t raw[EML_KEYFILE_BYTES + 8];
    assert_int_equal(read_file(key, raw, sizeof(raw)), EML_KEYFILE_BYTES);
    assert_memory_equal(raw, EML_KEYFILE_MAGIC, 8);

    eml_keyfile *k = NULL;
    st = eml_keyfile_load(key, &k, &err);
    if (st != EML_OK) fail_msg("load: %s", eml_err_msg(&err, st));
    assert_memory_equal(k->data_key, raw + 8, 32);
    assert_memory_equal(k->x25519_sk, raw + 40, 32);
    uint8_t pk[32];
    assert_int_equal(eml_pubfile_load(pub, pk, &err), EML_OK);
    /* The public key derived on load is the one keygen wrote. */
    assert_memory_equal(k->x25519_pk, pk, 32);
    eml_keyfile_free(k);

    /* Without force an existing key is refused and left as it was. */
    err = (eml_err){0};
    st = eml_keyfile_generate(name, 0, NULL, NULL, &err);
    assert_int_equal(st, EML_ERR_INVALID);
    assert_non_null(strstr(err.msg, "already exists"));
    uint8_t again[EML_KEYFILE_BYTES];
    assert_int_equal(read_file(key, again, sizeof(again)), EML_KEYFILE_BYTES);
    assert_memory_equal(again, raw, EML_KEYFILE_BYTES);

    /* With force both are replaced by fresh keys. */
    err = (eml_err){0};
    assert_int_equal(eml_keyfile_generate(name, 1, NULL, NULL, &err), EML_OK);
    assert_int_equal(read_file(key, again, sizeof(again)), EML_KEYFILE_BYTES);
    assert_memory_not_equal(again + 8, raw + 8, 64);
    assert_int_equal(stat(key, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    uint8_t pk2[32];
    assert_int_equal(eml_pubfile_load(pub, pk2, &err), EML_OK);
    assert_memory_not_equal(pk2, pk, 32);

    /* An empty name is refused. */
    err = (eml_err){0};
    assert_int_equal(eml_keyfile_generate("", 0, NULL, NULL, &err),
                     EML_ERR_INVALID);
}

static void expect_key_error(const char *path, eml_status want,
                             const char *needle)
{
    eml_err err = {0};
    eml_keyfile *k = (eml_keyfile *)&err; /* must be reset to NULL */
    eml_status st = eml_keyfile_load(path, &k, &err);
    if (st != want)
        fail_msg("%s: status %d (%s), expected %d", path, st, err.msg, want);
    assert_null(k);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", path, err.msg, needle);
    assert_non_null(strstr(err.msg, path)); /* names the file */
}

static void test_keyfile_bad(void **state)
{
    (void)state;
    char name[300], key[320], pub[320], bad[320];
    path_in(name, sizeof(name), "bob");
    eml_err err = {0};
    assert_int_equal(eml_keyfile_generate(name, 0, NULL, NULL, &err), EML_OK);
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(pub, sizeof(pub), "%s.pub", name);
    path_in(bad, sizeof(bad), "bad.key");
    uint8_t raw[EML_KEYFILE_BYTES + 1];
    assert_int_equal(read_file(key, raw, EML_KEYFILE_BYTES),
                     EML_KEYFILE_BYTES);

    /* Wrong magic, right size. */
    raw[7] ^= 1;
    write_file(bad, raw, EML_KEYFILE_BYTES, 0600);
    expect_key_error(bad, EML_ERR_FORMAT, "bad magic");
    raw[7] ^= 1;
    /* Truncated by one byte, and one byte too long. */
    write_file(bad, raw, EML_KEYFILE_BYTES - 1, 0600);
    expect_key_error(bad, EML_ERR_FORMAT, "71 bytes");
    raw[EML_KEYFILE_BYTES] = 0;
    write_file(bad, raw, EML_KEYFILE_BYTES + 1, 0600);
    expect_key_error(bad, EML_ERR_FORMAT, "73 bytes");
    write_file(bad, raw, 0, 0600);
    expect_key_error(bad, EML_ERR_FORMAT, "0 bytes");
    /* The public half given where the secret key is needed, and back. */
    expect_key_error(pub, EML_ERR_FORMAT, "is a public key file");
    uint8_t pk[32];
    err = (eml_err){0};
    assert_int_equal(eml_pubfile_load(key, pk, &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "is a secret key file"));
    /* A public key file with the wrong magic or size. */
    uint8_t praw[EML_PUBFILE_BYTES];
    assert_int_equal(read_file(pub, praw, sizeof(praw)), EML_PUBFILE_BYTES);
    praw[0] = 'X';
    write_file(bad, praw, EML_PUBFILE_BYTES, 0644);
    err = (eml_err){0};
    assert_int_equal(eml_pubfile_load(bad, pk, &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bad magic"));
    err = (eml_err){0};
    write_file(bad, praw, EML_PUBFILE_BYTES - 1, 0644);
    assert_int_equal(eml_pubfile_load(bad, pk, &err), EML_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "39 bytes"));
    /* Missing file, and a directory. */
    char missing[320];
    path_in(missing, sizeof(missing), "nobody.key");
    expect_key_error(missing, EML_ERR_NOTFOUND, "nobody.key");
    expect_key_error(g_dir, EML_ERR_IO, "not a regular file");
}

/* ==== mirror_store.c: the libpmem2 mirror pool ==== */

#define CAP 4096

static const uint8_t RUN_ID[16] = {1, 2, 3, 4, 5, 6, 7, 8,
                                   9, 10, 11, 12, 13, 14, 15, 16};

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + 31 * i);
}

static eml_store *open_pool_ok(const char *path)
{
    eml_store *s = NULL;
    eml_err err = {0};
    eml_status st = eml_store_open_pool(path, &s, &err);
    if (st != EML_OK) fail_msg("open pool: %s", eml_err_msg(&err, st));
    return s;
}

static void test_pool_round_trip(void **state)
{
    (void)state;
    char path[300];
    path_in(path, sizeof(path), "mirror.pool");
    eml_err err = {0};
    eml_store *s = open_pool_ok(path);
    assert_int_equal(eml_store_exists(s), 0);
    const eml_store_ops *ops = eml_store_ops_of(s);
    uint8_t hdr[EML_POOL_HEADER_BYTES];
    memset(hdr, 0xee, sizeof(hdr));
    assert_int_equal(ops->read_header(ops->user, hdr, &err), EML_OK);
    uint8_t zero[EML_POOL_HEADER_BYTES] = {0};
    assert_memory_equal(hdr, zero, sizeof(hdr)); /* no store yet */

    /* A single writer: a second open of the same pool is refused. */
    eml_store *s2 = NULL;
    assert_int_equal(eml_store_open_pool(path, &s2, &err), EML_ERR_IO);
    assert_null(s2);
    assert_non_null(strstr(err.msg, "in use"));
    err = (eml_err){0};

    eml_pool_header_build(hdr, RUN_ID, CAP, 0);
    assert_int_equal(ops->create(ops->user, hdr, CAP, &err), EML_OK);
    assert_int_equal(eml_store_exists(s), 1);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, EML_POOL_DATA_OFFSET + 2 * CAP);

    /* Write slot 1 at an offset, commit seq 1 in slot 1, read back. */
    uint8_t data[1000], back[1000];
    fill(data, sizeof(data), 5);
    assert_int_equal(ops->write(ops->user, 1, 100, data, sizeof(data), &err),
                     EML_OK);
    uint64_t word = 1u << 1 | 1u;
    assert_int_equal(ops->commit(ops->user, 1, 1100, word, &err), EML_OK);
    assert_int_equal(ops->read(ops->user, 1, 100, back, sizeof(back), &err),
                     EML_OK);
    assert_memory_equal(back, data, sizeof(data));
    /* Slot 0 is still zero. */
    uint8_t z[1000] = {0};
    assert_int_equal(ops->read(ops->user, 0, 100, back, sizeof(back), &err),
                     EML_OK);
    assert_memory_equal(back, z, sizeof(z));
    /* Accesses outside a slot. */
    assert_int_equal(ops->write(ops->user, 0, CAP - 10, data, 11, &err),
                     EML_ERR_RANGE);
    err = (eml_err){0};
    assert_int_equal(ops->read(ops->user, 2, 0, back, 1, &err),
                     EML_ERR_RANGE);
    err = (eml_err){0};
    assert_int_equal(ops->commit(ops->user, 0, CAP + 1, 0, &err),
                     EML_ERR_RANGE);
    err = (eml_err){0};
    eml_store_close(s);

    /* Reopened: the header carries the commit, the slot the bytes. */
    s = open_pool_ok(path);
    ops = eml_store_ops_of(s);
    assert_int_equal(eml_store_exists(s), 1);
    assert_int_equal(ops->read_header(ops->user, hdr, &err), EML_OK);
    eml_pool_info info;
    assert_int_equal(eml_pool_header_parse(hdr, sizeof(hdr), &info, &err),
                     EML_OK);
    assert_int_equal(info.fresh, 0);
    assert_true(info.capacity == CAP);
    assert_true(info.commit == word);
    assert_memory_equal(info.run_id, RUN_ID, 16);
    assert_int_equal(ops->read(ops->user, 1, 100, back, sizeof(back), &err),
                     EML_OK);
    assert_memory_equal(back, data, sizeof(data));
    eml_store_close(s);

    /* eml_store_setup: a pool holding a state needs resume. */
    err = (eml_err){0};
    assert_int_equal(eml_store_setup(path, NULL, 0, 1, &s, &err),
                     EML_ERR_INVALID);
    assert_null(s);
    assert_non_null(strstr(err.msg, "--resume"));
    err = (eml_err){0};
    assert_int_equal(eml_store_setup(path, NULL, 1, 1, &s, &err), EML_OK);
    assert_non_null(s);
    eml_store_close(s);
    /* Neither a mirror nor a checkpoint: nothing. */
    s = (eml_store *)&err;
    assert_int_equal(eml_store_setup(NULL, NULL, 0, 1, &s, &err), EML_OK);
    assert_null(s);
}

static void expect_pool_error(const char *path, eml_status want,
                              const char *needle)
{
    eml_store *s = NULL;
    eml_err err = {0};
    eml_status st = eml_store_open_pool(path, &s, &err);
    if (st != want)
        fail_msg("%s: status %d (%s), expected %d", path, st, err.msg, want);
    assert_null(s);
    if (strstr(err.msg, needle) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", path, err.msg, needle);
}

static void test_pool_refused(void **state)
{
    (void)state;
    char path[300];
    path_in(path, sizeof(path), "cut.pool");
    eml_err err = {0};
    eml_store *s = open_pool_ok(path);
    const eml_store_ops *ops = eml_store_ops_of(s);
    uint8_t hdr[EML_POOL_HEADER_BYTES];
    eml_pool_header_build(hdr, RUN_ID, CAP, 0);
    assert_int_equal(ops->create(ops->user, hdr, CAP, &err), EML_OK);
    eml_store_close(s);

    /* One slot's worth short of what the header says. */
    assert_int_equal(truncate(path, EML_POOL_DATA_OFFSET + CAP), 0);
    expect_pool_error(path, EML_ERR_TRUNCATED, "truncated or extended");
    /* Longer than the header says. */
    assert_int_equal(truncate(path, EML_POOL_DATA_OFFSET + 3 * CAP), 0);
    expect_pool_error(path, EML_ERR_TRUNCATED, "truncated or extended");
    /* Shorter than the header page. */
    assert_int_equal(truncate(path, 100), 0);
    expect_pool_error(path, EML_ERR_TRUNCATED, "is truncated");

    /* A file that is not a pool. */
    char other[300];
    path_in(other, sizeof(other), "other.pool");
    uint8_t junk[EML_POOL_DATA_OFFSET + 2 * CAP];
    fill(junk, sizeof(junk), 1);
    write_file(other, junk, sizeof(junk), 0600);
    eml_store *t = NULL;
    err = (eml_err){0};
    assert_int_not_equal(eml_store_open_pool(other, &t, &err), EML_OK);
    assert_null(t);
    assert_non_null(strstr(err.msg, other));
    /* A directory. */
    expect_pool_error(g_dir, EML_ERR_IO, g_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_long),
        cmocka_unit_test(test_opt_u64),
        cmocka_unit_test(test_opt_double_float),
        cmocka_unit_test(test_opt_hex),
        cmocka_unit_test(test_fail_one_line),
        cmocka_unit_test(test_keyfile_round_trip),
        cmocka_unit_test(test_keyfile_bad),
        cmocka_unit_test(test_pool_round_trip),
        cmocka_unit_test(test_pool_refused),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
