/* MATMUL through cuBLASLt: [B, M, K] @ [B, K, N] (+ bias [N]) into a
 * contiguous [B, M, N], with the bias added in the GEMM's epilogue.
 *
 * cuBLAS is column-major, so we compute C^T = B^T A^T: a row-major operand is
 * a transposed column-major one, and any operand whose rows or columns are
 * contiguous is used in place (a transpose costs nothing); other strides are
 * copied first. Batches use strided-batch layouts (batch stride 0 for a
 * broadcast operand). float32 uses full FP32 unless KILN_ALLOW_TF32=1;
 * float16/bfloat16 accumulate in float32 on tensor cores; float64 in FP64.
 *
 * Descriptors and the algorithm are cached per shape, layout and pointer
 * alignment: a training step repeats the same few GEMMs. The algorithm is
 * the fastest of cuBLASLt's heuristic candidates, timed once on the real
 * operands when the plan is made (the heuristic's first pick is often a
 * split-K kernel plus a reduction, slower for the small GEMMs of a step);
 * small GEMMs are timed inside a graph, as a replayed step runs them; during
 * a graph capture nothing can run, so the first pick is taken. A ReLU
 * (KN_ACT_RELU) runs in the epilogue, bias and all. cuBLASLt is called
 * through kc_lt (cuda_lt.c opens it at the first GEMM). */
#include "cuda_internal.h"
#include "cuda_lt.h"

#include <stdlib.h>
#include <string.h>

#define WORKSPACE ((size_t)32 << 20)
#define PLANS 64
#define CANDIDATES 8
#define SPLIT_VARIANTS 8 /* split-K versions of the first candidates, for small outputs over long K */

typedef struct {
    int dtype, tf32, bias, act;
    int opa, opb;
    long long m, n, k, lda, ldb, ldc, batch, sa, sb, sc;
    int align_a, align_b, align_c, align_bias;
} plan_key;

typedef struct {
    plan_key key;
    bool used;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} plan;

static plan plans[16][PLANS];
static int plan_next[16];

static kn_status lt_check(cublasStatus_t st, const char *what) {
    if (st == CUBLAS_STATUS_SUCCESS) return KN_OK;
    return kn__err(st == CUBLAS_STATUS_ALLOC_FAILED ? KN_ERR_OOM : KN_ERR_DEVICE, "matmul: %s failed (%s)", what,
                   kc_lt.cublasLtGetStatusString(st));
}

static kn_status ensure_lt(kc_dev *d) {
    if (d->lt) return KN_OK;
    /* The library is opened on the first GEMM, not at start (cuda_lt.h). */
    kn_status s = kc_lt_load("matmul");
    if (s != KN_OK) return s;
    cublasLtHandle_t h;
    s = lt_check(kc_lt.cublasLtCreate(&h), "cublasLtCreate");
    if (s != KN_OK) return s;
    s = kc_check(cudaMalloc(&d->workspace, WORKSPACE), "matmul");
    if (s != KN_OK) {
        kc_lt.cublasLtDestroy(h);
        return s;
    }
    d->workspace_size = WORKSPACE;
    d->lt = h;
    return KN_OK;
}

static int alignment(const void *p) {
    uintptr_t x = (uintptr_t)p;
    int a = 1;
    while (a < 256 && !(x & (uintptr_t)a)) a <<= 1;
    return a;
}

/* How a rows x cols matrix with element strides (rs, cs) can be handed to
 * cuBLAS: 'r' row-major with leading dimension *ld, 'c' column-major, or 0
 * (needs a copy). Size-1 dims have no meaningful stride. */
static char layout_of(long long rows, long long cols, long long rs, long long cs, long long *ld) {
    if (cs == 1 || cols == 1) {
        long long l = rows <= 1 ? (cols > 0 ? cols : 1) : rs;
        if (l >= cols && l > 0) {
            *ld = l;
            return 'r';
        }
    }
    if (rs == 1 || rows == 1) {
        long long l = cols <= 1 ? (rows > 0 ? rows : 1) : cs;
        if (l >= rows && l > 0) {
            *ld = l;
            return 'c';
        }
    }
    return 0;
}

static void plan_destroy(plan *p) {
    if (!p->used) return;
    kc_lt.cublasLtMatmulDescDestroy(p->op);
    kc_lt.cublasLtMatrixLayoutDestroy(p->la);
    kc_lt.cublasLtMatrixLayoutDestroy(p->lb);
    kc_lt.cublasLtMatrixLayoutDestroy(p->lc);
    p->used = false;
}

