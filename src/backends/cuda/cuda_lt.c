/* cuBLASLt opened with dlopen on the first GEMM of a CUDA device (see
 * cuda_lt.h for why). Nothing here runs on a machine without a device: the
 * probe never gets this far, so it stays cheap and silent. */
#include "cuda_lt.h"

#include "cuda_dl.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* The soname of the cuBLASLt the headers belong to: its ABI is kept within
 * a major version, so a newer minor release works too. */
#define KC_LT_SONAME "libcublasLt.so." KC_STR(CUBLAS_VER_MAJOR)

kc_lt_fns kc_lt;

static once_flag load_once = ONCE_FLAG_INIT;
static char *failure; /* why loading failed (malloc'd); NULL when it worked */
static bool failed;

static void fail(const char *fmt, ...) KN_PRINTF(1, 2);
static void fail(const char *fmt, ...) {
    failed = true;
    va_list ap;
    va_start(ap, fmt);
    failure = kc_vformat(fmt, ap); /* kc_lt_load says so without details when NULL */
    va_end(ap);
}

static void load(void) {
#ifdef KC_CUBLASLT_DIR
    const char *built = KC_CUBLASLT_DIR "/" KC_LT_SONAME; /* where it was at build time */
#else
    const char *built = NULL;
#endif
    /* KILN_CUBLASLT names another file, for tests and odd installs. */
    kc_dl l = kc_dl_open("KILN_CUBLASLT", KC_LT_SONAME, built);
    if (!l.handle) {
        const char *why = l.error ? l.error : "dlopen failed";
        if (l.named)
            fail("cannot load cuBLASLt from KILN_CUBLASLT=%s: %s", l.path, why);
        else
            fail("cannot load cuBLASLt, which the CUDA backend needs for matrix products: %s; install "
                 "cuBLAS of CUDA " KC_STR(CUBLAS_VER_MAJOR) " and put the directory of " KC_LT_SONAME
                 " on LD_LIBRARY_PATH or in the ldconfig cache", why);
        free(l.error);
        return;
    }
    void *h = l.handle;
    char *shown = kc_dl_shown(&l, "KILN_CUBLASLT"); /* the file named in messages */
    const char *what = shown ? shown : l.path;
    const char *missing = NULL;
    /* POSIX guarantees that dlsym's object pointer converts to a function pointer. */
#define KC_LT_RESOLVE(f)                                                                                     \
    if (!missing) {                                                                                          \
        void *p = dlsym(h, #f);                                                                              \
        if (p) *(void **)&kc_lt.f = p;                                                                       \
        else missing = #f;                                                                                   \
    }
    KC_LT_FUNCS(KC_LT_RESOLVE)
#undef KC_LT_RESOLVE
    size_t version = missing ? 0 : kc_lt.cublasLtGetVersion();
    if (missing)
        fail("%s has no %s: not a cuBLASLt %d.%d or later", what, missing, CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR);
    else if (version / 10000 != CUBLAS_VER_MAJOR)
        fail("%s is cuBLASLt %zu.%zu, but kiln was built with cuBLASLt %d.%d (a different major version)", what,
             version / 10000, version / 100 % 100, CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR);
    free(shown);
    if (failed) {
        memset(&kc_lt, 0, sizeof kc_lt);
        dlclose(h);
    }
}

kn_status kc_lt_load(const char *op) {
    call_once(&load_once, load);
    if (!failed) return KN_OK;
    return kn__err(KN_ERR_DEVICE, "%s: %s", op, failure ? failure : "cannot load cuBLASLt (out of memory)");
}
