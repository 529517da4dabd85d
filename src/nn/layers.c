/*
 * layers.c - each layer's forward and backward pass over flat buffers:
 * connected, convolution, pooling geometry, dropout, scattering.  Every
 * numeric op goes through the kernel table, every matrix product through
 * the GEMM dispatch point with a descriptor naming the layer, the pass,
 * the weight operand and its version.  Convolutions are im2col + GEMM over
 * the whole batch; per-example weight gradients (DP-SGD needs their norms)
 * are one batched product per layer.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "nn/net_internal.h"

/* ==== the layers' matrix products ==== */

/* One product of layer l, described for the GEMM dispatch point: which
 * pass, which operand is the weight, and the weights' version. */
static eml_status layer_gemm(eml_net *net, const layer *l,
                             eml_gemm_pass pass, eml_gemm_weight weight,
                             int ta, int tb, int M, int N, int K,
                             const float *A, int lda, const float *B, int ldb,
                             float beta, float *C, int ldc)
{
    eml_gemm_desc g = eml_gemm_desc_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb,
                                        beta, C, ldc);
    g.layer = l->index;
    g.pass = pass;
    g.weight = weight;
    g.weight_version = net->wversion;
    return eml_gemm(&net->gemm, &g);
}

/* ==== connected ==== */

eml_status eml_layer_connected_forward(eml_net *net, layer *l, const float *in,
                                    int n)
{
    /* out (n, out) = in (n, in) * w^T (in, out) */
    eml_status st =
        net->precision == EML_PREC_INT8 && l->wq != NULL
            ? eml_quant_connected_product(net, l, in, n)
        : net->precision == EML_PREC_BF16 && l->wbf != NULL
            ? eml_bf16_connected_product(net, l, in, n)
            : layer_gemm(net, l, EML_GEMM_FORWARD, EML_GEMM_WEIGHT_B, 0, 1,
                         n, (int)l->n_out, (int)l->n_in, in, (int)l->n_in,
                         l->wt, (int)l->n_in, 0.0f, l->out, (int)l->n_out);
    if (st != EML_OK) return st;
    for (int b = 0; b < n; b++) {
        float *o = l->out + (size_t)b * l->n_out;
        for (size_t j = 0; j < l->n_out; j++) o[j] += l->b[j];
    }
    return net->k->act_forward(net->ks, l->out, (size_t)n * l->n_out, l->act);
}

eml_status eml_layer_connected_backward(eml_net *net, layer *l, const float *in,
                                     float *din, int n, float *sqnorm,
                                     int sums)
{
    size_t no = l->n_out, ni = l->n_in;
    eml_status st =
        net->k->act_backward(net->ks, l->delta, l->out, (size_t)n * no, l->act);
    if (st != EML_OK) return st;
    if (sums) {
        for (int b = 0; b < n; b++) {
            const float *d = l->delta + (size_t)b * no;
            for (size_t j = 0; j < no; j++) l->db[j] += d[j];
        }
        /* dw (out, in) += delta^T (out, n) * in (n, in) */
        st = layer_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT, 1,
                        0, (int)no, (int)ni, n, l->delta, (int)no, in,
                        (int)ni, 1.0f, l->dw, (int)ni);
        if (st != EML_OK) return st;
    }
    if (sqnorm != NULL) {
        /* One example's weight gradient is the outer product delta_b x_b^T,
         * so its squared norm is |delta_b|^2 |x_b|^2 (+ |delta_b|^2 for the
         * bias). */
#pragma omp parallel for schedule(static) if ((size_t)n * (no + ni) > 65536)
        for (int b = 0; b < n; b++) {
            const float *d = l->delta + (size_t)b * no;
            const float *x = in + (size_t)b * ni;
            double dd = 0, xx = 0;
#pragma omp simd reduction(+ : dd)
            for (size_t j = 0; j < no; j++) dd += (double)d[j] * d[j];
#pragma omp simd reduction(+ : xx)
            for (size_t j = 0; j < ni; j++) xx += (double)x[j] * x[j];
            sqnorm[b] += (float)(dd * (xx + 1.0));
        }
    }
    if (din == NULL) return EML_OK;
    /* din (n, in) = delta (n, out) * w (out, in) */
    return layer_gemm(net, l, EML_GEMM_INPUT_GRAD, EML_GEMM_WEIGHT_B, 0, 0,
                      n, (int)ni, (int)no, l->delta, (int)no, l->wt,
                      (int)ni, 0.0f, din, (int)ni);
}

