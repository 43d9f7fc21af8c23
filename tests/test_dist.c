/* Data-parallel groups (kiln/dist.h) over every device present: the CPU,
 * the two host-memory test devices (so there are always several ranks) and
 * Vulkan or CUDA where present. The proof: N ranks, each on its shard of a
 * batch (shards of unequal sizes), train to the parameters one device gets
 * on the whole batch. */
#include "kn_test.h"

#include "backends/common/dtype.h"

#include <kiln.h>

#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#define MAX 16

/* ---- "ring": three host-memory devices with peer copies and collectives of
 * their own, so the dist layer's backend path (what NCCL does on CUDA) runs
 * on every machine. The collectives compute in host memory and count their
 * calls; ring_fail makes comm_new fail as a missing library would. */
enum { RING_DEVICES = 3 };
static int ring_peer_copies, ring_reduces, ring_broadcasts, ring_comms, ring_async, ring_joins;
static bool ring_fail;
/* The ring's sums queued by comm_all_reduce_async run at the join, as on a
 * stream of their own: a group that read its buffers before the join would
 * see unreduced values. ring_watch: a tensor whose gradient the test looks
 * at when the first sum is queued (overlap: before backward reaches it). */
static kn_tensor *ring_watch;
/* 1: the watched tensor had no gradient yet at the first queued sum, 2: it
 * had; and the sums queued in that step */
static int ring_watch_seen, ring_async_first;
static int ring_count(void) { return RING_DEVICES; }
static kn_status ring_peer(int di, void *d, int si, const void *s, size_t n) {
    (void)di, (void)si;
    ring_peer_copies++;
    memmove(d, s, n);
    return KN_OK;
}
typedef struct {
    void *bufs[MAX];
    size_t count;
    kn_dtype dt;
} ring_job;
/* The ring's groups over "processes": threads of this process joined by
 * an id, as NCCL's ranks are by theirs; a collective deposits each rank's
 * buffer, and rank 0 computes over all of them between two barriers. */
typedef struct {
    unsigned char id[KN_COMM_ID_BYTES];
    int world, joined, arrived;
    unsigned gen;
    void *bufs[MAX];
    size_t counts[MAX]; /* each rank's, checked as NCCL cannot: the ranks must queue the same collectives */
    kn_dtype dts[MAX];
    bool mismatch;
    pthread_mutex_t mu; /* pthread's, not C11's: what thread sanitizers see */
    pthread_cond_t cv;
} ring_world;
static ring_world ring_worlds[8];
static int ring_nworlds;
static pthread_mutex_t ring_worlds_mu = PTHREAD_MUTEX_INITIALIZER;
static void ring_barrier(ring_world *w) {
    pthread_mutex_lock(&w->mu);
    unsigned g = w->gen;
    if (++w->arrived == w->world) {
        w->arrived = 0, w->gen++;
        pthread_cond_broadcast(&w->cv);
    } else
        while (g == w->gen) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
typedef struct {
    int n, index[MAX];
    ring_job jobs[64];
    int queued;
    ring_world *w; /* a group over "processes": this rank of it */
    int rank;
} ring_comm;
static void *ring_comm_new(int n, const int *idx, kn_status *status) {
    if (ring_fail) {
        *status = KN_ERR_UNSUPPORTED;
        kn__err(KN_ERR_UNSUPPORTED, "cannot load libring.so");
        return NULL;
    }
    ring_comm *c = calloc(1, sizeof *c);
    c->n = n;
    memcpy(c->index, idx, (size_t)n * sizeof *idx);
    ring_comms++;
    *status = KN_OK;
    return c;
}
static void ring_comm_free(void *c) { free(c); }
static void ring_sum(void *const *bufs, int n, size_t count, kn_dtype dt) {
    size_t es = kn_dtype_size(dt);
    for (size_t i = 0; i < count; i++) {
        double acc = 0;
        int64_t iacc = 0;
        for (int r = 0; r < n; r++) {
            const void *p = (const char *)bufs[r] + i * es;
            if (kn_dtype_is_float(dt)) acc += kn__load(p, dt);
            else iacc += kn__load_i64(p, dt);
        }
        for (int r = 0; r < n; r++) {
            void *p = (char *)bufs[r] + i * es;
            if (kn_dtype_is_float(dt)) kn__store(p, dt, acc);
            else kn__store_i64(p, dt, iacc);
        }
    }
}
static kn_status ring_all_reduce(void *comm, void *const *bufs, size_t count, kn_dtype dt) {
    ring_comm *c = comm;
    if (!c->w) {
        ring_reduces++;
        ring_sum(bufs, c->n, count, dt);
        return KN_OK;
    }
    ring_world *w = c->w;
    w->bufs[c->rank] = bufs[0], w->counts[c->rank] = count, w->dts[c->rank] = dt;
    ring_barrier(w);
    if (c->rank == 0) {
        w->mismatch = false;
        for (int r = 1; r < w->world; r++) w->mismatch |= w->counts[r] != count || w->dts[r] != dt;
        if (!w->mismatch) ring_sum(w->bufs, w->world, count, dt);
    }
    ring_barrier(w);
    bool bad = w->mismatch;
    ring_barrier(w); /* every rank read it before the next sum resets it */
    return bad ? kn__err(KN_ERR_INVALID, "ring: the ranks queued different sums (%zu elements of %s on this rank)", count,
                         kn_dtype_name(dt))
               : KN_OK;
}
static kn_status ring_broadcast(void *comm, void *const *bufs, size_t count, kn_dtype dt, int root) {
    ring_comm *c = comm;
    if (!c->w) {
        ring_broadcasts++;
        for (int r = 0; r < c->n; r++)
            if (r != root) memcpy(bufs[r], bufs[root], count * kn_dtype_size(dt));
        return KN_OK;
    }
    c->w->bufs[c->rank] = bufs[0];
    ring_barrier(c->w);
    if (c->rank != root) memcpy(bufs[0], c->w->bufs[root], count * kn_dtype_size(dt));
    ring_barrier(c->w);
    return KN_OK;
}
static kn_status ring_unique_id(int index, unsigned char id[KN_COMM_ID_BYTES]) {
    static int made;
    (void)index;
    memset(id, 0, KN_COMM_ID_BYTES);
    snprintf((char *)id, KN_COMM_ID_BYTES, "ring group %d", ++made); /* called on rank 0 only */
    return KN_OK;
}
static void *ring_comm_new_rank(int index, int rank, int world, const unsigned char id[KN_COMM_ID_BYTES],
                                kn_status *status) {
    pthread_mutex_lock(&ring_worlds_mu);
    ring_world *w = NULL;
    for (int k = 0; k < ring_nworlds && !w; k++)
        if (!memcmp(ring_worlds[k].id, id, KN_COMM_ID_BYTES)) w = &ring_worlds[k];
    if (!w && ring_nworlds < 8) {
        w = &ring_worlds[ring_nworlds++];
        memcpy(w->id, id, KN_COMM_ID_BYTES);
        w->world = world;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
    }
    pthread_mutex_unlock(&ring_worlds_mu);
    ring_comm *c = w && w->world == world ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        *status = kn__err(KN_ERR_INVALID, "ring: cannot join group");
        return NULL;
    }
    c->n = 1, c->index[0] = index, c->w = w, c->rank = rank;
    pthread_mutex_lock(&w->mu); /* returns once every rank joined, as ncclCommInitRank does */
    if (++w->joined == world) pthread_cond_broadcast(&w->cv);
    while (w->joined < world) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    *status = KN_OK;
    return c;
}
static kn_status ring_all_reduce_async(void *comm, void *const *bufs, size_t count, kn_dtype dt) {
    ring_comm *c = comm;
    if (c->queued == 64) return kn__err(KN_ERR_INVALID, "ring: too many queued sums");
    ring_job *j = &c->jobs[c->queued++];
    memcpy(j->bufs, bufs, (size_t)c->n * sizeof *bufs);
    j->count = count, j->dt = dt;
    if (!c->w && ring_async++ == 0 && ring_watch) ring_watch_seen = kn_grad(ring_watch) ? 2 : 1;
    return KN_OK;
}
static kn_status ring_join(void *comm) {
    ring_comm *c = comm;
    if (!c->w) ring_joins++;
    kn_status s = KN_OK;
    for (int k = 0; k < c->queued; k++) {
        kn_status sk = ring_all_reduce(c, c->jobs[k].bufs, c->jobs[k].count, c->jobs[k].dt);
        if (s == KN_OK) s = sk;
    }
    c->queued = 0;
    return s;
}
static int ring_kind(void) {
    static int kind = -1;
    if (kind < 0) {
        kn_backend b = {.name = "ring", .title = "Ring", .device_count = ring_count, .device_name = kt_name,
                        .memory = kt_memory, .alloc = kt_alloc, .free = kt_free, .copy_h2d = kt_copy,
                        .copy_d2h = kt_copy, .copy_d2d = kt_copy, .synchronize = kt_sync, .copy_peer = ring_peer,
                        .comm_name = "ring", .comm_new = ring_comm_new, .comm_free = ring_comm_free,
                        .comm_all_reduce = ring_all_reduce, .comm_broadcast = ring_broadcast,
                        .comm_all_reduce_async = ring_all_reduce_async, .comm_join = ring_join,
                        .comm_unique_id = ring_unique_id, .comm_new_rank = ring_comm_new_rank};
        kind = kn__backend_register(&b);
    }
    return kind;
}

