/*
 * probe.c - the PROBE ecall: inside the sim sandbox, tries calls the
 * sandbox forbids (open, socket, execve, ptrace, connect, fork, writes to
 * foreign descriptors, calls on other processes), with harmless arguments
 * through raw syscall numbers, and reports which were refused.  Refused
 * outside the sandbox (the none backend), where they would succeed.
 */
#define _DEFAULT_SOURCE 1 /* syscall() */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include <sys/syscall.h>
#include <unistd.h>

/* ==== sandbox probe ==== */

/* Tries calls the sandbox forbids, with harmless arguments, through raw
 * syscall numbers (the trusted code has no file or socket functions). */
eml_status eml_rt_ecall_probe(eml_enclave *e, eml_msg_reader *r, eml_err *err)
{
    eml_status st = eml_msg_get_end(r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed PROBE");
    /* Outside the sandbox these calls would succeed (execve would replace
     * the host process of the `none` backend): refuse to try. */
    if (!e->sandboxed)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "PROBE needs the sim sandbox (this backend has "
                           "none)");
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
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PROBE_OK);
    eml_msg_put_u64(&m, refused);
    eml_msg_put_u64(&m, attempted);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return st;
}