eml_status eml_layer_connected_clipped(eml_net *net, layer *l,
                                       const float *in, int n, const float *s)
{
    size_t no = l->n_out, ni = l->n_in;
    for (int b = 0; b < n; b++) {
        float *d = l->delta + (size_t)b * no;
        for (size_t j = 0; j < no; j++) {
            d[j] *= s[b];
            l->db[j] += d[j];
        }
    }
    /* dw (out, in) += (s delta)^T (out, n) * in (n, in) */
    return layer_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT, 1, 0,
                      (int)no, (int)ni, n, l->delta, (int)no, in, (int)ni,
                      1.0f, l->dw, (int)ni);
}

/* ==== convolutional ==== */

/* A batch's column matrices sit side by side in one wide matrix
 * col (ckk, n*hw), so each pass is one large GEMM: out' (f, n*hw) =
 * w (f, ckk) * col.  out' is then reordered to (n, f, hw) with the bias
 * added.  Example b owns columns [b*hw, (b+1)*hw), which is also how its
 * own weight gradient is formed for per-example norms.
 *
 * A dispatch with a conv entry (an outsourcing client) takes the three
 * products whole, by their tensors: the columns are then formed only when
 * per-example gradients (DP-SGD) need them. */

static eml_conv_shape conv_shape(const layer *l, int n)
{
    eml_conv_shape s = {l->c,      l->h,     l->w,     l->size, l->stride,
                        l->pad,    l->out_h, l->out_w,
                        (size_t)n * (size_t)l->out_h * (size_t)l->out_w};
    return s;
}

/* The descriptor of one of the three products, for the dispatch's conv
 * entry. */
static eml_conv_desc conv_desc(const eml_net *net, const layer *l,
                               eml_gemm_pass pass, int n, const float *x,
                               float *out)
{
    eml_conv_desc c;
    memset(&c, 0, sizeof(c));
    c.layer = l->index;
    c.pass = pass;
    c.weight_version = net->wversion;
    c.shape = conv_shape(l, 1);
    c.shape.ld = 0;
    c.batch = n;
    c.f = l->out_c;
    c.w = l->wt;
    c.x = x;
    c.d = l->wide;
    c.out = out;
    return c;
}

/* Whether the dispatch takes this product by its tensors. */
static int conv_whole(eml_net *net, const eml_conv_desc *c)
{
    eml_gemm_dispatch *d = &net->gemm;
    return d->conv != NULL &&
           (d->conv_takes == NULL || d->conv_takes(d->ctx, c));
}

