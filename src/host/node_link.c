/*
 * node_link.c - ZeroMQ transport between decentralized nodes
 * (node_link.h), and the peers file.  Host side: bytes only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "core/clock.h"
#include "core/le.h"
#include "core/lines.h"
#include "enclaveml/edl.h"
#include "host/fileio.h"
#include "host/node_link.h"

struct eml_node_link {
    void *ctx, *pull;
    void **push; /* per peer id, NULL if not a neighbour */
    void **mon;  /* per peer id: its PUSH socket's connection events, until
                    eml_node_link_wait_connected */
    char (*addr)[EML_PEER_ADDR_MAX]; /* per peer id, for messages */
    uint32_t peers;
    uint64_t sent;
    zmq_msg_t msg;
    int have_msg;
};

/* "tcp:HOST:PORT" -> "tcp://HOST:PORT"; 0 or -1. */
static int endpoint(const char *addr, char *out, size_t cap)
{
    if (strncmp(addr, "tcp:", 4) != 0 || strchr(addr + 4, ':') == NULL)
        return -1;
    int n = snprintf(out, cap, "tcp://%s", addr + 4);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

eml_status eml_peers_load(const char *path, uint32_t *n_out,
                          char (**addrs_out)[EML_PEER_ADDR_MAX], eml_err *err)
{
    *n_out = 0;
    *addrs_out = NULL;
    uint8_t *text = NULL;
    size_t len = 0;
    eml_status st = eml_file_read(path, &text, &len, err);
    if (st != EML_OK) return st;
    char(*addrs)[EML_PEER_ADDR_MAX] = calloc(4096, EML_PEER_ADDR_MAX);
    uint8_t *seen = calloc(4096, 1);
    uint32_t n = 0, max_id = 0;
    if (addrs == NULL || seen == NULL) st = EML_ERR_NOMEM;
    size_t pos = 0;
    char buf[256];
    for (int line = 1; st == EML_OK && eml_next_line((const char *)text, len,
                                                     &pos, buf, sizeof(buf));
         line++) {
        unsigned id;
        char addr[EML_PEER_ADDR_MAX + 1], tail[2], ep[160];
        int got = sscanf(buf, "%u %128s %1s", &id, addr, tail);
        if (got <= 0) continue; /* blank */
        if (got != 2 || id >= 4096 || endpoint(addr, ep, sizeof(ep)) != 0 ||
            strlen(addr) >= EML_PEER_ADDR_MAX) {
            st = eml_err_set(err, EML_ERR_FORMAT,
                             "%s:%d: expected \"ID tcp:HOST:PORT\"", path,
                             line);
            break;
        }
        if (seen[id]) {
            st = eml_err_set(err, EML_ERR_FORMAT, "%s:%d: node %u again",
                             path, line, id);
            break;
        }
        seen[id] = 1;
        memcpy(addrs[id], addr, strlen(addr) + 1); /* checked above */
        n++;
        if (id > max_id) max_id = id;
    }
    if (st == EML_OK && (n == 0 || max_id + 1 != n))
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: the ids must be 0..N-1, each once (%u nodes, "
                         "highest id %u)",
                         path, n, max_id);
    free(text);
    free(seen);
    if (st != EML_OK) {
        free(addrs);
        return st == EML_ERR_NOMEM ? eml_err_set(err, st, "out of memory")
                                   : st;
    }
    *n_out = n;
    *addrs_out = addrs;
    return EML_OK;
}

eml_status eml_node_link_open(const char *addr, uint32_t peers,
                              eml_node_link **out, eml_err *err)
{
    *out = NULL;
    char ep[160];
    if (endpoint(addr, ep, sizeof(ep)) != 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "node address '%s': expected tcp:HOST:PORT", addr);
    eml_node_link *l = calloc(1, sizeof(*l));
    if (l == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    l->peers = peers;
    l->push = calloc(peers ? peers : 1, sizeof(void *));
    l->mon = calloc(peers ? peers : 1, sizeof(void *));
    l->addr = calloc(peers ? peers : 1, sizeof(*l->addr));
    l->ctx = zmq_ctx_new();
    if (l->push == NULL || l->mon == NULL || l->addr == NULL ||
        l->ctx == NULL) {
        eml_node_link_close(l);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    l->pull = zmq_socket(l->ctx, ZMQ_PULL);
    int hwm = 1000;
    /* Frames come from the network: one larger than the enclave takes is
     * dropped by ZeroMQ (with its sender's connection), never buffered. */
    int64_t max = EML_NODE_FRAME_MAX;
    if (l->pull == NULL ||
        zmq_setsockopt(l->pull, ZMQ_RCVHWM, &hwm, sizeof(hwm)) != 0 ||
        zmq_setsockopt(l->pull, ZMQ_MAXMSGSIZE, &max, sizeof(max)) != 0 ||
        zmq_bind(l->pull, ep) != 0) {
        eml_status st = eml_err_set(err, EML_ERR_IO,
                                    "node: cannot listen on %s: %s", addr,
                                    zmq_strerror(zmq_errno()));
        eml_node_link_close(l);
        return st;
    }
    *out = l;
    return EML_OK;
}

eml_status eml_node_link_connect(eml_node_link *l, uint32_t peer,
                                 const char *addr, eml_err *err)
{
    char ep[160];
    if (peer >= l->peers || endpoint(addr, ep, sizeof(ep)) != 0)
        return eml_err_set(err, EML_ERR_INVALID, "peer %u at '%s'", peer,
                           addr);
    void *s = zmq_socket(l->ctx, ZMQ_PUSH);
    int linger = 2000, hwm = 1000;
    char mon[64];
    snprintf(mon, sizeof(mon), "inproc://eml-link-%u", peer);
    /* The monitor goes first, so that no connection event is missed. */
    void *m = NULL;
    if (s != NULL && zmq_socket_monitor(s, mon, ZMQ_EVENT_CONNECTED) == 0 &&
        (m = zmq_socket(l->ctx, ZMQ_PAIR)) != NULL && zmq_connect(m, mon) != 0) {
        zmq_close(m);
        m = NULL;
    }
    if (s == NULL || m == NULL ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger)) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm)) ||
        zmq_connect(s, ep) != 0) {
        eml_status st = eml_err_set(err, EML_ERR_IO,
                                    "node: cannot connect to %s: %s", addr,
                                    zmq_strerror(zmq_errno()));
        if (m != NULL) zmq_close(m);
        if (s != NULL) zmq_close(s);
        return st;
    }
    l->push[peer] = s;
    l->mon[peer] = m;
    snprintf(l->addr[peer], sizeof(l->addr[peer]), "%s", addr);
    return EML_OK;
}

