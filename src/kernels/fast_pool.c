/*
 * fast_pool.c - max pooling for the fast table: the reference's
 * semantics and workspace (each output's argmax as an int32 index into its
 * plane; ties keep the first in row-major order), so the two tables agree
 * bit for bit, run over the planes in parallel, with the 2x2 stride-2
 * windows that lie inside the input taken without bounds checks.
 * oneDNN's pooling on plain NCHW tensors ran a 2x2 pool over 16 x 64 x
 * 128 x 128 in 70 ms on this machine's two cores, which is what this
 * replaces.  Trusted code: no I/O.
 */
#include <string.h>

#include "kernels/kernels_impl.h"

/* One output row of 2x2 windows: rows r0 and r1 of the input, base the
 * index of r0[0] in the plane.  Selects, not branches (on real data which
 * tap wins is a coin toss), over restrict pointers: the loop vectorises. */
static void row_2x2(const float *restrict r0, const float *restrict r1,
                    float *restrict yo, int32_t *restrict ao, int w,
                    int32_t base, int32_t in_w)
{
    for (int ox = 0; ox < w; ox++) {
        int ix = 2 * ox;
        float a = r0[ix], b = r0[ix + 1], c = r1[ix], d = r1[ix + 1];
        /* strict >: ties keep the first tap in row-major order */
        int32_t k = b > a;
        float m = b > a ? b : a;
        int32_t kc = c > m;
        m = c > m ? c : m;
        int32_t kd = d > m;
        m = d > m ? d : m;
        k = kd ? 3 : kc ? 2 : k;
        yo[ox] = m;
        ao[ox] = base + ix + (k & 1) + (k >> 1) * in_w;
    }
}

/* 2x2 stride 2, no top/left padding: the windows inside the input. */
static void plane_2x2(const float *x, float *y, int32_t *am,
                      const eml_pool_shape *s)
{
    int full_h = s->in_h / 2 < s->out_h ? s->in_h / 2 : s->out_h;
    int full_w = s->in_w / 2 < s->out_w ? s->in_w / 2 : s->out_w;
    for (int oy = 0; oy < full_h; oy++) {
        const float *r0 = x + (size_t)(2 * oy) * s->in_w;
        row_2x2(r0, r0 + s->in_w, y + (size_t)oy * s->out_w,
                am + (size_t)oy * s->out_w, full_w, 2 * oy * s->in_w,
                s->in_w);
    }
    if (full_h == s->out_h && full_w == s->out_w) return;
    /* the windows that run past the bottom or right edge */
    eml_pool_shape e = *s;
    for (int oy = 0; oy < s->out_h; oy++)
        for (int ox = oy < full_h ? full_w : 0; ox < s->out_w; ox++) {
            e.out_h = e.out_w = 1;
            e.pad_t = -2 * oy;
            e.pad_l = -2 * ox;
            eml_ref_maxpool_plane(x, y + (size_t)oy * s->out_w + ox,
                                  am + (size_t)oy * s->out_w + ox, &e);
        }
}

eml_status eml_fast_maxpool_forward(eml_kstate *ks, float *out, void *ws,
                                    const float *in, const eml_pool_shape *s)
{
    (void)ks;
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK) return st;
    if (out == NULL || ws == NULL || in == NULL) return EML_ERR_INVALID;
    int32_t *arg = ws;
    size_t plane_in = (size_t)s->in_h * (size_t)s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    long planes = (long)s->batch * (long)s->c;
    int two = s->size_h == 2 && s->size_w == 2 && s->stride == 2 &&
              s->pad_t == 0 && s->pad_l == 0;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *x = in + (size_t)p * plane_in;
        float *y = out + (size_t)p * plane_out;
        int32_t *am = arg + (size_t)p * plane_out;
        if (two)
            plane_2x2(x, y, am, s);
        else
            eml_ref_maxpool_plane(x, y, am, s);
    }
    return EML_OK;
}

eml_status eml_fast_maxpool_backward(eml_kstate *ks, float *din,
                                     const float *dout, const void *ws,
                                     const eml_pool_shape *s)
{
    (void)ks;
    eml_status st = eml_pool_shape_check(s, NULL, NULL);
    if (st != EML_OK) return st;
    if (din == NULL || dout == NULL || ws == NULL) return EML_ERR_INVALID;
    const int32_t *arg = ws;
    int32_t plane_in = s->in_h * s->in_w;
    size_t plane_out = (size_t)s->out_h * (size_t)s->out_w;
    long planes = (long)s->batch * (long)s->c;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad)
    for (long p = 0; p < planes; p++) {
        float *dx = din + (size_t)p * (size_t)plane_in;
        const float *dy = dout + (size_t)p * plane_out;
        const int32_t *am = arg + (size_t)p * plane_out;
        memset(dx, 0, (size_t)plane_in * sizeof(float));
        for (size_t o = 0; o < plane_out; o++) {
            if (am[o] < 0) continue;
            if (am[o] >= plane_in) {
                bad = 1; /* not a workspace from forward */
                continue;
            }
            dx[am[o]] += dy[o];
        }
    }
    return bad ? EML_ERR_INVALID : EML_OK;
}
