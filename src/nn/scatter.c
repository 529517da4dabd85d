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
    float *tw_re, *tw_im;      /* N/2 twiddles exp(-2 pi i k / N) */
    int *rev;                  /* bit reversal of 0..N-1 */
};

int eml_scatter_channels(int J, int L)
{
    return 1 + J * L + L * L * J * (J - 1) / 2;
}

/* ==== FFT ==== */

/* In-place radix-2 FFT of n = s->N complex values at stride st. */
static void fft1(const eml_scatter *s, float *re, float *im, size_t st,
                 int inverse)
{
    int n = s->N;
    for (int i = 0; i < n; i++) {
        int j = s->rev[i];
        if (j > i) {
            float t = re[(size_t)i * st];
            re[(size_t)i * st] = re[(size_t)j * st];
            re[(size_t)j * st] = t;
            t = im[(size_t)i * st];
            im[(size_t)i * st] = im[(size_t)j * st];
            im[(size_t)j * st] = t;
        }
    }
    float sgn = inverse ? 1.0f : -1.0f;
    for (int len = 2; len <= n; len <<= 1) {
        int half = len >> 1, step = n / len;
        for (int i = 0; i < n; i += len) {
            for (int k = 0; k < half; k++) {
                /* exp(-+2 pi i k step / N): forward -, inverse + */
                float wr = s->tw_re[k * step], wi = sgn * s->tw_im[k * step];
                size_t a = (size_t)(i + k) * st, b = (size_t)(i + k + half) * st;
                float xr = re[b] * wr - im[b] * wi;
                float xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
    }
}

/* 2-D FFT of an N x N array: rows, then columns.  The inverse is not
 * scaled (the callers fold 1/N^2 into what follows). */
static void fft2(const eml_scatter *s, float *re, float *im, int inverse)
{
    int n = s->N;
    for (int r = 0; r < n; r++)
        fft1(s, re + (size_t)r * n, im + (size_t)r * n, 1, inverse);
    for (int c = 0; c < n; c++) fft1(s, re + c, im + c, (size_t)n, inverse);
}

/* ==== filters ==== */

/* A Morlet wavelet on the periodic N x N grid, then its spectrum. */
static void morlet(eml_scatter *s, int j, int t, float *re, float *im)
{
    int n = s->N;
    double sigma = 0.8 * pow(2.0, j), xi = 0.75 * SC_PI / pow(2.0, j);
    double slant = 4.0 / s->L, theta = SC_PI * t / s->L;
    double ct = cos(theta), st = sin(theta);
    double *gr = malloc(sizeof(double) * (size_t)n * n * 3);
    if (gr == NULL) return; /* caller checks psi arrays instead */
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
    for (int j = 0; j < J; j++)
        for (int t = 0; t < L; t++) {
            size_t f = (size_t)(j * L + t) * n * n;
            memset(s->psi_re + f, 0, sizeof(float) * (size_t)n * n);
            memset(s->psi_im + f, 0, sizeof(float) * (size_t)n * n);
            morlet(s, j, t, s->psi_re + f, s->psi_im + f);
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

/* The Gaussian low-pass of u (N x N, periodic), at the output points only,
 * scaled by `scale`. */
static void lowpass(const eml_scatter *s, const float *u, float scale,
                    float *out, float *tmp)
{
    int n = s->N, R = s->R, st = s->stride;
    for (int y = 0; y < n; y++)
        for (int ox = 0; ox < s->ow; ox++) {
            int cx = s->pad_x + ox * st + st / 2 - 1;
            float acc = 0;
            for (int k = -R; k <= R; k++)
                acc += s->g[k + R] * u[(size_t)y * n + (size_t)((cx + k + n) % n)];
            tmp[(size_t)y * s->ow + ox] = acc;
        }
    for (int oy = 0; oy < s->oh; oy++) {
        int cy = s->pad_y + oy * st + st / 2 - 1;
        for (int ox = 0; ox < s->ow; ox++) {
            float acc = 0;
            for (int k = -R; k <= R; k++)
                acc += s->g[k + R] * tmp[(size_t)((cy + k + n) % n) * s->ow + ox];
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
