/*
 * test_formats.c - IDX, gzip and safetensors: round trips, known answers
 * built by hand from the format specs, and corrupted input (every
 * truncation, bit flips, bad headers, overflowing sizes, bad JSON).  Every
 * failure must be an error status with a one-line message, never a crash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "enclaveml/idx.h"
#include "enclaveml/safetensors.h"
#include "formats/formats_internal.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* ==== helpers ==== */

/* The call failed with a status and a non-empty, single-line message. */
static void check_fail(eml_status st, const eml_err *err)
{
    if (st == EML_OK) fail_msg("expected an error, got EML_OK");
    if (err->msg[0] == '\0') fail_msg("error %d without a message", st);
    if (strchr(err->msg, '\n') != NULL)
        fail_msg("message spans lines: %s", err->msg);
}

static void check_msg(const eml_err *err, const char *needle)
{
    if (strstr(err->msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
}

/* gzip (not zlib) wrapper around deflate, as gzip(1) would write. */
static uint8_t *gz(const uint8_t *src, size_t n, int level, size_t *out_len)
{
    z_stream zs;
    uint8_t *out;
    size_t cap;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8,
                                  Z_DEFAULT_STRATEGY),
                     Z_OK);
    cap = deflateBound(&zs, (uLong)n) + 32;
    out = malloc(cap);
    assert_non_null(out);
    zs.next_in = (Bytef *)(uintptr_t)src;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static uint8_t *concat(const uint8_t *a, size_t na, const uint8_t *b,
                       size_t nb, size_t *n)
{
    uint8_t *c = malloc(na + nb + 1);
    assert_non_null(c);
    memcpy(c, a, na);
    if (nb > 0) memcpy(c + na, b, nb);
    *n = na + nb;
    return c;
}

/* A raw IDX file of unsigned bytes with the given dims; data[i] = f(i). */
static uint8_t *make_idx(const uint32_t *dims, int ndims, size_t *len)
{
    size_t total = 1, hlen = 4 + 4 * (size_t)ndims, i;
    uint8_t *b;
    int d;
    for (d = 0; d < ndims; d++) total *= dims[d];
    b = malloc(hlen + total + 1);
    assert_non_null(b);
    b[0] = 0;
    b[1] = 0;
    b[2] = 0x08;
    b[3] = (uint8_t)ndims;
    for (d = 0; d < ndims; d++) {
        b[4 + 4 * d] = (uint8_t)(dims[d] >> 24);
        b[5 + 4 * d] = (uint8_t)(dims[d] >> 16);
        b[6 + 4 * d] = (uint8_t)(dims[d] >> 8);
        b[7 + 4 * d] = (uint8_t)dims[d];
    }
    for (i = 0; i < total; i++) b[hlen + i] = (uint8_t)(i * 7 + 3);
    *len = hlen + total;
    return b;
}

/* A safetensors file: 8-byte little-endian length, header, data. */
static uint8_t *st_make(const char *header, const void *data, size_t dlen,
                        size_t *len)
{
    size_t hlen = strlen(header), i;
    uint8_t *b = malloc(8 + hlen + dlen + 1);
    assert_non_null(b);
    for (i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(b + 8, header, hlen);
    if (dlen > 0) memcpy(b + 8 + hlen, data, dlen);
    *len = 8 + hlen + dlen;
    return b;
}

/* Parses header + data and expects status want (EML_OK or an error). */
static eml_st *st_try(const char *header, const void *data, size_t dlen,
                      eml_status want, const char *needle)
{
    size_t len;
    uint8_t *b = st_make(header, data, dlen, &len);
    eml_err err = {{0}};
    eml_st *st = NULL;
    eml_status s = eml_st_parse(b, len, &st, &err);
    if (want == EML_OK) {
        if (s != EML_OK)
            fail_msg("header %s: unexpected error: %s", header,
                     eml_err_msg(&err, s));
        eml_st_free(st);
        st = NULL;
    } else {
        if (s == EML_OK) fail_msg("header %s: accepted, expected an error",
                                  header);
        check_fail(s, &err);
        assert_null(st);
        if (s != want)
            fail_msg("header %s: status %d, expected %d (%s)", header, s,
                     want, err.msg);
        if (needle != NULL) check_msg(&err, needle);
    }
    free(b);
    return st;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (f == NULL) return 0;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    *buf = malloc((size_t)n + 1);
    assert_non_null(*buf);
    *len = fread(*buf, 1, (size_t)n, f);
    fclose(f);
    return *len == (size_t)n;
}

/* ==== IDX ==== */

static void test_idx_known_answer(void **state)
{
    /* Labels: magic 00 00 08 01, count 3 (big-endian), then the bytes. */
    static const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9};
    /* Images: 2 items of 2x3. */
    static const uint8_t images[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2,
                                     0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8,
                                     9, 10, 11, 12};
    eml_idx idx;
    eml_err err = {{0}};
    uint8_t *w;
    size_t wlen;
    (void)state;

    assert_int_equal(eml_idx_parse(labels, sizeof(labels), "l", &idx, &err),
                     EML_OK);
    assert_int_equal(idx.ndims, 1);
    assert_int_equal(idx.dims[0], 3);
    assert_int_equal(idx.count, 3);
    assert_int_equal(idx.item, 1);
    assert_memory_equal(idx.data, labels + 8, 3);
    assert_int_equal(eml_idx_write(&idx, &w, &wlen), EML_OK);
    assert_int_equal(wlen, sizeof(labels));
    assert_memory_equal(w, labels, sizeof(labels));
    free(w);
    eml_idx_free(&idx);
    assert_null(idx.data);

    assert_int_equal(eml_idx_parse(images, sizeof(images), "i", &idx, &err),
                     EML_OK);
    assert_int_equal(idx.ndims, 3);
    assert_int_equal(idx.count, 2);
    assert_int_equal(idx.item, 6);
    assert_int_equal(idx.dims[1], 2);
    assert_int_equal(idx.dims[2], 3);
    assert_int_equal(idx.dims[3], 0);
    assert_memory_equal(idx.data, images + 16, 12);
    assert_int_equal(eml_idx_write(&idx, &w, &wlen), EML_OK);
    assert_int_equal(wlen, sizeof(images));
    assert_memory_equal(w, images, sizeof(images));
    free(w);
    eml_idx_free(&idx);
    eml_idx_free(&idx); /* zeroed: still fine */
    eml_idx_free(NULL);
}

static void test_idx_roundtrip(void **state)
{
    static const uint32_t shapes[][4] = {
        {5, 0, 0, 0}, {3, 4, 5, 0}, {2, 3, 4, 5}, {0, 28, 28, 0}, {1, 1, 0, 0}};
    static const int nd[] = {1, 3, 4, 3, 2};
    size_t s;
    (void)state;

    for (s = 0; s < sizeof(nd) / sizeof(nd[0]); s++) {
        size_t len, glen, wlen, total = 1;
        uint8_t *raw = make_idx(shapes[s], nd[s], &len), *g, *w;
        eml_idx idx, back;
        eml_err err = {{0}};
        int d;
        for (d = 0; d < nd[s]; d++) total *= shapes[s][d];

        assert_int_equal(eml_idx_parse(raw, len, "x", &idx, &err), EML_OK);
        assert_int_equal(idx.ndims, nd[s]);
        assert_int_equal(idx.count, shapes[s][0]);
        assert_int_equal(idx.count * idx.item, total);
        assert_non_null(idx.data);
        if (total > 0) assert_memory_equal(idx.data, raw + 4 + 4 * nd[s], total);

        assert_int_equal(eml_idx_write(&idx, &w, &wlen), EML_OK);
        assert_int_equal(wlen, len);
        assert_memory_equal(w, raw, len);
        assert_int_equal(eml_idx_parse(w, wlen, "x", &back, &err), EML_OK);
        assert_int_equal(back.count * back.item, total);
        if (total > 0) assert_memory_equal(back.data, idx.data, total);
        eml_idx_free(&back);

        /* The same bytes gzipped, at both extremes of deflate. */
        for (d = 0; d <= 9; d += 9) {
            g = gz(raw, len, d, &glen);
            assert_int_equal(eml_idx_parse(g, glen, "x.gz", &back, &err),
                             EML_OK);
            assert_int_equal(back.ndims, nd[s]);
            assert_int_equal(back.count * back.item, total);
            if (total > 0) assert_memory_equal(back.data, idx.data, total);
            eml_idx_free(&back);
            free(g);
        }
        eml_idx_free(&idx);
        free(raw);
        free(w);
    }
}

static void test_idx_gzip_members(void **state)
{
    /* gzip(1) reads concatenated members as one stream: so do we. */
    static const uint32_t dims[] = {50, 10};
    size_t len, g1len, g2len, glen, cut = 77;
    uint8_t *raw = make_idx(dims, 2, &len);
    uint8_t *g1 = gz(raw, cut, 6, &g1len);
    uint8_t *g2 = gz(raw + cut, len - cut, 6, &g2len);
    uint8_t *g = concat(g1, g1len, g2, g2len, &glen);
    uint8_t *empty, *g3;
    size_t elen, g3len;
    eml_idx idx;
    eml_err err = {{0}};
    (void)state;

    assert_int_equal(eml_idx_parse(g, glen, "two.gz", &idx, &err), EML_OK);
    assert_int_equal(idx.count, 50);
    assert_memory_equal(idx.data, raw + 12, 500);
    eml_idx_free(&idx);

    /* An empty member in between changes nothing. */
    empty = gz((const uint8_t *)"", 0, 6, &elen);
    g3 = concat(g1, g1len, empty, elen, &g3len);
    free(g);
    g = concat(g3, g3len, g2, g2len, &glen);
    assert_int_equal(eml_idx_parse(g, glen, "three.gz", &idx, &err), EML_OK);
    assert_memory_equal(idx.data, raw + 12, 500);
    eml_idx_free(&idx);

    free(raw);
    free(g1);
    free(g2);
    free(g3);
    free(g);
    free(empty);
}

static void test_idx_truncations(void **state)
{
    static const uint32_t dims[] = {3, 4, 5};
    size_t len, glen, cut;
    uint8_t *raw = make_idx(dims, 3, &len);
    uint8_t *g = gz(raw, len, 9, &glen);
    (void)state;

    for (cut = 0; cut < len; cut++) {
        eml_idx idx;
        eml_err err = {{0}};
        uint8_t *b = malloc(cut + 1); /* exact size: ASan sees overreads */
        eml_status st;
        memcpy(b, raw, cut);
        st = eml_idx_parse(b, cut, "t", &idx, &err);
        check_fail(st, &err);
        if (st != EML_ERR_TRUNCATED)
            fail_msg("raw cut at %zu: status %d (%s)", cut, st, err.msg);
        assert_null(idx.data);
        free(b);
    }
    for (cut = 0; cut < glen; cut++) {
        eml_idx idx;
        eml_err err = {{0}};
        uint8_t *b = malloc(cut + 1);
        eml_status st;
        memcpy(b, g, cut);
        st = eml_idx_parse(b, cut, "t.gz", &idx, &err);
        check_fail(st, &err);
        if (st != EML_ERR_TRUNCATED)
            fail_msg("gz cut at %zu of %zu: status %d (%s)", cut, glen, st,
                     err.msg);
        free(b);
    }
    free(raw);
    free(g);
}

static void test_idx_gzip_bitflips(void **state)
{
    static const uint32_t dims[] = {4, 6, 6};
    size_t len, glen, bit, failed = 0, same = 0;
    uint8_t *raw = make_idx(dims, 3, &len);
    uint8_t *g = gz(raw, len, 9, &glen);
    (void)state;

    for (bit = 0; bit < glen * 8; bit++) {
        eml_idx idx;
        eml_err err = {{0}};
        eml_status st;
        g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        st = eml_idx_parse(g, glen, "flip.gz", &idx, &err);
        if (st == EML_OK) {
            /* Only bits the format does not protect (gzip header MTIME, XFL,
             * OS, FTEXT) may flip unnoticed, and then nothing changed. */
            assert_int_equal(idx.count * idx.item, 4 * 36);
            assert_memory_equal(idx.data, raw + 16, 4 * 36);
            eml_idx_free(&idx);
            same++;
        } else {
            check_fail(st, &err);
            failed++;
        }
        g[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    /* Everything but the 10-byte header's unprotected fields is caught. */
    assert_true(same <= 8 * 8);
    assert_true(failed >= glen * 8 - 8 * 8);
    free(raw);
    free(g);
}

static void idx_expect(const uint8_t *b, size_t len, eml_status want,
                       const char *needle)
{
    eml_idx idx;
    eml_err err = {{0}};
    eml_status st = eml_idx_parse(b, len, "bad-idx", &idx, &err);
    check_fail(st, &err);
    if (st != want)
        fail_msg("status %d, expected %d (%s)", st, want, err.msg);
    check_msg(&err, "bad-idx");
    if (needle != NULL) check_msg(&err, needle);
    assert_null(idx.data);
    assert_int_equal(idx.count, 0);
}

static void test_idx_bad_headers(void **state)
{
    uint8_t b[64];
    size_t glen;
    uint8_t *g;
    (void)state;

#define HDR(...)                                                               \
    do {                                                                       \
        static const uint8_t h_[] = {__VA_ARGS__};                             \
        memset(b, 0, sizeof(b));                                               \
        memcpy(b, h_, sizeof(h_));                                             \
    } while (0)

    HDR(1, 0, 8, 1, 0, 0, 0, 1, 5);
    idx_expect(b, 9, EML_ERR_FORMAT, "not an IDX file");
    HDR(0, 2, 8, 1, 0, 0, 0, 1, 5);
    idx_expect(b, 9, EML_ERR_FORMAT, "not an IDX file");
    /* Messages name the problem and quote no byte or number of the file
     * (the enclave parses decrypted data with this: test_idx_no_echo). */
    HDR(0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0);
    idx_expect(b, 12, EML_ERR_UNSUPPORTED, "element type is not supported");
    HDR(0, 0, 0x07, 1, 0, 0, 0, 1, 5);
    idx_expect(b, 9, EML_ERR_FORMAT, "unknown IDX element type");
    HDR(0, 0, 8, 0, 5);
    idx_expect(b, 5, EML_ERR_FORMAT, "no dimensions");
    HDR(0, 0, 8, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 9);
    idx_expect(b, 25, EML_ERR_UNSUPPORTED, "too many dimensions");
    /* Zero item dimension (only the count may be 0). */
    HDR(0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 0);
    idx_expect(b, 12, EML_ERR_FORMAT, "is 0");
    /* Trailing bytes. */
    HDR(0, 0, 8, 1, 0, 0, 0, 2, 5, 6, 7);
    idx_expect(b, 11, EML_ERR_FORMAT, "trailing bytes past");
    /* Overflow: 2^32-1 in each of 4 dims is ~2^128 bytes. */
    HDR(0, 0, 8, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    idx_expect(b, 20, EML_ERR_RANGE, "dimension product overflows");
    /* Even with count 0, absurd item dims are refused. */
    HDR(0, 0, 8, 4, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff);
    idx_expect(b, 20, EML_ERR_RANGE, "limit");
    /* 65536 x 65536 x 2 = 8 GiB: over the limit, refused before any
     * allocation. */
    HDR(0, 0, 8, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2);
    idx_expect(b, 16, EML_ERR_RANGE, "limit");
    /* 65536 x 65536 = exactly 4 GiB: allowed by the cap, but the file is
     * short, so truncated (and nothing was allocated). */
    HDR(0, 0, 8, 2, 0, 1, 0, 0, 0, 1, 0, 0, 1, 2, 3);
    idx_expect(b, 15, EML_ERR_TRUNCATED, "truncated");
    /* The message the CLI shows for a short download. */
    {
        static const uint32_t dims[] = {60000, 28, 28};
        size_t len;
        uint8_t *raw = make_idx(dims, 3, &len);
        eml_idx idx;
        eml_err err = {{0}};
        assert_int_equal(eml_idx_parse(raw, 16 + 1234,
                                       "train-images-idx3-ubyte", &idx, &err),
                         EML_ERR_TRUNCATED);
        assert_string_equal(err.msg, "train-images-idx3-ubyte: truncated: "
                                     "the data is shorter than the IDX "
                                     "header announces");
        /* The same, gzipped: the message says it means the decompressed
         * bytes. */
        g = gz(raw, 16 + 1234, 6, &glen);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_idx_parse(g, glen, "train-images-idx3-ubyte.gz",
                                       &idx, &err),
                         EML_ERR_TRUNCATED);
        assert_string_equal(err.msg, "train-images-idx3-ubyte.gz: truncated: "
                                     "the data is shorter than the IDX "
                                     "header announces (after gunzip)");
        free(g);
        free(raw);
    }
    /* A gzipped file with a bad IDX header inside. */
    HDR(0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 0);
    g = gz(b, 12, 6, &glen);
    idx_expect(g, glen, EML_ERR_UNSUPPORTED, "(after gunzip)");
    free(g);
#undef HDR
}

/* The message of a failed parse must not echo the file: neither its bytes
 * as text nor as hex, nor the numbers its header fields would hold.  The
 * enclave parses decrypted files and sends its errors to the host. */
static void expect_no_echo(const uint8_t *b, size_t len, const char *what)
{
    eml_idx idx;
    eml_err err = {{0}};
    char pat[32];
    eml_status st = eml_idx_parse(b, len, "slot", &idx, &err);
    if (st == EML_OK) fail_msg("%s: parsed", what);
    check_fail(st, &err);
    /* The one number a message may hold is the size limit: blank it. */
    snprintf(pat, sizeof(pat), "%zu", (size_t)EML_IDX_MAX_BYTES);
    char *lim = strstr(err.msg, pat);
    if (lim != NULL) memset(lim, '_', strlen(pat));
    const char *texts[] = {"Hi there", "Hi t", "CANARY", "canary", "there"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strstr(err.msg, texts[i]) != NULL)
            fail_msg("%s: \"%s\" echoes \"%s\"", what, err.msg, texts[i]);
    for (size_t i = 0; i + 1 < len && i < 24; i++) {
        const char *fmts[] = {"%02x %02x", "%02x%02x", "%02X %02X",
                              "%02X%02X"};
        for (size_t f = 0; f < 4; f++) {
            snprintf(pat, sizeof(pat), fmts[f], b[i], b[i + 1]);
            if (strstr(err.msg, pat) != NULL)
                fail_msg("%s: \"%s\" echoes bytes %zu..%zu (%s)", what,
                         err.msg, i, i + 1, pat);
        }
    }
    /* The big-endian u32 at each 4-byte header slot, in decimal. */
    for (size_t i = 4; i + 4 <= len && i < 24; i += 4) {
        uint32_t v = (uint32_t)b[i] << 24 | (uint32_t)b[i + 1] << 16 |
                     (uint32_t)b[i + 2] << 8 | b[i + 3];
        snprintf(pat, sizeof(pat), "%lu", (unsigned long)v);
        if (v >= 100 && strstr(err.msg, pat) != NULL)
            fail_msg("%s: \"%s\" echoes a dimension (%s)", what, err.msg,
                     pat);
    }
    /* The file's length (raw buffers only: what a .gz expands to is not
     * the input length). */
    snprintf(pat, sizeof(pat), "%zu", len);
    if (len >= 10 && strstr(err.msg, pat) != NULL)
        fail_msg("%s: \"%s\" echoes the length %s", what, err.msg, pat);
}

static void test_idx_no_echo(void **state)
{
    (void)state;
    static const char text[] = "Hi there, this is CANARY-7f3a9c, not IDX";
    uint8_t b[64];
    size_t n = sizeof(text) - 1, glen;
    uint8_t *g;

    /* Another file altogether: bad magic. */
    expect_no_echo((const uint8_t *)text, n, "text");
    /* A valid magic and then text: every later check sees canary bytes. */
    static const uint8_t types[] = {0x08, 0x0D, 0x07};
    for (size_t t = 0; t < sizeof(types); t++)
        for (uint8_t nd = 0; nd <= 5; nd++) {
            memset(b, 0, sizeof(b));
            b[2] = types[t];
            b[3] = nd;
            memcpy(b + 4, text, n);
            for (size_t len = 4; len <= 4 + n; len += 5)
                expect_no_echo(b, len, "magic + text");
        }
    /* Dimensions that multiply out, data too short or too long. */
    memset(b, 0, sizeof(b));
    b[2] = 0x08;
    b[3] = 2;
    memcpy(b + 4, "\0\0\0\x07\0\0\0\x05", 8);
    memcpy(b + 12, text, 30);
    expect_no_echo(b, 12 + 30, "trailing canary");
    expect_no_echo(b, 12 + 20, "short canary");
    /* The same through gzip, and a gzip stream with a canary after it. */
    g = gz((const uint8_t *)text, n, 6, &glen);
    expect_no_echo(g, glen, "gzipped text");
    free(g);
    g = gz(b, 12 + 30, 6, &glen);
    expect_no_echo(g, glen, "gzipped trailing canary");
    free(g);
    {
        static const uint32_t dims[] = {2, 2};
        size_t rl, zl;
        uint8_t *raw = make_idx(dims, 2, &rl), *z;
        g = gz(raw, rl, 6, &glen);
        z = concat(g, glen, (const uint8_t *)text, n, &zl);
        expect_no_echo(z, zl, "canary after a gzip member");
        free(z);
        free(g);
        free(raw);
    }
}

static void test_gunzip(void **state)
{
    static const uint32_t dims[] = {10, 10};
    size_t len, glen, olen, zlen;
    uint8_t *raw = make_idx(dims, 2, &len), *g = gz(raw, len, 6, &glen);
    uint8_t *out, *bad, *z, *big;
    uLongf zcap;
    eml_err err = {{0}};
    (void)state;

    assert_int_equal(eml_gunzip(g, glen, len, &out, &olen, &err), EML_OK);
    assert_int_equal(olen, len);
    assert_memory_equal(out, raw, len);
    free(out);

    /* One byte over the cap. */
    assert_int_equal(eml_gunzip(g, glen, len - 1, &out, &olen, &err),
                     EML_ERR_RANGE);
    assert_null(out);
    assert_int_equal(olen, 0);
    check_msg(&err, "more than");

    /* Empty content, cap 0. */
    memset(&err, 0, sizeof(err));
    bad = gz((const uint8_t *)"", 0, 6, &zlen);
    assert_int_equal(eml_gunzip(bad, zlen, 0, &out, &olen, &err), EML_OK);
    assert_non_null(out);
    assert_int_equal(olen, 0);
    free(out);
    free(bad);

    /* CRC-32 trailer wrong. */
    bad = concat(g, glen, NULL, 0, &zlen);
    bad[glen - 8] ^= 1;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(bad, glen, 1 << 20, &out, &olen, &err),
                     EML_ERR_FORMAT);
    check_msg(&err, "CRC-32");
    bad[glen - 8] ^= 1;
    /* ISIZE trailer wrong. */
    bad[glen - 4] ^= 1;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(bad, glen, 1 << 20, &out, &olen, &err),
                     EML_ERR_FORMAT);
    check_msg(&err, "length");
    free(bad);

    /* Trailing bytes that are not another member. */
    bad = concat(g, glen, (const uint8_t *)"xyz", 3, &zlen);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(bad, zlen, 1 << 20, &out, &olen, &err),
                     EML_ERR_FORMAT);
    check_msg(&err, "trailing data after a gzip member");
    free(bad);
    /* Trailing zero padding (as tar leaves) is refused too: strict. */
    bad = concat(g, glen, (const uint8_t *)"\0\0\0\0", 4, &zlen);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(bad, zlen, 1 << 20, &out, &olen, &err),
                     EML_ERR_FORMAT);
    free(bad);
    /* A lone 1f after a member: a second member cut short. */
    bad = concat(g, glen, (const uint8_t *)"\x1f", 1, &zlen);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(bad, zlen, 1 << 20, &out, &olen, &err),
                     EML_ERR_TRUNCATED);
    free(bad);

    /* A zlib (RFC 1950) stream is not gzip. */
    zcap = compressBound((uLong)len);
    z = malloc(zcap);
    assert_int_equal(compress2(z, &zcap, raw, (uLong)len, 6), Z_OK);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(z, zcap, 1 << 20, &out, &olen, &err),
                     EML_ERR_FORMAT);
    check_msg(&err, "gzip stream is corrupt");
    free(z);

    /* Empty input, NULL arguments. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip(g, 0, 100, &out, &olen, &err),
                     EML_ERR_TRUNCATED);
    assert_int_equal(eml_gunzip(NULL, 5, 100, &out, &olen, NULL),
                     EML_ERR_INVALID);
    assert_int_equal(eml_gunzip(g, glen, 100, NULL, &olen, NULL),
                     EML_ERR_INVALID);

    /* A bomb: 64 MiB of zeros is ~64 KiB of gzip; a 1 MiB cap stops it
     * after 1 MiB of work, and the name is in the message. */
    big = calloc(64 << 20, 1);
    assert_non_null(big);
    free(g);
    g = gz(big, 64 << 20, 9, &glen);
    free(big);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_gunzip_named(g, glen, 1 << 20, "bomb.gz", &out,
                                      &olen, &err),
                     EML_ERR_RANGE);
    check_msg(&err, "bomb.gz: gzip stream decompresses to more than");
    assert_int_equal(eml_gunzip(g, glen, 64 << 20, &out, &olen, &err),
                     EML_OK);
    assert_int_equal(olen, 64 << 20);
    free(out);

    free(g);
    free(raw);
}

