/*
 * ledger.c - the sealed spend ledger (see ledger.h): per budgeted grant,
 * the epsilon spent so far.
 *
 * Trusted code: memory only, no I/O.  The sealed bytes come from the host
 * and are authenticated before anything in them is parsed; the plaintext
 * is parsed strictly all the same (sorted, distinct, finite entries).
 */
#include "enclaveml/ledger.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"

#define LEDGER_MAGIC "EMLLEDG1"
#define HDR 12        /* magic | u16 version | u16 0 */
#define NONCE 12
#define TAG 16
#define PLAIN_HDR 16  /* u64 counter | u32 n | u32 0 */

void eml_ledger_init(eml_ledger *l) { memset(l, 0, sizeof(*l)); }

void eml_ledger_free(eml_ledger *l)
{
    free(l->e);
    memset(l, 0, sizeof(*l));
}

eml_status eml_ledger_key(uint8_t key[32], const uint8_t seal_secret[32],
                          const uint8_t measurement[32])
{
    static const char info[] = "enclaveml ledger v1";
    return eml_hkdf_sha256(key, 32, seal_secret, 32, measurement, 32,
                           (const uint8_t *)info, sizeof(info) - 1);
}

static eml_status reserve(eml_ledger *l, size_t n)
{
    if (n <= l->cap) return EML_OK;
    if (n > EML_LEDGER_MAX_ENTRIES) return EML_ERR_RANGE;
    size_t cap = l->cap ? l->cap : 16;
    while (cap < n) cap *= 2;
    if (cap > EML_LEDGER_MAX_ENTRIES) cap = EML_LEDGER_MAX_ENTRIES;
    eml_ledger_entry *e = realloc(l->e, cap * sizeof(*e));
    if (e == NULL) return EML_ERR_NOMEM;
    l->e = e;
    l->cap = cap;
    return EML_OK;
}

eml_status eml_ledger_parse(const uint8_t *p, size_t len, eml_ledger *l,
                            eml_err *err)
{
    eml_ledger_free(l);
    if (len < PLAIN_HDR)
        return eml_err_set(err, EML_ERR_TRUNCATED, "ledger is truncated");
    uint64_t counter = eml_get_le64(p);
    uint32_t n = eml_get_le32(p + 8);
    if (eml_get_le32(p + 12) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "ledger has reserved bits set");
    if (n > EML_LEDGER_MAX_ENTRIES)
        return eml_err_set(err, EML_ERR_RANGE, "ledger has %u entries (at most "
                           "%d)", n, EML_LEDGER_MAX_ENTRIES);
    if (len != PLAIN_HDR + (size_t)n * EML_LEDGER_ENTRY_BYTES)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "ledger of %u entries is %zu bytes", n, len);
    eml_status st = reserve(l, n);
    if (st != EML_OK) return eml_err_set(err, st, "ledger: out of memory");
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *q = p + PLAIN_HDR + (size_t)i * EML_LEDGER_ENTRY_BYTES;
        eml_ledger_entry *e = &l->e[i];
        memcpy(e->grant_id, q, 16);
        uint64_t bits = eml_get_le64(q + 16);
        memcpy(&e->spent, &bits, 8);
        if (!isfinite(e->spent) || e->spent < 0) {
            eml_ledger_free(l);
            return eml_err_set(err, EML_ERR_FORMAT,
                               "ledger entry %u spent is not a finite, "
                               "non-negative number", i);
        }
        if (i > 0 && memcmp(l->e[i - 1].grant_id, e->grant_id, 16) >= 0) {
            eml_ledger_free(l);
            return eml_err_set(err, EML_ERR_FORMAT,
                               "ledger entries are not sorted and distinct");
        }
    }
    l->n = n;
    l->counter = counter;
    return EML_OK;
}

