/* One data-parallel training step over the devices of one process, for
 * scaling against PyTorch's DistributedDataParallel (bench/dist_step.py runs
 * both): a replica per device, rank 0's weights broadcast, each rank on its
 * own batch (weak scaling: the batch per rank stays fixed), kn_dist_backward
 * (the bucket all-reduce overlapped with backward), Adam on every rank.
 *
 * Models: "cnn", the Fashion-MNIST CNN of bench/cnn_step.c; "mlp", a larger
 * MLP (1024 -> 4096 -> 4096 -> 4096 -> 10, 38M parameters, so the all-reduce
 * has something to carry). --plain: no group, the plain step on the first
 * device (what the group costs on one rank).
 *
 * Usage: bench_dist_step DEVICES [--model cnn|mlp] [--batch B] [--steps N] [--plain]
 *   DEVICES: cuda:0,cuda:1 or all (every device of the best kind)
 * Prints "ranks N batch_per_rank B ms X samples_per_s Y transport T". */
#include <kiln.h>

#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_RANKS = 16 };

static kn_module *make_model(bool cnn) {
    if (!cnn)
        return kn_nn_sequential(7, (kn_module *[]){kn_nn_linear(1024, 4096, true), kn_nn_relu(),
                                                   kn_nn_linear(4096, 4096, true), kn_nn_relu(),
                                                   kn_nn_linear(4096, 4096, true), kn_nn_relu(),
                                                   kn_nn_linear(4096, 10, true)});
    kn_conv_opts pad1 = kn_conv_opts_default();
    pad1.padding[0] = pad1.padding[1] = 1;
    kn_pool_opts pool = kn_pool_opts_default(2, 2);
    return kn_nn_sequential(10, (kn_module *[]){
        kn_nn_conv2d(1, 32, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_conv2d(32, 64, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),
        kn_nn_flatten(), kn_nn_linear(64 * 7 * 7, 128, true), kn_nn_relu(), kn_nn_linear(128, 10, true)});
}

static int fail(const char *what) {
    fprintf(stderr, "bench_dist_step: %s: %s\n", what, kn_error());
    return 1;
}

/* "all", or names separated by commas. */
static int parse_devices(const char *arg, kn_device *dev) {
    int n = 0;
    if (!strcmp(arg, "all")) {
        kn_device best = kn_device_default();
        int count = kn_device_count((kn_device_kind)best.kind);
        for (int i = 0; i < count && n < MAX_RANKS; i++) dev[n++] = (kn_device){best.kind, (int16_t)i};
        return n ? n : (dev[n++] = best, n);
    }
    char buf[512];
    snprintf(buf, sizeof buf, "%s", arg);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && n < MAX_RANKS; tok = strtok_r(NULL, ",", &save)) {
        dev[n] = kn_device_get(tok);
        if (!kn_device_ok(dev[n])) return -1;
        n++;
    }
    return n;
}

typedef struct {
    int n;
    kn_dist *d;
    kn_module *rep[MAX_RANKS];
    kn_optim *opt[MAX_RANKS];
    kn_tensor *x[MAX_RANKS], *y[MAX_RANKS];
} group;

