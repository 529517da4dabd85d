/*
 * test_evil_host.c - a hostile host.  It starts the real sandboxed enclave
 * program (backend sim) and then speaks the boundary protocol itself, as an
 * attacker who owns the host process, its files and every byte it sends
 * would: it serves the enclave's ocalls from files and answers of its own
 * choosing.  Each attack of the hostile-host review (issue 9) and each one
 * the review found holding must end in one ERROR reply naming the problem,
 * with nothing decrypted ever leaving the enclave: every byte the enclave
 * sends is kept and searched for the owners' canaries.
 *
 * An honest session runs first through the same harness and must succeed,
 * so that every refusal below is the enclave's doing, not the harness's.
 *
 * Runs with ENCLAVEML_HOME in a fresh temporary directory and the enclave
 * program from $EML_BINARY_DIR (set by CTest).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "enclaveml/boundary.h"
#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "enclaveml/edl.h"
#include "enclaveml/enclave.h"
#include "enclaveml/ledger.h"
#include "host/enclave_host.h"
#include "enclave_home.h"

static const char cfg_text[] =
    "[net]\nheight=28\nwidth=28\nchannels=1\nbatch=16\nlearning_rate=0.1\n"
    "[connected]\noutput=10\nactivation=linear\n[softmax]\n";
static const char canary_text[] = "CANARY-of-owner-A:do-not-leak-0123456789";

/* ==== the owners' data ==== */

typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

typedef struct owner {
    uint8_t key[32];
    buf files[EML_FILE_KINDS]; /* encrypted, as the host holds them */
} owner;

static struct {
    char home[64];
    owner a, b;
    buf junk_labels;         /* A's key, role train-labels: not an IDX file */
    uint8_t canary_img[784]; /* A's 40th training image */
    uint8_t rcpt_sk[32], rcpt_pk[32], eve_sk[32], eve_pk[32];
} g;

/* An IDX file of n records of item bytes each (images 28x28 or labels). */
static buf make_idx(size_t n, int images, uint32_t seed)
{
    size_t item = images ? 784 : 1, hdr = images ? 16 : 8;
    buf b = {malloc(hdr + n * item), hdr + n * item};
    assert_non_null(b.p);
    memset(b.p, 0, hdr);
    b.p[2] = 8;
    b.p[3] = images ? 3 : 1;
    b.p[4] = (uint8_t)(n >> 24);
    b.p[5] = (uint8_t)(n >> 16);
    b.p[6] = (uint8_t)(n >> 8);
    b.p[7] = (uint8_t)n;
    if (images) b.p[11] = b.p[15] = 28;
    uint32_t x = seed * 2654435761u + 7;
    for (size_t i = 0; i < n * item; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.p[hdr + i] = images ? (uint8_t)x : (uint8_t)(x % 10);
    }
    return b;
}

static buf seal(const uint8_t key[32], eml_container_role role,
                const char *dataset, const buf *pt)
{
    eml_container_meta meta;
    memset(&meta, 0, sizeof(meta));
    meta.role = role;
    assert_int_equal(eml_container_dataset_id(meta.dataset_id, dataset,
                                              strlen(dataset)),
                     EML_OK);
    buf out = {NULL, 0};
    eml_err err = {0};
    eml_status st = eml_container_seal_buffer(EML_CONTAINER_SYMMETRIC, key,
                                              4096, &meta, pt->p, pt->n,
                                              &out.p, &out.n, &err);
    if (st != EML_OK) fail_msg("seal: %s", eml_err_msg(&err, st));
    return out;
}

