/*
 * predict_json.c - the bodies of the predict call (predict_io.h): JSON
 * instances and raw tensors in, predictions out.
 *
 * Trusted code fed hostile plaintext: memory only, no I/O, no printing.
 * The JSON form is read with enclaveml's one strict JSON reader
 * (eml_jreader, formats/flatjson.c), walking exactly this schema: one
 * object with "instances" or "inputs" (an array of instances) and an
 * optional "signature_name" string.  An instance's nested arrays are
 * walked without recursion, one depth counter and one entry count per
 * level, so nesting is bounded by EML_PREDICT_MAX_DEPTH by construction.
 * Instance 0 fixes the shape (rank and the length at each level) and the
 * rest must match it; the values are counted as they are stored, so no
 * instance can write past its `item` floats.  Every message names the
 * instance and the byte offset, and quotes nothing of the input.
 *
 * Ownership: the decoded floats are the caller's (eml_predict_input),
 * wiped when freed: they are a client's private input.
 */
#include "enclaveml/predict_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/le.h"
#include "enclaveml/crypto.h"
#include "formats/formats_internal.h"

/* ==== JSON instances ==== */

typedef struct walk {
    eml_jreader r;
    char what[64]; /* "predict request, instance 3": the reader's prefix */
    size_t item;
    size_t max;   /* instances allowed */
    float *x;     /* room for cap values */
    size_t cap;
    size_t n;     /* instances read */
    int ndims;    /* the rank instance 0 set; -1 before its first number */
    size_t dims[EML_PREDICT_MAX_DEPTH]; /* lengths per level; 0: unknown */
} walk;

/* s[0..n) starts with the lower-case word w, without case. */
static int starts(const uint8_t *s, size_t n, const char *w)
{
    size_t k = strlen(w);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++)
        if ((s[i] >= 'A' && s[i] <= 'Z' ? s[i] | 0x20 : s[i]) != w[i])
            return 0;
    return 1;
}

/* One number, at r->pos after whitespace, as a finite float32; the
 * usual wrong things in its place are named. */
static eml_status number(eml_jreader *r, float *out)
{
    const uint8_t *s = r->s + r->pos;
    size_t n = r->n - r->pos, sign = n > 0 && (s[0] == '-' || s[0] == '+');
    double v;
    eml_status st;

    if (n > 0 && s[0] == '"')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "a string where a number belongs");
    if (n > 0 && s[0] == '{')
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "an object where a number belongs (named "
                                "inputs are not supported)");
    if (starts(s, n, "true") || starts(s, n, "false") || starts(s, n, "null"))
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "true, false or null where a number belongs");
    if (starts(s + sign, n - sign, "nan") || starts(s + sign, n - sign, "inf"))
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "NaN and Infinity are not JSON numbers "
                                "(values must be finite)");
    st = eml_jreader_number(r, &v);
    if (st != EML_OK) return st;
    /* FLT_MAX + half an ulp: the least magnitude that rounds to infinity
     * (below it, a printed FLT_MAX such as 3.4028235e38 still reads) */
    if (fabs(v) >= 0x1.ffffffp+127)
        return eml_jreader_fail(r, EML_ERR_RANGE,
                                "a number out of the range of float32");
    *out = (float)v;
    return EML_OK;
}

/* After a value at depth d > 0: ',' (the next entry) or ']' (the array at
 * d - 1 ends: its length must be the one that level has).  Returns with
 * *depth at the level of the next value, or 0 when the instance is over. */
