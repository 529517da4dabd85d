/*
 * fileio.c - whole-file reads and crash-safe writes for the host program.
 * Untrusted side only: the enclave never touches files.
 */
#include "host/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EML_READ_MAX ((size_t)8 << 30)

eml_status eml_file_read(const char *path, uint8_t **out, size_t *out_len,
                         eml_err *err)
{
    *out = NULL;
    *out_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return eml_err_set(err, EML_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > EML_READ_MAX) {
        close(fd);
        return eml_err_set(err, EML_ERR_RANGE, "%s: file too large", path);
    }
    size_t len = (size_t)sb.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        close(fd);
        return eml_err_set(err, EML_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return eml_err_set(err, EML_ERR_IO, "%s: read failed: %s", path,
                               strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *out_len = len;
    return EML_OK;
}

eml_status eml_file_write_atomic(const char *path, const void *data,
                                 size_t len, int mode, eml_err *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (tmp == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        eml_status st = eml_err_set(err, EML_ERR_IO, "%s: %s", path,
                                    strerror(errno));
        free(tmp);
        return st;
    }
    int e = eml_fd_write_all(fd, data, len);
    if (e == 0 && fchmod(fd, (mode_t)mode) != 0) e = errno;
    if (e == 0 && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && e == 0) e = errno;
    if (e == 0 && rename(tmp, path) != 0) e = errno;
    if (e == 0) {
        /* The rename itself must survive a crash: sync the directory. */
        char *slash = strrchr(tmp, '/');
        if (slash == tmp) slash[1] = '\0';
        else if (slash != NULL) *slash = '\0';
        int dfd = open(slash != NULL ? tmp : ".", O_RDONLY | O_DIRECTORY |
                                                      O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); /* best effort: not every fs syncs dirs */
            close(dfd);
        }
    }
    if (e != 0) {
        unlink(tmp);
        free(tmp);
        return eml_err_set(err, EML_ERR_IO, "%s: write failed: %s", path,
                           strerror(e));
    }
    free(tmp);
    return EML_OK;
}

int eml_fd_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return w < 0 ? errno : EIO;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

long eml_peak_rss_kib(long pid)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *f = fopen(path, "r");
    long kib = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (f != NULL) fclose(f);
    return kib;
}
