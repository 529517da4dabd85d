/*
 * fileio.h - whole-file reads and atomic writes (host side only).
 */
#ifndef EML_HOST_FILEIO_H
#define EML_HOST_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

/* Reads a regular file into a malloc'd buffer (caller frees). */
EML_MUST_CHECK eml_status eml_file_read(const char *path, uint8_t **out,
                                        size_t *out_len, eml_err *err);
/* Writes to a temporary file, fsyncs, renames over path: a reader sees the
 * old file or the new one, never a torn one, and a failure leaves nothing. */
EML_MUST_CHECK eml_status eml_file_write_atomic(const char *path,
                                                const void *data, size_t len,
                                                int mode, eml_err *err);
/* Writes all len bytes to fd (retrying short writes and EINTR); 0 or an
 * errno value. */
int eml_fd_write_all(int fd, const void *p, size_t len);
/* A process's peak resident set (VmHWM of /proc/PID/status), KiB; pid 0:
 * this process.  0 if it cannot be read. */
long eml_peak_rss_kib(long pid);
#endif
