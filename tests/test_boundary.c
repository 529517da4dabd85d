/*
 * test_boundary.c - the boundary's one table and codec (src/boundary/),
 * message by message as edl.h lists them: every type has a row with its
 * own version, kind and reply; samples of every message encode, decode
 * back to the same values and encode to the same bytes; every bounded
 * field refuses a value just outside its bounds, both on the wire (the
 * decoder) and in the struct (the encoder); a frame cut short, with a
 * byte too many, or with another version than its type's is refused; the
 * channel stamps running seqs on requests and the request's seq on
 * replies; and docs/enclave.md's message list is the table's
 * (EML_WRITE_DOCS=1 rewrites it).
 *
 * Nothing here is hand-written per message: a message added to edl.h is
 * tested by adding it there.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/le.h"
#include "enclaveml/boundary.h"

/* ==== samples made from the table ==== */

static uint8_t g_pattern[4096];

static void pattern_init(void)
{
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(g_pattern); i++) {
        x = x * 1103515245u + 12345u;
        g_pattern[i] = (uint8_t)(x >> 16);
    }
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Variant 0: the lows (empty strings, the smallest numbers and counts),
 * 1: the highs (long strings, the largest numbers), 2: in between. */
static void set_int(const eml_field *f, uint8_t *s, int variant)
{
    uint64_t v = variant == 0   ? f->lo
                 : variant == 1 ? f->hi
                                : f->lo + (f->hi - f->lo) / 3;
    if (f->kind == EML_FIELD_U64) *(uint64_t *)(s + f->off) = v;
    else if (f->kind == EML_FIELD_INT) *(int *)(s + f->off) = (int)v;
    else *(long *)(s + f->off) = (long)v;
}

static void fill_sample(const eml_msg_desc *d, void *msg, int variant)
{
    uint8_t *s = msg;
    memset(msg, 0, d->size);
    for (size_t i = 0; i < d->n_fields; i++) {
        const eml_field *f = &d->fields[i];
        size_t n = variant == 0 ? 0 : min_size(f->max, variant == 1 ? 300 : 5);
        switch (f->kind) {
        case EML_FIELD_U64:
        case EML_FIELD_INT:
        case EML_FIELD_LONG: set_int(f, s, variant); break;
        case EML_FIELD_F64:
            *(double *)(s + f->off) = variant == 0   ? f->flo
                                      : variant == 1 ? f->fhi
                                      : f->flo / 2 + f->fhi / 2 + 0.125;
            break;
        case EML_FIELD_BYTES: {
            eml_bytes *b = (eml_bytes *)(s + f->off);
            b->p = g_pattern + i;
            b->n = n;
            break;
        }
        case EML_FIELD_FIXED: memcpy(s + f->off, g_pattern + i, f->max); break;
        case EML_FIELD_COPY:
            memcpy(s + f->off, g_pattern + 2 * i, n);
            *(size_t *)(s + f->len_off) = n;
            break;
        case EML_FIELD_LIST: {
            size_t count = variant == 1 ? min_size(f->hi, 3) : f->lo;
            eml_bytes *items = (eml_bytes *)(s + f->off);
            for (size_t k = 0; k < count; k++) {
                items[k].p = g_pattern + k;
                items[k].n = min_size(f->max, k * 7 + (size_t)variant);
            }
            *(size_t *)(s + f->len_off) = count;
            break;
        }
        }
    }
}

