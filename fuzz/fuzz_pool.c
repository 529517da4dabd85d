/*
 * fuzz_pool.c - libFuzzer target for the mirror's reader (mirror.h).
 *
 * The input is a whole pool file: the 4096-byte header page, then two
 * slots.  eml_pool_header_parse sees it first; then an in-memory store
 * over its bytes (read-only: it maps nothing and refuses writes and
 * commits; slot offsets come from whatever capacity its header holds) is
 * opened with eml_mirror_new under fixed keys and digests, and
 * eml_mirror_load reads it into a 2500-byte state, cut into segments in
 * one of three ways (a byte of slot 0 picks), so chunks are both
 * decrypted in place and scattered.  Any input must give EML_OK or an
 * error with a one-line message, never a crash, a leak or a read outside
 * the buffer; a refused load leaves no plaintext in the segments (they are
 * untouched or wiped).
 *
 * eml_mirror_new reads nothing but the pool header and a load leaves the
 * mirror as it was, so the mirror is kept from one input to the next while
 * the header bytes stay the same (most mutations hit the slots), and only
 * one in 32 headers the parser refuses is offered to eml_mirror_new: a new
 * mirror costs a locked key page and a wiped 1 MiB buffer, which would
 * otherwise be most of the time spent per input.
 *
 * Seed (fuzz/corpus/pool/): a pool holding a 2500-byte state (byte i =
 * i * 7 + 3) saved twice, slot 1 committed, written by
 * EML_WRITE_POOL_SEED=path tests/test_mirror (test_fuzz_seed, which also
 * checks that the seed still loads).  Keys: sealing secret = bytes
 * 0x00..0x1f, measurement = bytes 0x20..0x3f; cfg digest = 32 x 0x33, data
 * digest = 32 x 0x44.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "enclaveml/mirror.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(int cond)
{
    if (!cond) abort();
}

typedef struct rostore {
    const uint8_t *b;
    size_t size;
} rostore;

static int one_line(const eml_err *err)
{
    return err->msg[0] != '\0' && strchr(err->msg, '\n') == NULL;
}

/* The header as the bytes have it: short inputs are zero-padded (an
 * untrusted store may hand back anything). */
static eml_status ro_read_header(void *u, uint8_t *hdr, eml_err *err)
{
    const rostore *s = u;
    size_t n = s->size < EML_POOL_HEADER_BYTES ? s->size
                                               : EML_POOL_HEADER_BYTES;
    (void)err;
    memset(hdr, 0, EML_POOL_HEADER_BYTES);
    if (n > 0) memcpy(hdr, s->b, n);
    return EML_OK;
}

static eml_status ro_create(void *u, const uint8_t *hdr, uint64_t cap,
                            eml_err *err)
{
    (void)u;
    (void)hdr;
    (void)cap;
    return eml_err_set(err, EML_ERR_IO, "read-only store");
}

static eml_status ro_write(void *u, int slot, uint64_t off, const uint8_t *p,
                           size_t n, eml_err *err)
{
    (void)u;
    (void)slot;
    (void)off;
    (void)p;
    (void)n;
    return eml_err_set(err, EML_ERR_IO, "read-only store");
}

static eml_status ro_commit(void *u, int slot, uint64_t len, uint64_t word,
                            eml_err *err)
{
    (void)u;
    (void)slot;
    (void)len;
    (void)word;
    return eml_err_set(err, EML_ERR_IO, "read-only store");
}

static eml_status ro_read(void *u, int slot, uint64_t off, uint8_t *p,
                          size_t n, eml_err *err)
{
    const rostore *s = u;
    uint64_t cap = s->size >= 40 ? eml_get_le64(s->b + 32) : 0;
    if (s->size < EML_POOL_DATA_OFFSET || slot < 0 || slot > 1 ||
        off > cap || n > cap - off)
        return eml_err_set(err, EML_ERR_RANGE, "read outside slot %d", slot);
    uint64_t room = s->size - EML_POOL_DATA_OFFSET;
    uint64_t base = (uint64_t)slot * cap;
    if (base > room || off + n > room - base)
        return eml_err_set(err, EML_ERR_TRUNCATED, "pool ends early");
    memcpy(p, s->b + EML_POOL_DATA_OFFSET + base + off, n);
    return EML_OK;
}

