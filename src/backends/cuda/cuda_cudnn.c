/* Convolution through cuDNN 9's graph (backend) API, the library opened with
 * dlopen at the first convolution on a CUDA device (cuda_cudnn.h says why
 * and how it is found).
 *
 * A convolution is one operation graph (forward, backward-data or
 * backward-filter) over three tensor descriptors with the operands' own
 * strides. Its engine configurations come from heuristics (mode A); those
 * whose numerical notes break kiln's precision policy are skipped (float32:
 * no tensor cores, i.e. no TF32, unless KILN_ALLOW_TF32=1, no down-converted
 * inputs; 16-bit floats: no reduced-precision accumulation), as is any whose
 * plan does not finalize. Of the first few that do, the fastest on the real
 * operands is kept (the heuristic's first pick is kept during a graph
 * capture, when nothing can be timed). Plans are cached per device, kind,
 * dtype, shapes, strides, padding, strides and dilations and pointer
 * alignment, and the bounded cache evicts round-robin. A configuration cuDNN
 * has no engine for is remembered too, so the caller's own kernel runs
 * without asking again. Workspaces come from kiln's caching allocator, so
 * an execution is capturable in a CUDA graph: no cudaMalloc, no wait. */
#include "cuda_cudnn.h"

#include "cuda_dl.h"

#ifndef KC_HAVE_CUDNN

kn_status kc_cudnn_ready(const char *op, bool *ready) {
    (void)op;
    *ready = false;
    return KN_OK;
}

kn_status kc_cudnn_conv(kc_dev *d, const char *op, kc_conv_kind kind, const kc_conv_geom *g, bool tf32,
                        const kn_operand *x, const kn_operand *w, const kn_operand *y, bool *declined) {
    (void)d, (void)op, (void)kind, (void)g, (void)tf32, (void)x, (void)w, (void)y;
    *declined = true;
    return KN_OK;
}

#else

#include <cudnn_graph.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* cuDNN keeps its ABI within a major version. */
#define KC_DNN_SONAME "libcudnn.so." KC_STR(CUDNN_MAJOR)

#define KC_DNN_FUNCS(X)                                                                                      \
    X(cudnnGetVersion)                                                                                       \
    X(cudnnGetErrorString)                                                                                   \
    X(cudnnCreate)                                                                                           \
    X(cudnnDestroy)                                                                                          \
    X(cudnnSetStream)                                                                                        \
    X(cudnnBackendCreateDescriptor)                                                                          \
    X(cudnnBackendDestroyDescriptor)                                                                         \
    X(cudnnBackendSetAttribute)                                                                              \
    X(cudnnBackendGetAttribute)                                                                              \
    X(cudnnBackendFinalize)                                                                                  \
    X(cudnnBackendExecute)

static struct {
#define KC_DNN_FIELD(f) __typeof__(f) *f;
    KC_DNN_FUNCS(KC_DNN_FIELD)
#undef KC_DNN_FIELD
    __typeof__(cudnnGetLastErrorString) *cudnnGetLastErrorString; /* details of the last error; optional */
} dnn;

enum { DNN_ABSENT = 0, DNN_READY, DNN_FAILED };
static int state;
static char *failure; /* why a named file could not be used (malloc'd) */
static once_flag load_once = ONCE_FLAG_INIT;
static mtx_t lock; /* the handles and the plan cache */

static void fail(const char *fmt, ...) KN_PRINTF(1, 2);
static void fail(const char *fmt, ...) {
    state = DNN_FAILED;
    va_list ap;
    va_start(ap, fmt);
    failure = kc_vformat(fmt, ap);
    va_end(ap);
}

