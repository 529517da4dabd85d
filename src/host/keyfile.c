/*
 * keyfile.c - writing and strictly loading NAME.key / NAME.pub (see
 * keyfile.h).  Untrusted side: this is file I/O.  Secret bytes only ever
 * sit in locked memory from eml_secure_alloc, which is wiped on free, and
 * a failed keygen removes whatever it created.
 */
#include "host/keyfile.h"

#include "host/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "enclaveml/crypto.h"

/* ==== small file helpers ==== */

static char *path_with(const char *name, const char *suffix)
{
    size_t n = strlen(name), m = strlen(suffix);
    char *p = malloc(n + m + 1);
    if (p == NULL) return NULL;
    memcpy(p, name, n);
    memcpy(p + n, suffix, m + 1);
    return p;
}


/* Makes path sync'd in its directory, best effort: a key that vanishes
 * after a crash is better noticed than silently lost. */
static void fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash == NULL   ? 0
                  : slash == path ? 1
                                  : (size_t)(slash - path);
    char *dir = slash == NULL ? path_with(".", "") : strndup(path, dlen);
    if (dir == NULL) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Writes a whole small file.  excl: O_CREAT|O_EXCL, so an existing file
 * (or a symlink planted in its place) is refused.  Otherwise a temporary
 * file is renamed over path.  Returns 0 or an errno; nothing is left
 * behind on failure. */
static int write_small(const char *path, const uint8_t *data, size_t len,
                       mode_t mode, int excl)
{
    char *tmp = NULL;
    int fd, e = 0;
    if (excl) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) return errno;
    } else {
        tmp = path_with(path, ".tmp.XXXXXX");
        if (tmp == NULL) return ENOMEM;
        fd = mkstemp(tmp);
        if (fd < 0) {
            e = errno;
            free(tmp);
            return e;
        }
    }
    e = eml_fd_write_all(fd, data, len);
    if (e == 0 && fchmod(fd, mode) != 0) e = errno;
    if (e == 0 && fsync(fd) != 0) e = errno;
    if (close(fd) != 0 && e == 0) e = errno;
    if (e == 0 && tmp != NULL && rename(tmp, path) != 0) e = errno;
    if (e != 0) unlink(tmp != NULL ? tmp : path);
    free(tmp);
    if (e == 0) fsync_parent(path);
    return e;
}

/* Reads a regular file of exactly want bytes into buf (room for want + 1,
 * so that a longer file is seen as longer).  Returns the size read, or -1
 * with errno set. */
static long read_small(const char *path, uint8_t *buf, size_t want)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    size_t got = 0;
    while (got < want + 1) {
        ssize_t r = read(fd, buf + got, want + 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    /* Report the real size of a longer file, for the message. */
    if (got > want && (uint64_t)sb.st_size > got) return (long)sb.st_size;
    return (long)got;
}

static eml_status read_error(const char *path, eml_err *err)
{
    if (errno == EINVAL)
        return eml_err_set(err, EML_ERR_IO, "%s: not a regular file", path);
    return eml_err_set(err, errno == ENOENT ? EML_ERR_NOTFOUND : EML_ERR_IO,
                       "%s: %s", path, strerror(errno));
}

/* ==== keygen ==== */

eml_status eml_keyfile_generate(const char *name, int force, char **key_path,
                                char **pub_path, eml_err *err)
{
    uint8_t pub[EML_PUBFILE_BYTES];
    char *kp = NULL, *pp = NULL;
    uint8_t *sec = NULL;
    eml_status st = EML_OK;
    int e;

    if (key_path != NULL) *key_path = NULL;
    if (pub_path != NULL) *pub_path = NULL;
    if (name == NULL || name[0] == '\0')
        return eml_err_set(err, EML_ERR_INVALID, "keygen: empty key name");
    kp = path_with(name, ".key");
    pp = path_with(name, ".pub");
    sec = eml_secure_alloc(EML_KEYFILE_BYTES);
    if (kp == NULL || pp == NULL || sec == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "keygen: out of memory");
        goto out;
    }
    if (!force) {
        /* Check both first so that a clash on .pub does not cost a
         * created-then-removed .key. */
        struct stat sb;
        const char *clash = lstat(kp, &sb) == 0   ? kp
                            : lstat(pp, &sb) == 0 ? pp
                                                  : NULL;
        if (clash != NULL) {
            st = eml_err_set(err, EML_ERR_INVALID,
                             "%s already exists (use --force to replace it)",
                             clash);
            goto out;
        }
    }
    memcpy(sec, EML_KEYFILE_MAGIC, 8);
    memcpy(pub, EML_PUBFILE_MAGIC, 8);
    st = eml_random_secret(sec + 8, 32);
    if (st == EML_OK) st = eml_x25519_keygen(sec + 40, pub + 8);
    if (st != EML_OK) {
        eml_err_set(err, st, "keygen: cannot generate keys: %s",
                    eml_status_str(st));
        goto out;
    }
    e = write_small(kp, sec, EML_KEYFILE_BYTES, 0600, !force);
    if (e != 0) {
        st = eml_err_set(err, EML_ERR_IO, "%s: %s%s", kp, strerror(e),
                         e == EEXIST ? " (use --force to replace it)" : "");
        goto out;
    }
    e = write_small(pp, pub, EML_PUBFILE_BYTES, 0644, !force);
    if (e != 0) {
        /* A secret key without its public half is useless; take it back. */
        unlink(kp);
        st = eml_err_set(err, EML_ERR_IO, "%s: %s%s", pp, strerror(e),
                         e == EEXIST ? " (use --force to replace it)" : "");
        goto out;
    }
out:
    eml_secure_free(sec, EML_KEYFILE_BYTES);
    if (st == EML_OK && key_path != NULL) {
        *key_path = kp;
        kp = NULL;
    }
    if (st == EML_OK && pub_path != NULL) {
        *pub_path = pp;
        pp = NULL;
    }
    free(kp);
    free(pp);
    return st;
}

