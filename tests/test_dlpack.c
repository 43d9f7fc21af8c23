/* DLPack 1.x export and import (src/io/dlpack.c): zero copy both ways, the
 * lifetimes of capsule and tensor in either order with the deleter called
 * exactly once, strided views, every dtype, and every refusal with its
 * message (the caller keeping ownership). On a machine with CUDA, the same
 * round trip on cuda:0. */
#include "kn_test.h"

#include "kiln/dlpack.h"

/* ---- a producer: memory kiln does not own, with a counting deleter ------------ */
typedef struct {
    DLManagedTensorVersioned m;
    int64_t shape[16], strides[16];
    void *buf;
} producer;

static int producer_deleted;

static void producer_deleter(DLManagedTensorVersioned *m) {
    producer *p = m->manager_ctx;
    producer_deleted++;
    free(p->buf);
    free(p);
}

/* A versioned tensor over a fresh buffer of nbytes (zeroed); strides NULL: none. */
static producer *make_producer(uint8_t code, uint8_t bits, int ndim, const int64_t *shape,
                               const int64_t *strides, size_t nbytes) {
    producer *p = calloc(1, sizeof *p);
    p->buf = calloc(1, nbytes ? nbytes : 1);
    for (int d = 0; d < ndim && d < 16; d++) {
        p->shape[d] = shape[d];
        if (strides) p->strides[d] = strides[d];
    }
    p->m.version = (DLPackVersion){DLPACK_MAJOR_VERSION, DLPACK_MINOR_VERSION};
    p->m.manager_ctx = p;
    p->m.deleter = producer_deleter;
    p->m.dl_tensor = (DLTensor){.data = p->buf, .device = {kDLCPU, 0}, .ndim = ndim,
                                .dtype = {code, bits, 1}, .shape = p->shape,
                                .strides = strides ? p->strides : NULL, .byte_offset = 0};
    return p;
}

/* ---- counting the deleter of kiln's own capsules ------------------------------- */
static int kiln_deleted;
static void (*kiln_deleter)(DLManagedTensorVersioned *);
static void counting_deleter(DLManagedTensorVersioned *m) {
    kiln_deleted++;
    kiln_deleter(m);
}
static DLManagedTensorVersioned *export_counted(kn_tensor *t) {
    DLManagedTensorVersioned *m = kn_to_dlpack(t);
    if (m) {
        kiln_deleter = m->deleter;
        m->deleter = counting_deleter;
    }
    return m;
}

/* Element at index of a DLPack CPU tensor, read through its own fields. */
static double dl_get(const DLManagedTensorVersioned *m, kn_dtype dt, const int64_t *index) {
    int64_t off = 0;
    for (int d = 0; d < m->dl_tensor.ndim; d++) off += index[d] * m->dl_tensor.strides[d];
    const char *p = (const char *)m->dl_tensor.data + m->dl_tensor.byte_offset;
    return kn__load(p + off * (int64_t)kn_dtype_size(dt), dt);
}

static void test_round_trip(void) {
    kn_scope sc = kn_scope_begin();
    kn_tensor *t = kn_reshape(kn_arange(0, 12, 1, KN_F32, KN_CPU), KN_SHAPE(3, 4));
    kiln_deleted = 0;
    DLManagedTensorVersioned *m = export_counted(t);
    CHECK(m != NULL, "export");
    if (!m) {
        kn_scope_end(sc);
        return;
    }
    CHECK(m->version.major == DLPACK_MAJOR_VERSION && m->version.minor == DLPACK_MINOR_VERSION,
          "version %u.%u", m->version.major, m->version.minor);
    CHECK(m->flags == 0, "flags %llu", (unsigned long long)m->flags);
    CHECK(m->dl_tensor.device.device_type == kDLCPU && m->dl_tensor.device.device_id == 0, "device");
    CHECK(m->dl_tensor.dtype.code == kDLFloat && m->dl_tensor.dtype.bits == 32 && m->dl_tensor.dtype.lanes == 1,
          "dtype");
    CHECK(m->dl_tensor.ndim == 2 && m->dl_tensor.shape[0] == 3 && m->dl_tensor.shape[1] == 4, "shape");
    CHECK(m->dl_tensor.strides && m->dl_tensor.strides[0] == 4 && m->dl_tensor.strides[1] == 1, "strides");
    CHECK(m->dl_tensor.data == kn__data(t) && m->dl_tensor.byte_offset == 0, "zero copy on export");

    kn_tensor *u = kn_from_dlpack(m);
    CHECK(u && kn__data(u) == kn__data(t), "zero copy back: the same data pointer");
    CHECK(kn_ndim(u) == 2 && kn_size(u, 0) == 3 && kn_size(u, 1) == 4 && kn_dtype_of(u) == KN_F32, "geometry");
    CHECK(kn_get(u, (int64_t[]){2, 3}) == 11, "value");
    /* A write through either is seen by the other. */
    kn_fill_(kn_select(u, 0, 1), 42);
    CHECK(kn_get(t, (int64_t[]){1, 2}) == 42, "write through the import, read through the original");
    kn_fill_(kn_select(t, 1, 0), -1);
    CHECK(kn_get(u, (int64_t[]){2, 0}) == -1, "write through the original, read through the import");
    /* Ops run on imported memory. */
    kn_tensor *sum = kn_add(u, u);
    CHECK(sum && kn_get(sum, (int64_t[]){0, 1}) == 2, "an op on an imported tensor");
    kn_scope_end(sc);
    CHECK(kiln_deleted == 1, "the capsule's deleter ran once, when kiln's import went (%d)", kiln_deleted);
}