static void load(void) {
    mtx_init(&lock, mtx_plain);
    const char *env = getenv("KILN_CUDNN");
    if (env && !strcmp(env, "0")) return; /* kiln's own kernels, by request */
#ifdef KC_CUDNN_DIR
    /* Where cuDNN was at build time (empty when CMake found the headers only). */
    const char *built = sizeof KC_CUDNN_DIR > 1 ? KC_CUDNN_DIR "/" KC_DNN_SONAME : NULL;
#else
    const char *built = NULL;
#endif
    kc_dl l = kc_dl_open("KILN_CUDNN", KC_DNN_SONAME, built);
    bool named = l.named;
    if (!l.handle && named) fail("cannot load cuDNN from KILN_CUDNN=%s: %s", env, l.error ? l.error : "dlopen failed");
    free(l.error);
    void *h = l.handle;
    if (!h) return; /* no cuDNN found by the search: a supported configuration, quietly */
    const char *missing = NULL;
#define KC_DNN_RESOLVE(f)                                                                                    \
    if (!missing) {                                                                                          \
        void *p = dlsym(h, #f);                                                                              \
        if (p) *(void **)&dnn.f = p;                                                                         \
        else missing = #f;                                                                                   \
    }
    KC_DNN_FUNCS(KC_DNN_RESOLVE)
#undef KC_DNN_RESOLVE
    void *le = dlsym(h, "cudnnGetLastErrorString");
    if (le) *(void **)&dnn.cudnnGetLastErrorString = le;
    size_t version = missing ? 0 : dnn.cudnnGetVersion();
    /* A library that is not a cuDNN 9 is an error when the user named it;
     * found by the search it just means no cuDNN. */
    if (missing || version / 10000 != CUDNN_MAJOR) {
        if (named && missing) fail("KILN_CUDNN=%s has no %s: not a cuDNN %d", env, missing, CUDNN_MAJOR);
        else if (named)
            fail("KILN_CUDNN=%s is cuDNN %zu.%zu, but kiln was built with cuDNN %d.%d (a different major version)",
                 env, version / 10000, version / 100 % 100, CUDNN_MAJOR, CUDNN_MINOR);
        memset(&dnn, 0, sizeof dnn);
        dlclose(h);
        return;
    }
    state = DNN_READY;
}

kn_status kc_cudnn_ready(const char *op, bool *ready) {
    call_once(&load_once, load);
    *ready = state == DNN_READY;
    if (state != DNN_FAILED) return KN_OK;
    return kn__err(KN_ERR_DEVICE, "%s: %s", op, failure ? failure : "cannot load cuDNN (out of memory)");
}

/* ---- errors ----------------------------------------------------------------------------------- */
static kn_status dnn_err(const char *op, const kc_dev *d, cudnnStatus_t st, const char *what) {
    char detail[512] = "";
    if (dnn.cudnnGetLastErrorString) dnn.cudnnGetLastErrorString(detail, sizeof detail);
    return kn__err(st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ? KN_ERR_OOM : KN_ERR_DEVICE,
                   "%s: cuDNN error %s on cuda:%d (%s%s%s)", op, dnn.cudnnGetErrorString(st), d->index, what,
                   detail[0] ? ": " : "", detail);
}

/* Bad parameters and "not supported" while a plan is being made mean that
 * cuDNN cannot do this convolution: the caller's kernel runs instead. */
static bool declinable(cudnnStatus_t st) {
    int c = (int)st / 1000;
    return c == 2 || c == 3;
}

/* ---- handles -------------------------------------------------------------------------------------- */
#define MAX_DEV 16
static cudnnHandle_t handles[MAX_DEV];

static kn_status handle_of(kc_dev *d, const char *op, cudnnHandle_t *out) {
    if (d->index >= MAX_DEV) return kn__err(KN_ERR_DEVICE, "%s: cuDNN: cuda:%d is beyond kiln's %d devices", op, d->index, MAX_DEV);
    if (!handles[d->index]) {
        cudnnHandle_t h;
        cudnnStatus_t st = dnn.cudnnCreate(&h);
        if (st != CUDNN_STATUS_SUCCESS) return dnn_err(op, d, st, "cudnnCreate");
        /* Every execution goes on the device's one stream. */
        if ((st = dnn.cudnnSetStream(h, d->stream)) != CUDNN_STATUS_SUCCESS) {
            kn_status s = dnn_err(op, d, st, "cudnnSetStream");
            dnn.cudnnDestroy(h);
            return s;
        }
        handles[d->index] = h;
    }
    *out = handles[d->index];
    return KN_OK;
}

/* ---- plans ------------------------------------------------------------------------------------------- */
#define PLANS 64
#define CONFIGS 64   /* heuristic results looked at (float32 without TF32 skips the tensor-core ones, often first) */
#define CANDIDATES 4 /* finalized plans timed */
#define MAX_DESC 12
#define MAX_WORKSPACE ((int64_t)1 << 30) /* engines wanting more are skipped */

typedef struct {
    int kind, dtype, tf32, deterministic;
    int64_t dims[3][4], strides[3][4]; /* x, w, y */
    int64_t pre[2], post[2], stride[2], dilation[2];
    int64_t align[3];
} plan_key;

typedef struct {
    plan_key key;
    bool used;
    bool none; /* cuDNN has no engine for key */
    cudnnBackendDescriptor_t desc[MAX_DESC]; /* everything the plan refers to, kept alive with it */
    int ndesc;
    cudnnBackendDescriptor_t plan;
    int64_t workspace;
} plan;

static plan plans[MAX_DEV][PLANS];
static int plan_next[MAX_DEV];

static void plan_destroy(plan *p) {
    for (int i = p->ndesc - 1; i >= 0; i--) dnn.cudnnBackendDestroyDescriptor(p->desc[i]);
    p->ndesc = 0;
    p->plan = NULL;
    p->used = p->none = false;
}

/* A plan being made: its status, and whether cuDNN declined. */
typedef struct {
    kc_dev *d;
    const char *op;
    kn_status s;
    bool declined;
} maker;

static bool ok(maker *m, cudnnStatus_t st, const char *what) {
    if (st == CUDNN_STATUS_SUCCESS) return true;
    if (declinable(st)) m->declined = true;
    else m->s = dnn_err(m->op, m->d, st, what);
    return false;
}

static cudnnStatus_t create(plan *p, cudnnBackendDescriptorType_t t, cudnnBackendDescriptor_t *out) {
    cudnnStatus_t st = dnn.cudnnBackendCreateDescriptor(t, out);
    if (st == CUDNN_STATUS_SUCCESS) p->desc[p->ndesc++] = *out;
    return st;
}

static cudnnStatus_t set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t,
                         int64_t n, const void *v) {
    return dnn.cudnnBackendSetAttribute(d, a, t, n, v);
}

