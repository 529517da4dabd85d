/*
 * safetensors_header.c - reads a safetensors file's JSON header into its
 * tensor table (see safetensors_internal.h for how the reader is split).
 *
 * Trusted code fed hostile bytes: no I/O, no printing, no exit.  It walks
 * exactly the header's schema with the strict JSON reader of flatjson.c:
 * an object of tensor entries {"dtype", "shape", "data_offsets"} plus an
 * optional "__metadata__" object of strings.  Nesting is therefore at most
 * three levels deep (top object, tensor entry, shape array) by
 * construction, and a deeper '{' or '[' is refused where it appears,
 * without recursion.  Unknown keys, duplicate keys within an entry and
 * anything outside the schema are errors; each entry is checked against
 * itself (dtype, shape product, byte length) here, the table as a whole in
 * safetensors_table.c.  Layout and rules: docs/formats.md.
 *
 * Ownership: fills the eml_st it is given (tensors, metadata in its arena)
 * and the entry array, both freed by the caller.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/formats_internal.h"
#include "formats/safetensors_internal.h"

static const char *const known_dtypes[] = {
    "BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4",
    "F6_E2M3", "F6_E3M2", "I16", "U16", "F16", "BF16", "I32", "U32",
    "F64", "I64", "U64", "C64",
};

/* A tensor entry's fields as read, before they are checked. */
typedef struct fields {
    char dtype[32];
    size_t dlen; /* decoded length of dtype, maybe >= sizeof(dtype) */
    uint64_t dims[EML_ST_MAX_DIMS];
    uint64_t offs[2];
    int n_offs;
} fields;

static void format_shape(char *out, size_t cap, const int64_t *shape,
                         int ndims)
{
    size_t pos = 0;
    int i, n;
    n = snprintf(out, cap, "[");
    if (n > 0) pos = (size_t)n;
    for (i = 0; i < ndims && pos < cap; i++) {
        n = snprintf(out + pos, cap - pos, "%s%lld", i > 0 ? ", " : "",
                     (long long)shape[i]);
        if (n > 0) pos += (size_t)n;
    }
    if (pos < cap) snprintf(out + pos, cap - pos, "]");
}

/* [u, u, ...] with at most max entries. */
static eml_status parse_array(eml_jreader *r, uint64_t *vals, int max, int *n,
                              const char *tname, const char *field)
{
    eml_status st;
    int more = 1;
    char shown[EML_ST_SHOWN];

    *n = 0;
    st = eml_jreader_expect(r, '[', "'[' to open an array");
    if (st != EML_OK) return st;
    if (eml_jreader_take(r, ']')) return EML_OK;
    while (more) {
        if (*n == max)
            return eml_jreader_fail(r, EML_ERR_RANGE,
                                    "tensor %s: %s has more than %d entries",
                                    eml_st_show(shown, tname), field, max);
        st = eml_jreader_uint(r, &vals[*n]);
        if (st != EML_OK) return st;
        (*n)++;
        st = eml_jreader_next(r, ']', &more);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

/* Reads {"dtype":..,"shape":[..],"data_offsets":[b,e]} (any key order) for
 * tensor t into f and t->ndims: every key once, no other key. */
static eml_status read_fields(eml_jreader *r, eml_st_tensor *t, fields *f)
{
    char shown[EML_ST_SHOWN], key[32];
    int have_dtype = 0, have_shape = 0, have_offs = 0, more = 1;
    size_t klen = 0;
    eml_status st;

    st = eml_jreader_expect(r, '{', "'{' to open the tensor's entry");
    if (st != EML_OK) return st;
    eml_jreader_ws(r);
    if (eml_jreader_peek(r) == '}')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "tensor %s: empty entry, needs dtype, shape "
                                "and data_offsets",
                                eml_st_show(shown, t->name));
    while (more) {
        size_t key_at;
        int *seen = NULL;
        eml_jreader_ws(r);
        key_at = r->pos;
        st = eml_jreader_string(r, key, sizeof(key), &klen);
        if (st != EML_OK) return st;
        if (klen < sizeof(key)) {
            if (strcmp(key, "dtype") == 0) seen = &have_dtype;
            if (strcmp(key, "shape") == 0) seen = &have_shape;
            if (strcmp(key, "data_offsets") == 0) seen = &have_offs;
        }
        if (seen == NULL) {
            char kshown[EML_ST_SHOWN];
            r->pos = key_at;
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "tensor %s: unknown key \"%s%s\" "
                                    "(expected dtype, shape, data_offsets)",
                                    eml_st_show(shown, t->name),
                                    eml_st_show(kshown, key),
                                    klen < sizeof(key) ? "" : "...");
        }
        if ((*seen)++) {
            r->pos = key_at;
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "tensor %s: duplicate key \"%s\"",
                                    eml_st_show(shown, t->name), key);
        }
        st = eml_jreader_expect(r, ':', "':' after a key");
        if (st != EML_OK) return st;
        if (seen == &have_dtype) {
            st = eml_jreader_string(r, f->dtype, sizeof(f->dtype), &f->dlen);
        } else if (seen == &have_shape) {
            int nd;
            st = parse_array(r, f->dims, EML_ST_MAX_DIMS, &nd, t->name,
                             "shape");
            t->ndims = nd;
        } else {
            st = parse_array(r, f->offs, 2, &f->n_offs, t->name,
                             "data_offsets");
        }
        if (st != EML_OK) return st;
        st = eml_jreader_next(r, '}', &more);
        if (st != EML_OK) return st;
    }
    if (!have_dtype || !have_shape || !have_offs)
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "tensor %s: entry has no %s",
                                eml_st_show(shown, t->name),
                                !have_dtype ? "dtype"
                                : !have_shape ? "shape" : "data_offsets");
    return EML_OK;
}

