/*
 * scatter.c - the fixed 2-D scattering transform of scatter.h: Morlet
 * filter spectra built once, then per image a handful of 2-D FFTs
 * (radix-2, split real/imaginary arrays), moduli, and a separable
 * Gaussian low-pass evaluated only at the subsampled output points.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/scatter.h"

#define SC_PI 3.14159265358979323846

struct eml_scatter {
    int h, w, J, L, groups;
    int N, logN, pad_y, pad_x; /* padded size (power of two), offsets */
    int K, oh, ow, stride;
    int nfilt;                 /* J * L wavelets */
    float *psi_re, *psi_im;    /* nfilt spectra of N*N */
    int R;                     /* low-pass radius */
    float *g;                  /* 2R+1 taps, sum 1 */
    float *gx, *gy;            /* the low-pass at the output points, as
                                  (ow x N) and (oh x N) matrices with the
                                  periodic wrap folded in */
    float *tw_re, *tw_im;      /* N/2 twiddles exp(-2 pi i k / N) */
    int *rev;                  /* bit reversal of 0..N-1 */
};

int eml_scatter_channels(int J, int L)
{
    return 1 + J * L + L * L * J * (J - 1) / 2;
}

/* ==== FFT ==== */

/* Radix-2 FFTs of all N columns of an N x N array at once: every
 * butterfly runs along a row, so the inner loops are contiguous and
 * vectorise. */
static void fft_cols(const eml_scatter *s, float *restrict re,
                     float *restrict im, int inverse)
{
    int n = s->N;
    for (int i = 0; i < n; i++) {
        int j = s->rev[i];
        if (j > i) {
            float *a = re + (size_t)i * n, *b = re + (size_t)j * n;
            float *c = im + (size_t)i * n, *d = im + (size_t)j * n;
            for (int x = 0; x < n; x++) {
                float t = a[x];
                a[x] = b[x];
                b[x] = t;
                t = c[x];
                c[x] = d[x];
                d[x] = t;
            }
        }
    }
    /* exp(-+2 pi i k / len): forward -, inverse + */
    float sgn = inverse ? 1.0f : -1.0f;
    for (int len = 2; len <= n; len <<= 1) {
        int half = len >> 1, step = n / len;
        for (int i = 0; i < n; i += len)
            for (int k = 0; k < half; k++) {
                float wr = s->tw_re[k * step], wi = sgn * s->tw_im[k * step];
                float *ar = re + (size_t)(i + k) * n;
                float *ai = im + (size_t)(i + k) * n;
                float *br = re + (size_t)(i + k + half) * n;
                float *bi = im + (size_t)(i + k + half) * n;
                for (int x = 0; x < n; x++) {
                    float xr = br[x] * wr - bi[x] * wi;
                    float xi = br[x] * wi + bi[x] * wr;
                    br[x] = ar[x] - xr;
                    bi[x] = ai[x] - xi;
                    ar[x] += xr;
                    ai[x] += xi;
                }
            }
    }
}

static void transpose(float *a, int n)
{
    for (int y = 0; y < n; y++)
        for (int x = y + 1; x < n; x++) {
            float t = a[(size_t)y * n + x];
            a[(size_t)y * n + x] = a[(size_t)x * n + y];
            a[(size_t)x * n + y] = t;
        }
}

/* 2-D FFT of an N x N array: columns, then (transposed) rows.  The
 * inverse is not scaled (the callers fold 1/N^2 into what follows). */
static void fft2(const eml_scatter *s, float *re, float *im, int inverse)
{
    fft_cols(s, re, im, inverse);
    transpose(re, s->N);
    transpose(im, s->N);
    fft_cols(s, re, im, inverse);
    transpose(re, s->N);
    transpose(im, s->N);
}

/* ==== filters ==== */

/* A Morlet wavelet on the periodic N x N grid, then its spectrum. */
static eml_status morlet(eml_scatter *s, int j, int t, float *re, float *im)
{
    int n = s->N;
    double sigma = 0.8 * pow(2.0, j), xi = 0.75 * SC_PI / pow(2.0, j);
    double slant = 4.0 / s->L, theta = SC_PI * t / s->L;
    double ct = cos(theta), st = sin(theta);
    double *gr = malloc(sizeof(double) * (size_t)n * n * 3);
    if (gr == NULL) return EML_ERR_NOMEM;
    double *gi = gr + (size_t)n * n, *env = gi + (size_t)n * n;
    double sum_gr = 0, sum_gi = 0, sum_env = 0;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            double vr = 0, vi = 0, ve = 0;
            /* periodise over the neighbouring copies */
            for (int py = -1; py <= 1; py++)
                for (int px = -1; px <= 1; px++) {
                    double u = (x < n / 2 ? x : x - n) + px * n;
                    double v = (y < n / 2 ? y : y - n) + py * n;
                    double xr = ct * u + st * v, yr = -st * u + ct * v;
                    double e = exp(-(xr * xr + slant * slant * yr * yr) /
                                   (2 * sigma * sigma));
                    vr += e * cos(xi * xr);
                    vi += e * sin(xi * xr);
                    ve += e;
                }
            size_t k = (size_t)y * n + x;
            gr[k] = vr;
            gi[k] = vi;
            env[k] = ve;
            sum_gr += vr;
            sum_gi += vi;
            sum_env += ve;
        }
    /* Zero mean (the Morlet correction), then the usual normalisation. */
    double kr = sum_gr / sum_env, ki = sum_gi / sum_env;
    double norm = 2 * SC_PI * sigma * sigma / slant;
    for (size_t k = 0; k < (size_t)n * n; k++) {
        re[k] = (float)((gr[k] - kr * env[k]) / norm);
        im[k] = (float)((gi[k] - ki * env[k]) / norm);
    }
    free(gr);
    fft2(s, re, im, 0);
    return EML_OK;
}

