/* cuDNN for convolution, opened at run time (cuda_cudnn.c), like cuBLASLt
 * (cuda_lt.h): libkiln links nothing of it, and a program that never
 * convolves on a GPU never maps it. Without cuDNN's headers at build time
 * (no KC_HAVE_CUDNN) these functions say "not available" and convolution
 * runs kiln's implicit-GEMM kernels. */
#ifndef KILN_CUDA_CUDNN_H
#define KILN_CUDA_CUDNN_H

#include "cuda_conv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KC_CONV_FWD = 0, KC_CONV_BWD_DATA, KC_CONV_BWD_FILTER } kc_conv_kind;

/* Whether convolutions may go to cuDNN. Opens it once (thread-safe):
 * KILN_CUDNN=0 turns it off; KILN_CUDNN=/path names the file (a file that
 * cannot be used is an error naming it, returned on every call); otherwise
 * libcudnn.so.9 through the dynamic linker's search, then in the directory
 * found at build time, and a machine without it quietly uses kiln's own
 * kernels (*ready false, KN_OK). */
kn_status kc_cudnn_ready(const char *op, bool *ready);

/* One convolution through cuDNN's graph API on d's stream: FWD y = conv(x,
 * w); BWD_DATA x = the data gradient from y (dy) and w; BWD_FILTER w = the
 * filter gradient from x and y (dy). The output is written whole. Views
 * are of one float dtype, with their own strides (dense, in any order of the
 * dims). tf32: float32 may use TF32 tensor cores. *declined: cuDNN has no
 * engine for this (nothing recorded; the caller uses another kernel). */
kn_status kc_cudnn_conv(kc_dev *d, const char *op, kc_conv_kind kind, const kc_conv_geom *g, bool tf32,
                        const kn_operand *x, const kn_operand *w, const kn_operand *y, bool *declined);

#ifdef __cplusplus
}
#endif
#endif
