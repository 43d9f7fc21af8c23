/* kiln — .npy internals shared with tests and the fuzz harness. */
#ifndef KILN_IO_NPY_INTERNAL_H
#define KILN_IO_NPY_INTERNAL_H

#include "core/internal.h"

/* Reads a whole .npy file held in memory (name is used in messages) into a
 * new tensor on dev, like kn_npy_load. */
kn_tensor *kn__npy_parse(const void *data, size_t len, const char *name, kn_device dev);

#endif
