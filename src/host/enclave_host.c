/*
 * enclave_host.c - starting the enclave and making its ecalls (see
 * enclave_host.h), serving the ocalls that come meanwhile through the
 * table in enclave_ocalls.c.  Untrusted side.
 * What the enclave sends is decoded with the same codec and table as the
 * enclave decodes what we send (boundary.h), and an ecall's reply must
 * carry the ecall's seq: a compromised or buggy enclave program must not
 * crash the host either.
 */
#define _GNU_SOURCE 1 /* memfd_create */
#include "host/enclave_host.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "enclaveml/crypto.h"
#include "enclaveml/ledger.h"
#include "host/fileio.h"
#include "sim/counter.h"
#include "sim/measure.h"
#include "sim/platform.h"

eml_status eml_backend_parse(const char *s, eml_backend *out)
{
    if (strcmp(s, "sim") == 0) *out = EML_BACKEND_SIM;
    else if (strcmp(s, "none") == 0) *out = EML_BACKEND_NONE;
    else return EML_ERR_INVALID;
    return EML_OK;
}

eml_status eml_enclave_path(char *out, size_t cap, eml_err *err)
{
    const char *env = getenv("ENCLAVEML_ENCLAVE");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, cap, "%s", env);
        return EML_OK;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return eml_err_set(err, EML_ERR_IO, "cannot find this program: %s",
                           strerror(errno));
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL) *slash = '\0';
    snprintf(out, cap, "%s/enclaveml-enclave", self);
    if (access(out, X_OK) != 0)
        return eml_err_set(err, EML_ERR_NOTFOUND,
                           "%s not found (set ENCLAVEML_ENCLAVE)", out);
    return EML_OK;
}

/* Decodes an ERROR frame from the enclave into err. */
static eml_status enclave_error(const uint8_t *p, size_t n, eml_err *err)
{
    eml_reply_error m;
    eml_err ignore = {0};
    if (eml_boundary_decode(EML_MSG_ERROR, p, n, &m, sizeof(m), &ignore) !=
        EML_OK)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "malformed error from the enclave");
    int64_t sc = (int64_t)m.status;
    eml_status es = sc < 0 && sc > -EML_STATUS_COUNT ? (eml_status)sc
                                                     : EML_ERR_FORMAT;
    /* Printable ASCII only: the text goes to a terminal. */
    char clean[EML_ERRMSG_MAX + 1];
    for (size_t i = 0; i < m.message.n; i++) {
        uint8_t c = m.message.p[i];
        clean[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    clean[m.message.n] = '\0';
    return eml_err_set(err, es, "enclave: %s", clean);
}

/* Reads the MEASURE frame every sim enclave process starts with. */
static eml_status recv_measure(eml_channel *ch, uint8_t meas[32],
                               const char *want_policy, char *files,
                               size_t files_cap, eml_err *err)
{
    uint16_t type;
    const uint8_t *p;
    size_t n;
    eml_status st = eml_msg_recv(ch, &type, &p, &n);
    if (st != EML_OK)
        return eml_err_set(err, st, "the enclave did not start (%s)",
                           eml_status_str(st));
    if (type == EML_MSG_ERROR) return enclave_error(p, n, err);
    if (type != EML_MSG_MEASURE)
        return eml_err_set(err, EML_ERR_FORMAT,
                           "the enclave started with %s, not MEASURE",
                           eml_msg_type_name(type));
    eml_notify_measure m;
    st = eml_boundary_decode(type, p, n, &m, sizeof(m), err);
    if (st != EML_OK) return st;
    memcpy(meas, m.measurement, 32);
    if (m.policy.n != strlen(want_policy) ||
        memcmp(m.policy.p, want_policy, m.policy.n) != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "the enclave runs another policy than asked for");
    if (files != NULL && files_cap > 0) {
        size_t k = 0;
        for (size_t i = 0; i < m.files.n && k + 1 < files_cap; i++) {
            uint8_t c = m.files.p[i];
            if ((c >= 0x20 && c < 0x7f) || c == '\n') files[k++] = (char)c;
        }
        files[k] = '\0';
    }
    return EML_OK;
}

/* Starts the enclave program with fd as its fd 3 and bulk_fd (or none:
 * -1) as fd 4, an empty environment and the given arguments. */
static eml_status spawn(const char *path, int fd, int bulk_fd,
                        char *const argv[], pid_t *out, eml_err *err)
{
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return eml_err_set(err, EML_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* A host killed outright (SIGKILL) takes its enclave with it,
         * rather than leaving it training for nobody. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(125);
        /* The channel becomes fd 3 and the bulk region fd 4 (dup2 clears
         * close-on-exec); both go out of the way first, since either may
         * already sit at 3 or 4. */
        int cfd = fcntl(fd, F_DUPFD, 10);
        int bfd = bulk_fd >= 0 ? fcntl(bulk_fd, F_DUPFD, 10) : -1;
        if (cfd < 0 || dup2(cfd, 3) < 0 ||
            (bulk_fd >= 0 && (bfd < 0 || dup2(bfd, 4) < 0)))
            _exit(126);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            if (devnull > 3) close(devnull);
        }
        int first = bulk_fd >= 0 ? 5 : 4;
        if (close_range((unsigned)first, ~0U, 0) != 0) {
            long maxfd = sysconf(_SC_OPEN_MAX);
            for (long i = first;
                 i < (maxfd > 0 && maxfd < 65536 ? maxfd : 1024); i++)
                close((int)i);
        }
        /* Nothing of the host's environment reaches the enclave: it gets
         * its own fixed one, which it would otherwise set by executing
         * itself a second time. */
        char *const envp[] = {EML_SIM_ENCLAVE_ENV, NULL};
        execve(path, argv, envp);
        _exit(127);
    }
    *out = pid;
    return EML_OK;
}

