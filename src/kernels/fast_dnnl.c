/*
 * fast_dnnl.c - the kernel table "fast": the same ops as ref.c, through
 * oneDNN (libdnnl 2.x C API, OpenMP runtime).
 *
 * GEMM goes to dnnl_sgemm; activations, average pooling and softmax are
 * oneDNN primitives; max pooling is the reference's run over the planes in
 * parallel (fast_pool.c: oneDNN's on plain NCHW tensors was the slowest
 * layer of a step).  Creating a primitive costs far more than running a small
 * one, so each eml_kstate keeps an engine, a stream and a small LRU cache of
 * primitives keyed by op and full shape; the cached memory objects carry no
 * buffer of their own and are pointed at the caller's arrays on each call.
 * oneDNN has no im2col, so im2col/col2im are plain C (fast_im2col.c).
 *
 * Shapes oneDNN cannot express (a pooling window that would need negative
 * or whole-window padding) are refused with EML_ERR_UNSUPPORTED and
 * pool_supported says which: the net runs such a layer on the reference
 * table and counts it; nothing here falls back quietly.  Never prints,
 * never aborts: any oneDNN failure comes back as EML_ERR_BACKEND.  Thread
 * safe for distinct states; one state must not be used by two threads.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "kernels/fast_internal.h"

/* ==== state and primitive cache (fast_internal.h) ==== */

void fast_entry_clear(struct fast_entry *e)
{
    if (e->owned != NULL)
        dnnl_memory_destroy(e->owned);
    for (int i = 0; i < e->nargs; i++)
        if (e->args[i].memory != NULL)
            dnnl_memory_destroy(e->args[i].memory);
    if (e->prim != NULL)
        dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof(*e));
}

struct eml_fast_state *fast_of(eml_kstate *ks)
{
    if (ks == NULL || ks->kind != EML_KERNELS_FAST)
        return NULL;
    return ks->fast;
}

struct fast_entry *fast_lookup(struct eml_fast_state *fs,
                                      const int64_t *key)
{
    for (int i = 0; i < FAST_CACHE_SLOTS; i++) {
        struct fast_entry *e = &fs->cache[i];
        if (e->used != 0 &&
            memcmp(e->key, key, sizeof(e->key)) == 0) {
            e->used = ++fs->tick;
            return e;
        }
    }
    return NULL;
}

/* An empty slot, or the least recently used one, emptied. */
static struct fast_entry *fast_slot(struct eml_fast_state *fs)
{
    struct fast_entry *victim = &fs->cache[0];
    for (int i = 0; i < FAST_CACHE_SLOTS; i++) {
        struct fast_entry *e = &fs->cache[i];
        if (e->used == 0)
            return e;
        if (e->used < victim->used)
            victim = e;
    }
    fast_entry_clear(victim);
    return victim;
}

/* Fills a cache slot from a primitive descriptor (which the caller still
 * owns and destroys).  On failure the slot is left empty. */
eml_status fast_entry_build(struct eml_fast_state *fs,
                                   const int64_t *key,
                                   const_dnnl_primitive_desc_t pd,
                                   const int *arg_ids, int nargs,
                                   struct fast_entry **out)
{
    struct fast_entry *e = fast_slot(fs);
    for (int i = 0; i < nargs; i++) {
        const dnnl_memory_desc_t *md =
            dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md,
                                         arg_ids[i]);
        e->args[i].arg = arg_ids[i];
        e->nargs = i + 1;
        if (md == NULL ||
            dnnl_memory_create(&e->args[i].memory, md, fs->engine,
                               DNNL_MEMORY_NONE) != dnnl_success) {
            e->args[i].memory = NULL;
            goto fail;
        }
    }
    if (dnnl_primitive_create(&e->prim, pd) != dnnl_success) {
        e->prim = NULL;
        goto fail;
    }
    memcpy(e->key, key, sizeof(e->key));
    e->used = ++fs->tick;
    *out = e;
    return EML_OK;
fail:
    fast_entry_clear(e);
    return EML_ERR_BACKEND;
}

/* Points the entry's memories at the caller's buffers and runs it.  The
 * pointers are only borrowed for this call. */
