/*
 * flatjson.c - strict flat-object JSON parser (see flatjson.h).  Rejects
 * nesting, null, duplicate keys, control characters in strings, \u escapes
 * that would decode to NUL, trailing bytes, and anything over the size and
 * member limits.
 */
#include "enclaveml/flatjson.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const char *s;
    size_t n, pos;
    eml_err *err;
} parser;

static eml_status bad(parser *p, const char *what)
{
    return eml_err_set(p->err, EML_ERR_FORMAT, "JSON: %s at byte %zu", what,
                       p->pos);
}

static void ws(parser *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r' || p->s[p->pos] == '\t'))
        p->pos++;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static eml_status string(parser *p, char **out)
{
    *out = NULL;
    if (p->pos >= p->n || p->s[p->pos] != '"') return bad(p, "expected a string");
    p->pos++;
    char *buf = malloc(p->n - p->pos + 1);
    if (buf == NULL) return EML_ERR_NOMEM;
    size_t k = 0;
    while (p->pos < p->n) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c == '"') {
            buf[k] = '\0';
            *out = buf;
            return EML_OK;
        }
        if (c < 0x20) {
            free(buf);
            return bad(p, "control character in a string");
        }
        if (c != '\\') {
            buf[k++] = (char)c;
            continue;
        }
        if (p->pos >= p->n) break;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': buf[k++] = '"'; break;
        case '\\': buf[k++] = '\\'; break;
        case '/': buf[k++] = '/'; break;
        case 'b': buf[k++] = '\b'; break;
        case 'f': buf[k++] = '\f'; break;
        case 'n': buf[k++] = '\n'; break;
        case 'r': buf[k++] = '\r'; break;
        case 't': buf[k++] = '\t'; break;
        case 'u': {
            if (p->n - p->pos < 4) break;
            int v = 0;
            for (int i = 0; i < 4; i++) {
                int h = hexv(p->s[p->pos + (size_t)i]);
                if (h < 0) {
                    free(buf);
                    return bad(p, "bad \\u escape");
                }
                v = v << 4 | h;
            }
            p->pos += 4;
            if (v == 0 || v > 0x7f) {
                free(buf);
                return bad(p, "\\u escape outside printable ASCII");
            }
            buf[k++] = (char)v;
            break;
        }
        default:
            free(buf);
            return bad(p, "bad escape");
        }
    }
    free(buf);
    return bad(p, "unterminated string");
}

static eml_status number(parser *p, double *out)
{
    size_t start = p->pos;
    if (p->pos < p->n && p->s[p->pos] == '-') p->pos++;
    while (p->pos < p->n &&
           ((p->s[p->pos] >= '0' && p->s[p->pos] <= '9') || p->s[p->pos] == '.' ||
            p->s[p->pos] == 'e' || p->s[p->pos] == 'E' || p->s[p->pos] == '+' ||
            p->s[p->pos] == '-'))
        p->pos++;
    size_t len = p->pos - start;
    if (len == 0 || len > 64) return bad(p, "bad number");
    char tmp[65];
    memcpy(tmp, p->s + start, len);
    tmp[len] = '\0';
    if (!((tmp[0] >= '0' && tmp[0] <= '9') ||
          (tmp[0] == '-' && tmp[1] >= '0' && tmp[1] <= '9')))
        return bad(p, "bad number");
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (*end != '\0' || errno != 0 || !isfinite(v)) return bad(p, "bad number");
    *out = v;
    return EML_OK;
}

eml_status eml_flatjson_parse(const char *text, size_t len, eml_flatjson *out,
                              eml_err *err)
{
    memset(out, 0, sizeof(*out));
    if (len > EML_FLATJSON_MAX_TEXT)
        return eml_err_set(err, EML_ERR_RANGE, "JSON text is too large");
    parser p = {text, len, 0, err};
    eml_status st = EML_OK;
    ws(&p);
    if (p.pos >= p.n || p.s[p.pos] != '{') return bad(&p, "expected '{'");
    p.pos++;
    ws(&p);
    if (p.pos < p.n && p.s[p.pos] == '}') {
        p.pos++;
        goto tail;
    }
    for (;;) {
        ws(&p);
        if (out->n == EML_FLATJSON_MAX_MEMBERS) {
            st = bad(&p, "too many members");
            goto fail;
        }
        eml_flatjson_member *m = &out->m[out->n];
        st = string(&p, &m->key);
        if (st != EML_OK) goto fail;
        out->n++;
        for (size_t i = 0; i + 1 < out->n; i++)
            if (strcmp(out->m[i].key, m->key) == 0) {
                st = bad(&p, "duplicate key");
                goto fail;
            }
        ws(&p);
        if (p.pos >= p.n || p.s[p.pos] != ':') {
            st = bad(&p, "expected ':'");
            goto fail;
        }
        p.pos++;
        ws(&p);
        if (p.pos >= p.n) {
            st = bad(&p, "unexpected end");
            goto fail;
        }
        char c = p.s[p.pos];
        if (c == '"') {
            m->kind = EML_JSON_STRING;
            st = string(&p, &m->str);
        } else if (p.n - p.pos >= 4 && memcmp(p.s + p.pos, "true", 4) == 0) {
            m->kind = EML_JSON_BOOL;
            m->boolean = 1;
            p.pos += 4;
        } else if (p.n - p.pos >= 5 && memcmp(p.s + p.pos, "false", 5) == 0) {
            m->kind = EML_JSON_BOOL;
            p.pos += 5;
        } else {
            m->kind = EML_JSON_NUMBER;
            st = number(&p, &m->num);
        }
        if (st != EML_OK) goto fail;
        ws(&p);
        if (p.pos < p.n && p.s[p.pos] == ',') {
            p.pos++;
            continue;
        }
        if (p.pos < p.n && p.s[p.pos] == '}') {
            p.pos++;
            break;
        }
        st = bad(&p, "expected ',' or '}'");
        goto fail;
    }
tail:
    ws(&p);
    if (p.pos != p.n) {
        st = bad(&p, "trailing bytes");
        goto fail;
    }
    return EML_OK;
fail:
    eml_flatjson_free(out);
    return st;
}

void eml_flatjson_free(eml_flatjson *j)
{
    for (size_t i = 0; i < j->n; i++) {
        free(j->m[i].key);
        free(j->m[i].str);
    }
    memset(j, 0, sizeof(*j));
}

static const eml_flatjson_member *find(const eml_flatjson *j, const char *k)
{
    for (size_t i = 0; i < j->n; i++)
        if (strcmp(j->m[i].key, k) == 0) return &j->m[i];
    return NULL;
}

const char *eml_flatjson_str(const eml_flatjson *j, const char *key)
{
    const eml_flatjson_member *m = find(j, key);
    return m != NULL && m->kind == EML_JSON_STRING ? m->str : NULL;
}

int eml_flatjson_num(const eml_flatjson *j, const char *key, double *out)
{
    const eml_flatjson_member *m = find(j, key);
    if (m == NULL || m->kind != EML_JSON_NUMBER) return -1;
    *out = m->num;
    return 0;
}

int eml_flatjson_bool(const eml_flatjson *j, const char *key, int *out)
{
    const eml_flatjson_member *m = find(j, key);
    if (m == NULL || m->kind != EML_JSON_BOOL) return -1;
    *out = m->boolean;
    return 0;
}
