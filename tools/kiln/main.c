/* kiln command line: entry point, option helpers, `kiln devices`.
 *
 *   kiln devices [--stats]
 *   kiln train FILE.csv --target COLUMN [options]
 *   kiln eval MODEL FILE.csv
 *   kiln predict MODEL FILE.csv [--out preds.csv]   (an image model: MODEL DIR|IMAGES)
 *   kiln info MODEL
 *   kiln explain MODEL FILE.csv [--repeats N]
 *   kiln train-images DIR [options]
 *   kiln predict-images MODEL DIR|IMAGES [--out preds.csv]
 *
 * Every failure ends with one line "kiln: ..." on stderr and exit status 1
 * (2 for a usage mistake). */
#include "cli.h"
#include "images.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* "--name VALUE" or "--name=VALUE"; a missing value is an error (value NULL). */
/* The options already given: a second --target (say) is an error, not a
 * silent override of the first. One command runs per process. */
static const char *seen_opts[64];
static int n_seen_opts;

bool opt_is(const char *arg, const char *name, const char **value, int *i, int argc, char **argv) {
    size_t n = strlen(name);
    if (strncmp(arg, name, n)) return false;
    if (arg[n] && arg[n] != '=') return false;
    *value = NULL;
    for (int k = 0; k < n_seen_opts; k++)
        if (!strcmp(seen_opts[k], name)) return cli_error("%s is given twice", name), true;
    if (n_seen_opts < (int)(sizeof seen_opts / sizeof *seen_opts)) seen_opts[n_seen_opts++] = name;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return true;
    }
    if (*i + 1 >= argc) {
        cli_error("%s needs a value", name);
        return true;
    }
    *value = argv[++*i];
    return true;
}

bool parse_int_opt(const char *name, const char *v, long long lo, long long hi, long long *out) {
    if (!v) return false; /* opt_is said why */
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        cli_error("%s: '%s' is not a whole number in [%lld, %lld]", name, v ? v : "", lo, hi);
        return false;
    }
    *out = x;
    return true;
}

bool parse_double_opt(const char *name, const char *v, double lo, double hi, double *out) {
    if (!v) return false;
    double x;
    if (!v || !parse_number(v, &x) || x < lo || x > hi) {
        cli_error("%s: '%s' is not a number in [%g, %g]", name, v ? v : "", lo, hi);
        return false;
    }
    *out = x;
    return true;
}

bool parse_delimiter(const char *v, char *out) {
    if (v && (!strcmp(v, "tab") || !strcmp(v, "\\t"))) *out = '\t';
    else if (v && strlen(v) == 1 && v[0] != '"' && v[0] != '\n' && v[0] != '\r') *out = v[0];
    else {
        cli_error("--delimiter: '%s' is not one character (use 'tab' for a tab)", v ? v : "");
        return false;
    }
    return true;
}

/* Where path would be written: its real path, or for a file not there yet
 * its directory's real path and its name (malloc'ed; NULL when unknown). */
static char *resolved(const char *path) {
    char *r = realpath(path, NULL);
    if (r) return r;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
    char *rd = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    if (!rd) return NULL;
    const char *base = slash ? slash + 1 : path;
    size_t n = strlen(rd) + strlen(base) + 2;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s/%s", rd, base);
    free(rd);
    return out;
}

bool out_path_ok(const char *opt, const char *out, const char *const *inputs, int n_inputs) {
    struct stat so, si;
    bool out_exists = !stat(out, &so);
    char *ro = resolved(out);
    for (int k = 0; k < n_inputs; k++) {
        if (!inputs[k]) continue;
        /* The same file through any link, or the same name before either exists. */
        bool same = out_exists && !stat(inputs[k], &si) && so.st_dev == si.st_dev && so.st_ino == si.st_ino;
        if (!same && ro) {
            char *ri = resolved(inputs[k]);
            same = ri && !strcmp(ro, ri);
            free(ri);
        }
        if (same) {
            free(ro);
            return cli_error("%s %s: that is the input %s; choose another output file", opt, out, inputs[k]), false;
        }
    }
    free(ro);
    if (kn_file_check_writable(out) != KN_OK) return cli_error("%s: %s", opt, kn_error()), false;
    return true;
}

