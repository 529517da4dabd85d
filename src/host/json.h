/*
 * json.h - a tiny streaming JSON writer for --json output (host side).
 *
 *     eml_json j; eml_json_begin(&j, stdout);
 *     eml_json_num(&j, "test_accuracy", 0.91);
 *     eml_json_key(&j, "outputs"); eml_json_array_begin(&j); ... end
 *     eml_json_end(&j);            // prints "}\n"
 */
#ifndef EML_HOST_JSON_H
#define EML_HOST_JSON_H

#include <stdio.h>

typedef struct eml_json {
    FILE *f;
    int depth;
    int first[32];
} eml_json;

void eml_json_begin(eml_json *j, FILE *f);
void eml_json_end(eml_json *j);
void eml_json_key(eml_json *j, const char *key); /* then a value or array */
void eml_json_num(eml_json *j, const char *key, double v); /* key may be NULL in arrays */
void eml_json_int(eml_json *j, const char *key, long long v);
void eml_json_str(eml_json *j, const char *key, const char *v);
void eml_json_bool(eml_json *j, const char *key, int v);
void eml_json_array_begin(eml_json *j, const char *key);
void eml_json_array_end(eml_json *j);
void eml_json_object_begin(eml_json *j, const char *key);
void eml_json_object_end(eml_json *j);
#endif
