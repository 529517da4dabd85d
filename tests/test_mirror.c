/*
 * test_mirror.c - the sealed training-state mirror (mirror.h) over an
 * in-memory store: round trips whose chunks straddle segments, a fresh
 * store, every single-bit flip and every truncation of a committed pool
 * refused, slots from another run, swapped slots, other digests, a
 * rollback and wrong keys refused; the fuzz target's seed still loads;
 * then training (eml_train: SGD, momentum, dropout, Adam, weight
 * averaging, max_batches, DP-SGD with Poisson or fixed batches and a
 * target epsilon) crashed by a store whose commit fails after K commits,
 * resumed, and compared byte for byte with an uninterrupted run.
 *
 * The store is a byte array laid out as docs/mirror.md says (a 4096-byte
 * header page, then two slots).  It is as dumb as an untrusted host may
 * be: it takes its slot capacity from whatever its header holds and only
 * refuses accesses outside the bytes it has.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/le.h"
#include "enclaveml/cfg.h"
#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/kernels.h"
#include "enclaveml/mirror.h"
#include "enclaveml/net.h"
#include "enclaveml/rng.h"
#include "enclaveml/train.h"

/* ==== the in-memory store ==== */

typedef struct memstore {
    uint8_t *b;          /* header page + two slots */
    size_t size;         /* bytes present (0: not created yet) */
    size_t alloc;
    int use_map;         /* 1: slot_map gives a pointer; 0: the write path;
                            2: writes from a staging buffer */
    uint8_t *stage;      /* use_map 2: 2.5 chunks of staging */
    uint64_t read_limit; /* reads of a slot past this offset fail */
    long commits;        /* successful commits */
    long fail_after;     /* a commit fails once commits reach it; -1 never */
    long maps, writes;   /* how the mirror wrote */
} memstore;

static void ms_init(memstore *s, int use_map)
{
    memset(s, 0, sizeof(*s));
    s->use_map = use_map;
    s->read_limit = UINT64_MAX;
    s->fail_after = -1;
}

static void ms_free(memstore *s)
{
    free(s->b);
    s->b = NULL;
    free(s->stage);
    s->stage = NULL;
}

#define STAGE_BYTES ((size_t)EML_MIRROR_CHUNK * 5 / 2)

static uint8_t *ms_staging(void *u, size_t *cap)
{
    memstore *s = u;
    if (s->use_map != 2) return NULL;
    if (s->stage == NULL) s->stage = malloc(STAGE_BYTES);
    assert_non_null(s->stage);
    *cap = STAGE_BYTES;
    return s->stage;
}

/* A copy of src's bytes in dst (dst's buffer reused when large enough). */
static void ms_copy(memstore *dst, const memstore *src)
{
    if (dst->alloc < src->size) {
        free(dst->b);
        dst->b = malloc(src->size);
        assert_non_null(dst->b);
        dst->alloc = src->size;
    }
    if (src->size > 0) memcpy(dst->b, src->b, src->size);
    dst->size = src->size;
}

static uint64_t ms_cap(const memstore *s)
{
    return s->size >= EML_POOL_HEADER_BYTES ? eml_get_le64(s->b + 32) : 0;
}

/* The bytes [off, off+n) of a slot, or NULL where the store has none. */
static uint8_t *ms_at(const memstore *s, int slot, uint64_t off, uint64_t n)
{
    uint64_t cap = ms_cap(s);
    if (s->size < EML_POOL_DATA_OFFSET || slot < 0 || slot > 1 ||
        off > cap || n > cap - off)
        return NULL;
    uint64_t room = s->size - EML_POOL_DATA_OFFSET;
    uint64_t base = (uint64_t)slot * cap; /* cap < 2^64, slot <= 1 */
    if (base > room || off + n > room - base) return NULL;
    return s->b + EML_POOL_DATA_OFFSET + base + off;
}

static eml_status ms_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    memstore *s = u;
    if (s->size == 0) {
        memset(hdr, 0, EML_POOL_HEADER_BYTES);
        return EML_OK;
    }
    if (s->size < EML_POOL_HEADER_BYTES)
        return eml_err_set(err, EML_ERR_TRUNCATED, "store header truncated");
    memcpy(hdr, s->b, EML_POOL_HEADER_BYTES);
    return EML_OK;
}

static eml_status ms_create(void *u, const uint8_t *hdr, uint64_t cap,
                            eml_err *err)
{
    memstore *s = u;
    if (cap == 0 || cap % 4096 != 0 || cap > ((uint64_t)1 << 28))
        return eml_err_set(err, EML_ERR_RANGE, "store: bad capacity");
    size_t size = EML_POOL_DATA_OFFSET + 2 * (size_t)cap;
    free(s->b);
    s->b = calloc(1, size);
    if (s->b == NULL) return eml_err_set(err, EML_ERR_NOMEM, "store: oom");
    s->alloc = s->size = size;
    memcpy(s->b, hdr, EML_POOL_HEADER_BYTES);
    return EML_OK;
}

static uint8_t *ms_slot_map(void *u, int slot)
{
    memstore *s = u;
    if (s->use_map != 1) return NULL;
    uint8_t *p = ms_at(s, slot, 0, ms_cap(s));
    if (p != NULL) s->maps++;
    return p;
}

static eml_status ms_write(void *u, int slot, uint64_t off, const uint8_t *p,
                           size_t n, eml_err *err)
{
    memstore *s = u;
    uint8_t *d = ms_at(s, slot, off, n);
    if (d == NULL) return eml_err_set(err, EML_ERR_RANGE, "store: write");
    memcpy(d, p, n);
    s->writes++;
    return EML_OK;
}

static eml_status ms_commit(void *u, int slot, uint64_t len, uint64_t word,
                            eml_err *err)
{
    memstore *s = u;
    uint8_t *d = ms_at(s, slot, 0, len);
    if (d == NULL) return eml_err_set(err, EML_ERR_RANGE, "store: commit");
    if (s->fail_after >= 0 && s->commits >= s->fail_after) {
        /* The process dies here: the new slot is torn, the commit word
         * still names the previous state. */
        for (uint64_t i = len / 3; i < len; i += 7) d[i] ^= 0xa5;
        return eml_err_set(err, EML_ERR_IO, "simulated crash");
    }
    eml_put_le64(s->b + EML_POOL_COMMIT_OFFSET, word);
    s->commits++;
    return EML_OK;
}

