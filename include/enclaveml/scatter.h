/*
 * scatter.h - a fixed 2-D scattering transform (Mallat 2012; Bruna and
 * Mallat 2013), the hand-crafted features that Tramer and Boneh (2021)
 * showed DP-SGD learns on much better than on raw pixels.
 *
 * For an image x (one channel, h x w, h and w multiples of 2^J):
 *   S0 = x * phi_J,  S1[j1,t1] = |x * psi_{j1,t1}| * phi_J,
 *   S2[j1,t1,j2,t2] = ||x * psi_{j1,t1}| * psi_{j2,t2}| * phi_J  (j2 > j1),
 * each subsampled by 2^J: K = 1 + J L + L^2 J (J - 1) / 2 channels of
 * (h / 2^J) x (w / 2^J) values (81 x 7 x 7 for J = 2, L = 8 on 28 x 28).
 * psi_{j,t} are Morlet wavelets (sigma 0.8 * 2^j, centre frequency
 * 3 pi / (4 * 2^j), slant 4 / L, angle t pi / L); phi_J is a Gaussian of
 * sigma 0.8 * 2^J.  Convolutions are periodic on the image reflect-padded
 * to the next power of two (FFTs), the low-pass is separable and applied
 * only at the output points.  Each example's output is then normalised
 * per group of channels (group normalisation without learned parameters,
 * so the features stay a fixed, per-example function: no privacy cost).
 *
 * Trusted code: no I/O, no allocation after eml_scatter_new.
 */
#ifndef ENCLAVEML_SCATTER_H
#define ENCLAVEML_SCATTER_H

#include <stddef.h>

#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct eml_scatter eml_scatter;

/* Number of output channels for J scales and L angles. */
int eml_scatter_channels(int J, int L);

/* h, w: image size (multiples of 2^J, at most 256); J in 1..3; L in 1..16;
 * groups divides the channel count (0: no normalisation). */
EML_MUST_CHECK eml_status eml_scatter_new(int h, int w, int J, int L,
                                          int groups, eml_scatter **out);
void eml_scatter_free(eml_scatter *s);
size_t eml_scatter_out_size(const eml_scatter *s); /* K * oh * ow */
/* Bytes of scratch memory one eml_scatter_forward call needs. */
size_t eml_scatter_scratch_size(const eml_scatter *s);
/* One image (h * w floats) to K * oh * ow features, C,H,W order.  scratch
 * holds eml_scatter_scratch_size bytes (one per thread). */
void eml_scatter_forward(const eml_scatter *s, const float *img, float *out,
                         void *scratch);

#ifdef __cplusplus
}
#endif
#endif
