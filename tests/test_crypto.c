/*
 * test_crypto.c - the crypto primitives and the encrypted container.
 *
 * Known answers from the standards (SHA-256 FIPS 180-2 examples, HMAC RFC
 * 4231, HKDF RFC 5869, AES-256-GCM McGrew-Viega test cases 13, 14, 16,
 * X25519 RFC 7748, Ed25519 RFC 8032); negative tests (wrong tag, AAD,
 * nonce, key; truncated; low-order points) that must fail with
 * EML_ERR_AUTH and a wiped output; the container in both key modes:
 * round trips at the chunk-size edges, an independent re-derivation of the
 * format from docs/container.md, every single-bit flip and every
 * truncation rejected, reordered / duplicated / dropped / transplanted
 * chunks, appended bytes, wrong key and wrong mode rejected; key files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "host/keyfile.h"

#define CS EML_CONTAINER_CHUNK_MIN /* 4 KiB chunks keep the tests small */

/* ==== helpers ==== */

static size_t unhex(uint8_t *out, size_t cap, const char *s)
{
    size_t n = strlen(s) / 2, i;
    assert_true(n <= cap);
    for (i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void assert_hex(const uint8_t *got, size_t n, const char *want)
{
    uint8_t w[512];
    assert_int_equal(unhex(w, sizeof(w), want), n);
    if (memcmp(got, w, n) != 0) {
        char g[1025];
        for (size_t i = 0; i < n; i++) sprintf(g + 2 * i, "%02x", got[i]);
        fail_msg("got  %s\nwant %s", g, want);
    }
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* The call failed with a status and a non-empty, single-line message. */
static void check_fail(eml_status st, const eml_err *err)
{
    if (st == EML_OK) fail_msg("expected an error, got EML_OK");
    if (err->msg[0] == '\0') fail_msg("error %d without a message", st);
    if (strchr(err->msg, '\n') != NULL)
        fail_msg("message spans lines: %s", err->msg);
}

static void check_msg(const eml_err *err, const char *needle)
{
    if (strstr(err->msg, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
}

/* ==== wiping, comparison, randomness, locked memory ==== */

static void test_basics(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_int_equal(eml_ct_equal(a, b, sizeof(a)), 1);
    b[63] ^= 1;
    assert_int_equal(eml_ct_equal(a, b, sizeof(a)), 0);
    assert_int_equal(eml_ct_equal(a, b, 0), 1);
    eml_wipe(a, sizeof(a));
    assert_true(all_zero(a, sizeof(a)));
    assert_int_equal(eml_is_zero(a, sizeof(a)), 1);
    eml_wipe(NULL, 0);

    /* Two 64-byte draws are equal with probability 2^-512. */
    assert_int_equal(eml_random(a, sizeof(a)), EML_OK);
    assert_int_equal(eml_random_secret(b, sizeof(b)), EML_OK);
    assert_int_equal(eml_ct_equal(a, b, sizeof(a)), 0);
    assert_int_equal(eml_is_zero(a, sizeof(a)), 0);
}

static void test_secure_memory(void **state)
{
    (void)state;
    size_t sizes[] = {1, 32, 4096 - 64, 4096, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = eml_secure_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        assert_true(all_zero(p, sizes[i]));
        memset(p, 0xa5, sizes[i]);
        eml_secure_free(p, sizes[i]);
    }
    assert_null(eml_secure_alloc(0));
    assert_null(eml_secure_alloc(SIZE_MAX));
    assert_null(eml_secure_alloc(SIZE_MAX / 2));
    eml_secure_free(NULL, 10);
    printf("# secure memory: %zu allocation(s) could not be locked\n",
           eml_secure_lock_failures());
}

/* ==== SHA-256, HMAC, HKDF ==== */

static void test_sha256_kat(void **state)
{
    (void)state;
    static const char abc448[] =
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t d[32];
    assert_int_equal(eml_sha256(d, "abc", 3), EML_OK);
    assert_hex(d, 32, "ba7816bf8f01cfea414140de5dae2223"
                      "b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(eml_sha256(d, NULL, 0), EML_OK);
    assert_hex(d, 32, "e3b0c44298fc1c149afbf4c8996fb924"
                      "27ae41e4649b934ca495991b7852b855");
    assert_int_equal(eml_sha256(d, abc448, strlen(abc448)), EML_OK);
    assert_hex(d, 32, "248d6a61d20638b8e5c026930c3e6039"
                      "a33ce45964ff2167f6ecedd419db06c1");

    /* Incremental, split at every point. */
    for (size_t cut = 0; cut <= strlen(abc448); cut++) {
        eml_sha256_ctx *c = NULL;
        assert_int_equal(eml_sha256_new(&c), EML_OK);
        assert_int_equal(eml_sha256_update(c, abc448, cut), EML_OK);
        assert_int_equal(eml_sha256_update(c, abc448 + cut,
                                           strlen(abc448) - cut),
                         EML_OK);
        assert_int_equal(eml_sha256_final(c, d), EML_OK);
        eml_sha256_free(c);
        assert_hex(d, 32, "248d6a61d20638b8e5c026930c3e6039"
                          "a33ce45964ff2167f6ecedd419db06c1");
    }
    eml_sha256_free(NULL);
}

static void test_hmac_kat(void **state)
{
    (void)state;
    static const char msg[] = "what do ya want for nothing?";
    uint8_t d[32];
    /* RFC 4231 test case 2. */
    assert_int_equal(eml_hmac_sha256(d, (const uint8_t *)"Jefe", 4, msg,
                                     strlen(msg)),
                     EML_OK);
    assert_hex(d, 32, "5bdcc146bf60754e6a042426089575c7"
                      "5a003f089d2739839dec58b964ec3843");
}

static void test_hkdf_kat(void **state)
{
    (void)state;
    uint8_t ikm[22], salt[13], info[10], prk[32], okm[42];
    memset(ikm, 0x0b, sizeof(ikm));
    unhex(salt, sizeof(salt), "000102030405060708090a0b0c");
    unhex(info, sizeof(info), "f0f1f2f3f4f5f6f7f8f9");

    /* RFC 5869 test case 1. */
    assert_int_equal(eml_hkdf_sha256_extract(prk, ikm, sizeof(ikm), salt,
                                             sizeof(salt)),
                     EML_OK);
    assert_hex(prk, 32, "077709362c2e32df0ddc3f0dc47bba63"
                        "90b6c73bb50f9c3122ec844ad7c2b3e5");
    assert_int_equal(eml_hkdf_sha256_expand(okm, 42, prk, info, sizeof(info)),
                     EML_OK);
    assert_hex(okm, 42, "3cb25f25faacd57a90434f64d0362f2a"
                        "2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                        "34007208d5b887185865");
    memset(okm, 0, sizeof(okm));
    assert_int_equal(eml_hkdf_sha256(okm, 42, ikm, sizeof(ikm), salt,
                                     sizeof(salt), info, sizeof(info)),
                     EML_OK);
    assert_hex(okm, 42, "3cb25f25faacd57a90434f64d0362f2a"
                        "2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                        "34007208d5b887185865");

    /* RFC 5869 test case 3: no salt, no info. */
    assert_int_equal(eml_hkdf_sha256(okm, 42, ikm, sizeof(ikm), NULL, 0,
                                     NULL, 0),
                     EML_OK);
    assert_hex(okm, 42, "8da4e775a563c18f715f802a063c5a31"
                        "b8a11f5c5ee1879ec3454e5f3c738d2d"
                        "9d201395faa4b61a96c8");

    assert_int_equal(eml_hkdf_sha256(okm, 0, ikm, 22, NULL, 0, NULL, 0),
                     EML_ERR_INVALID);
    uint8_t *big = malloc(EML_HKDF_MAX_OUT + 1);
    assert_non_null(big);
    assert_int_equal(eml_hkdf_sha256(big, EML_HKDF_MAX_OUT + 1, ikm, 22,
                                     NULL, 0, NULL, 0),
                     EML_ERR_INVALID);
    assert_int_equal(eml_hkdf_sha256(big, EML_HKDF_MAX_OUT, ikm, 22, NULL, 0,
                                     NULL, 0),
                     EML_OK);
    free(big);
}

/* ==== AES-256-GCM ==== */

typedef struct gcm_vec {
    const char *key, *iv, *pt, *aad, *ct, *tag;
} gcm_vec;

/* McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13,
 * 14 and 16 (the 256-bit-key ones, 96-bit IVs). */
static const gcm_vec gcm_vecs[] = {
    {"0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "", "",
     "530f8afbc74536b9a963b4f1c4cb738b"},
    {"0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void test_gcm_kat(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(gcm_vecs) / sizeof(gcm_vecs[0]); v++) {
        const gcm_vec *g = &gcm_vecs[v];
        uint8_t key[32], iv[12], pt[64], aad[32], out[80], back[64];
        unhex(key, sizeof(key), g->key);
        unhex(iv, sizeof(iv), g->iv);
        size_t n = unhex(pt, sizeof(pt), g->pt);
        size_t na = unhex(aad, sizeof(aad), g->aad);
        assert_int_equal(eml_aes256gcm_seal(out, pt, n, aad, na, iv, key),
                         EML_OK);
        assert_hex(out, n, g->ct);
        assert_hex(out + n, 16, g->tag);
        memset(back, 0xee, sizeof(back));
        assert_int_equal(eml_aes256gcm_open(back, out, n + 16, aad, na, iv,
                                            key),
                         EML_OK);
        assert_memory_equal(back, pt, n);
        /* In place, both ways. */
        memcpy(out, pt, n);
        assert_int_equal(eml_aes256gcm_seal(out, out, n, aad, na, iv, key),
                         EML_OK);
        assert_hex(out + n, 16, g->tag);
        assert_int_equal(eml_aes256gcm_open(out, out, n + 16, aad, na, iv,
                                            key),
                         EML_OK);
        assert_memory_equal(out, pt, n);
    }
}

/* Every way of getting it wrong: EML_ERR_AUTH and a wiped output. */
static void test_gcm_negative(void **state)
{
    (void)state;
    const gcm_vec *g = &gcm_vecs[2];
    uint8_t key[32], iv[12], pt[64], aad[32], ct[80], out[64], bad[80];
    unhex(key, sizeof(key), g->key);
    unhex(iv, sizeof(iv), g->iv);
    size_t n = unhex(pt, sizeof(pt), g->pt);
    size_t na = unhex(aad, sizeof(aad), g->aad);
    assert_int_equal(eml_aes256gcm_seal(ct, pt, n, aad, na, iv, key), EML_OK);

#define EXPECT_AUTH(call, outlen)                                            \
    do {                                                                     \
        memset(out, 0xaa, sizeof(out));                                      \
        assert_int_equal((call), EML_ERR_AUTH);                              \
        assert_true(all_zero(out, (outlen)));                                \
    } while (0)

    /* Every bit of the ciphertext and of the tag. */
    for (size_t bit = 0; bit < (n + 16) * 8; bit++) {
        memcpy(bad, ct, n + 16);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        EXPECT_AUTH(eml_aes256gcm_open(out, bad, n + 16, aad, na, iv, key),
                    n);
    }
    /* Every bit of the AAD, of the nonce, of the key. */
    for (size_t bit = 0; bit < na * 8; bit++) {
        uint8_t a2[32];
        memcpy(a2, aad, na);
        a2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        EXPECT_AUTH(eml_aes256gcm_open(out, ct, n + 16, a2, na, iv, key), n);
    }
    for (size_t bit = 0; bit < 96; bit++) {
        uint8_t iv2[12];
        memcpy(iv2, iv, 12);
        iv2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        EXPECT_AUTH(eml_aes256gcm_open(out, ct, n + 16, aad, na, iv2, key),
                    n);
    }
    for (size_t bit = 0; bit < 256; bit += 7) {
        uint8_t k2[32];
        memcpy(k2, key, 32);
        k2[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        EXPECT_AUTH(eml_aes256gcm_open(out, ct, n + 16, aad, na, iv, k2), n);
    }
    /* Missing or extra AAD. */
    EXPECT_AUTH(eml_aes256gcm_open(out, ct, n + 16, NULL, 0, iv, key), n);
    EXPECT_AUTH(eml_aes256gcm_open(out, ct, n + 16, aad, na - 1, iv, key), n);
    /* Truncated: every shorter length, tag kept at the end or not. */
    for (size_t len = 0; len < n + 16; len++) {
        memset(out, 0xaa, sizeof(out));
        assert_int_equal(eml_aes256gcm_open(out, ct, len, aad, na, iv, key),
                         EML_ERR_AUTH);
        if (len >= 16) assert_true(all_zero(out, len - 16));
        if (len >= 16) {
            memcpy(bad, ct, len - 16);
            memcpy(bad + len - 16, ct + n, 16); /* the real tag */
            EXPECT_AUTH(eml_aes256gcm_open(out, bad, len, aad, na, iv, key),
                        len - 16);
        }
    }
    /* Appended bytes. */
    memcpy(bad, ct, n + 16);
    bad[n + 16] = 0;
    EXPECT_AUTH(eml_aes256gcm_open(out, bad, n + 17, aad, na, iv, key), n);
#undef EXPECT_AUTH

    /* A context used for many messages gives the same answers. */
    eml_gcm *ctx = NULL;
    assert_int_equal(eml_gcm_new(key, &ctx), EML_OK);
    for (int rep = 0; rep < 3; rep++) {
        assert_int_equal(eml_gcm_seal(ctx, bad, pt, n, aad, na, iv), EML_OK);
        assert_memory_equal(bad, ct, n + 16);
        bad[0] ^= 1;
        assert_int_equal(eml_gcm_open(ctx, out, bad, n + 16, aad, na, iv),
                         EML_ERR_AUTH);
        assert_true(all_zero(out, n));
        bad[0] ^= 1;
        assert_int_equal(eml_gcm_open(ctx, out, bad, n + 16, aad, na, iv),
                         EML_OK);
        assert_memory_equal(out, pt, n);
    }
    eml_gcm_free(ctx);
    eml_gcm_free(NULL);
}

/* ==== X25519, Ed25519 ==== */

static void test_x25519_kat(void **state)
{
    (void)state;
    uint8_t a[32], b[32], pa[32], pb[32], k1[32], k2[32], u[32];
    /* RFC 7748 section 6.1. */
    unhex(a, 32, "77076d0a7318a57d3c16c17251b26645"
                 "df4c2f87ebc0992ab177fba51db92c2a");
    unhex(b, 32, "5dab087e624a8a4b79e17f8b83800ee6"
                 "6f3bb1292618b6fd1c2f8b27ff88e0eb");
    assert_int_equal(eml_x25519_public(pa, a), EML_OK);
    assert_hex(pa, 32, "8520f0098930a754748b7ddcb43ef75a"
                       "0dbf3a0d26381af4eba4a98eaa9b4e6a");
    assert_int_equal(eml_x25519_public(pb, b), EML_OK);
    assert_hex(pb, 32, "de9edb7d7b7dc1b4d35b61c2ece43537"
                       "3f8343c85b78674dadfc7e146f882b4f");
    assert_int_equal(eml_x25519_shared(k1, a, pb), EML_OK);
    assert_int_equal(eml_x25519_shared(k2, b, pa), EML_OK);
    assert_hex(k1, 32, "4a5d9d5ba4ce2de1728e3bf480350f25"
                       "e07e21c947d19e3376f09b3c1e161742");
    assert_memory_equal(k1, k2, 32);

    /* RFC 7748 section 5.2, first vector. */
    unhex(a, 32, "a546e36bf0527c9d3b16154b82465edd"
                 "62144c0ac1fc5a18506a2244ba449ac4");
    unhex(u, 32, "e6db6867583030db3594c1a424b15f7c"
                 "726624ec26b3353b10a903a6d0ab1c4c");
    assert_int_equal(eml_x25519_shared(k1, a, u), EML_OK);
    assert_hex(k1, 32, "c3da55379de9c6908e94ea4df28d084f"
                       "32eccf03491c71f754b4075577a28552");

    /* Points of small order give an all-zero secret: refused, wiped. */
    static const char *low[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    };
    for (size_t i = 0; i < sizeof(low) / sizeof(low[0]); i++) {
        unhex(u, 32, low[i]);
        memset(k1, 0xaa, 32);
        assert_int_equal(eml_x25519_shared(k1, a, u), EML_ERR_AUTH);
        assert_true(all_zero(k1, 32));
    }

    /* Fresh pairs agree. */
    assert_int_equal(eml_x25519_keygen(a, pa), EML_OK);
    assert_int_equal(eml_x25519_keygen(b, pb), EML_OK);
    assert_int_equal(eml_x25519_shared(k1, a, pb), EML_OK);
    assert_int_equal(eml_x25519_shared(k2, b, pa), EML_OK);
    assert_memory_equal(k1, k2, 32);
    assert_int_equal(eml_x25519_public(u, a), EML_OK);
    assert_memory_equal(u, pa, 32);
}

static void test_ed25519_kat(void **state)
{
    (void)state;
    uint8_t sk[32], pk[32], sig[64], msg[1];
    /* RFC 8032 section 7.1, test 1 (empty message). */
    unhex(sk, 32, "9d61b19deffd5a60ba844af492ec2cc4"
                  "4449c5697b326919703bac031cae7f60");
    assert_int_equal(eml_ed25519_public(pk, sk), EML_OK);
    assert_hex(pk, 32, "d75a980182b10ab7d54bfed3c964073a"
                       "0ee172f3daa62325af021a68f707511a");
    assert_int_equal(eml_ed25519_sign(sig, NULL, 0, sk), EML_OK);
    assert_hex(sig, 64, "e5564300c360ac729086e2cc806e828a"
                        "84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46b"
                        "d25bf5f0595bbe24655141438e7a100b");
    assert_int_equal(eml_ed25519_verify(sig, NULL, 0, pk), EML_OK);

    /* Test 2 (one byte, 0x72). */
    unhex(sk, 32, "4ccd089b28ff96da9db6c346ec114e0f"
                  "5b8a319f35aba624da8cf6ed4fb8a6fb");
    msg[0] = 0x72;
    assert_int_equal(eml_ed25519_public(pk, sk), EML_OK);
    assert_hex(pk, 32, "3d4017c3e843895a92b70aa74d1b7ebc"
                       "9c982ccf2ec4968cc0cd55f12af4660c");
    assert_int_equal(eml_ed25519_sign(sig, msg, 1, sk), EML_OK);
    assert_hex(sig, 64, "92a009a9f0d4cab8720e820b5f642540"
                        "a2b27b5416503f8fb3762223ebdb69da"
                        "085ac1e43e15996e458f3613d0f11d8c"
                        "387b2eaeb4302aeeb00d291612bb0c00");
    assert_int_equal(eml_ed25519_verify(sig, msg, 1, pk), EML_OK);

    /* Any flipped bit of signature, message or key: EML_ERR_AUTH. */
    for (int bit = 0; bit < 512; bit++) {
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(eml_ed25519_verify(sig, msg, 1, pk), EML_ERR_AUTH);
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    for (int bit = 0; bit < 8; bit++) {
        msg[0] ^= (uint8_t)(1u << bit);
        assert_int_equal(eml_ed25519_verify(sig, msg, 1, pk), EML_ERR_AUTH);
        msg[0] ^= (uint8_t)(1u << bit);
    }
    for (int bit = 0; bit < 256; bit++) {
        pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(eml_ed25519_verify(sig, msg, 1, pk), EML_ERR_AUTH);
        pk[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(eml_ed25519_verify(sig, NULL, 0, pk), EML_ERR_AUTH);

    /* Fresh keys sign and verify a longer message. */
    uint8_t big[1000];
    fill_pattern(big, sizeof(big), 7);
    assert_int_equal(eml_ed25519_keygen(sk, pk), EML_OK);
    assert_int_equal(eml_ed25519_sign(sig, big, sizeof(big), sk), EML_OK);
    assert_int_equal(eml_ed25519_verify(sig, big, sizeof(big), pk), EML_OK);
    big[999] ^= 0x80;
    assert_int_equal(eml_ed25519_verify(sig, big, sizeof(big), pk),
                     EML_ERR_AUTH);
}

/* ==== container: fixtures ==== */

typedef struct keyset {
    uint8_t data_key[32];
    uint8_t sk[32], pk[32];
} keyset;

static void keyset_make(keyset *k)
{
    assert_int_equal(eml_random_secret(k->data_key, 32), EML_OK);
    assert_int_equal(eml_x25519_keygen(k->sk, k->pk), EML_OK);
}

static const uint8_t *seal_key(const keyset *k, eml_container_mode mode)
{
    return mode == EML_CONTAINER_SYMMETRIC ? k->data_key : k->pk;
}

/* What seal() writes in the header: a role and a non-zero dataset id, so
 * that the tampering tests below cover those bytes too. */
static const eml_container_meta test_meta = {
    EML_CONTAINER_ROLE_TRAIN_IMAGES,
    {0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc,
     0xdd, 0xde, 0xdf, 0xe0}};

static uint8_t *seal(const keyset *k, eml_container_mode mode, uint32_t cs,
                     const uint8_t *pt, size_t n, size_t *len)
{
    eml_err err = {{0}};
    uint8_t *c = NULL;
    eml_status st = eml_container_seal_buffer(mode, seal_key(k, mode), cs,
                                              &test_meta, pt, n, &c, len,
                                              &err);
    if (st != EML_OK) fail_msg("seal: %s", eml_err_msg(&err, st));
    return c;
}

/* Opens c; returns the status, checks the failure contract. */
static eml_status open_c(const keyset *k, const uint8_t *c, size_t len,
                         uint8_t **pt, size_t *n, eml_err *err)
{
    eml_container_keys keys = {k->data_key, k->sk};
    memset(err, 0, sizeof(*err));
    eml_status st = eml_container_open_buffer(c, len, &keys, pt, n, err);
    if (st != EML_OK) {
        check_fail(st, err);
        assert_null(*pt);
        assert_int_equal(*n, 0);
    }
    return st;
}

static void expect_reject(const keyset *k, const uint8_t *c, size_t len,
                          const char *what)
{
    uint8_t *pt = NULL;
    size_t n = 0;
    eml_err err;
    eml_status st = open_c(k, c, len, &pt, &n, &err);
    if (st == EML_OK) {
        free(pt);
        fail_msg("%s was accepted", what);
    }
}

static void expect_open(const keyset *k, const uint8_t *c, size_t len,
                        const uint8_t *want, size_t want_len)
{
    uint8_t *pt = NULL;
    size_t n = 0;
    eml_err err;
    eml_status st = open_c(k, c, len, &pt, &n, &err);
    if (st != EML_OK) fail_msg("open: %s", eml_err_msg(&err, st));
    assert_non_null(pt);
    assert_int_equal(n, want_len);
    if (want_len > 0) assert_memory_equal(pt, want, want_len);
    eml_wipe(pt, n);
    free(pt);
}

static const eml_container_mode modes[] = {EML_CONTAINER_SYMMETRIC,
                                           EML_CONTAINER_RECIPIENT};

/* ==== container: round trips ==== */

static void test_container_roundtrip(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    const size_t sizes[] = {0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17};
    uint8_t *pt = malloc(4 * CS);
    assert_non_null(pt);
    fill_pattern(pt, 4 * CS, 1);
    for (int m = 0; m < 2; m++) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t n = sizes[i], len = 0;
            uint64_t want = 0;
            uint8_t *c = seal(&k, modes[m], CS, pt, n, &len);
            assert_int_equal(eml_container_sealed_size(modes[m], CS, n,
                                                       &want),
                             EML_OK);
            assert_int_equal(len, want);
            size_t chunks = n == 0 ? 1 : (n + CS - 1) / CS;
            assert_int_equal(len, (modes[m] == EML_CONTAINER_SYMMETRIC
                                       ? EML_CONTAINER_HEADER_SYM
                                       : EML_CONTAINER_HEADER_RCPT) +
                                      n + 16 * chunks);
            expect_open(&k, c, len, pt, n);
            /* Two seals of the same plaintext differ (fresh salt). */
            size_t len2 = 0;
            uint8_t *c2 = seal(&k, modes[m], CS, pt, n, &len2);
            assert_int_equal(len2, len);
            assert_memory_not_equal(c, c2, len);
            free(c2);
            free(c);
        }
    }
    /* The default chunk size, a few chunks' worth. */
    size_t big_n = 2 * EML_CONTAINER_CHUNK_DEFAULT + 3, len = 0;
    uint8_t *big = malloc(big_n);
    assert_non_null(big);
    fill_pattern(big, big_n, 2);
    for (int m = 0; m < 2; m++) {
        uint8_t *c = seal(&k, modes[m], 0, big, big_n, &len);
        eml_container_info info;
        eml_err err = {{0}};
        assert_int_equal(eml_container_peek(c, len, &info, &err), EML_OK);
        assert_int_equal(info.chunk_size, EML_CONTAINER_CHUNK_DEFAULT);
        assert_int_equal(info.mode, modes[m]);
        expect_open(&k, c, len, big, big_n);
        free(c);
    }
    free(big);
    free(pt);
}

/* The streaming API by hand: header, chunks, reader fed piece by piece. */
static void test_container_streaming(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    enum { N = 3 * CS + 100 };
    uint8_t *pt = malloc(N), *ct = malloc(N + 16 * 4 + 164), *back = malloc(N);
    assert_non_null(pt);
    assert_non_null(ct);
    assert_non_null(back);
    fill_pattern(pt, N, 3);
    for (int m = 0; m < 2; m++) {
        eml_err err = {{0}};
        eml_cw *w = NULL;
        uint8_t hdr[EML_CONTAINER_HEADER_MAX];
        size_t hlen = 0, pos, off = 0, got;
        assert_int_equal(eml_cw_new(modes[m], seal_key(&k, modes[m]), CS,
                                    NULL, &w, hdr, &hlen, &err),
                         EML_OK);
        assert_int_equal(eml_cw_chunk_size(w), CS);
        memcpy(ct, hdr, hlen);
        pos = hlen;
        /* Refusals: a short non-final chunk, an empty final after data. */
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cw_seal(w, pt, CS - 1, 0, ct + pos, &got, &err),
                         EML_ERR_INVALID);
        check_msg(&err, "exactly");
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cw_seal(w, pt, CS + 1, 1, ct + pos, &got, &err),
                         EML_ERR_INVALID);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(eml_cw_seal(w, pt + off, CS, 0, ct + pos, &got,
                                         &err),
                             EML_OK);
            assert_int_equal(got, CS + 16);
            off += CS;
            pos += got;
        }
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cw_seal(w, pt, 0, 1, ct + pos, &got, &err),
                         EML_ERR_INVALID);
        check_msg(&err, "empty final chunk");
        assert_int_equal(eml_cw_seal(w, pt + off, 100, 1, ct + pos, &got,
                                     &err),
                         EML_OK);
        pos += got;
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cw_seal(w, pt, 1, 1, ct + pos, &got, &err),
                         EML_ERR_INVALID);
        check_msg(&err, "already");
        eml_cw_free(w);

        /* Reader: the header length from the first 16 bytes. */
        size_t hl = 0;
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_header_len(ct, 15, &hl, &err),
                         EML_ERR_TRUNCATED);
        assert_int_equal(eml_cr_header_len(ct, 16, &hl, &err), EML_OK);
        assert_int_equal(hl, hlen);
        eml_container_keys keys = {k.data_key, k.sk};
        eml_cr *r = NULL;
        assert_int_equal(eml_cr_new(ct, hl, &keys, &r, &err), EML_OK);
        assert_int_equal(eml_cr_mode(r), modes[m]);
        assert_int_equal(eml_cr_chunk_size(r), CS);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_finish(r, &err), EML_ERR_TRUNCATED);
        size_t rp = hl, bo = 0;
        for (int i = 0; i < 4; i++) {
            size_t n = i < 3 ? CS + 16 : 116;
            assert_int_equal(eml_cr_open(r, ct + rp, n, i == 3, back + bo,
                                         &got, &err),
                             EML_OK);
            rp += n;
            bo += got;
        }
        assert_int_equal(rp, pos);
        assert_int_equal(bo, N);
        assert_memory_equal(back, pt, N);
        assert_int_equal(eml_cr_plaintext_bytes(r), N);
        assert_int_equal(eml_cr_finish(r, &err), EML_OK);
        /* Anything after the final chunk. */
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_open(r, ct + hl, CS + 16, 0, back, &got,
                                     &err),
                         EML_ERR_FORMAT);
        check_msg(&err, "after the final chunk");
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_finish(r, &err), EML_ERR_FORMAT);
        eml_cr_free(r);

        /* A host that lies about where the stream ends. */
        assert_int_equal(eml_cr_new(ct, hl, &keys, &r, &err), EML_OK);
        memset(back, 0xaa, CS);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_open(r, ct + hl, CS + 16, 1, back, &got,
                                     &err),
                         EML_ERR_AUTH);
        assert_int_equal(got, 0);
        assert_true(all_zero(back, CS));
        check_msg(&err, "chunk 0 failed authentication");
        /* Sticky: the genuine chunk is refused now too. */
        assert_int_equal(eml_cr_open(r, ct + hl, CS + 16, 0, back, &got,
                                     &err),
                         EML_ERR_AUTH);
        assert_int_equal(eml_cr_finish(r, &err), EML_ERR_AUTH);
        eml_cr_free(r);

        assert_int_equal(eml_cr_new(ct, hl, &keys, &r, &err), EML_OK);
        for (int i = 0; i < 3; i++)
            assert_int_equal(eml_cr_open(r, ct + hl + i * (CS + 16), CS + 16,
                                         0, back, &got, &err),
                             EML_OK);
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_open(r, ct + hl + 3 * (CS + 16), 116, 0, back,
                                     &got, &err),
                         EML_ERR_TRUNCATED);
        eml_cr_free(r);
    }
    free(pt);
    free(ct);
    free(back);
}