static void test_export_lifetimes(void) {
    int64_t live = kn_live_tensors();
    /* The tensor goes first: the capsule keeps the storage alive (ASan checks the reads). */
    kn_tensor *t = kn_from_data((float[]){1, 2, 3, 4, 5, 6}, KN_F32, KN_SHAPE(2, 3), KN_CPU);
    kiln_deleted = 0;
    DLManagedTensorVersioned *m = export_counted(t);
    kn_release(t);
    CHECK(kn_live_tensors() == live, "the tensor is gone");
    float *f = m ? m->dl_tensor.data : NULL;
    CHECK(f && f[0] == 1 && f[5] == 6, "the capsule's memory outlives the tensor");
    if (f) f[4] = 50; /* and is writable */
    if (m) m->deleter(m);
    CHECK(kiln_deleted == 1, "deleter once");

    /* The capsule goes first: the tensor is untouched. */
    t = kn_from_data((float[]){1, 2, 3, 4, 5, 6}, KN_F32, KN_SHAPE(2, 3), KN_CPU);
    kiln_deleted = 0;
    m = export_counted(t);
    if (m) m->deleter(m);
    CHECK(kiln_deleted == 1 && kn_get(t, (int64_t[]){1, 2}) == 6, "the tensor outlives the capsule");
    kn_release(t);

    /* Several capsules of one tensor, released in any order. */
    t = kn_from_data((float[]){7, 8}, KN_F32, KN_SHAPE(2), KN_CPU);
    kn_tensor *second = kn_slice(t, 0, 1, 2, 1);
    DLManagedTensorVersioned *a = kn_to_dlpack(t), *b = kn_to_dlpack(second);
    CHECK(a && b && (float *)b->dl_tensor.data == (float *)a->dl_tensor.data + 1, "a view's capsule points at its element");
    kn_release(second);
    kn_release(t);
    if (a) a->deleter(a);
    CHECK(b && *(float *)b->dl_tensor.data == 8, "the second capsule still reads");
    if (b) b->deleter(b);
    CHECK(kn_live_tensors() == live, "no tensor leaked (%lld live, %lld before)", (long long)kn_live_tensors(),
          (long long)live);
}

