/*
 * cmd_serve.h - `enclaveml serve` (cmd_serve.c), `enclaveml serve-worker`
 * (cmd_serve_worker.c) and `enclaveml client` (cmd_client.c): the
 * attested inference server, its queue's workers and its verifying
 * client (docs/serve.md).  Host side.
 */
#ifndef EML_HOST_CMD_SERVE_H
#define EML_HOST_CMD_SERVE_H

#include <stdint.h>

#include "host/enclave_host.h"

int eml_cmd_serve(int argc, char **argv);
/* `enclaveml serve-worker` (cmd_serve_worker.c): a worker enclave of a
 * server's queue. */
int eml_cmd_serve_worker(int argc, char **argv);
/* MODEL_LOAD of the encrypted model with its grant (files named). */
EML_MUST_CHECK eml_status eml_serve_model_load(eml_enclave_host *h,
                                               const uint8_t *cfg,
                                               size_t cfg_len,
                                               const char *model,
                                               const char *grant,
                                               eml_err *err);
int eml_cmd_client(int argc, char **argv);
/* `enclaveml verify --tls HOST:PORT ...` (cmd_client.c). */
int eml_verify_tls(const char *addr, const uint8_t measurement[32],
                   int allow, int json);

/* "sha256//" and the base64 of a key's SubjectPublicKeyInfo digest: the
 * form curl's --pinnedpubkey takes. */
#define EML_TLS_PIN_LEN 53
void eml_tls_pin(const uint8_t spki_sha256[32], char out[EML_TLS_PIN_LEN]);
#endif
