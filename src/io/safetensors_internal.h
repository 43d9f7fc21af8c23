/* kiln — safetensors internals shared with tests and the fuzz harness. */
#ifndef KILN_IO_SAFETENSORS_INTERNAL_H
#define KILN_IO_SAFETENSORS_INTERNAL_H

#include "core/internal.h"

/* Parses a whole safetensors file held in memory (copied: data may be freed
 * afterwards). name is used in error messages. NULL on error, like
 * kn_safetensors_open. */
kn_safetensors *kn__safetensors_parse(const void *data, size_t len, const char *name);
/* The path (or name) the file was opened under, for messages. */
const char *kn__safetensors_path(const kn_safetensors *f);
/* Whether the file holds a tensor of this name (a binary search). */
bool kn__safetensors_has(const kn_safetensors *f, const char *name);

/* Largest header accepted, as in the reference implementation, and most
 * tensors in one file. The writer checks both before replacing a file, so
 * what kiln saves it can always load. */
#define KN__SAFETENSORS_MAX_HEADER 100000000ull
#define KN__SAFETENSORS_MAX_TENSORS (1 << 24)

#endif