static eml_status close_arrays(walk *w, size_t count[], int *depth)
{
    eml_jreader *r = &w->r;
    int more;
    while (*depth > 0) {
        eml_status st = eml_jreader_next(r, ']', &more);
        size_t len;
        if (st != EML_OK) return st;
        if (more) {
            size_t want = w->dims[*depth - 1];
            count[*depth - 1]++; /* entries so far, less the next one */
            if (want != 0 && count[*depth - 1] >= want)
                return eml_jreader_fail(r, EML_ERR_SHAPE,
                                        "an array longer than the %zu "
                                        "entries of instance 0's shape",
                                        want);
            return EML_OK;
        }
        len = count[*depth - 1] + 1;
        (*depth)--;
        if (w->dims[*depth] == 0) {
            w->dims[*depth] = len;
        } else if (w->dims[*depth] != len) {
            r->pos--; /* at the ']' */
            return eml_jreader_fail(r, EML_ERR_SHAPE,
                                    "an array of %zu entries where instance "
                                    "0's shape has %zu (instances must be "
                                    "rectangular and all of one shape)",
                                    len, w->dims[*depth]);
        }
    }
    return EML_OK;
}

static eml_status read_instance(walk *w)
{
    eml_jreader *r = &w->r;
    float *dst = w->x + w->n * w->item;
    size_t count[EML_PREDICT_MAX_DEPTH], k = 0;
    int depth = 0;
    eml_status st;

    do {
        eml_jreader_ws(r);
        if (eml_jreader_peek(r) == '[') {
            if (depth == EML_PREDICT_MAX_DEPTH)
                return eml_jreader_fail(r, EML_ERR_FORMAT,
                                        "arrays nested deeper than %d levels",
                                        EML_PREDICT_MAX_DEPTH);
            if (w->ndims >= 0 && depth >= w->ndims)
                return eml_jreader_fail(r, EML_ERR_SHAPE,
                                        "an array where instance 0's shape "
                                        "has a number");
            r->pos++;
            count[depth++] = 0;
            if (eml_jreader_take(r, ']'))
                return eml_jreader_fail(r, EML_ERR_SHAPE, "an empty array");
            continue;
        }
        if (w->ndims < 0) w->ndims = depth;
        if (depth != w->ndims)
            return eml_jreader_fail(r, EML_ERR_SHAPE,
                                    "a number where instance 0's shape has "
                                    "an array");
        if (k == w->item)
            return eml_jreader_fail(r, EML_ERR_SHAPE,
                                    "more than %zu values (the model takes "
                                    "%zu per instance)", w->item, w->item);
        if (w->n * w->item + k >= w->cap) /* cannot happen: see decode */
            return eml_jreader_fail(r, EML_ERR_RANGE,
                                    "more values than the body can hold");
        st = number(r, &dst[k++]);
        if (st == EML_OK) st = close_arrays(w, count, &depth);
        if (st != EML_OK) return st;
    } while (depth > 0);
    if (k != w->item)
        return eml_jreader_fail(r, EML_ERR_SHAPE,
                                "%zu values where the model takes %zu per "
                                "instance", k, w->item);
    return EML_OK;
}

/* [instance, ...] */
static eml_status read_instances(walk *w, const char *key)
{
    eml_jreader *r = &w->r;
    eml_status st;
    int more = 1;

    eml_jreader_ws(r);
    if (eml_jreader_peek(r) == '{')
        return eml_jreader_fail(r, EML_ERR_UNSUPPORTED,
                                "\"%s\" is an object: named inputs are not "
                                "supported, send one unnamed tensor", key);
    st = eml_jreader_expect(r, '[', "'[' to open the list of instances");
    if (st != EML_OK) return st;
    if (eml_jreader_take(r, ']'))
        return eml_jreader_fail(r, EML_ERR_FORMAT, "\"%s\" is empty", key);
    while (more) {
        snprintf(w->what, sizeof(w->what), "predict request, instance %zu",
                 w->n);
        r->what = w->what;
        eml_jreader_ws(r);
        if (w->n == w->max)
            return eml_jreader_fail(r, EML_ERR_RANGE,
                                    "more than %zu instances in one request",
                                    w->max);
        st = read_instance(w);
        if (st != EML_OK) return st;
        w->n++;
        st = eml_jreader_next(r, ']', &more);
        if (st != EML_OK) return st;
    }
    r->what = "predict request";
    return EML_OK;
}

