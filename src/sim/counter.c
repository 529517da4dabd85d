/*
 * counter.c - the simulated platform's monotonic counter file (see
 * counter.h).  Platform code: file I/O, run in the enclave process before
 * and (pread/pwrite/fdatasync only) after its sandbox closes, and by the
 * host for backend `none`.
 */
#include "sim/counter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/le.h"

void eml_sim_counter_path(char *out, size_t cap, const char *home,
                          const uint8_t measurement[32])
{
    char hex[65];
    eml_hex(hex, measurement, 32);
    snprintf(out, cap, "%s/counter-%s.bin", home, hex);
}

static eml_status put(eml_sim_counter *c, uint64_t value, eml_err *err)
{
    uint8_t rec[EML_COUNTER_BYTES];
    memcpy(rec, EML_COUNTER_MAGIC, 8);
    eml_put_le64(rec + 8, value);
    ssize_t w;
    do {
        w = pwrite(c->fd, rec, sizeof(rec), 0);
    } while (w < 0 && errno == EINTR);
    if (w != (ssize_t)sizeof(rec))
        return eml_err_set(err, EML_ERR_IO, "counter: write failed: %s",
                           w < 0 ? strerror(errno) : "short write");
    if (fdatasync(c->fd) != 0)
        return eml_err_set(err, EML_ERR_IO, "counter: fdatasync: %s",
                           strerror(errno));
    return EML_OK;
}

eml_status eml_sim_counter_read(eml_sim_counter *c, uint64_t *value,
                                eml_err *err)
{
    if (c->fd < 0)
        return eml_err_set(err, EML_ERR_INVALID, "counter: not open");
    uint8_t rec[EML_COUNTER_BYTES + 1];
    ssize_t r;
    do {
        r = pread(c->fd, rec, sizeof(rec), 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return eml_err_set(err, EML_ERR_IO, "counter: read failed: %s",
                           strerror(errno));
    if (r != EML_COUNTER_BYTES || memcmp(rec, EML_COUNTER_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "counter: not a counter file (%zd bytes)", r);
    *value = eml_get_le64(rec + 8);
    return EML_OK;
}

eml_status eml_sim_counter_advance(eml_sim_counter *c, uint64_t value,
                                   eml_err *err)
{
    uint64_t cur;
    eml_status st = eml_sim_counter_read(c, &cur, err);
    if (st != EML_OK) return st;
    if (value <= cur)
        return eml_err_set(err, EML_ERR_INVALID,
                           "counter: %llu does not advance %llu",
                           (unsigned long long)value,
                           (unsigned long long)cur);
    return put(c, value, err);
}

eml_status eml_sim_counter_open(eml_sim_counter *c, const char *path,
                                eml_err *err)
{
    c->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c->fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    eml_status st = EML_OK;
    if (fstat(c->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = eml_err_set(err, EML_ERR_IO, "%s: not a regular file", path);
    /* A new file (or one whose creation was cut short before any byte
     * landed) starts at 0. */
    else if (sb.st_size == 0)
        st = put(c, 0, err);
    uint64_t v;
    if (st == EML_OK) st = eml_sim_counter_read(c, &v, err);
    if (st != EML_OK) eml_sim_counter_close(c);
    return st;
}

static eml_status ops_read(void *user, uint64_t *value, eml_err *err)
{
    return eml_sim_counter_read(user, value, err);
}

static eml_status ops_advance(void *user, uint64_t value, eml_err *err)
{
    return eml_sim_counter_advance(user, value, err);
}

eml_status eml_sim_counter_lock(eml_sim_counter *c, eml_err *err)
{
    int r;
    do {
        r = flock(c->fd, LOCK_EX);
    } while (r != 0 && errno == EINTR);
    if (r != 0)
        return eml_err_set(err, EML_ERR_IO, "counter: lock: %s",
                           strerror(errno));
    return EML_OK;
}

void eml_sim_counter_unlock(eml_sim_counter *c)
{
    if (c->fd >= 0) (void)flock(c->fd, LOCK_UN);
}

static eml_status ops_lock(void *user, eml_err *err)
{
    return eml_sim_counter_lock(user, err);
}

static void ops_unlock(void *user) { eml_sim_counter_unlock(user); }

eml_counter_ops eml_sim_counter_ops(eml_sim_counter *c)
{
    eml_counter_ops o = {c, ops_read, ops_advance, ops_lock, ops_unlock};
    return o;
}

void eml_sim_counter_close(eml_sim_counter *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}
