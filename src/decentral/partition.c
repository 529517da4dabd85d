/*
 * partition.c - a labelled data set split over the nodes (decentral.h):
 * iid, shards:S (decentralizepy's non-IID split: sorted by label, cut into
 * nodes*S equal shards, S at random to each node) and dirichlet:ALPHA
 * (per class, proportions from a symmetric Dirichlet over the nodes).
 * Seeded, so that every node of a run computes the same split.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/decentral.h"

static double uniform01(eml_rng *r) /* (0, 1) */
{
    return ((double)(eml_rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

static double normal(eml_rng *r)
{
    return sqrt(-2.0 * log(uniform01(r))) * cos(6.283185307179586 *
                                                 uniform01(r));
}

/* Gamma(a, 1), Marsaglia and Tsang; a < 1 through Gamma(a + 1) U^(1/a). */
static double gamma_draw(eml_rng *r, double a)
{
    if (a < 1) return gamma_draw(r, a + 1) * pow(uniform01(r), 1.0 / a);
    double d = a - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = uniform01(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v;
    }
}

/* Stable order of the indices by label. */
static void by_label(const uint8_t *labels, size_t count, uint32_t classes,
                     uint32_t *out)
{
    size_t k = 0;
    for (uint32_t c = 0; c < classes; c++)
        for (size_t i = 0; i < count; i++)
            if (labels[i] == c) out[k++] = (uint32_t)i;
}

/* Deals the shards: node i gets shards perm[i*s .. i*s+s). */
static int shards(const uint32_t *sorted, size_t count, uint32_t nodes,
                  uint32_t s, eml_rng *r, uint32_t *off, uint32_t *idx)
{
    size_t ns = (size_t)nodes * s;
    uint32_t *perm = malloc(ns * sizeof(uint32_t));
    if (perm == NULL) return -1;
    for (size_t i = 0; i < ns; i++) perm[i] = (uint32_t)i;
    eml_rng_shuffle(r, perm, ns);
    size_t k = 0;
    for (uint32_t node = 0; node < nodes; node++) {
        off[node] = (uint32_t)k;
        for (uint32_t j = 0; j < s; j++) {
            size_t sh = perm[(size_t)node * s + j];
            size_t lo = sh * count / ns, hi = (sh + 1) * count / ns;
            for (size_t e = lo; e < hi; e++) idx[k++] = sorted[e];
        }
    }
    off[nodes] = (uint32_t)k;
    free(perm);
    return 0;
}

/* Per class, Dirichlet(alpha) proportions cut its examples into the
 * nodes' parts; the parts are then gathered node by node. */
static int dirichlet(const uint8_t *labels, const uint32_t *sorted,
                     size_t count, uint32_t classes, uint32_t nodes,
                     double alpha, eml_rng *r, uint32_t *off, uint32_t *idx)
{
    /* cut[c][j]: the end of node j's part of class c, within class c */
    size_t *cut = malloc((size_t)classes * nodes * sizeof(size_t));
    size_t *start = calloc((size_t)classes + 1, sizeof(size_t));
    double *p = malloc((size_t)nodes * sizeof(double));
    if (cut == NULL || start == NULL || p == NULL) {
        free(cut);
        free(start);
        free(p);
        return -1;
    }
    for (size_t i = 0; i < count; i++) start[labels[i] + 1]++;
    for (uint32_t c = 0; c < classes; c++) start[c + 1] += start[c];
    for (uint32_t c = 0; c < classes; c++) {
        double sum = 0;
        for (uint32_t j = 0; j < nodes; j++) sum += p[j] = gamma_draw(r, alpha);
        size_t n = start[c + 1] - start[c];
        double acc = 0;
        for (uint32_t j = 0; j < nodes; j++) {
            acc += p[j];
            cut[(size_t)c * nodes + j] =
                j + 1 == nodes ? n : (size_t)floor(n * (acc / sum));
        }
    }
    size_t k = 0;
    for (uint32_t j = 0; j < nodes; j++) {
        off[j] = (uint32_t)k;
        for (uint32_t c = 0; c < classes; c++) {
            size_t lo = j == 0 ? 0 : cut[(size_t)c * nodes + j - 1];
            size_t hi = cut[(size_t)c * nodes + j];
            for (size_t e = lo; e < hi; e++) idx[k++] = sorted[start[c] + e];
        }
    }
    off[nodes] = (uint32_t)k;
    free(cut);
    free(start);
    free(p);
    return 0;
}

eml_status eml_partition(const char *spec, const uint8_t *labels,
                         size_t count, uint32_t classes, uint32_t nodes,
                         uint64_t seed, uint32_t **off_out,
                         uint32_t **idx_out, eml_err *err)
{
    *off_out = *idx_out = NULL;
    if (nodes < 1 || nodes > EML_DECENTRAL_MAX_NODES || count < nodes ||
        count > UINT32_MAX || classes < 1 || classes > 256)
        return eml_err_set(err, EML_ERR_RANGE,
                           "cannot split %zu examples over %u nodes", count,
                           nodes);
    for (size_t i = 0; i < count; i++)
        if (labels[i] >= classes)
            return eml_err_set(err, EML_ERR_RANGE,
                               "label %u of example %zu is not below %u",
                               labels[i], i, classes);
    uint32_t *off = malloc(((size_t)nodes + 1) * sizeof(uint32_t));
    uint32_t *idx = malloc(count * sizeof(uint32_t));
    uint32_t *sorted = malloc(count * sizeof(uint32_t));
    if (off == NULL || idx == NULL || sorted == NULL) {
        free(off);
        free(idx);
        free(sorted);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    eml_rng r;
    eml_rng_seed(&r, seed ^ 0x70617274ULL);
    eml_status st = EML_OK;
    char *end;
    if (strcmp(spec, "iid") == 0) {
        for (size_t i = 0; i < count; i++) idx[i] = (uint32_t)i;
        eml_rng_shuffle(&r, idx, count);
        for (uint32_t j = 0; j <= nodes; j++)
            off[j] = (uint32_t)((size_t)j * count / nodes);
    } else if (strncmp(spec, "shards:", 7) == 0) {
        unsigned long s = strtoul(spec + 7, &end, 10);
        if (end == spec + 7 || *end != '\0' || s < 1 ||
            (size_t)s * nodes > count)
            st = eml_err_set(err, EML_ERR_INVALID,
                             "partition '%s': shards:S needs 1 <= S and S "
                             "* %u nodes <= %zu examples",
                             spec, nodes, count);
        else {
            by_label(labels, count, classes, sorted);
            if (shards(sorted, count, nodes, (uint32_t)s, &r, off, idx) != 0)
                st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        }
    } else if (strncmp(spec, "dirichlet:", 10) == 0) {
        double a = strtod(spec + 10, &end);
        if (end == spec + 10 || *end != '\0' || !(a > 0 && a <= 1e6))
            st = eml_err_set(err, EML_ERR_INVALID,
                             "partition '%s': dirichlet:ALPHA needs 0 < "
                             "ALPHA <= 1e6",
                             spec);
        else {
            by_label(labels, count, classes, sorted);
            if (dirichlet(labels, sorted, count, classes, nodes, a, &r, off,
                          idx) != 0)
                st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
        }
    } else {
        st = eml_err_set(err, EML_ERR_INVALID,
                         "partition '%s' is not one of: iid, shards:S, "
                         "dirichlet:ALPHA",
                         spec);
    }
    free(sorted);
    if (st != EML_OK) {
        free(off);
        free(idx);
        return st;
    }
    *off_out = off;
    *idx_out = idx;
    return EML_OK;
}