static cudnnDataType_t dnn_type(int dt) {
    return dt == KN_F64 ? CUDNN_DATA_DOUBLE : dt == KN_F16 ? CUDNN_DATA_HALF : dt == KN_BF16 ? CUDNN_DATA_BFLOAT16
                                                                                          : CUDNN_DATA_FLOAT;
}

static bool tensor(maker *m, plan *p, int which, cudnnBackendDescriptor_t *out) {
    const plan_key *k = &p->key;
    cudnnDataType_t t = dnn_type(k->dtype);
    int64_t uid = which + 1;
    return ok(m, create(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, out), "tensor descriptor") &&
           ok(m, set(*out, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &t), "tensor data type") &&
           ok(m, set(*out, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, k->dims[which]), "tensor dimensions") &&
           ok(m, set(*out, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, k->strides[which]), "tensor strides") &&
           ok(m, set(*out, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid), "tensor id") &&
           ok(m, set(*out, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &k->align[which]),
              "tensor alignment") &&
           ok(m, dnn.cudnnBackendFinalize(*out), "tensor descriptor finalize");
}

/* Whether the engine's numerical notes fit kiln's precision policy. */
static bool engine_allowed(const plan_key *k, cudnnBackendDescriptor_t engine) {
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    int64_t n = 0;
    if (dnn.cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                     CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes) != CUDNN_STATUS_SUCCESS)
        return false;
    for (int64_t i = 0; i < n && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; i++) {
        cudnnBackendNumericalNote_t t = notes[i];
        if (k->dtype == KN_F32 && !k->tf32 && (t == CUDNN_NUMERICAL_NOTE_TENSOR_CORE || t == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))
            return false; /* float32 tensor cores are TF32 */
        if (t == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION) return false; /* accumulate in float at least */
        if (k->deterministic && t == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return false; /* kn_use_deterministic_algorithms */
    }
    return true;
}

