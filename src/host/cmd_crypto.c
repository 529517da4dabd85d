/*
 * cmd_crypto.c - `enclaveml keygen | encrypt | decrypt` (see cmd_crypto.h).
 *
 * Untrusted host code: it reads and writes files and prints; the
 * cryptography is the trusted container module, fed one chunk at a time so
 * that memory stays at a few chunks whatever the file size.  Outputs are
 * written to an unnamed temporary file in the output's directory
 * (O_TMPFILE, or a named mkstemp file where that is unavailable), fsync'd
 * and renamed into place only after the last chunk checked out; on any
 * failure the temporary is discarded, so a failed decrypt never leaves
 * plaintext behind, not even partially.  Plaintext buffers are locked
 * memory, wiped when freed.
 */
#define _GNU_SOURCE /* O_TMPFILE */

#include "host/cmd_crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "enclaveml/container.h"
#include "enclaveml/crypto.h"
#include "host/cli.h"
#include "host/fileio.h"
#include "host/keyfile.h"

/* ==== printing ==== */


static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* ==== files ==== */

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) return strdup(".");
    return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

static void fsync_parent(const char *path)
{
    char *dir = dir_of(path);
    if (dir == NULL) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

/* Reads until n bytes or end of file.  Returns the count, -1 on error. */
static ssize_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}


static int open_input(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        eml_fail("%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || S_ISDIR(sb.st_mode)) {
        close(fd);
        eml_fail("%s: is a directory", path);
        return -1;
    }
    return fd;
}

/* An output file that appears at its path only on commit. */
typedef struct outfile {
    const char *path;
    char *tmp;  /* the named temporary, once there is one */
    int fd;
    int anon;   /* O_TMPFILE: no name until commit */
} outfile;

static int out_open(outfile *o, const char *path, mode_t mode)
{
    o->path = path;
    o->tmp = NULL;
    o->fd = -1;
    o->anon = 0;
#ifdef O_TMPFILE
    {
        char *dir = dir_of(path), proc[64];
        int fd = dir != NULL ? open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC,
                                    0600)
                             : -1;
        free(dir);
        if (fd >= 0) {
            /* Naming it later goes through /proc; without /proc, use a
             * named temporary instead. */
            snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
            if (access(proc, F_OK) == 0) {
                o->fd = fd;
                o->anon = 1;
            } else {
                close(fd);
            }
        }
    }
#endif
    if (o->fd < 0) {
        size_t n = strlen(path);
        o->tmp = malloc(n + 16);
        if (o->tmp == NULL) return ENOMEM;
        snprintf(o->tmp, n + 16, "%s.tmp.XXXXXX", path);
        o->fd = mkstemp(o->tmp);
        if (o->fd < 0) {
            int e = errno;
            free(o->tmp);
            o->tmp = NULL;
            return e;
        }
    }
    mode_t um = umask(0);
    umask(um);
    if (fchmod(o->fd, mode & ~um) != 0) return errno;
    return 0;
}

/* Drops the output: nothing remains at path or at a temporary name. */
static void out_abort(outfile *o)
{
    if (o->fd >= 0) close(o->fd);
    o->fd = -1;
    if (o->tmp != NULL) unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
}

/* fsync, name (O_TMPFILE), rename over path.  Returns 0 or an errno; on
 * failure the caller still calls out_abort. */
static int out_commit(outfile *o)
{
    if (fsync(o->fd) != 0) return errno;
    if (o->anon) {
        char proc[64];
        size_t n = strlen(o->path);
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
        o->tmp = malloc(n + 24);
        if (o->tmp == NULL) return ENOMEM;
        for (int tries = 0;; tries++) {
            uint8_t rnd[6];
            char suffix[13];
            if (eml_random(rnd, sizeof(rnd)) != EML_OK) return EIO;
            hex(suffix, rnd, sizeof(rnd));
            snprintf(o->tmp, n + 24, "%s.tmp.%s", o->path, suffix);
            if (linkat(AT_FDCWD, proc, AT_FDCWD, o->tmp, AT_SYMLINK_FOLLOW) ==
                0)
                break;
            int e = errno;
            if (e != EEXIST || tries >= 16) {
                free(o->tmp);
                o->tmp = NULL;
                return e;
            }
        }
        o->anon = 0;
    }
    int e = close(o->fd) != 0 ? errno : 0;
    o->fd = -1;
    if (e == 0 && rename(o->tmp, o->path) != 0) e = errno;
    if (e != 0) return e;
    free(o->tmp);
    o->tmp = NULL;
    fsync_parent(o->path);
    return 0;
}

