/* Which kernel a large GEMM should use: times every cuBLASLt heuristic
 * candidate for a square n^3 product, and cuBLAS's own pick through
 * cublasGemmEx (the call torch.matmul makes), on the same random operands,
 * in two sweeps (forward, then backward, so that clock drift shows).
 *
 *   gemm_probe f32|tf32|bf16 n [candidates] [calls]
 *
 * One line per candidate: index, cuBLASLt's algorithm attributes, then the
 * median ms per call of each sweep and TFLOP/s of the better. With
 * PROBE_ONCE=1 each candidate runs once, in order, for a profiler to name
 * the kernels. Built by hand: cc -O2 gemm_probe.c -I<cuda>/include
 * -L<cuda>/lib64 -lcublasLt -lcublas -lcudart */
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WS ((size_t)32 << 20)
#define MAXC 64

#define CK(x)                                                                     \
    do {                                                                          \
        int e_ = (int)(x);                                                        \
        if (e_) {                                                                 \
            fprintf(stderr, "gemm_probe: %s failed (%d) at line %d\n", #x, e_, __LINE__); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static cublasLtHandle_t lt;
static cublasHandle_t bl;
static cublasLtMatmulDesc_t op;
static cublasLtMatrixLayout_t la, lb, lc;
static void *A, *B, *C, *ws;
static cudaStream_t st;
static int n, bf16, tf32;
static cublasLtMatmulHeuristicResult_t res[MAXC];
static int found;

/* Candidate i < found is cuBLASLt's; i == found is cublasGemmEx. */
static int run(int i) {
    float one = 1, zero = 0;
    if (i < found)
        return cublasLtMatmul(lt, op, &one, A, la, B, lb, &zero, C, lc, C, lc, &res[i].algo, ws, WS, st);
    cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    return cublasGemmEx(bl, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, t, n, B, t, n, &zero, C, t, n,
                        tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Median ms per call over 5 rounds of `calls` calls. */
static float timed(int i, int calls, cudaEvent_t e0, cudaEvent_t e1) {
    float r[5];
    for (int k = 0; k < 2; k++)
        if (run(i)) return -1;
    for (int k = 0; k < 5; k++) {
        CK(cudaEventRecord(e0, st));
        for (int c = 0; c < calls; c++)
            if (run(i)) return -1;
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&r[k], e0, e1));
        r[k] /= (float)calls;
    }
    qsort(r, 5, sizeof *r, cmpf);
    return r[2];
}

static int attr(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t what) {
    uint32_t v = 0;
    size_t got;
    cublasLtMatmulAlgoConfigGetAttribute(a, what, &v, sizeof v, &got);
    return (int)v;
}

int main(int argc, char **argv) {
    const char *dt = argc > 1 ? argv[1] : "tf32";
    n = argc > 2 ? atoi(argv[2]) : 8192;
    int want = argc > 3 ? atoi(argv[3]) : 32, calls = argc > 4 ? atoi(argv[4]) : 10;
    bf16 = !strcmp(dt, "bf16");
    tf32 = !strcmp(dt, "tf32");
    if (want > MAXC - 1) want = MAXC - 1;
    size_t el = bf16 ? 2 : 4, bytes = (size_t)n * n * el;
    CK(cudaStreamCreate(&st));
    CK(cudaMalloc(&A, bytes));
    CK(cudaMalloc(&B, bytes));
    CK(cudaMalloc(&C, bytes));
    CK(cudaMalloc(&ws, WS));
    /* Random operands in [-1, 1): zeros would run faster than real data. */
    unsigned char *h = malloc(bytes);
    uint64_t s = 88172645463325252ull;
    for (int m = 0; m < 2; m++) {
        for (size_t i = 0; i < (size_t)n * n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            float f = (float)((s >> 40) * (1.0 / (1 << 24))) * 2 - 1;
            uint32_t u;
            memcpy(&u, &f, 4);
            uint16_t b16 = (uint16_t)(u >> 16);
            if (bf16)
                memcpy(h + 2 * i, &b16, 2);
            else
                memcpy(h + 4 * i, &f, 4);
        }
        CK(cudaMemcpy(m ? B : A, h, bytes, cudaMemcpyHostToDevice));
    }
    free(h);

    CK(cublasLtCreate(&lt));
    CK(cublasCreate(&bl));
    CK(cublasSetStream(bl, st));
    CK(cublasSetWorkspace(bl, ws, WS));
    cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    CK(cublasLtMatmulDescCreate(&op, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatrixLayoutCreate(&la, t, n, n, n));
    CK(cublasLtMatrixLayoutCreate(&lb, t, n, n, n));
    CK(cublasLtMatrixLayoutCreate(&lc, t, n, n, n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t w = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &w, sizeof w));
    CK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, want, res, &found));
    printf("probe %s n=%d: %d cuBLASLt candidates + cublasGemmEx\n", dt, n, found);

    if (getenv("PROBE_ONCE")) {
        for (int i = 0; i <= found; i++) CK(run(i));
        CK(cudaStreamSynchronize(st));
        return 0;
    }
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float fwd[MAXC], bwd[MAXC];
    for (int i = 0; i <= found; i++) fwd[i] = timed(i, calls, e0, e1);
    for (int i = found; i >= 0; i--) bwd[i] = timed(i, calls, e0, e1);
    double flop = 2.0 * n * (double)n * n;
    for (int i = 0; i <= found; i++) {
        float best = fwd[i] < bwd[i] ? fwd[i] : bwd[i];
        if (i < found)
            printf("cand %2d algo %3d tile %3d stages %3d splitk %2d red %d swizzle %d custom %3d cluster %2d ws %8zu "
                   "waves %.2f",
                   i, attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_ID), attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                   attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID), attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                   attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                   attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                   attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                   attr(&res[i].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID), res[i].workspaceSize, res[i].wavesCount);
        else
            printf("cand %2d cublasGemmEx (cuBLAS's own pick)", i);
        printf("  ms %.4f %.4f  TFLOP/s %.1f\n", fwd[i], bwd[i], best > 0 ? flop / best / 1e9 : 0.0);
    }
    return 0;
}