static double max_abs_diff(kn_tensor *a, kn_tensor *b) {
    int64_t n = kn_numel(a);
    double *x = malloc((size_t)n * 8), *y = malloc((size_t)n * 8), m = INFINITY;
    if (x && y && kn_numel(b) == n && kn_to_host(a, x, KN_F64) == KN_OK && kn_to_host(b, y, KN_F64) == KN_OK) {
        m = 0;
        for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i] - y[i]));
    }
    free(x);
    free(y);
    return m;
}

static void test_errors(const kn_device *devs, int n) {
    CHECK(kn_dist_new(0, devs) == NULL, "no ranks");
    CHECK_ERROR("0 ranks");
    kn_device twice[2] = {KN_CPU, KN_CPU};
    CHECK(kn_dist_new(2, twice) == NULL, "a device twice");
    CHECK_ERROR("device cpu is named twice (ranks 0 and 1)");
    kn_device absent[2] = {KN_CPU, {(int16_t)KN_DEVICE_CPU, 7}};
    CHECK(kn_dist_new(2, absent) == NULL, "an absent device");
    CHECK_ERROR("rank 1: device");
    CHECK_ERROR("is not available");
    if (n < 2) return;
    kn_dist *d = kn_dist_new(2, devs);
    CHECK(d != NULL, "two ranks");
    kn_scope sc = kn_scope_begin();
    kn_tensor *wrong_dev[2] = {kn_zeros(KN_SHAPE(3), KN_F32, devs[0]), kn_zeros(KN_SHAPE(3), KN_F32, devs[0])};
    CHECK(kn_dist_all_reduce(d, wrong_dev, KN_DIST_SUM) != KN_OK, "a tensor on another rank's device");
    CHECK_ERROR("rank 1's tensor is on");
    kn_tensor *wrong_shape[2] = {kn_zeros(KN_SHAPE(3), KN_F32, devs[0]), kn_zeros(KN_SHAPE(4), KN_F32, devs[1])};
    CHECK(kn_dist_all_reduce(d, wrong_shape, KN_DIST_SUM) != KN_OK, "shapes differ");
    CHECK_ERROR("rank 1's tensor is [4], rank 0's [3]");
    kn_tensor *ints[2] = {kn_zeros(KN_SHAPE(3), KN_I64, devs[0]), kn_zeros(KN_SHAPE(3), KN_I64, devs[1])};
    CHECK(kn_dist_all_reduce(d, ints, KN_DIST_MEAN) != KN_OK, "the mean of integer tensors");
    CHECK_ERROR("cannot average int64 tensors");
    kn_tensor *bools[2] = {kn_zeros(KN_SHAPE(3), KN_BOOL, devs[0]), kn_zeros(KN_SHAPE(3), KN_BOOL, devs[1])};
    CHECK(kn_dist_all_reduce(d, bools, KN_DIST_SUM) != KN_OK, "the sum of bool tensors");
    CHECK_ERROR("cannot sum bool tensors");
    kn_tensor *mixed[2] = {kn_zeros(KN_SHAPE(3), KN_F32, devs[0]), kn_zeros(KN_SHAPE(3), KN_F64, devs[1])};
    CHECK(kn_dist_all_reduce(d, mixed, KN_DIST_SUM) != KN_OK, "dtypes differ");
    CHECK_ERROR("rank 1's tensor is float64, rank 0's float32");
    CHECK(kn_dist_broadcast(d, wrong_shape, 5) != KN_OK, "root out of range (or shape)");
    kn_scope_end(sc);
    kn_dist_free(d);
}

