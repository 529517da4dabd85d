/*
 * enclave.h - the trusted runtime: identity, sealing, attestation reports,
 * grants, and the ecall loop that serves the host over one channel.
 *
 * Everything here is trusted code: memory and the channel fd only, no
 * files, sockets or processes.  The "platform" (hardware in SGX; simulated
 * by `sim` from a per-machine key file) hands the runtime its measurement,
 * a report-signing key and a sealing secret at start.
 *
 *     eml_platform plat = {...};           // from the simulated platform
 *     eml_enclave *e;  eml_enclave_new(&plat, &e);
 *     eml_enclave_serve(e, fd);             // until SHUTDOWN or EOF
 *     eml_enclave_free(e);
 *
 * Formats (byte by byte in docs/enclave.md):
 *   sealed identity  "EMLSEAL1" | nonce[12] | AES-256-GCM(x25519_sk ||
 *                    ed25519_sk)[64] | tag[16]; key = HKDF(seal secret,
 *                    salt = measurement, "enclaveml seal v1"), AAD = magic ||
 *                    measurement.
 *   grant            see eml_grant_*.
 *   reports          JSON objects whose last member is "signature": the
 *                    Ed25519 signature over the file's bytes before
 *                    ',"signature":' followed by '}'.
 */
#ifndef ENCLAVEML_ENCLAVE_H
#define ENCLAVEML_ENCLAVE_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/edl.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EML_MEASUREMENT_BYTES 32

/* A trusted monotonic counter: what keeps the enclave's sealed spend
 * ledger (privacy budgets spent per grant) from being rolled back by the
 * host.  The platform provides it; the runtime only reads and advances it.
 * sim: a file in $ENCLAVEML_HOME per measurement, opened before the sandbox
 * closes (as trustworthy as the sim platform's key file, i.e. not against
 * the host's own user); SGX: a TPM NV counter or a counter service (SGX's
 * own PSE counters are gone).  read == NULL: the platform has none, and
 * budgeted grants are refused. */
typedef struct eml_counter_ops {
    void *user;
    /* The counter's current value (0 when never advanced). */
    eml_status (*read)(void *user, uint64_t *value, eml_err *err);
    /* Durably sets the counter to value (> the current value); returns
     * after it is persistent. */
    eml_status (*advance)(void *user, uint64_t value, eml_err *err);
    /* Exclusive use of the counter across every instance of the enclave
     * on this platform (waits for it), and its release: the runtime holds
     * it from reading the ledger to advancing the counter, so that two
     * instances cannot both charge against the same ledger. */
    eml_status (*lock)(void *user, eml_err *err);
    void (*unlock)(void *user);
} eml_counter_ops;

typedef struct eml_platform {
    uint8_t measurement[EML_MEASUREMENT_BYTES];
    uint8_t sign_sk[32];     /* platform report-signing key (Ed25519) */
    uint8_t seal_secret[32]; /* platform sealing secret */
    char policy[EML_POLICY_MAX]; /* the enclave's configuration, measured */
    int sim;                 /* 1: simulated platform */
    /* The sandbox's self-test (PROBE): tries the calls the sandbox
     * forbids and returns the bit mask (eml_probe_call) of those refused,
     * *attempted the mask of those tried.  NULL where there is no sandbox
     * (the `none` backend): PROBE is then refused, since the calls would
     * succeed.  Platform code, not the runtime's: trusted code makes no
     * raw system calls. */
    uint64_t (*probe)(uint64_t *attempted);
    eml_counter_ops counter; /* monotonic counter (read NULL: none) */
} eml_platform;

typedef struct eml_enclave eml_enclave;

/* Copies the platform secrets into locked memory; the caller wipes its
 * copy. */
EML_MUST_CHECK eml_status eml_enclave_new(const eml_platform *plat,
                                          eml_enclave **out);
void eml_enclave_free(eml_enclave *e); /* wipes every secret */
/* The bulk region (edl.h, EML_BULK_BYTES at p), shared with the host: the
 * runtime writes sealed mirror chunks there instead of into messages.
 * Optional; never read by the enclave. */
void eml_enclave_set_bulk(eml_enclave *e, uint8_t *p, size_t n);
/* Serves ecalls on fd until SHUTDOWN (EML_OK) or a channel error. */
EML_MUST_CHECK eml_status eml_enclave_serve(eml_enclave *e, int fd);

