/*
 * redis_link.c - the host's Redis client for the serving queue
 * (redis_link.h): hiredis underneath, binary-safe arguments, and stream
 * entries carried to the enclave as they are.  Host side: it sees only
 * ciphertext bodies, ids, names and reports.
 */
#include "host/redis_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

struct eml_redis {
    redisContext *c;
    char url[256];
};

eml_status eml_redis_url_parse(const char *url, char *host, size_t cap,
                               int *port, eml_err *err)
{
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return eml_err_set(err, EML_ERR_INVALID,
                           "--queue takes redis://HOST:PORT, not '%.64s'",
                           url);
    const char *h = url + sizeof(scheme) - 1, *colon = strrchr(h, ':');
    size_t hl = colon != NULL ? (size_t)(colon - h) : strlen(h);
    *port = 6379;
    if (colon != NULL) {
        char *end = NULL;
        long p = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || p < 1 || p > 65535)
            return eml_err_set(err, EML_ERR_INVALID,
                               "'%.64s': the port is 1 to 65535", url);
        *port = (int)p;
    }
    if (hl == 0 || hl >= cap || memchr(h, '/', hl) != NULL ||
        memchr(h, '@', hl) != NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "'%.64s' is not redis://HOST:PORT", url);
    memcpy(host, h, hl);
    host[hl] = '\0';
    return EML_OK;
}

eml_status eml_redis_open(const char *url, int timeout_ms, eml_redis **out,
                          eml_err *err)
{
    *out = NULL;
    char host[256];
    int port;
    eml_status st = eml_redis_url_parse(url, host, sizeof(host), &port, err);
    if (st != EML_OK) return st;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (c == NULL || c->err) {
        st = eml_err_set(err, EML_ERR_IO, "cannot reach Redis at %s: %s",
                         url, c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return st;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return eml_err_set(err, EML_ERR_IO, "Redis: cannot set a timeout");
    }
    eml_redis *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        redisFree(c);
        return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    }
    r->c = c;
    snprintf(r->url, sizeof(r->url), "%s", url);
    *out = r;
    return EML_OK;
}

void eml_redis_close(eml_redis *r)
{
    if (r == NULL) return;
    redisFree(r->c);
    free(r);
}

void eml_redis_free(struct redisReply *reply)
{
    if (reply != NULL) freeReplyObject(reply);
}

eml_status eml_redis_cmd(eml_redis *r, int argc, const char **argv,
                         const size_t *len, struct redisReply **reply,
                         eml_err *err)
{
    *reply = NULL;
    redisReply *x = redisCommandArgv(r->c, argc, argv, len);
    if (x == NULL)
        return eml_err_set(err, EML_ERR_IO, "Redis at %s: %s (%s)", r->url,
                           r->c->errstr, argv[0]);
    if (x->type == REDIS_REPLY_ERROR) {
        eml_status st = eml_err_set(err, EML_ERR_IO, "Redis %s: %.200s",
                                    argv[0], x->str);
        freeReplyObject(x);
        return st;
    }
    *reply = x;
    return EML_OK;
}

eml_status eml_redis_group_create(eml_redis *r, const char *stream,
                                  eml_err *err)
{
    const char *argv[] = {"XGROUP", "CREATE", stream, EML_QUEUE_GROUP, "$",
                          "MKSTREAM"};
    redisReply *x = redisCommandArgv(r->c, 6, argv, NULL);
    if (x == NULL)
        return eml_err_set(err, EML_ERR_IO, "Redis at %s: %s", r->url,
                           r->c->errstr);
    eml_status st = EML_OK;
    if (x->type == REDIS_REPLY_ERROR && strncmp(x->str, "BUSYGROUP", 9) != 0)
        st = eml_err_set(err, EML_ERR_IO, "Redis XGROUP CREATE: %.200s",
                         x->str);
    freeReplyObject(x);
    return st;
}

