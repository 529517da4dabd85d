/*
 * tls.c - TLS that ends inside the enclave, with the enclave's attestation
 * in its certificate (RA-TLS; include/enclaveml/tls.h, docs/serve.md).
 *
 * The enclave makes its TLS key (ECDSA P-256) in its own memory.  Its
 * certificate is self-signed and carries, in a non-critical extension
 * (EML_RATLS_OID), the enclave's attestation report, whose nonce is the
 * SHA-256 of the certificate's SubjectPublicKeyInfo (DER).  A client that
 * checks the report's signature, the measurement and this binding
 * (eml_ratls_check) knows that the key at the other end of its TLS session
 * lives in that enclave; the certificate's names and dates mean nothing.
 *
 * Connections run over memory BIOs: the host relays ciphertext in and out
 * and never sees a key or a plaintext byte; nothing here touches a socket.
 * TLS 1.3 only.
 *
 * Trusted code: memory only.  OpenSSL's error queue is cleared after every
 * failure, so no detail of one outlives it.
 */
#include "enclaveml/tls.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "enclaveml/crypto.h"

struct eml_tls_server {
    SSL_CTX *ctx;
    uint8_t *cert_der;
    size_t cert_len;
    uint8_t spki_sha256[32];
};

struct eml_tls_conn {
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
    int failed;
};

static eml_status fail(eml_err *err, eml_status st, const char *what)
{
    ERR_clear_error();
    return eml_err_set(err, st, "TLS: %s", what);
}

/* SHA-256 of pk's SubjectPublicKeyInfo. */
static eml_status spki_digest(EVP_PKEY *pk, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pk, &der);
    if (n <= 0) return EML_ERR_BACKEND;
    eml_status st = eml_sha256(out, der, (size_t)n);
    OPENSSL_free(der);
    return st;
}

eml_status eml_tls_key_new(eml_tls_key **out, uint8_t spki_sha256[32],
                           eml_err *err)
{
    *out = NULL;
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    if (pk == NULL) return fail(err, EML_ERR_BACKEND, "no key was made");
    if (spki_digest(pk, spki_sha256) != EML_OK) {
        EVP_PKEY_free(pk);
        return fail(err, EML_ERR_BACKEND, "the key's digest failed");
    }
    *out = (eml_tls_key *)pk;
    return EML_OK;
}

void eml_tls_key_free(eml_tls_key *k) { EVP_PKEY_free((EVP_PKEY *)k); }

/* The self-signed certificate of pk with the report in its extension. */
static X509 *make_cert(EVP_PKEY *pk, const uint8_t *report, size_t len)
{
    X509 *x = X509_new();
    ASN1_OBJECT *oid = OBJ_txt2obj(EML_RATLS_OID, 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    uint64_t serial = 0;
    int ok = x != NULL && oid != NULL && os != NULL && len <= INT_MAX &&
             eml_random(&serial, sizeof(serial)) == EML_OK &&
             ASN1_OCTET_STRING_set(os, report, (int)len) &&
             (ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, os)) != NULL &&
             X509_set_version(x, X509_VERSION_3) &&
             ASN1_INTEGER_set_uint64(X509_get_serialNumber(x),
                                     serial >> 1) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
             X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400) != NULL &&
             X509_set_pubkey(x, pk);
    if (ok) {
        X509_NAME *name = X509_get_subject_name(x);
        ok = X509_NAME_add_entry_by_txt(
                 name, "CN", MBSTRING_ASC,
                 (const unsigned char *)"enclaveml attested server", -1, -1,
                 0) &&
             X509_set_issuer_name(x, name) && X509_add_ext(x, ext, -1) &&
             X509_sign(x, pk, EVP_sha256()) > 0;
    }
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(oid);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

