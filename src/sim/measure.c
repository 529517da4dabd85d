/*
 * measure.c - hashes every file mapped executable into this process (see
 * measure.h).  Platform code: reads /proc/self/maps and the files it names.
 */
#define _GNU_SOURCE 1 /* major/minor */
#include "sim/measure.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"

/* One executable, file-backed mapping of /proc/self/maps. */
typedef struct exec_map {
    unsigned long long dev, ino;
    const char *path; /* into the maps text */
} exec_map;

static eml_status read_maps(char **out, eml_err *err)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "/proc/self/maps: %s",
                           strerror(errno));
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    eml_status st = buf != NULL ? EML_OK : EML_ERR_NOMEM;
    while (st == EML_OK) {
        if (n + 1 >= cap) {
            char *nb = cap < ((size_t)16 << 20) ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                st = eml_err_set(err, EML_ERR_NOMEM, "/proc/self/maps: too big");
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) st = eml_err_set(err, EML_ERR_IO, "/proc/self/maps: %s",
                                    strerror(errno));
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (st != EML_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    return EML_OK;
}

/* Parses the next line at *p (cut in place); 1: an executable mapping of
 * a file, 0: another mapping, -1: a line we do not understand. */
static int next_map(char **p, exec_map *m, int *done)
{
    char *line = *p, *nl = strchr(line, '\n');
    if (nl != NULL) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = line + strlen(line);
    }
    *done = **p == '\0';
    if (line[0] == '\0') return 0;
    unsigned long long lo, hi, off, ino;
    unsigned maj, min;
    char perms[5];
    int at = 0;
    if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu%n", &lo, &hi, perms, &off,
               &maj, &min, &ino, &at) != 7)
        return -1;
    if (perms[2] != 'x') return 0;
    const char *path = line + at;
    while (*path == ' ') path++;
    /* [vdso], [vsyscall], anonymous JIT code: no file behind them. */
    if (path[0] != '/' && ino == 0) return 0;
    m->dev = (unsigned long long)maj << 32 | min;
    m->ino = ino;
    m->path = path;
    return 1;
}

static eml_status hash_fd(int fd, uint8_t out[32], const char *path,
                          eml_err *err)
{
    eml_sha256_ctx *h = NULL;
    eml_status st = eml_sha256_new(&h);
    uint8_t *buf = malloc(1 << 20);
    if (buf == NULL) st = EML_ERR_NOMEM;
    while (st == EML_OK) {
        ssize_t r = read(fd, buf, 1 << 20);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = eml_err_set(err, EML_ERR_IO, "%s: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        st = eml_sha256_update(h, buf, (size_t)r);
    }
    if (st == EML_OK) st = eml_sha256_final(h, out);
    eml_sha256_free(h);
    free(buf);
    return st;
}

static int by_digest(const void *a, const void *b)
{
    const eml_measured_file *x = a, *y = b;
    int c = memcmp(x->sha256, y->sha256, 32);
    return c != 0 ? c : strcmp(x->path, y->path);
}

static int known(const eml_measured *m, unsigned long long dev,
                 unsigned long long ino)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->f[i].dev == dev && m->f[i].ino == ino) return 1;
    return 0;
}

/* Calls fn for every executable, file-backed mapping of this process, in
 * /proc/self/maps order, until fn fails. */
static eml_status walk_exec_maps(eml_status (*fn)(void *user,
                                                  const exec_map *em,
                                                  eml_err *err),
                                 void *user, eml_err *err)
{
    char *maps = NULL;
    eml_status st = read_maps(&maps, err);
    if (st != EML_OK) return st;
    char *p = maps;
    int done = maps[0] == '\0';
    while (st == EML_OK && !done) {
        exec_map em;
        int k = next_map(&p, &em, &done);
        if (k < 0)
            st = eml_err_set(err, EML_ERR_FORMAT,
                             "/proc/self/maps: a line not understood");
        else if (k == 1)
            st = fn(user, &em, err);
    }
    free(maps);
    return st;
}

/* Hashes a mapped file not seen yet into m. */
static eml_status measure_one(void *user, const exec_map *em, eml_err *err)
{
    eml_measured *m = user;
    if (known(m, em->dev, em->ino)) return EML_OK;
    size_t plen = strlen(em->path);
    if (em->path[0] != '/' || plen >= EML_MEASURED_PATH_MAX ||
        strstr(em->path, " (deleted)") != NULL)
        /* a deleted or unnamed file (a memfd): nothing to hash by name */
        return eml_err_set(err, EML_ERR_AUTH,
                           "cannot measure executable mapping '%.200s'",
                           em->path);
    if (m->n == EML_MEASURED_FILES_MAX)
        return eml_err_set(err, EML_ERR_RANGE,
                           "more than %d executable files mapped",
                           EML_MEASURED_FILES_MAX);
    eml_measured_file *f = &m->f[m->n];
    memcpy(f->path, em->path, plen + 1);
    f->dev = em->dev;
    f->ino = em->ino;
    int fd = open(em->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", em->path,
                           strerror(errno));
    /* The file at that path must be the one mapped: not one put there
     * after the loader mapped the original. */
    struct stat sb;
    eml_status st = EML_OK;
    if (fstat(fd, &sb) != 0 || (unsigned long long)sb.st_ino != em->ino ||
        ((unsigned long long)major(sb.st_dev) << 32 | minor(sb.st_dev)) !=
            em->dev)
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s is not the file mapped into this process",
                         em->path);
    if (st == EML_OK) st = hash_fd(fd, f->sha256, em->path, err);
    close(fd);
    if (st == EML_OK) m->n++;
    return st;
}

eml_status eml_measure_self(eml_measured *m, eml_err *err)
{
    memset(m, 0, sizeof(*m));
    eml_status st = walk_exec_maps(measure_one, m, err);
    if (st == EML_OK && m->n == 0)
        st = eml_err_set(err, EML_ERR_FORMAT, "no executable file mapped");
    if (st == EML_OK) qsort(m->f, m->n, sizeof(m->f[0]), by_digest);
    return st;
}

/* A mapped file must be one of m's. */
static eml_status already_measured(void *user, const exec_map *em,
                                   eml_err *err)
{
    if (known(user, em->dev, em->ino)) return EML_OK;
    return eml_err_set(err, EML_ERR_AUTH,
                       "%.200s was loaded after the measurement", em->path);
}

eml_status eml_measure_self_unchanged(const eml_measured *m, eml_err *err)
{
    return walk_exec_maps(already_measured, (void *)m, err);
}

eml_status eml_measure_of(uint8_t out[32], const eml_measured *m,
                          const char *policy)
{
    uint8_t d[EML_MEASURED_FILES_MAX][32];
    for (size_t i = 0; i < m->n; i++) memcpy(d[i], m->f[i].sha256, 32);
    return eml_measure(out, (const uint8_t(*)[32])d, m->n, policy);
}

size_t eml_measure_list(char *out, size_t cap, const eml_measured *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        char hex[65];
        eml_hex(hex, m->f[i].sha256, 32);
        int w = snprintf(out + k, cap - k, "%s  %s\n", hex, m->f[i].path);
        if (w < 0 || (size_t)w >= cap - k) return 0;
        k += (size_t)w;
    }
    return k;
}
