/*
 * sandbox.c - the `sim` backend's process sandbox (see sandbox.h).
 *
 * The allow-list is what the trusted runtime, glibc, OpenSSL, oneDNN and
 * OpenMP's threads need once initialised, each call with the narrowest
 * arguments that still work (descriptors: the channel and the counter file
 * only; pids: this process only; mmap: anonymous only); anything else fails with EPERM
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

/* libseccomp's SCMP_A*() macros leave a field of its comparison struct to
 * the default initializer, which clang reports. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <oneapi/dnnl/dnnl.h>

#include "enclaveml/crypto.h"
#include "enclaveml/edl.h"
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

/* Calls allowed with any arguments, each with why it is safe. */
static const int allowed[] = {
    /* Memory of this process only.  mmap is below (anonymous only);
     * mprotect may make memory executable: oneDNN JIT-compiles kernels. */
    SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(mremap), SCMP_SYS(brk),
    SCMP_SYS(madvise), SCMP_SYS(mlock), SCMP_SYS(munlock),
    /* Threads of this process: futexes are process-private or in memory
     * it shares only with itself (the bulk region holds no futex). */
    SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
    SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(sched_yield),
    /* Memory barriers across this process's threads (liburcu-style
     * users); at worst an IPI to every CPU, i.e. denial of service, which
     * the host can do anyway. */
    SCMP_SYS(membarrier),
    /* Randomness and time: no descriptor, nothing to name. */
    SCMP_SYS(getrandom), SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres),
    SCMP_SYS(gettimeofday), SCMP_SYS(nanosleep), SCMP_SYS(clock_nanosleep),
    /* Ending threads and the process; signal masks and returns of this
     * thread. */
    SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask), SCMP_SYS(sigaltstack), SCMP_SYS(restart_syscall),
    /* Resource use of this process, its threads or (none) its children;
     * sysinfo: machine-wide memory totals, which glibc's qsort reads. */
    SCMP_SYS(getrusage), SCMP_SYS(sysinfo),
    /* Closing a descriptor can only hurt the enclave itself. */
    SCMP_SYS(close),
};
/* Not allowed, on purpose: fstat/newfstatat/statx (nothing needs them once
 * the sandbox is closed, and a path argument cannot be checked: seccomp
 * sees the pointer, not the string), lseek, open*, socket calls other than
 * on the channel, execve, fork/vfork/clone without CLONE_THREAD, ptrace,
 * kill (tgkill is limited below), process_vm_*, memfd_create, ... */

/* An allow rule with conditions; rc keeps the first failure. */
#define RULE(call, ...)                                                       \
    do {                                                                      \
        if (rc == 0)                                                          \
            rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(call),        \
                                  __VA_ARGS__);                               \
    } while (0)

eml_status eml_sandbox_enter(unsigned heap_mb, int chan_fd, int counter_fd,
                             eml_err *err)
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
    /* The channel: the only descriptor read or written.  (fd numbers are
     * ints: compare the low 32 bits.) */
    scmp_datum_t ch = (scmp_datum_t)(uint32_t)chan_fd;
    RULE(read, 1, SCMP_A0_32(SCMP_CMP_EQ, ch));
    RULE(readv, 1, SCMP_A0_32(SCMP_CMP_EQ, ch));
    RULE(recvfrom, 1, SCMP_A0_32(SCMP_CMP_EQ, ch));
    RULE(write, 1, SCMP_A0_32(SCMP_CMP_EQ, ch));
    RULE(writev, 1, SCMP_A0_32(SCMP_CMP_EQ, ch));
#if EML_SANITIZER_BUILD
    /* Sanitizer reports go to stderr (test builds only). */
    RULE(write, 1, SCMP_A0_32(SCMP_CMP_EQ, 2));
    RULE(writev, 1, SCMP_A0_32(SCMP_CMP_EQ, 2));