static void make_owner(owner *o, const char *dataset, uint32_t seed,
                       int with_canary)
{
    assert_int_equal(eml_random(o->key, 32), EML_OK);
    static const eml_container_role roles[EML_FILE_KINDS] = {
        EML_CONTAINER_ROLE_TRAIN_IMAGES, EML_CONTAINER_ROLE_TRAIN_LABELS,
        EML_CONTAINER_ROLE_TEST_IMAGES, EML_CONTAINER_ROLE_TEST_LABELS};
    for (int k = 0; k < EML_FILE_KINDS; k++) {
        size_t n = k < 2 ? 64 : 16;
        buf pt = make_idx(n, k % 2 == 0, seed + (uint32_t)k);
        if (with_canary && k == EML_FILE_TRAIN_IMAGES) {
            memcpy(g.canary_img, canary_text, sizeof(canary_text));
            memcpy(pt.p + 16 + 39 * 784, g.canary_img, 784);
        }
        o->files[k] = seal(o->key, roles[k], dataset, &pt);
        free(pt.p);
    }
}

static int group_setup(void **state)
{
    (void)state;
    if (enclave_home_setup(g.home, sizeof(g.home), "eml-test-evil") != 0)
        return -1;
    make_owner(&g.a, "owner-a", 1, 1);
    make_owner(&g.b, "owner-b", 100, 0);
    buf junk = {(uint8_t *)strdup(canary_text), sizeof(canary_text) - 1};
    g.junk_labels = seal(g.a.key, EML_CONTAINER_ROLE_TRAIN_LABELS, "owner-a",
                         &junk);
    free(junk.p);
    if (eml_x25519_keygen(g.rcpt_sk, g.rcpt_pk) != EML_OK ||
        eml_x25519_keygen(g.eve_sk, g.eve_pk) != EML_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int k = 0; k < EML_FILE_KINDS; k++) {
        free(g.a.files[k].p);
        free(g.b.files[k].p);
    }
    free(g.junk_labels.p);
    enclave_home_remove(g.home);
    return 0;
}

/* ==== the enclave and grants ==== */

static void start(eml_enclave_host *h)
{
    eml_host_opts o = {EML_BACKEND_SIM, 512, 1};
    eml_err err = {0};
    eml_status st = eml_host_start(h, &o, &err);
    if (st != EML_OK) fail_msg("eml_host_start: %s", eml_err_msg(&err, st));
}

typedef struct grant {
    uint8_t g[EML_GRANT_MAX_BYTES];
    size_t n;
} grant;

/* A grant of owner o's key to the running enclave, naming the model
 * owner; max_eps > 0 sets a budget, cfg_digest (or NULL) pins a cfg. */
static grant make_grant(const eml_enclave_host *h, const owner *o,
                        double max_eps, const uint8_t *cfg_digest)
{
    eml_grant_info gi;
    memset(&gi, 0, sizeof(gi));
    memcpy(gi.measurement, h->measurement, 32);
    memcpy(gi.enclave_pk, h->x_pk, 32);
    assert_int_equal(eml_container_key_id(gi.key_id, o->key), EML_OK);
    gi.n_recipients = 1;
    memcpy(gi.recipients[0], g.rcpt_pk, 32);
    gi.has_max_epsilon = max_eps > 0;
    gi.max_epsilon = max_eps > 0 ? max_eps : 0;
    if (cfg_digest != NULL) {
        gi.has_cfg_digest = 1;
        memcpy(gi.cfg_digest, cfg_digest, 32);
    }
    grant gr;
    assert_int_equal(eml_grant_build(gr.g, &gr.n, &gi, o->key), EML_OK);
    return gr;
}

/* ==== the hostile session ==== */

typedef enum lie {
    LIE_NONE = 0,
    LIE_MORE_BYTES,   /* FILE_DATA longer than asked for */
    LIE_WRONG_TYPE,   /* FILE_READ answered with LEDGER_OK */
    LIE_SHORT_HEADER, /* FILE_DATA cut inside the container header */
    LIE_WRONG_SEQ,    /* FILE_INFO answering another request */
} lie;

/* What the host serves during one TRAIN. */
typedef struct plan {
    const grant *grants[4];
    int n_owners;
    const buf *files[4 * EML_FILE_KINDS]; /* by file id */
    const uint8_t *recipient;
    int dp, fixed_batches;
    double target_eps;
    lie lie;
    buf *ledger; /* the host's copy of the sealed ledger (in/out) */
} plan;