enum { STATE = 2500 };

static uint8_t secret[32], measurement[32];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t state[STATE];
    eml_err err = {{0}};
    eml_pool_info info;

    for (int i = 0; i < 32; i++) {
        secret[i] = (uint8_t)i;
        measurement[i] = (uint8_t)(0x20 + i);
    }
    eml_status st = eml_pool_header_parse(data, size, &info, &err);
    if (st == EML_OK)
        must(info.fresh ||
             (info.capacity > 0 && info.capacity % 4096 == 0 &&
              !eml_is_zero(info.run_id, EML_RUN_ID_BYTES)));
    else
        must(st < 0 && one_line(&err));

    /* The store the mirror keeps a pointer to, and the mirror itself,
     * live across inputs (see above). */
    static rostore s;
    static eml_mirror *m;
    static uint8_t m_hdr[EML_POOL_HEADER_BYTES];
    static const eml_store_ops ops = {&s,       ro_read_header, ro_create,
                                      NULL,     ro_write,       ro_commit,
                                      ro_read,  NULL};
    s.b = data;
    s.size = size;
    uint8_t hdr[EML_POOL_HEADER_BYTES];
    must(ro_read_header(&s, hdr, &err) == EML_OK);
    /* eml_mirror_new must refuse what the parser refuses; it is asked
     * about one such header in 32 (by a hash of its bytes), since the
     * parser alone already saw them all. */
    eml_pool_info hi;
    memset(&err, 0, sizeof(err));
    int hdr_ok = eml_pool_header_parse(hdr, sizeof(hdr), &hi, &err) == EML_OK;
    if (!hdr_ok) {
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < sizeof(hdr); i++) h = (h ^ hdr[i]) * 16777619u;
        if (h % 32 != 0) return 0;
    }
    if (m == NULL || memcmp(hdr, m_hdr, sizeof(hdr)) != 0) {
        eml_mirror_free(m);
        m = NULL;
        eml_mirror_opts o;
        memset(&o, 0, sizeof(o));
        o.seal_secret = secret;
        o.measurement = measurement;
        memset(o.cfg_digest, 0x33, 32);
        memset(o.data_digest, 0x44, 32);
        o.every = 1;
        memset(&err, 0, sizeof(err));
        st = eml_mirror_new(&o, &ops, &m, &err);
        must((st == EML_OK) == hdr_ok);
        if (st != EML_OK) {
            must(st < 0 && m == NULL && one_line(&err));
            return 0;
        }
        memcpy(m_hdr, hdr, sizeof(hdr));
    }

    static const size_t cuts[3][3] = {
        {1000, 1500, 0}, {STATE, 0, 0}, {1, 0, STATE - 1}};
    /* Picked by a byte of slot 0, which the seed does not commit (so its
     * mutations still load), else by the size. */
    const size_t pick = EML_POOL_DATA_OFFSET + 200;
    const size_t *cut = cuts[(size > pick ? data[pick] : size) % 3];
    eml_seg segs[3];
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        segs[i].p = state + off;
        segs[i].n = cut[i];
        off += cut[i];
    }
    memset(state, 0x5a, sizeof(state));
    int found = -1;
    memset(&err, 0, sizeof(err));
    st = eml_mirror_load(m, segs, 3, &found, &err);
    volatile uint8_t sink = 0;
    if (st == EML_OK) {
        must(found == 0 || found == 1);
        for (size_t i = 0; i < STATE; i++) sink ^= state[i];
        if (found == 0)
            for (size_t i = 0; i < STATE; i++) must(state[i] == 0x5a);
    } else {
        must(st < 0 && found == 0 && one_line(&err));
        int untouched = 1, wiped = 1;
        for (size_t i = 0; i < STATE; i++) {
            untouched &= state[i] == 0x5a;
            wiped &= state[i] == 0;
        }
        must(untouched || wiped);
    }
    (void)sink;
    (void)eml_mirror_seq(m);
    (void)eml_mirror_run_id(m);
    return 0;
}
