/*
 * boundary.h - the boundary's codec and channel, used by both sides: the
 * table of every message (src/boundary/messages.c, made from edl.h), one
 * encoder and one decoder driven by it (src/boundary/codec.c), and the
 * frames on the channel fd (src/boundary/frame.c).  The frame, the
 * version and seq rules are described in edl.h.
 *
 *     eml_ecall_attest q = {{nonce, nonce_len}};
 *     uint32_t seq;
 *     eml_boundary_send(&ch, EML_MSG_ATTEST, &q, sizeof(q), &seq, &err);
 *
 *     uint16_t type; const uint8_t *p; size_t n;
 *     eml_msg_recv(&ch, &type, &p, &n);        (ch.recv_seq: its seq)
 *     eml_reply_report rep;
 *     eml_boundary_decode(type, p, n, &rep, sizeof(rep), &err);
 *
 * Neither side trusts the other's bytes: the decoder checks every length
 * and range and that a frame holds exactly its fields; the encoder refuses
 * what the decoder would refuse.  Bytes only, no pointers cross; only
 * read()/write() on the channel fd.
 */
#ifndef ENCLAVEML_BOUNDARY_H
#define ENCLAVEML_BOUNDARY_H

#include <stddef.h>
#include <stdint.h>

#include "enclaveml/edl.h"
#include "enclaveml/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== the table ==== */

typedef enum eml_field_kind {
    EML_FIELD_U64 = 1,
    EML_FIELD_INT,
    EML_FIELD_LONG,
    EML_FIELD_F64,
    EML_FIELD_BYTES,
    EML_FIELD_FIXED,
    EML_FIELD_COPY,
    EML_FIELD_LIST
} eml_field_kind;

/* One field of a message (edl.h's row, as the codec reads it). */
typedef struct eml_field {
    const char *name;    /* the member's path ("spec.threads") */
    eml_field_kind kind;
    size_t off;          /* offsetof the member in the message's struct */
    size_t len_off;      /* COPY: of its length; LIST: of its count */
    uint64_t lo, hi;     /* U64, INT, LONG: the range; LIST: the count's */
    double flo, fhi;     /* F64: the range */
    size_t max;          /* BYTES, COPY, LIST: the most bytes (of each
                            item); FIXED: exactly this many */
    const char *text;    /* the row as written ("length, 0, EML_CHUNK_MAX +
                            64"), for the docs */
} eml_field;

typedef struct eml_msg_desc {
    const char *name;    /* "TRAIN" */
    uint16_t version;
    eml_msg_kind kind;
    uint16_t reply;      /* ECALL, OCALL: its reply's type (or ERROR) */
    const char *type_name; /* its struct ("eml_ecall_train"), or NULL */
    size_t size;         /* sizeof its struct; 0: no fields */
    const eml_field *fields;
    size_t n_fields;
} eml_msg_desc;

/* The row of a type, or NULL for a number that names no message. */
const eml_msg_desc *eml_msg_desc_of(uint32_t type);
/* Name of a type ("ATTEST"), or "?" */
const char *eml_msg_type_name(uint32_t type);

/* ==== building a frame (header + payload) ==== */

typedef struct eml_msg {
    uint16_t type;
    uint8_t *buf; /* header + payload */
    size_t len, cap;
    int failed;   /* sticky: an append ran out of memory or over the max */
} eml_msg;

void eml_msg_init(eml_msg *m, eml_msg_type type);
void eml_msg_put_u64(eml_msg *m, uint64_t v);
void eml_msg_put_f64(eml_msg *m, double v);
void eml_msg_put_bytes(eml_msg *m, const void *p, size_t n);
void eml_msg_free(eml_msg *m); /* wipes the buffer */

/* ==== reading a payload, field by field ==== */

typedef struct eml_msg_reader {
    const uint8_t *p;
    size_t len, pos;
    int failed;
} eml_msg_reader;

void eml_msg_reader_init(eml_msg_reader *r, const uint8_t *p, size_t len);
EML_MUST_CHECK eml_status eml_msg_get_u64(eml_msg_reader *r, uint64_t *v);
/* A u64 that must lie in [lo, hi]. */
EML_MUST_CHECK eml_status eml_msg_get_range(eml_msg_reader *r, uint64_t lo,
                                            uint64_t hi, uint64_t *v);
