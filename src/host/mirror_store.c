/*
 * mirror_store.c - the host half of the mirror (nn/mirror.c is the
 * sealing half): the two-slot mirror pool on libpmem2, and the disk
 * checkpoint.
 *
 * Pool: the file is mapped whole with pmem2_map_new; the trusted side
 * seals straight into the mapped slot, then commit() persists the slot
 * (pmem2 persist: cache-line flushes + fence on DAX, msync on a page-cache
 * file) and only then stores the 8-byte commit word and persists it.
 *
 * Checkpoint: each save goes to PATH.tmp (pwrite), which is fsync'd and
 * renamed over PATH, and the directory is fsync'd.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libpmem2.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "core/le.h"
#include "host/mirror_store.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

typedef enum { KIND_POOL, KIND_CHECKPOINT } store_kind;

struct eml_store {
    store_kind kind;
    eml_store_ops ops;
    char path[PATH_MAX];
    char mode[200];
    int fd;
    int exists;
    /* pool */
    struct pmem2_map *map;
    struct pmem2_source *src;
    uint8_t *base;
    size_t size;
    uint64_t cap;
    pmem2_persist_fn persist;
    int page;      /* page granularity (not DAX): reads go through pread */
    int disk;      /* ... and not tmpfs: writes go through pwrite too */
    /* checkpoint */
    uint8_t hdr[EML_POOL_HEADER_BYTES];
    char tmp[PATH_MAX + 8];
    int tmp_fd, tmp_slot;
    int file_slot; /* the slot the file on disk holds, -1: none */
    int announce;  /* say the mode on stderr once the pool is mapped */
};

static eml_status sys_err(eml_err *err, const char *what, const char *path)
{
    return eml_err_set(err, EML_ERR_IO, "%s %s: %s", what, path,
                       strerror(errno));
}

/* All n bytes at off, or an error naming path (a short file is
 * EML_ERR_TRUNCATED). */
static eml_status pread_full(int fd, uint8_t *p, size_t n, uint64_t off,
                             const char *path, eml_err *err)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return sys_err(err, "cannot read", path);
        if (r == 0)
            return eml_err_set(err, EML_ERR_TRUNCATED, "%s is truncated",
                               path);
        done += (size_t)r;
    }
    return EML_OK;
}

static eml_status pwrite_full(int fd, const uint8_t *p, size_t n,
                              uint64_t off, const char *path, eml_err *err)
{
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(fd, p + done, n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return sys_err(err, "cannot write", path);
        done += (size_t)w;
    }
    return EML_OK;
}

/* ==== pool (libpmem2) ==== */

static eml_status pool_map(eml_store *s, eml_err *err)
{
    struct pmem2_config *cfg = NULL;
    int r = pmem2_config_new(&cfg);
    if (r == 0)
        r = pmem2_config_set_required_store_granularity(
            cfg, PMEM2_GRANULARITY_PAGE);
    if (r == 0) r = pmem2_source_from_fd(&s->src, s->fd);
    if (r == 0) r = pmem2_map_new(&s->map, cfg, s->src);
    if (cfg != NULL) pmem2_config_delete(&cfg);
    if (r != 0)
        return eml_err_set(err, EML_ERR_IO, "cannot map the mirror %s: %s",
                           s->path, pmem2_errormsg());
    s->base = pmem2_map_get_address(s->map);
    s->size = pmem2_map_get_size(s->map);
    s->persist = pmem2_get_persist_fn(s->map);
    struct statfs fs;
    int tmpfs = fstatfs(s->fd, &fs) == 0 && fs.f_type == TMPFS_MAGIC;
    switch (pmem2_map_get_store_granularity(s->map)) {
    case PMEM2_GRANULARITY_BYTE:
        snprintf(s->mode, sizeof(s->mode),
                 "persistent memory (DAX, byte granularity: eADR)");
        break;
    case PMEM2_GRANULARITY_CACHE_LINE:
        snprintf(s->mode, sizeof(s->mode),
                 "persistent memory (DAX, cache-line flushes)");
        break;
    default:
        /* A page-cache file: reading a fresh mapping faults every page in
         * (pread is 5-10x faster here), and writing into pages that msync
         * has just cleaned faults them again, so a disk file is written
         * with pwrite; persist is still libpmem2's (msync of the range). */
        s->page = 1;
        s->disk = !tmpfs;
        snprintf(s->mode, sizeof(s->mode), "%s",
                 tmpfs ? "emulated persistent memory (tmpfs, page "
                         "granularity; volatile across reboots)"
                       : "regular file (page granularity: msync to disk)");
        break;
    }
    return EML_OK;
}

static eml_status pool_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    (void)err;
    eml_store *s = u;
    if (s->base == NULL)
        memset(hdr, 0, EML_POOL_HEADER_BYTES);
    else
        memcpy(hdr, s->base, EML_POOL_HEADER_BYTES);
    return EML_OK;
}