static void test_idx_write_invalid(void **state)
{
    uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    eml_idx idx = {0};
    uint8_t *out = (uint8_t *)1;
    size_t len = 1;
    (void)state;

    assert_int_equal(eml_idx_write(NULL, &out, &len), EML_ERR_INVALID);
    assert_null(out);
    idx.ndims = 2;
    idx.dims[0] = 2;
    idx.dims[1] = 3;
    idx.count = 2;
    idx.item = 3;
    idx.data = data;
    assert_int_equal(eml_idx_write(&idx, NULL, &len), EML_ERR_INVALID);
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_OK);
    assert_int_equal(len, 12 + 6);
    free(out);
    idx.ndims = 0;
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    idx.ndims = 5;
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    idx.ndims = 2;
    idx.item = 4; /* disagrees with dims */
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    idx.item = 3;
    idx.count = 1;
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    idx.count = 2;
    idx.data = NULL;
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    idx.data = data;
    idx.dims[1] = 0;
    idx.item = 0;
    assert_int_equal(eml_idx_write(&idx, &out, &len), EML_ERR_INVALID);
    assert_null(out);
}

static void test_idx_fashion_mnist(void **state)
{
    uint8_t *buf = NULL;
    size_t len = 0, i;
    eml_idx idx;
    eml_err err = {{0}};
    (void)state;

    if (!read_file(FASHION_DIR "/t10k-labels-idx1-ubyte.gz", &buf, &len)) {
        free(buf);
        skip();
    }
    if (eml_idx_parse(buf, len, "t10k-labels-idx1-ubyte.gz", &idx, &err) !=
        EML_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(idx.ndims, 1);
    assert_int_equal(idx.count, 10000);
    assert_int_equal(idx.item, 1);
    for (i = 0; i < idx.count; i++)
        if (idx.data[i] >= 10) fail_msg("label %zu is %u", i, idx.data[i]);
    eml_idx_free(&idx);
    free(buf);

    buf = NULL;
    if (!read_file(FASHION_DIR "/t10k-images-idx3-ubyte.gz", &buf, &len)) {
        free(buf);
        return;
    }
    assert_int_equal(eml_idx_parse(buf, len, "t10k-images-idx3-ubyte.gz",
                                   &idx, &err),
                     EML_OK);
    assert_int_equal(idx.ndims, 3);
    assert_int_equal(idx.count, 10000);
    assert_int_equal(idx.item, 28 * 28);
    eml_idx_free(&idx);
    free(buf);
}

/* ==== safetensors ==== */

/* Built by hand from the spec (not by our writer): header length 144
 * little-endian, compact JSON padded with 3 spaces, then 16 data bytes:
 * b = [1, -2] and w = [[3, -1]] as little-endian IEEE 754 floats. */
static const char kat_parse[] =
    "\x90\x00\x00\x00\x00\x00\x00\x00"
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[8,16]}}   "
    "\x00\x00\x80\x3f\x00\x00\x00\xc0\x00\x00\x40\x40\x00\x00\x80\xbf";

