/*
 * attest.c - measurement, grants and signed JSON reports.
 *
 * Shared by the trusted runtime (which opens grants and signs reports) and
 * the host tools (which build grants and verify reports): pure functions on
 * memory, no I/O.  Grants are parsed strictly at a fixed size; reports are
 * verified over their exact bytes before anything in them is believed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "enclaveml/flatjson.h"

/* ==== hex ==== */

void eml_hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int eml_unhex(uint8_t *out, size_t n, const char *s, size_t slen)
{
    if (slen != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ==== measurement ==== */

static int digest_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

eml_status eml_measure(uint8_t out[EML_MEASUREMENT_BYTES],
                       const uint8_t (*files)[32], size_t n_files,
                       const char *policy)
{
    static const char tag[] = "enclaveml measurement v2";
    size_t plen = strlen(policy);
    if (plen >= EML_POLICY_MAX || n_files == 0 ||
        n_files > EML_MEASURE_FILES_MAX)
        return EML_ERR_RANGE;
    uint8_t (*d)[32] = malloc(n_files * 32);
    eml_sha256_ctx *h = NULL;
    if (d == NULL) return EML_ERR_NOMEM;
    memcpy(d, files, n_files * 32);
    /* Sorted: where the loader put each file does not matter. */
    qsort(d, n_files, 32, digest_cmp);
    uint8_t u32[4];
    eml_status st = eml_sha256_new(&h);
    if (st == EML_OK) st = eml_sha256_update(h, tag, sizeof(tag) - 1);
    for (int i = 0; i < 4; i++) u32[i] = (uint8_t)(n_files >> (8 * i));
    if (st == EML_OK) st = eml_sha256_update(h, u32, 4);
    if (st == EML_OK) st = eml_sha256_update(h, d, n_files * 32);
    for (int i = 0; i < 4; i++) u32[i] = (uint8_t)(plen >> (8 * i));
    if (st == EML_OK) st = eml_sha256_update(h, u32, 4);
    if (st == EML_OK) st = eml_sha256_update(h, policy, plen);
    if (st == EML_OK) st = eml_sha256_final(h, out);
    eml_sha256_free(h);
    free(d);
    return st;
}

/* ==== grants ==== */

#define GRANT_MAGIC "EMLGRNT1"
#define OFF_FLAGS 10
#define OFF_MEAS 12
#define OFF_EPK 44
#define OFF_KEYID 76
#define OFF_MAXEPS 92
#define OFF_GID 100
#define OFF_CFG 116
#define OFF_NRCPT 148
#define OFF_RCPT 152
#define FLAG_MAXEPS 1u
#define FLAG_CFG 2u
#define FLAG_OUTSOURCE 4u /* older enclaves refuse it: unknown flag */
/* The extension's flags (after the recipients, 48 bytes when any is set):
 * u32 max_evaluations | u32 max_queries | u64 min_examples |
 * release_pk[32]. */
#define FLAG_MAXEVAL 8u
#define FLAG_MINEX 16u
#define FLAG_RELEASE 32u
#define FLAG_MAXQ 64u
#define FLAGS_EXT (FLAG_MAXEVAL | FLAG_MINEX | FLAG_RELEASE | FLAG_MAXQ)
#define FLAGS_ALL (FLAG_MAXEPS | FLAG_CFG | FLAG_OUTSOURCE | FLAGS_EXT)
/* After the recipients: eph_pk[32] | wrapped_key[32] | tag[16]. */
_Static_assert(OFF_RCPT + 32 + 32 + 16 == EML_GRANT_FIXED_BYTES,
               "grant layout");

static size_t grant_len(unsigned n, unsigned flags)
{
    return EML_GRANT_FIXED_BYTES + 32 * (size_t)n +
           ((flags & FLAGS_EXT) ? EML_GRANT_EXT_BYTES : 0);
}

/* Where eph_pk starts: after the recipients and the extension. */
static size_t grant_off_eph(unsigned n, unsigned flags)
{
    return grant_len(n, flags) - 32 - 32 - 16;
}

static unsigned grant_flags(const eml_grant_info *info)
{
    return (info->has_max_epsilon ? FLAG_MAXEPS : 0) |
           (info->has_cfg_digest ? FLAG_CFG : 0) |
           (info->allow_outsource ? FLAG_OUTSOURCE : 0) |
           (info->has_max_evaluations ? FLAG_MAXEVAL : 0) |
           (info->has_min_examples ? FLAG_MINEX : 0) |
           (info->has_release_to ? FLAG_RELEASE : 0) |
           (info->has_max_queries ? FLAG_MAXQ : 0);
}

static int all_zero32(const uint8_t p[32])
{
    uint8_t acc = 0;
    for (int i = 0; i < 32; i++) acc |= p[i];
    return acc == 0;
}

static eml_status wrap_key(uint8_t key[32], const uint8_t shared[32],
                           const uint8_t grant_id[16])
{
    static const char info[] = "enclaveml grant v2";
    return eml_hkdf_sha256(key, 32, shared, 32, grant_id, 16,
                           (const uint8_t *)info, sizeof(info) - 1);
}

int eml_grant_allows_recipient(const eml_grant_info *info,
                               const uint8_t pk[32])
{
    int found = 0;
    for (unsigned i = 0; i < info->n_recipients; i++)
        found |= eml_ct_equal(info->recipients[i], pk, 32);
    return found;
}

eml_status eml_grant_build(uint8_t out[EML_GRANT_MAX_BYTES], size_t *out_len,
                           const eml_grant_info *info,
                           const uint8_t data_key[32])
{
    *out_len = 0;
    unsigned n = info->n_recipients;
    if (n < 1 || n > EML_GRANT_RECIPIENTS_MAX) return EML_ERR_INVALID;
    unsigned flags = grant_flags(info);
    size_t len = grant_len(n, flags), off_eph = grant_off_eph(n, flags);
    uint8_t eph_sk[32], shared[32], key[32];
    static const uint8_t zero_nonce[12];
    memset(out, 0, EML_GRANT_MAX_BYTES);
    memcpy(out, GRANT_MAGIC, 8);
    eml_put_le16(out + 8, EML_GRANT_VERSION);
    eml_put_le16(out + OFF_FLAGS, (uint16_t)flags);
    memcpy(out + OFF_MEAS, info->measurement, 32);
    memcpy(out + OFF_EPK, info->enclave_pk, 32);
    memcpy(out + OFF_KEYID, info->key_id, 16);
    double eps = info->has_max_epsilon ? info->max_epsilon : 0.0;
    uint64_t bits;
    memcpy(&bits, &eps, 8);
    eml_put_le64(out + OFF_MAXEPS, bits);
    if (info->has_cfg_digest) memcpy(out + OFF_CFG, info->cfg_digest, 32);
    eml_put_le16(out + OFF_NRCPT, (uint16_t)n);
    for (unsigned i = 0; i < n; i++)
        memcpy(out + OFF_RCPT + 32 * i, info->recipients[i], 32);
    if (flags & FLAGS_EXT) {
        uint8_t *x = out + OFF_RCPT + 32 * (size_t)n;
        if (info->has_max_evaluations)
            eml_put_le32(x, info->max_evaluations);
        if (info->has_max_queries) eml_put_le32(x + 4, info->max_queries);
        if (info->has_min_examples) eml_put_le64(x + 8, info->min_examples);
        if (info->has_release_to) memcpy(x + 16, info->release_to, 32);
    }
    eml_status st = eml_random(out + OFF_GID, 16);
    if (st == EML_OK) st = eml_x25519_keygen(eph_sk, out + off_eph);
    if (st == EML_OK) st = eml_x25519_shared(shared, eph_sk, info->enclave_pk);
    if (st == EML_OK) st = wrap_key(key, shared, out + OFF_GID);
    if (st == EML_OK)
        st = eml_aes256gcm_seal(out + off_eph + 32, data_key, 32, out,
                                off_eph + 32, zero_nonce, key);
    eml_wipe(eph_sk, sizeof(eph_sk));
    eml_wipe(shared, sizeof(shared));
    eml_wipe(key, sizeof(key));
    if (st != EML_OK) {
        eml_wipe(out, EML_GRANT_MAX_BYTES);
        return st;
    }
    /* The parser must accept what we build (distinct recipients, flags). */
    eml_grant_info check;
    if (eml_grant_parse(out, len, &check, NULL) != EML_OK) {
        eml_wipe(out, EML_GRANT_MAX_BYTES);
        return EML_ERR_INVALID;
    }
    *out_len = len;
    return EML_OK;
}

eml_status eml_grant_parse(const uint8_t *buf, size_t len,
                           eml_grant_info *info, eml_err *err)
{
    memset(info, 0, sizeof(*info));
    if (len < 12 || memcmp(buf, GRANT_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "not a grant (bad magic)");
    unsigned version = eml_get_le16(buf + 8);
    if (version == 1)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "grant version 1 is no longer supported (it "
                           "names no recipient): make a new grant");
    if (version != EML_GRANT_VERSION)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "grant version %u is not supported", version);
    if (len < EML_GRANT_FIXED_BYTES + 32)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant is %zu bytes, too short", len);
    unsigned flags = eml_get_le16(buf + OFF_FLAGS);
    if (flags & ~FLAGS_ALL)
        return eml_err_set(err, EML_ERR_FORMAT, "grant has unknown flags");
    unsigned n = eml_get_le16(buf + OFF_NRCPT);
    if (n < 1 || n > EML_GRANT_RECIPIENTS_MAX)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant names %u recipients (1..%d allowed)", n,
                           EML_GRANT_RECIPIENTS_MAX);
    if (len != grant_len(n, flags))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant is %zu bytes, expected %zu for %u "
                           "recipient(s)%s",
                           len, grant_len(n, flags), n,
                           (flags & FLAGS_EXT) ? " and its limits" : "");
    if (eml_get_le16(buf + OFF_NRCPT + 2) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "grant has reserved bits set");
    memcpy(info->measurement, buf + OFF_MEAS, 32);
    memcpy(info->enclave_pk, buf + OFF_EPK, 32);
    memcpy(info->key_id, buf + OFF_KEYID, 16);
    memcpy(info->grant_id, buf + OFF_GID, 16);
    info->has_max_epsilon = (flags & FLAG_MAXEPS) != 0;
    info->has_cfg_digest = (flags & FLAG_CFG) != 0;
    info->allow_outsource = (flags & FLAG_OUTSOURCE) != 0;
    uint64_t bits = eml_get_le64(buf + OFF_MAXEPS);
    memcpy(&info->max_epsilon, &bits, 8);
    if (info->has_max_epsilon &&
        (!isfinite(info->max_epsilon) || info->max_epsilon <= 0))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant's max_epsilon is not a positive number");
    if (!info->has_max_epsilon && bits != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant has a max_epsilon but no flag for it");
    static const uint8_t zero[32];
    memcpy(info->cfg_digest, buf + OFF_CFG, 32);
    if (!info->has_cfg_digest && memcmp(info->cfg_digest, zero, 32) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "grant has a cfg digest but no flag for it");
    info->n_recipients = n;
    for (unsigned i = 0; i < n; i++) {
        memcpy(info->recipients[i], buf + OFF_RCPT + 32 * i, 32);
        for (unsigned j = 0; j < i; j++)
            if (memcmp(info->recipients[j], info->recipients[i], 32) == 0)
                return eml_err_set(err, EML_ERR_FORMAT,
                                   "grant names recipient %u twice", j + 1);
    }
    if (flags & FLAGS_EXT) {
        const uint8_t *x = buf + OFF_RCPT + 32 * (size_t)n;
        info->has_max_evaluations = (flags & FLAG_MAXEVAL) != 0;
        info->has_min_examples = (flags & FLAG_MINEX) != 0;
        info->has_release_to = (flags & FLAG_RELEASE) != 0;
        info->has_max_queries = (flags & FLAG_MAXQ) != 0;
        info->max_evaluations = eml_get_le32(x);
        info->max_queries = eml_get_le32(x + 4);
        info->min_examples = eml_get_le64(x + 8);
        memcpy(info->release_to, x + 16, 32);
        if (info->has_max_queries != (info->max_queries != 0))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "grant's max_queries is %s",
                               info->has_max_queries
                                   ? "0 (at least 1 allowed)"
                                   : "set but has no flag");
        if (info->has_max_evaluations != (info->max_evaluations != 0))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "grant's max_evaluations is %s",
                               info->has_max_evaluations
                                   ? "0 (at least 1 allowed)"
                                   : "set but has no flag");
        if (info->has_min_examples != (info->min_examples != 0))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "grant's min_examples is %s",
                               info->has_min_examples
                                   ? "0 (at least 1 allowed)"
                                   : "set but has no flag");
        if (info->has_release_to != !all_zero32(info->release_to))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "grant's release key is %s",
                               info->has_release_to ? "all zero"
                                                    : "set but has no flag");
    }
    return EML_OK;
}

