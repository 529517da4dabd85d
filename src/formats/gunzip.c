/*
 * gunzip.c - gzip (RFC 1952) decompression of an in-memory buffer via zlib.
 *
 * Trusted-safe: no I/O, no printing, no exit.  The input is hostile: the
 * output is capped at max_out bytes, and the output buffer grows with what
 * actually decodes, never with what a header or trailer claims, so a small
 * stream cannot make us allocate much more than it really expands to.  zlib
 * checks each member's CRC-32 and ISIZE trailer.  Concatenated members (what
 * `cat a.gz b.gz` makes, and what gzip(1) accepts) are decoded in turn;
 * bytes after the last member that do not start another member are an
 * error, not "trailing garbage ignored".
 *
 * Its messages never carry numbers or bytes taken from the stream (sizes,
 * offsets, member counts): the enclave runs it over decrypted data and its
 * errors go to the host.  They name the problem; zlib's own messages are
 * fixed strings.
 *
 * Ownership: on success the caller owns *out (malloc'd, never NULL); on
 * error *out is NULL and the partial output has been wiped and freed.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define ZLIB_CONST /* next_in is const: zlib never writes the input */
#include <zlib.h>

#include "enclaveml/idx.h"
#include "formats/formats_internal.h"

/* Deflate cannot expand more than 1032:1 (a 258-byte match in 2 bits), so
 * no stream of len bytes decodes to more than this: used only to bound the
 * first allocation, which a lying ISIZE trailer could otherwise inflate. */
#define DEFLATE_MAX_RATIO 1032u
#define FIRST_ALLOC_MIN 4096u

void eml_fmt_wipe(void *p, size_t n)
{
    /* A volatile function pointer: the compiler cannot prove the store is
     * dead, so it is not removed before the free that follows. */
    static void *(*const volatile wipe)(void *, int, size_t) = memset;
    if (p != NULL && n > 0) wipe(p, 0, n);
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static size_t sat_mul(size_t a, size_t b)
{
    return (b != 0 && a > SIZE_MAX / b) ? SIZE_MAX : a * b;
}

/* First guess at the output size: the ISIZE trailer of the last member
 * (right for the common single-member file), bounded by what len bytes can
 * possibly decode to and by max_out.  Growth handles a wrong guess. */
static size_t first_capacity(const uint8_t *buf, size_t len, size_t max_out)
{
    size_t guess = FIRST_ALLOC_MIN;
    if (len >= 18) {
        const uint8_t *t = buf + len - 4;
        size_t isize = (size_t)t[0] | (size_t)t[1] << 8 |
                       (size_t)t[2] << 16 | (size_t)t[3] << 24;
        if (isize > guess) guess = isize;
    }
    guess = min_size(guess, sat_mul(len, DEFLATE_MAX_RATIO) + 64);
    return min_size(guess, max_out);
}

/* zlib's messages are terse; say what they mean for a gzip file. */
static const char *explain(const char *zmsg)
{
    if (zmsg == NULL) return "unknown error";
    if (strcmp(zmsg, "incorrect data check") == 0)
        return "CRC-32 mismatch: incorrect data check";
    if (strcmp(zmsg, "incorrect length check") == 0)
        return "length trailer mismatch: incorrect length check";
    if (strcmp(zmsg, "incorrect header check") == 0)
        return "not a gzip member: incorrect header check";
    return zmsg;
}

/* One decompression: zlib's stream, the input, and the output so far. */
typedef struct gz {
    z_stream zs;
    const uint8_t *buf;
    size_t len, max_out;
    const char *nm, *sep; /* "<name>: " in front of messages, or "" */
    uint8_t *dst;
    size_t cap, used;
    size_t fed;           /* input bytes handed to zlib so far */
    uint8_t spill;        /* one byte past max_out: proves the stream is
                             longer */
    eml_err *err;
} gz;

/* Hands zlib more input if it used all it had, and room for output: dst
 * grown while under max_out, else the one spill byte.  *spilling says
 * which. */
static eml_status gz_room(gz *g, int *spilling)
{
    *spilling = 0;
    if (g->zs.avail_in == 0 && g->fed < g->len) {
        size_t chunk = min_size(g->len - g->fed, UINT_MAX); /* zlib: uInt */
        g->zs.next_in = (z_const Bytef *)(g->buf + g->fed);
        g->zs.avail_in = (uInt)chunk;
        g->fed += chunk;
    }
    if (g->used == g->cap && g->cap < g->max_out) {
        size_t ncap = g->cap < g->max_out / 2 ? g->cap * 2 : g->max_out;
        uint8_t *ndst;
        if (ncap < FIRST_ALLOC_MIN)
            ncap = min_size(FIRST_ALLOC_MIN, g->max_out);
        ndst = realloc(g->dst, ncap);
        if (ndst == NULL)
            return eml_err_set(g->err, EML_ERR_NOMEM,
                               "%s%sout of memory for the decompressed "
                               "bytes", g->nm, g->sep);
        g->dst = ndst;
        g->cap = ncap;
    }
    if (g->used == g->cap) {
        g->zs.next_out = &g->spill;
        g->zs.avail_out = 1;
        *spilling = 1;
    } else {
        g->zs.next_out = g->dst + g->used;
        g->zs.avail_out = (uInt)min_size(g->cap - g->used, UINT_MAX);
    }
    return EML_OK;
}

/* The end of a member: done if the input ends here, else the next member
 * must start right away. */
static eml_status gz_member_end(gz *g, int *done)
{
    size_t at = g->fed - g->zs.avail_in; /* first byte after this member */
    if (at == g->len) {
        *done = 1;
        return EML_OK;
    }
    if (g->buf[at] != 0x1f || (at + 1 < g->len && g->buf[at + 1] != 0x8b))
        return eml_err_set(g->err, EML_ERR_FORMAT,
                           "%s%strailing data after a gzip member (not the "
                           "start of another member)",
                           g->nm, g->sep);
    if (inflateReset(&g->zs) != Z_OK)
        return eml_err_set(g->err, EML_ERR_BACKEND,
                           "%s%szlib could not start the next member", g->nm,
                           g->sep);
    return EML_OK;
}

/* What one inflate() call's result zr means: an error, the end of the
 * last member (*done), or go on.  in_before and out_room are what zlib
 * had before the call. */
static eml_status gz_result(gz *g, int zr, size_t in_before, size_t out_room,
                            int *done)
{
    const char *nm = g->nm, *sep = g->sep;
    if (zr == Z_STREAM_END) return gz_member_end(g, done);
    if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT)
        return eml_err_set(g->err, EML_ERR_FORMAT,
                           "%s%sgzip stream is corrupt (%s)", nm, sep,
                           zr == Z_NEED_DICT ? "needs a preset dictionary"
                                             : explain(g->zs.msg));
    if (zr == Z_MEM_ERROR)
        return eml_err_set(g->err, EML_ERR_NOMEM,
                           "%s%szlib ran out of memory", nm, sep);
    if (zr != Z_OK && zr != Z_BUF_ERROR)
        return eml_err_set(g->err, EML_ERR_BACKEND,
                           "%s%szlib inflate failed (%d)", nm, sep, zr);
    /* Z_OK or Z_BUF_ERROR: go on while there is input left or output was
     * made; with all input consumed and nothing made, the stream stops
     * before its end. */
    if (g->zs.avail_in == 0 && g->fed == g->len && in_before == 0 &&
        out_room == g->zs.avail_out)
        return eml_err_set(g->err, EML_ERR_TRUNCATED,
                           "%s%sgzip stream is truncated (ends inside a "
                           "member)",
                           nm, sep);
    if (zr == Z_BUF_ERROR && g->zs.avail_in > 0 && g->zs.avail_out > 0)
        /* No progress possible with room on both sides: cannot happen
         * with a correct zlib, but never loop forever on it. */
        return eml_err_set(g->err, EML_ERR_BACKEND,
                           "%s%szlib made no progress", nm, sep);
    return EML_OK;
}

