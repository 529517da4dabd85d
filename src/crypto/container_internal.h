/*
 * container_internal.h - what the container's writer and reader share
 * (private to src/crypto/): the header layout, the labels its keys are
 * derived under, the scratch space for secrets, and the derivations both
 * sides run.  Byte layout: docs/container.md.
 *
 * The container is three files: container.c (roles, ids, the header's
 * parsing, key derivation), container_writer.c (eml_cw_*, sealing a
 * buffer) and container_reader.c (eml_cr_*, opening a buffer).  Trusted
 * code: no I/O anywhere.
 */
#ifndef EML_CONTAINER_INTERNAL_H
#define EML_CONTAINER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"

#define CONTAINER_MAGIC "EMLC" /* 4 bytes, without the NUL */
#define LABEL_KEY_ID "enclaveml key id v1"
#define LABEL_DATASET_ID "enclaveml dataset id v1"
#define LABEL_WRAP "enclaveml recipient wrap v1"
#define LABEL_FILE "enclaveml container v1"
#define LABEL_LEN(s) (sizeof(s) - 1) /* labels go in without their NUL */

/* Header offsets. */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 4,
    OFF_MODE = 6,
    OFF_CHUNK = 8,
    OFF_HLEN = 12,
    OFF_KEY_ID = 16,
    OFF_SALT = 32,
    OFF_ROLE = 64,     /* version 2 */
    OFF_RESERVED = 66, /* u16, must be 0 */
    OFF_DATASET = 68,
    OFF_EPH_PK = 84,   /* mode 2 only */
    OFF_WRAPPED = 116, /* mode 2 only; also the end of the wrap's AAD */
    OFF_WRAP_TAG = 148,
};
#define SALT_BYTES 32
#define NONCE_BYTES 12
#define AAD_BYTES (32 + 8 + 1) /* header digest || u64 index || u8 final */

/* Every secret a writer or reader handles on its way to the file key, kept
 * in its locked allocation and wiped right after use. */
typedef struct eml_container_scratch {
    uint8_t eph_sk[32];
    uint8_t shared[32];
    uint8_t wrap_key[32];
    uint8_t content_key[32];
    uint8_t file_key[32];
    uint8_t recipient_pk[32];
    uint8_t info[LABEL_LEN(LABEL_WRAP) + 64];
    uint8_t id_input[LABEL_LEN(LABEL_KEY_ID) + 32];
} eml_container_scratch;

/* A power of two in EML_CONTAINER_CHUNK_MIN..MAX. */
int eml_container_chunk_size_ok(uint32_t cs);
size_t eml_container_header_len_for(eml_container_mode mode);

/* Chunk index's nonce (u64 BE index || u32 BE final) and AAD (H || u64 BE
 * index || u8 final). */
void eml_container_chunk_nonce_aad(uint8_t nonce[NONCE_BYTES],
                                   uint8_t aad[AAD_BYTES],
                                   const uint8_t digest[32], uint64_t index,
                                   int final);

/* The 16-byte key id of key, through s's scratch (wiped). */
EML_MUST_CHECK eml_status eml_container_key_id_with(
    eml_container_scratch *s, uint8_t id[16], const uint8_t key[32]);

/* wrap key = HKDF(X25519 shared, salt, "enclaveml recipient wrap v1" ||
 * eph_pk || recipient_pk); s->shared and s->recipient_pk are set. */
EML_MUST_CHECK eml_status eml_container_derive_wrap_key(
    eml_container_scratch *s, const uint8_t *hdr);

/* file key = HKDF(content key, salt, "enclaveml container v1"), straight
 * into a GCM context; the header digest H alongside. */
EML_MUST_CHECK eml_status eml_container_derive_file_state(
    eml_container_scratch *s, const uint8_t *content_key, const uint8_t *hdr,
    size_t hlen, eml_gcm **gcm, uint8_t digest[32]);

#endif
