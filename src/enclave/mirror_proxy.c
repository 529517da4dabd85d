/*
 * mirror_proxy.c - the mirror's store (mirror.h, eml_store_ops) as the
 * enclave sees it: every operation is an ocall to the host, which keeps
 * the sealed bytes in its pool or checkpoint file.  Sealed chunks are
 * made in private memory and copied into the shared bulk region only when
 * the host is done with its previous contents; the enclave never reads
 * the bulk region.
 *
 * Trusted code: what the host returns is checked for size here and
 * authenticated by the mirror.
 */
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"

/* ==== the mirror's store, served by the host ==== */

/* An ocall answered by MIRROR_DATA, which must hold exactly n bytes. */
static eml_status mirror_data(eml_enclave *e, uint16_t type, const void *req,
                              size_t size, uint8_t *out, size_t n,
                              eml_err *err)
{
    eml_reply_mirror_data a;
    eml_status st = eml_rt_ocall(e, type, req, size, &a, sizeof(a), err);
    if (st != EML_OK) return st;
    if (a.data.n != n)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host sent %zu mirror bytes where %zu were "
                           "asked for",
                           a.data.n, n);
    memcpy(out, a.data.p, n);
    return EML_OK;
}

static eml_status ms_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    return mirror_data(u, EML_MSG_MIRROR_HEADER, NULL, 0, hdr,
                       EML_POOL_HEADER_BYTES, err);
}

static eml_status ms_create(void *u, const uint8_t *hdr, uint64_t cap,
                            eml_err *err)
{
    eml_ocall_mirror_create q;
    memcpy(q.header, hdr, EML_POOL_HEADER_BYTES);
    q.capacity = cap;
    return eml_rt_ocall(u, EML_MSG_MIRROR_CREATE, &q, sizeof(q), NULL, 0,
                        err);
}

/* The mirror seals into a private buffer of the enclave, never into the
 * shared region: AES-GCM computes its tag by reading the ciphertext back,
 * and what the host can write under it would be a double fetch.  Allocated
 * on first use (only runs with a mirror pay for it). */
static uint8_t *ms_staging(void *u, size_t *cap)
{
    eml_enclave *e = u;
    /* A failure of an earlier asynchronous write stays in e->late for the
     * next ocall to report; no point sealing more. */
    if (e->late_st != EML_OK || e->bulk == NULL) return NULL;
    if (e->staging == NULL) e->staging = malloc(e->bulk_n);
    if (e->staging == NULL) return NULL; /* writes go one chunk at a time */
    *cap = e->bulk_n;
    return e->staging;
}

static eml_status ms_write(void *u, int slot, uint64_t off, const uint8_t *p,
                           size_t n, eml_err *err)
{
    eml_enclave *e = u;
    if (e->bulk != NULL && e->staging != NULL && p == e->staging &&
        n <= e->bulk_n) {
        /* The host may still be copying the last write out of the region:
         * collect its reply first, then copy the finished, sealed bytes out
         * (the enclave only writes the region, never reads it back). */
        eml_status late = eml_rt_drain(e, err);
        if (late != EML_OK) return late;
        memcpy(e->bulk, p, n);
        eml_ocall_mirror_write_bulk q = {slot, off, n};
        return eml_rt_ocall_async(e, EML_MSG_MIRROR_WRITE_BULK, &q, sizeof(q),
                                  err);
    }
    eml_ocall_mirror_write q = {slot, off, {p, n}};
    return eml_rt_ocall(e, EML_MSG_MIRROR_WRITE, &q, sizeof(q), NULL, 0, err);
}

static eml_status ms_commit(void *u, int slot, uint64_t len, uint64_t word,
                            eml_err *err)
{
    eml_enclave *e = u;
    eml_ocall_mirror_commit q = {slot, len, word};
    /* With the bulk region, the host persists while training goes on: a
     * failure is reported at the next ocall (at the latest when the model
     * goes out), and a crash meanwhile leaves the previous commit. */
    if (e->bulk != NULL)
        return eml_rt_ocall_async(e, EML_MSG_MIRROR_COMMIT, &q, sizeof(q),
                                  err);
    return eml_rt_ocall(e, EML_MSG_MIRROR_COMMIT, &q, sizeof(q), NULL, 0, err);
}

static eml_status ms_read(void *u, int slot, uint64_t off, uint8_t *p,
                          size_t n, eml_err *err)
{
    eml_ocall_mirror_read q = {slot, off, n};
    return mirror_data(u, EML_MSG_MIRROR_READ, &q, sizeof(q), p, n, err);
}

eml_store_ops eml_rt_store_ops(eml_enclave *e)
{
    eml_store_ops ops = {e, ms_read_header, ms_create, NULL, ms_write,
                         ms_commit, ms_read, ms_staging};
    return ops;
}