/* Checks what read_fields found against itself: dtype, shape product,
 * byte length.  Placement in the data section is checked later, over
 * all tensors. */
static eml_status check_fields(eml_st_tensor *t, const fields *f,
                               eml_st_entry *e, eml_err *err)
{
    char shown[EML_ST_SHOWN], shape_txt[256];
    size_t bytes = 0, i;

    if (f->dlen >= sizeof(f->dtype) || strcmp(f->dtype, "F32") != 0) {
        char dshown[EML_ST_SHOWN];
        for (i = 0; i < sizeof(known_dtypes) / sizeof(known_dtypes[0]); i++)
            if (f->dlen < sizeof(f->dtype) &&
                strcmp(f->dtype, known_dtypes[i]) == 0)
                return eml_err_set(err, EML_ERR_UNSUPPORTED,
                                   "tensor %s: dtype %s is not supported "
                                   "(only F32)",
                                   eml_st_show(shown, t->name), f->dtype);
        return eml_err_set(err, EML_ERR_FORMAT,
                           "tensor %s: unknown dtype \"%s%s\"",
                           eml_st_show(shown, t->name),
                           eml_st_show(dshown, f->dtype),
                           f->dlen < sizeof(f->dtype) ? "" : "...");
    }
    if (f->n_offs != 2)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "tensor %s: data_offsets has %d entries, needs "
                           "2 [begin, end]",
                           eml_st_show(shown, t->name), f->n_offs);
    for (i = 0; i < (size_t)t->ndims; i++) {
        if (f->dims[i] > (uint64_t)INT64_MAX)
            return eml_err_set(err, EML_ERR_RANGE,
                               "tensor %s: shape entry %zu (%llu) is larger "
                               "than 2^63-1",
                               eml_st_show(shown, t->name), i,
                               (unsigned long long)f->dims[i]);
        t->shape[i] = (int64_t)f->dims[i];
    }
    format_shape(shape_txt, sizeof(shape_txt), t->shape, t->ndims);
    if (!eml_st_shape_bytes(t->shape, t->ndims, &t->count, &bytes))
        return eml_err_set(err, EML_ERR_RANGE,
                           "tensor %s: shape %s of F32 has more bytes than "
                           "fit in memory",
                           eml_st_show(shown, t->name), shape_txt);
    e->begin = f->offs[0];
    e->end = f->offs[1];
    if (e->end < e->begin)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "tensor %s: data_offsets [%llu, %llu] end before "
                           "they begin",
                           eml_st_show(shown, t->name),
                           (unsigned long long)e->begin,
                           (unsigned long long)e->end);
    if (e->end - e->begin != (uint64_t)bytes)
        return eml_err_set(err, EML_ERR_SHAPE,
                           "tensor %s: data_offsets [%llu, %llu] do not "
                           "match shape %s of F32 (%zu bytes)",
                           eml_st_show(shown, t->name),
                           (unsigned long long)e->begin,
                           (unsigned long long)e->end, shape_txt, bytes);
    return EML_OK;
}

static eml_status parse_tensor(eml_jreader *r, eml_st_tensor *t,
                               eml_st_entry *e)
{
    fields f;
    eml_status st;
    memset(&f, 0, sizeof(f));
    st = read_fields(r, t, &f);
    if (st != EML_OK) return st;
    return check_fields(t, &f, e, r->err);
}

/* One decoded string into st's arena; *out points at it. */
static eml_status arena_string(eml_jreader *r, eml_st *st, char **out)
{
    size_t len = 0, room = st->arena_cap - st->arena_used;
    char *s = st->arena + st->arena_used;
    eml_status rc = eml_jreader_string(r, s, room, &len);
    if (rc != EML_OK) return rc;
    /* Cannot happen: decoded text is shorter than its JSON. */
    if (len >= room)
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "__metadata__ does not fit its header");
    st->arena_used += len + 1;
    *out = s;
    return EML_OK;
}

