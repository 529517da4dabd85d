/*
 * cmd_crypto.h - the key and container commands of the `enclaveml` command
 * line (untrusted host side):
 *
 *   enclaveml keygen  --out NAME [--force]
 *   enclaveml encrypt (--key NAME.key | --recipient NAME.pub)
 *                     --in FILE --out FILE.emlc [--chunk-size N]
 *   enclaveml decrypt --key NAME.key --in FILE.emlc --out FILE
 *
 * Each takes argv[0] = the command name and the command's own options,
 * prints --help to stdout, and on any failure prints exactly one line
 * "enclaveml: error: ..." on stderr and returns 1 (0 on success).  Files
 * are streamed chunk by chunk; outputs appear atomically or not at all.
 * main.c dispatches:  if (strcmp(cmd, "keygen") == 0)
 *                         return eml_cmd_keygen(argc, argv);
 */
#ifndef EML_HOST_CMD_CRYPTO_H
#define EML_HOST_CMD_CRYPTO_H

int eml_cmd_keygen(int argc, char **argv);
int eml_cmd_encrypt(int argc, char **argv);
int eml_cmd_decrypt(int argc, char **argv);

#endif
