/*
 * enclave.c - the trusted runtime: identity and sealing, attestation
 * reports, and the ecalls (INIT, ATTEST, TRAIN, PING, PROBE, SHUTDOWN).
 *
 * Everything that arrives from the host is decoded with eml_msg_get_* and
 * range-checked before use; data only ever arrives as ciphertext, which is
 * authenticated chunk by chunk before any plaintext is used.  The only
 * things that leave are: public keys, signed reports, the model encrypted
 * to its recipient, progress numbers (loss, rates), and error messages that
 * name what failed (never key or data bytes).
 *
 * No files, sockets or processes: the host serves FILE_* and OUTPUT ocalls.
 * Secrets (identity keys, data keys) live in locked memory and are wiped.
 */
#define _DEFAULT_SOURCE 1 /* syscall() for the sandbox probe */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "enclaveml/cfg.h"
#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "enclaveml/dp.h"
#include "enclaveml/enclave.h"
#include "enclaveml/idx.h"
#include "enclaveml/ledger.h"
#include "enclaveml/mirror.h"
#include "enclaveml/net.h"
#include "enclaveml/train.h"

typedef struct secrets {
    uint8_t sign_sk[32];     /* platform */
    uint8_t seal_secret[32]; /* platform */
    uint8_t x_sk[32];        /* identity */
    uint8_t ed_sk[32];       /* identity */
} secrets;

struct eml_enclave {
    eml_channel ch;
    secrets *sec; /* locked memory */
    uint8_t measurement[32];
    uint8_t x_pk[32], ed_pk[32], platform_pk[32];
    char policy[EML_POLICY_MAX];
    int sim;
    int sandboxed;
    int has_identity;
    uint8_t *bulk; /* shared with the host: written, never read */
    size_t bulk_n;
    uint8_t *staging; /* private, bulk_n bytes: the mirror seals here */
    eml_counter_ops counter; /* the platform's monotonic counter */
    /* Mirror ocalls sent without waiting (bulk writes, commits): their
     * MIRROR_OK replies are collected before the next ocall and before
     * the bulk region is written again, so the host copies and persists
     * while training goes on. */
    int pending;
    eml_status late_st; /* the first of their failures, not yet reported */
    eml_err late;
};

void eml_enclave_set_bulk(eml_enclave *e, uint8_t *p, size_t n)
{
    e->bulk = p;
    e->bulk_n = p != NULL ? n : 0;
}

eml_status eml_enclave_new(const eml_platform *plat, eml_enclave **out)
{
    *out = NULL;
    if (strnlen(plat->policy, EML_POLICY_MAX) >= EML_POLICY_MAX)
        return EML_ERR_INVALID;
    eml_enclave *e = calloc(1, sizeof(*e));
    if (e == NULL) return EML_ERR_NOMEM;
    e->sec = eml_secure_alloc(sizeof(secrets));
    if (e->sec == NULL) {
        free(e);
        return EML_ERR_NOMEM;
    }
    memcpy(e->sec->sign_sk, plat->sign_sk, 32);
    memcpy(e->sec->seal_secret, plat->seal_secret, 32);
    memcpy(e->measurement, plat->measurement, 32);
    memcpy(e->policy, plat->policy, strlen(plat->policy) + 1);
    e->sim = plat->sim;
    e->sandboxed = plat->sandboxed;
    e->counter = plat->counter;
    eml_status st = eml_ed25519_public(e->platform_pk, e->sec->sign_sk);
    if (st != EML_OK) {
        eml_enclave_free(e);
        return st;
    }
    *out = e;
    return EML_OK;
}

void eml_enclave_free(eml_enclave *e)
{
    if (e == NULL) return;
    eml_secure_free(e->sec, sizeof(secrets));
    if (e->staging != NULL) {
        eml_wipe(e->staging, e->bulk_n); /* sealed bytes, but still */
        free(e->staging);
    }
    eml_channel_free(&e->ch);
    eml_wipe(e, sizeof(*e));
    free(e);
}

/* ==== replies ==== */

static eml_status send_error(eml_enclave *e, eml_status st, const char *msg)
{
    eml_msg m;
    eml_msg_init(&m, EML_MSG_ERROR);
    eml_msg_put_u64(&m, (uint64_t)(int64_t)st);
    size_t n = strnlen(msg, EML_ERRMSG_MAX);
    eml_msg_put_bytes(&m, msg, n);
    eml_status s2 = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return s2;
}

/* Receives one frame from the host. */
static eml_status recv_frame(eml_enclave *e, eml_msg_reader *r,
                             uint16_t *type, eml_err *err)
{
    const uint8_t *p;
    size_t n;
    eml_status st = eml_msg_recv(&e->ch, type, &p, &n);
    if (st != EML_OK)
        return eml_err_set(err, st, "bad reply from the host: %s",
                           eml_status_str(st));
    eml_msg_reader_init(r, p, n);
    return EML_OK;
}

/* A reply must be of type `want`; an ERROR reply from the host becomes
 * EML_ERR_IO with its text. */
static eml_status check_reply(uint16_t type, eml_msg_reader *r, uint16_t want,
                              eml_err *err)
{
    if (type == EML_MSG_ERROR) {
        uint64_t code;
        const uint8_t *txt;
        size_t tl;
        if (eml_msg_get_u64(r, &code) == EML_OK &&
            eml_msg_get_bytes(r, EML_ERRMSG_MAX, &txt, &tl) == EML_OK)
            return eml_err_set(err, EML_ERR_IO, "host: %.*s", (int)tl,
                               (const char *)txt);
        return eml_err_set(err, EML_ERR_IO, "host reported an error");
    }
    if (type != want)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "host answered %s where %s was expected",
                           eml_msg_type_name(type), eml_msg_type_name(want));
    return EML_OK;
}

/* Collects the replies of the mirror ocalls sent without waiting, keeping
 * the first failure in e->late until it is reported. */
static void collect(eml_enclave *e)
{
    while (e->pending > 0) {
        eml_msg_reader r;
        uint16_t type;
        eml_err err = {0};
        eml_status st = recv_frame(e, &r, &type, &err);
        if (st != EML_OK) {
            e->pending = 0; /* a broken channel owes nothing more */
        } else {
            e->pending--;
            st = check_reply(type, &r, EML_MSG_MIRROR_OK, &err);
            if (st == EML_OK && eml_msg_get_end(&r) != EML_OK)
                st = eml_err_set(&err, EML_ERR_FORMAT, "malformed MIRROR_OK");
        }
        if (st != EML_OK && e->late_st == EML_OK) {
            e->late_st = st;
            e->late = err;
        }
    }
}

/* collect(), then reports (and forgets) a failure among the replies. */
static eml_status drain(eml_enclave *e, eml_err *err)
{
    collect(e);
    eml_status st = e->late_st;
    if (st != EML_OK) {
        e->late_st = EML_OK;
        eml_err_set(err, st, "%s", e->late.msg);
    }
    return st;
}

/* An ocall whose reply is collected later by drain(). */
static eml_status ocall_async(eml_enclave *e, eml_msg *m, eml_err *err)
{
    eml_status st = eml_msg_send(&e->ch, m);
    eml_msg_free(m);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot reach the host: %s",
                           eml_status_str(st));
    e->pending++;
    return EML_OK;
}

/* Sends an ocall and waits for its reply of type `want`, after the
 * replies still owed to earlier asynchronous ones. */
static eml_status ocall(eml_enclave *e, eml_msg *m, uint16_t want,
                        eml_msg_reader *r, eml_err *err)
{
    eml_status st = drain(e, err);
    if (st != EML_OK) return st;
    st = eml_msg_send(&e->ch, m);
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot reach the host: %s",
                           eml_status_str(st));
    uint16_t type;
    st = recv_frame(e, r, &type, err);
    return st != EML_OK ? st : check_reply(type, r, want, err);
}