eml_status eml_ledger_open(const uint8_t *blob, size_t len,
                           const uint8_t key[32], eml_ledger *l, eml_err *err)
{
    if (len < HDR + NONCE + TAG || memcmp(blob, LEDGER_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "not a sealed ledger");
    unsigned version = eml_get_le16(blob + 8);
    if (version != EML_LEDGER_VERSION || eml_get_le16(blob + 10) != 0)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "ledger version %u is not supported", version);
    if (len > EML_LEDGER_MAX_BYTES)
        return eml_err_set(err, EML_ERR_RANGE, "sealed ledger is too large");
    size_t plen = len - HDR - NONCE - TAG;
    uint8_t *pt = malloc(plen ? plen : 1);
    if (pt == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = eml_aes256gcm_open(pt, blob + HDR + NONCE, plen + TAG,
                                       blob, HDR, blob + HDR, key);
    if (st != EML_OK) {
        free(pt);
        return eml_err_set(err, EML_ERR_AUTH,
                           "the sealed ledger does not authenticate for this "
                           "enclave measurement and platform");
    }
    st = eml_ledger_parse(pt, plen, l, err);
    free(pt);
    return st;
}

eml_status eml_ledger_seal(const eml_ledger *l, const uint8_t key[32],
                           uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (l->n > EML_LEDGER_MAX_ENTRIES) return EML_ERR_RANGE;
    size_t plen = PLAIN_HDR + l->n * EML_LEDGER_ENTRY_BYTES;
    size_t len = HDR + NONCE + plen + TAG;
    uint8_t *pt = malloc(plen), *b = malloc(len);
    if (pt == NULL || b == NULL) {
        free(pt);
        free(b);
        return EML_ERR_NOMEM;
    }
    eml_put_le64(pt, l->counter);
    eml_put_le32(pt + 8, (uint32_t)l->n);
    eml_put_le32(pt + 12, 0);
    for (size_t i = 0; i < l->n; i++) {
        uint8_t *q = pt + PLAIN_HDR + i * EML_LEDGER_ENTRY_BYTES;
        uint64_t bits;
        memcpy(q, l->e[i].grant_id, 16);
        memcpy(&bits, &l->e[i].spent, 8);
        eml_put_le64(q + 16, bits);
    }
    memcpy(b, LEDGER_MAGIC, 8);
    eml_put_le16(b + 8, EML_LEDGER_VERSION);
    eml_put_le16(b + 10, 0);
    eml_status st = eml_random(b + HDR, NONCE);
    if (st == EML_OK)
        st = eml_aes256gcm_seal(b + HDR + NONCE, pt, plen, b, HDR, b + HDR,
                                key);
    free(pt);
    if (st != EML_OK) {
        free(b);
        return st;
    }
    *out = b;
    *out_len = len;
    return EML_OK;
}

/* Index of the first entry whose id is >= grant_id. */
static size_t lower_bound(const eml_ledger *l, const uint8_t grant_id[16])
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(l->e[mid].grant_id, grant_id, 16) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

double eml_ledger_spent(const eml_ledger *l, const uint8_t grant_id[16])
{
    size_t i = lower_bound(l, grant_id);
    if (i < l->n && memcmp(l->e[i].grant_id, grant_id, 16) == 0)
        return l->e[i].spent;
    return 0.0;
}

eml_status eml_ledger_charge(eml_ledger *l, const uint8_t grant_id[16],
                             double eps)
{
    if (!isfinite(eps) || eps < 0) return EML_ERR_INVALID;
    size_t i = lower_bound(l, grant_id);
    if (i < l->n && memcmp(l->e[i].grant_id, grant_id, 16) == 0) {
        double s = l->e[i].spent + eps;
        if (!isfinite(s)) return EML_ERR_RANGE;
        l->e[i].spent = s;
        return EML_OK;
    }
    eml_status st = reserve(l, l->n + 1);
    if (st != EML_OK) return st;
    memmove(&l->e[i + 1], &l->e[i], (l->n - i) * sizeof(l->e[0]));
    memcpy(l->e[i].grant_id, grant_id, 16);
    l->e[i].spent = eps;
    l->n++;
    return EML_OK;
}
