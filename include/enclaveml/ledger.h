/*
 * ledger.h - the enclave's spend ledger: how much privacy budget (epsilon)
 * each budgeted grant has spent, across every run, restart and resume.
 *
 * Trusted code, no I/O.  The host stores the ledger, sealed to the
 * enclave's measurement; the platform's monotonic counter (enclave.h,
 * eml_counter_ops) keeps the host from handing back an older copy.  The
 * runtime's protocol (docs/dp.md, "Budgets across runs"):
 *
 *   1. read the sealed ledger (LEDGER_READ), open it, and accept it only if
 *      its counter is the platform counter c, or c + 1 (a charge whose
 *      ledger was stored but whose counter step was lost in a crash: the
 *      counter is then advanced to catch up);
 *   2. a fresh DP run is admitted only if, for every budgeted grant,
 *      spent + planned epsilon <= max_epsilon;
 *   3. before its first step, the run charges its planned epsilon: the new
 *      ledger (counter c + 1) is sealed and stored (LEDGER_WRITE), THEN the
 *      platform counter advances to c + 1, THEN training starts.  A crash
 *      between the two leaves the charge recorded; a copy from before the
 *      charge is refused once the counter has moved.
 *
 * A run resumed from a committed mirror state continues a run that was
 * charged when it started, and is not charged again.
 *
 * The same ledger counts evaluations (docs/evaluate.md, "Limits set in
 * the grants"): an entry keyed by a hash of (grant id, model digest),
 * distinct from any grant id, whose `spent` is the number of evaluations
 * made, charged by the same protocol before the report leaves; and
 * predictions (docs/evaluate.md, "Private prediction"): an entry keyed by
 * a hash of (model grant id, recipient key) whose `spent` is the number of
 * predictions sent, charged before they leave.
 *
 * Sealed blob (little-endian):
 *   "EMLLEDG1" | u16 version 1 | u16 0 | nonce[12] | AES-256-GCM(plain) |
 *   tag[16];  AAD = the first 12 bytes; key = HKDF-SHA256(seal secret,
 *   salt = measurement, "enclaveml ledger v1")
 *   plain = u64 counter | u32 n | u32 0 | n x (grant_id[16] | f64 spent)
 *   entries sorted by grant id, distinct, spent finite and >= 0.
 *
 *     eml_ledger l;  eml_ledger_init(&l);
 *     eml_ledger_open(blob, n, key, &l, &err);     // or empty: a fresh one
 *     double s = eml_ledger_spent(&l, grant_id);
 *     eml_ledger_charge(&l, grant_id, eps);  l.counter++;
 *     eml_ledger_seal(&l, key, &blob, &n);  ...  eml_ledger_free(&l);
 */
#ifndef ENCLAVEML_LEDGER_H
#define ENCLAVEML_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_LEDGER_VERSION 1
#define EML_LEDGER_MAX_ENTRIES 16384
#define EML_LEDGER_ENTRY_BYTES 24
#define EML_LEDGER_OVERHEAD (12 + 12 + 16 + 16) /* header, nonce, tag, plain
                                                    header */
#define EML_LEDGER_MAX_BYTES                                                   \
    (EML_LEDGER_OVERHEAD + EML_LEDGER_ENTRY_BYTES * EML_LEDGER_MAX_ENTRIES)

typedef struct eml_ledger_entry {
    uint8_t grant_id[16];
    double spent;
} eml_ledger_entry;

typedef struct eml_ledger {
    uint64_t counter;
    size_t n, cap;
    eml_ledger_entry *e; /* sorted by grant_id */
} eml_ledger;

void eml_ledger_init(eml_ledger *l);
void eml_ledger_free(eml_ledger *l);

/* The ledger's sealing key (32 bytes). */
EML_MUST_CHECK eml_status eml_ledger_key(uint8_t key[32],
                                         const uint8_t seal_secret[32],
                                         const uint8_t measurement[32]);
/* Parses the plaintext strictly (the fuzz target's entry). */
EML_MUST_CHECK eml_status eml_ledger_parse(const uint8_t *p, size_t len,
                                           eml_ledger *l, eml_err *err);
/* Authenticates, decrypts and parses a sealed ledger into l (replacing
 * what it held).  Anything that does not authenticate is EML_ERR_AUTH. */
EML_MUST_CHECK eml_status eml_ledger_open(const uint8_t *blob, size_t len,
                                          const uint8_t key[32],
                                          eml_ledger *l, eml_err *err);
/* Seals l into a new malloc'd blob. */
EML_MUST_CHECK eml_status eml_ledger_seal(const eml_ledger *l,
                                          const uint8_t key[32],
                                          uint8_t **out, size_t *out_len);
/* Epsilon spent so far under a grant (0 if it never ran). */
double eml_ledger_spent(const eml_ledger *l, const uint8_t grant_id[16]);
/* Adds eps (finite, >= 0) to a grant's spending. */
EML_MUST_CHECK eml_status eml_ledger_charge(eml_ledger *l,
                                            const uint8_t grant_id[16],
                                            double eps);

#ifdef __cplusplus
}
#endif
#endif
