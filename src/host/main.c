/*
 * main.c - the `enclaveml` command line (untrusted host program).
 *
 * Each command parses its options strictly, loads files, calls the engine,
 * and prints either human text on stderr or one JSON object on stdout
 * (--json).  Every failure ends in exactly one line
 * "enclaveml: error: ..." on stderr and a non-zero exit.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/cli.h"
#include "host/cmd_common.h"
#include "host/cmd_crypto.h"
#include "host/cmd_enclave.h"
#include "host/cmd_privacy.h"
#include "host/cmd_serve.h"
#include "host/cmd_decentral.h"
#include "host/cmd_worker.h"

#define EXIT_USAGE 2
#define EML_GOMP_SPINCOUNT "10000"

/* ==== dispatch ==== */

/* Every command: its name, what it does (for --help), its entry. */
static const struct command {
    const char *name, *what;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"train", "train a network described by a Darknet-style cfg",
     eml_cmd_train},
    {"eval", "evaluate weights on a test set", eml_cmd_eval},
    {"predict", "run a network on the images of an IDX file",
     eml_cmd_predict},
    {"convert", "convert weights between Darknet's .weights and safetensors",
     eml_cmd_convert},
    {"bench", "time a network on this machine against its peak",
     eml_cmd_bench},
    {"keygen", "make an owner's key pair (NAME.key, NAME.pub)",
     eml_cmd_keygen},
    {"encrypt", "encrypt a file into the chunked container (.emlc)",
     eml_cmd_encrypt},
    {"decrypt", "decrypt a container", eml_cmd_decrypt},
    {"measure", "print the enclave program's measurement", eml_cmd_measure},
    {"attest", "get the enclave's signed attestation report",
     eml_cmd_attest},
    {"verify", "check an attestation, training or evaluation report",
     eml_cmd_verify},
    {"grant", "release a data key to an attested enclave", eml_cmd_grant},
    {"evaluate", "evaluate a granted model on granted test sets, signed",
     eml_cmd_evaluate},
    {"privacy", "compute epsilon (or the noise for a target epsilon)",
     eml_cmd_privacy},
    {"worker", "serve outsourced matrix products to enclaves (a worker)",
     eml_cmd_worker},
    {"node", "run one node of a decentralized run", eml_cmd_node},
    {"decentral", "run N local nodes of decentralized learning",
     eml_cmd_decentral},
    {"serve", "serve a model over attested TLS (TensorFlow Serving's API)",
     eml_cmd_serve},
    {"serve-worker", "run the model for `serve --queue` (Redis Streams)",
     eml_cmd_serve_worker},
    {"client", "check a server's attestation, then send it test images",
     eml_cmd_client},
};

static void usage(FILE *f)
{
    fputs("usage: enclaveml <command> [options]\n\ncommands:\n", f);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].what);
    fputs("\n'enclaveml <command> --help' describes each command's "
          "options.\n",
          f);
}

/* OpenMP threads spin-wait at every barrier by default.  On a small machine
 * shared with other work (2 cores here) a spinning thread that lost its
 * core stalls every barrier: a 2-thread training step ran 3.6x slower than
 * with passive waiting.  libgomp reads its settings when it loads, so the
 * only way to change the default is to set it and start again; a setting
 * the user gave is left alone. */
static void openmp_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") != NULL || getenv("GOMP_SPINCOUNT") != NULL)
        return;
    if (setenv("GOMP_SPINCOUNT", EML_GOMP_SPINCOUNT, 0) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default */
}

int main(int argc, char **argv)
{
    openmp_wait_policy(argv);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        puts("enclaveml 0.1.0");
        return 0;
    }
    /* getopt_long sees the command's own arguments. */
    argc--;
    argv++;
    opterr = 0;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].run(argc, argv);
    eml_fail("unknown command '%s' (see enclaveml --help)", cmd);
    return EXIT_USAGE;
}
