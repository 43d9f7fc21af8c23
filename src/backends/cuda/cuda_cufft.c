/* cuFFT opened with dlopen at the first FFT on a CUDA device (see
 * cuda_cufft.h for why). Nothing here runs at start or on a machine without
 * a device: the probe never gets this far. */
#include "cuda_cufft.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#define KC_STR_(x) #x
#define KC_STR(x) KC_STR_(x)
/* The soname of the cuFFT the headers belong to: its ABI is kept within a
 * major version, so a newer minor release works too. */
#define KC_FFT_SONAME "libcufft.so." KC_STR(CUFFT_VER_MAJOR)

kc_fft_fns kc_fft;

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
    if (n < 0 || !(failure = malloc((size_t)n + 1))) return; /* kc_fft_load says so without details */
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
    const char *env = getenv("KILN_CUFFT"); /* another file, for tests and odd installs */
    bool by_name = !(env && *env);
    const char *path = by_name ? KC_FFT_SONAME : env;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        char *why = dup_dlerror();
        const char *also = "";
#ifdef KC_CUFFT_DIR
        /* Where the toolkit was at build time: found without any setup on
         * the machine that built kiln. */
        if (by_name) {
            h = dlopen(KC_CUFFT_DIR "/" KC_FFT_SONAME, RTLD_NOW | RTLD_LOCAL);
            also = " (also looked in " KC_CUFFT_DIR ")";
            if (h) path = KC_CUFFT_DIR "/" KC_FFT_SONAME;
        }
#endif
        if (!h) {
            if (!by_name)
                fail("cannot load cuFFT from KILN_CUFFT=%s: %s", env, why ? why : "dlopen failed");
            else
                fail("cannot load cuFFT, which the CUDA backend needs for FFTs: %s%s; install cuFFT %d (part of "
                     "the CUDA toolkit) and put the directory of " KC_FFT_SONAME
                     " on LD_LIBRARY_PATH or in the ldconfig cache, or name the file with KILN_CUFFT=/path/to/"
                     KC_FFT_SONAME,
                     why ? why : "dlopen failed", also, CUFFT_VER_MAJOR);
            free(why);
            return;
        }
        free(why);
    }
    char *shown = NULL; /* the file named in messages: where it came from, if the user named it */
    if (!by_name && (shown = malloc(strlen(env) + sizeof "KILN_CUFFT="))) {
        strcpy(shown, "KILN_CUFFT=");
        strcat(shown, env);
    }
    const char *what = shown ? shown : path;
    const char *missing = NULL;
    /* POSIX guarantees that dlsym's object pointer converts to a function pointer. */
#define KC_FFT_RESOLVE(f)                                                                                    \
    if (!missing) {                                                                                          \
        void *p = dlsym(h, #f);                                                                              \
        if (p) *(void **)&kc_fft.f = p;                                                                      \
        else missing = #f;                                                                                   \
    }
    KC_FFT_FUNCS(KC_FFT_RESOLVE)
#undef KC_FFT_RESOLVE
    int version = 0;
    cufftResult r = missing ? CUFFT_SUCCESS : kc_fft.cufftGetVersion(&version);
    if (missing)
        fail("%s has no %s: not a cuFFT %d.%d or later", what, missing, CUFFT_VER_MAJOR, CUFFT_VER_MINOR);
    else if (r != CUFFT_SUCCESS)
        fail("%s: cufftGetVersion failed (%s, code %d)", what, kc_fft_result_name(r), (int)r);
    else if (version / 1000 != CUFFT_VER_MAJOR) /* major * 1000 + minor * 100 + patch */
        fail("%s is cuFFT %d.%d, but kiln was built with cuFFT %d.%d (a different major version)", what,
             version / 1000, version / 100 % 10, CUFFT_VER_MAJOR, CUFFT_VER_MINOR);
    free(shown);
    if (failed) {
        memset(&kc_fft, 0, sizeof kc_fft);
        dlclose(h);
    }
}

kn_status kc_fft_load(const char *op) {
    call_once(&load_once, load);
    if (!failed) return KN_OK;
    return kn__err(KN_ERR_DEVICE, "%s: %s", op, failure ? failure : "cannot load cuFFT (out of memory)");
}

/* By number: the list differs between cuFFT versions (codes 0xA, 0xC and
 * 0xF went away in cuFFT 12, 0x11-0x14 came in 11), and a header of either
 * must build this. */
const char *kc_fft_result_name(cufftResult r) {
    switch ((int)r) {
    case 0x0: return "CUFFT_SUCCESS";
    case 0x1: return "CUFFT_INVALID_PLAN";
    case 0x2: return "CUFFT_ALLOC_FAILED";
    case 0x3: return "CUFFT_INVALID_TYPE";
    case 0x4: return "CUFFT_INVALID_VALUE";
    case 0x5: return "CUFFT_INTERNAL_ERROR";
    case 0x6: return "CUFFT_EXEC_FAILED";
    case 0x7: return "CUFFT_SETUP_FAILED";
    case 0x8: return "CUFFT_INVALID_SIZE";
    case 0x9: return "CUFFT_UNALIGNED_DATA";
    case 0xA: return "CUFFT_INCOMPLETE_PARAMETER_LIST";
    case 0xB: return "CUFFT_INVALID_DEVICE";
    case 0xC: return "CUFFT_PARSE_ERROR";
    case 0xD: return "CUFFT_NO_WORKSPACE";
    case 0xE: return "CUFFT_NOT_IMPLEMENTED";
    case 0xF: return "CUFFT_LICENSE_ERROR";
    case 0x10: return "CUFFT_NOT_SUPPORTED";
    case 0x11: return "CUFFT_MISSING_DEPENDENCY";
    case 0x12: return "CUFFT_NVRTC_FAILURE";
    case 0x13: return "CUFFT_NVJITLINK_FAILURE";
    case 0x14: return "CUFFT_NVSHMEM_FAILURE";
    default: return "an unknown cuFFT status";
    }
}