/* ==== container: the format, re-derived from docs/container.md ==== */

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void test_container_format(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    enum { N = CS + 5 };
    uint8_t pt[N];
    fill_pattern(pt, N, 4);
    for (int m = 0; m < 2; m++) {
        size_t len = 0;
        uint8_t *c = seal(&k, modes[m], CS, pt, N, &len);
        size_t hlen = modes[m] == EML_CONTAINER_SYMMETRIC ? 84 : 164;
        uint8_t content[32], file_key[32], h[32], id_in[19 + 32], id[32];
        uint8_t nonce[12], aad[41], out[CS];

        assert_memory_equal(c, "EMLC", 4);
        assert_int_equal(c[4] | c[5] << 8, 2);
        assert_int_equal(c[6] | c[7] << 8, modes[m]);
        assert_int_equal((uint32_t)c[8] | (uint32_t)c[9] << 8 |
                             (uint32_t)c[10] << 16 | (uint32_t)c[11] << 24,
                         CS);
        assert_int_equal(c[12] | c[13] << 8 | c[14] << 16 | c[15] << 24,
                         hlen);
        memcpy(id_in, "enclaveml key id v1", 19);
        memcpy(id_in + 19, seal_key(&k, modes[m]), 32);
        assert_int_equal(eml_sha256(id, id_in, sizeof(id_in)), EML_OK);
        assert_memory_equal(c + 16, id, 16);
        uint8_t kid[16];
        assert_int_equal(eml_container_key_id(kid, seal_key(&k, modes[m])),
                         EML_OK);
        assert_memory_equal(kid, id, 16);
        /* Role, reserved, dataset id. */
        assert_int_equal(c[64] | c[65] << 8, EML_CONTAINER_ROLE_TRAIN_IMAGES);
        assert_int_equal(c[66] | c[67] << 8, 0);
        assert_memory_equal(c + 68, test_meta.dataset_id, 16);

        if (modes[m] == EML_CONTAINER_SYMMETRIC) {
            memcpy(content, k.data_key, 32);
        } else {
            uint8_t shared[32], wrap[32], info[27 + 64], zero[12] = {0};
            assert_int_equal(eml_x25519_shared(shared, k.sk, c + 84), EML_OK);
            memcpy(info, "enclaveml recipient wrap v1", 27);
            memcpy(info + 27, c + 84, 32);
            memcpy(info + 59, k.pk, 32);
            assert_int_equal(eml_hkdf_sha256(wrap, 32, shared, 32, c + 32, 32,
                                             info, sizeof(info)),
                             EML_OK);
            assert_int_equal(eml_aes256gcm_open(content, c + 116, 48, c, 116,
                                                zero, wrap),
                             EML_OK);
        }
        assert_int_equal(eml_hkdf_sha256(file_key, 32, content, 32, c + 32,
                                         32,
                                         (const uint8_t *)"enclaveml "
                                                          "container v1",
                                         22),
                         EML_OK);
        assert_int_equal(eml_sha256(h, c, hlen), EML_OK);
        for (uint64_t i = 0; i < 2; i++) {
            int final = i == 1;
            size_t off = hlen + (size_t)i * (CS + 16);
            size_t clen = final ? 5 + 16 : CS + 16;
            put_be64(nonce, i);
            nonce[8] = nonce[9] = nonce[10] = 0;
            nonce[11] = (uint8_t)final;
            memcpy(aad, h, 32);
            put_be64(aad + 32, i);
            aad[40] = (uint8_t)final;
            assert_int_equal(eml_aes256gcm_open(out, c + off, clen, aad, 41,
                                                nonce, file_key),
                             EML_OK);
            assert_memory_equal(out, pt + i * CS, clen - 16);
        }
        assert_int_equal(len, hlen + N + 32);
        free(c);
    }
}

