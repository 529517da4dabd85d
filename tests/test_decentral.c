/*
 * test_decentral.c - decentralized learning's trusted parts
 * (decentral.h): topologies (degrees, symmetry, connectivity, seeds, edge
 * lists, bad specs), partitions (every example once; the non-IID splits
 * skewed as they should be), sharing (counts, fresh random sets, top-k by
 * change since last shared), Metropolis-Hastings averaging against a
 * direct computation over small graphs, full and sparse, and the channel:
 * a round trip each way, and every tampering class refused and named.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/decentral.h"

/* ==== topologies ==== */

static void check_simple(const eml_topo *t)
{
    for (uint32_t i = 0; i < t->n; i++)
        for (uint32_t e = t->off[i]; e < t->off[i + 1]; e++) {
            uint32_t j = t->nbr[e];
            assert_true(j != i && j < t->n);
            assert_true(eml_topo_has_edge(t, j, i)); /* symmetric */
            if (e > t->off[i]) assert_true(t->nbr[e - 1] < j); /* sorted */
        }
}

static void test_topologies(void **state)
{
    (void)state;
    eml_topo t;
    eml_err err = {0};
    assert_int_equal(eml_topo_make("ring", 16, 1, &t, &err), EML_OK);
    check_simple(&t);
    for (uint32_t i = 0; i < 16; i++) assert_int_equal(eml_topo_degree(&t, i), 2);
    assert_true(eml_topo_connected(&t));
    eml_topo_free(&t);
    assert_int_equal(eml_topo_make("full", 7, 1, &t, &err), EML_OK);
    for (uint32_t i = 0; i < 7; i++) assert_int_equal(eml_topo_degree(&t, i), 6);
    eml_topo_free(&t);
    /* regular:4 on 16 nodes: simple, every degree 4, the same for a seed
     * and another for another seed */
    eml_topo u, v;
    assert_int_equal(eml_topo_make("regular:4", 16, 7, &t, &err), EML_OK);
    assert_int_equal(eml_topo_make("regular:4", 16, 7, &u, &err), EML_OK);
    assert_int_equal(eml_topo_make("regular:4", 16, 8, &v, &err), EML_OK);
    check_simple(&t);
    for (uint32_t i = 0; i < 16; i++) assert_int_equal(eml_topo_degree(&t, i), 4);
    assert_memory_equal(t.nbr, u.nbr, 64 * sizeof(uint32_t));
    assert_true(memcmp(t.nbr, v.nbr, 64 * sizeof(uint32_t)) != 0);
    eml_topo_free(&t);
    eml_topo_free(&u);
    eml_topo_free(&v);
    /* Watts-Strogatz keeps the number of edges */
    assert_int_equal(eml_topo_make("smallworld:4,0.3", 20, 3, &t, &err), EML_OK);
    check_simple(&t);
    assert_int_equal(t.off[20], 20 * 4);
    eml_topo_free(&t);
    /* an edge list, with a comment, a duplicate, a blank line */
    const char *txt = "# two triangles joined\n0 1\n1 2\n2 0\n\n3 4\n4 5\n5 3\n"
                      "2 3  # the bridge\n1 0\n";
    assert_int_equal(eml_topo_parse(txt, strlen(txt), "g.txt", 6, &t, &err),
                     EML_OK);
    check_simple(&t);
    assert_int_equal(t.off[6], 14);
    assert_true(eml_topo_connected(&t));
    eml_topo_free(&t);
    const char *split = "0 1\n2 3\n";
    assert_int_equal(eml_topo_parse(split, strlen(split), "s", 4, &t, &err),
                     EML_OK);
    assert_false(eml_topo_connected(&t));
    eml_topo_free(&t);
    /* errors, each naming what is wrong */
    const char *bad[][2] = {{"regular:3", "nodes * D even"},
                            {"regular:16", "D < 16"},
                            {"smallworld:3,0.1", "even"},
                            {"smallworld:4,2", "P <= 1"},
                            {"star", "is not one of"}};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        memset(&err, 0, sizeof(err));
        uint32_t n = strcmp(bad[b][0], "regular:3") == 0 ? 15 : 16;
        assert_int_not_equal(eml_topo_make(bad[b][0], n, 1, &t, &err), EML_OK);
        if (strstr(err.msg, bad[b][1]) == NULL) fail_msg("%s: %s", bad[b][0], err.msg);
    }
    const char *badlines[] = {"0 0\n", "0 9\n", "0\n", "a b\n", "0 1 2\n"};
    for (size_t b = 0; b < sizeof(badlines) / sizeof(badlines[0]); b++) {
        memset(&err, 0, sizeof(err));
        assert_int_not_equal(eml_topo_parse(badlines[b], strlen(badlines[b]),
                                            "e.txt", 4, &t, &err),
                             EML_OK);
        assert_non_null(strstr(err.msg, "e.txt:1"));
    }
}

