/*
 * fuzz_ledger.c - libFuzzer target for the spend ledger (ledger.h):
 * eml_ledger_parse on arbitrary plaintext and eml_ledger_open on arbitrary
 * sealed bytes under a fixed key.
 *
 * Beyond the sanitizers it checks the format's promises: a plaintext
 * parses only at exactly 16 + 24 n bytes, with sorted, distinct entries
 * whose spending is finite and non-negative; what parses seals and opens
 * back to the same ledger, and one more charge to an entry raises exactly
 * that entry.  A sealed blob opens only if it authenticates (in practice,
 * only the seeds' own bytes).  Seeds: fuzz/corpus/ledger/ (plaintext
 * ledgers of 0, 1 and 3 entries and one sealed under the fixed key,
 * written by tests/test_ledger.c when EML_LEDGER_SEEDS names a directory).
 *
 *   ./build-fuzz/fuzz/fuzz_ledger -max_total_time=60 fuzz/corpus/ledger
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/ledger.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

static uint8_t g_key[32];

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 32; i++) g_key[i] = (uint8_t)(0xa0 + i);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_ledger l, back;
    eml_ledger_init(&l);
    eml_ledger_init(&back);
    eml_err err = {0};
    eml_status st = eml_ledger_parse(data, size, &l, &err);
    if (st != EML_OK) {
        CHECK(err.msg[0] != '\0');
        CHECK(l.n == 0 && l.e == NULL);
    } else {
        CHECK(size == 16 + 24 * l.n);
        for (size_t i = 0; i < l.n; i++) {
            CHECK(isfinite(l.e[i].spent) && l.e[i].spent >= 0);
            CHECK(eml_ledger_spent(&l, l.e[i].grant_id) == l.e[i].spent);
            if (i > 0)
                CHECK(memcmp(l.e[i - 1].grant_id, l.e[i].grant_id, 16) < 0);
        }
        /* Seal, open: the same ledger. */
        uint8_t *blob = NULL;
        size_t blen = 0;
        CHECK(eml_ledger_seal(&l, g_key, &blob, &blen) == EML_OK);
        CHECK(eml_ledger_open(blob, blen, g_key, &back, &err) == EML_OK);
        CHECK(back.n == l.n && back.counter == l.counter);
        CHECK(l.n == 0 || memcmp(back.e, l.e, l.n * sizeof(l.e[0])) == 0);
        /* Any flipped bit of the blob is refused. */
        blob[size % blen] ^= 1;
        eml_ledger other;
        eml_ledger_init(&other);
        CHECK(eml_ledger_open(blob, blen, g_key, &other, &err) != EML_OK);
        eml_ledger_free(&other);
        free(blob);
        /* One charge raises one entry by that much. */
        uint8_t gid[16];
        memcpy(gid, size >= 32 ? data + 16 : (const uint8_t *)"0123456789abcdef",
               16);
        double before = eml_ledger_spent(&l, gid);
        size_t n = l.n;
        if (eml_ledger_charge(&l, gid, 0.5) == EML_OK) {
            CHECK(eml_ledger_spent(&l, gid) == before + 0.5);
            CHECK(l.n == n || l.n == n + 1);
        }
    }
    eml_ledger_free(&l);
    eml_ledger_free(&back);

    /* The same bytes as a sealed ledger. */
    eml_ledger_init(&l);
    memset(&err, 0, sizeof(err));
    st = eml_ledger_open(data, size, g_key, &l, &err);
    if (st != EML_OK) CHECK(err.msg[0] != '\0' && l.n == 0);
    eml_ledger_free(&l);
    return 0;
}