/* ==== container: tampering ==== */

static void test_container_bitflips(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    uint8_t pt[CS + 10];
    fill_pattern(pt, sizeof(pt), 5);
    const size_t sizes[] = {0, CS + 10};
    for (int m = 0; m < 2; m++) {
        for (int s = 0; s < 2; s++) {
            size_t len = 0;
            uint8_t *c = seal(&k, modes[m], CS, pt, sizes[s], &len);
            expect_open(&k, c, len, pt, sizes[s]);
            for (size_t bit = 0; bit < len * 8; bit++) {
                c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
                uint8_t *out = NULL;
                size_t n = 0;
                eml_err err;
                eml_status st = open_c(&k, c, len, &out, &n, &err);
                if (st == EML_OK)
                    fail_msg("mode %d, %zu bytes: flipping bit %zu accepted",
                             modes[m], sizes[s], bit);
                c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            }
            expect_open(&k, c, len, pt, sizes[s]);
            free(c);
        }
    }
}

static void test_container_truncations(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    uint8_t pt[2 * CS + 7];
    fill_pattern(pt, sizeof(pt), 6);
    for (int m = 0; m < 2; m++) {
        size_t len = 0;
        uint8_t *c = seal(&k, modes[m], CS, pt, sizeof(pt), &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* A fresh copy of exactly cut bytes, so ASan sees overreads. */
            uint8_t *t = malloc(cut ? cut : 1);
            assert_non_null(t);
            memcpy(t, c, cut);
            uint8_t *out = NULL;
            size_t n = 0;
            eml_err err;
            if (open_c(&k, t, cut, &out, &n, &err) == EML_OK)
                fail_msg("mode %d: truncation to %zu of %zu bytes accepted",
                         modes[m], cut, len);
            free(t);
        }
        /* At the chunk boundaries the message says what happened. */
        size_t hlen = len - sizeof(pt) - 3 * 16;
        uint8_t *out = NULL;
        size_t n = 0;
        eml_err err;
        assert_int_equal(open_c(&k, c, hlen, &out, &n, &err),
                         EML_ERR_TRUNCATED);
        check_msg(&err, "truncated");
        assert_int_equal(open_c(&k, c, hlen + CS + 16, &out, &n, &err),
                         EML_ERR_AUTH);
        free(c);
    }
}