/* What upstream's layout rules give for metadata {"format":"pt"} and
 * layers.0.weight [2,2] = 1..4, layers.0.bias [2] = 0.5, -0.5, tensors in
 * the order added: length 176, 169 bytes of JSON + 7 spaces, 24 bytes. */
static const char kat_write[] =
    "\xb0\x00\x00\x00\x00\x00\x00\x00"
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],"
    "\"data_offsets\":[0,16]},"
    "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],"
    "\"data_offsets\":[16,24]}}       "
    "\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40\x00\x00\x80\x40"
    "\x00\x00\x00\x3f\x00\x00\x00\xbf";

static void test_st_known_answer(void **state)
{
    eml_st *st = NULL;
    eml_err err = {{0}};
    const eml_st_tensor *b, *w;
    float v[2];
    eml_st_writer *wr;
    uint8_t *out;
    size_t len;
    static const float wt[] = {1, 2, 3, 4}, bias[] = {0.5f, -0.5f};
    static const int64_t ws[] = {2, 2}, bs[] = {2};
    (void)state;

    assert_int_equal(sizeof(kat_parse) - 1, 8 + 144 + 16);
    if (eml_st_parse((const uint8_t *)kat_parse, sizeof(kat_parse) - 1, &st,
                     &err) != EML_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(eml_st_count(st), 2);
    b = eml_st_get(st, 0);
    w = eml_st_get(st, 1);
    assert_null(eml_st_get(st, 2));
    assert_string_equal(b->name, "b");
    assert_string_equal(w->name, "w");
    assert_ptr_equal(eml_st_find(st, "w"), w);
    assert_ptr_equal(eml_st_find(st, "b"), b);
    assert_null(eml_st_find(st, "c"));
    assert_int_equal(b->ndims, 1);
    assert_int_equal(b->shape[0], 2);
    assert_int_equal(w->ndims, 2);
    assert_int_equal(w->shape[0], 1);
    assert_int_equal(w->shape[1], 2);
    assert_int_equal(w->count, 2);
    assert_ptr_equal((const void *)b->data, kat_parse + 8 + 144);
    eml_st_copy(v, b);
    assert_true(v[0] == 1.0f && v[1] == -2.0f);
    eml_st_copy(v, w);
    assert_true(v[0] == 3.0f && v[1] == -1.0f);
    assert_string_equal(eml_st_meta(st, "format"), "pt");
    assert_null(eml_st_meta(st, "other"));
    eml_st_free(st);

    wr = eml_st_writer_new();
    assert_non_null(wr);
    assert_int_equal(eml_st_writer_meta(wr, "format", "pt"), EML_OK);
    assert_int_equal(eml_st_writer_add(wr, "layers.0.weight", ws, 2, wt),
                     EML_OK);
    assert_int_equal(eml_st_writer_add(wr, "layers.0.bias", bs, 1, bias),
                     EML_OK);
    assert_int_equal(eml_st_writer_finish(wr, &out, &len), EML_OK);
    assert_int_equal(len, sizeof(kat_write) - 1);
    assert_memory_equal(out, kat_write, len);
    free(out);
    eml_st_writer_free(wr);
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof(float)) == 0;
}

