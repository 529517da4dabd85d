/*
 * worker_cuda.c - the worker's CUDA backend (worker_gpu.h): cuBLAS DGEMM
 * on device 0 for the limbs of eml_limb_gemm.  libcudart and libcublas
 * are loaded with dlopen when `--device cuda` asks for them, so that the
 * program starts (and every other command runs) on a machine without
 * them; the build only needs the toolkit's headers (EML_HAVE_CUDA).
 * cuBLAS runs in pedantic math mode: no emulation or reduced-precision
 * path may touch the sums, which must stay exact.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/worker_gpu.h"

#ifndef EML_HAVE_CUDA

eml_status eml_cuda_open(eml_cuda **out, eml_err *err)
{
    *out = NULL;
    return eml_err_set(err, EML_ERR_UNSUPPORTED,
                       "this build has no CUDA backend (built without the "
                       "CUDA toolkit)");
}

void eml_cuda_close(eml_cuda *g) { (void)g; }

const char *eml_cuda_name(const eml_cuda *g)
{
    (void)g;
    return "";
}

eml_status eml_cuda_dgemm(void *ctx, int m, int n, int k, const double *a,
                          const double *b, double *c)
{
    (void)ctx, (void)m, (void)n, (void)k, (void)a, (void)b, (void)c;
    return EML_ERR_UNSUPPORTED;
}

#else

#include <dlfcn.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifndef EML_CUDA_LIBDIR
#define EML_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

struct eml_cuda {
    void *rt, *blas; /* dlopen handles */
    __typeof__(cudaGetDeviceCount) *get_count;
    __typeof__(cudaSetDevice) *set_device;
    __typeof__(cudaGetDeviceProperties) *props;
    __typeof__(cudaMalloc) *malloc_;
    __typeof__(cudaFree) *free_;
    __typeof__(cudaMemcpy) *memcpy_;
    __typeof__(cudaGetErrorString) *error_string;
    __typeof__(cublasCreate_v2) *create;
    __typeof__(cublasDestroy_v2) *destroy;
    __typeof__(cublasSetMathMode) *set_math;
    __typeof__(cublasDgemm_v2) *dgemm;
    cublasHandle_t handle;
    double *dev; /* a, b and c, grown as needed */
    size_t cap;  /* doubles */
    char name[256];
};

/* dlopen of the first of the names that loads, then the toolkit's own
 * directory. */
static void *load(const char *const *names, char *why, size_t whylen)
{
    for (int i = 0; names[i] != NULL; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h != NULL) return h;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", EML_CUDA_LIBDIR, names[i]);
        h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h != NULL) return h;
    }
    snprintf(why, whylen, "%s", dlerror() ? dlerror() : "not found");
    return NULL;
}

