/*
 * fuzz_idx.c - libFuzzer target for eml_idx_parse and eml_gunzip.
 *
 * Any input must give EML_OK or an error with a message, never a crash, a
 * leak or a read outside the buffer.  On success every decoded byte is
 * read, the result is written back with eml_idx_write and parsed again,
 * and the two must agree.  Seeds: fuzz/corpus/idx/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(int cond)
{
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_idx idx, back;
    eml_err err = {{0}};
    uint8_t *out = NULL, *raw = NULL;
    size_t out_len = 0, raw_len = 0, i;
    volatile uint8_t sink = 0;
    eml_status st;

    st = eml_idx_parse(data, size, "fuzz.idx", &idx, &err);
    if (st == EML_OK) {
        size_t total = idx.count * idx.item;
        must(idx.ndims >= 1 && idx.ndims <= EML_IDX_MAX_DIMS);
        must(idx.count == idx.dims[0]);
        must(idx.data != NULL);
        for (i = 0; i < total; i++) sink ^= idx.data[i];
        must(eml_idx_write(&idx, &out, &out_len) == EML_OK);
        memset(&err, 0, sizeof(err));
        must(eml_idx_parse(out, out_len, "fuzz.idx", &back, &err) == EML_OK);
        must(back.ndims == idx.ndims && back.count == idx.count &&
             back.item == idx.item);
        must(memcmp(back.dims, idx.dims, sizeof(idx.dims)) == 0);
        must(total == 0 || memcmp(back.data, idx.data, total) == 0);
        /* Raw input must round-trip to the very same bytes. */
        if (size < 2 || data[0] != 0x1f || data[1] != 0x8b)
            must(out_len == size && memcmp(out, data, size) == 0);
        eml_idx_free(&back);
        eml_idx_free(&idx);
        free(out);
    } else {
        must(st < 0 && err.msg[0] != '\0');
        must(idx.data == NULL);
    }

    /* gunzip on its own, with a small cap so the cap path is reached. */
    memset(&err, 0, sizeof(err));
    st = eml_gunzip(data, size, 1 << 16, &raw, &raw_len, &err);
    if (st == EML_OK) {
        must(raw != NULL && raw_len <= (1 << 16));
        for (i = 0; i < raw_len; i++) sink ^= raw[i];
        free(raw);
    } else {
        must(raw == NULL && raw_len == 0 && err.msg[0] != '\0');
    }
    (void)sink;
    return 0;
}