/* ==== identity and sealing ==== */

#define SEAL_MAGIC "EMLSEAL1"
#define SEALED_BYTES (8 + 12 + 64 + 16)

static eml_status seal_key(eml_enclave *e, uint8_t key[32])
{
    static const char info[] = "enclaveml seal v1";
    return eml_hkdf_sha256(key, 32, e->sec->seal_secret, 32, e->measurement,
                           32, (const uint8_t *)info, sizeof(info) - 1);
}

static eml_status seal_identity(eml_enclave *e, uint8_t out[SEALED_BYTES])
{
    uint8_t key[32], aad[8 + 32];
    memcpy(out, SEAL_MAGIC, 8);
    memcpy(aad, SEAL_MAGIC, 8);
    memcpy(aad + 8, e->measurement, 32);
    eml_status st = eml_random(out + 8, 12);
    if (st == EML_OK) st = seal_key(e, key);
    if (st == EML_OK) /* x_sk and ed_sk are adjacent in secrets */
        st = eml_aes256gcm_seal(out + 20, e->sec->x_sk, 64, aad, sizeof(aad),
                                out + 8, key);
    eml_wipe(key, sizeof(key));
    return st;
}

static eml_status unseal_identity(eml_enclave *e, const uint8_t *blob,
                                  size_t len, eml_err *err)
{
    if (len != SEALED_BYTES || memcmp(blob, SEAL_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "sealed identity is malformed (%zu bytes)", len);
    uint8_t key[32], aad[8 + 32];
    memcpy(aad, SEAL_MAGIC, 8);
    memcpy(aad + 8, e->measurement, 32);
    eml_status st = seal_key(e, key);
    if (st == EML_OK)
        st = eml_aes256gcm_open(e->sec->x_sk, blob + 20, 64 + 16, aad,
                                sizeof(aad), blob + 8, key);
    eml_wipe(key, sizeof(key));
    if (st != EML_OK)
        return eml_err_set(err, EML_ERR_AUTH,
                           "sealed identity does not authenticate for this "
                           "enclave measurement and platform");
    return EML_OK;
}

static eml_status ecall_init(eml_enclave *e, eml_msg_reader *r, eml_err *err)
{
    const uint8_t *blob;
    size_t blen;
    eml_status st = eml_msg_get_bytes(r, EML_SEALED_MAX, &blob, &blen);
    if (st == EML_OK) st = eml_msg_get_end(r);
    if (st != EML_OK)
        return eml_err_set(err, st, "malformed INIT message");
    if (e->has_identity) /* a failed unseal would wipe the live identity */
        return eml_err_set(err, EML_ERR_INVALID, "enclave already initialised");
    uint8_t sealed[SEALED_BYTES];
    size_t sealed_len = 0;
    if (blen == 0) {
        st = eml_x25519_keygen(e->sec->x_sk, e->x_pk);
        if (st == EML_OK) st = eml_ed25519_keygen(e->sec->ed_sk, e->ed_pk);
        if (st == EML_OK) st = seal_identity(e, sealed);
        if (st != EML_OK)
            return eml_err_set(err, st, "cannot create the enclave identity");
        sealed_len = sizeof(sealed);
    } else {
        st = unseal_identity(e, blob, blen, err);
        if (st == EML_OK) st = eml_x25519_public(e->x_pk, e->sec->x_sk);
        if (st == EML_OK) st = eml_ed25519_public(e->ed_pk, e->sec->ed_sk);
        if (st != EML_OK) return eml_err_set(err, st, "cannot unseal");
    }
    e->has_identity = 1;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_INIT_OK);
    eml_msg_put_bytes(&m, e->measurement, 32);
    eml_msg_put_bytes(&m, e->x_pk, 32);
    eml_msg_put_bytes(&m, e->ed_pk, 32);
    eml_msg_put_bytes(&m, e->policy, strlen(e->policy));
    eml_msg_put_bytes(&m, sealed, sealed_len);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return st;
}

/* ==== attestation ==== */

static eml_status ecall_attest(eml_enclave *e, eml_msg_reader *r,
                               eml_err *err)
{
    const uint8_t *nonce;
    size_t nlen;
    eml_status st = eml_msg_get_bytes(r, EML_NONCE_MAX, &nonce, &nlen);
    if (st == EML_OK) st = eml_msg_get_end(r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed ATTEST message");
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");
    /* report_data = SHA-256(x25519 pk || ed25519 pk || nonce || policy) */
    uint8_t rd_in[32 + 32 + EML_NONCE_MAX + EML_POLICY_MAX], rd[32];
    size_t k = 0, plen = strlen(e->policy);
    memcpy(rd_in + k, e->x_pk, 32);
    k += 32;
    memcpy(rd_in + k, e->ed_pk, 32);
    k += 32;
    memcpy(rd_in + k, nonce, nlen);
    k += nlen;
    memcpy(rd_in + k, e->policy, plen);
    k += plen;
    st = eml_sha256(rd, rd_in, k);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    char meas[65], xh[65], eh[65], nh[2 * EML_NONCE_MAX + 1], rdh[65], ph[65];
    eml_hex(meas, e->measurement, 32);
    eml_hex(xh, e->x_pk, 32);
    eml_hex(eh, e->ed_pk, 32);
    eml_hex(nh, nonce, nlen);
    eml_hex(rdh, rd, 32);
    eml_hex(ph, e->platform_pk, 32);
    /* The policy is our own configuration string: letters, digits, '=',
     * ';', '.', '_' only (checked at start), so it needs no escaping. */
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"type\":\"enclaveml-attestation\",\"version\":1,"
             "\"sim\":%s,\"measurement\":\"%s\",\"x25519\":\"%s\","
             "\"ed25519\":\"%s\",\"nonce\":\"%s\",\"policy\":\"%s\","
             "\"report_data\":\"%s\",\"platform_key\":\"%s\"",
             e->sim ? "true" : "false", meas, xh, eh, nh, e->policy, rdh, ph);
    char *report = NULL;
    size_t rlen = 0;
    st = eml_report_sign(body, e->sec->sign_sk, &report, &rlen);
    if (st != EML_OK) return eml_err_set(err, st, "cannot sign the report");
    eml_msg m;
    eml_msg_init(&m, EML_MSG_REPORT);
    eml_msg_put_bytes(&m, report, rlen);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    free(report);
    return st;
}

/* ==== file ocalls ==== */

/* FILE_OPEN: the size of file id as the host reports it (untrusted: only
 * a hint; the container's authentication decides). */
static eml_status file_open(eml_enclave *e, uint64_t id, uint64_t *size,
                            eml_err *err)
{
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_FILE_OPEN);
    eml_msg_put_u64(&m, id);
    eml_status st = ocall(e, &m, EML_MSG_FILE_INFO, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    st = eml_msg_get_u64(&r, size);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed FILE_INFO");
    return EML_OK;
}

/* FILE_READ: up to want bytes at off; *p points into the channel's
 * receive buffer, valid until the next message. */
static eml_status file_read(eml_enclave *e, uint64_t id, uint64_t off,
                            size_t want, const uint8_t **p, size_t *n,
                            eml_err *err)
{
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_FILE_READ);
    eml_msg_put_u64(&m, id);
    eml_msg_put_u64(&m, off);
    eml_msg_put_u64(&m, want);
    eml_status st = ocall(e, &m, EML_MSG_FILE_DATA, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    st = eml_msg_get_bytes(&r, want, p, n);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed FILE_DATA");
    return EML_OK;
}

/* ==== confidential training ==== */

