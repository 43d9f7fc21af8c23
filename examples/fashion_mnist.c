/* A small CNN on Fashion-MNIST: two conv + pool blocks and two linear
 * layers, Adam, shuffled mini-batches; prints each epoch's time and the test
 * accuracy. The IDX files come from DIR (default: Debian's
 * dataset-fashion-mnist package). Where the device can capture (CUDA), the
 * training step is recorded once and replayed for every full batch, which
 * is copied into fixed input tensors first; --eager turns that off.
 * Usage: fashion_mnist [DIR] [--epochs N] [--batch B] [--limit N] [--eager] */
#include <kiln.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* images [N, 1, 28, 28] float32, normalized; labels [N] int64; both on dev. */
static bool load(const char *dir, const char *split, int64_t limit, kn_device dev, kn_tensor **x, kn_tensor **y) {
    char pi[4096], pl[4096];
    if (snprintf(pi, sizeof pi, "%s/%s-images-idx3-ubyte.gz", dir, split) >= (int)sizeof pi ||
        snprintf(pl, sizeof pl, "%s/%s-labels-idx1-ubyte.gz", dir, split) >= (int)sizeof pl) {
        fprintf(stderr, "fashion_mnist: the directory name is too long\n");
        return false;
    }
    kn_tensor *img = kn_idx_load(pi, KN_CPU), *lab = kn_idx_load(pl, KN_CPU);
    if (img && limit > 0 && limit < kn_shape(img)[0]) {
        img = kn_narrow(img, 0, 0, limit);
        lab = kn_narrow(lab, 0, 0, limit);
    }
    const double mean = 0.2860, std = 0.3530; /* the training set's pixel statistics */
    *x = kn_to(kn_image_normalize(kn_unsqueeze(img, 1), &mean, &std), dev);
    *y = kn_to_dtype(lab, dev, KN_I64);
    return *x && *y;
}

/* One training step on the tensors in ctx; its loss goes into ctx->loss. */
typedef struct {
    kn_module *model;
    kn_optim *opt;
    kn_tensor *x, *y, *loss;
} step_ctx;

static kn_status train_step(void *p) {
    step_ctx *c = p;
    kn_scope s = kn_scope_begin();
    kn_tensor *loss = kn_cross_entropy(kn_module_forward(c->model, c->x), c->y);
    kn_optim_zero_grad(c->opt);
    kn_status st = loss ? kn_backward(loss) : kn_error_code();
    if (st == KN_OK) st = kn_optim_step(c->opt);
    if (st == KN_OK) st = kn_copy_(c->loss, kn_detach(loss));
    kn_scope_end(s);
    return st;
}