static int same_bytes(const uint8_t *a, size_t an, const uint8_t *b,
                      size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* 1 if the two structs hold the same values in every field. */
static int same_values(const eml_msg_desc *d, const void *x, const void *y)
{
    const uint8_t *a = x, *b = y;
    for (size_t i = 0; i < d->n_fields; i++) {
        const eml_field *f = &d->fields[i];
        const eml_bytes *ba = (const eml_bytes *)(a + f->off);
        const eml_bytes *bb = (const eml_bytes *)(b + f->off);
        size_t la, lb;
        switch (f->kind) {
        case EML_FIELD_U64:
        case EML_FIELD_F64:
            if (memcmp(a + f->off, b + f->off, 8) != 0) return 0;
            break;
        case EML_FIELD_INT:
            if (*(const int *)(a + f->off) != *(const int *)(b + f->off))
                return 0;
            break;
        case EML_FIELD_LONG:
            if (*(const long *)(a + f->off) != *(const long *)(b + f->off))
                return 0;
            break;
        case EML_FIELD_BYTES:
            if (!same_bytes(ba->p, ba->n, bb->p, bb->n)) return 0;
            break;
        case EML_FIELD_FIXED:
            if (memcmp(a + f->off, b + f->off, f->max) != 0) return 0;
            break;
        case EML_FIELD_COPY:
            la = *(const size_t *)(a + f->len_off);
            lb = *(const size_t *)(b + f->len_off);
            if (!same_bytes(a + f->off, la, b + f->off, lb)) return 0;
            break;
        case EML_FIELD_LIST:
            la = *(const size_t *)(a + f->len_off);
            lb = *(const size_t *)(b + f->len_off);
            if (la != lb) return 0;
            for (size_t k = 0; k < la; k++)
                if (!same_bytes(ba[k].p, ba[k].n, bb[k].p, bb[k].n)) return 0;
            break;
        }
    }
    return 1;
}

static const uint8_t *payload(const eml_msg *m)
{
    return m->buf + EML_MSG_HEADER;
}

static size_t payload_len(const eml_msg *m) { return m->len - EML_MSG_HEADER; }

/* ==== the table ==== */

static void test_table(void **state)
{
    (void)state;
    assert_null(eml_msg_desc_of(0));
    assert_null(eml_msg_desc_of(EML_MSG_TYPE_END));
    assert_null(eml_msg_desc_of(UINT32_MAX));
    assert_string_equal(eml_msg_type_name(EML_MSG_TRAIN), "TRAIN");
    assert_string_equal(eml_msg_type_name(0), "?");
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of(t);
        if (d == NULL) fail_msg("type %u has no row in the table", t);
        assert_true(d->version >= 1);
        assert_true((d->size == 0) == (d->n_fields == 0));
        assert_true((d->size == 0) == (d->type_name == NULL));
        if (d->kind == EML_MSG_KIND_ECALL || d->kind == EML_MSG_KIND_OCALL) {
            const eml_msg_desc *r = eml_msg_desc_of(d->reply);
            if (r == NULL || r->kind != EML_MSG_KIND_REPLY)
                fail_msg("%s: its reply is not a reply", d->name);
        } else {
            assert_int_equal(d->reply, EML_MSG_NONE);
        }
        for (size_t i = 0; i < d->n_fields; i++) {
            const eml_field *f = &d->fields[i];
            assert_true(f->lo <= f->hi);
            if (f->kind == EML_FIELD_INT) assert_true(f->hi <= INT_MAX);
            if (f->kind == EML_FIELD_LONG) assert_true(f->hi <= LONG_MAX);
            if (f->kind == EML_FIELD_F64) assert_true(f->flo <= f->fhi);
            if (f->kind == EML_FIELD_LIST) assert_true(f->lo >= 1);
            assert_true(f->off < d->size);
            assert_non_null(strstr(f->text, f->name));
        }
    }
}

/* ==== round trips ==== */