eml_status fast_entry_run(struct eml_fast_state *fs,
                                 struct fast_entry *e, void *const *ptrs)
{
    for (int i = 0; i < e->nargs; i++)
        if (dnnl_memory_set_data_handle(e->args[i].memory, ptrs[i]) !=
            dnnl_success)
            return EML_ERR_BACKEND;
    dnnl_exec_arg_t args[FAST_MAX_ARGS + 1];
    int n = e->nargs;
    memcpy(args, e->args, (size_t)n * sizeof(args[0]));
    if (e->owned != NULL) {
        args[n].arg = e->owned_arg;
        args[n++].memory = e->owned;
    }
    if (dnnl_primitive_execute(e->prim, fs->stream, n, args) !=
        dnnl_success)
        return EML_ERR_BACKEND;
    if (dnnl_stream_wait(fs->stream) != dnnl_success)
        return EML_ERR_BACKEND;
    return EML_OK;
}

static eml_status fast_state_new(eml_kstate **out)
{
    if (out == NULL)
        return EML_ERR_INVALID;
    *out = NULL;
    eml_status st = EML_ERR_NOMEM;
    eml_kstate *ks = calloc(1, sizeof(*ks));
    struct eml_fast_state *fs = calloc(1, sizeof(*fs));
    if (ks == NULL || fs == NULL)
        goto out;
    st = EML_ERR_BACKEND;
    if (dnnl_engine_create(&fs->engine, dnnl_cpu, 0) != dnnl_success) {
        fs->engine = NULL;
        goto out;
    }
    if (dnnl_stream_create(&fs->stream, fs->engine,
                           dnnl_stream_default_flags) != dnnl_success) {
        fs->stream = NULL;
        goto out;
    }
    ks->kind = EML_KERNELS_FAST;
    ks->fast = fs;
    *out = ks;
    return EML_OK;
out:
    if (fs != NULL && fs->engine != NULL)
        dnnl_engine_destroy(fs->engine);
    free(fs);
    free(ks);
    return st;
}

static void fast_state_free(eml_kstate *ks)
{
    if (ks == NULL)
        return;
    struct eml_fast_state *fs = ks->fast;
    if (fs != NULL) {
        for (int i = 0; i < FAST_CACHE_SLOTS; i++)
            fast_entry_clear(&fs->cache[i]);
        if (fs->stream != NULL)
            dnnl_stream_destroy(fs->stream);
        if (fs->engine != NULL)
            dnnl_engine_destroy(fs->engine);
        free(fs);
    }
    free(ks);
}

/* ==== gemm ==== */

/* dnnl_sgemm is row-major with the same meaning of lda/ldb/ldc as our
 * interface, so the arguments map one to one; a batched descriptor is one
 * call per product.  K == 0 leaves C = beta * C, done here (oneDNN is kept
 * out of the corner case).  Arguments were checked by eml_gemm(). */
/* s8 x s8 -> s32 through oneDNN (VNNI where the CPU has it; exact). */
static eml_status fast_gemm_s8(const eml_gemm_desc *g)
{
    if (g->alpha != 1.0f || g->beta != 0.0f) return EML_ERR_UNSUPPORTED;
    const int32_t co = 0;
    for (int i = 0; i < g->count; i++) {
        size_t k = (size_t)i;
        int32_t *C = (int32_t *)g->C + k * g->stride_c;
        if (g->K == 0) {
            for (int r = 0; r < g->M; r++)
                memset(C + (size_t)r * (size_t)g->ldc, 0,
                       (size_t)g->N * sizeof(int32_t));
            continue;
        }
        dnnl_status_t r = dnnl_gemm_s8s8s32(
            g->trans_a ? 'T' : 'N', g->trans_b ? 'T' : 'N', 'F', g->M, g->N,
            g->K, 1.0f, (const int8_t *)g->A + k * g->stride_a, g->lda, 0,
            (const int8_t *)g->B + k * g->stride_b, g->ldb, 0, 0.0f, C,
            g->ldc, &co);
        if (r != dnnl_success) return EML_ERR_BACKEND;
    }
    return EML_OK;
}