/* Runs plan pl with the operands' pointers (x, w, y) and a workspace of ws bytes. */
static kn_status execute(kc_dev *d, const char *op, cudnnHandle_t h, cudnnBackendDescriptor_t pl, int64_t ws,
                         void *const ptrs[3], cudnnStatus_t *status) {
    void *work = NULL;
    if (ws > 0 && !(work = kc_alloc(d->index, (size_t)ws))) return kn_error_code();
    int64_t uids[3] = {1, 2, 3};
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = dnn.cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    const char *what = "variant pack";
    if (st == CUDNN_STATUS_SUCCESS)
        st = set(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    if (st == CUDNN_STATUS_SUCCESS) st = set(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
    if (st == CUDNN_STATUS_SUCCESS) st = set(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &work);
    if (st == CUDNN_STATUS_SUCCESS) st = dnn.cudnnBackendFinalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) {
        what = "cudnnBackendExecute";
        st = dnn.cudnnBackendExecute(h, pl, vp);
    }
    kn_status s = st == CUDNN_STATUS_SUCCESS ? KN_OK : dnn_err(op, d, st, what);
    if (status) *status = st;
    if (vp) dnn.cudnnBackendDestroyDescriptor(vp);
    /* Stream order keeps the workspace alive for the kernels queued (and a
     * capture's pool keeps it for the graph). */
    if (work) kc_free(d->index, work, (size_t)ws);
    return s;
}

/* Milliseconds per run of pl (a warm-up, then 3), or a negative number. */
static float time_plan(kc_dev *d, const char *op, cudnnHandle_t h, cudnnBackendDescriptor_t pl, int64_t ws,
                       void *const ptrs[3]) {
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms = -1;
    bool good = cudaEventCreate(&e0) == cudaSuccess && cudaEventCreate(&e1) == cudaSuccess;
    good = good && execute(d, op, h, pl, ws, ptrs, NULL) == KN_OK && cudaEventRecord(e0, d->stream) == cudaSuccess;
    for (int r = 0; r < 3 && good; r++) good = execute(d, op, h, pl, ws, ptrs, NULL) == KN_OK;
    good = good && cudaEventRecord(e1, d->stream) == cudaSuccess && cudaEventSynchronize(e1) == cudaSuccess &&
           cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    (void)cudaGetLastError();
    if (!good) kn_error_clear(); /* a candidate that fails is skipped */
    return good ? ms / 3 : -1;
}

typedef struct {
    cudnnBackendDescriptor_t cfg, engine, plan;
    int64_t ws;
} candidate;

static int64_t engine_index(cudnnBackendDescriptor_t engine) {
    int64_t idx = -1, n = 0;
    if (dnn.cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &idx) !=
            CUDNN_STATUS_SUCCESS ||
        n != 1)
        return -1;
    return idx;
}

/* KILN_CUDNN_LOG=1: each plan made, its candidates (engine index, ms when
 * timed) and the one kept, on stderr: for finding which engine a result
 * came from. */
static void log_plan(const plan_key *k, const candidate *cand, int ncand, const float *ms, int best) {
    const char *env = getenv("KILN_CUDNN_LOG");
    if (!env || !strcmp(env, "0")) return;
    static const char *const kinds[3] = {"forward", "backward data", "backward filter"};
    fprintf(stderr, "kiln cudnn: %s %s%s%s", kinds[k->kind], kn_dtype_name((kn_dtype)k->dtype), k->tf32 ? " tf32" : "",
            k->deterministic ? " deterministic" : "");
    static const char *const names[3] = {"x", "w", "y"};
    for (int t = 0; t < 3; t++)
        fprintf(stderr, " %s[%lld,%lld,%lld,%lld]/[%lld,%lld,%lld,%lld]@%lld", names[t], (long long)k->dims[t][0],
                (long long)k->dims[t][1], (long long)k->dims[t][2], (long long)k->dims[t][3],
                (long long)k->strides[t][0], (long long)k->strides[t][1], (long long)k->strides[t][2],
                (long long)k->strides[t][3], (long long)k->align[t]);
    fprintf(stderr, " pad %lld,%lld/%lld,%lld stride %lld,%lld dilation %lld,%lld:", (long long)k->pre[0],
            (long long)k->pre[1], (long long)k->post[0], (long long)k->post[1], (long long)k->stride[0],
            (long long)k->stride[1], (long long)k->dilation[0], (long long)k->dilation[1]);
    for (int i = 0; i < ncand; i++)
        fprintf(stderr, " %s%lld(%.4f ms)", i == best ? "*" : "", (long long)engine_index(cand[i].engine), ms[i]);
    fprintf(stderr, "\n");
}