static void test_round_trips(void **state)
{
    (void)state;
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of((uint16_t)t);
        for (int variant = 0; variant < 3; variant++) {
            eml_msg_any in, out;
            void *pin = d->size ? &in : NULL, *pout = d->size ? &out : NULL;
            if (d->size) fill_sample(d, &in, variant);
            eml_msg m, again;
            eml_err err = {0};
            eml_status st =
                eml_boundary_encode((uint16_t)t, pin, d->size, &m, &err);
            if (st != EML_OK) fail_msg("%s: %s", d->name, err.msg);
            st = eml_boundary_decode((uint16_t)t, payload(&m),
                                     payload_len(&m), pout, d->size, &err);
            if (st != EML_OK) fail_msg("%s: %s", d->name, err.msg);
            if (d->size && !same_values(d, &in, &out))
                fail_msg("%s (sample %d) decodes to other values", d->name,
                         variant);
            st = eml_boundary_encode((uint16_t)t, pout, d->size, &again, &err);
            assert_int_equal(st, EML_OK);
            assert_int_equal(again.len, m.len);
            assert_memory_equal(again.buf, m.buf, m.len);
            /* A struct of another size is refused. */
            assert_int_equal(eml_boundary_decode((uint16_t)t, payload(&m),
                                                 payload_len(&m), &out,
                                                 d->size + 8, NULL),
                             EML_ERR_INVALID);
            eml_msg_free(&m);
            eml_msg_free(&again);
        }
    }
}

/* Every frame cut short, and one a byte too long, is refused. */
static void test_short_and_trailing(void **state)
{
    (void)state;
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of((uint16_t)t);
        eml_msg_any in, out;
        if (d->size) fill_sample(d, &in, 1);
        eml_msg m;
        assert_int_equal(eml_boundary_encode((uint16_t)t, d->size ? &in : NULL,
                                             d->size, &m, NULL),
                         EML_OK);
        size_t n = payload_len(&m);
        for (size_t k = 0; k < n; k++)
            if (eml_boundary_decode((uint16_t)t, payload(&m), k,
                                    d->size ? &out : NULL, d->size,
                                    NULL) == EML_OK)
                fail_msg("%s: a %zu-byte prefix of %zu decoded", d->name, k,
                         n);
        uint8_t *longer = malloc(n + 1);
        assert_non_null(longer);
        if (n > 0) memcpy(longer, payload(&m), n);
        longer[n] = 0;
        eml_err err = {0};
        assert_int_equal(eml_boundary_decode((uint16_t)t, longer, n + 1,
                                             d->size ? &out : NULL, d->size,
                                             &err),
                         EML_ERR_FORMAT);
        assert_non_null(strstr(err.msg, d->name));
        free(longer);
        eml_msg_free(&m);
    }
}

/* ==== bounds ==== */

/* Where field i starts in a payload, and how long it is there. */
static void field_span(const eml_msg_desc *d, const uint8_t *p, size_t n,
                       size_t i, size_t *at, size_t *len)
{
    eml_msg_reader r;
    eml_msg_reader_init(&r, p, n);
    for (size_t k = 0; k <= i; k++) {
        const eml_field *f = &d->fields[k];
        size_t start = r.pos;
        const uint8_t *b;
        size_t bn;
        uint64_t v;
        if (f->kind == EML_FIELD_LIST) {
            assert_int_equal(eml_msg_get_u64(&r, &v), EML_OK);
            for (uint64_t j = 0; j < v; j++)
                assert_int_equal(eml_msg_get_bytes(&r, SIZE_MAX, &b, &bn),
                                 EML_OK);
        } else if (f->kind == EML_FIELD_BYTES || f->kind == EML_FIELD_FIXED ||
                   f->kind == EML_FIELD_COPY) {
            assert_int_equal(eml_msg_get_bytes(&r, SIZE_MAX, &b, &bn), EML_OK);
        } else {
            assert_int_equal(eml_msg_get_u64(&r, &v), EML_OK);
        }
        *at = start;
        *len = r.pos - start;
    }
}

/* The sample payload with field i's wire bytes replaced by rep. */
static eml_status decode_with(const eml_msg_desc *d, const eml_msg *m,
                              size_t i, const uint8_t *rep, size_t rep_n,
                              eml_err *err)
{
    size_t at, len, n = payload_len(m);
    field_span(d, payload(m), n, i, &at, &len);
    size_t total = n - len + rep_n;
    uint8_t *p = malloc(total ? total : 1);
    assert_non_null(p);
    memcpy(p, payload(m), at);
    memcpy(p + at, rep, rep_n);
    memcpy(p + at + rep_n, payload(m) + at + len, n - at - len);
    eml_msg_any out;
    eml_status st = eml_boundary_decode(m->type, p, total, &out, d->size, err);
    free(p);
    return st;
}