/* The batch's columns of in into l->col. */
static void conv_columns(eml_net *net, layer *l, const float *in, int n)
{
    eml_conv_shape s = conv_shape(l, n);
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    /* Examples are independent: each thread fills its own columns. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        net->k->im2col(l->col + (size_t)b * hw, in + (size_t)b * l->n_in, &s);
    l->col_ready = 1;
    l->col_chunk = 0;
}

/* ==== chunks ====
 *
 * With the net's own products (no outsourcing dispatch), an fp32
 * convolution goes through the batch in chunks of a few examples: each
 * chunk's columns are formed and multiplied while they are in cache, the
 * chunks in parallel, each product on one thread; the input gradient's
 * columns likewise go back into the image right after their product.  A
 * whole batch's columns (29 MB for fmnist-cnn's second convolution at
 * batch 128) would make the round trip through memory each time.
 *
 * A chunk's columns are about 1 MiB and the number of chunks a multiple of
 * four: the chunking depends on the shapes only, so the weight gradient,
 * summed chunk by chunk in order, is the same on any number of threads.
 * Chunk c holds examples [c k, c k + m) as one (ckk, m hw) matrix at
 * l->col + c k ckk hw (likewise l->dcol). */

#define CONV_CHUNK_BYTES ((size_t)1 << 20)
#define CONV_PART_BYTES ((size_t)8 << 20) /* chunk partials above: summed
                                              by one product at a time */

static int conv_chunk(const layer *l, int n)
{
    size_t per = (size_t)l->c * (size_t)l->size * (size_t)l->size *
                 (size_t)l->out_h * (size_t)l->out_w * sizeof(float);
    size_t chunks = ((size_t)n * per + CONV_CHUNK_BYTES - 1) /
                    CONV_CHUNK_BYTES;
    chunks = (chunks + 3) / 4 * 4;
    if (chunks > (size_t)n) chunks = (size_t)n;
    return (int)(((size_t)n + chunks - 1) / chunks);
}

static int own_products(const eml_net *net)
{
    return net->gemm.fn == net->k->gemm && net->gemm.conv == NULL;
}

/* Chunk c of a batch of n in chunks of k: first example, examples. */
static int chunk_span(int c, int k, int n, int *m)
{
    int b0 = c * k;
    *m = n - b0 < k ? n - b0 : k;
    return b0;
}

static size_t ckk_hw(const layer *l)
{
    return (size_t)l->c * (size_t)l->size * (size_t)l->size *
           (size_t)l->out_h * (size_t)l->out_w;
}

/* One product of a chunk on this thread: the table's GEMM, which the
 * dispatch counts after the parallel loop. */
static eml_status chunk_gemm(eml_net *net, const layer *l, eml_gemm_pass pass,
                             eml_gemm_weight weight, int ta, int tb, int M,
                             int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc)
{
    eml_gemm_desc g = eml_gemm_desc_f32(ta, tb, M, N, K, 1.0f, A, lda, B, ldb,
                                        0.0f, C, ldc);
    g.layer = l->index;
    g.pass = pass;
    g.weight = weight;
    g.weight_version = net->wversion;
    return net->k->gemm(net->ks, &g);
}

static void count_products(eml_net *net, int calls, double flops)
{
    net->gemm.calls += (uint64_t)calls;
    net->gemm.flops += flops;
}

/* Examples [b0, b0 + m) of wide (f, ld) into out (n, f, hw), plus the
 * bias (batch norm at inference: its affine map), through the activation
 * when it is simple. */
static void conv_out_rows(layer *l, int b0, int m, size_t ld)
{
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    eml_act a = eml_act_is_simple(l->act) ? l->act : EML_ACT_LINEAR;
    for (int b = b0; b < b0 + m; b++) {
        float *o = l->out + (size_t)b * l->n_out;
        for (int j = 0; j < l->out_c; j++) {
            const float *src = l->wide + (size_t)j * ld + (size_t)b * hw;
            float *dst = o + (size_t)j * hw;
            float k = 1.0f, c = l->b[j];
            if (l->bn) eml_bn_affine(l, j, &k, &c); /* inference only */
            if (l->bn)
                for (size_t p = 0; p < hw; p++)
                    dst[p] = eml_act_simple(src[p] * k + c, a);
            else
                for (size_t p = 0; p < hw; p++)
                    dst[p] = eml_act_simple(src[p] + c, a);
        }
    }
}

/* Forward: columns and product of each chunk, into wide (f, n*hw); then,
 * without batch norm, the chunk's outputs. */
static eml_status conv_forward_chunked(eml_net *net, layer *l,
                                       const float *in, int n, int out_rows)
{
    int f = l->out_c, ckk = l->c * l->size * l->size, k = conv_chunk(l, n);
    int chunks = (n + k - 1) / k, failed = 0;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w, ld = (size_t)n * hw;
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < chunks; c++) {
        int m, b0 = chunk_span(c, k, n, &m);
        eml_conv_shape s = conv_shape(l, m);
        float *col = l->col + (size_t)b0 * ckk_hw(l);
        for (int b = 0; b < m; b++)
            net->k->im2col(col + (size_t)b * hw,
                           in + (size_t)(b0 + b) * l->n_in, &s);
        if (chunk_gemm(net, l, EML_GEMM_FORWARD, EML_GEMM_WEIGHT_A, 0, 0, f,
                       (int)s.ld, ckk, l->wt, ckk, col, (int)s.ld,
                       l->wide + (size_t)b0 * hw, (int)ld) != EML_OK)
            failed = 1;
        else if (out_rows && (!l->bn || !net->training))
            conv_out_rows(l, b0, m, ld);
    }
    count_products(net, chunks, 2.0 * f * (double)ckk * (double)ld);
    l->col_ready = 1;
    l->col_chunk = k;
    return failed ? EML_ERR_BACKEND : EML_OK;
}