/* Inflates every member of g->buf into g->dst. */
static eml_status gz_run(gz *g)
{
    int done = 0;
    while (!done) {
        int spilling, zr;
        size_t in_before, out_room;
        eml_status st = gz_room(g, &spilling);
        if (st != EML_OK) return st;
        out_room = g->zs.avail_out;
        in_before = g->zs.avail_in;

        zr = inflate(&g->zs, Z_NO_FLUSH);

        if (spilling && g->zs.avail_out == 0)
            return eml_err_set(g->err, EML_ERR_RANGE,
                               "%s%sgzip stream decompresses to more than "
                               "the %zu bytes allowed",
                               g->nm, g->sep, g->max_out);
        if (!spilling) g->used += out_room - g->zs.avail_out;
        st = gz_result(g, zr, in_before, out_room, &done);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

eml_status eml_gunzip_named(const uint8_t *buf, size_t len, size_t max_out,
                            const char *name, uint8_t **out, size_t *out_len,
                            eml_err *err)
{
    gz g;
    eml_status st;
    int zr;

    memset(&g, 0, sizeof(g));
    g.buf = buf;
    g.len = len;
    g.max_out = max_out;
    g.nm = name != NULL ? name : "";
    g.sep = name != NULL ? ": " : "";
    g.err = err;
    if (out != NULL) *out = NULL;
    if (out_len != NULL) *out_len = 0;
    if (out == NULL || out_len == NULL || (buf == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "%s%sgunzip called with a NULL pointer", g.nm,
                           g.sep);
    if (len == 0)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "%s%sgzip stream is empty", g.nm, g.sep);

    zr = inflateInit2(&g.zs, 16 + MAX_WBITS); /* 16+: gzip wrapper only */
    if (zr != Z_OK)
        return eml_err_set(err, zr == Z_MEM_ERROR ? EML_ERR_NOMEM
                                                  : EML_ERR_BACKEND,
                           "%s%szlib could not start inflating (%s)", g.nm,
                           g.sep,
                           g.zs.msg != NULL ? g.zs.msg
                                            : "inflateInit2 failed");

    g.cap = first_capacity(buf, len, max_out);
    g.dst = malloc(g.cap > 0 ? g.cap : 1);
    if (g.dst == NULL)
        st = eml_err_set(err, EML_ERR_NOMEM,
                         "%s%sout of memory for the decompressed bytes", g.nm,
                         g.sep);
    else
        st = gz_run(&g);
    inflateEnd(&g.zs);
    if (st != EML_OK) {
        if (g.dst != NULL) {
            eml_fmt_wipe(g.dst, g.used);
            free(g.dst);
        }
        return st;
    }
    if (g.used < g.cap) { /* give back what the guess over-allocated */
        uint8_t *small = realloc(g.dst, g.used > 0 ? g.used : 1);
        if (small != NULL) g.dst = small;
    }
    *out = g.dst;
    *out_len = g.used;
    return EML_OK;
}

eml_status eml_gunzip(const uint8_t *buf, size_t len, size_t max_out,
                      uint8_t **out, size_t *out_len, eml_err *err)
{
    return eml_gunzip_named(buf, len, max_out, NULL, out, out_len, err);
}
