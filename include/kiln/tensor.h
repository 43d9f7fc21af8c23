/* kiln — tensors: creation, shape and views, moving between devices. */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include <stdio.h>

#include "core.h"
#include "device.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_tensor kn_tensor;

/* KN_SHAPE(2, 3) expands to the (ndim, shape) argument pair: 2, (int64_t[]){2, 3}. */
#define KN_SHAPE(...)                                                                  \
    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),                   \
        (const int64_t[]) { __VA_ARGS__ }
/* KN_DIMS(0, 2) expands to the (ndims, dims) pair used by reductions and permute. */
#define KN_DIMS(...)                                                                   \
    (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int)), (const int[]) { __VA_ARGS__ }

/* ---- creation ------------------------------------------------------------ */
/* Copies host data (contiguous, row-major, of dtype dt) onto dev. */
kn_tensor *kn_from_data(const void *data, kn_dtype dt, int ndim, const int64_t *shape, kn_device dev);
kn_tensor *kn_empty(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);
kn_tensor *kn_zeros(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);
kn_tensor *kn_ones(int ndim, const int64_t *shape, kn_dtype dt, kn_device dev);
kn_tensor *kn_full(int ndim, const int64_t *shape, double value, kn_dtype dt, kn_device dev);
kn_tensor *kn_scalar(double value, kn_dtype dt, kn_device dev); /* 0-d tensor */
kn_tensor *kn_zeros_like(const kn_tensor *t);
kn_tensor *kn_ones_like(const kn_tensor *t);
kn_tensor *kn_full_like(const kn_tensor *t, double value);
/* [start, end) by step. */
kn_tensor *kn_arange(double start, double end, double step, kn_dtype dt, kn_device dev);
kn_tensor *kn_linspace(double start, double end, int64_t steps, kn_dtype dt, kn_device dev);
kn_tensor *kn_eye(int64_t n, kn_dtype dt, kn_device dev);

/* ---- properties ---------------------------------------------------------- */
int kn_ndim(const kn_tensor *t);
/* Size of dimension dim (negative counts from the end); -1 on error. */
int64_t kn_size(const kn_tensor *t, int dim);
const int64_t *kn_shape(const kn_tensor *t);
/* Stride in elements. */
int64_t kn_stride(const kn_tensor *t, int dim);
int64_t kn_offset(const kn_tensor *t); /* in elements, into the storage */
int64_t kn_numel(const kn_tensor *t);
kn_dtype kn_dtype_of(const kn_tensor *t);
kn_device kn_device_of(const kn_tensor *t);
bool kn_is_contiguous(const kn_tensor *t);
/* True when a and b view the same storage. */
bool kn_shares_storage(const kn_tensor *a, const kn_tensor *b);
/* "[2, 3]" into buf. */
const char *kn_shape_str(const kn_tensor *t, char *buf, size_t cap);

/* ---- reading back (synchronizes) ----------------------------------------- */
/* Copies every element in row-major order into dst, converted to dt. dst must
 * hold kn_numel(t) elements. */
kn_status kn_to_host(const kn_tensor *t, void *dst, kn_dtype dt);
/* The single element of a 1-element tensor, as a double (NaN on error). */
double kn_item(const kn_tensor *t);
/* Element at a multi-index (for tests and debugging). */
double kn_get(const kn_tensor *t, const int64_t *index);
void kn_print(const kn_tensor *t, FILE *f);

/* ---- devices and dtypes --------------------------------------------------- */
/* A copy of t on dev (t itself, retained, when it already lives there). */
kn_tensor *kn_to(kn_tensor *t, kn_device dev);
/* A copy on dev converted to dt. */
kn_tensor *kn_to_dtype(kn_tensor *t, kn_device dev, kn_dtype dt);
/* Same device, another dtype. */
kn_tensor *kn_cast(kn_tensor *t, kn_dtype dt);
/* A fresh contiguous copy. */
kn_tensor *kn_clone(kn_tensor *t);
/* Copies src into dst (broadcasting src, converting dtype); no autograd. */
kn_status kn_copy_(kn_tensor *dst, kn_tensor *src);
kn_status kn_fill_(kn_tensor *dst, double value);

/* ---- views (no copy; they share storage) ---------------------------------- */
/* reshape copies when the strides cannot express the new shape; view errors. */
kn_tensor *kn_reshape(kn_tensor *t, int ndim, const int64_t *shape); /* one -1 allowed */
kn_tensor *kn_view(kn_tensor *t, int ndim, const int64_t *shape);
kn_tensor *kn_flatten(kn_tensor *t, int start_dim, int end_dim);
kn_tensor *kn_transpose(kn_tensor *t, int dim0, int dim1);
kn_tensor *kn_permute(kn_tensor *t, int ndims, const int *dims);
kn_tensor *kn_narrow(kn_tensor *t, int dim, int64_t start, int64_t length);
/* Python's t[..., start:end:step, ...] on one dimension (negative indices ok). */
kn_tensor *kn_slice(kn_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
/* t[..., index, ...]: removes dim. */
kn_tensor *kn_select(kn_tensor *t, int dim, int64_t index);
kn_tensor *kn_expand(kn_tensor *t, int ndim, const int64_t *shape); /* -1 keeps a size */
kn_tensor *kn_squeeze(kn_tensor *t, int dim);
kn_tensor *kn_unsqueeze(kn_tensor *t, int dim);
/* t itself (retained) when contiguous, else a contiguous copy. */
kn_tensor *kn_contiguous(kn_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