typedef struct owner_file {
    uint8_t *plain; /* decrypted bytes (wiped on free) */
    size_t len;
    uint8_t digest[32]; /* SHA-256 of the ciphertext as read */
    uint8_t dataset_id[EML_CONTAINER_DATASET_ID_BYTES]; /* from its header */
} owner_file;

static void owner_file_free(owner_file *f)
{
    if (f->plain != NULL) {
        eml_wipe(f->plain, f->len);
        free(f->plain);
    }
    memset(f, 0, sizeof(*f));
}

static const char *const kind_names[EML_FILE_KINDS] = {
    "train-images", "train-labels", "test-images", "test-labels"};

/* The container role a file must carry to be served as file kind k. */
static eml_container_role kind_role(uint64_t k)
{
    return (eml_container_role)(EML_CONTAINER_ROLE_TRAIN_IMAGES + k);
}
_Static_assert(EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TRAIN_LABELS ==
                       EML_CONTAINER_ROLE_TRAIN_LABELS &&
                   EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TEST_IMAGES ==
                       EML_CONTAINER_ROLE_TEST_IMAGES &&
                   EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TEST_LABELS ==
                       EML_CONTAINER_ROLE_TEST_LABELS,
               "file kinds and container roles in step");

/* Streams one encrypted file from the host, authenticating every chunk,
 * and returns its plaintext.  Before anything is decrypted the header must
 * name the owner's key, the role of the slot the file was served in, and
 * (when want_dataset is not NULL) the dataset id of the owner's other
 * files; the header is authenticated with the first chunk. */
static eml_status read_owner_file(eml_enclave *e, uint64_t file_id,
                                  const uint8_t data_key[32],
                                  const uint8_t key_id[16],
                                  const uint8_t *want_dataset,
                                  owner_file *out, eml_err *err)
{
    char what[48];
    snprintf(what, sizeof(what), "owner %u %s",
             (unsigned)(file_id / EML_FILE_KINDS) + 1,
             kind_names[file_id % EML_FILE_KINDS]);
    memset(out, 0, sizeof(*out));
    uint64_t size;
    eml_status st = file_open(e, file_id, &size, err);
    if (st != EML_OK) return st;

    eml_cr *cr = NULL;
    eml_sha256_ctx *h = NULL;
    uint8_t *buf = NULL, *chunk_pt = NULL;
    size_t cap = 0, chunk_size = 0;
    uint64_t off = 0;
    st = eml_sha256_new(&h);
    if (st != EML_OK) goto out;

    /* The header: its first bytes say how long it is. */
    uint8_t header[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t want = pass == 0 ? EML_CONTAINER_PREFIX : hlen;
        const uint8_t *p;
        size_t n;
        st = file_read(e, file_id, 0, want, &p, &n, err);
        if (st != EML_OK) goto out;
        if (n != want) {
            st = eml_err_set(err, EML_ERR_TRUNCATED,
                             "%s: file ends inside the container header",
                             what);
            goto out;
        }
        memcpy(header, p, n);
        if (pass == 0) {
            st = eml_cr_header_len(header, n, &hlen, err);
            if (st != EML_OK) goto out;
            if (hlen > sizeof(header)) {
                st = eml_err_set(err, EML_ERR_FORMAT, "%s: bad header",
                                 what);
                goto out;
            }
        }
    }
    eml_container_info info;
    st = eml_container_peek(header, hlen, &info, err);
    if (st != EML_OK) goto out;
    if (info.mode != EML_CONTAINER_SYMMETRIC ||
        !eml_ct_equal(info.key_id, key_id, 16)) {
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s is not encrypted under the key of that owner's "
                         "grant (a swapped or foreign file)",
                         what);
        goto out;
    }
    if (info.role != kind_role(file_id % EML_FILE_KINDS)) {
        const char *as = eml_container_role_name(info.role);
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s: the file is encrypted as %s (a file served in "
                         "the wrong role)",
                         what, as != NULL ? as : "an unknown role");
        goto out;
    }
    if (want_dataset != NULL &&
        memcmp(info.dataset_id, want_dataset, sizeof(info.dataset_id)) != 0) {
        st = eml_err_set(err, EML_ERR_AUTH,
                         "%s: the file belongs to another data set than the "
                         "owner's %s (their dataset ids differ)",
                         what, kind_names[EML_FILE_TRAIN_IMAGES]);
        goto out;
    }
    memcpy(out->dataset_id, info.dataset_id, sizeof(out->dataset_id));
    eml_container_keys keys = {data_key, NULL};
    st = eml_cr_new(header, hlen, &keys, &cr, err);
    if (st != EML_OK) goto out;
    st = eml_sha256_update(h, header, hlen);
    if (st != EML_OK) goto out;
    off = hlen;
    chunk_size = eml_cr_chunk_size(cr);
    chunk_pt = malloc(chunk_size);
    if (chunk_pt == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    for (;;) {
        size_t want = chunk_size + EML_CONTAINER_TAG_BYTES;
        const uint8_t *p;
        size_t n;
        st = file_read(e, file_id, off, want, &p, &n, err);
        if (st != EML_OK) {
            char inner[sizeof(err->msg)];
            snprintf(inner, sizeof(inner), "%s", eml_err_msg(err, st));
            if (err != NULL) err->msg[0] = '\0';
            st = eml_err_set(err, st, "%s: %s", what, inner);
            goto out;
        }
        int last = n < want || off + n >= size;
        size_t pl = 0;
        st = eml_cr_open(cr, p, n, last, chunk_pt, &pl, err);
        if (st != EML_OK) {
            char inner[sizeof(err->msg)];
            snprintf(inner, sizeof(inner), "%s", eml_err_msg(err, st));
            if (err != NULL) err->msg[0] = '\0';
            st = eml_err_set(err, st, "%s: %s", what, inner);
            goto out;
        }
        st = eml_sha256_update(h, p, n);
        if (st != EML_OK) goto out;
        if (pl > EML_IDX_MAX_BYTES - out->len) {
            st = eml_err_set(err, EML_ERR_RANGE, "%s is too large", what);
            goto out;
        }
        if (out->len + pl > cap) {
            size_t ncap = cap ? cap : ((size_t)1 << 20);
            while (ncap < out->len + pl) ncap *= 2;
            uint8_t *nb = malloc(ncap);
            if (nb == NULL) {
                st = eml_err_set(err, EML_ERR_NOMEM,
                                 "enclave heap budget exhausted while "
                                 "reading %s",
                                 what);
                goto out;
            }
            if (buf != NULL) {
                memcpy(nb, buf, out->len);
                eml_wipe(buf, cap);
                free(buf);
            }
            buf = nb;
            cap = ncap;
        }
        memcpy(buf + out->len, chunk_pt, pl);
        out->len += pl;
        off += n;
        if (last) break;
    }
    st = eml_cr_finish(cr, err);
    if (st != EML_OK) goto out;
    st = eml_sha256_final(h, out->digest);
out:
    eml_sha256_free(h);
    eml_cr_free(cr);
    if (chunk_pt != NULL) {
        eml_wipe(chunk_pt, chunk_size);
        free(chunk_pt);
    }
    if (st != EML_OK) {
        if (buf != NULL) {
            eml_wipe(buf, cap);
            free(buf);
        }
        out->len = 0;
        memset(out->dataset_id, 0, sizeof(out->dataset_id));
        return st;
    }
    out->plain = buf;
    return EML_OK;
}

/* Appends the images and labels of one owner's pair to a dataset. */
typedef struct data_acc {
    uint8_t *images, *labels;
    size_t count, item;
} data_acc;

static void data_acc_free(data_acc *a)
{
    if (a->images != NULL) {
        eml_wipe(a->images, a->count * a->item);
        free(a->images);
    }
    if (a->labels != NULL) {
        eml_wipe(a->labels, a->count);
        free(a->labels);
    }
    memset(a, 0, sizeof(*a));
}