static eml_status pool_create(void *u, const uint8_t *hdr, uint64_t cap,
                              eml_err *err)
{
    eml_store *s = u;
    if (s->base != NULL) {
        /* A file whose header was never written (a crash while it was
         * being created): nothing was committed, start it again. */
        pmem2_map_delete(&s->map);
        pmem2_source_delete(&s->src);
        s->base = NULL;
        if (ftruncate(s->fd, 0) != 0)
            return sys_err(err, "cannot reset the mirror", s->path);
    }
    if (cap > ((uint64_t)1 << 46))
        return eml_err_set(err, EML_ERR_RANGE, "mirror too large");
    off_t size = (off_t)(EML_POOL_DATA_OFFSET + 2 * cap);
    int e = posix_fallocate(s->fd, 0, size);
    if (e == EOPNOTSUPP || e == EINVAL) e = ftruncate(s->fd, size) ? errno : 0;
    if (e != 0)
        return eml_err_set(err, EML_ERR_IO, "cannot size the mirror %s: %s",
                           s->path, strerror(e));
    eml_status st = pool_map(s, err);
    if (st != EML_OK) return st;
#ifdef MADV_POPULATE_WRITE
    /* Fault the fresh slots in now rather than page by page in the first
     * saves (best effort: older kernels refuse). */
    if (!s->disk) (void)madvise(s->base, s->size, MADV_POPULATE_WRITE);
#endif
    /* The slots are zero; the header (commit 0) goes last. */
    memcpy(s->base, hdr, EML_POOL_HEADER_BYTES);
    s->persist(s->base, EML_POOL_HEADER_BYTES);
    s->cap = cap;
    s->exists = 1;
    if (s->announce) fprintf(stderr, "mirror: %s: %s\n", s->path, s->mode);
    return EML_OK;
}

static uint8_t *pool_slot_map(void *u, int slot)
{
    eml_store *s = u;
    if (s->base == NULL || s->disk || slot < 0 || slot > 1) return NULL;
    return s->base + EML_POOL_DATA_OFFSET + (size_t)slot * s->cap;
}

static eml_status pool_range(eml_store *s, int slot, uint64_t off, size_t n,
                             eml_err *err)
{
    if (s->base == NULL || slot < 0 || slot > 1 || off > s->cap ||
        n > s->cap - off)
        return eml_err_set(err, EML_ERR_RANGE,
                           "mirror access outside slot %d", slot);
    return EML_OK;
}

static eml_status pool_write(void *u, int slot, uint64_t off,
                             const uint8_t *p, size_t n, eml_err *err)
{
    eml_store *s = u;
    eml_status st = pool_range(s, slot, off, n, err);
    if (st != EML_OK) return st;
    if (!s->disk) {
        memcpy(s->base + EML_POOL_DATA_OFFSET + (size_t)slot * s->cap + off,
               p, n);
        return EML_OK;
    }
    return pwrite_full(s->fd, p, n,
                       EML_POOL_DATA_OFFSET + (uint64_t)slot * s->cap + off,
                       s->path, err);
}

static eml_status pool_commit(void *u, int slot, uint64_t len, uint64_t word,
                              eml_err *err)
{
    eml_store *s = u;
    eml_status st = pool_range(s, slot, 0, len, err);
    if (st != EML_OK) return st;
    /* 1. the new state, complete, is persistent ... */
    s->persist(s->base + EML_POOL_DATA_OFFSET + (size_t)slot * s->cap, len);
    /* 2. ... before the one 8-byte store that commits it. */
    __atomic_store_n((uint64_t *)(void *)(s->base + EML_POOL_COMMIT_OFFSET),
                     word, __ATOMIC_RELEASE);
    s->persist(s->base + EML_POOL_COMMIT_OFFSET, 8);
    return EML_OK;
}

static eml_status pool_read(void *u, int slot, uint64_t off, uint8_t *p,
                            size_t n, eml_err *err)
{
    eml_store *s = u;
    eml_status st = pool_range(s, slot, off, n, err);
    if (st != EML_OK) return st;
    uint64_t at = EML_POOL_DATA_OFFSET + (uint64_t)slot * s->cap + off;
    if (!s->page) {
        memcpy(p, s->base + at, n);
        return EML_OK;
    }
    return pread_full(s->fd, p, n, at, s->path, err);
}