static void test_buckets(void) {
    kn_scope sc = kn_scope_begin();
    /* float32 of 100, 200, 50, 300 elements (400, 800, 200, 1200 bytes), a
     * float64 of 10 (80 bytes) after them; taken from the last, cap 1000. */
    kn_tensor *t[5] = {kn_zeros(KN_SHAPE(100), KN_F32, KN_CPU), kn_zeros(KN_SHAPE(10, 20), KN_F32, KN_CPU),
                       kn_zeros(KN_SHAPE(50), KN_F32, KN_CPU), kn_zeros(KN_SHAPE(300), KN_F32, KN_CPU),
                       kn_zeros(KN_SHAPE(10), KN_F64, KN_CPU)};
    int b[5] = {-1, -1, -1, -1, -1};
    int nb = kn_dist_buckets(5, t, 1000, b);
    /* f64 alone (another dtype); 1200 bytes over the cap alone; 200 + 800
     * together (1000, at the cap); 400 in a new one. */
    CHECK(nb == 4, "4 buckets, got %d", nb);
    CHECK(b[4] == 0 && b[3] == 1 && b[2] == 2 && b[1] == 2 && b[0] == 3, "buckets %d %d %d %d %d", b[0], b[1], b[2],
          b[3], b[4]);
    CHECK(kn_dist_buckets(5, t, 0, b) == 2 && b[0] == 1 && b[3] == 1 && b[4] == 0, "the default cap: one per dtype");
    CHECK(kn_dist_buckets(0, NULL, 0, NULL) == 0, "no tensors, no buckets");
    CHECK(kn_dist_buckets(-1, t, 0, b) == -1, "a negative count");
    kn_scope_end(sc);
}

/* Sums of every numeric dtype (values small enough to be exact in each),
 * means of the float ones, broadcasts of every dtype, on n ranks: through
 * whatever transport the group has (want names it). */
static void test_all_reduce(const kn_device *devs, int n, const char *want) {
    kn_dist *d = kn_dist_new(n, devs);
    CHECK(d && kn_dist_size(d) == n && !strcmp(kn_dist_transport(d), want), "group of %d over %s (got %s: %s)", n,
          want, d ? kn_dist_transport(d) : "none", d ? kn_dist_transport_note(d) : kn_error());
    if (!d) return;
    kn_dtype dts[] = {KN_F32, KN_F64, KN_F16, KN_BF16, KN_I32, KN_I64, KN_U8, KN_C64, KN_C128, KN_BOOL};
    for (size_t k = 0; k < sizeof dts / sizeof *dts; k++) {
        kn_dtype dt = dts[k];
        const char *name = kn_dtype_name(dt);
        bool cplx = kn_dtype_is_complex(dt), fl = kn_dtype_is_float(kn_dtype_real(dt));
        kn_scope sc = kn_scope_begin();
        /* rank r holds (i % 5) + r in every part: the sum is n * (i % 5) + n(n-1)/2. */
        kn_tensor *t[MAX], *b[MAX];
        for (int r = 0; r < n; r++) {
            double v[48];
            for (int i = 0; i < 48; i++) v[i] = (cplx ? i / 2 : i) % 5 + r; /* complex: re = im */
            kn_tensor *h = cplx ? kn_view_as_complex(kn_from_data(v, KN_F64, KN_SHAPE(4, 6, 2), KN_CPU))
                                : kn_from_data(v, KN_F64, KN_SHAPE(4, 6), KN_CPU);
            /* A transposed view: the backend's collectives need a contiguous copy. */
            t[r] = kn_transpose(kn_to_dtype(h, devs[r], dt), 0, 1);
            b[r] = kn_to_dtype(kn_full(KN_SHAPE(3), r == n - 1 ? 1 : 0, KN_F64, KN_CPU), devs[r], dt);
        }
        kn_tensor *parts0 = NULL;
        if (dt != KN_BOOL) {
            CHECK(kn_dist_all_reduce(d, t, KN_DIST_SUM) == KN_OK, "%s sum: %s", name, kn_error());
            for (int r = 0; r < n; r++) {
                kn_tensor *got = cplx ? kn_view_as_real(kn_contiguous(t[r])) : t[r];
                double v[48] = {0};
                int64_t m = kn_numel(got);
                bool ok = m <= 48 && kn_to_host(got, v, KN_F64) == KN_OK;
                for (int64_t i = 0; ok && i < m; i++) {
                    int64_t row = i / (cplx ? 8 : 4) % 6, col = i / (cplx ? 2 : 1) % 4; /* t is [6, 4] */
                    double want_v = n * (double)((col * 6 + row) % 5) + n * (n - 1) / 2.0;
                    if (dt == KN_U8) want_v = fmod(want_v, 256);
                    ok = v[i] == want_v;
                }
                CHECK(ok, "%s sum on rank %d (%s)", name, r, kn_device_str(devs[r]));
                if (r == 0) parts0 = got;
            }
        } else {
            CHECK(kn_dist_all_reduce(d, t, KN_DIST_SUM) != KN_OK, "bool: no sums");
            kn_error_clear();
        }
        if (fl) {
            CHECK(kn_dist_all_reduce(d, t, KN_DIST_MEAN) == KN_OK, "%s mean", name);
            for (int r = 0; r < n; r++) {
                kn_tensor *got = cplx ? kn_view_as_real(kn_contiguous(t[r])) : t[r];
                CHECK(max_abs_diff(got, parts0) <= (dt == KN_BF16 ? 0.2 : dt == KN_F16 ? 0.02 : 1e-6),
                      "%s: the mean of equal tensors is each, rank %d", name, r);
            }
        }
        CHECK(kn_dist_broadcast(d, b, n - 1) == KN_OK, "%s broadcast", name);
        for (int r = 0; r < n; r++) {
            double v[6] = {0};
            kn_tensor *got = cplx ? kn_view_as_real(b[r]) : b[r];
            bool ok = kn_to_host(got, v, KN_F64) == KN_OK;
            for (int64_t i = 0; ok && i < kn_numel(got); i++) ok = v[i] == (cplx && i % 2 ? 0 : 1);
            CHECK(ok, "%s broadcast to rank %d (%s)", name, r, kn_device_str(devs[r]));
        }
        kn_scope_end(sc);
    }
    /* Large integers stay exact (int64 buffers such as num_batches_tracked). */
    kn_scope sc = kn_scope_begin();
    kn_tensor *c[MAX];
    for (int r = 0; r < n; r++) c[r] = kn_full(KN_SHAPE(2), r == 0 ? 123456789 : r, KN_I64, devs[r]);
    CHECK(kn_dist_broadcast(d, c, 0) == KN_OK, "broadcast int64");
    for (int r = 0; r < n; r++) {
        int64_t v[2] = {0, 0};
        CHECK(kn_to_host(c[r], v, KN_I64) == KN_OK && v[0] == 123456789 && v[1] == 123456789,
              "int64 broadcast to rank %d (%s)", r, kn_device_str(devs[r]));
    }
    int64_t big = (int64_t)1 << 53;
    for (int r = 0; r < n; r++) c[r] = kn_full(KN_SHAPE(1), 0, KN_I64, devs[r]);
    kn_copy_(c[0], kn_from_data((int64_t[]){big + 1}, KN_I64, KN_SHAPE(1), KN_CPU));
    CHECK(kn_dist_all_reduce(d, c, KN_DIST_SUM) == KN_OK, "int64 sum");
    int64_t v = 0;
    CHECK(kn_to_host(c[n - 1], &v, KN_I64) == KN_OK && v == big + 1, "int64 sums are exact past 2^53");
    kn_scope_end(sc);
    kn_dist_free(d);
}

