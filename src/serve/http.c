/*
 * http.c - the HTTP/1.1 request parser and the routes of the inference
 * server (include/enclaveml/http.h; the response writer is http_write.c).
 *
 * Trusted code: the bytes are plaintext from the network, straight out of
 * the TLS session that ends in the enclave, and every one is hostile.
 * Memory only: no I/O, no printing, no exit, no globals.  The parser holds
 * at most max_header + max_body bytes and does O(1) work per byte: the
 * header block is examined one byte at a time as it arrives (so a limit
 * is caught the moment it is passed, and a request split anywhere gives
 * the same outcome as one fed whole), each line is checked once when its
 * CRLF arrives, and the body is only counted.  Strings of a request are
 * NUL-terminated in place, over the space or CR that ended them.
 *
 * The rules are RFC 9112's, narrowed: lines end with CRLF (a bare LF or
 * CR is refused), one space between the parts of the request line, the
 * target in origin form, no obsolete line folding, no whitespace before a
 * header's colon, one Content-Length and one Host, no Transfer-Encoding.
 * docs/serve.md, "HTTP", lists every rule with the status it earns.
 *
 * Ownership: the parser owns its buffer and wipes it (it holds clients'
 * inputs) as requests are dropped and when it is freed.
 */
#include "enclaveml/http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "serve/http_internal.h"

#define NONE SIZE_MAX
#define METHOD_MAX 7 /* the longest method known: OPTIONS, CONNECT */

enum { P_HEAD, P_BODY, P_DONE, P_ERROR };

/* What the header block said, as offsets from the request's start. */
typedef struct cur {
    size_t scan;       /* the next header byte to examine */
    size_t line_start; /* where the current line began */
    unsigned line_no;  /* lines ended so far, leading empty ones too */
    int prev_cr;       /* the last byte examined was CR */
    int seen_rl;       /* the request line is in */
    int rl_part;       /* 0 method, 1 target, 2 version */
    size_t rl_count;   /* bytes of that part so far */
    eml_http_method method;
    int minor;
    size_t method_at, target_at, target_len, host_at, ctype_at, dtype_at;
    int has_cl;
    uint64_t cl;
    int te, conn_close, conn_keep, expect_cont, expect_other;
    size_t body_start;
    size_t body_len;
    int cont_taken;
} cur;

struct eml_http_parser {
    eml_http_limits lim;
    size_t max;   /* max_header + max_body: the most ever held */
    uint8_t *buf; /* cap bytes, len of them held */
    size_t cap, len;
    size_t start; /* where the current request begins */
    int phase;
    eml_status st; /* the sticky error */
    int code;
    eml_err err;
    cur c;
    eml_http_request req;
};

static const char *const method_names[EML_HTTP_METHOD_COUNT] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    "PATCH",
};

/* ==== bytes ==== */

/* RFC 3986 path and query bytes: unreserved, sub-delims, ":@/?", '%'. */
static int is_target_char(uint8_t c)
{
    return is_alnum(c) || in_set(c, "-._~!$&'()*+,;=:@/?%");
}

static int is_host_char(uint8_t c)
{
    return is_alnum(c) || in_set(c, "-._~!$&'()*+,;=:[]%");
}

static int is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* The next element of a comma-separated list at s[*pos..n), trimmed of
 * spaces and tabs (it may be empty); 0 when the list is done. */
static int list_next(const uint8_t *s, size_t n, size_t *pos, size_t *at,
                     size_t *len)
{
    size_t a = *pos, e;
    if (a > n) return 0;
    e = a;
    while (e < n && s[e] != ',') e++;
    *pos = e + 1;
    while (a < e && (s[a] == ' ' || s[a] == '\t')) a++;
    while (e > a && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
    *at = a;
    *len = e - a;
    return 1;
}

/* ==== the parser: errors and life cycle ==== */

static eml_status fail(eml_http_parser *p, int code, const char *fmt, ...)
    EML_PRINTF(3, 4);

static eml_status fail(eml_http_parser *p, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err.msg, sizeof(p->err.msg), fmt, ap);
    va_end(ap);
    p->phase = P_ERROR;
    p->code = code;
    p->st = code == 400   ? EML_ERR_FORMAT
            : code == 500 ? EML_ERR_NOMEM
            : code == 413 || code == 414 || code == 431 ? EML_ERR_RANGE
                                                        : EML_ERR_UNSUPPORTED;
    return p->st;
}

