/* kiln — .npy internals shared with the .npz reader and writer, the tests and
 * the fuzz harness. */
#ifndef KILN_IO_NPY_INTERNAL_H
#define KILN_IO_NPY_INTERNAL_H

#include "core/internal.h"

/* Reads a whole .npy file held in memory (name is used in messages) into a
 * new tensor on dev, like kn_npy_load. */
kn_tensor *kn__npy_parse(const void *data, size_t len, const char *name, kn_device dev);

/* A tensor as .npy bytes: head[0, head_len) (magic, version 1.0, the padded
 * header dict), then data[0, nbytes) (the tensor's own memory when it is a
 * contiguous CPU tensor, else the malloc'ed copy `owned`). */
#define KN__NPY_MAX_HEAD 384
typedef struct {
    unsigned char head[KN__NPY_MAX_HEAD];
    size_t head_len;
    const void *data;
    size_t nbytes;
    void *owned;
} kn__npy_bytes;
/* what names the file in messages. On failure nothing is left to free. */
kn_status kn__npy_encode(const kn_tensor *t, const char *what, kn__npy_bytes *out);
void kn__npy_bytes_free(kn__npy_bytes *b);

#endif