/* ==== loading ==== */

eml_status eml_keyfile_load(const char *path, eml_keyfile **out, eml_err *err)
{
    eml_status st = EML_OK;
    eml_keyfile *k = NULL;
    if (out == NULL || path == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "key file: no path");
    *out = NULL;
    uint8_t *buf = eml_secure_alloc(EML_KEYFILE_BYTES + 1);
    if (buf == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "%s: out of memory", path);
    long n = read_small(path, buf, EML_KEYFILE_BYTES);
    if (n < 0) {
        st = read_error(path, err);
        goto out;
    }
    if (n == EML_PUBFILE_BYTES && memcmp(buf, EML_PUBFILE_MAGIC, 8) == 0) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s is a public key file; this needs the secret "
                         "NAME.key",
                         path);
        goto out;
    }
    if (n != EML_KEYFILE_BYTES) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: not an enclaveml key file (%ld bytes, a key "
                         "file has %d)",
                         path, n, EML_KEYFILE_BYTES);
        goto out;
    }
    if (memcmp(buf, EML_KEYFILE_MAGIC, 8) != 0) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: not an enclaveml key file (bad magic, expected "
                         "\"" EML_KEYFILE_MAGIC "\")",
                         path);
        goto out;
    }
    k = eml_secure_alloc(sizeof(*k));
    if (k == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "%s: out of memory", path);
        goto out;
    }
    memcpy(k->data_key, buf + 8, 32);
    memcpy(k->x25519_sk, buf + 40, 32);
    st = eml_x25519_public(k->x25519_pk, k->x25519_sk);
    if (st != EML_OK) {
        eml_err_set(err, st, "%s: bad X25519 key: %s", path,
                    eml_status_str(st));
        goto out;
    }
out:
    eml_secure_free(buf, EML_KEYFILE_BYTES + 1);
    if (st != EML_OK) {
        eml_keyfile_free(k);
        return st;
    }
    *out = k;
    return EML_OK;
}

void eml_keyfile_free(eml_keyfile *k)
{
    eml_secure_free(k, sizeof(*k));
}

eml_status eml_pubfile_load(const char *path, uint8_t pk[32], eml_err *err)
{
    uint8_t buf[EML_KEYFILE_BYTES + 1];
    if (path == NULL || pk == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "public key file: no path");
    /* Room for a whole secret key file, so that mixing the two up gets a
     * clear message; wiped below in case it was one. */
    long n = read_small(path, buf, EML_PUBFILE_BYTES);
    eml_status st = EML_OK;
    if (n < 0) {
        st = read_error(path, err);
    } else if (n >= 8 && memcmp(buf, EML_KEYFILE_MAGIC, 8) == 0) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s is a secret key file; this needs the public "
                         "NAME.pub",
                         path);
    } else if (n != EML_PUBFILE_BYTES) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: not an enclaveml public key file (%ld bytes, "
                         "a public key file has %d)",
                         path, n, EML_PUBFILE_BYTES);
    } else if (memcmp(buf, EML_PUBFILE_MAGIC, 8) != 0) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: not an enclaveml public key file (bad magic, "
                         "expected \"" EML_PUBFILE_MAGIC "\")",
                         path);
    } else {
        memcpy(pk, buf + 8, 32);
    }
    eml_wipe(buf, sizeof(buf));
    return st;
}