/* A byte string of n bytes on the wire (u32 length + bytes). */
static uint8_t *wire_bytes(size_t n, size_t *out_n)
{
    uint8_t *p = calloc(1, 4 + n);
    assert_non_null(p);
    eml_put_le32(p, (uint32_t)n);
    *out_n = 4 + n;
    return p;
}

/* Expects the decoder to refuse field i holding rep, naming it. */
static void refuse(const eml_msg_desc *d, const eml_msg *m, size_t i,
                   const uint8_t *rep, size_t rep_n, eml_status want,
                   const char *what)
{
    eml_err err = {0};
    eml_status st = decode_with(d, m, i, rep, rep_n, &err);
    if (st != want)
        fail_msg("%s.%s %s: status %d, expected %d (%s)", d->name,
                 d->fields[i].name, what, st, want, err.msg);
    if (strstr(err.msg, d->fields[i].name) == NULL)
        fail_msg("%s.%s: \"%s\" does not name the field", d->name,
                 d->fields[i].name, err.msg);
}

static void wire_bounds(const eml_msg_desc *d, const eml_msg *m, size_t i)
{
    const eml_field *f = &d->fields[i];
    uint8_t w[8];
    size_t wn;
    uint8_t *big;
    eml_err err = {0};
    switch (f->kind) {
    case EML_FIELD_U64:
    case EML_FIELD_INT:
    case EML_FIELD_LONG:
        if (f->hi < UINT64_MAX) {
            eml_put_le64(w, f->hi + 1);
            refuse(d, m, i, w, 8, EML_ERR_RANGE, "over its maximum");
            eml_put_le64(w, UINT64_MAX);
            refuse(d, m, i, w, 8, EML_ERR_RANGE, "at UINT64_MAX");
        }
        if (f->lo > 0) {
            eml_put_le64(w, f->lo - 1);
            refuse(d, m, i, w, 8, EML_ERR_RANGE, "under its minimum");
        }
        eml_put_le64(w, f->hi);
        assert_int_equal(decode_with(d, m, i, w, 8, &err), EML_OK);
        break;
    case EML_FIELD_F64: {
        const double bad[] = {NAN, INFINITY, -INFINITY};
        for (int k = 0; k < 3; k++) {
            uint64_t bits;
            memcpy(&bits, &bad[k], 8);
            eml_put_le64(w, bits);
            refuse(d, m, i, w, 8, EML_ERR_FORMAT, "not finite");
        }
        double out[2] = {nextafter(f->fhi, INFINITY),
                         nextafter(f->flo, -INFINITY)};
        for (int k = 0; k < 2; k++) {
            if (!isfinite(out[k])) continue;
            uint64_t bits;
            memcpy(&bits, &out[k], 8);
            eml_put_le64(w, bits);
            refuse(d, m, i, w, 8, EML_ERR_RANGE, "out of its range");
        }
        break;
    }
    case EML_FIELD_BYTES:
    case EML_FIELD_COPY:
        big = wire_bytes(f->max + 1, &wn);
        refuse(d, m, i, big, wn, EML_ERR_RANGE, "over its maximum");
        eml_put_le32(big, (uint32_t)f->max);
        assert_int_equal(decode_with(d, m, i, big, wn - 1, &err), EML_OK);
        /* claiming more bytes than follow */
        assert_int_not_equal(decode_with(d, m, i, big, wn - 2, &err),
                             EML_OK);
        free(big);
        break;
    case EML_FIELD_FIXED:
        big = wire_bytes(f->max + 1, &wn);
        refuse(d, m, i, big, wn, EML_ERR_RANGE, "a byte longer");
        eml_put_le32(big, (uint32_t)f->max - 1);
        refuse(d, m, i, big, wn - 2, EML_ERR_FORMAT, "a byte shorter");
        free(big);
        break;
    case EML_FIELD_LIST: {
        eml_put_le64(w, f->hi + 1);
        refuse(d, m, i, w, 8, EML_ERR_RANGE, "with too many items");
        eml_put_le64(w, f->lo - 1);
        refuse(d, m, i, w, 8, EML_ERR_RANGE, "with too few items");
        size_t in;
        uint8_t *item = wire_bytes(f->max + 1, &in);
        uint8_t *list = malloc(8 + in);
        assert_non_null(list);
        eml_put_le64(list, 1);
        memcpy(list + 8, item, in);
        refuse(d, m, i, list, 8 + in, EML_ERR_RANGE, "an item too long");
        free(item);
        free(list);
        break;
    }
    }
}