static void reset_request(eml_http_parser *p)
{
    memset(&p->c, 0, sizeof(p->c));
    p->c.method_at = p->c.target_at = p->c.host_at = NONE;
    p->c.ctype_at = p->c.dtype_at = NONE;
    memset(&p->req, 0, sizeof(p->req));
    p->phase = P_HEAD;
}

eml_status eml_http_parser_new(const eml_http_limits *lim,
                               eml_http_parser **out, eml_err *err)
{
    eml_http_limits l = {EML_HTTP_MAX_HEADER_DEFAULT,
                         EML_HTTP_MAX_TARGET_DEFAULT,
                         EML_HTTP_MAX_BODY_DEFAULT};
    eml_http_parser *p;

    *out = NULL;
    if (lim != NULL) {
        if (lim->max_header != 0) l.max_header = lim->max_header;
        if (lim->max_target != 0) l.max_target = lim->max_target;
        if (lim->max_body != 0) l.max_body = lim->max_body;
    }
    if (l.max_header < 64 || l.max_header > EML_HTTP_MAX_HEADER_CAP ||
        l.max_target >= l.max_header || l.max_body > EML_HTTP_MAX_BODY_CAP)
        return eml_err_set(err, EML_ERR_INVALID,
                           "HTTP limits: the header limit must be 64 bytes "
                           "to 1 MiB, the target limit below it and the body "
                           "limit at most 1 GiB");
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "HTTP parser: out of memory");
    p->lim = l;
    p->max = l.max_header + l.max_body;
    reset_request(p);
    *out = p;
    return EML_OK;
}

void eml_http_parser_free(eml_http_parser *p)
{
    if (p == NULL) return;
    if (p->buf != NULL) {
        eml_wipe(p->buf, p->cap);
        free(p->buf);
    }
    eml_wipe(p, sizeof(*p));
    free(p);
}

/* ==== the parser: the request line ==== */

/* One byte of the request line (not CR or LF), checked as it arrives so
 * that a long or garbled line is refused without waiting for its end. */
static eml_status request_line_byte(eml_http_parser *p, uint8_t b)
{
    cur *c = &p->c;
    if (c->rl_part == 0) {
        if (b == ' ') {
            if (c->rl_count == 0)
                return fail(p, 400, "HTTP request: the request line starts "
                                    "with a space");
            c->rl_part = 1;
            c->rl_count = 0;
        } else if (!is_tchar(b)) {
            return fail(p, 400, "HTTP request: the method contains a byte "
                                "that is not a token character");
        } else if (++c->rl_count > METHOD_MAX) {
            return fail(p, 501, "HTTP request: a method longer than %d "
                                "bytes is not one this server implements",
                        METHOD_MAX);
        }
    } else if (c->rl_part == 1) {
        if (b == ' ') {
            if (c->rl_count == 0)
                return fail(p, 400, "HTTP request: the request target is "
                                    "empty (two spaces after the method)");
            c->rl_part = 2;
            c->rl_count = 0;
        } else if (!is_target_char(b)) {
            return fail(p, 400, "HTTP request: the request target contains "
                                "a byte that a URI path or query may not "
                                "hold (spaces and controls must be "
                                "percent-encoded)");
        } else if (++c->rl_count > p->lim.max_target) {
            return fail(p, 414, "HTTP request: the request target is longer "
                                "than %zu bytes", p->lim.max_target);
        }
    } else if (b == ' ' || ++c->rl_count > 8) {
        return fail(p, 400, "HTTP request: malformed HTTP version in the "
                            "request line (expected HTTP/1.1 or HTTP/1.0)");
    }
    return EML_OK;
}