eml_status eml_scatter_new(int h, int w, int J, int L, int groups,
                           eml_scatter **out)
{
    *out = NULL;
    if (J < 1 || J > 3 || L < 1 || L > 16 || h < 1 || w < 1 || h > 256 ||
        w > 256 || h % (1 << J) != 0 || w % (1 << J) != 0)
        return EML_ERR_INVALID;
    int K = eml_scatter_channels(J, L);
    if (groups < 0 || (groups > 0 && K % groups != 0)) return EML_ERR_INVALID;
    eml_scatter *s = calloc(1, sizeof(*s));
    if (s == NULL) return EML_ERR_NOMEM;
    s->h = h;
    s->w = w;
    s->J = J;
    s->L = L;
    s->groups = groups;
    s->K = K;
    s->stride = 1 << J;
    s->oh = h / s->stride;
    s->ow = w / s->stride;
    int big = (h > w ? h : w) + 4;
    s->N = 1;
    s->logN = 0;
    while (s->N < big) {
        s->N <<= 1;
        s->logN++;
    }
    s->pad_y = (s->N - h) / 2;
    s->pad_x = (s->N - w) / 2;
    s->nfilt = J * L;
    int n = s->N;
    double sig = 0.8 * s->stride;
    s->R = (int)ceil(3 * sig);
    if (2 * s->R + 1 > n) s->R = (n - 1) / 2;
    s->psi_re = malloc(sizeof(float) * (size_t)n * n * s->nfilt);
    s->psi_im = malloc(sizeof(float) * (size_t)n * n * s->nfilt);
    s->g = malloc(sizeof(float) * (size_t)(2 * s->R + 1));
    s->tw_re = malloc(sizeof(float) * (size_t)n);
    s->tw_im = malloc(sizeof(float) * (size_t)n);
    s->rev = malloc(sizeof(int) * (size_t)n);
    if (s->psi_re == NULL || s->psi_im == NULL || s->g == NULL ||
        s->tw_re == NULL || s->tw_im == NULL || s->rev == NULL) {
        eml_scatter_free(s);
        return EML_ERR_NOMEM;
    }
    for (int k = 0; k < n; k++) {
        s->tw_re[k] = (float)cos(2 * SC_PI * k / n);
        s->tw_im[k] = (float)sin(2 * SC_PI * k / n);
        int r = 0;
        for (int b = 0; b < s->logN; b++) r |= ((k >> b) & 1) << (s->logN - 1 - b);
        s->rev[k] = r;
    }
    double gs = 0;
    for (int k = -s->R; k <= s->R; k++) {
        double v = exp(-(double)k * k / (2 * sig * sig));
        s->g[k + s->R] = (float)v;
        gs += v;
    }
    for (int k = 0; k <= 2 * s->R; k++) s->g[k] = (float)(s->g[k] / gs);
    s->gx = calloc((size_t)s->ow * n, sizeof(float));
    s->gy = calloc((size_t)s->oh * n, sizeof(float));
    if (s->gx == NULL || s->gy == NULL) {
        eml_scatter_free(s);
        return EML_ERR_NOMEM;
    }
    for (int ox = 0; ox < s->ow; ox++) {
        int cx = s->pad_x + ox * s->stride + s->stride / 2 - 1;
        for (int k = -s->R; k <= s->R; k++)
            s->gx[(size_t)ox * n + (size_t)((cx + k + 2 * n) % n)] +=
                s->g[k + s->R];
    }
    for (int oy = 0; oy < s->oh; oy++) {
        int cy = s->pad_y + oy * s->stride + s->stride / 2 - 1;
        for (int k = -s->R; k <= s->R; k++)
            s->gy[(size_t)oy * n + (size_t)((cy + k + 2 * n) % n)] +=
                s->g[k + s->R];
    }
    for (int j = 0; j < J; j++)
        for (int t = 0; t < L; t++) {
            size_t f = (size_t)(j * L + t) * n * n;
            if (morlet(s, j, t, s->psi_re + f, s->psi_im + f) != EML_OK) {
                eml_scatter_free(s);
                return EML_ERR_NOMEM;
            }
        }
    *out = s;
    return EML_OK;
}