typedef struct outcome {
    int done;              /* TRAIN_DONE arrived */
    char error[EML_ERRMSG_MAX + 1];
    int file_opens;
    buf seen;              /* every byte the enclave sent */
    buf model;             /* the OUTPUT stream */
    char report[8192];
} outcome;

static void append(buf *b, const uint8_t *p, size_t n)
{
    uint8_t *q = realloc(b->p, b->n + n + 1);
    assert_non_null(q);
    if (n > 0) memcpy(q + b->n, p, n);
    b->p = q;
    b->n += n;
}

static void outcome_free(outcome *o)
{
    free(o->seen.p);
    free(o->model.p);
    memset(o, 0, sizeof(*o));
}

/* Answers the enclave's request seq with msg (its struct, NULL for one
 * without fields). */
static void reply_or_fail(eml_enclave_host *h, uint16_t type, const void *msg,
                          size_t size, uint32_t seq)
{
    eml_err err = {0};
    eml_status st = eml_boundary_reply(&h->ch, type, msg, size, seq, &err);
    if (st != EML_OK) fail_msg("reply: %s", eml_err_msg(&err, st));
}

static void send_train(eml_enclave_host *h, const plan *p)
{
    eml_ecall_train q;
    memset(&q, 0, sizeof(q));
    q.cfg_text.p = (const uint8_t *)cfg_text;
    q.cfg_text.n = sizeof(cfg_text) - 1;
    q.spec.epochs = 2;
    q.spec.batch = 16;
    q.spec.lr = 0.1;
    q.spec.seed = 3;
    q.spec.threads = 1;
    q.spec.kernels = EML_KERNELS_REF;
    memcpy(q.recipient, p->recipient, 32);
    q.spec.dp.enabled = p->dp;
    q.spec.dp.clip = p->dp ? 1.0 : 0.0;
    q.spec.dp.noise = p->dp ? -1.0 : 0.0; /* derive */
    q.spec.dp.delta = p->dp ? 1e-5 : 0.0;
    q.spec.dp.target_epsilon = p->dp ? p->target_eps : 0.0;
    q.spec.dp.fixed_batches = p->fixed_batches;
    q.n_grants = (size_t)p->n_owners;
    for (int i = 0; i < p->n_owners; i++) {
        q.grants[i].p = p->grants[i]->g;
        q.grants[i].n = p->grants[i]->n;
    }
    q.spec.save_every = 1; /* no mirror */
    memcpy(q.report_nonce, "\x0e\x71", 2);
    q.report_nonce_len = 2;
    eml_err err = {0};
    eml_status st = eml_boundary_send(&h->ch, EML_MSG_TRAIN, &q, sizeof(q),
                                      NULL, &err);
    if (st != EML_OK) fail_msg("TRAIN: %s", eml_err_msg(&err, st));
}

