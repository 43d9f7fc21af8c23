/* kiln — status codes, errors, dtypes and memory scopes. */
#ifndef KILN_CORE_H
#define KILN_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KN_VERSION_MAJOR 0
#define KN_VERSION_MINOR 1
#define KN_VERSION_PATCH 0
#define KN_VERSION_STRING "0.1.0"

/* Maximum tensor rank. */
#define KN_MAX_DIMS 8

/* ---- status and errors --------------------------------------------------
 * A failing call returns NULL (or a negative kn_status) and records a message
 * that kn_error() returns. Every op accepts NULL inputs and returns NULL, so a
 * chain of ops can be checked once at the end. The library never exits.      */
typedef enum {
    KN_OK = 0,
    KN_ERR_INVALID = -1,     /* bad argument */
    KN_ERR_SHAPE = -2,       /* shapes do not match */
    KN_ERR_DTYPE = -3,       /* dtype not supported by the op */
    KN_ERR_DEVICE = -4,      /* unknown or unavailable device */
    KN_ERR_OOM = -5,         /* out of memory */
    KN_ERR_IO = -6,          /* file system */
    KN_ERR_FORMAT = -7,      /* malformed file or data */
    KN_ERR_AUTOGRAD = -8,    /* backward through a non-differentiable path */
    KN_ERR_UNSUPPORTED = -9, /* not implemented */
    KN_ERR_NULL = -10        /* a NULL input (usually an earlier error) */
} kn_status;

/* The last error's message on this thread ("" when none). */
const char *kn_error(void);
/* The last error's status on this thread (KN_OK when none). */
kn_status kn_error_code(void);
void kn_error_clear(void);
const char *kn_status_name(kn_status s);

/* Called on every recorded error (in the thread that raised it). */
typedef void (*kn_error_handler)(kn_status status, const char *message, void *user);
void kn_set_error_handler(kn_error_handler handler, void *user);

/* ---- dtypes ------------------------------------------------------------ */
typedef enum {
    KN_F32 = 0,
    KN_F16,
    KN_BF16,
    KN_F64,
    KN_I32,
    KN_I64,
    KN_U8,
    KN_BOOL,
    /* Complex: interleaved (real, imaginary) pairs of float32 / float64. Held,
     * copied, moved between devices and viewed like any tensor; computed on by
     * the FFT ops (kiln/fft.h) and the complex helpers there, an error in
     * every other op. */
    KN_C64,
    KN_C128,
    KN_DTYPE_COUNT
} kn_dtype;
/* The real dtypes are 0 .. KN_DTYPE_REAL_COUNT - 1 (the complex ones follow). */
#define KN_DTYPE_REAL_COUNT KN_C64

size_t kn_dtype_size(kn_dtype dt);
const char *kn_dtype_name(kn_dtype dt); /* "float32", "int64", ... */
bool kn_dtype_is_float(kn_dtype dt); /* false for complex */
bool kn_dtype_is_complex(kn_dtype dt);
/* The float dtype of a complex one's parts (KN_F32 for KN_C64); dt itself otherwise. */
kn_dtype kn_dtype_real(kn_dtype dt);
/* The complex dtype holding dt: KN_C128 for float64 (and KN_C128), else KN_C64. */
kn_dtype kn_dtype_complex(kn_dtype dt);
/* Result dtype of a binary op on a and b (PyTorch's promotion lattice;
 * complex with real is complex of the wider float: c64 with f64 is c128). */
kn_dtype kn_dtype_promote(kn_dtype a, kn_dtype b);
/* Parses "f32"/"float32"/"float"... Returns -1 when unknown. */
int kn_dtype_from_name(const char *name);

/* ---- scopes --------------------------------------------------------------
 * Every tensor the API returns belongs to the innermost open scope, or to the
 * caller (who calls kn_release) when no scope is open. kn_scope_end releases
 * every tensor created since the matching kn_scope_begin, except those kept.  */
typedef struct { int depth; } kn_scope;
kn_scope kn_scope_begin(void);
void kn_scope_end(kn_scope s);

struct kn_tensor;
/* Lets t outlive the innermost scope: it then belongs to the enclosing scope,
 * or to the caller when there is none. Returns t. */
struct kn_tensor *kn_keep(struct kn_tensor *t);
struct kn_tensor *kn_retain(struct kn_tensor *t);
void kn_release(struct kn_tensor *t);

/* Number of live tensors (for leak tests). */
int64_t kn_live_tensors(void);

/* ---- threads ------------------------------------------------------------- */
/* Threads used by CPU kernels: KILN_THREADS, else the number of cores. */
int kn_num_threads(void);
void kn_set_num_threads(int n);

#ifdef __cplusplus
}
#endif
#endif
