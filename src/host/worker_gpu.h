/*
 * worker_gpu.h - the worker's accelerator backend (docs/outsource.md,
 * "The CUDA worker"): exact products in Z_p, p = 2^61 - 1, computed as
 * fp64 matrix products of 16-bit limbs, every partial sum an integer
 * below 2^53 so that a DGEMM computes it exactly; the limbs' products are
 * recombined mod p on the host.  The DGEMM is a function pointer: cuBLAS
 * on a GPU (worker_cuda.c), or a plain one in the tests.  Host side,
 * untrusted: the enclave checks whatever comes back.
 */
#ifndef EML_HOST_WORKER_GPU_H
#define EML_HOST_WORKER_GPU_H

#include <stdint.h>

#include "enclaveml/outsource.h"

/* c (m x n) = a (m x k) b (k x n), row-major fp64, exactly for integer
 * operands whose every partial sum stays below 2^53. */
typedef eml_status (*eml_dgemm_fn)(void *ctx, int m, int n, int k,
                                   const double *a, const double *b,
                                   double *c);

/* The most inner terms one DGEMM sums: limbs are below 2^16 in
 * magnitude, so a sum of 2^20 of their products stays below 2^52. */
#define EML_LIMB_KBLOCK (1u << 20)

/* An eml_field_gemm_fn over dgemm: a (m x k), b (k x n) field elements,
 * each read as a signed value (v > p/2 is v - p) and split into as many
 * 16-bit limbs as the larger magnitude needs (two for integrity mode's
 * 31-bit operands, four for uniform ones); one DGEMM of the stacked limbs
 * per block of EML_LIMB_KBLOCK inner terms.  ctx is an eml_limb_ctx. */
typedef struct eml_limb_ctx {
    eml_dgemm_fn dgemm;
    void *user;
} eml_limb_ctx;

eml_status eml_limb_gemm(void *ctx, const uint64_t *a, const uint64_t *b,
                         uint64_t *c, uint32_t m, uint32_t n, uint32_t k);

/* ==== CUDA (worker_cuda.c): libcudart and libcublas loaded at run
 * time, so that the program needs neither unless --device cuda ==== */

typedef struct eml_cuda eml_cuda;

/* Loads the CUDA runtime and cuBLAS, picks device 0 and makes a cuBLAS
 * handle in pedantic math mode (no reduced-precision shortcuts).  A
 * clear error where the build has no CUDA support, the libraries are
 * missing or there is no device. */
EML_MUST_CHECK eml_status eml_cuda_open(eml_cuda **out, eml_err *err);
void eml_cuda_close(eml_cuda *g);
/* The device's name ("NVIDIA H100 80GB HBM3"). */
const char *eml_cuda_name(const eml_cuda *g);
/* An eml_dgemm_fn on the device (ctx: the eml_cuda). */
eml_status eml_cuda_dgemm(void *ctx, int m, int n, int k, const double *a,
                          const double *b, double *c);

#endif