static eml_status request_line(eml_http_parser *p, uint8_t *r, size_t s,
                               size_t end)
{
    cur *c = &p->c;
    size_t m_end = s, t_end, i;
    const uint8_t *v;
    int m;

    if (c->rl_part < 2)
        return fail(p, 400, "HTTP request: the request line has no %s "
                            "(HTTP/0.9 is not supported)",
                    c->rl_part == 0 ? "target" : "HTTP version");
    while (r[m_end] != ' ') m_end++; /* both spaces are there: see above */
    t_end = m_end + 1;
    while (r[t_end] != ' ') t_end++;
    v = r + t_end + 1;
    if (end - (t_end + 1) != 8 || memcmp(v, "HTTP/", 5) != 0 ||
        v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return fail(p, 400, "HTTP request: malformed HTTP version in the "
                            "request line (expected HTTP/1.1 or HTTP/1.0)");
    if (v[5] != '1' || v[7] > '1')
        return fail(p, 505, "HTTP request: HTTP/%c.%c is not supported "
                            "(only HTTP/1.0 and HTTP/1.1)", v[5], v[7]);
    for (m = 0; m < EML_HTTP_METHOD_COUNT; m++)
        if (strlen(method_names[m]) == m_end - s &&
            memcmp(r + s, method_names[m], m_end - s) == 0)
            break;
    if (m == EML_HTTP_METHOD_COUNT)
        return fail(p, 501, "HTTP request: the method is not one this "
                            "server implements");
    if (r[m_end + 1] != '/')
        return fail(p, 400, "HTTP request: the request target must be a "
                            "path starting with '/' (origin form)");
    for (i = m_end + 1; i < t_end; i++)
        if (r[i] == '%' && (t_end - i < 3 || !is_hex(r[i + 1]) ||
                            !is_hex(r[i + 2])))
            return fail(p, 400, "HTTP request: a '%%' in the request target "
                                "is not followed by two hex digits");
    r[m_end] = '\0';
    r[t_end] = '\0';
    c->method = (eml_http_method)m;
    c->method_at = s;
    c->target_at = m_end + 1;
    c->target_len = t_end - (m_end + 1);
    c->minor = v[7] - '0';
    return EML_OK;
}

/* ==== the parser: header fields ==== */

static eml_status once(eml_http_parser *p, size_t *at, size_t v,
                       const char *name)
{
    if (*at != NONE)
        return fail(p, 400, "HTTP request, line %u: a second %s header",
                    p->c.line_no, name);
    *at = v;
    return EML_OK;
}

static eml_status content_length(eml_http_parser *p, const uint8_t *v,
                                 size_t n)
{
    cur *c = &p->c;
    uint64_t x = 0;
    if (c->has_cl)
        return fail(p, 400, "HTTP request, line %u: a second Content-Length "
                            "header", c->line_no);
    if (n == 0)
        return fail(p, 400, "HTTP request, line %u: Content-Length is empty",
                    c->line_no);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return fail(p, 400, "HTTP request, line %u: Content-Length is "
                                "not a decimal number", c->line_no);
        x = x > (UINT64_MAX - 9) / 10 ? UINT64_MAX : x * 10 + (v[i] - '0');
    }
    c->has_cl = 1;
    c->cl = x; /* saturated: far over any limit */
    return EML_OK;
}

static eml_status connection(eml_http_parser *p, const uint8_t *v, size_t n)
{
    size_t pos = 0, at, len;
    while (list_next(v, n, &pos, &at, &len)) {
        for (size_t i = 0; i < len; i++)
            if (!is_tchar(v[at + i]))
                return fail(p, 400, "HTTP request, line %u: Connection holds "
                                    "something other than tokens",
                            p->c.line_no);
        if (ieq(v + at, len, "close")) p->c.conn_close = 1;
        if (ieq(v + at, len, "keep-alive")) p->c.conn_keep = 1;
    }
    return EML_OK;
}

static void expect(eml_http_parser *p, const uint8_t *v, size_t n)
{
    size_t pos = 0, at, len;
    while (list_next(v, n, &pos, &at, &len)) {
        if (ieq(v + at, len, "100-continue"))
            p->c.expect_cont = 1;
        else if (len > 0)
            p->c.expect_other = 1;
    }
}

/* A header this server acts on (name matched without case); the others
 * were checked for syntax and are ignored. */
