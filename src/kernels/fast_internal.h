/*
 * fast_internal.h - private to the fast kernel table: its state and the
 * primitive cache (fast_dnnl.c) that its files share (fast_qconv.c).
 *
 * Creating a oneDNN primitive costs far more than running a small one, so
 * each eml_kstate keeps an engine, a stream and an LRU cache of primitives
 * keyed by op and full shape; the cached memory objects carry no buffer of
 * their own and are pointed at the caller's arrays on each call, except an
 * entry's `owned` memory (the int8 convolution's reordered weights).
 */
#ifndef EML_KERNELS_FAST_INTERNAL_H
#define EML_KERNELS_FAST_INTERNAL_H

#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include "kernels/kernels_impl.h"

/* More than the distinct shapes of a ResNet-101 (and the int8
 * convolutions of a ResNet-50, one per layer): LRU over a cycle that does
 * not fit would miss every time. */
#define FAST_CACHE_SLOTS 256
#define FAST_KEY_LEN 12
#define FAST_MAX_ARGS 4

enum fast_op {
    FAST_OP_ACT_FWD = 1,
    FAST_OP_ACT_BWD,
    FAST_OP_MAXPOOL_FWD,
    FAST_OP_MAXPOOL_BWD,
    FAST_OP_AVGPOOL_FWD,
    FAST_OP_AVGPOOL_BWD,
    FAST_OP_MATMUL_BF16,
    FAST_OP_SOFTMAX_FWD,
    FAST_OP_QCONV,
};

/* One created primitive and the memory objects of its arguments, in the
 * order the op's caller passes pointers to fast_entry_run(). */
struct fast_entry {
    int64_t key[FAST_KEY_LEN]; /* op, then the full shape; zero-padded */
    uint64_t used;             /* tick of last use; 0 = empty slot */
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[FAST_MAX_ARGS];
    dnnl_memory_t owned; /* NULL, or memory with its own buffer passed as
                            argument owned_arg after the others (qconv:
                            the weights in the primitive's layout) */
    int owned_arg;
};

struct eml_fast_state {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    uint64_t tick;
    struct fast_entry cache[FAST_CACHE_SLOTS];
};


/* Also destroys an entry's owned memory. */
void fast_entry_clear(struct fast_entry *e);
struct eml_fast_state *fast_of(eml_kstate *ks);
/* The entry of key (its op, then the full shape), or NULL. */
struct fast_entry *fast_lookup(struct eml_fast_state *fs,
                               const int64_t *key);
/* Fills a cache slot from a primitive descriptor (which the caller still
 * owns and destroys): its arguments arg_ids[0..nargs) in the order the
 * caller passes pointers to fast_entry_run.  On failure the slot is left
 * empty. */
eml_status fast_entry_build(struct eml_fast_state *fs, const int64_t *key,
                            const_dnnl_primitive_desc_t pd,
                            const int *arg_ids, int nargs,
                            struct fast_entry **out);
/* Points the entry's memories at the caller's buffers and runs it. */
eml_status fast_entry_run(struct eml_fast_state *fs, struct fast_entry *e,
                          void *const *ptrs);

#endif
