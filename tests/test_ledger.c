/*
 * test_ledger.c - the spend ledger (ledger.h) and the grant format
 * (enclave.h, version 2): round trips, every corrupted or truncated input
 * refused, the arithmetic of charges, and the old grant version refused
 * by name.
 *
 * With EML_LEDGER_SEEDS=DIR it also writes the fuzz seeds of
 * fuzz/fuzz_ledger.c into DIR.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "enclaveml/ledger.h"

static const uint8_t key[32] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
                                0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad,
                                0xae, 0xaf, 0xb0, 0xb1, 0xb2, 0xb3, 0xb4,
                                0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb,
                                0xbc, 0xbd, 0xbe, 0xbf}; /* fuzz_ledger's */

static void gid(uint8_t out[16], int v)
{
    memset(out, 0, 16);
    out[0] = (uint8_t)v;
}

static void test_charges(void **state)
{
    (void)state;
    eml_ledger l;
    eml_ledger_init(&l);
    uint8_t a[16], b[16], c[16];
    gid(a, 5);
    gid(b, 1);
    gid(c, 9);
    assert_true(eml_ledger_spent(&l, a) == 0.0);
    assert_int_equal(eml_ledger_charge(&l, a, 1.25), EML_OK);
    assert_int_equal(eml_ledger_charge(&l, b, 0.5), EML_OK);
    assert_int_equal(eml_ledger_charge(&l, c, 2.0), EML_OK);
    assert_int_equal(eml_ledger_charge(&l, a, 0.75), EML_OK);
    assert_int_equal(l.n, 3);
    assert_true(eml_ledger_spent(&l, a) == 2.0);
    assert_true(eml_ledger_spent(&l, b) == 0.5);
    assert_true(eml_ledger_spent(&l, c) == 2.0);
    /* Kept sorted by grant id. */
    assert_int_equal(l.e[0].grant_id[0], 1);
    assert_int_equal(l.e[1].grant_id[0], 5);
    assert_int_equal(l.e[2].grant_id[0], 9);
    assert_int_equal(eml_ledger_charge(&l, a, -1), EML_ERR_INVALID);
    assert_int_equal(eml_ledger_charge(&l, a, 1.0 / 0.0), EML_ERR_INVALID);
    assert_true(eml_ledger_spent(&l, a) == 2.0);
    eml_ledger_free(&l);
    eml_ledger_free(&l); /* twice is fine */
}

static void test_seal_open(void **state)
{
    (void)state;
    eml_ledger l, back;
    eml_ledger_init(&l);
    eml_ledger_init(&back);
    uint8_t g[16];
    for (int i = 0; i < 40; i++) {
        gid(g, 200 - 3 * i);
        assert_int_equal(eml_ledger_charge(&l, g, 0.1 * i), EML_OK);
    }
    l.counter = 77;
    uint8_t *blob = NULL;
    size_t n = 0;
    assert_int_equal(eml_ledger_seal(&l, key, &blob, &n), EML_OK);
    assert_int_equal(n, EML_LEDGER_OVERHEAD + 40 * EML_LEDGER_ENTRY_BYTES);
    eml_err err = {0};
    assert_int_equal(eml_ledger_open(blob, n, key, &back, &err), EML_OK);
    assert_int_equal(back.counter, 77);
    assert_int_equal(back.n, 40);
    assert_memory_equal(back.e, l.e, 40 * sizeof(l.e[0]));
    /* Every single-bit flip is refused, and so is every truncation. */
    for (size_t i = 0; i < n * 8; i++) {
        blob[i / 8] ^= (uint8_t)(1 << (i % 8));
        eml_err e2 = {0};
        eml_status st = eml_ledger_open(blob, n, key, &back, &e2);
        if (st == EML_OK) fail_msg("bit %zu flipped: the ledger opened", i);
        assert_true(e2.msg[0] != '\0');
        blob[i / 8] ^= (uint8_t)(1 << (i % 8));
    }
    for (size_t k = 0; k < n; k++)
        if (eml_ledger_open(blob, k, key, &back, &err) == EML_OK)
            fail_msg("a %zu-byte prefix of %zu opened", k, n);
    /* Another key (another measurement or platform) does not open it. */
    uint8_t other[32];
    memcpy(other, key, 32);
    other[31] ^= 1;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_ledger_open(blob, n, other, &back, &err),
                     EML_ERR_AUTH);
    assert_non_null(strstr(err.msg, "does not authenticate"));
    free(blob);
    eml_ledger_free(&l);
    eml_ledger_free(&back);
}

