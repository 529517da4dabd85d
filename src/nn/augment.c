/*
 * augment.c - Darknet's geometric data augmentation of training images,
 * done inside the enclave on the decrypted examples ([net] keys flip,
 * min_crop, max_crop, angle, aspect; docs/cfg.md).
 *
 * Darknet's classifier (data.c, random_augment_image) draws per image:
 *   aspect a between 1 and aspect, inverted half the time;
 *   r in [min_crop, max_crop], and scales the image by s = r / min(h, w a)
 *   so that its smaller side becomes r;
 *   an angle in [-angle, angle] degrees;
 *   a shift within the margin the scaling made on each side;
 * and samples the h x w output bilinearly from the rotated, scaled,
 * shifted image (zero outside it), then mirrors it left to right half the
 * time.  Its offset dy uses the width where the height is meant; here it
 * is the height (the same on square inputs).
 *
 * The draws of example b in step t come from a generator seeded with
 * (seed, t, b) alone, so a run resumed from the mirror augments exactly as
 * the uninterrupted one did, with no generator state to save.
 *
 * Trusted code: no I/O.  Layout: channels, then rows (CHW), as the input.
 */
#include <math.h>
#include <string.h>

#include "enclaveml/rng.h"
#include "nn/train_internal.h"

static float uniform_in(eml_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * eml_rng_uniform(r);
}

/* Bilinear sample of plane p (h x w bytes) at (x, y); zero outside. */
static float sample(const uint8_t *p, int h, int w, float x, float y)
{
    float fx = floorf(x), fy = floorf(y);
    int x0 = (int)fx, y0 = (int)fy;
    float dx = x - fx, dy = y - fy;
    float v = 0;
    for (int j = 0; j < 2; j++) {
        int yy = y0 + j;
        if (yy < 0 || yy >= h) continue;
        float wy = j ? dy : 1.0f - dy;
        for (int i = 0; i < 2; i++) {
            int xx = x0 + i;
            if (xx < 0 || xx >= w) continue;
            float wx = i ? dx : 1.0f - dx;
            v += wx * wy * (float)p[(size_t)yy * (size_t)w + (size_t)xx];
        }
    }
    return v;
}

/* The sampling transform of one image: output (x, y) reads the source at
 * (cx + c ux - s uy, cy + s ux + c uy) with ux = (x - w/2 + dx) a / scale,
 * uy = (y - h/2 + dy) / scale. */
typedef struct warp {
    float cs, sn, scale, a, dx, dy;
} warp;

static void draw_warp(const eml_augment_cfg *ac, eml_rng *r, int h, int w,
                      warp *wp)
{
    float a = uniform_in(r, 1.0f, ac->aspect);
    if (eml_rng_uniform(r) < 0.5f) a = 1.0f / a;
    int lo = ac->min_crop, hi = ac->max_crop;
    int size = lo + (int)eml_rng_below(r, (uint64_t)(hi - lo + 1));
    float wa = (float)w * a;
    float side = (float)h < wa ? (float)h : wa;
    wp->scale = (float)size / side;
    float rad = uniform_in(r, -ac->angle, ac->angle) *
                (float)(3.14159265358979323846 / 180.0);
    wp->cs = cosf(rad);
    wp->sn = sinf(rad);
    wp->a = a;
    float mx = ((float)w * wp->scale / a - (float)w) / 2.0f;
    float my = ((float)h * wp->scale - (float)h) / 2.0f;
    if (mx < 0) mx = -mx;
    if (my < 0) my = -my;
    wp->dx = uniform_in(r, -mx, mx);
    wp->dy = uniform_in(r, -my, my);
}

static void warp_image(const uint8_t *src, int c, int h, int w,
                       const warp *wp, float *dst)
{
    float cx = (float)w / 2.0f, cy = (float)h / 2.0f;
    for (int y = 0; y < h; y++) {
        float uy = ((float)y - cy + wp->dy) / wp->scale;
        for (int x = 0; x < w; x++) {
            float ux = ((float)x - cx + wp->dx) / wp->scale * wp->a;
            float sx = wp->cs * ux - wp->sn * uy + cx;
            float sy = wp->sn * ux + wp->cs * uy + cy;
            for (int k = 0; k < c; k++)
                dst[((size_t)k * (size_t)h + (size_t)y) * (size_t)w +
                    (size_t)x] =
                    sample(src + (size_t)k * (size_t)h * (size_t)w, h, w, sx,
                           sy) *
                    (1.0f / 255.0f);
        }
    }
}

static void mirror(float *x, int c, int h, int w)
{
    for (int r = 0; r < c * h; r++) {
        float *row = x + (size_t)r * (size_t)w;
        for (int i = 0, j = w - 1; i < j; i++, j--) {
            float t = row[i];
            row[i] = row[j];
            row[j] = t;
        }
    }
}

void eml_augment_image(const eml_augment_cfg *ac, uint64_t seed, long step,
                       int b, const uint8_t *src, int c, int h, int w,
                       float *dst)
{
    eml_rng r;
    eml_rng_seed(&r, seed ^ ((uint64_t)step * 0x9e3779b97f4a7c15ULL) ^
                         ((uint64_t)(unsigned)b << 40) ^
                         0xa0761d6478bd642fULL);
    size_t n = (size_t)c * (size_t)h * (size_t)w;
    if (ac->crop) {
        warp wp;
        draw_warp(ac, &r, h, w, &wp);
        warp_image(src, c, h, w, &wp, dst);
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = (float)src[i] * (1.0f / 255.0f);
    }
    if (ac->flip && eml_rng_uniform(&r) < 0.5f) mirror(dst, c, h, w);
}