static void test_import_lifetimes(void) {
    int64_t live = kn_live_tensors();
    producer *p = make_producer(kDLFloat, 32, 2, (int64_t[]){2, 3}, NULL, 6 * sizeof(float));
    float *buf = p->buf;
    for (int i = 0; i < 6; i++) buf[i] = (float)i;
    producer_deleted = 0;
    kn_tensor *t = kn_from_dlpack(&p->m);
    CHECK(t && kn__data(t) == (void *)buf, "imported without a copy");
    CHECK(t && kn_stride(t, 0) == 3 && kn_stride(t, 1) == 1, "NULL strides: compact row-major");
    buf[4] = 40; /* the producer writes, kiln reads */
    CHECK(kn_get(t, (int64_t[]){1, 1}) == 40, "producer's write seen by kiln");
    kn_tensor *v = kn_transpose(t, 0, 1); /* a view keeps the memory too */
    kn_keep(v);
    kn_release(t);
    CHECK(producer_deleted == 0, "a view still holds the producer's memory");
    CHECK(kn_get(v, (int64_t[]){2, 1}) == 5, "the view reads after the first tensor went");
    kn_scope sc = kn_scope_begin();
    kn_fill_(kn_select(v, 0, 0), 9); /* kiln writes column 0 of t, the producer reads */
    kn_scope_end(sc);
    CHECK(buf[0] == 9 && buf[3] == 9 && buf[1] == 1, "kiln's write seen by the producer");
    /* Re-exported: the producer's deleter waits for that capsule too. */
    DLManagedTensorVersioned *again = kn_to_dlpack(v);
    kn_release(v);
    CHECK(producer_deleted == 0, "a kiln capsule of the import still holds it");
    CHECK(again && again->dl_tensor.data == (void *)buf && again->dl_tensor.strides[0] == 1 &&
              again->dl_tensor.strides[1] == 3,
          "re-export of the transposed import");
    if (again) again->deleter(again);
    CHECK(producer_deleted == 1, "producer's deleter called once, after the last reference (%d)", producer_deleted);

    /* A scope releases an imported tensor like any other. */
    p = make_producer(kDLInt, 64, 1, (int64_t[]){4}, NULL, 4 * sizeof(int64_t));
    producer_deleted = 0;
    sc = kn_scope_begin();
    t = kn_from_dlpack(&p->m);
    CHECK(t && kn_numel(t) == 4 && kn_dtype_of(t) == KN_I64, "int64 import");
    kn_scope_end(sc);
    CHECK(producer_deleted == 1, "scope end called the deleter once");

    /* A NULL deleter is allowed (nothing to free). */
    int64_t data[2] = {5, 6};
    DLManagedTensorVersioned m = {.version = {1, 0},
                                  .dl_tensor = {.data = data, .device = {kDLCPU, 0}, .ndim = 1,
                                                .dtype = {kDLInt, 64, 1}, .shape = (int64_t[]){2},
                                                .strides = (int64_t[]){1}}};
    t = kn_from_dlpack(&m);
    CHECK(t && kn_get(t, (int64_t[]){1}) == 6, "import with a NULL deleter (version 1.0)");
    kn_release(t);
    CHECK(kn_live_tensors() == live, "no tensor leaked");
}

