/*
 * bench_mirror.c - saving and restoring a training state through the
 * sealed mirror (mirror.h) against the disk checkpoint, measured in one run
 * (the comparison Plinius makes: 3.2x faster saves, 3.7x faster restores
 * with a persistent-memory mirror than with SSD checkpoints).
 *
 *   bench_mirror [--sizes 1,10,100] [--reps N] [--dir DIR] [--json]
 *
 * A state of P million parameters is P floats of weights, P floats of
 * momentum and 64 bytes of scalars (three segments).  For each size:
 *   (a) pm-shm:     the mirror on a libpmem2 pool in /dev/shm (emulated PM);
 *   (b) pm-disk:    the mirror on a pool file in DIR (msync'd page cache);
 *   (c) checkpoint: the same sealed format written to DIR/F.tmp, fsync'd,
 *                   renamed over DIR/F.
 * save = eml_mirror_save; restore = open the store, eml_mirror_new,
 * eml_mirror_load, with fresh objects each time, as a restarted process
 * would.  Two untimed saves first (they create the store and touch both
 * slots), then medians of N saves and N restores (at most 3 for states of
 * 400 MB and more).  Every restore is checked byte for byte.
 *
 * DIR defaults to $TMPDIR, else the build directory.  The files are removed
 * at the end, on an error and on SIGINT/SIGTERM.
 */
#define _GNU_SOURCE 1
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "enclaveml/mirror.h"
#include "host/mirror_store.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef EML_BENCH_BUILD_DIR
#define EML_BENCH_BUILD_DIR "."
#endif

#define MAX_SIZES 8
#define MAX_REPS 50
#define SCALARS_BYTES 64
#define BIG_STATE ((size_t)400 << 20) /* fewer reps from here on */
#define PAPER_SAVE 3.2
#define PAPER_RESTORE 3.7

typedef enum { ST_SHM, ST_DISK, ST_CKPT, N_STORES } store_id;
static const char *const store_name[N_STORES] = {"pm-shm", "pm-disk",
                                                 "checkpoint"};

/* The files this run creates: removed on every exit. */
static char paths[N_STORES][PATH_MAX - 8];
static char tmp_paths[N_STORES][PATH_MAX];

typedef struct store_result {
    double save, restore;     /* medians, seconds */
    double save_min, restore_min;
    double first_save;        /* the save that creates the store */
    double save_crypto;       /* median AES-GCM seconds of a save */
    double restore_load;      /* median eml_mirror_load alone (its total) */
    double restore_crypto;    /* median AES-GCM seconds of a restore */
    double save_share;        /* median of crypto / total, one save */
    double save_faults;       /* median page faults (minor + major) */
    double restore_faults;
    char mode[200];
} store_result;

typedef struct size_result {
    double mparams;
    size_t params, state_bytes;
    int reps;
    store_result s[N_STORES];
} size_result;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_minflt + ru.ru_majflt);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void remove_files(void)
{
    for (int i = 0; i < N_STORES; i++) {
        if (paths[i][0] != '\0') unlink(paths[i]);
        if (tmp_paths[i][0] != '\0') unlink(tmp_paths[i]);
    }
}

static void on_signal(int sig)
{
    remove_files(); /* unlink is async-signal-safe */
    _exit(128 + sig);
}

/* Weights and momentum that look like a model's: small floats with noisy
 * mantissas (xorshift64), not zeros that compress or dedupe. */
static void fill(float *p, size_t n, uint64_t seed, float scale)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = scale * ((float)(int32_t)(uint32_t)(x >> 32) * 0x1p-31f);
    }
}

static const uint8_t seal_secret[32] = {
    0x6d, 0x69, 0x72, 0x72, 0x6f, 0x72, 0x2d, 0x62, 0x65, 0x6e, 0x63,
    0x68, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x2d, 0x30, 0x31,
    0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x61, 0x62};
static const uint8_t measurement[32] = {
    0x6d, 0x69, 0x72, 0x72, 0x6f, 0x72, 0x2d, 0x62, 0x65, 0x6e, 0x63,
    0x68, 0x2d, 0x6d, 0x65, 0x61, 0x73, 0x75, 0x72, 0x65, 0x6d, 0x65,
    0x6e, 0x74, 0x2d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36};

static eml_mirror_opts mirror_opts(void)
{
    eml_mirror_opts o;
    memset(&o, 0, sizeof(o));
    o.seal_secret = seal_secret;
    o.measurement = measurement;
    memset(o.cfg_digest, 0xc5, sizeof(o.cfg_digest));
    memset(o.data_digest, 0xd7, sizeof(o.data_digest));
    o.every = 1;
    return o;
}

