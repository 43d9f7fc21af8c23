/* Small test helpers shared by the test programs: checks that count
 * failures, and a kernel-less "test" device whose memory is host memory, so
 * the core's CPU fallback runs for every op. */
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

/* ---- the test device ---------------------------------------------------------- */
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
    return malloc(n);
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

static inline kn_device kt_register_test_device(void) {
    kn_backend b = {.name = "test", .kind = KN_DEVICE_TEST, .device_count = kt_count,
                    .device_name = kt_name, .memory = kt_memory, .alloc = kt_alloc,
                    .free = kt_free, .copy_h2d = kt_copy, .copy_d2h = kt_copy,
                    .copy_d2d = kt_copy, .synchronize = kt_sync};
    kn__backend_register(&b);
    return (kn_device){KN_DEVICE_TEST, 0};
}

/* Every device present, the test device included (registered on first call). */
static inline int kt_devices(kn_device *out, int cap) {
    kt_register_test_device();
    int n = 0;
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++)
        for (int i = 0; i < kn_device_count((kn_device_kind)k) && n < cap; i++)
            out[n++] = (kn_device){(int16_t)k, (int16_t)i};
    return n;
}

#endif
