/*
 * owner_data.c - owners' encrypted data files: streamed from the host
 * chunk by chunk, refused unless their authenticated header names the
 * slot's role, the owner's dataset and the grant's key, authenticated
 * before any plaintext is used, parsed as IDX, and appended to the
 * training and test sets.  Also the training-set size a DP plan needs,
 * read from the label containers' sizes before anything is decrypted.
 *
 * Trusted code: plaintext is wiped when freed; error messages name the
 * file and the problem, never bytes or numbers of decrypted content.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enclave/runtime.h"
#include "enclaveml/crypto.h"
#include "enclaveml/idx.h"



void eml_rt_owner_file_free(owner_file *f)
{
    if (f->plain != NULL) {
        eml_wipe(f->plain, f->len);
        free(f->plain);
    }
    memset(f, 0, sizeof(*f));
}

static const char *const kind_names[EML_FILE_KINDS] = {
    "train-images", "train-labels", "test-images", "test-labels"};

/* The container role a file must carry to be served as file kind k. */
static eml_container_role kind_role(uint64_t k)
{
    return (eml_container_role)(EML_CONTAINER_ROLE_TRAIN_IMAGES + k);
}
_Static_assert(EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TRAIN_LABELS ==
                       EML_CONTAINER_ROLE_TRAIN_LABELS &&
                   EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TEST_IMAGES ==
                       EML_CONTAINER_ROLE_TEST_IMAGES &&
                   EML_CONTAINER_ROLE_TRAIN_IMAGES + EML_FILE_TEST_LABELS ==
                       EML_CONTAINER_ROLE_TEST_LABELS,
               "file kinds and container roles in step");

/* Puts the file's name in front of err's message. */
static eml_status name_file(eml_err *err, eml_status st, const char *what)
{
    char inner[sizeof(err->msg)];
    snprintf(inner, sizeof(inner), "%s", eml_err_msg(err, st));
    if (err != NULL) err->msg[0] = '\0';
    return eml_err_set(err, st, "%s: %s", what, inner);
}

/* Reads the container header of file_id (its first bytes say how long it
 * is) and checks, before anything is decrypted, that it names the owner's
 * key, the role of the slot the file was served in and (when want_dataset
 * is not NULL) the dataset id of the owner's other files; the header is
 * authenticated with the first chunk. */
static eml_status read_header(eml_enclave *e, uint64_t file_id,
                              eml_container_role role, const char *what,
                              const uint8_t key_id[16],
                              const uint8_t *want_dataset,
                              uint8_t header[EML_CONTAINER_HEADER_MAX],
                              size_t *hlen, owner_file *out, eml_err *err)
{
    *hlen = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t want = pass == 0 ? EML_CONTAINER_PREFIX : *hlen;
        const uint8_t *p;
        size_t n;
        eml_status st = eml_rt_file_read(e, file_id, 0, want, &p, &n, err);
        if (st != EML_OK) return st;
        if (n != want)
            return eml_err_set(err, EML_ERR_TRUNCATED,
                               "%s: file ends inside the container header",
                               what);
        memcpy(header, p, n);
        if (pass == 0) {
            st = eml_cr_header_len(header, n, hlen, err);
            if (st != EML_OK) return st;
            if (*hlen > EML_CONTAINER_HEADER_MAX)
                return eml_err_set(err, EML_ERR_FORMAT, "%s: bad header",
                                   what);
        }
    }
    eml_container_info info;
    eml_status st = eml_container_peek(header, *hlen, &info, err);
    if (st != EML_OK) return st;
    if (info.mode != EML_CONTAINER_SYMMETRIC ||
        !eml_ct_equal(info.key_id, key_id, 16))
        return eml_err_set(err, EML_ERR_AUTH,
                           "%s is not encrypted under the key of that "
                           "owner's grant (a swapped or foreign file)",
                           what);
    if (info.role != role) {
        const char *as = eml_container_role_name(info.role);
        return eml_err_set(err, EML_ERR_AUTH,
                           "%s: the file is encrypted as %s (a file served "
                           "in the wrong role)",
                           what, as != NULL ? as : "an unknown role");
    }
    if (want_dataset != NULL &&
        memcmp(info.dataset_id, want_dataset, sizeof(info.dataset_id)) != 0)
        return eml_err_set(err, EML_ERR_AUTH,
                           "%s: the file belongs to another data set than "
                           "the owner's %s (their dataset ids differ)",
                           what, kind_names[EML_FILE_TRAIN_IMAGES]);
    memcpy(out->dataset_id, info.dataset_id, sizeof(out->dataset_id));
    return EML_OK;
}

/* Appends n plaintext bytes to *buf (*cap bytes, *len used), growing it
 * by doubling; the old buffer is wiped. */