/* Builds a container from chunk pieces of others: pieces[i] = {which
 * container, which chunk}.  The header comes from container hdr_from. */
typedef struct piece {
    int from, chunk;
} piece;

static uint8_t *splice(uint8_t *const *cs, size_t hlen, size_t n_pt,
                       int hdr_from, const piece *p, int np, size_t *len)
{
    size_t nchunks = (n_pt + CS - 1) / CS;
    uint8_t *out = malloc(hlen + (size_t)np * (CS + 16));
    assert_non_null(out);
    memcpy(out, cs[hdr_from], hlen);
    size_t pos = hlen;
    for (int i = 0; i < np; i++) {
        size_t off = hlen + (size_t)p[i].chunk * (CS + 16);
        size_t clen = (size_t)p[i].chunk + 1 == nchunks
                          ? n_pt - (nchunks - 1) * CS + 16
                          : CS + 16;
        memcpy(out + pos, cs[p[i].from] + off, clen);
        pos += clen;
    }
    *len = pos;
    return out;
}

static void test_container_splicing(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    enum { N = 3 * CS + 50 }; /* chunks 0, 1, 2 full; 3 final, 50 bytes */
    uint8_t *pt = malloc(N);
    assert_non_null(pt);
    fill_pattern(pt, N, 8);
    for (int m = 0; m < 2; m++) {
        size_t len[2];
        uint8_t *c[2];
        c[0] = seal(&k, modes[m], CS, pt, N, &len[0]);
        c[1] = seal(&k, modes[m], CS, pt, N, &len[1]); /* same key, same pt */
        size_t hlen = len[0] - N - 4 * 16;
        size_t slen;
        uint8_t *s;

        /* The identity splice is the original. */
        const piece same[] = {{0, 0}, {0, 1}, {0, 2}, {0, 3}};
        s = splice(c, hlen, N, 0, same, 4, &slen);
        expect_open(&k, s, slen, pt, N);
        free(s);

        struct {
            const char *what;
            int hdr;
            piece p[5];
            int np;
        } cases[] = {
            {"swapped chunks 0 and 1", 0, {{0, 1}, {0, 0}, {0, 2}, {0, 3}}, 4},
            {"swapped chunks 1 and 2", 0, {{0, 0}, {0, 2}, {0, 1}, {0, 3}}, 4},
            {"duplicated chunk 0", 0,
             {{0, 0}, {0, 0}, {0, 1}, {0, 2}, {0, 3}}, 5},
            {"duplicated chunk 1", 0,
             {{0, 0}, {0, 1}, {0, 1}, {0, 2}, {0, 3}}, 5},
            {"dropped chunk 1", 0, {{0, 0}, {0, 2}, {0, 3}}, 3},
            {"dropped final chunk", 0, {{0, 0}, {0, 1}, {0, 2}}, 3},
            {"only the final chunk", 0, {{0, 3}}, 1},
            {"chunk 1 from another file", 0,
             {{0, 0}, {1, 1}, {0, 2}, {0, 3}}, 4},
            {"final chunk from another file", 0,
             {{0, 0}, {0, 1}, {0, 2}, {1, 3}}, 4},
            {"header from another file", 1,
             {{0, 0}, {0, 1}, {0, 2}, {0, 3}}, 4},
            {"chunk duplicated after the final one", 0,
             {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 2}}, 5},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            s = splice(c, hlen, N, cases[i].hdr, cases[i].p, cases[i].np,
                       &slen);
            expect_reject(&k, s, slen, cases[i].what);
            free(s);
        }

        /* Appended bytes: one, a tag's worth, a whole second container. */
        size_t extra[] = {1, 16, CS + 16};
        for (size_t i = 0; i < 3; i++) {
            uint8_t *a = malloc(len[0] + extra[i]);
            assert_non_null(a);
            memcpy(a, c[0], len[0]);
            memcpy(a + len[0], c[1] + hlen, extra[i]);
            expect_reject(&k, a, len[0] + extra[i], "appended bytes");
            free(a);
        }
        uint8_t *two = malloc(len[0] + len[1]);
        assert_non_null(two);
        memcpy(two, c[0], len[0]);
        memcpy(two + len[0], c[1], len[1]);
        expect_reject(&k, two, len[0] + len[1], "two containers back to back");
        free(two);
        free(c[0]);
        free(c[1]);
    }
    free(pt);
}