/* bf16 x bf16 -> f32 through oneDNN's matmul (AVX-512 BF16 where the
 * CPU has it), one cached primitive per shape and layout. */
static eml_status fast_gemm_bf16(struct eml_fast_state *fs,
                                 const eml_gemm_desc *g)
{
    if (fs == NULL || g->alpha != 1.0f || g->beta != 0.0f || g->K == 0)
        return EML_ERR_UNSUPPORTED;
    int64_t key[FAST_KEY_LEN] = {FAST_OP_MATMUL_BF16, g->M, g->N,
                                 g->K, g->lda, g->ldb, g->ldc,
                                 g->trans_a, g->trans_b};
    struct fast_entry *e = fast_lookup(fs, key);
    if (e == NULL) {
        dnnl_dims_t a = {g->M, g->K}, b = {g->K, g->N}, c = {g->M, g->N};
        dnnl_dims_t as = {g->trans_a ? 1 : g->lda, g->trans_a ? g->lda : 1};
        dnnl_dims_t bs = {g->trans_b ? 1 : g->ldb, g->trans_b ? g->ldb : 1};
        dnnl_dims_t cs = {g->ldc, 1};
        dnnl_memory_desc_t amd, bmd, cmd;
        dnnl_matmul_desc_t d;
        dnnl_primitive_desc_t pd = NULL;
        if (dnnl_memory_desc_init_by_strides(&amd, 2, a, dnnl_bf16, as) !=
                dnnl_success ||
            dnnl_memory_desc_init_by_strides(&bmd, 2, b, dnnl_bf16, bs) !=
                dnnl_success ||
            dnnl_memory_desc_init_by_strides(&cmd, 2, c, dnnl_f32, cs) !=
                dnnl_success ||
            dnnl_matmul_desc_init(&d, &amd, &bmd, NULL, &cmd) !=
                dnnl_success ||
            dnnl_primitive_desc_create(&pd, &d, NULL, fs->engine, NULL) !=
                dnnl_success)
            return EML_ERR_BACKEND;
        static const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS,
                                  DNNL_ARG_DST};
        eml_status st = fast_entry_build(fs, key, pd, ids, 3, &e);
        dnnl_primitive_desc_destroy(pd);
        if (st != EML_OK) return st;
    }
    for (int i = 0; i < g->count; i++) {
        size_t k = (size_t)i;
        void *ptrs[] = {(uint16_t *)(uintptr_t)g->A + k * g->stride_a,
                        (uint16_t *)(uintptr_t)g->B + k * g->stride_b,
                        (float *)g->C + k * g->stride_c};
        eml_status st = fast_entry_run(fs, e, ptrs);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

static eml_status fast_gemm(void *ctx, const eml_gemm_desc *g)
{
    if (g->dtype == EML_DTYPE_S8)
        return fast_gemm_s8(g);
    if (g->dtype == EML_DTYPE_BF16)
        return fast_gemm_bf16(fast_of(ctx), g);
    if (g->dtype != EML_DTYPE_F32)
        return EML_ERR_UNSUPPORTED;
    for (int i = 0; i < g->count; i++) {
        size_t k = (size_t)i;
        float *C = (float *)g->C + k * g->stride_c;
        if (g->K == 0) {
            for (int r = 0; r < g->M; r++)
                for (int j = 0; j < g->N; j++) {
                    float *c = C + (size_t)r * (size_t)g->ldc + (size_t)j;
                    *c = g->beta == 0.0f ? 0.0f : g->beta * *c;
                }
            continue;
        }
        dnnl_status_t r = dnnl_sgemm(
            g->trans_a ? 'T' : 'N', g->trans_b ? 'T' : 'N', g->M, g->N, g->K,
            g->alpha, (const float *)g->A + k * g->stride_a, g->lda,
            (const float *)g->B + k * g->stride_b, g->ldb, g->beta, C,
            g->ldc);
        if (r != dnnl_success) return EML_ERR_BACKEND;
    }
    return EML_OK;
}

/* ==== activations ==== */

/* Forward algorithm, backward algorithm (through dst) and alpha. */
static int act_algs(eml_act a, dnnl_alg_kind_t *fwd, dnnl_alg_kind_t *bwd,
                    float *alpha)
{
    *alpha = 0.0f;
    switch (a) {
    case EML_ACT_RELU:
        *fwd = dnnl_eltwise_relu;
        *bwd = dnnl_eltwise_relu_use_dst_for_bwd;
        return 1;
    case EML_ACT_LEAKY:
        *fwd = dnnl_eltwise_relu;
        *bwd = dnnl_eltwise_relu_use_dst_for_bwd;
        *alpha = EML_LEAKY_SLOPE;
        return 1;
    case EML_ACT_TANH:
        *fwd = dnnl_eltwise_tanh;
        *bwd = dnnl_eltwise_tanh_use_dst_for_bwd;
        return 1;
    case EML_ACT_LOGISTIC:
        *fwd = dnnl_eltwise_logistic;
        *bwd = dnnl_eltwise_logistic_use_dst_for_bwd;
        return 1;
    default:
        return 0;
    }
}

static eml_status fast_act_forward(eml_kstate *ks, float *x, size_t n,
                                   eml_act a)
{
    struct eml_fast_state *fs = fast_of(ks);
    if (fs == NULL || (int)a < 0 || a >= EML_ACT_COUNT ||
        (x == NULL && n > 0))
        return EML_ERR_INVALID;
    if (a == EML_ACT_LINEAR || n == 0)
        return EML_OK;
    if (n > (size_t)INT64_MAX)
        return EML_ERR_RANGE;
    dnnl_alg_kind_t f0, b0;
    float a0;
    if (!act_algs(a, &f0, &b0, &a0)) /* none in oneDNN: the plain loop */
        return eml_ref_act_forward(ks, x, n, a);

    int64_t key[FAST_KEY_LEN] = {FAST_OP_ACT_FWD, (int64_t)a, (int64_t)n};
    struct fast_entry *e = fast_lookup(fs, key);
    if (e == NULL) {
        dnnl_alg_kind_t fwd, bwd;
        float alpha;
        (void)act_algs(a, &fwd, &bwd, &alpha);
        dnnl_dims_t dims = {(dnnl_dim_t)n};
        dnnl_memory_desc_t md;
        dnnl_eltwise_desc_t d;
        dnnl_primitive_desc_t pd = NULL;
        if (dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_f32, dnnl_a) !=
                dnnl_success ||
            dnnl_eltwise_forward_desc_init(&d, dnnl_forward_training, fwd,
                                           &md, alpha, 0.0f) !=
                dnnl_success ||
            dnnl_primitive_desc_create(&pd, &d, NULL, fs->engine, NULL) !=
                dnnl_success)
            return EML_ERR_BACKEND;
        static const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
        eml_status st = fast_entry_build(fs, key, pd, ids, 2, &e);
        dnnl_primitive_desc_destroy(pd);
        if (st != EML_OK)
            return st;
    }
    void *ptrs[] = {x, x}; /* in place */
    return fast_entry_run(fs, e, ptrs);
}

