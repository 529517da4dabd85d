/*
 * sandbox.h - closes the `sim` enclave process: not dumpable, no core
 * files, a heap budget, and a seccomp allow-list (no open/openat, socket,
 * connect, execve, fork, ptrace, ...).  Called once by enclaveml-enclave
 * after the simulated platform has handed over its secrets and before the
 * first message is read.
 */
#ifndef EML_SIM_SANDBOX_H
#define EML_SIM_SANDBOX_H

#include <stdint.h>

#include "enclaveml/status.h"

/* Does the one-time initialisation that would otherwise need forbidden
 * calls later (OpenSSL providers, oneDNN CPU detection, OpenMP threads). */
EML_MUST_CHECK eml_status eml_sandbox_prepare(int threads, eml_err *err);
/* heap_mb: the data-segment budget (RLIMIT_DATA); chan_fd: the channel,
 * the only descriptor read or written; counter_fd: the monotonic counter's
 * file (pread/pwrite/fdatasync only), or -1. */
EML_MUST_CHECK eml_status eml_sandbox_enter(unsigned heap_mb, int chan_fd,
                                            int counter_fd, eml_err *err);
/* The sandbox's self-test (eml_platform.probe): inside the sandbox, tries
 * each call it forbids with harmless arguments, through raw syscall
 * numbers, and returns the eml_probe_call mask of those refused
 * (*attempted: of those tried).  Never call it outside the sandbox: the
 * calls would succeed (execve would replace the process). */
uint64_t eml_sandbox_probe(uint64_t *attempted);
#endif
