/* What the file-format tests share (tests/test_formats_*.c): counting checks
 * that assert error texts, a temporary directory, and the values every dtype
 * is tested with. Each test program includes this once. */
#ifndef KT_FORMATS_H
#define KT_FORMATS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "io/json.h"
#include "io/npz_internal.h"
#include "io/safetensors_internal.h"
#include "kn_test.h" /* for its kernel-less "test" device; its CHECK is replaced below */

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int passed, failed;

#undef CHECK
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) passed++;                                                            \
        else {                                                                         \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

static inline void check_error(int line, const char *a, const char *b) {
    const char *e = kn_error();
    if (strstr(e, a) && (!b || strstr(e, b))) {
        passed++;
        return;
    }
    failed++;
    fprintf(stderr, "%s:%d: error \"%s\" lacks \"%s\"%s%s\n", __FILE__, line, e, a,
            b ? "\" or \"" : "", b ? b : "");
}
#define CHECK_ERR(a, b) check_error(__LINE__, a, b)

/* np.save(arange(6, f4).reshape(2, 3) / 4), by numpy 1.24. */
static const char py_npy_f4[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   "
    "                                                       \012\000\000\000\000\000\000"
    "\200>\000\000\000\?\000\000@\?\000\000\200\?\000\000\240\?";

static char dir[64];

static inline const char *in_dir(const char *name) {
    static char buf[4][sizeof dir + 256 + 2]; /* dir, "/", a d_name (remove_dir) */
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static inline void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static inline unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Files in dir whose name contains ".tmp." (leftovers of a failed save). */
static inline int temp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* The tensor's elements as bytes of its own dtype equal want. */
static inline bool same_bytes(const kn_tensor *t, const void *want, size_t n) {
    unsigned char buf[256];
    if (!t || n > sizeof buf || kn_to_host(t, buf, kn_dtype_of(t)) != KN_OK) return false;
    return memcmp(buf, want, n) == 0;
}

static inline bool same_shape(const kn_tensor *t, int ndim, const int64_t *shape) {
    return t && kn_ndim(t) == ndim &&
           (ndim == 0 || !memcmp(kn_shape(t), shape, (size_t)ndim * sizeof *shape));
}

static inline bool file_is(const char *path, const unsigned char *want, size_t want_len) {
    size_t len;
    unsigned char *b = read_all(path, &len);
    bool ok = b && len == want_len && memcmp(b, want, len) == 0;
    free(b);
    return ok;
}

/* Values of every real dtype (index: kn_dtype), specials included. */
static const float f32v[6] = {1.5f, -2, 3.25f, 0, 1e-3f, 100};
static const uint16_t f16v[6] = {0x3c00, 0xc000, 0x3555, 0, 0x7bff, 0x0001};
static const uint16_t bf16v[6] = {0x3f80, 0xc000, 0x4049, 0x8000, 0x7f7f, 0x0001};
static const double f64v[6] = {1.0 / 3, -2e300, 0, 5e-324, 7, -0.5};
static const int32_t i32v[6] = {1, -2, INT32_MAX, INT32_MIN, 0, 42};
static const int64_t i64v[6] = {1, -2, INT64_MAX, INT64_MIN, 1LL << 40, 42};
static const uint8_t u8v[6] = {0, 1, 255, 128, 7, 9};
static const uint8_t boolv[6] = {1, 0, 1, 1, 0, 0};
static const void *const values[KN_DTYPE_REAL_COUNT] = {f32v, f16v, bf16v, f64v, i32v, i64v, u8v, boolv};

static inline kn_module *mlp(int64_t in, int64_t hidden, int64_t out) {
    kn_module *layers[2] = {kn_nn_linear(in, hidden, true), kn_nn_linear(hidden, out, true)};
    return kn_nn_sequential(2, layers);
}

/* Every state-dict tensor of a and b holds the same values (as float64). */
static inline bool same_state(kn_module *a, kn_module *b) {
    int na = 0, nb = 0;
    const kn_named_tensor *sa = kn_module_state_dict(a, &na), *sb = kn_module_state_dict(b, &nb);
    if (!sa || !sb || na != nb) return false;
    for (int k = 0; k < na; k++) {
        int64_t n = kn_numel(sa[k].tensor);
        double *x = calloc((size_t)n + 1, 8), *y = calloc((size_t)n + 1, 8);
        bool ok = n == kn_numel(sb[k].tensor) && kn_to_host(sa[k].tensor, x, KN_F64) == KN_OK &&
                  kn_to_host(sb[k].tensor, y, KN_F64) == KN_OK;
        for (int64_t i = 0; ok && i < n; i++) ok = (float)x[i] == (float)y[i];
        free(x);
        free(y);
        if (!ok) return false;
    }
    return true;
}

static inline void remove_dir(void) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(in_dir(e->d_name));
    if (d) closedir(d);
    rmdir(dir);
}

/* Runs the tests in a fresh temporary directory, checks that they left no
 * tensor alive, and prints "name: N passed, M failed". */
static inline int kt_formats_run(const char *name, int n, void (*const *tests)(void)) {
    snprintf(dir, sizeof dir, "/tmp/kiln_%s_XXXXXX", name);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int64_t live = kn_live_tensors();
    for (int i = 0; i < n; i++) tests[i]();
    CHECK(kn_live_tensors() == live);
    remove_dir();
    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed ? 1 : 0;
}

#endif
