/* Elementwise kernels: copy, fill (arange too), unary (+backward), binary, where.
 * They follow the CPU kernels' arithmetic: float32 in float, every other
 * dtype through double (floats) or int64 (integers), so results agree with
 * the CPU to rounding and integer results exactly. Any strides; dims that
 * every operand can merge are merged, so most launches walk one flat run. */
#include "cuda_common.cuh"
#include "backends/common/dtype.h"       /* kn__store: a fill value converted as the CPU does */
#include "backends/common/scalar_math.h" /* the same scalar functions as the CPU */

#include <math.h>

/* ---- copy ------------------------------------------------------------------------------ */
template <typename T>
__global__ void copy_same(const __grid_constant__ kn_geom it, T *out, const T *in) {
    kc_pdl_wait();
    KC_LOOP(i, it.numel) {
        long long o[2];
        kc_offsets<2>(it, i, o);
        out[o[0]] = in[o[1]];
    }
}

__global__ void copy_convert(const __grid_constant__ kn_geom it, char *out, int odt, const char *in, int idt) {
    kc_pdl_wait();
    int os = kc_dsize(odt), is = kc_dsize(idt);
    bool ints = !kc_is_float(odt) && !kc_is_float(idt);
    KC_LOOP(i, it.numel) {
        long long o[2];
        kc_offsets<2>(it, i, o);
        if (ints) kc_store_i(out + o[0] * os, odt, kc_load_i(in + o[1] * is, idt));
        else kc_store(out + o[0] * os, odt, kc_load(in + o[1] * is, idt));
    }
}

/* float32 <-> half types without the double detour (same bits). */
__global__ void copy_f32_to_half(const __grid_constant__ kn_geom it, uint16_t *out, const float *in, bool bf16) {
    kc_pdl_wait();
    KC_LOOP(i, it.numel) {
        long long o[2];
        kc_offsets<2>(it, i, o);
        float v = in[o[1]];
        out[o[0]] = bf16 ? kc_f2b(v) : kc_f2h(v);
    }
}

template <typename T>
static void launch_copy_same(kc_dev *d, const kn_geom &it, void *out, const void *in) {
    KC_LAUNCH(d, copy_same<T>, kc_blocks(it.numel), KC_THREADS, it, (T *)out, (const T *)in);
}

extern "C" kn_status kc_copy_view(kc_dev *d, const kn_operand *out, const kn_operand *x) {
    kn_operand src = *x;
    if (x->ndim != out->ndim || memcmp(x->shape, out->shape, (size_t)out->ndim * sizeof out->shape[0]))
        src = kc_view_expand(x, out->ndim, out->shape);
    const kn_operand *ops[2] = {out, &src};
    kn_geom it;
    kn_geom_init(&it, 2, ops);
    if (it.numel == 0) return KN_OK;
    kn_status s = KN_OK;
    size_t es = kn_dtype_size(out->dtype);
    void *o = out->data;
    const void *in = src.data;
    /* The copy engine for large flat copies; a kernel otherwise (it keeps
     * the chain of dependent launches going). */
    if (out->dtype == src.dtype && kc_geom_flat(&it) && it.stride[0][0] == 1 && it.stride[1][0] == 1 &&
        (size_t)it.numel * es >= KC_BULK_BYTES) {
        s = kc_check(cudaMemcpyAsync(o, in, (size_t)it.numel * es, cudaMemcpyDeviceToDevice, d->stream), "copy");
    } else if (out->dtype == src.dtype) {
        switch (es) {
        case 1: launch_copy_same<uint8_t>(d, it, o, in); break;
        case 2: launch_copy_same<uint16_t>(d, it, o, in); break;
        case 4: launch_copy_same<uint32_t>(d, it, o, in); break;
        default: launch_copy_same<unsigned long long>(d, it, o, in); break;
        }
    } else if (src.dtype == KN_F32 && (out->dtype == KN_F16 || out->dtype == KN_BF16)) {
        KC_LAUNCH(d, copy_f32_to_half, kc_blocks(it.numel), KC_THREADS, it, (uint16_t *)o, (const float *)in,
                  out->dtype == KN_BF16);
    } else {
        KC_LAUNCH(d, copy_convert, kc_blocks(it.numel), KC_THREADS, it, (char *)o, out->dtype, (const char *)in,
                  src.dtype);
    }
    return s == KN_OK ? kc_after(d, "copy") : s;
}

extern "C" kn_status kn__cuda_copy(int device, const void *args) {
    const kn_copy_args *a = (const kn_copy_args *)args;
    kc_dev *d = kc_enter(device, "copy", false);
    return d ? kc_copy_view(d, &a->out, &a->x) : kn_error_code();
}