static eml_status fast_act_backward(eml_kstate *ks, float *delta,
                                    const float *y, size_t n, eml_act a)
{
    struct eml_fast_state *fs = fast_of(ks);
    if (fs == NULL || (int)a < 0 || a >= EML_ACT_COUNT ||
        ((delta == NULL || y == NULL) && n > 0))
        return EML_ERR_INVALID;
    if (a == EML_ACT_LINEAR || n == 0)
        return EML_OK;
    if (n > (size_t)INT64_MAX)
        return EML_ERR_RANGE;
    dnnl_alg_kind_t f0, b0;
    float a0;
    if (!act_algs(a, &f0, &b0, &a0))
        return eml_ref_act_backward(ks, delta, y, n, a);

    int64_t key[FAST_KEY_LEN] = {FAST_OP_ACT_BWD, (int64_t)a, (int64_t)n};
    struct fast_entry *e = fast_lookup(fs, key);
    if (e == NULL) {
        dnnl_alg_kind_t fwd, bwd;
        float alpha;
        (void)act_algs(a, &fwd, &bwd, &alpha);
        dnnl_dims_t dims = {(dnnl_dim_t)n};
        dnnl_memory_desc_t md;
        dnnl_eltwise_desc_t fd, bd;
        dnnl_primitive_desc_t hint = NULL, pd = NULL;
        eml_status st = EML_ERR_BACKEND;
        if (dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_f32, dnnl_a) !=
                dnnl_success ||
            dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, bwd,
                                           &md, alpha, 0.0f) !=
                dnnl_success ||
            dnnl_primitive_desc_create(&hint, &fd, NULL, fs->engine,
                                       NULL) != dnnl_success)
            goto out;
        if (dnnl_eltwise_backward_desc_init(&bd, bwd, &md, &md, alpha,
                                            0.0f) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &bd, NULL, fs->engine, hint) !=
                dnnl_success)
            goto out;
        static const int ids[] = {DNNL_ARG_DST, DNNL_ARG_DIFF_DST,
                                  DNNL_ARG_DIFF_SRC};
        st = fast_entry_build(fs, key, pd, ids, 3, &e);
    out:
        if (pd != NULL)
            dnnl_primitive_desc_destroy(pd);
        if (hint != NULL)
            dnnl_primitive_desc_destroy(hint);
        if (st != EML_OK)
            return st;
    }
    void *ptrs[] = {(void *)(uintptr_t)y, delta, delta}; /* in place */
    return fast_entry_run(fs, e, ptrs);
}

