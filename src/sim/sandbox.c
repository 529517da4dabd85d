/*
 * sandbox.c - the `sim` backend's process sandbox (see sandbox.h).
 *
 * The allow-list is what the trusted runtime, glibc, OpenSSL, oneDNN and
 * OpenMP's threads need once initialised; anything else fails with EPERM
 * (so the runtime sees a clean error instead of dying, and the PROBE ecall
 * can show the refusal).  clone3 answers ENOSYS so that glibc falls back to
 * clone, whose flags we can inspect: only thread creation is allowed, never
 * a new process.
 */
#define _GNU_SOURCE 1 /* CLONE_THREAD */
#include "sim/sandbox.h"

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <oneapi/dnnl/dnnl.h>

#include "enclaveml/crypto.h"
#include "enclaveml/kernels.h"

#if defined(__SANITIZE_ADDRESS__)
#define EML_SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EML_SANITIZER_BUILD 1
#endif
#endif
#ifndef EML_SANITIZER_BUILD
#define EML_SANITIZER_BUILD 0
#endif

eml_status eml_sandbox_prepare(int threads, eml_err *err)
{
    /* OpenSSL: load providers and seed the RNG now. */
    uint8_t k[32], p[32], sig[64], shared[32];
    eml_status st = eml_random(k, sizeof(k));
    if (st == EML_OK) st = eml_x25519_keygen(k, p);
    if (st == EML_OK) st = eml_x25519_shared(shared, k, p);
    if (st == EML_OK) st = eml_ed25519_keygen(k, p);
    if (st == EML_OK) st = eml_ed25519_sign(sig, "x", 1, k);
    if (st == EML_OK) st = eml_hkdf_sha256(shared, 32, k, 32, NULL, 0, NULL, 0);
    if (st == EML_OK) {
        uint8_t nonce[12] = {0}, ct[48];
        st = eml_aes256gcm_seal(ct, k, 32, NULL, 0, nonce, shared);
    }
    eml_wipe(k, sizeof(k));
    eml_wipe(shared, sizeof(shared));
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot initialise the crypto library");
    /* oneDNN and OpenMP: detect the CPU, start the thread pool. */
    eml_kernels_set_threads(threads);
    float a[64] = {0}, b[64] = {0}, c[64];
    if (dnnl_sgemm('N', 'N', 8, 8, 8, 1.0f, a, 8, b, 8, 0.0f, c, 8) !=
        dnnl_success)
        return eml_err_set(err, EML_ERR_BACKEND, "oneDNN does not start");
    return EML_OK;
}

static const int allowed[] = {
    SCMP_SYS(read),          SCMP_SYS(write),        SCMP_SYS(readv),
    SCMP_SYS(recvfrom),
    SCMP_SYS(writev),        SCMP_SYS(close),        SCMP_SYS(mmap),
    SCMP_SYS(munmap),        SCMP_SYS(mprotect),     SCMP_SYS(mremap),
    SCMP_SYS(brk),           SCMP_SYS(madvise),      SCMP_SYS(mlock),
    SCMP_SYS(munlock),       SCMP_SYS(futex),        SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),          SCMP_SYS(gettid),       SCMP_SYS(getpid),
    SCMP_SYS(sched_getaffinity), SCMP_SYS(sched_yield),
    SCMP_SYS(getrandom),     SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres),
    SCMP_SYS(gettimeofday),  SCMP_SYS(nanosleep),    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(exit),          SCMP_SYS(exit_group),   SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask), SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
    SCMP_SYS(tgkill),        SCMP_SYS(getrusage),    SCMP_SYS(sysinfo),
    SCMP_SYS(fstat),         SCMP_SYS(newfstatat),   SCMP_SYS(lseek),
    SCMP_SYS(membarrier),    SCMP_SYS(prlimit64),    SCMP_SYS(getpriority),
};

eml_status eml_sandbox_enter(unsigned heap_mb, eml_err *err)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return eml_err_set(err, EML_ERR_IO, "PR_SET_DUMPABLE: %s",
                           strerror(errno));
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return eml_err_set(err, EML_ERR_IO, "RLIMIT_CORE: %s",
                           strerror(errno));
    struct rlimit heap = {(rlim_t)heap_mb << 20, (rlim_t)heap_mb << 20};
#if EML_SANITIZER_BUILD
    /* AddressSanitizer reserves terabytes of shadow memory; a data limit
     * would make it abort.  Sanitizer builds are for tests, not for data. */
    (void)heap;
#else
    if (setrlimit(RLIMIT_DATA, &heap) != 0)
        return eml_err_set(err, EML_ERR_IO, "RLIMIT_DATA: %s",
                           strerror(errno));
#endif

    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (ctx == NULL)
        return eml_err_set(err, EML_ERR_BACKEND, "seccomp_init failed");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(allowed) / sizeof(allowed[0]);
         i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
    /* Threads only: clone must carry CLONE_THREAD. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD,
                                      CLONE_THREAD));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0)
        return eml_err_set(err, EML_ERR_BACKEND, "seccomp: %s",
                           strerror(-rc));
    return EML_OK;
}
