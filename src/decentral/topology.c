/*
 * topology.c - the graphs nodes run on (decentral.h): ring, full, random
 * D-regular (pairing model, redrawn until simple), Watts-Strogatz small
 * worlds, and edge lists from a file.  Built as an adjacency matrix (at
 * most EML_DECENTRAL_MAX_NODES^2 bits' worth of bytes) and kept as
 * sorted neighbour lists.  Seeded: every node of a run derives the same
 * graph from the same seed.
 *
 * Trusted code: no I/O.
 */
#include <stdlib.h>
#include <string.h>

#include "core/lines.h"
#include "enclaveml/decentral.h"

/* The n x n adjacency matrix, zeroed, for n in range. */
static eml_status matrix_new(uint32_t n, uint8_t **adj, eml_err *err)
{
    *adj = NULL;
    if (n < 1 || n > EML_DECENTRAL_MAX_NODES)
        return eml_err_set(err, EML_ERR_RANGE, "%u nodes: 1..%u allowed", n,
                           EML_DECENTRAL_MAX_NODES);
    *adj = calloc((size_t)n * n, 1);
    return *adj == NULL ? eml_err_set(err, EML_ERR_NOMEM, "out of memory")
                        : EML_OK;
}

static eml_status from_matrix(const uint8_t *adj, uint32_t n, eml_topo *t)
{
    size_t edges = 0;
    for (size_t i = 0; i < (size_t)n * n; i++) edges += adj[i];
    t->n = n;
    t->off = malloc(((size_t)n + 1) * sizeof(uint32_t));
    t->nbr = malloc((edges ? edges : 1) * sizeof(uint32_t));
    if (t->off == NULL || t->nbr == NULL) {
        eml_topo_free(t);
        return EML_ERR_NOMEM;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        t->off[i] = k;
        for (uint32_t j = 0; j < n; j++)
            if (adj[(size_t)i * n + j]) t->nbr[k++] = j;
    }
    t->off[n] = k;
    return EML_OK;
}

static void add_edge(uint8_t *adj, uint32_t n, uint32_t i, uint32_t j)
{
    adj[(size_t)i * n + j] = adj[(size_t)j * n + i] = 1;
}

/* The pairing model: n*d stubs shuffled and paired; drawn again until
 * the pairs make a simple graph. */
static int regular(uint8_t *adj, uint32_t n, uint32_t d, eml_rng *r)
{
    size_t stubs = (size_t)n * d;
    uint32_t *s = malloc(stubs * sizeof(uint32_t));
    if (s == NULL) return -1;
    for (int attempt = 0; attempt < 100000; attempt++) {
        memset(adj, 0, (size_t)n * n);
        for (size_t i = 0; i < stubs; i++) s[i] = (uint32_t)(i / d);
        eml_rng_shuffle(r, s, stubs);
        int simple = 1;
        for (size_t i = 0; i + 1 < stubs && simple; i += 2) {
            uint32_t a = s[i], b = s[i + 1];
            if (a == b || adj[(size_t)a * n + b]) simple = 0;
            else add_edge(adj, n, a, b);
        }
        if (simple) {
            free(s);
            return 0;
        }
    }
    free(s);
    return 1;
}

/* Watts-Strogatz: each node linked to k/2 neighbours on each side of a
 * ring, then each of those edges (i, i + j) moved with probability p to
 * (i, u), u uniform among the nodes not yet linked to i. */
static void small_world(uint8_t *adj, uint32_t n, uint32_t k, double p,
                        eml_rng *r)
{
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 1; j <= k / 2; j++) add_edge(adj, n, i, (i + j) % n);
    for (uint32_t j = 1; j <= k / 2; j++)
        for (uint32_t i = 0; i < n; i++) {
            uint32_t v = (i + j) % n;
            if ((double)eml_rng_uniform(r) >= p) continue;
            uint32_t free_nodes = 0;
            for (uint32_t u = 0; u < n; u++)
                free_nodes += u != i && !adj[(size_t)i * n + u];
            if (free_nodes == 0 || !adj[(size_t)i * n + v]) continue;
            uint32_t pick = (uint32_t)eml_rng_below(r, free_nodes), u = 0;
            for (;; u++)
                if (u != i && !adj[(size_t)i * n + u] && pick-- == 0) break;
            adj[(size_t)i * n + v] = adj[(size_t)v * n + i] = 0;
            add_edge(adj, n, i, u);
        }
}

/* "name:a" or "name:a,b" -> the numbers after the colon. */
static int args(const char *spec, const char *name, double *a, double *b)
{
    size_t len = strlen(name);
    if (strncmp(spec, name, len) != 0 || spec[len] != ':') return 0;
    char *end;
    *a = strtod(spec + len + 1, &end);
    if (end == spec + len + 1) return -1;
    if (b == NULL) return *end == '\0' ? 1 : -1;
    if (*end != ',') return -1;
    const char *q = end + 1;
    *b = strtod(q, &end);
    return end != q && *end == '\0' ? 1 : -1;
}