/* ==== option values ==== */

/* Bytes, optionally with K/KiB or M/MiB; a power of two in range. */
static int parse_chunk_size(const char *s, uint32_t *out)
{
    char *end;
    unsigned long long v, mul = 1;
    if (s[0] < '0' || s[0] > '9') goto bad;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0) goto bad;
    if (*end == 'k' || *end == 'K') {
        mul = 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        mul = 1024 * 1024;
        end++;
    }
    if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end != '\0' || v > ((unsigned long long)1 << 40)) goto bad;
    v *= mul;
    if (v < EML_CONTAINER_CHUNK_MIN || v > EML_CONTAINER_CHUNK_MAX ||
        (v & (v - 1)) != 0)
        goto bad;
    *out = (uint32_t)v;
    return 0;
bad:
    eml_fail("--chunk-size: '%s' is not a power of two from 4K to 16M bytes "
         "(e.g. 65536, 64K, 1M)",
         s);
    return -1;
}

enum {
    OPT_OUT = 256,
    OPT_IN,
    OPT_KEY,
    OPT_RECIPIENT,
    OPT_CHUNK_SIZE,
    OPT_FORCE,
    OPT_QUIET,
    OPT_HELP,
    OPT_ROLE,
    OPT_DATASET,
    OPT_DATASET_ID,
};

/* ==== keygen ==== */

static const char keygen_usage[] =
    "usage: enclaveml keygen --out NAME [--force] [--quiet]\n"
    "\n"
    "Makes a data owner's keys: NAME.key (secret, mode 0600: a 32-byte data\n"
    "key for 'encrypt --key' and an X25519 secret key for files encrypted to\n"
    "NAME) and NAME.pub (the X25519 public key, for 'encrypt --recipient').\n"
    "Existing files are refused unless --force is given.\n";

int eml_cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, OPT_OUT},
        {"force", no_argument, 0, OPT_FORCE},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    const char *name = NULL;
    int force = 0, quiet = 0, opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_OUT: name = optarg; break;
        case OPT_FORCE: force = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: fputs(keygen_usage, stdout); return 0;
        default: return eml_opt_unknown("keygen", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("keygen: unexpected argument '%s'", argv[optind]);
    if (name == NULL) return eml_fail("keygen: --out NAME is required");
    if (name[0] == '\0') return eml_fail("keygen: --out: empty name");

    eml_err err = {0};
    char *kp = NULL, *pp = NULL;
    eml_keyfile *k = NULL;
    uint8_t data_id[16], rcpt_id[16];
    char data_hex[33], rcpt_hex[33];
    eml_status st = eml_keyfile_generate(name, force, &kp, &pp, &err);
    if (st != EML_OK) return eml_fail("%s", eml_err_msg(&err, st));
    /* Read back what was written: proves the files load, and names them. */
    st = eml_keyfile_load(kp, &k, &err);
    if (st == EML_OK) st = eml_container_key_id(data_id, k->data_key);
    if (st == EML_OK) st = eml_container_key_id(rcpt_id, k->x25519_pk);
    eml_keyfile_free(k);
    if (st != EML_OK) {
        int rc = eml_fail("%s", eml_err_msg(&err, st));
        free(kp);
        free(pp);
        return rc;
    }
    hex(data_hex, data_id, 16);
    hex(rcpt_hex, rcpt_id, 16);
    if (!quiet)
        fprintf(stderr,
                "enclaveml: wrote %s (secret, mode 0600) and %s; data key id "
                "%s, recipient key id %s\n",
                kp, pp, data_hex, rcpt_hex);
    free(kp);
    free(pp);
    return 0;
}

/* ==== encrypt ==== */

