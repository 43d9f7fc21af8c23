/* FFT timings: complex-to-complex (complex64 and complex128), real
 * (float32) and 2-D transforms of a batch of lines, median of repeats.
 * bench/fft.py runs this and the same transforms in numpy and PyTorch
 * (on the CPU) or torch.fft (on CUDA) and prints ratios.
 * Usage: bench_fft [--reps N] [--device cpu|cuda:0|...]
 * Prints one line per case: "kind dtype rows cols ms", where kind is fft
 * (along the last dim), fft0 (along dim 0), ifft, rfft, irfft or fft2, on a
 * [rows, cols] input; for irfft, cols is the output length (the input is
 * [rows, cols/2 + 1] complex bins).
 * On the CPU a repeat is one call. On a GPU, where calls only enqueue work,
 * a repeat is a burst of calls ended by kn_device_synchronize, divided by
 * their number: the device's throughput, as torch.cuda.synchronize after a
 * loop measures it. */
#include <kiln.h>

#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPS 64

typedef struct {
    const char *kind; /* fft, fft0, ifft, rfft, irfft, fft2 */
    kn_dtype dt;      /* of the input */
    int64_t rows, cols;
} bcase;

static void die(const char *what) {
    fprintf(stderr, "bench_fft: %s: %s\n", what, kn_error());
    exit(1);
}

static kn_tensor *transform(const bcase *c, kn_tensor *x) {
    if (!strcmp(c->kind, "rfft")) return kn_rfft(x, -1, -1, KN_FFT_NORM_BACKWARD);
    if (!strcmp(c->kind, "irfft")) return kn_irfft(x, c->cols, -1, KN_FFT_NORM_BACKWARD);
    if (!strcmp(c->kind, "ifft")) return kn_ifft(x, -1, -1, KN_FFT_NORM_BACKWARD);
    if (!strcmp(c->kind, "fft0")) return kn_fft(x, -1, 0, KN_FFT_NORM_BACKWARD);
    if (!strcmp(c->kind, "fft2")) return kn_fft2(x, NULL, NULL, KN_FFT_NORM_BACKWARD);
    return kn_fft(x, -1, -1, KN_FFT_NORM_BACKWARD);
}

/* Calls per timed burst on a GPU: enough for ~20 ms of work, at least 10. */
static int burst_size(const bcase *c, kn_tensor *x, kn_device dev) {
    double t0 = bench_now();
    for (int i = 0; i < 3; i++) {
        kn_scope sc = kn_scope_begin();
        if (!transform(c, x)) die("transform");
        kn_scope_end(sc);
    }
    if (kn_device_synchronize(dev) != KN_OK) die("synchronize");
    double per = (bench_now() - t0) / 3;
    int n = per > 0 ? (int)(0.02 / per) : 1000;
    return n < 10 ? 10 : n > 2000 ? 2000 : n;
}

static double run(const bcase *c, kn_device dev, int reps) {
    kn_scope outer = kn_scope_begin();
    kn_generator g = kn_generator_make(1);
    bool real = !strcmp(c->kind, "rfft");
    int64_t width = !strcmp(c->kind, "irfft") ? c->cols / 2 + 1 : c->cols; /* irfft: the bins of cols reals */
    kn_tensor *h = real ? kn_randn(KN_SHAPE(c->rows, c->cols), c->dt, KN_CPU, &g)
                        : kn_view_as_complex(kn_randn(KN_SHAPE(c->rows, width, 2), kn_dtype_real(c->dt), KN_CPU, &g));
    kn_tensor *x = kn_to(h, dev);
    if (!x) die("input");
    bool gpu = dev.kind != KN_DEVICE_CPU;
    int burst = gpu ? burst_size(c, x, dev) : 1;
    double t[MAX_REPS];
    int n = 0;
    for (int r = -2; r < reps; r++) { /* warm-ups: the plan and the allocator's cache */
        double t0 = bench_now();
        for (int i = 0; i < burst; i++) {
            kn_scope sc = kn_scope_begin();
            if (!transform(c, x)) die("transform");
            kn_scope_end(sc);
        }
        if (gpu && kn_device_synchronize(dev) != KN_OK) die("synchronize");
        double dt = (bench_now() - t0) / burst;
        if (r >= 0 && n < MAX_REPS) t[n++] = dt;
    }
    kn_scope_end(outer);
    return bench_median(t, n);
}

int main(int argc, char **argv) {
    int reps = 9;
    const char *device = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > MAX_REPS) reps = 9;
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_fft [--reps N] [--device cpu|cuda:0|...]\n");
            return 2;
        }
    }
    kn_device dev = kn_device_get(device);
    if (!kn_device_ok(dev)) die(device);
    static const bcase cpu_cases[] = {
        {"fft", KN_C64, 256, 1024}, {"fft", KN_C128, 256, 1024}, {"fft", KN_C64, 64, 4096},
        {"fft", KN_C64, 256, 1000}, {"fft", KN_C64, 64, 4099}, {"fft", KN_C64, 1, 1 << 20},
        {"rfft", KN_F32, 256, 1024}, {"rfft", KN_F32, 64, 4096}, {"irfft", KN_C64, 256, 1024},
    };
    /* Larger batches on a GPU: small ones measure launch latency only. */
    static const bcase gpu_cases[] = {
        {"fft", KN_C64, 1024, 4096}, {"fft2", KN_C64, 1024, 1024}, {"fft", KN_C128, 1024, 4096},
        {"ifft", KN_C64, 1024, 4096}, {"fft0", KN_C64, 4096, 1024}, {"fft", KN_C64, 4096, 1000},
        {"fft", KN_C64, 1024, 4099}, {"fft", KN_C64, 1, 1 << 24}, {"rfft", KN_F32, 1024, 4096},
        {"fft", KN_C64, 256, 1024}, {"rfft", KN_F32, 256, 1024}, {"irfft", KN_C64, 1024, 4096},
        {"irfft", KN_C64, 256, 1024},
    };
    bool gpu = dev.kind != KN_DEVICE_CPU;
    const bcase *cases = gpu ? gpu_cases : cpu_cases;
    size_t count = gpu ? sizeof gpu_cases / sizeof *gpu_cases : sizeof cpu_cases / sizeof *cpu_cases;
    for (size_t k = 0; k < count; k++) {
        const bcase *c = &cases[k];
        printf("%s %s %lld %lld %.4f\n", c->kind, kn_dtype_name(c->dt), (long long)c->rows, (long long)c->cols,
               1e3 * run(c, dev, reps));
        fflush(stdout);
    }
    return 0;
}