static void test_st_roundtrip(void **state)
{
    /* Odd names, odd shapes, odd floats. */
    static const char *names[] = {
        "layers.0.weight", "layers.0.bias", "scalar", "empty",
        "eight.dims", "quote\"back\\slash/\n\t\x01\x1f\x7f",
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
    };
    static const int64_t shapes[][8] = {
        {16, 1, 8, 8}, {16}, {0}, {0, 3}, {1, 2, 1, 2, 1, 2, 1, 2}, {3},
        {2, 2}};
    static const int nd[] = {4, 1, 0, 2, 8, 1, 2};
    enum { NT = 7 };
    float *data[NT];
    size_t counts[NT], i, len, len2, j;
    eml_st_writer *w = eml_st_writer_new();
    uint8_t *out, *out2;
    eml_st *st = NULL;
    eml_err err = {{0}};
    (void)state;

    for (i = 0; i < NT; i++) {
        int d;
        counts[i] = 1;
        for (d = 0; d < nd[i]; d++) counts[i] *= (size_t)shapes[i][d];
        data[i] = malloc((counts[i] + 1) * sizeof(float));
        for (j = 0; j < counts[i]; j++)
            data[i][j] = (float)(i * 1000 + j) * 0.37f - 11.0f;
        assert_int_equal(eml_st_writer_add(w, names[i], shapes[i], nd[i],
                                           counts[i] ? data[i] : NULL),
                         EML_OK);
    }
    /* NaN payload, -0, infinity, denormal survive bit for bit. */
    {
        uint32_t u[4] = {0x7fc12345u, 0x80000000u, 0x7f800000u, 0x00000001u};
        memcpy(data[1], u, sizeof(u));
    }
    assert_int_equal(eml_st_writer_meta(w, "format", "pt"), EML_OK);
    assert_int_equal(eml_st_writer_meta(w, "odd \"key\"\n", "v\\al\xc3\xa9"),
                     EML_OK);
    assert_int_equal(eml_st_writer_meta(w, "empty", ""), EML_OK);
    assert_int_equal(eml_st_writer_finish(w, &out, &len), EML_OK);
    /* Deterministic: again, and from a second writer, the same bytes. */
    assert_int_equal(eml_st_writer_finish(w, &out2, &len2), EML_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(out, out2, len);
    free(out2);
    eml_st_writer_free(w);

    /* Header padded so the data starts 8-byte aligned. */
    {
        uint64_t h = 0;
        for (i = 0; i < 8; i++) h |= (uint64_t)out[i] << (8 * i);
        assert_int_equal(h % 8, 0);
        assert_int_equal(out[8 + h - 1] == ' ' || out[8 + h - 1] == '}', 1);
    }

    if (eml_st_parse(out, len, &st, &err) != EML_OK) fail_msg("%s", err.msg);
    assert_int_equal(eml_st_count(st), NT);
    for (i = 0; i < NT; i++) {
        const eml_st_tensor *t = eml_st_get(st, i);
        float *back = malloc((counts[i] + 1) * sizeof(float));
        int d;
        assert_string_equal(t->name, names[i]);
        assert_ptr_equal(eml_st_find(st, names[i]), t);
        assert_int_equal(t->ndims, nd[i]);
        for (d = 0; d < nd[i]; d++) assert_int_equal(t->shape[d], shapes[i][d]);
        assert_int_equal(t->count, counts[i]);
        eml_st_copy(back, t);
        if (!same_bits(back, data[i], counts[i]))
            fail_msg("tensor %zu data differs", i);
        free(back);
    }
    assert_string_equal(eml_st_meta(st, "format"), "pt");
    assert_string_equal(eml_st_meta(st, "odd \"key\"\n"), "v\\al\xc3\xa9");
    assert_string_equal(eml_st_meta(st, "empty"), "");
    assert_int_equal(eml_st_meta_count(st), 3);
    {
        const char *k, *v;
        eml_st_meta_at(st, 1, &k, &v);
        assert_string_equal(k, "odd \"key\"\n");
        eml_st_meta_at(st, 3, &k, &v);
        assert_null(k);
    }

    /* Write what was parsed again: identical bytes. */
    w = eml_st_writer_new();
    assert_int_equal(eml_st_writer_meta(w, "format", "pt"), EML_OK);
    assert_int_equal(eml_st_writer_meta(w, "odd \"key\"\n", "v\\al\xc3\xa9"),
                     EML_OK);
    assert_int_equal(eml_st_writer_meta(w, "empty", ""), EML_OK);
    for (i = 0; i < NT; i++) {
        const eml_st_tensor *t = eml_st_get(st, i);
        assert_int_equal(eml_st_writer_add(w, t->name, t->shape, t->ndims,
                                           t->data),
                         EML_OK);
    }
    assert_int_equal(eml_st_writer_finish(w, &out2, &len2), EML_OK);
    assert_int_equal(len2, len);
    assert_memory_equal(out2, out, len);
    free(out2);
    eml_st_writer_free(w);
    eml_st_free(st);

    /* The same file at an odd address: data is unaligned, copy still works. */
    {
        uint8_t *shifted = malloc(len + 1);
        float v[16];
        memcpy(shifted + 1, out, len);
        assert_int_equal(eml_st_parse(shifted + 1, len, &st, &err), EML_OK);
        eml_st_copy(v, eml_st_find(st, "eight.dims"));
        assert_true(same_bits(v, data[4], 16));
        eml_st_free(st);
        free(shifted);
    }

    free(out);
    for (i = 0; i < NT; i++) free(data[i]);
}

static void test_st_empty_and_many(void **state)
{
    eml_st_writer *w = eml_st_writer_new();
    uint8_t *out;
    size_t len, i;
    eml_st *st;
    eml_err err = {{0}};
    static const int64_t one[] = {1};
    float x = 0;
    enum { MANY = 3000 };
    (void)state;

    /* No tensors at all: "{}" padded to 8, no data. */
    assert_int_equal(eml_st_writer_finish(w, &out, &len), EML_OK);
    assert_int_equal(len, 16);
    assert_memory_equal(out, "\x08\0\0\0\0\0\0\0{}      ", 16);
    assert_int_equal(eml_st_parse(out, len, &st, &err), EML_OK);
    assert_int_equal(eml_st_count(st), 0);
    assert_null(eml_st_find(st, "x"));
    assert_null(eml_st_meta(st, "x"));
    eml_st_free(st);
    free(out);

    /* Many tensors: the name index and duplicate check scale. */
    for (i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof(name), "layers.%zu.weight", (i * 7919) % MANY);
        assert_int_equal(eml_st_writer_add(w, name, one, 1, &x), EML_OK);
    }
    assert_int_equal(eml_st_writer_finish(w, &out, &len), EML_OK);
    assert_int_equal(eml_st_parse(out, len, &st, &err), EML_OK);
    assert_int_equal(eml_st_count(st), MANY);
    for (i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof(name), "layers.%zu.weight", i);
        assert_non_null(eml_st_find(st, name));
    }
    eml_st_free(st);
    free(out);
    eml_st_writer_free(w);
    eml_st_free(NULL);
    eml_st_writer_free(NULL);
    assert_int_equal(eml_st_count(NULL), 0);
}

