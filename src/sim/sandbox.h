/*
 * sandbox.h - closes the `sim` enclave process: not dumpable, no core
 * files, a heap budget, and a seccomp allow-list (no open/openat, socket,
 * connect, execve, fork, ptrace, ...).  Called once by enclaveml-enclave
 * after the simulated platform has handed over its secrets and before the
 * first message is read.
 */
#ifndef EML_SIM_SANDBOX_H
#define EML_SIM_SANDBOX_H

#include "enclaveml/status.h"

/* Does the one-time initialisation that would otherwise need forbidden
 * calls later (OpenSSL providers, oneDNN CPU detection, OpenMP threads). */
EML_MUST_CHECK eml_status eml_sandbox_prepare(int threads, eml_err *err);
/* heap_mb: the data-segment budget (RLIMIT_DATA); chan_fd: the channel,
 * the only descriptor read or written; counter_fd: the monotonic counter's
 * file (pread/pwrite/fdatasync only), or -1. */
EML_MUST_CHECK eml_status eml_sandbox_enter(unsigned heap_mb, int chan_fd,
                                            int counter_fd, eml_err *err);
#endif