static void test_container_wrong_key(void **state)
{
    (void)state;
    keyset k, other;
    keyset_make(&k);
    keyset_make(&other);
    uint8_t pt[100];
    fill_pattern(pt, sizeof(pt), 9);
    for (int m = 0; m < 2; m++) {
        size_t len = 0, n = 0;
        uint8_t *c = seal(&k, modes[m], CS, pt, sizeof(pt), &len), *out = NULL;
        eml_err err;
        assert_int_equal(open_c(&other, c, len, &out, &n, &err), EML_ERR_AUTH);
        check_msg(&err, "key does not match");
        check_msg(&err, "key id");

        /* The right kind of key missing: a wrong-mode key set. */
        eml_container_keys only_data = {k.data_key, NULL};
        eml_container_keys only_x = {NULL, k.sk};
        memset(&err, 0, sizeof(err));
        eml_status st = eml_container_open_buffer(
            c, len, modes[m] == EML_CONTAINER_SYMMETRIC ? &only_x : &only_data,
            &out, &n, &err);
        assert_int_equal(st, EML_ERR_INVALID);
        check_fail(st, &err);
        check_msg(&err, modes[m] == EML_CONTAINER_SYMMETRIC ? "data key"
                                                            : "X25519");
        /* A data key that happens to equal the X25519 key's bytes is still
         * a different key: swap roles. */
        eml_container_keys swapped = {k.sk, k.data_key};
        memset(&err, 0, sizeof(err));
        st = eml_container_open_buffer(c, len, &swapped, &out, &n, &err);
        assert_int_equal(st, EML_ERR_AUTH);
        check_msg(&err, "key does not match");

        /* The mode field rewritten: the header no longer parses as such. */
        c[6] = (uint8_t)(3 - modes[m]);
        expect_reject(&k, c, len, "mode flipped");
        c[6] = 3;
        expect_reject(&k, c, len, "unknown mode");
        free(c);
    }
}

