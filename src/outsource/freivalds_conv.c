/*
 * freivalds_conv.c - Freivalds' check of a convolution's three products
 * without forming its im2col columns (outsource.h, docs/outsource.md).
 *
 * The usual check multiplies C by a random vector; here every random
 * vector is a product of one short vector per tensor axis, so each
 * contraction with a column matrix becomes a contraction of the images
 * along one axis followed by a small k x k one:
 *
 *   forward       C = W cols(X), C f x L, L = (b, oy, ox):
 *                 C s  =  W (cols(X) s),  s = u_b v_oy w_ox
 *   weight grad   C = D cols(X)^T, C f x ckk, ckk = (c, ky, kx):
 *                 r^T C t  =  (r^T D) (cols(X)^T t),  t = a_c p_ky q_kx
 *   input grad    C = col2im(W^T D), C batch x (c, y, x):
 *                 <S, C>  =  <cols(S), W^T D>,  S = u_b a_c v_y w_x
 *
 * Each side is then a multilinear polynomial in the random values, and a
 * wrong C makes their difference a non-zero one of degree 3 (forward,
 * compared filter by filter) or 4: it vanishes at a point drawn uniformly
 * from S^n with probability at most 4/|S| (Schwartz-Zippel).  The work
 * is about one pass over each operand and over C.
 *
 * Trusted code: no I/O, no allocation beyond the per-check vectors.
 */
#include <stdlib.h>
#include <string.h>

#include "enclaveml/outsource.h"

typedef unsigned __int128 u128;

/* A sum of products of field elements: 128-bit, folded every 32 terms
 * (each term is below 2^122). */
typedef struct facc {
    u128 acc;
    unsigned n;
    uint64_t sum;
} facc;

static inline void mac(facc *f, uint64_t a, uint64_t b)
{
    f->acc += (u128)a * b;
    if (++f->n == 32) {
        f->sum = eml_field_add(f->sum, eml_field_fold128(f->acc));
        f->acc = 0;
        f->n = 0;
    }
}

static inline uint64_t total(const facc *f)
{
    return eml_field_add(f->sum, eml_field_fold128(f->acc));
}


/* sum x[i] y[i] mod p over field elements, folded every 32 terms. */
static uint64_t dot(const uint64_t *x, const uint64_t *y, size_t n)
{
    uint64_t sum = 0;
    for (size_t i0 = 0; i0 < n; i0 += 32) {
        size_t i1 = n - i0 < 32 ? n : i0 + 32;
        u128 acc = 0;
        for (size_t i = i0; i < i1; i++) acc += (u128)x[i] * y[i];
        sum = eml_field_add(sum, eml_field_fold128(acc));
    }
    return sum;
}

/* A signed 128-bit sum (|v| < 2^126) mod p. */
static uint64_t fold_signed(__int128 v)
{
    if (v >= 0) return eml_field_fold128((u128)v);
    uint64_t r = eml_field_fold128((u128)-v);
    return r == 0 ? 0 : EML_FIELD_P - r;
}

/* sum x[i] y[i] mod p for small signed x (|x| < 2^31): each term is below
 * 2^92, so 2^34 of them fit without folding. */
static uint64_t dot_i32(const int32_t *x, const uint64_t *y, size_t n)
{
    __int128 acc = 0;
    for (size_t i = 0; i < n; i++) acc += (__int128)x[i] * (__int128)y[i];
    return fold_signed(acc);
}

/* acc[i] += s x[i] over n small signed x, acc signed 128-bit. */
static void axpy_i32(__int128 *acc, uint64_t s, const int32_t *x, size_t n)
{
    for (size_t i = 0; i < n; i++) acc[i] += (__int128)s * x[i];
}

typedef struct geo {
    size_t batch, c, h, w, f, k, stride, pad, oh, ow, hw, chw, ckk, l;
} geo;

static geo geo_of(const eml_worker_geom *g)
{
    geo o;
    o.batch = g->batch, o.c = g->c, o.h = g->h, o.w = g->w, o.f = g->f;
    o.k = g->size, o.stride = g->stride, o.pad = g->pad;
    o.oh = (o.h + 2 * o.pad - o.k) / o.stride + 1;
    o.ow = (o.w + 2 * o.pad - o.k) / o.stride + 1;
    o.hw = o.oh * o.ow;
    o.chw = o.c * o.h * o.w;
    o.ckk = o.c * o.k * o.k;
    o.l = o.batch * o.hw;
    return o;
}

/* The input row (or column) under output index o and kernel offset t,
 * or -1 in the padding. */
static inline long at(const geo *g, size_t o, size_t t, size_t n)
{
    long i = (long)(o * g->stride + t) - (long)g->pad;
    return i >= 0 && i < (long)n ? i : -1;
}

static void draw(uint64_t *v, size_t n, uint64_t (*next)(void *), void *user)
{
    for (size_t i = 0; i < n; i++) v[i] = next(user) % EML_FIELD_P;
}