static kn_module *mlp(void) {
    return kn_nn_sequential(3, (kn_module *[]){kn_nn_linear(6, 16, true), kn_nn_relu(), kn_nn_linear(16, 3, true)});
}

/* Steps of SGD with one model on the whole batch (the CPU) against n ranks
 * on shards of rows [0, a), [a, b)...: rank 0's parameters must be the
 * single model's, every rank's rank 0's. overlap: kn_dist_backward (the
 * all-reduce in backward) instead of each rank's backward and then
 * kn_dist_average_gradients. */
static void test_data_parallel(const kn_device *devs, int n, bool overlap) {
    enum { ROWS = 29, STEPS = 5 };
    kn_scope sc = kn_scope_begin();
    kn_generator g = kn_generator_make(5);
    kn_tensor *x = kn_randn(KN_SHAPE(ROWS, 6), KN_F32, KN_CPU, &g);
    kn_tensor *y = kn_randint(0, 3, KN_SHAPE(ROWS), KN_I64, KN_CPU, &g);
    kn_manual_seed(1);
    kn_module *ref = mlp(), *rep[MAX];
    kn_optim *ref_opt = kn_sgd(ref, kn_sgd_defaults(0.5)), *opt[MAX];
    kn_manual_seed(2); /* other weights: the broadcast must replace them */
    for (int r = 0; r < n; r++) {
        rep[r] = r == 0 ? NULL : mlp();
        if (r > 0) kn_module_to(rep[r], devs[r]);
    }
    /* Rank 0 starts as the reference does. */
    kn_manual_seed(1);
    rep[0] = mlp();
    kn_module_to(rep[0], devs[0]);
    kn_dist *d = kn_dist_new(n, devs);
    CHECK(d && kn_dist_broadcast_module(d, rep) == KN_OK, "broadcast the model");
    for (int r = 0; r < n; r++) opt[r] = kn_sgd(rep[r], kn_sgd_defaults(0.5));
    int64_t start[MAX + 1];
    double w[MAX];
    for (int r = 0; r <= n; r++) start[r] = (int64_t)ROWS * r * (r + 1) / (n * (n + 1)); /* unequal shards */
    for (int r = 0; r < n; r++) w[r] = (double)(start[r + 1] - start[r]) / ROWS;
    double worst_loss = 0;
    for (int s = 0; s < STEPS && d; s++) {
        kn_scope st = kn_scope_begin();
        kn_module_zero_grad(ref);
        kn_tensor *l = kn_cross_entropy(kn_module_forward(ref, x), y);
        kn_backward(l);
        kn_optim_step(ref_opt);
        double whole = kn_item(l), sharded = 0;
        kn_tensor *losses[MAX];
        for (int r = 0; r < n; r++) {
            kn_module_zero_grad(rep[r]);
            int64_t len = start[r + 1] - start[r];
            kn_tensor *xs = kn_to(kn_narrow(x, 0, start[r], len), devs[r]);
            kn_tensor *ys = kn_to(kn_narrow(y, 0, start[r], len), devs[r]);
            kn_tensor *lr = losses[r] = kn_cross_entropy(kn_module_forward(rep[r], xs), ys);
            CHECK(lr && (overlap || kn_backward(lr) == KN_OK), "rank %d backward", r);
            sharded += w[r] * kn_item(lr);
        }
        if (overlap) {
            if (s == 0) { /* the ring's first queued sum looks at the first layer's weight: no gradient yet */
                int np0 = 0;
                ring_watch = kn_module_parameters(rep[0], &np0)[0].tensor;
                ring_watch_seen = ring_async = 0;
            }
            CHECK(kn_dist_backward(d, rep, losses, w, 256) == KN_OK, "backward with the average overlapped: %s",
                  kn_error());
            ring_watch = NULL;
            if (s == 0) ring_async_first = ring_async;
        } else
            CHECK(kn_dist_average_gradients(d, rep, w, 256) == KN_OK, "average (buckets of 256 bytes: several)");
        for (int r = 0; r < n; r++) kn_optim_step(opt[r]);
        worst_loss = fmax(worst_loss, fabs(whole - sharded));
        kn_scope_end(st);
    }
    CHECK(worst_loss <= 1e-5, "the shards' weighted loss is the whole batch's (worst %.3g)", worst_loss);
    int np = 0, nr = 0;
    const kn_named_tensor *pr = kn_module_parameters(ref, &np);
    for (int r = 0; r < n; r++) {
        const kn_named_tensor *p = kn_module_parameters(rep[r], &nr);
        CHECK(nr == np, "parameter count");
        for (int i = 0; i < np && i < nr; i++)
            CHECK(max_abs_diff(p[i].tensor, pr[i].tensor) <= 1e-5, "rank %d (%s) %s after %d steps: %.3g", r,
                  kn_device_str(devs[r]), p[i].name, STEPS, max_abs_diff(p[i].tensor, pr[i].tensor));
    }
    /* Replicas that are not the same model. */
    if (d && n >= 2) {
        kn_module *other = kn_nn_sequential(1, (kn_module *[]){kn_nn_linear(6, 3, true)});
        kn_module_to(other, devs[1]);
        kn_module *mixed[MAX];
        for (int r = 0; r < n; r++) mixed[r] = r == 1 ? other : rep[r];
        CHECK(kn_dist_broadcast_module(d, mixed) != KN_OK, "replicas of different models");
        CHECK_ERROR("rank 1's model has 2 tensors, rank 0's 4");
        kn_module_free(other);
    }
    /* A rank whose parameter has no gradient: named. */
    for (int r = 0; r < n; r++) kn_module_zero_grad(rep[r]);
    if (d && overlap) {
        kn_scope se = kn_scope_begin();
        kn_tensor *losses[MAX];
        for (int r = 0; r < n; r++) { /* the first layer's weight only */
            int np0 = 0;
            losses[r] = kn_sum_all(kn_mul(kn_module_parameters(rep[r], &np0)[0].tensor, kn_module_parameters(rep[r], &np0)[0].tensor));
        }
        CHECK(kn_dist_backward(d, rep, losses, NULL, 0) != KN_OK, "a parameter that backward does not reach");
        CHECK_ERROR("parameter '0.bias' has no gradient on rank 0");
        CHECK(kn_backward(losses[0]) != KN_OK, "the tapes are spent after the error");
        kn_error_clear();
        for (int r = 0; r < n; r++) kn_module_zero_grad(rep[r]);
        kn_tensor *vec[MAX];
        for (int r = 0; r < n; r++) vec[r] = kn_sum(kn_module_forward(rep[r], kn_to(x, devs[r])), 1, (int[]){0}, false);
        CHECK(kn_dist_backward(d, rep, vec, NULL, 0) != KN_OK, "a loss that is not a scalar");
        CHECK_ERROR("rank 0's loss has 3 elements (expected a scalar)");
        if (n >= 2) {
            kn_tensor *swapped[MAX];
            for (int r = 0; r < n; r++) swapped[r] = kn_sum_all(vec[(r + 1) % n]);
            CHECK(kn_dist_backward(d, rep, swapped, NULL, 0) != KN_OK, "a loss on another rank's device");
            CHECK_ERROR("rank 0's loss is on");
        }
        kn_scope_end(se);
        for (int r = 0; r < n; r++) kn_module_zero_grad(rep[r]);
    }
    if (d && n >= 1) {
        kn_status s = kn_dist_average_gradients(d, rep, NULL, 0);
        CHECK(s != KN_OK, "no gradients after zero_grad");
        CHECK_ERROR("parameter '0.weight' has no gradient on rank 0");
    }
    kn_dist_free(d);
    for (int r = 0; r < n; r++) {
        kn_optim_free(opt[r]);
        kn_module_free(rep[r]);
    }
    kn_optim_free(ref_opt);
    kn_module_free(ref);
    kn_scope_end(sc);
}