/* A finite f64. */
EML_MUST_CHECK eml_status eml_msg_get_f64(eml_msg_reader *r, double *v);
/* Byte string of at most max bytes; *p points into the frame. */
EML_MUST_CHECK eml_status eml_msg_get_bytes(eml_msg_reader *r, size_t max,
                                            const uint8_t **p, size_t *n);
/* A byte string of exactly n bytes copied to out. */
EML_MUST_CHECK eml_status eml_msg_get_fixed(eml_msg_reader *r, void *out,
                                            size_t n);
/* Every byte consumed: a frame with trailing bytes is malformed. */
EML_MUST_CHECK eml_status eml_msg_get_end(eml_msg_reader *r);

/* ==== the codec ==== */

/* Starts *out as a frame of `type` holding the fields of msg (its struct,
 * of `size` bytes; NULL and 0 for a message without fields).  Refuses a
 * value the receiver would refuse (EML_ERR_RANGE, EML_ERR_FORMAT), a struct
 * of another size (EML_ERR_INVALID), naming the field in err; *out is then
 * left empty.  The caller frees *out. */
EML_MUST_CHECK eml_status eml_boundary_encode(uint16_t type, const void *msg,
                                              size_t size, eml_msg *out,
                                              eml_err *err);
/* Decodes a payload of `type` into msg (its struct, `size` bytes; NULL and
 * 0 for a message without fields): every field, its bounds, and nothing
 * left over.  BYTES and LIST members point into p.  On failure msg is
 * zeroed and err says "malformed <NAME> message (<field>: <why>)". */
EML_MUST_CHECK eml_status eml_boundary_decode(uint16_t type, const uint8_t *p,
                                              size_t n, void *msg,
                                              size_t size, eml_err *err);

/* ==== the channel ==== */

/* A tap that sees every frame's bytes (ENCLAVEML_TRACE on the host). */
typedef void (*eml_msg_tap)(void *user, int outgoing, const uint8_t *p,
                            size_t n);

typedef struct eml_channel {
    int fd;
    uint32_t seq_out;  /* the running count: the next request's seq */
    uint32_t sent_seq; /* the seq of the last frame sent */
    uint32_t recv_seq; /* the seq of the last frame received */
    uint8_t *rbuf; /* last received frame's payload (owned, reused) */
    size_t rcap;
    eml_msg_tap tap;
    void *tap_user;
    uint8_t *ibuf; /* read-ahead: a frame usually arrives in one read() */
    size_t ipos, ilen;
} eml_channel;

void eml_channel_init(eml_channel *c, int fd);
void eml_channel_free(eml_channel *c); /* wipes and frees rbuf */
/* Sends a frame that answers nothing (an ecall, ocall or notification)
 * with the channel's next running seq (then in c->sent_seq). */
EML_MUST_CHECK eml_status eml_msg_send(eml_channel *c, eml_msg *m);
/* Sends a reply with the seq of the request it answers. */
EML_MUST_CHECK eml_status eml_msg_send_reply(eml_channel *c, eml_msg *m,
                                             uint32_t seq);
/* Receives one frame; *payload is valid until the next receive, and
 * c->recv_seq holds its seq.  Checks magic, type, the type's version and
 * the length before reading the payload. */
EML_MUST_CHECK eml_status eml_msg_recv(eml_channel *c, uint16_t *type,
                                       const uint8_t **payload, size_t *len);

/* Parses a frame header (for the fuzz targets and tests): EML_ERR_FORMAT
 * for a bad magic or type, EML_ERR_UNSUPPORTED for a version other than
 * the type's, EML_ERR_RANGE for a length over EML_MSG_MAX. */
EML_MUST_CHECK eml_status eml_msg_parse_header(const uint8_t hdr[16],
                                               uint16_t *type, uint32_t *len);

/* Encodes msg (as eml_boundary_encode) and sends it as a request or
 * notification; *seq (may be NULL) gets its seq. */
EML_MUST_CHECK eml_status eml_boundary_send(eml_channel *c, uint16_t type,
                                            const void *msg, size_t size,
                                            uint32_t *seq, eml_err *err);
/* Encodes msg and sends it as the reply to request seq. */
EML_MUST_CHECK eml_status eml_boundary_reply(eml_channel *c, uint16_t type,
                                             const void *msg, size_t size,
                                             uint32_t seq, eml_err *err);

#ifdef __cplusplus
}
#endif
#endif