static void test_st_truncations(void **state)
{
    size_t len = sizeof(kat_parse) - 1, cut;
    (void)state;
    for (cut = 0; cut < len; cut++) {
        uint8_t *b = malloc(cut + 1);
        eml_st *st = (eml_st *)1;
        eml_err err = {{0}};
        eml_status s;
        memcpy(b, kat_parse, cut);
        s = eml_st_parse(b, cut, &st, &err);
        check_fail(s, &err);
        assert_null(st);
        free(b);
    }
    /* And the reverse: one byte too many is trailing data. */
    {
        uint8_t b[sizeof(kat_parse)];
        eml_st *st;
        eml_err err = {{0}};
        memcpy(b, kat_parse, len);
        b[len] = 0;
        assert_int_equal(eml_st_parse(b, len + 1, &st, &err), EML_ERR_FORMAT);
        check_msg(&err, "1 byte after the last tensor");
    }
}

static void test_st_header_length(void **state)
{
    uint8_t b[32];
    eml_st *st;
    eml_err err = {{0}};
    (void)state;

    memcpy(b, kat_parse, sizeof(b));
    /* Longer than the file. */
    b[0] = 0xff;
    assert_int_equal(eml_st_parse(b, sizeof(b), &st, &err),
                     EML_ERR_TRUNCATED);
    check_msg(&err, "header length 255");
    /* Over the 100 MB limit, and 2^64 - 1 (no wrap-around). */
    memset(&err, 0, sizeof(err));
    b[0] = 0;
    b[3] = 0x10; /* 256 MiB */
    assert_int_equal(eml_st_parse(b, sizeof(b), &st, &err), EML_ERR_RANGE);
    memset(&err, 0, sizeof(err));
    memset(b, 0xff, 8);
    assert_int_equal(eml_st_parse(b, sizeof(b), &st, &err), EML_ERR_RANGE);
    /* Zero-length header, and a header not starting with '{'. */
    memset(&err, 0, sizeof(err));
    memset(b, 0, 8);
    assert_int_equal(eml_st_parse(b, 8, &st, &err), EML_ERR_FORMAT);
    st_try(" {}", NULL, 0, EML_ERR_FORMAT, "start with '{'");
    st_try("[]", NULL, 0, EML_ERR_FORMAT, "start with '{'");
    /* NULL arguments. */
    assert_int_equal(eml_st_parse(NULL, 5, &st, NULL), EML_ERR_INVALID);
    assert_int_equal(eml_st_parse(b, 8, NULL, NULL), EML_ERR_INVALID);
}

