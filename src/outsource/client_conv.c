/*
 * client_conv.c - a convolution's three products sent by their tensors
 * (eml_conv_desc): the worker forms the im2col columns itself, so the
 * images and output gradients travel instead of columns size^2 times
 * larger, and the check (eml_freivalds_conv) reads each tensor about once.
 *
 *   forward       W (f x ckk), X (batch x chw)  ->  f x L
 *   weight grad   D (f x L),   X                ->  f x ckk
 *   input grad    W,           D                ->  batch x chw
 *
 * Operands are quantized as in client.c (bits for the longest sum: ckk,
 * L, or f*size^2 terms per input-gradient element) and go as 4-byte
 * integers; in private mode (forward only) X is blinded with a fresh pad
 * R and the unblinding factor W cols(R) is computed here.  A batch too
 * large for one frame goes as chunks of examples, each its own verified
 * request; the weight gradient's chunks are summed in the field (exact:
 * the whole sum's bound holds).
 *
 * Trusted code: no I/O of its own.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outsource/client_internal.h"

typedef struct conv_job {
    const eml_conv_desc *c;
    eml_worker_geom g; /* the whole batch */
    size_t ckk, chw, hw, l;
    uint16_t op;
    const int32_t *qa, *qb; /* quantized A and B, whole batch */
    double scale;           /* decode: 2^-(shift_a + shift_b) */
} conv_job;

/* Quantizes n floats into *q (grown) with `bits`; the shift. */
static int quantize(eml_outsource *o, const float *x, size_t n, int bits,
                    int32_t **q, size_t *cap, int *shift)
{
    if (!eml_oc_grow((void **)q, cap, n, sizeof(int32_t))) return 0;
    *shift = eml_field_shift(x, n, bits);
    eml_field_quantize_i32(x, n, *shift, *q);
    (void)o;
    return 1;
}

/* A chunk [b0, b0 + nb) of the batch: the request's operands (a D chunk
 * gathered from its rows into o->qbs). */
static int chunk_operands(eml_outsource *o, const conv_job *j, size_t b0,
                          size_t nb, const int32_t **a, const int32_t **b)
{
    *a = j->qa;
    *b = j->qb;
    if (j->op == EML_WORKER_OP_CONV_FORWARD) {
        *b = j->qb + b0 * j->chw;
        return 1;
    }
    /* D (f x L) is A of the weight gradient and B of the input gradient. */
    const int32_t *d = j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? j->qa : j->qb;
    size_t f = (size_t)j->c->f, w = nb * j->hw;
    if (nb != j->g.batch) {
        if (!eml_oc_grow((void **)&o->qbs, &o->cap_qbs, f * w,
                         sizeof(int32_t)))
            return 0;
        for (size_t r = 0; r < f; r++)
            memcpy(o->qbs + r * w, d + r * j->l + b0 * j->hw,
                   w * sizeof(int32_t));
        d = o->qbs;
    }
    if (j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD) {
        *a = d;
        *b = j->qb + b0 * j->chw;
    } else {
        *b = d;
    }
    return 1;
}

/* Private forward: X + R into the frame (u64), W as field elements, and
 * U = W cols(R) (f x nb*hw) into o->unb, example by example. */
static int blind_forward(eml_outsource *o, const eml_worker_req *q,
                         const int32_t *w, const int32_t *x, uint8_t *ops)
{
    size_t nx = q->nb, nw = q->na;
    size_t ckk = q->na / q->g.f, hw = (size_t)q->out_h * q->out_w;
    size_t chw = nx / q->g.batch, f = q->g.f;
    if (!eml_oc_grow((void **)&o->pad, &o->cap_pad, nx + ckk * hw,
                     sizeof(uint64_t)) ||
        !eml_oc_grow((void **)&o->unb, &o->cap_unb, (size_t)q->m * q->n,
                     sizeof(uint64_t)) ||
        !eml_oc_grow((void **)&o->wq, &o->cap_wq, f * hw, sizeof(uint64_t)))
        return 0;
    double c0 = cpu_now();
    uint64_t *cols = o->pad + nx;
    eml_oc_uniform(o->rng, o->pad, nx);
    eml_worker_req one = *q;
    one.g.batch = 1;
    one.out_h = q->out_h, one.out_w = q->out_w;
    for (size_t b = 0; b < q->g.batch; b++) {
        /* cols(R_b), then W cols(R_b) into columns [b hw, (b+1) hw) */
        eml_field_im2col(&one, o->pad + b * chw, cols);
        eml_field_gemm_padded(cols, w, o->wq, (uint32_t)f, (uint32_t)hw,
                              (uint32_t)ckk, 0);
        for (size_t r = 0; r < f; r++)
            memcpy(o->unb + r * q->n + b * hw, o->wq + r * hw,
                   hw * sizeof(uint64_t));
    }
    o->stats.pad_seconds += cpu_now() - c0;
    for (size_t i = 0; i < nw; i++) eml_worker_put(ops, i, eml_field_of(w[i]));
    for (size_t i = 0; i < nx; i++)
        eml_worker_put(ops + 8 * nw, i,
                       eml_field_add(o->pad[i], eml_field_of(x[i])));
    return 1;
}

