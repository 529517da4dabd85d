/*
 * serve_util.h - what the server's tests and fuzz target share (header
 * only): a small model, an attested TLS server signed by a test platform
 * key, and clients whose TLS runs over memory, their bytes carried to
 * and from the server's records as the host would.
 */
#ifndef EML_TESTS_SERVE_UTIL_H
#define EML_TESTS_SERVE_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "enclaveml/cfg.h"
#include "enclaveml/crypto.h"
#include "enclaveml/model.h"
#include "enclaveml/net.h"
#include "enclaveml/serve.h"
#include "enclaveml/tls.h"

/* 8x8 grey images, four classes. */
static const char serve_cfg[] =
    "[net]\nheight=8\nwidth=8\nchannels=1\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

typedef struct serve_fixture {
    eml_model *model;
    uint8_t platform_sk[32], platform_pk[32];
    uint8_t measurement[32];
    eml_tls_key *key;
    eml_tls_server *tls;
    uint8_t spki[32];
} serve_fixture;

/* The model (seeded random weights) and a TLS server whose report a test
 * platform key signs; 0 on success. */
static inline int serve_fixture_init(serve_fixture *f)
{
    memset(f, 0, sizeof(*f));
    eml_err err = {0};
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    eml_net_opts o = {.kernels = EML_KERNELS_REF, .max_batch = 1, .seed = 1};
    uint8_t *w = NULL;
    size_t wlen = 0;
    if (eml_cfg_parse(serve_cfg, strlen(serve_cfg), "serve.cfg", &cfg,
                      &err) != EML_OK ||
        eml_net_new(cfg, &o, &net, &err) != EML_OK)
        return 1;
    eml_net_init_params(net, 5);
    int bad = eml_weights_encode(net, &w, &wlen) != EML_OK ||
              eml_model_load((const uint8_t *)serve_cfg, strlen(serve_cfg),
                             "serve.cfg", w, wlen, "w", &f->model,
                             &err) != EML_OK;
    free(w);
    eml_net_free(net);
    eml_cfg_free(cfg);
    if (bad) return 1;
    eml_report_keys k;
    memset(&k, 0, sizeof(k));
    if (eml_ed25519_keygen(f->platform_sk, f->platform_pk) != EML_OK ||
        eml_random(f->measurement, 32) != EML_OK ||
        eml_random(k.x25519, 32) != EML_OK ||
        eml_random(k.ed25519, 32) != EML_OK ||
        eml_tls_key_new(&f->key, f->spki, &err) != EML_OK)
        return 1;
    memcpy(k.measurement, f->measurement, 32);
    memcpy(k.platform_pk, f->platform_pk, 32);
    k.sign_sk = f->platform_sk;
    k.sim = 1;
    k.policy = "backend=sim;heap_mb=64";
    char *report = NULL;
    size_t rlen = 0;
    if (eml_attestation_make(&k, f->spki, 32, &report, &rlen, &err) !=
        EML_OK)
        return 1;
    eml_status st = eml_tls_server_new(f->key, (const uint8_t *)report, rlen,
                                       &f->tls, &err);
    free(report);
    return st != EML_OK;
}

static inline void serve_fixture_free(serve_fixture *f)
{
    eml_tls_server_free(f->tls);
    eml_tls_key_free(f->key);
    eml_model_free(f->model);
}

/* A client: TLS over memory BIOs, and the answers it has read. */
typedef struct mem_client {
    uint32_t id;
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
    int closed;    /* the server said CLOSE */
    uint8_t got[1 << 16];
    size_t got_n;
} mem_client;

static inline int mem_client_new(mem_client *c, uint32_t id)
{
    memset(c, 0, sizeof(*c));
    c->id = id;
    c->ctx = SSL_CTX_new(TLS_client_method());
    c->ssl = c->ctx != NULL ? SSL_new(c->ctx) : NULL;
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->in == NULL || c->out == NULL) return 1;
    BIO_set_mem_eof_return(c->in, -1);
    SSL_set_bio(c->ssl, c->in, c->out);
    SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    SSL_set_connect_state(c->ssl);
    return 0;
}

static inline void mem_client_free(mem_client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    ERR_clear_error();
}

/* Moves the client's pending ciphertext into an event list. */
static inline void mem_client_flush(mem_client *c, eml_http_buf *ev)
{
    uint8_t buf[16384];
    int n;
    SSL_do_handshake(c->ssl); /* makes progress; errors come later */
    while ((n = BIO_read(c->out, buf, sizeof(buf))) > 0)
        if (eml_serve_record_put(ev, c->id, EML_SERVE_DATA, buf, (size_t)n,
                                 NULL) != EML_OK)
            abort();
    ERR_clear_error();
}

/* Plaintext for the server (after the handshake). */
static inline int mem_client_write(mem_client *c, const void *p, size_t n)
{
    size_t w = 0;
    return SSL_write_ex(c->ssl, p, n, &w) == 1 && w == n ? 0 : 1;
}

/* Reads what the client can decrypt into got. */
static inline void mem_client_read(mem_client *c)
{
    size_t n = 0;
    while (c->got_n < sizeof(c->got) &&
           SSL_read_ex(c->ssl, c->got + c->got_n, sizeof(c->got) - c->got_n,
                       &n) == 1)
        c->got_n += n;
    ERR_clear_error();
}
#endif
