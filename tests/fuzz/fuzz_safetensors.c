/* libFuzzer harness for the safetensors reader (and, on the same input, the
 * JSON parser under it, which the length prefix would otherwise hide): every
 * tensor of a file that parses is materialised, so any byte range the
 * validation let through is read. */
#include "io/json.h"
#include "io/safetensors_internal.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kn__json_limits lim = {16, 1 << 20};
    kn__json_doc *d = kn__json_parse((const char *)data, size, &lim, "fuzz.json");
    if (d && !kn__json_root(d)) __builtin_trap();
    kn__json_free(d);

    kn_safetensors *f = kn__safetensors_parse(data, size, "fuzz.safetensors");
    if (f) {
        int n = kn_safetensors_count(f);
        for (int i = 0; i < n; i++) {
            const char *name = kn_safetensors_name(f, i);
            if (!name) __builtin_trap();
            kn_tensor *t = kn_safetensors_get(f, name, KN_CPU);
            if (!t) __builtin_trap(); /* a validated entry must load */
            kn_release(t);
        }
        (void)kn_safetensors_meta(f, "format");
        kn_safetensors_close(f);
    } else if (kn_error()[0] == '\0') {
        __builtin_trap();
    }
    kn_error_clear();
    return 0;
}