static eml_status ms_read(void *u, int slot, uint64_t off, uint8_t *p,
                          size_t n, eml_err *err)
{
    memstore *s = u;
    const uint8_t *d = ms_at(s, slot, off, n);
    if (d == NULL || off > s->read_limit || n > s->read_limit - off)
        return eml_err_set(err, EML_ERR_TRUNCATED, "store: read past end");
    memcpy(p, d, n);
    return EML_OK;
}

static eml_store_ops ms_ops(memstore *s)
{
    eml_store_ops o = {s,        ms_read_header, ms_create, ms_slot_map,
                       ms_write, ms_commit,      ms_read,   ms_staging};
    return o;
}

static uint64_t ms_commit_word(const memstore *s)
{
    return eml_get_le64(s->b + EML_POOL_COMMIT_OFFSET);
}

static uint8_t *ms_slot(const memstore *s, int slot)
{
    return s->b + EML_POOL_DATA_OFFSET + (size_t)slot * ms_cap(s);
}

/* ==== helpers ==== */

static const uint8_t secret[32] = {
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b,
    0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30};
static const uint8_t measurement[32] = {
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b,
    0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0};

static eml_mirror_opts base_opts(void)
{
    eml_mirror_opts o;
    memset(&o, 0, sizeof(o));
    o.seal_secret = secret;
    o.measurement = measurement;
    memset(o.cfg_digest, 0x33, 32);
    memset(o.data_digest, 0x44, 32);
    o.every = 1;
    return o;
}

static eml_mirror *new_mirror(const eml_mirror_opts *o, memstore *s)
{
    eml_store_ops ops = ms_ops(s);
    eml_mirror *m = NULL;
    eml_err err = {{0}};
    eml_status st = eml_mirror_new(o, &ops, &m, &err);
    if (st != EML_OK) fail_msg("mirror_new: %s", eml_err_msg(&err, st));
    return m;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    eml_rng r;
    eml_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)eml_rng_below(&r, 256);
}

/* Segments of the given sizes over one buffer. */
static void make_segs(eml_seg *segs, uint8_t *buf, const size_t *sizes,
                      int nseg)
{
    size_t off = 0;
    for (int i = 0; i < nseg; i++) {
        segs[i].p = buf + off;
        segs[i].n = sizes[i];
        off += sizes[i];
    }
}

static void save_ok(eml_mirror *m, const eml_seg *segs, int nseg)
{
    eml_err err = {{0}};
    eml_status st = eml_mirror_save(m, segs, nseg, &err);
    if (st != EML_OK) fail_msg("save: %s", eml_err_msg(&err, st));
}

/* A new mirror on the store (or `shared`, one made earlier on it), then a
 * load: the first error, or EML_OK. */
static eml_status open_and_load(const eml_mirror_opts *o, memstore *s,
                                eml_mirror *shared, const eml_seg *segs,
                                int nseg, int *found, eml_err *err)
{
    eml_store_ops ops = ms_ops(s);
    eml_mirror *m = shared;
    memset(err, 0, sizeof(*err));
    *found = 0;
    eml_status st = EML_OK;
    if (m == NULL) {
        st = eml_mirror_new(o, &ops, &m, err);
        if (st != EML_OK) {
            assert_null(m);
            return st;
        }
    }
    *found = -1; /* load must set it */
    st = eml_mirror_load(m, segs, nseg, found, err);
    if (shared == NULL) eml_mirror_free(m);
    return st;
}

/* A pool with a small state (2500 bytes in two segments, one page per
 * slot) saved twice: slot 0 holds seq 1, slot 1 holds seq 2 (committed).
 * want gets the committed state. */
enum { SMALL_A = 1000, SMALL_B = 1500, SMALL = SMALL_A + SMALL_B };

static void small_pool(memstore *s, const eml_mirror_opts *o,
                       uint8_t want[SMALL], int use_map)
{
    static const size_t sizes[2] = {SMALL_A, SMALL_B};
    uint8_t buf[SMALL];
    eml_seg segs[2];
    make_segs(segs, buf, sizes, 2);
    ms_init(s, use_map);
    eml_mirror *m = new_mirror(o, s);
    fill_random(buf, SMALL, 1);
    save_ok(m, segs, 2);
    fill_random(buf, SMALL, 2);
    save_ok(m, segs, 2);
    assert_int_equal(eml_mirror_seq(m), 2);
    assert_int_equal(ms_commit_word(s), 2 << 1 | 1);
    assert_int_equal(ms_cap(s), 4096);
    memcpy(want, buf, SMALL);
    eml_mirror_free(m);
}

/* Loads a small pool, expecting a refusal: found stays 0 and the
 * segments keep no plaintext (untouched, or wiped). */
static int small_refused(const eml_mirror_opts *o, memstore *s,
                         eml_mirror *shared, eml_status *st_out,
                         eml_err *err)
{
    static const size_t sizes[2] = {SMALL_A, SMALL_B};
    uint8_t buf[SMALL];
    eml_seg segs[2];
    make_segs(segs, buf, sizes, 2);
    memset(buf, 0x5a, sizeof(buf));
    int found;
    eml_status st = open_and_load(o, s, shared, segs, 2, &found, err);
    if (st_out != NULL) *st_out = st;
    if (st == EML_OK || found != 0) return 0;
    int untouched = 1, wiped = 1;
    for (size_t i = 0; i < SMALL; i++) {
        untouched &= buf[i] == 0x5a;
        wiped &= buf[i] == 0;
    }
    if (!untouched && !wiped) {
        printf("a refused load left bytes in the segments: %s\n",
               eml_err_msg(err, st));
        return 0;
    }
    return 1;
}

static void small_loads(const eml_mirror_opts *o, memstore *s,
                        const uint8_t want[SMALL])
{
    static const size_t sizes[2] = {SMALL_A, SMALL_B};
    uint8_t buf[SMALL];
    eml_seg segs[2];
    make_segs(segs, buf, sizes, 2);
    int found;
    eml_err err;
    eml_status st = open_and_load(o, s, NULL, segs, 2, &found, &err);
    if (st != EML_OK) fail_msg("load: %s", eml_err_msg(&err, st));
    assert_int_equal(found, 1);
    assert_memory_equal(buf, want, SMALL);
}