static eml_status field(eml_http_parser *p, uint8_t *r, const uint8_t *name,
                        size_t nn, size_t v, size_t vn)
{
    cur *c = &p->c;
    if (ieq(name, nn, "content-length"))
        return content_length(p, r + v, vn);
    if (ieq(name, nn, "transfer-encoding")) {
        c->te = 1;
        return EML_OK;
    }
    if (ieq(name, nn, "connection")) return connection(p, r + v, vn);
    if (ieq(name, nn, "expect")) {
        expect(p, r + v, vn);
        return EML_OK;
    }
    if (ieq(name, nn, "host")) {
        for (size_t i = 0; i < vn; i++)
            if (!is_host_char(r[v + i]))
                return fail(p, 400, "HTTP request, line %u: Host is not a "
                                    "host name, address or port",
                            c->line_no);
        return once(p, &c->host_at, v, "Host");
    }
    if (ieq(name, nn, "content-type")) {
        if (vn == 0)
            return fail(p, 400, "HTTP request, line %u: Content-Type is "
                                "empty", c->line_no);
        return once(p, &c->ctype_at, v, "Content-Type");
    }
    if (ieq(name, nn, "x-tensor-dtype"))
        return once(p, &c->dtype_at, v, "X-Tensor-Dtype");
    return EML_OK;
}

static eml_status header_line(eml_http_parser *p, uint8_t *r, size_t s,
                              size_t end)
{
    const uint8_t *l = r + s;
    size_t n = end - s, k = 0, v, e;
    unsigned line = p->c.line_no;

    if (l[0] == ' ' || l[0] == '\t')
        return fail(p, 400, "HTTP request, line %u: starts with whitespace "
                            "(obsolete line folding is not accepted)", line);
    while (k < n && is_tchar(l[k])) k++;
    if (k == n)
        return fail(p, 400, "HTTP request, line %u: a header line without "
                            "':'", line);
    if (l[k] != ':')
        return fail(p, 400, "HTTP request, line %u: %s", line,
                    l[k] == ' ' || l[k] == '\t'
                        ? "whitespace between a header name and its ':'"
                        : "the header name contains a byte that is not a "
                          "token character");
    if (k == 0)
        return fail(p, 400, "HTTP request, line %u: an empty header name",
                    line);
    v = k + 1;
    while (v < n && (l[v] == ' ' || l[v] == '\t')) v++;
    e = n;
    while (e > v && (l[e - 1] == ' ' || l[e - 1] == '\t')) e--;
    for (size_t i = v; i < e; i++)
        if ((l[i] < 0x20 && l[i] != '\t') || l[i] == 0x7f)
            return fail(p, 400, "HTTP request, line %u: the header value "
                                "contains a control byte", line);
    r[s + e] = '\0'; /* over trailing space or the CR */
    return field(p, r, l, k, s + v, e - v);
}

/* The blank line: the header block is whole; decide how the body is
 * framed and whether it may come. */
static eml_status end_of_head(eml_http_parser *p, size_t body_start)
{
    cur *c = &p->c;
    if (c->minor == 1 && c->host_at == NONE)
        return fail(p, 400, "HTTP request: an HTTP/1.1 request without a "
                            "Host header");
    if (c->te && c->has_cl)
        return fail(p, 400, "HTTP request: both Transfer-Encoding and "
                            "Content-Length (refused: a request smuggling "
                            "pattern)");
    if (c->te && c->minor == 0)
        return fail(p, 400, "HTTP request: Transfer-Encoding in an HTTP/1.0 "
                            "request");
    if (c->te)
        return fail(p, 501, "HTTP request: Transfer-Encoding (chunked) is "
                            "not supported; send a Content-Length");
    if (c->minor == 1 && c->expect_other)
        return fail(p, 417, "HTTP request: Expect holds something other "
                            "than 100-continue");
    if (c->has_cl && c->cl > p->lim.max_body)
        return fail(p, 413, "HTTP request: the body is over the %zu-byte "
                            "limit (Content-Length)", p->lim.max_body);
    c->body_start = body_start;
    c->body_len = c->has_cl ? (size_t)c->cl : 0;
    if (c->minor == 0) c->expect_cont = 0; /* RFC 9110 10.1.1 */
    p->phase = P_BODY;
    return EML_OK;
}

/* ==== the parser: the byte stream ==== */

/* A CRLF ended a line at r[s..end). */
static eml_status end_of_line(eml_http_parser *p, uint8_t *r, size_t s,
                              size_t end)
{
    cur *c = &p->c;
    c->line_no++;
    c->line_start = end + 2;
    if (!c->seen_rl) {
        if (end == s) return EML_OK; /* empty lines first: RFC 9112 2.2 */
        c->seen_rl = 1;
        return request_line(p, r, s, end);
    }
    if (end == s) return end_of_head(p, end + 2);
    return header_line(p, r, s, end);
}

