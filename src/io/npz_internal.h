/* kiln — .npz internals shared with the tests and the fuzz harness. */
#ifndef KILN_IO_NPZ_INTERNAL_H
#define KILN_IO_NPZ_INTERNAL_H

#include "core/internal.h"

/* Parses a whole .npz archive held in memory (copied: data may be freed
 * afterwards). name is used in error messages. NULL on error, like
 * kn_npz_open. */
kn_npz *kn__npz_parse(const void *data, size_t len, const char *name);

/* CRC-32 (ZIP's, reflected 0xEDB88320), continuing from crc (0 to start),
 * as zlib's crc32(). kiln's own table version, used when zlib is absent. */
uint32_t kn__crc32(uint32_t crc, const void *data, size_t n);

/* Most members one archive may hold (the writer checks it too). */
#define KN__NPZ_MAX_MEMBERS (1 << 24)

/* Sizes and offsets above this are written in ZIP64 fields, as Python's
 * zipfile does (2^31 - 1, for readers with signed 32-bit fields). Tests lower
 * it to force ZIP64 on small archives. */
extern uint64_t kn__npz_zip64_limit;

#endif