#define T1(off) "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" off "}"
#define T2(offa, offb)                                                         \
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" offa "},"      \
    "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" offb "}}"

static void test_st_offsets(void **state)
{
    static const uint8_t z[64] = {0};
    (void)state;
    st_try(T1("[0,8]") "}", z, 8, EML_OK, NULL);
    st_try(T2("[0,8]", "[8,12]"), z, 12, EML_OK, NULL);
    st_try(T2("[4,12]", "[0,4]"), z, 12, EML_OK, NULL); /* any order */
    /* Data section longer than the tensors. */
    st_try(T1("[0,8]") "}", z, 9, EML_ERR_FORMAT, "1 byte after");
    /* Runs past the end. */
    st_try(T1("[0,8]") "}", z, 7, EML_ERR_TRUNCATED, "run past the end");
    /* Does not start at 0: a gap. */
    st_try(T1("[4,12]") "}", z, 12, EML_ERR_FORMAT, "gap of 4 bytes");
    /* Gap between tensors. */
    st_try(T2("[0,8]", "[12,16]"), z, 16, EML_ERR_FORMAT,
           "tensor b: data_offsets [12, 16] leave a gap");
    /* Overlap. */
    st_try(T2("[0,8]", "[4,8]"), z, 8, EML_ERR_FORMAT,
           "tensor b: data_offsets [4, 8] overlap tensor a");
    st_try(T2("[0,8]", "[0,4]"), z, 8, EML_ERR_FORMAT, "overlap");
    /* Ends before it begins. */
    st_try(T1("[8,0]") "}", z, 8, EML_ERR_FORMAT, "end before");
    /* Huge offsets: no wrap-around. */
    st_try(T1("[18446744073709551608,18446744073709551615]") "}", z, 8,
           EML_ERR_SHAPE, NULL);
    st_try(T1("[18446744073709551607,18446744073709551615]") "}", z, 8,
           EML_ERR_FORMAT, "gap");
    st_try(T1("[0,18446744073709551616]") "}", z, 8, EML_ERR_RANGE,
           "64 bits");
    /* Zero-size tensors may sit anywhere in the tiling, even together. */
    st_try("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
           "\"f\":{\"dtype\":\"F32\",\"shape\":[5,0],\"data_offsets\":[0,0]}}",
           z, 0, EML_OK, NULL);
    /* Wrong number of offsets. */
    st_try(T1("[0]") "}", z, 8, EML_ERR_FORMAT, "has 1 entries");
    st_try(T1("[0,8,8]") "}", z, 8, EML_ERR_RANGE, "more than 2");
}