void eml_scatter_free(eml_scatter *s)
{
    if (s == NULL) return;
    free(s->psi_re);
    free(s->psi_im);
    free(s->g);
    free(s->gx);
    free(s->gy);
    free(s->tw_re);
    free(s->tw_im);
    free(s->rev);
    free(s);
}

size_t eml_scatter_out_size(const eml_scatter *s)
{
    return (size_t)s->K * s->oh * s->ow;
}

size_t eml_scatter_scratch_size(const eml_scatter *s)
{
    size_t nn = (size_t)s->N * s->N;
    return sizeof(float) * (7 * nn + (size_t)s->N * s->ow);
}

/* ==== forward ==== */

/* The Gaussian low-pass of u (N x N, periodic), at the output points
 * only: gy u gx^T, as dot products of length N. */
static void lowpass(const eml_scatter *s, const float *u, float scale,
                    float *out, float *tmp)
{
    int n = s->N;
    for (int y = 0; y < n; y++) {
        const float *row = u + (size_t)y * n;
        for (int ox = 0; ox < s->ow; ox++) {
            const float *g = s->gx + (size_t)ox * n;
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int x = 0; x < n; x++) acc += g[x] * row[x];
            tmp[(size_t)ox * n + y] = acc; /* (ow x N) */
        }
    }
    for (int oy = 0; oy < s->oh; oy++) {
        const float *g = s->gy + (size_t)oy * n;
        for (int ox = 0; ox < s->ow; ox++) {
            const float *col = tmp + (size_t)ox * n;
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int y = 0; y < n; y++) acc += g[y] * col[y];
            out[(size_t)oy * s->ow + ox] = acc * scale;
        }
    }
}

static int reflect(int i, int n)
{
    int p = 2 * n;
    i %= p;
    if (i < 0) i += p;
    return i < n ? i : p - 1 - i;
}

/* u = |ifft2(A * psi_f)| / N^2 */
static void wavelet_modulus(const eml_scatter *s, const float *ar,
                            const float *ai, int f, float *vr, float *vi,
                            float *u)
{
    size_t nn = (size_t)s->N * s->N;
    const float *pr = s->psi_re + (size_t)f * nn, *pi = s->psi_im + (size_t)f * nn;
    for (size_t k = 0; k < nn; k++) {
        vr[k] = ar[k] * pr[k] - ai[k] * pi[k];
        vi[k] = ar[k] * pi[k] + ai[k] * pr[k];
    }
    fft2(s, vr, vi, 1);
    float inv = 1.0f / (float)nn;
    for (size_t k = 0; k < nn; k++)
        u[k] = sqrtf(vr[k] * vr[k] + vi[k] * vi[k]) * inv;
}

void eml_scatter_forward(const eml_scatter *s, const float *img, float *out,
                         void *scratch)
{
    int n = s->N;
    size_t nn = (size_t)n * n, plane = (size_t)s->oh * s->ow;
    float *xr = scratch, *xi = xr + nn, *vr = xi + nn, *vi = vr + nn;
    float *u1 = vi + nn, *ur = u1 + nn, *ui = ur + nn, *tmp = ui + nn;
    for (int y = 0; y < n; y++) {
        int sy = reflect(y - s->pad_y, s->h);
        for (int x = 0; x < n; x++)
            xr[(size_t)y * n + x] =
                img[(size_t)sy * s->w + reflect(x - s->pad_x, s->w)];
    }
    float *o = out;
    lowpass(s, xr, 1.0f, o, tmp);
    o += plane;
    memset(xi, 0, nn * sizeof(float));
    fft2(s, xr, xi, 0);
    /* order 1, and order 2 from each first-order modulus */
    float *o2 = out + plane * (size_t)(1 + s->J * s->L);
    for (int j1 = 0; j1 < s->J; j1++)
        for (int t1 = 0; t1 < s->L; t1++) {
            wavelet_modulus(s, xr, xi, j1 * s->L + t1, vr, vi, u1);
            lowpass(s, u1, 1.0f, o, tmp);
            o += plane;
            if (j1 + 1 >= s->J) continue;
            memcpy(ur, u1, nn * sizeof(float));
            memset(ui, 0, nn * sizeof(float));
            fft2(s, ur, ui, 0);
            for (int j2 = j1 + 1; j2 < s->J; j2++)
                for (int t2 = 0; t2 < s->L; t2++) {
                    wavelet_modulus(s, ur, ui, j2 * s->L + t2, vr, vi, u1);
                    lowpass(s, u1, 1.0f, o2, tmp);
                    o2 += plane;
                }
        }
    if (s->groups <= 0) return;
    size_t gsz = (size_t)(s->K / s->groups) * plane;
    for (int g = 0; g < s->groups; g++) {
        float *p = out + (size_t)g * gsz;
        double m = 0, v = 0;
        for (size_t k = 0; k < gsz; k++) m += p[k];
        m /= (double)gsz;
        for (size_t k = 0; k < gsz; k++) v += (p[k] - m) * (p[k] - m);
        v /= (double)gsz;
        float inv = (float)(1.0 / sqrt(v + 1e-5));
        for (size_t k = 0; k < gsz; k++) p[k] = (float)(p[k] - m) * inv;
    }
}
