/*
 * messages.c - the boundary's one table: a row per message of edl.h (its
 * name, version, kind, reply and struct) with a row per field (its kind,
 * where it sits in the struct, its bounds), all made by the preprocessor
 * from edl.h's lists, so that nothing here is written twice.  The codec
 * (codec.c), the frame layer's version check (frame.c), the fuzz targets
 * and the docs' message list read it.
 *
 * Each field's offset is taken through _Generic on the member's type: a
 * row whose kind does not match its member does not compile.
 *
 * Trusted code: constant data only.
 */
#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "enclaveml/boundary.h"

/* offsetof S's member f, if it has type T (else a compile error). */
#define OFF(S, f, T) _Generic(((S *)0)->f, T: offsetof(S, f))
#define OFF_ARRAY(S, f, T, n) _Generic(&((S *)0)->f, T(*)[n]: offsetof(S, f))

#define ROW_(S, KIND, ...) ROW_##KIND(S, #__VA_ARGS__, __VA_ARGS__)
#define INT_ROW(S, text, kind, T, f, lo, hi)                                 \
    {#f, kind, OFF(S, f, T), 0, lo, hi, 0, 0, 0, text},
#define ROW_U64(S, text, f, lo, hi)                                          \
    INT_ROW(S, text, EML_FIELD_U64, uint64_t, f, lo, hi)
#define ROW_INT(S, text, f, lo, hi)                                          \
    INT_ROW(S, text, EML_FIELD_INT, int, f, lo, hi)
#define ROW_LONG(S, text, f, lo, hi)                                         \
    INT_ROW(S, text, EML_FIELD_LONG, long, f, lo, hi)
#define ROW_F64(S, text, f, lo, hi)                                          \
    {#f, EML_FIELD_F64, OFF(S, f, double), 0, 0, 0, lo, hi, 0, text},
#define ROW_BYTES(S, text, f, max)                                           \
    {#f, EML_FIELD_BYTES, OFF(S, f, eml_bytes), 0, 0, 0, 0, 0, max, text},
#define ROW_FIXED(S, text, f, n)                                             \
    {#f, EML_FIELD_FIXED, OFF_ARRAY(S, f, uint8_t, n), 0, 0, 0, 0, 0, n,     \
     text},
#define ROW_COPY(S, text, f, max)                                            \
    {#f, EML_FIELD_COPY, OFF_ARRAY(S, f, uint8_t, max),                      \
     OFF(S, f##_len, size_t), 0, 0, 0, 0, max, text},
#define ROW_LIST(S, text, f, lo, hi, max)                                    \
    {#f, EML_FIELD_LIST, OFF_ARRAY(S, f, eml_bytes, hi),                     \
     OFF(S, n_##f, size_t), lo, hi, 0, 0, max, text},
#define ROW_EMBED(S, text, type, name)
#define ROW_IN_U64 ROW_U64
#define ROW_IN_INT ROW_INT
#define ROW_IN_LONG ROW_LONG
#define ROW_IN_F64 ROW_F64

/* Each message's field rows: fields_<NAME>[]. */
#define FIELDS_(NAME, type, version, kind, reply, T)                         \
    static const eml_field fields_##NAME[] = {EML_FIELDS_##NAME(ROW_, T)};
#define NO_FIELDS_(...)
EML_MESSAGES(FIELDS_, NO_FIELDS_)

#define DESC_(NAME, type, version, kind, reply, T)                           \
    [type] = {#NAME, version, EML_MSG_KIND_##kind, EML_MSG_##reply, #T,      \
              sizeof(T), fields_##NAME,                                      \
              sizeof(fields_##NAME) / sizeof(fields_##NAME[0])},
#define DESC_EMPTY_(NAME, type, version, kind, reply)                        \
    [type] = {#NAME, version, EML_MSG_KIND_##kind, EML_MSG_##reply, NULL, 0, \
              NULL, 0},

/* A type number used twice is an initializer overridden (-Werror); one
 * skipped leaves an empty row, which eml_msg_desc_of refuses and
 * tests/test_boundary.c finds. */
static const eml_msg_desc table[EML_MSG_TYPE_END] = {
    EML_MESSAGES(DESC_, DESC_EMPTY_)};

const eml_msg_desc *eml_msg_desc_of(uint32_t type)
{
    if (type == 0 || type >= EML_MSG_TYPE_END || table[type].name == NULL)
        return NULL;
    return &table[type];
}

const char *eml_msg_type_name(uint32_t type)
{
    const eml_msg_desc *d = eml_msg_desc_of(type);
    return d != NULL ? d->name : "?";
}