/* Serves one ocall (seq) the way the plan says. */
static void serve(eml_enclave_host *h, const plan *p, outcome *o,
                  uint16_t type, const uint8_t *pl, size_t n, uint32_t seq)
{
    eml_msg_any q;
    const eml_msg_desc *d = eml_msg_desc_of(type);
    eml_err err = {0};
    if (d->kind != EML_MSG_KIND_OCALL)
        fail_msg("unexpected %s from the enclave", d->name);
    if (eml_boundary_decode(type, pl, n, d->size ? &q : NULL, d->size,
                            &err) != EML_OK)
        fail_msg("%s", err.msg);
    switch (type) {
    case EML_MSG_FILE_OPEN: {
        uint64_t id = q.m_FILE_OPEN.file_id;
        o->file_opens++;
        assert_true(id < 4 * EML_FILE_KINDS && p->files[id] != NULL);
        eml_reply_file_info a = {p->files[id]->n};
        reply_or_fail(h, EML_MSG_FILE_INFO, &a, sizeof(a),
                      p->lie == LIE_WRONG_SEQ ? seq + 1 : seq);
        return;
    }
    case EML_MSG_FILE_READ: {
        uint64_t id = q.m_FILE_READ.file_id, off = q.m_FILE_READ.offset;
        uint64_t len = q.m_FILE_READ.length;
        assert_true(id < 4 * EML_FILE_KINDS && p->files[id] != NULL);
        const buf *f = p->files[id];
        size_t k = off >= f->n ? 0 : f->n - off < len ? f->n - off : len;
        if (p->lie == LIE_WRONG_TYPE) {
            reply_or_fail(h, EML_MSG_LEDGER_OK, NULL, 0, seq);
            return;
        }
        eml_reply_file_data a = {{f->p + off, k}};
        uint8_t *more = NULL;
        if (p->lie == LIE_MORE_BYTES && off > 0) {
            more = calloc(1, len + 100);
            assert_non_null(more);
            memcpy(more, f->p + off, k);
            a.data.p = more;
            a.data.n = len + 100;
        } else if (p->lie == LIE_SHORT_HEADER && off == 0 && len > 4) {
            a.data.n = 4;
        }
        reply_or_fail(h, EML_MSG_FILE_DATA, &a, sizeof(a), seq);
        free(more);
        return;
    }
    case EML_MSG_OUTPUT:
        append(&o->model, q.m_OUTPUT.data.p, q.m_OUTPUT.data.n);
        reply_or_fail(h, EML_MSG_OUTPUT_OK, NULL, 0, seq);
        return;
    case EML_MSG_LEDGER_READ: {
        eml_reply_ledger_data a = {{p->ledger != NULL ? p->ledger->p : NULL,
                                    p->ledger != NULL ? p->ledger->n : 0}};
        reply_or_fail(h, EML_MSG_LEDGER_DATA, &a, sizeof(a), seq);
        return;
    }
    case EML_MSG_LEDGER_WRITE:
        assert_non_null(p->ledger);
        free(p->ledger->p);
        p->ledger->p = NULL;
        p->ledger->n = 0;
        append(p->ledger, q.m_LEDGER_WRITE.ledger.p,
               q.m_LEDGER_WRITE.ledger.n);
        reply_or_fail(h, EML_MSG_LEDGER_OK, NULL, 0, seq);
        return;
    default:
        fail_msg("unexpected %s from the enclave", eml_msg_type_name(type));
    }
}

/* One TRAIN ecall against the plan; fills o (caller frees). */
static void run(eml_enclave_host *h, const plan *p, outcome *o)
{
    memset(o, 0, sizeof(*o));
    send_train(h, p);
    for (;;) {
        uint16_t type;
        const uint8_t *pl;
        size_t n;
        eml_status st = eml_msg_recv(&h->ch, &type, &pl, &n);
        if (st != EML_OK) fail_msg("the enclave went away: %s",
                                   eml_status_str(st));
        append(&o->seen, pl, n);
        if (type == EML_MSG_PROGRESS) continue;
        eml_err err = {0};
        if (type == EML_MSG_ERROR) {
            eml_reply_error e;
            assert_int_equal(eml_boundary_decode(type, pl, n, &e, sizeof(e),
                                                 &err),
                             EML_OK);
            memcpy(o->error, e.message.p, e.message.n);
            o->error[e.message.n] = '\0';
            return;
        }
        if (type == EML_MSG_TRAIN_DONE) {
            eml_reply_train_done d;
            assert_int_equal(eml_boundary_decode(type, pl, n, &d, sizeof(d),
                                                 &err),
                             EML_OK);
            assert_true(d.report.n < sizeof(o->report));
            memcpy(o->report, d.report.p, d.report.n);
            o->done = 1;
            return;
        }
        serve(h, p, o, type, pl, n, h->ch.recv_seq);
    }
}

/* Owner A alone, honestly served. */
static plan plan_a(const grant *ga)
{
    plan p;
    memset(&p, 0, sizeof(p));
    p.grants[0] = ga;
    p.n_owners = 1;
    for (int k = 0; k < EML_FILE_KINDS; k++) p.files[k] = &g.a.files[k];
    p.recipient = g.rcpt_pk;
    return p;
}

static int contains(const buf *hay, const void *needle, size_t n)
{
    if (hay->n < n) return 0;
    for (size_t i = 0; i + n <= hay->n; i++)
        if (memcmp(hay->p + i, needle, n) == 0) return 1;
    return 0;
}