/* ==== round trips ==== */

/* Segment sizes whose sum (2.32 MiB) is three chunks; chunk 0 ends inside
 * segment 1, chunk 1 inside segment 4; an empty segment in between. */
static const size_t big_sizes[] = {7, 1048575, 0, 3, 1048590, 333331, 1};
#define BIG_NSEG ((int)(sizeof(big_sizes) / sizeof(big_sizes[0])))

static void roundtrip(int use_map)
{
    size_t total = 0;
    for (int i = 0; i < BIG_NSEG; i++) total += big_sizes[i];
    assert_true(total > 2 * (size_t)EML_MIRROR_CHUNK);
    uint8_t *buf = malloc(total), *back = malloc(total);
    assert_non_null(buf);
    assert_non_null(back);
    eml_seg segs[BIG_NSEG], bsegs[BIG_NSEG];
    make_segs(segs, buf, big_sizes, BIG_NSEG);
    make_segs(bsegs, back, big_sizes, BIG_NSEG);
    fill_random(buf, total, 42);

    eml_mirror_opts o = base_opts();
    memstore s;
    ms_init(&s, use_map);
    eml_mirror *m = new_mirror(&o, &s);
    assert_int_equal(eml_mirror_seq(m), 0);
    for (uint64_t k = 1; k <= 5; k++) {
        buf[(k * 7919) % total] ^= (uint8_t)k; /* a new state each time */
        save_ok(m, segs, BIG_NSEG);
        assert_int_equal(eml_mirror_seq(m), k);
        int slot = (int)((k - 1) % 2);
        assert_int_equal(ms_commit_word(&s), k << 1 | (uint64_t)slot);
        /* the header repeats the slot and seq */
        assert_int_equal(eml_get_le32(ms_slot(&s, slot) + 12), slot);
        assert_int_equal(eml_get_le64(ms_slot(&s, slot) + 16), k);
    }
    assert_int_equal(eml_slot_bytes(total), 128 + total + 3 * 16);
    assert_int_equal(ms_cap(&s), (eml_slot_bytes(total) + 4095) / 4096 * 4096);
    assert_memory_equal(s.b + 16, eml_mirror_run_id(m), EML_RUN_ID_BYTES);
    if (use_map == 1) {
        assert_true(s.maps > 0);
        assert_int_equal(s.writes, 0);
    } else {
        assert_int_equal(s.maps, 0);
        assert_true(s.writes > 0);
    }

    /* The same object loads it ... */
    int found = 0;
    eml_err err = {{0}};
    memset(back, 0, total);
    eml_status st = eml_mirror_load(m, bsegs, BIG_NSEG, &found, &err);
    if (st != EML_OK) fail_msg("load: %s", eml_err_msg(&err, st));
    assert_int_equal(found, 1);
    assert_memory_equal(back, buf, total);
    eml_mirror_free(m);

    /* ... and so does a new one, into segments cut elsewhere. */
    const size_t other[3] = {1, total - 1048576 - 1, 1048576};
    eml_seg osegs[3];
    make_segs(osegs, back, other, 3);
    memset(back, 0, total);
    st = open_and_load(&o, &s, NULL, osegs, 3, &found, &err);
    if (st != EML_OK) fail_msg("load: %s", eml_err_msg(&err, st));
    assert_int_equal(found, 1);
    assert_memory_equal(back, buf, total);

    /* A new mirror continues the sequence in the other slot. */
    m = new_mirror(&o, &s);
    assert_int_equal(eml_mirror_seq(m), 5);
    save_ok(m, segs, BIG_NSEG);
    assert_int_equal(eml_mirror_seq(m), 6);
    assert_int_equal(ms_commit_word(&s), 6 << 1 | 1);
    /* A state of another size does not fit the slots. */
    eml_seg shorter = {buf, total / 2};
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(eml_mirror_save(m, &shorter, 1, &err), EML_OK);
    assert_int_equal(ms_commit_word(&s), 6 << 1 | 1);
    eml_mirror_free(m);

    double t_total = -1, t_crypto = -1;
    m = new_mirror(&o, &s);
    assert_int_equal(eml_mirror_load(m, bsegs, BIG_NSEG, &found, &err),
                     EML_OK);
    eml_mirror_last_times(m, &t_total, &t_crypto);
    assert_true(t_total >= t_crypto && t_crypto >= 0);
    eml_mirror_free(m);

    ms_free(&s);
    free(buf);
    free(back);
}

static void test_roundtrip_mapped(void **state)
{
    (void)state;
    roundtrip(1);
}

static void test_roundtrip_written(void **state)
{
    (void)state;
    roundtrip(0);
}

/* Chunks gathered in a staging buffer, two per write. */
static void test_roundtrip_staged(void **state)
{
    (void)state;
    roundtrip(2);
}

/* A fresh store: nothing to load, the segments untouched, nothing
 * created by a load. */
