/* kiln — vision: convolution, pooling, interpolation, their layers, image
 * helpers and the IDX (MNIST) reader. Images are NCHW, as PyTorch's; every
 * op has its backward and runs on every device (docs/VISION.md). */
#ifndef KILN_VISION_H
#define KILN_VISION_H

#include "nn.h"
#include "random.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution -------------------------------------------------------------
 * Pairs are (height, width). kn_conv_opts_default(): stride 1, padding 0,
 * dilation 1, groups 1. padding_same: the output has the input's size (stride
 * 1 only); an even total padding d*(k-1) puts the odd element after, as
 * PyTorch's padding='same'. conv1d reads element [0] of each pair. */
typedef struct {
    int64_t stride[2];
    int64_t padding[2];
    int64_t dilation[2];
    int64_t groups;
    bool padding_same;
    int64_t output_padding[2]; /* conv_transpose2d only: added to one side of the output */
} kn_conv_opts;
kn_conv_opts kn_conv_opts_default(void);

/* x [N, C, H, W] (or [C, H, W]: one image), weight [K, C/groups, kh, kw],
 * bias [K] or NULL -> [N, K, OH, OW], OH = (H + 2p - d(kh - 1) - 1) / s + 1.
 * weight and bias are used in x's dtype. */
kn_tensor *kn_conv2d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts);
/* x [N, C, L] (or [C, L]), weight [K, C/groups, k] -> [N, K, OL]. */
kn_tensor *kn_conv1d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts);
/* The adjoint of conv2d: x [N, C_in, H, W], weight [C_in, C_out/groups, kh,
 * kw] -> [N, C_out, OH, OW], OH = (H - 1) s - 2p + d(kh - 1) + output_padding
 * + 1 (output_padding < stride or dilation). padding_same is refused. */
kn_tensor *kn_conv_transpose2d(kn_tensor *x, kn_tensor *weight, kn_tensor *bias, const kn_conv_opts *opts);

/* ---- pooling -----------------------------------------------------------------
 * kn_pool_opts_default(kh, kw): stride = the kernel, padding 0, dilation 1,
 * floor mode, count_include_pad true, no divisor override. Padding may be at
 * most half the kernel. ceil_mode rounds the output size up (a window must
 * still start inside the input or its left padding). */
typedef struct {
    int64_t kernel[2];
    int64_t stride[2]; /* 0: the kernel size */
    int64_t padding[2];
    int64_t dilation[2]; /* max pool only */
    bool ceil_mode;
    bool count_include_pad;   /* avg pool: padding counts in the divisor */
    int64_t divisor_override; /* avg pool: > 0 divides every window by it */
} kn_pool_opts;
kn_pool_opts kn_pool_opts_default(int64_t kernel_h, int64_t kernel_w);

/* x [N, C, H, W] or [C, H, W]. indices (may be NULL) gets each maximum's
 * flat position h*W + w in its plane (int64, the output's shape; no gradient). */
kn_tensor *kn_max_pool2d(kn_tensor *x, const kn_pool_opts *opts, kn_tensor **indices);
kn_tensor *kn_avg_pool2d(kn_tensor *x, const kn_pool_opts *opts);
/* PyTorch's adaptive average pooling to out_h x out_w: window i covers
 * [floor(i H / out_h), ceil((i + 1) H / out_h)). */
kn_tensor *kn_adaptive_avg_pool2d(kn_tensor *x, int64_t out_h, int64_t out_w);

/* ---- interpolation -------------------------------------------------------------
 * F.interpolate on [N, C, H, W] (or [C, H, W]) to out_h x out_w. nearest:
 * source floor(dst * H / out_h); bilinear: half-pixel centres (clamped at 0),
 * or corners aligned when align_corners (bilinear only). */
typedef enum { KN_INTERP_NEAREST = 0, KN_INTERP_BILINEAR } kn_interp_mode;
kn_tensor *kn_interpolate(kn_tensor *x, int64_t out_h, int64_t out_w, kn_interp_mode mode, bool align_corners);
/* By scale factors: out = floor(size * scale), sources computed with 1 / scale
 * as PyTorch does when given scale_factor. */
kn_tensor *kn_interpolate_scale(kn_tensor *x, double scale_h, double scale_w, kn_interp_mode mode,
                                bool align_corners);
/* kn_flatten (kiln/tensor.h) flattens; nn's Flatten uses it from dim 1. */

/* ---- layers ----------------------------------------------------------------------
 * Initialised like PyTorch's, from the global generator, float32 on the CPU.
 * Conv weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias the same. */
kn_module *kn_nn_conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                        const kn_conv_opts *opts, bool bias);
kn_module *kn_nn_conv_transpose2d(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                                  const kn_conv_opts *opts, bool bias);
kn_module *kn_nn_max_pool2d(const kn_pool_opts *opts);
kn_module *kn_nn_avg_pool2d(const kn_pool_opts *opts);
kn_module *kn_nn_adaptive_avg_pool2d(int64_t out_h, int64_t out_w);
kn_module *kn_nn_batch_norm2d(int64_t channels); /* over N, H, W; eps 1e-5, momentum 0.1 */
kn_module *kn_nn_flatten(void);                  /* dims 1 .. -1 */
kn_module *kn_nn_upsample(int64_t out_h, int64_t out_w, kn_interp_mode mode, bool align_corners);
/* Upsample by scale factors (out = floor(size * scale)). */
kn_module *kn_nn_upsample_scale(double scale_h, double scale_w, kn_interp_mode mode, bool align_corners);

/* ---- image helpers ----------------------------------------------------------------
 * images: [N, C, H, W] or [C, H, W] of any dtype (uint8 0..255 typically).
 * Returns float32 (x / 255 - mean[c]) / std[c] (scale 1/255 only when the
 * input is uint8); mean and std have C entries (NULL: 0 and 1). */
kn_tensor *kn_image_normalize(kn_tensor *images, const double *mean, const double *std);
/* Bilinear resize (half-pixel centres), float in, float out. */
kn_tensor *kn_image_resize(kn_tensor *images, int64_t out_h, int64_t out_w);
/* A crop of out_h x out_w at a random place of each image (after padding
 * every side with `padding` zeros), independently per image. */
kn_tensor *kn_image_random_crop(kn_tensor *images, int64_t out_h, int64_t out_w, int64_t padding,
                                kn_generator *gen);
/* Each image mirrored left-right with probability p. */
kn_tensor *kn_image_random_flip(kn_tensor *images, double p, kn_generator *gen);

/* ---- IDX files (MNIST, Fashion-MNIST) ------------------------------------------------
 * A tensor of the file's shape on dev: uint8 stays uint8, int8/int16/int32
 * give int32, float32 and float64 theirs. gzip files (by their magic) are
 * inflated when kiln has zlib. Every size is checked against the file before
 * anything is allocated; errors name the file and the problem. */
kn_tensor *kn_idx_load(const char *path, kn_device dev);

#ifdef __cplusplus
}
#endif
#endif
