/* conv2d timings: forward, and forward + backward (gradients of the input,
 * weight and bias), float32, median of repeats, on the CPU or (--device) a
 * GPU. bench/conv.py runs this and the same shapes in PyTorch and prints
 * the ratios.
 * Usage: bench_conv [--reps N] [--device DEV] | --check DIR
 * Prints one line per shape: "name N C K H W k fwd_ms fwdbwd_ms". On a GPU a
 * repeat is INNER calls then a synchronize (ms per call): one call is a
 * few launches, so timing each alone would measure the host's wait. */
#include <kiln.h>

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int64_t N, C, K, H, W, k;
} shape;

#define INNER 10

static void fail(void) {
    fprintf(stderr, "bench_conv: %s\n", kn_error());
    exit(1);
}

/* Median seconds of one forward (backward too when bwd) on dev. */
static double run(const shape *s, bool bwd, int reps, kn_device dev) {
    kn_scope outer = kn_scope_begin();
    kn_generator g = kn_generator_make(1);
    kn_tensor *x = kn_randn(KN_SHAPE(s->N, s->C, s->H, s->W), KN_F32, dev, &g);
    kn_tensor *w = kn_randn(KN_SHAPE(s->K, s->C, s->k, s->k), KN_F32, dev, &g);
    kn_tensor *b = kn_randn(KN_SHAPE(s->K), KN_F32, dev, &g);
    kn_tensor *gy = kn_randn(KN_SHAPE(s->N, s->K, s->H, s->W), KN_F32, dev, &g);
    if (!x || !w || !b || !gy) fail();
    bool gpu = !kn_device_equal(dev, KN_CPU);
    int inner = gpu ? INNER : 1;
    if (bwd) {
        kn_requires_grad_(x, true), kn_requires_grad_(w, true), kn_requires_grad_(b, true);
    }
    kn_conv_opts o = kn_conv_opts_default();
    o.padding[0] = o.padding[1] = s->k / 2;
    double t[64];
    int n = 0;
    /* Two warm-ups: the allocator's cache fills (and a GPU picks its plans). */
    if (gpu && kn_device_synchronize(dev) != KN_OK) fail();
    for (int r = -2; r < reps; r++) {
        double t0 = bench_now();
        for (int i = 0; i < inner; i++) {
            kn_scope sc = kn_scope_begin();
            kn_tensor *y = kn_conv2d(x, w, b, &o);
            if (!y || (bwd && kn_backward_with(y, gy) != KN_OK)) fail();
            if (bwd) kn_zero_grad(x), kn_zero_grad(w), kn_zero_grad(b); /* each call starts from none */
            kn_scope_end(sc);
        }
        if (gpu && kn_device_synchronize(dev) != KN_OK) fail();
        double dt = (bench_now() - t0) / inner;
        if (r >= 0 && n < 64) t[n++] = dt;
    }
    kn_scope_end(outer);
    return bench_median(t, n);
}

typedef struct {
    const char *name;
    kn_tensor *y;
} named;

/* --check DIR: the semantics against PyTorch. Reads x, w, b, wt (.npy, float64)
 * from DIR and writes each op's result there as NAME.npy; conv.py --check
 * made the inputs and compares the results with torch's. */
