/*
 * cmd_worker.h - the `enclaveml worker` command (untrusted host side): an
 * outsourcing worker that serves the worker protocol (outsource.h,
 * docs/formats.md) on a TCP or unix socket, computing exact products in
 * Z_p for an enclave that verifies every one.
 */
#ifndef EML_HOST_CMD_WORKER_H
#define EML_HOST_CMD_WORKER_H

/* argv[0] is "worker".  Prints the address it listens on as the only line
 * on stdout, serves until SIGINT or SIGTERM (or --max-requests) and
 * returns 0; bad options or a failed bind print one "enclaveml: error:
 * ..." line and return 1.  Expects opterr = 0 and a fresh getopt state, as
 * main() leaves them. */
int eml_cmd_worker(int argc, char **argv);

#endif
