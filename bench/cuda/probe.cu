/* What a small training step costs on this GPU, before any kiln code:
 *  1. the floor per kernel inside a CUDA graph (empty kernels, and a small
 *     elementwise one over the car model's widest activation), with and
 *     without programmatic dependent launch;
 *  2. cuBLASLt's fp32 GEMMs of the car model's step (forward, weight
 *     gradient, input gradient of each Linear) and whether the fused
 *     epilogues kiln could use (RELU_BIAS forward, BGRADB: the bias gradient
 *     inside the weight-gradient GEMM) are offered, and what they cost.
 * Every time is per call, from a graph of 20 calls replayed 20 times.
 *
 *   nvcc -O2 -arch=sm_90 bench/cuda/probe.cu -lcublasLt -o probe && ./probe */
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdio.h>
#include <stdlib.h>
#include <vector>

#define CK(x)                                                                                    \
    do {                                                                                         \
        cudaError_t e_ = (x);                                                                    \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));          \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

__global__ void empty_kernel() {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

__global__ void scale_kernel(const float *x, float *y, int n) {
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = x[i] * 1.0001f;
}

static cudaStream_t stream;

template <typename F>
static float graph_us(F body, int calls) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    for (int i = 0; i < calls; i++) body(i);
    CK(cudaStreamEndCapture(stream, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, stream));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const int reps = 20;
    CK(cudaEventRecord(a, stream));
    for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(ge, stream));
    CK(cudaEventRecord(b, stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return ms * 1000 / (reps * calls);
}

template <typename K, typename... A>
static void launch(bool pdl, K kernel, int grid, int block, A... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.stream = stream;
    cudaLaunchAttribute at = {};
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &at;
    cfg.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, kernel, args...));
}

/* ---- cuBLASLt ------------------------------------------------------------------------------ */
static cublasLtHandle_t lt;
static void *ws;
static const size_t WS = 32 << 20;

#define LK(x)                                                                                    \
    do {                                                                                         \
        cublasStatus_t s_ = (x);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                       \
            fprintf(stderr, "%s:%d: cublasLt %d\n", __FILE__, __LINE__, (int)s_);                \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

/* Column-major D[m x n] = op(A) op(B), A stored (ta ? k x m : m x k), B (tb ? n x k : k x n).
 * Returns the best per-call time over the heuristic's candidates, or -1 if none; *found = count. */
static float gemm_us(int m, int n, int k, bool ta, bool tb, cublasLtEpilogue_t epi, const float *A, const float *B,
                     float *D, float *bias, int *found, int *best_splitk) {
    cublasLtMatmulDesc_t op;
    LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (bias) LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasLtMatrixLayout_t la, lb, ld;
    LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, ta ? k : m, ta ? m : k, ta ? k : m));
    LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, tb ? n : k, tb ? k : n, tb ? n : k));
    LK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, m));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t w = WS;
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &w, sizeof w));
    cublasLtMatmulHeuristicResult_t res[8];
    int nf = 0;
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 8, res, &nf);
    if (hs != CUBLAS_STATUS_SUCCESS) nf = 0;
    *found = nf;
    float best = -1;
    float one = 1, zero = 0;
    for (int i = 0; i < nf; i++) {
        float t = graph_us(
            [&](int) {
                LK(cublasLtMatmul(lt, op, &one, A, la, B, lb, &zero, D, ld, D, ld, &res[i].algo, ws, WS, stream));
            },
            20);
        if (best < 0 || t < best) {
            best = t;
            int32_t sk = 1;
            size_t sz;
            cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &sz);
            *best_splitk = sk;
        }
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    return best;
}