bool pick_device(const char *name, kn_device *dev) {
    *dev = name ? kn_device_get(name) : kn_device_default();
    if (!kn_device_ok(*dev)) {
        cli_error("%s", kn_error()[0] ? kn_error() : "no usable device");
        return false;
    }
    return true;
}

void print_fallback_stats(FILE *f) {
    kn_fallback_stat st[256];
    int n = kn_fallback_stats(st, 256);
    if (n <= 0) {
        fprintf(f, "CPU fallbacks: none\n");
        return;
    }
    fprintf(f, "CPU fallbacks (op, device kind, count):\n");
    for (int i = 0; i < n && i < 256; i++)
        fprintf(f, "  %-24s %-8s %lld\n", st[i].op, kn_device_kind_name(st[i].kind), (long long)st[i].count);
}

/* ---- kiln devices ---------------------------------------------------------------------- */
static void human_bytes(size_t b, char *buf, size_t cap) {
    if (b >= (size_t)1 << 30) snprintf(buf, cap, "%.1f GiB", (double)b / (double)(1u << 30));
    else snprintf(buf, cap, "%.1f MiB", (double)b / (double)(1u << 20));
}

/* A few training steps of a small model, so --stats shows which ops fall back. */
static void probe(kn_device dev) {
    kn_scope sc = kn_scope_begin();
    kn_module *m = kn_nn_sequential(0, NULL);
    kn_nn_sequential_append(m, kn_nn_linear(8, 16, true));
    kn_nn_sequential_append(m, kn_nn_relu());
    kn_nn_sequential_append(m, kn_nn_batch_norm1d(16));
    kn_nn_sequential_append(m, kn_nn_dropout(0.1));
    kn_nn_sequential_append(m, kn_nn_linear(16, 3, true));
    kn_module *emb = kn_nn_embedding(5, 8);
    kn_optim *o = NULL;
    if (m && emb && kn_module_to(m, dev) == KN_OK && kn_module_to(emb, dev) == KN_OK &&
        (o = kn_adam(m, kn_adam_defaults(1e-3)))) {
        kn_tensor *idx = kn_to(kn_arange(0, 4, 1, KN_I64, KN_CPU), dev);
        kn_tensor *y = kn_to(kn_from_data((int64_t[]){0, 1, 2, 1}, KN_I64, KN_SHAPE(4), KN_CPU), dev);
        for (int i = 0; i < 2; i++) {
            kn_optim_zero_grad(o);
            kn_tensor *x = kn_concat(1, (kn_tensor *[]){kn_embedding(kn_module_get(emb, "weight"), idx)}, 1);
            kn_tensor *loss = kn_cross_entropy(kn_module_forward(m, x), y);
            if (loss && kn_backward(loss) == KN_OK) kn_optim_step(o);
        }
        kn_module_train(m, false);
        kn_no_grad_begin();
        kn_softmax(kn_module_forward(m, kn_embedding(kn_module_get(emb, "weight"), idx)), 1);
        kn_no_grad_end();
        kn_device_synchronize(dev);
    }
    kn_optim_free(o);
    kn_module_free(m);
    kn_module_free(emb);
    kn_scope_end(sc);
    kn_error_clear();
}

