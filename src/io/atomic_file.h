/* kiln — whole-file reading and atomic writing, shared by the format readers
 * and writers in src/io. Internal. */
#ifndef KILN_IO_ATOMIC_FILE_H
#define KILN_IO_ATOMIC_FILE_H

#include "core/internal.h"

/* Writes the n parts, in order, to path so that path holds either its old
 * contents or all of the new ones, never a mix: a temporary file
 * "path.tmp.PID.XXXXXX" in the same directory is written, fsync'ed and
 * renamed over path (temporaries left by writers that no longer run are
 * removed first). A symbolic link is followed and its target replaced, the
 * link kept. A character device or FIFO (/dev/stdout, a pipe) is written in
 * place; a directory, another special file or a read-only file is refused
 * before anything is written. On any failure the temporary file is removed,
 * path is left as it was, and an error naming path is recorded.
 * kn_file_write_atomic (kiln/io.h) is its public, one-part form. */
kn_status kn__atomic_write(const char *path, const void *const *parts, const size_t *sizes,
                           int n);

/* A whole file in memory, read into a malloc'ed buffer (pipes and
 * /dev/stdin too). Never mapped: a mapped file that another process
 * truncates kills the reader with SIGBUS. data is never NULL (an empty file
 * gives len 0 and a pointer to a static byte). */
typedef struct {
    const unsigned char *data;
    size_t len;
    void *base;     /* what to free; NULL for an empty file */
    size_t map_len; /* always 0: nothing is mapped (kept for initializers that list it) */
} kn__file;

/* Errors: "PATH: cannot open: No such file or directory", "PATH: cannot read: ..." */
kn_status kn__file_read(const char *path, kn__file *out);
void kn__file_release(kn__file *f);

/* True when this machine stores integers little-endian (the byte order of
 * safetensors and of '<' in .npy). */
static inline bool kn__host_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* Most elements a tensor read from a file may have, counting only its
 * non-zero dims (the core's limit is 2^56 bytes). */
#define KN__MAX_ELEMENTS ((uint64_t)1 << 56)

/* Reverses the bytes of each of n elements of size `size` in place. */
void kn__byteswap(void *data, size_t n, size_t size);

#endif
