/*
 * enclave_main.c - the `enclaveml-enclave` program (backend `sim`).
 *
 *   enclaveml-enclave --fd N [--heap-mb M] [--threads T]
 *
 * Started by the host with one end of a socketpair as fd N.  As the
 * simulated platform it reads the platform secrets from $ENCLAVEML_HOME and
 * measures its own image (/proc/self/exe) with its configuration; then it
 * closes the sandbox and hands everything to the trusted runtime, which
 * serves ecalls until SHUTDOWN.  Nothing is ever printed: errors before the
 * channel is up go out as an ERROR frame, or as the exit status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "sim/platform.h"
#include "sim/sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer stops the world with ptrace at exit, which the sandbox
 * forbids.  The same runtime is leak-checked in-process through the `none`
 * backend's tests. */
const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
/* ... and this one ASAN_OPTIONS cannot override. */
int __lsan_is_turned_off(void);
__attribute__((visibility("default"))) int __lsan_is_turned_off(void)
{
    return 1;
}
#endif

static int parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = (unsigned)v;
    return 0;
}

/* Reports a start-up failure to the host over the channel. */
static int fail_start(int fd, eml_status st, const eml_err *err)
{
    eml_channel ch;
    eml_channel_init(&ch, fd);
    eml_msg m;
    eml_msg_init(&m, EML_MSG_ERROR);
    eml_msg_put_u64(&m, (uint64_t)(int64_t)st);
    const char *msg = eml_err_msg(err, st);
    eml_msg_put_bytes(&m, msg, strlen(msg));
    if (eml_msg_send(&ch, &m) != EML_OK) {
        /* nobody to tell */
    }
    eml_msg_free(&m);
    return 3;
}

int main(int argc, char **argv)
{
    unsigned fd = 0, heap_mb = 1024, threads = 0, bulk_fd = 0;
    int have_fd = 0, have_bulk = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--fd") == 0 &&
            parse_uint(argv[i + 1], 3, 1 << 20, &fd) == 0)
            have_fd = 1;
        else if (strcmp(argv[i], "--heap-mb") == 0 &&
                 parse_uint(argv[i + 1], 64, 1 << 20, &heap_mb) == 0)
            ;
        else if (strcmp(argv[i], "--threads") == 0 &&
                 parse_uint(argv[i + 1], 1, 1024, &threads) == 0)
            ;
        else if (strcmp(argv[i], "--bulk-fd") == 0 &&
                 parse_uint(argv[i + 1], 3, 1 << 20, &bulk_fd) == 0)
            have_bulk = 1;
        else
            return 2;
    }
    if (!have_fd || argc % 2 != 1) return 2;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }

    eml_err err = {0};
    eml_platform plat;
    memset(&plat, 0, sizeof(plat));
    plat.sim = 1;
    plat.sandboxed = 1;
    eml_policy_string(plat.policy, sizeof(plat.policy), heap_mb);
    char home[4096];
    uint8_t image[32];
    eml_status st = eml_platform_home(home, sizeof(home), &err);
    if (st == EML_OK) st = eml_platform_load(home, &plat, &err);
    if (st == EML_OK) st = eml_file_sha256("/proc/self/exe", image, &err);
    if (st == EML_OK) st = eml_measure(plat.measurement, image, plat.policy);
    /* The bulk region is mapped before the sandbox closes (no mmap of
     * files after it). */
    uint8_t *bulk = NULL;
    if (st == EML_OK && have_bulk) {
        void *p = mmap(NULL, EML_BULK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_SHARED, (int)bulk_fd, 0);
        close((int)bulk_fd);
        if (p == MAP_FAILED)
            st = eml_err_set(&err, EML_ERR_IO, "cannot map the bulk region");
        else
            bulk = p;
    }
    if (st == EML_OK) st = eml_sandbox_prepare((int)threads, &err);
    if (st == EML_OK) st = eml_sandbox_enter(heap_mb, &err);
    eml_enclave *e = NULL;
    if (st == EML_OK) st = eml_enclave_new(&plat, &e);
    eml_wipe(&plat, sizeof(plat));
    if (st != EML_OK) return fail_start((int)fd, st, &err);
    eml_enclave_set_bulk(e, bulk, bulk != NULL ? EML_BULK_BYTES : 0);
    st = eml_enclave_serve(e, (int)fd);
    eml_enclave_free(e);
    return st == EML_OK ? 0 : 1;
}