/* Reads one event off a monitor: 1 if it says connected, 0 if another, -1
 * if none was there. */
static int monitor_event(void *m)
{
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, m, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return -1;
    }
    int connected = zmq_msg_size(&a) >= 2 &&
                    (eml_get_le16(zmq_msg_data(&a)) & ZMQ_EVENT_CONNECTED) != 0;
    int more = zmq_msg_more(&a);
    zmq_msg_close(&a);
    while (more) { /* the event's second part: the endpoint */
        zmq_msg_init(&b);
        if (zmq_msg_recv(&b, m, ZMQ_DONTWAIT) < 0) more = 0;
        else more = zmq_msg_more(&b);
        zmq_msg_close(&b);
    }
    return connected;
}

static void monitor_stop(eml_node_link *l, uint32_t peer)
{
    if (l->mon == NULL || l->mon[peer] == NULL) return;
    (void)zmq_socket_monitor(l->push[peer], NULL, 0);
    zmq_close(l->mon[peer]);
    l->mon[peer] = NULL;
}

eml_status eml_node_link_wait_connected(eml_node_link *l, double seconds,
                                        eml_err *err)
{
    double deadline = eml_wall_seconds() + seconds;
    for (;;) {
        zmq_pollitem_t it[64];
        uint32_t who[64], n = 0;
        for (uint32_t p = 0; p < l->peers && n < 64; p++)
            if (l->mon[p] != NULL) {
                it[n] = (zmq_pollitem_t){l->mon[p], 0, ZMQ_POLLIN, 0};
                who[n++] = p;
            }
        if (n == 0) return EML_OK;
        double left = deadline - eml_wall_seconds();
        int rc = zmq_poll(it, (int)n, left <= 0 ? 0 : (long)(left * 1000) + 1);
        if (rc < 0 && zmq_errno() != EINTR)
            return eml_err_set(err, EML_ERR_IO, "node: %s",
                               zmq_strerror(zmq_errno()));
        for (uint32_t i = 0; i < n; i++) {
            int ev = 0;
            while ((it[i].revents & ZMQ_POLLIN) &&
                   (ev = monitor_event(l->mon[who[i]])) == 0) {
            }
            if (ev == 1) monitor_stop(l, who[i]);
        }
        if (rc == 0 && eml_wall_seconds() >= deadline) {
            char who_[400] = "";
            size_t at = 0;
            uint32_t missing = 0;
            for (uint32_t p = 0; p < l->peers; p++)
                if (l->mon[p] != NULL && missing++ < 4 && at < sizeof(who_))
                    at += (size_t)snprintf(who_ + at, sizeof(who_) - at,
                                           "%snode %u at %s",
                                           at ? ", " : "", p, l->addr[p]);
            return eml_err_set(err, EML_ERR_IO,
                               "%s%s accepted no connection within %g s (%s)",
                               who_, missing > 4 ? " and more" : "", seconds,
                               missing > 1 ? "are they running, and are their "
                                             "addresses right?"
                                           : "is it running, and is its "
                                             "address right?");
        }
    }
}

