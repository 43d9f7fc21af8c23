/* Small test helpers shared by the test programs: checks that count
 * failures, and the test devices (below). */
#ifndef KN_TEST_H
#define KN_TEST_H

#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int kt_passed, kt_failed;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (cond) {                                                                     \
            kt_passed++;                                                                \
        } else {                                                                        \
            kt_failed++;                                                                \
            fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond);         \
            fprintf(stderr, __VA_ARGS__);                                               \
            fprintf(stderr, " [last error: %s]\n", kn_error());                        \
        }                                                                               \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                           \
    do {                                                                                \
        double a_ = (a), b_ = (b);                                                      \
        CHECK(fabs(a_ - b_) <= (tol) * (1 + fabs(b_)), "%s = %.9g, expected %.9g", #a, a_, b_); \
    } while (0)

/* The message of the last error contains `needle`. */
#define CHECK_ERROR(needle)                                                             \
    CHECK(strstr(kn_error(), (needle)) != NULL, "expected an error containing \"%s\"", (needle))

static inline int kt_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, kt_passed, kt_failed);
    return kt_failed ? 1 : 0;
}

/* ---- the test devices ------------------------------------------------------------
 * "test": host memory and no kernels at all, so every op goes through the
 * core's host fallback (primitives) or the composites over it (fused ops).
 * "prim" (kt_prim_backend.c): host memory and scalar kernels for the
 * primitives only, so every fused op runs as its composite on the device.
 * Both are registered at run time; the registry gives them their kinds. */
#include "kt_prim_backend.h"

static inline int kt_count(void) { return 1; }
static inline const char *kt_name(int i) {
    (void)i;
    return "host memory, no kernels (tests the CPU fallback)";
}
static inline kn_status kt_memory(int i, size_t *f, size_t *t) {
    (void)i;
    *f = *t = (size_t)1 << 30;
    return KN_OK;
}
static inline void *kt_alloc(int i, size_t n) {
    (void)i;
    return malloc(n ? n : 1);
}
static inline void kt_free(int i, void *p, size_t n) {
    (void)i;
    (void)n;
    free(p);
}
static inline kn_status kt_copy(int i, void *d, const void *s, size_t n) {
    (void)i;
    memmove(d, s, n);
    return KN_OK;
}
static inline kn_status kt_sync(int i) {
    (void)i;
    return KN_OK;
}

/* The kind of the kernel-less device (registered on first call). */
static inline int kt_test_kind(void) {
    static int kind = -1;
    if (kind < 0) {
        kn_backend b = {.name = "test", .title = "Test", .priority = 0, .device_count = kt_count,
                        .device_name = kt_name, .memory = kt_memory, .alloc = kt_alloc, .free = kt_free,
                        .copy_h2d = kt_copy, .copy_d2h = kt_copy, .copy_d2d = kt_copy, .synchronize = kt_sync};
        kind = kn__backend_register(&b);
        if (kind < 0) fprintf(stderr, "kn_test: cannot register the test device: %s\n", kn_error());
    }
    return kind;
}

static inline kn_device kt_register_test_device(void) { return (kn_device){(int16_t)kt_test_kind(), 0}; }

/* Every device present (every registered kind with devices), the two test
 * devices included (registered on first call). */
static inline int kt_devices(kn_device *out, int cap) {
    kt_test_kind();
    kt_prim_register();
    int n = 0;
    for (int k = 0; k < kn__backend_kinds(); k++)
        for (int i = 0; i < kn_device_count((kn_device_kind)k) && n < cap; i++)
            out[n++] = (kn_device){(int16_t)k, (int16_t)i};
    return n;
}

#endif