static eml_status open_store(store_id id, eml_store **out, eml_err *err)
{
    return id == ST_CKPT ? eml_store_open_checkpoint(paths[id], out, err)
                         : eml_store_open_pool(paths[id], out, err);
}

/* A restore after a restart reads a disk file from the disk, not from the
 * page cache: drop the file's pages (they are clean after the fsync or
 * msync of the save; POSIX_FADV_DONTNEED needs no privilege). */
static void drop_cache(store_id id)
{
    if (id == ST_SHM) return; /* tmpfs pages are the storage itself */
    int fd = open(paths[id], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static int fail(const char *what, store_id id, eml_status st,
                const eml_err *err)
{
    fprintf(stderr, "bench_mirror: error: %s (%s, %s): %s\n", what,
            store_name[id], paths[id], eml_err_msg(err, st));
    return -1;
}

/* One store, one size: the saves, then the restores. */
static int run_store(store_id id, const eml_seg *src, const eml_seg *dst,
                     int nseg, int reps, store_result *res)
{
    eml_mirror_opts o = mirror_opts();
    eml_store *s = NULL;
    eml_mirror *m = NULL;
    eml_err err = {0};
    double t[MAX_REPS], c[MAX_REPS], share[MAX_REPS], l[MAX_REPS];
    double f[MAX_REPS];
    unlink(paths[id]);
    unlink(tmp_paths[id]);

    eml_status st = open_store(id, &s, &err);
    if (st != EML_OK) return fail("cannot open the store", id, st, &err);
    st = eml_mirror_new(&o, eml_store_ops_of(s), &m, &err);
    if (st != EML_OK) {
        eml_store_close(s);
        return fail("cannot start the mirror", id, st, &err);
    }
    for (int r = -2; r < reps && st == EML_OK; r++) {
        double f0 = faults(), t0 = now();
        st = eml_mirror_save(m, src, nseg, &err);
        double dt = now() - t0;
        if (r >= 0) f[r] = faults() - f0;
        if (r == -2) res->first_save = dt;
        if (r < 0) continue;
        double total, crypto;
        eml_mirror_last_times(m, &total, &crypto);
        t[r] = dt;
        c[r] = crypto;
        share[r] = total > 0 ? crypto / total : 0;
    }
    snprintf(res->mode, sizeof(res->mode), "%s", eml_store_mode(s));
    eml_mirror_free(m);
    eml_store_close(s);
    if (st != EML_OK) return fail("save failed", id, st, &err);
    res->save = median(t, reps);
    res->save_min = t[0]; /* median() sorted t */
    res->save_crypto = median(c, reps);
    res->save_share = median(share, reps);
    res->save_faults = median(f, reps);

    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < nseg; i++) memset(dst[i].p, 0, dst[i].n);
        drop_cache(id);
        int found = 0;
        double f0 = faults(), t0 = now();
        st = open_store(id, &s, &err);
        if (st != EML_OK) return fail("cannot reopen the store", id, st, &err);
        st = eml_mirror_new(&o, eml_store_ops_of(s), &m, &err);
        if (st == EML_OK) st = eml_mirror_load(m, dst, nseg, &found, &err);
        t[r] = now() - t0;
        f[r] = faults() - f0;
        if (st == EML_OK) eml_mirror_last_times(m, &l[r], &c[r]);
        eml_mirror_free(m);
        eml_store_close(s);
        if (st != EML_OK) return fail("restore failed", id, st, &err);
        if (!found)
            return fail("restore found no state", id, EML_ERR_NOTFOUND, &err);
        for (int i = 0; i < nseg; i++)
            if (memcmp(src[i].p, dst[i].p, src[i].n) != 0)
                return fail("restored state differs from the saved one", id,
                            EML_ERR_AUTH, &err);
    }
    res->restore = median(t, reps);
    res->restore_min = t[0];
    res->restore_crypto = median(c, reps);
    res->restore_load = median(l, reps);
    res->restore_faults = median(f, reps);
    unlink(paths[id]);
    unlink(tmp_paths[id]);
    return 0;
}

