/* Convolution on CUDA, shared by cuda_conv.c (dispatch), cuda_cudnn.c (cuDNN,
 * opened at run time) and cuda_conv_igemm.cu (kiln's own implicit-GEMM
 * kernels, used where cuDNN is absent, disabled or has no engine). */
#ifndef KILN_CUDA_CONV_H
#define KILN_CUDA_CONV_H

#include "cuda_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One convolution: x [N, C, H, W], weight [K, C/G, kh, kw], y [N, K, OH, OW];
 * strides, padding before (the padding after is what OH and OW need),
 * dilations, groups. */
typedef struct {
    int64_t N, C, H, W, K, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, G;
} kc_conv_geom;

/* The implicit-GEMM kernels (cuda_conv_igemm.cu). Operands contiguous, of
 * dtype dt (any float dtype), every tensor under 2^31 elements; outputs
 * written whole. They only enqueue (status of the launches). */
kn_status kc_igemm_forward(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *y, const void *x, const void *w,
                           const void *bias);
kn_status kc_igemm_backward_data(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *dx, const void *dy,
                                 const void *w);
kn_status kc_igemm_backward_filter(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *dw, const void *dy,
                                   const void *x);
/* y [N, K, OH*OW] += bias [K] (after cuDNN's convolution). */
kn_status kc_conv_bias_add(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *y, const void *bias);
/* db [K] = the sums of dy [N, K, OH*OW] over N and the positions. */
kn_status kc_conv_bias_grad(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *db, const void *dy);

#ifdef __cplusplus
}
#endif
#endif