/* Backward from wide (the product's gradient): the weight gradient, by
 * chunk partials summed in order (or, when those would be large, one
 * product per chunk in order), and the input gradient's columns of each
 * chunk back into din. */
static eml_status conv_backward_chunked(eml_net *net, layer *l,
                                        const float *in, float *din, int n)
{
    int f = l->out_c, ckk = l->c * l->size * l->size, k = conv_chunk(l, n);
    int chunks = (n + k - 1) / k, failed = 0;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w, ld = (size_t)n * hw;
    if (!l->col_ready || l->col_chunk != k) {
        eml_status st = conv_forward_chunked(net, l, in, n, 0); /* cols */
        if (st != EML_OK) return st;
    }
    size_t parts = (size_t)((net->max_batch + k - 1) / k) * l->n_w;
    int partial = parts * sizeof(float) <= CONV_PART_BYTES;
    if (partial && l->dw_part == NULL) {
        l->dw_part = eml_alloc_floats(parts);
        if (l->dw_part == NULL) return EML_ERR_NOMEM;
        net->bytes += parts * sizeof(float);
    }
    if (din != NULL) memset(din, 0, (size_t)n * l->n_in * sizeof(float));
#pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < chunks; c++) {
        int m, b0 = chunk_span(c, k, n, &m);
        eml_conv_shape s = conv_shape(l, m);
        const float *col = l->col + (size_t)b0 * ckk_hw(l);
        const float *d = l->wide + (size_t)b0 * hw;
        /* dw_c (f, ckk) = d_c (f, m*hw) * col_c^T (m*hw, ckk) */
        if (partial &&
            chunk_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT, 0,
                       1, f, ckk, (int)s.ld, d, (int)ld, col, (int)s.ld,
                       l->dw_part + (size_t)c * l->n_w, ckk) != EML_OK)
            failed = 1;
        if (din == NULL) continue;
        /* dcol_c (ckk, m*hw) = w^T (ckk, f) * d_c (f, m*hw) */
        float *dcol = l->dcol + (size_t)b0 * ckk_hw(l);
        if (chunk_gemm(net, l, EML_GEMM_INPUT_GRAD, EML_GEMM_WEIGHT_A, 1, 0,
                       ckk, (int)s.ld, f, l->wt, ckk, d, (int)ld, dcol,
                       (int)s.ld) != EML_OK)
            failed = 1;
        for (int b = 0; b < m; b++)
            net->k->col2im(din + (size_t)(b0 + b) * l->n_in,
                           dcol + (size_t)b * hw, &s);
    }
    if (failed) return EML_ERR_BACKEND;
    double flops = 2.0 * f * (double)ckk * (double)ld;
    count_products(net, chunks * (din != NULL ? 2 : 1),
                   flops * (din != NULL ? 2 : 1));
    if (partial) {
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < l->n_w; j++) {
            float acc = 0;
            for (int c = 0; c < chunks; c++)
                acc += l->dw_part[(size_t)c * l->n_w + j];
            l->dw[j] = acc;
        }
        return EML_OK;
    }
    for (int c = 0; c < chunks; c++) {
        int m, b0 = chunk_span(c, k, n, &m);
        eml_gemm_desc g = eml_gemm_desc_f32(
            0, 1, f, ckk, m * (int)hw, 1.0f, l->wide + (size_t)b0 * hw,
            (int)ld, l->col + (size_t)b0 * ckk_hw(l), m * (int)hw,
            c == 0 ? 0.0f : 1.0f, l->dw, ckk);
        g.layer = l->index;
        g.pass = EML_GEMM_WEIGHT_GRAD;
        eml_status st = eml_gemm(&net->gemm, &g);
        if (st != EML_OK) return st;
    }
    return EML_OK;
}