/* The measurement of backend none: the code that runs it is this host
 * process, so its own executable mappings, with its policy. */
static eml_status measure_none(unsigned heap_mb, uint8_t out[32],
                               char *policy, size_t policy_cap, char *files,
                               size_t files_cap, eml_err *err)
{
    eml_measured *ms = malloc(sizeof(*ms));
    if (ms == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    eml_policy_string(policy, policy_cap, "none", heap_mb);
    eml_status st = eml_measure_self(ms, err);
    if (st == EML_OK) st = eml_measure_of(out, ms, policy);
    if (st == EML_OK && files != NULL &&
        eml_measure_list(files, files_cap, ms) == 0 && files_cap > 0)
        files[0] = '\0';
    free(ms);
    return st;
}

eml_status eml_host_measure(eml_backend backend, unsigned heap_mb,
                            uint8_t out[32], char *policy, size_t policy_cap,
                            char *files, size_t files_cap, eml_err *err)
{
    if (backend == EML_BACKEND_NONE)
        return measure_none(heap_mb, out, policy, policy_cap, files,
                            files_cap, err);
    /* The enclave program measures itself as it would run (its own
     * mappings, as the loader made them): nothing here is trusted to
     * predict what it loads. */
    char path[PATH_MAX], heap[16];
    eml_status st = eml_enclave_path(path, sizeof(path), err);
    if (st != EML_OK) return st;
    eml_policy_string(policy, policy_cap, "sim", heap_mb);
    snprintf(heap, sizeof(heap), "%u", heap_mb);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return eml_err_set(err, EML_ERR_IO, "socketpair: %s", strerror(errno));
    char *argv[] = {"enclaveml-enclave", "--measure", "--fd", "3",
                    "--heap-mb", heap, NULL};
    pid_t pid = -1;
    st = spawn(path, sv[1], -1, argv, &pid, err);
    close(sv[1]);
    if (st == EML_OK) {
        eml_channel ch;
        eml_channel_init(&ch, sv[0]);
        st = recv_measure(&ch, out, policy, files, files_cap, err);
        eml_channel_free(&ch);
    }
    close(sv[0]);
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (st == EML_OK && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
            st = eml_err_set(err, EML_ERR_IO,
                             "the enclave program failed to measure itself "
                             "(status 0x%x)", status);
    }
    return st;
}

/* ==== trace ==== */

static void trace_tap(void *user, int outgoing, const uint8_t *p, size_t n)
{
    (void)outgoing;
    FILE *f = user;
    fwrite(p, 1, n, f);
}

/* ==== backend none: the runtime on a thread ==== */

typedef struct none_ctx {
    pthread_t tid;
    eml_enclave *e;
    int fd;
    eml_sim_counter counter;
} none_ctx;

static void *none_main(void *arg)
{
    none_ctx *c = arg;
    if (eml_enclave_serve(c->e, c->fd) != EML_OK) {
        /* the host sees the channel close */
    }
    close(c->fd);
    return NULL;
}

/* The runtime with the none platform's own key file and counter: the host
 * process never holds the sim platform's secrets. */
static eml_status start_none(eml_enclave_host *h, int fd, uint8_t meas[32],
                             eml_err *err)
{
    eml_platform plat;
    memset(&plat, 0, sizeof(plat));
    char cpath[4400];
    none_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) return eml_err_set(err, EML_ERR_NOMEM, "out of memory");
    c->counter.fd = -1;
    eml_status st = measure_none(h->opts.heap_mb, plat.measurement,
                                 plat.policy, sizeof(plat.policy), NULL, 0,
                                 err);
    if (st == EML_OK)
        st = eml_platform_provision(h->home, EML_PLATFORM_NONE, err);
    if (st == EML_OK)
        st = eml_platform_load(h->home, EML_PLATFORM_NONE, &plat, err);
    if (st == EML_OK) {
        eml_sim_counter_path(cpath, sizeof(cpath), h->home, plat.measurement);
        st = eml_sim_counter_open(&c->counter, cpath, err);
    }
    if (st == EML_OK) plat.counter = eml_sim_counter_ops(&c->counter);
    plat.sim = 1;
    memcpy(meas, plat.measurement, 32);
    if (st == EML_OK) st = eml_enclave_new(&plat, &c->e);
    eml_wipe(&plat, sizeof(plat));
    if (st != EML_OK) {
        eml_sim_counter_close(&c->counter);
        free(c);
        return eml_err_set(err, st, "cannot start the in-process enclave");
    }
    c->fd = fd;
    eml_enclave_set_bulk(c->e, h->bulk, EML_BULK_BYTES);
    if (pthread_create(&c->tid, NULL, none_main, c) != 0) {
        eml_enclave_free(c->e);
        eml_sim_counter_close(&c->counter);
        free(c);
        return eml_err_set(err, EML_ERR_IO, "cannot start a thread");
    }
    h->thread = c;
    return EML_OK;
}

