/* cuBLASLt, opened at run time (cuda_lt.c). libkiln links nothing of it:
 * mapping and relocating libcublasLt costs about 200 MB of resident memory
 * at start, which a machine without a GPU (or a program without a GEMM)
 * should not pay. The header gives the types; calls go through kc_lt. */
#ifndef KILN_CUDA_LT_H
#define KILN_CUDA_LT_H

#include "core/backend.h"

#include <cublasLt.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every cuBLASLt function kiln calls. A field has the name and (through
 * __typeof__, which gcc, clang and nvcc's host compilers all accept) the
 * exact type of the function the header declares, so a call is checked as
 * a direct one would be. */
#define KC_LT_FUNCS(X)                                                                                       \
    X(cublasLtGetVersion)                                                                                    \
    X(cublasLtGetStatusString)                                                                               \
    X(cublasLtCreate)                                                                                        \
    X(cublasLtDestroy)                                                                                       \
    X(cublasLtMatmul)                                                                                        \
    X(cublasLtMatmulDescCreate)                                                                              \
    X(cublasLtMatmulDescDestroy)                                                                             \
    X(cublasLtMatmulDescSetAttribute)                                                                        \
    X(cublasLtMatrixLayoutCreate)                                                                            \
    X(cublasLtMatrixLayoutDestroy)                                                                           \
    X(cublasLtMatrixLayoutSetAttribute)                                                                      \
    X(cublasLtMatmulPreferenceCreate)                                                                        \
    X(cublasLtMatmulPreferenceDestroy)                                                                       \
    X(cublasLtMatmulPreferenceSetAttribute)                                                                  \
    X(cublasLtMatmulAlgoGetHeuristic)                                                                        \
    X(cublasLtMatmulAlgoCheck)                                                                               \
    X(cublasLtMatmulAlgoConfigSetAttribute)

typedef struct {
#define KC_LT_FIELD(f) __typeof__(f) *f;
    KC_LT_FUNCS(KC_LT_FIELD)
#undef KC_LT_FIELD
} kc_lt_fns;

/* Filled by kc_lt_load; every field is set once it returned KN_OK. */
extern kc_lt_fns kc_lt;

/* Opens cuBLASLt once (thread-safe). KILN_CUBLASLT names the file to open
 * instead; otherwise libcublasLt.so.<major of the headers built against>
 * through the dynamic linker's search (LD_LIBRARY_PATH, ldconfig), then in
 * the toolkit's library directory recorded at build time. On failure the
 * same error, naming op, the file and the fix, is returned on every call. */
kn_status kc_lt_load(const char *op);

#ifdef __cplusplus
}
#endif
#endif