static void test_views(void) {
    kn_scope sc = kn_scope_begin();
    kn_tensor *base = kn_reshape(kn_arange(0, 24, 1, KN_F64, KN_CPU), KN_SHAPE(2, 3, 4));
    kn_tensor *views[] = {
        kn_transpose(base, 0, 2),                    /* [4, 3, 2], strides [1, 4, 12] */
        kn_slice(base, 2, 1, 4, 2),                  /* step and offset */
        kn_select(kn_narrow(base, 1, 1, 2), 0, 1),   /* offset 16 */
        kn_permute(base, KN_DIMS(1, 2, 0)),          /* a permutation */
        kn_expand(kn_slice(base, 1, 0, 1, 1), KN_SHAPE(2, 5, 4)), /* stride 0 */
        kn_select(kn_select(base, 0, 1), 0, 2),      /* 1-d, offset 20 */
        kn_select(kn_select(kn_select(base, 0, 1), 0, 2), 0, 3), /* 0-d */
    };
    for (size_t v = 0; v < sizeof views / sizeof *views; v++) {
        kn_tensor *t = views[v];
        DLManagedTensorVersioned *m = kn_to_dlpack(t);
        CHECK(m != NULL, "export view %zu", v);
        if (!m) continue;
        bool geometry = m->dl_tensor.ndim == kn_ndim(t) && m->dl_tensor.data == kn__data(t);
        for (int d = 0; d < kn_ndim(t); d++)
            geometry = geometry && m->dl_tensor.shape[d] == kn_size(t, d) && m->dl_tensor.strides[d] == kn_stride(t, d);
        CHECK(geometry, "view %zu: shape, element strides and data pointer as kiln's", v);
        /* Every element through DLPack's fields equals kiln's. */
        int64_t n = kn_numel(t), idx[KN_MAX_DIMS] = {0};
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i;
            for (int d = kn_ndim(t) - 1; d >= 0; d--) {
                idx[d] = r % kn_size(t, d);
                r /= kn_size(t, d);
            }
            bad += dl_get(m, KN_F64, idx) != kn_get(t, idx);
        }
        CHECK(bad == 0, "view %zu: %d elements differ read through DLPack", v, bad);
        /* Back into kiln: the same view of the same memory. */
        kn_tensor *u = kn_from_dlpack(m);
        CHECK(u && kn__data(u) == kn__data(t) && kn_ndim(u) == kn_ndim(t), "view %zu re-imported", v);
        bad = 0;
        for (int d = 0; u && d < kn_ndim(t); d++) bad += kn_size(u, d) != kn_size(t, d) || (kn_size(t, d) > 1 && kn_stride(u, d) != kn_stride(t, d));
        double a[64], b[64];
        if (u && n <= 64 && kn_to_host(u, a, KN_F64) == KN_OK && kn_to_host(t, b, KN_F64) == KN_OK)
            bad += memcmp(a, b, (size_t)n * sizeof *a) != 0;
        else
            bad++;
        CHECK(bad == 0, "view %zu: the import reads the same elements", v);
        if (!u) m->deleter(m);
    }
    kn_scope_end(sc);

    /* A producer's strided memory: a column of a Fortran-order 3x4 int32 matrix. */
    producer *p = make_producer(kDLInt, 32, 2, (int64_t[]){3, 4}, (int64_t[]){1, 3}, 12 * sizeof(int32_t));
    int32_t *buf = p->buf;
    for (int i = 0; i < 12; i++) buf[i] = 100 + i;
    p->m.dl_tensor.byte_offset = 0;
    producer_deleted = 0;
    kn_tensor *t = kn_from_dlpack(&p->m);
    CHECK(t && !kn_is_contiguous(t) && kn_get(t, (int64_t[]){2, 1}) == 105, "column-major import");
    kn_tensor *c = kn_contiguous(t);
    int32_t out[12];
    CHECK(c && kn_to_host(c, out, KN_I32) == KN_OK && out[1] == 103 && out[4] == 101, "read in row-major order");
    kn_release(c);
    kn_release(t);
    CHECK(producer_deleted == 1, "deleter once");

    /* byte_offset, and strides of size-1 dims that address nothing (even negative). */
    p = make_producer(kDLFloat, 32, 3, (int64_t[]){2, 1, 2}, (int64_t[]){2, -7, 1}, 8 * sizeof(float));
    float *f = p->buf;
    for (int i = 0; i < 8; i++) f[i] = (float)i;
    p->m.dl_tensor.byte_offset = 3 * sizeof(float);
    t = kn_from_dlpack(&p->m);
    CHECK(t && kn__data(t) == (void *)(f + 3), "byte_offset moves the first element");
    CHECK(t && kn_get(t, (int64_t[]){1, 0, 1}) == 6 && kn_stride(t, 1) >= 0, "size-1 dim's stride ignored");
    kn_release(t);

    /* An empty tensor without data, and a 0-d one. */
    p = make_producer(kDLFloat, 32, 2, (int64_t[]){0, 5}, (int64_t[]){-1, 1}, 0);
    p->m.dl_tensor.data = NULL;
    t = kn_from_dlpack(&p->m);
    CHECK(t && kn_numel(t) == 0 && kn_size(t, 1) == 5, "empty import with NULL data");
    kn_release(t);
    p = make_producer(kDLBool, 8, 0, NULL, NULL, 1);
    *(uint8_t *)p->buf = 1;
    t = kn_from_dlpack(&p->m);
    CHECK(t && kn_ndim(t) == 0 && kn_item(t) == 1, "0-d bool import");
    kn_release(t);
    CHECK(producer_deleted == 4, "deleter once each (%d)", producer_deleted);

    kn_tensor *e = kn_zeros(KN_SHAPE(0, 3), KN_F32, KN_CPU);
    DLManagedTensorVersioned *m = kn_to_dlpack(e);
    CHECK(m && m->dl_tensor.data == NULL && m->dl_tensor.shape[0] == 0, "an empty export has NULL data");
    kn_tensor *u = kn_from_dlpack(m);
    CHECK(u && kn_numel(u) == 0, "and imports back");
    kn_release(u);
    kn_release(e);
}