static void test_fresh_store(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    memstore s;
    ms_init(&s, 1);
    uint8_t buf[300];
    memset(buf, 0x77, sizeof(buf));
    eml_seg segs[2] = {{buf, 100}, {buf + 100, 200}};
    eml_mirror *m = new_mirror(&o, &s);
    assert_int_equal(eml_mirror_seq(m), 0);
    assert_false(eml_is_zero(eml_mirror_run_id(m), EML_RUN_ID_BYTES));
    assert_int_equal(eml_mirror_every(m), 1);
    int found = 7;
    eml_err err = {{0}};
    assert_int_equal(eml_mirror_load(m, segs, 2, &found, &err), EML_OK);
    assert_int_equal(found, 0);
    for (size_t i = 0; i < sizeof(buf); i++) assert_int_equal(buf[i], 0x77);
    assert_int_equal(s.size, 0);
    eml_mirror_free(m);
    eml_mirror_free(NULL);

    /* Two fresh stores get different run ids. */
    memstore s2;
    ms_init(&s2, 1);
    m = new_mirror(&o, &s);
    eml_mirror *m2 = new_mirror(&o, &s2);
    assert_memory_not_equal(eml_mirror_run_id(m), eml_mirror_run_id(m2),
                            EML_RUN_ID_BYTES);
    eml_mirror_free(m);
    eml_mirror_free(m2);

    /* Bad options. */
    eml_store_ops ops = ms_ops(&s);
    eml_mirror_opts bad = o;
    bad.every = 0;
    m = (eml_mirror *)&s;
    assert_int_equal(eml_mirror_new(&bad, &ops, &m, &err), EML_ERR_INVALID);
    assert_null(m);
    ops.write = NULL;
    ops.slot_map = NULL;
    assert_int_equal(eml_mirror_new(&o, &ops, &m, &err), EML_ERR_INVALID);
    assert_null(m);

    /* The parser: a fresh header, a built one, and a short one. */
    uint8_t hdr[EML_POOL_HEADER_BYTES] = {0};
    eml_pool_info info;
    assert_int_equal(eml_pool_header_parse(hdr, sizeof(hdr), &info, &err),
                     EML_OK);
    assert_true(info.fresh);
    uint8_t rid[16];
    memset(rid, 9, sizeof(rid));
    eml_pool_header_build(hdr, rid, 8192, 7);
    assert_int_equal(eml_pool_header_parse(hdr, sizeof(hdr), &info, &err),
                     EML_OK);
    assert_false(info.fresh);
    assert_int_equal(info.capacity, 8192);
    assert_int_equal(info.commit, 7);
    assert_memory_equal(info.run_id, rid, 16);
    assert_int_equal(eml_pool_header_parse(hdr, 127, &info, &err),
                     EML_ERR_TRUNCATED);
    ms_free(&s);
    ms_free(&s2);
}

/* An empty state: one chunk of nothing, still sealed and committed. */
static void test_empty_state(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    memstore s;
    ms_init(&s, 0);
    eml_mirror *m = new_mirror(&o, &s);
    save_ok(m, NULL, 0);
    save_ok(m, NULL, 0);
    eml_mirror_free(m);
    assert_int_equal(ms_cap(&s), 4096);
    assert_int_equal(ms_commit_word(&s), 2 << 1 | 1);
    int found = 0;
    eml_err err;
    assert_int_equal(open_and_load(&o, &s, NULL, NULL, 0, &found, &err),
                     EML_OK);
    assert_int_equal(found, 1);
    ms_slot(&s, 1)[EML_SLOT_HEADER_BYTES] ^= 1; /* the lone tag */
    assert_int_equal(open_and_load(&o, &s, NULL, NULL, 0, &found, &err),
                     EML_ERR_AUTH);
    assert_int_equal(found, 0);
    ms_free(&s);
}

/* ==== tampering ==== */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every single-bit flip of the pool header and of the committed slot
 * (header, chunk, tag, padding) is refused.  A flip in the pool header
 * gets a new mirror, as a restarted process would; flips in the slot share
 * one mirror made on the trial store, since eml_mirror_new reads nothing
 * past the pool header and a refused load leaves the mirror as it was (a
 * new mirror costs a locked page and a wiped 1 MiB buffer: 5 ms each under
 * ASan). */
static void test_every_bit_flip(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    uint8_t want[SMALL];
    memstore pristine, t;
    small_pool(&pristine, &o, want, 1);
    ms_init(&t, 1);
    ms_copy(&t, &pristine);
    small_loads(&o, &t, want);
    eml_mirror *shared = new_mirror(&o, &t);

    double t0 = now_s();
    const size_t slot1 = EML_POOL_DATA_OFFSET + ms_cap(&pristine);
    const size_t nbytes = EML_POOL_HEADER_BYTES + ms_cap(&pristine);
    long trials = 0, accepted = 0;
    for (size_t k = 0; k < nbytes; k++) {
        int in_pool_hdr = k < EML_POOL_HEADER_BYTES;
        size_t at = in_pool_hdr ? k : slot1 + (k - EML_POOL_HEADER_BYTES);
        for (int bit = 0; bit < 8; bit++) {
            ms_copy(&t, &pristine);
            t.b[at] ^= (uint8_t)(1u << bit);
            eml_err err;
            eml_status st;
            trials++;
            if (!small_refused(&o, &t, in_pool_hdr ? NULL : shared, &st,
                               &err) &&
                accepted++ < 10)
                printf("flip of byte %zu bit %d accepted (%s)\n", at, bit,
                       st == EML_OK ? "loaded" : eml_err_msg(&err, st));
        }
    }
    printf("bit flips: %ld trials, %ld accepted, %.2f s\n", trials, accepted,
           now_s() - t0);
    assert_int_equal(accepted, 0);
    /* The shared mirror still loads the pristine pool; a flip in the other
     * slot (seq 1, not committed) does not matter. */
    ms_copy(&t, &pristine);
    int found = 0;
    uint8_t buf[SMALL];
    eml_seg segs[2] = {{buf, SMALL_A}, {buf + SMALL_A, SMALL_B}};
    eml_err err = {{0}};
    assert_int_equal(eml_mirror_load(shared, segs, 2, &found, &err), EML_OK);
    assert_int_equal(found, 1);
    assert_memory_equal(buf, want, SMALL);
    eml_mirror_free(shared);
    t.b[EML_POOL_DATA_OFFSET + 200] ^= 1;
    small_loads(&o, &t, want);
    ms_free(&pristine);
    ms_free(&t);
}

/* Every truncation of the pool, and every read that ends early, is
 * refused; so is a header whose capacity exceeds the bytes present.  (A
 * new mirror for each cut into the pool header and every 256th cut after
 * it; the rest share one, as above.) */
