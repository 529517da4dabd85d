/*
 * fast_qconv.c - the fast table's int8 convolution (eml_qconv): oneDNN's
 * convolution primitive on s8 tensors in NHWC (VNNI where the CPU has it,
 * AMX on Intel CPUs that have it), the scales, bias, residual sum and
 * activation fused into it as oneDNN attributes and post-ops.
 *
 * One cached primitive per (shape, key): the scales are fixed when it is
 * created, and the entry owns the weights reordered into the layout the
 * primitive chose, made on the first call of each key.  oneDNN adds the
 * bias before the output scale, in the accumulator's units, as eml_qconv
 * says.
 */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast_internal.h"

/* The primitive descriptor of q, with weights in the layout oneDNN picks. */
static eml_status qconv_pd(dnnl_engine_t engine, const eml_qconv *q,
                           dnnl_primitive_desc_t *out)
{
    const eml_conv_shape *s = &q->s;
    dnnl_dims_t src_d = {q->batch, s->c, s->h, s->w};
    dnnl_dims_t w_d = {q->out_c, s->c, s->size, s->size};
    dnnl_dims_t b_d = {q->out_c};
    dnnl_dims_t dst_d = {q->batch, q->out_c, s->out_h, s->out_w};
    dnnl_dims_t strides = {s->stride, s->stride};
    dnnl_dims_t pl = {s->pad, s->pad};
    dnnl_dims_t pr = {(dnnl_dim_t)(s->out_h - 1) * s->stride + s->size -
                          s->h - s->pad,
                      (dnnl_dim_t)(s->out_w - 1) * s->stride + s->size -
                          s->w - s->pad};
    dnnl_memory_desc_t src, wt, bias, dst;
    dnnl_convolution_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    eml_status st = EML_ERR_BACKEND;
    *out = NULL;
    if (dnnl_memory_desc_init_by_tag(&src, 4, src_d, dnnl_s8, dnnl_nhwc) !=
            dnnl_success ||
        dnnl_memory_desc_init_by_tag(&wt, 4, w_d, dnnl_s8,
                                     dnnl_format_tag_any) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&bias, 1, b_d, dnnl_f32, dnnl_a) !=
            dnnl_success ||
        dnnl_memory_desc_init_by_tag(&dst, 4, dst_d, dnnl_s8, dnnl_nhwc) !=
            dnnl_success ||
        dnnl_convolution_forward_desc_init(
            &d, dnnl_forward_inference, dnnl_convolution_direct, &src, &wt,
            &bias, &dst, strides, pl, pr) != dnnl_success ||
        dnnl_primitive_attr_create(&attr) != dnnl_success ||
        dnnl_post_ops_create(&po) != dnnl_success)
        goto out;
    if (dnnl_primitive_attr_set_output_scales(attr, q->out_c, 1 << 1,
                                              q->scale) != dnnl_success)
        goto out;
    if (q->sum_scale != 0.0f &&
        dnnl_post_ops_append_sum(po, q->sum_scale) != dnnl_success)
        goto out;
    if (q->act != EML_ACT_LINEAR &&
        dnnl_post_ops_append_eltwise(
            po, 1.0f, dnnl_eltwise_relu,
            q->act == EML_ACT_LEAKY ? EML_LEAKY_SLOPE : 0.0f,
            0.0f) != dnnl_success)
        goto out;
    if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success ||
        dnnl_primitive_desc_create(out, &d, attr, engine, NULL) !=
            dnnl_success) {
        *out = NULL;
        goto out;
    }
    st = EML_OK;
out:
    if (po != NULL) dnnl_post_ops_destroy(po);
    if (attr != NULL) dnnl_primitive_attr_destroy(attr);
    return st;
}

/* The entry's own copy of w, in the primitive's weights layout. */
static eml_status qconv_weights(struct eml_fast_state *fs,
                                struct fast_entry *e,
                                const_dnnl_primitive_desc_t pd,
                                const eml_qconv *q, const int8_t *w)
{
    const eml_conv_shape *s = &q->s;
    dnnl_dims_t w_d = {q->out_c, s->c, s->size, s->size};
    const dnnl_memory_desc_t *want =
        dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_desc_t user;
    dnnl_memory_t um = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    eml_status st = EML_ERR_BACKEND;
    if (want == NULL ||
        dnnl_memory_desc_init_by_tag(&user, 4, w_d, dnnl_s8, dnnl_oihw) !=
            dnnl_success ||
        dnnl_memory_create(&um, &user, fs->engine,
                           (void *)(uintptr_t)w) != dnnl_success ||
        dnnl_memory_create(&e->owned, want, fs->engine,
                           DNNL_MEMORY_ALLOCATE) != dnnl_success) {
        e->owned = NULL;
        goto out;
    }
    e->owned_arg = DNNL_ARG_WEIGHTS;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, um}, {DNNL_ARG_TO, e->owned}};
    if (dnnl_reorder_primitive_desc_create(&rpd, &user, fs->engine, want,
                                           fs->engine, NULL) !=
            dnnl_success ||
        dnnl_primitive_create(&r, rpd) != dnnl_success ||
        dnnl_primitive_execute(r, fs->stream, 2, args) != dnnl_success ||
        dnnl_stream_wait(fs->stream) != dnnl_success)
        goto out;
    st = EML_OK;
out:
    if (r != NULL) dnnl_primitive_destroy(r);
    if (rpd != NULL) dnnl_primitive_desc_destroy(rpd);
    if (um != NULL) dnnl_memory_destroy(um);
    return st;
}

eml_status eml_fast_qconv(eml_kstate *ks, const eml_qconv *q,
                          const int8_t *src, const int8_t *w, int8_t *dst)
{
    struct eml_fast_state *fs = fast_of(ks);
    eml_status st = eml_qconv_check(q, src, w, dst);
    if (st != EML_OK) return st;
    if (fs == NULL) return EML_ERR_INVALID;
    const eml_conv_shape *s = &q->s;
    int64_t key[FAST_KEY_LEN] = {
        FAST_OP_QCONV, q->batch, s->c, s->h, s->w, q->out_c,
        (int64_t)s->size | (int64_t)s->stride << 16 | (int64_t)s->pad << 32,
        (int64_t)s->out_h | (int64_t)s->out_w << 32,
        (int64_t)q->act | (int64_t)(q->sum_scale != 0.0f) << 8,
        (int64_t)q->key, (int64_t)(intptr_t)w};
    struct fast_entry *e = fast_lookup(fs, key);
    if (e == NULL) {
        dnnl_primitive_desc_t pd = NULL;
        st = qconv_pd(fs->engine, q, &pd);
        static const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_BIAS, DNNL_ARG_DST};
        if (st == EML_OK) st = fast_entry_build(fs, key, pd, ids, 3, &e);
        if (st == EML_OK) {
            st = qconv_weights(fs, e, pd, q, w);
            if (st != EML_OK) fast_entry_clear(e);
        }
        if (pd != NULL) dnnl_primitive_desc_destroy(pd);
        if (st != EML_OK) return st;
    }
    void *ptrs[] = {(void *)(uintptr_t)src, (void *)(uintptr_t)q->bias,
                    dst};
    return fast_entry_run(fs, e, ptrs);
}
