/*
 * outsource.h - matrix products outsourced to an untrusted worker
 * (docs/outsource.md): exact arithmetic in the prime field Z_p, p = 2^61 - 1,
 * fixed-point quantization of float operands into it, Freivalds' check of
 * every product, and the worker's wire protocol, whose two frames both
 * sides encode and decode with the functions here.
 *
 * The protocol (all integers little-endian; docs/formats.md has the table):
 *
 *   request  u32 magic "EMLW" | u16 version 2 | u16 op | u64 id |
 *            u32 M | u32 N | u32 K | u32 flags | u64 p |
 *            geometry: u32 batch, c, h, w, f, size, stride, pad (zeros
 *            for GEMM) | A | B
 *   reply    u32 magic "EMLR" | u16 version 2 | u16 status (0 = done) |
 *            u64 id | u32 M | u32 N | M*N u64 C mod p (status 0 only)
 *
 * Ops (cols(X) is the im2col of a batch of images, ckk x batch*hw, the
 * engine's layout; ckk = c*size^2, hw = out_h*out_w, L = batch*hw):
 *   1 GEMM              A (M x K) B (K x N)       C = A B
 *   2 CONV_FORWARD      A = W (f x ckk), B = X    C = W cols(X)  (f x L)
 *   3 CONV_WEIGHT_GRAD  A = D (f x L), B = X      C = D cols(X)^T (f x ckk)
 *   4 CONV_INPUT_GRAD   A = W (f x ckk), B = D    C = col2im(W^T D)
 *                                                     (batch x chw)
 * X is batch x chw images; for the conv ops M, N, K must be the ones
 * their geometry gives (op 4: M = batch, N = chw, K = f).  Elements are
 * u64 field elements below p, or with flags bit 0 (EML_WORKER_I32)
 * 4-byte signed integers (integrity mode's fixed point), taken mod p.
 * Each operand has at most EML_WORKER_MAX_ELEMS elements, and so has C
 * and, for the conv ops, cols(X).  The worker answers requests in order
 * on one connection; the reply repeats the request's id.
 *
 * Trusted code (the client side runs in the enclave): no I/O; bytes go
 * through the eml_worker_link the caller gives.
 */
#ifndef ENCLAVEML_OUTSOURCE_H
#define ENCLAVEML_OUTSOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "enclaveml/kernels.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== the field ==== */

#define EML_FIELD_P ((uint64_t)0x1fffffffffffffffULL) /* 2^61 - 1, prime */

static inline uint64_t eml_field_add(uint64_t a, uint64_t b)
{
    uint64_t s = a + b; /* < 2^62 */
    return s >= EML_FIELD_P ? s - EML_FIELD_P : s;
}

static inline uint64_t eml_field_sub(uint64_t a, uint64_t b)
{
    return a >= b ? a - b : a + EML_FIELD_P - b;
}

/* (a * b) mod p for a, b < p: the 122-bit product folded twice. */
static inline uint64_t eml_field_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 t = (unsigned __int128)a * b;
    uint64_t lo = (uint64_t)t & EML_FIELD_P;
    uint64_t hi = (uint64_t)(t >> 61);
    return eml_field_add(lo, hi);
}

/* ==== the wire ==== */

#define EML_WORKER_MAGIC_REQ 0x574c4d45u   /* "EMLW" */
#define EML_WORKER_MAGIC_REPLY 0x524c4d45u /* "EMLR" */
#define EML_WORKER_VERSION 2
#define EML_WORKER_OP_GEMM 1
#define EML_WORKER_OP_CONV_FORWARD 2
#define EML_WORKER_OP_CONV_WEIGHT_GRAD 3
#define EML_WORKER_OP_CONV_INPUT_GRAD 4
#define EML_WORKER_I32 1u /* flags: A and B as 4-byte signed integers */
#define EML_WORKER_REQ_HEADER 72
#define EML_WORKER_REPLY_HEADER 24
#define EML_WORKER_MAX_ELEMS ((uint64_t)1 << 26) /* per matrix: 512 MiB */

/* Reply status values. */
#define EML_WORKER_DONE 0
#define EML_WORKER_REFUSED 1 /* a malformed request */
#define EML_WORKER_FAILED 2  /* the worker could not compute it */

/* A convolution's geometry (one image c x h x w, f filters of size x
 * size, stride, zero padding pad on every side). */
typedef struct eml_worker_geom {
    uint32_t batch, c, h, w, f, size, stride, pad;
} eml_worker_geom;

typedef struct eml_worker_req {
    uint64_t id;
    uint16_t op;
    uint32_t flags;
    uint32_t m, n, k; /* C is m x n */
    uint64_t p;
    eml_worker_geom g; /* conv ops */
    uint32_t out_h, out_w; /* conv ops, derived */
    size_t na, nb;     /* elements of A and B */
    const uint8_t *a, *b; /* in the frame (eml_worker_req_elem) */
} eml_worker_req;