static void test_container_bad_headers(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    uint8_t pt[10] = {0}, *out = NULL;
    size_t len = 0, n = 0, hl = 0;
    eml_err err;
    uint8_t *c = seal(&k, EML_CONTAINER_SYMMETRIC, CS, pt, 10, &len);

    c[0] = 'X';
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_FORMAT);
    check_msg(&err, "not an enclaveml container");
    c[0] = 'E';
    c[4] = 3;
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_UNSUPPORTED);
    check_msg(&err, "version 3");
    c[4] = 0;
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_FORMAT);
    c[4] = 2;
    const uint32_t bad_cs[] = {0, 1, 4095, 4097, 3 * 4096, 32u << 20,
                               0xffffffffu};
    for (size_t i = 0; i < sizeof(bad_cs) / sizeof(bad_cs[0]); i++) {
        uint8_t save[4];
        memcpy(save, c + 8, 4);
        for (int b = 0; b < 4; b++) c[8 + b] = (uint8_t)(bad_cs[i] >> (8 * b));
        assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_FORMAT);
        check_msg(&err, "chunk size");
        memcpy(c + 8, save, 4);
    }
    c[12] = 164;
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_FORMAT);
    check_msg(&err, "header length");
    c[12] = 64; /* version 1's length: no longer valid */
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_FORMAT);
    check_msg(&err, "header length");
    c[12] = 84;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_cr_header_len(c, 16, &hl, &err), EML_OK);
    assert_int_equal(hl, 84);
    /* A valid other chunk size: parses, then fails authentication. */
    c[9] ^= 0x30; /* 4096 -> 8192 */
    assert_int_equal(open_c(&k, c, len, &out, &n, &err), EML_ERR_AUTH);
    c[9] ^= 0x30;
    expect_open(&k, c, len, pt, 10);

    /* Writer arguments. */
    eml_cw *w = NULL;
    uint8_t hdr[EML_CONTAINER_HEADER_MAX];
    size_t hlen;
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_cw_new(EML_CONTAINER_SYMMETRIC, k.data_key, 5000,
                                NULL, &w, hdr, &hlen, &err),
                     EML_ERR_RANGE);
    check_fail(EML_ERR_RANGE, &err);
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_cw_new((eml_container_mode)3, k.data_key, CS, NULL,
                                &w, hdr, &hlen, &err),
                     EML_ERR_INVALID);
    assert_null(w);
    /* A small-order recipient key is refused by the writer. */
    uint8_t zero_pk[32] = {0};
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_cw_new(EML_CONTAINER_RECIPIENT, zero_pk, CS, NULL,
                                &w, hdr, &hlen, &err),
                     EML_ERR_INVALID);
    check_msg(&err, "small order");
    assert_null(w);
    eml_cw_free(NULL);
    eml_cr_free(NULL);
    free(c);
}

