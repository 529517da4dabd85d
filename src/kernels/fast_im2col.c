/*
 * fast_im2col.c - im2col and col2im of the "fast" table.  oneDNN has no
 * im2col (its convolutions never materialize columns), so these are plain
 * C, written so the innermost loop touches contiguous memory, and
 * OpenMP-parallel when large.  Same layout and results as ref.c's.
 *
 * Trusted code: no I/O.
 */
#include <stdint.h>
#include <string.h>

#include "kernels/kernels_impl.h"

/* oneDNN has no im2col (its convolutions never materialize columns), so
 * these are C.  Fork/join of a parallel region costs more than a whole
 * per-example im2col of the Fashion-MNIST nets (about 10 us for 32x14x14,
 * 3x3) and far more on a busy machine, so only big column matrices
 * (1 MiB and up) are split among threads. */
#define FAST_PAR_MIN_ELEMS ((size_t)1 << 18)

/* Output columns [*ox0, *ox1) whose input column ox*stride - pad + kx lies
 * inside [0, w); the rest of a row is zero padding. */
static void valid_cols(const eml_conv_shape *s, int kx, int *ox0, int *ox1)
{
    int lo = s->pad - kx;            /* smallest ox*stride allowed */
    int hi = s->w - 1 + s->pad - kx; /* largest ox*stride allowed */
    int a = lo > 0 ? (lo + s->stride - 1) / s->stride : 0;
    int b = hi >= 0 ? hi / s->stride + 1 : 0;
    if (a > s->out_w)
        a = s->out_w;
    if (b > s->out_w)
        b = s->out_w;
    if (b < a)
        b = a;
    *ox0 = a;
    *ox1 = b;
}

/* Output rows [*oy0, *oy1) whose input row oy*stride - pad + ky lies
 * inside [0, h). */
static void valid_rows(const eml_conv_shape *s, int ky, int *oy0, int *oy1)
{
    eml_conv_shape t = *s; /* the same arithmetic along the other axis */
    t.w = s->h;
    t.out_w = s->out_h;
    valid_cols(&t, ky, oy0, oy1);
}

/* One row (ci, ky, kx) of the column matrix: out_h x out_w values written
 * front to back. */
static void im2col_row(float *restrict dst, const float *restrict x,
                       const eml_conv_shape *s, int ky, int kx)
{
    const size_t ow = (size_t)s->out_w;
    const int off = kx - s->pad;
    int ox0, ox1, oy0, oy1;
    valid_cols(s, kx, &ox0, &ox1);
    valid_rows(s, ky, &oy0, &oy1);
    if (ox0 == ox1 || oy0 == oy1) {
        memset(dst, 0, (size_t)s->out_h * ow * sizeof(float));
        return;
    }
    memset(dst, 0, (size_t)oy0 * ow * sizeof(float));
    memset(dst + (size_t)oy1 * ow, 0,
           (size_t)(s->out_h - oy1) * ow * sizeof(float));
    if (s->stride == 1 && s->out_w == s->w) {
        /* Input and output rows have the same length, so the valid block
         * is one shifted copy; the columns that wrapped around from the
         * neighbouring row are zeroed after. */
        size_t start = (size_t)oy0 * ow + (size_t)ox0;
        size_t len = (size_t)(oy1 - oy0 - 1) * ow + (size_t)(ox1 - ox0);
        memcpy(dst + start,
               x + (size_t)(oy0 - s->pad + ky) * (size_t)s->w +
                   (size_t)(ox0 + off),
               len * sizeof(float));
        for (int oy = oy0; oy < oy1; oy++) {
            float *d = dst + (size_t)oy * ow;
            for (int ox = 0; ox < ox0; ox++)
                d[ox] = 0.0f;
            for (int ox = ox1; ox < s->out_w; ox++)
                d[ox] = 0.0f;
        }
        return;
    }
    for (int oy = oy0; oy < oy1; oy++) {
        float *restrict d = dst + (size_t)oy * ow;
        const float *restrict xr =
            x + (size_t)(oy * s->stride - s->pad + ky) * (size_t)s->w;
        for (int ox = 0; ox < ox0; ox++)
            d[ox] = 0.0f;
        if (s->stride == 1) {
#pragma omp simd
            for (int ox = ox0; ox < ox1; ox++)
                d[ox] = xr[ox + off];
        } else {
            for (int ox = ox0; ox < ox1; ox++)
                d[ox] = xr[ox * s->stride + off];
        }
        for (int ox = ox1; ox < s->out_w; ox++)
            d[ox] = 0.0f;
    }
}

/* Rows are independent, so big matrices share them among threads. */
void eml_fast_im2col(float *col, const float *in, const eml_conv_shape *s)
{
    if (col == NULL || in == NULL || !eml_conv_shape_ok(s))
        return;
    const int ksz = s->size;
    const int rows = s->c * ksz * ksz;
    const size_t cols = eml_conv_ld(s);
    const size_t plane = (size_t)s->h * (size_t)s->w;
    const int par = (size_t)rows * (size_t)s->out_h * (size_t)s->out_w >=
                    FAST_PAR_MIN_ELEMS;
    (void)par;

#pragma omp parallel for schedule(static) if (par)
    for (int r = 0; r < rows; r++) {
        const int ci = r / (ksz * ksz);
        im2col_row(col + (size_t)r * cols, in + (size_t)ci * plane, s,
                   (r / ksz) % ksz, r % ksz);
    }
}

/* Channels are independent (rows of one channel all add into the same
 * input plane), so threads split channels.  Within a channel the order of
 * additions is the reference's, which makes the result bit-identical. */
void eml_fast_col2im(float *din, const float *col, const eml_conv_shape *s)
{
    if (din == NULL || col == NULL || !eml_conv_shape_ok(s))
        return;
    const int ksz = s->size;
    const size_t cols = eml_conv_ld(s);
    const size_t plane = (size_t)s->h * (size_t)s->w;
    const int par = (size_t)s->c * (size_t)ksz * (size_t)ksz *
                            (size_t)s->out_h * (size_t)s->out_w >=
                        FAST_PAR_MIN_ELEMS &&
        s->c > 1;
    (void)par;

#pragma omp parallel for schedule(static) if (par)
    for (int ci = 0; ci < s->c; ci++) {
        float *x = din + (size_t)ci * plane; /* (h, w) */
        for (int ky = 0; ky < ksz; ky++) {
            int oy0, oy1;
            valid_rows(s, ky, &oy0, &oy1);
            for (int kx = 0; kx < ksz; kx++) {
                const float *src =
                    col + ((size_t)(ci * ksz + ky) * (size_t)ksz +
                           (size_t)kx) *
                              cols; /* (out_h, out_w) */
                const int off = kx - s->pad;
                int ox0, ox1;
                valid_cols(s, kx, &ox0, &ox1);
                for (int oy = oy0; oy < oy1; oy++) {
                    float *restrict xr =
                        x + (size_t)(oy * s->stride - s->pad + ky) *
                                (size_t)s->w;
                    const float *restrict sr =
                        src + (size_t)oy * (size_t)s->out_w;
                    if (s->stride == 1) {
#pragma omp simd
                        for (int ox = ox0; ox < ox1; ox++)
                            xr[ox + off] += sr[ox];
                    } else {
                        for (int ox = ox0; ox < ox1; ox++)
                            xr[ox * s->stride + off] += sr[ox];
                    }
                }
            }
        }
    }
}