/* The ring devices' own collectives and peer copies, and how a transport is
 * chosen: by default the backend's, KILN_DIST_TRANSPORT=host or =ring to
 * force one, the host (with a note saying why) when the backend's fails. */
static void test_backend_transport(void) {
    kn_device ring[RING_DEVICES];
    for (int r = 0; r < RING_DEVICES; r++) ring[r] = (kn_device){(int16_t)ring_kind(), (int16_t)r};
    int reduces = ring_reduces, broadcasts = ring_broadcasts;
    test_all_reduce(ring, RING_DEVICES, "ring");
    CHECK(ring_reduces > reduces && ring_broadcasts > broadcasts, "the ring's collectives ran (%d reduces, %d broadcasts)",
          ring_reduces - reduces, ring_broadcasts - broadcasts);

    /* A copy between two ring devices goes peer to peer, not through the host. */
    kn_scope sc = kn_scope_begin();
    int peers = ring_peer_copies;
    kn_tensor *a = kn_arange(0, 10, 1, KN_F32, ring[0]), *b = kn_to(a, ring[2]);
    CHECK(b && ring_peer_copies == peers + 1 && max_abs_diff(a, b) == 0, "kn_to between ring devices: one peer copy");
    kn_scope_end(sc);

    setenv("KILN_DIST_TRANSPORT", "host", 1);
    kn_dist *d = kn_dist_new(RING_DEVICES, ring);
    CHECK(d && !strcmp(kn_dist_transport(d), "host") && strstr(kn_dist_transport_note(d), "KILN_DIST_TRANSPORT=host"),
          "KILN_DIST_TRANSPORT=host");
    kn_dist_free(d);
    setenv("KILN_DIST_TRANSPORT", "ring", 1);
    d = kn_dist_new(RING_DEVICES, ring);
    CHECK(d && !strcmp(kn_dist_transport(d), "ring") && !*kn_dist_transport_note(d), "KILN_DIST_TRANSPORT=ring");
    kn_dist_free(d);
    kn_device cpu = KN_CPU;
    CHECK(kn_dist_new(1, &cpu) == NULL, "KILN_DIST_TRANSPORT=ring on the CPU");
    CHECK_ERROR("KILN_DIST_TRANSPORT=ring, but these ranks have no collectives but the host's (expected host)");
    setenv("KILN_DIST_TRANSPORT", "carrier-pigeon", 1);
    CHECK(kn_dist_new(2, ring) == NULL, "an unknown transport");
    CHECK_ERROR("KILN_DIST_TRANSPORT=carrier-pigeon, but these ranks' backend has another (expected host or ring)");
    kn_device mixed[2] = {ring[0], KN_CPU};
    unsetenv("KILN_DIST_TRANSPORT");
    d = kn_dist_new(2, mixed);
    CHECK(d && !strcmp(kn_dist_transport(d), "host") && !*kn_dist_transport_note(d), "ring with cpu: the host");
    kn_dist_free(d);

    /* The backend's communicator cannot be made (its library is missing, say). */
    ring_fail = true;
    d = kn_dist_new(RING_DEVICES, ring);
    CHECK(d && !strcmp(kn_dist_transport(d), "host") && strstr(kn_dist_transport_note(d), "ring: cannot load libring.so"),
          "the host when the ring's collectives fail: note '%s'", d ? kn_dist_transport_note(d) : kn_error());
    CHECK(kn_error_code() == KN_OK, "and no error is left behind");
    kn_dist_free(d);
    setenv("KILN_DIST_TRANSPORT", "ring", 1);
    CHECK(kn_dist_new(RING_DEVICES, ring) == NULL, "asked for by name, the failure is an error");
    CHECK_ERROR("cannot load libring.so");
    unsetenv("KILN_DIST_TRANSPORT");
    ring_fail = false;
}

/* A temporary directory for the id files of groups over processes. */
static char proc_dir[64];
static const char *proc_path(const char *name) {
    static char buf[4][128];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/%s", proc_dir, name);
    return b;
}
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) fputs(text, f), fclose(f);
}

/* One rank on cuda:0 goes through NCCL where it loads: every dtype, the
 * weighted gradient average, and the collective replayed in a graph. */
typedef struct {
    kn_dist *d;
    kn_module **rep;
} avg_ctx;
static kn_status average_twice_weight(void *p) {
    avg_ctx *c = p;
    return kn_dist_average_gradients(c->d, c->rep, (double[]){2.0}, 0);
}
/* A data-parallel step captured: forward, kn_dist_backward (its sums on
 * NCCL's side streams, forked from and joined to the rank's stream inside
 * the capture) and the optimizer. */
