/* The "prim" test backend: host memory and plain scalar kernels for the
 * PRIMITIVE ops of src/core/ops.def only, written from the contract
 * (core/backend.h, backends/common/) and not from the CPU backend. Every
 * fused op on it runs as the op layer's composite of primitives, on this
 * device: the harness (test_backend_ops.c) checks those against the CPU. */
#ifndef KT_PRIM_BACKEND_H
#define KT_PRIM_BACKEND_H

#include "kiln/device.h"

#include <stdint.h>

/* Registers the backend (once; later calls return the same kind). Returns
 * its device kind, or -1 with an error. */
int kt_prim_register(void);
/* prim:0 (registered on first use). */
kn_device kt_prim_device(void);
/* How many times its kernel for op (a kn_op) has run. */
int64_t kt_prim_calls(int op);

#endif
