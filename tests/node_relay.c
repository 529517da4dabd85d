/*
 * node_relay.c - a test program for decentralized runs (never shipped):
 *
 *   node_relay relay LISTEN TO DUMP SECONDS
 *       binds a ZeroMQ PULL socket at LISTEN (tcp:HOST:PORT), pushes every
 *       frame on to TO, and appends each (u32 length, bytes) to DUMP: the
 *       wire as an onlooker on the loopback sees it.  Stops after SECONDS.
 *   node_relay compare PLAIN.dump SEALED.dump
 *       prints how many 16-byte windows of the plaintext frames' payloads
 *       (one every 64 bytes, past each 48-byte header) occur anywhere in
 *       the other dump: the canary check of a run in enclaves against the
 *       same run in the clear.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

static int endpoint(const char *addr, char *out, size_t cap)
{
    if (strncmp(addr, "tcp:", 4) != 0) return -1;
    return snprintf(out, cap, "tcp://%s", addr + 4) < (int)cap ? 0 : -1;
}

static int relay(const char *listen, const char *to, const char *dump,
                 int seconds)
{
    char a[256], b[256];
    if (endpoint(listen, a, sizeof(a)) || endpoint(to, b, sizeof(b))) return 2;
    void *ctx = zmq_ctx_new(), *in = zmq_socket(ctx, ZMQ_PULL),
         *out = zmq_socket(ctx, ZMQ_PUSH);
    FILE *f = fopen(dump, "ab");
    int linger = 2000;
    zmq_setsockopt(out, ZMQ_LINGER, &linger, sizeof(linger));
    if (f == NULL || zmq_bind(in, a) != 0 || zmq_connect(out, b) != 0) {
        fprintf(stderr, "node_relay: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        zmq_pollitem_t it = {in, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, in, 0) < 0) break;
        uint32_t n = (uint32_t)zmq_msg_size(&m);
        fwrite(&n, 4, 1, f);
        fwrite(zmq_msg_data(&m), 1, n, f);
        fflush(f);
        zmq_send(out, zmq_msg_data(&m), n, 0);
        zmq_msg_close(&m);
    }
    fclose(f);
    zmq_close(in);
    zmq_close(out);
    zmq_ctx_term(ctx);
    return 0;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
    *n = p != NULL && fread(p, 1, (size_t)len, f) == (size_t)len ? (size_t)len
                                                                  : 0;
    fclose(f);
    return p;
}

/* A 16-byte window's table slot. */
static uint64_t h16(const uint8_t *p)
{
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    return (a * 0x9e3779b97f4a7c15ULL) ^ (b + 0x632be59bd9b4e019ULL) * 31;
}

static int compare(const char *plain, const char *sealed)
{
    size_t np, ns;
    uint8_t *p = slurp(plain, &np), *s = slurp(sealed, &ns);
    if (p == NULL || s == NULL) return 2;
    enum { BITS = 22 };
    const uint8_t **tab = calloc((size_t)1 << BITS, sizeof(*tab));
    size_t windows = 0;
    for (size_t off = 0; off + 4 <= np;) { /* each frame's payload */
        uint32_t n;
        memcpy(&n, p + off, 4);
        const uint8_t *f = p + off + 4;
        for (size_t w = 48; w + 16 <= n && off + 4 + w + 16 <= np; w += 64) {
            size_t slot = h16(f + w) >> (64 - BITS);
            while (tab[slot] != NULL) slot = (slot + 1) & (((size_t)1 << BITS) - 1);
            if (windows + 1 >= ((size_t)1 << BITS) / 2) break;
            tab[slot] = f + w;
            windows++;
        }
        off += 4 + (size_t)n;
    }
    size_t found = 0;
    for (size_t i = 0; i + 16 <= ns; i++) {
        size_t slot = h16(s + i) >> (64 - BITS);
        while (tab[slot] != NULL) {
            if (memcmp(tab[slot], s + i, 16) == 0) {
                found++;
                break;
            }
            slot = (slot + 1) & (((size_t)1 << BITS) - 1);
        }
    }
    printf("%zu windows of %zu found\n", found, windows);
    free(tab);
    free(p);
    free(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "relay") == 0)
        return relay(argv[2], argv[3], argv[4], atoi(argv[5]));
    if (argc == 4 && strcmp(argv[1], "compare") == 0)
        return compare(argv[2], argv[3]);
    fprintf(stderr, "usage: node_relay relay LISTEN TO DUMP SECONDS | "
                    "compare PLAIN.dump SEALED.dump\n");
    return 2;
}
