/* libFuzzer harness for the .npy reader: header dict parsing, byte order,
 * Fortran order and size checks. */
#include "io/npy_internal.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_tensor *t = kn__npy_parse(data, size, "fuzz.npy", KN_CPU);
    if (t) {
        if (kn_numel(t) < 0 || kn_ndim(t) > KN_MAX_DIMS) __builtin_trap();
        kn_release(t);
    } else if (kn_error()[0] == '\0') {
        __builtin_trap(); /* a failure must say why */
    }
    kn_error_clear();
    return 0;
}