/* The plaintext parser: strict on order, values and sizes. */
static void test_parse_strict(void **state)
{
    (void)state;
    uint8_t p[16 + 2 * 24];
    memset(p, 0, sizeof(p));
    p[0] = 3;  /* counter */
    p[8] = 2;  /* n */
    p[16] = 1; /* grant ids 1 and 2 */
    p[40] = 2;
    double one = 1.0;
    memcpy(p + 32, &one, 8); /* little-endian machine */
    memcpy(p + 56, &one, 8);
    eml_ledger l;
    eml_ledger_init(&l);
    eml_err err = {0};
    assert_int_equal(eml_ledger_parse(p, sizeof(p), &l, &err), EML_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.counter, 3);
    /* Out of order, duplicate, negative, NaN, reserved bits, sizes. */
    uint8_t q[sizeof(p)];
    memcpy(q, p, sizeof(p));
    q[40] = 1;
    assert_int_equal(eml_ledger_parse(q, sizeof(q), &l, &err), EML_ERR_FORMAT);
    memcpy(q, p, sizeof(p));
    q[40] = 0;
    assert_int_equal(eml_ledger_parse(q, sizeof(q), &l, &err), EML_ERR_FORMAT);
    memcpy(q, p, sizeof(p));
    double neg = -0.5, nan = 0.0 / 0.0;
    memcpy(q + 56, &neg, 8);
    assert_int_equal(eml_ledger_parse(q, sizeof(q), &l, &err), EML_ERR_FORMAT);
    memcpy(q + 56, &nan, 8);
    assert_int_equal(eml_ledger_parse(q, sizeof(q), &l, &err), EML_ERR_FORMAT);
    memcpy(q, p, sizeof(p));
    q[12] = 1;
    assert_int_equal(eml_ledger_parse(q, sizeof(q), &l, &err), EML_ERR_FORMAT);
    assert_int_not_equal(eml_ledger_parse(p, sizeof(p) - 1, &l, &err), EML_OK);
    assert_int_not_equal(eml_ledger_parse(p, 15, &l, &err), EML_OK);
    assert_int_equal(l.n, 0);
    eml_ledger_free(&l);
}

/* Writes the fuzz seeds when asked to. */
static void test_seeds(void **state)
{
    (void)state;
    const char *dir = getenv("EML_LEDGER_SEEDS");
    if (dir == NULL || dir[0] == '\0') skip();
    eml_ledger l;
    eml_ledger_init(&l);
    uint8_t g[16];
    char path[4096];
    for (int k = 0; k < 3; k++) {
        if (k > 0) {
            gid(g, 10 * k);
            assert_int_equal(eml_ledger_charge(&l, g, 0.75 * k), EML_OK);
        }
        if (k == 2) {
            gid(g, 7);
            assert_int_equal(eml_ledger_charge(&l, g, 3.0), EML_OK);
        }
        l.counter = (uint64_t)k;
        uint8_t *blob = NULL;
        size_t n = 0;
        assert_int_equal(eml_ledger_seal(&l, key, &blob, &n), EML_OK);
        snprintf(path, sizeof(path), "%s/sealed-%d", dir, k);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(blob, 1, n, f);
        fclose(f);
        /* The plaintext: what eml_ledger_parse reads. */
        eml_ledger back;
        eml_ledger_init(&back);
        eml_err err = {0};
        assert_int_equal(eml_ledger_open(blob, n, key, &back, &err), EML_OK);
        snprintf(path, sizeof(path), "%s/plain-%d", dir, k);
        f = fopen(path, "wb");
        assert_non_null(f);
        uint8_t hdr[16] = {0};
        hdr[0] = (uint8_t)k;
        hdr[8] = (uint8_t)back.n;
        fwrite(hdr, 1, 16, f);
        for (size_t i = 0; i < back.n; i++) {
            fwrite(back.e[i].grant_id, 1, 16, f);
            fwrite(&back.e[i].spent, 1, 8, f);
        }
        fclose(f);
        eml_ledger_free(&back);
        free(blob);
    }
    eml_ledger_free(&l);
}

/* ==== grants, version 2 ==== */

static void grant_info(eml_grant_info *gi, const uint8_t enclave_pk[32],
                       const uint8_t data_key[32], unsigned n_rcpt)
{
    memset(gi, 0, sizeof(*gi));
    memset(gi->measurement, 0x4d, 32);
    memcpy(gi->enclave_pk, enclave_pk, 32);
    assert_int_equal(eml_container_key_id(gi->key_id, data_key), EML_OK);
    gi->n_recipients = n_rcpt;
    for (unsigned i = 0; i < n_rcpt; i++)
        memset(gi->recipients[i], 0x10 + (int)i, 32);
}