/* sum over (oy, ox) of v_oy w_ox m[y(oy, ky)][x(ox, kx)] for one map m
 * (h x w field elements) and one kernel offset. */
static uint64_t window(const geo *g, const uint64_t *m, size_t ky, size_t kx,
                       const uint64_t *v, const uint64_t *w)
{
    facc rows = {0};
    for (size_t oy = 0; oy < g->oh; oy++) {
        long y = at(g, oy, ky, g->h);
        if (y < 0) continue;
        facc cols = {0};
        for (size_t ox = 0; ox < g->ow; ox++) {
            long x = at(g, ox, kx, g->w);
            if (x >= 0) mac(&cols, w[ox], m[(size_t)y * g->w + (size_t)x]);
        }
        mac(&rows, v[oy], total(&cols));
    }
    return total(&rows);
}

/* C (f x L) = W (f x ckk) cols(X): C s == W (cols(X) s), filter by
 * filter. */
static int check_forward(const geo *g, const int32_t *wt, const int32_t *x,
                         const uint64_t *c, const uint64_t *rnd)
{
    const uint64_t *u = rnd, *v = u + g->batch, *w = v + g->oh;
    uint64_t *xu = malloc((g->chw + g->ckk) * sizeof(uint64_t));
    __int128 *xa = calloc(g->chw, sizeof(__int128));
    if (xu == NULL || xa == NULL) {
        free(xu);
        free(xa);
        return 0;
    }
    uint64_t *cs = xu + g->chw; /* cols(X) s, ckk */
    for (size_t b = 0; b < g->batch; b++) /* X contracted over the batch */
        axpy_i32(xa, u[b], x + b * g->chw, g->chw);
    for (size_t i = 0; i < g->chw; i++) xu[i] = fold_signed(xa[i]);
    free(xa);
    for (size_t ci = 0; ci < g->c; ci++)
        for (size_t ky = 0; ky < g->k; ky++)
            for (size_t kx = 0; kx < g->k; kx++)
                cs[(ci * g->k + ky) * g->k + kx] =
                    window(g, xu + ci * g->h * g->w, ky, kx, v, w);
    int ok = 1;
    for (size_t j = 0; j < g->f && ok; j++) {
        uint64_t rhs = dot_i32(wt + j * g->ckk, cs, g->ckk);
        facc lhs = {0};
        for (size_t b = 0; b < g->batch; b++) {
            facc per_b = {0};
            for (size_t oy = 0; oy < g->oh; oy++)
                mac(&per_b, v[oy],
                    dot(c + j * g->l + b * g->hw + oy * g->ow, w, g->ow));
            mac(&lhs, u[b], total(&per_b));
        }
        ok = total(&lhs) == rhs;
    }
    free(xu);
    return ok;
}

/* C (f x ckk) = D (f x L) cols(X)^T: r^T C t == (r^T D) (cols(X)^T t). */
static int check_weight_grad(const geo *g, const int32_t *d, const int32_t *x,
                             const uint64_t *c, const uint64_t *rnd)
{
    const uint64_t *r = rnd, *a = r + g->f, *p = a + g->c, *q = p + g->k;
    size_t hw_in = g->h * g->w;
    uint64_t *xa = malloc((g->batch * hw_in + g->ckk + g->l) * sizeof(uint64_t));
    __int128 *acc = calloc(g->l > hw_in ? g->l : hw_in, sizeof(__int128));
    if (xa == NULL || acc == NULL) {
        free(xa);
        free(acc);
        return 0;
    }
    uint64_t *t = xa + g->batch * hw_in, *z = t + g->ckk;
    for (size_t ci = 0; ci < g->c; ci++)
        for (size_t ky = 0; ky < g->k; ky++)
            for (size_t kx = 0; kx < g->k; kx++)
                t[(ci * g->k + ky) * g->k + kx] =
                    eml_field_mul(a[ci], eml_field_mul(p[ky], q[kx]));
    facc lhs = {0};
    for (size_t j = 0; j < g->f; j++)
        mac(&lhs, r[j], dot(c + j * g->ckk, t, g->ckk));
    for (size_t b = 0; b < g->batch; b++) { /* X contracted over channels */
        memset(acc, 0, hw_in * sizeof(__int128));
        for (size_t ci = 0; ci < g->c; ci++)
            axpy_i32(acc, a[ci], x + b * g->chw + ci * hw_in, hw_in);
        for (size_t i = 0; i < hw_in; i++) xa[b * hw_in + i] = fold_signed(acc[i]);
    }
    memset(acc, 0, g->l * sizeof(__int128)); /* z = r^T D, row by row */
    for (size_t j = 0; j < g->f; j++) axpy_i32(acc, r[j], d + j * g->l, g->l);
    for (size_t l = 0; l < g->l; l++) z[l] = fold_signed(acc[l]);
    free(acc);
    facc rhs = {0};
    for (size_t b = 0; b < g->batch; b++)
        for (size_t oy = 0; oy < g->oh; oy++)
            for (size_t ox = 0; ox < g->ow; ox++) {
                size_t l = b * g->hw + oy * g->ow + ox;
                facc y = {0}; /* (cols(X)^T t)_l */
                for (size_t ky = 0; ky < g->k; ky++) {
                    long iy = at(g, oy, ky, g->h);
                    if (iy < 0) continue;
                    facc in = {0};
                    for (size_t kx = 0; kx < g->k; kx++) {
                        long ix = at(g, ox, kx, g->w);
                        if (ix >= 0)
                            mac(&in, q[kx],
                                xa[b * hw_in + (size_t)iy * g->w + (size_t)ix]);
                    }
                    mac(&y, p[ky], total(&in));
                }
                mac(&rhs, z[l], total(&y));
            }
    free(xa);
    return total(&lhs) == total(&rhs);
}