/* One member of the top object. */
static eml_status member(walk *w, eml_predict_form *form, int *seen_sig,
                         int *seen_inst)
{
    eml_jreader *r = &w->r;
    char key[32];
    size_t klen = 0, at;
    eml_status st;

    eml_jreader_ws(r);
    at = r->pos;
    st = eml_jreader_string(r, key, sizeof(key), &klen);
    if (st == EML_OK) st = eml_jreader_expect(r, ':', "':' after a key");
    if (st != EML_OK) return st;
    if (klen < sizeof(key) && strcmp(key, "signature_name") == 0) {
        if ((*seen_sig)++) goto dup;
        eml_jreader_ws(r);
        if (eml_jreader_peek(r) != '"')
            return eml_jreader_fail(r, EML_ERR_FORMAT,
                                    "\"signature_name\" must be a string");
        return eml_jreader_string(r, NULL, 0, &klen);
    }
    if (klen < sizeof(key) &&
        (strcmp(key, "instances") == 0 || strcmp(key, "inputs") == 0)) {
        if ((*seen_inst)++) goto dup;
        *form = strcmp(key, "instances") == 0 ? EML_PREDICT_ROWS
                                              : EML_PREDICT_COLUMNS;
        return read_instances(w, key);
    }
    r->pos = at;
    return eml_jreader_fail(r, EML_ERR_FORMAT,
                            "unknown member: only \"instances\" (or "
                            "\"inputs\") and \"signature_name\" are "
                            "supported");
dup:
    r->pos = at;
    return eml_jreader_fail(r, EML_ERR_FORMAT,
                            "\"%s\" repeats a member (\"instances\" and "
                            "\"inputs\" count as one)", key);
}

static eml_status walk_body(walk *w, eml_predict_form *form)
{
    eml_jreader *r = &w->r;
    int more = 1, seen_sig = 0, seen_inst = 0;
    eml_status st = eml_jreader_expect(r, '{', "a JSON object");
    if (st != EML_OK) return st;
    if (eml_jreader_take(r, '}')) more = 0;
    while (more) {
        st = member(w, form, &seen_sig, &seen_inst);
        if (st == EML_OK) st = eml_jreader_next(r, '}', &more);
        if (st != EML_OK) return st;
    }
    if (!eml_jreader_at_end(r))
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "bytes after the object (only whitespace "
                                "may follow it)");
    if (!seen_inst)
        return eml_jreader_fail(r, EML_ERR_FORMAT,
                                "no \"instances\" (or \"inputs\") in the "
                                "request");
    return EML_OK;
}

static eml_status check_sizes(size_t item, size_t max_instances,
                              size_t elsize, eml_err *err)
{
    if (item == 0 || max_instances == 0 ||
        max_instances > SIZE_MAX / sizeof(float) / elsize / item)
        return eml_err_set(err, EML_ERR_INVALID,
                           "predict request: the example size and the "
                           "instance limit must be positive and their "
                           "product must fit in memory");
    return EML_OK;
}

eml_status eml_predict_decode_json(const void *body, size_t len, size_t item,
                                   size_t max_instances,
                                   eml_predict_input *out, eml_err *err)
{
    walk w;
    eml_predict_form form = EML_PREDICT_ROWS;
    eml_status st;

    memset(out, 0, sizeof(*out));
    st = check_sizes(item, max_instances, 1, err);
    if (st != EML_OK) return st;
    if (body == NULL && len > 0)
        return eml_err_set(err, EML_ERR_INVALID, "predict request: no body");
    memset(&w, 0, sizeof(w));
    w.item = item;
    w.max = max_instances;
    w.ndims = -1;
    /* k numbers take at least 2k + 1 bytes ("[1,2]"), so len / 2 values
     * always fit: one allocation, bounded by the body and the limit. */
    w.cap = len / 2 + 1;
    if (w.cap > max_instances * item) w.cap = max_instances * item;
    w.x = malloc(w.cap * sizeof(float));
    if (w.x == NULL)
        return eml_err_set(err, EML_ERR_NOMEM,
                           "predict request: out of memory for the inputs");
    eml_jreader_init(&w.r, body, len, "predict request", err);
    st = walk_body(&w, &form);
    if (st != EML_OK) {
        eml_wipe(w.x, w.cap * sizeof(float));
        free(w.x);
        return st;
    }
    out->x = w.x;
    out->n = w.n;
    out->item = item;
    out->form = form;
    return EML_OK;
}