static const char encrypt_usage[] =
    "usage: enclaveml encrypt --key NAME.key --in FILE --out FILE.emlc\n"
    "                         [--role ROLE] [--dataset NAME | --dataset-id HEX]\n"
    "                         [--chunk-size N] [--quiet]\n"
    "       enclaveml encrypt --recipient NAME.pub --in FILE --out FILE.emlc\n"
    "                         [--role ROLE] [--dataset NAME | --dataset-id HEX]\n"
    "                         [--chunk-size N] [--quiet]\n"
    "\n"
    "Encrypts FILE into an enclaveml container (docs/container.md): with\n"
    "--key, under the data key of NAME.key (mode 1); with --recipient, to\n"
    "the X25519 public key of NAME.pub (mode 2: only NAME.key opens it).\n"
    "--chunk-size is the plaintext per chunk, a power of two from 4K to 16M\n"
    "(default 1M).  The file is streamed; FILE.emlc appears only when\n"
    "complete.\n"
    "\n"
    "The header records, authenticated, what the file is and which data set\n"
    "it belongs to; the enclave refuses a file served in another role.\n"
    "--role is one of train-images, train-labels, test-images, test-labels,\n"
    "model, predictions, none.  Without --role it follows from FILE's name\n"
    "when that starts with train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
    "t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte (.gz or not); any\n"
    "other name needs --role.  --dataset NAME names the data set (its id is\n"
    "the first 16 bytes of SHA-256(\"enclaveml dataset id v1\" || NAME));\n"
    "--dataset-id gives the 16-byte id as 32 hex digits.  Without either the\n"
    "id is all zero (unnamed).  The enclave requires the four files of one\n"
    "owner to carry the same id.\n";

/* The role the standard MNIST file names imply, or -1. */
static int role_from_name(const char *path)
{
    static const struct {
        const char *prefix;
        eml_container_role role;
    } names[] = {
        {"train-images-idx3-ubyte", EML_CONTAINER_ROLE_TRAIN_IMAGES},
        {"train-labels-idx1-ubyte", EML_CONTAINER_ROLE_TRAIN_LABELS},
        {"t10k-images-idx3-ubyte", EML_CONTAINER_ROLE_TEST_IMAGES},
        {"t10k-labels-idx1-ubyte", EML_CONTAINER_ROLE_TEST_LABELS},
    };
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strncmp(base, names[i].prefix, strlen(names[i].prefix)) == 0)
            return (int)names[i].role;
    return -1;
}

/* What `encrypt` was asked to do. */
typedef struct encrypt_args {
    const char *key_path, *rcpt_path, *in, *out;
    uint32_t cs;
    eml_container_meta meta;
    int quiet;
} encrypt_args;

/* The header's role and dataset id, from --role, --dataset or
 * --dataset-id, or the file's name.  0, or 1 after printing an error. */
static int encrypt_meta(encrypt_args *a, const char *role_s,
                        const char *dataset, const char *dataset_hex)
{
    if (role_s != NULL) {
        if (eml_container_role_parse(role_s, &a->meta.role) != EML_OK)
            return eml_fail("encrypt: --role '%s' is not one of train-images, "
                            "train-labels, test-images, test-labels, model, "
                            "predictions, none",
                            role_s);
    } else {
        int r = role_from_name(a->in);
        if (r < 0)
            return eml_fail("encrypt: %s: cannot tell the file's role from "
                            "its name; pass --role train-images|"
                            "train-labels|test-images|test-labels|model|"
                            "predictions|none",
                            a->in);
        a->meta.role = (eml_container_role)r;
    }
    if (dataset != NULL && dataset_hex != NULL)
        return eml_fail("encrypt: give at most one of --dataset NAME and "
                        "--dataset-id HEX");
    if (dataset != NULL) {
        if (dataset[0] == '\0')
            return eml_fail("encrypt: --dataset: empty name");
        if (eml_container_dataset_id(a->meta.dataset_id, dataset,
                                     strlen(dataset)) != EML_OK)
            return eml_fail("encrypt: --dataset: cannot hash the name");
    }
    if (dataset_hex != NULL &&
        eml_opt_hex("encrypt: --dataset-id", dataset_hex, a->meta.dataset_id,
                    sizeof(a->meta.dataset_id)) != 0)
        return 1;
    return 0;
}

/* Fills a from the command line.  -1 to go on, else the exit status (0
 * after --help, 1 after an error, printed). */