/* ==== pooling ==== */

/* oneDNN wants explicit bottom/right padding consistent with the output
 * size: pad_b = (out_h-1)*stride + size_h - in_h - pad_t.  It cannot express
 * a negative one (window stops short of the edge) and we do not hand it a
 * window lying wholly in padding; those shapes take the reference path. */
static int pool_pads(const eml_pool_shape *s, dnnl_dims_t pad_l,
                     dnnl_dims_t pad_r)
{
    int64_t pb = (int64_t)(s->out_h - 1) * s->stride + s->size_h - s->in_h -
                 s->pad_t;
    int64_t pr = (int64_t)(s->out_w - 1) * s->stride + s->size_w - s->in_w -
                 s->pad_l;
    if (pb < 0 || pr < 0 || pb >= s->size_h || pr >= s->size_w ||
        s->pad_t >= s->size_h || s->pad_l >= s->size_w)
        return 0;
    pad_l[0] = s->pad_t;
    pad_l[1] = s->pad_l;
    pad_r[0] = pb;
    pad_r[1] = pr;
    return 1;
}

static void pool_key(int64_t *key, enum fast_op op, const eml_pool_shape *s)
{
    int64_t k[FAST_KEY_LEN] = {op,        s->batch,  s->c,      s->in_h,
                               s->in_w,   s->out_h,  s->out_w,  s->size_h,
                               s->size_w, s->stride, s->pad_t,  s->pad_l};
    memcpy(key, k, sizeof(k));
}

/* Forward (training) pooling descriptor; also the hint for backward. */
static eml_status pool_fwd_pd(dnnl_engine_t engine, const eml_pool_shape *s,
                              dnnl_alg_kind_t alg,
                              dnnl_primitive_desc_t *out)
{
    dnnl_dims_t pl, pr;
    if (!pool_pads(s, pl, pr))
        return EML_ERR_UNSUPPORTED;
    dnnl_dims_t src_dims = {s->batch, s->c, s->in_h, s->in_w};
    dnnl_dims_t dst_dims = {s->batch, s->c, s->out_h, s->out_w};
    dnnl_dims_t strides = {s->stride, s->stride};
    dnnl_dims_t kernel = {s->size_h, s->size_w};
    dnnl_dims_t dilation = {0, 0}; /* oneDNN counts dilation from 0 */
    dnnl_memory_desc_t src, dst;
    dnnl_pooling_v2_desc_t d;
    *out = NULL;
    if (dnnl_memory_desc_init_by_tag(&src, 4, src_dims, dnnl_f32,
                                     dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&dst, 4, dst_dims, dnnl_f32,
                                     dnnl_nchw) != dnnl_success ||
        dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_training, alg,
                                          &src, &dst, strides, kernel,
                                          dilation, pl, pr) != dnnl_success ||
        dnnl_primitive_desc_create(out, &d, NULL, engine, NULL) !=
            dnnl_success) {
        *out = NULL;
        return EML_ERR_BACKEND;
    }
    return EML_OK;
}