static eml_status append_plain(uint8_t **buf, size_t *cap, size_t *len,
                               const uint8_t *p, size_t n, const char *what,
                               eml_err *err)
{
    if (n > EML_IDX_MAX_BYTES - *len)
        return eml_err_set(err, EML_ERR_RANGE, "%s is too large", what);
    if (*len + n > *cap) {
        size_t ncap = *cap ? *cap : ((size_t)1 << 20);
        while (ncap < *len + n) ncap *= 2;
        uint8_t *nb = malloc(ncap);
        if (nb == NULL)
            return eml_err_set(err, EML_ERR_NOMEM,
                               "enclave heap budget exhausted while reading "
                               "%s",
                               what);
        if (*buf != NULL) {
            memcpy(nb, *buf, *len);
            eml_wipe(*buf, *cap);
            free(*buf);
        }
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return EML_OK;
}

/* Streams one encrypted file from the host, authenticating every chunk,
 * and returns its plaintext; the header is checked first (read_header). */
eml_status eml_rt_read_owner_file(eml_enclave *e, uint64_t file_id,
                                  const uint8_t data_key[32],
                                  const uint8_t key_id[16],
                                  const uint8_t *want_dataset,
                                  owner_file *out, eml_err *err)
{
    char what[48];
    snprintf(what, sizeof(what), "owner %u %s",
             (unsigned)(file_id / EML_FILE_KINDS) + 1,
             kind_names[file_id % EML_FILE_KINDS]);
    return eml_rt_read_sealed_file(e, file_id,
                                   kind_role(file_id % EML_FILE_KINDS), what,
                                   data_key, key_id, want_dataset, out, err);
}

eml_status eml_rt_read_sealed_file(eml_enclave *e, uint64_t file_id,
                                   eml_container_role role, const char *what,
                                   const uint8_t data_key[32],
                                   const uint8_t key_id[16],
                                   const uint8_t *want_dataset,
                                   owner_file *out, eml_err *err)
{
    memset(out, 0, sizeof(*out));
    uint64_t size;
    eml_status st = eml_rt_file_open(e, file_id, &size, err);
    if (st != EML_OK) return st;

    eml_cr *cr = NULL;
    eml_sha256_ctx *h = NULL;
    uint8_t *buf = NULL, *chunk_pt = NULL;
    size_t cap = 0, chunk_size = 0;
    uint64_t off = 0;
    uint8_t header[EML_CONTAINER_HEADER_MAX];
    size_t hlen = 0;
    st = eml_sha256_new(&h);
    if (st == EML_OK)
        st = read_header(e, file_id, role, what, key_id, want_dataset, header,
                         &hlen, out, err);
    if (st != EML_OK) goto out;
    eml_container_keys keys = {data_key, NULL};
    st = eml_cr_new(header, hlen, &keys, &cr, err);
    if (st == EML_OK) st = eml_sha256_update(h, header, hlen);
    if (st != EML_OK) goto out;
    off = hlen;
    chunk_size = eml_cr_chunk_size(cr);
    chunk_pt = malloc(chunk_size);
    if (chunk_pt == NULL) {
        st = eml_err_set(err, EML_ERR_NOMEM, "enclave heap exhausted");
        goto out;
    }
    for (;;) {
        size_t want = chunk_size + EML_CONTAINER_TAG_BYTES;
        const uint8_t *p;
        size_t n;
        st = eml_rt_file_read(e, file_id, off, want, &p, &n, err);
        if (st != EML_OK) {
            st = name_file(err, st, what);
            goto out;
        }
        int last = n < want || off + n >= size;
        size_t pl = 0;
        st = eml_cr_open(cr, p, n, last, chunk_pt, &pl, err);
        if (st != EML_OK) {
            st = name_file(err, st, what);
            goto out;
        }
        st = eml_sha256_update(h, p, n);
        if (st == EML_OK)
            st = append_plain(&buf, &cap, &out->len, chunk_pt, pl, what, err);
        if (st != EML_OK) goto out;
        off += n;
        if (last) break;
    }
    st = eml_cr_finish(cr, err);
    if (st != EML_OK) goto out;
    st = eml_sha256_final(h, out->digest);
out:
    eml_sha256_free(h);
    eml_cr_free(cr);
    if (chunk_pt != NULL) {
        eml_wipe(chunk_pt, chunk_size);
        free(chunk_pt);
    }
    if (st != EML_OK) {
        if (buf != NULL) {
            eml_wipe(buf, cap);
            free(buf);
        }
        out->len = 0;
        memset(out->dataset_id, 0, sizeof(out->dataset_id));
        return st;
    }
    out->plain = buf;
    return EML_OK;
}


void eml_rt_data_acc_free(data_acc *a)
{
    if (a->images != NULL) {
        eml_wipe(a->images, a->count * a->item);
        free(a->images);
    }
    if (a->labels != NULL) {
        eml_wipe(a->labels, a->count);
        free(a->labels);
    }
    memset(a, 0, sizeof(*a));
}

eml_status eml_rt_data_acc_add(data_acc *a, const owner_file *img,
                               const owner_file *lab, const char *what,
                               eml_err *err)
{
    eml_idx ii, li;
    memset(&ii, 0, sizeof(ii));
    memset(&li, 0, sizeof(li));
    eml_status st = eml_idx_parse(img->plain, img->len, what, &ii, err);
    if (st == EML_OK) st = eml_idx_parse(lab->plain, lab->len, what, &li, err);
    if (st != EML_OK) goto out;
    /* Messages about decrypted files name the problem, never a number
     * read from them. */
    if (ii.ndims < 2 || li.ndims != 1) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: the %s file does not have the dimensions of "
                         "%s",
                         what, ii.ndims < 2 ? "image" : "label",
                         ii.ndims < 2 ? "images (2 or more)"
                                      : "labels (exactly 1)");
        goto out;
    }
    if (ii.count != li.count) {
        st = eml_err_set(err, EML_ERR_FORMAT,
                         "%s: the image and label files hold different "
                         "numbers of records",
                         what);
        goto out;
    }
    if (a->count > 0 && ii.item != a->item) {
        st = eml_err_set(err, EML_ERR_SHAPE,
                         "%s: its images are not the size of the other "
                         "owners' images",
                         what);
        goto out;
    }
    size_t n = a->count + ii.count;
    if (n < a->count || ii.item == 0 || n > SIZE_MAX / ii.item) {
        st = eml_err_set(err, EML_ERR_RANGE, "%s: too many images", what);
        goto out;
    }
    uint8_t *ni = malloc(n * ii.item + 1), *nl = malloc(n + 1);
    if (ni == NULL || nl == NULL) {
        free(ni);
        free(nl);
        st = eml_err_set(err, EML_ERR_NOMEM,
                         "enclave heap budget exhausted (%s)", what);
        goto out;
    }
    if (a->count > 0) {
        memcpy(ni, a->images, a->count * a->item);
        memcpy(nl, a->labels, a->count);
    }
    memcpy(ni + a->count * ii.item, ii.data, ii.count * ii.item);
    memcpy(nl + a->count, li.data, li.count);
    size_t item = ii.item;
    eml_rt_data_acc_free(a);
    a->images = ni;
    a->labels = nl;
    a->count = n;
    a->item = item;