/* The encoder refuses field i set just outside its bounds. */
static void struct_bounds(const eml_msg_desc *d, uint16_t type, size_t i)
{
    const eml_field *f = &d->fields[i];
    eml_msg_any s;
    uint8_t *b = (uint8_t *)&s;
    for (int k = 0; k < 3; k++) {
        fill_sample(d, &s, 2);
        int ok = 1;
        if (f->kind == EML_FIELD_INT || f->kind == EML_FIELD_LONG) {
            long lim = f->kind == EML_FIELD_INT ? INT_MAX : LONG_MAX;
            ok = (k != 1 || f->lo > 0) && (k != 2 || f->hi < (uint64_t)lim);
            long v = !ok ? 0
                     : k == 0 ? -1
                     : k == 1 ? (long)f->lo - 1
                              : (long)f->hi + 1;
            if (f->kind == EML_FIELD_INT) *(int *)(b + f->off) = (int)v;
            else *(long *)(b + f->off) = v;
        } else if (f->kind == EML_FIELD_U64) {
            ok = k == 2 && f->hi < UINT64_MAX;
            *(uint64_t *)(b + f->off) = f->hi + 1;
        } else if (f->kind == EML_FIELD_F64) {
            *(double *)(b + f->off) = k == 0 ? NAN
                                      : k == 1 ? nextafter(f->flo, -INFINITY)
                                               : nextafter(f->fhi, INFINITY);
        } else if (f->kind == EML_FIELD_BYTES) {
            ok = k == 0;
            ((eml_bytes *)(b + f->off))->n = f->max + 1;
        } else if (f->kind == EML_FIELD_COPY) {
            ok = k == 0;
            *(size_t *)(b + f->len_off) = f->max + 1;
        } else if (f->kind == EML_FIELD_LIST) {
            ok = k < 2;
            *(size_t *)(b + f->len_off) = k == 0 ? f->hi + 1 : f->lo - 1;
        } else {
            ok = 0; /* FIXED: always its length */
        }
        if (!ok) continue;
        eml_msg m;
        eml_err err = {0};
        if (eml_boundary_encode(type, &s, d->size, &m, &err) == EML_OK)
            fail_msg("%s.%s: the encoder took a value out of bounds (%d)",
                     d->name, f->name, k);
        assert_null(m.buf);
        assert_non_null(strstr(err.msg, f->name));
    }
}

static void test_bounds(void **state)
{
    (void)state;
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of((uint16_t)t);
        if (d->size == 0) continue;
        eml_msg_any in;
        fill_sample(d, &in, 2);
        eml_msg m;
        assert_int_equal(eml_boundary_encode((uint16_t)t, &in, d->size, &m,
                                             NULL),
                         EML_OK);
        for (size_t i = 0; i < d->n_fields; i++) {
            wire_bounds(d, &m, i);
            struct_bounds(d, (uint16_t)t, i);
        }
        eml_msg_free(&m);
    }
}

/* ==== versions and seqs ==== */