/* Sends chunk [b0, b0 + nb), checks it and leaves its product in o->qc. */
static eml_status chunk(eml_outsource *o, const conv_job *j, size_t b0,
                        size_t nb, eml_worker_req *q, const char **why,
                        eml_err *err)
{
    double c0 = cpu_now();
    const int32_t *a, *b;
    memset(q, 0, sizeof(*q));
    q->id = o->next_id++;
    q->op = j->op;
    q->g = j->g;
    q->g.batch = (uint32_t)nb;
    int priv = o->mode == EML_OUTSOURCE_PRIVATE;
    q->flags = priv ? 0 : EML_WORKER_I32;
    size_t hw = j->hw, f = (size_t)j->c->f;
    q->m = j->op == EML_WORKER_OP_CONV_INPUT_GRAD ? (uint32_t)nb : (uint32_t)f;
    q->n = j->op == EML_WORKER_OP_CONV_FORWARD       ? (uint32_t)(nb * hw)
           : j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? (uint32_t)j->ckk
                                                     : (uint32_t)j->chw;
    q->k = j->op == EML_WORKER_OP_CONV_FORWARD       ? (uint32_t)j->ckk
           : j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? (uint32_t)(nb * hw)
                                                     : (uint32_t)f;
    size_t size;
    if (eml_worker_req_shape(q, &size, NULL) != EML_OK) {
        *why = "the convolution is too large for one request";
        return EML_ERR_RANGE;
    }
    if (!eml_oc_room(o, size, (size_t)q->m * q->n, why) ||
        !chunk_operands(o, j, b0, nb, &a, &b)) {
        *why = "out of memory";
        return EML_ERR_NOMEM;
    }
    eml_worker_req_write_header(o->frame, q);
    uint8_t *ops = o->frame + EML_WORKER_REQ_HEADER;
    if (priv) {
        if (!blind_forward(o, q, a, b, ops)) {
            *why = "out of memory";
            return EML_ERR_NOMEM;
        }
    } else {
        memcpy(ops, a, q->na * sizeof(int32_t));
        memcpy(ops + 4 * q->na, b, q->nb * sizeof(int32_t));
    }
    o->stats.enclave_seconds += cpu_now() - c0;
    o->stats.outsourced_products++;
    eml_status st = eml_oc_exchange(o, size, q->id, q->m, q->n, why, err);
    if (st != EML_OK) return st;
    c0 = cpu_now();
    size_t mn = (size_t)q->m * q->n;
    if (priv)
        for (size_t e = 0; e < mn; e++)
            o->qc[e] = eml_field_sub(o->qc[e], o->unb[e]);
    if (!eml_freivalds_conv(q->op, &q->g, a, b, o->qc, eml_oc_next_field,
                            o->rng)) {
        *why = "Freivalds' check failed";
        return EML_ERR_AUTH;
    }
    o->stats.verified_products++;
    o->stats.enclave_seconds += cpu_now() - c0;
    return EML_OK;
}

/* The chunk's product decoded into the descriptor's output (the weight
 * gradient's chunks summed in o->acc first). */
static void take(eml_outsource *o, const conv_job *j, size_t b0, size_t nb,
                 const eml_worker_req *q, int last)
{
    const eml_conv_desc *c = j->c;
    size_t f = (size_t)c->f;
    if (j->op == EML_WORKER_OP_CONV_FORWARD) {
        for (size_t r = 0; r < f; r++)
            eml_field_decode(o->qc + r * q->n, nb * j->hw, j->scale,
                             c->out + r * j->l + b0 * j->hw);
    } else if (j->op == EML_WORKER_OP_CONV_INPUT_GRAD) {
        eml_field_decode(o->qc, nb * j->chw, j->scale, c->out + b0 * j->chw);
    } else {
        size_t n = f * j->ckk;
        for (size_t e = 0; e < n; e++)
            o->acc[e] = b0 == 0 ? o->qc[e] : eml_field_add(o->acc[e], o->qc[e]);
        if (last) eml_field_decode(o->acc, n, j->scale, c->out);
    }
}

/* Examples per request: the most that keep request and reply within
 * o->max_bytes. */
static size_t chunk_size(const eml_outsource *o, const conv_job *j)
{
    size_t f = (size_t)j->c->f, es = o->mode == EML_OUTSOURCE_PRIVATE ? 8 : 4;
    size_t fixed = EML_WORKER_REQ_HEADER + es * f * j->ckk; /* W */
    size_t per = j->op == EML_WORKER_OP_CONV_FORWARD
                     ? es * j->chw + 8 * f * j->hw
                 : j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD
                     ? es * (f * j->hw + j->chw)
                     : es * f * j->hw + 8 * j->chw;
    size_t room = o->max_bytes > fixed ? o->max_bytes - fixed : 0;
    size_t nb = per > 0 ? room / per : 1;
    if (nb < 1) nb = 1;
    return nb < j->g.batch ? nb : j->g.batch;
}