static void test_dtypes(void) {
    static const struct {
        kn_dtype dt;
        uint8_t code, bits;
    } want[] = {{KN_F32, kDLFloat, 32}, {KN_F16, kDLFloat, 16}, {KN_BF16, kDLBfloat, 16}, {KN_F64, kDLFloat, 64},
                {KN_I32, kDLInt, 32},   {KN_I64, kDLInt, 64},   {KN_U8, kDLUInt, 8},      {KN_BOOL, kDLBool, 8}};
    CHECK(sizeof want / sizeof *want == KN_DTYPE_REAL_COUNT, "every real kiln dtype is listed");
    double vals[6] = {0, 1, 2.5, -3, 100, 0.125};
    kn_tensor *src = kn_from_data(vals, KN_F64, KN_SHAPE(2, 3), KN_CPU);
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        kn_scope sc = kn_scope_begin();
        kn_tensor *t = kn_cast(src, want[k].dt);
        DLManagedTensorVersioned *m = kn_to_dlpack(t);
        const char *name = kn_dtype_name(want[k].dt);
        CHECK(m && m->dl_tensor.dtype.code == want[k].code && m->dl_tensor.dtype.bits == want[k].bits &&
                  m->dl_tensor.dtype.lanes == 1,
              "%s exports as code %u bits %u", name, want[k].code, want[k].bits);
        kn_tensor *u = kn_from_dlpack(m);
        double a[6], b[6];
        CHECK(u && kn_dtype_of(u) == want[k].dt && kn__data(u) == kn__data(t), "%s imports back without a copy", name);
        CHECK(u && kn_to_host(u, a, KN_F64) == KN_OK && kn_to_host(t, b, KN_F64) == KN_OK && !memcmp(a, b, sizeof a),
              "%s values", name);
        if (!u && m) m->deleter(m);

        /* A producer's buffer of that dtype, filled with kiln's encoding of the values. */
        producer *p = make_producer(want[k].code, want[k].bits, 1, (int64_t[]){6}, (int64_t[]){1},
                                    6 * kn_dtype_size(want[k].dt));
        for (int i = 0; i < 6; i++) kn__store((char *)p->buf + i * kn_dtype_size(want[k].dt), want[k].dt, vals[i]);
        kn_tensor *v = kn_from_dlpack(&p->m);
        bool same = v != NULL;
        for (int i = 0; same && i < 6; i++)
            same = kn_get(v, (int64_t[]){i}) == kn__load((char *)p->buf + i * kn_dtype_size(want[k].dt), want[k].dt);
        CHECK(same, "%s: a producer's buffer reads as written", name);
        kn_scope_end(sc);
    }
    kn_release(src);
}

/* Complex: kDLComplex with the bits of the pair (64, 128), strides in complex
 * elements, zero copy both ways; the parts read back exactly. */
static void test_complex(void) {
    static const struct {
        kn_dtype dt;
        uint8_t bits;
    } want[] = {{KN_C64, 64}, {KN_C128, 128}};
    const double zv[12] = {1.5, -0.25, 0.0, -0.0, 1e30, -3e-30, 3, 4, -1, 2, 7.5, -8};
    for (size_t k = 0; k < 2; k++) {
        kn_scope sc = kn_scope_begin();
        const char *name = kn_dtype_name(want[k].dt);
        kn_tensor *t = kn_cast(kn_from_data(zv, KN_C128, KN_SHAPE(2, 3), KN_CPU), want[k].dt);
        kn_tensor *tt = kn_transpose(t, 0, 1);
        DLManagedTensorVersioned *m = kn_to_dlpack(tt);
        CHECK(m && m->dl_tensor.dtype.code == kDLComplex && m->dl_tensor.dtype.bits == want[k].bits &&
                  m->dl_tensor.dtype.lanes == 1,
              "%s exports as kDLComplex, %u bits", name, want[k].bits);
        CHECK(m && m->dl_tensor.data == kn__data(t) && m->dl_tensor.strides[0] == 1 && m->dl_tensor.strides[1] == 3,
              "%s: a transposed view exports its element strides without a copy", name);
        kn_tensor *u = kn_from_dlpack(m);
        double a[12], b[12];
        CHECK(u && kn_dtype_of(u) == want[k].dt && kn__data(u) == kn__data(t) && kn_stride(u, 1) == 3,
              "%s imports back without a copy", name);
        CHECK(u && kn_to_host(u, a, KN_C128) == KN_OK && kn_to_host(tt, b, KN_C128) == KN_OK && !memcmp(a, b, sizeof a),
              "%s values", name);
        if (!u && m) m->deleter(m);
        /* A producer's interleaved pairs: kiln reads them and writes them. */
        const size_t part = want[k].dt == KN_C64 ? 4 : 8;
        producer *p = make_producer(kDLComplex, want[k].bits, 1, (int64_t[]){6}, (int64_t[]){1}, 12 * part);
        for (int i = 0; i < 12; i++) kn__store((char *)p->buf + i * part, part == 4 ? KN_F32 : KN_F64, zv[i]);
        kn_tensor *v = kn_from_dlpack(&p->m);
        double c[12];
        bool same = v && kn_dtype_of(v) == want[k].dt && kn__data(v) == p->buf && kn_to_host(v, c, KN_C128) == KN_OK;
        for (int i = 0; same && i < 12; i++) same = c[i] == kn__load((char *)p->buf + i * part, part == 4 ? KN_F32 : KN_F64);
        CHECK(same, "%s: a producer's buffer reads as written", name);
        /* An op on the imported tensor runs through its real view (kn_neg) and writes the producer's memory. */
        CHECK(v && kn_copy_(v, kn_neg(v)) == KN_OK &&
                  kn__load((char *)p->buf + part, part == 4 ? KN_F32 : KN_F64) == 0.25,
              "%s: kiln writes the producer's pairs", name);
        kn_scope_end(sc);
    }
}