/* ==== partitions ==== */

static void test_partitions(void **state)
{
    (void)state;
    enum { N = 6000, NODES = 16, C = 10 };
    static uint8_t labels[N];
    eml_rng r;
    eml_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)eml_rng_below(&r, C);
    const char *specs[] = {"iid", "shards:2", "dirichlet:0.1", "dirichlet:100"};
    double mean_classes[4];
    for (int s = 0; s < 4; s++) {
        uint32_t *off, *idx;
        eml_err err = {0};
        assert_int_equal(eml_partition(specs[s], labels, N, C, NODES, 9, &off,
                                       &idx, &err),
                         EML_OK);
        assert_int_equal(off[0], 0);
        assert_int_equal(off[NODES], N);
        static uint8_t seen[N];
        memset(seen, 0, sizeof(seen));
        double classes = 0;
        for (int j = 0; j < NODES; j++) {
            int has[C] = {0}, nc = 0;
            for (uint32_t e = off[j]; e < off[j + 1]; e++) {
                assert_true(idx[e] < N && !seen[idx[e]]);
                seen[idx[e]] = 1;
                if (!has[labels[idx[e]]]++) nc++;
            }
            classes += nc;
            if (s == 0) assert_true(off[j + 1] - off[j] >= N / NODES - 1);
        }
        mean_classes[s] = classes / NODES;
        free(off);
        free(idx);
    }
    printf("classes per node: iid %.1f, shards:2 %.1f, dirichlet:0.1 %.1f, "
           "dirichlet:100 %.1f (of %d)\n",
           mean_classes[0], mean_classes[1], mean_classes[2], mean_classes[3],
           C);
    assert_true(mean_classes[0] == C && mean_classes[3] == C);
    assert_true(mean_classes[1] <= 3.0);  /* two shards: two or three */
    assert_true(mean_classes[2] < 0.8 * C); /* skewed */
    uint32_t *off, *idx;
    eml_err err = {0};
    assert_int_not_equal(eml_partition("shards:0", labels, N, C, NODES, 1, &off,
                                       &idx, &err),
                         EML_OK);
    assert_non_null(strstr(err.msg, "shards:S"));
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(eml_partition("zipf", labels, N, C, NODES, 1, &off,
                                       &idx, &err),
                         EML_OK);
    assert_non_null(strstr(err.msg, "is not one of"));
}

/* ==== sharing and averaging ==== */

