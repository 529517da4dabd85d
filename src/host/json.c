/*
 * json.c - streaming JSON writer used by --json (host side).  Numbers are
 * printed with enough digits to round-trip a double; non-finite numbers
 * become null, since JSON has no NaN.
 */
#include "host/json.h"

#include <math.h>

static void sep(eml_json *j)
{
    if (!j->first[j->depth]) fputc(',', j->f);
    j->first[j->depth] = 0;
}

static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void key(eml_json *j, const char *k)
{
    sep(j);
    if (k != NULL) {
        put_string(j->f, k);
        fputc(':', j->f);
    }
}

static void push(eml_json *j, char c)
{
    fputc(c, j->f);
    if (j->depth < 31) j->depth++;
    j->first[j->depth] = 1;
}

void eml_json_begin(eml_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->first[0] = 1;
    push(j, '{');
}

void eml_json_end(eml_json *j)
{
    fputs("}\n", j->f);
    fflush(j->f);
}

void eml_json_key(eml_json *j, const char *k) { key(j, k); }

void eml_json_num(eml_json *j, const char *k, double v)
{
    key(j, k);
    if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void eml_json_int(eml_json *j, const char *k, long long v)
{
    key(j, k);
    fprintf(j->f, "%lld", v);
}

void eml_json_str(eml_json *j, const char *k, const char *v)
{
    key(j, k);
    put_string(j->f, v);
}

void eml_json_bool(eml_json *j, const char *k, int v)
{
    key(j, k);
    fputs(v ? "true" : "false", j->f);
}

void eml_json_array_begin(eml_json *j, const char *k)
{
    key(j, k);
    push(j, '[');
}

void eml_json_array_end(eml_json *j)
{
    fputc(']', j->f);
    if (j->depth > 0) j->depth--;
}

void eml_json_object_begin(eml_json *j, const char *k)
{
    key(j, k);
    push(j, '{');
}

void eml_json_object_end(eml_json *j)
{
    fputc('}', j->f);
    if (j->depth > 0) j->depth--;
}