static void test_st_dtype_and_shape(void **state)
{
    static const uint8_t z[4096] = {0};
    eml_st *st;
    eml_err err = {{0}};
    size_t len;
    uint8_t *b;
    (void)state;

    st_try("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
           z, 4, EML_ERR_UNSUPPORTED, "tensor a: dtype F16 is not supported");
    st_try("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
           z, 4, EML_ERR_UNSUPPORTED, NULL);
    st_try("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
           z, 8, EML_ERR_FORMAT, "unknown dtype");
    st_try("{\"a\":{\"dtype\":\"F32xxxxxxxxxxxxxxxxxxxxxxxx\",\"shape\":[2],"
           "\"data_offsets\":[0,8]}}",
           z, 8, EML_ERR_FORMAT, "unknown dtype");
    st_try("{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", z, 8,
           EML_ERR_FORMAT, "expected a string");

    /* The message from the brief, exactly. */
    b = st_make("{\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[16,1,8,8],"
                "\"data_offsets\":[0,100]}}",
                z, 100, &len);
    assert_int_equal(eml_st_parse(b, len, &st, &err), EML_ERR_SHAPE);
    assert_string_equal(err.msg,
                        "tensor layers.0.weight: data_offsets [0, 100] do not "
                        "match shape [16, 1, 8, 8] of F32 (4096 bytes)");
    free(b);

    /* Shape products that overflow 64 bits, or a dim over INT64_MAX. */
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
           "\"data_offsets\":[0,0]}}",
           z, 0, EML_ERR_RANGE, "more bytes than fit");
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
           "\"data_offsets\":[0,0]}}",
           z, 0, EML_ERR_RANGE, "more bytes than fit");
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808,0],"
           "\"data_offsets\":[0,0]}}",
           z, 0, EML_ERR_RANGE, "larger than 2^63-1");
    /* 0 times huge is 0 bytes, and fine. */
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],"
           "\"data_offsets\":[0,0]}}",
           z, 0, EML_OK, NULL);
    /* Scalars: shape [] is one element. */
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
           z, 4, EML_OK, NULL);
    /* More than 8 dims. */
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
           "\"data_offsets\":[0,4]}}",
           z, 4, EML_ERR_RANGE, "more than 8");
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1],"
           "\"data_offsets\":[0,4]}}",
           z, 4, EML_OK, NULL);
}

static void test_st_duplicates(void **state)
{
    static const uint8_t z[16] = {0};
    (void)state;
    st_try(T2("[0,8]", "[8,12]"), z, 12, EML_OK, NULL);
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
           z, 12, EML_ERR_FORMAT, "duplicate tensor name a");
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"shape\":[2],"
           "\"data_offsets\":[0,8]}}",
           z, 8, EML_ERR_FORMAT, "duplicate key \"shape\"");
    st_try("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", z, 0,
           EML_ERR_FORMAT, "duplicate __metadata__ key k");
    st_try("{\"__metadata__\":{},\"__metadata__\":{}}", z, 0, EML_ERR_FORMAT,
           "duplicate key \"__metadata__\"");
    /* Names equal once escapes are decoded are duplicates too. */
    st_try("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"\\u0061\":{\"dtype\":\"F32\",\"shape\":[1],"
           "\"data_offsets\":[8,12]}}",
           z, 12, EML_ERR_FORMAT, "duplicate tensor name a");
}

static void test_st_bad_json(void **state)
{
    static const uint8_t z[16] = {0};
    /* Each header is otherwise a valid single tensor "a" of 8 bytes. */
    static const char *const bad[] = {
        "{",
        "{\"a\"",
        "{\"a\":",
        "{\"a\":{",
        T1("[0,8]"),                                   /* object not closed */
        T1("[0,8]") "}}",                              /* extra brace */
        T1("[0,8]") "},",                              /* junk after */
        T1("[0,8]") "} x",                             /* junk after */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[,2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\" \"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{'dtype':\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{a:{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[+2],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[[2]],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":null,\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[NaN],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "//c\n}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
        "\"extra\":1}}",                               /* unknown key */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}",    /* missing key */
        "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}",
        "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\":{}}",
        "{\"a\":[]}",
        "{\"a\":null}",
        "{\"a\":\"x\"}",
        "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\u12\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\\u12g4\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"\\udc00\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"\\ud800\\u0041\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"a\\u0000\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\xc0\x80\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"a\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",                    /* UTF-8 surrogate */
        "{\"a\xf4\x90\x80\x80\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",                    /* > U+10FFFF */
        "{\"a\xe2\x82\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"__metadata__\":null,\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"__metadata__\":{\"k\":{}},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"__metadata__\":{\"k\":\"v\",},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
        "\"data_offsets\":[0,8]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}\0}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}\x0b",
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len;
        uint8_t *b = st_make(bad[i], z, 8, &len);
        eml_st *st = (eml_st *)1;
        eml_err err = {{0}};
        eml_status s = eml_st_parse(b, len, &st, &err);
        if (s == EML_OK) fail_msg("bad header %zu accepted: %s", i, bad[i]);
        check_fail(s, &err);
        assert_null(st);
        free(b);
    }

    /* A name longer than the limit, and exactly at it. */
    {
        char h[1024], name[EML_ST_MAX_NAME + 1];
        memset(name, 'n', sizeof(name) - 1);
        name[EML_ST_MAX_NAME] = '\0';
        snprintf(h, sizeof(h), "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],"
                               "\"data_offsets\":[0,8]}}", name);
        st_try(h, z, 8, EML_ERR_RANGE, "longer than the limit of 255");
        name[EML_ST_MAX_NAME - 1] = '\0';
        snprintf(h, sizeof(h), "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],"
                               "\"data_offsets\":[0,8]}}", name);
        st_try(h, z, 8, EML_OK, NULL);
    }
    /* A hostile name cannot put a newline or escape into the message. */
    st_try("{\"evil\\n\\u001b[31m\":{\"dtype\":\"F16\",\"shape\":[2],"
           "\"data_offsets\":[0,4]}}",
           z, 4, EML_ERR_UNSUPPORTED, "tensor evil\\x0a\\x1b[31m: dtype");
    /* Deep nesting is refused where it starts, without recursion. */
    {
        size_t depth = 100000, len;
        char *h = malloc(depth + 16);
        memcpy(h, "{\"a\":", 5);
        memset(h + 5, '[', depth);
        h[5 + depth] = '\0';
        st_try(h, z, 0, EML_ERR_FORMAT, NULL);
        memcpy(h, "{\"a\":{\"shape\":", 14);
        memset(h + 14, '[', depth);
        h[14 + depth] = '\0';
        st_try(h, z, 0, EML_ERR_FORMAT, NULL);
        (void)len;
        free(h);
    }
}