static int encrypt_options(int argc, char **argv, encrypt_args *a)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, OPT_KEY},
        {"recipient", required_argument, 0, OPT_RECIPIENT},
        {"in", required_argument, 0, OPT_IN},
        {"out", required_argument, 0, OPT_OUT},
        {"chunk-size", required_argument, 0, OPT_CHUNK_SIZE},
        {"role", required_argument, 0, OPT_ROLE},
        {"dataset", required_argument, 0, OPT_DATASET},
        {"dataset-id", required_argument, 0, OPT_DATASET_ID},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    const char *role_s = NULL, *dataset = NULL, *dataset_hex = NULL;
    int opt;
    memset(a, 0, sizeof(*a));
    a->cs = EML_CONTAINER_CHUNK_DEFAULT;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_KEY: a->key_path = optarg; break;
        case OPT_RECIPIENT: a->rcpt_path = optarg; break;
        case OPT_IN: a->in = optarg; break;
        case OPT_OUT: a->out = optarg; break;
        case OPT_CHUNK_SIZE:
            if (parse_chunk_size(optarg, &a->cs)) return 1;
            break;
        case OPT_ROLE: role_s = optarg; break;
        case OPT_DATASET: dataset = optarg; break;
        case OPT_DATASET_ID: dataset_hex = optarg; break;
        case OPT_QUIET: a->quiet = 1; break;
        case OPT_HELP: fputs(encrypt_usage, stdout); return 0;
        default: return eml_opt_unknown("encrypt", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("encrypt: unexpected argument '%s'", argv[optind]);
    if ((a->key_path == NULL) == (a->rcpt_path == NULL))
        return eml_fail("encrypt: give exactly one of --key NAME.key and "
                    "--recipient NAME.pub");
    if (a->in == NULL) return eml_fail("encrypt: --in FILE is required");
    if (a->out == NULL) return eml_fail("encrypt: --out FILE is required");
    if (encrypt_meta(a, role_s, dataset, dataset_hex) != 0) return 1;
    return -1;
}

/* Reads in_fd to its end and writes it to of sealed, chunk by chunk,
 * through two plaintext buffers pa and pb (locked, cs bytes each) and ct
 * (cs + tag bytes).  0, or 1 after printing an error. */
static int encrypt_stream(const encrypt_args *a, int in_fd, eml_cw *w,
                          outfile *of, uint8_t *pa, uint8_t *pb, uint8_t *ct,
                          uint64_t *total, uint64_t *chunks)
{
    const uint32_t cs = a->cs;
    eml_err err = {0};
    ssize_t n = read_full(in_fd, pa, cs);
    if (n < 0)
        return eml_fail("%s: read failed: %s", a->in, strerror(errno));
    for (;;) {
        ssize_t m = 0;
        if ((size_t)n == cs) {
            m = read_full(in_fd, pb, cs);
            if (m < 0)
                return eml_fail("%s: read failed: %s", a->in,
                                strerror(errno));
        }
        int final = m == 0;
        size_t got = 0;
        eml_status st = eml_cw_seal(w, pa, (size_t)n, final, ct, &got, &err);
        if (st != EML_OK)
            return eml_fail("%s: %s", a->out, eml_err_msg(&err, st));
        int e = eml_fd_write_all(of->fd, ct, got);
        if (e != 0)
            return eml_fail("%s: write failed: %s", a->out, strerror(e));
        *total += (uint64_t)n;
        (*chunks)++;
        if (final) return 0;
        uint8_t *t = pa;
        pa = pb;
        pb = t;
        n = m;
    }
}

