/*
 * fuzz_container.c - libFuzzer target for the container reader.
 *
 * The input is a whole container, handed to eml_container_open_buffer with
 * a fixed data key and a fixed X25519 secret key, so both key modes are
 * reached; eml_cr_header_len and eml_container_peek see it too, and the
 * streaming reader is fed it once more in pieces whose sizes come from the
 * input's last byte (short pieces, lying is_last flags).  Any input must
 * give EML_OK or an error with a one-line message, never a crash, a leak or
 * a read outside the buffer; a failure leaves no output.  On success every
 * plaintext byte is read, resealed and reopened, and must match.
 *
 * Seeds (fuzz/corpus/container/) are real containers sealed under the keys
 * below with 4 KiB chunks: both modes, empty, one byte, one chunk, and
 * several chunks, with roles and dataset ids (version 2), and one version 1
 * container (v1-sym-one.emlc, refused).  Keys: data key = bytes
 * 0x00..0x1f; X25519 secret key = bytes 0x40..0x5f.  To rebuild the
 * version 2 seeds from a normal build:
 *
 *   cc -std=c11 -D_POSIX_C_SOURCE=200809L -DEML_FUZZ_SEEDS -Iinclude -Isrc \
 *      fuzz/fuzz_container.c build/libeml_trusted.a -lcrypto -lz -lm \
 *      -o /tmp/eml-container-seeds && \
 *      /tmp/eml-container-seeds fuzz/corpus/container
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(int cond)
{
    if (!cond) abort();
}

static uint8_t data_key[32], x_sk[32], x_pk[32];
static int keys_ready;

static void init_keys(void)
{
    if (keys_ready) return;
    for (int i = 0; i < 32; i++) {
        data_key[i] = (uint8_t)i;
        x_sk[i] = (uint8_t)(0x40 + i);
    }
    must(eml_x25519_public(x_pk, x_sk) == EML_OK);
    keys_ready = 1;
}

static int one_line(const eml_err *err)
{
    return err->msg[0] != '\0' && strchr(err->msg, '\n') == NULL;
}

/* The streaming reader, fed in pieces of up to step bytes; is_last is true
 * for the last piece, and lies on odd steps. */
static void stream(const uint8_t *data, size_t size, size_t hlen, size_t step,
                   int lie)
{
    eml_container_keys keys = {data_key, x_sk};
    eml_err err = {{0}};
    eml_cr *r = NULL;
    volatile uint8_t sink = 0;
    if (eml_cr_new(data, hlen, &keys, &r, &err) != EML_OK) {
        must(r == NULL && one_line(&err));
        return;
    }
    size_t cs = eml_cr_chunk_size(r);
    uint8_t *pt = calloc(1, cs);
    must(pt != NULL);
    size_t pos = hlen;
    eml_status st = EML_OK;
    while (pos < size && st == EML_OK) {
        size_t n = size - pos < step ? size - pos : step, got = 99;
        int last = pos + n == size;
        if (lie) last = !last;
        memset(&err, 0, sizeof(err));
        st = eml_cr_open(r, data + pos, n, last, pt, &got, &err);
        if (st == EML_OK) {
            must(got == n - EML_CONTAINER_TAG_BYTES && got <= cs);
            for (size_t i = 0; i < got; i++) sink ^= pt[i];
            eml_wipe(pt, got); /* as a host would */
        } else {
            must(st < 0 && got == 0 && one_line(&err));
            /* A failed open leaves no plaintext behind. */
            for (size_t i = 0; i < cs; i++) must(pt[i] == 0);
        }
        pos += n;
    }
    memset(&err, 0, sizeof(err));
    if (eml_cr_finish(r, &err) != EML_OK) must(one_line(&err));
    eml_cr_free(r);
    free(pt);
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_container_keys keys = {data_key, x_sk};
    eml_container_info info;
    eml_err err = {{0}};
    uint8_t *pt = NULL, *c2 = NULL, *pt2 = NULL;
    size_t n = 0, n2 = 0, n3 = 0, hlen = 0;
    volatile uint8_t sink = 0;
    eml_status st;

    init_keys();

    st = eml_cr_header_len(data, size, &hlen, &err);
    if (st != EML_OK) {
        must(st < 0 && hlen == 0 && one_line(&err));
    } else {
        must(hlen == EML_CONTAINER_HEADER_SYM ||
             hlen == EML_CONTAINER_HEADER_RCPT);
    }
    memset(&err, 0, sizeof(err));
    st = eml_container_peek(data, size, &info, &err);
    if (st == EML_OK)
        must(info.header_len == hlen && info.chunk_size >= 4096 &&
             (info.chunk_size & (info.chunk_size - 1)) == 0 &&
             eml_container_role_name(info.role) != NULL);
    else
        must(one_line(&err));

    memset(&err, 0, sizeof(err));
    st = eml_container_open_buffer(data, size, &keys, &pt, &n, &err);
    if (st == EML_OK) {
        must(pt != NULL && n <= size);
        for (size_t i = 0; i < n; i++) sink ^= pt[i];
        /* Reseal in the same mode, role and dataset id, and reopen: the
         * new header says the same. */
        const uint8_t *key =
            info.mode == EML_CONTAINER_SYMMETRIC ? data_key : x_pk;
        eml_container_meta meta;
        eml_container_info info2;
        meta.role = info.role;
        memcpy(meta.dataset_id, info.dataset_id, sizeof(meta.dataset_id));
        must(eml_container_seal_buffer(info.mode, key, info.chunk_size, &meta,
                                       pt, n, &c2, &n2, &err) == EML_OK);
        must(n2 == size);
        must(eml_container_peek(c2, n2, &info2, &err) == EML_OK &&
             info2.role == info.role &&
             memcmp(info2.dataset_id, info.dataset_id,
                    sizeof(info.dataset_id)) == 0);
        must(eml_container_open_buffer(c2, n2, &keys, &pt2, &n3, &err) ==
             EML_OK);
        must(n3 == n && (n == 0 || memcmp(pt, pt2, n) == 0));
        eml_wipe(pt2, n3);
        free(pt2);
        free(c2);
        eml_wipe(pt, n);
        free(pt);
    } else {
        must(st < 0 && pt == NULL && n == 0 && one_line(&err));
    }

    /* The streaming reader in odd pieces. */
    if (size > 0 && hlen > 0 && size >= hlen) {
        uint8_t b = data[size - 1];
        size_t cs = info.chunk_size ? info.chunk_size : 4096;
        size_t steps[3] = {cs + EML_CONTAINER_TAG_BYTES,
                           (size_t)b * 37 + 1,
                           cs + EML_CONTAINER_TAG_BYTES + (b & 1 ? 1 : 0)};
        stream(data, size, hlen, steps[b % 3], (b >> 2) & 1);
    }
    (void)sink;
    return 0;
}

