/*
 * output.c - what leaves the enclave as a file (runtime.h): plaintext
 * sealed in a container to a recipient's X25519 key and streamed out
 * through OUTPUT ocalls chunk by chunk, its SHA-256 taken over exactly
 * the bytes sent (a trained model, a released model, predictions); and
 * the snprintf that signed reports' bodies are written with.
 *
 * Trusted code: only ciphertext crosses; the caller wipes the plaintext.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"

/* Encrypts the weights to the recipient and streams them out; file_hash
 * gets the SHA-256 of the container exactly as sent (the model file). */
eml_status eml_rt_send_model(eml_enclave *e, const uint8_t *pt, size_t len,
                             const uint8_t recipient[32],
                             uint8_t file_hash[32], eml_err *err)
{
    return eml_rt_send_sealed(e, EML_CONTAINER_ROLE_MODEL, pt, len,
                              recipient, file_hash, err);
}

eml_status eml_rt_send_sealed(eml_enclave *e, eml_container_role role,
                              const uint8_t *pt, size_t len,
                              const uint8_t recipient[32],
                              uint8_t file_hash[32], eml_err *err)
{
    eml_cw *w = NULL;
    eml_sha256_ctx *fh = NULL;
    uint8_t header[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    eml_container_meta meta = {role, {0}};
    eml_status st = eml_sha256_new(&fh);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    st = eml_cw_new(EML_CONTAINER_RECIPIENT, recipient, 0, &meta, &w, header,
                    &hlen, err);
    if (st == EML_OK) st = eml_sha256_update(fh, header, hlen);
    if (st != EML_OK) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return st;
    }
    size_t cs = eml_cw_chunk_size(w);
    uint8_t *ct = malloc(cs + EML_CONTAINER_TAG_BYTES);
    if (ct == NULL) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    }
    eml_ocall_output q = {0, {header, hlen}, 0};
    st = eml_rt_ocall(e, EML_MSG_OUTPUT, &q, sizeof(q), NULL, 0, err);
    size_t off = 0;
    while (st == EML_OK) {
        size_t n = len - off < cs ? len - off : cs;
        int final = off + n == len;
        size_t cl = 0;
        st = eml_cw_seal(w, pt + off, n, final, ct, &cl, err);
        if (st == EML_OK) st = eml_sha256_update(fh, ct, cl);
        if (st != EML_OK) break;
        eml_ocall_output c = {0, {ct, cl}, final};
        st = eml_rt_ocall(e, EML_MSG_OUTPUT, &c, sizeof(c), NULL, 0, err);
        off += n;
        if (final) break;
    }
    if (st == EML_OK) st = eml_sha256_final(fh, file_hash);
    free(ct);
    eml_cw_free(w);
    eml_sha256_free(fh);
    return st;
}

/* runtime.h: a report body's snprintf. */
void eml_rt_append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
{
    if (*k + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *k, cap - *k, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    *k += (size_t)n;
    if (*k >= cap) *k = cap - 1;
}