static eml_status run(eml_outsource *o, conv_job *j, const char **why,
                      eml_err *err)
{
    const eml_conv_desc *c = j->c;
    size_t f = (size_t)c->f;
    size_t k = j->op == EML_WORKER_OP_CONV_FORWARD       ? j->ckk
               : j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? j->l
                                                         : f * (size_t)
                                                               c->shape.size *
                                                               c->shape.size;
    int bits = eml_oc_bits_for(k), sa, sb;
    const float *fa = j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? c->d : c->w;
    const float *fb = j->op == EML_WORKER_OP_CONV_INPUT_GRAD ? c->d : c->x;
    size_t na = j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD ? f * j->l : f * j->ckk;
    size_t nb = j->op == EML_WORKER_OP_CONV_INPUT_GRAD ? f * j->l
                                                        : j->g.batch * j->chw;
    double c0 = cpu_now();
    if (!quantize(o, fa, na, bits, &o->qa, &o->cap_qa, &sa) ||
        !quantize(o, fb, nb, bits, &o->qb, &o->cap_qb, &sb) ||
        (j->op == EML_WORKER_OP_CONV_WEIGHT_GRAD &&
         !eml_oc_grow((void **)&o->acc, &o->cap_acc, f * j->ckk,
                      sizeof(uint64_t)))) {
        *why = "out of memory";
        return EML_ERR_NOMEM;
    }
    o->stats.enclave_seconds += cpu_now() - c0;
    j->qa = o->qa;
    j->qb = o->qb;
    j->scale = ldexp(1.0, -(sa + sb));
    size_t per = chunk_size(o, j);
    for (size_t b0 = 0; b0 < j->g.batch; b0 += per) {
        size_t n = j->g.batch - b0 < per ? j->g.batch - b0 : per;
        eml_worker_req q;
        eml_status st = chunk(o, j, b0, n, &q, why, err);
        if (st != EML_OK) return st;
        c0 = cpu_now();
        take(o, j, b0, n, &q, b0 + n == j->g.batch);
        o->stats.enclave_seconds += cpu_now() - c0;
    }
    return EML_OK;
}

int eml_oc_conv_takes(void *ctx, const eml_conv_desc *c)
{
    const eml_outsource *o = ctx;
    const eml_conv_shape *s = &c->shape;
    double ckk = (double)s->c * s->size * s->size;
    double l = (double)c->batch * s->out_h * s->out_w;
    double elems = c->f * ckk + (double)c->batch * s->c * s->h * s->w +
                   c->f * l;
    /* Declined, the product comes back as a GEMM over the columns, whose
     * intensity is lower still: it stays in the enclave, counted there. */
    return o->min_intensity <= 0 ||
           2.0 * c->f * ckk * l >= o->min_intensity * elems;
}

eml_status eml_oc_conv(void *ctx, const eml_conv_desc *c)
{
    eml_outsource *o = ctx;
    if (o->failed) return EML_ERR_AUTH;
    if (o->mode == EML_OUTSOURCE_PRIVATE && c->pass != EML_GEMM_FORWARD) {
        o->failed = 1;
        snprintf(o->error, sizeof(o->error),
                 "--outsource-mode private blinds inference only: layer "
                 "%d's %s product was not sent",
                 c->layer, eml_oc_pass_name(c->pass));
        return EML_ERR_UNSUPPORTED;
    }
    const eml_conv_shape *s = &c->shape;
    conv_job j;
    memset(&j, 0, sizeof(j));
    j.c = c;
    j.g = (eml_worker_geom){(uint32_t)c->batch, (uint32_t)s->c,
                            (uint32_t)s->h,     (uint32_t)s->w,
                            (uint32_t)c->f,     (uint32_t)s->size,
                            (uint32_t)s->stride, (uint32_t)s->pad};
    j.ckk = (size_t)s->c * s->size * s->size;
    j.chw = (size_t)s->c * s->h * s->w;
    j.hw = (size_t)s->out_h * s->out_w;
    j.l = (size_t)c->batch * j.hw;
    j.op = c->pass == EML_GEMM_FORWARD       ? EML_WORKER_OP_CONV_FORWARD
           : c->pass == EML_GEMM_WEIGHT_GRAD ? EML_WORKER_OP_CONV_WEIGHT_GRAD
                                             : EML_WORKER_OP_CONV_INPUT_GRAD;
    const char *why = "";
    eml_err err = {0};
    eml_status st = run(o, &j, &why, &err);
    if (st != EML_OK) {
        eml_oc_failed(o, c->layer, c->pass, why);
        return EML_ERR_AUTH;
    }
    return EML_OK;
}
