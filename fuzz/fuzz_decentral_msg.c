/*
 * fuzz_decentral_msg.c - libFuzzer target for the decentralized share
 * frame (decentral.h, docs/formats.md "Decentralized share"), what a
 * node's enclave opens from a neighbour through its host:
 * eml_dmsg_open on hostile bytes.  Two channels with fixed keys stand for
 * a pair of attested enclaves.  The input's first byte picks:
 *
 *   0  the rest is a frame, opened as it is (the header's checks);
 *   2  the rest is a node's hello (eml_hello_parse: its fixed part; the
 *      report inside is fuzz_report's);
 *   1  the rest describes a share (count, degree, indices, pad) that the
 *      peer seals, then, if any bytes are left, XORs into the frame:
 *      an untouched frame with increasing indices must open and give back
 *      what was sealed; a touched one must be refused (authentication),
 *      and indices that do not increase must be refused after it.
 *
 * Every refusal carries its class in the message.  Seeds:
 * fuzz/corpus/decentral_msg/ (written by hand: see docs/formats.md).
 *
 *   ./build-fuzz/fuzz/fuzz_decentral_msg -max_total_time=60 \
 *       fuzz/corpus/decentral_msg
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/decentral.h"

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) abort();                                                 \
    } while (0)

#define TOTAL 64

static eml_dchan g_send, g_recv; /* node 2 -> node 9 */
static int g_ready;

static void setup(void)
{
    uint8_t sk2[32], sk9[32], pk2[32], pk9[32];
    uint8_t n2[32] = {2}, n9[32] = {9}, run[32] = {1};
    memset(sk2, 0x22, 32);
    memset(sk9, 0x99, 32);
    eml_err err = {0};
    CHECK(eml_x25519_public(pk2, sk2) == EML_OK);
    CHECK(eml_x25519_public(pk9, sk9) == EML_OK);
    CHECK(eml_dchan_init(&g_send, 2, sk2, n2, 9, pk9, n9, run, &err) ==
          EML_OK);
    CHECK(eml_dchan_init(&g_recv, 9, sk9, n9, 2, pk2, n2, run, &err) ==
          EML_OK);
    g_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) setup();
    if (size < 1) return 0;
    static uint8_t *buf;
    static size_t cap;
    eml_share_view v;
    eml_dmsg_refusal why;
    eml_err err = {0};
    g_send.send_seq = g_recv.recv_seq = 3; /* every input on its own */
    if (data[0] == 2) { /* a hello's frame */
        uint32_t id;
        uint8_t nonce[32];
        const char *rep;
        size_t rlen;
        if (eml_hello_parse(data + 1, size - 1, &id, nonce, &rep, &rlen,
                            &err) != EML_OK) {
            CHECK(err.msg[0] != '\0');
            return 0;
        }
        CHECK(rlen == size - 1 - EML_HELLO_FIXED &&
              rep == (const char *)data + 1 + EML_HELLO_FIXED);
        return 0;
    }
    if (data[0] == 0) {
        eml_status st = eml_dmsg_open(&g_recv, 7, TOTAL, data + 1, size - 1,
                                      &buf, &cap, &v, &why, &err);
        if (st != EML_OK) {
            CHECK(why != EML_DMSG_OK && err.msg[0] != '\0');
            return 0;
        }
        CHECK(v.count >= 1 && v.count <= TOTAL); /* a forgery: impossible */
        return 0;
    }
    if (size < 4) return 0;
    uint32_t count = 1 + data[1] % TOTAL, degree = data[2];
    int pad = data[3] & 1, dense = (data[3] & 2) && count == TOTAL;
    const uint8_t *rest = data + 4;
    size_t left = size - 4;
    uint32_t idx[TOTAL];
    float val[TOTAL];
    int increasing = 1;
    for (uint32_t i = 0; i < count; i++) {
        idx[i] = i < left ? rest[i] % TOTAL : i;
        val[i] = (float)i * 0.5f - 3;
        if (i > 0 && idx[i] <= idx[i - 1]) increasing = 0;
    }
    size_t used = count < left ? count : left;
    rest += used;
    left -= used;
    eml_share_view s = {2, degree, TOTAL, count, dense ? NULL : idx, val};
    if (dense) {
        for (uint32_t i = 0; i < count; i++) val[i] = (float)i;
        increasing = 1;
    }
    uint8_t frame[EML_DMSG_HEADER + 8 * TOTAL + EML_GCM_TAG_BYTES];
    size_t flen;
    CHECK(eml_dmsg_seal(&g_send, 7, degree, &s, pad, frame, &flen, &err) ==
          EML_OK);
    int touched = 0;
    for (size_t i = 0; i < left && i < flen; i++) {
        frame[i] ^= rest[i];
        touched |= rest[i] != 0;
    }
    eml_status st = eml_dmsg_open(&g_recv, 7, TOTAL, frame, flen, &buf, &cap,
                                  &v, &why, &err);
    if (touched) {
        CHECK(st != EML_OK && why != EML_DMSG_OK && err.msg[0] != '\0');
        return 0;
    }
    if (!increasing) {
        CHECK(st != EML_OK && why == EML_DMSG_MALFORMED);
        return 0;
    }
    CHECK(st == EML_OK && v.count == count && v.degree == degree &&
          v.sender == 2 && v.total == TOTAL);
    for (uint32_t i = 0; i < count; i++) {
        CHECK(v.val[i] == val[i]);
        if (!dense) CHECK(v.idx[i] == idx[i]);
    }
    return 0;
}