static eml_status data_acc_add(data_acc *a, const owner_file *img,
                               const owner_file *lab, const char *what,
                               eml_err *err)
{
    eml_idx ii, li;
    memset(&ii, 0, sizeof(ii));
    memset(&li, 0, sizeof(li));
    eml_status st = eml_idx_parse(img->plain, img->len, what, &ii, err);
    if (st == EML_OK) st = eml_idx_parse(lab->plain, lab->len, what, &li, err);
    if (st != EML_OK) goto out;
    /* Messages about decrypted files name the problem, never a number
     * read from them. */
    if (ii.ndims < 2 || li.ndims != 1) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: the %s file does not have the dimensions of "
                         "%s",
                         what, ii.ndims < 2 ? "image" : "label",
                         ii.ndims < 2 ? "images (2 or more)"
                                      : "labels (exactly 1)");
        goto out;
    }
    if (ii.count != li.count) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: the image and label files hold different "
                         "numbers of records",
                         what);
        goto out;
    }
    if (a->count > 0 && ii.item != a->item) {
        st = eml_err_set(err, EML_ERR_SHAPE,
                         "%s: its images are not the size of the other "
                         "owners' images",
                         what);
        goto out;
    }
    size_t n = a->count + ii.count;
    if (n < a->count || ii.item == 0 || n > SIZE_MAX / ii.item) {
        st = eml_err_set(err, EML_ERR_RANGE, "%s: too many images", what);
        goto out;
    }
    uint8_t *ni = malloc(n * ii.item + 1), *nl = malloc(n + 1);
    if (ni == NULL || nl == NULL) {
        free(ni);
        free(nl);
        st = eml_err_set(err, EML_ERR_NOMEM,
                         "enclave heap budget exhausted (%s)", what);
        goto out;
    }
    if (a->count > 0) {
        memcpy(ni, a->images, a->count * a->item);
        memcpy(nl, a->labels, a->count);
    }
    memcpy(ni + a->count * ii.item, ii.data, ii.count * ii.item);
    memcpy(nl + a->count, li.data, li.count);
    size_t item = ii.item;
    data_acc_free(a);
    a->images = ni;
    a->labels = nl;
    a->count = n;
    a->item = item;
out:
    eml_idx_free(&ii);
    eml_idx_free(&li);
    return st;
}

typedef struct progress_ctx {
    eml_enclave *e;
    int failed;
} progress_ctx;

static void send_progress(void *user, const eml_train_progress *p)
{
    progress_ctx *pc = user;
    if (pc->failed) return;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PROGRESS);
    eml_msg_put_u64(&m, (uint64_t)p->epoch);
    eml_msg_put_u64(&m, (uint64_t)p->epochs);
    eml_msg_put_u64(&m, (uint64_t)p->batch);
    eml_msg_put_u64(&m, (uint64_t)p->batches);
    eml_msg_put_f64(&m, p->loss);
    eml_msg_put_f64(&m, p->images_per_second);
    eml_msg_put_f64(&m, p->seconds);
    eml_msg_put_f64(&m, p->eta_seconds);
    eml_msg_put_u64(&m, (uint64_t)p->epoch_done);
    eml_msg_put_f64(&m, p->test_accuracy);
    eml_msg_put_f64(&m, p->train_accuracy);
    eml_msg_put_u64(&m, (uint64_t)p->resume_event);
    eml_msg_put_u64(&m, p->resume_event ? (uint64_t)(p->resumed_step + 1) : 0);
    if (eml_msg_send(&pc->e->ch, &m) != EML_OK) pc->failed = 1;
    eml_msg_free(&m);
}

/* Encrypts the weights to the recipient and streams them out; file_hash
 * gets the SHA-256 of the container exactly as sent (the model file). */
static eml_status send_model(eml_enclave *e, const uint8_t *pt, size_t len,
                             const uint8_t recipient[32],
                             uint8_t file_hash[32], eml_err *err)
{
    eml_cw *w = NULL;
    eml_sha256_ctx *fh = NULL;
    uint8_t header[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    eml_container_meta meta = {EML_CONTAINER_ROLE_MODEL, {0}};
    eml_status st = eml_sha256_new(&fh);
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    st = eml_cw_new(EML_CONTAINER_RECIPIENT, recipient, 0, &meta, &w, header,
                    &hlen, err);
    if (st == EML_OK) st = eml_sha256_update(fh, header, hlen);
    if (st != EML_OK) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return st;
    }
    size_t cs = eml_cw_chunk_size(w);
    uint8_t *ct = malloc(cs + EML_CONTAINER_TAG_BYTES);
    if (ct == NULL) {
        eml_cw_free(w);
        eml_sha256_free(fh);
        return eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
    }
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_OUTPUT);
    eml_msg_put_u64(&m, 0);
    eml_msg_put_bytes(&m, header, hlen);
    eml_msg_put_u64(&m, 0);
    st = ocall(e, &m, EML_MSG_OUTPUT_OK, &r, err);
    eml_msg_free(&m);
    size_t off = 0;
    while (st == EML_OK) {
        size_t n = len - off < cs ? len - off : cs;
        int final = off + n == len;
        size_t cl = 0;
        st = eml_cw_seal(w, pt + off, n, final, ct, &cl, err);
        if (st == EML_OK) st = eml_sha256_update(fh, ct, cl);
        if (st != EML_OK) break;
        eml_msg_init(&m, EML_MSG_OUTPUT);
        eml_msg_put_u64(&m, 0);
        eml_msg_put_bytes(&m, ct, cl);
        eml_msg_put_u64(&m, (uint64_t)final);
        st = ocall(e, &m, EML_MSG_OUTPUT_OK, &r, err);
        eml_msg_free(&m);
        off += n;
        if (final) break;
    }
    if (st == EML_OK) st = eml_sha256_final(fh, file_hash);
    free(ct);
    eml_cw_free(w);
    eml_sha256_free(fh);
    return st;
}

/* ==== the mirror's store, served by the host ==== */