/* ==== container: role and dataset id (version 2) ==== */

static void test_container_roles(void **state)
{
    (void)state;
    keyset k;
    keyset_make(&k);
    uint8_t pt[CS + 10];
    fill_pattern(pt, sizeof(pt), 11);
    eml_err err;
    uint8_t *out = NULL;
    size_t n = 0;

    /* Names, both ways; values past the last role have none. */
    for (int r = 0; r < EML_CONTAINER_ROLES; r++) {
        eml_container_role back;
        const char *name = eml_container_role_name((eml_container_role)r);
        assert_non_null(name);
        assert_int_equal(eml_container_role_parse(name, &back), EML_OK);
        assert_int_equal(back, r);
    }
    assert_string_equal(eml_container_role_name(EML_CONTAINER_ROLE_TEST_LABELS),
                        "test-labels");
    assert_null(eml_container_role_name((eml_container_role)EML_CONTAINER_ROLES));
    eml_container_role dummy;
    assert_int_equal(eml_container_role_parse("t10k-images", &dummy),
                     EML_ERR_INVALID);

    /* dataset id = SHA-256("enclaveml dataset id v1" || name)[0..16). */
    uint8_t id[16], want[32], in[23 + 12];
    memcpy(in, "enclaveml dataset id v1", 23);
    memcpy(in + 23, "alice-fmnist", 12);
    assert_int_equal(eml_sha256(want, in, sizeof(in)), EML_OK);
    assert_int_equal(eml_container_dataset_id(id, "alice-fmnist", 12), EML_OK);
    assert_memory_equal(id, want, 16);

    /* Every role, both modes: round trip, and peek says what was written. */
    for (int m = 0; m < 2; m++) {
        for (int r = 0; r < EML_CONTAINER_ROLES; r++) {
            eml_container_meta meta;
            eml_container_info info;
            uint8_t *c = NULL;
            size_t len = 0;
            meta.role = (eml_container_role)r;
            memcpy(meta.dataset_id, id, 16);
            meta.dataset_id[15] ^= (uint8_t)r;
            memset(&err, 0, sizeof(err));
            assert_int_equal(eml_container_seal_buffer(
                                 modes[m], seal_key(&k, modes[m]), CS, &meta,
                                 pt, sizeof(pt), &c, &len, &err),
                             EML_OK);
            assert_int_equal(eml_container_peek(c, len, &info, &err), EML_OK);
            assert_int_equal(info.role, r);
            assert_memory_equal(info.dataset_id, meta.dataset_id, 16);
            expect_open(&k, c, len, pt, sizeof(pt));
            free(c);
        }
    }

    /* NULL meta: role none, dataset id all zero. */
    {
        uint8_t *c = NULL, zero[16] = {0};
        size_t len = 0;
        eml_container_info info;
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_container_seal_buffer(EML_CONTAINER_SYMMETRIC,
                                                   k.data_key, CS, NULL, pt,
                                                   10, &c, &len, &err),
                         EML_OK);
        assert_int_equal(eml_container_peek(c, len, &info, &err), EML_OK);
        assert_int_equal(info.role, EML_CONTAINER_ROLE_NONE);
        assert_memory_equal(info.dataset_id, zero, 16);
        free(c);
    }

    /* Every byte of role, reserved and dataset id, changed to every other
     * value that matters: a role value that parses fails authentication
     * (chunk 0 in mode 1, the wrapped key in mode 2); an unknown role or
     * non-zero reserved bytes fail the header parse. */
    for (int m = 0; m < 2; m++) {
        size_t len = 0;
        uint8_t *c = seal(&k, modes[m], CS, pt, sizeof(pt), &len);
        for (size_t off = 64; off < 84; off++) {
            for (int v = 0; v < 256; v++) {
                uint8_t save = c[off];
                if (v == save) continue;
                c[off] = (uint8_t)v;
                eml_status st = open_c(&k, c, len, &out, &n, &err);
                eml_status want_st = EML_ERR_AUTH;
                if ((off == 64 && v >= EML_CONTAINER_ROLES) || off == 65 ||
                    off == 66 || off == 67)
                    want_st = EML_ERR_FORMAT;
                if (st != want_st)
                    fail_msg("mode %d: byte %zu = %d gave %d (%s), expected "
                             "%d",
                             modes[m], off, v, st, err.msg, want_st);
                if (want_st == EML_ERR_FORMAT)
                    check_msg(&err, off <= 65 ? "role" : "reserved");
                c[off] = save;
            }
        }
        expect_open(&k, c, len, pt, sizeof(pt));
        free(c);
    }

    /* The writer refuses an unknown role. */
    {
        eml_cw *w = NULL;
        uint8_t hdr[EML_CONTAINER_HEADER_MAX];
        size_t hlen = 0;
        eml_container_meta bad = {(eml_container_role)EML_CONTAINER_ROLES,
                                  {0}};
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cw_new(EML_CONTAINER_SYMMETRIC, k.data_key, CS,
                                    &bad, &w, hdr, &hlen, &err),
                         EML_ERR_INVALID);
        check_msg(&err, "role");
        assert_null(w);
    }

    /* A version 1 header (as this module wrote it before) gets a clear
     * error, before its other fields are looked at. */
    {
        size_t len = 0;
        uint8_t *c = seal(&k, EML_CONTAINER_SYMMETRIC, CS, pt, 10, &len);
        size_t hl = 0;
        c[4] = 1;
        c[12] = 64;
        assert_int_equal(open_c(&k, c, len, &out, &n, &err),
                         EML_ERR_UNSUPPORTED);
        check_msg(&err, "container version 1 is no longer supported");
        check_msg(&err, "re-encrypt");
        memset(&err, 0, sizeof(err));
        assert_int_equal(eml_cr_header_len(c, 16, &hl, &err),
                         EML_ERR_UNSUPPORTED);
        check_msg(&err, "no longer supported");
        free(c);
    }
}