eml_status eml_layer_conv_forward(eml_net *net, layer *l, const float *in, int n)
{
    eml_conv_shape s = conv_shape(l, n);
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    int wide = (int)s.ld;
    eml_status st;
    eml_conv_desc cd = conv_desc(net, l, EML_GEMM_FORWARD, n, in, l->wide);
    if (net->precision == EML_PREC_INT8 && l->wq != NULL) {
        l->col_ready = 0;
        st = eml_quant_conv_product(net, l, in, n, s.ld);
    } else if (net->precision == EML_PREC_BF16 && l->wbf != NULL) {
        conv_columns(net, l, in, n);
        st = eml_bf16_conv_product(net, l, n, s.ld);
    } else if (conv_whole(net, &cd)) {
        l->col_ready = 0;
        st = eml_conv(&net->gemm, &cd);
    } else if (own_products(net)) {
        st = conv_forward_chunked(net, l, in, n, 1);
        if (st != EML_OK || (l->bn && net->training)) goto product_done;
        return eml_act_is_simple(l->act)
                   ? EML_OK
                   : net->k->act_forward(net->ks, l->out,
                                         (size_t)n * l->n_out, l->act);
    } else {
        conv_columns(net, l, in, n);
        st = layer_gemm(net, l, EML_GEMM_FORWARD, EML_GEMM_WEIGHT_A, 0, 0, f,
                        wide, ckk, l->wt, ckk, l->col, wide, 0.0f, l->wide,
                        wide);
    }
product_done:
    if (st != EML_OK) return st;
    if (l->bn) {
        eml_bn_forward(net, l, n, s.ld);
    } else {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < n; b++) conv_out_rows(l, b, 1, s.ld);
    }
    return eml_act_is_simple(l->act)
               ? EML_OK
               : net->k->act_forward(net->ks, l->out, (size_t)n * l->n_out,
                                     l->act);
}

/* Every example's own weight gradient, dw_b (f, ckk) = delta_b (f, hw) *
 * col_b^T (hw, ckk), in one batched product; then their squared norms,
 * and (sums) their sum in example order. */
static eml_status conv_per_example(eml_net *net, layer *l, const float *in,
                                   int n, float *sqnorm, int sums)
{
    if (!l->col_ready) conv_columns(net, l, in, n);
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)((size_t)n * hw);
    if (l->dw_ex == NULL) {
        size_t n_ex = eml_mul_size((size_t)net->max_batch, l->n_w);
        l->dw_ex = eml_alloc_floats(n_ex);
        if (l->dw_ex == NULL) return EML_ERR_NOMEM;
        net->bytes += n_ex * sizeof(float);
    }
    /* One batched product per chunk of the columns (one chunk: the whole
     * batch, when they are one matrix). */
    int k = l->col_chunk > 0 ? l->col_chunk : n;
    for (int c = 0; c * k < n; c++) {
        int m, b0 = chunk_span(c, k, n, &m);
        int ldb = l->col_chunk > 0 ? m * (int)hw : wide;
        eml_gemm_desc g = eml_gemm_desc_f32(
            0, 1, f, ckk, (int)hw, 1.0f, l->wide + (size_t)b0 * hw, wide,
            l->col + (size_t)b0 * ckk_hw(l), ldb, 0.0f,
            l->dw_ex + (size_t)b0 * l->n_w, ckk);
        g.layer = l->index;
        g.pass = EML_GEMM_PER_EXAMPLE;
        g.weight_version = net->wversion;
        g.count = m;
        g.stride_a = g.stride_b = hw;
        g.stride_c = l->n_w;
        eml_status st = eml_gemm(&net->gemm, &g);
        if (st != EML_OK) return st;
    }
    for (int b = 0; b < n; b++) {
        const float *ex = l->dw_ex + (size_t)b * l->n_w;
        double sq = 0;
        for (size_t j = 0; j < l->n_w; j++) {
            sq += (double)ex[j] * ex[j];
            if (sums) l->dw[j] += ex[j];
        }
        sqnorm[b] += (float)sq;
    }
    return EML_OK;
}

