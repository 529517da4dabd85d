/*
 * safetensors_table.c - checks a safetensors file's tensor table as a
 * whole, once the header has been read (see safetensors_internal.h for how
 * the reader is split), and indexes it for lookups.
 *
 * Trusted code: no I/O, no printing, no exit.  Duplicate tensor names and
 * duplicate metadata keys are found by sorting once (n log n, whatever the
 * count), and the sorted arrays are the indexes eml_st_find and
 * eml_st_meta search.  Sorted by offsets, the tensors must tile the data
 * section exactly (start at 0, no gap, no overlap, end at its end), as
 * upstream safetensors requires; only then does a tensor get a pointer
 * into the data.
 *
 * Ownership: the indexes belong to the eml_st (freed by eml_st_free).
 */
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors_internal.h"

static int cmp_tensor_ptr(const void *a, const void *b)
{
    const eml_st_tensor *x = *(const eml_st_tensor *const *)a;
    const eml_st_tensor *y = *(const eml_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const eml_st_meta_entry *)a)->key,
                  ((const eml_st_meta_entry *)b)->key);
}

static int cmp_entry(const void *a, const void *b)
{
    const eml_st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* st->by_name, refusing a name given twice. */
static eml_status index_tensors(eml_st *st, eml_err *err)
{
    char shown[EML_ST_SHOWN];
    size_t i;
    if (st->n == 0) return EML_OK;
    st->by_name = malloc(st->n * sizeof(*st->by_name));
    if (st->by_name == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");
    for (i = 0; i < st->n; i++) st->by_name[i] = &st->t[i];
    qsort(st->by_name, st->n, sizeof(*st->by_name), cmp_tensor_ptr);
    for (i = 1; i < st->n; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "safetensors: duplicate tensor name %s",
                               eml_st_show(shown, st->by_name[i]->name));
    return EML_OK;
}

/* st->meta_by_key, refusing a key given twice. */
static eml_status index_meta(eml_st *st, eml_err *err)
{
    char shown[EML_ST_SHOWN];
    size_t i;
    if (st->n_meta == 0) return EML_OK;
    st->meta_by_key = malloc(st->n_meta * sizeof(*st->meta_by_key));
    if (st->meta_by_key == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "safetensors: out of memory");
    memcpy(st->meta_by_key, st->meta, st->n_meta * sizeof(*st->meta));
    qsort(st->meta_by_key, st->n_meta, sizeof(*st->meta_by_key), cmp_meta);
    for (i = 1; i < st->n_meta; i++)
        if (strcmp(st->meta_by_key[i - 1].key, st->meta_by_key[i].key) == 0)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "safetensors: duplicate __metadata__ key %s",
                               eml_st_show(shown, st->meta_by_key[i].key));
    return EML_OK;
}

/* Sorted by offsets, the tensors must start at 0, follow each other with
 * no gap and no overlap, and end exactly at the end of the data section. */
static eml_status check_tiling(const eml_st *st, eml_st_entry *ents,
                               uint64_t data_len, eml_err *err)
{
    char shown[EML_ST_SHOWN], shown2[EML_ST_SHOWN];
    uint64_t at = 0;
    size_t i;

    if (st->n > 1) qsort(ents, st->n, sizeof(*ents), cmp_entry);
    for (i = 0; i < st->n; i++) {
        const eml_st_entry *e = &ents[i];
        const char *nm = st->t[e->index].name;
        if (e->begin > at)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "tensor %s: data_offsets [%llu, %llu] leave a "
                               "gap of %llu bytes after the previous tensor",
                               eml_st_show(shown, nm),
                               (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               (unsigned long long)(e->begin - at));
        if (e->begin < at)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "tensor %s: data_offsets [%llu, %llu] overlap "
                               "tensor %s, which ends at %llu",
                               eml_st_show(shown, nm),
                               (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               eml_st_show(shown2,
                                           st->t[ents[i - 1].index].name),
                               (unsigned long long)at);
        if (e->end > data_len)
            return eml_err_set(err, EML_ERR_TRUNCATED,
                               "tensor %s: data_offsets [%llu, %llu] run past "
                               "the end of the data section (%llu bytes)",
                               eml_st_show(shown, nm),
                               (unsigned long long)e->begin,
                               (unsigned long long)e->end,
                               (unsigned long long)data_len);
        at = e->end;
    }
    if (at != data_len)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "safetensors: %llu byte%s after the last tensor's "
                           "data (tensors cover %llu of %llu data bytes)",
                           (unsigned long long)(data_len - at),
                           data_len - at == 1 ? "" : "s",
                           (unsigned long long)at,
                           (unsigned long long)data_len);
    return EML_OK;
}

eml_status eml_st_table_check(eml_st *st, eml_st_entry *ents,
                              const uint8_t *data, size_t data_len,
                              eml_err *err)
{
    size_t i;
    eml_status s = index_tensors(st, err);
    if (s == EML_OK) s = index_meta(st, err);
    if (s == EML_OK) s = check_tiling(st, ents, (uint64_t)data_len, err);
    if (s != EML_OK) return s;
    /* Sorting ents did not move the tensors: ents[i].index still names
     * them.  Offsets are now known to lie inside the data section. */
    for (i = 0; i < st->n; i++)
        st->t[ents[i].index].data =
            (const float *)(const void *)(data + ents[i].begin);
    return EML_OK;
}

/* ==== lookups ==== */

const eml_st_tensor *eml_st_find(const eml_st *st, const char *name)
{
    size_t lo = 0, hi;
    if (st == NULL || name == NULL) return NULL;
    hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->by_name[mid]->name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *eml_st_meta(const eml_st *st, const char *key)
{
    size_t lo = 0, hi;
    if (st == NULL || key == NULL) return NULL;
    hi = st->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta_by_key[mid].key);
        if (c == 0) return st->meta_by_key[mid].value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
