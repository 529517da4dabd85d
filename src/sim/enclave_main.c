/*
 * enclave_main.c - the `enclaveml-enclave` program (backend `sim`).
 *
 *   enclaveml-enclave --fd N --home DIR [--heap-mb M] [--threads T]
 *                     [--bulk-fd B]
 *   enclaveml-enclave --measure --fd N [--heap-mb M]
 *
 * Started by the host with one end of a socketpair as fd N and its own
 * fixed environment (FIXED_ENV).  It refuses any other environment than
 * that one and the empty one, from which it executes itself again with
 * FIXED_ENV (libgomp reads its settings when it loads, before main).  As the
 * simulated platform it measures every file mapped executable into it
 * (sim/measure.h) with its configuration and announces the measurement
 * (a MEASURE frame); --measure stops there.  Otherwise it reads the
 * platform secrets from DIR, opens the monotonic counter file, maps the
 * bulk region, initialises the libraries, checks that nothing was loaded
 * since the measurement, closes the sandbox and hands everything to the
 * trusted runtime, which serves ecalls until SHUTDOWN.  Nothing is ever
 * printed: errors go out as an ERROR frame, or as the exit status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "enclaveml/boundary.h"
#include "enclaveml/crypto.h"
#include "enclaveml/enclave.h"
#include "sim/counter.h"
#include "sim/measure.h"
#include "sim/platform.h"
#include "sim/sandbox.h"

extern char **environ;

/* The enclave's whole environment, part of the measured program.  OpenMP
 * threads spin-wait at every barrier by default; on a small machine shared
 * with other work a spinning thread that lost its core stalls every
 * barrier (src/host/main.c measured 3.6x slower steps), so spin briefly,
 * then sleep. */
static char *const FIXED_ENV[] = {EML_SIM_ENCLAVE_ENV, NULL};

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer stops the world with ptrace at exit, which the sandbox
 * forbids.  The same runtime is leak-checked in-process through the `none`
 * backend's tests.  The link-order check would refuse a library preloaded
 * ahead of the sanitizer runtime, which the tests do on purpose. */
const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "detect_leaks=0:verify_asan_link_order=0";
}
/* ... and this one ASAN_OPTIONS cannot override. */
int __lsan_is_turned_off(void);
__attribute__((visibility("default"))) int __lsan_is_turned_off(void)
{
    return 1;
}
#endif

/* 0: empty, 1: exactly FIXED_ENV, -1: anything else. */
static int env_kind(void)
{
    if (environ == NULL || environ[0] == NULL) return 0;
    size_t i = 0;
    for (; FIXED_ENV[i] != NULL; i++)
        if (environ[i] == NULL || strcmp(environ[i], FIXED_ENV[i]) != 0)
            return -1;
    return environ[i] == NULL ? 1 : -1;
}

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
    const char *msg = eml_err_msg(err, st);
    eml_reply_error m = {(uint64_t)(int64_t)st,
                         {(const uint8_t *)msg, strnlen(msg, EML_ERRMSG_MAX)}};
    if (eml_boundary_send(&ch, EML_MSG_ERROR, &m, sizeof(m), NULL, NULL) !=
        EML_OK) {
        /* nobody to tell */
    }
    eml_channel_free(&ch);
    return 3;
}

/* Announces the measurement: the first frame on the channel. */
static eml_status announce(int fd, const uint8_t meas[32], const char *policy,
                           const eml_measured *ms)
{
    static char list[EML_MEASURE_LIST_MAX];
    size_t ln = eml_measure_list(list, sizeof(list), ms);
    if (ln == 0) return EML_ERR_RANGE;
    eml_notify_measure m;
    memcpy(m.measurement, meas, 32);
    m.policy.p = (const uint8_t *)policy;
    m.policy.n = strlen(policy);
    m.files.p = (const uint8_t *)list;
    m.files.n = ln;
    eml_channel ch;
    eml_channel_init(&ch, fd);
    eml_status st =
        eml_boundary_send(&ch, EML_MSG_MEASURE, &m, sizeof(m), NULL, NULL);
    eml_channel_free(&ch);
    return st;
}

int main(int argc, char **argv)
{
    unsigned fd = 0, heap_mb = 1024, threads = 0, bulk_fd = 0;
    int have_fd = 0, have_bulk = 0, measure_only = 0;
    const char *home = NULL;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--measure") == 0) {
            measure_only = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc) return 2;
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
        else if (strcmp(argv[i], "--home") == 0 && argv[i + 1][0] == '/' &&
                 strlen(argv[i + 1]) < 4000)
            home = argv[i + 1];
        else
            return 2;
    }
    if (!have_fd || (!measure_only && home == NULL)) return 2;

    eml_err err = {0};
    int env = env_kind();
    if (env < 0)
        return fail_start((int)fd, eml_err_set(&err, EML_ERR_AUTH,
                                               "the enclave refuses to start "
                                               "with a foreign environment"),
                          &err);
    if (env == 0 && !measure_only) {
        /* Its own environment, set before libgomp loads. */
        execve("/proc/self/exe", argv, FIXED_ENV);
        return fail_start((int)fd, eml_err_set(&err, EML_ERR_IO,
                                               "cannot execute itself"),
                          &err);
    }
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }

    eml_platform plat;
    memset(&plat, 0, sizeof(plat));
    plat.sim = 1;
    plat.probe = eml_sandbox_probe;
    eml_policy_string(plat.policy, sizeof(plat.policy), "sim", heap_mb);
    static eml_measured ms;
    eml_status st = eml_measure_self(&ms, &err);
    if (st == EML_OK) st = eml_measure_of(plat.measurement, &ms, plat.policy);
    if (st == EML_OK) {
        st = announce((int)fd, plat.measurement, plat.policy, &ms);
        if (st != EML_OK) return 3;
    }
    if (measure_only)
        return st == EML_OK ? 0 : fail_start((int)fd, st, &err);
    if (st == EML_OK) st = eml_platform_load(home, EML_PLATFORM_SIM, &plat, &err);
    /* The counter file is opened while files can still be opened. */
    eml_sim_counter counter = {-1};
    char cpath[4200];
    eml_sim_counter_path(cpath, sizeof(cpath), home, plat.measurement);
    if (st == EML_OK) st = eml_sim_counter_open(&counter, cpath, &err);
    if (st == EML_OK) plat.counter = eml_sim_counter_ops(&counter);
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
    /* Whatever the libraries loaded while starting up is in the
     * measurement, or the enclave does not start; after the sandbox
     * closes nothing more can be loaded (no open). */
    if (st == EML_OK) st = eml_measure_self_unchanged(&ms, &err);
    if (st == EML_OK)
        st = eml_sandbox_enter(heap_mb, (int)fd, counter.fd, &err);
    eml_enclave *e = NULL;
    if (st == EML_OK) st = eml_enclave_new(&plat, &e);
    eml_wipe(&plat, sizeof(plat));
    if (st != EML_OK) return fail_start((int)fd, st, &err);
    eml_enclave_set_bulk(e, bulk, bulk != NULL ? EML_BULK_BYTES : 0);
    st = eml_enclave_serve(e, (int)fd);
    eml_enclave_free(e);
    eml_sim_counter_close(&counter);
    return st == EML_OK ? 0 : 1;
}