static eml_status pool_bwd_pd(dnnl_engine_t engine, const eml_pool_shape *s,
                              dnnl_alg_kind_t alg,
                              const_dnnl_primitive_desc_t hint,
                              dnnl_primitive_desc_t *out)
{
    dnnl_dims_t pl, pr;
    if (!pool_pads(s, pl, pr))
        return EML_ERR_UNSUPPORTED;
    dnnl_dims_t src_dims = {s->batch, s->c, s->in_h, s->in_w};
    dnnl_dims_t dst_dims = {s->batch, s->c, s->out_h, s->out_w};
    dnnl_dims_t strides = {s->stride, s->stride};
    dnnl_dims_t kernel = {s->size_h, s->size_w};
    dnnl_dims_t dilation = {0, 0};
    dnnl_memory_desc_t dsrc, ddst;
    dnnl_pooling_v2_desc_t d;
    *out = NULL;
    if (dnnl_memory_desc_init_by_tag(&dsrc, 4, src_dims, dnnl_f32,
                                     dnnl_nchw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&ddst, 4, dst_dims, dnnl_f32,
                                     dnnl_nchw) != dnnl_success ||
        dnnl_pooling_v2_backward_desc_init(&d, alg, &dsrc, &ddst, strides,
                                           kernel, dilation, pl,
                                           pr) != dnnl_success ||
        dnnl_primitive_desc_create(out, &d, NULL, engine, hint) !=
            dnnl_success) {
        *out = NULL;
        return EML_ERR_BACKEND;
    }
    return EML_OK;
}

/* Builds (or finds) the forward or backward pooling primitive of shape s. */
static eml_status pool_entry(struct eml_fast_state *fs, enum fast_op op,
                             const eml_pool_shape *s, struct fast_entry **out)
{
    int64_t key[FAST_KEY_LEN];
    pool_key(key, op, s);
    *out = fast_lookup(fs, key);
    if (*out != NULL)
        return EML_OK;

    int is_max = op == FAST_OP_MAXPOOL_FWD || op == FAST_OP_MAXPOOL_BWD;
    int is_fwd = op == FAST_OP_MAXPOOL_FWD || op == FAST_OP_AVGPOOL_FWD;
    dnnl_alg_kind_t alg =
        is_max ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    static const int max_fwd[] = {DNNL_ARG_SRC, DNNL_ARG_DST,
                                  DNNL_ARG_WORKSPACE};
    static const int max_bwd[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WORKSPACE,
                                  DNNL_ARG_DIFF_SRC};
    static const int avg_fwd[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    static const int avg_bwd[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
    const int *ids = is_max ? (is_fwd ? max_fwd : max_bwd)
                            : (is_fwd ? avg_fwd : avg_bwd);
    int nargs = is_max ? 3 : 2;

    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    eml_status st = pool_fwd_pd(fs->engine, s, alg, &fpd);
    if (st == EML_OK && !is_fwd)
        st = pool_bwd_pd(fs->engine, s, alg, fpd, &bpd);
    if (st == EML_OK)
        st = fast_entry_build(fs, key, is_fwd ? fpd : bpd, ids, nargs, out);
    if (bpd != NULL)
        dnnl_primitive_desc_destroy(bpd);
    if (fpd != NULL)
        dnnl_primitive_desc_destroy(fpd);
    return st;
}

/* Shapes oneDNN's pooling cannot express (a window running past the
 * bottom or right edge by more than its padding allows) run on the
 * reference table instead: the net picks it for that layer, and says so. */
static int fast_pool_supported(const eml_pool_shape *s)
{
    dnnl_dims_t pl, pr;
    return pool_pads(s, pl, pr);
}

static eml_status fast_avgpool_forward(eml_kstate *ks, float *out,
                                       const float *in,
                                       const eml_pool_shape *s)
{
    struct eml_fast_state *fs = fast_of(ks);
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK)
        return st;
    if (fs == NULL || out == NULL || in == NULL)
        return EML_ERR_INVALID;
    dnnl_dims_t pl, pr;
    if (!pool_pads(s, pl, pr))
        return EML_ERR_UNSUPPORTED; /* see fast_pool_supported */
    struct fast_entry *e;
    if ((st = pool_entry(fs, FAST_OP_AVGPOOL_FWD, s, &e)) != EML_OK)
        return st;
    void *ptrs[] = {(void *)(uintptr_t)in, out};
    return fast_entry_run(fs, e, ptrs);
}

static eml_status fast_avgpool_backward(eml_kstate *ks, float *din,
                                        const float *dout,
                                        const eml_pool_shape *s)
{
    struct eml_fast_state *fs = fast_of(ks);
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK)
        return st;
    if (fs == NULL || din == NULL || dout == NULL)
        return EML_ERR_INVALID;
    dnnl_dims_t pl, pr;
    if (!pool_pads(s, pl, pr))
        return EML_ERR_UNSUPPORTED; /* see fast_pool_supported */
    struct fast_entry *e;
    if ((st = pool_entry(fs, FAST_OP_AVGPOOL_BWD, s, &e)) != EML_OK)
        return st;
    void *ptrs[] = {(void *)(uintptr_t)dout, din};
    return fast_entry_run(fs, e, ptrs);
}