/* Makes p's plan for p->key (p->none when cuDNN has none). */
static kn_status build(kc_dev *d, const char *op, cudnnHandle_t h, plan *p, void *const ptrs[3]) {
    maker m = {d, op, KN_OK, false};
    const plan_key *k = &p->key;
    cudnnBackendDescriptor_t t[3], conv, oper, graph, heur = NULL;
    cudnnBackendDescriptor_t cfgs[CONFIGS];
    int64_t ncfg = 0;
    candidate cand[CANDIDATES];
    int ncand = 0;
    bool f64 = k->dtype == KN_F64;
    cudnnDataType_t comp = f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t two = 2;
    if (!tensor(&m, p, 0, &t[0]) || !tensor(&m, p, 1, &t[1]) || !tensor(&m, p, 2, &t[2])) goto done;
    if (!ok(&m, create(p, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv), "convolution descriptor") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp), "compute type") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode), "mode") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &two), "spatial dims") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, k->pre), "padding") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, k->post), "padding") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, k->stride), "strides") ||
        !ok(&m, set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, k->dilation), "dilations") ||
        !ok(&m, dnn.cudnnBackendFinalize(conv), "convolution descriptor finalize"))
        goto done;
    {
        /* The operation: which tensor plays which role, alpha 1, beta 0. */
        static const cudnnBackendDescriptorType_t types[3] = {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                                              CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                                              CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
        static const cudnnBackendAttributeName_t attrs[3][6] = {
            {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
             CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
             CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
            {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
            {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
             CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA}};
        const cudnnBackendAttributeName_t *a = attrs[k->kind];
        double one_d = 1, zero_d = 0;
        float one = 1, zero = 0;
        cudnnBackendAttributeType_t st = f64 ? CUDNN_TYPE_DOUBLE : CUDNN_TYPE_FLOAT;
        const void *alpha = f64 ? (const void *)&one_d : (const void *)&one;
        const void *beta = f64 ? (const void *)&zero_d : (const void *)&zero;
        if (!ok(&m, create(p, types[k->kind], &oper), "operation descriptor") ||
            !ok(&m, set(oper, a[0], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[0]), "operation x") ||
            !ok(&m, set(oper, a[1], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[1]), "operation w") ||
            !ok(&m, set(oper, a[2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t[2]), "operation y") ||
            !ok(&m, set(oper, a[3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv), "operation convolution") ||
            !ok(&m, set(oper, a[4], st, 1, alpha), "operation alpha") ||
            !ok(&m, set(oper, a[5], st, 1, beta), "operation beta") ||
            !ok(&m, dnn.cudnnBackendFinalize(oper), "operation finalize"))
            goto done;
    }
    if (!ok(&m, create(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph), "operation graph") ||
        !ok(&m, set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &oper), "graph ops") ||
        !ok(&m, set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h), "graph handle") ||
        !ok(&m, dnn.cudnnBackendFinalize(graph), "operation graph finalize"))
        goto done;
    {
        cudnnBackendHeurMode_t hm = CUDNN_HEUR_MODE_A;
        if (!ok(&m, dnn.cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur), "heuristics") ||
            !ok(&m, set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph),
                "heuristics graph") ||
            !ok(&m, set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &hm), "heuristics mode") ||
            !ok(&m, dnn.cudnnBackendFinalize(heur), "heuristics finalize"))
            goto done;
        int64_t avail = 0;
        if (!ok(&m, dnn.cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                                 &avail, NULL),
                "heuristics results"))
            goto done;
        if (avail > CONFIGS) avail = CONFIGS;
        for (; ncfg < avail; ncfg++)
            if (!ok(&m, dnn.cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[ncfg]), "engine config"))
                goto done;
        int64_t got = 0;
        if (ncfg > 0 && !ok(&m, dnn.cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got, cfgs),
                            "heuristics results"))
            goto done;
        /* Each configuration in the heuristic's order: allowed, and its plan finalizes. */
        for (int64_t i = 0; i < got && ncand < CANDIDATES; i++) {
            candidate c = {cfgs[i], NULL, NULL, 0};
            int64_t n = 0;
            if (dnn.cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &c.engine) != CUDNN_STATUS_SUCCESS) {
                c.engine = NULL;
                continue;
            }
            bool good = dnn.cudnnBackendGetAttribute(c.cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                     1, &n, &c.engine) == CUDNN_STATUS_SUCCESS &&
                        n == 1 && engine_allowed(k, c.engine);
            good = good && dnn.cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &c.plan) ==
                               CUDNN_STATUS_SUCCESS;
            if (!good) c.plan = NULL;
            good = good &&
                   set(c.plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c.cfg) ==
                       CUDNN_STATUS_SUCCESS &&
                   set(c.plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) == CUDNN_STATUS_SUCCESS &&
                   dnn.cudnnBackendFinalize(c.plan) == CUDNN_STATUS_SUCCESS &&
                   dnn.cudnnBackendGetAttribute(c.plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                                &n, &c.ws) == CUDNN_STATUS_SUCCESS &&
                   c.ws >= 0 && c.ws <= MAX_WORKSPACE;
            if (good) {
                cand[ncand++] = c;
                cfgs[i] = NULL; /* now the candidate's */
            } else {
                if (c.plan) dnn.cudnnBackendDestroyDescriptor(c.plan);
                dnn.cudnnBackendDestroyDescriptor(c.engine);
            }
        }
    }
    if (ncand == 0) {
        m.declined = true;
        goto done;
    }
    {
        int best = 0;
        float ms[CANDIDATES];
        for (int i = 0; i < ncand; i++) ms[i] = -1;
        /* The fastest on these operands; nothing runs during a capture, and
         * KILN_CUDNN_TUNE=0 takes the heuristic's first. */
        const char *tune = getenv("KILN_CUDNN_TUNE");
        if (ncand > 1 && !d->capture && !(tune && !strcmp(tune, "0"))) {
            float best_ms = 1e30f;
            for (int i = 0; i < ncand; i++) {
                ms[i] = time_plan(d, op, h, cand[i].plan, cand[i].ws, ptrs);
                if (ms[i] >= 0 && ms[i] < best_ms) best_ms = ms[i], best = i;
            }
        }
        log_plan(k, cand, ncand, ms, best);
        p->desc[p->ndesc++] = cand[best].cfg;
        p->desc[p->ndesc++] = cand[best].engine;
        p->desc[p->ndesc++] = cand[best].plan;
        p->plan = cand[best].plan;
        p->workspace = cand[best].ws;
        cand[best].cfg = NULL;
    }