eml_status eml_tls_server_new(eml_tls_key *key, const uint8_t *report,
                              size_t report_len, eml_tls_server **out,
                              eml_err *err)
{
    *out = NULL;
    EVP_PKEY *pk = (EVP_PKEY *)key;
    eml_tls_server *s = calloc(1, sizeof(*s));
    X509 *x = NULL;
    if (s == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = EML_ERR_BACKEND;
    const char *what = "the certificate could not be made";
    if ((x = make_cert(pk, report, report_len)) == NULL) goto out;
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0) goto out;
    s->cert_der = malloc((size_t)n);
    if (s->cert_der != NULL) memcpy(s->cert_der, der, (size_t)n);
    OPENSSL_free(der);
    if (s->cert_der == NULL) {
        st = EML_ERR_NOMEM;
        goto out;
    }
    s->cert_len = (size_t)n;
    if (spki_digest(pk, s->spki_sha256) != EML_OK) goto out;
    what = "the server context could not be made";
    s->ctx = SSL_CTX_new(TLS_server_method());
    if (s->ctx == NULL ||
        !SSL_CTX_set_min_proto_version(s->ctx, TLS1_3_VERSION) ||
        !SSL_CTX_use_certificate(s->ctx, x) ||
        !SSL_CTX_use_PrivateKey(s->ctx, pk) ||
        !SSL_CTX_check_private_key(s->ctx) ||
        !SSL_CTX_set_num_tickets(s->ctx, 0))
        goto out;
    SSL_CTX_set_session_cache_mode(s->ctx, SSL_SESS_CACHE_OFF);
    X509_free(x);
    *out = s;
    return EML_OK;
out:
    X509_free(x);
    eml_tls_server_free(s);
    return fail(err, st, what);
}

const uint8_t *eml_tls_server_cert(const eml_tls_server *s, size_t *len)
{
    *len = s->cert_len;
    return s->cert_der;
}

const uint8_t *eml_tls_server_spki_sha256(const eml_tls_server *s)
{
    return s->spki_sha256;
}

void eml_tls_server_free(eml_tls_server *s)
{
    if (s == NULL) return;
    SSL_CTX_free(s->ctx); /* frees its copy of the key */
    free(s->cert_der);
    free(s);
}

/* ==== connections ==== */

eml_status eml_tls_conn_new(eml_tls_server *s, eml_tls_conn **out)
{
    *out = NULL;
    eml_tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) return EML_ERR_NOMEM;
    c->ssl = SSL_new(s->ctx);
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->in == NULL || c->out == NULL) {
        BIO_free(c->in);
        BIO_free(c->out);
        SSL_free(c->ssl);
        free(c);
        ERR_clear_error();
        return EML_ERR_NOMEM;
    }
    BIO_set_mem_eof_return(c->in, -1); /* empty: retry, not end of file */
    SSL_set_bio(c->ssl, c->in, c->out);
    SSL_set_accept_state(c->ssl);
    *out = c;
    return EML_OK;
}

void eml_tls_conn_free(eml_tls_conn *c)
{
    if (c == NULL) return;
    SSL_free(c->ssl); /* and both BIOs */
    free(c);
}

eml_status eml_tls_conn_push(eml_tls_conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int piece = n > INT_MAX ? INT_MAX : (int)n;
        int w = BIO_write(c->in, p, piece);
        if (w <= 0) {
            ERR_clear_error();
            return EML_ERR_NOMEM;
        }
        p += w;
        n -= (size_t)w;
    }
    return EML_OK;
}

int eml_tls_conn_established(const eml_tls_conn *c)
{
    return SSL_is_init_finished(c->ssl);
}

eml_status eml_tls_conn_read(eml_tls_conn *c, uint8_t *buf, size_t cap,
                             size_t *got, int *closed)
{
    *got = 0;
    *closed = 0;
    if (c->failed) return EML_ERR_AUTH;
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return EML_OK;
            c->failed = 1; /* its alert, if any, is in the output */
            return EML_ERR_AUTH;
        }
    }
    while (*got < cap) {
        size_t n = 0;
        if (SSL_read_ex(c->ssl, buf + *got, cap - *got, &n)) {
            *got += n;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            *closed = 1;
            break;
        }
        c->failed = 1;
        return EML_ERR_FORMAT;
    }
    return EML_OK;
}