/* The host's MIRROR_DATA reply must be exactly n bytes. */
static eml_status mirror_data(eml_enclave *e, eml_msg *m, uint8_t *out,
                              size_t n, eml_err *err)
{
    eml_msg_reader r;
    eml_status st = ocall(e, m, EML_MSG_MIRROR_DATA, &r, err);
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
    eml_status st = ocall(e, m, EML_MSG_MIRROR_OK, &r, err);
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
        eml_status late = drain(e, err);
        if (late != EML_OK) return late;
        memcpy(e->bulk, p, n);
        eml_msg_init(&m, EML_MSG_MIRROR_WRITE_BULK);
        eml_msg_put_u64(&m, (uint64_t)slot);
        eml_msg_put_u64(&m, off);
        eml_msg_put_u64(&m, n);
        return ocall_async(e, &m, err);
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
    if (e->bulk != NULL) return ocall_async(e, &m, err);
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

typedef struct train_req {
    const uint8_t *cfg_text;
    size_t cfg_len;
    uint64_t epochs, batch, seed, threads, kernels, n_owners;
    uint64_t mirror, save_every, resume;
    double lr;
    uint8_t recipient[32];
    eml_dp_opts dp;
    const uint8_t *grants[EML_OWNERS_MAX];
    size_t grant_len[EML_OWNERS_MAX];
    uint8_t report_nonce[EML_NONCE_MAX]; /* copied: ocalls reuse the frame */
    size_t report_nonce_len;
} train_req;

static eml_status decode_train(eml_msg_reader *r, train_req *q)
{
    memset(q, 0, sizeof(*q));
    eml_status st = eml_msg_get_bytes(r, EML_CFG_TEXT_MAX, &q->cfg_text,
                                      &q->cfg_len);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 100000, &q->epochs);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, EML_CFG_MAX_BATCH, &q->batch);
    if (st == EML_OK) st = eml_msg_get_f64(r, &q->lr);
    if (st == EML_OK) st = eml_msg_get_u64(r, &q->seed);
    if (st == EML_OK) st = eml_msg_get_range(r, 1, 256, &q->threads);
    if (st == EML_OK)
        st = eml_msg_get_range(r, 0, EML_KERNELS_COUNT - 1, &q->kernels);
    if (st == EML_OK) st = eml_msg_get_fixed(r, q->recipient, 32);
    uint64_t dp = 0, fixed = 0, insecure = 0;
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 1, &dp);
    if (st == EML_OK) st = eml_msg_get_f64(r, &q->dp.clip);
    if (st == EML_OK) st = eml_msg_get_f64(r, &q->dp.noise);
    if (st == EML_OK) st = eml_msg_get_f64(r, &q->dp.delta);
    if (st == EML_OK) st = eml_msg_get_f64(r, &q->dp.target_epsilon);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 1, &fixed);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 1, &insecure);
    q->dp.enabled = (int)dp;
    q->dp.fixed_batches = (int)fixed;
    q->dp.insecure_seed = (int)insecure;
    if (st == EML_OK) st = eml_msg_get_range(r, 1, EML_OWNERS_MAX, &q->n_owners);
    for (uint64_t i = 0; st == EML_OK && i < q->n_owners; i++)
        st = eml_msg_get_bytes(r, EML_GRANT_MAX, &q->grants[i],
                               &q->grant_len[i]);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 1, &q->mirror);
    if (st == EML_OK)
        st = eml_msg_get_range(r, 1, 1000000000, &q->save_every);
    if (st == EML_OK) st = eml_msg_get_range(r, 0, 1, &q->resume);
    const uint8_t *nonce = NULL;
    if (st == EML_OK)
        st = eml_msg_get_bytes(r, EML_NONCE_MAX, &nonce, &q->report_nonce_len);
    if (st == EML_OK) memcpy(q->report_nonce, nonce, q->report_nonce_len);
    if (st == EML_OK) st = eml_msg_get_end(r);
    if (st == EML_OK && (q->lr < 0 || q->lr > 100)) st = EML_ERR_RANGE;
    return st;
}

/* The training-set size, from the sizes of the owners' label containers
 * (a raw IDX labels file holds 8 header bytes and one byte per example),
 * known before anything is decrypted; checked against the decrypted data
 * later. */
static eml_status claimed_count(eml_enclave *e, uint64_t n_owners,
                                size_t *out, eml_err *err)
{
    size_t total = 0;
    for (uint64_t o = 0; o < n_owners; o++) {
        uint64_t id = o * EML_FILE_KINDS + EML_FILE_TRAIN_LABELS;
        uint64_t size = 0;
        const uint8_t *p;
        size_t n;
        eml_container_info info;
        eml_status st = file_open(e, id, &size, err);
        if (st == EML_OK)
            st = file_read(e, id, 0, EML_CONTAINER_HEADER_MAX, &p, &n, err);
        if (st != EML_OK) return st;
        size_t hlen = 0;
        if (st == EML_OK) st = eml_cr_header_len(p, n, &hlen, err);
        if (st == EML_OK && hlen > n) st = EML_ERR_TRUNCATED;
        if (st == EML_OK) st = eml_container_peek(p, hlen, &info, err);
        if (st != EML_OK)
            return eml_err_set(err, st, "owner %u: bad label container",
                               (unsigned)o + 1);
        if (size < hlen + EML_CONTAINER_TAG_BYTES)
            return eml_err_set(err, EML_ERR_TRUNCATED,
                               "owner %u: label container too short",
                               (unsigned)o + 1);
        uint64_t body = size - hlen;
        uint64_t per = (uint64_t)info.chunk_size + EML_CONTAINER_TAG_BYTES;
        uint64_t chunks = (body + per - 1) / per;
        uint64_t pt = body - chunks * EML_CONTAINER_TAG_BYTES;
        if (pt < 8 || pt - 8 > SIZE_MAX - total)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "owner %u: label file too small",
                               (unsigned)o + 1);
        total += (size_t)(pt - 8);
    }
    *out = total;
    return EML_OK;
}

/* Fixes the noise, before any data is decrypted; *planned is the epsilon
 * the whole run may spend.  cap (the smallest max_epsilon among the
 * grants, or infinity) refuses a larger plan and bounds the target, so
 * that training never takes a step past it.  The spend ledger's gate
 * (budget_gate) then checks what is left of each grant's budget. */
static eml_status plan_dp(eml_enclave *e, train_req *q, int batch,
                          int epochs, size_t n_params, double cap,
                          size_t *claimed, double *planned, eml_err *err)
{
    eml_dp_opts *dp = &q->dp;
    if (!(dp->clip > 0) || !(dp->delta > 0 && dp->delta < 1) ||
        dp->target_epsilon < 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "DP needs clip > 0 and delta in (0, 1)");
    eml_status st = claimed_count(e, q->n_owners, claimed, err);
    if (st != EML_OK) return st;
    double rate;
    long steps;
    eml_dp_plan(*claimed, batch, epochs, &rate, &steps);
    if (dp->noise < 0) {
        if (!(dp->target_epsilon > 0))
            return eml_err_set(err, EML_ERR_INVALID,
                               "DP needs a noise multiplier or a target "
                               "epsilon");
        st = eml_dp_noise_for_target(rate, steps, dp->delta,
                                     dp->target_epsilon, dp->clip, n_params,
                                     &dp->noise, err);
        if (st != EML_OK) return st;
    }
    double order;
    st = eml_dp_epsilon(rate,
                        eml_dp_effective_noise(dp->noise, dp->clip, n_params),
                        steps, dp->delta, planned, &order, err);
    if (st != EML_OK) return st;
    if (isfinite(cap) && *planned > cap * (1 + 1e-9))
        return eml_err_set(err, EML_ERR_AUTH,
                           "the planned run spends epsilon %.4g (q %.6g, "
                           "noise %.4g, %ld steps, delta %g) but a grant "
                           "allows at most %.4g: refused before any data "
                           "was decrypted",
                           *planned, rate, dp->noise, steps, dp->delta, cap);
    if (dp->target_epsilon <= 0 || dp->target_epsilon > cap)
        dp->target_epsilon = isfinite(cap) ? cap : 0;
    return EML_OK;
}

/* ==== privacy budgets across runs ==== */

/* The budgeted grants of one run and the spend ledger (ledger.h): a fresh
 * run is admitted only if every budgeted grant has its planned epsilon
 * left, and is charged, durably, before its first step. */
typedef struct budget {
    eml_enclave *e;
    const eml_grant_info *g; /* the run's grants */
    uint64_t n;
    eml_ledger ledger;
    double planned;
} budget;

static eml_status ledger_key(eml_enclave *e, uint8_t key[32])
{
    return eml_ledger_key(key, e->sec->seal_secret, e->measurement);
}

/* Reads the host's copy of the ledger and checks it against the platform
 * counter: it must be at the counter, or one ahead (its charge was stored
 * but the counter step was lost).  catch_up (with the counter locked):
 * advance the counter to such a ledger; otherwise take it as it is. */
