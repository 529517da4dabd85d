/*
 * budget.c - privacy budgets across runs: the spend ledger (ledger.h)
 * read from the host and checked against the platform's monotonic
 * counter, the gate that admits a run only if every budgeted grant has its
 * planned epsilon left, and the charge made before a fresh run's first
 * step, under the counter's lock (docs/dp.md, "Budgets across runs");
 * and, in the same ledger by the same protocol, the evaluations of each
 * model under a grant's max_evaluations (docs/evaluate.md), and the
 * predictions of a model to each recipient under its grant's max_queries.
 *
 * Trusted code: the ledger is sealed to the measurement; an old copy is
 * refused by the counter.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"

/* ==== privacy budgets across runs ==== */


static eml_status ledger_key(eml_enclave *e, uint8_t key[32])
{
    return eml_ledger_key(key, e->sec->seal_secret, e->measurement);
}

/* Reads the host's copy of the ledger and checks it against the platform
 * counter: it must be at the counter, or one ahead (its charge was stored
 * but the counter step was lost).  catch_up (with the counter locked):
 * advance the counter to such a ledger; otherwise take it as it is. */
eml_status eml_rt_ledger_load(budget *b, int catch_up, eml_err *err)
{
    eml_enclave *e = b->e;
    if (e->counter.read == NULL || e->counter.advance == NULL ||
        e->counter.lock == NULL || e->counter.unlock == NULL)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "a grant sets a privacy budget or an evaluation "
                           "or query limit, but this platform "
                           "has no monotonic counter to keep the spend "
                           "ledger from being rolled back");
    uint64_t c = 0;
    eml_status st = e->counter.read(e->counter.user, &c, err);
    if (st != EML_OK) return st;
    eml_reply_ledger_data a;
    st = eml_rt_ocall(e, EML_MSG_LEDGER_READ, NULL, 0, &a, sizeof(a), err);
    if (st != EML_OK) return st;
    const uint8_t *p = a.ledger.p;
    size_t n = a.ledger.n;
    eml_ledger_free(&b->ledger);
    if (n == 0) {
        if (c != 0)
            return eml_err_set(err, EML_ERR_AUTH,
                               "the host has no spend ledger, but the "
                               "platform counter says %llu charges were "
                               "made: refused (a lost or withheld ledger)",
                               (unsigned long long)c);
        return EML_OK;
    }
    uint8_t key[32];
    st = ledger_key(e, key);
    if (st == EML_OK) st = eml_ledger_open(p, n, key, &b->ledger, err);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK) return st;
    if (b->ledger.counter == c + 1)
        return catch_up ? e->counter.advance(e->counter.user, c + 1, err)
                        : EML_OK;
    if (b->ledger.counter != c)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the spend ledger is at charge %llu but the "
                           "platform counter at %llu: an old copy (a "
                           "rollback) is refused",
                           (unsigned long long)b->ledger.counter,
                           (unsigned long long)c);
    return EML_OK;
}

/* Every budgeted grant must have the planned epsilon left. */
eml_status eml_rt_budget_gate(const budget *b, eml_err *err)
{
    for (uint64_t o = 0; o < b->n; o++) {
        const eml_grant_info *g = &b->g[o];
        if (!g->has_max_epsilon) continue;
        double spent = eml_ledger_spent(&b->ledger, g->grant_id);
        if (spent + b->planned > g->max_epsilon * (1 + 1e-9))
            return eml_err_set(err, EML_ERR_AUTH,
                               "grant %u allows epsilon %.4g in all; %.4g is "
                               "spent and this run plans %.4g: refused",
                               (unsigned)o + 1, g->max_epsilon, spent,
                               b->planned);
    }
    return EML_OK;
}

/* eml_train_opts.on_start: charges a fresh run's planned epsilon to every
 * budgeted grant (ledger stored, then the counter advanced) before its
 * first step.  A run resumed from a committed mirror state was charged
 * when it started. */
static eml_status charge_locked(budget *b, eml_err *err);

