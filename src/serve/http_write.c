/*
 * http_write.c - the response side of the HTTP layer (http.h): output
 * buffers, growable or over the caller's memory, and the writer of status
 * lines, headers and bodies, TensorFlow Serving's {"error": ...} answers
 * among them.
 *
 * Trusted code: memory only, no I/O.  What it writes goes back through the
 * TLS session to a client, so it refuses to write what would break the
 * framing: a status it has no reason phrase for, a header name that is not
 * a token, a value with a control byte (no CRLF can be smuggled in), a
 * framing header it sets itself, a body on a status that has none.  A
 * write that fails leaves the buffer as it was.  No Date header: the
 * enclave has no trusted clock (RFC 9110 6.6.1 allows its absence).
 *
 * Ownership: a growable buffer owns its memory and wipes it when it grows
 * or is freed (responses carry clients' predictions); a fixed buffer
 * borrows the caller's.
 */
#include "enclaveml/http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclaveml/crypto.h"
#include "serve/http_internal.h"

/* ==== output buffers ==== */

void eml_http_buf_init(eml_http_buf *b, size_t max)
{
    *b = (eml_http_buf){.max = max};
}

void eml_http_buf_init_fixed(eml_http_buf *b, void *mem, size_t cap)
{
    *b = (eml_http_buf){.p = mem, .cap = cap, .max = cap, .fixed = 1};
}

void eml_http_buf_reset(eml_http_buf *b)
{
    b->len = 0;
}

void eml_http_buf_free(eml_http_buf *b)
{
    if (b == NULL) return;
    if (b->p != NULL) eml_wipe(b->p, b->fixed ? b->len : b->cap);
    if (!b->fixed) free(b->p);
    *b = (eml_http_buf){0};
}

static eml_status reserve(eml_http_buf *b, size_t add, eml_err *err)
{
    size_t need, cap;
    uint8_t *nb;
    if (add > b->max - b->len)
        return eml_err_set(err, EML_ERR_RANGE,
                           "HTTP output: %zu more bytes do not fit in the "
                           "%zu-byte buffer", add, b->max);
    need = b->len + add;
    if (need <= b->cap) return EML_OK;
    cap = b->cap < 512 ? 1024 : b->cap * 2;
    if (cap < need) cap = need;
    if (cap > b->max) cap = b->max;
    nb = malloc(cap);
    if (nb == NULL)
        return eml_err_set(err, EML_ERR_NOMEM, "HTTP output: out of memory");
    if (b->len > 0) memcpy(nb, b->p, b->len);
    if (b->p != NULL) {
        eml_wipe(b->p, b->cap);
        free(b->p);
    }
    b->p = nb;
    b->cap = cap;
    return EML_OK;
}

eml_status eml_http_buf_put(eml_http_buf *b, const void *src, size_t n,
                            eml_err *err)
{
    eml_status st;
    if (n == 0) return EML_OK;
    st = reserve(b, n, err);
    if (st != EML_OK) return st;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return EML_OK;
}

eml_status eml_http_buf_printf(eml_http_buf *b, eml_err *err,
                               const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    eml_status st;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return eml_err_set(err, EML_ERR_INVALID, "HTTP output: bad format");
    if ((size_t)n < sizeof(tmp)) return eml_http_buf_put(b, tmp, (size_t)n, err);
    st = reserve(b, (size_t)n + 1, err);
    if (st != EML_OK) return st;
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return EML_OK;
}

/* ==== the response writer ==== */

static const struct {
    int code;
    const char *reason;
} reasons[] = {
    {100, "Continue"}, {200, "OK"}, {201, "Created"}, {202, "Accepted"},
    {204, "No Content"}, {301, "Moved Permanently"}, {304, "Not Modified"},
    {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"},
    {404, "Not Found"}, {405, "Method Not Allowed"},
    {408, "Request Timeout"}, {411, "Length Required"},
    {413, "Content Too Large"}, {414, "URI Too Long"},
    {415, "Unsupported Media Type"}, {417, "Expectation Failed"},
    {422, "Unprocessable Content"}, {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"}, {501, "Not Implemented"},
    {503, "Service Unavailable"}, {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *eml_http_reason(int status)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].code == status) return reasons[i].reason;
    return NULL;
}

static int clean_value(const char *v)
{
    for (; *v != '\0'; v++)
        if (((uint8_t)*v < 0x20 && *v != '\t') || (uint8_t)*v == 0x7f)
            return 0;
    return 1;
}

static int good_extra(const eml_http_header *h)
{
    size_t n;
    if (h->name == NULL || h->value == NULL || !clean_value(h->value))
        return 0;
    n = strlen(h->name);
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((uint8_t)h->name[i])) return 0;
    return !ieq((const uint8_t *)h->name, n, "content-length") &&
           !ieq((const uint8_t *)h->name, n, "content-type") &&
           !ieq((const uint8_t *)h->name, n, "connection") &&
           !ieq((const uint8_t *)h->name, n, "transfer-encoding");
}

