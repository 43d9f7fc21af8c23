/* cuBLASLt is opened at run time (src/backends/cuda/cuda_lt.c), never at
 * start. One mode per process (the library is opened once):
 *   lazy     probing devices leaves it unmapped; the first GEMM on a CUDA
 *            device (or, without one, kc_lt_load) opens it, and it works
 *   missing  KILN_CUBLASLT names no file: a clear error every time, no crash,
 *            and (on a GPU) the device still runs other ops
 *   wrong    KILN_CUBLASLT names a library that is not cuBLASLt: refused
 * Skipped (77) without the CUDA backend or without /proc/self/maps. */
#include "kn_test.h"

#ifndef KILN_TEST_HAVE_CUDA
int main(void) {
    printf("cuda_lt: SKIPPED: built without the CUDA backend\n");
    return 77;
}
#else

/* From src/backends/cuda/cuda_lt.h, which needs the toolkit's headers. */
kn_status kc_lt_load(const char *op);

/* 1 when a file whose name contains "libcublasLt" is mapped, 0 when not, -1 unknown. */
static int lt_mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, "libcublasLt") != NULL;
    fclose(f);
    return found;
}

/* A 2x3 @ 3x2 product on dev, checked against the values worked out by hand;
 * returns the status (the error is left for the caller). */
static kn_status small_gemm(kn_device dev) {
    static const float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
    static const float want[4] = {58, 64, 139, 154};
    kn_scope s = kn_scope_begin();
    kn_tensor *c = kn_matmul(kn_from_data(a, KN_F32, KN_SHAPE(2, 3), dev), kn_from_data(b, KN_F32, KN_SHAPE(3, 2), dev));
    float got[4] = {0};
    kn_status st = c ? kn_to_host(c, got, KN_F32) : kn_error_code();
    if (st == KN_OK)
        for (int i = 0; i < 4; i++) CHECK(got[i] == want[i], "c[%d] = %g, expected %g", i, got[i], want[i]);
    kn_scope_end(s);
    return st;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "lazy";
    if (lt_mapped() < 0) {
        printf("cuda_lt %s: SKIPPED: no /proc/self/maps to look at\n", mode);
        return 77;
    }
    if (!strcmp(mode, "missing")) setenv("KILN_CUBLASLT", "/nonexistent/kiln-test/libcublasLt.so.1", 1);
    else if (!strcmp(mode, "wrong")) setenv("KILN_CUBLASLT", "libm.so.6", 1);
    else if (strcmp(mode, "lazy")) {
        fprintf(stderr, "usage: test_cuda_lt [lazy|missing|wrong]\n");
        return 2;
    }

    /* Start-up and probing: what `kiln devices` does. */
    int n = kn_device_count(KN_DEVICE_CUDA);
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++) (void)kn_device_count((kn_device_kind)k);
    (void)kn_device_default();
    kn_error_clear();
    printf("CUDA devices: %d\n", n);
    CHECK(lt_mapped() == 0, "libcublasLt is mapped after probing, before any GEMM");

    kn_device cuda0 = {KN_DEVICE_CUDA, 0};
    kn_status s = n > 0 ? small_gemm(cuda0) : kc_lt_load("test");
    const char *where = n > 0 ? "matmul" : "test";
    if (!strcmp(mode, "lazy")) {
        CHECK(s == KN_OK, "opening cuBLASLt failed (the machine that built kiln has it)");
        CHECK(lt_mapped() == 1, "libcublasLt is not mapped after it was opened");
        CHECK(kc_lt_load("again") == KN_OK, "a second kc_lt_load failed");
    } else {
        CHECK(s == KN_ERR_DEVICE, "expected KN_ERR_DEVICE, got %d", (int)s);
        char prefix[32];
        snprintf(prefix, sizeof prefix, "%s: ", where);
        CHECK(strncmp(kn_error(), prefix, strlen(prefix)) == 0, "the error does not start with \"%s\"", prefix);
        CHECK_ERROR("KILN_CUBLASLT=");
        if (!strcmp(mode, "wrong")) CHECK_ERROR("has no cublasLt");
        CHECK(lt_mapped() == 0, "libcublasLt is mapped although it could not be opened");
        char first[1024];
        snprintf(first, sizeof first, "%s", kn_error());
        kn_error_clear();
        /* The same error again, not a crash through a NULL pointer. */
        CHECK((n > 0 ? small_gemm(cuda0) : kc_lt_load(where)) == KN_ERR_DEVICE, "a second try did not fail");
        CHECK(!strcmp(first, kn_error()), "the second error differs: \"%s\" then \"%s\"", first, kn_error());
        if (n > 0) { /* everything but GEMM still runs on the device */
            kn_error_clear();
            kn_scope sc = kn_scope_begin();
            double v = kn_item(kn_sum_all(kn_mul_scalar(kn_ones(KN_SHAPE(4), KN_F32, cuda0), 3)));
            CHECK(v == 12, "sum on cuda:0 without cuBLASLt: %g", v);
            kn_scope_end(sc);
        }
    }
    if (n == 0) printf("cuda_lt %s: no CUDA device: the GEMM path was not run (loader only)\n", mode);
    return kt_finish(n > 0 ? "cuda_lt (GEMM on cuda:0)" : "cuda_lt (loader only)");
}
#endif