typedef struct {
    kn_dist *d;
    kn_module *m;
    kn_optim *opt;
    kn_tensor *x, *y, *loss;
} dp_step_ctx;
static kn_status dp_step(void *p) {
    dp_step_ctx *c = p;
    kn_scope s = kn_scope_begin();
    kn_optim_zero_grad(c->opt);
    kn_tensor *loss = kn_cross_entropy(kn_module_forward(c->m, c->x), c->y);
    kn_status st = loss ? kn_dist_backward(c->d, &c->m, &loss, NULL, 256) : kn_error_code();
    if (st == KN_OK) st = kn_optim_step(c->opt);
    kn_release(c->loss);
    c->loss = kn_retain(loss);
    kn_scope_end(s);
    return st;
}
static void dp_step_make(dp_step_ctx *c, kn_dist *d, kn_device dev) {
    kn_manual_seed(11);
    c->d = d, c->m = mlp(), c->loss = NULL;
    kn_module_to(c->m, dev);
    c->opt = kn_adam(c->m, kn_adam_defaults(0.01));
    kn_generator g = kn_generator_make(12);
    kn_scope s = kn_scope_begin();
    c->x = kn_retain(kn_randn(KN_SHAPE(32, 6), KN_F32, dev, &g));
    c->y = kn_retain(kn_randint(0, 3, KN_SHAPE(32), KN_I64, dev, &g));
    kn_scope_end(s);
}
static void dp_step_free(dp_step_ctx *c) {
    kn_optim_free(c->opt);
    kn_module_free(c->m);
    kn_release(c->x), kn_release(c->y), kn_release(c->loss);
}
static void test_captured_backward(kn_dist *d, kn_device dev) {
    enum { STEPS = 6 };
    double eager[STEPS], replay[STEPS];
    dp_step_ctx c;
    dp_step_make(&c, d, dev);
    for (int i = 0; i < STEPS; i++) eager[i] = dp_step(&c) == KN_OK ? kn_item(c.loss) : NAN;
    dp_step_free(&c);
    dp_step_make(&c, d, dev);
    replay[0] = dp_step(&c) == KN_OK ? kn_item(c.loss) : NAN; /* warm-up: Adam's state exists */
    kn_graph *g = kn_graph_capture(dev, dp_step, &c);
    CHECK(g != NULL, "capture a step with kn_dist_backward: %s", kn_error());
    for (int i = 1; i < STEPS; i++) replay[i] = g && kn_graph_replay(g) == KN_OK ? kn_item(c.loss) : NAN;
    kn_graph_free(g);
    dp_step_free(&c);
    double worst = 0;
    for (int i = 0; i < STEPS; i++) worst = fmax(worst, fabs(eager[i] - replay[i]));
    CHECK(worst <= 1e-5 && eager[STEPS - 1] < eager[0], "replayed losses are the eager ones (worst %.3g; %g to %g)",
          worst, eager[0], eager[STEPS - 1]);
}

static void test_nccl(void) {
    if (kn_device_count(KN_DEVICE_CUDA) == 0) return;
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    char user_nvls[16];
    snprintf(user_nvls, sizeof user_nvls, "%s", nvls ? nvls : "");
    kn_device cuda = kn_device_get("cuda:0");
    kn_dist *d = kn_dist_new(1, &cuda);
    if (d && strcmp(kn_dist_transport(d), "nccl")) {
        printf("SKIP nccl (not counted): %s\n", kn_dist_transport_note(d));
        kn_dist_free(d);
        return;
    }
    kn_dist_free(d);
    /* NVLink multicast off unless the user set the variable (then theirs stays). */
    nvls = getenv("NCCL_NVLS_ENABLE");
    CHECK(nvls && !strcmp(nvls, *user_nvls ? user_nvls : "0"), "NCCL_NVLS_ENABLE=%s (was '%s')", nvls ? nvls : "(unset)",
          user_nvls);
    test_all_reduce(&cuda, 1, "nccl");
    test_data_parallel(&cuda, 1, false);
    test_data_parallel(&cuda, 1, true);
    /* Gradients doubled by a weight of 2, captured: each replay doubles them again. */
    kn_scope sc = kn_scope_begin();
    kn_manual_seed(3);
    kn_module *m = mlp();
    kn_module_to(m, cuda);
    kn_generator g = kn_generator_make(9);
    kn_tensor *x = kn_randn(KN_SHAPE(8, 6), KN_F32, cuda, &g);
    kn_backward(kn_sum(kn_module_forward(m, x), 0, NULL, false));
    int np = 0;
    /* The parameter itself: the module's parameter list is remade by later calls. */
    kn_tensor *w0 = kn_module_parameters(m, &np)[0].tensor;
    kn_tensor *before = kn_clone(kn_grad(w0));
    d = kn_dist_new(1, &cuda);
    CHECK(kn_dist_average_gradients(d, &m, (double[]){2.0}, 0) == KN_OK, "eager weighted average");
    double ratio = kn_item(kn_div(kn_sum_all(kn_grad(w0)), kn_sum_all(before)));
    CHECK(max_abs_diff(kn_grad(w0), kn_mul_scalar(before, 2)) <= 2e-5, "eager: gradients doubled (ratio %g)",
          ratio);
    avg_ctx c = {d, &m};
    kn_graph *gr = kn_graph_supported(cuda) ? kn_graph_capture(cuda, average_twice_weight, &c) : NULL;
    CHECK(!kn_graph_supported(cuda) || gr, "capture an NCCL all-reduce: %s", kn_error());
    int replays = 3;
    for (int i = 0; gr && i < replays; i++) CHECK(kn_graph_replay(gr) == KN_OK, "replay %d", i);
    if (!gr) replays = 0;
    double scale = (double)(1 << (replays + 1));
    ratio = kn_item(kn_div(kn_sum_all(kn_grad(w0)), kn_sum_all(before)));
    CHECK(max_abs_diff(kn_grad(w0), kn_mul_scalar(before, scale)) <= 1e-5 * scale,
          "gradients times %g after one eager call and %d replays (ratio %g)", scale, replays, ratio);
    kn_graph_free(gr);
    if (kn_graph_supported(cuda)) test_captured_backward(d, cuda);
    kn_dist_free(d);
    kn_module_free(m);
    /* A group over processes of one rank (more would need more GPUs: NCCL
     * refuses two ranks on one GPU): the id, its file, the collectives. */
    char id[KN_DIST_ID_CHARS];
    CHECK(kn_dist_unique_id(cuda, id) == KN_OK && strlen(id) == 256, "an NCCL id: %s", kn_error());
    kn_dist *one = kn_dist_new_rank_file(cuda, 0, 1, proc_path("nccl-id"));
    CHECK(one && kn_dist_world_size(one) == 1 && kn_dist_rank(one) == 0 && !strcmp(kn_dist_transport(one), "nccl"),
          "rank 0 of 1 over NCCL by a file: %s", kn_error());
    struct stat st;
    CHECK(lstat(proc_path("nccl-id"), &st) != 0, "the id file removed once the rank joined");
    if (one) {
        kn_tensor *t = kn_arange(0, 6, 1, KN_F32, cuda);
        CHECK(kn_dist_all_reduce(one, &t, KN_DIST_SUM) == KN_OK && kn_item(kn_sum_all(t)) == 15, "its all-reduce");
        test_data_parallel(&cuda, 1, true); /* a one-process group again, after the rank's communicator */
    }
    kn_dist_free(one);
    kn_dist *by_id = kn_dist_new_rank(cuda, 0, 1, id);
    CHECK(by_id && !strcmp(kn_dist_transport(by_id), "nccl"), "rank 0 of 1 by the id itself: %s", kn_error());
    kn_dist_free(by_id);
    kn_scope_end(sc);
}