/* ==== raw tensors ==== */

eml_status eml_predict_decode_raw(const void *body, size_t len,
                                  eml_predict_dtype dtype, size_t item,
                                  size_t max_instances,
                                  eml_predict_input *out, eml_err *err)
{
    const uint8_t *b = body;
    size_t el = dtype == EML_PREDICT_U8 ? 1 : 4, ex, n, total;
    float *x;
    eml_status st;

    memset(out, 0, sizeof(*out));
    st = check_sizes(item, max_instances, el, err);
    if (st != EML_OK) return st;
    ex = item * el;
    if (len == 0 || b == NULL)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "predict request: the body is empty");
    if (len % ex != 0)
        return eml_err_set(err, EML_ERR_SHAPE,
                           "predict request: %zu bytes are not a whole "
                           "number of instances of %zu %s values (%zu "
                           "bytes each)", len, item,
                           el == 1 ? "uint8" : "float32", ex);
    n = len / ex;
    if (n > max_instances)
        return eml_err_set(err, EML_ERR_RANGE,
                           "predict request: %zu instances, more than the "
                           "%zu allowed in one request", n, max_instances);
    total = n * item;
    x = malloc(total * sizeof(float));
    if (x == NULL)
        return eml_err_set(err, EML_ERR_NOMEM,
                           "predict request: out of memory for the inputs");
    for (size_t i = 0; i < total; i++) {
        uint32_t bits;
        if (el == 1) {
            x[i] = (float)b[i] * (1.0f / 255.0f);
            continue;
        }
        bits = eml_get_le32(b + 4 * i);
        if ((bits & 0x7f800000u) == 0x7f800000u) {
            eml_wipe(x, total * sizeof(float));
            free(x);
            return eml_err_set(err, EML_ERR_FORMAT,
                               "predict request, instance %zu: value %zu is "
                               "not finite (NaN or infinity)", i / item,
                               i % item);
        }
        memcpy(&x[i], &bits, sizeof(bits));
    }
    out->x = x;
    out->n = n;
    out->item = item;
    out->form = EML_PREDICT_RAW;
    return EML_OK;
}

void eml_predict_input_free(eml_predict_input *in)
{
    if (in == NULL) return;
    if (in->x != NULL) {
        eml_wipe(in->x, in->n * in->item * sizeof(float));
        free(in->x);
    }
    memset(in, 0, sizeof(*in));
}

/* s equals the lower-case word w, without case. */
static int same_word(const char *s, const char *w)
{
    for (; *s != '\0' && *w != '\0'; s++, w++) {
        char c = *s >= 'A' && *s <= 'Z' ? (char)(*s | 0x20) : *s;
        if (c != *w) return 0;
    }
    return *s == *w;
}