static eml_status ledger_load(budget *b, int catch_up, eml_err *err)
{
    eml_enclave *e = b->e;
    if (e->counter.read == NULL || e->counter.advance == NULL ||
        e->counter.lock == NULL || e->counter.unlock == NULL)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "a grant sets a privacy budget, but this platform "
                           "has no monotonic counter to keep the spend "
                           "ledger from being rolled back");
    uint64_t c = 0;
    eml_status st = e->counter.read(e->counter.user, &c, err);
    if (st != EML_OK) return st;
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_LEDGER_READ);
    st = ocall(e, &m, EML_MSG_LEDGER_DATA, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    const uint8_t *p;
    size_t n;
    st = eml_msg_get_bytes(&r, EML_LEDGER_MAX_BYTES, &p, &n);
    if (st == EML_OK) st = eml_msg_get_end(&r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed LEDGER_DATA");
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
static eml_status budget_gate(const budget *b, eml_err *err)
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

static eml_status budget_charge(void *user, int resumed, eml_err *err)
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
    eml_status st = ledger_load(b, 1, err);
    if (st == EML_OK) st = budget_gate(b, err);
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
    eml_msg m;
    eml_msg_reader r;
    eml_msg_init(&m, EML_MSG_LEDGER_WRITE);
    eml_msg_put_bytes(&m, blob, blen);
    free(blob);
    st = ocall(e, &m, EML_MSG_LEDGER_OK, &r, err);
    eml_msg_free(&m);
    if (st == EML_OK && eml_msg_get_end(&r) != EML_OK)
        st = eml_err_set(err, EML_ERR_FORMAT, "malformed LEDGER_OK");
    if (st != EML_OK) return st;
    /* Only now is the charge binding: the counter moves past every older
     * copy of the ledger. */
    return e->counter.advance(e->counter.user, next, err);
}

/* snprintf that never runs past cap (the report body is sized for its
 * contents; this keeps a mistake there from becoming an overflow). */
static void append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
    EML_PRINTF(4, 5);
static void append(char *buf, size_t cap, size_t *k, const char *fmt, ...)
{
    if (*k + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *k, cap - *k, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    *k += (size_t)n;
    if (*k >= cap) *k = cap - 1;
}

static eml_status ecall_train(eml_enclave *e, eml_msg_reader *r, eml_err *err)
{
    train_req q;
    eml_status st = decode_train(r, &q);
    if (st != EML_OK) return eml_err_set(err, st, "malformed TRAIN message");
    if (!e->has_identity)
        return eml_err_set(err, EML_ERR_INVALID, "enclave not initialised");

    uint8_t *keys = eml_secure_alloc(32 * (size_t)q.n_owners);
    eml_grant_info *ginfo = calloc((size_t)q.n_owners, sizeof(*ginfo));
    data_acc train_set, test_set;
    memset(&train_set, 0, sizeof(train_set));
    memset(&test_set, 0, sizeof(test_set));
    eml_netcfg *cfg = NULL;
    eml_net *net = NULL;
    uint8_t *weights = NULL;
    size_t wlen = 0;
    char *report = NULL;
    size_t rlen = 0;
    uint8_t digests[EML_OWNERS_MAX][EML_FILE_KINDS][32];
    /* Each owner's dataset id (the same in its four files), for the
     * report. */
    uint8_t dataset_ids[EML_OWNERS_MAX][EML_CONTAINER_DATASET_ID_BYTES];
    eml_mirror *mirror = NULL;
    budget bud;
    memset(&bud, 0, sizeof(bud));
    eml_ledger_init(&bud.ledger);
    if (keys == NULL || ginfo == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    /* The cfg text lies in the received frame, which the ocalls below
     * reuse: hash it now. */
    uint8_t cfg_hash[32];
    st = eml_sha256(cfg_hash, q.cfg_text, q.cfg_len);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "hash failed");
        goto out;
    }
    /* Grants first: nothing is decrypted unless every grant opens and
     * allows this recipient and this network.  The smallest max_epsilon
     * among them caps the run. */
    double cap = INFINITY;
    for (uint64_t o = 0; o < q.n_owners; o++) {
        eml_err gerr = {0};
        st = eml_grant_open(q.grants[o], q.grant_len[o], e->measurement,
                            e->sec->x_sk, e->x_pk, &ginfo[o], keys + 32 * o,
                            &gerr);
        if (st != EML_OK) {
            st = eml_err_set(err, st, "grant %u: %s", (unsigned)o + 1,
                             eml_err_msg(&gerr, st));
            goto out;
        }
        for (uint64_t p = 0; p < o; p++)
            if (memcmp(ginfo[p].grant_id, ginfo[o].grant_id, 16) == 0) {
                st = eml_err_set(err, EML_ERR_AUTH,
                                 "grant %u replays grant %u",
                                 (unsigned)o + 1, (unsigned)p + 1);
                goto out;
            }
        if (!eml_grant_allows_recipient(&ginfo[o], q.recipient)) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "grant %u does not name this run's recipient: "
                             "its owner did not agree that this key gets "
                             "the model",
                             (unsigned)o + 1);
            goto out;
        }
        if (ginfo[o].has_cfg_digest &&
            !eml_ct_equal(ginfo[o].cfg_digest, cfg_hash, 32)) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "grant %u allows only another network (its cfg "
                             "digest differs from this run's cfg)",
                             (unsigned)o + 1);
            goto out;
        }
        if (ginfo[o].has_max_epsilon) {
            if (!q.dp.enabled) {
                st = eml_err_set(err, EML_ERR_AUTH,
                                 "grant %u allows only differentially "
                                 "private training (max epsilon %g); this "
                                 "run is not private",
                                 (unsigned)o + 1, ginfo[o].max_epsilon);
                goto out;
            }
            if (!(cap <= ginfo[o].max_epsilon)) cap = ginfo[o].max_epsilon;
        }
    }
    /* The network, before any data is decrypted. */
    st = eml_cfg_parse((const char *)q.cfg_text, q.cfg_len, "cfg", &cfg,
                       err);
    if (st != EML_OK) goto out;
    eml_train_opts to = eml_train_opts_default(cfg);
    if (q.epochs > 0) to.epochs = (int)q.epochs;
    if (q.batch > 0) to.batch = (int)q.batch;
    if (q.lr > 0) to.lr = (float)q.lr;
    to.seed = q.seed;
    eml_net_opts no = {(eml_kernels_kind)q.kernels, to.batch, q.seed};
    st = eml_net_new(cfg, &no, &net, err);
    if (st != EML_OK) goto out;
    eml_kernels_set_threads((int)q.threads);

    size_t claimed = 0;
    if (isfinite(cap)) {
        /* --insecure-seed lets the host choose the noise and the sampling:
         * never against an owner's budget.  Fixed-size batches are not
         * what the accountant assumes (Poisson sampling). */
        if (q.dp.insecure_seed) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "a grant sets a privacy budget, so the noise "
                             "must come from the enclave's own randomness: "
                             "--insecure-seed is refused");
            goto out;
        }
        if (q.dp.fixed_batches) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "a grant sets a privacy budget, and the "
                             "accountant's bound holds for Poisson sampling "
                             "only: --dp-fixed-batches is refused");
            goto out;
        }
        bud.e = e;
        bud.g = ginfo;
        bud.n = q.n_owners;
        st = ledger_load(&bud, 0, err);
        if (st != EML_OK) goto out;
    }
    if (q.dp.enabled) {
        st = plan_dp(e, &q, to.batch, to.epochs, eml_net_param_count(net),
                     cap, &claimed, &bud.planned, err);
        if (st != EML_OK) goto out;
        to.dp = q.dp;
    }
    if (isfinite(cap)) {
        /* A fresh run is checked here, before any data is decrypted (an
         * early answer: the binding check is made again under the counter
         * lock when it is charged); one that may resume is checked when
         * training starts, once it is known whether it continues a run
         * that was already charged. */
        if (!q.resume) {
            st = budget_gate(&bud, err);
            if (st != EML_OK) goto out;
        }
        to.on_start = budget_charge;
        to.on_start_user = &bud;
    }

    for (uint64_t o = 0; o < q.n_owners; o++) {
        owner_file f[EML_FILE_KINDS];
        memset(f, 0, sizeof(f));
        for (int k = 0; k < EML_FILE_KINDS && st == EML_OK; k++) {
            st = read_owner_file(e, o * EML_FILE_KINDS + (uint64_t)k,
                                 keys + 32 * o, ginfo[o].key_id,
                                 k > 0 ? f[0].dataset_id : NULL, &f[k], err);
            if (st == EML_OK) memcpy(digests[o][k], f[k].digest, 32);
        }
        if (st == EML_OK)
            memcpy(dataset_ids[o], f[0].dataset_id, sizeof(dataset_ids[o]));
        char what[32];
        snprintf(what, sizeof(what), "owner %u", (unsigned)o + 1);
        if (st == EML_OK)
            st = data_acc_add(&train_set, &f[0], &f[1], what, err);
        if (st == EML_OK) st = data_acc_add(&test_set, &f[2], &f[3], what, err);
        for (int k = 0; k < EML_FILE_KINDS; k++) owner_file_free(&f[k]);
        if (st != EML_OK) goto out;
    }
    eml_secure_free(keys, 32 * (size_t)q.n_owners);
    keys = NULL;
    if (q.dp.enabled && train_set.count != claimed) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "the privacy budget was planned for %zu training "
                         "images (from the label files' sizes) but the "
                         "decrypted files hold another number: encrypt raw, "
                         "not gzipped, label files for DP runs",
                         claimed);
        goto out;
    }

    eml_dataset tr = {train_set.count, train_set.item, train_set.images,
                      train_set.labels};
    eml_dataset te = {test_set.count, test_set.item, test_set.images,
                      test_set.labels};
    progress_ctx pc = {e, 0};
    to.progress = send_progress;
    to.progress_user = &pc;
    if (q.mirror) {
        /* Sealed to this measurement, bound to the run and its data. */
        eml_store_ops ops = {e, ms_read_header, ms_create, NULL, ms_write,
                             ms_commit, ms_read, ms_staging};
        eml_mirror_opts mo;
        memset(&mo, 0, sizeof(mo));
        mo.seal_secret = e->sec->seal_secret;
        mo.measurement = e->measurement;
        mo.every = (long)q.save_every;
        st = eml_train_run_digest(mo.cfg_digest, cfg_hash, 32, &to);
        if (st == EML_OK) st = eml_dataset_digest(mo.data_digest, &tr, &te);
        if (st == EML_OK) st = eml_mirror_new(&mo, &ops, &mirror, err);
        if (st != EML_OK) goto out;
        to.mirror = mirror;
        to.resume = (int)q.resume;
    }
    eml_train_result res;
    st = eml_train(net, cfg, &tr, &te, &to, &res, err);
    if (st != EML_OK) goto out;
    if (pc.failed) {
        st = eml_err_set(err, EML_ERR_IO, "lost the host during training");
        goto out;
    }
    st = eml_weights_encode(net, &weights, &wlen);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "cannot encode the weights");
        goto out;
    }
    uint8_t model_hash[32], model_file_hash[32];
    st = eml_sha256(model_hash, weights, wlen);
    if (st == EML_OK)
        st = send_model(e, weights, wlen, q.recipient, model_file_hash, err);
    if (st != EML_OK) goto out;

    /* The signed training report. */
    size_t bcap = 2560 + (size_t)q.n_owners * (EML_FILE_KINDS * 66 + 68) +
                 2 * EML_NONCE_MAX;
    char *body = malloc(bcap);
    if (body == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    char meas[65], edh[65], mh[65], mfh[65], ch[65], rh[65];
    char nh[2 * EML_NONCE_MAX + 1];
    eml_hex(meas, e->measurement, 32);
    eml_hex(edh, e->ed_pk, 32);
    eml_hex(mh, model_hash, 32);
    eml_hex(mfh, model_file_hash, 32);
    eml_hex(ch, cfg_hash, 32);
    eml_hex(rh, q.recipient, 32);
    eml_hex(nh, q.report_nonce, q.report_nonce_len);
    size_t k = (size_t)snprintf(
        body, bcap,
        "{\"type\":\"enclaveml-training-report\",\"version\":2,\"sim\":%s,"
        "\"measurement\":\"%s\",\"ed25519\":\"%s\",\"report_nonce\":\"%s\","
        "\"cfg_sha256\":\"%s\",\"model_sha256\":\"%s\","
        "\"model_file_sha256\":\"%s\",\"recipient\":\"%s\",\"owners\":%u,"
        "\"train_images\":%zu,\"test_images\":%zu,\"epochs\":%d,"
        "\"steps\":%ld,\"parameters\":%zu,\"train_loss\":%.9g,"
        "\"test_accuracy\":%.9g,\"test_loss\":%.9g,\"seconds\":%.6g,"
        "\"images_per_second\":%.6g,\"mirror\":%s,\"resumed_step\":%ld,"
        "\"mirror_saves\":%ld,\"dp\":%s,\"datasets\":\"",
        e->sim ? "true" : "false", meas, edh, nh, ch, mh, mfh, rh,
        (unsigned)q.n_owners, train_set.count, test_set.count, res.epochs,
        res.steps, eml_net_param_count(net), res.train_loss,
        res.test_accuracy, res.test_loss, res.seconds, res.images_per_second,
        q.mirror ? "true" : "false", res.resumed_step, res.mirror_saves,
        q.dp.enabled ? "true" : "false");
    if (k >= bcap) k = bcap - 1;
    for (uint64_t o = 0; o < q.n_owners; o++)
        for (int f = 0; f < EML_FILE_KINDS; f++) {
            char dh[65];
            eml_hex(dh, digests[o][f], 32);
            append(body, bcap, &k, "%s%s", (o == 0 && f == 0) ? "" : ",", dh);
        }
    append(body, bcap, &k, "\",\"dataset_ids\":\"");
    for (uint64_t o = 0; o < q.n_owners; o++) {
        char dh[2 * EML_CONTAINER_DATASET_ID_BYTES + 1];
        eml_hex(dh, dataset_ids[o], EML_CONTAINER_DATASET_ID_BYTES);
        append(body, bcap, &k, "%s%s", o == 0 ? "" : ",", dh);
    }
    append(body, bcap, &k, "\",\"grants\":\"");
    for (uint64_t o = 0; o < q.n_owners; o++) {
        char gh[33];
        eml_hex(gh, ginfo[o].grant_id, 16);
        append(body, bcap, &k, "%s%s", o == 0 ? "" : ",", gh);
    }
    append(body, bcap, &k, "\"");
    if (q.dp.enabled && !isfinite(res.epsilon))
        append(body, bcap, &k, ",\"epsilon\":\"inf\"");
    else if (q.dp.enabled)
        append(body, bcap, &k, ",\"epsilon\":%.9g", res.epsilon);
    if (q.dp.enabled)
        append(body, bcap, &k,
                 ",\"delta\":%.9g,\"noise\":%.9g,"
                 "\"clip\":%.9g,\"sampling_rate\":%.9g,\"dp_steps\":%ld,"
                 "\"budget\":%.9g,\"stopped_at_budget\":%s,"
                 "\"sampling\":\"%s\",\"insecure_seed\":%s,"
                 "\"accountant\":\"rdp-sampled-gaussian%s\"",
                 q.dp.delta, q.dp.noise, q.dp.clip,
                 res.sampling_rate, res.steps,
                 q.dp.target_epsilon, res.dp_stopped_early ? "true" : "false",
                 q.dp.fixed_batches ? "fixed" : "poisson",
                 q.dp.insecure_seed ? "true" : "false",
                 q.dp.fixed_batches ? " (assumes poisson sampling)" : "");
    if (q.dp.enabled)
        append(body, bcap, &k, ",\"epsilon_planned\":%.9g", bud.planned);
    if (isfinite(cap))
        append(body, bcap, &k, ",\"budget_charged\":%s",
               res.resumed_step >= 0 ? "false" : "true");
    st = eml_report_sign(body, e->sec->ed_sk, &report, &rlen);
    free(body);
    if (st != EML_OK) {
        st = eml_err_set(err, st, "cannot sign the training report");
        goto out;
    }
    eml_msg m;
    eml_msg_init(&m, EML_MSG_TRAIN_DONE);
    eml_msg_put_bytes(&m, report, rlen);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
out:
    eml_ledger_free(&bud.ledger);
    eml_mirror_free(mirror);
    if (keys != NULL) eml_secure_free(keys, 32 * (size_t)q.n_owners);
    free(ginfo);
    data_acc_free(&train_set);
    data_acc_free(&test_set);
    if (weights != NULL) {
        eml_wipe(weights, wlen);
        free(weights);
    }
    free(report);
    eml_net_free(net); /* parameters are wiped by the allocator below */
    eml_cfg_free(cfg);
    return st;
}