typedef struct eml_worker_reply {
    uint64_t id;
    uint16_t status;
    uint32_t m, n;
    const uint8_t *c; /* m*n little-endian u64, in the frame */
} eml_worker_reply;

/* Checks q's op, flags, geometry and dimensions (the conv ops' M, N, K
 * must be their geometry's) and fills its derived sizes (out_h, out_w,
 * na, nb) and the frame's *size; an error if the request is malformed or
 * too large. */
EML_MUST_CHECK eml_status eml_worker_req_shape(eml_worker_req *q,
                                               size_t *size, eml_err *err);
/* Writes the request header (and geometry) of a shaped q; the operands
 * follow at out + EML_WORKER_REQ_HEADER, A then B, written with
 * eml_worker_put (u64) or eml_worker_put_i32 (flags EML_WORKER_I32). */
void eml_worker_req_write_header(uint8_t *out, const eml_worker_req *q);
/* Element i of operand A (side 0) or B (side 1), as a field element. */
uint64_t eml_worker_req_elem(const eml_worker_req *q, int side, size_t i);

/* A GEMM request frame's size for m x k times k x n, u64 elements (0 if
 * too large). */
size_t eml_worker_req_size(uint32_t m, uint32_t n, uint32_t k);
size_t eml_worker_reply_size(uint32_t m, uint32_t n);

/* Writes a GEMM request: header, then A (m x k) and B (k x n), every
 * element reduced below p already.  out holds eml_worker_req_size
 * bytes. */
void eml_worker_req_write(uint8_t *out, uint64_t id, uint32_t m, uint32_t n,
                          uint32_t k, const uint64_t *a, const uint64_t *b);

/* Parses a request header (the first EML_WORKER_REQ_HEADER bytes):
 * magic, version, op, flags, p, geometry, dimensions and sizes; *total
 * gets the whole frame's size. */
EML_MUST_CHECK eml_status eml_worker_req_header(const uint8_t *p, size_t n,
                                                eml_worker_req *q,
                                                size_t *total, eml_err *err);
/* Parses a whole request frame (exactly its size) and checks that every
 * u64 element is below p; operands are read with eml_worker_req_elem. */
EML_MUST_CHECK eml_status eml_worker_req_parse(const uint8_t *p, size_t n,
                                               eml_worker_req *q,
                                               eml_err *err);

/* Writes a reply header (status, id, m, n); the caller appends C. */
void eml_worker_reply_header_write(uint8_t *out, uint64_t id,
                                   uint16_t status, uint32_t m, uint32_t n);
/* Parses a reply header; *total gets the whole frame's size (a non-zero
 * status carries no matrix). */
EML_MUST_CHECK eml_status eml_worker_reply_header(const uint8_t *p, size_t n,
                                                  eml_worker_reply *r,
                                                  size_t *total,
                                                  eml_err *err);
/* Parses a whole reply frame (exactly its size): for status 0 every
 * element of C is below p. */
EML_MUST_CHECK eml_status eml_worker_reply_parse(const uint8_t *p, size_t n,
                                                 eml_worker_reply *r,
                                                 eml_err *err);

/* Element i of a little-endian u64 array in a frame. */
static inline uint64_t eml_worker_get(const uint8_t *base, size_t i)
{
    uint64_t v;
    memcpy(&v, base + 8 * i, 8); /* little-endian hosts only (x86-64) */
    return v;
}

static inline void eml_worker_put(uint8_t *base, size_t i, uint64_t v)
{
    memcpy(base + 8 * i, &v, 8);
}

static inline void eml_worker_put_i32(uint8_t *base, size_t i, int32_t v)
{
    memcpy(base + 4 * i, &v, 4);
}

/* The worker's answer to a parsed request: C (q->m x q->n little-endian
 * u64) into c, exactly, for every op.  EML_ERR_NOMEM if its scratch (the
 * columns of a conv op) cannot be had. */
EML_MUST_CHECK eml_status eml_worker_compute(const eml_worker_req *q,
                                             uint8_t *c);
/* A backend for the worker's products: c (m x n) = a (m x k) b (k x n)
 * mod p, exactly, all u64 field elements (little-endian arrays). */
typedef eml_status (*eml_field_gemm_fn)(void *ctx, const uint64_t *a,
                                        const uint64_t *b, uint64_t *c,
                                        uint32_t m, uint32_t n, uint32_t k);
/* eml_worker_compute with the products on gemm (NULL: eml_field_gemm on
 * the CPU); the columns and col2im stay on the CPU. */
EML_MUST_CHECK eml_status eml_worker_compute_on(const eml_worker_req *q,
                                                uint8_t *c,
                                                eml_field_gemm_fn gemm,
                                                void *ctx);
