/*
 * flatjson.h - a strict parser for flat JSON objects (string, number and
 * boolean members only), enough for enclaveml's signed reports.  Trusted
 * code (the enclave checks attestation reports with it): memory only, no
 * I/O; a libFuzzer target covers it.  It runs on enclaveml's one strict
 * JSON reader (src/formats/flatjson.c), the one that also reads safetensors
 * headers: strings are valid UTF-8 without NUL, numbers follow JSON's
 * grammar and are finite, and duplicate keys, null, nesting and trailing
 * bytes are errors.
 *
 *     eml_flatjson j;
 *     if (eml_flatjson_parse(text, len, &j, &err) != EML_OK) ...
 *     const char *m = eml_flatjson_str(&j, "measurement");
 *     double acc; eml_flatjson_num(&j, "test_accuracy", &acc);
 *     eml_flatjson_free(&j);
 */
#ifndef ENCLAVEML_FLATJSON_H
#define ENCLAVEML_FLATJSON_H

#include <stddef.h>

#include "enclaveml/status.h"

#define EML_FLATJSON_MAX_MEMBERS 64
#define EML_FLATJSON_MAX_TEXT ((size_t)1 << 20)

typedef enum { EML_JSON_STRING, EML_JSON_NUMBER, EML_JSON_BOOL } eml_json_kind;

typedef struct eml_flatjson_member {
    char *key;
    eml_json_kind kind;
    char *str;     /* EML_JSON_STRING (NUL-free, decoded) */
    double num;    /* EML_JSON_NUMBER */
    int boolean;   /* EML_JSON_BOOL */
} eml_flatjson_member;

typedef struct eml_flatjson {
    size_t n;
    eml_flatjson_member m[EML_FLATJSON_MAX_MEMBERS];
} eml_flatjson;

EML_MUST_CHECK eml_status eml_flatjson_parse(const char *text, size_t len,
                                             eml_flatjson *out, eml_err *err);
void eml_flatjson_free(eml_flatjson *j);
/* NULL if absent or not a string. */
const char *eml_flatjson_str(const eml_flatjson *j, const char *key);
/* 0 on success, -1 if absent or not a number / boolean. */
int eml_flatjson_num(const eml_flatjson *j, const char *key, double *out);
int eml_flatjson_bool(const eml_flatjson *j, const char *key, int *out);
#endif