static void test_grant_round_trip(void **state)
{
    (void)state;
    uint8_t sk[32], pk[32], dk[32], out_key[32];
    assert_int_equal(eml_x25519_keygen(sk, pk), EML_OK);
    assert_int_equal(eml_random(dk, 32), EML_OK);
    uint8_t meas[32];
    memset(meas, 0x4d, 32);
    for (unsigned n = 1; n <= EML_GRANT_RECIPIENTS_MAX; n += 5) {
        eml_grant_info gi, got;
        grant_info(&gi, pk, dk, n);
        gi.has_max_epsilon = n % 2;
        gi.max_epsilon = gi.has_max_epsilon ? 2.5 : 0;
        gi.has_cfg_digest = 1;
        memset(gi.cfg_digest, 0xc5, 32);
        gi.allow_outsource = n % 3 == 1;
        uint8_t g[EML_GRANT_MAX_BYTES];
        size_t len = 0;
        assert_int_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
        assert_int_equal(len, EML_GRANT_FIXED_BYTES + 32 * n);
        eml_err err = {0};
        assert_int_equal(eml_grant_open(g, len, meas, sk, pk, &got, out_key,
                                        &err),
                         EML_OK);
        assert_memory_equal(out_key, dk, 32);
        assert_int_equal(got.n_recipients, n);
        assert_int_equal(got.has_max_epsilon, gi.has_max_epsilon);
        assert_int_equal(got.has_cfg_digest, 1);
        assert_memory_equal(got.cfg_digest, gi.cfg_digest, 32);
        assert_int_equal(got.allow_outsource, gi.allow_outsource);
        for (unsigned i = 0; i < n; i++)
            assert_true(eml_grant_allows_recipient(&got, gi.recipients[i]));
        uint8_t stranger[32];
        memset(stranger, 0xee, 32);
        assert_false(eml_grant_allows_recipient(&got, stranger));
        /* Every single-bit flip: refused (parse or authentication), and
         * the key stays zero. */
        for (size_t i = 0; i < len * 8; i++) {
            g[i / 8] ^= (uint8_t)(1 << (i % 8));
            memset(out_key, 0xee, 32);
            eml_err e2 = {0};
            if (eml_grant_open(g, len, meas, sk, pk, &got, out_key, &e2) ==
                EML_OK)
                fail_msg("%u recipients: bit %zu flipped, the grant opened",
                         n, i);
            for (int k = 0; k < 32; k++) assert_int_equal(out_key[k], 0);
            g[i / 8] ^= (uint8_t)(1 << (i % 8));
        }
        for (size_t k = 0; k < len; k++)
            if (eml_grant_parse(g, k, &got, &err) == EML_OK)
                fail_msg("a %zu-byte prefix parsed", k);
    }
}

static void test_grant_refusals(void **state)
{
    (void)state;
    uint8_t sk[32], pk[32], dk[32];
    assert_int_equal(eml_x25519_keygen(sk, pk), EML_OK);
    assert_int_equal(eml_random(dk, 32), EML_OK);
    eml_grant_info gi, got;
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t len = 0;
    /* No recipient, too many, the same one twice: not built. */
    grant_info(&gi, pk, dk, 0);
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    grant_info(&gi, pk, dk, EML_GRANT_RECIPIENTS_MAX);
    gi.n_recipients = EML_GRANT_RECIPIENTS_MAX + 1;
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    grant_info(&gi, pk, dk, 2);
    memcpy(gi.recipients[1], gi.recipients[0], 32);
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    /* Version 1: refused by name. */
    grant_info(&gi, pk, dk, 1);
    assert_int_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    g[8] = 1;
    eml_err err = {0};
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "version 1 is no longer supported"));
    g[8] = 3;
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_UNSUPPORTED);
    /* A recipient count that does not fit the size. */
    g[8] = 2;
    g[148] = 2;
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
    g[148] = 0;
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
    g[148] = 1;
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_OK);
}

/* The evaluation extension (docs/evaluate.md): max_evaluations,
 * max_queries, min_examples and a release key, 48 bytes after the
 * recipients when any is flagged; a grant without them has no extension
 * (and loads as before); a field without its flag, a flagged field of
 * zero or an unknown flag are refused; every bit of it is authenticated. */