static void test_every_truncation(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    uint8_t want[SMALL];
    memstore pristine, t;
    small_pool(&pristine, &o, want, 0);
    ms_init(&t, 0);
    ms_copy(&t, &pristine);
    eml_mirror *shared = new_mirror(&o, &t);
    double t0 = now_s();
    long accepted = 0, trials = 0;
    /* Size 0 is a store that does not exist: a fresh start, not a load. */
    for (size_t len = 1; len < pristine.size; len++) {
        ms_copy(&t, &pristine);
        t.size = len;
        eml_err err;
        eml_status st;
        int fresh = len <= EML_POOL_HEADER_BYTES || len % 256 == 0;
        trials++;
        if (!small_refused(&o, &t, fresh ? NULL : shared, &st, &err) &&
            accepted++ < 10)
            printf("truncation to %zu bytes accepted\n", len);
    }
    ms_copy(&t, &pristine);
    const uint64_t cap = ms_cap(&pristine);
    for (uint64_t lim = 0; lim < cap; lim++) {
        t.read_limit = lim;
        eml_err err;
        eml_status st;
        trials++;
        if (!small_refused(&o, &t, lim % 256 == 0 ? NULL : shared, &st,
                           &err) &&
            accepted++ < 10)
            printf("reads ending at %llu accepted\n", (unsigned long long)lim);
    }
    t.read_limit = UINT64_MAX;
    small_loads(&o, &t, want);
    eml_mirror_free(shared);
    /* Larger capacities than the bytes present. */
    const uint64_t caps[] = {cap + 4096, 2 * cap, (uint64_t)1 << 30,
                             ((uint64_t)1 << 48) - 4096};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        ms_copy(&t, &pristine);
        eml_put_le64(t.b + 32, caps[i]);
        eml_err err;
        eml_status st;
        trials++;
        if (!small_refused(&o, &t, NULL, &st, &err) && accepted++ < 10)
            printf("capacity %llu accepted\n", (unsigned long long)caps[i]);
    }
    printf("truncations: %ld trials, %ld accepted, %.2f s\n", trials,
           accepted, now_s() - t0);
    assert_int_equal(accepted, 0);
    ms_free(&pristine);
    ms_free(&t);
}

static void swap_slots(memstore *s)
{
    size_t cap = ms_cap(s);
    uint8_t *tmp = malloc(cap);
    assert_non_null(tmp);
    memcpy(tmp, ms_slot(s, 0), cap);
    memcpy(ms_slot(s, 0), ms_slot(s, 1), cap);
    memcpy(ms_slot(s, 1), tmp, cap);
    free(tmp);
}