/* ---- fill (and arange) ---------------------------------------------------------------------- */
template <typename T>
__global__ void fill_kernel(const __grid_constant__ kn_geom it, T *out, T v) {
    kc_pdl_wait();
    KC_LOOP(i, it.numel) {
        long long o[1];
        kc_offsets<1>(it, i, o);
        out[o[0]] = v;
    }
}

template <typename T>
static void launch_fill(kc_dev *d, const kn_geom &it, void *out, const void *pattern) {
    T v;
    memcpy(&v, pattern, sizeof v);
    KC_LAUNCH(d, fill_kernel<T>, kc_blocks(it.numel), KC_THREADS, it, (T *)out, v);
}

static kn_status fill_geom(kc_dev *d, const kn_geom &it, void *out, const void *pattern, size_t es) {
    bool zero = true;
    for (size_t k = 0; k < es; k++) zero = zero && ((const char *)pattern)[k] == 0;
    if (kc_geom_flat(&it) && it.stride[0][0] == 1 && (zero || es == 1) && (size_t)it.numel * es >= KC_BULK_BYTES)
        return kc_check(cudaMemsetAsync(out, ((const unsigned char *)pattern)[0], (size_t)it.numel * es, d->stream),
                        "fill");
    switch (es) {
    case 1: launch_fill<uint8_t>(d, it, out, pattern); break;
    case 2: launch_fill<uint16_t>(d, it, out, pattern); break;
    case 4: launch_fill<uint32_t>(d, it, out, pattern); break;
    default: launch_fill<unsigned long long>(d, it, out, pattern); break;
    }
    return KN_OK;
}

/* out[k] = start + k * step, k the row-major index (the merged geometry
 * keeps the order of the elements). */
__global__ void arange_kernel(const __grid_constant__ kn_geom it, char *out, int dt, double start, double step) {
    kc_pdl_wait();
    int es = kc_dsize(dt);
    KC_LOOP(k, it.numel) {
        long long o[1];
        kc_offsets<1>(it, k, o);
        kc_store(out + o[0] * es, dt, __dadd_rn(start, __dmul_rn((double)k, step)));
    }
}

extern "C" kn_status kc_fill_view(kc_dev *d, const kn_operand *out, double value, double step) {
    const kn_operand *ops[1] = {out};
    kn_geom it;
    kn_geom_init(&it, 1, ops);
    if (it.numel == 0) return KN_OK;
    if (step != 0) { /* arange */
        KC_LAUNCH(d, arange_kernel, kc_blocks(it.numel), KC_THREADS, it, (char *)out->data, out->dtype, value, step);
        return kc_after(d, "arange");
    }
    /* A constant: the value converted once, exactly as the CPU does (and
     * kept as given: -0.0 + k * 0 would lose its sign). */
    char pattern[8] = {0};
    kn__store(pattern, out->dtype, value);
    kn_status s = fill_geom(d, it, out->data, pattern, kn_dtype_size(out->dtype));
    return s == KN_OK ? kc_after(d, "fill") : s;
}

extern "C" kn_status kn__cuda_fill(int device, const void *args) {
    const kn_fill_args *a = (const kn_fill_args *)args;
    kc_dev *d = kc_enter(device, "fill", false);
    return d ? kc_fill_view(d, &a->out, a->value, a->step) : kn_error_code();
}

/* ---- unary ---------------------------------------------------------------------------------- */
__device__ __forceinline__ float unary_f32(int f, float x, float a, float b, double p0, double p1) {
    switch (f) {
    case KN_UNARY_NEG: return -x;
    case KN_UNARY_RELU: return x > 0 ? x : 0;
    case KN_UNARY_LEAKY_RELU: return x > 0 ? x : x * a;
    case KN_UNARY_ADD_SCALAR: return x + a;
    case KN_UNARY_MUL_SCALAR: return x * a;
    case KN_UNARY_RSUB_SCALAR: return a - x;
    case KN_UNARY_ABS: return fabsf(x);
    case KN_UNARY_EXP: return expf(x);
    case KN_UNARY_LOG: return logf(x);
    case KN_UNARY_SQRT: return sqrtf(x);
    case KN_UNARY_TANH: return tanhf(x);
    case KN_UNARY_SIN: return sinf(x);
    case KN_UNARY_COS: return cosf(x);
    case KN_UNARY_TAN: return tanf(x);
    case KN_UNARY_SIGMOID: return x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x));
    case KN_UNARY_CLAMP: return x != x ? x : x < a ? a : x > b ? b : x;
    default: return (float)kn__unary_eval(f, x, p0, p1);
    }
}

