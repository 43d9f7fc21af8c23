/* libFuzzer harness for the model reader of the command line (model_load in
 * tools/kiln/model.c): a safetensors file whose "kiln_model" metadata and
 * tensors must agree. Any input either loads into a model that runs on a
 * batch of one row, or is refused with a message; never a crash, a hang or a
 * huge allocation (the metadata is checked against the tensors first). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/kiln_fuzz_model_%d.safetensors", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = fwrite(data, 1, size, f);
    fclose(f);
    if (w != size) return 0;
    schema s = {0};
    arch a = {0};
    kn_module *m = model_load(path, KN_CPU, &s, &a);
    if (m) {
        /* One row of zeros: every embedding's row 0 and zero numeric inputs. */
        kn_scope sc = kn_scope_begin();
        kn_tensor *cat = s.n_cat ? kn_zeros(KN_SHAPE(2, s.n_cat), KN_I64, KN_CPU) : NULL;
        kn_tensor *num = s.n_num ? kn_zeros(KN_SHAPE(2, s.n_num), KN_F32, KN_CPU) : NULL;
        kn_module_train(m, false);
        kn_tensor *out = model_forward(m, cat, num);
        if (!out || kn_shape(out)[1] != s.n_classes) __builtin_trap(); /* a loaded model runs */
        kn_scope_end(sc);
        kn_module_free(m);
    }
    schema_free(&s);
    return 0;
}