eml_status eml_rt_budget_charge(void *user, int resumed, eml_err *err)
{
    budget *b = user;
    eml_enclave *e = b->e;
    if (resumed) return EML_OK;
    /* From reading the ledger to advancing the counter, no other instance
     * of this enclave may charge. */
    eml_status st = e->counter.lock(e->counter.user, err);
    if (st != EML_OK) return st;
    st = charge_locked(b, err);
    e->counter.unlock(e->counter.user);
    return st;
}

static eml_status charge_locked(budget *b, eml_err *err)
{
    eml_enclave *e = b->e;
    eml_status st = eml_rt_ledger_load(b, 1, err);
    if (st == EML_OK) st = eml_rt_budget_gate(b, err);
    if (st != EML_OK) return st;
    for (uint64_t o = 0; o < b->n && st == EML_OK; o++)
        if (b->g[o].has_max_epsilon)
            st = eml_ledger_charge(&b->ledger, b->g[o].grant_id, b->planned);
    if (st != EML_OK)
        return eml_err_set(err, st, "the spend ledger is full");
    uint64_t next = b->ledger.counter + 1;
    b->ledger.counter = next;
    uint8_t key[32], *blob = NULL;
    size_t blen = 0;
    st = ledger_key(e, key);
    if (st == EML_OK) st = eml_ledger_seal(&b->ledger, key, &blob, &blen);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot seal the spend ledger");
    eml_ocall_ledger_write q = {{blob, blen}};
    st = eml_rt_ocall(e, EML_MSG_LEDGER_WRITE, &q, sizeof(q), NULL, 0, err);
    free(blob);
    if (st != EML_OK) return st;
    /* Only now is the charge binding: the counter moves past every older
     * copy of the ledger. */
    return e->counter.advance(e->counter.user, next, err);
}

/* ==== evaluation limits across runs ==== */

/* The charged ledger stored, then the counter advanced (counter locked):
 * binding once the counter has moved, as for a privacy budget. */
static eml_status store_locked(budget *b, eml_err *err)
{
    eml_enclave *e = b->e;
    uint64_t next = b->ledger.counter + 1;
    b->ledger.counter = next;
    uint8_t key[32], *blob = NULL;
    size_t blen = 0;
    eml_status st = ledger_key(e, key);
    if (st == EML_OK) st = eml_ledger_seal(&b->ledger, key, &blob, &blen);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot seal the spend ledger");
    eml_ocall_ledger_write q = {{blob, blen}};
    st = eml_rt_ocall(e, EML_MSG_LEDGER_WRITE, &q, sizeof(q), NULL, 0, err);
    free(blob);
    if (st != EML_OK) return st;
    return e->counter.advance(e->counter.user, next, err);
}

eml_status eml_rt_eval_key(uint8_t id[16], const uint8_t grant_id[16],
                           const uint8_t model_sha256[32])
{
    /* Domain-separated from grant ids (random 16 bytes), which key the
     * privacy budgets in the same ledger. */
    static const char tag[] = "enclaveml evaluations v1";
    uint8_t in[sizeof(tag) - 1 + 16 + 32], h[32];
    memcpy(in, tag, sizeof(tag) - 1);
    memcpy(in + sizeof(tag) - 1, grant_id, 16);
    memcpy(in + sizeof(tag) - 1 + 16, model_sha256, 32);
    eml_status st = eml_sha256(h, in, sizeof(in));
    if (st == EML_OK) memcpy(id, h, 16);
    return st;
}

/* Every limited grant must have an evaluation of this model left. */
static eml_status eval_gate(const eml_ledger *l, const eml_rt_eval_limit *lim,
                            size_t n, eml_err *err)
{
    for (size_t i = 0; i < n; i++) {
        double spent = eml_ledger_spent(l, lim[i].id);
        if (spent + 1 > (double)lim[i].max)
            return eml_err_set(err, EML_ERR_AUTH,
                               "test set %u's owner allows %lu evaluation%s "
                               "of this model; %.0f spent",
                               lim[i].set + 1, (unsigned long)lim[i].max,
                               lim[i].max == 1 ? "" : "s", spent);
    }
    return EML_OK;
}