static void test_versions(void **state)
{
    (void)state;
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of(t);
        uint8_t h[16] = {'E', 'M', 'L', 'M'};
        h[6] = (uint8_t)t;
        h[7] = (uint8_t)(t >> 8);
        uint16_t type;
        uint32_t len;
        const uint16_t bad[] = {0, (uint16_t)(d->version + 1),
                                (uint16_t)(d->version + 256), 0xffff};
        for (int k = 0; k < 4; k++) {
            h[4] = (uint8_t)bad[k];
            h[5] = (uint8_t)(bad[k] >> 8);
            assert_int_equal(eml_msg_parse_header(h, &type, &len),
                             EML_ERR_UNSUPPORTED);
            assert_int_equal(type, 0);
        }
        h[4] = (uint8_t)d->version;
        h[5] = (uint8_t)(d->version >> 8);
        assert_int_equal(eml_msg_parse_header(h, &type, &len), EML_OK);
        assert_int_equal(type, t);
        /* What the encoder stamps. */
        eml_msg_any s;
        if (d->size) fill_sample(d, &s, 0);
        eml_msg m;
        assert_int_equal(eml_boundary_encode((uint16_t)t, d->size ? &s : NULL,
                                             d->size, &m, NULL),
                         EML_OK);
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        eml_channel c;
        eml_channel_init(&c, sv[0]);
        assert_int_equal(eml_msg_send(&c, &m), EML_OK);
        uint8_t got[EML_MSG_HEADER];
        assert_int_equal(read(sv[1], got, sizeof(got)), (ssize_t)sizeof(got));
        assert_int_equal(got[4] | got[5] << 8, d->version);
        eml_channel_free(&c);
        close(sv[0]);
        close(sv[1]);
        eml_msg_free(&m);
    }
}

static void test_seqs(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    eml_channel a, b;
    eml_channel_init(&a, sv[0]);
    eml_channel_init(&b, sv[1]);
    eml_ecall_ping q = {{(const uint8_t *)"x", 1}};
    eml_reply_pong r = {{(const uint8_t *)"x", 1}};
    uint32_t seq = 99;
    uint16_t type;
    const uint8_t *p;
    size_t n;
    /* Requests count up; a reply carries its request's seq and does not
     * count. */
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(eml_boundary_send(&a, EML_MSG_PING, &q, sizeof(q),
                                           &seq, NULL),
                         EML_OK);
        assert_int_equal(seq, i);
        assert_int_equal(eml_msg_recv(&b, &type, &p, &n), EML_OK);
        assert_int_equal(b.recv_seq, i);
        assert_int_equal(eml_boundary_reply(&b, EML_MSG_PONG, &r, sizeof(r),
                                            b.recv_seq + 40, NULL),
                         EML_OK);
        assert_int_equal(eml_msg_recv(&a, &type, &p, &n), EML_OK);
        assert_int_equal(type, EML_MSG_PONG);
        assert_int_equal(a.recv_seq, i + 40);
    }
    assert_int_equal(b.seq_out, 0);
    /* A message that does not encode sends nothing and counts nothing. */
    eml_ecall_ping bad = {{NULL, EML_CHUNK_MAX + 1}};
    assert_int_equal(eml_boundary_send(&a, EML_MSG_PING, &bad, sizeof(bad),
                                       &seq, NULL),
                     EML_ERR_RANGE);
    assert_int_equal(a.seq_out, 3);
    eml_channel_free(&a);
    eml_channel_free(&b);
    close(sv[0]);
    close(sv[1]);
}

/* ==== the docs' message list ==== */

static const char *const kind_names[] = {"", "ecall", "ocall", "notify",
                                         "reply"};

static void append(char **out, size_t *len, size_t *cap, const char *fmt,
                   ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(*out + *len, *cap - *len, fmt, ap);
        va_end(ap);
        assert_true(k >= 0);
        if (*len + (size_t)k < *cap) {
            *len += (size_t)k;
            return;
        }
        *cap *= 2;
        *out = realloc(*out, *cap);
        assert_non_null(*out);
    }
}

/* One field as the docs show it: `name`, its kind on the wire and its
 * bounds as edl.h writes them (the row's text after the name). */