int eml_cmd_encrypt(int argc, char **argv)
{
    encrypt_args a;
    int rc = encrypt_options(argc, argv, &a);
    if (rc >= 0) return rc;
    rc = 1;

    eml_err err = {0};
    eml_status st;
    eml_keyfile *k = NULL;
    uint8_t rcpt_pk[32], hdr[EML_CONTAINER_HEADER_MAX], id[16];
    char id_hex[33], ds_hex[33];
    size_t hlen = 0;
    eml_cw *w = NULL;
    uint8_t *pa = NULL, *pb = NULL, *ct = NULL;
    outfile of = {0};
    of.fd = -1;
    int in_fd = -1, e;
    uint64_t total = 0, chunks = 0;
    eml_container_mode mode = a.key_path != NULL ? EML_CONTAINER_SYMMETRIC
                                                 : EML_CONTAINER_RECIPIENT;
    const uint8_t *key;

    if (a.key_path != NULL) {
        st = eml_keyfile_load(a.key_path, &k, &err);
        if (st != EML_OK) return eml_fail("%s", eml_err_msg(&err, st));
        key = k->data_key;
    } else {
        st = eml_pubfile_load(a.rcpt_path, rcpt_pk, &err);
        if (st != EML_OK) return eml_fail("%s", eml_err_msg(&err, st));
        key = rcpt_pk;
    }
    in_fd = open_input(a.in);
    if (in_fd < 0) goto out;
    st = eml_cw_new(mode, key, a.cs, &a.meta, &w, hdr, &hlen, &err);
    if (st == EML_OK) st = eml_container_key_id(id, key);
    if (st != EML_OK) {
        eml_fail("%s: %s", a.out, eml_err_msg(&err, st));
        goto out;
    }
    hex(id_hex, id, 16);
    hex(ds_hex, a.meta.dataset_id, 16);
    /* Two plaintext chunks: the next one is read before the current one
     * is sealed, because only then is it known whether it is final. */
    pa = eml_secure_alloc(a.cs);
    pb = eml_secure_alloc(a.cs);
    ct = malloc((size_t)a.cs + EML_CONTAINER_TAG_BYTES);
    if (pa == NULL || pb == NULL || ct == NULL) {
        eml_fail("encrypt: out of memory for %" PRIu32 "-byte chunks", a.cs);
        goto out;
    }
    e = out_open(&of, a.out, 0644);
    if (e == 0) e = eml_fd_write_all(of.fd, hdr, hlen);
    if (e != 0) {
        eml_fail("%s: %s", a.out, strerror(e));
        goto out;
    }
    if (encrypt_stream(&a, in_fd, w, &of, pa, pb, ct, &total, &chunks) != 0)
        goto out;
    e = out_commit(&of);
    if (e != 0) {
        eml_fail("%s: write failed: %s", a.out, strerror(e));
        goto out;
    }
    if (!a.quiet)
        fprintf(stderr,
                "enclaveml: encrypted %s -> %s: %" PRIu64 " byte%s in %" PRIu64
                " chunk%s of %" PRIu32 ", %s key id %s, role %s, dataset id "
                "%s\n",
                a.in, a.out, total, total == 1 ? "" : "s", chunks,
                chunks == 1 ? "" : "s", a.cs,
                mode == EML_CONTAINER_SYMMETRIC ? "data" : "recipient",
                id_hex, eml_container_role_name(a.meta.role), ds_hex);
    rc = 0;
out:
    out_abort(&of); /* after a commit: nothing left to drop */
    if (in_fd >= 0) close(in_fd);
    eml_secure_free(pa, a.cs);
    eml_secure_free(pb, a.cs);
    free(ct);
    eml_cw_free(w);
    eml_keyfile_free(k);
    return rc;
}

/* ==== decrypt ==== */

static const char decrypt_usage[] =
    "usage: enclaveml decrypt --key NAME.key --in FILE.emlc --out FILE "
    "[--quiet]\n"
    "\n"
    "Decrypts an enclaveml container with NAME.key: its data key for files\n"
    "encrypted with --key, its X25519 key for files encrypted to NAME.pub\n"
    "(the container's header says which).  Every chunk is authenticated; on\n"
    "any failure (wrong key, tampering, truncation) FILE is not created.\n";

/* Fills key_path, in, out and quiet from the command line.  -1 to go on,
 * else the exit status (0 after --help, 1 after an error, printed). */
static int decrypt_options(int argc, char **argv, const char **key_path,
                           const char **in, const char **out, int *quiet)
{
    static const struct option opts[] = {
        {"key", required_argument, 0, OPT_KEY},
        {"in", required_argument, 0, OPT_IN},
        {"out", required_argument, 0, OPT_OUT},
        {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_KEY: *key_path = optarg; break;
        case OPT_IN: *in = optarg; break;
        case OPT_OUT: *out = optarg; break;
        case OPT_QUIET: *quiet = 1; break;
        case OPT_HELP: fputs(decrypt_usage, stdout); return 0;
        default: return eml_opt_unknown("decrypt", argc, argv);
        }
    }
    if (optind < argc)
        return eml_fail("decrypt: unexpected argument '%s'", argv[optind]);
    if (*key_path == NULL)
        return eml_fail("decrypt: --key NAME.key is required");
    if (*in == NULL) return eml_fail("decrypt: --in FILE is required");
    if (*out == NULL) return eml_fail("decrypt: --out FILE is required");
    return -1;
}

/* Reads the container's header from in_fd and opens a reader on it with
 * k's keys.  0, or 1 after printing an error. */