__device__ __forceinline__ long long unary_int(int f, long long x, double p0, double p1) {
    switch (f) {
    case KN_UNARY_NEG: return -x;
    case KN_UNARY_ABS: return x < 0 ? -x : x;
    case KN_UNARY_RELU: return x > 0 ? x : 0;
    case KN_UNARY_ADD_SCALAR: return x + (long long)p0;
    case KN_UNARY_MUL_SCALAR: return x * (long long)p0;
    case KN_UNARY_RSUB_SCALAR: return (long long)p0 - x;
    default: return (long long)kn__unary_eval(f, (double)x, p0, p1);
    }
}

enum { MODE_F32, MODE_INT, MODE_ANY };

__global__ void unary_kernel(const __grid_constant__ kn_geom it, char *out, int odt, const char *in, int idt, int mode, int f, double p0,
                             double p1) {
    kc_pdl_wait();
    int os = kc_dsize(odt), is = kc_dsize(idt);
    float a = (float)p0, b = (float)p1;
    KC_LOOP(i, it.numel) {
        long long o[2];
        kc_offsets<2>(it, i, o);
        if (mode == MODE_F32)
            ((float *)out)[o[0]] = unary_f32(f, ((const float *)in)[o[1]], a, b, p0, p1);
        else if (mode == MODE_INT)
            kc_store_i(out + o[0] * os, odt, unary_int(f, kc_load_i(in + o[1] * is, idt), p0, p1));
        else
            kc_store(out + o[0] * os, odt, kn__unary_eval(f, kc_load(in + o[1] * is, idt), p0, p1));
    }
}

extern "C" kn_status kc_unary_view(kc_dev *d, const kn_operand *out, const kn_operand *x, int f, double p0,
                                   double p1) {
    const kn_operand *ops[2] = {out, x};
    kn_geom it;
    kn_geom_init(&it, 2, ops);
    if (it.numel == 0) return KN_OK;
    kn_dtype od = out->dtype, id = x->dtype;
    int mode = od == KN_F32 && id == KN_F32 ? MODE_F32
             : !kn_dtype_is_float(od) && !kn_dtype_is_float(id) && f != KN_UNARY_SQRT && f != KN_UNARY_EXP &&
                       f != KN_UNARY_LOG
                 ? MODE_INT
                 : MODE_ANY;
    KC_LAUNCH(d, unary_kernel, kc_blocks(it.numel), KC_THREADS, it, (char *)out->data, od, (const char *)x->data, id,
              mode, f, p0, p1);
    return kc_after(d, kn__unary_name((kn_unary_fn)f));
}

extern "C" kn_status kn__cuda_unary(int device, const void *args) {
    const kn_unary_args *a = (const kn_unary_args *)args;
    kc_dev *d = kc_enter(device, kn__unary_name((kn_unary_fn)a->fn), false);
    return d ? kc_unary_view(d, &a->out, &a->x, (int)a->fn, a->p0, a->p1) : kn_error_code();
}

__global__ void unary_bw_kernel(const __grid_constant__ kn_geom it, char *out, int odt, const char *g, int gdt, const char *x, int xdt, int f,
                                double p0, double p1) {
    kc_pdl_wait();
    int os = kc_dsize(odt), gs = kc_dsize(gdt), xs = kc_dsize(xdt);
    bool f32 = odt == KN_F32 && gdt == KN_F32 && xdt == KN_F32;
    KC_LOOP(i, it.numel) {
        long long o[3];
        kc_offsets<3>(it, i, o);
        if (f32) {
            float gv = ((const float *)g)[o[1]], xv = ((const float *)x)[o[2]], r;
            switch (f) {
            case KN_UNARY_RELU: r = xv > 0 ? gv : 0; break;
            case KN_UNARY_SIGMOID: r = gv * xv * (1 - xv); break;
            case KN_UNARY_TANH: r = gv * (1 - xv * xv); break;
            default: r = (float)kn__unary_grad(f, gv, xv, p0, p1); break;
            }
            ((float *)out)[o[0]] = r;
        } else {
            kc_store(out + o[0] * os, odt,
                     kn__unary_grad(f, kc_load(g + o[1] * gs, gdt), kc_load(x + o[2] * xs, xdt), p0, p1));
        }
    }
}