/* Nothing of the canary, raw or as hex, left the enclave. */
static void assert_no_canary(const outcome *o)
{
    char hex[2 * 16 + 1];
    eml_hex(hex, (const uint8_t *)canary_text, 16);
    if (contains(&o->seen, canary_text, 16))
        fail_msg("the canary left the enclave");
    if (contains(&o->seen, hex, 16))
        fail_msg("the canary's hex left the enclave");
    char upper[33];
    for (int i = 0; i < 32; i++)
        upper[i] = (char)(hex[i] >= 'a' ? hex[i] - 32 : hex[i]);
    if (contains(&o->seen, upper, 16)) fail_msg("the canary's HEX left");
}

/* max_file_opens: how many files the enclave may open before refusing (-1:
 * any).  A DP run opens one before its budget check: the train labels'
 * container header, whose size gives the training-set size the plan needs
 * (nothing is decrypted). */
static void expect_refusal(eml_enclave_host *h, const plan *p,
                           const char *needle, int max_file_opens)
{
    outcome o;
    run(h, p, &o);
    if (o.done) fail_msg("the enclave trained; expected \"%s\"", needle);
    if (strstr(o.error, needle) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", o.error, needle);
    if (max_file_opens >= 0 && o.file_opens > max_file_opens)
        fail_msg("%d files opened before \"%s\"", o.file_opens, needle);
    assert_int_equal(o.model.n, 0);
    assert_no_canary(&o);
    print_message("refused: %s\n", o.error);
    outcome_free(&o);
}

/* ==== the attacks ==== */

static void test_honest_session(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h);
    grant ga = make_grant(&h, &g.a, 0, NULL);
    plan p = plan_a(&ga);
    outcome o;
    run(&h, &p, &o);
    if (!o.done) fail_msg("an honest session failed: %s", o.error);
    assert_true(o.model.n > 0);
    assert_int_equal(eml_report_verify(o.report, strlen(o.report), h.ed_pk),
                     EML_OK);
    assert_non_null(strstr(o.report, "\"report_nonce\":\"0e71\""));
    /* The canary trained but never left: the harness sees the model's
     * ciphertext and nothing else of it. */
    assert_no_canary(&o);
    /* Control: the search finds a canary where one is. */
    buf ctl = {(uint8_t *)canary_text, sizeof(canary_text)};
    assert_true(contains(&ctl, canary_text, 16));
    outcome_free(&o);
    eml_host_stop(&h);
}

static void test_recipient_and_cfg(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h);
    grant ga = make_grant(&h, &g.a, 0, NULL);
    plan p = plan_a(&ga);
    p.recipient = g.eve_pk;
    expect_refusal(&h, &p, "does not name this run's recipient", 0);
    uint8_t other[32];
    memset(other, 0x42, 32);
    grant pinned = make_grant(&h, &g.a, 0, other);
    p = plan_a(&pinned);
    expect_refusal(&h, &p, "another network", 0);
    /* The same grant twice in one run. */
    p = plan_a(&ga);
    p.grants[1] = &ga;
    p.n_owners = 2;
    for (int k = 0; k < EML_FILE_KINDS; k++)
        p.files[EML_FILE_KINDS + k] = &g.a.files[k];
    expect_refusal(&h, &p, "replays", 0);
    eml_host_stop(&h);
}

static void test_files_in_wrong_places(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h);
    grant ga = make_grant(&h, &g.a, 0, NULL);
    plan p = plan_a(&ga);
    /* The training files served as the test set: more "accuracy". */
    p.files[EML_FILE_TEST_IMAGES] = &g.a.files[EML_FILE_TRAIN_IMAGES];
    p.files[EML_FILE_TEST_LABELS] = &g.a.files[EML_FILE_TRAIN_LABELS];
    expect_refusal(&h, &p, "wrong role", -1);
    /* A foreign owner's file in A's slot. */
    p = plan_a(&ga);
    p.files[EML_FILE_TRAIN_LABELS] = &g.b.files[EML_FILE_TRAIN_LABELS];
    expect_refusal(&h, &p, "train-labels", -1);
    /* A's own other file (not an IDX file, with the canary) in a slot of
     * the right role: refused by name, and nothing of it echoed. */
    p = plan_a(&ga);
    p.files[EML_FILE_TRAIN_LABELS] = &g.junk_labels;
    expect_refusal(&h, &p, "not an IDX file", -1);
    eml_host_stop(&h);
}

