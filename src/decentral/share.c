/*
 * share.c - what a node sends of its flat parameter vector each round,
 * and Metropolis-Hastings averaging of what it received (decentral.h).
 *
 *   full       every parameter, dense;
 *   random:F   ceil(F n) parameters drawn afresh each round (a partial
 *              Fisher-Yates shuffle of a kept permutation: O(F n));
 *   topk:F     the ceil(F n) parameters that moved most since each was
 *              last shared (decentralizepy's PartialModel with
 *              accumulation): a parameter's change is measured from the
 *              value it had when last sent, and sending it resets that.
 *
 * Indices go out sorted.  Averaging follows the EPFL study's Algorithm 1:
 * a neighbour's weight applies to the parameters it sent; for the others
 * it stays with the node's own value.
 *
 * Trusted code: no I/O.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/decentral.h"

struct eml_sharer {
    eml_share_spec spec;
    size_t n;
    uint32_t k;     /* parameters per round */
    uint32_t *perm; /* random: a permutation; topk: scratch */
    uint32_t *idx;  /* the round's indices, sorted */
    float *val;     /* the round's values */
    float *base;    /* topk: each parameter's value when last shared */
};

eml_status eml_share_parse(const char *spec, int pad, eml_share_spec *s,
                           eml_err *err)
{
    memset(s, 0, sizeof(*s));
    s->pad = pad != 0;
    s->fraction = 1;
    if (strcmp(spec, "full") == 0) {
        s->kind = EML_SHARE_FULL;
        return EML_OK;
    }
    const char *arg = NULL;
    if (strncmp(spec, "random:", 7) == 0) {
        s->kind = EML_SHARE_RANDOM;
        arg = spec + 7;
    } else if (strncmp(spec, "topk:", 5) == 0) {
        s->kind = EML_SHARE_TOPK;
        arg = spec + 5;
    } else {
        return eml_err_set(err, EML_ERR_INVALID,
                           "sharing '%s' is not one of: full, random:F, "
                           "topk:F",
                           spec);
    }
    char *end;
    s->fraction = strtod(arg, &end);
    if (end == arg || *end != '\0' || !(s->fraction > 0 && s->fraction <= 1))
        return eml_err_set(err, EML_ERR_INVALID,
                           "sharing '%s': the fraction must be in (0, 1]",
                           spec);
    return EML_OK;
}

size_t eml_sharer_bytes(const eml_sharer *s)
{
    size_t n = 0;
    if (s->perm != NULL) n += s->n * sizeof(uint32_t);
    if (s->idx != NULL) n += (size_t)s->k * (sizeof(uint32_t) + sizeof(float));
    if (s->base != NULL) n += s->n * sizeof(float);
    return n;
}

void eml_sharer_free(eml_sharer *s)
{
    if (s == NULL) return;
    free(s->perm);
    free(s->idx);
    if (s->val != NULL) eml_wipe(s->val, s->k * sizeof(float));
    free(s->val);
    if (s->base != NULL) eml_wipe(s->base, s->n * sizeof(float));
    free(s->base);
    free(s);
}

eml_status eml_sharer_new(const eml_share_spec *spec, size_t n,
                          const float *initial, eml_sharer **out,
                          eml_err *err)
{
    *out = NULL;
    if (n < 1 || n > EML_DMSG_MAX_PARAMS)
        return eml_err_set(err, EML_ERR_RANGE,
                           "%zu parameters: at most %u can be shared", n,
                           EML_DMSG_MAX_PARAMS);
    eml_sharer *s = calloc(1, sizeof(*s));
    if (s == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    s->spec = *spec;
    s->n = n;
    double k = spec->kind == EML_SHARE_FULL ? (double)n
                                            : ceil(spec->fraction * (double)n);
    s->k = (uint32_t)(k < 1 ? 1 : k > (double)n ? (double)n : k);
    int ok = 1;
    if (spec->kind != EML_SHARE_FULL) {
        s->perm = malloc(n * sizeof(uint32_t));
        s->idx = malloc((size_t)s->k * sizeof(uint32_t));
        s->val = malloc((size_t)s->k * sizeof(float));
        ok = s->perm != NULL && s->idx != NULL && s->val != NULL;
        for (size_t i = 0; ok && i < n; i++) s->perm[i] = (uint32_t)i;
    }
    if (ok && spec->kind == EML_SHARE_TOPK) {
        s->base = malloc(n * sizeof(float));
        ok = s->base != NULL;
        if (ok) memcpy(s->base, initial, n * sizeof(float));
    }
    if (!ok) {
        eml_sharer_free(s);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return EML_OK;
}

uint32_t eml_sharer_count(const eml_sharer *s)
{
    return s->k;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Moves the k indices of perm (n) with the largest |x - base| to the
 * front (quickselect; ties by index so that the choice is deterministic). */
static void top_k(uint32_t *perm, size_t n, size_t k, const float *x,
                  const float *base)
{
    size_t lo = 0, hi = n; /* the k-th largest lies in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t pv = perm[lo + (hi - lo) / 2];
        float key = fabsf(x[pv] - base[pv]);
        /* three-way partition: greater, equal, smaller */
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            float v = fabsf(x[perm[i]] - base[perm[i]]);
            if (v > key || (v == key && perm[i] < pv)) {
                uint32_t t = perm[lt];
                perm[lt++] = perm[i];
                perm[i++] = t;
            } else if (v == key && perm[i] == pv) {
                i++;
            } else {
                uint32_t t = perm[--gt];
                perm[gt] = perm[i];
                perm[i] = t;
            }
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return;
    }
}

void eml_sharer_select(eml_sharer *s, const float *x, eml_rng *rng,
                       eml_share_view *v)
{
    memset(v, 0, sizeof(*v));
    v->total = (uint32_t)s->n;
    v->count = s->k;
    if (s->spec.kind == EML_SHARE_FULL) {
        v->val = x;
        return;
    }
    if (s->spec.kind == EML_SHARE_RANDOM) {
        for (uint32_t i = 0; i < s->k; i++) { /* partial Fisher-Yates */
            size_t j = i + (size_t)eml_rng_below(rng, s->n - i);
            uint32_t t = s->perm[i];
            s->perm[i] = s->perm[j];
            s->perm[j] = t;
        }
    } else {
        top_k(s->perm, s->n, s->k, x, s->base);
    }
    memcpy(s->idx, s->perm, (size_t)s->k * sizeof(uint32_t));
    qsort(s->idx, s->k, sizeof(uint32_t), cmp_u32);
    for (uint32_t i = 0; i < s->k; i++) {
        s->val[i] = x[s->idx[i]];
        if (s->base != NULL) s->base[s->idx[i]] = x[s->idx[i]];
    }
    v->idx = s->idx;
    v->val = s->val;
}

void eml_average(float *x, size_t n, uint32_t degree,
                 const eml_share_view *const *v, size_t k, double *scratch)
{
    memset(scratch, 0, n * sizeof(double));
    for (size_t m = 0; m < k; m++) {
        const eml_share_view *s = v[m];
        if (s->total != n) continue;
        double w = eml_mh_weight(degree, s->degree);
        if (s->idx == NULL) {
            for (uint32_t i = 0; i < s->count && i < n; i++)
                scratch[i] += w * ((double)s->val[i] - x[i]);
        } else {
            for (uint32_t i = 0; i < s->count; i++) {
                uint32_t p = s->idx[i];
                if (p < n) scratch[p] += w * ((double)s->val[i] - x[p]);
            }
        }
    }
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] + scratch[i]);
}
