/*
 * kernels_impl.h - private to src/kernels: the kernel state's layout, the
 * two tables, shape checks shared by both backends, and the reference ops
 * the fast backend falls back to for shapes oneDNN cannot express.
 *
 * Not a public header: layers see only include/enclaveml/kernels.h.
 */
#ifndef EML_KERNELS_IMPL_H
#define EML_KERNELS_IMPL_H

#include <stddef.h>

#include "enclaveml/kernels.h"

/* The backend state behind the opaque eml_kstate.  The reference ops keep
 * nothing (fast == NULL); the fast ops keep a oneDNN engine, stream and
 * primitive cache (struct eml_fast_state, defined in fast_dnnl.c). */
struct eml_fast_state;
struct eml_kstate {
    eml_kernels_kind kind;
    struct eml_fast_state *fast; /* owned; NULL for EML_KERNELS_REF */
};

extern const eml_kernels eml_kernels_ref_table;
extern const eml_kernels eml_kernels_fast_table;

/* ==== shape checks (kernels.c) ==== */

/* EML_OK when every field is in range and every tensor's element count
 * fits; the counts come back through the out-pointers (either may be NULL). */
eml_status eml_pool_shape_check(const eml_pool_shape *s, size_t *n_in,
                                size_t *n_out);
/* True when im2col/col2im may run on s (positive sizes, no overflow). */
int eml_conv_shape_ok(const eml_conv_shape *s);
/* The arguments of a qconv call: EML_ERR_INVALID, EML_ERR_RANGE (a
 * tensor's size overflows), EML_ERR_UNSUPPORTED (an activation other than
 * linear, relu, leaky) or EML_OK. */
eml_status eml_qconv_check(const eml_qconv *q, const int8_t *src,
                           const int8_t *w, const int8_t *dst);

/* ==== the fast table's im2col (fast_im2col.c) ==== */

void eml_fast_im2col(float *col, const float *in, const eml_conv_shape *s);
void eml_fast_col2im(float *din, const float *col, const eml_conv_shape *s);
/* fast_qconv.c */
eml_status eml_fast_qconv(eml_kstate *ks, const eml_qconv *q,
                          const int8_t *src, const int8_t *w, int8_t *dst);

/* ==== reference ops (ref.c), for tests and the reference table ==== */

eml_status eml_ref_gemm(void *ctx, const eml_gemm_desc *g);
eml_status eml_ref_act_forward(eml_kstate *ks, float *x, size_t n, eml_act a);
eml_status eml_ref_act_backward(eml_kstate *ks, float *delta, const float *y,
                                size_t n, eml_act a);
size_t eml_ref_maxpool_ws_bytes(const eml_pool_shape *s);
void eml_ref_maxpool_plane(const float *x, float *y, int32_t *am,
                           const eml_pool_shape *s);
/* fast_pool.c: the reference's max pooling (same argmax workspace, same
 * ties), planes in parallel, 2x2 stride 2 without bounds checks. */
eml_status eml_fast_maxpool_forward(eml_kstate *ks, float *out, void *ws,
                                    const float *in,
                                    const eml_pool_shape *s);
eml_status eml_fast_maxpool_backward(eml_kstate *ks, float *din,
                                     const float *dout, const void *ws,
                                     const eml_pool_shape *s);
eml_status eml_ref_maxpool_forward(eml_kstate *ks, float *out, void *ws,
                                   const float *in, const eml_pool_shape *s);
eml_status eml_ref_maxpool_backward(eml_kstate *ks, float *din,
                                    const float *dout, const void *ws,
                                    const eml_pool_shape *s);
eml_status eml_ref_avgpool_forward(eml_kstate *ks, float *out,
                                   const float *in, const eml_pool_shape *s);
eml_status eml_ref_avgpool_backward(eml_kstate *ks, float *din,
                                    const float *dout,
                                    const eml_pool_shape *s);
eml_status eml_ref_softmax_forward(eml_kstate *ks, float *out,
                                   const float *in, int batch, int n);
void eml_ref_im2col(float *col, const float *in, const eml_conv_shape *s);
void eml_ref_col2im(float *din, const float *col, const eml_conv_shape *s);
eml_status eml_ref_qconv(eml_kstate *ks, const eml_qconv *q,
                         const int8_t *src, const int8_t *w, int8_t *dst);

#endif