/* ==== backend sim: the sandboxed process ==== */

static eml_status start_sim(eml_enclave_host *h, int fd, eml_err *err)
{
    char path[PATH_MAX];
    eml_status st = eml_enclave_path(path, sizeof(path), err);
    if (st != EML_OK) return st;
    char heap[16], threads[16];
    snprintf(heap, sizeof(heap), "%u", h->opts.heap_mb);
    /* 0 (a command's default): every online CPU; the enclave program
     * takes 1 to 1024 */
    long nt = h->opts.threads > 0 ? h->opts.threads
                                  : sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(threads, sizeof(threads), "%ld",
             nt < 1 ? 1 : nt > 1024 ? 1024 : nt);
    char *argv[] = {"enclaveml-enclave", "--fd", "3", "--home", h->home,
                    "--heap-mb", heap, "--threads", threads, "--bulk-fd", "4",
                    NULL};
    st = spawn(path, fd, h->bulk_fd, argv, &h->pid, err);
    if (st == EML_OK) close(fd);
    return st;
}

long eml_enclave_host_peak_rss_kib(const eml_enclave_host *h)
{
    return h->pid > 0 ? eml_peak_rss_kib((long)h->pid) : 0;
}

/* ==== ecalls ==== */

eml_status eml_host_call_frame(eml_enclave_host *h, eml_msg *m,
                               uint16_t want, eml_msg_reader *r,
                               eml_err *err)
{
    eml_status st = eml_msg_send(&h->ch, m);
    if (st != EML_OK)
        return eml_err_set(err, st, "the enclave is not reachable");
    uint32_t seq = h->ch.sent_seq;
    for (;;) {
        uint16_t type;
        const uint8_t *p;
        size_t n;
        st = eml_msg_recv(&h->ch, &type, &p, &n);
        if (st != EML_OK)
            return eml_err_set(err, st,
                               "the enclave stopped answering (%s)",
                               eml_status_str(st));
        eml_msg_reader_init(r, p, n);
        if (eml_msg_desc_of(type)->kind != EML_MSG_KIND_REPLY) {
            st = eml_host_serve_ocall(h, type, p, n, err);
            if (st != EML_OK) return st;
            continue;
        }
        if (type != want && type != EML_MSG_ERROR)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "protocol error: unexpected or malformed %s "
                               "from the enclave",
                               eml_msg_type_name(type));
        if (h->ch.recv_seq != seq)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "protocol error: the enclave's %s answers "
                               "request %u, not %s %u",
                               eml_msg_type_name(type),
                               (unsigned)h->ch.recv_seq,
                               eml_msg_type_name(m->type), (unsigned)seq);
        if (type == EML_MSG_ERROR) return enclave_error(p, n, err);
        return EML_OK;
    }
}

