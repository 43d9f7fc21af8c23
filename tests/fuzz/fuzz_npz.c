/* libFuzzer harness for the .npz reader: ZIP end records (ZIP64 too), the
 * central directory and local headers, name, size and overlap checks, then
 * every member's inflate, CRC-32 and .npy parse. */
#include "io/npz_internal.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn_npz *f = kn__npz_parse(data, size, "fuzz.npz");
    if (!f) {
        if (kn_error()[0] == '\0') __builtin_trap(); /* a failure must say why */
        kn_error_clear();
        return 0;
    }
    for (int i = 0; i < kn_npz_count(f); i++) {
        const char *name = kn_npz_name(f, i);
        if (!name) __builtin_trap();
        kn_tensor *t = kn_npz_get(f, name, KN_CPU);
        if (t) {
            if (kn_numel(t) < 0 || kn_ndim(t) > KN_MAX_DIMS) __builtin_trap();
            kn_release(t);
        } else if (kn_error()[0] == '\0') {
            __builtin_trap();
        }
        kn_error_clear();
    }
    kn_npz_close(f);
    return 0;
}
