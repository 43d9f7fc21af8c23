/* cuFFT opened with dlopen at the first FFT on a CUDA device (see
 * cuda_cufft.h for why). Nothing here runs at start or on a machine without
 * a device: the probe never gets this far. */
#include "cuda_cufft.h"

#include "cuda_dl.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

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
    failure = kc_vformat(fmt, ap); /* kc_fft_load says so without details when NULL */
    va_end(ap);
}

static void load(void) {
#ifdef KC_CUFFT_DIR
    const char *built = KC_CUFFT_DIR "/" KC_FFT_SONAME; /* where it was at build time */
#else
    const char *built = NULL;
#endif
    /* KILN_CUFFT names another file, for tests and odd installs. */
    kc_dl l = kc_dl_open("KILN_CUFFT", KC_FFT_SONAME, built);
    if (!l.handle) {
        const char *why = l.error ? l.error : "dlopen failed";
        if (l.named)
            fail("cannot load cuFFT from KILN_CUFFT=%s: %s", l.path, why);
        else
            fail("cannot load cuFFT, which the CUDA backend needs for FFTs: %s; install cuFFT "
                 KC_STR(CUFFT_VER_MAJOR) " (part of the CUDA toolkit) and put the directory of " KC_FFT_SONAME
                 " on LD_LIBRARY_PATH or in the ldconfig cache, or name the file with KILN_CUFFT=/path/to/" KC_FFT_SONAME,
                 why);
        free(l.error);
        return;
    }
    void *h = l.handle;
    char *shown = kc_dl_shown(&l, "KILN_CUFFT"); /* the file named in messages */
    const char *what = shown ? shown : l.path;
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
