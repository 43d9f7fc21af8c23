/* Joining, splitting and indexing: concat, stack, split, index_select,
 * gather, index_add, embedding, masked_select. Values against hand-computed
 * expectations on the CPU and on the kernel-less test device (the CPU
 * fallback), non-contiguous inputs, repeated indices, error messages and
 * gradients through kn_backward. */
#include "kiln.h"
#include "kn_test.h"

static kn_device dev; /* the device the value tests run on */

static kn_tensor *tf(int nd, const int64_t *shape, const float *v) {
    return kn_from_data(v, KN_F32, nd, shape, dev);
}
static kn_tensor *ti(int nd, const int64_t *shape, const int64_t *v) {
    return kn_from_data(v, KN_I64, nd, shape, dev);
}
#define TF(shape, ...) tf(KN_SHAPE shape, (const float[]){__VA_ARGS__})
#define TI(shape, ...) ti(KN_SHAPE shape, (const int64_t[]){__VA_ARGS__})
/* 0, 1, 2, ... as float32 in the given shape. */
static kn_tensor *ramp(int nd, const int64_t *shape) {
    return kn_reshape(kn_arange(0, (double)kn__numel_shape(nd, shape), 1, KN_F32, dev), nd, shape);
}
#define RAMP(...) ramp(KN_SHAPE(__VA_ARGS__))
/* A 0-d tensor. (A dummy shape pointer: kn_scalar passes NULL to memcpy, which UBSan flags.) */
static kn_tensor *scalar(double v, kn_dtype dt, kn_device d) {
    return kn_full(0, (const int64_t[]){1}, v, dt, d);
}
#define PARAM(t) kn_requires_grad_((t), true)