eml_status eml_redis_xadd(eml_redis *r, const char *stream, uint64_t maxlen,
                          const uint8_t *p, size_t n, eml_err *err)
{
    eml_queue_field f[EML_QUEUE_FIELDS_MAX];
    size_t nf = 0;
    if (eml_queue_fields_parse(p, n, f, EML_QUEUE_FIELDS_MAX, &nf) !=
            EML_OK ||
        nf == 0)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the enclave sent a malformed entry");
    const char *argv[6 + 2 * EML_QUEUE_FIELDS_MAX];
    size_t len[6 + 2 * EML_QUEUE_FIELDS_MAX];
    char ml[32];
    int argc = 0;
    argv[argc] = "XADD";
    len[argc++] = 4;
    argv[argc] = stream;
    len[argc++] = strlen(stream);
    if (maxlen > 0) {
        snprintf(ml, sizeof(ml), "%llu", (unsigned long long)maxlen);
        argv[argc] = "MAXLEN";
        len[argc++] = 6;
        argv[argc] = "~";
        len[argc++] = 1;
        argv[argc] = ml;
        len[argc++] = strlen(ml);
    }
    argv[argc] = "*";
    len[argc++] = 1;
    for (size_t i = 0; i < nf; i++) {
        argv[argc] = (const char *)f[i].name;
        len[argc++] = f[i].name_n;
        argv[argc] = (const char *)f[i].p;
        len[argc++] = f[i].n;
    }
    redisReply *x = NULL;
    eml_status st = eml_redis_cmd(r, argc, argv, len, &x, err);
    eml_redis_free(x);
    return st;
}

/* ==== entries ==== */

const struct redisReply *eml_redis_stream_entries(
    const struct redisReply *reply)
{
    /* [[stream, [entries...]]] */
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements < 1)
        return NULL;
    const redisReply *s = reply->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
        s->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    return s->element[1];
}

/* The fields of one entry as a record; none if they cannot be carried. */
static eml_status put_entry(const redisReply *fields, eml_serve_kind kind,
                            uint32_t conn, eml_http_buf *ev,
                            eml_redis_entry *e, eml_err *err)
{
    eml_queue_field f[EML_QUEUE_FIELDS_MAX];
    size_t n = 0;
    int ok = fields != NULL && fields->type == REDIS_REPLY_ARRAY &&
             fields->elements % 2 == 0 &&
             fields->elements / 2 <= EML_QUEUE_FIELDS_MAX;
    for (size_t i = 0; ok && i < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        ok = k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
             k->len >= 1 && k->len <= 255 && v->len <= EML_QUEUE_VALUE_MAX;
        if (!ok) break;
        f[n].name = (const uint8_t *)k->str;
        f[n].name_n = k->len;
        f[n].p = (const uint8_t *)v->str;
        f[n].n = v->len;
        if (k->len == 2 && memcmp(k->str, "fe", 2) == 0 &&
            v->len == EML_QUEUE_ID_HEX) {
            memcpy(e->fe, v->str, EML_QUEUE_ID_HEX);
            e->fe[EML_QUEUE_ID_HEX] = '\0';
        }
        n++;
    }
    if (!ok) n = 0;
    return eml_queue_fields_put(ev, conn, kind, f, n, err);
}

eml_status eml_redis_entries(const struct redisReply *list,
                             eml_serve_kind kind, eml_http_buf *ev,
                             eml_redis_entry **ents, size_t *n, size_t *cap,
                             eml_err *err)
{
    if (list == NULL || list->type != REDIS_REPLY_ARRAY)
        return eml_err_set(err, EML_ERR_FORMAT, "Redis: not a list of "
                                                "entries");
    for (size_t i = 0; i < list->elements; i++) {
        const redisReply *x = list->element[i];
        if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
            x->element[0]->type != REDIS_REPLY_STRING ||
            x->element[0]->len >= sizeof((*ents)->id))
            return eml_err_set(err, EML_ERR_FORMAT, "Redis: not an entry");
        if (*n == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            eml_redis_entry *g = realloc(*ents, c * sizeof(**ents));
            if (g == NULL)
                return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
            *ents = g;
            *cap = c;
        }
        eml_redis_entry *e = &(*ents)[*n];
        memset(e, 0, sizeof(*e));
        memcpy(e->id, x->element[0]->str, x->element[0]->len);
        eml_status st = put_entry(x->element[1], kind, (uint32_t)*n, ev, e,
                                  err);
        if (st != EML_OK) return st;
        (*n)++;
    }
    return EML_OK;
}