done:
    for (int i = 0; i < ncand; i++)
        if (cand[i].cfg) {
            dnn.cudnnBackendDestroyDescriptor(cand[i].plan);
            dnn.cudnnBackendDestroyDescriptor(cand[i].engine);
            dnn.cudnnBackendDestroyDescriptor(cand[i].cfg);
        }
    for (int64_t i = 0; i < ncfg; i++)
        if (cfgs[i]) dnn.cudnnBackendDestroyDescriptor(cfgs[i]);
    if (heur) dnn.cudnnBackendDestroyDescriptor(heur);
    if (m.s != KN_OK) return m.s;
    if (m.declined) { /* remembered: the caller's kernel, without asking again */
        for (int i = p->ndesc - 1; i >= 0; i--) dnn.cudnnBackendDestroyDescriptor(p->desc[i]);
        p->ndesc = 0;
        p->plan = NULL;
        p->none = true;
    }
    return KN_OK;
}

static int64_t alignment(const void *ptr) {
    uintptr_t x = (uintptr_t)ptr;
    int64_t a = 1;
    while (a < 16 && !(x & (uintptr_t)a)) a <<= 1;
    return a;
}

kn_status kc_cudnn_conv(kc_dev *d, const char *op, kc_conv_kind kind, const kc_conv_geom *g, bool tf32,
                        const kn_operand *x, const kn_operand *w, const kn_operand *y, bool *declined) {
    *declined = true;
    bool ready;
    kn_status s = kc_cudnn_ready(op, &ready);
    if (s != KN_OK || !ready) return s;
    /* cuDNN sizes the output from the padding after: the symmetric one when
     * it gives OH, else exactly what OH needs ('same' with an even kernel). */
    int64_t pre[2] = {g->ph, g->pw}, post[2], in[2] = {g->H, g->W}, outs[2] = {g->OH, g->OW};
    int64_t st[2] = {g->sh, g->sw}, dil[2] = {g->dh, g->dw}, k[2] = {g->kh, g->kw};
    for (int i = 0; i < 2; i++) {
        int64_t span = dil[i] * (k[i] - 1) + 1, sym = in[i] + 2 * pre[i] - span;
        post[i] = sym >= 0 && sym / st[i] + 1 == outs[i] ? pre[i] : (outs[i] - 1) * st[i] + span - in[i] - pre[i];
        if (post[i] < 0) return KN_OK;
    }
    /* cuDNN 9.19's float32 weight-gradient engines gave wrong results on an
     * H100 with a padding after unlike the one before; kiln's kernel does those. */
    if (kind == KC_CONV_BWD_FILTER && (post[0] != pre[0] || post[1] != pre[1])) return KN_OK;
    plan_key key;
    memset(&key, 0, sizeof key); /* compared with memcmp: no stray padding bytes */
    key.kind = (int)kind, key.dtype = (int)y->dtype, key.tf32 = tf32 && y->dtype == KN_F32;
    key.deterministic = kn_deterministic_algorithms();
    const kn_operand *ops[3] = {x, w, y};
    for (int t = 0; t < 3; t++) {
        /* A size-1 dim's stride is arbitrary in a view; cuDNN wants one that
         * fits the layout: just outside the next dim. */
        for (int j = 3; j >= 0; j--) {
            key.dims[t][j] = ops[t]->shape[j];
            key.strides[t][j] = ops[t]->shape[j] != 1 ? ops[t]->stride[j]
                                : j == 3                ? 1
                                                        : key.strides[t][j + 1] * key.dims[t][j + 1];
        }
        key.align[t] = alignment(ops[t]->data);
    }
    memcpy(key.pre, pre, sizeof pre), memcpy(key.post, post, sizeof post);
    memcpy(key.stride, st, sizeof st), memcpy(key.dilation, dil, sizeof dil);
    void *ptrs[3] = {x->data, w->data, y->data};

    mtx_lock(&lock);
    cudnnHandle_t h = NULL;
    s = handle_of(d, op, &h);
    plan *ps = plans[d->index], *p = NULL;
    for (int i = 0; s == KN_OK && i < PLANS && !p; i++)
        if (ps[i].used && !memcmp(&ps[i].key, &key, sizeof key)) p = &ps[i];
    if (s == KN_OK && !p) {
        p = &ps[plan_next[d->index]];
        plan_next[d->index] = (plan_next[d->index] + 1) % PLANS;
        plan_destroy(p);
        p->key = key;
        s = build(d, op, h, p, ptrs);
        if (s == KN_OK) p->used = true;
        else plan_destroy(p);
        if (s != KN_OK) p = NULL;
    }
    if (s == KN_OK && p && !p->none) {
        cudnnStatus_t status = CUDNN_STATUS_SUCCESS;
        s = execute(d, op, h, p->plan, p->workspace, ptrs, &status);
        if (s != KN_OK && status != CUDNN_STATUS_SUCCESS && declinable(status)) {
            /* Refused at execution (a check the plan did not make): kiln's
             * kernel from now on for this configuration. */
            kn_error_clear();
            plan_destroy(p);
            p->key = key;
            p->used = p->none = true;
            s = KN_OK;
        } else {
            *declined = false;
            if (s == KN_OK) s = kc_after(d, op);
        }
    }
    mtx_unlock(&lock);
    return s;
}

#endif