#endif
    /* The monotonic counter's file: read and advanced in place. */
    if (counter_fd >= 0) {
        scmp_datum_t cf = (scmp_datum_t)(uint32_t)counter_fd;
        RULE(pread64, 1, SCMP_A0_32(SCMP_CMP_EQ, cf));
        RULE(pwrite64, 1, SCMP_A0_32(SCMP_CMP_EQ, cf));
        RULE(fdatasync, 1, SCMP_A0_32(SCMP_CMP_EQ, cf));
        RULE(flock, 1, SCMP_A0_32(SCMP_CMP_EQ, cf));
    }
    /* New memory, never a file's: the bulk region was mapped before. */
    RULE(mmap, 1, SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, MAP_ANONYMOUS));
    /* This process only (pid 0 = the caller): getrlimit/setrlimit go
     * through prlimit64; the CPU set is what OpenMP sizes itself by. */
    RULE(prlimit64, 1, SCMP_A0_32(SCMP_CMP_EQ, 0));
    RULE(sched_getaffinity, 1, SCMP_A0_32(SCMP_CMP_EQ, 0));
    /* The nice value of this process (which = PRIO_PROCESS, who = 0). */
    RULE(getpriority, 2, SCMP_A0_32(SCMP_CMP_EQ, PRIO_PROCESS),
         SCMP_A1_32(SCMP_CMP_EQ, 0));
    /* Signals to its own threads only (abort() raises SIGABRT this way). */
    RULE(tgkill, 1,
         SCMP_A0_32(SCMP_CMP_EQ, (scmp_datum_t)(uint32_t)getpid()));
    /* Threads only: clone must carry CLONE_THREAD. */
    RULE(clone, 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
    /* Another thread's CPU set (glibc's pthread_getattr_np asks for it by
     * tid, e.g. in AddressSanitizer's thread start): refused, with ENOSYS,
     * which glibc takes as "no affinity support" rather than a failure. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS),
                              SCMP_SYS(sched_getaffinity), 1,
                              SCMP_A0_32(SCMP_CMP_NE, 0));
    /* clone3's flags sit in memory seccomp cannot read: ENOSYS makes glibc
     * fall back to clone. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc == 0) rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0)
        return eml_err_set(err, EML_ERR_BACKEND, "seccomp: %s",
                           strerror(-rc));
    return EML_OK;
}

/* ==== the self-test ==== */

uint64_t eml_sandbox_probe(uint64_t *attempted_out)
{
    uint64_t refused = 0, attempted = 0;
    long rc;
    attempted |= EML_PROBE_OPENAT;
    rc = syscall(SYS_openat, -100 /* AT_FDCWD */, "/proc/self/status", 0);
    if (rc < 0) refused |= EML_PROBE_OPENAT;
    else close((int)rc);
    attempted |= EML_PROBE_SOCKET;
    rc = syscall(SYS_socket, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
    if (rc < 0) refused |= EML_PROBE_SOCKET;
    else close((int)rc);
    attempted |= EML_PROBE_EXECVE;
    char *const argv0[] = {NULL};
    rc = syscall(SYS_execve, "/bin/true", argv0, argv0);
    if (rc < 0) refused |= EML_PROBE_EXECVE;
    attempted |= EML_PROBE_PTRACE;
    rc = syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
    if (rc < 0) refused |= EML_PROBE_PTRACE;
    attempted |= EML_PROBE_CONNECT;
    rc = syscall(SYS_connect, -1, NULL, 0);
    if (rc < 0) refused |= EML_PROBE_CONNECT;
    attempted |= EML_PROBE_FORK;
    rc = syscall(SYS_fork);
    if (rc == 0) syscall(SYS_exit_group, 0); /* never: fork is refused */
    if (rc < 0) refused |= EML_PROBE_FORK;
    /* Descriptors other than the channel: fd 0 and 1 are /dev/null (0
     * bytes: nothing happens even where it is allowed). */
    attempted |= EML_PROBE_WRITE_FD;
    rc = syscall(SYS_write, 1, "", 0);
    if (rc < 0) refused |= EML_PROBE_WRITE_FD;
    attempted |= EML_PROBE_READ_FD;
    char none[1];
    rc = syscall(SYS_read, 0, none, 0);
    if (rc < 0) refused |= EML_PROBE_READ_FD;
    /* prlimit64 reading (not setting) the limits of pid 1, and of this
     * process named by its pid, which the kernel would allow: only pid 0
     * passes the filter. */
    attempted |= EML_PROBE_PRLIMIT;
    uint64_t lim[2];
    long r1 = syscall(SYS_prlimit64, 1, 7 /* RLIMIT_NOFILE */, NULL, lim);
    long r2 = syscall(SYS_prlimit64, (long)syscall(SYS_getpid),
                      7 /* RLIMIT_NOFILE */, NULL, lim);
    if (r1 < 0 && r2 < 0) refused |= EML_PROBE_PRLIMIT;
    /* Signal 0 only checks that the target exists. */
    attempted |= EML_PROBE_TGKILL;
    rc = syscall(SYS_tgkill, 1, 1, 0);
    if (rc < 0) refused |= EML_PROBE_TGKILL;
    attempted |= EML_PROBE_STAT_PATH;
    uint64_t sb[32]; /* room for the kernel's struct stat */
    rc = syscall(SYS_newfstatat, -100 /* AT_FDCWD */, "/etc/passwd", sb, 0);
    if (rc < 0) refused |= EML_PROBE_STAT_PATH;
    *attempted_out = attempted;
    return refused;
}