static kn_status layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, long long rows, long long cols, long long ld,
                        long long batch, long long stride) {
    kn_status s = lt_check(kc_lt.cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld), "layout");
    if (s == KN_OK && batch > 1) {
        int32_t b = (int32_t)batch;
        int64_t st = stride;
        s = lt_check(kc_lt.cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b, sizeof b), "layout");
        if (s == KN_OK)
            s = lt_check(kc_lt.cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st, sizeof st),
                         "layout");
    }
    return s;
}

/* Operands of one call, for timing candidates. */
typedef struct {
    const void *a, *b, *bias;
    void *c;
    const void *alpha, *beta;
} gemm_ptrs;

static bool run_algo(kc_dev *d, const plan *p, const cublasLtMatmulAlgo_t *algo, const gemm_ptrs *g) {
    return kc_lt.cublasLtMatmul(d->lt, p->op, g->alpha, g->a, p->la, g->b, p->lb, g->beta, g->c, p->lc, g->c, p->lc, algo,
                          d->workspace, d->workspace_size, d->stream) == CUBLAS_STATUS_SUCCESS;
}

/* Milliseconds per call of algo, back to back: small GEMMs inside a graph of
 * GRAPH_REPS calls (as a training step replays them: eager timing would
 * measure the host's launch rate), large ones eagerly. Negative on failure. */
#define GRAPH_REPS 8
static float time_algo(kc_dev *d, const plan *p, const cublasLtMatmulAlgo_t *algo, const gemm_ptrs *g, bool graph,
                       cudaEvent_t e0, cudaEvent_t e1) {
    cudaGraph_t gr = NULL;
    cudaGraphExec_t ge = NULL;
    bool ok = true;
    int calls = 3;
    if (graph) {
        ok = cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
        for (int rep = 0; rep < GRAPH_REPS && ok; rep++) ok = run_algo(d, p, algo, g);
        bool ended = cudaStreamEndCapture(d->stream, &gr) == cudaSuccess; /* ends the capture whatever happened */
        ok = ok && ended && cudaGraphInstantiate(&ge, gr, 0) == cudaSuccess && cudaGraphLaunch(ge, d->stream) == cudaSuccess;
        calls = 2 * GRAPH_REPS;
    } else {
        ok = run_algo(d, p, algo, g); /* warm-up */
    }
    ok = ok && cudaEventRecord(e0, d->stream) == cudaSuccess;
    for (int rep = 0; rep < (graph ? 2 : calls) && ok; rep++)
        ok = graph ? cudaGraphLaunch(ge, d->stream) == cudaSuccess : run_algo(d, p, algo, g);
    float ms = -1;
    ok = ok && cudaEventRecord(e1, d->stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
         cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
    if (ge) (void)cudaGraphExecDestroy(ge);
    if (gr) (void)cudaGraphDestroy(gr);
    (void)cudaGetLastError();
    return ok ? ms / (float)calls : -1;
}

/* The fastest candidate on these operands (index into res), or 0. */
static int fastest(kc_dev *d, plan *p, const cublasLtMatmulHeuristicResult_t *res, int n, const gemm_ptrs *g) {
    if (n < 2 || d->capture) return 0;
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess) return 0;
    if (cudaEventCreate(&e1) != cudaSuccess) {
        cudaEventDestroy(e0);
        return 0;
    }
    /* Under ~0.1 GFLOP a GEMM takes microseconds, like a launch. */
    bool graph = 2.0 * (double)p->key.m * (double)p->key.n * (double)p->key.k * (double)p->key.batch < 1e8;
    int best = 0;
    float best_ms = 1e30f;
    for (int i = 0; i < n; i++) {
        if (res[i].workspaceSize > d->workspace_size) continue;
        float ms = time_algo(d, p, &res[i].algo, g, graph, e0, e1);
        if (ms >= 0 && ms < best_ms) best_ms = ms, best = i;
    }
    (void)cudaGetLastError();
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return best;
}