/* Sums in example order whatever the number of threads: each thread owns
 * its weights (or filters). */
void eml_layer_conv_clipped(layer *l, int n, const float *s)
{
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    size_t ld = (size_t)n * hw;
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < l->n_w; j++) {
        float acc = 0;
        for (int b = 0; b < n; b++)
            acc += s[b] * l->dw_ex[(size_t)b * l->n_w + j];
        l->dw[j] += acc;
    }
#pragma omp parallel for schedule(static)
    for (int j = 0; j < l->out_c; j++) {
        const float *d = l->wide + (size_t)j * ld;
        float total = 0;
        for (int b = 0; b < n; b++) {
            float sum = 0;
            for (size_t p = 0; p < hw; p++) sum += d[(size_t)b * hw + p];
            total += s[b] * sum;
        }
        l->db[j] += total;
    }
}

eml_status eml_layer_conv_backward(eml_net *net, layer *l, const float *in,
                                   float *din, int n, float *sqnorm,
                                   int sums)
{
    eml_conv_shape s = conv_shape(l, n);
    int f = l->out_c;
    int ckk = l->c * l->size * l->size;
    size_t hw = (size_t)l->out_h * (size_t)l->out_w;
    int wide = (int)s.ld;
    eml_conv_desc cd;
    /* A simple activation's derivative is applied on the way into wide;
     * another's by the table first. */
    int simple = eml_act_is_simple(l->act);
    eml_status st = simple ? EML_OK
                           : net->k->act_backward(net->ks, l->delta, l->out,
                                                  (size_t)n * l->n_out,
                                                  l->act);
    if (st != EML_OK) return st;
    eml_act a = simple ? l->act : EML_ACT_LINEAR;
    /* delta (n, f, hw) -> wide (f, n*hw).  Threads split the filters and
     * each sums its bias gradient over examples in order, so the result
     * does not depend on the number of threads. */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < f; j++) {
        float total = 0;
        for (int b = 0; b < n; b++) {
            size_t at = (size_t)b * l->n_out + (size_t)j * hw;
            const float *src = l->delta + at, *y = l->out + at;
            float *dst = l->wide + (size_t)j * s.ld + (size_t)b * hw;
            float sum = 0;
            for (size_t p = 0; p < hw; p++) {
                dst[p] = src[p] * eml_act_simple_grad(y[p], a);
                sum += dst[p];
            }
            total += sum;
        }
        if (sums) l->db[j] += total;
    }
    if (l->bn) /* wide: dL/dy -> dL/d(the product) */
        eml_bn_backward(net, l, n, s.ld);
    if (sqnorm != NULL) {
        for (int b = 0; b < n; b++) {
            double bias_sq = 0;
            for (int j = 0; j < f; j++) {
                const float *src = l->wide + (size_t)j * s.ld + (size_t)b * hw;
                float sum = 0;
                for (size_t p = 0; p < hw; p++) sum += src[p];
                bias_sq += (double)sum * sum;
            }
            sqnorm[b] += (float)bias_sq;
        }
    }
    if (sqnorm == NULL && own_products(net))
        return conv_backward_chunked(net, l, in, din, n);
    if (sqnorm != NULL) {
        st = conv_per_example(net, l, in, n, sqnorm, sums);
        if (st != EML_OK) return st;
    } else {
        /* dw (f, ckk) = delta' (f, n*hw) * col^T (n*hw, ckk) */
        cd = conv_desc(net, l, EML_GEMM_WEIGHT_GRAD, n, in, l->dw);
        if (conv_whole(net, &cd)) {
            st = eml_conv(&net->gemm, &cd);
        } else {
            if (!l->col_ready || l->col_chunk) conv_columns(net, l, in, n);
            st = layer_gemm(net, l, EML_GEMM_WEIGHT_GRAD, EML_GEMM_NO_WEIGHT,
                            0, 1, f, ckk, wide, l->wide, wide, l->col, wide,
                            0.0f, l->dw, ckk);
        }
        if (st != EML_OK) return st;
    }
    if (din == NULL) return EML_OK;
    cd = conv_desc(net, l, EML_GEMM_INPUT_GRAD, n, NULL, din);
    if (conv_whole(net, &cd)) return eml_conv(&net->gemm, &cd);
    /* dcol (ckk, n*hw) = w^T (ckk, f) * delta' (f, n*hw).  Not written over
     * the columns: a second backward pass (DP clipping) needs them. */
    st = layer_gemm(net, l, EML_GEMM_INPUT_GRAD, EML_GEMM_WEIGHT_A, 1, 0, ckk,
                    wide, f, l->wt, ckk, l->wide, wide, 0.0f, l->dcol, wide);
    if (st != EML_OK) return st;
    memset(din, 0, (size_t)n * l->n_in * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        net->k->col2im(din + (size_t)b * l->n_in, l->dcol + (size_t)b * hw, &s);
    return EML_OK;
}