int cmd_devices(int argc, char **argv) {
    bool stats = false;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--stats")) stats = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: kiln devices [--stats]\n\n"
                   "Lists every device the backends found: name, kind, memory, and which one is the\n"
                   "default and why (KILN_DEVICE=cpu|cuda|cuda:1|vulkan overrides the choice).\n"
                   "  --stats   also run a few training steps on each device and show which ops\n"
                   "            fell back to the CPU (per op and device kind)\n");
            return 0;
        } else {
            cli_error("devices: unknown option '%s' (see kiln devices --help)", argv[i]);
            return 2;
        }
    }
    kn_device def = kn_device_default();
    const char *reason = kn_device_ok(def) ? kn_device_default_reason() : kn_error();
    printf("%-10s %-8s %-12s %s\n", "device", "kind", "memory", "name");
    int total = 0;
    for (int k = 0; k < KN_DEVICE_KIND_COUNT; k++) { /* the well-known kinds */
        for (int i = 0; i < kn_device_count((kn_device_kind)k); i++) {
            kn_device d = {(int16_t)k, (int16_t)i};
            size_t fb = 0, tb = 0;
            char mem[32] = "?";
            if (kn_device_memory(d, &fb, &tb) == KN_OK) human_bytes(tb, mem, sizeof mem);
            printf("%-10s %-8s %-12s %s%s\n", kn_device_str(d), kn_device_kind_name((kn_device_kind)k), mem,
                   kn_device_description(d), kn_device_equal(d, def) ? "  [default]" : "");
            total++;
            if (stats) probe(d);
        }
    }
    kn_error_clear();
    if (kn_device_ok(def)) printf("default: %s (%s)\n", kn_device_str(def), reason);
    else printf("default: none (%s)\n", reason);
    if (stats) print_fallback_stats(stdout);
    return total > 0 ? 0 : 1;
}

/* ---- dispatch ---------------------------------------------------------------------------- */
/* A report that did not reach stdout (a full disk, a closed pipe) is a
 * failure: flush now and say so, rather than exit 0 after losing it. */
static bool stdout_ok(void) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return true;
    cli_error("writing to stdout failed%s%s", errno ? ": " : "", errno ? strerror(errno) : "");
    return false;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: kiln COMMAND [options]\n\n"
            "Train, evaluate and use neural networks on tabular data from a CSV file.\n\n"
            "commands:\n"
            "  devices                      list devices (--stats: per-op CPU-fallback counters)\n"
            "  train FILE.csv --target COL  train a classifier or a regression, report test metrics, save it\n"
            "                               (--out); --cv K: K-fold cross-validation; --target A,B,C:\n"
            "                               one multi-label model for several two-valued columns\n"
            "  eval MODEL FILE.csv          the model's metrics on labelled rows\n"
            "  predict MODEL FILE.csv       predicted class and probabilities (or value) per row (an image\n"
            "                               model: per image of a DIR or IDX file)\n"
            "  info MODEL                   what a saved model is: task, columns (or input), architecture\n"
            "  explain MODEL FILE.csv       which columns matter: permutation feature importance\n"
            "  train-images DIR             train a CNN on an IDX image set (MNIST layout), report, save it\n"
            "  predict-images MODEL SRC     predicted class per image of an IDX file (or DIR's t10k images)\n\n"
            "  kiln COMMAND --help          the options of a command\n"
            "  kiln --version               the version\n\n"
            "Example:\n"
            "  kiln train data/car/car.csv --target class --out car.safetensors\n"
            "  kiln predict car.safetensors new_cars.csv --out predictions.csv\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
        printf("kiln %s\n", KN_VERSION_STRING);
        return 0;
    }
    int rc;
    if (!strcmp(cmd, "devices")) rc = cmd_devices(argc, argv);
    else if (!strcmp(cmd, "train")) rc = cmd_train(argc, argv);
    else if (!strcmp(cmd, "eval")) rc = cmd_eval(argc, argv);
    else if (!strcmp(cmd, "predict")) rc = cmd_predict(argc, argv);
    else if (!strcmp(cmd, "info")) rc = cmd_info(argc, argv);
    else if (!strcmp(cmd, "explain")) rc = cmd_explain(argc, argv);
    else if (!strcmp(cmd, "train-images")) rc = cmd_train_images(argc, argv);
    else if (!strcmp(cmd, "predict-images")) rc = cmd_predict_images(argc, argv);
    else {
        cli_error("unknown command '%s' (commands: devices, train, eval, predict, info, explain, train-images, predict-images; see kiln --help)", cmd);
        return 2;
    }
    return stdout_ok() ? rc : (rc ? rc : 1);
}
