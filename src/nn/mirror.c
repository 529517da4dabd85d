/*
 * mirror.c - sealing training states into a two-slot store and opening
 * them again (format and persist order in mirror.h and docs/mirror.md).
 *
 * Trusted code: the store is the host's, so every byte read back from it
 * is checked (header fields, then each chunk's GCM tag before its
 * plaintext is used).  The key never leaves this file's locked memory.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "enclaveml/mirror.h"

#define POOL_MAGIC "EMLPOOL1"
#define SLOT_MAGIC "EMLSLOT1"
#define MIRROR_VERSION 1
#define CAP_MAX ((uint64_t)1 << 48)

struct eml_mirror {
    eml_store_ops ops;
    eml_mirror_opts o;
    uint8_t *key; /* locked memory, 32 bytes */
    eml_gcm *gcm;
    uint8_t run_id[EML_RUN_ID_BYTES];
    uint8_t measurement[32];
    int fresh;    /* the store has no layout yet */
    uint64_t capacity;
    uint64_t commit;
    uint64_t state_len; /* of this run's states, once known (0: not yet) */
    uint8_t *buf; /* one sealed chunk */
    double t_total, t_crypto;
};

/* ==== rollback: the newest seq this process saw, per run ==== */

#define SEEN_MAX 32
static struct {
    uint8_t run_id[EML_RUN_ID_BYTES];
    uint64_t seq;
    int used;
} seen[SEEN_MAX];

static uint64_t seen_get(const uint8_t run_id[16])
{
    for (int i = 0; i < SEEN_MAX; i++)
        if (seen[i].used && memcmp(seen[i].run_id, run_id, 16) == 0)
            return seen[i].seq;
    return 0;
}