int main() {
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("device: %s, %d SMs\n", p.name, p.multiProcessorCount);
    const int R = 1382, n = R * 200;
    float *x, *y;
    CK(cudaMalloc(&x, n * sizeof(float)));
    CK(cudaMalloc(&y, n * sizeof(float)));
    CK(cudaMemset(x, 0, n * sizeof(float)));
    for (int pdl = 0; pdl < 2; pdl++) {
        float e = graph_us([&](int) { launch(pdl, empty_kernel, 1, 32); }, 64);
        float e2 = graph_us([&](int) { launch(pdl, empty_kernel, 132, 256); }, 64);
        float s = graph_us([&](int) { launch(pdl, scale_kernel, (n + 255) / 256, 256, (const float *)x, y, n); }, 64);
        float s1 = graph_us([&](int) { launch(pdl, scale_kernel, 1, 1024, (const float *)x, y, n); }, 64);
        printf("floor pdl=%d: empty 1x32 %.2f us, empty 132x256 %.2f us, scale %dx256 %.2f us, scale 1x1024 %.2f us\n",
               pdl, e, e2, (n + 255) / 256, s, s1);
    }

    LK(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, WS));
    const size_t big = 1382 * 256;
    std::vector<float> h(big);
    for (size_t i = 0; i < big; i++) h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    float *A, *B, *D, *bias;
    CK(cudaMalloc(&A, big * 4));
    CK(cudaMalloc(&B, big * 4));
    CK(cudaMalloc(&D, big * 4));
    CK(cudaMalloc(&bias, 4096));
    CK(cudaMemcpy(A, h.data(), big * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(B, h.data(), big * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(bias, h.data(), 4096, cudaMemcpyHostToDevice));
    int layers[4][2] = {{12, 200}, {200, 100}, {100, 50}, {50, 4}};
    printf("%-22s %-12s %6s %8s %4s\n", "gemm (row-major)", "epilogue", "algos", "us", "splitk");
    float total_plain = 0, total_fused = 0;
    for (auto &L : layers) {
        int in = L[0], out = L[1], nf, sk = 1;
        char name[64];
        /* forward y[R,out] = x[R,in] W^T: D col-major out x R = W (T: stored in x out) * x^T (in x R) */
        snprintf(name, sizeof name, "fwd %dx%dx%d", R, out, in);
        float t0 = gemm_us(out, R, in, true, false, CUBLASLT_EPILOGUE_BIAS, A, B, D, bias, &nf, &sk);
        printf("%-22s %-12s %6d %8.2f %4d\n", name, "BIAS", nf, t0, sk);
        float t1 = gemm_us(out, R, in, true, false, CUBLASLT_EPILOGUE_RELU_BIAS, A, B, D, bias, &nf, &sk);
        printf("%-22s %-12s %6d %8.2f %4d\n", name, "RELU_BIAS", nf, t1, sk);
        /* dW[out,in] = g^T x: D col-major in x out = x^T (in x R, N) * g (stored out x R, T) */
        snprintf(name, sizeof name, "dW %dx%dx%d", out, in, R);
        float t2 = gemm_us(in, out, R, false, true, CUBLASLT_EPILOGUE_DEFAULT, A, B, D, NULL, &nf, &sk);
        printf("%-22s %-12s %6d %8.2f %4d\n", name, "DEFAULT", nf, t2, sk);
        float t3 = gemm_us(in, out, R, false, true, CUBLASLT_EPILOGUE_BGRADB, A, B, D, bias, &nf, &sk);
        printf("%-22s %-12s %6d %8.2f %4d\n", name, "BGRADB", nf, t3, sk);
        /* dX[R,in] = g W: D col-major in x R = W (stored in x out, N) * g^T (out x R, N) */
        snprintf(name, sizeof name, "dX %dx%dx%d", R, in, out);
        float t4 = gemm_us(in, R, out, false, false, CUBLASLT_EPILOGUE_DEFAULT, A, B, D, NULL, &nf, &sk);
        printf("%-22s %-12s %6d %8.2f %4d\n", name, "DEFAULT", nf, t4, sk);
        total_plain += t0 + t2 + t4;
        total_fused += (t1 > 0 ? t1 : t0) + (t3 > 0 ? t3 : t2) + t4;
    }
    printf("step GEMMs: plain %.1f us, with fused epilogues %.1f us\n", total_plain, total_fused);
    return 0;
}
