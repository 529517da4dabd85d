/*
 * fuzz_grant.c - libFuzzer target for grants (src/enclave/attest.c):
 * eml_grant_parse and eml_grant_open on arbitrary bytes, with a fixed
 * enclave key pair and measurement (those of the seeds in
 * fuzz/corpus/grant, made by the generator in fuzz_msg_enclave.c).
 *
 * Beyond the sanitizers it checks the promises of enclave.h: a grant
 * parses only at exactly 232 + 32 n bytes for its n (1..16) distinct
 * recipients (+ 48 with the evaluation extension, whose fields are set
 * exactly when flagged), with its fields copied from their offsets and a
 * positive, finite max_epsilon when flagged; it opens
 * only if it parses, names this enclave's measurement and key, and (in
 * practice) only for the seeds' unmodified bytes; a failed open leaves the
 * data key all zero.  A grant that opens is rebuilt around the key it
 * released, and the rebuilt grant must open to the same key.
 *
 *   ./build-fuzz/fuzz/fuzz_grant -max_total_time=60 fuzz/corpus/grant
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static uint8_t g_sk[32], g_pk[32], g_meas[32];

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 32; i++) {
        g_sk[i] = (uint8_t)(0x60 + i);
        g_meas[i] = 0x4d;
    }
    CHECK(eml_x25519_public(g_pk, g_sk) == EML_OK);
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_grant_info info;
    eml_err err = {0};
    eml_status st = eml_grant_parse(data, size, &info, &err);
    if (st == EML_OK) {
        CHECK(info.n_recipients >= 1 &&
              info.n_recipients <= EML_GRANT_RECIPIENTS_MAX);
        int ext = info.has_max_evaluations || info.has_min_examples ||
                  info.has_release_to || info.has_max_queries;
        CHECK(size == EML_GRANT_FIXED_BYTES +
                          32 * (size_t)info.n_recipients +
                          (ext ? EML_GRANT_EXT_BYTES : 0));
        CHECK(info.has_max_evaluations == (info.max_evaluations != 0));
        CHECK(info.has_min_examples == (info.min_examples != 0));
        CHECK(info.has_max_queries == (info.max_queries != 0));
        CHECK(info.has_release_to == !all_zero(info.release_to, 32));
        CHECK(memcmp(data, "EMLGRNT1", 8) == 0);
        CHECK(data[8] == 2 && data[9] == 0);
        for (unsigned i = 0; i < info.n_recipients; i++) {
            CHECK(memcmp(info.recipients[i], data + 152 + 32 * i, 32) == 0);
            CHECK(eml_grant_allows_recipient(&info, data + 152 + 32 * i));
            for (unsigned j = 0; j < i; j++)
                CHECK(memcmp(info.recipients[i], info.recipients[j], 32) != 0);
        }
        if (info.has_cfg_digest)
            CHECK(memcmp(info.cfg_digest, data + 116, 32) == 0);
        CHECK(memcmp(info.measurement, data + 12, 32) == 0);
        CHECK(memcmp(info.enclave_pk, data + 44, 32) == 0);
        CHECK(memcmp(info.key_id, data + 76, 16) == 0);
        CHECK(memcmp(info.grant_id, data + 100, 16) == 0);
        CHECK(info.has_max_epsilon == 0 || info.has_max_epsilon == 1);
        if (info.has_max_epsilon)
            CHECK(isfinite(info.max_epsilon) && info.max_epsilon > 0);
    } else {
        CHECK(err.msg[0] != '\0');
    }

    uint8_t key[32];
    eml_err oerr = {0};
    eml_grant_info oi;
    memset(key, 0xee, sizeof(key));
    eml_status ost = eml_grant_open(data, size, g_meas, g_sk, g_pk, &oi, key,
                                    &oerr);
    if (ost != EML_OK) {
        CHECK(all_zero(key, sizeof(key)));
        CHECK(oerr.msg[0] != '\0');
        return 0;
    }
    CHECK(st == EML_OK);
    CHECK(memcmp(oi.measurement, g_meas, 32) == 0);
    CHECK(memcmp(oi.enclave_pk, g_pk, 32) == 0);
    /* Round trip: a new grant for the released key opens to that key. */
    uint8_t g2[EML_GRANT_MAX_BYTES], key2[32];
    size_t g2len = 0;
    CHECK(eml_grant_build(g2, &g2len, &oi, key) == EML_OK);
    CHECK(g2len == size);
    CHECK(eml_grant_open(g2, g2len, g_meas, g_sk, g_pk, &info, key2,
                         &err) == EML_OK);
    CHECK(memcmp(key, key2, 32) == 0);
    CHECK(info.has_max_epsilon == oi.has_max_epsilon);
    CHECK(info.has_cfg_digest == oi.has_cfg_digest);
    CHECK(info.n_recipients == oi.n_recipients);
    CHECK(info.has_max_evaluations == oi.has_max_evaluations &&
          info.max_evaluations == oi.max_evaluations);
    CHECK(info.has_min_examples == oi.has_min_examples &&
          info.min_examples == oi.min_examples);
    CHECK(info.has_release_to == oi.has_release_to &&
          memcmp(info.release_to, oi.release_to, 32) == 0);
    CHECK(info.has_max_queries == oi.has_max_queries &&
          info.max_queries == oi.max_queries);
    CHECK(memcmp(info.grant_id, oi.grant_id, 16) != 0); /* fresh id */
    eml_wipe(key, sizeof(key));
    eml_wipe(key2, sizeof(key2));
    return 0;
}