/* cols(x) (ckk x L) of the images x (batch x chw field elements) for a
 * shaped conv request's geometry. */
void eml_field_im2col(const eml_worker_req *q, const uint64_t *x,
                      uint64_t *cols);

/* C = A * B mod p, exactly: a (m x k), b (k x n) as little-endian u64
 * arrays (frame bytes), c (m x n) written little-endian.  Plain C with
 * OpenMP over rows; the worker's CPU backend and the tests' oracle.  When
 * the elements, read as signed (v > p/2 is v - p), are small enough that
 * every exact sum fits 63 bits (integrity mode's fixed point), it runs
 * in 64-bit integers; else in 128-bit accumulators. */
void eml_field_gemm(const uint8_t *a, const uint8_t *b, uint8_t *c,
                    uint32_t m, uint32_t n, uint32_t k);

/* ==== the client: outsourced GEMM at the dispatch point ==== */

/* How the client reaches a worker: one request frame out, one reply frame
 * back (the link reads the reply's header to know its length and hands
 * over the bytes as they came; the client trusts none of them). */
typedef struct eml_worker_link {
    void *user;
    eml_status (*send)(void *user, const uint8_t *p, size_t n, eml_err *err);
    /* *p is the link's buffer, valid until the next call. */
    eml_status (*recv)(void *user, const uint8_t **p, size_t *n,
                       eml_err *err);
} eml_worker_link;

typedef enum eml_outsource_mode {
    EML_OUTSOURCE_INTEGRITY = 1, /* operands in the clear, all verified */
    EML_OUTSOURCE_PRIVATE = 2    /* inputs blinded with one-time pads */
} eml_outsource_mode;

/* What went through the worker. */
typedef struct eml_outsource_stats {
    uint64_t outsourced_products;
    uint64_t verified_products;
    uint64_t bytes_to_worker;
    uint64_t bytes_from_worker;
    uint64_t local_products; /* kept in the enclave: below the intensity */
    double worker_seconds;  /* waiting for the worker (wall) */
    double enclave_seconds; /* quantizing, checking, decoding (CPU) */
    /* private mode: drawing pads and computing their products with the
     * weights (CPU), Slalom's offline work; part of enclave_seconds */
    double pad_seconds;
} eml_outsource_stats;

typedef struct eml_outsource eml_outsource;

/* EML_OK for a mode that can run this job (training when `training`),
 * else the error a caller shows before anything is sent: private mode
 * blinds inference only (docs/outsource.md, "Why private mode does not
 * train"). */
EML_MUST_CHECK eml_status eml_outsource_mode_check(eml_outsource_mode mode,
                                                   int training,
                                                   eml_err *err);
/* A client over link (borrowed; it must outlive the client).  Its
 * randomness (Freivalds vectors, pads) comes from a CSPRNG seeded by the
 * OS.  In private mode it refuses (EML_ERR_UNSUPPORTED, message in
 * eml_outsource_error) any product but a forward one with a weight. */
EML_MUST_CHECK eml_status eml_outsource_new(const eml_worker_link *link,
                                            eml_outsource_mode mode,
                                            eml_outsource **out,
                                            eml_err *err);
void eml_outsource_free(eml_outsource *o);

/* Installs the client at a net's GEMM dispatch point: every f32 product
 * of its layers goes to the worker, verified; d->fn and d->ctx change. */
void eml_outsource_attach(eml_outsource *o, eml_gemm_dispatch *d);
const eml_outsource_stats *eml_outsource_stats_of(const eml_outsource *o);
/* Outsources only products with at least `flops` floating-point
 * operations per element the client quantizes, checks and decodes (2MNK
 * over MK + KN + MN for a GEMM; a convolution's over its images, filters
 * and output); the others run on the dispatch's own GEMM, in the
 * enclave.  0 (the default): every product.  docs/outsource.md measures
 * where outsourcing pays. */
void eml_outsource_set_min_intensity(eml_outsource *o, double flops);
/* Keeps every request frame at or below `bytes` (the enclave's channel
 * limit): a larger product goes as blocks of rows times blocks of
 * columns, each a product of its own, sent and checked. */
void eml_outsource_set_max_request(eml_outsource *o, size_t bytes);
/* The first failure's message ("worker result failed verification
 * (layer 3, forward)"), kept because the dispatch point only passes a
 * status up; "" if none. */
const char *eml_outsource_error(const eml_outsource *o);

/* ==== fixed point ==== */

/* Quantizes n floats to signed integers with scale 2^shift:
 * round(x * 2^shift); the caller chooses shift (eml_field_shift) so that
 * the magnitudes stay below 2^31.  eml_field_of maps them into Z_p
 * (negative values as p - |v|). */
void eml_field_quantize_i32(const float *x, size_t n, int shift,
                            int32_t *out);