/* Refused imports: the message, no deleter call, and the caller still owns m. */
static void refused(producer *p, const char *needle, const char *what) {
    producer_deleted = 0;
    kn_error_clear();
    kn_tensor *t = kn_from_dlpack(&p->m);
    CHECK(t == NULL, "%s is refused", what);
    CHECK(strstr(kn_error(), needle) != NULL, "%s: message \"%s\" contains \"%s\"", what, kn_error(), needle);
    CHECK(producer_deleted == 0, "%s: the deleter was not called", what);
    if (t) kn_release(t);
    p->m.deleter(&p->m); /* the caller's to free */
    CHECK(producer_deleted == 1, "%s: the caller's deleter call frees it", what);
}

static producer *f32_2x3(void) {
    return make_producer(kDLFloat, 32, 2, (int64_t[]){2, 3}, (int64_t[]){3, 1}, 6 * sizeof(float));
}

static void test_refusals(void) {
    kn_error_clear();
    CHECK(kn_from_dlpack(NULL) == NULL, "NULL");
    CHECK_ERROR("from_dlpack: an input is NULL");
    kn_error_clear();
    CHECK(kn_from_dlpack_legacy(NULL) == NULL, "NULL legacy");
    CHECK_ERROR("from_dlpack_legacy: an input is NULL");
    kn_error_clear();
    CHECK(kn_to_dlpack(NULL) == NULL, "NULL export");
    CHECK_ERROR("to_dlpack: an input is NULL");

    producer *p = f32_2x3();
    p->m.version = (DLPackVersion){2, 0};
    refused(p, "from_dlpack: DLPack version 2.0 is not supported (kiln reads 1.x); the tensor was not taken",
            "major version 2");
    p = f32_2x3();
    p->m.version = (DLPackVersion){0, 8};
    refused(p, "DLPack version 0.8 is not supported", "major version 0");

    p = f32_2x3();
    p->m.flags = DLPACK_FLAG_BITMASK_READ_ONLY;
    refused(p, "the tensor is read-only (DLPACK_FLAG_BITMASK_READ_ONLY) and kiln tensors are writable", "read-only");

    p = f32_2x3();
    p->m.dl_tensor.dtype.lanes = 4;
    refused(p, "vector dtypes are not supported (float32 with 4 lanes)", "lanes 4");
    p = f32_2x3();
    p->m.dl_tensor.dtype.lanes = 0;
    refused(p, "vector dtypes are not supported", "lanes 0");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLComplex, 32, 1}; /* complex32 (two float16) */
    refused(p, "dtype complex (code 5, 32 bits) is not supported", "complex32");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLComplex, 64, 2};
    refused(p, "vector dtypes are not supported (complex64 with 2 lanes)", "complex64 lanes 2");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLInt, 8, 1};
    refused(p, "dtype int (code 0, 8 bits) is not supported", "int8");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLUInt, 16, 1};
    refused(p, "dtype uint (code 1, 16 bits)", "uint16");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLFloat, 8, 1};
    refused(p, "dtype float (code 2, 8 bits)", "float8 as kDLFloat");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLFloat8_e4m3fn, 8, 1};
    refused(p, "dtype fp8/fp6/fp4 (code 10, 8 bits)", "float8_e4m3fn");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLBool, 1, 1};
    refused(p, "dtype bool (code 6, 1 bits)", "1-bit bool");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLBfloat, 32, 1};
    refused(p, "dtype bfloat (code 4, 32 bits)", "bfloat32");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){99, 32, 1};
    refused(p, "dtype unknown type code (code 99, 32 bits)", "unknown code");
    p = f32_2x3();
    p->m.dl_tensor.dtype = (DLDataType){kDLOpaqueHandle, 64, 1};
    refused(p, "dtype opaque handle (code 3, 64 bits)", "opaque handle");

    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){kDLCUDAHost, 0};
    refused(p, "device type 3 (kDLCUDAHost (pinned host memory)) is not supported (kDLCPU and kDLCUDA only)",
            "kDLCUDAHost");
    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){kDLCUDAManaged, 0};
    refused(p, "device type 13 (kDLCUDAManaged", "kDLCUDAManaged");
    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){kDLROCM, 0};
    refused(p, "device type 10 (kDLROCM)", "kDLROCM");
    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){kDLVulkan, 0};
    refused(p, "device type 7 (kDLVulkan)", "kDLVulkan");
    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){(DLDeviceType)77, 0};
    refused(p, "device type 77 (unknown)", "unknown device type");
    p = f32_2x3();
    p->m.dl_tensor.device = (DLDevice){kDLCUDA, 99};
    refused(p, kn__backend(KN_DEVICE_CUDA) ? "kDLCUDA device 99 is not available"
                                          : "a kDLCUDA tensor cannot be imported: kiln was built without CUDA",
            "kDLCUDA device 99");
    if (kn_device_count(KN_DEVICE_CUDA) == 0) {
        p = f32_2x3();
        p->m.dl_tensor.device = (DLDevice){kDLCUDA, 0};
        refused(p, kn__backend(KN_DEVICE_CUDA) ? "kDLCUDA device 0 is not available (0 CUDA devices present)"
                                              : "kiln was built without CUDA",
                "kDLCUDA without a GPU");
    }

    p = make_producer(kDLFloat, 32, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, NULL, 4);
    refused(p, "from_dlpack: 9 dimensions are not supported (kiln allows 0 to 8)", "ndim 9");
    p = f32_2x3();
    p->m.dl_tensor.ndim = -1;
    refused(p, "-1 dimensions are not supported", "ndim -1");
    p = f32_2x3();
    p->m.dl_tensor.shape = NULL;
    refused(p, "shape is NULL for a 2-dimensional tensor", "NULL shape");
    p = f32_2x3();
    p->shape[1] = -3;
    refused(p, "dimension 1 has negative size -3", "negative size");
    p = f32_2x3();
    p->shape[0] = (int64_t)1 << 40;
    p->shape[1] = (int64_t)1 << 20;
    refused(p, "the shape has more elements than kiln allows (2^56 bytes)", "too many elements");
    p = f32_2x3();
    p->strides[0] = -3;
    refused(p, "negative stride -3 in dimension 0 is not supported", "negative stride");
    p = f32_2x3();
    p->strides[0] = INT64_MAX / 2;
    refused(p, "stride 4611686018427387903 in dimension 0 reaches past 2^56 bytes", "huge stride");
    p = f32_2x3();
    p->shape[0] = 3;
    p->strides[0] = (int64_t)1 << 53; /* each term fits, their sum does not */
    p->shape[1] = 5;
    p->strides[1] = (int64_t)1 << 52;
    refused(p, "the strides reach past 2^56 bytes", "strides summing past the limit");
    p = f32_2x3();
    p->m.dl_tensor.byte_offset = UINT64_MAX - 8;
    refused(p, "data + byte_offset (18446744073709551607) + the tensor's span wraps around memory", "byte_offset wraps");
    p = f32_2x3();
    p->m.dl_tensor.byte_offset = 2;
    refused(p, "data + byte_offset is not aligned to the 4-byte element size", "misaligned");
    p = f32_2x3();
    p->m.dl_tensor.data = NULL;
    refused(p, "data is NULL for a tensor of 6 elements", "NULL data");

    /* A later minor version is accepted (new enum values only). */
    p = f32_2x3();
    p->m.version.minor = 99;
    producer_deleted = 0;
    kn_tensor *t = kn_from_dlpack(&p->m);
    CHECK(t != NULL, "minor version 99 accepted");
    kn_release(t);
    CHECK(producer_deleted == 1, "and released once");
    /* Other flags (IS_COPIED) change nothing. */
    p = f32_2x3();
    p->m.flags = DLPACK_FLAG_BITMASK_IS_COPIED;
    t = kn_from_dlpack(&p->m);
    CHECK(t != NULL, "IS_COPIED accepted");
    kn_release(t);

    /* Export from a device DLPack cannot name: refused, nothing leaked. */
    kn_device td = kt_register_test_device();
    kn_tensor *x = kn_empty(KN_SHAPE(2), KN_F32, td);
    kn_error_clear();
    CHECK(x && kn_to_dlpack(x) == NULL, "export from the test device is refused");
    CHECK_ERROR("to_dlpack: a tensor on test:0 cannot be exported (DLPack export supports cpu and cuda)");
    kn_release(x);
}