/* The cached plan for key, made on first use; NULL with an error. */
static plan *get_plan(kc_dev *d, const plan_key *key, const gemm_ptrs *g) {
    const void *bias = g->bias;
    plan *ps = plans[d->index];
    for (int i = 0; i < PLANS; i++)
        if (ps[i].used && !memcmp(&ps[i].key, key, sizeof *key)) return &ps[i];
    plan *p = &ps[plan_next[d->index]];
    plan_next[d->index] = (plan_next[d->index] + 1) % PLANS;
    plan_destroy(p);
    p->key = *key; /* used = false until the plan is whole */
    cudaDataType_t t = key->dtype == KN_F64 ? CUDA_R_64F : key->dtype == KN_F16 ? CUDA_R_16F
                       : key->dtype == KN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = key->dtype == KN_F64 ? CUBLAS_COMPUTE_64F
                             : key->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cudaDataType_t scale = key->dtype == KN_F64 ? CUDA_R_64F : CUDA_R_32F;
    kn_status s = lt_check(kc_lt.cublasLtMatmulDescCreate(&p->op, ct, scale), "descriptor");
    if (s != KN_OK) return NULL;
    cublasOperation_t opa = key->opa ? CUBLAS_OP_T : CUBLAS_OP_N, opb = key->opb ? CUBLAS_OP_T : CUBLAS_OP_N;
    s = lt_check(kc_lt.cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa), "descriptor");
    if (s == KN_OK)
        s = lt_check(kc_lt.cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb), "descriptor");
    if (s == KN_OK && (key->bias || key->act)) {
        cublasLtEpilogue_t epi = key->act ? (key->bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU)
                                          : CUBLASLT_EPILOGUE_BIAS;
        s = lt_check(kc_lt.cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "epilogue");
        if (s == KN_OK && key->bias)
            s = lt_check(kc_lt.cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
                         "epilogue");
    }
    /* Stored shapes, before the op: A is N x K (or K x N transposed), B K x M (or M x K). */
    if (s == KN_OK)
        s = layout(&p->la, t, key->opa ? key->k : key->m, key->opa ? key->m : key->k, key->lda, key->batch, key->sa);
    if (s == KN_OK)
        s = layout(&p->lb, t, key->opb ? key->n : key->k, key->opb ? key->k : key->n, key->ldb, key->batch, key->sb);
    if (s == KN_OK) s = layout(&p->lc, t, key->m, key->n, key->ldc, key->batch, key->sc);
    cublasLtMatmulPreference_t pref = NULL;
    if (s == KN_OK) s = lt_check(kc_lt.cublasLtMatmulPreferenceCreate(&pref), "preference");
    if (s == KN_OK) {
        uint64_t ws = d->workspace_size;
        uint32_t al[4] = {(uint32_t)key->align_a, (uint32_t)key->align_b, (uint32_t)key->align_c, (uint32_t)key->align_c};
        kc_lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
        kc_lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4);
        kc_lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4);
        kc_lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4);
        kc_lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], 4);
        cublasLtMatmulHeuristicResult_t res[CANDIDATES + SPLIT_VARIANTS];
        int found = 0;
        s = lt_check(kc_lt.cublasLtMatmulAlgoGetHeuristic(d->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, CANDIDATES, res, &found),
                     "cublasLtMatmulAlgoGetHeuristic");
        if (s == KN_OK && found < 1) s = kn__err(KN_ERR_UNSUPPORTED, "matmul: cuBLASLt has no algorithm for this GEMM");
        /* A few output tiles over a long K: the heuristic may offer no
         * split-K at all; try some (checked by cuBLASLt, then timed). */
        if (s == KN_OK && key->m * key->n <= 65536 && key->k >= 512 && !d->capture) {
            int base = found < 2 ? found : 2;
            for (int i = 0; i < base; i++)
                for (int32_t sk = 4; sk <= 32 && found < CANDIDATES + SPLIT_VARIANTS; sk *= 2) {
                    cublasLtMatmulAlgo_t al = res[i].algo;
                    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
                    cublasLtMatmulHeuristicResult_t chk;
                    if (kc_lt.cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk) ||
                        kc_lt.cublasLtMatmulAlgoConfigSetAttribute(&al, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                             sizeof scheme) ||
                        kc_lt.cublasLtMatmulAlgoCheck(d->lt, p->op, p->la, p->lb, p->lc, p->lc, &al, &chk))
                        continue;
                    chk.algo = al;
                    res[found++] = chk;
                }
        }
        if (s == KN_OK) p->algo = res[fastest(d, p, res, found, g)].algo;
    }
    if (pref) kc_lt.cublasLtMatmulPreferenceDestroy(pref);
    p->used = true; /* so plan_destroy releases what was made */
    if (s != KN_OK) {
        plan_destroy(p);
        return NULL;
    }
    p->key = *key;
    return p;
}

/* An operand as cuBLAS wants it: in place, or a contiguous copy (*tmp). */
typedef struct {
    const void *p;
    long long ld, bstride;
    char kind; /* 'r' or 'c' */
} operand;

static kn_status prepare(kc_dev *d, const kn_operand *t, long long rows, long long cols, bool force_copy, operand *o,
                         kc_buf *tmp) {
    memset(tmp, 0, sizeof *tmp);
    char k = force_copy ? 0 : layout_of(rows, cols, t->stride[1], t->stride[2], &o->ld);
    if (k) {
        o->kind = k;
        o->p = t->data;
        o->bstride = t->shape[0] > 1 ? t->stride[0] : 0;
        return KN_OK;
    }
    kn_status s = kc_contig(d, t, t->dtype, tmp); /* t itself when already contiguous */
    if (s != KN_OK) return s;
    o->kind = 'r';
    o->ld = cols > 0 ? cols : 1;
    o->p = tmp->v.data;
    o->bstride = rows * cols;
    return KN_OK;
}