/* ---- groups over processes: the errors, then two ring "processes" (threads) ---------- */
static void test_process_errors(kn_device ring0) {
    CHECK(kn_dist_new_rank(KN_CPU, 0, 2, NULL) == NULL, "the CPU across processes");
    CHECK_ERROR("cpu has no collectives across processes (NCCL on CUDA devices has");
    CHECK(kn_dist_new_rank(ring0, 2, 2, NULL) == NULL, "rank out of range");
    CHECK_ERROR("rank 2 of a group of 2 (expected 0 to 1)");
    CHECK(kn_dist_new_rank(ring0, 0, 0, NULL) == NULL, "no ranks");
    CHECK_ERROR("a group of 0 ranks");
    unsetenv("KILN_DIST_ID");
    CHECK(kn_dist_new_rank(ring0, 0, 1, NULL) == NULL, "no id");
    CHECK_ERROR("KILN_DIST_ID is not set");
    CHECK(kn_dist_new_rank(ring0, 0, 1, "abc") == NULL, "a short id");
    CHECK_ERROR("expected 256 hex digits (an id from kn_dist_unique_id), got 3 characters");
    char bad[300];
    memset(bad, 'a', 256), bad[256] = 0, bad[7] = 'g';
    CHECK(kn_dist_new_rank(ring0, 0, 1, bad) == NULL, "not hex");
    CHECK_ERROR("character 8 is not a hex digit");
    setenv("KILN_DIST_TRANSPORT", "host", 1);
    CHECK(kn_dist_new_rank(ring0, 0, 1, NULL) == NULL, "the host transport across processes");
    CHECK_ERROR("the host carries groups of one process only");
    unsetenv("KILN_DIST_TRANSPORT");
    char id[KN_DIST_ID_CHARS];
    CHECK(kn_dist_unique_id(KN_CPU, id) != KN_OK, "no id from the CPU");

    /* From the environment. */
    unsetenv("KILN_RANK"), unsetenv("KILN_WORLD_SIZE"), unsetenv("KILN_DIST_ID_FILE");
    CHECK(kn_dist_from_env(ring0) == NULL, "no KILN_RANK");
    CHECK_ERROR("KILN_RANK is not set");
    setenv("KILN_RANK", "one", 1), setenv("KILN_WORLD_SIZE", "2", 1);
    CHECK(kn_dist_from_env(ring0) == NULL, "KILN_RANK=one");
    CHECK_ERROR("KILN_RANK=one is not a whole number");
    setenv("KILN_RANK", "1", 1);
    CHECK(kn_dist_from_env(ring0) == NULL, "no id");
    CHECK_ERROR("set KILN_DIST_ID (rank 0's id) or KILN_DIST_ID_FILE");
    setenv("KILN_DIST_ID", "00", 1), setenv("KILN_DIST_ID_FILE", proc_path("both"), 1);
    CHECK(kn_dist_from_env(ring0) == NULL, "both");
    CHECK_ERROR("both KILN_DIST_ID and KILN_DIST_ID_FILE are set");
    unsetenv("KILN_DIST_ID"), unsetenv("KILN_DIST_ID_FILE"), unsetenv("KILN_RANK"), unsetenv("KILN_WORLD_SIZE");

    /* By a file. */
    setenv("KILN_DIST_TIMEOUT", "0.2", 1);
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_path("absent")) == NULL, "rank 0's file never comes");
    CHECK_ERROR("rank 1 waited 0.2 s for rank 0's id in");
    setenv("KILN_DIST_TIMEOUT", "soon", 1);
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_path("absent")) == NULL, "a bad timeout");
    CHECK_ERROR("KILN_DIST_TIMEOUT=soon: expected seconds");
    unsetenv("KILN_DIST_TIMEOUT");
    write_text(proc_path("stale"), "old");
    CHECK(kn_dist_new_rank_file(ring0, 0, 2, proc_path("stale")) == NULL, "rank 0 and a file left behind");
    CHECK_ERROR("exists (left by an earlier run?); remove it");
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_path("stale")) == NULL, "not an id file");
    CHECK_ERROR("is not a kiln id file");
    char text[400];
    snprintf(text, sizeof text, "kiln-dist-id 1 world=3\n%0256d\n", 0);
    write_text(proc_path("three"), text);
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_path("three")) == NULL, "another group's size");
    CHECK_ERROR("was written for a group of 3 ranks, this rank's has 2");
    snprintf(text, sizeof text, "kiln-dist-id 1 world=2\n%0255d\n", 0);
    write_text(proc_path("short"), text);
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_path("short")) == NULL, "a cut id");
    CHECK_ERROR("expected 256 hex digits");
    CHECK(kn_dist_new_rank_file(ring0, 1, 2, proc_dir) == NULL, "a directory");
    CHECK_ERROR("is not a kiln id file (not a regular file)");
    unlink(proc_path("stale")), unlink(proc_path("three")), unlink(proc_path("short"));
}

/* Each thread is one rank: the model trained on its shard with
 * kn_dist_backward, as in test_data_parallel, plus the collectives. */
enum { PROC_ROWS = 23, PROC_STEPS = 4 };
typedef struct {
    int rank;
    kn_device dev;
    const char *path, *id; /* by a file, or by the id itself */
    kn_module *m;
    kn_tensor *x, *y; /* the whole batch, on the CPU (this thread's copy) */
    int world, rank_seen;
    const char *transport;
    double sum, mean, bcast; /* the collectives' results */
    kn_status status;
    char error[256];
} proc_rank;
static void *proc_main(void *p) {
    proc_rank *pr = p;
    kn_scope sc = kn_scope_begin();
    kn_dist *d = pr->path ? kn_dist_new_rank_file(pr->dev, pr->rank, 2, pr->path) : kn_dist_new_rank(pr->dev, pr->rank, 2, pr->id);
    kn_status s = d ? KN_OK : kn_error_code();
    if (d) {
        pr->world = kn_dist_world_size(d), pr->rank_seen = kn_dist_rank(d), pr->transport = kn_dist_transport(d);
        kn_tensor *t = kn_full(KN_SHAPE(5), pr->rank + 1.0, KN_F32, pr->dev);
        kn_tensor *u = kn_full(KN_SHAPE(5), pr->rank + 1.0, KN_F64, pr->dev);
        kn_tensor *b = kn_full(KN_SHAPE(3), 10.0 * (pr->rank + 1), KN_I32, pr->dev);
        if (s == KN_OK) s = kn_dist_all_reduce(d, &t, KN_DIST_SUM);
        if (s == KN_OK) s = kn_dist_all_reduce(d, &u, KN_DIST_MEAN);
        if (s == KN_OK) s = kn_dist_broadcast(d, &b, 1);
        if (s == KN_OK) pr->sum = kn_item(kn_sum_all(t)), pr->mean = kn_item(kn_sum_all(u)), pr->bcast = kn_item(kn_sum_all(kn_cast(b, KN_F64)));
    }
    if (s == KN_OK && pr->m) {
        s = kn_dist_broadcast_module(d, &pr->m);
        kn_optim *opt = kn_sgd(pr->m, kn_sgd_defaults(0.5));
        int64_t a = pr->rank == 0 ? 0 : 9, len = pr->rank == 0 ? 9 : PROC_ROWS - 9;
        double w = (double)len / PROC_ROWS;
        for (int i = 0; i < PROC_STEPS && s == KN_OK; i++) {
            kn_scope st = kn_scope_begin();
            kn_module_zero_grad(pr->m);
            kn_tensor *xs = kn_to(kn_narrow(pr->x, 0, a, len), pr->dev), *ys = kn_to(kn_narrow(pr->y, 0, a, len), pr->dev);
            kn_tensor *loss = kn_cross_entropy(kn_module_forward(pr->m, xs), ys);
            s = loss ? kn_dist_backward(d, &pr->m, &loss, &w, 256) : kn_error_code();
            if (s == KN_OK) s = kn_optim_step(opt);
            kn_scope_end(st);
        }
        kn_optim_free(opt);
    }
    if (s != KN_OK) snprintf(pr->error, sizeof pr->error, "%s", kn_error());
    pr->status = s;
    kn_dist_free(d);
    kn_scope_end(sc);
    return NULL;
}