/* t has exactly shape and these values (row-major). */
static bool vals_ok(kn_tensor *t, int nd, const int64_t *shape, const double *want, int line) {
    char s[128];
    if (!t) {
        fprintf(stderr, "line %d: tensor is NULL\n", line);
        return false;
    }
    if (kn_ndim(t) != nd || memcmp(kn_shape(t), shape, (size_t)nd * sizeof *shape)) {
        fprintf(stderr, "line %d: shape %s\n", line, kn_shape_str(t, s, sizeof s));
        return false;
    }
    int64_t n = kn_numel(t);
    double *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    bool ok = kn_to_host(t, got, KN_F64) == KN_OK;
    for (int64_t i = 0; ok && i < n; i++)
        if (fabs(got[i] - want[i]) > 1e-6 * (1 + fabs(want[i]))) {
            fprintf(stderr, "line %d: element %lld is %g, expected %g\n", line, (long long)i, got[i], want[i]);
            ok = false;
        }
    free(got);
    return ok;
}
#define EXPECT(t, shape, ...)                                                                \
    CHECK(vals_ok((t), KN_SHAPE shape, (const double[]){__VA_ARGS__}, __LINE__), "values of %s", #t)

/* The last error is exactly msg. */
#define CHECK_MSG(msg) CHECK(strcmp(kn_error(), (msg)) == 0, "expected the error \"%s\"", (msg))

/* ---- concat, stack, split --------------------------------------------------------------------- */
static void test_concat(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = TF((2, 3), 1, 2, 3, 4, 5, 6), *b = TF((1, 3), 7, 8, 9);
    EXPECT(kn_concat(2, (kn_tensor *[]){a, b}, 0), (3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
    kn_tensor *c = TF((2, 1), 10, 11);
    EXPECT(kn_concat(3, (kn_tensor *[]){c, a, c}, -1), (2, 5), 10, 1, 2, 3, 10, 11, 4, 5, 6, 11);
    /* Transposed and sliced inputs. */
    kn_tensor *at = kn_transpose(a, 0, 1); /* [3, 2]: 1 4 / 2 5 / 3 6 */
    kn_tensor *sl = kn_slice(RAMP(3, 4), 1, 0, 4, 2); /* [3, 2]: 0 2 / 4 6 / 8 10 */
    EXPECT(kn_concat(2, (kn_tensor *[]){at, sl}, 1), (3, 4), 1, 4, 0, 2, 2, 5, 4, 6, 3, 6, 8, 10);
    EXPECT(kn_concat(2, (kn_tensor *[]){sl, at}, 0), (6, 2), 0, 2, 4, 6, 8, 10, 1, 4, 2, 5, 3, 6);
    /* Type promotion: int32 with float32 gives float32; int with int stays int. */
    kn_tensor *i32 = kn_cast(TF((2), 1, 2), KN_I32);
    kn_tensor *r = kn_concat(2, (kn_tensor *[]){i32, TF((1), 0.5)}, 0);
    CHECK(kn_dtype_of(r) == KN_F32, "int32 + float32 concat is float32");
    EXPECT(r, (3), 1, 2, 0.5);
    CHECK(kn_dtype_of(kn_concat(2, (kn_tensor *[]){i32, TI((1), 5)}, 0)) == KN_I64, "int32 + int64 is int64");
    /* Zero-size inputs. */
    kn_tensor *e = kn_zeros(KN_SHAPE(0, 3), KN_F32, dev);
    EXPECT(kn_concat(3, (kn_tensor *[]){e, b, e}, 0), (1, 3), 7, 8, 9);
    CHECK(kn_numel(kn_concat(2, (kn_tensor *[]){e, e}, 0)) == 0, "all-empty concat");
    /* One input: a copy. */
    kn_tensor *one = kn_concat(1, &a, 1);
    CHECK(one && !kn_shares_storage(one, a), "single-input concat copies");
    /* More inputs than a tape node holds (no grad: one pass). */
    kn_tensor *many[9];
    for (int k = 0; k < 9; k++) many[k] = kn_full(KN_SHAPE(1, 2), k, KN_F32, dev);
    EXPECT(kn_concat(9, many, 0), (9, 2), 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8);
    kn_scope_end(s);
}

static void test_concat_errors(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = RAMP(2, 3), *b = RAMP(2, 4);
    CHECK(kn_concat(0, NULL, 0) == NULL, "empty list");
    CHECK_MSG("concat: expected at least one tensor, got 0");
    CHECK(kn_concat(2, (kn_tensor *[]){a, b}, 0) == NULL, "mismatched shapes");
    CHECK_MSG("concat: tensor 1 has shape [2, 4], expected [*, 3] (sizes must match tensor 0's except along dim 0)");
    CHECK(kn_concat(2, (kn_tensor *[]){a, RAMP(6)}, 1) == NULL, "mismatched ranks");
    CHECK_MSG("concat: tensor 1 has shape [6], expected [2, *] (sizes must match tensor 0's except along dim 1)");
    CHECK(kn_concat(2, (kn_tensor *[]){a, a}, 2) == NULL, "dim out of range");
    CHECK_MSG("concat: dim 2 out of range for a 2-d tensor");
    CHECK(kn_concat(2, (kn_tensor *[]){a, a}, -3) == NULL, "negative dim out of range");
    CHECK_ERROR("concat: dim -3 out of range");
    CHECK(kn_concat(1, (kn_tensor *[]){scalar(1, KN_F32, dev)}, 0) == NULL, "0-d");
    CHECK_ERROR("concat: tensor 0 is 0-d");
    kn_error_clear();
    CHECK(kn_concat(2, (kn_tensor *[]){a, NULL}, 0) == NULL, "NULL input");
    CHECK_MSG("concat: an input is NULL");
    CHECK(kn_stack(0, NULL, 0) == NULL, "empty stack");
    CHECK_MSG("stack: expected at least one tensor, got 0");
    CHECK(kn_stack(2, (kn_tensor *[]){a, b}, 0) == NULL, "stack of different shapes");
    CHECK_MSG("stack: tensor 1 has shape [2, 4], expected [2, 3] (all tensors must have the same shape)");
    CHECK(kn_stack(2, (kn_tensor *[]){a, a}, 3) == NULL, "stack dim out of range");
    CHECK_MSG("stack: dim 3 out of range for a 3-d tensor");
    kn_scope_end(s);
}

static void test_stack_split(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = TF((2), 1, 2), *y = TF((2), 3, 4), *z = TF((2), 5, 6);
    kn_tensor *xyz[3] = {x, y, z};
    EXPECT(kn_stack(3, xyz, 0), (3, 2), 1, 2, 3, 4, 5, 6);
    EXPECT(kn_stack(3, xyz, 1), (2, 3), 1, 3, 5, 2, 4, 6);
    EXPECT(kn_stack(3, xyz, -1), (2, 3), 1, 3, 5, 2, 4, 6);
    kn_tensor *sc[2] = {scalar(7, KN_F32, dev), scalar(8, KN_F32, dev)};
    EXPECT(kn_stack(2, sc, 0), (2), 7, 8);
    kn_tensor *t = kn_transpose(RAMP(2, 2), 0, 1); /* 0 2 / 1 3 */
    EXPECT(kn_stack(2, (kn_tensor *[]){t, t}, 1), (2, 2, 2), 0, 2, 0, 2, 1, 3, 1, 3);

    kn_tensor *m = RAMP(5, 2), *parts[4];
    CHECK(kn_split(m, 2, 0, parts, 4) == 3, "split into 3");
    EXPECT(parts[0], (2, 2), 0, 1, 2, 3);
    EXPECT(parts[1], (2, 2), 4, 5, 6, 7);
    EXPECT(parts[2], (1, 2), 8, 9);
    CHECK(kn_shares_storage(parts[2], m), "split gives views");
    CHECK(kn_split(m, 1, 1, parts, 4) == 2, "split along dim 1");
    EXPECT(parts[1], (5, 1), 1, 3, 5, 7, 9);
    CHECK(kn_split(m, 10, -2, parts, 1) == 1, "split bigger than the dim");
    EXPECT(parts[0], (5, 2), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    CHECK(kn_split(kn_transpose(m, 0, 1), 3, 1, parts, 2) == 2, "split of transposed");
    EXPECT(parts[1], (2, 2), 6, 8, 7, 9);
    CHECK(kn_split(m, 1, 0, parts, 4) == -1, "too many pieces");
    CHECK_MSG("split: dim 0 of size 5 makes 5 pieces of 1, but out holds 4");
    CHECK(kn_split(m, 0, 0, parts, 4) == -1, "zero split size");
    CHECK_MSG("split: split_size must be positive, got 0");
    CHECK(kn_split(m, 1, 2, parts, 4) == -1, "split dim out of range");
    CHECK_MSG("split: dim 2 out of range for a 2-d tensor");
    kn_error_clear();
    CHECK(kn_split(NULL, 1, 0, parts, 4) == -1, "split NULL");
    kn_scope_end(s);
}

/* ---- index_select ------------------------------------------------------------------------------- */
static void test_index_select(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = RAMP(3, 4);
    EXPECT(kn_index_select(a, 0, TI((3), 2, 0, 2)), (3, 4), 8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11);
    EXPECT(kn_index_select(a, 1, TI((2), 3, 1)), (3, 2), 3, 1, 7, 5, 11, 9);
    EXPECT(kn_index_select(a, -1, kn_cast(TI((2), 3, 1), KN_I32)), (3, 2), 3, 1, 7, 5, 11, 9);
    EXPECT(kn_index_select(a, 0, kn_cast(TI((2), 1, 1), KN_U8)), (2, 4), 4, 5, 6, 7, 4, 5, 6, 7);
    EXPECT(kn_index_select(a, 0, scalar(2, KN_I64, dev)), (1, 4), 8, 9, 10, 11);
    CHECK(kn_numel(kn_index_select(a, 0, kn_zeros(KN_SHAPE(0), KN_I64, dev))) == 0, "empty index");
    /* Non-contiguous input: transposed, sliced with a step; strided index. */
    kn_tensor *at = kn_transpose(a, 0, 1); /* [4, 3] */
    EXPECT(kn_index_select(at, 0, TI((2), 3, 0)), (2, 3), 3, 7, 11, 0, 4, 8);
    EXPECT(kn_index_select(at, 1, TI((2), 2, 2)), (4, 2), 8, 8, 9, 9, 10, 10, 11, 11);
    kn_tensor *sl = kn_slice(a, 1, 1, 4, 2); /* [3, 2]: 1 3 / 5 7 / 9 11 */
    EXPECT(kn_index_select(sl, 0, TI((2), 2, 1)), (2, 2), 9, 11, 5, 7);
    kn_tensor *sidx = kn_slice(TI((5), 2, 9, 0, 9, 1), 0, 0, 5, 2); /* 2 0 1 */
    EXPECT(kn_index_select(sl, 0, sidx), (3, 2), 9, 11, 1, 3, 5, 7);
    kn_tensor *p3 = kn_permute(RAMP(2, 3, 2), KN_DIMS(2, 0, 1)); /* [2, 2, 3], not mergeable */
    EXPECT(kn_index_select(p3, 1, TI((1), 1)), (2, 1, 3), 6, 8, 10, 7, 9, 11);
    kn_tensor *bc = kn_expand(TF((1, 2), 5, 6), KN_SHAPE(3, 2)); /* stride 0 */
    EXPECT(kn_index_select(bc, 0, TI((2), 2, 0)), (2, 2), 5, 6, 5, 6);
    /* Other dtypes are copied bit for bit. */
    kn_tensor *d64 = kn_from_data((double[]){0.1, -2, 3e300}, KN_F64, KN_SHAPE(3), dev);
    EXPECT(kn_index_select(d64, 0, TI((2), 2, 0)), (2), 3e300, 0.1);
    kn_tensor *h = kn_cast(TF((3), 0.5, -1.5, 2), KN_F16);
    kn_tensor *hs = kn_index_select(h, 0, TI((3), 1, 1, 2));
    CHECK(kn_dtype_of(hs) == KN_F16, "float16 stays float16");
    EXPECT(hs, (3), -1.5, -1.5, 2);
    kn_tensor *bl = kn_cast(TF((2, 2), 1, 0, 0, 1), KN_BOOL);
    EXPECT(kn_index_select(bl, 1, TI((3), 1, 0, 1)), (2, 3), 0, 1, 0, 1, 0, 1);
    kn_tensor *u8 = kn_cast(TF((3), 250, 7, 3), KN_U8);
    EXPECT(kn_index_select(u8, 0, TI((2), 0, 2)), (2), 250, 3);
    kn_scope_end(s);
}

/* Index arrays for the large cases: k * mul % mod. */
static kn_tensor *idx_ramp(int64_t n, int64_t mul, int64_t mod) {
    int64_t *v = malloc((size_t)n * sizeof *v);
    for (int64_t k = 0; k < n; k++) v[k] = k * mul % mod;
    kn_tensor *t = kn_from_data(v, KN_I64, 1, &n, dev);
    free(v);
    return t;
}

/* got (row-major, as doubles) against want (n values). */
static bool host_equal(kn_tensor *t, const double *want, int64_t n) {
    if (!t || kn_numel(t) != n) return false;
    double *got = malloc((size_t)n * sizeof *got);
    bool ok = kn_to_host(t, got, KN_F64) == KN_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = got[i] == want[i];
    free(got);
    return ok;
}

static void test_index_large(void) {
    kn_scope s = kn_scope_begin();
    enum { R = 2000, C = 64, N = 5000 };
    kn_tensor *tab = RAMP(R, C), *idx = idx_ramp(N, 7919, R);
    double *want = malloc((size_t)N * C * sizeof *want);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < C; j++) want[i * C + j] = (double)((i * 7919 % R) * C + j);
    CHECK(host_equal(kn_index_select(tab, 0, idx), want, (int64_t)N * C), "large row select");
    CHECK(host_equal(kn_contiguous(kn_transpose(kn_index_select(kn_transpose(tab, 0, 1), 1, idx), 0, 1)),
                     want, (int64_t)N * C),
          "large column select of a transposed table");
    /* Rows of one element, many of them: dim 1 of [C, R]. */
    kn_tensor *cols = kn_index_select(kn_contiguous(kn_transpose(tab, 0, 1)), 1, idx);
    CHECK(host_equal(kn_contiguous(kn_transpose(cols, 0, 1)), want, (int64_t)N * C), "large select along dim 1");
    free(want);

    /* The reference embedding workload: a [4, 2] table, 1382 indices. */
    kn_tensor *w = RAMP(4, 2), *ix = idx_ramp(1382, 3, 4);
    double *ew = malloc(1382 * 2 * sizeof *ew);
    for (int k = 0; k < 1382; k++) ew[2 * k] = 2 * (k * 3 % 4), ew[2 * k + 1] = ew[2 * k] + 1;
    CHECK(host_equal(kn_embedding(w, ix), ew, 1382 * 2), "embedding workload");
    CHECK(host_equal(kn_embedding(w, kn_cast(ix, KN_I32)), ew, 1382 * 2), "embedding workload, int32");
    free(ew);

    /* index_add: rows longer than a work block, many repeats; and along dim 1. */
    enum { OR = 300, OC = 700, L = 1000 };
    kn_tensor *src = RAMP(L, OC), *aidx = idx_ramp(L, 7, OR);
    double *aw = calloc((size_t)OR * OC, sizeof *aw);
    for (int64_t k = 0; k < L; k++)
        for (int64_t c = 0; c < OC; c++) aw[(k * 7 % OR) * OC + c] += (double)(k * OC + c);
    kn_tensor *sum0 = kn_index_add(kn_zeros(KN_SHAPE(OR, OC), KN_F32, dev), 0, aidx, src);
    CHECK(host_equal(sum0, aw, (int64_t)OR * OC), "large index_add along dim 0");
    kn_tensor *sum1 = kn_index_add(kn_zeros(KN_SHAPE(OC, OR), KN_F32, dev), 1, aidx, kn_transpose(src, 0, 1));
    CHECK(host_equal(kn_contiguous(kn_transpose(sum1, 0, 1)), aw, (int64_t)OR * OC), "large index_add along dim 1");
    kn_tensor *sum64 = kn_index_add(kn_zeros(KN_SHAPE(OR, OC), KN_I64, dev), 0, aidx, kn_cast(src, KN_I64));
    CHECK(kn_dtype_of(sum64) == KN_I64 && host_equal(sum64, aw, (int64_t)OR * OC), "large int64 index_add");
    free(aw);

    /* gather along the last dim with an index narrower than the input. */
    enum { GR = 500, GC = 40, GK = 30 };
    int64_t *gi = malloc((size_t)GR * GK * sizeof *gi);
    double *gw = malloc((size_t)GR * GK * sizeof *gw);
    for (int64_t r = 0; r < GR; r++)
        for (int64_t k = 0; k < GK; k++) {
            gi[r * GK + k] = (r * 13 + k * 7) % GC;
            gw[r * GK + k] = (double)(r * GC + gi[r * GK + k]);
        }
    kn_tensor *gidx = kn_from_data(gi, KN_I64, KN_SHAPE(GR, GK), dev);
    CHECK(host_equal(kn_gather(RAMP(GR, GC), 1, gidx), gw, (int64_t)GR * GK), "large gather");
    free(gi);
    free(gw);
    kn_scope_end(s);
}

static void test_index_errors(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = RAMP(5, 2);
    CHECK(kn_index_select(a, 0, TI((3), 1, 7, 2)) == NULL, "index out of range");
    CHECK_MSG("index_select: index 7 is out of range for dim 0 of size 5");
    CHECK(kn_index_select(a, 1, TI((1), -1)) == NULL, "negative index");
    CHECK_MSG("index_select: index -1 is out of range for dim 1 of size 2");
    CHECK(kn_index_select(a, 0, TF((1), 1)) == NULL, "float index");
    CHECK_MSG("index_select: indices must be int64, int32 or uint8, not float32");
    CHECK(kn_index_select(a, 0, kn_cast(TI((1), 1), KN_BOOL)) == NULL, "bool index");
    CHECK_MSG("index_select: indices must be int64, int32 or uint8, not bool");
    CHECK(kn_index_select(a, 0, TI((1, 1), 1)) == NULL, "2-d index");
    CHECK_MSG("index_select: index must be 1-D, got shape [1, 1]");
    CHECK(kn_index_select(a, 2, TI((1), 1)) == NULL, "dim out of range");
    CHECK_MSG("index_select: dim 2 out of range for a 2-d tensor");
    CHECK(kn_index_select(scalar(1, KN_F32, dev), 0, TI((1), 0)) == NULL, "0-d input");
    CHECK_MSG("index_select: cannot index a 0-d tensor");
    CHECK(kn_index_select(kn_zeros(KN_SHAPE(0, 2), KN_F32, dev), 0, TI((1), 0)) == NULL, "empty dim");
    CHECK_MSG("index_select: index 0 is out of range for dim 0 of size 0");
    kn_error_clear();
    CHECK(kn_index_select(NULL, 0, TI((1), 0)) == NULL, "NULL input");
    CHECK_MSG("index_select: an input is NULL");

    CHECK(kn_gather(a, 1, TI((2, 1), 0, 2)) == NULL, "gather out of range");
    CHECK_MSG("gather: index 2 is out of range for dim 1 of size 2");
    CHECK(kn_gather(a, 0, TI((2, 1), 0, -3)) == NULL, "gather negative");
    CHECK_MSG("gather: index -3 is out of range for dim 0 of size 5");
    CHECK(kn_gather(a, 0, TI((2), 0, 1)) == NULL, "gather rank mismatch");
    CHECK_MSG("gather: index has 1 dims but the input has 2; they must match");
    CHECK(kn_gather(a, 0, TI((1, 3), 0, 1, 2)) == NULL, "gather index too wide");
    CHECK_MSG("gather: index of shape [1, 3] does not fit the input of shape [5, 2] at dim 1 (only dim 0 may be larger)");

    kn_tensor *z = kn_zeros(KN_SHAPE(3, 2), KN_F32, dev);
    CHECK(kn_index_add(z, 0, TI((2), 0, 3), TF((2, 2), 1, 1, 1, 1)) == NULL, "index_add out of range");
    CHECK_MSG("index_add: index 3 is out of range for dim 0 of size 3");
    CHECK(kn_index_add(z, 0, TI((2), 0, 1), TF((3, 2), 1, 1, 1, 1, 1, 1)) == NULL, "index_add wrong source");
    CHECK_MSG("index_add: source has shape [3, 2], expected [2, 2] (the input's shape with dim 0 of the index's length 2)");
    CHECK(kn_index_add(z, 1, TI((1), 0), TF((1, 3), 1, 1, 1)) == NULL, "index_add transposed source");
    CHECK_ERROR("index_add: source has shape [1, 3], expected [3, 1]");

    kn_tensor *w = RAMP(5, 3);
    CHECK(kn_embedding(w, TI((2, 2), 0, 1, 7, 2)) == NULL, "embedding out of range");
    CHECK_MSG("embedding: index 7 is out of range for dim 0 of size 5");
    CHECK(kn_embedding(w, TI((1), -1)) == NULL, "embedding negative");
    CHECK_MSG("embedding: index -1 is out of range for dim 0 of size 5");
    CHECK(kn_embedding(RAMP(5), TI((1), 1)) == NULL, "embedding of a 1-d weight");
    CHECK_MSG("embedding: weight must be 2-D [num_embeddings, embedding_dim], got shape [5]");
    CHECK(kn_embedding(w, TF((1), 1)) == NULL, "embedding float indices");
    CHECK_MSG("embedding: indices must be int64, int32 or uint8, not float32");

    CHECK(kn_masked_select(a, kn_ones(KN_SHAPE(5, 2), KN_F32, dev)) == NULL, "float mask");
    CHECK_MSG("masked_select: mask must be bool (or uint8), not float32");
    CHECK(kn_masked_select(a, kn_cast(TI((3), 1, 0, 1), KN_BOOL)) == NULL, "mask does not broadcast");
    CHECK_ERROR("masked_select:");
    kn_scope_end(s);
}

/* ---- gather, index_add, embedding, masked_select ------------------------------------------------- */
static void test_gather(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = RAMP(2, 3); /* 0 1 2 / 3 4 5 */
    EXPECT(kn_gather(a, 1, TI((2, 2), 0, 0, 2, 1)), (2, 2), 0, 0, 5, 4);
    EXPECT(kn_gather(a, 0, TI((2, 3), 1, 0, 1, 0, 0, 1)), (2, 3), 3, 1, 5, 0, 1, 5);
    EXPECT(kn_gather(a, 0, TI((3, 1), 1, 1, 0)), (3, 1), 3, 3, 0); /* more rows than the input */
    EXPECT(kn_gather(a, -1, kn_cast(TI((1, 2), 2, 2), KN_U8)), (1, 2), 2, 2);
    kn_tensor *at = kn_transpose(a, 0, 1); /* [3, 2]: 0 3 / 1 4 / 2 5 */
    EXPECT(kn_gather(at, 1, TI((3, 1), 1, 0, 1)), (3, 1), 3, 1, 5);
    EXPECT(kn_gather(at, 1, kn_transpose(TI((2, 3), 1, 0, 1, 0, 0, 1), 0, 1)), (3, 2), 3, 0, 1, 1, 5, 5);
    kn_tensor *g0 = kn_gather(scalar(4, KN_F32, dev), 0, scalar(0, KN_I64, dev));
    CHECK(kn_ndim(g0) == 0 && kn_item(g0) == 4, "0-d gather");
    kn_tensor *b3 = RAMP(2, 2, 3);
    EXPECT(kn_gather(b3, 1, TI((2, 1, 2), 1, 0, 0, 1)), (2, 1, 2), 3, 1, 6, 10);
    CHECK(kn_numel(kn_gather(a, 1, kn_zeros(KN_SHAPE(2, 0), KN_I64, dev))) == 0, "empty gather");
    kn_scope_end(s);
}

static void test_index_add(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *z = kn_zeros(KN_SHAPE(4, 2), KN_F32, dev);
    kn_tensor *src = TF((3, 2), 1, 2, 3, 4, 5, 6);
    kn_tensor *r = kn_index_add(z, 0, TI((3), 0, 2, 0), src);
    EXPECT(r, (4, 2), 6, 8, 0, 0, 3, 4, 0, 0);
    EXPECT(z, (4, 2), 0, 0, 0, 0, 0, 0, 0, 0); /* the input is not modified */
    kn_tensor *a = RAMP(2, 3);
    EXPECT(kn_index_add(a, 1, kn_cast(TI((2), 2, 2), KN_I32), TF((2, 2), 10, 20, 30, 40)), (2, 3), 0, 1, 32, 3, 4, 75);
    /* Non-contiguous input and source. */
    kn_tensor *at = kn_transpose(a, 0, 1); /* [3, 2]: 0 3 / 1 4 / 2 5 */
    kn_tensor *st = kn_transpose(TF((2, 2), 1, 2, 3, 4), 0, 1); /* 1 3 / 2 4 */
    EXPECT(kn_index_add(at, 0, TI((2), 2, 0), st), (3, 2), 2, 7, 1, 4, 3, 8);
    kn_tensor *p3 = kn_permute(RAMP(2, 3, 2), KN_DIMS(2, 0, 1)); /* [2, 2, 3] */
    EXPECT(kn_index_add(p3, 1, TI((1), 1), kn_ones(KN_SHAPE(2, 1, 3), KN_F32, dev)), (2, 2, 3),
           0, 2, 4, 7, 9, 11, 1, 3, 5, 8, 10, 12);
    /* Integer and mixed dtypes. */
    kn_tensor *iz = kn_zeros(KN_SHAPE(3), KN_I32, dev);
    kn_tensor *ir = kn_index_add(iz, 0, TI((4), 1, 1, 1, 2), kn_cast(TI((4), 1, 2, 3, 4), KN_I32));
    CHECK(kn_dtype_of(ir) == KN_I32, "int32 index_add stays int32");
    EXPECT(ir, (3), 0, 6, 4);
    kn_tensor *mixed = kn_index_add(iz, 0, TI((1), 0), TF((1), 0.5));
    CHECK(kn_dtype_of(mixed) == KN_F32, "int32 + float32 source is float32");
    EXPECT(mixed, (3), 0.5, 0, 0);
    kn_tensor *h = kn_index_add(kn_zeros(KN_SHAPE(2), KN_F16, dev), 0, TI((3), 1, 1, 1), kn_cast(TF((3), 0.5, 0.25, 1), KN_F16));
    EXPECT(h, (2), 0, 1.75);
    kn_scope_end(s);
}

static void test_embedding_masked(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *w = RAMP(4, 2);
    EXPECT(kn_embedding(w, TI((2, 2), 1, 3, 1, 0)), (2, 2, 2), 2, 3, 6, 7, 2, 3, 0, 1);
    EXPECT(kn_embedding(w, scalar(2, KN_I64, dev)), (2), 4, 5);
    EXPECT(kn_embedding(w, kn_transpose(TI((2, 2), 1, 3, 1, 0), 0, 1)), (2, 2, 2), 2, 3, 2, 3, 6, 7, 0, 1);
    EXPECT(kn_embedding(kn_transpose(RAMP(2, 4), 0, 1), TI((2), 3, 0)), (2, 2), 3, 7, 0, 4);
    CHECK(kn_numel(kn_embedding(w, kn_zeros(KN_SHAPE(0, 3), KN_I64, dev))) == 0, "no indices");

    kn_tensor *a = RAMP(2, 3);
    kn_tensor *m = kn_cast(TI((2, 3), 1, 0, 1, 0, 0, 1), KN_BOOL);
    EXPECT(kn_masked_select(a, m), (3), 0, 2, 5);
    EXPECT(kn_masked_select(a, kn_cast(TI((3), 0, 1, 1), KN_BOOL)), (4), 1, 2, 4, 5);
    EXPECT(kn_masked_select(kn_transpose(a, 0, 1), kn_cast(TI((3, 1), 1, 0, 1), KN_U8)), (4), 0, 3, 2, 5);
    EXPECT(kn_masked_select(TF((1), 9), m), (3), 9, 9, 9);
    CHECK(kn_numel(kn_masked_select(a, kn_zeros(KN_SHAPE(2, 3), KN_BOOL, dev))) == 0, "nothing selected");
    kn_scope_end(s);
}

/* ---- gradients ----------------------------------------------------------------------------------- */
/* sum(y * w) with w = 1, 2, 3, ...: the gradient reaching y is w. */
static kn_status backward_weighted(kn_tensor *y) {
    return kn_backward(kn_sum_all(kn_mul(y, kn_add_scalar(ramp(kn_ndim(y), kn_shape(y)), 1))));
}

static void test_gradients(void) {
    kn_scope s = kn_scope_begin();
    /* concat: each input gets its slice of the gradient. */
    kn_tensor *a = PARAM(RAMP(2, 2)), *b = PARAM(RAMP(2, 1));
    CHECK(backward_weighted(kn_concat(2, (kn_tensor *[]){a, b}, 1)) == KN_OK, "concat backward");
    EXPECT(kn_grad(a), (2, 2), 1, 2, 4, 5);
    EXPECT(kn_grad(b), (2, 1), 3, 6);
    /* Promotion: a float64 input of a float32 concat gets a float64 gradient. */
    kn_tensor *d = PARAM(kn_cast(RAMP(1, 2), KN_F64)), *f = PARAM(RAMP(1, 2));
    CHECK(backward_weighted(kn_concat(2, (kn_tensor *[]){f, d}, 0)) == KN_OK, "mixed concat backward");
    CHECK(kn_dtype_of(kn_grad(d)) == KN_F64, "gradient in the input's dtype");
    EXPECT(kn_grad(d), (1, 2), 3, 4);
    EXPECT(kn_grad(f), (1, 2), 1, 2);
    /* More inputs than one tape node holds. */
    kn_tensor *many[9];
    for (int k = 0; k < 9; k++) many[k] = PARAM(kn_full(KN_SHAPE(1, 2), k, KN_F32, dev));
    kn_tensor *cm = kn_concat(9, many, 0);
    EXPECT(cm, (9, 2), 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8);
    CHECK(backward_weighted(cm) == KN_OK, "concat of 9 backward");
    for (int k = 0; k < 9; k++) EXPECT(kn_grad(many[k]), (1, 2), 2 * k + 1, 2 * k + 2);
    /* stack: one slice per input, squeezed. */
    kn_tensor *x = PARAM(TF((2), 1, 2)), *y = PARAM(TF((2), 3, 4));
    CHECK(backward_weighted(kn_stack(2, (kn_tensor *[]){x, y}, 1)) == KN_OK, "stack backward");
    EXPECT(kn_grad(x), (2), 1, 3);
    EXPECT(kn_grad(y), (2), 2, 4);
    /* split: views, so their gradients land in place. */
    kn_tensor *m = PARAM(RAMP(5)), *parts[3];
    CHECK(kn_split(m, 2, 0, parts, 3) == 3, "split");
    CHECK(kn_backward(kn_add(kn_sum_all(parts[0]), kn_sum_all(kn_mul_scalar(parts[2], 3)))) == KN_OK, "split backward");
    EXPECT(kn_grad(m), (5), 1, 1, 0, 0, 3);
    /* index_select with repeated indices: the gradient rows add up. */
    kn_tensor *t = PARAM(RAMP(3, 2));
    CHECK(backward_weighted(kn_index_select(t, 0, TI((4), 2, 0, 2, 2))) == KN_OK, "index_select backward");
    EXPECT(kn_grad(t), (3, 2), 3, 4, 0, 0, 1 + 5 + 7, 2 + 6 + 8);
    kn_tensor *tt = PARAM(RAMP(2, 3));
    CHECK(backward_weighted(kn_index_select(kn_transpose(tt, 0, 1), 1, TI((2), 1, 1))) == KN_OK, "index_select backward, dim 1");
    EXPECT(kn_grad(tt), (2, 3), 0, 0, 0, 3, 7, 11);
    /* gather: scatter-add, repeated indices included. */
    kn_tensor *g = PARAM(RAMP(2, 3));
    CHECK(backward_weighted(kn_gather(g, 1, TI((2, 3), 0, 0, 2, 1, 1, 1))) == KN_OK, "gather backward");
    EXPECT(kn_grad(g), (2, 3), 3, 0, 3, 0, 15, 0);
    kn_tensor *g0 = PARAM(RAMP(3, 2));
    CHECK(backward_weighted(kn_gather(g0, 0, TI((2, 1), 2, 2))) == KN_OK, "gather backward, dim 0, narrower index");
    EXPECT(kn_grad(g0), (3, 2), 0, 0, 0, 0, 3, 0);
    kn_tensor *g3 = PARAM(RAMP(2, 2, 2));
    CHECK(backward_weighted(kn_gather(kn_permute(g3, KN_DIMS(2, 0, 1)), 2, TI((2, 2, 1), 1, 0, 1, 1))) == KN_OK,
          "gather backward of a permuted 3-d input");
    /* permuted p[i][j][k] = g3[j][k][i]; picks p[0][0][1], p[0][1][0], p[1][0][1], p[1][1][1]
     * = g3[0][1][0], g3[1][0][0], g3[0][1][1], g3[1][1][1] with weights 1..4. */
    EXPECT(kn_grad(g3), (2, 2, 2), 0, 0, 1, 3, 2, 0, 0, 4);
    kn_tensor *gs = PARAM(scalar(3, KN_F32, dev));
    CHECK(kn_backward(kn_mul_scalar(kn_gather(gs, 0, scalar(0, KN_I64, dev)), 5)) == KN_OK, "0-d gather backward");
    CHECK(kn_grad(gs) && kn_ndim(kn_grad(gs)) == 0 && kn_item(kn_grad(gs)) == 5, "0-d gather gradient");
    /* index_add: the input gets g, the source index_select(g). */
    kn_tensor *ia = PARAM(RAMP(3, 2)), *is = PARAM(TF((2, 2), 1, 1, 1, 1));
    CHECK(backward_weighted(kn_index_add(ia, 0, TI((2), 2, 2), is)) == KN_OK, "index_add backward");
    EXPECT(kn_grad(ia), (3, 2), 1, 2, 3, 4, 5, 6);
    EXPECT(kn_grad(is), (2, 2), 5, 6, 5, 6);
    /* embedding: repeated indices accumulate into the weight's rows. */
    kn_tensor *w = PARAM(RAMP(4, 2));
    CHECK(backward_weighted(kn_embedding(w, TI((2, 2), 1, 3, 1, 1))) == KN_OK, "embedding backward");
    EXPECT(kn_grad(w), (4, 2), 0, 0, 1 + 5 + 7, 2 + 6 + 8, 0, 0, 3, 4);
    CHECK(kn_grad_fn_name(kn_embedding(w, TI((1), 0))) != NULL &&
          strcmp(kn_grad_fn_name(kn_embedding(w, TI((1), 0))), "embedding") == 0, "embedding on the tape");
    kn_tensor *ms = PARAM(RAMP(2, 2));
    CHECK(backward_weighted(kn_masked_select(ms, kn_cast(TI((2), 0, 1), KN_BOOL))) == KN_OK, "masked_select backward");
    EXPECT(kn_grad(ms), (2, 2), 0, 1, 0, 2);
    kn_scope_end(s);
}

/* Finite differences in float64. */
static kn_tensor *gc_gather(kn_tensor **in, void *ctx) {
    return kn_gather(in[0], 1, ctx);
}
static kn_tensor *gc_embed(kn_tensor **in, void *ctx) {
    return kn_embedding(in[0], ctx);
}
static kn_tensor *gc_index_add(kn_tensor **in, void *ctx) {
    return kn_index_add(in[0], 0, ctx, in[1]);
}
static kn_tensor *gc_concat(kn_tensor **in, void *ctx) {
    (void)ctx;
    return kn_concat(3, in, 1);
}

static void test_gradcheck(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_cast(RAMP(3, 4), KN_F64), *y = kn_cast(RAMP(3, 1), KN_F64), *z = kn_cast(RAMP(3, 2), KN_F64);
    double e;
    e = kn_gradcheck(gc_gather, 1, &x, TI((3, 2), 0, 3, 3, 3, 1, 0), 1e-6);
    CHECK(e >= 0 && e < 1e-6, "gather gradcheck: %g", e);
    e = kn_gradcheck(gc_embed, 1, &x, TI((2, 3), 2, 2, 0, 1, 2, 0), 1e-6);
    CHECK(e >= 0 && e < 1e-6, "embedding gradcheck: %g", e);
    kn_tensor *ia[2] = {x, kn_cast(RAMP(2, 4), KN_F64)};
    e = kn_gradcheck(gc_index_add, 2, ia, TI((2), 1, 1), 1e-6);
    CHECK(e >= 0 && e < 1e-6, "index_add gradcheck: %g", e);
    kn_tensor *cc[3] = {x, y, z};
    e = kn_gradcheck(gc_concat, 3, cc, NULL, 1e-6);
    CHECK(e >= 0 && e < 1e-6, "concat gradcheck: %g", e);
    kn_scope_end(s);
}

static void run_all(kn_device d) {
    dev = d;
    test_concat();
    test_concat_errors();
    test_stack_split();
    test_index_select();
    test_index_large();
    test_gather();
    test_index_add();
    test_embedding_masked();
    test_gradients();
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    run_all(KN_CPU);
    test_index_errors();
    test_gradcheck();
    /* The kernel-less test device: every op here through the CPU fallback. */
    kn_fallback_stats_reset();
    kn_device test = kt_register_test_device();
    run_all(test);
    test_index_errors();
    /* Primitives went to the host; fused ops (index_select, index_add) never
     * do: they ran as composites of primitives on the device. */
    kn_fallback_stat st[64];
    int nst = kn_fallback_stats(st, 64), seen = 0, fused = 0;
    for (int k = 0; k < nst && k < 64; k++) {
        if ((int)st[k].kind != test.kind) continue;
        if (!strcmp(st[k].op, "gather") || !strcmp(st[k].op, "scatter_add")) seen++;
        if (!strcmp(st[k].op, "index_select") || !strcmp(st[k].op, "index_add")) fused++;
    }
    CHECK(seen == 2, "the test device ran gather and scatter_add through the host fallback (%d)", seen);
    CHECK(fused == 0, "fused ops never fall back to the host (%d did)", fused);
    /* The primitives-only device: fused ops as composites, nothing on the host. */
    kn_fallback_stats_reset();
    kn_device prim = kt_prim_device();
    run_all(prim);
    test_index_errors();
    nst = kn_fallback_stats(st, 64);
    for (int k = 0; k < nst && k < 64; k++)
        CHECK((int)st[k].kind != prim.kind, "op '%s' fell back to the host on prim", st[k].op);
    /* With many threads and with one. */
    kn_set_num_threads(1);
    dev = KN_CPU;
    test_index_large();
    CHECK(kn_live_tensors() == 0, "%lld tensors leaked", (long long)kn_live_tensors());
    return kt_finish("index");
}