extern "C" kn_status kn__cuda_unary_backward(int device, const void *args) {
    const kn_unary_backward_args *a = (const kn_unary_backward_args *)args;
    kc_dev *d = kc_enter(device, "unary_backward", false);
    if (!d) return kn_error_code();
    const kn_operand *ops[3] = {&a->out, &a->grad, &a->x};
    kn_geom it;
    kn_geom_init(&it, 3, ops);
    if (it.numel == 0) return KN_OK;
    KC_LAUNCH(d, unary_bw_kernel, kc_blocks(it.numel), KC_THREADS, it, (char *)a->out.data, a->out.dtype,
              (const char *)a->grad.data, a->grad.dtype, (const char *)a->x.data, a->x.dtype, (int)a->fn, a->p0,
              a->p1);
    return kc_after(d, "unary_backward");
}

/* ---- binary ------------------------------------------------------------------------------------ */
__device__ __forceinline__ float binary_f32(int f, float a, float b) {
    switch (f) {
    case KN_BINARY_ADD: return a + b;
    case KN_BINARY_SUB: return a - b;
    case KN_BINARY_MUL: return a * b;
    case KN_BINARY_DIV: return a / b;
    case KN_BINARY_MAX: return a != a || b != b ? NAN : a > b ? a : b;
    case KN_BINARY_MIN: return a != a || b != b ? NAN : a < b ? a : b;
    default: return (float)kn__binary_eval(f, a, b);
    }
}

__global__ void binary_kernel(const __grid_constant__ kn_geom it, char *out, int odt, const char *a, const char *b, int idt, int mode, int f) {
    kc_pdl_wait();
    int os = kc_dsize(odt), is = kc_dsize(idt);
    KC_LOOP(i, it.numel) {
        long long o[3];
        kc_offsets<3>(it, i, o);
        if (mode == MODE_F32)
            ((float *)out)[o[0]] = binary_f32(f, ((const float *)a)[o[1]], ((const float *)b)[o[2]]);
        else if (mode == MODE_INT)
            kc_store_i(out + o[0] * os, odt, kn__binary_i64(f, kc_load_i(a + o[1] * is, idt), kc_load_i(b + o[2] * is, idt)));
        else
            kc_store(out + o[0] * os, odt, kn__binary_eval(f, kc_load(a + o[1] * is, idt), kc_load(b + o[2] * is, idt)));
    }
}

extern "C" kn_status kn__cuda_binary(int device, const void *args) {
    const kn_binary_args *a = (const kn_binary_args *)args;
    const char *name = kn__binary_name((kn_binary_fn)a->fn);
    kc_dev *d = kc_enter(device, name, false);
    if (!d) return kn_error_code();
    const kn_operand *ops[3] = {&a->out, &a->a, &a->b};
    kn_geom it;
    kn_geom_init(&it, 3, ops);
    if (it.numel == 0) return KN_OK;
    kn_dtype od = a->out.dtype, id = a->a.dtype;
    int mode = od == KN_F32 && id == KN_F32 ? MODE_F32 : !kn_dtype_is_float(id) ? MODE_INT : MODE_ANY;
    KC_LAUNCH(d, binary_kernel, kc_blocks(it.numel), KC_THREADS, it, (char *)a->out.data, od, (const char *)a->a.data,
              (const char *)a->b.data, id, mode, (int)a->fn);
    return kc_after(d, name);
}

/* ---- where --------------------------------------------------------------------------------------- */
template <typename T>
__global__ void where_kernel(const __grid_constant__ kn_geom it, T *out, const uint8_t *cond, const T *a, const T *b) {
    kc_pdl_wait();
    KC_LOOP(i, it.numel) {
        long long o[4];
        kc_offsets<4>(it, i, o);
        out[o[0]] = cond[o[1]] ? a[o[2]] : b[o[3]];
    }
}

template <typename T>
static void launch_where(kc_dev *d, const kn_geom &it, const kn_where_args *a) {
    KC_LAUNCH(d, where_kernel<T>, kc_blocks(it.numel), KC_THREADS, it, (T *)a->out.data, (const uint8_t *)a->cond.data,
              (const T *)a->a.data, (const T *)a->b.data);
}

extern "C" kn_status kn__cuda_where(int device, const void *args) {
    const kn_where_args *a = (const kn_where_args *)args;
    kc_dev *d = kc_enter(device, "where", false);
    if (!d) return kn_error_code();
    const kn_operand *ops[4] = {&a->out, &a->cond, &a->a, &a->b};
    kn_geom it;
    kn_geom_init(&it, 4, ops);
    if (it.numel == 0) return KN_OK;
    switch (kn_dtype_size(a->out.dtype)) {
    case 1: launch_where<uint8_t>(d, it, a); break;
    case 2: launch_where<uint16_t>(d, it, a); break;
    case 4: launch_where<uint32_t>(d, it, a); break;
    default: launch_where<unsigned long long>(d, it, a); break;
    }
    return kc_after(d, "where");
}