/* ==== pooling ==== */

eml_pool_shape eml_layer_pool_shape(const layer *l, int n)
{
    eml_pool_shape s;
    s.batch = n;
    s.c = l->c;
    s.in_h = l->h;
    s.in_w = l->w;
    s.out_h = l->out_h;
    s.out_w = l->out_w;
    if (l->type == EML_LAYER_AVGPOOL && l->size == 0) {
        s.size_h = l->h;
        s.size_w = l->w;
        s.stride = 1;
        s.pad_t = s.pad_l = 0;
    } else if (l->type == EML_LAYER_MAXPOOL) {
        /* Darknet: padding is the total; top/left get padding/2. */
        s.size_h = s.size_w = l->size;
        s.stride = l->stride;
        s.pad_t = s.pad_l = l->pad / 2;
    } else {
        s.size_h = s.size_w = l->size;
        s.stride = l->stride;
        s.pad_t = s.pad_l = l->pad;
    }
    return s;
}

/* ==== dropout ==== */

void eml_layer_dropout_forward(eml_net *net, layer *l, const float *in, int n,
                            int train)
{
    size_t total = (size_t)n * l->n_out;
    if (!train || l->prob <= 0.0f) {
        memcpy(l->out, in, total * sizeof(float));
        if (l->mask != NULL) /* an inference net has none */
            for (size_t j = 0; j < total; j++) l->mask[j] = 1.0f;
        return;
    }
    float scale = 1.0f / (1.0f - l->prob);
    /* One draw from the net's generator per call, then a counter-based
     * stream: unit pair k gets splitmix64(base + k), each 32-bit half
     * deciding one unit (dropped when below prob * 2^32).  The mask is the
     * same whatever the number of threads. */
    uint64_t thresh = (uint64_t)((double)l->prob * 4294967296.0);
    uint64_t base = eml_rng_next(&net->rng);
    size_t pairs = (total + 1) / 2;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (size_t k = 0; k < pairs; k++) {
        uint64_t z = base + 0x9e3779b97f4a7c15ULL * (k + 1);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        size_t j = 2 * k;
        float m0 = (z & 0xffffffffu) < thresh ? 0.0f : scale;
        l->mask[j] = m0;
        l->out[j] = in[j] * m0;
        if (j + 1 < total) {
            float m1 = (z >> 32) < thresh ? 0.0f : scale;
            l->mask[j + 1] = m1;
            l->out[j + 1] = in[j + 1] * m1;
        }
    }
}


/* Each example's scattering features, one scratch area per thread. */
eml_status eml_layer_scatter_forward(layer *l, const float *in, int n)
{
    size_t scratch = eml_scatter_scratch_size(l->sc);
    int failed = 0;
#pragma omp parallel
    {
        void *ws = malloc(scratch);
        if (ws == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int b = 0; b < n; b++)
            if (ws != NULL)
                eml_scatter_forward(l->sc, in + (size_t)b * l->n_in,
                                    l->out + (size_t)b * l->n_out, ws);
        free(ws);
    }
    return failed ? EML_ERR_NOMEM : EML_OK;
}