static void test_size_lies_and_wrong_replies(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h);
    grant ga = make_grant(&h, &g.a, 0, NULL);
    plan p = plan_a(&ga);
    p.lie = LIE_MORE_BYTES;
    expect_refusal(&h, &p, "malformed FILE_DATA", -1);
    p.lie = LIE_WRONG_TYPE;
    expect_refusal(&h, &p, "LEDGER_OK where FILE_DATA was expected", -1);
    p.lie = LIE_SHORT_HEADER;
    expect_refusal(&h, &p, "ends inside the container header", -1);
    /* An answer to another request than the ocall's. */
    p.lie = LIE_WRONG_SEQ;
    expect_refusal(&h, &p, "FILE_INFO answers request", 1);
    /* After all that, an honest run still works on the same enclave. */
    p.lie = LIE_NONE;
    outcome o;
    run(&h, &p, &o);
    if (!o.done) fail_msg("honest run after the lies: %s", o.error);
    outcome_free(&o);
    eml_host_stop(&h);
}

/* A budget bounds every run of its grant, across enclave restarts; an old
 * or withheld ledger is refused; fixed-size batches are refused. */
static void test_budget_across_runs(void **state)
{
    (void)state;
    eml_enclave_host h;
    start(&h);
    grant gb = make_grant(&h, &g.a, 1.5, NULL);
    buf ledger = {NULL, 0};
    plan p = plan_a(&gb);
    p.dp = 1;
    p.target_eps = 1.0;
    p.ledger = &ledger;
    p.fixed_batches = 1;
    expect_refusal(&h, &p, "dp-fixed-batches", 0);
    p.fixed_batches = 0;
    outcome o;
    run(&h, &p, &o);
    if (!o.done) fail_msg("the first budgeted run: %s", o.error);
    assert_non_null(strstr(o.report, "\"budget_charged\":true"));
    outcome_free(&o);
    assert_true(ledger.n > 0);
    buf after_one = {NULL, 0};
    append(&after_one, ledger.p, ledger.n);
    /* Run 2 of the same grant: 1 + 1 > 1.5, refused before any file. */
    expect_refusal(&h, &p, "1.5 in all", 1);
    eml_host_stop(&h);

    /* A restarted enclave remembers, through the ledger the host keeps and
     * the platform counter. */
    start(&h);
    expect_refusal(&h, &p, "1.5 in all", 1);
    /* A second grant of the same owner has its own budget. */
    grant gc = make_grant(&h, &g.a, 1.5, NULL);
    p.grants[0] = &gc;
    run(&h, &p, &o);
    if (!o.done) fail_msg("another grant's run: %s", o.error);
    outcome_free(&o);
    /* The host hands back the ledger from before that charge: refused. */
    buf now = ledger;
    ledger = after_one;
    expect_refusal(&h, &p, "rollback", 1);
    /* ... or none at all. */
    ledger.n = 0;
    expect_refusal(&h, &p, "withheld", 1);
    /* ... or a forged one (a flipped byte). */
    ledger = now;
    ledger.p[ledger.n / 2] ^= 1;
    expect_refusal(&h, &p, "does not authenticate", 1);
    ledger.p[ledger.n / 2] ^= 1;
    expect_refusal(&h, &p, "1.5 in all", 1);
    free(after_one.p);
    free(ledger.p);
    eml_host_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_honest_session),
        cmocka_unit_test(test_recipient_and_cfg),
        cmocka_unit_test(test_files_in_wrong_places),
        cmocka_unit_test(test_size_lies_and_wrong_replies),
        cmocka_unit_test(test_budget_across_runs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