/* ==== softmax ==== */

static eml_status fast_softmax_forward(eml_kstate *ks, float *out,
                                       const float *in, int batch, int n)
{
    struct eml_fast_state *fs = fast_of(ks);
    if (fs == NULL || batch < 0 || n < 0)
        return EML_ERR_INVALID;
    if (batch == 0 || n == 0)
        return EML_OK;
    if (out == NULL || in == NULL || out == in)
        return EML_ERR_INVALID;

    int64_t key[FAST_KEY_LEN] = {FAST_OP_SOFTMAX_FWD, batch, n};
    struct fast_entry *e = fast_lookup(fs, key);
    if (e == NULL) {
        dnnl_dims_t dims = {batch, n};
        dnnl_memory_desc_t md;
        dnnl_softmax_v2_desc_t d;
        dnnl_primitive_desc_t pd = NULL;
        if (dnnl_memory_desc_init_by_tag(&md, 2, dims, dnnl_f32, dnnl_ab) !=
                dnnl_success ||
            dnnl_softmax_v2_forward_desc_init(&d, dnnl_forward_inference,
                                              dnnl_softmax_accurate, &md,
                                              &md, 1) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &d, NULL, fs->engine, NULL) !=
                dnnl_success)
            return EML_ERR_BACKEND;
        static const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_DST};
        eml_status st = fast_entry_build(fs, key, pd, ids, 2, &e);
        dnnl_primitive_desc_destroy(pd);
        if (st != EML_OK)
            return st;
    }
    void *ptrs[] = {(void *)(uintptr_t)in, out};
    return fast_entry_run(fs, e, ptrs);
}

/* ==== the table ==== */

const eml_kernels eml_kernels_fast_table = {
    .name = "fast",
    .kind = EML_KERNELS_FAST,
    .state_new = fast_state_new,
    .state_free = fast_state_free,
    .gemm = fast_gemm,
    .act_forward = fast_act_forward,
    .act_backward = fast_act_backward,
    .pool_supported = fast_pool_supported,
    /* max pooling: the reference's, in parallel (fast_pool.c) */
    .maxpool_ws_bytes = eml_ref_maxpool_ws_bytes,
    .maxpool_forward = eml_fast_maxpool_forward,
    .maxpool_backward = eml_fast_maxpool_backward,
    .avgpool_forward = fast_avgpool_forward,
    .avgpool_backward = fast_avgpool_backward,
    .softmax_forward = fast_softmax_forward,
    .im2col = eml_fast_im2col,
    .col2im = eml_fast_col2im,
    .qconv = eml_fast_qconv,
};
