/*
 * cmd_decentral.h - decentralized learning's commands (docs/decentral.md):
 * `node` (one node: cmd_node.c) and `decentral` (N local nodes, real
 * processes, started, watched and summed up: cmd_decentral.c).
 */
#ifndef EML_HOST_CMD_DECENTRAL_H
#define EML_HOST_CMD_DECENTRAL_H

#include <stdint.h>

#include "enclaveml/decentral.h"

int eml_cmd_node(int argc, char **argv);
/* A run's graph: a spec (ring, regular:4, ...) from the seed, or an
 * edge-list file when the name looks like a path. */
EML_MUST_CHECK eml_status eml_node_graph(const char *spec, uint32_t n,
                                         uint64_t seed, eml_topo *t,
                                         eml_err *err);
int eml_cmd_decentral(int argc, char **argv);

#endif
