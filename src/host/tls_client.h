/*
 * tls_client.h - a client's RA-TLS connection to an attested server
 * (tls_client.c, docs/serve.md): TLS 1.3, the server's certificate checked
 * by the attestation report it carries before a byte is sent, and plain
 * HTTP/1.1 answers read from it.  Host side.
 */
#ifndef EML_HOST_TLS_CLIENT_H
#define EML_HOST_TLS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/enclave.h"
#include "enclaveml/http.h"
#include "enclaveml/status.h"

/* Which platforms a verifier accepts: bit 0 a simulated one (--allow-sim),
 * bit 1 also the in-process `none` backend's key (--allow-none). */
#define EML_ALLOW_SIM 1
#define EML_ALLOW_NONE 2

/* The platform keys a verifier trusts for `allow` (from the platform
 * home, provisioned if need be): keys[0] sim's, keys[1] none's. */
EML_MUST_CHECK eml_status eml_verifier_keys(int allow,
                                            eml_platform_key keys[2],
                                            size_t *n, eml_err *err);

/* What the check of a server found. */
typedef struct eml_ratls_info {
    uint8_t measurement[32];
    uint8_t spki_sha256[32]; /* its TLS key's pin */
    int sim;
} eml_ratls_info;

typedef struct eml_tls_client eml_tls_client;

/* Connects to HOST:PORT (or tcp:HOST:PORT), makes the TLS handshake and
 * checks the certificate's report: the platform (allow), the measurement,
 * the binding to the certificate's key.  Any failure closes and says why.
 * timeout_ms bounds each read and write. */
EML_MUST_CHECK eml_status eml_tls_client_open(const char *addr,
                                              const uint8_t measurement[32],
                                              int allow, int timeout_ms,
                                              eml_tls_client **out,
                                              eml_ratls_info *info,
                                              eml_err *err);
void eml_tls_client_close(eml_tls_client *c); /* NULL is a no-op */
EML_MUST_CHECK eml_status eml_tls_client_write(eml_tls_client *c,
                                               const void *p, size_t n,
                                               eml_err *err);
/* One HTTP/1.1 answer (with Content-Length) into b: its status, and where
 * its body lies in b. */
EML_MUST_CHECK eml_status eml_tls_client_response(eml_tls_client *c,
                                                  eml_http_buf *b,
                                                  int *status,
                                                  size_t *body_off,
                                                  size_t *body_len,
                                                  eml_err *err);
#endif