static void test_grant_extension(void **state)
{
    (void)state;
    uint8_t sk[32], pk[32], dk[32], out_key[32], meas[32];
    assert_int_equal(eml_x25519_keygen(sk, pk), EML_OK);
    assert_int_equal(eml_random(dk, 32), EML_OK);
    memset(meas, 0x4d, 32);
    eml_grant_info gi, got;
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t len = 0;
    eml_err err = {0};
    /* Each field alone, then all four. */
    for (int which = 0; which < 5; which++) {
        grant_info(&gi, pk, dk, 2);
        if (which == 3 || which == 4) {
            gi.has_max_queries = 1;
            gi.max_queries = 150;
        }
        if (which == 0 || which == 4) {
            gi.has_max_evaluations = 1;
            gi.max_evaluations = 3;
        }
        if (which == 1 || which == 4) {
            gi.has_min_examples = 1;
            gi.min_examples = (uint64_t)1 << 40;
        }
        if (which == 2 || which == 4) {
            gi.has_release_to = 1;
            memset(gi.release_to, 0x77, 32);
        }
        assert_int_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
        assert_int_equal(len, EML_GRANT_FIXED_BYTES + 64 +
                                  EML_GRANT_EXT_BYTES);
        assert_int_equal(eml_grant_open(g, len, meas, sk, pk, &got,
                                        out_key, &err),
                         EML_OK);
        assert_memory_equal(out_key, dk, 32);
        assert_int_equal(got.has_max_evaluations, gi.has_max_evaluations);
        assert_int_equal(got.max_evaluations, gi.max_evaluations);
        assert_int_equal(got.has_min_examples, gi.has_min_examples);
        assert_true(got.min_examples == gi.min_examples);
        assert_int_equal(got.has_release_to, gi.has_release_to);
        assert_memory_equal(got.release_to, gi.release_to, 32);
        assert_int_equal(got.has_max_queries, gi.has_max_queries);
        assert_int_equal(got.max_queries, gi.max_queries);
        if (which != 4) continue;
        /* Every single-bit flip of the extension: refused. */
        size_t ext = 152 + 64;
        for (size_t i = ext * 8; i < (ext + EML_GRANT_EXT_BYTES) * 8; i++) {
            g[i / 8] ^= (uint8_t)(1 << (i % 8));
            if (eml_grant_open(g, len, meas, sk, pk, &got, out_key, &err) ==
                EML_OK)
                fail_msg("extension bit %zu flipped, the grant opened", i);
            g[i / 8] ^= (uint8_t)(1 << (i % 8));
        }
        /* Cut back to the size of a grant without it: refused. */
        assert_int_equal(eml_grant_parse(g, len - EML_GRANT_EXT_BYTES, &got,
                                         &err),
                         EML_ERR_FORMAT);
        /* A flagged max_evaluations or max_queries of 0; a field without
         * its flag; an unknown flag. */
        uint8_t save[4];
        memcpy(save, g + ext, 4);
        memset(g + ext, 0, 4);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "max_evaluations is 0"));
        memcpy(g + ext, save, 4);
        memcpy(save, g + ext + 4, 4);
        memset(g + ext + 4, 0, 4);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "max_queries is 0"));
        memcpy(g + ext + 4, save, 4);
        g[10] &= (uint8_t)~64u; /* max_queries' flag */
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "max_queries is set but has no"));
        g[10] |= 64u;
        g[10] &= (uint8_t)~16u; /* min_examples' flag */
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "has no flag"));
        g[10] |= 16u;
        g[10] |= 128u;
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "unknown flags"));
        g[10] &= (uint8_t)~128u;
        assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_OK);
    }
    /* Without any: no extension, nothing set (an older grant). */
    grant_info(&gi, pk, dk, 1);
    assert_int_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    assert_int_equal(len, EML_GRANT_FIXED_BYTES + 32);
    assert_int_equal(eml_grant_parse(g, len, &got, &err), EML_OK);
    assert_false(got.has_max_evaluations || got.has_min_examples ||
                 got.has_release_to || got.has_max_queries);
    /* Flagged but zero: not built. */
    gi.has_max_evaluations = 1;
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    gi.has_max_evaluations = 0;
    gi.has_release_to = 1;
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
    gi.has_release_to = 0;
    gi.has_max_queries = 1;
    assert_int_not_equal(eml_grant_build(g, &len, &gi, dk), EML_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_charges),
        cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_parse_strict),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_grant_round_trip),
        cmocka_unit_test(test_grant_refusals),
        cmocka_unit_test(test_grant_extension),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