static eml_status head_byte(eml_http_parser *p, uint8_t *r, size_t i)
{
    cur *c = &p->c;
    uint8_t b = r[i];
    if (c->prev_cr && b != '\n')
        return fail(p, 400, "HTTP request, line %u: a CR not followed by LF",
                    c->line_no + 1);
    if (b == '\n') {
        if (!c->prev_cr)
            return fail(p, 400, "HTTP request, line %u: a bare LF (lines "
                                "must end with CRLF)", c->line_no + 1);
        c->prev_cr = 0;
        return end_of_line(p, r, c->line_start, i - 1);
    }
    c->prev_cr = b == '\r';
    if (!c->seen_rl && !c->prev_cr) return request_line_byte(p, b);
    return EML_OK;
}

/* Examines the bytes held past the current request's scan position. */
static void parse(eml_http_parser *p)
{
    cur *c = &p->c;
    uint8_t *r;
    size_t have = p->len - p->start;

    if (p->buf == NULL) return; /* nothing held yet */
    r = p->buf + p->start;

    while (p->phase == P_HEAD && c->scan < have) {
        if (head_byte(p, r, c->scan++) != EML_OK) return;
        if (p->phase == P_HEAD && c->scan >= p->lim.max_header) {
            (void)fail(p, 431, "HTTP request: the header block is not over "
                               "within %zu bytes", p->lim.max_header);
            return;
        }
    }
    if (p->phase != P_BODY || have - c->body_start < c->body_len) return;
    p->req = (eml_http_request){
        .method = c->method,
        .method_name = (const char *)r + c->method_at,
        .target = (const char *)r + c->target_at,
        .target_len = c->target_len,
        .version_minor = c->minor,
        .keep_alive = c->minor == 1 ? !c->conn_close
                                    : c->conn_keep && !c->conn_close,
        .expect_continue = c->expect_cont && c->body_len > 0,
        .has_content_length = c->has_cl,
        .content_length = c->cl,
        .host = c->host_at == NONE ? NULL : (const char *)r + c->host_at,
        .content_type =
            c->ctype_at == NONE ? NULL : (const char *)r + c->ctype_at,
        .tensor_dtype =
            c->dtype_at == NONE ? NULL : (const char *)r + c->dtype_at,
        .body = r + c->body_start,
        .body_len = c->body_len,
        .size = c->body_start + c->body_len,
    };
    p->phase = P_DONE;
}

/* Room for `want` more bytes: the current request moved to the front of
 * the buffer (it is incomplete, so at most one request is moved, once)
 * and the buffer grown, never past p->max.  The number of bytes that fit. */
static size_t make_room(eml_http_parser *p, size_t want)
{
    size_t held = p->len - p->start, need, cap;
    uint8_t *nb;

    if (p->start > 0) {
        memmove(p->buf, p->buf + p->start, held);
        eml_wipe(p->buf + held, p->len - held);
        p->start = 0;
        p->len = held;
    }
    if (want > p->max - p->len) want = p->max - p->len;
    need = p->len + want;
    if (need <= p->cap) return want;
    cap = p->cap < 2048 ? 4096 : p->cap * 2;
    if (cap < need) cap = need;
    if (cap > p->max) cap = p->max;
    nb = malloc(cap);
    if (nb == NULL) return 0;
    if (p->len > 0) memcpy(nb, p->buf, p->len);
    if (p->buf != NULL) {
        eml_wipe(p->buf, p->cap);
        free(p->buf);
    }
    p->buf = nb;
    p->cap = cap;
    return want;
}

static eml_status result(eml_http_parser *p, const eml_http_request **req,
                         int *http_status, eml_err *err)
{
    if (p->phase == P_ERROR) {
        *http_status = p->code;
        return eml_err_set(err, p->st, "%s", p->err.msg);
    }
    if (p->phase == P_DONE) *req = &p->req;
    return EML_OK;
}