static void test_sharers(void **state)
{
    (void)state;
    enum { N = 1000 };
    static float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)i;
    eml_rng r;
    eml_rng_seed(&r, 3);
    eml_share_spec sp;
    eml_err err = {0};
    eml_sharer *s;
    eml_share_view v;
    assert_int_equal(eml_share_parse("full", 0, &sp, &err), EML_OK);
    assert_int_equal(eml_sharer_new(&sp, N, x, &s, &err), EML_OK);
    eml_sharer_select(s, x, &r, &v);
    assert_int_equal(v.count, N);
    assert_null(v.idx);
    eml_sharer_free(s);
    /* random:0.1 - 100 distinct sorted indices, another set next round */
    assert_int_equal(eml_share_parse("random:0.1", 0, &sp, &err), EML_OK);
    assert_int_equal(eml_sharer_new(&sp, N, x, &s, &err), EML_OK);
    uint32_t first[100];
    eml_sharer_select(s, x, &r, &v);
    assert_int_equal(v.count, 100);
    memcpy(first, v.idx, sizeof(first));
    for (int i = 1; i < 100; i++) assert_true(v.idx[i] > v.idx[i - 1]);
    for (int i = 0; i < 100; i++) assert_true(v.val[i] == x[v.idx[i]]);
    eml_sharer_select(s, x, &r, &v);
    assert_true(memcmp(first, v.idx, sizeof(first)) != 0);
    eml_sharer_free(s);
    /* topk:0.01 - the ten that moved most; once sent, the next ten */
    assert_int_equal(eml_share_parse("topk:0.01", 0, &sp, &err), EML_OK);
    assert_int_equal(eml_sharer_new(&sp, N, x, &s, &err), EML_OK);
    for (int i = 0; i < N; i++) x[i] += (float)(i % 50) * (i < 500 ? 1 : -1);
    /* twenty moved by 49 (ten up, ten down): the lower ten first (ties
     * go by index), then the other ten, then those that moved by 48 */
    eml_sharer_select(s, x, &r, &v);
    assert_int_equal(v.count, 10);
    for (int i = 0; i < 10; i++)
        assert_true(v.idx[i] % 50 == 49 && v.idx[i] < 500);
    eml_sharer_select(s, x, &r, &v);
    for (int i = 0; i < 10; i++)
        assert_true(v.idx[i] % 50 == 49 && v.idx[i] > 500);
    eml_sharer_select(s, x, &r, &v);
    for (int i = 0; i < 10; i++)
        assert_true(v.idx[i] % 50 == 48 && v.idx[i] < 500);
    eml_sharer_free(s);
    assert_int_not_equal(eml_share_parse("topk:0", 0, &sp, &err), EML_OK);
    assert_int_not_equal(eml_share_parse("random:1.5", 0, &sp, &err), EML_OK);
    assert_int_not_equal(eml_share_parse("half", 0, &sp, &err), EML_OK);
}

/* One round of averaging on a graph, by eml_average at every node, and
 * directly: x_i' = x_i + sum_j w_ij [j sent p] (x_j - x_i). */
static void test_averaging(void **state)
{
    (void)state;
    enum { NODES = 6, P = 40 };
    const char *edges = "0 1\n1 2\n2 3\n3 4\n4 5\n5 0\n0 3\n1 4\n";
    eml_topo t;
    eml_err err = {0};
    assert_int_equal(eml_topo_parse(edges, strlen(edges), "g", NODES, &t, &err),
                     EML_OK);
    eml_rng r;
    eml_rng_seed(&r, 11);
    for (int sparse = 0; sparse < 2; sparse++) {
        float x[NODES][P], got[NODES][P];
        static uint32_t idx[NODES][P];
        eml_share_view views[NODES];
        for (int i = 0; i < NODES; i++) {
            for (int p = 0; p < P; p++) x[i][p] = eml_rng_uniform(&r) * 10 - 5;
            uint32_t k = 0;
            for (uint32_t p = 0; p < P; p++)
                if (!sparse || eml_rng_below(&r, 3) == 0) idx[i][k++] = p;
            views[i] = (eml_share_view){(uint32_t)i, eml_topo_degree(&t, i), P,
                                        k, sparse ? idx[i] : NULL, NULL};
        }
        static float vals[NODES][P];
        for (int i = 0; i < NODES; i++) {
            for (uint32_t q = 0; q < views[i].count; q++)
                vals[i][q] = x[i][sparse ? idx[i][q] : q];
            views[i].val = vals[i];
        }
        double scratch[P];
        for (int i = 0; i < NODES; i++) {
            const eml_share_view *in[NODES];
            size_t k = 0;
            for (uint32_t e = t.off[i]; e < t.off[i + 1]; e++)
                in[k++] = &views[t.nbr[e]];
            memcpy(got[i], x[i], sizeof(got[i]));
            eml_average(got[i], P, eml_topo_degree(&t, i), in, k, scratch);
        }
        double sum_before = 0, sum_after = 0;
        for (int i = 0; i < NODES; i++)
            for (int p = 0; p < P; p++) {
                double want = x[i][p];
                for (uint32_t e = t.off[i]; e < t.off[i + 1]; e++) {
                    uint32_t j = t.nbr[e];
                    int sent = !sparse;
                    for (uint32_t q = 0; sparse && q < views[j].count; q++)
                        sent |= idx[j][q] == (uint32_t)p;
                    if (sent)
                        want += eml_mh_weight(eml_topo_degree(&t, i),
                                              eml_topo_degree(&t, j)) *
                                (x[j][p] - x[i][p]);
                }
                assert_true(fabs(got[i][p] - want) < 1e-5);
                sum_before += x[i][p];
                sum_after += got[i][p];
            }
        /* full averaging with symmetric weights keeps the mean */
        if (!sparse) assert_true(fabs(sum_before - sum_after) < 1e-3);
    }
    eml_topo_free(&t);
}