/* ==== sandbox probe ==== */

/* Tries calls the sandbox forbids, with harmless arguments, through raw
 * syscall numbers (the trusted code has no file or socket functions). */
static eml_status ecall_probe(eml_enclave *e, eml_msg_reader *r, eml_err *err)
{
    eml_status st = eml_msg_get_end(r);
    if (st != EML_OK) return eml_err_set(err, st, "malformed PROBE");
    /* Outside the sandbox these calls would succeed (execve would replace
     * the host process of the `none` backend): refuse to try. */
    if (!e->sandboxed)
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "PROBE needs the sim sandbox (this backend has "
                           "none)");
    uint64_t refused = 0, attempted = 0;
    long rc;
    attempted |= EML_PROBE_OPENAT;
    rc = syscall(SYS_openat, -100 /* AT_FDCWD */, "/proc/self/status", 0);
    if (rc < 0) refused |= EML_PROBE_OPENAT;
    else close((int)rc);
    attempted |= EML_PROBE_SOCKET;
    rc = syscall(SYS_socket, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
    if (rc < 0) refused |= EML_PROBE_SOCKET;
    else close((int)rc);
    attempted |= EML_PROBE_EXECVE;
    char *const argv0[] = {NULL};
    rc = syscall(SYS_execve, "/bin/true", argv0, argv0);
    if (rc < 0) refused |= EML_PROBE_EXECVE;
    attempted |= EML_PROBE_PTRACE;
    rc = syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0);
    if (rc < 0) refused |= EML_PROBE_PTRACE;
    attempted |= EML_PROBE_CONNECT;
    rc = syscall(SYS_connect, -1, NULL, 0);
    if (rc < 0) refused |= EML_PROBE_CONNECT;
    attempted |= EML_PROBE_FORK;
    rc = syscall(SYS_fork);
    if (rc == 0) syscall(SYS_exit_group, 0); /* never: fork is refused */
    if (rc < 0) refused |= EML_PROBE_FORK;
    /* Descriptors other than the channel: fd 0 and 1 are /dev/null (0
     * bytes: nothing happens even where it is allowed). */
    attempted |= EML_PROBE_WRITE_FD;
    rc = syscall(SYS_write, 1, "", 0);
    if (rc < 0) refused |= EML_PROBE_WRITE_FD;
    attempted |= EML_PROBE_READ_FD;
    char none[1];
    rc = syscall(SYS_read, 0, none, 0);
    if (rc < 0) refused |= EML_PROBE_READ_FD;
    /* prlimit64 reading (not setting) the limits of pid 1, and of this
     * process named by its pid, which the kernel would allow: only pid 0
     * passes the filter. */
    attempted |= EML_PROBE_PRLIMIT;
    uint64_t lim[2];
    long r1 = syscall(SYS_prlimit64, 1, 7 /* RLIMIT_NOFILE */, NULL, lim);
    long r2 = syscall(SYS_prlimit64, (long)syscall(SYS_getpid),
                      7 /* RLIMIT_NOFILE */, NULL, lim);
    if (r1 < 0 && r2 < 0) refused |= EML_PROBE_PRLIMIT;
    /* Signal 0 only checks that the target exists. */
    attempted |= EML_PROBE_TGKILL;
    rc = syscall(SYS_tgkill, 1, 1, 0);
    if (rc < 0) refused |= EML_PROBE_TGKILL;
    attempted |= EML_PROBE_STAT_PATH;
    uint64_t sb[32]; /* room for the kernel's struct stat */
    rc = syscall(SYS_newfstatat, -100 /* AT_FDCWD */, "/etc/passwd", sb, 0);
    if (rc < 0) refused |= EML_PROBE_STAT_PATH;
    eml_msg m;
    eml_msg_init(&m, EML_MSG_PROBE_OK);
    eml_msg_put_u64(&m, refused);
    eml_msg_put_u64(&m, attempted);
    st = eml_msg_send(&e->ch, &m);
    eml_msg_free(&m);
    return st;
}