static int ms_left(double deadline)
{
    double left = deadline - eml_wall_seconds();
    return left <= 0 ? 0 : left > 3600 ? 3600000 : (int)(left * 1000) + 1;
}

eml_status eml_node_link_send(eml_node_link *l, uint32_t peer,
                              const uint8_t *p, size_t n, double deadline,
                              eml_err *err)
{
    if (peer >= l->peers || l->push[peer] == NULL)
        return eml_err_set(err, EML_ERR_INVALID, "no link to node %u", peer);
    int ms = ms_left(deadline);
    if (zmq_setsockopt(l->push[peer], ZMQ_SNDTIMEO, &ms, sizeof(ms)) != 0 ||
        zmq_send(l->push[peer], p, n, 0) != (int)n)
        return eml_err_set(err, EML_ERR_IO, "sending to node %u: %s", peer,
                           zmq_strerror(zmq_errno()));
    l->sent += n;
    return EML_OK;
}

eml_status eml_node_link_recv(eml_node_link *l, double deadline,
                              const uint8_t **p, size_t *n, eml_err *err)
{
    *p = NULL;
    *n = 0;
    if (l->have_msg) {
        zmq_msg_close(&l->msg);
        l->have_msg = 0;
    }
    zmq_pollitem_t it = {l->pull, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(&it, 1, ms_left(deadline));
    if (rc < 0)
        return eml_err_set(err, EML_ERR_IO, "waiting for frames: %s",
                           zmq_strerror(zmq_errno()));
    if (rc == 0) return EML_OK; /* the deadline */
    zmq_msg_init(&l->msg);
    if (zmq_msg_recv(&l->msg, l->pull, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&l->msg);
        return eml_err_set(err, EML_ERR_IO, "receiving a frame: %s",
                           zmq_strerror(zmq_errno()));
    }
    l->have_msg = 1;
    *p = zmq_msg_data(&l->msg);
    *n = zmq_msg_size(&l->msg);
    return EML_OK;
}

uint64_t eml_node_link_bytes_sent(const eml_node_link *l)
{
    return l->sent;
}

void eml_node_link_close(eml_node_link *l)
{
    if (l == NULL) return;
    if (l->have_msg) zmq_msg_close(&l->msg);
    for (uint32_t i = 0; l->push != NULL && i < l->peers; i++)
        if (l->push[i] != NULL) {
            monitor_stop(l, i);
            zmq_close(l->push[i]);
        }
    free(l->mon);
    free(l->addr);
    if (l->pull != NULL) zmq_close(l->pull);
    if (l->ctx != NULL) zmq_ctx_term(l->ctx);
    free(l->push);
    free(l);
}
