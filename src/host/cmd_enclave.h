/*
 * cmd_enclave.h - commands around the enclave (measure, attest, verify,
 * grant, evaluate) and the confidential path of `train`.  Host side.
 */
#ifndef EML_HOST_CMD_ENCLAVE_H
#define EML_HOST_CMD_ENCLAVE_H

#include <stdint.h>

#include "enclaveml/edl.h"
#include "enclaveml/kernels.h"
#include "enclaveml/train.h"
#include "host/enclave_host.h"
#include "enclaveml/flatjson.h"
#include "host/json.h"

int eml_cmd_measure(int argc, char **argv);
int eml_cmd_attest(int argc, char **argv);
int eml_cmd_verify(int argc, char **argv);
int eml_cmd_grant(int argc, char **argv);
/* `enclaveml evaluate` (cmd_evaluate.c): verifiable evaluation. */
int eml_cmd_evaluate(int argc, char **argv);
/* `enclaveml predict --model-grant ...` (cmd_predict.c): private
 * prediction in the enclave; eml_predict_wants_enclave tells whether argv
 * asks for it (predict without --model-grant runs here, in the clear). */
int eml_cmd_predict_enclave(int argc, char **argv);
int eml_predict_wants_enclave(int argc, char **argv);

/* Copies a parsed report's members into --json output. */
void eml_json_members(eml_json *o, const eml_flatjson *j);
#endif
