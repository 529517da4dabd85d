/*
 * lines.h - a text read one line at a time with '#' comments cut, for the
 * small line-based files (edge lists, peers files).  A line longer than
 * the buffer is cut to it.  Trusted code: no I/O.
 */
#ifndef EML_CORE_LINES_H
#define EML_CORE_LINES_H

#include <stddef.h>
#include <string.h>

/* The line at *pos into buf (cap bytes, NUL-terminated, comment cut);
 * *pos moves past it.  0 at the end of the text. */
static inline int eml_next_line(const char *text, size_t len, size_t *pos,
                                char *buf, size_t cap)
{
    if (*pos >= len || cap == 0) return 0;
    size_t end = *pos;
    while (end < len && text[end] != '\n') end++;
    size_t l = end - *pos < cap - 1 ? end - *pos : cap - 1;
    memcpy(buf, text + *pos, l);
    buf[l] = '\0';
    *pos = end + 1;
    char *hash = strchr(buf, '#');
    if (hash != NULL) *hash = '\0';
    return 1;
}

#endif