static eml_status parse_meta(eml_jreader *r, eml_st *st)
{
    char shown[EML_ST_SHOWN];
    int more = 1;
    eml_status s;

    s = eml_jreader_expect(r, '{',
                           "'{' to open __metadata__ (an object of strings)");
    if (s != EML_OK) return s;
    if (st->arena == NULL) {
        /* Decoded strings are never longer than their JSON text, so the
         * header length bounds them all: one allocation, never moved. */
        st->arena_cap = r->n + 1;
        st->arena = malloc(st->arena_cap);
        if (st->arena == NULL)
            return eml_err_set(r->err, EML_ERR_NOMEM,
                               "safetensors header: out of memory for "
                               "metadata");
    }
    if (eml_jreader_take(r, '}')) return EML_OK;
    while (more) {
        eml_st_meta_entry m;
        char *k, *v;

        if (st->n_meta == st->cap_meta) {
            size_t ncap = st->cap_meta ? st->cap_meta * 2 : 8;
            eml_st_meta_entry *nm = realloc(st->meta, ncap * sizeof(*nm));
            if (nm == NULL)
                return eml_err_set(r->err, EML_ERR_NOMEM,
                                   "safetensors header: out of memory for "
                                   "metadata");
            st->meta = nm;
            st->cap_meta = ncap;
        }
        s = arena_string(r, st, &k);
        if (s != EML_OK) return s;
        s = eml_jreader_expect(r, ':', "':' after a key");
        if (s != EML_OK) return s;
        eml_jreader_ws(r);
        if (eml_jreader_peek(r) != '"')
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "__metadata__ value for \"%s\" must be a "
                                    "string",
                                    eml_st_show(shown, k));
        s = arena_string(r, st, &v);
        if (s != EML_OK) return s;
        m.key = k;
        m.value = v;
        st->meta[st->n_meta++] = m;
        s = eml_jreader_next(r, '}', &more);
        if (s != EML_OK) return s;
    }
    return EML_OK;
}

static eml_status grow_tensors(eml_st *st, eml_st_entry **ents, eml_err *err)
{
    size_t ncap = st->cap ? st->cap * 2 : 16;
    eml_st_tensor *nt;
    eml_st_entry *ne;
    if (ncap > SIZE_MAX / sizeof(*nt))
        return eml_err_set(err, EML_ERR_NOMEM,
                           "safetensors header: too many tensors");
    nt = realloc(st->t, ncap * sizeof(*nt));
    if (nt == NULL) goto oom;
    st->t = nt;
    ne = realloc(*ents, ncap * sizeof(*ne));
    if (ne == NULL) goto oom;
    *ents = ne;
    st->cap = ncap;
    return EML_OK;
oom:
    return eml_err_set(err, EML_ERR_NOMEM,
                       "safetensors header: out of memory for %zu tensors",
                       ncap);
}

/* The name of the next top-level member into name (checked: 1..255 bytes),
 * and the ':' after it. */
static eml_status member_name(eml_jreader *r, char name[EML_ST_MAX_NAME],
                              size_t *nlen, size_t *key_at)
{
    char shown[EML_ST_SHOWN];
    eml_status s;

    eml_jreader_ws(r);
    *key_at = r->pos;
    s = eml_jreader_string(r, name, EML_ST_MAX_NAME, nlen);
    if (s != EML_OK) return s;
    if (*nlen >= EML_ST_MAX_NAME) {
        r->pos = *key_at;
        return eml_jreader_fail(r, EML_ERR_RANGE,
                                "tensor name of %zu bytes is longer than the "
                                "limit of %d (%s)",
                                *nlen, EML_ST_MAX_NAME - 1,
                                eml_st_show(shown, name));
    }
    if (*nlen == 0) {
        r->pos = *key_at;
        return eml_jreader_fail(r, EML_ERR_FORMAT, "tensor name is empty");
    }
    return eml_jreader_expect(r, ':', "':' after a key");
}

eml_status eml_st_header_read(eml_st *st, eml_st_entry **ents,
                              const uint8_t *h, size_t n, eml_err *err)
{
    eml_jreader r;
    int more = 1, have_meta = 0;
    eml_status s;

    eml_jreader_init(&r, h, n, "safetensors header", err);
    r.pos = 1; /* past the '{' the caller checked */
    if (eml_jreader_take(&r, '}')) more = 0;
    while (more) {
        char name[EML_ST_MAX_NAME];
        size_t nlen = 0, key_at;
        eml_st_tensor *t;

        s = member_name(&r, name, &nlen, &key_at);
        if (s != EML_OK) return s;
        if (strcmp(name, EML_ST_META_KEY) == 0) {
            if (have_meta++) {
                r.pos = key_at;
                return eml_jreader_fail(&r, EML_ERR_FORMAT,
                                        "duplicate key \"__metadata__\"");
            }
            s = parse_meta(&r, st);
        } else {
            if (st->n == st->cap) {
                s = grow_tensors(st, ents, err);
                if (s != EML_OK) return s;
            }
            t = &st->t[st->n];
            memset(t, 0, sizeof(*t));
            memcpy(t->name, name, nlen + 1);
            (*ents)[st->n].index = st->n;
            s = parse_tensor(&r, t, &(*ents)[st->n]);
            if (s == EML_OK) st->n++;
        }
        if (s != EML_OK) return s;
        s = eml_jreader_next(&r, '}', &more);
        if (s != EML_OK) return s;
    }
    if (!eml_jreader_at_end(&r))
        return eml_jreader_fail(&r, EML_ERR_FORMAT,
                                "unexpected bytes after the header's JSON "
                                "object (only whitespace may pad it)");
    return EML_OK;
}