eml_status eml_host_call(eml_enclave_host *h, uint16_t type, const void *req,
                         size_t req_size, void *reply_msg, size_t reply_size,
                         eml_err *err)
{
    const eml_msg_desc *d = eml_msg_desc_of(type);
    if (d == NULL || d->kind != EML_MSG_KIND_ECALL)
        return eml_err_set(err, EML_ERR_INVALID, "%s is not an ecall",
                           eml_msg_type_name(type));
    eml_msg m;
    eml_msg_reader r;
    eml_status st = eml_boundary_encode(type, req, req_size, &m, err);
    if (st != EML_OK) return st;
    st = eml_host_call_frame(h, &m, d->reply, &r, err);
    eml_msg_free(&m);
    if (st != EML_OK) return st;
    return eml_boundary_decode(d->reply, r.p, r.len, reply_msg, reply_size,
                               err);
}

/* ==== start / stop ==== */

static void sealed_path(const eml_enclave_host *h, const uint8_t meas[32],
                        char *out, size_t cap)
{
    char hex[65];
    eml_hex(hex, meas, 32);
    snprintf(out, cap, "%s/sealed-%s.bin", h->home, hex);
}

static void bulk_free(eml_enclave_host *h)
{
    if (h->bulk != NULL) munmap(h->bulk, EML_BULK_BYTES);
    if (h->bulk_fd >= 0) close(h->bulk_fd);
    h->bulk = NULL;
    h->bulk_fd = -1;
}

