/* The collectives of kiln/dist.h over CUDA devices, through NCCL: one
 * communicator per group, a rank for each device of this process
 * (ncclCommInitAll), each collective queued on every rank's stream inside
 * one NCCL group, so the ranks run it together and a stream being captured
 * records it into its graph.
 *
 * NCCL is opened with dlopen when the first group is made, as cuBLASLt is
 * (cuda_lt.c): libkiln links nothing of it, so a machine without it runs
 * everything else, and the dist layer carries such a group through the host
 * and says why (kn_dist_transport_note). */
#include "cuda_internal.h"

#ifdef KC_HAVE_NCCL
#include "cuda_dl.h"

#include <dlfcn.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* NCCL keeps its ABI within a major version. */
#define KC_NCCL_SONAME "libnccl.so." KC_STR(NCCL_MAJOR)

#define KC_NCCL_FUNCS(X)                                                                                     \
    X(ncclGetVersion)                                                                                        \
    X(ncclGetErrorString)                                                                                    \
    X(ncclGetLastError)                                                                                      \
    X(ncclCommInitAll)                                                                                       \
    X(ncclGetUniqueId)                                                                                       \
    X(ncclCommInitRank)                                                                                      \
    X(ncclCommDestroy)                                                                                       \
    X(ncclCommGetAsyncError)                                                                                 \
    X(ncclGroupStart)                                                                                        \
    X(ncclGroupEnd)                                                                                          \
    X(ncclAllReduce)                                                                                         \
    X(ncclBroadcast)

static struct {
#define KC_NCCL_FIELD(f) __typeof__(f) *f;
    KC_NCCL_FUNCS(KC_NCCL_FIELD)
#undef KC_NCCL_FIELD
} nc;

static once_flag load_once = ONCE_FLAG_INIT;
static char *failure; /* why loading failed (malloc'd; NULL when it worked or on OOM) */
static bool failed;

static void fail(const char *fmt, ...) KN_PRINTF(1, 2);
static void fail(const char *fmt, ...) {
    failed = true;
    va_list ap;
    va_start(ap, fmt);
    failure = kc_vformat(fmt, ap);
    va_end(ap);
}

