/*
 * fuzz_report.c - libFuzzer target for signed reports: eml_report_verify
 * (src/enclave/attest.c) and the report JSON parser eml_flatjson_parse
 * (src/formats/flatjson.c), on arbitrary bytes.
 *
 * The input is verified against the fixed platform key of the seeds (the
 * attestation seed verifies) and against the key the report names itself
 * in its "ed25519" member (so the training seeds verify), then parsed, and
 * every member read back through the lookup functions.  Beyond the
 * sanitizers it checks: a report that verifies starts with '{', has a
 * well-formed signature suffix, and still verifies with a trailing newline
 * removed or added; flipping any one byte of the signed part of a report
 * that verified makes it fail; the parser's members are NUL-free strings,
 * finite numbers or 0/1 booleans, with unique keys, and at most
 * EML_FLATJSON_MAX_MEMBERS of them.
 *
 *   ./build-fuzz/fuzz/fuzz_report -max_total_time=60 fuzz/corpus/report
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "enclaveml/flatjson.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static uint8_t g_platform_pk[32];
static volatile double g_sink;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* fuzz_msg_enclave.c's fixed platform signing key: bytes 1..32. */
    uint8_t sk[32];
    for (int i = 0; i < 32; i++) sk[i] = (uint8_t)(i + 1);
    CHECK(eml_ed25519_public(g_platform_pk, sk) == EML_OK);
    return 0;
}

/* A report that verified: every single-byte change of the signed part is
 * caught (a few positions per input, to stay fast). */
static void check_verified(const char *text, size_t len, const uint8_t pk[32])
{
    CHECK(len > 0 && text[0] == '{');
    char *copy = malloc(len + 1);
    CHECK(copy != NULL);
    memcpy(copy, text, len);
    copy[len] = '\n';
    size_t body = len;
    if (body > 0 && text[body - 1] == '\n') body--;
    /* with or without one trailing newline */
    if (body == len) CHECK(eml_report_verify(copy, len + 1, pk) == EML_OK);
    else CHECK(eml_report_verify(copy, body, pk) == EML_OK);
    size_t sig_at = body - (14 + 128 + 2);
    size_t pos[3] = {0, sig_at / 2, sig_at > 0 ? sig_at - 1 : 0};
    for (int i = 0; i < 3; i++) {
        copy[pos[i]] ^= 0x01;
        CHECK(eml_report_verify(copy, len, pk) != EML_OK);
        copy[pos[i]] ^= 0x01;
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    if (eml_report_verify(text, size, g_platform_pk) == EML_OK)
        check_verified(text, size, g_platform_pk);
    /* The attestation check: what it accepts is signed by the key, says
     * what it binds, and names that key's backend. */
    eml_platform_key keys[2] = {{{0}, "none"}, {{0}, "sim"}};
    memcpy(keys[1].pk, g_platform_pk, 32);
    eml_attestation at;
    eml_err aerr = {0};
    if (eml_attestation_check(text, size, keys, 2, &at, &aerr) == EML_OK) {
        CHECK(at.key == 1);
        CHECK(eml_report_verify(text, size, g_platform_pk) == EML_OK);
        CHECK(strncmp(at.policy, "backend=sim;", 12) == 0);
        CHECK(at.nonce_len <= EML_NONCE_MAX);
    } else {
        CHECK(aerr.msg[0] != '\0');
    }

    eml_flatjson j;
    eml_err err = {0};
    if (eml_flatjson_parse(text, size, &j, &err) != EML_OK) {
        CHECK(err.msg[0] != '\0');
        return 0;
    }
    CHECK(j.n <= EML_FLATJSON_MAX_MEMBERS);
    for (size_t i = 0; i < j.n; i++) {
        const eml_flatjson_member *m = &j.m[i];
        CHECK(m->key != NULL);
        for (size_t k = 0; k < i; k++) CHECK(strcmp(j.m[k].key, m->key) != 0);
        double d;
        int b;
        switch (m->kind) {
        case EML_JSON_STRING:
            CHECK(m->str != NULL);
            CHECK(eml_flatjson_str(&j, m->key) == m->str);
            CHECK(eml_flatjson_num(&j, m->key, &d) != 0);
            g_sink = (double)strlen(m->str);
            break;
        case EML_JSON_NUMBER:
            CHECK(isfinite(m->num));
            CHECK(eml_flatjson_str(&j, m->key) == NULL);
            CHECK(eml_flatjson_num(&j, m->key, &d) == 0 && d == m->num);
            break;
        case EML_JSON_BOOL:
            CHECK(m->boolean == 0 || m->boolean == 1);
            CHECK(eml_flatjson_bool(&j, m->key, &b) == 0 && b == m->boolean);
            break;
        default:
            CHECK(0);
        }
    }
    /* The training report's own key: verify against it. */
    const char *ed = eml_flatjson_str(&j, "ed25519");
    uint8_t pk[32];
    if (ed != NULL && eml_unhex(pk, 32, ed, strlen(ed)) == 0 &&
        eml_report_verify(text, size, pk) == EML_OK)
        check_verified(text, size, pk);
    eml_flatjson_free(&j);
    return 0;
}