eml_status eml_host_start(eml_enclave_host *h, const eml_host_opts *o,
                          eml_err *err)
{
    memset(h, 0, sizeof(*h));
    h->opts = *o;
    h->out_fd = -1;
    h->pid = -1;
    h->bulk_fd = -1;
    /* The host provisions the sim platform's key files but never reads
     * the secret one: only the enclave process does. */
    eml_status st = eml_platform_home(h->home, sizeof(h->home), err);
    if (st == EML_OK) st = eml_platform_provision(h->home, EML_PLATFORM_SIM, err);
    if (st != EML_OK) return st;
    uint8_t meas[32];
    eml_policy_string(h->policy, sizeof(h->policy),
                      o->backend == EML_BACKEND_SIM ? "sim" : "none",
                      o->heap_mb);

    /* The bulk region: shared memory both sides map. */
    h->bulk_fd = memfd_create("enclaveml-bulk", MFD_CLOEXEC);
    void *bulk = MAP_FAILED;
    if (h->bulk_fd >= 0 &&
        ftruncate(h->bulk_fd, (off_t)EML_BULK_BYTES) == 0)
        bulk = mmap(NULL, EML_BULK_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED,
                    h->bulk_fd, 0);
    if (bulk == MAP_FAILED) {
        st = eml_err_set(err, EML_ERR_IO, "bulk region: %s", strerror(errno));
        bulk_free(h);
        return st;
    }
    h->bulk = bulk;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        st = eml_err_set(err, EML_ERR_IO, "socketpair: %s", strerror(errno));
        bulk_free(h);
        return st;
    }
    /* The child's end must survive exec: clear CLOEXEC on it there. */
    if (o->backend == EML_BACKEND_SIM) {
        int flags = fcntl(sv[1], F_GETFD);
        fcntl(sv[1], F_SETFD, flags & ~FD_CLOEXEC);
        st = start_sim(h, sv[1], err);
    } else {
        st = start_none(h, sv[1], meas, err);
    }
    if (st != EML_OK) {
        close(sv[0]);
        close(sv[1]);
        bulk_free(h);
        return st;
    }
    signal(SIGPIPE, SIG_IGN);
    eml_channel_init(&h->ch, sv[0]);
    const char *trace = getenv("ENCLAVEML_TRACE");
    if (trace != NULL && trace[0] != '\0') {
        h->trace = fopen(trace, "ab");
        if (h->trace == NULL) {
            st = eml_err_set(err, EML_ERR_IO, "ENCLAVEML_TRACE %s: %s", trace,
                             strerror(errno));
            eml_host_stop(h);
            return st;
        }
        h->ch.tap = trace_tap;
        h->ch.tap_user = h->trace;
    }

    /* Which sealed blob to offer: the one for the measurement the enclave
     * announces (it checks the blob anyway). */
    if (o->backend == EML_BACKEND_SIM) {
        st = recv_measure(&h->ch, meas, h->policy, NULL, 0, err);
        if (st != EML_OK) {
            eml_host_stop(h);
            return st;
        }
    }
    char spath[4400];
    sealed_path(h, meas, spath, sizeof(spath));
    uint8_t *blob = NULL;
    size_t blen = 0;
    eml_err ignore = {0};
    if (access(spath, F_OK) == 0 &&
        eml_file_read(spath, &blob, &blen, &ignore) != EML_OK) {
        blob = NULL;
        blen = 0;
    }
    eml_ecall_init q = {{blob, blen}};
    eml_reply_init_ok a;
    st = eml_host_call(h, EML_MSG_INIT, &q, sizeof(q), &a, sizeof(a), err);
    free(blob);
    if (st == EML_OK) {
        memcpy(h->measurement, a.measurement, 32);
        memcpy(h->x_pk, a.x25519_pk, 32);
        memcpy(h->ed_pk, a.ed25519_pk, 32);
    }
    if (st == EML_OK && memcmp(h->measurement, meas, 32) != 0)
        st = eml_err_set(err, EML_ERR_AUTH,
                         "the enclave reports another measurement than it "
                         "announced at start");
    if (st == EML_OK && a.sealed_identity.n > 0)
        st = eml_file_write_atomic(spath, a.sealed_identity.p,
                                   a.sealed_identity.n, 0600, err);
    if (st != EML_OK) {
        eml_host_stop(h);
        return st;
    }
    return EML_OK;
}

void eml_host_stop(eml_enclave_host *h)
{
    h->node = NULL; /* a node's notes while it stops are not news */
    if (h->ch.fd > 0) {
        eml_err ignore = {0};
        if (eml_host_call(h, EML_MSG_SHUTDOWN, NULL, 0, NULL, 0, &ignore) !=
            EML_OK) {
            /* already gone: waitpid below collects it */
        }
        close(h->ch.fd);
        h->ch.fd = -1;
    }
    eml_channel_free(&h->ch);
    if (h->pid > 0) {
        int status;
        while (waitpid(h->pid, &status, 0) < 0 && errno == EINTR) {
        }
        h->pid = -1;
    }
    if (h->thread != NULL) {
        none_ctx *c = h->thread;
        pthread_join(c->tid, NULL);
        eml_enclave_free(c->e);
        eml_sim_counter_close(&c->counter);
        free(c);
        h->thread = NULL;
    }
    if (h->trace != NULL) {
        fclose(h->trace);
        h->trace = NULL;
    }
    bulk_free(h);
    for (size_t i = 0; i < h->files.n; i++)
        if (h->files.fds != NULL && h->files.fds[i] >= 0) close(h->files.fds[i]);
}