static void expect_refused(const eml_mirror_opts *o, memstore *s,
                           const char *needle)
{
    eml_err err;
    eml_status st;
    int ok = small_refused(o, s, NULL, &st, &err);
    printf("refused: %s\n", eml_err_msg(&err, st));
    assert_true(ok);
    assert_true(st == EML_ERR_AUTH || st == EML_ERR_FORMAT);
    if (needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

/* Slots from another run, swapped slots, and a run with other digests. */
static void test_other_runs_and_swaps(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    uint8_t want_a[SMALL], want_b[SMALL];
    memstore a, b, t;
    small_pool(&a, &o, want_a, 1);
    small_pool(&b, &o, want_b, 1);
    assert_memory_not_equal(a.b + 16, b.b + 16, EML_RUN_ID_BYTES);
    ms_init(&t, 1);

    /* b's committed slot in a's pool, at the same slot and seq. */
    ms_copy(&t, &a);
    memcpy(ms_slot(&t, 1), ms_slot(&b, 1), ms_cap(&b));
    expect_refused(&o, &t, "another run");
    /* b's slots under a's header; a's slots under b's header. */
    ms_copy(&t, &b);
    memcpy(t.b, a.b, EML_POOL_HEADER_BYTES);
    expect_refused(&o, &t, "another run");
    ms_copy(&t, &a);
    memcpy(t.b, b.b, EML_POOL_HEADER_BYTES);
    expect_refused(&o, &t, "another run");

    /* Swapped slots, whichever the commit names. */
    ms_copy(&t, &a);
    swap_slots(&t);
    expect_refused(&o, &t, "swapped");
    ms_copy(&t, &a);
    swap_slots(&t);
    eml_put_le64(t.b + EML_POOL_COMMIT_OFFSET, 1 << 1 | 1);
    expect_refused(&o, &t, NULL);

    /* Another configuration, other data. */
    eml_mirror_opts oc = o, od = o;
    oc.cfg_digest[31] ^= 0x80;
    od.data_digest[0] ^= 1;
    ms_copy(&t, &a);
    expect_refused(&oc, &t, "cfg");
    expect_refused(&oc, &t, "options");
    expect_refused(&od, &t, "data");
    small_loads(&o, &t, want_a);

    /* A state one byte shorter fits the same page-rounded slots but is
     * not this state. */
    {
        uint8_t buf[SMALL];
        eml_seg seg = {buf, SMALL - 1};
        int found = 0;
        eml_err err;
        eml_status st = open_and_load(&o, &t, NULL, &seg, 1, &found, &err);
        printf("refused: %s\n", eml_err_msg(&err, st));
        assert_int_equal(st, EML_ERR_AUTH);
        assert_int_equal(found, 0);
        assert_non_null(strstr(err.msg, "2500-byte"));
    }

    ms_free(&a);
    ms_free(&b);
    ms_free(&t);
}

/* A commit word rewritten to an older, valid state, and an older image of
 * the whole pool, are refused once this process has seen a newer state. */
static void test_rollback(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    uint8_t want[SMALL];
    memstore s, old;
    ms_init(&old, 1);
    /* an image of the pool at seq 1 */
    {
        static const size_t sizes[2] = {SMALL_A, SMALL_B};
        uint8_t buf[SMALL];
        eml_seg segs[2];
        make_segs(segs, buf, sizes, 2);
        ms_init(&s, 1);
        eml_mirror *m = new_mirror(&o, &s);
        fill_random(buf, SMALL, 1);
        save_ok(m, segs, 2);
        ms_copy(&old, &s);
        fill_random(buf, SMALL, 2);
        save_ok(m, segs, 2);
        memcpy(want, buf, SMALL);
        eml_mirror_free(m);
    }
    assert_int_equal(ms_commit_word(&s), 2 << 1 | 1);
    eml_put_le64(s.b + EML_POOL_COMMIT_OFFSET, 1 << 1 | 0);
    expect_refused(&o, &s, "older");
    expect_refused(&o, &old, "older");
    eml_put_le64(s.b + EML_POOL_COMMIT_OFFSET, 2 << 1 | 1);
    small_loads(&o, &s, want);
    ms_free(&s);
    ms_free(&old);
}

/* A pool whose commit word was erased after this process committed a
 * state for its run looks like a store with nothing committed yet; mirror.h
 * promises to refuse anything older than a state this process already saw
 * for the run, and "nothing" is older: refused, or a resumed run would
 * silently start over (and a DP run forget the budget it spent). */
static void test_rollback_to_nothing(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    static const size_t sizes[2] = {SMALL_A, SMALL_B};
    uint8_t buf[SMALL];
    eml_seg segs[2];
    make_segs(segs, buf, sizes, 2);
    memstore s;
    ms_init(&s, 1);
    eml_mirror *m = new_mirror(&o, &s);
    fill_random(buf, SMALL, 1);
    save_ok(m, segs, 2);
    eml_mirror_free(m);
    eml_put_le64(s.b + EML_POOL_COMMIT_OFFSET, 0);
    eml_err err;
    eml_status st;
    int refused = small_refused(&o, &s, NULL, &st, &err);
    ms_free(&s);
    assert_true(refused);
    assert_non_null(strstr(eml_err_msg(&err, st), "rollback"));
}

/* Another sealing secret or measurement cannot open the pool. */
static void test_wrong_keys(void **state)
{
    (void)state;
    eml_mirror_opts o = base_opts();
    uint8_t want[SMALL];
    memstore s;
    small_pool(&s, &o, want, 1);
    uint8_t other[32];
    memcpy(other, secret, 32);
    other[17] ^= 4;
    eml_mirror_opts os = o;
    os.seal_secret = other;
    expect_refused(&os, &s, "authentication");
    uint8_t meas[32];
    memcpy(meas, measurement, 32);
    meas[0] ^= 1;
    eml_mirror_opts om = o;
    om.measurement = meas;
    expect_refused(&om, &s, "authentication");
    small_loads(&o, &s, want);
    ms_free(&s);
}

/* ==== the fuzz target's seed ==== */

/* fuzz/corpus/pool/valid-2500.pool, the seed of fuzz/fuzz_pool.c: a
 * 2500-byte state (byte i = i * 7 + 3) saved twice under the fuzz
 * target's keys.  EML_WRITE_POOL_SEED=path writes a new one; with
 * EML_SOURCE_DIR (CTest sets it) the shipped one must still load. */
static void test_fuzz_seed(void **state)
{
    (void)state;
    uint8_t fsecret[32], fmeas[32], want[SMALL], buf[SMALL];
    for (int i = 0; i < 32; i++) {
        fsecret[i] = (uint8_t)i;
        fmeas[i] = (uint8_t)(0x20 + i);
    }
    for (size_t i = 0; i < SMALL; i++) want[i] = (uint8_t)(i * 7 + 3);
    eml_mirror_opts o = base_opts();
    o.seal_secret = fsecret;
    o.measurement = fmeas;
    eml_seg seg = {buf, SMALL};
    memstore s;
    ms_init(&s, 0);

    const char *out = getenv("EML_WRITE_POOL_SEED");
    if (out != NULL) {
        eml_mirror *m = new_mirror(&o, &s);
        memcpy(buf, want, SMALL);
        save_ok(m, &seg, 1);
        save_ok(m, &seg, 1);
        eml_mirror_free(m);
        FILE *f = fopen(out, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(s.b, 1, s.size, f), s.size);
        assert_int_equal(fclose(f), 0);
        printf("wrote %s (%zu bytes)\n", out, s.size);
    }

    const char *src = getenv("EML_SOURCE_DIR");
    if (src == NULL) {
        ms_free(&s);
        skip();
    }
    char path[2048];
    snprintf(path, sizeof(path), "%s/fuzz/corpus/pool/valid-2500.pool", src);
    FILE *f = fopen(path, "rb");
    if (f == NULL) fail_msg("cannot open %s", path);
    size_t size = EML_POOL_DATA_OFFSET + 2 * 4096;
    uint8_t *bytes = malloc(size + 1);
    assert_non_null(bytes);
    size_t got = fread(bytes, 1, size + 1, f);
    fclose(f);
    assert_int_equal(got, size);
    free(s.b);
    s.b = bytes;
    s.size = s.alloc = size;
    assert_int_equal(ms_commit_word(&s), 2 << 1 | 1);
    int found = 0;
    eml_err err;
    memset(buf, 0, sizeof(buf));
    eml_status st = open_and_load(&o, &s, NULL, &seg, 1, &found, &err);
    if (st != EML_OK) fail_msg("%s: %s", path, eml_err_msg(&err, st));
    assert_int_equal(found, 1);
    assert_memory_equal(buf, want, SMALL);
    ms_free(&s);
}

/* ==== training, crashed and resumed ==== */

/* The label is the brightest quadrant of an 8x8 image. */
static void make_quadrants(uint8_t *img, uint8_t *lab, size_t count,
                           uint64_t seed)
{
    eml_rng r;
    eml_rng_seed(&r, seed);
    for (size_t i = 0; i < count; i++) {
        uint8_t q = (uint8_t)eml_rng_below(&r, 4);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int qq = (y >= 4) * 2 + (x >= 4);
                int v = (int)eml_rng_below(&r, 100) + (qq == q ? 120 : 0);
                img[i * 64 + (size_t)(y * 8 + x)] = (uint8_t)v;
            }
        lab[i] = q;
    }
}

static const char cfg_plain[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.1\n"
    "momentum=0\nepochs=3\n"
    "[connected]\noutput=12\nactivation=tanh\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

static const char cfg_dropout[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.05\n"
    "momentum=0.9\ndecay=0.0005\nepochs=3\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[dropout]\nprobability=0.2\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

static const char cfg_ema[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.05\n"
    "momentum=0.9\nepochs=3\nema=0.9\n"
    "[connected]\noutput=12\nactivation=relu\n"
    "[dropout]\nprobability=0.1\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

static const char cfg_max_batches[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.1\n"
    "momentum=0.5\nepochs=3\nmax_batches=45\npolicy=steps\nsteps=30\n"
    "scales=0.1\n"
    "[connected]\noutput=12\nactivation=tanh\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

static const char cfg_adam[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.01\n"
    "adam=1\nepochs=3\npolicy=cosine\n"
    "[connected]\noutput=12\nactivation=leaky\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

/* Batch norm's running statistics move in every training forward pass
 * and live with the parameters: a resume must restore them exactly. */
static const char cfg_batchnorm[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.05\n"
    "momentum=0.9\nepochs=3\n"
    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
    "activation=leaky\n"
    "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\n"
    "activation=linear\n"
    "[shortcut]\nfrom=-2\nactivation=leaky\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

/* Augmentation draws from (seed, step, example) alone: a resume augments
 * as the uninterrupted run did. */
static const char cfg_augment[] =
    "[net]\nbatch=16\nheight=8\nwidth=8\nchannels=1\nlearning_rate=0.05\n"
    "momentum=0.9\nepochs=3\nflip=1\nmin_crop=8\nmax_crop=11\nangle=15\n"
    "aspect=1.2\n"
    "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=relu\n"
    "[maxpool]\nsize=2\nstride=2\n"
    "[connected]\noutput=4\nactivation=linear\n[softmax]\n";

enum { N_TRAIN = 320, N_TEST = 64 };
static uint8_t tr_img[N_TRAIN * 64], tr_lab[N_TRAIN];
static uint8_t te_img[N_TEST * 64], te_lab[N_TEST];

typedef struct run_case {
    const char *name;
    const char *cfg;
    int dp;
    long every;
} run_case;

typedef struct run_out {
    float params[4096];
    size_t np;
    eml_status st;
    eml_err err;
    eml_train_result res;
    int resume_events;
    long progress_resumed;
} run_out;

static void on_progress(void *user, const eml_train_progress *p)
{
    run_out *out = user;
    if (p->resume_event) {
        out->resume_events++;
        out->progress_resumed = p->resumed_step;
    }
}

/* dp: 0 off, 1 Poisson batches, 2 fixed batches, 3 Poisson batches with
 * a target epsilon that stops the run half way. */
static eml_train_opts case_opts(const run_case *c, const eml_netcfg *cfg,
                                size_t n_params)
{
    eml_train_opts o = eml_train_opts_default(cfg);
    o.run.seed = 1234;
    o.run.epochs = 3;
    if (c->dp) {
        o.run.dp.enabled = 1;
        o.run.dp.clip = 1.0;
        o.run.dp.noise = 1.0;
        o.run.dp.delta = 1e-5;
        o.run.dp.insecure_seed = 1;
        o.run.dp.fixed_batches = c->dp == 2;
    }
    if (c->dp == 3) {
        double q, half, order;
        long steps;
        eml_err err = {{0}};
        eml_dp_plan(N_TRAIN, o.run.batch, o.run.epochs, &q, &steps);
        assert_int_equal(
            eml_dp_epsilon(q, eml_dp_effective_noise(1.0, 1.0, n_params),
                           steps / 2, o.run.dp.delta, &half, &order, &err),
            EML_OK);
        o.run.dp.target_epsilon = half * (1 + 1e-9);
    }
    return o;
}

/* One run from scratch (or resumed) on a new net; store NULL: no mirror.
 * The store's commit fails once it has made fail_after commits. */
static void run_training(const run_case *c, memstore *store, long fail_after,
                         int resume, uint64_t seed_delta, run_out *out)
{
    memset(out, 0, sizeof(*out));
    eml_netcfg *cfg = NULL;
    eml_err err = {{0}};
    eml_status st = eml_cfg_parse(c->cfg, strlen(c->cfg), "test.cfg", &cfg,
                                  &err);
    if (st != EML_OK) fail_msg("cfg: %s", eml_err_msg(&err, st));
    eml_net_opts no = {.kernels = EML_KERNELS_REF, .max_batch = 16,
                      .seed = 7};
    eml_net *net = NULL;
    st = eml_net_new(cfg, &no, &net, &err);
    if (st != EML_OK) fail_msg("net: %s", eml_err_msg(&err, st));
    eml_net_init_params(net, 99); /* overwritten: init_params, or a load */
    eml_dataset tr = {N_TRAIN, 64, tr_img, tr_lab};
    eml_dataset te = {N_TEST, 64, te_img, te_lab};
    eml_train_opts o = case_opts(c, cfg, eml_net_param_count(net));
    o.run.seed += seed_delta;
    o.progress = on_progress;
    o.progress_user = out;
    eml_mirror *m = NULL;
    if (store != NULL) {
        eml_mirror_opts mo = base_opts();
        mo.every = c->every;
        assert_int_equal(eml_train_run_digest(mo.cfg_digest,
                                              (const uint8_t *)c->cfg,
                                              strlen(c->cfg), &o),
                         EML_OK);
        assert_int_equal(eml_dataset_digest(mo.data_digest, &tr, &te),
                         EML_OK);
        store->fail_after = fail_after;
        m = new_mirror(&mo, store);
        o.mirror = m;
        o.run.resume = resume;
    }
    out->st = eml_train(net, cfg, &tr, &te, &o, &out->res, &out->err);
    out->np = eml_net_param_count(net);
    assert_true(out->np <= sizeof(out->params) / sizeof(float));
    memcpy(out->params, eml_net_params(net), out->np * sizeof(float));
    eml_mirror_free(m);
    eml_net_free(net);
    eml_cfg_free(cfg);
    if (store != NULL) store->fail_after = -1;
}

static void check_resume(const run_case *c)
{
    static run_out ref, crashed, resumed;
    run_training(c, NULL, -1, 0, 0, &ref);
    if (ref.st != EML_OK)
        fail_msg("%s: %s", c->name, eml_err_msg(&ref.err, ref.st));
    const long total = ref.res.steps, every = c->every;
    const long commits = total / every;
    assert_true(total > 20);
    assert_int_equal(ref.res.resumed_step, -1);
    if (c->dp == 3) assert_true(ref.res.dp_stopped_early && total < 60);

    /* A mirrored run that never crashes trains the same parameters. */
    memstore s;
    ms_init(&s, 1);
    run_training(c, &s, -1, 1, 0, &crashed);
    assert_int_equal(crashed.st, EML_OK);
    assert_int_equal(crashed.res.resumed_step, -1);
    assert_int_equal(crashed.resume_events, 1);
    assert_int_equal(crashed.progress_resumed, -1);
    assert_int_equal(crashed.res.mirror_saves, commits);
    assert_memory_equal(crashed.params, ref.params, ref.np * sizeof(float));
    ms_free(&s);

    const long per_epoch = (N_TRAIN + 15) / 16;
    const long ks[] = {0, 1, 7, per_epoch / every, per_epoch / every + 1,
                       commits - 1, commits};
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
        long k = ks[i];
        ms_init(&s, (int)(i % 2)); /* both the mapped and the write path */
        run_training(c, &s, k, 0, 0, &crashed);
        if (k < commits) {
            assert_int_equal(crashed.st, EML_ERR_IO);
            assert_non_null(strstr(crashed.err.msg, "simulated crash"));
        } else {
            assert_int_equal(crashed.st, EML_OK);
        }
        assert_int_equal(s.commits, k);
        run_training(c, &s, -1, 1, 0, &resumed);
        if (resumed.st != EML_OK)
            fail_msg("%s, crash after %ld commits: resume: %s", c->name, k,
                     eml_err_msg(&resumed.err, resumed.st));
        long last = k == 0 ? -1 : k * every;
        printf("%s: crash after commit %ld: resumed at step %ld of %ld\n",
               c->name, k, resumed.res.resumed_step, total);
        assert_int_equal(resumed.res.resumed_step, last);
        assert_int_equal(resumed.resume_events, 1);
        assert_int_equal(resumed.progress_resumed, last);
        assert_int_equal(resumed.res.steps, total);
        assert_int_equal(resumed.res.mirror_saves, commits - k);
        assert_int_equal(resumed.np, ref.np);
        if (memcmp(resumed.params, ref.params, ref.np * sizeof(float)) != 0) {
            size_t d = 0;
            while (resumed.params[d] == ref.params[d]) d++;
            fail_msg("%s, crash after %ld commits: parameter %zu is %.9g, "
                     "uninterrupted %.9g",
                     c->name, k, d, (double)resumed.params[d],
                     (double)ref.params[d]);
        }
        /* What the last epoch reports continues from the saved counters. */
        assert_int_equal(resumed.res.epochs, ref.res.epochs);
        assert_true(resumed.res.train_loss == ref.res.train_loss);
        assert_true(resumed.res.train_accuracy == ref.res.train_accuracy);
        assert_true(resumed.res.test_accuracy == ref.res.test_accuracy);
        assert_true(resumed.res.test_loss == ref.res.test_loss);
        if (c->dp) {
            assert_true(resumed.res.epsilon == ref.res.epsilon);
            assert_int_equal(resumed.res.dp_stopped_early,
                             ref.res.dp_stopped_early);
        }
        /* A store from this run refuses other options and other data. */
        if (i == 2) {
            run_training(c, &s, -1, 1, 1, &resumed);
            assert_int_not_equal(resumed.st, EML_OK);
            assert_non_null(strstr(resumed.err.msg, "options"));
            tr_lab[0] ^= 1;
            run_training(c, &s, -1, 1, 0, &resumed);
            tr_lab[0] ^= 1;
            assert_int_not_equal(resumed.st, EML_OK);
            assert_non_null(strstr(resumed.err.msg, "data"));
        }
        ms_free(&s);
    }
}

static int setup_data(void **state)
{
    (void)state;
    eml_kernels_set_threads(1);
    make_quadrants(tr_img, tr_lab, N_TRAIN, 1);
    make_quadrants(te_img, te_lab, N_TEST, 2);
    return 0;
}

static void test_resume_plain(void **state)
{
    (void)state;
    run_case c = {"plain", cfg_plain, 0, 1};
    check_resume(&c);
}

static void test_resume_dropout_momentum(void **state)
{
    (void)state;
    run_case c = {"dropout+momentum", cfg_dropout, 0, 1};
    check_resume(&c);
}

static void test_resume_every_3(void **state)
{
    (void)state;
    run_case c = {"dropout+momentum, every 3", cfg_dropout, 0, 3};
    check_resume(&c);
}

static void test_resume_batchnorm(void **state)
{
    (void)state;
    run_case c = {"batch norm + shortcut, every 3", cfg_batchnorm, 0, 3};
    check_resume(&c);
}

static void test_resume_augment(void **state)
{
    (void)state;
    run_case c = {"augmentation, every 3", cfg_augment, 0, 3};
    check_resume(&c);
}

static void test_resume_ema(void **state)
{
    (void)state;
    run_case c = {"ema", cfg_ema, 0, 1};
    check_resume(&c);
}

static void test_resume_adam(void **state)
{
    (void)state;
    run_case c = {"adam", cfg_adam, 0, 1};
    check_resume(&c);
}

static void test_resume_max_batches(void **state)
{
    (void)state;
    run_case c = {"max_batches", cfg_max_batches, 0, 1};
    check_resume(&c);
}

static void test_resume_dp(void **state)
{
    (void)state;
    run_case c = {"dp", cfg_dropout, 1, 1};
    check_resume(&c);
}

static void test_resume_dp_fixed_batches(void **state)
{
    (void)state;
    run_case c = {"dp, fixed batches", cfg_dropout, 2, 1};
    check_resume(&c);
}

static void test_resume_dp_target_epsilon(void **state)
{
    (void)state;
    run_case c = {"dp, target epsilon", cfg_ema, 3, 1};
    check_resume(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_mapped),
        cmocka_unit_test(test_roundtrip_written),
        cmocka_unit_test(test_roundtrip_staged),
        cmocka_unit_test(test_fresh_store),
        cmocka_unit_test(test_empty_state),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_other_runs_and_swaps),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_rollback_to_nothing),
        cmocka_unit_test(test_wrong_keys),
        cmocka_unit_test(test_fuzz_seed),
        cmocka_unit_test(test_resume_plain),
        cmocka_unit_test(test_resume_dropout_momentum),
        cmocka_unit_test(test_resume_every_3),
        cmocka_unit_test(test_resume_batchnorm),
        cmocka_unit_test(test_resume_augment),
        cmocka_unit_test(test_resume_ema),
        cmocka_unit_test(test_resume_adam),
        cmocka_unit_test(test_resume_max_batches),
        cmocka_unit_test(test_resume_dp),
        cmocka_unit_test(test_resume_dp_fixed_batches),
        cmocka_unit_test(test_resume_dp_target_epsilon),
    };
    return cmocka_run_group_tests(tests, setup_data, NULL);
}
