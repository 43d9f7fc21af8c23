/* CPU matmul: each batch goes to GEMM with the operands' own strides when
 * they are row- or column-major (no copy), else through a packed copy.
 * float16/bfloat16 compute in float32. The activation (act) is applied to
 * each batch's block while it is still in cache. */
#include "cpu_internal.h"
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

/* One 2-D operand as GEMM sees it. */
typedef struct {
    const void *p;
    int64_t ld;
    bool trans;
    void *owned; /* packed copy to free */
} operand;

/* rows x cols matrix at p with strides (rs, cs) in elements of dtype dt,
 * presented as (t)ype wt data GEMM can read. */
static bool prepare(operand *o, const char *p, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                    kn_dtype dt, kn_dtype wt) {
    o->owned = NULL;
    if (dt == wt) {
        size_t es = kn_dtype_size(dt);
        if (cs == 1 && (rs >= cols || rows <= 1)) {
            *o = (operand){p, rows <= 1 ? (cols ? cols : 1) : rs, false, NULL};
            return true;
        }
        if (rs == 1 && (cs >= rows || cols <= 1)) {
            *o = (operand){p, cols <= 1 ? (rows ? rows : 1) : cs, true, NULL};
            return true;
        }
        (void)es;
    }
    size_t ws = kn_dtype_size(wt), es = kn_dtype_size(dt);
    char *buf = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * ws);
    if (!buf) return false;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            kn__store(buf + (size_t)(r * cols + c) * ws, wt,
                      kn__load(p + (size_t)(r * rs + c * cs) * es, dt));
    *o = (operand){buf, cols ? cols : 1, false, buf};
    return true;
}

kn_status kn__cpu_matmul(int device, const void *args) {
    (void)device;
    const kn_matmul_args *mm = args;
    const kn_operand *a = &mm->a, *b = &mm->b, *out = &mm->out;
    const kn_operand *bias = kn_operand_present(&mm->bias) ? &mm->bias : NULL;
    int64_t B = out->shape[0], M = out->shape[1], N = out->shape[2], K = a->shape[2];
    kn_dtype dt = out->dtype, wt = dt == KN_F64 ? KN_F64 : KN_F32;
    size_t ws = kn_dtype_size(wt), es = kn_dtype_size(dt);
    /* Output accumulates in the work type; float32/64 write straight into out. */
    char *cbuf = dt == wt ? NULL : malloc((size_t)(M * N > 0 ? M * N : 1) * ws);
    if (dt != wt && !cbuf) return kn__err(KN_ERR_OOM, "matmul: out of host memory");
    kn_status st = KN_OK;
    for (int64_t bi = 0; bi < B && st == KN_OK; bi++) {
        char *C = dt == wt ? (char *)out->data + (size_t)(bi * M * N) * es : cbuf;
        double beta = 0;
        if (bias) { /* C starts as the bias rows; GEMM then adds with beta = 1 */
            size_t bs = kn_dtype_size(bias->dtype);
            const char *bp = bias->data;
            if (wt == KN_F32 && bias->dtype == KN_F32 && bias->stride[0] == 1) {
                for (int64_t i = 0; i < M; i++) memcpy(C + (size_t)(i * N) * ws, bp, (size_t)N * ws);
            } else {
                for (int64_t j = 0; j < N; j++)
                    kn__store(C + (size_t)j * ws, wt, kn__load(bp + (size_t)(j * bias->stride[0]) * bs, bias->dtype));
                for (int64_t i = 1; i < M; i++) memcpy(C + (size_t)(i * N) * ws, C, (size_t)N * ws);
            }
            beta = 1;
        }
        operand A, Bo;
        const char *pa = (const char *)a->data + (size_t)(bi * a->stride[0]) * es;
        const char *pb = (const char *)b->data + (size_t)(bi * b->stride[0]) * es;
        if (!prepare(&A, pa, M, K, a->stride[1], a->stride[2], dt, wt) ||
            !prepare(&Bo, pb, K, N, b->stride[1], b->stride[2], dt, wt)) {
            st = kn__err(KN_ERR_OOM, "matmul: out of host memory");
            break;
        }
        if (wt == KN_F32)
            kn__sgemm(A.trans, Bo.trans, M, N, K, 1.0f, A.p, A.ld, Bo.p, Bo.ld, (float)beta, (float *)C, N);
        else
            kn__dgemm(A.trans, Bo.trans, M, N, K, 1.0, A.p, A.ld, Bo.p, Bo.ld, beta, (double *)C, N);
        free(A.owned);
        free(Bo.owned);
        if (mm->act == KN_ACT_RELU) { /* the epilogue; NaN stays NaN, as kn_relu keeps it */
            if (wt == KN_F32)
                for (int64_t k = 0; k < M * N; k++) ((float *)C)[k] = ((float *)C)[k] <= 0 ? 0.0f : ((float *)C)[k];
            else
                for (int64_t k = 0; k < M * N; k++) ((double *)C)[k] = ((double *)C)[k] <= 0 ? 0.0 : ((double *)C)[k];
        }
        if (cbuf) {
            char *o = (char *)out->data + (size_t)(bi * M * N) * es;
            for (int64_t k = 0; k < M * N; k++) kn__store(o + (size_t)k * es, dt, kn__load(cbuf + (size_t)k * ws, wt));
        }
    }
    free(cbuf);
    return st;
}