/* ==== measurement ==== */
/* measurement = SHA-256("enclaveml measurement v2" || u32 n ||
 *                         d_1 || ... || d_n || u32 len(policy) || policy)
 * where d_i are the SHA-256 digests of the n files mapped executable into
 * the enclave process, sorted ascending (bytewise), and u32 is
 * little-endian.  files need not be sorted; 1 <= n <= EML_MEASURE_FILES_MAX.
 * The policy names the backend ("backend=sim;heap_mb=2048"). */
#define EML_MEASURE_FILES_MAX 64
EML_MUST_CHECK eml_status eml_measure(uint8_t out[EML_MEASUREMENT_BYTES],
                                      const uint8_t (*files)[32],
                                      size_t n_files, const char *policy);

/* ==== grants ==== */
/* A grant releases an owner's 32-byte data key to one attested enclave,
 * for training whose model goes only to the recipients it names (version 2;
 * byte by byte in docs/enclave.md):
 *   "EMLGRNT1" | u16 version 2 | u16 flags (bit 0: max_epsilon, bit 1:
 *   cfg_sha256) | measurement[32] | enclave_x25519_pk[32] | key_id[16] |
 *   f64 max_epsilon | grant_id[16] | cfg_sha256[32] | u16 n_recipients
 *   (1..EML_GRANT_RECIPIENTS_MAX) | u16 0 | n x recipient_x25519_pk[32] |
 *   [extension, if flags has bit 3, 4, 5 or 6] | eph_pk[32] |
 *   wrapped_key[32] | tag[16]           (232 + 32 n bytes, + 48 with the
 *   extension)
 * extension (docs/evaluate.md; 48 bytes, a field without its flag zero):
 *   u32 max_evaluations (bit 3) | u32 max_queries (bit 6) |
 *   u64 min_examples (bit 4) | release_x25519_pk[32] (bit 5)
 * Grants without these flags have no extension and load as before.
 * wrap key = HKDF(X25519(eph_sk, enclave_pk), salt = grant_id,
 *                 "enclaveml grant v2"), AAD = the bytes before wrapped_key,
 * nonce all zero (the wrap key is fresh per grant).  Version 1 (no
 * recipients) is no longer accepted. */
#define EML_GRANT_VERSION 2
#define EML_GRANT_RECIPIENTS_MAX 16
#define EML_GRANT_FIXED_BYTES 232
#define EML_GRANT_EXT_BYTES 48
#define EML_GRANT_MAX_BYTES                                                    \
    (EML_GRANT_FIXED_BYTES + 32 * EML_GRANT_RECIPIENTS_MAX +                   \
     EML_GRANT_EXT_BYTES)

typedef struct eml_grant_info {
    uint8_t measurement[32];
    uint8_t enclave_pk[32];
    uint8_t key_id[16];
    uint8_t grant_id[16];
    int has_max_epsilon;
    double max_epsilon;
    int has_cfg_digest;          /* 1: only this cfg (SHA-256 of its text) */
    uint8_t cfg_digest[32];
    int allow_outsource;         /* 1: the run may send its linear layers'
                                    products to an outsourcing worker
                                    (docs/outsource.md) */
    unsigned n_recipients;       /* 1..EML_GRANT_RECIPIENTS_MAX, distinct */
    uint8_t recipients[EML_GRANT_RECIPIENTS_MAX][32];
    /* A test-data owner's limits on evaluations (docs/evaluate.md): at
     * most max_evaluations (>= 1) of any one model on this grant's data,
     * counted in the sealed spend ledger; an evaluation that uses it must
     * count at least min_examples (>= 1) examples in all. */
    int has_max_evaluations;
    uint32_t max_evaluations;
    int has_min_examples;
    uint64_t min_examples;
    /* A model owner's: after an evaluation, the enclave may re-encrypt the
     * model to this X25519 key (and to no other). */
    int has_release_to;
    uint8_t release_to[32];
    /* A model owner's brake on extraction (docs/evaluate.md, "Private
     * prediction"): at most max_queries (>= 1) predictions of this model
     * to any one recipient key, counted in the sealed spend ledger. */
    int has_max_queries;
    uint32_t max_queries;
} eml_grant_info;

/* Builds a grant into out (*out_len bytes, at most EML_GRANT_MAX_BYTES);
 * draws a fresh grant id. */
