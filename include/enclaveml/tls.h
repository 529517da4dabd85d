/*
 * tls.h - TLS that ends inside the enclave, its certificate carrying the
 * enclave's attestation report (RA-TLS; docs/serve.md).
 *
 * In the enclave:
 *     eml_tls_key *k; uint8_t spki[32];
 *     eml_tls_key_new(&k, spki, &err);          // the key, made here
 *     ... a report whose nonce is spki ...
 *     eml_tls_server *s;
 *     eml_tls_server_new(k, report, len, &s, &err);
 *     eml_tls_conn *c; eml_tls_conn_new(s, &c);
 *     eml_tls_conn_push(c, ciphertext, n);      // from the host
 *     eml_tls_conn_read(c, buf, cap, &got, &closed);  // plaintext
 *     eml_tls_conn_write(c, reply, len);
 *     eml_tls_conn_pull(c, out, cap);           // ciphertext, to the host
 *
 * At a client: eml_ratls_check on the server's certificate, then compare
 * the measurement.
 *
 * Trusted code: memory only.
 */
#ifndef ENCLAVEML_TLS_H
#define ENCLAVEML_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/enclave.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The certificate extension that holds the attestation report (an OID
 * under 2.25, the UUID arc, which needs no registration). */
#define EML_RATLS_OID "2.25.18742216501032209127462750586183972804"

typedef struct eml_tls_key eml_tls_key;
typedef struct eml_tls_server eml_tls_server;
typedef struct eml_tls_conn eml_tls_conn;

/* A fresh ECDSA P-256 key and the SHA-256 of its SubjectPublicKeyInfo
 * (DER): the nonce the enclave's report must carry. */
EML_MUST_CHECK eml_status eml_tls_key_new(eml_tls_key **out,
                                          uint8_t spki_sha256[32],
                                          eml_err *err);
void eml_tls_key_free(eml_tls_key *k); /* NULL is a no-op */

/* A TLS 1.3 server with key's self-signed certificate, the report (bytes
 * as signed) in its EML_RATLS_OID extension.  The server keeps its own
 * reference to the key. */
EML_MUST_CHECK eml_status eml_tls_server_new(eml_tls_key *key,
                                             const uint8_t *report,
                                             size_t report_len,
                                             eml_tls_server **out,
                                             eml_err *err);
/* The certificate (DER) and its key's SubjectPublicKeyInfo digest. */
const uint8_t *eml_tls_server_cert(const eml_tls_server *s, size_t *len);
const uint8_t *eml_tls_server_spki_sha256(const eml_tls_server *s);
void eml_tls_server_free(eml_tls_server *s); /* NULL is a no-op */

/* One connection over memory: ciphertext in (push) and out (pull). */
EML_MUST_CHECK eml_status eml_tls_conn_new(eml_tls_server *s,
                                           eml_tls_conn **out);
void eml_tls_conn_free(eml_tls_conn *c); /* NULL is a no-op */
EML_MUST_CHECK eml_status eml_tls_conn_push(eml_tls_conn *c,
                                            const uint8_t *p, size_t n);
/* Advances the handshake and decrypts what it can into buf: *got bytes
 * (0: it needs more ciphertext); *closed when the peer sent close_notify.
 * EML_ERR_AUTH: the handshake failed (its alert is in the output);
 * EML_ERR_FORMAT: a broken record.  Either way the connection is done. */
EML_MUST_CHECK eml_status eml_tls_conn_read(eml_tls_conn *c, uint8_t *buf,
                                            size_t cap, size_t *got,
                                            int *closed);
int eml_tls_conn_established(const eml_tls_conn *c);
/* Encrypts n bytes (after the handshake) into the output. */
EML_MUST_CHECK eml_status eml_tls_conn_write(eml_tls_conn *c,
                                             const uint8_t *p, size_t n);
/* A close_notify into the output. */
void eml_tls_conn_close(eml_tls_conn *c);
/* Ciphertext from the peer not yet read. */
size_t eml_tls_conn_buffered_in(const eml_tls_conn *c);
/* Ciphertext waiting for the peer, and taking up to cap bytes of it. */
size_t eml_tls_conn_pending(const eml_tls_conn *c);
size_t eml_tls_conn_pull(eml_tls_conn *c, uint8_t *out, size_t cap);

/* The report (malloc'd, NUL-terminated) in a certificate's extension and
 * the SHA-256 of its key's SubjectPublicKeyInfo; EML_ERR_FORMAT for a
 * certificate that does not parse or has no such extension, or two. */
EML_MUST_CHECK eml_status eml_ratls_report(const uint8_t *der, size_t len,
                                           uint8_t **report,
                                           size_t *report_len,
                                           uint8_t spki_sha256[32],
                                           eml_err *err);
/* The RA-TLS check of a server certificate: its report verifies
 * (eml_attestation_check with the platform keys) and its nonce is the
 * SHA-256 of the certificate's key.  The measurement, and whether a
 * simulated platform will do, are the caller's to check in *a. */
EML_MUST_CHECK eml_status eml_ratls_check(const uint8_t *der, size_t len,
                                          const eml_platform_key *keys,
                                          size_t n_keys, eml_attestation *a,
                                          uint8_t spki_sha256[32],
                                          eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
