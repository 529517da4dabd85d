/*
 * predict_io.h - the bodies of TensorFlow Serving's predict call, for a
 * model whose one example has `item` input values: decoding a request
 * into a float buffer, encoding the answer.
 *
 * Trusted code (src/serve/predict_json.c): the body is hostile plaintext.
 * Memory only, no I/O.  A request body is one of
 *
 *   application/json (or no Content-Type): {"instances": [I, ...]} (row
 *       form) or {"inputs": [I, ...]} (columnar form, one unnamed input),
 *       with an optional "signature_name" string that is checked and
 *       ignored.  Each instance I is `item` numbers, flat or nested in
 *       rectangular arrays (28x28x1: [[[v], ...] x 28] x 28), every
 *       instance the same shape; a bare number when item is 1.  Numbers
 *       are finite float32 values, used as they are (the caller scales).
 *   application/octet-stream: the raw tensor, n * item values, little-
 *       endian float32 unless the header "X-Tensor-Dtype: uint8" says one
 *       byte per value (b stands for b * (1/255.0f), as training scales
 *       pixels); "X-Tensor-Dtype: float32" is the default said aloud.
 *
 * Anything else is refused with the HTTP status to answer (400, or 415
 * for another media type) and one sentence naming the instance and what
 * was wrong, for eml_http_write_error's {"error": "..."} body.
 *
 *     eml_predict_input in;
 *     int code;
 *     if (eml_predict_decode(req, 784, 64, &in, &code, &err) != EML_OK)
 *         ...answer code with err.msg...
 *     ...run in.x (in.n, in.item) through the model into probs (in.n, 10)...
 *     eml_predict_encode(&body, in.form, probs, in.n, 10, &ctype, &err);
 *     eml_predict_input_free(&in);
 *
 * Ownership: eml_predict_input owns x (wiped and freed by _free).
 */
#ifndef ENCLAVEML_PREDICT_IO_H
#define ENCLAVEML_PREDICT_IO_H

#include <stddef.h>

#include "enclaveml/http.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Arrays nested deeper than this inside one instance are refused. */
#define EML_PREDICT_MAX_DEPTH 8

/* How the request came, so the answer goes back the same way. */
typedef enum eml_predict_form {
    EML_PREDICT_ROWS,    /* {"instances": ...} -> {"predictions": ...} */
    EML_PREDICT_COLUMNS, /* {"inputs": ...} -> {"outputs": ...} */
    EML_PREDICT_RAW,     /* octet-stream -> raw float32 */
} eml_predict_form;

typedef enum eml_predict_dtype {
    EML_PREDICT_F32, /* little-endian IEEE 754 binary32 */
    EML_PREDICT_U8,  /* one byte b per value, read as b * (1/255.0f) */
} eml_predict_dtype;

typedef struct eml_predict_input {
    float *x;    /* (n, item), owned */
    size_t n;    /* instances, 1 .. max_instances */
    size_t item; /* values per instance */
    eml_predict_form form;
} eml_predict_input;

/* Decodes req's body by its Content-Type and X-Tensor-Dtype.  On error
 * *http_status is 400 or 415 (EML_ERR_NOMEM: 500) and out is empty. */
EML_MUST_CHECK eml_status eml_predict_decode(const eml_http_request *req,
                                             size_t item,
                                             size_t max_instances,
                                             eml_predict_input *out,
                                             int *http_status, eml_err *err);
/* The JSON form alone (every error is a 400 but EML_ERR_NOMEM). */
EML_MUST_CHECK eml_status eml_predict_decode_json(const void *body,
                                                  size_t len, size_t item,
                                                  size_t max_instances,
                                                  eml_predict_input *out,
                                                  eml_err *err);
/* The octet-stream form alone. */
EML_MUST_CHECK eml_status eml_predict_decode_raw(const void *body, size_t len,
                                                 eml_predict_dtype dtype,
                                                 size_t item,
                                                 size_t max_instances,
                                                 eml_predict_input *out,
                                                 eml_err *err);
void eml_predict_input_free(eml_predict_input *in);

/* Appends the answer for p (n, n_out) to body: {"predictions": [[...],
 * ...]} (ROWS), {"outputs": [[...], ...]} (COLUMNS), each value printed
 * in the fewest digits that read back as the same float32; or n * n_out
 * little-endian float32 (RAW).  *content_type is the matching media type.
 * EML_ERR_RANGE for a value that is not finite or a body that does not
 * fit. */
EML_MUST_CHECK eml_status eml_predict_encode(eml_http_buf *body,
                                             eml_predict_form form,
                                             const float *p, size_t n,
                                             size_t n_out,
                                             const char **content_type,
                                             eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