/* ---- the unversioned DLManagedTensor ------------------------------------------- */
static int legacy_deleted;
static void legacy_deleter(DLManagedTensor *m) {
    legacy_deleted++;
    free(m->dl_tensor.data);
    free(m);
}

static void test_legacy(void) {
    DLManagedTensor *m = calloc(1, sizeof *m);
    static int64_t shape[2] = {2, 2}, strides[2] = {1, 2};
    uint8_t *buf = malloc(4);
    memcpy(buf, (uint8_t[]){1, 2, 3, 4}, 4);
    m->dl_tensor = (DLTensor){.data = buf, .device = {kDLCPU, 0}, .ndim = 2, .dtype = {kDLUInt, 8, 1},
                              .shape = shape, .strides = strides};
    m->deleter = legacy_deleter;
    legacy_deleted = 0;
    kn_tensor *t = kn_from_dlpack_legacy(m);
    CHECK(t && kn__data(t) == (void *)buf && kn_dtype_of(t) == KN_U8, "legacy import without a copy");
    CHECK(t && kn_get(t, (int64_t[]){0, 1}) == 3, "legacy strides");
    kn_fill_(t, 7);
    CHECK(buf[3] == 7, "kiln writes the producer's memory");
    kn_release(t);
    CHECK(legacy_deleted == 1, "legacy deleter once");

    DLManagedTensor bad = {.dl_tensor = {.data = buf, .device = {kDLCPU, 0}, .ndim = 1, .dtype = {kDLComplex, 32, 1},
                                         .shape = shape}};
    kn_error_clear();
    CHECK(kn_from_dlpack_legacy(&bad) == NULL, "legacy refusal");
    CHECK_ERROR("from_dlpack_legacy: dtype complex (code 5, 32 bits) is not supported");
}