eml_status eml_store_open_pool(const char *path, eml_store **out,
                               eml_err *err)
{
    *out = NULL;
    eml_store *s = calloc(1, sizeof(*s));
    if (s == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    s->kind = KIND_POOL;
    s->tmp_fd = -1;
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    eml_status st = EML_OK;
    struct stat sb;
    if (s->fd < 0) {
        st = sys_err(err, "cannot open the mirror", path);
        goto fail;
    }
    if (fstat(s->fd, &sb) != 0) {
        st = sys_err(err, "cannot stat the mirror", path);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = eml_err_set(err, EML_ERR_INVALID,
                         "the mirror %s is not a regular file", path);
        goto fail;
    }
    /* One writer at a time: two runs saving into one pool would each
     * overwrite the slot the other committed. */
    if (flock(s->fd, LOCK_EX | LOCK_NB) != 0) {
        st = errno == EWOULDBLOCK
                 ? eml_err_set(err, EML_ERR_IO,
                               "the mirror %s is in use by another process",
                               path)
                 : sys_err(err, "cannot lock the mirror", path);
        goto fail;
    }
    snprintf(s->mode, sizeof(s->mode), "not mapped yet");
    if (sb.st_size > 0) {
        if (sb.st_size < EML_POOL_DATA_OFFSET) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "the mirror %s is truncated (%lld bytes)", path,
                             (long long)sb.st_size);
            goto fail;
        }
        st = pool_map(s, err);
        if (st != EML_OK) goto fail;
        eml_pool_info info;
        eml_err perr = {0};
        st = eml_pool_header_parse(s->base, s->size, &info, &perr);
        if (st != EML_OK) {
            st = eml_err_set(err, st, "%s: %s", path, eml_err_msg(&perr, st));
            goto fail;
        }
        if (!info.fresh &&
            (uint64_t)sb.st_size != EML_POOL_DATA_OFFSET + 2 * info.capacity) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "the mirror %s has %lld bytes where its header "
                             "says %llu (truncated or extended)",
                             path, (long long)sb.st_size,
                             (unsigned long long)(EML_POOL_DATA_OFFSET +
                                                  2 * info.capacity));
            goto fail;
        }
        s->cap = info.capacity;
        s->exists = !info.fresh;
    }
    s->ops.user = s;
    s->ops.read_header = pool_read_header;
    s->ops.create = pool_create;
    s->ops.slot_map = pool_slot_map;
    s->ops.write = pool_write;
    s->ops.commit = pool_commit;
    s->ops.read = pool_read;
    *out = s;
    return EML_OK;
fail:
    eml_store_close(s);
    return st;
}

/* ==== checkpoint file ==== */

static eml_status ck_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    eml_store *s = u;
    memcpy(hdr, s->hdr, EML_POOL_HEADER_BYTES);
    (void)err;
    return EML_OK;
}

static eml_status ck_create(void *u, const uint8_t *hdr, uint64_t cap,
                            eml_err *err)
{
    eml_store *s = u;
    (void)err;
    memcpy(s->hdr, hdr, EML_POOL_HEADER_BYTES);
    s->cap = cap;
    return EML_OK;
}

static eml_status ck_write(void *u, int slot, uint64_t off, const uint8_t *p,
                           size_t n, eml_err *err)
{
    eml_store *s = u;
    if (off > s->cap || n > s->cap - off)
        return eml_err_set(err, EML_ERR_RANGE, "checkpoint write too large");
    if (s->tmp_fd < 0 || s->tmp_slot != slot) {
        if (s->tmp_fd >= 0) close(s->tmp_fd);
        s->tmp_fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                         0600);
        if (s->tmp_fd < 0) return sys_err(err, "cannot create", s->tmp);
        s->tmp_slot = slot;
    }
    return pwrite_full(s->tmp_fd, p, n, EML_POOL_DATA_OFFSET + off, s->tmp,
                       err);
}

static eml_status ck_commit(void *u, int slot, uint64_t len, uint64_t word,
                            eml_err *err)
{
    eml_store *s = u;
    (void)len;
    if (s->tmp_fd < 0 || s->tmp_slot != slot)
        return eml_err_set(err, EML_ERR_INVALID, "nothing to commit");
    uint8_t page[EML_POOL_DATA_OFFSET];
    memset(page, 0, sizeof(page));
    memcpy(page, s->hdr, EML_POOL_HEADER_BYTES);
    eml_put_le64(page + EML_POOL_COMMIT_OFFSET, word);
    eml_status st = EML_OK;
    if (pwrite(s->tmp_fd, page, sizeof(page), 0) != (ssize_t)sizeof(page) ||
        ftruncate(s->tmp_fd, (off_t)(EML_POOL_DATA_OFFSET + s->cap)) != 0 ||
        fsync(s->tmp_fd) != 0)
        st = sys_err(err, "cannot write", s->tmp);
    close(s->tmp_fd);
    s->tmp_fd = -1;
    if (st != EML_OK) return st;
    if (rename(s->tmp, s->path) != 0)
        return sys_err(err, "cannot rename over", s->path);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", s->path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    memcpy(s->hdr + EML_POOL_COMMIT_OFFSET, page + EML_POOL_COMMIT_OFFSET, 8);
    s->file_slot = slot;
    s->exists = 1;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    return EML_OK;
}