static int run_size(double mparams, int reps, size_result *res)
{
    memset(res, 0, sizeof(*res));
    res->mparams = mparams;
    res->params = (size_t)(mparams * 1e6 + 0.5);
    size_t nb = res->params * sizeof(float);
    res->state_bytes = 2 * nb + SCALARS_BYTES;
    res->reps = res->state_bytes >= BIG_STATE && reps > 3 ? 3 : reps;
    float *w = malloc(nb), *mom = malloc(nb), *w2 = malloc(nb),
          *mom2 = malloc(nb);
    uint8_t scal[SCALARS_BYTES], scal2[SCALARS_BYTES];
    int rc = -1;
    if (w == NULL || mom == NULL || w2 == NULL || mom2 == NULL) {
        fprintf(stderr, "bench_mirror: error: out of memory for %zu "
                        "parameters\n",
                res->params);
        goto out;
    }
    fill(w, res->params, 0x9e3779b97f4a7c15ull, 0.05f);
    fill(mom, res->params, 0xd1b54a32d192ed03ull, 0.001f);
    for (int i = 0; i < SCALARS_BYTES; i++) scal[i] = (uint8_t)(i * 37 + 11);
    eml_seg src[3] = {{w, nb}, {mom, nb}, {scal, sizeof(scal)}};
    eml_seg dst[3] = {{w2, nb}, {mom2, nb}, {scal2, sizeof(scal2)}};
    for (int id = 0; id < N_STORES; id++)
        if (run_store((store_id)id, src, dst, 3, res->reps, &res->s[id]) != 0)
            goto out;
    rc = 0;
out:
    free(w);
    free(mom);
    free(w2);
    free(mom2);
    return rc;
}