#ifdef EML_FUZZ_SEEDS
/* ==== the seed generator ==== */

#include <stdio.h>

static void write_seed(const char *dir, const char *name,
                       eml_container_mode mode, eml_container_role role,
                       const char *dataset, size_t n)
{
    eml_container_meta meta;
    eml_err err = {{0}};
    uint8_t *pt = malloc(n > 0 ? n : 1), *c = NULL;
    size_t len = 0;
    char path[4096];
    must(pt != NULL);
    for (size_t i = 0; i < n; i++) pt[i] = (uint8_t)(i * 131 + 7);
    memset(&meta, 0, sizeof(meta));
    meta.role = role;
    if (dataset != NULL)
        must(eml_container_dataset_id(meta.dataset_id, dataset,
                                      strlen(dataset)) == EML_OK);
    must(eml_container_seal_buffer(
             mode, mode == EML_CONTAINER_SYMMETRIC ? data_key : x_pk, 4096,
             &meta, pt, n, &c, &len, &err) == EML_OK);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    must(f != NULL && fwrite(c, 1, len, f) == len && fclose(f) == 0);
    printf("%s (%zu bytes)\n", path, len);
    free(c);
    free(pt);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s fuzz/corpus/container\n", argv[0]);
        return 2;
    }
    init_keys();
    const eml_container_mode S = EML_CONTAINER_SYMMETRIC,
                             R = EML_CONTAINER_RECIPIENT;
    write_seed(argv[1], "sym-empty.emlc", S, EML_CONTAINER_ROLE_NONE, NULL, 0);
    write_seed(argv[1], "sym-one.emlc", S, EML_CONTAINER_ROLE_TRAIN_LABELS,
               "fuzz", 1);
    write_seed(argv[1], "sym-chunk-1.emlc", S,
               EML_CONTAINER_ROLE_TEST_LABELS, "fuzz", 4095);
    write_seed(argv[1], "sym-chunk.emlc", S, EML_CONTAINER_ROLE_TEST_IMAGES,
               "fuzz", 4096);
    write_seed(argv[1], "sym-multi.emlc", S, EML_CONTAINER_ROLE_TRAIN_IMAGES,
               "fuzz", 8241);
    write_seed(argv[1], "rcpt-empty.emlc", R, EML_CONTAINER_ROLE_NONE, NULL,
               0);
    write_seed(argv[1], "rcpt-one.emlc", R, EML_CONTAINER_ROLE_MODEL, NULL, 1);
    write_seed(argv[1], "rcpt-chunk.emlc", R, EML_CONTAINER_ROLE_MODEL, NULL,
               4096);
    write_seed(argv[1], "rcpt-multi.emlc", R, EML_CONTAINER_ROLE_TRAIN_IMAGES,
               "fuzz", 8241);
    return 0;
}
#endif /* EML_FUZZ_SEEDS */