#define SYM(lib, field, name)                                                 \
    do {                                                                      \
        *(void **)&g->field = dlsym(g->lib, name);                            \
        if (g->field == NULL) {                                               \
            st = eml_err_set(err, EML_ERR_UNSUPPORTED,                        \
                             "CUDA: %s has no %s", #lib, name);               \
            goto fail;                                                        \
        }                                                                     \
    } while (0)

eml_status eml_cuda_open(eml_cuda **out, eml_err *err)
{
    *out = NULL;
    eml_cuda *g = calloc(1, sizeof(*g));
    if (g == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_status st = EML_OK;
    char why[256] = "";
    static const char *const rt[] = {"libcudart.so.13", "libcudart.so.12",
                                     "libcudart.so", NULL};
    static const char *const blas[] = {"libcublas.so.13", "libcublas.so.12",
                                       "libcublas.so", NULL};
    g->rt = load(rt, why, sizeof(why));
    if (g->rt == NULL) {
        st = eml_err_set(err, EML_ERR_UNSUPPORTED,
                         "cannot load the CUDA runtime (%s)", why);
        goto fail;
    }
    g->blas = load(blas, why, sizeof(why));
    if (g->blas == NULL) {
        st = eml_err_set(err, EML_ERR_UNSUPPORTED, "cannot load cuBLAS (%s)",
                         why);
        goto fail;
    }
    SYM(rt, get_count, "cudaGetDeviceCount");
    SYM(rt, set_device, "cudaSetDevice");
    SYM(rt, props, "cudaGetDeviceProperties");
    SYM(rt, malloc_, "cudaMalloc");
    SYM(rt, free_, "cudaFree");
    SYM(rt, memcpy_, "cudaMemcpy");
    SYM(rt, error_string, "cudaGetErrorString");
    SYM(blas, create, "cublasCreate_v2");
    SYM(blas, destroy, "cublasDestroy_v2");
    SYM(blas, set_math, "cublasSetMathMode");
    SYM(blas, dgemm, "cublasDgemm_v2");
    int count = 0;
    cudaError_t ce = g->get_count(&count);
    if (ce != cudaSuccess || count < 1) {
        st = eml_err_set(err, EML_ERR_UNSUPPORTED, "no CUDA device (%s)",
                         ce != cudaSuccess ? g->error_string(ce)
                                           : "none found");
        goto fail;
    }
    struct cudaDeviceProp p;
    memset(&p, 0, sizeof(p));
    if ((ce = g->set_device(0)) != cudaSuccess ||
        (ce = g->props(&p, 0)) != cudaSuccess) {
        st = eml_err_set(err, EML_ERR_BACKEND, "CUDA device 0: %s",
                         g->error_string(ce));
        goto fail;
    }
    snprintf(g->name, sizeof(g->name), "%s", p.name);
    if (g->create(&g->handle) != CUBLAS_STATUS_SUCCESS) {
        g->handle = NULL;
        st = eml_err_set(err, EML_ERR_BACKEND, "cuBLAS: cannot create a "
                                               "handle");
        goto fail;
    }
    if (g->set_math(g->handle, CUBLAS_PEDANTIC_MATH) !=
        CUBLAS_STATUS_SUCCESS) {
        st = eml_err_set(err, EML_ERR_BACKEND,
                         "cuBLAS: cannot set pedantic math mode");
        goto fail;
    }
    *out = g;
    return EML_OK;
fail:
    eml_cuda_close(g);
    return st;
}

void eml_cuda_close(eml_cuda *g)
{
    if (g == NULL) return;
    if (g->dev != NULL && g->free_ != NULL) g->free_(g->dev);
    if (g->handle != NULL && g->destroy != NULL) g->destroy(g->handle);
    /* The libraries stay loaded: their own static state (C++ runtime
     * pools) lives as long as the process, and unloading them would only
     * hide where it came from. */
    free(g);
}

const char *eml_cuda_name(const eml_cuda *g)
{
    return g->name;
}

eml_status eml_cuda_dgemm(void *ctx, int m, int n, int k, const double *a,
                          const double *b, double *c)
{
    eml_cuda *g = ctx;
    size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    size_t need = na + nb + nc;
    if (need > g->cap) {
        if (g->dev != NULL) g->free_(g->dev);
        g->dev = NULL;
        g->cap = 0;
        if (g->malloc_((void **)&g->dev, need * sizeof(double)) !=
            cudaSuccess)
            return EML_ERR_NOMEM;
        g->cap = need;
    }
    double *da = g->dev, *db = da + na, *dc = db + nb;
    if (g->memcpy_(da, a, na * sizeof(double), cudaMemcpyHostToDevice) !=
            cudaSuccess ||
        g->memcpy_(db, b, nb * sizeof(double), cudaMemcpyHostToDevice) !=
            cudaSuccess)
        return EML_ERR_BACKEND;
    /* Row-major C = A B is column-major C^T = B^T A^T: cuBLAS sees B
     * (n x k, ld n) times A (k x m, ld k). */
    const double one = 1.0, zero = 0.0;
    if (g->dgemm(g->handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, db, n,
                 da, k, &zero, dc, n) != CUBLAS_STATUS_SUCCESS)
        return EML_ERR_BACKEND;
    if (g->memcpy_(c, dc, nc * sizeof(double), cudaMemcpyDeviceToHost) !=
        cudaSuccess)
        return EML_ERR_BACKEND;
    return EML_OK;
}

#endif
