/* kiln command line: `kiln info MODEL` of an image model (kiln train-images):
 * the input and its normalisation, the classes, the layers, the parameter
 * count and the training run the file records, as `kiln info` describes a
 * tabular model. The model is loaded in full first, so a damaged file fails
 * here as it would in predict. */
#include "images.h"

#include <math.h>
#include <string.h>

/* A number member of o, NaN when absent or not a number. */
static double num(const kn_json_doc *d, const kn_json *o, const char *key) {
    const kn_json *v = o ? kn_json_get(d, o, key) : NULL;
    return v && kn_json_type_of(v) == KN_JSON_NUMBER ? kn_json_number(v) : NAN;
}

/* The training run, from the schema's "training" object (files written
 * before it was recorded have none). */
static void print_training(const char *js) {
    kn_json_doc *d = kn_json_parse(js, strlen(js), "kiln_image_model metadata");
    const kn_json *t = d ? kn_json_get(d, kn_json_root(d), "training") : NULL;
    if (!t || kn_json_type_of(t) != KN_JSON_OBJECT) {
        printf("training: not recorded in this file\n");
        kn_json_free(d);
        kn_error_clear();
        return;
    }
    const kn_json *rows = kn_json_get(d, t, "rows"), *in = kn_json_get(d, t, "interrupted");
    double epochs = num(d, t, "epochs"), best = num(d, t, "best_epoch"), acc = num(d, t, "test_accuracy");
    printf("training: %.0f epoch%s (best %.0f kept), batches of %.0f, Adam lr %g, seed %.0f, validation split %g, "
           "patience %.0f%s\n",
           epochs, epochs == 1 ? "" : "s", best, num(d, t, "batch_size"), num(d, t, "lr"), num(d, t, "seed"),
           num(d, t, "val_split"), num(d, t, "patience"), in && kn_json_bool(in) ? "; interrupted (Ctrl-C)" : "");
    printf("images: %.0f training, %.0f validation, %.0f test; test accuracy %.4f\n", num(d, rows, "train"),
           num(d, rows, "validation"), num(d, rows, "test"), acc);
    kn_json_free(d);
}

int img_info(const char *model, bool json) {
    img_schema s = {0};
    kn_module *m = img_model_load(model, KN_CPU, &s);
    if (!m) return 1;
    kn_safetensors *f = kn_safetensors_open(model);
    const char *ver = f ? kn_safetensors_meta(f, "kiln_version") : NULL;
    const char *js = f ? kn_safetensors_meta(f, "kiln_image_model") : NULL;
    int rc = 0;
    if (!js) { /* read a moment ago: the file changed under us */
        cli_error("%s: %s", model, f ? "the image model's metadata is gone" : kn_error());
        rc = 1;
    } else if (json) { /* the members of the tabular model's --json, with the image schema */
        printf("{\"model\":");
        json_str(stdout, model);
        printf(",\"written_by\":");
        json_str(stdout, ver ? ver : "unknown");
        printf(",\"kind\":\"image_classifier\",\"parameters\":%lld,\"schema\":%s}\n",
               (long long)kn_module_num_params(m), js);
    } else {
        printf("%s: kiln image model (kiln train-images), written by kiln %s\n", model, ver ? ver : "(unknown)");
        printf("input: %d x %d x %d (channels x height x width) uint8 images, NCHW; normalised as (x / 255 - mean) / "
               "std, mean", s.c, s.h, s.w);
        for (int c = 0; c < s.c; c++) printf("%s%.4g", c ? "," : " ", s.mean[c]);
        printf(", std");
        for (int c = 0; c < s.c; c++) printf("%s%.4g", c ? "," : " ", s.std[c]);
        printf("\nclasses (%d):", s.k);
        for (int c = 0; c < s.k; c++) printf("%s%s", c ? ", " : " ", s.classes[c]);
        printf("\narchitecture: cnn2: conv %d (3x3, padding 1), ReLU, 2x2 max pool, conv %d, ReLU, 2x2 max pool, "
               "linear %d, ReLU, linear %d; %lld parameters\n",
               s.conv1, s.conv2, s.hidden, s.k, (long long)kn_module_num_params(m));
        print_training(js);
        kn_module_print(m, stdout);
    }
    kn_safetensors_close(f);
    kn_module_free(m);
    img_schema_free(&s);
    return rc;
}
