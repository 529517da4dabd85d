/*
 * cmd_serve.h - `enclaveml serve` (cmd_serve.c) and `enclaveml client`
 * (cmd_client.c), the attested inference server and its verifying
 * client (docs/serve.md).  Host side.
 */
#ifndef EML_HOST_CMD_SERVE_H
#define EML_HOST_CMD_SERVE_H

#include <stdint.h>

int eml_cmd_serve(int argc, char **argv);
int eml_cmd_client(int argc, char **argv);
/* `enclaveml verify --tls HOST:PORT ...` (cmd_client.c). */
int eml_verify_tls(const char *addr, const uint8_t measurement[32],
                   int allow, int json);

/* "sha256//" and the base64 of a key's SubjectPublicKeyInfo digest: the
 * form curl's --pinnedpubkey takes. */
#define EML_TLS_PIN_LEN 53
void eml_tls_pin(const uint8_t spki_sha256[32], char out[EML_TLS_PIN_LEN]);
#endif