static void test_st_good_json(void **state)
{
    static const uint8_t z[16] = {0};
    eml_st *st;
    eml_err err = {{0}};
    size_t len;
    uint8_t *b;
    (void)state;

    /* Whitespace anywhere JSON allows it, keys in any order, padding. */
    st_try("{ \"a\" :\t{\n\"data_offsets\" : [ 0 , 8 ] ,\r\"shape\":[ 2 ],"
           "\"dtype\" : \"F32\" } }  \n ",
           z, 8, EML_OK, NULL);
    st_try("{}", z, 0, EML_OK, NULL);
    st_try("{ }        ", z, 0, EML_OK, NULL);
    st_try("{\"__metadata__\":{}}", z, 0, EML_OK, NULL);
    st_try("{\"__metadata__\":{ }, \"a\":{\"dtype\":\"F32\",\"shape\":[2],"
           "\"data_offsets\":[0,8]}}",
           z, 8, EML_OK, NULL);
    /* Escapes decode: \u00e9 is e-acute, a surrogate pair is one emoji,
     * \/ is '/'. */
    b = st_make("{\"caf\\u00e9\\/\\ud83d\\ude00\\\"\\\\\\b\\f\\n\\r\\t\":"
                "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"__metadata__\":{\"\\u00C9t\\u00e9\":\"\\u2603\"}}",
                z, 8, &len);
    if (eml_st_parse(b, len, &st, &err) != EML_OK) fail_msg("%s", err.msg);
    assert_non_null(eml_st_find(st, "caf\xc3\xa9/\xf0\x9f\x98\x80\"\\\b\f\n\r\t"));
    assert_string_equal(eml_st_meta(st, "\xc3\x89t\xc3\xa9"), "\xe2\x98\x83");
    eml_st_free(st);
    free(b);
}

static void test_st_writer_invalid(void **state)
{
    eml_st_writer *w = eml_st_writer_new();
    static const int64_t s2[] = {2}, neg[] = {-1}, big[] = {INT64_MAX, 2};
    static const float f[2] = {1, 2};
    char longname[EML_ST_MAX_NAME + 1];
    uint8_t *out = (uint8_t *)1;
    size_t len = 1;
    (void)state;

    memset(longname, 'x', EML_ST_MAX_NAME);
    longname[EML_ST_MAX_NAME] = '\0';
    assert_int_equal(eml_st_writer_add(NULL, "a", s2, 1, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, NULL, s2, 1, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "", s2, 1, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, longname, s2, 1, f),
                     EML_ERR_INVALID);
    longname[EML_ST_MAX_NAME - 1] = '\0';
    assert_int_equal(eml_st_writer_add(w, longname, s2, 1, f), EML_OK);
    assert_int_equal(eml_st_writer_add(w, "__metadata__", s2, 1, f),
                     EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "bad\xff", s2, 1, f),
                     EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "neg", neg, 1, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "big", big, 2, f), EML_ERR_RANGE);
    assert_int_equal(eml_st_writer_add(w, "nodata", s2, 1, NULL),
                     EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "noshape", NULL, 1, f),
                     EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "dims", s2, 9, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "dims", s2, -1, f),
                     EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_add(w, "a", s2, 1, f), EML_OK);
    assert_int_equal(eml_st_writer_add(w, "a", s2, 1, f), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_meta(w, "k", "v"), EML_OK);
    assert_int_equal(eml_st_writer_meta(w, "k", "w"), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_meta(w, "k2", NULL), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_meta(w, "k2", "\xc3"), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_meta(NULL, "k2", "v"), EML_ERR_INVALID);
    assert_int_equal(eml_st_writer_finish(NULL, &out, &len), EML_ERR_INVALID);
    assert_null(out);
    assert_int_equal(eml_st_writer_finish(w, NULL, &len), EML_ERR_INVALID);
    /* What was refused left no trace: the file has the 2 good tensors. */
    assert_int_equal(eml_st_writer_finish(w, &out, &len), EML_OK);
    {
        eml_st *st;
        eml_err err = {{0}};
        assert_int_equal(eml_st_parse(out, len, &st, &err), EML_OK);
        assert_int_equal(eml_st_count(st), 2);
        assert_string_equal(eml_st_meta(st, "k"), "v");
        eml_st_free(st);
    }
    free(out);
    eml_st_writer_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_known_answer),
        cmocka_unit_test(test_idx_roundtrip),
        cmocka_unit_test(test_idx_gzip_members),
        cmocka_unit_test(test_idx_truncations),
        cmocka_unit_test(test_idx_gzip_bitflips),
        cmocka_unit_test(test_idx_bad_headers),
        cmocka_unit_test(test_idx_no_echo),
        cmocka_unit_test(test_gunzip),
        cmocka_unit_test(test_idx_write_invalid),
        cmocka_unit_test(test_idx_fashion_mnist),
        cmocka_unit_test(test_st_known_answer),
        cmocka_unit_test(test_st_roundtrip),
        cmocka_unit_test(test_st_empty_and_many),
        cmocka_unit_test(test_st_truncations),
        cmocka_unit_test(test_st_header_length),
        cmocka_unit_test(test_st_offsets),
        cmocka_unit_test(test_st_dtype_and_shape),
        cmocka_unit_test(test_st_duplicates),
        cmocka_unit_test(test_st_bad_json),
        cmocka_unit_test(test_st_good_json),
        cmocka_unit_test(test_st_writer_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