eml_status eml_predict_decode(const eml_http_request *req, size_t item,
                              size_t max_instances, eml_predict_input *out,
                              int *http_status, eml_err *err)
{
    const char *ct = req->content_type, *dt = req->tensor_dtype;
    eml_predict_dtype dtype = EML_PREDICT_F32;
    eml_status st;

    memset(out, 0, sizeof(*out));
    *http_status = 400;
    if (ct == NULL || eml_http_media_is(ct, "application/json")) {
        if (dt != NULL)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "predict request: X-Tensor-Dtype applies to "
                               "application/octet-stream bodies only");
        st = eml_predict_decode_json(req->body, req->body_len, item,
                                     max_instances, out, err);
    } else if (eml_http_media_is(ct, "application/octet-stream")) {
        if (dt != NULL && same_word(dt, "uint8"))
            dtype = EML_PREDICT_U8;
        else if (dt != NULL && !same_word(dt, "float32"))
            return eml_err_set(err, EML_ERR_FORMAT,
                               "predict request: X-Tensor-Dtype must be "
                               "float32 or uint8");
        st = eml_predict_decode_raw(req->body, req->body_len, dtype, item,
                                    max_instances, out, err);
    } else {
        *http_status = 415;
        return eml_err_set(err, EML_ERR_UNSUPPORTED,
                           "predict request: Content-Type must be "
                           "application/json or application/octet-stream");
    }
    if (st == EML_OK) *http_status = 0;
    else if (st == EML_ERR_NOMEM) *http_status = 500;
    return st;
}

/* ==== predictions ==== */

/* v in the fewest significant digits (6 to 9) that read back as v. */
static int format_float(char buf[32], float v)
{
    int n = 0;
    for (int digits = 6; digits <= 9; digits++) {
        n = snprintf(buf, 32, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return n;
}

static eml_status encode_json(eml_http_buf *b, const char *key,
                              const float *p, size_t n, size_t n_out,
                              eml_err *err)
{
    char num[32];
    eml_status st = eml_http_buf_printf(b, err, "{\"%s\": [", key);
    for (size_t i = 0; st == EML_OK && i < n; i++) {
        st = eml_http_buf_put(b, i > 0 ? ", [" : "[", i > 0 ? 3 : 1, err);
        for (size_t j = 0; st == EML_OK && j < n_out; j++) {
            int len = format_float(num, p[i * n_out + j]);
            if (j > 0) st = eml_http_buf_put(b, ", ", 2, err);
            if (st == EML_OK) st = eml_http_buf_put(b, num, (size_t)len, err);
        }
        if (st == EML_OK) st = eml_http_buf_put(b, "]", 1, err);
    }
    if (st == EML_OK) st = eml_http_buf_put(b, "]}", 2, err);
    return st;
}

static eml_status encode_raw(eml_http_buf *b, const float *p, size_t total,
                             eml_err *err)
{
    uint8_t chunk[256];
    eml_status st = EML_OK;
    if (total > SIZE_MAX / 4)
        return eml_err_set(err, EML_ERR_RANGE,
                           "predictions: too many values");
    for (size_t i = 0; st == EML_OK && i < total;) {
        size_t k = 0;
        for (; i < total && k < sizeof(chunk); i++, k += 4) {
            uint32_t bits;
            memcpy(&bits, &p[i], sizeof(bits));
            eml_put_le32(chunk + k, bits);
        }
        st = eml_http_buf_put(b, chunk, k, err);
    }
    return st;
}

eml_status eml_predict_encode(eml_http_buf *body, eml_predict_form form,
                              const float *p, size_t n, size_t n_out,
                              const char **content_type, eml_err *err)
{
    size_t mark = body->len, total;
    eml_status st;

    *content_type = form == EML_PREDICT_RAW ? "application/octet-stream"
                                            : "application/json";
    if (n_out == 0 || (n > 0 && (p == NULL || n > SIZE_MAX / n_out)))
        return eml_err_set(err, EML_ERR_INVALID,
                           "predictions: no outputs, or too many");
    total = n * n_out;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(p[i]))
            return eml_err_set(err, EML_ERR_RANGE,
                               "predictions: instance %zu, output %zu is not "
                               "finite", i / n_out, i % n_out);
    if (form == EML_PREDICT_RAW)
        st = encode_raw(body, p, total, err);
    else
        st = encode_json(body,
                         form == EML_PREDICT_COLUMNS ? "outputs"
                                                     : "predictions",
                         p, n, n_out, err);
    if (st != EML_OK) body->len = mark;
    return st;
}