/* ==== the loop ==== */

eml_status eml_enclave_serve(eml_enclave *e, int fd)
{
    eml_channel_init(&e->ch, fd);
    for (;;) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        eml_status st = eml_msg_recv(&e->ch, &type, &p, &n);
        if (st == EML_ERR_TRUNCATED) return EML_OK; /* host went away */
        if (st != EML_OK) {
            /* A frame we cannot even parse: say so, then stop, since the
             * stream may be out of step. */
            if (send_error(e, st, "malformed frame from the host") != EML_OK)
                return EML_ERR_IO;
            return st;
        }
        eml_msg_reader r;
        eml_msg_reader_init(&r, p, n);
        eml_err err = {0};
        switch (type) {
        case EML_MSG_INIT: st = ecall_init(e, &r, &err); break;
        case EML_MSG_ATTEST: st = ecall_attest(e, &r, &err); break;
        case EML_MSG_TRAIN:
            st = ecall_train(e, &r, &err);
            /* A run that succeeded sent its model through ocalls, which
             * collected every mirror reply; a failed one may still be owed
             * some: collect them so the channel stays in step. */
            if (st != EML_OK) {
                eml_err late = {0};
                (void)drain(e, &late);
            }
            break;
        case EML_MSG_PROBE: st = ecall_probe(e, &r, &err); break;
        case EML_MSG_PING: {
            const uint8_t *q;
            size_t ql;
            st = eml_msg_get_bytes(&r, EML_CHUNK_MAX, &q, &ql);
            if (st == EML_OK) st = eml_msg_get_end(&r);
            if (st != EML_OK) {
                eml_err_set(&err, st, "malformed PING");
                break;
            }
            eml_msg m;
            eml_msg_init(&m, EML_MSG_PONG);
            eml_msg_put_bytes(&m, q, ql);
            st = eml_msg_send(&e->ch, &m);
            eml_msg_free(&m);
            break;
        }
        case EML_MSG_SHUTDOWN: {
            st = eml_msg_get_end(&r);
            eml_msg m;
            eml_msg_init(&m, EML_MSG_SHUTDOWN_OK);
            eml_status sst = eml_msg_send(&e->ch, &m);
            eml_msg_free(&m);
            return st == EML_OK ? sst : st;
        }
        default:
            st = eml_err_set(&err, EML_ERR_FORMAT, "%s is not an ecall",
                             eml_msg_type_name(type));
        }
        if (st != EML_OK) {
            if (send_error(e, st, eml_err_msg(&err, st)) != EML_OK)
                return EML_ERR_IO;
        }
    }
}