static eml_status eval_charge_locked(budget *b, const eml_rt_eval_limit *lim,
                                     size_t n, eml_err *err)
{
    eml_status st = eml_rt_ledger_load(b, 1, err);
    if (st == EML_OK) st = eval_gate(&b->ledger, lim, n, err);
    if (st != EML_OK) return st;
    for (size_t i = 0; i < n && st == EML_OK; i++)
        st = eml_ledger_charge(&b->ledger, lim[i].id, 1.0);
    if (st != EML_OK)
        return eml_err_set(err, st, "the spend ledger is full");
    return store_locked(b, err);
}

eml_status eml_rt_eval_limits(eml_enclave *e, const eml_rt_eval_limit *lim,
                              size_t n, int charge, eml_err *err)
{
    if (n == 0) return EML_OK;
    budget b;
    memset(&b, 0, sizeof(b));
    b.e = e;
    eml_ledger_init(&b.ledger);
    eml_status st;
    if (!charge) {
        st = eml_rt_ledger_load(&b, 0, err);
        if (st == EML_OK) st = eval_gate(&b.ledger, lim, n, err);
    } else {
        st = e->counter.lock(e->counter.user, err);
        if (st == EML_OK) {
            st = eval_charge_locked(&b, lim, n, err);
            e->counter.unlock(e->counter.user);
        }
    }
    eml_ledger_free(&b.ledger);
    return st;
}

/* ==== query limits across runs (PREDICT) ==== */

eml_status eml_rt_query_key(uint8_t id[16], const uint8_t grant_id[16],
                            const uint8_t recipient[32])
{
    /* Domain-separated from grant ids and evaluation keys. */
    static const char tag[] = "enclaveml queries v1";
    uint8_t in[sizeof(tag) - 1 + 16 + 32], h[32];
    memcpy(in, tag, sizeof(tag) - 1);
    memcpy(in + sizeof(tag) - 1, grant_id, 16);
    memcpy(in + sizeof(tag) - 1 + 16, recipient, 32);
    eml_status st = eml_sha256(h, in, sizeof(in));
    if (st == EML_OK) memcpy(id, h, 16);
    return st;
}

static eml_status query_gate(const eml_ledger *l, const uint8_t id[16],
                             uint32_t max, uint64_t ask, uint64_t *spent,
                             eml_err *err)
{
    double s = eml_ledger_spent(l, id);
    *spent = s > 0 ? (uint64_t)s : 0;
    if (*spent > max || ask > (uint64_t)max - *spent)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the model's owner allows %lu prediction%s to "
                           "this recipient; %llu spent, this request asks "
                           "%llu",
                           (unsigned long)max, max == 1 ? "" : "s",
                           (unsigned long long)*spent,
                           (unsigned long long)ask);
    return EML_OK;
}

static eml_status query_charge_locked(budget *b, const uint8_t id[16],
                                      uint32_t max, uint64_t ask,
                                      uint64_t *spent, eml_err *err)
{
    eml_status st = eml_rt_ledger_load(b, 1, err);
    if (st == EML_OK) st = query_gate(&b->ledger, id, max, ask, spent, err);
    if (st != EML_OK) return st;
    st = eml_ledger_charge(&b->ledger, id, (double)ask);
    if (st != EML_OK)
        return eml_err_set(err, st, "the spend ledger is full");
    return store_locked(b, err);
}

eml_status eml_rt_query_limit(eml_enclave *e, const uint8_t id[16],
                              uint32_t max, uint64_t ask, int charge,
                              uint64_t *spent, eml_err *err)
{
    budget b;
    memset(&b, 0, sizeof(b));
    b.e = e;
    eml_ledger_init(&b.ledger);
    eml_status st;
    if (!charge) {
        st = eml_rt_ledger_load(&b, 0, err);
        if (st == EML_OK)
            st = query_gate(&b.ledger, id, max, ask, spent, err);
    } else {
        st = e->counter.lock(e->counter.user, err);
        if (st == EML_OK) {
            st = query_charge_locked(&b, id, max, ask, spent, err);
            e->counter.unlock(e->counter.user);
        }
    }
    eml_ledger_free(&b.ledger);
    return st;
}
