/*
 * tls_client.c - the client's side of RA-TLS (tls_client.h): a TLS 1.3
 * connection whose server certificate is not checked by a CA but by the
 * attestation report inside it (eml_ratls_check): the platform's
 * signature, the measurement the caller expects, and the binding of the
 * report to the certificate's key.  Nothing is sent before that check.
 * Host side.
 */
#include "host/tls_client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "enclaveml/crypto.h"
#include "enclaveml/tls.h"
#include "host/worker_link.h"
#include "sim/platform.h"

struct eml_tls_client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static eml_status ssl_fail(eml_err *err, const char *what, const char *addr)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return eml_err_set(err, EML_ERR_AUTH, "%s: %s%s%s", addr, what,
                       buf[0] ? ": " : "", buf);
}

void eml_tls_client_close(eml_tls_client *c)
{
    if (c == NULL) return;
    if (c->ssl != NULL) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) close(c->fd);
    free(c);
}

eml_status eml_verifier_keys(int allow, eml_platform_key keys[2], size_t *n,
                             eml_err *err)
{
    char home[4096];
    keys[0] = (eml_platform_key){{0}, "sim"};
    keys[1] = (eml_platform_key){{0}, "none"};
    *n = (allow & EML_ALLOW_NONE) ? 2 : 1;
    eml_status st = eml_platform_home(home, sizeof(home), err);
    if (st == EML_OK) st = eml_platform_provision(home, EML_PLATFORM_SIM, err);
    if (st == EML_OK)
        st = eml_platform_load_pub(home, EML_PLATFORM_SIM, keys[0].pk, err);
    if (st == EML_OK && *n == 2)
        st = eml_platform_provision(home, EML_PLATFORM_NONE, err);
    if (st == EML_OK && *n == 2)
        st = eml_platform_load_pub(home, EML_PLATFORM_NONE, keys[1].pk, err);
    return st;
}

static eml_status check_peer(eml_tls_client *c, const char *addr,
                             const uint8_t measurement[32], int allow,
                             eml_ratls_info *info, eml_err *err)
{
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    unsigned char *der = NULL;
    int n = x != NULL ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (n <= 0) return ssl_fail(err, "the server sent no certificate", addr);
    eml_platform_key keys[2];
    size_t nk = 0;
    eml_status st = eml_verifier_keys(allow, keys, &nk, err);
    eml_attestation a;
    if (st == EML_OK)
        st = eml_ratls_check(der, (size_t)n, keys, nk, &a, info->spki_sha256,
                             err);
    OPENSSL_free(der);
    if (st != EML_OK) return st;
    memcpy(info->measurement, a.measurement, 32);
    info->sim = a.sim;
    if (a.sim && !(allow & EML_ALLOW_SIM))
        return eml_err_set(err, EML_ERR_AUTH,
                           "%s: a simulated attestation (a `sim` platform "
                           "proves nothing about hardware; --allow-sim "
                           "accepts it)",
                           addr);
    if (!eml_ct_equal(a.measurement, measurement, 32)) {
        char h[65];
        eml_hex(h, a.measurement, 32);
        return eml_err_set(err, EML_ERR_AUTH,
                           "%s: the enclave's measurement %s is not the "
                           "expected one",
                           addr, h);
    }
    return EML_OK;
}

eml_status eml_tls_client_open(const char *addr, const uint8_t meas[32],
                               int allow, int timeout_ms,
                               eml_tls_client **out, eml_ratls_info *info,
                               eml_err *err)
{
    *out = NULL;
    char full[EML_WORKER_ADDR_MAX + 8];
    snprintf(full, sizeof(full), "%s%s",
             strncmp(addr, "tcp:", 4) == 0 ? "" : "tcp:", addr);
    eml_worker_addr wa;
    eml_status st = eml_worker_addr_parse(full, &wa, err);
    if (st != EML_OK) return st;
    eml_tls_client *c = calloc(1, sizeof(*c));
    if (c == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&wa.sa, wa.len) != 0) {
        st = eml_err_set(err, EML_ERR_IO, "%s: cannot connect: %s", addr,
                         strerror(errno));
        eml_tls_client_close(c);
        return st;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL ||
        !SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION) ||
        (c->ssl = SSL_new(c->ctx)) == NULL || !SSL_set_fd(c->ssl, c->fd)) {
        st = ssl_fail(err, "cannot set up TLS", addr);
        eml_tls_client_close(c);
        return st;
    }
    /* No CA: the certificate is checked by its attestation report. */
    SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    if (SSL_connect(c->ssl) != 1) {
        st = ssl_fail(err, "the TLS handshake failed", addr);
        eml_tls_client_close(c);
        return st;
    }
    eml_ratls_info tmp;
    st = check_peer(c, addr, meas, allow, info != NULL ? info : &tmp, err);
    if (st != EML_OK) {
        eml_tls_client_close(c);
        return st;
    }
    *out = c;
    return EML_OK;
}

eml_status eml_tls_client_write(eml_tls_client *c, const void *p, size_t n,
                                eml_err *err)
{
    size_t w = 0;
    if (SSL_write_ex(c->ssl, p, n, &w) != 1 || w != n)
        return ssl_fail(err, "write failed", "server");
    return EML_OK;
}

/* Reads until buf holds the header block; *head_end past its blank
 * line. */
static eml_status read_head(eml_tls_client *c, eml_http_buf *b,
                            size_t *head_end, eml_err *err)
{
    for (;;) {
        for (size_t i = 3; i < b->len; i++)
            if (memcmp(b->p + i - 3, "\r\n\r\n", 4) == 0) {
                *head_end = i + 1;
                return EML_OK;
            }
        uint8_t tmp[16384];
        size_t got = 0;
        if (SSL_read_ex(c->ssl, tmp, sizeof(tmp), &got) != 1)
            return ssl_fail(err, "the connection closed before an answer",
                            "server");
        eml_status st = eml_http_buf_put(b, tmp, got, err);
        if (st != EML_OK) return st;
    }
}

eml_status eml_tls_client_response(eml_tls_client *c, eml_http_buf *b,
                                   int *status, size_t *body_off,
                                   size_t *body_len, eml_err *err)
{
    eml_http_buf_reset(b);
    size_t head = 0;
    eml_status st = read_head(c, b, &head, err);
    if (st != EML_OK) return st;
    if (b->len < 12 || memcmp(b->p, "HTTP/1.1 ", 9) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "not an HTTP/1.1 answer");
    *status = atoi((const char *)b->p + 9);
    size_t clen = 0;
    const char *h = (const char *)b->p;
    for (size_t i = 0; i + 16 < head; i++)
        if ((h[i] == '\n') && strncasecmp(h + i + 1, "content-length:", 15) == 0)
            clen = (size_t)strtoull(h + i + 16, NULL, 10);
    while (b->len < head + clen) {
        uint8_t tmp[16384];
        size_t got = 0;
        if (SSL_read_ex(c->ssl, tmp, sizeof(tmp), &got) != 1)
            return ssl_fail(err, "the answer was cut short", "server");
        st = eml_http_buf_put(b, tmp, got, err);
        if (st != EML_OK) return st;
    }
    *body_off = head;
    *body_len = clen;
    return EML_OK;
}
