/*
 * node_link.h - how a decentralized node's host moves frames
 * (docs/decentral.md): ZeroMQ over TCP, one PULL socket bound at the
 * node's own address, one PUSH socket connected to each neighbour's.  The
 * host only moves bytes: what it carries is sealed by the enclaves (or,
 * with --enclave none, the baseline's frames in the clear).  Every wait
 * has a deadline.  Also the peers file: one "ID tcp:HOST:PORT" line per
 * node, '#' comments.  Host side.
 */
#ifndef EML_HOST_NODE_LINK_H
#define EML_HOST_NODE_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/status.h"

#define EML_PEER_ADDR_MAX 128

/* The peers file: addr[i] is node i's address; every id 0..n-1 exactly
 * once.  *addrs is malloc'd (n entries of EML_PEER_ADDR_MAX). */
EML_MUST_CHECK eml_status eml_peers_load(const char *path, uint32_t *n,
                                         char (**addrs)[EML_PEER_ADDR_MAX],
                                         eml_err *err);

typedef struct eml_node_link eml_node_link;

/* Binds the node's PULL socket at addr (tcp:HOST:PORT). */
EML_MUST_CHECK eml_status eml_node_link_open(const char *addr, uint32_t peers,
                                             eml_node_link **out,
                                             eml_err *err);
/* A PUSH socket to peer's address (ZeroMQ connects, and reconnects, in
 * the background). */
EML_MUST_CHECK eml_status eml_node_link_connect(eml_node_link *l,
                                                uint32_t peer,
                                                const char *addr,
                                                eml_err *err);
/* Waits until every peer connected to is reached (a TCP connection
 * stands), at most `seconds`: ZeroMQ connects lazily, so without this a
 * peer nobody listens for would only show as missed rounds. */
EML_MUST_CHECK eml_status eml_node_link_wait_connected(eml_node_link *l,
                                                       double seconds,
                                                       eml_err *err);
/* Queues a frame for peer; waits at most until deadline (wall seconds,
 * eml_wall_seconds) for room.  Bytes sent are counted. */
EML_MUST_CHECK eml_status eml_node_link_send(eml_node_link *l, uint32_t peer,
                                             const uint8_t *p, size_t n,
                                             double deadline, eml_err *err);
/* The next frame from any peer into *p (the link's buffer, valid until
 * the next call), or *n = 0 when the deadline passed first. */
EML_MUST_CHECK eml_status eml_node_link_recv(eml_node_link *l,
                                             double deadline,
                                             const uint8_t **p, size_t *n,
                                             eml_err *err);
uint64_t eml_node_link_bytes_sent(const eml_node_link *l);
void eml_node_link_close(eml_node_link *l);

#endif