static const char *fs_note(const char *dir)
{
    struct statfs fs;
    if (statfs(dir, &fs) != 0) return "unknown file system";
    return fs.f_type == TMPFS_MAGIC ? "tmpfs: NOT a disk" : "disk";
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_json(const size_result *r, int n, const char *dir)
{
    printf("{\"bench\":\"mirror\",\"dir\":");
    json_str(dir);
    printf(",\"dir_fs\":\"%s\",\"page_cache_dropped\":false,"
           "\"paper\":{\"save\":%.1f,\"restore\":%.1f},\"sizes\":[",
           fs_note(dir), PAPER_SAVE, PAPER_RESTORE);
    for (int i = 0; i < n; i++) {
        const size_result *z = &r[i];
        printf("%s{\"params\":%zu,\"state_bytes\":%zu,\"reps\":%d,", i ? ","
                                                                        : "",
               z->params, z->state_bytes, z->reps);
        for (int id = 0; id < N_STORES; id++) {
            const store_result *s = &z->s[id];
            printf("\"%s\":{\"mode\":", store_name[id]);
            json_str(s->mode);
            printf(",\"save_s\":%.6f,\"restore_s\":%.6f,"
                   "\"save_min_s\":%.6f,\"restore_min_s\":%.6f,"
                   "\"first_save_s\":%.6f,\"save_crypto_s\":%.6f,"
                   "\"restore_load_s\":%.6f,\"restore_crypto_s\":%.6f,"
                   "\"save_crypto_share\":%.4f,\"save_page_faults\":%.0f,"
                   "\"restore_page_faults\":%.0f},",
                   s->save, s->restore, s->save_min,
                   s->restore_min, s->first_save, s->save_crypto,
                   s->restore_load, s->restore_crypto, s->save_share,
                   s->save_faults, s->restore_faults);
        }
        const store_result *a = &z->s[ST_SHM], *b = &z->s[ST_DISK],
                           *c = &z->s[ST_CKPT];
        printf("\"ratio_save_checkpoint_over_pm_shm\":%.3f,"
               "\"ratio_restore_checkpoint_over_pm_shm\":%.3f,"
               "\"ratio_save_checkpoint_over_pm_disk\":%.3f,"
               "\"ratio_restore_checkpoint_over_pm_disk\":%.3f}",
               c->save / a->save, c->restore / a->restore, c->save / b->save,
               c->restore / b->restore);
    }
    printf("]}\n");
}

static void print_table(const size_result *r, int n, const char *dir)
{
    printf("bench_mirror: save and restore of a training state (fp32 "
           "weights + momentum of the same size + %d B of scalars), "
           "AES-256-GCM in 1 MiB chunks\n",
           SCALARS_BYTES);
    for (int id = 0; id < N_STORES; id++)
        printf("  (%c) %-10s %s: %s\n", 'a' + id, store_name[id], paths[id],
               r[0].s[id].mode);
    printf("  directory for (b) and (c): %s (%s)\n", dir, fs_note(dir));
    printf("  save = eml_mirror_save (seal + persist + commit), after two "
           "untimed saves; restore = open the\n"
           "  store + eml_mirror_new + eml_mirror_load with fresh objects, "
           "as a restarted process would; medians\n");
    printf("  restores of disk files start cold: their pages are dropped "
           "from the page cache first\n"
           "  (posix_fadvise DONTNEED), as after a restart; /dev/shm is the "
           "storage itself\n\n");
    printf("  %8s %9s %4s | %-29s | %s\n", "", "", "", "save, ms",
           "restore, ms");
    printf("  %8s %9s %4s | %9s %9s %9s | %9s %9s %9s\n", "params", "state MB",
           "reps", "pm-shm", "pm-disk", "ckpt", "pm-shm", "pm-disk", "ckpt");
    for (int i = 0; i < n; i++) {
        const size_result *z = &r[i];
        printf("  %7gM %9.1f %4d | %9.1f %9.1f %9.1f | %9.1f %9.1f %9.1f\n",
               z->mparams, (double)z->state_bytes / 1e6, z->reps,
               1e3 * z->s[ST_SHM].save, 1e3 * z->s[ST_DISK].save,
               1e3 * z->s[ST_CKPT].save, 1e3 * z->s[ST_SHM].restore,
               1e3 * z->s[ST_DISK].restore, 1e3 * z->s[ST_CKPT].restore);
    }
    printf("\n  checkpoint time / mirror time (Plinius, PM mirror against SSD "
           "checkpoint: save %.1fx, restore %.1fx)\n",
           PAPER_SAVE, PAPER_RESTORE);
    printf("  %8s | %-22s | %-22s | %s\n", "", "save", "restore",
           "AES-GCM in the mirror save");
    printf("  %8s | %6s %7s %7s | %6s %7s %7s | %6s %7s %7s\n", "params",
           "pm-shm", "pm-disk", "paper", "pm-shm", "pm-disk", "paper",
           "pm-shm", "pm-disk", "GB/s");
    for (int i = 0; i < n; i++) {
        const size_result *z = &r[i];
        const store_result *a = &z->s[ST_SHM], *b = &z->s[ST_DISK],
                           *c = &z->s[ST_CKPT];
        printf("  %7gM | %5.1fx %6.1fx %6.1fx | %5.1fx %6.1fx %6.1fx | "
               "%5.0f%% %6.0f%% %7.2f\n",
               z->mparams, c->save / a->save, c->save / b->save, PAPER_SAVE,
               c->restore / a->restore, c->restore / b->restore,
               PAPER_RESTORE, 100 * a->save_share, 100 * b->save_share,
               a->save_crypto > 0
                   ? (double)z->state_bytes / a->save_crypto * 1e-9
                   : 0.0);
    }
    printf("  (AES-GCM: share of the median save spent sealing, which for "
           "pm-disk includes the page\n"
           "  faults of writing into the mapped file; GB/s: sealing "
           "throughput of the pm-shm saves, one thread)\n");
    printf("\n  first save of a process (creates the store; its fresh pages "
           "fault in), ms:\n");
    for (int i = 0; i < n; i++)
        printf("  %7gM   pm-shm %9.1f   pm-disk %9.1f   ckpt %9.1f\n",
               r[i].mparams, 1e3 * r[i].s[ST_SHM].first_save,
               1e3 * r[i].s[ST_DISK].first_save,
               1e3 * r[i].s[ST_CKPT].first_save);
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_mirror [--sizes 1,10,100] [--reps N] "
                    "[--dir DIR] [--json]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *sizes_arg = "1,10,100";
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0') dir = EML_BENCH_BUILD_DIR;
    int reps = 5, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            sizes_arg = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else
            return usage();
    }
    if (reps < 1 || reps > MAX_REPS) {
        fprintf(stderr, "bench_mirror: --reps must be 1..%d\n", MAX_REPS);
        return 2;
    }
    double sizes[MAX_SIZES];
    int n = 0;
    char list[256];
    snprintf(list, sizeof(list), "%s", sizes_arg);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        double v = strtod(tok, &end);
        if (*end != '\0' || !(v > 0) || v > 4000 || n == MAX_SIZES) {
            fprintf(stderr, "bench_mirror: bad --sizes '%s' (millions of "
                            "parameters, at most %d)\n",
                    sizes_arg, MAX_SIZES);
            return 2;
        }
        sizes[n++] = v;
    }
    if (n == 0) return usage();

    long pid = (long)getpid();
    const char *names[N_STORES] = {"/dev/shm", dir, dir};
    const char *exts[N_STORES] = {"pool", "pool", "ckpt"};
    for (int id = 0; id < N_STORES; id++) {
        int len = snprintf(paths[id], sizeof(paths[id]),
                           "%s/eml-bench-mirror.%ld.%s", names[id], pid,
                           exts[id]);
        if (len < 0 || (size_t)len >= sizeof(paths[id])) {
            fprintf(stderr, "bench_mirror: --dir is too long\n");
            return 2;
        }
        memcpy(tmp_paths[id], paths[id], (size_t)len);
        memcpy(tmp_paths[id] + len, ".tmp", 5);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    size_result res[MAX_SIZES];
    for (int i = 0; i < n; i++) {
        if (!json)
            fprintf(stderr, "bench_mirror: %gM parameters...\n", sizes[i]);
        if (run_size(sizes[i], reps, &res[i]) != 0) {
            remove_files();
            return 1;
        }
    }
    remove_files();
    if (json) {
        print_json(res, n, dir);
    } else {
        print_table(res, n, dir);
    }
    return 0;
}