static void seen_put(const uint8_t run_id[16], uint64_t seq)
{
    int free_i = -1;
    for (int i = 0; i < SEEN_MAX; i++) {
        if (seen[i].used && memcmp(seen[i].run_id, run_id, 16) == 0) {
            if (seq > seen[i].seq) seen[i].seq = seq;
            return;
        }
        if (!seen[i].used && free_i < 0) free_i = i;
    }
    if (free_i < 0) free_i = (int)(run_id[0] % SEEN_MAX); /* evict one */
    memcpy(seen[free_i].run_id, run_id, 16);
    seen[free_i].seq = seq;
    seen[free_i].used = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ==== pool header ==== */

void eml_pool_header_build(uint8_t *hdr, const uint8_t run_id[16],
                           uint64_t capacity, uint64_t commit)
{
    memset(hdr, 0, EML_POOL_HEADER_BYTES);
    memcpy(hdr, POOL_MAGIC, 8);
    eml_put_le32(hdr + 8, MIRROR_VERSION);
    eml_put_le32(hdr + 12, EML_POOL_DATA_OFFSET);
    memcpy(hdr + 16, run_id, 16);
    eml_put_le64(hdr + 32, capacity);
    eml_put_le64(hdr + EML_POOL_COMMIT_OFFSET, commit);
}

eml_status eml_pool_header_parse(const uint8_t *hdr, size_t len,
                                 eml_pool_info *info, eml_err *err)
{
    memset(info, 0, sizeof(*info));
    if (len < EML_POOL_HEADER_BYTES)
        return eml_err_set(err, EML_ERR_TRUNCATED,
                           "mirror pool header is truncated");
    if (eml_is_zero(hdr, EML_POOL_HEADER_BYTES)) {
        info->fresh = 1;
        return EML_OK;
    }
    if (memcmp(hdr, POOL_MAGIC, 8) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "not an enclaveml mirror");
    uint32_t ver = eml_get_le32(hdr + 8);
    if (ver != MIRROR_VERSION)
        return eml_err_set(err, ver > MIRROR_VERSION ? EML_ERR_UNSUPPORTED
                                                     : EML_ERR_FORMAT,
                           "mirror version %u is not supported", ver);
    if (eml_get_le32(hdr + 12) != EML_POOL_DATA_OFFSET)
        return eml_err_set(err, EML_ERR_FORMAT, "bad mirror data offset");
    memcpy(info->run_id, hdr + 16, 16);
    info->capacity = eml_get_le64(hdr + 32);
    info->commit = eml_get_le64(hdr + EML_POOL_COMMIT_OFFSET);
    if (info->capacity == 0 || info->capacity % 4096 != 0 ||
        info->capacity >= CAP_MAX)
        return eml_err_set(err, EML_ERR_FORMAT, "bad mirror slot capacity");
    if (!eml_is_zero(hdr + 40, 24) ||
        !eml_is_zero(hdr + 72, EML_POOL_HEADER_BYTES - 72))
        return eml_err_set(err, EML_ERR_FORMAT,
                           "mirror header has non-zero reserved bytes");
    if (eml_is_zero(info->run_id, 16))
        return eml_err_set(err, EML_ERR_FORMAT, "mirror has no run id");
    return EML_OK;
}

static uint64_t n_chunks(uint64_t state_len)
{
    return state_len == 0 ? 1
                          : (state_len + EML_MIRROR_CHUNK - 1) /
                                EML_MIRROR_CHUNK;
}

uint64_t eml_slot_bytes(uint64_t state_len)
{
    return EML_SLOT_HEADER_BYTES + state_len + 16 * n_chunks(state_len);
}

static uint64_t round_page(uint64_t n)
{
    return (n + 4095) / 4096 * 4096;
}

/* ==== the mirror ==== */

static eml_status derive_key(eml_mirror *m, eml_err *err)
{
    static const char label[] = "enclaveml mirror v1";
    uint8_t info[sizeof(label) - 1 + 32];
    memcpy(info, label, sizeof(label) - 1);
    memcpy(info + sizeof(label) - 1, m->measurement, 32);
    eml_status st = eml_hkdf_sha256(m->key, 32, m->o.seal_secret, 32,
                                    m->run_id, 16, info, sizeof(info));
    if (st == EML_OK) {
        eml_gcm_free(m->gcm);
        m->gcm = NULL;
        st = eml_gcm_new(m->key, &m->gcm);
    }
    if (st != EML_OK)
        return eml_err_set(err, st, "cannot derive the mirror key");
    return EML_OK;
}

eml_status eml_mirror_new(const eml_mirror_opts *o, const eml_store_ops *ops,
                          eml_mirror **out, eml_err *err)
{
    *out = NULL;
    if (o->every < 1 || o->seal_secret == NULL || o->measurement == NULL ||
        ops->read_header == NULL || ops->create == NULL ||
        ops->commit == NULL || ops->read == NULL ||
        (ops->write == NULL && ops->slot_map == NULL))
        return eml_err_set(err, EML_ERR_INVALID, "bad mirror options");
    eml_mirror *m = calloc(1, sizeof(*m));
    if (m == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    m->ops = *ops;
    m->o = *o;
    memcpy(m->measurement, o->measurement, 32);
    m->key = eml_secure_alloc(32);
    m->buf = malloc(EML_MIRROR_CHUNK + 16);
    if (m->key == NULL || m->buf == NULL) {
        eml_mirror_free(m);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    uint8_t hdr[EML_POOL_HEADER_BYTES];
    eml_pool_info info;
    eml_status st = ops->read_header(ops->user, hdr, err);
    if (st == EML_OK)
        st = eml_pool_header_parse(hdr, sizeof(hdr), &info, err);
    if (st == EML_OK && info.fresh) {
        m->fresh = 1;
        st = eml_random(m->run_id, sizeof(m->run_id));
        if (st != EML_OK) eml_err_set(err, st, "no randomness for a run id");
    } else if (st == EML_OK) {
        memcpy(m->run_id, info.run_id, 16);
        m->capacity = info.capacity;
        m->commit = info.commit;
    }
    if (st == EML_OK) st = derive_key(m, err);
    if (st != EML_OK) {
        eml_mirror_free(m);
        return st;
    }
    *out = m;
    return EML_OK;
}

void eml_mirror_free(eml_mirror *m)
{
    if (m == NULL) return;
    if (m->key != NULL) eml_secure_free(m->key, 32);
    eml_gcm_free(m->gcm);
    if (m->buf != NULL) {
        eml_wipe(m->buf, EML_MIRROR_CHUNK + 16);
        free(m->buf);
    }
    free(m);
}

long eml_mirror_every(const eml_mirror *m) { return m->o.every; }
uint64_t eml_mirror_seq(const eml_mirror *m) { return m->commit >> 1; }
const uint8_t *eml_mirror_run_id(const eml_mirror *m) { return m->run_id; }

void eml_mirror_last_times(const eml_mirror *m, double *total,
                           double *crypto)
{
    if (total != NULL) *total = m->t_total;
    if (crypto != NULL) *crypto = m->t_crypto;
}

static size_t segs_total(const eml_seg *segs, int nseg)
{
    size_t t = 0;
    for (int i = 0; i < nseg; i++) t += segs[i].n;
    return t;
}

/* The state bytes [off, off+n): a pointer straight into a segment when the
 * range lies within one, else gathered into tmp. */
static const uint8_t *gather(const eml_seg *segs, int nseg, size_t off,
                             size_t n, uint8_t *tmp)
{
    size_t base = 0;
    int i = 0;
    while (i < nseg && base + segs[i].n <= off) base += segs[i++].n;
    if (i < nseg && off + n <= base + segs[i].n)
        return (const uint8_t *)segs[i].p + (off - base);
    size_t done = 0;
    while (done < n && i < nseg) {
        size_t in = off + done - base;
        size_t k = segs[i].n - in;
        if (k > n - done) k = n - done;
        memcpy(tmp + done, (const uint8_t *)segs[i].p + in, k);
        done += k;
        base += segs[i].n;
        i++;
    }
    return tmp;
}

/* The reverse: where to decrypt [off, off+n) to (a segment, or NULL when
 * it spans several and must be scattered from a buffer). */
static uint8_t *direct_dst(const eml_seg *segs, int nseg, size_t off,
                           size_t n)
{
    size_t base = 0;
    int i = 0;
    while (i < nseg && base + segs[i].n <= off) base += segs[i++].n;
    if (i < nseg && off + n <= base + segs[i].n)
        return (uint8_t *)segs[i].p + (off - base);
    return NULL;
}

static void scatter(const eml_seg *segs, int nseg, size_t off, size_t n,
                    const uint8_t *src)
{
    size_t base = 0;
    for (int i = 0; i < nseg && n > 0; i++) {
        if (base + segs[i].n <= off) {
            base += segs[i].n;
            continue;
        }
        size_t in = off - base;
        size_t k = segs[i].n - in;
        if (k > n) k = n;
        memcpy((uint8_t *)segs[i].p + in, src, k);
        src += k;
        off += k;
        n -= k;
        base += segs[i].n;
    }
}

static void slot_header_build(uint8_t *h, const eml_mirror *m, int slot,
                              uint64_t seq, uint64_t state_len,
                              const uint8_t salt[8])
{
    memset(h, 0, EML_SLOT_HEADER_BYTES);
    memcpy(h, SLOT_MAGIC, 8);
    eml_put_le32(h + 8, MIRROR_VERSION);
    eml_put_le32(h + 12, (uint32_t)slot);
    eml_put_le64(h + 16, seq);
    memcpy(h + 24, m->run_id, 16);
    memcpy(h + 40, m->o.cfg_digest, 32);
    memcpy(h + 72, m->o.data_digest, 32);
    eml_put_le64(h + 104, state_len);
    eml_put_le32(h + 112, EML_MIRROR_CHUNK);
    memcpy(h + 120, salt, 8);
}

static void chunk_aad(uint8_t aad[37], const uint8_t hd[32], uint32_t i,
                      int final)
{
    memcpy(aad, hd, 32);
    eml_put_le32(aad + 32, i);
    aad[36] = (uint8_t)(final != 0);
}

static void chunk_nonce(uint8_t nonce[12], const uint8_t salt[8], uint32_t i)
{
    memcpy(nonce, salt, 8);
    eml_put_le32(nonce + 8, i);
}

eml_status eml_mirror_save(eml_mirror *m, const eml_seg *segs, int nseg,
                           eml_err *err)
{
    double t0 = now_s(), tc = 0;
    uint64_t len = segs_total(segs, nseg);
    uint64_t need = round_page(eml_slot_bytes(len));
    eml_status st;
    if (m->state_len != 0 && len != m->state_len)
        return eml_err_set(err, EML_ERR_INVALID,
                           "the training state changed size during the run");
    if (m->fresh) {
        uint8_t ph[EML_POOL_HEADER_BYTES];
        eml_pool_header_build(ph, m->run_id, need, 0);
        st = m->ops.create(m->ops.user, ph, need, err);
        if (st != EML_OK) return st;
        m->fresh = 0;
        m->capacity = need;
        m->commit = 0;
    }
    if (need != m->capacity)
        return eml_err_set(err, EML_ERR_RANGE,
                           "the training state (%llu bytes) does not fit the "
                           "mirror's slots (%llu bytes): it belongs to "
                           "another run",
                           (unsigned long long)len,
                           (unsigned long long)m->capacity);
    int slot = m->commit == 0 ? 0 : (int)(1 - (m->commit & 1));
    uint64_t seq = (m->commit >> 1) + 1;
    uint8_t salt[8], hdr[EML_SLOT_HEADER_BYTES], hd[32], aad[37], nonce[12];
    st = eml_random(salt, sizeof(salt));
    if (st != EML_OK) return eml_err_set(err, st, "no randomness");
    slot_header_build(hdr, m, slot, seq, len, salt);
    st = eml_sha256(hd, hdr, sizeof(hdr));
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    uint8_t *map = m->ops.slot_map ? m->ops.slot_map(m->ops.user, slot) : NULL;
    if (map != NULL)
        memcpy(map, hdr, sizeof(hdr));
    else
        st = m->ops.write(m->ops.user, slot, 0, hdr, sizeof(hdr), err);
    if (st != EML_OK) return st;
    /* Without a mapping, chunks are sealed into the store's staging
     * buffer when it has one (several per write), else one by one. */
    size_t scap = 0, filled = 0;
    uint8_t *stg = map == NULL && m->ops.staging != NULL
                       ? m->ops.staging(m->ops.user, &scap)
                       : NULL;
    if (stg != NULL && scap < (size_t)EML_MIRROR_CHUNK + 16) stg = NULL;
    uint64_t nc = n_chunks(len), out_off = EML_SLOT_HEADER_BYTES;
    uint64_t stg_off = out_off;
    for (uint64_t c = 0; c < nc; c++) {
        size_t off = (size_t)(c * EML_MIRROR_CHUNK);
        size_t n = len - off < EML_MIRROR_CHUNK ? (size_t)(len - off)
                                                : EML_MIRROR_CHUNK;
        int final = c + 1 == nc;
        const uint8_t *pt = gather(segs, nseg, off, n, m->buf);
        uint8_t *dst = map != NULL ? map + out_off
                       : stg != NULL ? stg + filled
                                     : m->buf;
        chunk_aad(aad, hd, (uint32_t)c, final);
        chunk_nonce(nonce, salt, (uint32_t)c);
        double tg = now_s();
        st = eml_gcm_seal(m->gcm, dst, pt, n, aad, sizeof(aad), nonce);
        tc += now_s() - tg;
        if (st != EML_OK) return eml_err_set(err, st, "sealing failed");
        out_off += n + 16;
        if (map != NULL) continue;
        if (stg == NULL) {
            st = m->ops.write(m->ops.user, slot, out_off - n - 16, dst,
                              n + 16, err);
        } else {
            filled += n + 16;
            if (final || filled + EML_MIRROR_CHUNK + 16 > scap) {
                st = m->ops.write(m->ops.user, slot, stg_off, stg, filled,
                                  err);
                stg_off += filled;
                filled = 0;
            }
        }
        if (st != EML_OK) return st;
    }
    uint64_t word = seq << 1 | (uint64_t)slot;
    st = m->ops.commit(m->ops.user, slot, out_off, word, err);
    if (st != EML_OK) return st;
    m->commit = word;
    m->state_len = len;
    seen_put(m->run_id, seq);
    m->t_total = now_s() - t0;
    m->t_crypto = tc;
    return EML_OK;
}

static void wipe_segs(const eml_seg *segs, int nseg)
{
    for (int i = 0; i < nseg; i++) eml_wipe(segs[i].p, segs[i].n);
}

/* Checks the committed slot's header against the commit and this run. */
static eml_status check_slot_header(const eml_mirror *m, const uint8_t *h,
                                    int slot, uint64_t seq, uint64_t want_len,
                                    eml_err *err)
{
    if (memcmp(h, SLOT_MAGIC, 8) != 0 ||
        eml_get_le32(h + 8) != MIRROR_VERSION)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the committed mirror slot has no valid header "
                           "(torn or tampered)");
    if (eml_get_le32(h + 12) != (uint32_t)slot || eml_get_le64(h + 16) != seq)
        return eml_err_set(err, EML_ERR_AUTH,
                           "mirror slot %d holds state %llu of slot %u, not "
                           "the committed state %llu (slots swapped or "
                           "replayed)",
                           slot, (unsigned long long)eml_get_le64(h + 16),
                           eml_get_le32(h + 12), (unsigned long long)seq);
    if (memcmp(h + 24, m->run_id, 16) != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "mirror slot %d belongs to another run", slot);
    if (memcmp(h + 40, m->o.cfg_digest, 32) != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror was written by a run with another cfg "
                           "or other training options");
    if (memcmp(h + 72, m->o.data_digest, 32) != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror was written by a run on other data");
    if (eml_get_le32(h + 112) != EML_MIRROR_CHUNK ||
        eml_get_le32(h + 116) != 0)
        return eml_err_set(err, EML_ERR_FORMAT, "bad mirror chunk size");
    if (eml_get_le64(h + 104) != want_len)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror holds a %llu-byte state where this run "
                           "has %llu bytes",
                           (unsigned long long)eml_get_le64(h + 104),
                           (unsigned long long)want_len);
    return EML_OK;
}

eml_status eml_mirror_load(eml_mirror *m, const eml_seg *segs, int nseg,
                           int *found, eml_err *err)
{
    double t0 = now_s(), tc = 0;
    *found = 0;
    uint64_t newest = seen_get(m->run_id);
    if (m->fresh) return EML_OK; /* a new pool: a new run id */
    if (m->commit == 0 && newest > 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror says nothing was committed, but this "
                           "process already saw its state %llu: refusing a "
                           "rollback",
                           (unsigned long long)newest);
    if (m->commit == 0) return EML_OK;
    int slot = (int)(m->commit & 1);
    uint64_t seq = m->commit >> 1;
    if (seq < newest)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror's state %llu is older than state %llu "
                           "this process already saw: refusing a rollback",
                           (unsigned long long)seq,
                           (unsigned long long)newest);
    uint64_t len = segs_total(segs, nseg);
    if (round_page(eml_slot_bytes(len)) != m->capacity)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the mirror's slots are too small for this run's "
                           "state: it belongs to another run");
    uint8_t hdr[EML_SLOT_HEADER_BYTES], hd[32], aad[37], nonce[12];
    eml_status st = m->ops.read(m->ops.user, slot, 0, hdr, sizeof(hdr), err);
    if (st != EML_OK) return st;
    st = check_slot_header(m, hdr, slot, seq, len, err);
    if (st != EML_OK) return st;
    st = eml_sha256(hd, hdr, sizeof(hdr));
    if (st != EML_OK) return eml_err_set(err, st, "hash failed");
    const uint8_t *salt = hdr + 120;
    uint64_t nc = n_chunks(len), in_off = EML_SLOT_HEADER_BYTES;
    for (uint64_t c = 0; c < nc; c++) {
        size_t off = (size_t)(c * EML_MIRROR_CHUNK);
        size_t n = len - off < EML_MIRROR_CHUNK ? (size_t)(len - off)
                                                : EML_MIRROR_CHUNK;
        int final = c + 1 == nc;
        st = m->ops.read(m->ops.user, slot, in_off, m->buf, n + 16, err);
        if (st != EML_OK) break;
        uint8_t *dst = direct_dst(segs, nseg, off, n);
        chunk_aad(aad, hd, (uint32_t)c, final);
        chunk_nonce(nonce, salt, (uint32_t)c);
        double tg = now_s();
        /* GCM open checks the tag and wipes dst on failure: nothing
         * unauthenticated is kept. */
        st = eml_gcm_open(m->gcm, dst != NULL ? dst : m->buf, m->buf, n + 16,
                          aad, sizeof(aad), nonce);
        tc += now_s() - tg;
        if (st != EML_OK) {
            st = eml_err_set(err, EML_ERR_AUTH,
                             "mirror slot %d, chunk %llu fails "
                             "authentication: the mirror was tampered with, "
                             "or written by another enclave",
                             slot, (unsigned long long)c);
            break;
        }
        if (dst == NULL) scatter(segs, nseg, off, n, m->buf);
        in_off += n + 16;
    }
    /* The padding after the state must be zero: nothing in the committed
     * slot goes unchecked. */
    uint64_t cap_end = m->capacity;
    while (st == EML_OK && in_off < cap_end) {
        size_t k = cap_end - in_off < EML_MIRROR_CHUNK
                       ? (size_t)(cap_end - in_off)
                       : EML_MIRROR_CHUNK;
        st = m->ops.read(m->ops.user, slot, in_off, m->buf, k, err);
        if (st == EML_OK && !eml_is_zero(m->buf, k))
            st = eml_err_set(err, EML_ERR_AUTH,
                             "mirror slot %d has bytes after its state "
                             "(tampered)",
                             slot);
        in_off += k;
    }
    if (st != EML_OK) {
        wipe_segs(segs, nseg);
        return st;
    }
    seen_put(m->run_id, seq);
    m->state_len = len;
    *found = 1;
    m->t_total = now_s() - t0;
    m->t_crypto = tc;
    return EML_OK;
}