/* C (batch x chw) = col2im(W^T D): <S, C> == sum_j sum_l D[j][l] u_b
 * H[j][oy][ox], H the filters contracted with S's row and column
 * vectors. */
static int check_input_grad(const geo *g, const int32_t *wt, const int32_t *d,
                            const uint64_t *c, const uint64_t *rnd)
{
    const uint64_t *u = rnd, *a = u + g->batch, *v = a + g->c, *w = v + g->h;
    size_t kk = g->k * g->k;
    uint64_t *wa = malloc((g->f * kk + g->f * g->hw) * sizeof(uint64_t));
    if (wa == NULL) return 0;
    uint64_t *hm = wa + g->f * kk;
    for (size_t j = 0; j < g->f; j++)
        for (size_t t = 0; t < kk; t++) {
            __int128 s = 0;
            for (size_t ci = 0; ci < g->c; ci++)
                s += (__int128)a[ci] * wt[j * g->ckk + ci * kk + t];
            wa[j * kk + t] = fold_signed(s);
        }
    for (size_t j = 0; j < g->f; j++)
        for (size_t oy = 0; oy < g->oh; oy++)
            for (size_t ox = 0; ox < g->ow; ox++) {
                facc s = {0};
                for (size_t ky = 0; ky < g->k; ky++) {
                    long iy = at(g, oy, ky, g->h);
                    if (iy < 0) continue;
                    facc in = {0};
                    for (size_t kx = 0; kx < g->k; kx++) {
                        long ix = at(g, ox, kx, g->w);
                        if (ix >= 0) mac(&in, wa[j * kk + ky * g->k + kx], w[ix]);
                    }
                    mac(&s, v[iy], total(&in));
                }
                hm[j * g->hw + oy * g->ow + ox] = total(&s);
            }
    facc rhs = {0};
    for (size_t b = 0; b < g->batch; b++) {
        __int128 per_b = 0;
        for (size_t j = 0; j < g->f; j++) {
            const int32_t *drow = d + j * g->l + b * g->hw;
            const uint64_t *hrow = hm + j * g->hw;
            for (size_t o = 0; o < g->hw; o++)
                per_b += (__int128)drow[o] * (__int128)hrow[o];
        }
        mac(&rhs, u[b], fold_signed(per_b));
    }
    facc lhs = {0};
    for (size_t b = 0; b < g->batch; b++) {
        facc per_b = {0};
        for (size_t ci = 0; ci < g->c; ci++) {
            facc per_c = {0};
            for (size_t y = 0; y < g->h; y++)
                mac(&per_c, v[y],
                    dot(c + b * g->chw + (ci * g->h + y) * g->w, w, g->w));
            mac(&per_b, a[ci], total(&per_c));
        }
        mac(&lhs, u[b], total(&per_b));
    }
    free(wa);
    return total(&lhs) == total(&rhs);
}

int eml_freivalds_conv(uint16_t op, const eml_worker_geom *gm,
                       const int32_t *a, const int32_t *b, const uint64_t *c,
                       uint64_t (*next)(void *user), void *user)
{
    geo g = geo_of(gm);
    size_t n = g.batch + g.f + g.c + g.h + g.w + g.oh + g.ow + 2 * g.k;
    uint64_t *rnd = malloc(n * sizeof(uint64_t));
    if (rnd == NULL) return 0;
    int ok = 0;
    switch (op) {
    case EML_WORKER_OP_CONV_FORWARD:
        draw(rnd, g.batch + g.oh + g.ow, next, user);
        ok = check_forward(&g, a, b, c, rnd);
        break;
    case EML_WORKER_OP_CONV_WEIGHT_GRAD:
        draw(rnd, g.f + g.c + 2 * g.k, next, user);
        ok = check_weight_grad(&g, a, b, c, rnd);
        break;
    case EML_WORKER_OP_CONV_INPUT_GRAD:
        draw(rnd, g.batch + g.c + g.h + g.w, next, user);
        ok = check_input_grad(&g, a, b, c, rnd);
        break;
    default: break;
    }
    free(rnd);
    return ok;
}
