/*
 * cmd_decentral.h - decentralized learning's commands (docs/decentral.md):
 * `node` (one node: cmd_node.c) and `decentral` (N local nodes, real
 * processes, started, watched and summed up: cmd_decentral.c).
 */
#ifndef EML_HOST_CMD_DECENTRAL_H
#define EML_HOST_CMD_DECENTRAL_H

int eml_cmd_node(int argc, char **argv);
int eml_cmd_decentral(int argc, char **argv);

#endif