eml_status eml_http_feed(eml_http_parser *p, const void *data, size_t n,
                         size_t *used, const eml_http_request **req,
                         int *http_status, eml_err *err)
{
    size_t take;

    *used = 0;
    *req = NULL;
    *http_status = 0;
    if (data == NULL) n = 0;
    if (p->phase == P_HEAD || p->phase == P_BODY) parse(p);
    if (p->phase == P_ERROR || p->phase == P_DONE || n == 0)
        return result(p, req, http_status, err);
    take = make_room(p, n);
    if (take == 0) {
        (void)fail(p, 500, "HTTP request: out of memory for the request "
                           "buffer");
        return result(p, req, http_status, err);
    }
    memcpy(p->buf + p->len, data, take);
    p->len += take;
    *used = take;
    parse(p);
    return result(p, req, http_status, err);
}

void eml_http_next(eml_http_parser *p)
{
    if (p->phase != P_DONE) return;
    eml_wipe(p->buf + p->start, p->req.size);
    p->start += p->req.size;
    if (p->start == p->len) p->start = p->len = 0;
    reset_request(p);
}

int eml_http_take_continue(eml_http_parser *p)
{
    cur *c = &p->c;
    if (p->phase != P_BODY || !c->expect_cont || c->body_len == 0 ||
        c->cont_taken)
        return 0;
    c->cont_taken = 1;
    return 1;
}

size_t eml_http_buffered(const eml_http_parser *p)
{
    return p->len - p->start - (p->phase == P_DONE ? p->req.size : 0);
}

int eml_http_media_is(const char *content_type, const char *type)
{
    size_t n, k = strlen(type);
    if (content_type == NULL) return 0;
    n = strcspn(content_type, ";");
    while (n > 0 && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
        n--;
    return ieq((const uint8_t *)content_type, n, type) && n == k;
}

/* ==== routes ==== */

static int path_is(const char *s, size_t n, const char *path)
{
    return strlen(path) == n && memcmp(s, path, n) == 0;
}

static void routed(eml_http_route *out, eml_http_method m,
                   eml_http_method want, eml_http_route_kind kind)
{
    if (m != want) {
        out->status = 405;
        out->allow = method_names[want];
        return;
    }
    out->kind = kind;
}

/* What follows "/v1/models/": NAME, then "/versions/N" or not, then
 * ":predict" or nothing. */
static void model_route(eml_http_method m, const char *s, size_t n,
                        eml_http_route *out)
{
    size_t k = 0, d = 0;
    while (k < n && (is_alnum((uint8_t)s[k]) || in_set((uint8_t)s[k], "._-")))
        k++;
    if (k == 0 || k > EML_HTTP_MODEL_NAME_MAX ||
        strspn(s, ".") >= k) /* ".", "..": path segments, not names */
        return;
    memcpy(out->model, s, k);
    s += k;
    n -= k;
    if (n >= 10 && memcmp(s, "/versions/", 10) == 0) {
        s += 10;
        n -= 10;
        while (d < n && s[d] >= '0' && s[d] <= '9') {
            out->version = out->version * 10 + (uint64_t)(s[d] - '0');
            if (++d > 18) break;
        }
        if (d == 0 || d > 18 || s[0] == '0') return;
        out->has_version = 1;
        s += d;
        n -= d;
    }
    if (n == 0) {
        out->status = 0;
        routed(out, m, EML_HTTP_GET, EML_ROUTE_MODEL_STATUS);
    } else if (path_is(s, n, ":predict")) {
        out->status = 0;
        routed(out, m, EML_HTTP_POST, EML_ROUTE_PREDICT);
    }
}

void eml_http_route_match(eml_http_method method, const char *target,
                          eml_http_route *out)
{
    size_t n = strcspn(target, "?");
    memset(out, 0, sizeof(*out));
    out->status = 404;
    if (path_is(target, n, "/healthz")) {
        out->status = 0;
        routed(out, method, EML_HTTP_GET, EML_ROUTE_HEALTHZ);
    } else if (path_is(target, n, "/metrics")) {
        out->status = 0;
        routed(out, method, EML_HTTP_GET, EML_ROUTE_METRICS);
    } else if (n > 11 && memcmp(target, "/v1/models/", 11) == 0) {
        model_route(method, target + 11, n - 11, out);
    }
    if (out->status == 404) {
        memset(out->model, 0, sizeof(out->model));
        out->has_version = 0;
        out->version = 0;
    }
}
