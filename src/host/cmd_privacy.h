/*
 * cmd_privacy.h - the `enclaveml privacy` command (untrusted host side):
 * DP-SGD privacy accounting from the command line, over src/dp.
 */
#ifndef EML_HOST_CMD_PRIVACY_H
#define EML_HOST_CMD_PRIVACY_H

/* argv[0] is "privacy".  Prints the result on stdout (one JSON object with
 * --json) and returns 0; --help prints the usage and returns 0; bad input
 * prints one "enclaveml: error: ..." line on stderr and returns 1.  Expects
 * opterr = 0 and a fresh getopt state, as main() leaves them. */
int eml_cmd_privacy(int argc, char **argv);

#endif