static kn_status step(group *g) {
    kn_scope sc = kn_scope_begin();
    kn_tensor *loss[MAX_RANKS];
    kn_status s = KN_OK;
    for (int r = 0; r < g->n && s == KN_OK; r++) {
        kn_optim_zero_grad(g->opt[r]);
        loss[r] = kn_cross_entropy(kn_module_forward(g->rep[r], g->x[r]), g->y[r]);
        if (!loss[r]) s = kn_error_code();
    }
    if (s == KN_OK) s = g->d ? kn_dist_backward(g->d, g->rep, loss, NULL, 0) : kn_backward(loss[0]);
    for (int r = 0; r < g->n && s == KN_OK; r++) s = kn_optim_step(g->opt[r]);
    kn_scope_end(sc);
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DEVICES [--model cnn|mlp] [--batch B] [--steps N] [--plain]\n", argv[0]);
        return 2;
    }
    bool cnn = true, plain = false;
    int64_t batch = 256;
    int steps = 50;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            const char *m = argv[++i];
            if (strcmp(m, "cnn") && strcmp(m, "mlp")) {
                fprintf(stderr, "bench_dist_step: --model %s (expected cnn or mlp)\n", m);
                return 2;
            }
            cnn = !strcmp(m, "cnn");
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--plain")) plain = true;
        else {
            fprintf(stderr, "bench_dist_step: unknown argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!bench_check_batch_steps("bench_dist_step", batch, steps)) return 2;
    kn_device dev[MAX_RANKS];
    group g = {0};
    if ((g.n = parse_devices(argv[1], dev)) < 1) return fail(argv[1]);
    if (plain) g.n = 1;
    kn_scope all = kn_scope_begin();
    for (int r = 0; r < g.n; r++) {
        kn_manual_seed((uint64_t)r); /* the broadcast must make them equal */
        if (!(g.rep[r] = make_model(cnn)) || kn_module_to(g.rep[r], dev[r]) != KN_OK) return fail("model");
        if (!(g.opt[r] = kn_adam(g.rep[r], kn_adam_defaults(1e-4)))) return fail("optimizer");
        kn_generator gen = kn_generator_make(7 + (uint64_t)r); /* each rank its own batch */
        g.x[r] = cnn ? kn_randn(4, (int64_t[]){batch, 1, 28, 28}, KN_F32, dev[r], &gen)
                     : kn_randn(2, (int64_t[]){batch, 1024}, KN_F32, dev[r], &gen);
        g.y[r] = kn_randint(0, 10, 1, (int64_t[]){batch}, KN_I64, dev[r], &gen);
        if (!g.x[r] || !g.y[r]) return fail("inputs");
    }
    const char *transport = "none";
    if (!plain) {
        if (!(g.d = kn_dist_new(g.n, dev))) return fail("group");
        if (kn_dist_broadcast_module(g.d, g.rep) != KN_OK) return fail("broadcast");
        transport = kn_dist_transport(g.d);
    }
    for (int i = 0; i < 5; i++)
        if (step(&g) != KN_OK) return fail("warm step");
    for (int r = 0; r < g.n; r++)
        if (kn_device_synchronize(dev[r]) != KN_OK) return fail("synchronize");
    double t0 = bench_now();
    for (int i = 0; i < steps; i++)
        if (step(&g) != KN_OK) return fail("step");
    for (int r = 0; r < g.n; r++)
        if (kn_device_synchronize(dev[r]) != KN_OK) return fail("synchronize");
    double ms = (bench_now() - t0) * 1e3 / steps;
    /* The replicas took the same steps: a check that the group did its work. */
    double spread = 0;
    for (int r = 1; r < g.n; r++) {
        int np = 0, nr = 0;
        const kn_named_tensor *p0 = kn_module_parameters(g.rep[0], &np), *pr = kn_module_parameters(g.rep[r], &nr);
        for (int i = 0; i < np && i < nr; i++) {
            kn_scope sc = kn_scope_begin();
            kn_tensor *a = kn_detach(p0[i].tensor), *b = kn_to(kn_detach(pr[i].tensor), kn_device_of(a));
            double d = kn_item(kn_max(kn_abs(kn_sub(a, b)), 0, NULL, false));
            kn_scope_end(sc);
            spread = isnan(d) || d > spread ? d : spread;
        }
    }
    if (!(spread <= 1e-4)) {
        fprintf(stderr, "bench_dist_step: the replicas' weights drifted apart by %g\n", spread);
        return 1;
    }
    printf("ranks %d batch_per_rank %lld ms %.4f samples_per_s %.1f transport %s spread %.3g\n", g.n, (long long)batch,
           ms, (double)batch * g.n / (ms * 1e-3), transport, spread);
    kn_dist_free(g.d);
    for (int r = 0; r < g.n; r++) {
        kn_optim_free(g.opt[r]);
        kn_module_free(g.rep[r]);
    }
    kn_scope_end(all);
    return 0;
}
