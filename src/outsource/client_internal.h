/*
 * client_internal.h - what the outsourcing client's two halves share:
 * client.c (the GEMM path, the client's life) and client_conv.c (a
 * convolution's products by their tensors).  Trusted code.
 */
#ifndef EML_OUTSOURCE_CLIENT_INTERNAL_H
#define EML_OUTSOURCE_CLIENT_INTERNAL_H

#include "core/clock.h"
#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/outsource.h"

struct eml_outsource {
    const eml_worker_link *link;
    eml_outsource_mode mode;
    eml_csprng *rng;
    uint64_t next_id;
    eml_outsource_stats stats;
    int failed;
    char error[512];
    /* scratch, grown as needed */
    float *fa, *fb;
    int32_t *qa, *qb; /* the quantized operands */
    int32_t *qbs;     /* a block of A and B, gathered */
    uint64_t *qc;     /* the product, as the worker gave it */
    uint64_t *acc;    /* a block of C, summed over inner blocks */
    uint64_t *pad;    /* private: the pad, then the blinded operand */
    uint64_t *wq;     /* private: the weight block as field elements */
    uint64_t *unb;    /* private: the unblinding factor R W (or W R) */
    size_t cap_qbs, cap_acc, cap_pad, cap_wq, cap_unb;
    size_t max_elems; /* of A's or B's part in one request */
    size_t max_bytes; /* of one request or reply frame */
    double min_intensity;     /* FLOPs per element sent, checked, decoded */
    eml_gemm_fn local_fn;     /* the dispatch's own GEMM, for products */
    void *local_ctx;          /* kept in the enclave */
    uint8_t *frame;
    size_t cap_fa, cap_fb, cap_qa, cap_qb, cap_qc, cap_frame;
};

#define cpu_now eml_cpu_seconds
#define wall_now eml_wall_seconds

const char *eml_oc_pass_name(eml_gemm_pass p);
/* Grows scratch *p to hold n elements of size sz (contents not kept, the
 * old buffer wiped); 0 if it cannot. */
int eml_oc_grow(void **p, size_t *cap, size_t n, size_t sz);
/* A uniform element of Z_p from the CSPRNG user. */
uint64_t eml_oc_next_field(void *user);
/* n uniform elements of Z_p. */
void eml_oc_uniform(eml_csprng *rng, uint64_t *buf, size_t n);
/* Fixed-point bits per operand for sums of k products (k 2^(2b) <=
 * 2^59). */
int eml_oc_bits_for(uint64_t k);
/* Room for a request frame of `size` bytes and a reply of mn elements;
 * 0 (why set) if not. */
int eml_oc_room(eml_outsource *o, size_t size, size_t mn, const char **why);
/* Sends the request in o->frame (size bytes, id) and takes back its
 * m x n product into o->qc, checked for being the reply to it. */
eml_status eml_oc_exchange(eml_outsource *o, size_t size, uint64_t id,
                           uint32_t m, uint32_t n, const char **why,
                           eml_err *err);
/* Marks the client failed with "worker result failed verification (layer
 * N, <pass>): why". */
void eml_oc_failed(eml_outsource *o, int layer, eml_gemm_pass pass,
                   const char *why);
/* The conv entry of the dispatch (client_conv.c), and whether it takes a
 * product (its intensity reaches min_intensity). */
eml_status eml_oc_conv(void *ctx, const eml_conv_desc *c);
int eml_oc_conv_takes(void *ctx, const eml_conv_desc *c);

#endif
