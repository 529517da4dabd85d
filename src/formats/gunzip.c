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

eml_status eml_gunzip_named(const uint8_t *buf, size_t len, size_t max_out,
                            const char *name, uint8_t **out, size_t *out_len,
                            eml_err *err)
{
    const char *nm = name != NULL ? name : "";
    const char *sep = name != NULL ? ": " : "";
    z_stream zs;
    uint8_t *dst = NULL;
    size_t cap = 0, used = 0;
    size_t fed = 0;     /* input bytes handed to zlib so far */
    size_t members = 0; /* members fully decoded */
    eml_status st = EML_OK;
    int zr;

    if (out != NULL) *out = NULL;
    if (out_len != NULL) *out_len = 0;
    if (out == NULL || out_len == NULL || (buf == NULL && len > 0))
        return eml_err_set(err, EML_ERR_INVALID,
                           "%s%sgunzip called with a NULL pointer", nm, sep);
    if (len == 0)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "%s%sgzip stream is empty", nm, sep);

    memset(&zs, 0, sizeof(zs));
    zr = inflateInit2(&zs, 16 + MAX_WBITS); /* 16+: gzip wrapper only */
    if (zr != Z_OK)
        return eml_err_set(err, zr == Z_MEM_ERROR ? EML_ERR_NOMEM
                                                  : EML_ERR_BACKEND,
                           "%s%szlib could not start inflating (%s)", nm, sep,
                           zs.msg != NULL ? zs.msg : "inflateInit2 failed");

    cap = first_capacity(buf, len, max_out);
    dst = malloc(cap > 0 ? cap : 1);
    if (dst == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM,
                         "%s%sout of memory for the decompressed bytes", nm,
                         sep);
        goto out;
    }

    for (;;) {
        uint8_t spill; /* one byte past max_out: proves the stream is longer */
        int spilling = 0;
        size_t in_before, out_room;

        if (zs.avail_in == 0 && fed < len) {
            size_t chunk = min_size(len - fed, UINT_MAX); /* zlib: uInt */
            zs.next_in = (z_const Bytef *)(buf + fed);
            zs.avail_in = (uInt)chunk;
            fed += chunk;
        }
        if (used == cap && cap < max_out) {
            size_t ncap = cap < max_out / 2 ? cap * 2 : max_out;
            uint8_t *ndst;
            if (ncap < FIRST_ALLOC_MIN) ncap = min_size(FIRST_ALLOC_MIN, max_out);
            ndst = realloc(dst, ncap);
            if (ndst == NULL) {
                st = eml_err_set(err, EML_ERR_NOMEM,
                                 "%s%sout of memory for the decompressed "
                                 "bytes", nm, sep);
                goto out;
            }
            dst = ndst;
            cap = ncap;
        }
        if (used == cap) {
            zs.next_out = &spill;
            zs.avail_out = 1;
            spilling = 1;
        } else {
            zs.next_out = dst + used;
            zs.avail_out = (uInt)min_size(cap - used, UINT_MAX);
        }
        out_room = zs.avail_out;
        in_before = zs.avail_in;

        zr = inflate(&zs, Z_NO_FLUSH);

        if (spilling) {
            if (zs.avail_out == 0) {
                st = eml_err_set(err, EML_ERR_RANGE,
                                 "%s%sgzip stream decompresses to more than "
                                 "the %zu bytes allowed", nm, sep, max_out);
                goto out;
            }
        } else {
            used += out_room - zs.avail_out;
        }

        if (zr == Z_STREAM_END) {
            size_t at = fed - zs.avail_in; /* first byte after this member */
            members++;
            if (at == len) break;
            /* Another member must follow immediately. */
            if (buf[at] != 0x1f || (at + 1 < len && buf[at + 1] != 0x8b)) {
                st = eml_err_set(err, EML_ERR_FORMAT,
                                 "%s%strailing data after a gzip member (not "
                                 "the start of another member)",
                                 nm, sep);
                goto out;
            }
            zr = inflateReset(&zs);
            if (zr != Z_OK) {
                st = eml_err_set(err, EML_ERR_BACKEND,
                                 "%s%szlib could not start the next member",
                                 nm, sep);
                goto out;
            }
            continue;
        }
        if (zr == Z_DATA_ERROR || zr == Z_NEED_DICT) {
            st = eml_err_set(err, EML_ERR_FORMAT,
                             "%s%sgzip stream is corrupt (%s)", nm, sep,
                             zr == Z_NEED_DICT ? "needs a preset dictionary"
                                               : explain(zs.msg));
            goto out;
        }
        if (zr == Z_MEM_ERROR) {
            st = eml_err_set(err, EML_ERR_NOMEM,
                             "%s%szlib ran out of memory", nm, sep);
            goto out;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            st = eml_err_set(err, EML_ERR_BACKEND,
                             "%s%szlib inflate failed (%d)", nm, sep, zr);
            goto out;
        }
        /* Z_OK or Z_BUF_ERROR: go on while there is input left or output
         * was made; with all input consumed and nothing made, the stream
         * stops before its end. */
        if (zs.avail_in == 0 && fed == len && in_before == 0 &&
            out_room == zs.avail_out) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "%s%sgzip stream is truncated (ends inside a "
                             "member)",
                             nm, sep);
            goto out;
        }
        if (zr == Z_BUF_ERROR && zs.avail_in > 0 && zs.avail_out > 0) {
            /* No progress possible with room on both sides: cannot happen
             * with a correct zlib, but never loop forever on it. */
            st = eml_err_set(err, EML_ERR_BACKEND,
                             "%s%szlib made no progress", nm, sep);
            goto out;
        }
    }

    if (used < cap) { /* give back what the guess over-allocated */
        uint8_t *small = realloc(dst, used > 0 ? used : 1);
        if (small != NULL) dst = small;
    }
    *out = dst;
    *out_len = used;
    dst = NULL;

out:
    inflateEnd(&zs);
    if (dst != NULL) {
        eml_fmt_wipe(dst, used);
        free(dst);
    }
    return st;
}

eml_status eml_gunzip(const uint8_t *buf, size_t len, size_t max_out,
                      uint8_t **out, size_t *out_len, eml_err *err)
{
    return eml_gunzip_named(buf, len, max_out, NULL, out, out_len, err);
}