/* ==== the channel ==== */

typedef struct pair {
    eml_dchan a, b; /* node 1 -> node 4 and back */
} pair;

static uint8_t ska[32], pka[32], skb[32], pkb[32]; /* the enclaves' keys */

static void make_pair(pair *p, uint8_t na[32], uint8_t nb[32])
{
    uint8_t run[32] = {7};
    eml_err err = {0};
    assert_int_equal(eml_dchan_init(&p->a, 1, ska, na, 4, pkb, nb, run, &err),
                     EML_OK);
    assert_int_equal(eml_dchan_init(&p->b, 4, skb, nb, 1, pka, na, run, &err),
                     EML_OK);
}

static eml_dmsg_refusal try_open(eml_dchan *c, uint64_t round,
                                 const uint8_t *f, size_t n)
{
    static uint8_t *buf;
    static size_t cap;
    eml_share_view v;
    eml_dmsg_refusal why;
    eml_err err = {0};
    eml_status st = eml_dmsg_open(c, round, 64, f, n, &buf, &cap, &v, &why, &err);
    assert_true((st == EML_OK) == (why == EML_DMSG_OK));
    if (st != EML_OK) assert_non_null(strstr(err.msg, eml_dmsg_refusal_name(why)));
    return why;
}

static void test_channel(void **state)
{
    (void)state;
    assert_int_equal(eml_x25519_keygen(ska, pka), EML_OK);
    assert_int_equal(eml_x25519_keygen(skb, pkb), EML_OK);
    uint8_t na[32] = {1}, nb[32] = {2};
    pair p;
    make_pair(&p, na, nb);
    float x[64];
    uint32_t idx[8] = {0, 3, 9, 10, 20, 33, 50, 63};
    float sv[8];
    for (int i = 0; i < 64; i++) x[i] = 1.0f + (float)i / 7;
    for (int i = 0; i < 8; i++) sv[i] = x[idx[i]];
    eml_share_view dense = {1, 3, 64, 64, NULL, x};
    eml_share_view sparse = {1, 3, 64, 8, idx, sv};
    uint8_t f[3][EML_DMSG_HEADER + 8 * 64 + 16];
    size_t len[3];
    eml_err err = {0};
    assert_int_equal(eml_dmsg_seal(&p.a, 5, 3, &dense, 0, f[0], &len[0], &err), EML_OK);
    assert_int_equal(eml_dmsg_seal(&p.a, 5, 3, &sparse, 0, f[1], &len[1], &err), EML_OK);
    assert_int_equal(eml_dmsg_seal(&p.a, 5, 3, &sparse, 1, f[2], &len[2], &err), EML_OK);
    assert_int_equal(len[0], eml_dmsg_size(64, 64, EML_DMSG_DENSE));
    assert_int_equal(len[1], eml_dmsg_size(8, 64, 0));
    assert_int_equal(len[2], eml_dmsg_size(64, 64, 0)); /* padded to full */
    /* no 16-byte window of the plaintext values in the frames */
    for (int m = 0; m < 3; m++)
        for (size_t o = 0; o + 16 <= len[m]; o++)
            for (int q = 0; q + 4 <= 64; q++)
                assert_true(memcmp(f[m] + o, &x[q], 16) != 0);
    /* out of order: the second before the first */
    assert_int_equal(try_open(&p.b, 5, f[1], len[1]), EML_DMSG_REORDERED);
    /* another round's */
    assert_int_equal(try_open(&p.b, 6, f[0], len[0]), EML_DMSG_CROSS_ROUND);
    /* tampered: a ciphertext byte, a header byte, the tag */
    size_t at[3] = {EML_DMSG_HEADER + 5, 33 /* degree */, len[0] - 1};
    for (int t = 0; t < 3; t++) {
        f[0][at[t]] ^= 1;
        assert_int_equal(try_open(&p.b, 5, f[0], len[0]), EML_DMSG_TAMPERED);
        f[0][at[t]] ^= 1;
    }
    /* a frame cut short, or a header that does not add up */
    assert_int_equal(try_open(&p.b, 5, f[0], len[0] - 1), EML_DMSG_MALFORMED);
    f[0][40] ^= 1; /* total */
    assert_int_equal(try_open(&p.b, 5, f[0], len[0]), EML_DMSG_MALFORMED);
    f[0][40] ^= 1;
    /* sent back to its sender: not from that node's neighbour to it */
    assert_int_equal(try_open(&p.a, 5, f[0], len[0]), EML_DMSG_CROSS_PAIR);
    /* in order, each opens and says what it carries */
    static uint8_t *buf;
    static size_t cap;
    eml_share_view v;
    eml_dmsg_refusal why;
    for (int m = 0; m < 3; m++) {
        assert_int_equal(eml_dmsg_open(&p.b, 5, 64, f[m], len[m], &buf, &cap,
                                       &v, &why, &err),
                         EML_OK);
        assert_int_equal(v.sender, 1);
        assert_int_equal(v.degree, 3);
        assert_int_equal(v.count, m == 0 ? 64 : 8);
        for (uint32_t i = 0; i < v.count; i++)
            assert_true(v.val[i] == x[v.idx != NULL ? v.idx[i] : i]);
    }
    /* the first again: replayed */
    assert_int_equal(try_open(&p.b, 5, f[0], len[0]), EML_DMSG_REPLAYED);
    /* the other way works too */
    uint8_t g[EML_DMSG_HEADER + 4 * 64 + 16];
    size_t gl;
    assert_int_equal(eml_dmsg_seal(&p.b, 5, 2, &dense, 0, g, &gl, &err), EML_OK);
    assert_int_equal(try_open(&p.a, 5, g, gl), EML_DMSG_OK);
    /* a frame in the clear (the --enclave none baseline) is refused by a
     * sealed channel: no downgrade */
    eml_dchan clr;
    eml_dchan_init_clear(&clr, 1, 4);
    clr.send_seq = p.b.recv_seq;
    uint8_t cf[EML_DMSG_HEADER + 4 * 64 + 16];
    size_t cl;
    assert_int_equal(eml_dmsg_seal(&clr, 5, 3, &dense, 0, cf, &cl, &err), EML_OK);
    assert_true(memcmp(cf + EML_DMSG_HEADER, x, 64) == 0); /* in the clear */
    assert_int_equal(try_open(&p.b, 5, cf, cl), EML_DMSG_TAMPERED);
    eml_dchan_free(&clr);
    /* indices that do not increase are refused even when authentic */
    uint32_t badidx[8] = {0, 3, 3, 10, 20, 33, 50, 63};
    eml_share_view bad = {1, 3, 64, 8, badidx, sv};
    assert_int_equal(eml_dmsg_seal(&p.a, 5, 3, &bad, 0, f[1], &len[1], &err), EML_OK);
    assert_int_equal(try_open(&p.b, 5, f[1], len[1]), EML_DMSG_MALFORMED);
    /* A restarted node draws a new session nonce: frames of the old
     * session no longer open, even at the same sequence number. */
    eml_dchan_free(&p.a);
    eml_dchan_free(&p.b);
    pair q;
    make_pair(&q, na, nb);
    uint8_t old[EML_DMSG_HEADER + 4 * 64 + 16];
    size_t ol;
    assert_int_equal(eml_dmsg_seal(&q.a, 5, 3, &dense, 0, old, &ol, &err), EML_OK);
    eml_dchan_free(&q.a);
    eml_dchan_free(&q.b);
    uint8_t nb2[32] = {3};
    make_pair(&q, na, nb2);
    assert_int_equal(try_open(&q.b, 5, old, ol), EML_DMSG_TAMPERED);
    eml_dchan_free(&q.a);
    eml_dchan_free(&q.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topologies), cmocka_unit_test(test_partitions),
        cmocka_unit_test(test_sharers),    cmocka_unit_test(test_averaging),
        cmocka_unit_test(test_channel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
