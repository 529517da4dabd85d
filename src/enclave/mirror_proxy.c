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
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"

/* ==== the mirror's store, served by the host ==== */

/* The host's MIRROR_DATA reply must be exactly n bytes. */
static eml_status mirror_data(eml_enclave *e, eml_msg *m, uint8_t *out,
                              size_t n, eml_err *err)
{
    eml_msg_reader r;
    eml_status st = eml_rt_ocall(e, m, EML_MSG_MIRROR_DATA, &r, err);
    eml_msg_free(m);
    if (st != EML_OK) return st;
    const uint8_t *p;
    size_t got;
    st = eml_msg_get_bytes(&r, EML_CHUNK_MAX + 64, &p, &got);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK || got != n)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the host sent %zu mirror bytes where %zu were "
                           "asked for",
                           got, n);
    memcpy(out, p, n);
    return EML_OK;
}

static eml_status mirror_ok(eml_enclave *e, eml_msg *m, eml_err *err)
{
    eml_msg_reader r;
    eml_status st = eml_rt_ocall(e, m, EML_MSG_MIRROR_OK, &r, err);
    eml_msg_free(m);
    if (st == EML_OK && eml_msg_get_end(&r) != EML_OK)
        st = eml_err_set(err, EML_ERR_FORMAT, "malformed MIRROR_OK");
    return st;
}

static eml_status ms_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    eml_msg m;
    eml_msg_init(&m, EML_MSG_MIRROR_HEADER);
    return mirror_data(u, &m, hdr, EML_POOL_HEADER_BYTES, err);
}

static eml_status ms_create(void *u, const uint8_t *hdr, uint64_t cap,
                            eml_err *err)
{
    eml_msg m;
    eml_msg_init(&m, EML_MSG_MIRROR_CREATE);
    eml_msg_put_bytes(&m, hdr, EML_POOL_HEADER_BYTES);
    eml_msg_put_u64(&m, cap);
    return mirror_ok(u, &m, err);
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
    eml_msg m;
    if (e->bulk != NULL && e->staging != NULL && p == e->staging &&
        n <= e->bulk_n) {
        /* The host may still be copying the last write out of the region:
         * collect its reply first, then copy the finished, sealed bytes out
         * (the enclave only writes the region, never reads it back). */
        eml_status late = eml_rt_drain(e, err);
        if (late != EML_OK) return late;
        memcpy(e->bulk, p, n);
        eml_msg_init(&m, EML_MSG_MIRROR_WRITE_BULK);
        eml_msg_put_u64(&m, (uint64_t)slot);
        eml_msg_put_u64(&m, off);
        eml_msg_put_u64(&m, n);
        return eml_rt_ocall_async(e, &m, err);
    }
    eml_msg_init(&m, EML_MSG_MIRROR_WRITE);
    eml_msg_put_u64(&m, (uint64_t)slot);
    eml_msg_put_u64(&m, off);
    eml_msg_put_bytes(&m, p, n);
    return mirror_ok(u, &m, err);
}

static eml_status ms_commit(void *u, int slot, uint64_t len, uint64_t word,
                            eml_err *err)
{
    eml_enclave *e = u;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_MIRROR_COMMIT);
    eml_msg_put_u64(&m, (uint64_t)slot);
    eml_msg_put_u64(&m, len);
    eml_msg_put_u64(&m, word);
    /* With the bulk region, the host persists while training goes on: a
     * failure is reported at the next ocall (at the latest when the model
     * goes out), and a crash meanwhile leaves the previous commit. */
    if (e->bulk != NULL) return eml_rt_ocall_async(e, &m, err);
    return mirror_ok(u, &m, err);
}

static eml_status ms_read(void *u, int slot, uint64_t off, uint8_t *p,
                          size_t n, eml_err *err)
{
    eml_msg m;
    eml_msg_init(&m, EML_MSG_MIRROR_READ);
    eml_msg_put_u64(&m, (uint64_t)slot);
    eml_msg_put_u64(&m, off);
    eml_msg_put_u64(&m, n);
    return mirror_data(u, &m, p, n, err);
}

eml_store_ops eml_rt_store_ops(eml_enclave *e)
{
    eml_store_ops ops = {e, ms_read_header, ms_create, NULL, ms_write,
                         ms_commit, ms_read, ms_staging};
    return ops;
}
