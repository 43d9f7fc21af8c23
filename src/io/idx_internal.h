/* kiln — IDX internals shared with the tests and the fuzz harness. */
#ifndef KILN_IO_IDX_INTERNAL_H
#define KILN_IO_IDX_INTERNAL_H

#include "core/internal.h"

/* Reads a whole IDX file (plain or gzip) held in memory, like kn_idx_load;
 * name is used in messages. */
kn_tensor *kn__idx_parse(const void *data, size_t len, const char *name, kn_device dev);

/* The most data bytes a file may declare (16 GiB; tests lower it). */
extern uint64_t kn__idx_limit;

#endif