out:
    eml_idx_free(&ii);
    eml_idx_free(&li);
    return st;
}

/* The training-set size, from the sizes of the owners' label containers
 * (a raw IDX labels file holds 8 header bytes and one byte per example),
 * known before anything is decrypted; checked against the decrypted data
 * later. */
eml_status eml_rt_claimed_count(eml_enclave *e, uint64_t n_owners,
                                size_t *out, eml_err *err)
{
    size_t total = 0;
    for (uint64_t o = 0; o < n_owners; o++) {
        uint64_t id = o * EML_FILE_KINDS + EML_FILE_TRAIN_LABELS;
        uint64_t size = 0;
        const uint8_t *p;
        size_t n;
        eml_container_info info;
        eml_status st = eml_rt_file_open(e, id, &size, err);
        if (st == EML_OK)
            st = eml_rt_file_read(e, id, 0, EML_CONTAINER_HEADER_MAX, &p, &n,
                                  err);
        if (st != EML_OK) return st;
        size_t hlen = 0;
        if (st == EML_OK) st = eml_cr_header_len(p, n, &hlen, err);
        if (st == EML_OK && hlen > n) st = EML_ERR_TRUNCATED;
        if (st == EML_OK) st = eml_container_peek(p, hlen, &info, err);
        if (st != EML_OK)
            return eml_err_set(err, st, "owner %u: bad label container",
                               (unsigned)o + 1);
        if (size < hlen + EML_CONTAINER_TAG_BYTES)
            return eml_err_set(err, EML_ERR_TRUNCATED,
                               "owner %u: label container too short",
                               (unsigned)o + 1);
        uint64_t body = size - hlen;
        uint64_t per = (uint64_t)info.chunk_size + EML_CONTAINER_TAG_BYTES;
        uint64_t chunks = (body + per - 1) / per;
        uint64_t pt = body - chunks * EML_CONTAINER_TAG_BYTES;
        if (pt < 8 || pt - 8 > SIZE_MAX - total)
            return eml_err_set(err, EML_ERR_FORMAT,
                               "owner %u: label file too small",
                               (unsigned)o + 1);
        total += (size_t)(pt - 8);
    }
    *out = total;
    return EML_OK;
}