static int decrypt_header(int in_fd, const char *in, const eml_keyfile *k,
                          eml_cr **r)
{
    uint8_t hdr[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    eml_err err = {0};
    ssize_t n = read_full(in_fd, hdr, EML_CONTAINER_PREFIX);
    if (n < 0) return eml_fail("%s: read failed: %s", in, strerror(errno));
    eml_status st = eml_cr_header_len(hdr, (size_t)n, &hlen, &err);
    if (st == EML_OK) {
        n = read_full(in_fd, hdr + EML_CONTAINER_PREFIX,
                      hlen - EML_CONTAINER_PREFIX);
        if (n < 0)
            return eml_fail("%s: read failed: %s", in, strerror(errno));
        eml_container_keys keys = {k->data_key, k->x25519_sk};
        st = eml_cr_new(hdr, EML_CONTAINER_PREFIX + (size_t)n, &keys, r,
                        &err);
    }
    if (st != EML_OK) return eml_fail("%s: %s", in, eml_err_msg(&err, st));
    return 0;
}

/* Opens every chunk left in in_fd into of, through two ciphertext buffers
 * ca and cb (read ahead to learn which chunk is the last) and the locked
 * plaintext buffer pt, then checks that the file was complete.  0, or 1
 * after printing an error. */
static int decrypt_stream(int in_fd, eml_cr *r, outfile *of, uint8_t *ca,
                          uint8_t *cb, uint8_t *pt, const char *in,
                          const char *out)
{
    const size_t full = (size_t)eml_cr_chunk_size(r) + EML_CONTAINER_TAG_BYTES;
    eml_err err = {0};
    eml_status st;
    ssize_t n = read_full(in_fd, ca, full);
    if (n < 0) return eml_fail("%s: read failed: %s", in, strerror(errno));
    while (n > 0) {
        ssize_t m = 0;
        if ((size_t)n == full) {
            m = read_full(in_fd, cb, full);
            if (m < 0)
                return eml_fail("%s: read failed: %s", in, strerror(errno));
        }
        size_t got = 0;
        st = eml_cr_open(r, ca, (size_t)n, m == 0, pt, &got, &err);
        if (st != EML_OK)
            return eml_fail("%s: %s", in, eml_err_msg(&err, st));
        int e = eml_fd_write_all(of->fd, pt, got);
        eml_wipe(pt, got);
        if (e != 0)
            return eml_fail("%s: write failed: %s", out, strerror(e));
        uint8_t *t = ca;
        ca = cb;
        cb = t;
        n = m;
    }
    st = eml_cr_finish(r, &err);
    if (st != EML_OK) return eml_fail("%s: %s", in, eml_err_msg(&err, st));
    return 0;
}

int eml_cmd_decrypt(int argc, char **argv)
{
    const char *key_path = NULL, *in = NULL, *out = NULL;
    int quiet = 0;
    int rc = decrypt_options(argc, argv, &key_path, &in, &out, &quiet);
    if (rc >= 0) return rc;
    rc = 1;

    eml_err err = {0};
    eml_status st;
    eml_keyfile *k = NULL;
    size_t cs = 0, full = 0;
    eml_cr *r = NULL;
    uint8_t *a = NULL, *b = NULL, *pt = NULL;
    outfile of = {0};
    of.fd = -1;
    int in_fd = -1, e;

    st = eml_keyfile_load(key_path, &k, &err);
    if (st != EML_OK) return eml_fail("%s", eml_err_msg(&err, st));
    in_fd = open_input(in);
    if (in_fd < 0) goto out;
    if (decrypt_header(in_fd, in, k, &r) != 0) goto out;
    eml_keyfile_free(k); /* the reader holds what it needs */
    k = NULL;
    cs = eml_cr_chunk_size(r);
    full = cs + EML_CONTAINER_TAG_BYTES;
    /* Two ciphertext chunks (read ahead to learn which one is last) and
     * one plaintext chunk, in locked memory. */
    a = malloc(full);
    b = malloc(full);
    pt = eml_secure_alloc(cs);
    if (a == NULL || b == NULL || pt == NULL) {
        eml_fail("decrypt: out of memory for %zu-byte chunks", cs);
        goto out;
    }
    e = out_open(&of, out, 0600);
    if (e != 0) {
        eml_fail("%s: %s", out, strerror(e));
        goto out;
    }
    if (decrypt_stream(in_fd, r, &of, a, b, pt, in, out) != 0) goto out;
    e = out_commit(&of);
    if (e != 0) {
        eml_fail("%s: write failed: %s", out, strerror(e));
        goto out;
    }
    if (!quiet)
        fprintf(stderr, "enclaveml: decrypted %s -> %s: %" PRIu64 " byte%s\n",
                in, out, eml_cr_plaintext_bytes(r),
                eml_cr_plaintext_bytes(r) == 1 ? "" : "s");
    rc = 0;
out:
    out_abort(&of);
    if (in_fd >= 0) close(in_fd);
    free(a);
    free(b);
    eml_secure_free(pt, cs);
    eml_cr_free(r);
    eml_keyfile_free(k);
    return rc;
}