static void doc_field(char **out, size_t *len, size_t *cap,
                      const eml_field *f)
{
    char tok[4][64] = {{0}};
    const char *p = f->text;
    for (int k = 0; k < 4 && p != NULL; k++) {
        const char *c = strstr(p, ", ");
        size_t n = c != NULL ? (size_t)(c - p) : strlen(p);
        snprintf(tok[k], sizeof(tok[k]), "%.*s", (int)n, p);
        p = c != NULL ? c + 2 : NULL;
    }
    append(out, len, cap, "`%s` ", f->name);
    switch (f->kind) {
    case EML_FIELD_U64:
    case EML_FIELD_INT:
    case EML_FIELD_LONG:
        if (f->lo == 0 && f->hi == UINT64_MAX) append(out, len, cap, "u64");
        else append(out, len, cap, "u64 %s..%s", tok[1], tok[2]);
        break;
    case EML_FIELD_F64:
        if (f->flo == -DBL_MAX && f->fhi == DBL_MAX)
            append(out, len, cap, "f64");
        else append(out, len, cap, "f64 %s..%s", tok[1], tok[2]);
        break;
    case EML_FIELD_FIXED: append(out, len, cap, "bytes[%s]", tok[1]); break;
    case EML_FIELD_BYTES:
    case EML_FIELD_COPY:
        append(out, len, cap, "bytes <= %s", tok[1]);
        break;
    case EML_FIELD_LIST:
        append(out, len, cap, "%s..%s x bytes <= %s", tok[1], tok[2], tok[3]);
        break;
    }
}

static char *doc_table(void)
{
    size_t len = 0, cap = 4096;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    append(&out, &len, &cap,
           "| type | message | version | kind | reply | fields, in wire "
           "order |\n|---|---|---|---|---|---|\n");
    for (uint32_t t = 1; t < EML_MSG_TYPE_END; t++) {
        const eml_msg_desc *d = eml_msg_desc_of(t);
        append(&out, &len, &cap, "| %u | `%s` | %u | %s | %s | ", t, d->name,
               d->version, kind_names[d->kind],
               d->reply ? eml_msg_type_name(d->reply) : "");
        for (size_t i = 0; i < d->n_fields; i++) {
            if (i > 0) append(&out, &len, &cap, "; ");
            doc_field(&out, &len, &cap, &d->fields[i]);
        }
        append(&out, &len, &cap, "%s |\n", d->n_fields ? "" : "(none)");
    }
    return out;
}

#define DOC_BEGIN                                                            \
    "<!-- messages: made from edl.h by tests/test_boundary.c -->\n"
#define DOC_END "<!-- end of messages -->\n"

static void test_docs(void **state)
{
    (void)state;
    const char *src = getenv("EML_SOURCE_DIR");
    if (src == NULL) skip();
    char path[4096];
    snprintf(path, sizeof(path), "%s/docs/enclave.md", src);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char doc[1 << 18];
    size_t n = fread(doc, 1, sizeof(doc) - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *table = doc_table();
    char *a = strstr(doc, DOC_BEGIN), *b = a ? strstr(a, DOC_END) : NULL;
    if (a == NULL || b == NULL) fail_msg("%s: no message list markers", path);
    a += strlen(DOC_BEGIN);
    int same = (size_t)(b - a) == strlen(table) &&
               memcmp(a, table, strlen(table)) == 0;
    const char *w = getenv("EML_WRITE_DOCS");
    if (!same && w != NULL && strcmp(w, "1") == 0) {
        f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(doc, 1, (size_t)(a - doc), f);
        fputs(table, f);
        fputs(b, f);
        fclose(f);
        print_message("rewrote the message list of %s\n", path);
    } else if (!same) {
        print_message("%s", table);
        fail_msg("%s: the message list is not edl.h's (above; "
                 "EML_WRITE_DOCS=1 rewrites it)",
                 path);
    }
    free(table);
}

int main(void)
{
    pattern_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_short_and_trailing),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_seqs),
        cmocka_unit_test(test_docs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