static int check(const char *dir) {
    char p[4][1024];
    const char *in[4] = {"x", "w", "b", "wt"};
    kn_tensor *t[4];
    for (int i = 0; i < 4; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s.npy", dir, in[i]);
        if (!(t[i] = kn_npy_load(p[i], KN_CPU))) return fprintf(stderr, "bench_conv: %s\n", kn_error()), 1;
    }
    kn_tensor *x = t[0], *w = t[1], *b = t[2], *wt = t[3];
    named r[16];
    int n = 0;
    kn_conv_opts o = kn_conv_opts_default();
    o.padding_same = true, o.dilation[0] = 2, o.groups = 2;
    r[n++] = (named){"same", kn_conv2d(x, w, b, &o)};
    o = kn_conv_opts_default();
    o.stride[0] = 2, o.stride[1] = 3, o.padding[0] = 1, o.padding[1] = 2, o.dilation[1] = 2, o.groups = 2;
    r[n++] = (named){"strided", kn_conv2d(x, w, b, &o)};
    o = kn_conv_opts_default();
    o.stride[0] = 2, o.stride[1] = 3, o.padding[0] = 1, o.output_padding[0] = 1, o.output_padding[1] = 2, o.groups = 2;
    r[n++] = (named){"convt", kn_conv_transpose2d(x, wt, NULL, &o)};
    kn_pool_opts q = kn_pool_opts_default(3, 2);
    q.stride[0] = q.stride[1] = 2, q.padding[0] = q.padding[1] = 1, q.dilation[0] = 2, q.ceil_mode = true;
    r[n++] = (named){"maxceil", kn_max_pool2d(x, &q, NULL)};
    q = kn_pool_opts_default(3, 3);
    q.stride[0] = q.stride[1] = 2, q.padding[0] = q.padding[1] = 1, q.ceil_mode = true, q.count_include_pad = false;
    r[n++] = (named){"avgceil", kn_avg_pool2d(x, &q)};
    q.count_include_pad = true;
    r[n++] = (named){"avgceil_inc", kn_avg_pool2d(x, &q)};
    r[n++] = (named){"adaptive", kn_adaptive_avg_pool2d(x, 7, 5)};
    r[n++] = (named){"nearest", kn_interpolate(x, 5, 4, KN_INTERP_NEAREST, false)};
    r[n++] = (named){"nearest_up", kn_interpolate(x, 23, 17, KN_INTERP_NEAREST, false)};
    r[n++] = (named){"bilinear", kn_interpolate(x, 17, 23, KN_INTERP_BILINEAR, false)};
    r[n++] = (named){"bilinear_ac", kn_interpolate(x, 7, 19, KN_INTERP_BILINEAR, true)};
    r[n++] = (named){"nearest_s", kn_interpolate_scale(x, 1.7, 1.7, KN_INTERP_NEAREST, false)};
    r[n++] = (named){"bilinear_s", kn_interpolate_scale(x, 0.6, 1.3, KN_INTERP_BILINEAR, false)};
    for (int i = 0; i < n; i++) {
        char out[1024];
        snprintf(out, sizeof out, "%s/%s.npy", dir, r[i].name);
        if (!r[i].y || kn_npy_save(out, r[i].y) != KN_OK)
            return fprintf(stderr, "bench_conv: %s: %s\n", r[i].name, kn_error()), 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int reps = 7;
    const char *devname = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) devname = argv[++i];
        else if (!strcmp(argv[i], "--check") && i + 1 < argc) return check(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_conv [--reps N] [--device DEV] | --check DIR\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 64) reps = 7;
    kn_device dev = kn_device_get(devname);
    if (!kn_device_ok(dev)) fail();
    bool gpu = !kn_device_equal(dev, KN_CPU);
    static const shape cpu_shapes[] = {
        {"resnet-block", 8, 64, 64, 56, 56, 3},
        {"mnist-conv1", 256, 1, 32, 28, 28, 3},
        {"mnist-conv2", 256, 32, 64, 14, 14, 3},
        {"pointwise", 32, 64, 128, 28, 28, 1},
    };
    /* On a GPU: the shape of the issue that set the targets (N = 64) first. */
    static const shape gpu_shapes[] = {
        {"resnet-64", 64, 64, 64, 56, 56, 3},
        {"mnist-conv1", 256, 1, 32, 28, 28, 3},
        {"mnist-conv2", 256, 32, 64, 14, 14, 3},
        {"resnet-block", 8, 64, 64, 56, 56, 3},
        {"pointwise", 32, 64, 128, 28, 28, 1},
    };
    const shape *shapes = gpu ? gpu_shapes : cpu_shapes;
    size_t count = gpu ? sizeof gpu_shapes / sizeof *gpu_shapes : sizeof cpu_shapes / sizeof *cpu_shapes;
    const char *tf = getenv("KILN_ALLOW_TF32"), *dnn = getenv("KILN_CUDNN");
    if (gpu)
        printf("# kiln %s, %s (%s), tf32 %s, KILN_CUDNN=%s\n", KN_VERSION_STRING, kn_device_str(dev),
               kn_device_description(dev), tf && !strcmp(tf, "1") ? "on" : "off", dnn ? dnn : "(unset)");
    else
        printf("# kiln %s, %d threads, %s\n", KN_VERSION_STRING, kn_num_threads(), kn_device_description(KN_CPU));
    for (size_t i = 0; i < count; i++) {
        const shape *s = &shapes[i];
        double f = run(s, false, reps, dev), fb = run(s, true, reps, dev);
        printf("%s %lld %lld %lld %lld %lld %lld %.3f %.3f\n", s->name, (long long)s->N, (long long)s->C,
               (long long)s->K, (long long)s->H, (long long)s->W, (long long)s->k, f * 1e3, fb * 1e3);
        fflush(stdout);
    }
    return 0;
}