EML_MUST_CHECK eml_status eml_grant_build(uint8_t out[EML_GRANT_MAX_BYTES],
                                          size_t *out_len,
                                          const eml_grant_info *info,
                                          const uint8_t data_key[32]);
/* Parses without opening (anyone can read the public fields). */
EML_MUST_CHECK eml_status eml_grant_parse(const uint8_t *buf, size_t len,
                                          eml_grant_info *info, eml_err *err);
/* Opens a grant with the enclave's X25519 secret key; checks it was made
 * for this measurement and key.  data_key is wiped on failure. */
EML_MUST_CHECK eml_status eml_grant_open(const uint8_t *buf, size_t len,
                                         const uint8_t measurement[32],
                                         const uint8_t x25519_sk[32],
                                         const uint8_t x25519_pk[32],
                                         eml_grant_info *info,
                                         uint8_t data_key[32], eml_err *err);
/* 1 if pk is one of the grant's recipients. */
int eml_grant_allows_recipient(const eml_grant_info *info,
                               const uint8_t pk[32]);

/* ==== signed JSON reports ==== */
/* Signs a JSON object given without its closing brace ("{...") and returns
 * "{...,\"signature\":\"<hex>\"}\n" (malloc'd). */
EML_MUST_CHECK eml_status eml_report_sign(const char *body_open,
                                          const uint8_t sk[32], char **out,
                                          size_t *out_len);
/* Checks a signed report's signature with pk; on success *signed_len is the
 * length of the signed prefix (the object without its signature). */
EML_MUST_CHECK eml_status eml_report_verify(const char *text, size_t len,
                                            const uint8_t pk[32]);

/* A report member holding exactly n bytes of hex, into out; otherwise
 * EML_ERR_FORMAT naming the member. */
struct eml_flatjson;
EML_MUST_CHECK eml_status eml_report_hex(const struct eml_flatjson *j,
                                         const char *key, uint8_t *out,
                                         size_t n, eml_err *err);

/* ==== making attestation reports ==== */

/* What a report says and who signs it: the enclave's measurement and
 * keys, its platform's key pair (sign_sk borrowed), sim, the policy. */
typedef struct eml_report_keys {
    uint8_t measurement[32], x25519[32], ed25519[32], platform_pk[32];
    const uint8_t *sign_sk;
    int sim;
    const char *policy;
} eml_report_keys;

/* The signed attestation report binding nonce (docs/enclave.md; malloc'd
 * text): what the enclave's ATTEST answers, and what tests sign with keys
 * of their own. */
EML_MUST_CHECK eml_status eml_attestation_make(const eml_report_keys *k,
                                               const uint8_t *nonce,
                                               size_t nlen, char **out,
                                               size_t *out_len, eml_err *err);

/* ==== checking attestation reports ==== */
/* A platform key a report may be signed with, and the backend whose
 * reports it signs ("sim", "none"): the report's policy must name it. */
typedef struct eml_platform_key {
    uint8_t pk[32];
    const char *backend;
} eml_platform_key;

/* What a verified attestation report says. */
typedef struct eml_attestation {
    uint8_t measurement[32], x25519[32], ed25519[32];
    uint8_t nonce[EML_NONCE_MAX];
    size_t nonce_len;
    char policy[EML_POLICY_MAX];
    int sim;
    size_t key; /* which of the platform keys signed it */
} eml_attestation;

/* Checks an attestation report (docs/enclave.md): first the Ed25519
 * signature over its exact bytes, by one of the n platform keys; then,
 * strictly, its type and every field's form, that platform_key is the key
 * that signed, that the policy names that key's backend, and that
 * report_data binds the keys, the nonce and the policy.  Fills a.  Whether
 * the measurement, the nonce and a simulated platform are acceptable is
 * the caller's to decide.  Errors: EML_ERR_AUTH (no key's signature,
 * another platform key, a broken binding), EML_ERR_FORMAT (not such a
 * report).  Used by the host's verify and grant, and by enclaves that
 * attest each other. */
EML_MUST_CHECK eml_status eml_attestation_check(const char *text,
                                                size_t len,
                                                const eml_platform_key *keys,
                                                size_t n, eml_attestation *a,
                                                eml_err *err);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void eml_hex(char *out, const uint8_t *p, size_t n);
/* Parses exactly n bytes of hex (either case); -1 on anything else. */
int eml_unhex(uint8_t *out, size_t n, const char *s, size_t slen);

#ifdef __cplusplus
}
#endif
#endif
