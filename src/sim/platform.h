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

/* $ENCLAVEML_HOME or ~/.local/share/enclaveml, created (0700) if needed. */
EML_MUST_CHECK eml_status eml_platform_home(char *out, size_t cap,
                                            eml_err *err);
/* Creates platform.key/.pub in home if missing (idempotent, race-safe). */
EML_MUST_CHECK eml_status eml_platform_provision(const char *home,
                                                 eml_err *err);
/* Reads the secrets (into plat->sign_sk / seal_secret). */
EML_MUST_CHECK eml_status eml_platform_load(const char *home,
                                            eml_platform *plat, eml_err *err);
/* Reads platform.pub. */
EML_MUST_CHECK eml_status eml_platform_load_pub(const char *home,
                                                uint8_t pk[32], eml_err *err);
/* SHA-256 of a file's bytes (the enclave image). */
EML_MUST_CHECK eml_status eml_file_sha256(const char *path, uint8_t out[32],
                                          eml_err *err);
/* The policy string for a configuration: "heap_mb=<n>". */
void eml_policy_string(char *out, size_t cap, unsigned heap_mb);
#endif