eml_status eml_http_write_response(eml_http_buf *out,
                                   const eml_http_response *r, eml_err *err)
{
    const char *reason = eml_http_reason(r->status);
    int bodyless = r->status < 200 || r->status == 204 || r->status == 304;
    size_t mark = out->len;
    eml_status st;

    if (reason == NULL)
        return eml_err_set(err, EML_ERR_INVALID,
                           "HTTP output: status %d is not one this server "
                           "sends", r->status);
    if ((bodyless && r->body_len > 0) || (r->body_len > 0 && r->body == NULL))
        return eml_err_set(err, EML_ERR_INVALID,
                           "HTTP output: status %d with a body it cannot "
                           "have", r->status);
    if (r->content_type != NULL && !clean_value(r->content_type))
        return eml_err_set(err, EML_ERR_INVALID,
                           "HTTP output: Content-Type with a control byte");
    for (size_t i = 0; i < r->n_extra; i++)
        if (!good_extra(&r->extra[i]))
            return eml_err_set(err, EML_ERR_INVALID,
                               "HTTP output: extra header %zu is malformed "
                               "or one the writer sets itself", i);
    st = eml_http_buf_printf(out, err, "HTTP/1.1 %d %s\r\n", r->status,
                             reason);
    if (st == EML_OK && r->content_type != NULL)
        st = eml_http_buf_printf(out, err, "Content-Type: %s\r\n",
                                 r->content_type);
    if (st == EML_OK && !bodyless)
        st = eml_http_buf_printf(out, err, "Content-Length: %zu\r\n",
                                 r->body_len);
    if (st == EML_OK && r->status >= 200)
        st = eml_http_buf_printf(out, err, "Connection: %s\r\n",
                                 r->keep_alive ? "keep-alive" : "close");
    for (size_t i = 0; st == EML_OK && i < r->n_extra; i++)
        st = eml_http_buf_printf(out, err, "%s: %s\r\n", r->extra[i].name,
                                 r->extra[i].value);
    if (st == EML_OK) st = eml_http_buf_put(out, "\r\n", 2, err);
    if (st == EML_OK) st = eml_http_buf_put(out, r->body, r->body_len, err);
    if (st != EML_OK) out->len = mark;
    return st;
}

eml_status eml_http_write_continue(eml_http_buf *out, eml_err *err)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return eml_http_buf_put(out, line, sizeof(line) - 1, err);
}

eml_status eml_http_write_error(eml_http_buf *out, int status,
                                int keep_alive, const char *allow,
                                const char *msg, eml_err *err)
{
    char body[3 * 1024];
    size_t k = 0;
    const char *m = msg != NULL ? msg : eml_http_reason(status);
    eml_http_header h = {"Allow", allow};
    eml_http_response r = {status, "application/json", keep_alive,
                           allow != NULL ? &h : NULL, allow != NULL,
                           body, 0};

    if (m == NULL) m = "error";
    k = (size_t)snprintf(body, sizeof(body), "{\"error\": \"");
    /* 6 bytes for the widest escape, 3 for the closing "} */
    for (size_t i = 0; m[i] != '\0' && i < 400; i++) {
        uint8_t c = (uint8_t)m[i];
        if (c == '"' || c == '\\') {
            body[k++] = '\\';
            body[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(body + k, sizeof(body) - k, "\\u%04x", c);
        } else {
            body[k++] = c > 0x7e ? '?' : (char)c;
        }
    }
    memcpy(body + k, "\"}", 2);
    r.body_len = k + 2;
    return eml_http_write_response(out, &r, err);
}