/* act: the epilogue's activation (KN_ACT_NONE when the caller applies it). */
static kn_status run_gemm(kc_dev *d, const kn_matmul_args *m, bool force_copy, int act, bool *retry) {
    const kn_operand *out = &m->out;
    long long B = out->shape[0], M = out->shape[1], N = out->shape[2], K = m->a.shape[2];
    kc_buf ta, tb, tbias;
    operand A, Bo;
    *retry = false;
    memset(&tb, 0, sizeof tb);
    memset(&tbias, 0, sizeof tbias);
    kn_status s = prepare(d, &m->a, M, K, force_copy, &A, &ta);
    if (s == KN_OK) s = prepare(d, &m->b, K, N, force_copy, &Bo, &tb);
    if (s == KN_OK) s = kc_contig(d, &m->bias, out->dtype, &tbias);
    if (s == KN_OK) {
        const char *tf = getenv("KILN_ALLOW_TF32");
        const void *bp = tbias.v.data; /* NULL: no bias */
        /* cuBLAS's A is our B (N x K as stored transposed), its B our A. */
        plan_key key = {.dtype = out->dtype, .tf32 = out->dtype == KN_F32 && tf && !strcmp(tf, "1"),
                        .bias = bp != NULL, .act = act, .opa = Bo.kind == 'c', .opb = A.kind == 'c', .m = N, .n = M,
                        .k = K, .lda = Bo.ld, .ldb = A.ld, .ldc = N, .batch = B, .sa = Bo.bstride, .sb = A.bstride,
                        .sc = M * N, .align_a = alignment(Bo.p), .align_b = alignment(A.p),
                        .align_c = alignment(out->data), .align_bias = bp ? alignment(bp) : 0};
        float one = 1, zero = 0;
        double one_d = 1, zero_d = 0;
        const void *alpha = out->dtype == KN_F64 ? (const void *)&one_d : (const void *)&one;
        const void *beta = out->dtype == KN_F64 ? (const void *)&zero_d : (const void *)&zero;
        gemm_ptrs gp = {Bo.p, A.p, bp, out->data, alpha, beta};
        plan *p = get_plan(d, &key, &gp);
        if (!p) {
            s = kn_error_code();
            *retry = true; /* no plan: another layout or epilogue may have one */
        } else {
            if (bp)
                kc_lt.cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp);
            s = lt_check(kc_lt.cublasLtMatmul(d->lt, p->op, alpha, Bo.p, p->la, A.p, p->lb, beta, out->data, p->lc,
                                        out->data, p->lc, &p->algo, d->workspace, d->workspace_size, d->stream),
                         "cublasLtMatmul");
            if (s == KN_OK) s = kc_after(d, "matmul");
        }
    }
    /* Stream order keeps the copies alive for the GEMM queued. */
    kc_buf_free(d, &ta);
    kc_buf_free(d, &tb);
    kc_buf_free(d, &tbias);
    return s;
}

kn_status kn__cuda_matmul(int device, const void *args) {
    const kn_matmul_args *m = args;
    kc_dev *d = kc_enter(device, "matmul", false);
    if (!d) return kn_error_code();
    const kn_operand *out = &m->out;
    long long B = out->shape[0], M = out->shape[1], N = out->shape[2], K = m->a.shape[2];
    if (B * M * N == 0) return KN_OK;
    if (K == 0) { /* an empty sum: the bias (through the activation), or zeros */
        kn_status s;
        if (kn_operand_present(&m->bias)) {
            kn_operand e = kc_view_expand(&m->bias, 3, out->shape);
            s = kc_copy_view(d, out, &e);
        } else {
            s = kc_fill_view(d, out, 0, 0);
        }
        if (s == KN_OK && m->act == KN_ACT_RELU) s = kc_unary_view(d, out, out, KN_UNARY_RELU, 0, 0);
        return s;
    }
    kn_status s = ensure_lt(d);
    if (s != KN_OK) return s;
    int act = (int)m->act;
    bool retry;
    s = run_gemm(d, m, false, act, &retry);
    /* Odd leading dimensions can leave cuBLASLt without an algorithm: copy;
     * an epilogue it has none for: a ReLU kernel after. */
    if (s != KN_OK && retry) {
        kn_error_clear();
        s = run_gemm(d, m, true, act, &retry);
    }
    if (s != KN_OK && retry && act) {
        kn_error_clear();
        s = run_gemm(d, m, false, KN_ACT_NONE, &retry);
        if (s != KN_OK && retry) {
            kn_error_clear();
            s = run_gemm(d, m, true, KN_ACT_NONE, &retry);
        }
        if (s == KN_OK) s = kc_unary_view(d, out, out, KN_UNARY_RELU, 0, 0);
    }
    return s;
}