int main(int argc, char **argv) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    int epochs = 1;
    int64_t batch = 64, limit = 0;
    bool eager = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) limit = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--eager")) eager = true;
        else if (argv[i][0] != '-') dir = argv[i];
        else {
            fprintf(stderr, "usage: %s [DIR] [--epochs N] [--batch B] [--limit N] [--eager]\n", argv[0]);
            return 2;
        }
    }
    kn_device dev = kn_device_default();
    printf("Using %s device\n", kn_device_kind_name(dev.kind));
    kn_scope all = kn_scope_begin();
    kn_manual_seed(0);
    kn_tensor *xtr, *ytr, *xte, *yte;
    if (!load(dir, "train", limit, dev, &xtr, &ytr) || !load(dir, "t10k", 0, dev, &xte, &yte)) {
        fprintf(stderr, "fashion_mnist: %s\n", kn_error());
        return 1;
    }
    kn_conv_opts pad1 = kn_conv_opts_default();
    pad1.padding[0] = pad1.padding[1] = 1;
    kn_pool_opts pool = kn_pool_opts_default(2, 2);
    kn_module *model = kn_nn_sequential(10, (kn_module *[]){
        kn_nn_conv2d(1, 32, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool),  /* 32 x 14 x 14 */
        kn_nn_conv2d(32, 64, 3, 3, &pad1, true), kn_nn_relu(), kn_nn_max_pool2d(&pool), /* 64 x 7 x 7 */
        kn_nn_flatten(), kn_nn_linear(64 * 7 * 7, 128, true), kn_nn_relu(), kn_nn_linear(128, 10, true)});
    kn_module_to(model, dev);
    kn_optim *opt = kn_adam(model, kn_adam_defaults(1e-3));
    kn_batches *batches = kn_batches_new(2, (kn_tensor *[]){xtr, ytr}, batch, true, false, 0);
    if (!model || !opt || !batches) {
        fprintf(stderr, "fashion_mnist: %s\n", kn_error());
        return 1;
    }
    if (batch < 1 || batch > kn_shape(xtr)[0]) {
        fprintf(stderr, "fashion_mnist: --batch must be in [1, %lld]\n", (long long)kn_shape(xtr)[0]);
        return 2;
    }
    /* The replayed step's fixed inputs and output (made before the capture). */
    step_ctx fixed = {model, opt, kn_zeros(4, (int64_t[]){batch, 1, 28, 28}, KN_F32, dev),
                      kn_zeros(1, (int64_t[]){batch}, KN_I64, dev), kn_zeros(0, NULL, KN_F32, dev)};
    kn_graph *graph = NULL;
    bool capture = !eager && kn_graph_supported(dev);
    printf("%lld training images, %lld test images, %lld parameters, batches of %lld%s\n",
           (long long)kn_shape(xtr)[0], (long long)kn_shape(xte)[0], (long long)kn_module_num_params(model),
           (long long)batch, capture ? ", step captured and replayed" : "");
    for (int epoch = 1; epoch <= epochs; epoch++) {
        kn_module_train(model, true);
        double t0 = now(), total = 0;
        int64_t seen = 0, rows;
        kn_tensor *b[2];
        while (true) {
            kn_scope s = kn_scope_begin();
            if ((rows = kn_batches_next(batches, b)) <= 0) {
                kn_scope_end(s);
                break;
            }
            kn_status st;
            if (rows == batch && (graph || capture)) {
                st = kn_copy_(fixed.x, b[0]);
                if (st == KN_OK) st = kn_copy_(fixed.y, b[1]);
                if (st == KN_OK && graph) st = kn_graph_replay(graph);
                else if (st == KN_OK) {
                    /* The first step runs eagerly (Adam makes its state
                     * there), then the step is recorded for the rest. */
                    st = train_step(&fixed);
                    capture = false;
                    if (st == KN_OK && !(graph = kn_graph_capture(dev, train_step, &fixed))) {
                        fprintf(stderr, "fashion_mnist: no capture (%s); running eagerly\n", kn_error());
                        kn_error_clear();
                    }
                }
            } else {
                st = train_step(&(step_ctx){model, opt, b[0], b[1], fixed.loss}); /* the last, partial batch */
            }
            if (st != KN_OK) {
                fprintf(stderr, "fashion_mnist: %s\n", kn_error());
                return 1;
            }
            total += kn_item(fixed.loss) * (double)rows, seen += rows;
            kn_scope_end(s);
        }
        double dt = now() - t0;
        /* test accuracy, in batches of 1000 without gradients */
        kn_module_train(model, false);
        kn_no_grad_begin();
        int64_t right = 0, N = kn_shape(xte)[0];
        for (int64_t i = 0; i < N; i += 1000) {
            kn_scope s = kn_scope_begin();
            int64_t n = N - i < 1000 ? N - i : 1000;
            kn_tensor *pred = kn_argmax(kn_module_forward(model, kn_narrow(xte, 0, i, n)), 1, false);
            right += (int64_t)kn_item(kn_sum_all(kn_eq(pred, kn_narrow(yte, 0, i, n))));
            kn_scope_end(s);
        }
        kn_no_grad_end();
        if (rows < 0 || kn_error_code() != KN_OK) {
            fprintf(stderr, "fashion_mnist: %s\n", kn_error());
            return 1;
        }
        printf("epoch %d: train loss %.4f, test accuracy %.4f, %.1f s\n", epoch, total / (double)(seen ? seen : 1),
               (double)right / (double)N, dt);
    }
    kn_graph_free(graph);
    kn_batches_free(batches);
    kn_optim_free(opt);
    kn_module_free(model);
    kn_scope_end(all);
    return 0;
}