static void test_process_groups(kn_device ring0, kn_device ring1) {
    kn_scope sc = kn_scope_begin();
    kn_generator g = kn_generator_make(21);
    kn_tensor *x = kn_randn(KN_SHAPE(PROC_ROWS, 6), KN_F32, KN_CPU, &g);
    kn_tensor *y = kn_randint(0, 3, KN_SHAPE(PROC_ROWS), KN_I64, KN_CPU, &g);
    kn_manual_seed(4);
    kn_module *ref = mlp();
    kn_optim *ref_opt = kn_sgd(ref, kn_sgd_defaults(0.5));
    for (int i = 0; i < PROC_STEPS; i++) {
        kn_scope st = kn_scope_begin();
        kn_module_zero_grad(ref);
        kn_backward(kn_cross_entropy(kn_module_forward(ref, x), y));
        kn_optim_step(ref_opt);
        kn_scope_end(st);
    }
    kn_manual_seed(4);
    kn_module *m0 = mlp();
    kn_manual_seed(5); /* rank 1 starts elsewhere: the broadcast must replace its weights */
    kn_module *m1 = mlp();
    kn_module_to(m0, ring0), kn_module_to(m1, ring1);
    const char *path = proc_path("id");
    /* Each thread its own copies: a tensor's reference counts are not shared between threads. */
    proc_rank pr[2] = {{.rank = 0, .dev = ring0, .path = path, .m = m0, .x = kn_clone(x), .y = kn_clone(y)},
                       {.rank = 1, .dev = ring1, .path = path, .m = m1, .x = kn_clone(x), .y = kn_clone(y)}};
    pthread_t th[2];
    /* Rank 1 first: it waits for the file that rank 0 writes. */
    for (int r = 1; r >= 0; r--) CHECK(pthread_create(&th[r], NULL, proc_main, &pr[r]) == 0, "thread %d", r);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++) {
        CHECK(pr[r].status == KN_OK, "rank %d: %s", r, pr[r].error);
        CHECK(pr[r].world == 2 && pr[r].rank_seen == r && pr[r].transport && !strcmp(pr[r].transport, "ring"),
              "rank %d: world %d, rank %d, transport %s", r, pr[r].world, pr[r].rank_seen, pr[r].transport);
        CHECK(pr[r].sum == 15 && pr[r].mean == 7.5 && pr[r].bcast == 60,
              "rank %d: sum %g (15), mean %g (7.5), broadcast from rank 1 %g (60)", r, pr[r].sum, pr[r].mean, pr[r].bcast);
    }
    struct stat st;
    CHECK(lstat(path, &st) != 0, "rank 0 removed the id file once both joined");
    int np = 0, n0 = 0, n1 = 0;
    const kn_named_tensor *p = kn_module_parameters(ref, &np), *p0 = kn_module_parameters(m0, &n0),
                          *p1 = kn_module_parameters(m1, &n1);
    for (int i = 0; i < np && n0 == np && n1 == np; i++) {
        CHECK(max_abs_diff(p0[i].tensor, p[i].tensor) <= 1e-5, "two ranks over processes: rank 0's %s is the whole batch's (%.3g)",
              p[i].name, max_abs_diff(p0[i].tensor, p[i].tensor));
        CHECK(max_abs_diff(p1[i].tensor, p0[i].tensor) <= 1e-6, "rank 1's %s is rank 0's", p[i].name);
    }
    /* The id passed as it is (KILN_DIST_ID's way). */
    char id[KN_DIST_ID_CHARS];
    CHECK(kn_dist_unique_id(ring0, id) == KN_OK && strlen(id) == 256, "an id: %s", kn_error());
    proc_rank q[2] = {{.rank = 0, .dev = ring0, .id = id}, {.rank = 1, .dev = ring1, .id = id}};
    for (int r = 0; r < 2; r++) CHECK(pthread_create(&th[r], NULL, proc_main, &q[r]) == 0, "thread %d", r);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < 2; r++)
        CHECK(q[r].status == KN_OK && q[r].sum == 15 && q[r].mean == 7.5 && q[r].bcast == 60,
              "by the id itself, rank %d: %s (sum %g)", r, q[r].error, q[r].sum);
    kn_optim_free(ref_opt);
    kn_module_free(ref), kn_module_free(m0), kn_module_free(m1);
    kn_scope_end(sc);
}

int main(void) {
    kn_device devs[MAX];
    int n = kt_devices(devs, MAX);
    printf("dist: %d devices:", n);
    for (int i = 0; i < n; i++) printf(" %s", kn_device_str(devs[i]));
    printf("\n");
    test_errors(devs, n);
    test_buckets();
    test_all_reduce(devs, 1, "host");
    test_all_reduce(devs, n, "host");
    for (int overlap = 0; overlap < 2; overlap++) {
        test_data_parallel(devs, 1, overlap);
        test_data_parallel(devs, n, overlap);
    }
    test_backend_transport();
    kn_device ring[RING_DEVICES];
    for (int r = 0; r < RING_DEVICES; r++) ring[r] = (kn_device){(int16_t)ring_kind(), (int16_t)r};
    int comms = ring_comms;
    test_data_parallel(ring, RING_DEVICES, false);
    CHECK(ring_comms > comms, "data parallel over the ring's collectives");
    int joins = ring_joins;
    test_data_parallel(ring, RING_DEVICES, true);
    /* Buckets of 256 bytes over the MLP: 2.* together, 0.bias, 0.weight. */
    CHECK(ring_async_first == 3 && ring_joins > joins, "overlapped: three sums queued in the first step (%d), joined",
          ring_async_first);
    CHECK(ring_watch_seen == 1, "the first sum was queued before backward reached the first layer (%d)", ring_watch_seen);
    snprintf(proc_dir, sizeof proc_dir, "/tmp/kiln-dist-XXXXXX");
    if (mkdtemp(proc_dir)) {
        test_process_errors(ring[0]);
        test_process_groups(ring[0], ring[1]);
        test_nccl();
        rmdir(proc_dir);
    } else
        CHECK(false, "a temporary directory");
    return kt_finish("dist");
}