static void load(void) {
    /* NVLink SHARP multicast stays off unless the user asks for it: its
     * multicast objects are a resource of the whole host, shared by every
     * process on it, and one misused can take the GPUs out of service;
     * NCCL's rings and trees need none. NCCL reads this when it starts. */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
#ifdef KC_NCCL_DIR
    const char *built = sizeof KC_NCCL_DIR > 1 ? KC_NCCL_DIR "/" KC_NCCL_SONAME : NULL;
#else
    const char *built = NULL;
#endif
    kc_dl l = kc_dl_open("KILN_NCCL", KC_NCCL_SONAME, built);
    if (!l.handle) {
        const char *why = l.error ? l.error : "dlopen failed";
        if (l.named) fail("cannot load NCCL from KILN_NCCL=%s: %s", l.path, why);
        else
            fail("cannot load NCCL: %s; install NCCL " KC_STR(NCCL_MAJOR) " (libnccl2, or the CUDA toolkit's) and put the "
                 "directory of " KC_NCCL_SONAME " on LD_LIBRARY_PATH, or name the file with KILN_NCCL=/path/to/" KC_NCCL_SONAME,
                 why);
        free(l.error);
        return;
    }
    char *shown = kc_dl_shown(&l, "KILN_NCCL");
    const char *what = shown ? shown : l.path, *missing = NULL;
#define KC_NCCL_RESOLVE(f)                                                                                   \
    if (!missing) {                                                                                          \
        void *p = dlsym(l.handle, #f);                                                                       \
        if (p) *(void **)&nc.f = p;                                                                          \
        else missing = #f;                                                                                   \
    }
    KC_NCCL_FUNCS(KC_NCCL_RESOLVE)
#undef KC_NCCL_RESOLVE
    int version = 0;
    if (missing) fail("%s has no %s: not an NCCL %d.%d or later", what, missing, NCCL_MAJOR, NCCL_MINOR);
    else if (nc.ncclGetVersion(&version) != ncclSuccess) fail("%s: ncclGetVersion failed", what);
    else if (version / 10000 != NCCL_MAJOR) /* major * 10000 + minor * 100 + patch */
        fail("%s is NCCL %d.%d, but kiln was built with NCCL %d.%d (a different major version)", what, version / 10000,
             version / 100 % 100, NCCL_MAJOR, NCCL_MINOR);
    free(shown);
    if (failed) {
        memset(&nc, 0, sizeof nc);
        dlclose(l.handle);
    }
}

typedef struct {
    int n, world; /* ranks in this process, in the group */
    int index[64];
    ncclComm_t comm[64];
    /* The overlapped sums (comm_all_reduce_async): a stream of the
     * communicator's own per rank, forked from the rank's stream by `ready`
     * and joined back by `done` (made at the first such sum). */
    bool side_made, joined;
    cudaStream_t side[64];
    cudaEvent_t ready[64], done[64];
} kc_comm;

/* "op: NCCL error: <string> (<last error>)" for a failed call. */
static kn_status nccl_err(const char *op, const char *call, ncclResult_t r) {
    const char *last = nc.ncclGetLastError ? nc.ncclGetLastError(NULL) : NULL;
    return kn__err(KN_ERR_DEVICE, "%s: %s failed: %s%s%s%s", op, call, nc.ncclGetErrorString(r), last && *last ? " (" : "",
                   last && *last ? last : "", last && *last ? ")" : "");
}

_Static_assert(sizeof(ncclUniqueId) == KN_COMM_ID_BYTES, "the contract's id is NCCL's unique id");

/* NCCL loaded, or the reason it is not as the error. */
static kn_status loaded(void) {
    call_once(&load_once, load);
    return failed ? kn__err(KN_ERR_UNSUPPORTED, "%s", failure ? failure : "cannot load NCCL (out of memory)") : KN_OK;
}

void *kc_comm_new(int n, const int *indices, kn_status *status) {
    const char *op = "dist (nccl)";
    if ((*status = loaded()) != KN_OK) return NULL; /* the dist layer then carries the group through the host, and says this */
    if (n < 1 || n > 64) {
        *status = kn__err(KN_ERR_INVALID, "%s: %d ranks (1 to 64)", op, n);
        return NULL;
    }
    kc_comm *c = calloc(1, sizeof *c);
    if (!c) {
        *status = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    c->n = n;
    for (int r = 0; r < n; r++) {
        c->index[r] = indices[r];
        /* Each device initialised by kiln first (its stream, its context). */
        if (!kc_device(indices[r], op)) {
            *status = kn_error_code();
            free(c);
            return NULL;
        }
    }
    ncclResult_t res = nc.ncclCommInitAll(c->comm, n, c->index);
    if (res != ncclSuccess) {
        *status = nccl_err(op, "ncclCommInitAll", res);
        free(c);
        return NULL;
    }
    c->world = n;
    *status = KN_OK;
    return c;
}

kn_status kc_comm_unique_id(int index, unsigned char id[KN_COMM_ID_BYTES]) {
    const char *op = "dist unique id (nccl)";
    kn_status s = loaded();
    if (s != KN_OK) return s;
    if (!kc_device(index, op)) return kn_error_code();
    ncclUniqueId u;
    ncclResult_t res = nc.ncclGetUniqueId(&u);
    if (res != ncclSuccess) return nccl_err(op, "ncclGetUniqueId", res);
    memcpy(id, &u, sizeof u);
    return KN_OK;
}

void *kc_comm_new_rank(int index, int rank, int world, const unsigned char id[KN_COMM_ID_BYTES], kn_status *status) {
    const char *op = "dist rank (nccl)";
    if ((*status = loaded()) != KN_OK) return NULL;
    kc_comm *c = calloc(1, sizeof *c);
    if (!c) {
        *status = kn__err(KN_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    c->n = 1, c->world = world, c->index[0] = index;
    if (!kc_device(index, op)) { /* its stream and context, and current on this thread */
        *status = kn_error_code();
        free(c);
        return NULL;
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclResult_t res = nc.ncclCommInitRank(&c->comm[0], world, u, rank); /* returns once every rank joined */
    if (res != ncclSuccess) {
        *status = nccl_err(op, "ncclCommInitRank", res);
        free(c);
        return NULL;
    }
    *status = KN_OK;
    return c;
}

void kc_comm_free(void *comm) {
    kc_comm *c = comm;
    if (!c) return;
    for (int r = 0; c->side_made && r < c->n; r++) /* sums still running finish first */
        if (kc_device(c->index[r], "dist (nccl)")) (void)cudaStreamSynchronize(c->side[r]);
    for (int r = 0; r < c->n; r++) (void)nc.ncclCommDestroy(c->comm[r]);
    for (int r = 0; c->side_made && r < c->n; r++) {
        if (!kc_device(c->index[r], "dist (nccl)")) continue;
        (void)cudaStreamDestroy(c->side[r]);
        (void)cudaEventDestroy(c->ready[r]);
        (void)cudaEventDestroy(c->done[r]);
    }
    free(c);
}

static bool nccl_type(kn_dtype dt, ncclDataType_t *t) {
    switch (dt) {
    case KN_F32: *t = ncclFloat32; return true;
    case KN_F16: *t = ncclFloat16; return true;
    case KN_BF16: *t = ncclBfloat16; return true;
    case KN_F64: *t = ncclFloat64; return true;
    case KN_I32: *t = ncclInt32; return true;
    case KN_I64: *t = ncclInt64; return true;
    case KN_U8:
    case KN_BOOL: *t = ncclUint8; return true;
    default: return false;
    }
}

/* Every rank's device entered (pending fused work queued, earlier faults
 * reported) before any collective is queued. */
static kn_status enter_all(kc_comm *c, const char *op) {
    for (int r = 0; r < c->n; r++)
        if (!kc_enter(c->index[r], op, false)) return kn_error_code();
    return KN_OK;
}

/* The side streams and their events, once. */
static kn_status make_side(kc_comm *c, const char *op) {
    if (c->side_made) return KN_OK;
    kn_status s = KN_OK;
    int r = 0;
    for (; r < c->n && s == KN_OK; r++) {
        if (!kc_device(c->index[r], op)) {
            s = kn_error_code();
            continue;
        }
        s = kc_check(cudaStreamCreateWithFlags(&c->side[r], cudaStreamNonBlocking), op);
        if (s == KN_OK && (s = kc_check(cudaEventCreateWithFlags(&c->ready[r], cudaEventDisableTiming), op)) != KN_OK)
            (void)cudaStreamDestroy(c->side[r]);
        if (s == KN_OK && (s = kc_check(cudaEventCreateWithFlags(&c->done[r], cudaEventDisableTiming), op)) != KN_OK) {
            (void)cudaStreamDestroy(c->side[r]);
            (void)cudaEventDestroy(c->ready[r]);
        }
    }
    if (s != KN_OK) { /* the ranks made before the one that failed */
        for (int q = 0; q < r - 1; q++) {
            if (!kc_device(c->index[q], op)) continue;
            (void)cudaStreamDestroy(c->side[q]);
            (void)cudaEventDestroy(c->ready[q]);
            (void)cudaEventDestroy(c->done[q]);
        }
        return s;
    }
    c->side_made = c->joined = true;
    return KN_OK;
}

/* One collective on every rank, in place, in one NCCL group on each rank's
 * stream (side: on the communicator's side stream of each rank, after the
 * work queued on the rank's stream): a broadcast from root, or (root < 0)
 * a sum. */
static kn_status collective(kc_comm *c, const char *op, void *const *bufs, size_t count, ncclDataType_t t, int root,
                            bool side) {
    kn_status s = enter_all(c, op);
    if (s == KN_OK && side) s = make_side(c, op);
    if (s != KN_OK || count == 0) return s;
    for (int r = 0; side && r < c->n && s == KN_OK; r++) { /* fork: the side stream waits for the rank's */
        kc_dev *dv = kc_device(c->index[r], op);
        s = kc_check(cudaEventRecord(c->ready[r], dv->stream), op);
        if (s == KN_OK) s = kc_check(cudaStreamWaitEvent(c->side[r], c->ready[r], 0), op);
    }
    if (s != KN_OK) return s;
    ncclResult_t res = nc.ncclGroupStart();
    if (res != ncclSuccess) return nccl_err(op, "ncclGroupStart", res);
    for (int r = 0; r < c->n && res == ncclSuccess; r++) {
        cudaStream_t st = side ? c->side[r] : kc_device(c->index[r], op)->stream;
        res = root < 0 ? nc.ncclAllReduce(bufs[r], bufs[r], count, t, ncclSum, c->comm[r], st)
                       : nc.ncclBroadcast(bufs[r], bufs[r], count, t, root, c->comm[r], st);
    }
    ncclResult_t end = nc.ncclGroupEnd();
    if (res != ncclSuccess) s = nccl_err(op, root < 0 ? "ncclAllReduce" : "ncclBroadcast", res);
    else if (end != ncclSuccess) s = nccl_err(op, "ncclGroupEnd", end);
    for (int r = 0; side && r < c->n && s == KN_OK; r++) { /* joined back by kc_comm_join */
        if (!kc_device(c->index[r], op)) return kn_error_code();
        s = kc_check(cudaEventRecord(c->done[r], c->side[r]), op);
        c->joined = false;
        enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        if (s == KN_OK && kc_sync_mode() && cudaStreamIsCapturing(c->side[r], &cap) == cudaSuccess &&
            cap == cudaStreamCaptureStatusNone) /* KILN_CUDA_SYNC=1, outside a capture */
            s = kc_check(cudaStreamSynchronize(c->side[r]), op);
    }
    for (int r = 0; r < c->n && s == KN_OK && kc_sync_mode(); r++) s = kc_sync(kc_device(c->index[r], op), op);
    return s;
}

/* A sum on the ranks' streams, or (side) on the communicator's own. */
static kn_status sum(void *comm, const char *op, void *const *bufs, size_t count, kn_dtype dt, bool side) {
    ncclDataType_t t;
    if (!nccl_type(dt, &t) || dt == KN_BOOL)
        return kn__err(KN_ERR_DTYPE, "%s: NCCL cannot sum %s", op, kn_dtype_name(dt));
    return collective(comm, op, bufs, count, t, -1, side);
}

kn_status kc_comm_all_reduce(void *comm, void *const *bufs, size_t count, kn_dtype dt) {
    return sum(comm, "all_reduce (nccl)", bufs, count, dt, false);
}

kn_status kc_comm_all_reduce_async(void *comm, void *const *bufs, size_t count, kn_dtype dt) {
    return sum(comm, "all_reduce (nccl, overlapped)", bufs, count, dt, true);
}

/* Each rank's stream waits for the last sum on its side stream, which is
 * after every earlier one (a stream runs in order). */
kn_status kc_comm_join(void *comm) {
    const char *op = "all_reduce (nccl, join)";
    kc_comm *c = comm;
    kn_status s = KN_OK;
    for (int r = 0; !c->joined && r < c->n && s == KN_OK; r++) {
        kc_dev *dv = kc_device(c->index[r], op);
        s = dv ? kc_check(cudaStreamWaitEvent(dv->stream, c->done[r], 0), op) : kn_error_code();
    }
    if (s == KN_OK) c->joined = true;
    return s;
}

kn_status kc_comm_broadcast(void *comm, void *const *bufs, size_t count, kn_dtype dt, int root) {
    const char *op = "broadcast (nccl)";
    kc_comm *c = comm;
    ncclDataType_t t;
    if (!nccl_type(dt, &t)) return kn__err(KN_ERR_DTYPE, "%s: NCCL cannot move %s", op, kn_dtype_name(dt));
    if (root < 0 || root >= c->world) return kn__err(KN_ERR_INVALID, "%s: root %d out of range", op, root);
    return collective(c, op, bufs, count, t, root, false);
}

#endif /* KC_HAVE_NCCL */
