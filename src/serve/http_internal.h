/*
 * http_internal.h - the byte classes the HTTP parser (http.c) and the
 * response writer (http_write.c) share.  Not part of the public API;
 * trusted code, no I/O.
 */
#ifndef EML_SERVE_HTTP_INTERNAL_H
#define EML_SERVE_HTTP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline int is_alnum(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

static inline int in_set(uint8_t c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}

static inline int is_tchar(uint8_t c)
{
    return is_alnum(c) || in_set(c, "!#$%&'*+-.^_`|~");
}

static inline uint8_t lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c | 0x20) : c;
}

/* s[0..n) equals the lower-case word w, without case. */
static inline int ieq(const uint8_t *s, size_t n, const char *w)
{
    if (strlen(w) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != (uint8_t)w[i]) return 0;
    return 1;
}

#endif