static eml_status ck_read(void *u, int slot, uint64_t off, uint8_t *p,
                          size_t n, eml_err *err)
{
    eml_store *s = u;
    if (slot != s->file_slot || off > s->cap || n > s->cap - off)
        return eml_err_set(err, EML_ERR_RANGE,
                           "the checkpoint %s holds no slot %d", s->path,
                           slot);
    if (s->fd < 0) {
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) return sys_err(err, "cannot open", s->path);
    }
    return pread_full(s->fd, p, n, EML_POOL_DATA_OFFSET + off, s->path, err);
}

eml_status eml_store_open_checkpoint(const char *path, eml_store **out,
                                     eml_err *err)
{
    *out = NULL;
    eml_store *s = calloc(1, sizeof(*s));
    if (s == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    s->kind = KIND_CHECKPOINT;
    s->tmp_fd = -1;
    s->file_slot = -1;
    snprintf(s->path, sizeof(s->path), "%s", path);
    snprintf(s->tmp, sizeof(s->tmp), "%s.tmp", path);
    snprintf(s->mode, sizeof(s->mode),
             "checkpoint file (write, fsync, rename)");
    eml_status st = EML_OK;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0 && errno != ENOENT) {
        st = sys_err(err, "cannot open the checkpoint", path);
        goto fail;
    }
    if (s->fd >= 0) {
        struct stat sb;
        ssize_t r = pread(s->fd, s->hdr, sizeof(s->hdr), 0);
        eml_pool_info info;
        if (r != (ssize_t)sizeof(s->hdr) || fstat(s->fd, &sb) != 0) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "the checkpoint %s is truncated", path);
            goto fail;
        }
        eml_err perr = {0};
        st = eml_pool_header_parse(s->hdr, sizeof(s->hdr), &info, &perr);
        if (st == EML_OK && info.fresh)
            st = eml_err_set(&perr, EML_ERR_FORMAT, "empty header");
        if (st != EML_OK) {
            st = eml_err_set(err, st, "%s: %s", path, eml_err_msg(&perr, st));
            goto fail;
        }
        if ((uint64_t)sb.st_size != EML_POOL_DATA_OFFSET + info.capacity) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "the checkpoint %s has %lld bytes where its "
                             "header says %llu",
                             path, (long long)sb.st_size,
                             (unsigned long long)(EML_POOL_DATA_OFFSET +
                                                  info.capacity));
            goto fail;
        }
        s->cap = info.capacity;
        s->file_slot = (int)(info.commit & 1);
        s->exists = 1;
    }
    s->ops.user = s;
    s->ops.read_header = ck_read_header;
    s->ops.create = ck_create;
    s->ops.slot_map = NULL;
    s->ops.write = ck_write;
    s->ops.commit = ck_commit;
    s->ops.read = ck_read;
    *out = s;
    return EML_OK;
fail:
    eml_store_close(s);
    return st;
}

/* ==== common ==== */

void eml_store_close(eml_store *s)
{
    if (s == NULL) return;
    if (s->map != NULL) pmem2_map_delete(&s->map);
    if (s->src != NULL) pmem2_source_delete(&s->src);
    if (s->fd >= 0) close(s->fd);
    if (s->tmp_fd >= 0) {
        close(s->tmp_fd);
        unlink(s->tmp); /* an unfinished checkpoint */
    }
    free(s);
}

const eml_store_ops *eml_store_ops_of(eml_store *s) { return &s->ops; }
const char *eml_store_mode(const eml_store *s) { return s->mode; }
int eml_store_exists(const eml_store *s) { return s->exists; }

eml_status eml_store_setup(const char *mirror, const char *checkpoint,
                           int resume, int quiet, eml_store **out,
                           eml_err *err)
{
    *out = NULL;
    const char *path = mirror != NULL ? mirror : checkpoint;
    if (path == NULL) return EML_OK;
    eml_store *s = NULL;
    eml_status st = mirror != NULL ? eml_store_open_pool(path, &s, err)
                                   : eml_store_open_checkpoint(path, &s, err);
    if (st != EML_OK) return st;
    if (!resume && s->exists) {
        eml_store_close(s);
        return eml_err_set(err, EML_ERR_INVALID,
                           "%s already holds a training state: add --resume "
                           "to continue that run, or remove the file to "
                           "start again",
                           path);
    }
    if (!quiet) {
        if (s->kind == KIND_POOL && s->base == NULL)
            s->announce = 1; /* mapped on the first save */
        else
            fprintf(stderr, "%s: %s: %s\n",
                    mirror != NULL ? "mirror" : "checkpoint", path, s->mode);
    }
    *out = s;
    return EML_OK;
}
