/*
 * redis_link.h - the host's Redis client for the serving queue
 * (redis_link.c, over hiredis; docs/serve.md, "Scale-out through Redis
 * Streams"): a connection from a redis://HOST:PORT address, commands
 * with binary-safe arguments, and stream entries turned into the records
 * the enclave reads (serve.h) without judging them: whatever Redis holds
 * is the enclave's to check.  Host side.
 *
 *     eml_redis *r;
 *     eml_redis_open("redis://127.0.0.1:6379", 5000, &r, &err);
 *     eml_redis_group_create(r, "enclaveml", &err);
 *     ...
 *     eml_redis_close(r);
 *
 * One connection is one thread's: hiredis contexts are not shared.
 */
#ifndef EML_HOST_REDIS_LINK_H
#define EML_HOST_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/serve.h"

struct redisReply;
typedef struct eml_redis eml_redis;

/* Connects (timeout_ms for the connection and for every reply: above any
 * BLOCK a command asks for). */
EML_MUST_CHECK eml_status eml_redis_open(const char *url, int timeout_ms,
                                         eml_redis **out, eml_err *err);
void eml_redis_close(eml_redis *r); /* NULL is a no-op */

/* One command of argc arguments (lengths len; NULL: C strings).  An
 * error reply is EML_ERR_IO with its text; *reply is the caller's to
 * free with eml_redis_free (NULL is a no-op). */
EML_MUST_CHECK eml_status eml_redis_cmd(eml_redis *r, int argc,
                                        const char **argv, const size_t *len,
                                        struct redisReply **reply,
                                        eml_err *err);
void eml_redis_free(struct redisReply *reply);

/* XGROUP CREATE stream workers $ MKSTREAM (a group that exists is fine). */
EML_MUST_CHECK eml_status eml_redis_group_create(eml_redis *r,
                                                 const char *stream,
                                                 eml_err *err);

/* XADD stream [MAXLEN ~ maxlen] * with the fields of a record's bytes
 * (serve.h's field list); maxlen 0: no trimming. */
EML_MUST_CHECK eml_status eml_redis_xadd(eml_redis *r, const char *stream,
                                         uint64_t maxlen, const uint8_t *p,
                                         size_t n, eml_err *err);

/* An entry as the host keeps it: its Redis id, and the 32-hex "fe" field
 * if it has one (empty otherwise). */
typedef struct eml_redis_entry {
    char id[48];
    char fe[EML_QUEUE_ID_HEX + 1];
} eml_redis_entry;

/* The entries of `list` (an array of [id, [field, value, ...]], as XREAD,
 * XREADGROUP and XAUTOCLAIM give them) appended to ev as records of kind
 * (conn: their index in *ents), and to *ents (*n of them, room for *cap,
 * grown).  An entry with no fields (deleted), too many, or fields that
 * cannot be carried becomes a record with no fields, which the enclave
 * refuses.  EML_ERR_FORMAT when list is not such an array; EML_ERR_RANGE
 * when ev is full (the entries that fit were added). */
EML_MUST_CHECK eml_status eml_redis_entries(const struct redisReply *list,
                                            eml_serve_kind kind,
                                            eml_http_buf *ev,
                                            eml_redis_entry **ents,
                                            size_t *n, size_t *cap,
                                            eml_err *err);

/* The stream entries of an XREAD or XREADGROUP reply (NULL: none). */
const struct redisReply *eml_redis_stream_entries(
    const struct redisReply *reply);

/* "redis://HOST:PORT" checked (the port 1..65535; 6379 if left out). */
EML_MUST_CHECK eml_status eml_redis_url_parse(const char *url, char *host,
                                              size_t cap, int *port,
                                              eml_err *err);
#endif
