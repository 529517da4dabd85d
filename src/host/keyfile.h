/*
 * keyfile.h - an owner's key files (host side only).
 *
 *   NAME.key  (mode 0600)  "EMLKEY01" | data key (32) | X25519 secret key (32)
 *   NAME.pub               "EMLPUB01" | X25519 public key (32)
 *
 * The data key encrypts the owner's own files (container mode 1); the X25519
 * pair receives files encrypted to the owner (container mode 2).  Loading
 * is strict: exact size and magic, or an error naming the file.  Loaded
 * secrets live in locked memory (eml_secure_alloc) and are wiped by
 * eml_keyfile_free; read buffers are wiped too.
 *
 *     eml_keyfile *k;
 *     if (eml_keyfile_load("alice.key", &k, &err) != EML_OK) ...
 *     eml_container_keys keys = {k->data_key, k->x25519_sk};
 *     ...
 *     eml_keyfile_free(k);
 */
#ifndef EML_HOST_KEYFILE_H
#define EML_HOST_KEYFILE_H

#include <stdint.h>

#include "enclaveml/status.h"

#define EML_KEYFILE_MAGIC "EMLKEY01"
#define EML_PUBFILE_MAGIC "EMLPUB01"
#define EML_KEYFILE_BYTES (8 + 32 + 32)
#define EML_PUBFILE_BYTES (8 + 32)

typedef struct eml_keyfile {
    uint8_t data_key[32];
    uint8_t x25519_sk[32];
    uint8_t x25519_pk[32]; /* derived from x25519_sk when loaded */
} eml_keyfile;

/* Makes a fresh key and writes NAME.key (0600) and NAME.pub (0644).  Without
 * force, an existing NAME.key or NAME.pub is an error and files are created
 * with O_CREAT|O_EXCL; with force they are replaced atomically.  On failure
 * neither file is left behind (unless it existed before).  The paths
 * written go to key_path/pub_path if not NULL (caller frees). */
EML_MUST_CHECK eml_status eml_keyfile_generate(const char *name, int force,
                                               char **key_path,
                                               char **pub_path,
                                               eml_err *err);

/* Loads NAME.key into locked memory (*out, free with eml_keyfile_free). */
EML_MUST_CHECK eml_status eml_keyfile_load(const char *path,
                                           eml_keyfile **out, eml_err *err);
void eml_keyfile_free(eml_keyfile *k); /* wipes; NULL is a no-op */

/* Loads the X25519 public key of NAME.pub. */
EML_MUST_CHECK eml_status eml_pubfile_load(const char *path, uint8_t pk[32],
                                           eml_err *err);
#endif