/* ---- CUDA (when a GPU is present) ------------------------------------------------ */
static void test_cuda(void) {
    if (kn_device_count(KN_DEVICE_CUDA) == 0) {
        printf("dlpack: no CUDA device: the CUDA round trip is skipped\n");
        return;
    }
    kn_device dev = {KN_DEVICE_CUDA, 0};
    kn_scope sc = kn_scope_begin();
    kn_tensor *t = kn_transpose(kn_reshape(kn_arange(0, 6, 1, KN_F32, dev), KN_SHAPE(2, 3)), 0, 1);
    kiln_deleted = 0;
    DLManagedTensorVersioned *m = export_counted(t);
    CHECK(m && m->dl_tensor.device.device_type == kDLCUDA && m->dl_tensor.device.device_id == 0, "cuda device");
    CHECK(m && m->dl_tensor.data == kn__data(t) && m->dl_tensor.strides[0] == 1 && m->dl_tensor.strides[1] == 3,
          "cuda: zero copy, strides");
    kn_tensor *u = kn_from_dlpack(m);
    CHECK(u && kn_device_equal(kn_device_of(u), dev) && kn__data(u) == kn__data(t), "cuda import back");
    kn_fill_(kn_select(u, 0, 2), 5);
    CHECK(kn_get(t, (int64_t[]){2, 0}) == 5 && kn_get(t, (int64_t[]){2, 1}) == 5, "cuda: write seen");
    if (!u && m) m->deleter(m);
    /* Complex on the GPU: the same pairs, exported, imported back and negated there. */
    for (int k = 0; k < 2; k++) {
        const kn_dtype dt = k ? KN_C128 : KN_C64;
        const double zv[6] = {1.5, -0.25, 3, 4, -0.0, 7};
        kn_tensor *z = kn_to(kn_cast(kn_from_data(zv, KN_C128, KN_SHAPE(3), KN_CPU), dt), dev);
        DLManagedTensorVersioned *mz = kn_to_dlpack(z);
        CHECK(mz && mz->dl_tensor.device.device_type == kDLCUDA && mz->dl_tensor.dtype.code == kDLComplex &&
                  mz->dl_tensor.dtype.bits == (k ? 128 : 64),
              "cuda %s export", kn_dtype_name(dt));
        kn_tensor *v = kn_from_dlpack(mz);
        double back[6] = {0};
        CHECK(v && kn_copy_(v, kn_neg(v)) == KN_OK && kn_to_host(z, back, KN_C128) == KN_OK && back[0] == -1.5 &&
                  back[1] == 0.25 && back[5] == -7,
              "cuda %s: kiln's write through the import is seen by the exporter", kn_dtype_name(dt));
        if (!v && mz) mz->deleter(mz);
    }
    kn_scope_end(sc);
    CHECK(kiln_deleted == 1, "cuda: deleter once");
}

int main(void) {
    test_round_trip();
    test_export_lifetimes();
    test_import_lifetimes();
    test_views();
    test_dtypes();
    test_complex();
    test_refusals();
    test_legacy();
    test_cuda();
    return kt_finish("dlpack");
}