/* x mod p for any 64-bit x (one Mersenne fold, one subtraction). */
static inline uint64_t eml_field_reduce(uint64_t x)
{
    x = (x & EML_FIELD_P) + (x >> 61);
    return x >= EML_FIELD_P ? x - EML_FIELD_P : x;
}
/* A 128-bit sum (below 2^127) mod p. */
static inline uint64_t eml_field_fold128(unsigned __int128 acc)
{
    uint64_t lo = (uint64_t)acc & EML_FIELD_P;
    unsigned __int128 hi = acc >> 61; /* < 2^66 */
    uint64_t h_lo = (uint64_t)hi & EML_FIELD_P;
    uint64_t h_hi = (uint64_t)(hi >> 61); /* < 2^5 */
    return eml_field_add(eml_field_add(lo, h_lo), h_hi);
}
/* A signed integer (|v| < 2^63) as a field element. */
static inline uint64_t eml_field_of(int64_t v)
{
    if (v >= 0) return eml_field_reduce((uint64_t)v);
    uint64_t r = eml_field_reduce((uint64_t)0 - (uint64_t)v);
    return r == 0 ? 0 : EML_FIELD_P - r;
}
/* The signed value of a field element (v > p/2 is negative). */
static inline double eml_field_signed(uint64_t v)
{
    return v > EML_FIELD_P / 2 ? -(double)(EML_FIELD_P - v) : (double)v;
}
/* out[i] = signed(c[i]) * scale, c field elements whose signed values
 * are below 2^62 in magnitude (decoded products), out floats. */
void eml_field_decode(const uint64_t *c, size_t n, double scale, float *out);
/* The shift that maps max |x| over n floats into `bits` bits (or 0 for
 * all zeros). */
int eml_field_shift(const float *x, size_t n, int bits);

/* ==== Freivalds' check ==== */

/* 1 if C = A*B mod p passes `reps` rounds of Freivalds' check with random
 * vectors r from the caller's generator (next(user) gives a uniform
 * element of Z_p): A (m x k), B (k x n), C (m x n), all u64 arrays in
 * native layout, elements below p.  A wrong C passes one round with
 * probability <= 1/p.  p is EML_FIELD_P in use; tests measure the rate
 * with small primes. */
int eml_freivalds(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                  uint32_t m, uint32_t n, uint32_t k, uint64_t p, int reps,
                  uint64_t (*next)(void *user), void *user);

/* Freivalds' check of C = A*B mod p for small signed integer operands
 * (|a|, |b| < 2^31; C as field elements): `reps` rounds with r from next
 * (reduced mod p), the sums exact in 128-bit accumulators.  With next
 * uniform over Z_p a wrong C passes a round with probability <= 1/p (a
 * non-zero linear form mod p vanishes on at most one value of any one
 * coordinate); with values from a set S, <= 1/|S|. */
int eml_freivalds_small(const int32_t *a, const int32_t *b,
                        const uint64_t *c, uint32_t m, uint32_t n,
                        uint32_t k, int reps, uint64_t (*next)(void *user),
                        void *user);
/* The unblinding factor of a padded product, exactly: u = r w (r_left:
 * r m x k, w k x n) or u = w r (w m x k, r k x n), r's elements below p,
 * w small signed (|w| < 2^31), u m x n field elements; 128-bit
 * accumulators, OpenMP over rows. */
void eml_field_gemm_padded(const uint64_t *r, const int32_t *w, uint64_t *u,
                           uint32_t m, uint32_t n, uint32_t k, int r_left);
/* Freivalds' check of a convolution op's product (EML_WORKER_OP_CONV_*,
 * geometry g): a and b are the operands as the request carries them, as
 * small signed integers (|v| < 2^31), c the m x n product as field
 * elements.  The random vectors are products of one vector per tensor
 * axis (batch, channel, row, column), so the check reads every operand
 * and C about once instead of forming the columns: a wrong C passes if a
 * non-zero multilinear polynomial of degree 3 (forward) or 4 (the
 * gradients) vanishes at the random point, with probability <= 4/|S| for
 * values uniform over a set S (Schwartz-Zippel); with next uniform over
 * Z_p, one round gives <= 2^-59.  1 if C passes. */
int eml_freivalds_conv(uint16_t op, const eml_worker_geom *g,
                       const int32_t *a, const int32_t *b, const uint64_t *c,
                       uint64_t (*next)(void *user), void *user);
/* Writes a GEMM request whose A and B are small signed integers, as
 * 4-byte elements (EML_WORKER_I32); out holds the size
 * eml_worker_req_shape gives such a request. */
void eml_worker_req_write_i32(uint8_t *out, uint64_t id, uint32_t m,
                              uint32_t n, uint32_t k, const int32_t *a,
                              const int32_t *b);

#ifdef __cplusplus
}
#endif
#endif