/* ==== key files ==== */

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_keyfiles(void **state)
{
    (void)state;
    char dir[] = "/tmp/eml-test-crypto-XXXXXX", name[128], kp[160], pp[160];
    char bad[160];
    assert_non_null(mkdtemp(dir));
    snprintf(name, sizeof(name), "%s/alice", dir);
    snprintf(kp, sizeof(kp), "%s.key", name);
    snprintf(pp, sizeof(pp), "%s.pub", name);
    snprintf(bad, sizeof(bad), "%s/bad", dir);
    eml_err err = {{0}};
    char *gk = NULL, *gp = NULL;
    assert_int_equal(eml_keyfile_generate(name, 0, &gk, &gp, &err), EML_OK);
    assert_string_equal(gk, kp);
    assert_string_equal(gp, pp);
    free(gk);
    free(gp);
    struct stat sb;
    assert_int_equal(stat(kp, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, EML_KEYFILE_BYTES);
    assert_int_equal(stat(pp, &sb), 0);
    assert_int_equal(sb.st_size, EML_PUBFILE_BYTES);

    /* Refused when it exists, replaced with force. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_keyfile_generate(name, 0, NULL, NULL, &err),
                     EML_ERR_INVALID);
    check_msg(&err, "already exists");
    eml_keyfile *k = NULL;
    uint8_t pk[32];
    assert_int_equal(eml_keyfile_load(kp, &k, &err), EML_OK);
    assert_int_equal(eml_pubfile_load(pp, pk, &err), EML_OK);
    assert_memory_equal(pk, k->x25519_pk, 32);
    uint8_t old_data[32];
    memcpy(old_data, k->data_key, 32);
    eml_keyfile_free(k);
    assert_int_equal(eml_keyfile_generate(name, 1, NULL, NULL, &err), EML_OK);
    assert_int_equal(eml_keyfile_load(kp, &k, &err), EML_OK);
    assert_memory_not_equal(old_data, k->data_key, 32);
    assert_int_equal(stat(kp, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* The loaded keys open what they sealed, in both modes. */
    uint8_t pt[50], *c = NULL, *out = NULL;
    size_t len = 0, n = 0;
    fill_pattern(pt, sizeof(pt), 10);
    assert_int_equal(eml_pubfile_load(pp, pk, &err), EML_OK);
    eml_container_keys keys = {k->data_key, k->x25519_sk};
    assert_int_equal(eml_container_seal_buffer(EML_CONTAINER_RECIPIENT, pk, 0,
                                               NULL, pt, sizeof(pt), &c, &len,
                                               &err),
                     EML_OK);
    assert_int_equal(eml_container_open_buffer(c, len, &keys, &out, &n, &err),
                     EML_OK);
    assert_int_equal(n, sizeof(pt));
    assert_memory_equal(out, pt, n);
    free(c);
    free(out);
    eml_keyfile_free(k);

    /* Strict loading. */
    uint8_t buf[EML_KEYFILE_BYTES + 1];
    memcpy(buf, EML_KEYFILE_MAGIC, 8);
    memset(buf + 8, 7, sizeof(buf) - 8);
    struct {
        size_t n;
        const char *magic, *msg;
    } kcases[] = {
        {EML_KEYFILE_BYTES - 1, EML_KEYFILE_MAGIC, "71 bytes"},
        {EML_KEYFILE_BYTES + 1, EML_KEYFILE_MAGIC, "73 bytes"},
        {0, EML_KEYFILE_MAGIC, "0 bytes"},
        {EML_KEYFILE_BYTES, "EMLKEY02", "bad magic"},
        {EML_PUBFILE_BYTES, EML_PUBFILE_MAGIC, "public key file"},
    };
    for (size_t i = 0; i < sizeof(kcases) / sizeof(kcases[0]); i++) {
        memcpy(buf, kcases[i].magic, 8);
        write_file(bad, buf, kcases[i].n);
        memset(&err, 0, sizeof(err));
        k = NULL;
        eml_status st = eml_keyfile_load(bad, &k, &err);
        check_fail(st, &err);
        check_msg(&err, kcases[i].msg);
        check_msg(&err, bad);
        assert_null(k);
    }
    memcpy(buf, EML_PUBFILE_MAGIC, 8);
    write_file(bad, buf, EML_PUBFILE_BYTES + 1);
    memset(&err, 0, sizeof(err));
    check_fail(eml_pubfile_load(bad, pk, &err), &err);
    check_msg(&err, "41 bytes");
    memset(&err, 0, sizeof(err));
    check_fail(eml_pubfile_load(kp, pk, &err), &err);
    check_msg(&err, "secret key file");
    memset(&err, 0, sizeof(err));
    assert_int_equal(eml_keyfile_load("/nonexistent/x.key", &k, &err),
                     EML_ERR_NOTFOUND);
    memset(&err, 0, sizeof(err));
    check_fail(eml_keyfile_load(dir, &k, &err), &err);

    unlink(bad);
    unlink(kp);
    unlink(pp);
    assert_int_equal(rmdir(dir), 0);
}


int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_secure_memory),
        cmocka_unit_test(test_sha256_kat),
        cmocka_unit_test(test_hmac_kat),
        cmocka_unit_test(test_hkdf_kat),
        cmocka_unit_test(test_gcm_kat),
        cmocka_unit_test(test_gcm_negative),
        cmocka_unit_test(test_x25519_kat),
        cmocka_unit_test(test_ed25519_kat),
        cmocka_unit_test(test_container_roundtrip),
        cmocka_unit_test(test_container_streaming),
        cmocka_unit_test(test_container_format),
        cmocka_unit_test(test_container_bitflips),
        cmocka_unit_test(test_container_truncations),
        cmocka_unit_test(test_container_splicing),
        cmocka_unit_test(test_container_wrong_key),
        cmocka_unit_test(test_container_bad_headers),
        cmocka_unit_test(test_container_roles),
        cmocka_unit_test(test_keyfiles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
