/*
 * metrics.c - the inference server's counters in Prometheus' text
 * exposition format, version 0.0.4 (http.h, "metrics"), for GET /metrics.
 *
 * Trusted code: memory only, no I/O, no clock (the server measures the
 * seconds it reports).  The struct is plain: the server updates it under
 * its own lock and renders a copy.  Every family has its HELP and TYPE
 * lines; every sample line is `name{labels} value` or `name value`.  The
 * names, buckets and meanings are listed in docs/serve.md, "HTTP".
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "enclaveml/http.h"

/* Upper bounds of the buckets, as printed in `le`; the last is +Inf. */
static const double latency_le[EML_METRICS_LATENCY_BUCKETS - 1] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,  0.5,    1,     2.5,  5,     10,
};
static const char *const latency_txt[EML_METRICS_LATENCY_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",   "+Inf",
};
static const size_t batch_le[EML_METRICS_BATCH_BUCKETS - 1] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256,
};
static const char *const batch_txt[EML_METRICS_BATCH_BUCKETS] = {
    "1", "2", "4", "8", "16", "32", "64", "128", "256", "+Inf",
};

void eml_metrics_init(eml_metrics *m)
{
    memset(m, 0, sizeof(*m));
}

void eml_metrics_request(eml_metrics *m, int status, double seconds)
{
    size_t b = 0;
    if (status >= 100 && status <= 599) m->requests[status - 100]++;
    if (!isfinite(seconds) || seconds < 0) seconds = 0;
    while (b < EML_METRICS_LATENCY_BUCKETS - 1 && seconds > latency_le[b])
        b++;
    m->latency[b]++;
    m->latency_sum += seconds;
    m->latency_count++;
}

void eml_metrics_batch(eml_metrics *m, size_t batch)
{
    size_t b = 0;
    while (b < EML_METRICS_BATCH_BUCKETS - 1 && batch > batch_le[b]) b++;
    m->batch[b]++;
    m->batch_sum += batch;
    m->batch_count++;
}

static eml_status family(eml_http_buf *o, const char *name, const char *type,
                         const char *help, eml_err *err)
{
    return eml_http_buf_printf(o, err, "# HELP %s %s\n# TYPE %s %s\n", name,
                               help, name, type);
}

/* The _bucket lines (cumulative), then _sum and _count. */
static eml_status histogram(eml_http_buf *o, const char *name,
                            const uint64_t *counts, const char *const *le,
                            size_t n, const char *sum, uint64_t count,
                            eml_err *err)
{
    uint64_t acc = 0;
    eml_status st = EML_OK;
    for (size_t i = 0; st == EML_OK && i < n; i++) {
        acc += counts[i];
        st = eml_http_buf_printf(o, err, "%s_bucket{le=\"%s\"} %llu\n", name,
                                 le[i], (unsigned long long)acc);
    }
    if (st == EML_OK)
        st = eml_http_buf_printf(o, err, "%s_sum %s\n%s_count %llu\n", name,
                                 sum, name, (unsigned long long)count);
    return st;
}

/* A gauge (signed) or a counter (unsigned), one sample. */
static eml_status scalar(eml_http_buf *o, const char *name, const char *help,
                         int gauge, int64_t g, uint64_t c, eml_err *err)
{
    eml_status st =
        family(o, name, gauge ? "gauge" : "counter", help, err);
    if (st == EML_OK && gauge)
        st = eml_http_buf_printf(o, err, "%s %lld\n", name, (long long)g);
    else if (st == EML_OK)
        st = eml_http_buf_printf(o, err, "%s %llu\n", name,
                                 (unsigned long long)c);
    return st;
}

static eml_status requests(eml_http_buf *o, const eml_metrics *m,
                           eml_err *err)
{
    eml_status st = family(o, "enclaveml_requests_total", "counter",
                           "HTTP requests answered, by status code.", err);
    for (int i = 0; st == EML_OK && i < 500; i++)
        if (m->requests[i] > 0)
            st = eml_http_buf_printf(o, err,
                                     "enclaveml_requests_total{code=\"%d\"} "
                                     "%llu\n", i + 100,
                                     (unsigned long long)m->requests[i]);
    return st;
}

eml_status eml_metrics_render(const eml_metrics *m, eml_http_buf *out,
                              eml_err *err)
{
    size_t mark = out->len;
    char sum[40];
    double s = isfinite(m->latency_sum) ? m->latency_sum : 0;
    eml_status st = requests(out, m, err);

    snprintf(sum, sizeof(sum), "%.17g", s);
    if (st == EML_OK)
        st = family(out, "enclaveml_request_seconds", "histogram",
                    "Seconds from a request's last byte to its answer.",
                    err);
    if (st == EML_OK)
        st = histogram(out, "enclaveml_request_seconds", m->latency,
                       latency_txt, EML_METRICS_LATENCY_BUCKETS, sum,
                       m->latency_count, err);
    snprintf(sum, sizeof(sum), "%llu", (unsigned long long)m->batch_sum);
    if (st == EML_OK)
        st = family(out, "enclaveml_batch_size", "histogram",
                    "Examples per batch run through the model.", err);
    if (st == EML_OK)
        st = histogram(out, "enclaveml_batch_size", m->batch, batch_txt,
                       EML_METRICS_BATCH_BUCKETS, sum, m->batch_count, err);
    if (st == EML_OK)
        st = scalar(out, "enclaveml_queue_depth",
                    "Requests waiting for a worker.", 1, m->queue_depth, 0,
                    err);
    if (st == EML_OK)
        st = scalar(out, "enclaveml_connections",
                    "Client connections open now.", 1, m->connections, 0,
                    err);
    if (st == EML_OK)
        st = scalar(out, "enclaveml_tls_handshake_failures_total",
                    "TLS handshakes that failed.", 0, 0,
                    m->tls_handshake_failures, err);
    if (st == EML_OK)
        st = scalar(out, "enclaveml_stream_malformed_total",
                    "Queue stream entries refused as malformed.", 0, 0,
                    m->stream_malformed, err);
    if (st != EML_OK) out->len = mark;
    return st;
}
