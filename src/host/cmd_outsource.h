/*
 * cmd_outsource.h - `--outsource ADDR` for the engine commands (train,
 * eval, predict): connect to the worker, put the verifying client at a
 * net's GEMM dispatch point, report what went through, and turn a failed
 * product into its one error line.  Host side (in-process runs; the
 * enclave's side goes through ocalls).
 */
#ifndef EML_HOST_CMD_OUTSOURCE_H
#define EML_HOST_CMD_OUTSOURCE_H

#include "enclaveml/net.h"
#include "enclaveml/outsource.h"
#include "host/cmd_common.h"
#include "host/json.h"
#include "host/worker_link.h"

typedef struct eml_outsourced {
    eml_worker_conn *conn;
    eml_worker_link link;
    eml_outsource *client;
    double cpu0, cpu1; /* process CPU seconds at begin and end */
} eml_outsourced;

/* With c->outsource: checks that the mode can run the job (`training`:
 * private mode cannot), connects (30 s timeouts) and attaches the client
 * to net's dispatch point.  0, or 1 with the error printed.  Without it:
 * 0 and nothing. */
int eml_outsourced_begin(const eml_common_opts *c, eml_net *net,
                         int training, eml_outsourced *o);
/* Marks the end of the measured work (before printing). */
void eml_outsourced_stop(eml_outsourced *o);
void eml_outsourced_end(eml_outsourced *o);
/* The JSON members (outsourced_products, verified_products,
 * enclave_cpu_seconds, worker_seconds, bytes_to_worker,
 * bytes_from_worker, outsource_mode, worker; in private mode
 * precompute_cpu_seconds, the part of enclave_cpu_seconds spent on pads
 * and their products). */
void eml_outsourced_json(const eml_outsourced *o, const eml_common_opts *c,
                         eml_json *j);
/* The error line of a failed run: the client's verification message if a
 * product failed, else err's.  Returns 1. */
int eml_outsourced_fail(const eml_outsourced *o, eml_status st,
                        eml_err *err);
#endif
