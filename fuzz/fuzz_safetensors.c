/*
 * fuzz_safetensors.c - libFuzzer target for eml_st_parse and the writer.
 *
 * Any input must give EML_OK or an error with a message, never a crash, a
 * leak or a read outside the buffer.  On success every tensor is copied out
 * (reading every data byte), every name and metadata key is looked up, and
 * the parsed file is written again with the writer and re-parsed: the
 * writer must accept everything the reader accepts, the second parse must
 * give the same tensors, and writing that gives the same bytes again.
 * Seeds: fuzz/corpus/safetensors/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/safetensors.h"
#include "formats/formats_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(int cond)
{
    if (!cond) abort();
}

/* Writes st back out; the writer must accept whatever the reader did. */
static void rewrite(const eml_st *st, uint8_t **out, size_t *len)
{
    eml_st_writer *w = eml_st_writer_new();
    size_t i;
    must(w != NULL);
    for (i = 0; i < eml_st_meta_count(st); i++) {
        const char *k, *v;
        eml_st_meta_at(st, i, &k, &v);
        must(eml_st_writer_meta(w, k, v) == EML_OK);
    }
    for (i = 0; i < eml_st_count(st); i++) {
        const eml_st_tensor *t = eml_st_get(st, i);
        must(eml_st_writer_add(w, t->name, t->shape, t->ndims, t->data) ==
             EML_OK);
    }
    must(eml_st_writer_finish(w, out, len) == EML_OK);
    eml_st_writer_free(w);
}

static void same(const eml_st *a, const eml_st *b)
{
    size_t i;
    must(eml_st_count(a) == eml_st_count(b));
    must(eml_st_meta_count(a) == eml_st_meta_count(b));
    for (i = 0; i < eml_st_meta_count(a); i++) {
        const char *k, *v;
        eml_st_meta_at(a, i, &k, &v);
        must(eml_st_meta(b, k) != NULL && strcmp(eml_st_meta(b, k), v) == 0);
    }
    for (i = 0; i < eml_st_count(a); i++) {
        const eml_st_tensor *x = eml_st_get(a, i), *y = eml_st_get(b, i);
        must(strcmp(x->name, y->name) == 0 && x->ndims == y->ndims &&
             x->count == y->count);
        must(memcmp(x->shape, y->shape, sizeof(x->shape[0]) * (size_t)x->ndims)
             == 0);
        must(x->count == 0 ||
             memcmp(x->data, y->data, x->count * sizeof(float)) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eml_st *st = NULL, *st2 = NULL;
    eml_err err = {{0}};
    uint8_t *out = NULL, *out2 = NULL;
    size_t len = 0, len2 = 0, i;
    volatile float sink = 0;
    eml_status s;

    s = eml_st_parse(data, size, &st, &err);
    if (s != EML_OK) {
        must(s < 0 && st == NULL && err.msg[0] != '\0');
        return 0;
    }
    for (i = 0; i < eml_st_count(st); i++) {
        const eml_st_tensor *t = eml_st_get(st, i);
        float *v = malloc(t->count * sizeof(float) + 1);
        size_t k;
        must(v != NULL);
        must(eml_st_find(st, t->name) == t);
        must(strlen(t->name) > 0 && strlen(t->name) < EML_ST_MAX_NAME);
        eml_st_copy(v, t);
        for (k = 0; k < t->count; k++) sink += v[k];
        free(v);
    }
    for (i = 0; i < eml_st_meta_count(st); i++) {
        const char *k, *v;
        eml_st_meta_at(st, i, &k, &v);
        must(eml_st_meta(st, k) != NULL);
        sink += (float)strlen(v);
    }

    rewrite(st, &out, &len);
    memset(&err, 0, sizeof(err));
    must(eml_st_parse(out, len, &st2, &err) == EML_OK);
    same(st, st2);
    rewrite(st2, &out2, &len2);
    must(len2 == len && memcmp(out, out2, len) == 0);

    (void)sink;
    eml_st_free(st2);
    eml_st_free(st);
    free(out);
    free(out2);
    return 0;
}
