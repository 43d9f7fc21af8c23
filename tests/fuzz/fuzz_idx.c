/* libFuzzer harness for the IDX reader: header checks, sizes against the
 * file, gzip inflation with its bounds. */
#include "io/idx_internal.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn__idx_limit = (uint64_t)64 << 20; /* the fuzzer's memory limit, not the library's */
    kn_tensor *t = kn__idx_parse(data, size, "fuzz.idx", KN_CPU);
    if (t) {
        if (kn_numel(t) < 0 || kn_ndim(t) < 1 || kn_ndim(t) > KN_MAX_DIMS) __builtin_trap();
        kn_release(t);
    } else if (kn_error()[0] == '\0') {
        __builtin_trap(); /* a failure must say why */
    }
    kn_error_clear();
    return 0;
}