eml_status eml_tls_conn_write(eml_tls_conn *c, const uint8_t *p, size_t n)
{
    if (c->failed || !SSL_is_init_finished(c->ssl)) return EML_ERR_INVALID;
    while (n > 0) {
        size_t w = 0;
        if (!SSL_write_ex(c->ssl, p, n, &w)) {
            ERR_clear_error();
            c->failed = 1;
            return EML_ERR_BACKEND;
        }
        p += w;
        n -= w;
    }
    return EML_OK;
}

void eml_tls_conn_close(eml_tls_conn *c)
{
    if (!c->failed && SSL_is_init_finished(c->ssl)) SSL_shutdown(c->ssl);
    ERR_clear_error();
}

size_t eml_tls_conn_buffered_in(const eml_tls_conn *c)
{
    return BIO_ctrl_pending(c->in);
}

size_t eml_tls_conn_pending(const eml_tls_conn *c)
{
    return BIO_ctrl_pending(c->out);
}

size_t eml_tls_conn_pull(eml_tls_conn *c, uint8_t *out, size_t cap)
{
    size_t got = 0;
    while (got < cap) {
        int piece = cap - got > INT_MAX ? INT_MAX : (int)(cap - got);
        int r = BIO_read(c->out, out + got, piece);
        if (r <= 0) break;
        got += (size_t)r;
    }
    ERR_clear_error();
    return got;
}

/* ==== the client's check ==== */

eml_status eml_ratls_report(const uint8_t *der, size_t len, uint8_t **report,
                            size_t *report_len, uint8_t spki_sha256[32],
                            eml_err *err)
{
    *report = NULL;
    *report_len = 0;
    const unsigned char *p = der;
    X509 *x = len <= LONG_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
    if (x == NULL || p != der + len) {
        X509_free(x);
        return fail(err, EML_ERR_FORMAT, "the certificate does not parse");
    }
    ASN1_OBJECT *oid = OBJ_txt2obj(EML_RATLS_OID, 1);
    int at = oid != NULL ? X509_get_ext_by_OBJ(x, oid, -1) : -1;
    int again = at >= 0 ? X509_get_ext_by_OBJ(x, oid, at) : -1;
    ASN1_OBJECT_free(oid);
    X509_EXTENSION *ext = at >= 0 ? X509_get_ext(x, at) : NULL;
    ASN1_OCTET_STRING *os = ext != NULL ? X509_EXTENSION_get_data(ext) : NULL;
    EVP_PKEY *pk = X509_get0_pubkey(x);
    eml_status st = EML_OK;
    const char *what = NULL;
    if (os == NULL || again >= 0)
        st = EML_ERR_FORMAT,
        what = "the certificate carries no attestation report, or two";
    else if (pk == NULL || spki_digest(pk, spki_sha256) != EML_OK)
        st = EML_ERR_FORMAT, what = "the certificate's key does not parse";
    else if ((*report = malloc((size_t)ASN1_STRING_length(os) + 1)) == NULL)
        st = EML_ERR_NOMEM, what = "out of memory";
    if (st == EML_OK) {
        *report_len = (size_t)ASN1_STRING_length(os);
        memcpy(*report, ASN1_STRING_get0_data(os), *report_len);
        (*report)[*report_len] = 0;
    }
    X509_free(x);
    return st == EML_OK ? EML_OK : fail(err, st, what);
}

eml_status eml_ratls_check(const uint8_t *der, size_t len,
                           const eml_platform_key *keys, size_t n_keys,
                           eml_attestation *a, uint8_t spki_sha256[32],
                           eml_err *err)
{
    uint8_t *report = NULL;
    size_t rlen = 0;
    eml_status st = eml_ratls_report(der, len, &report, &rlen, spki_sha256,
                                     err);
    if (st != EML_OK) return st;
    eml_err rerr = {0};
    st = eml_attestation_check((const char *)report, rlen, keys, n_keys, a,
                               &rerr);
    free(report);
    if (st != EML_OK)
        return eml_err_set(err, st, "the certificate's attestation report: %s",
                           eml_err_msg(&rerr, st));
    if (a->nonce_len != 32 || !eml_ct_equal(a->nonce, spki_sha256, 32))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the certificate's key is not the one its "
                           "attestation report binds (the report's nonce is "
                           "not the SHA-256 of the key)");
    return EML_OK;
}
