/* cuBLASLt opened with dlopen on the first GEMM of a CUDA device (see
 * cuda_lt.h for why). Nothing here runs on a machine without a device: the
 * probe never gets this far, so it stays cheap and silent. */
#include "cuda_lt.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define KC_STR_(x) #x
#define KC_STR(x) KC_STR_(x)
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
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !(failure = malloc((size_t)n + 1))) return; /* kc_lt_load says so without details */
    va_start(ap, fmt);
    vsnprintf(failure, (size_t)n + 1, fmt, ap);
    va_end(ap);
}

static char *dup_dlerror(void) {
    const char *e = dlerror();
    if (!e) e = "unknown dlopen error";
    char *s = malloc(strlen(e) + 1);
    if (s) strcpy(s, e);
    return s;
}

static void load(void) {
    const char *env = getenv("KILN_CUBLASLT"); /* another file, for tests and odd installs */
    bool by_name = !(env && *env);
    const char *path = by_name ? KC_LT_SONAME : env;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char *why = dup_dlerror();
        const char *also = "";
#ifdef KC_CUBLASLT_DIR
        /* Where the toolkit was at build time: found without any setup on
         * the machine that built kiln. */
        if (by_name) {
            h = dlopen(KC_CUBLASLT_DIR "/" KC_LT_SONAME, RTLD_NOW | RTLD_LOCAL);
            also = " (also looked in " KC_CUBLASLT_DIR ")";
            if (h) path = KC_CUBLASLT_DIR "/" KC_LT_SONAME;
        }
#endif
        if (!h) {
            if (!by_name)
                fail("cannot load cuBLASLt from KILN_CUBLASLT=%s: %s", env, why ? why : "dlopen failed");
            else
                fail("cannot load cuBLASLt, which the CUDA backend needs for matrix products: %s%s; install "
                     "cuBLAS of CUDA %d and put the directory of " KC_LT_SONAME
                     " on LD_LIBRARY_PATH or in the ldconfig cache",
                     why ? why : "dlopen failed", also, CUBLAS_VER_MAJOR);
            free(why);
            return;
        }
        free(why);
    }
    char *shown = NULL; /* the file named in messages: where it came from, if the user named it */
    if (!by_name && (shown = malloc(strlen(env) + sizeof "KILN_CUBLASLT="))) {
        strcpy(shown, "KILN_CUBLASLT=");
        strcat(shown, env);
    }
    const char *what = shown ? shown : path;
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
