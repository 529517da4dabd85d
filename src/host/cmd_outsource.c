/*
 * cmd_outsource.c - `--outsource ADDR [--outsource-mode M]` for train,
 * eval and predict in this process: the connection to the worker
 * (worker_link.c), the verifying client (src/outsource/client.c) at the
 * net's dispatch point, the run's outsourcing figures, and the one error
 * line of a product that failed verification.  Host side.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "host/cli.h"
#include "host/cmd_outsource.h"

#define WORKER_TIMEOUT_MS 30000

#define cpu_seconds eml_cpu_seconds

int eml_outsourced_begin(const eml_common_opts *c, eml_net *net,
                         int training, eml_outsourced *o)
{
    memset(o, 0, sizeof(*o));
    o->cpu0 = cpu_seconds();
    if (c->outsource == NULL) return 0;
    eml_err err = {0};
    /* The mode first: nothing is sent for a mode this build lacks. */
    eml_status st =
        eml_outsource_mode_check((eml_outsource_mode)c->outsource_mode,
                                 training, &err);
    if (st == EML_OK)
        st = eml_worker_connect(c->outsource, WORKER_TIMEOUT_MS, &o->conn,
                                &err);
    if (st == EML_OK) {
        o->link = eml_worker_conn_link(o->conn);
        st = eml_outsource_new(&o->link,
                               (eml_outsource_mode)c->outsource_mode,
                               &o->client, &err);
    }
    if (st != EML_OK) {
        eml_outsourced_end(o);
        return eml_fail_st(st, &err);
    }
    eml_outsource_set_min_intensity(o->client, c->outsource_min_intensity);
    eml_outsource_attach(o->client, eml_net_gemm(net));
    o->cpu0 = cpu_seconds();
    return 0;
}

void eml_outsourced_stop(eml_outsourced *o)
{
    o->cpu1 = cpu_seconds();
}

void eml_outsourced_end(eml_outsourced *o)
{
    eml_outsource_free(o->client);
    eml_worker_disconnect(o->conn);
    o->client = NULL;
    o->conn = NULL;
}

void eml_outsourced_json(const eml_outsourced *o, const eml_common_opts *c,
                         eml_json *j)
{
    if (o->client == NULL) return;
    const eml_outsource_stats *s = eml_outsource_stats_of(o->client);
    eml_json_str(j, "worker", c->outsource);
    eml_json_str(j, "outsource_mode",
                 c->outsource_mode == EML_OUTSOURCE_PRIVATE ? "private"
                                                            : "integrity");
    eml_json_int(j, "outsourced_products", (long long)s->outsourced_products);
    eml_json_int(j, "verified_products", (long long)s->verified_products);
    eml_json_int(j, "local_products", (long long)s->local_products);
    eml_json_num(j, "outsource_min_intensity", c->outsource_min_intensity);
    eml_json_num(j, "enclave_cpu_seconds", o->cpu1 - o->cpu0);
    if (c->outsource_mode == EML_OUTSOURCE_PRIVATE)
        eml_json_num(j, "precompute_cpu_seconds", s->pad_seconds);
    eml_json_num(j, "worker_seconds", s->worker_seconds);
    eml_json_int(j, "bytes_to_worker", (long long)s->bytes_to_worker);
    eml_json_int(j, "bytes_from_worker", (long long)s->bytes_from_worker);
}

int eml_outsourced_fail(const eml_outsourced *o, eml_status st, eml_err *err)
{
    if (o->client != NULL && eml_outsource_error(o->client)[0] != '\0')
        return eml_fail("%s", eml_outsource_error(o->client));
    return eml_fail_st(st, err);
}
