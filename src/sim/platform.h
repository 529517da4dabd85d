/*
 * platform.h - the simulated TEE platform (backend `sim`).
 *
 * Stands in for what SGX hardware provides: a per-machine report-signing
 * key (the role of the quoting enclave's attestation key), a sealing
 * secret (the role of the CPU's sealing key derivation), and the
 * measurement of the enclave program.  Kept in $ENCLAVEML_HOME (default
 * ~/.local/share/enclaveml):
 *
 *   platform.key  "EMLPLAT1" | Ed25519 signing key[32] | seal secret[32]
 *                 (mode 0600; created on first use)
 *   platform.pub  "EMLPPUB1" | Ed25519 public key[32]
 *   platform-none.key / .pub   the same, for backend `none`
 *
 * Anyone who can read platform.key can forge simulated reports: that is why
 * reports say "sim": true and verifiers refuse them without --allow-sim.
 * This module does file I/O and runs outside the trusted runtime (in the
 * host, and in the enclave process before its sandbox closes).
 */
#ifndef EML_SIM_PLATFORM_H
#define EML_SIM_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/enclave.h"
#include "enclaveml/status.h"

/* The platforms' key files are <name>.key / <name>.pub: "platform" for
 * `sim` (loaded only by the enclave process), "platform-none" for `none`
 * (loaded by the host process that runs that backend).  Host code never
 * loads "platform".  EML_PLATFORM_SIM / EML_PLATFORM_NONE name them. */
/* The sim enclave's whole environment (src/sim/enclave_main.c), part of
 * the measured program; the host starts it with exactly this one. */
#define EML_SIM_ENCLAVE_ENV "GOMP_SPINCOUNT=10000"

#define EML_PLATFORM_SIM "platform"
#define EML_PLATFORM_NONE "platform-none"

/* $ENCLAVEML_HOME or ~/.local/share/enclaveml, created (0700) if needed.
 * Host side: the enclave program gets the directory as --home. */
EML_MUST_CHECK eml_status eml_platform_home(char *out, size_t cap,
                                            eml_err *err);
/* Creates <name>.key/.pub in home if missing (idempotent, race-safe). */
EML_MUST_CHECK eml_status eml_platform_provision(const char *home,
                                                 const char *name,
                                                 eml_err *err);
/* Reads the secrets of <name>.key (into plat->sign_sk / seal_secret). */
EML_MUST_CHECK eml_status eml_platform_load(const char *home,
                                            const char *name,
                                            eml_platform *plat, eml_err *err);
/* Reads <name>.pub. */
EML_MUST_CHECK eml_status eml_platform_load_pub(const char *home,
                                                const char *name,
                                                uint8_t pk[32], eml_err *err);
/* The in-process training mirror's own key (host-mirror.key: 32 random
 * bytes, 0600, created on first use): not a platform secret, since host
 * code never holds those. */
EML_MUST_CHECK eml_status eml_host_mirror_key(const char *home,
                                              uint8_t key[32], eml_err *err);
/* The policy string for a configuration: "backend=<b>;heap_mb=<n>" (letters,
 * digits, '=', ';', '.', '_' only). */
void eml_policy_string(char *out, size_t cap, const char *backend,
                       unsigned heap_mb);
#endif
