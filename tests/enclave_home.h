/*
 * enclave_home.h - what the enclave tests share (header-only, tests
 * only): a fresh ENCLAVEML_HOME in a temporary directory, the enclave
 * program found for the host code ($EML_BINARY_DIR, set by CTest, or the
 * build directory above this test's executable), and the directory's
 * removal afterwards.
 */
#ifndef EML_TESTS_ENCLAVE_HOME_H
#define EML_TESTS_ENCLAVE_HOME_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int enclave_home_rm_entry(const char *path, const struct stat *sb,
                                 int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Makes home (cap >= 64) as /tmp/<tag>-XXXXXX and points ENCLAVEML_HOME
 * and ENCLAVEML_ENCLAVE at it and at the enclave program; -1 on failure,
 * with the reason on stderr. */
static int enclave_home_setup(char *home, size_t cap, const char *tag)
{
    snprintf(home, cap, "/tmp/%s-XXXXXX", tag);
    if (mkdtemp(home) == NULL) return -1;
    setenv("ENCLAVEML_HOME", home, 1);
    unsetenv("ENCLAVEML_TRACE");
    char path[PATH_MAX];
    const char *bin = getenv("EML_BINARY_DIR");
    if (bin != NULL && bin[0] != '\0') {
        snprintf(path, sizeof(path), "%s/enclaveml-enclave", bin);
    } else {
        /* build/tests/test_x -> build/enclaveml-enclave */
        char self[PATH_MAX - 32];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) return -1;
        self[n] = '\0';
        for (int up = 0; up < 2; up++) {
            char *s = strrchr(self, '/');
            if (s != NULL) *s = '\0';
        }
        snprintf(path, sizeof(path), "%s/enclaveml-enclave", self);
    }
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "%s: %s: %s\n", tag, path, strerror(errno));
        return -1;
    }
    setenv("ENCLAVEML_ENCLAVE", path, 1);
    return 0;
}

static void enclave_home_remove(const char *home)
{
    if (home[0] != '\0')
        nftw(home, enclave_home_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
