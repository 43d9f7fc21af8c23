/* One training step of the Fashion-MNIST CNN (examples/fashion_mnist.c:
 * conv 1->32, ReLU, max-pool, conv 32->64, ReLU, max-pool, linear 3136->128,
 * ReLU, linear 128->10; cross-entropy, Adam 1e-3) on a fixed batch, timed
 * eagerly and, where the device can capture, as one graph replayed.
 * bench/cnn_step.py runs this beside the same step in PyTorch.
 *
 * Before timing, the replayed step is checked against the eager one: with
 * deterministic algorithms, models from the same seed train 20 steps each
 * way and their losses must agree (a fast graph that computes something
 * else would not pass), as must two eager runs.
 * Usage: bench_cnn_step DEVICE [--batch B] [--steps N]
 * Prints "eager_ms X graph_ms Y max_loss_diff Z eager_repeat_diff W"
 * (graph_ms nan when the device cannot capture; W: two eager runs). */
#include <kiln.h>

#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    kn_module *model;
    kn_optim *opt;
    kn_tensor *x, *y, *loss_out; /* made before a capture, so a replay reuses them */
} trainer;

static kn_module *make_model(void) {
    kn_conv_opts pad1 = kn_conv_opts_default();
    pad1.padding[0] = pad1.padding[1] = 1;
    kn_pool_opts pool = kn_pool_opts_default(2, 2);
    return kn_nn_sequential(10, (kn_module *[]){
        kn_nn_conv2d(1, 32, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_conv2d(32, 64, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_flatten(), kn_nn_linear(64 * 7 * 7, 128, true), kn_nn_relu(), kn_nn_linear(128, 10, true)});
}

static kn_status step(void *p) {
    trainer *t = p;
    kn_scope sc = kn_scope_begin();
    kn_optim_zero_grad(t->opt);
    kn_tensor *loss = kn_cross_entropy(kn_module_forward(t->model, t->x), t->y);
    kn_status s = loss ? kn_backward(loss) : kn_error_code();
    if (s == KN_OK) s = kn_optim_step(t->opt);
    if (s == KN_OK) s = kn_copy_(t->loss_out, kn_detach(loss));
    kn_scope_end(sc);
    return s;
}

/* A fresh model and optimizer from seed 0 on dev, for the batch (x, y). */
static bool trainer_init(trainer *t, kn_device dev, kn_tensor *x, kn_tensor *y) {
    kn_manual_seed(0);
    t->model = make_model();
    if (t->model) kn_module_to(t->model, dev);
    t->opt = t->model ? kn_adam(t->model, kn_adam_defaults(1e-3)) : NULL;
    t->x = x, t->y = y;
    t->loss_out = kn_retain(kn_zeros(0, NULL, KN_F32, dev));
    return t->model && t->opt && t->loss_out && kn_error_code() == KN_OK;
}

static void trainer_free(trainer *t) {
    kn_optim_free(t->opt);
    kn_module_free(t->model);
    kn_release(t->loss_out);
}

static int fail(const char *what) {
    fprintf(stderr, "bench_cnn_step: %s: %s\n", what, kn_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DEVICE [--batch B] [--steps N]\n", argv[0]);
        return 2;
    }
    int64_t batch = 256;
    int steps = 200;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else {
            fprintf(stderr, "bench_cnn_step: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!bench_check_batch_steps("bench_cnn_step", batch, steps)) return 2;
    kn_device dev = kn_device_get(argv[1]);
    if (!kn_device_ok(dev)) return fail(argv[1]);
    kn_scope all = kn_scope_begin();
    kn_generator gen = kn_generator_make(7);
    kn_tensor *x = kn_randn(4, (int64_t[]){batch, 1, 28, 28}, KN_F32, dev, &gen);
    kn_tensor *y = kn_randint(0, 10, 1, (int64_t[]){batch}, KN_I64, dev, &gen);
    if (!x || !y) return fail("inputs");

    /* Agreement, with deterministic algorithms (cuDNN's atomics-based engines
     * make two eager runs drift apart by as much as a broken graph would:
     * 0.065 in 20 steps on an H100): 20 eager steps against 20 more eager
     * steps and against 20 replays, each from seed 0. Timing then uses the
     * default algorithms, with a graph captured again. KILN_BENCH_VERBOSE=1
     * prints the losses step by step. */
    bool was_deterministic = kn_deterministic_algorithms();
    kn_use_deterministic_algorithms(true);
    enum { CHECK = 20 };
    double eager_loss[CHECK], again_loss[CHECK], graph_loss[CHECK], diff = NAN, again_diff = 0;
    const char *verbose = getenv("KILN_BENCH_VERBOSE");
    trainer e, g;
    for (int k = 0; k < 2; k++) {
        double *l = k ? again_loss : eager_loss;
        if (!trainer_init(&e, dev, x, y)) return fail("model");
        for (int i = 0; i < CHECK; i++) {
            if (step(&e) != KN_OK) return fail("eager step");
            l[i] = kn_item(e.loss_out);
            if (k) again_diff = fmax(again_diff, fabs(l[i] - eager_loss[i]));
        }
        if (k == 0) trainer_free(&e);
    }
    bool graphs = kn_graph_supported(dev);
    kn_graph *graph = NULL;
    if (graphs) {
        if (!trainer_init(&g, dev, x, y)) return fail("model");
        /* One eager step first: Adam makes its state on the first step, and
         * the capture must find it there. */
        if (step(&g) != KN_OK) return fail("first step");
        graph_loss[0] = kn_item(g.loss_out);
        diff = fabs(graph_loss[0] - eager_loss[0]);
        if (!(graph = kn_graph_capture(dev, step, &g))) return fail("capture");
        for (int i = 1; i < CHECK; i++) {
            if (kn_graph_replay(graph) != KN_OK) return fail("replay");
            graph_loss[i] = kn_item(g.loss_out);
            double d = fabs(graph_loss[i] - eager_loss[i]);
            if (!(d <= diff)) diff = isnan(d) ? d : fmax(d, diff);
        }
        if (verbose && !strcmp(verbose, "1"))
            for (int i = 0; i < CHECK; i++)
                fprintf(stderr, "step %2d eager %.9f again %.9f replay %.9f\n", i, eager_loss[i], again_loss[i],
                        graph_loss[i]);
        /* Deterministic kernels: the same program gives the same losses; the
         * graph's memory is elsewhere, so a cuDNN engine may differ by
         * alignment, and 20 steps of float reordering stay far below this. */
        if (!(again_diff <= 1e-6 * fabs(eager_loss[0])) || !(diff <= 1e-3 * fabs(eager_loss[0]))) {
            fprintf(stderr, "bench_cnn_step: with deterministic algorithms, the replayed step's losses differ from the "
                    "eager ones by %g, two eager runs by %g\n", diff, again_diff);
            return 1;
        }
        kn_graph_free(graph);
        trainer_free(&g);
        graph = NULL;
    }

    /* Timing, with the caller's algorithms: warm steps, then `steps` steps
     * with one wait at the end (no value read back per step), as PyTorch is
     * timed. */
    kn_use_deterministic_algorithms(was_deterministic);
    if (graphs) {
        if (!trainer_init(&g, dev, x, y)) return fail("model");
        for (int i = 0; i < 3; i++)
            if (step(&g) != KN_OK) return fail("warm step");
        if (!(graph = kn_graph_capture(dev, step, &g))) return fail("capture");
        for (int i = 0; i < 3; i++)
            if (kn_graph_replay(graph) != KN_OK) return fail("replay");
    }
    for (int i = 0; i < 3; i++)
        if (step(&e) != KN_OK) return fail("warm step");
    double t0 = bench_now();
    for (int i = 0; i < steps; i++)
        if (step(&e) != KN_OK) return fail("eager step");
    if (kn_device_synchronize(dev) != KN_OK) return fail("synchronize");
    double eager_ms = (bench_now() - t0) * 1e3 / steps, graph_ms = NAN;
    if (graph) {
        t0 = bench_now();
        for (int i = 0; i < steps; i++)
            if (kn_graph_replay(graph) != KN_OK) return fail("replay");
        if (kn_device_synchronize(dev) != KN_OK) return fail("synchronize");
        graph_ms = (bench_now() - t0) * 1e3 / steps;
        kn_graph_free(graph);
        trainer_free(&g);
    }
    trainer_free(&e);
    printf("eager_ms %.4f graph_ms %.4f max_loss_diff %.3g eager_repeat_diff %.3g\n", eager_ms, graph_ms, diff, again_diff);
    kn_scope_end(all);
    return 0;
}