eml_status eml_topo_make(const char *spec, uint32_t n, uint64_t seed,
                         eml_topo *t, eml_err *err)
{
    memset(t, 0, sizeof(*t));
    uint8_t *adj;
    eml_status st0 = matrix_new(n, &adj, err);
    if (st0 != EML_OK) return st0;
    eml_rng r;
    eml_rng_seed(&r, seed ^ 0x746f706fULL);
    double a = 0, b = 0;
    eml_status st = EML_OK;
    int kind;
    if (strcmp(spec, "ring") == 0) {
        for (uint32_t i = 0; n > 1 && i < n; i++) add_edge(adj, n, i, (i + 1) % n);
    } else if (strcmp(spec, "full") == 0) {
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = i + 1; j < n; j++) add_edge(adj, n, i, j);
    } else if ((kind = args(spec, "regular", &a, NULL)) != 0) {
        uint32_t d = (uint32_t)a;
        if (kind < 0 || a != (double)d || d < 1 || d >= n ||
            ((uint64_t)n * d) % 2 != 0)
            st = eml_err_set(err, EML_ERR_INVALID,
                             "topology '%s': regular:D needs 1 <= D < %u "
                             "nodes and nodes * D even",
                             spec, n);
        else if (regular(adj, n, d, &r) != 0)
            st = eml_err_set(err, EML_ERR_RANGE,
                             "topology '%s': no simple %u-regular graph "
                             "found on %u nodes",
                             spec, d, n);
    } else if ((kind = args(spec, "smallworld", &a, &b)) != 0) {
        uint32_t k = (uint32_t)a;
        if (kind < 0 || a != (double)k || k < 2 || k % 2 != 0 || k >= n ||
            !(b >= 0 && b <= 1))
            st = eml_err_set(err, EML_ERR_INVALID,
                             "topology '%s': smallworld:K,P needs an even "
                             "2 <= K < %u nodes and 0 <= P <= 1",
                             spec, n);
        else
            small_world(adj, n, k, b, &r);
    } else {
        st = eml_err_set(err, EML_ERR_INVALID,
                         "topology '%s' is not one of: ring, full, "
                         "regular:D, smallworld:K,P (or an edge-list file)",
                         spec);
    }
    if (st == EML_OK && from_matrix(adj, n, t) != EML_OK)
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    free(adj);
    return st;
}

eml_status eml_topo_parse(const char *text, size_t len, const char *name,
                          uint32_t n, eml_topo *t, eml_err *err)
{
    memset(t, 0, sizeof(*t));
    uint8_t *adj;
    eml_status st0 = matrix_new(n, &adj, err);
    if (st0 != EML_OK) return st0;
    eml_status st = EML_OK;
    size_t pos = 0;
    char buf[128];
    for (int line = 1;
         st == EML_OK && eml_next_line(text, len, &pos, buf, sizeof(buf));
         line++) {
        char *p = buf, *q;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p == '\0') continue;
        unsigned long i = strtoul(p, &q, 10), j;
        int ok = q != p && (*q == ' ' || *q == '\t');
        if (ok) {
            p = q;
            j = strtoul(p, &q, 10);
            ok = q != p;
            while (ok && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
            ok = ok && *q == '\0' && i < n && j < n && i != j;
        }
        if (!ok)
            st = eml_err_set(err, EML_ERR_FORMAT,
                             "%s:%d: expected \"i j\", two different node "
                             "ids below %u",
                             name, line, n);
        else
            add_edge(adj, n, (uint32_t)i, (uint32_t)j);
    }
    if (st == EML_OK && from_matrix(adj, n, t) != EML_OK)
        st = eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    free(adj);
    return st;
}

int eml_topo_connected(const eml_topo *t)
{
    if (t->n == 0) return 0;
    uint8_t *seen = calloc(t->n, 1);
    uint32_t *queue = malloc((size_t)t->n * sizeof(uint32_t));
    if (seen == NULL || queue == NULL) {
        free(seen);
        free(queue);
        return 0;
    }
    size_t head = 0, tail = 0, reached = 1;
    seen[0] = 1;
    queue[tail++] = 0;
    while (head < tail) {
        uint32_t i = queue[head++];
        for (uint32_t e = t->off[i]; e < t->off[i + 1]; e++)
            if (!seen[t->nbr[e]]) {
                seen[t->nbr[e]] = 1;
                queue[tail++] = t->nbr[e];
                reached++;
            }
    }
    free(seen);
    free(queue);
    return reached == t->n;
}

int eml_topo_has_edge(const eml_topo *t, uint32_t i, uint32_t j)
{
    if (i >= t->n || j >= t->n) return 0;
    uint32_t lo = t->off[i], hi = t->off[i + 1];
    while (lo < hi) { /* sorted */
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->nbr[mid] == j) return 1;
        if (t->nbr[mid] < j) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

void eml_topo_free(eml_topo *t)
{
    if (t == NULL) return;
    free(t->off);
    free(t->nbr);
    t->off = t->nbr = NULL;
    t->n = 0;
}