eml_status eml_grant_open(const uint8_t *buf, size_t len,
                          const uint8_t measurement[32],
                          const uint8_t x25519_sk[32],
                          const uint8_t x25519_pk[32], eml_grant_info *info,
                          uint8_t data_key[32], eml_err *err)
{
    static const uint8_t zero_nonce[12];
    memset(data_key, 0, 32);
    eml_status st = eml_grant_parse(buf, len, info, err);
    if (st != EML_OK) return st;
    if (!eml_ct_equal(info->measurement, measurement, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant was made for another enclave measurement");
    if (!eml_ct_equal(info->enclave_pk, x25519_pk, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant was made for another enclave key (a grant "
                           "from an earlier identity, or a foreign one)");
    size_t off_eph =
        grant_off_eph(info->n_recipients, grant_flags(info));
    uint8_t shared[32], key[32];
    st = eml_x25519_shared(shared, x25519_sk, buf + off_eph);
    if (st == EML_OK) st = wrap_key(key, shared, buf + OFF_GID);
    if (st == EML_OK)
        st = eml_aes256gcm_open(data_key, buf + off_eph + 32, 48, buf,
                                off_eph + 32, zero_nonce, key);
    eml_wipe(shared, sizeof(shared));
    eml_wipe(key, sizeof(key));
    if (st != EML_OK) {
        eml_wipe(data_key, 32);
        return eml_err_set(err, EML_ERR_AUTH,
                           "grant does not authenticate (tampered or forged)");
    }
    return EML_OK;
}

/* ==== attestation reports ==== */

eml_status eml_attestation_make(const eml_report_keys *k,
                                const uint8_t *nonce, size_t nlen,
                                char **out, size_t *out_len, eml_err *err)
{
    if (nlen > EML_NONCE_MAX)
        return eml_err_set(err, EML_ERR_RANGE, "a nonce over %d bytes",
                           EML_NONCE_MAX);
    size_t plen = strlen(k->policy);
    if (plen >= EML_POLICY_MAX)
        return eml_err_set(err, EML_ERR_RANGE, "a policy too long");
    /* report_data = SHA-256(x25519 pk || ed25519 pk || nonce || policy) */
    uint8_t rd_in[32 + 32 + EML_NONCE_MAX + EML_POLICY_MAX], rd[32];
    size_t n = 0;
    memcpy(rd_in + n, k->x25519, 32);
    n += 32;
    memcpy(rd_in + n, k->ed25519, 32);
    n += 32;
    memcpy(rd_in + n, nonce, nlen);
    n += nlen;
    memcpy(rd_in + n, k->policy, plen);
    n += plen;
    eml_status st = eml_sha256(rd, rd_in, n);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    char meas[65], xh[65], eh[65], nh[2 * EML_NONCE_MAX + 1], rdh[65], ph[65];
    eml_hex(meas, k->measurement, 32);
    eml_hex(xh, k->x25519, 32);
    eml_hex(eh, k->ed25519, 32);
    eml_hex(nh, nonce, nlen);
    eml_hex(rdh, rd, 32);
    eml_hex(ph, k->platform_pk, 32);
    /* The policy is our own configuration string: letters, digits, '=',
     * ';', '.', '_' only (checked at start), so it needs no escaping. */
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"type\":\"enclaveml-attestation\",\"version\":1,"
             "\"sim\":%s,\"measurement\":\"%s\",\"x25519\":\"%s\","
             "\"ed25519\":\"%s\",\"nonce\":\"%s\",\"policy\":\"%s\","
             "\"report_data\":\"%s\",\"platform_key\":\"%s\"",
             k->sim ? "true" : "false", meas, xh, eh, nh, k->policy, rdh, ph);
    st = eml_report_sign(body, k->sign_sk, out, out_len);
    return st == EML_OK ? EML_OK
                        : eml_err_set(err, st, "cannot sign the report");
}

/* ==== signed reports ==== */

static const char sig_key[] = ",\"signature\":\"";

eml_status eml_report_sign(const char *body_open, const uint8_t sk[32],
                           char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    size_t blen = strlen(body_open);
    if (blen == 0 || body_open[0] != '{') return EML_ERR_INVALID;
    /* The signed message is the body closed with '}'. */
    char *msg = malloc(blen + 2);
    if (msg == NULL) return EML_ERR_NOMEM;
    memcpy(msg, body_open, blen);
    msg[blen] = '}';
    msg[blen + 1] = '\0';
    uint8_t sig[64];
    eml_status st = eml_ed25519_sign(sig, msg, blen + 1, sk);
    free(msg);
    if (st != EML_OK) return st;
    size_t total = blen + sizeof(sig_key) - 1 + 128 + 3;
    char *r = malloc(total + 1);
    if (r == NULL) return EML_ERR_NOMEM;
    char hex[129];
    eml_hex(hex, sig, 64);
    snprintf(r, total + 1, "%s%s%s\"}\n", body_open, sig_key, hex);
    *out = r;
    *out_len = total;
    return EML_OK;
}

eml_status eml_report_verify(const char *text, size_t len,
                             const uint8_t pk[32])
{
    /* Suffix: ,"signature":"<128 hex>"}  and an optional newline. */
    size_t n = len;
    if (n > 0 && text[n - 1] == '\n') n--;
    size_t tail = sizeof(sig_key) - 1 + 128 + 2;
    if (n < tail + 2 || text[0] != '{') return EML_ERR_FORMAT;
    size_t body = n - tail;
    if (memcmp(text + body, sig_key, sizeof(sig_key) - 1) != 0 ||
        text[n - 2] != '"' || text[n - 1] != '}')
        return EML_ERR_FORMAT;
    uint8_t sig[64];
    if (eml_unhex(sig, 64, text + body + sizeof(sig_key) - 1, 128) != 0)
        return EML_ERR_FORMAT;
    for (size_t i = 0; i < body; i++)
        if (text[i] == '\0') return EML_ERR_FORMAT;
    char *msg = malloc(body + 1);
    if (msg == NULL) return EML_ERR_NOMEM;
    memcpy(msg, text, body);
    msg[body] = '}';
    eml_status st = eml_ed25519_verify(sig, msg, body + 1, pk);
    free(msg);
    return st == EML_OK ? EML_OK : EML_ERR_AUTH;
}

/* ==== checking attestation reports ==== */

eml_status eml_report_hex(const eml_flatjson *j, const char *key,
                          uint8_t *out, size_t n, eml_err *err)
{
    const char *s = eml_flatjson_str(j, key);
    if (s == NULL || eml_unhex(out, n, s, strlen(s)) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "field \"%s\" is missing or not %zu bytes of hex",
                           key, n);
    return EML_OK;
}

eml_status eml_attestation_check(const char *text, size_t len,
                                 const eml_platform_key *keys, size_t n,
                                 eml_attestation *a, eml_err *err)
{
    memset(a, 0, sizeof(*a));
    /* The signature first: nothing in the text is believed before. */
    eml_status st = EML_ERR_AUTH;
    for (size_t k = 0; k < n && st == EML_ERR_AUTH; k++) {
        st = eml_report_verify(text, len, keys[k].pk);
        a->key = k;
    }
    if (st == EML_ERR_AUTH)
        return eml_err_set(err, st,
                           "platform signature does not verify (forged or "
                           "altered report, or another platform)");
    if (st != EML_OK)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "not a signed enclaveml report");
    const eml_platform_key *key = &keys[a->key];
    eml_flatjson j;
    st = eml_flatjson_parse(text, len, &j, err);
    if (st != EML_OK) return st;
    const char *type = eml_flatjson_str(&j, "type");
    const char *policy = eml_flatjson_str(&j, "policy");
    const char *nonce = eml_flatjson_str(&j, "nonce");
    uint8_t rd[32], ppk[32], want[32];
    size_t plen = policy != NULL ? strlen(policy) : 0, blen;
    if (type == NULL || strcmp(type, "enclaveml-attestation") != 0) {
        st = eml_err_set(err, EML_ERR_FORMAT, "not an attestation report");
        goto out;
    }
    if (eml_flatjson_bool(&j, "sim", &a->sim) != 0 || policy == NULL ||
        nonce == NULL) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "report lacks sim, policy or nonce");
        goto out;
    }
    st = eml_report_hex(&j, "measurement", a->measurement, 32, err);
    if (st == EML_OK) st = eml_report_hex(&j, "x25519", a->x25519, 32, err);
    if (st == EML_OK) st = eml_report_hex(&j, "ed25519", a->ed25519, 32, err);
    if (st == EML_OK) st = eml_report_hex(&j, "report_data", rd, 32, err);
    if (st == EML_OK) st = eml_report_hex(&j, "platform_key", ppk, 32, err);
    if (st != EML_OK) goto out;
    /* The policy names the backend; it must be the one whose key signed. */
    blen = strlen(key->backend);
    if (plen >= EML_POLICY_MAX || strncmp(policy, "backend=", 8) != 0 ||
        strncmp(policy + 8, key->backend, blen) != 0 || policy[8 + blen] != ';') {
        st = eml_err_set(err, EML_ERR_AUTH,
                         "policy '%.64s' is not a %s enclave's", policy,
                         key->backend);
        goto out;
    }
    memcpy(a->policy, policy, plen + 1);
    if (!eml_ct_equal(ppk, key->pk, 32)) {
        st = eml_err_set(err, EML_ERR_AUTH, "signed by another platform key");
        goto out;
    }
    size_t nl = strlen(nonce);
    if (nl % 2 != 0 || nl / 2 > EML_NONCE_MAX ||
        eml_unhex(a->nonce, nl / 2, nonce, nl) != 0) {
        st = eml_err_set(err, EML_ERR_FORMAT, "malformed nonce");
        goto out;
    }
    a->nonce_len = nl / 2;
    /* report_data = SHA-256(x25519 || ed25519 || nonce || policy) */
    uint8_t in[64 + EML_NONCE_MAX + EML_POLICY_MAX];
    memcpy(in, a->x25519, 32);
    memcpy(in + 32, a->ed25519, 32);
    memcpy(in + 64, a->nonce, a->nonce_len);
    memcpy(in + 64 + a->nonce_len, policy, plen);
    st = eml_sha256(want, in, 64 + a->nonce_len + plen);
    if (st == EML_OK && !eml_ct_equal(want, rd, 32))
        st = eml_err_set(err, EML_ERR_AUTH,
                         "report_data does not bind its keys, nonce and "
                         "policy");
out:
    eml_flatjson_free(&j);
    if (st != EML_OK) {
        size_t k = a->key;
        memset(a, 0, sizeof(*a));
        a->key = k;
    }
    return st;
}
