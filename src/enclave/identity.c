/*
 * identity.c - the enclave's identity (an X25519 and an Ed25519 key pair,
 * made once and kept sealed to the measurement: INIT) and its attestation
 * report signed by the platform (ATTEST).
 *
 * Trusted code: the secret keys live in locked memory (e->sec); sealing
 * keys are derived, used and wiped.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"

/* ==== identity and sealing ==== */

#define SEAL_MAGIC "EMLSEAL1"
#define SEALED_BYTES (8 + 12 + 64 + 16)

static eml_status seal_key(eml_enclave *e, uint8_t key[32])
{
    static const char info[] = "enclaveml seal v1";
    return eml_hkdf_sha256(key, 32, e->sec->seal_secret, 32, e->measurement,
                           32, (const uint8_t *)info, sizeof(info) - 1);
}

static eml_status seal_identity(eml_enclave *e, uint8_t out[SEALED_BYTES])
{
    uint8_t key[32], aad[8 + 32];
    memcpy(out, SEAL_MAGIC, 8);
    memcpy(aad, SEAL_MAGIC, 8);
    memcpy(aad + 8, e->measurement, 32);
    eml_status st = eml_random(out + 8, 12);
    if (st == EML_OK) st = seal_key(e, key);
    if (st == EML_OK) /* x_sk and ed_sk are adjacent in secrets */
        st = eml_aes256gcm_seal(out + 20, e->sec->x_sk, 64, aad, sizeof(aad),
                                out + 8, key);
    eml_wipe(key, sizeof(key));
    return st;
}

static eml_status unseal_identity(eml_enclave *e, const uint8_t *blob,
                                  size_t len, eml_err *err)
{
    if (len != SEALED_BYTES || memcmp(blob, SEAL_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "sealed identity is malformed (%zu bytes)", len);
    uint8_t key[32], aad[8 + 32];
    memcpy(aad, SEAL_MAGIC, 8);
    memcpy(aad + 8, e->measurement, 32);
    eml_status st = seal_key(e, key);
    if (st == EML_OK)
        st = eml_aes256gcm_open(e->sec->x_sk, blob + 20, 64 + 16, aad,
                                sizeof(aad), blob + 8, key);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK)
        return eml_err_set(err, EML_ERR_AUTH,
                           "sealed identity does not authenticate for this "
                           "enclave measurement and platform");
    return EML_OK;
}

eml_status eml_rt_ecall_init(eml_enclave *e, eml_msg_any *req, eml_err *err)
{
    const uint8_t *blob = req->m_INIT.sealed_identity.p;
    size_t blen = req->m_INIT.sealed_identity.n;
    eml_status st;
    if (e->has_identity) /* a failed unseal would wipe the live identity */
        return eml_err_set(err, EML_ERR_INVALID, "enclave already initialised");
    uint8_t sealed[SEALED_BYTES];
    size_t sealed_len = 0;
    if (blen == 0) {
        st = eml_x25519_keygen(e->sec->x_sk, e->x_pk);
        if (st == EML_OK) st = eml_ed25519_keygen(e->sec->ed_sk, e->ed_pk);
        if (st == EML_OK) st = seal_identity(e, sealed);
        if (st != EML_OK)
            return eml_err_set(err, st, "cannot create the enclave identity");
        sealed_len = sizeof(sealed);
    } else {
        st = unseal_identity(e, blob, blen, err);
        if (st == EML_OK) st = eml_x25519_public(e->x_pk, e->sec->x_sk);
        if (st == EML_OK) st = eml_ed25519_public(e->ed_pk, e->sec->ed_sk);
        if (st != EML_OK) return eml_err_set(err, st, "cannot unseal");
    }
    e->has_identity = 1;
    eml_reply_init_ok a;
    memcpy(a.measurement, e->measurement, 32);
    memcpy(a.x25519_pk, e->x_pk, 32);
    memcpy(a.ed25519_pk, e->ed_pk, 32);
    a.policy.p = (const uint8_t *)e->policy;
    a.policy.n = strlen(e->policy);
    a.sealed_identity.p = sealed;
    a.sealed_identity.n = sealed_len;
    return eml_rt_reply(e, EML_MSG_INIT_OK, &a, sizeof(a), err);
}

/* ==== attestation ==== */

eml_status eml_rt_make_report(eml_enclave *e, const uint8_t *nonce,
                              size_t nlen, char **out, size_t *out_len,
                              eml_err *err)
{
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    eml_report_keys k;
    memcpy(k.measurement, e->measurement, 32);
    memcpy(k.x25519, e->x_pk, 32);
    memcpy(k.ed25519, e->ed_pk, 32);
    memcpy(k.platform_pk, e->platform_pk, 32);
    k.sign_sk = e->sec->sign_sk;
    k.sim = e->sim;
    k.policy = e->policy;
    return eml_attestation_make(&k, nonce, nlen, out, out_len, err);
}

eml_status eml_rt_ecall_attest(eml_enclave *e, eml_msg_any *req,
                               eml_err *err)
{
    char *report = NULL;
    size_t rlen = 0;
    eml_status st = eml_rt_make_report(e, req->m_ATTEST.nonce.p,
                                       req->m_ATTEST.nonce.n, &report, &rlen,
                                       err);
    if (st != EML_OK) return st;
    eml_reply_report a = {{(const uint8_t *)report, rlen}};
    st = eml_rt_reply(e, EML_MSG_REPORT, &a, sizeof(a), err);
    free(report);
    return st;
}
