/*
 * platform.c - the simulated platform's key files and the enclave image
 * measurement (see platform.h).  Untrusted-side code: it reads files.
 */
#include "sim/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "enclaveml/crypto.h"

#define KEY_MAGIC "EMLPLAT1"
#define PUB_MAGIC "EMLPPUB1"

void eml_policy_string(char *out, size_t cap, const char *backend,
                       unsigned heap_mb)
{
    snprintf(out, cap, "backend=%s;heap_mb=%u", backend, heap_mb);
}

static int mkdir_p(char *path, mode_t mode)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, mode) != 0 && errno != EEXIST) {
            *p = '/';
            return -1;
        }
        *p = '/';
    }
    if (mkdir(path, mode) != 0 && errno != EEXIST) return -1;
    return 0;
}

eml_status eml_platform_home(char *out, size_t cap, eml_err *err)
{
    const char *env = getenv("ENCLAVEML_HOME");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, cap, "%s", env);
    } else {
        const char *home = getenv("HOME");
        if (home == NULL || home[0] == '\0')
            return eml_err_set(err, EML_ERR_INVALID,
                               "neither ENCLAVEML_HOME nor HOME is set");
        snprintf(out, cap, "%s/.local/share/enclaveml", home);
    }
    if (strlen(out) + 32 >= cap)
        return eml_err_set(err, EML_ERR_RANGE, "ENCLAVEML_HOME is too long");
    if (mkdir_p(out, 0700) != 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", out, strerror(errno));
    return EML_OK;
}

static eml_status read_exact(const char *path, uint8_t *buf, size_t n,
                             eml_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t tmp[256];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, tmp + got, sizeof(tmp) - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
        if (got == sizeof(tmp)) break;
    }
    close(fd);
    eml_status st = EML_OK;
    if (got != n || n > sizeof(tmp))
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: %zu bytes, expected %zu", path, got, n);
    else
        memcpy(buf, tmp, n);
    eml_wipe(tmp, sizeof(tmp));
    return st;
}

static eml_status write_new(const char *path, const uint8_t *buf, size_t n,
                            mode_t mode, eml_err *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return eml_err_set(err, EML_ERR_IO, "%s: %s", tmp, strerror(errno));
    ssize_t w = write(fd, buf, n);
    int ok = w == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    /* link() fails if another process created the file first: theirs wins. */
    if (ok && link(tmp, path) != 0 && errno != EEXIST) ok = 0;
    unlink(tmp);
    if (!ok) return eml_err_set(err, EML_ERR_IO, "cannot write %s", path);
    return EML_OK;
}

eml_status eml_platform_provision(const char *home, const char *name,
                                  eml_err *err)
{
    char kpath[4200], ppath[4200];
    snprintf(kpath, sizeof(kpath), "%s/%s.key", home, name);
    snprintf(ppath, sizeof(ppath), "%s/%s.pub", home, name);
    if (access(kpath, F_OK) == 0 && access(ppath, F_OK) == 0) return EML_OK;
    uint8_t key[8 + 64], pub[8 + 32];
    memcpy(key, KEY_MAGIC, 8);
    memcpy(pub, PUB_MAGIC, 8);
    eml_status st = eml_ed25519_keygen(key + 8, pub + 8);
    if (st == EML_OK) st = eml_random(key + 40, 32);
    if (st == EML_OK && access(kpath, F_OK) != 0)
        st = write_new(kpath, key, sizeof(key), 0600, err);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK) return st;
    if (access(ppath, F_OK) != 0) {
        /* The public key must match the key file that won. */
        eml_platform plat;
        st = eml_platform_load(home, name, &plat, err);
        if (st == EML_OK) st = eml_ed25519_public(pub + 8, plat.sign_sk);
        eml_wipe(&plat, sizeof(plat));
        if (st == EML_OK) st = write_new(ppath, pub, sizeof(pub), 0644, err);
    }
    return st;
}

eml_status eml_platform_load(const char *home, const char *name,
                             eml_platform *plat, eml_err *err)
{
    char kpath[4200];
    uint8_t key[8 + 64];
    snprintf(kpath, sizeof(kpath), "%s/%s.key", home, name);
    eml_status st = read_exact(kpath, key, sizeof(key), err);
    if (st == EML_OK && memcmp(key, KEY_MAGIC, 8) != 0)
        st = eml_err_set(err, EML_ERR_FORMAT, "%s: bad magic", kpath);
    if (st == EML_OK) {
        memcpy(plat->sign_sk, key + 8, 32);
        memcpy(plat->seal_secret, key + 40, 32);
    }
    eml_wipe(key, sizeof(key));
    return st;
}

eml_status eml_platform_load_pub(const char *home, const char *name,
                                 uint8_t pk[32], eml_err *err)
{
    char ppath[4200];
    uint8_t pub[8 + 32];
    snprintf(ppath, sizeof(ppath), "%s/%s.pub", home, name);
    eml_status st = read_exact(ppath, pub, sizeof(pub), err);
    if (st == EML_OK && memcmp(pub, PUB_MAGIC, 8) != 0)
        st = eml_err_set(err, EML_ERR_FORMAT, "%s: bad magic", ppath);
    if (st == EML_OK) memcpy(pk, pub + 8, 32);
    return st;
}

eml_status eml_host_mirror_key(const char *home, uint8_t key[32],
                               eml_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/host-mirror.key", home);
    if (access(path, F_OK) != 0) {
        uint8_t k[32];
        eml_status st = eml_random(k, sizeof(k));
        if (st == EML_OK) st = write_new(path, k, sizeof(k), 0600, err);
        eml_wipe(k, sizeof(k));
        if (st != EML_OK) return st;
    }
    return read_exact(path, key, 32, err);
}
