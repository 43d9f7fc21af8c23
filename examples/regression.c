/* A small regression, as one would write it with PyTorch: fit
 * y = sin(2 a) + cos(3 b) / 2 + noise from (a, b), with sin/cos features,
 * an MLP, the Huber loss, AdamW, shuffled mini-batches, gradient clipping
 * and a reduce-on-plateau schedule; then save the model and load it back.
 *
 *   regression [--epochs N] [--out model.safetensors]
 *
 * Runs on the best device (KILN_DEVICE=cpu|cuda|... to choose). */
#include "kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                              \
    do {                                                                    \
        if (!(x)) {                                                         \
            fprintf(stderr, "regression: %s: %s\n", #x, kn_error());        \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

/* [a, b, sin a, cos a, sin b, cos b, sin 2a, cos 3b] from inputs [N, 2]. */
static kn_tensor *features(kn_tensor *ab) {
    kn_tensor *a = kn_narrow(ab, 1, 0, 1), *b = kn_narrow(ab, 1, 1, 1);
    kn_tensor *f[8] = {a, b, kn_sin(a), kn_cos(a), kn_sin(b), kn_cos(b), kn_sin(kn_mul_scalar(a, 2)),
                       kn_cos(kn_mul_scalar(b, 3))};
    return kn_concat(8, f, 1);
}

static kn_module *make_model(void) {
    kn_module *m = kn_nn_sequential(0, NULL);
    kn_nn_sequential_append(m, kn_nn_linear(8, 64, true));
    kn_nn_sequential_append(m, kn_nn_relu());
    kn_nn_sequential_append(m, kn_nn_linear(64, 1, true));
    return m;
}

/* Mean squared error of the model on (x, y), without gradients. */
static double eval_mse(kn_module *m, kn_tensor *x, kn_tensor *y) {
    kn_scope s = kn_scope_begin();
    kn_no_grad_begin();
    double v = kn_item(kn_mse_loss_ex(kn_module_forward(m, x), y, NULL));
    kn_no_grad_end();
    kn_scope_end(s);
    return v;
}

int main(int argc, char **argv) {
    int epochs = 60;
    const char *out = "regression.safetensors";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--epochs")) epochs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
    }
    kn_device dev = kn_device_default();
    printf("Using %s device\n", kn_device_str(dev));
    kn_manual_seed(0);

    /* Data: 2000 training and 500 validation rows, made on the device; they
     * (and the steps that made them) live in this scope until the end. */
    kn_scope data = kn_scope_begin();
    kn_generator g = kn_generator_make(42);
    kn_tensor *x[2], *y[2];
    const int64_t rows[2] = {2000, 500};
    for (int k = 0; k < 2; k++) {
        kn_tensor *ab = kn_rand(KN_SHAPE(rows[k], 2), KN_F32, dev, &g);
        ab = kn_add_scalar(kn_mul_scalar(ab, 6), -3); /* uniform in [-3, 3) */
        kn_tensor *a = kn_narrow(ab, 1, 0, 1), *b = kn_narrow(ab, 1, 1, 1);
        kn_tensor *clean = kn_add(kn_sin(kn_mul_scalar(a, 2)), kn_mul_scalar(kn_cos(kn_mul_scalar(b, 3)), 0.5));
        y[k] = kn_add(clean, kn_mul_scalar(kn_randn(KN_SHAPE(rows[k], 1), KN_F32, dev, &g), 0.05));
        x[k] = features(ab);
        TRY(x[k] && y[k]);
    }

    kn_module *model = make_model();
    TRY(kn_module_to(model, dev) == KN_OK);
    kn_optim *opt = kn_adamw(model, kn_adamw_defaults(3e-3));
    kn_plateau_opts po = kn_plateau_defaults();
    po.factor = 0.5, po.patience = 4;
    kn_sched *plateau = kn_sched_plateau(opt, po);
    kn_batches *batches = kn_batches_new(2, (kn_tensor *[]){x[0], y[0]}, 64, true, false, 7);
    kn_loss_opts huber = kn_loss_opts_default();
    huber.delta = 0.5;
    TRY(opt && plateau && batches);

    for (int epoch = 1; epoch <= epochs; epoch++) {
        kn_module_train(model, true);
        double grad_norm = 0;
        kn_tensor *b[2];
        for (;;) {
            kn_scope s = kn_scope_begin(); /* frees the batch and every temporary */
            int64_t len = kn_batches_next(batches, b);
            TRY(len >= 0);
            if (len == 0) {
                kn_scope_end(s);
                break;
            }
            kn_optim_zero_grad(opt);
            kn_tensor *loss = kn_huber_loss(kn_module_forward(model, b[0]), b[1], &huber);
            TRY(kn_backward(loss) == KN_OK);
            grad_norm = kn_module_clip_grad_norm(model, 1.0, 2, true);
            TRY(grad_norm >= 0);
            TRY(kn_optim_step(opt) == KN_OK);
            kn_scope_end(s);
        }
        kn_module_train(model, false);
        double val = eval_mse(model, x[1], y[1]);
        double lr = kn_sched_plateau_step(plateau, val);
        if (epoch % 10 == 0 || epoch == 1)
            printf("epoch %3d  val mse %.5f  lr %.2e  last grad norm %.3f\n", epoch, val, lr, grad_norm);
    }

    /* Save, and load into a fresh model in one call. */
    double before = eval_mse(model, x[1], y[1]);
    TRY(kn_module_save(model, out, 0, NULL) == KN_OK);
    kn_module *again = make_model();
    TRY(kn_module_to(again, dev) == KN_OK);
    TRY(kn_module_load_file(again, out) == KN_OK);
    double after = eval_mse(again, x[1], y[1]);
    printf("saved to %s; reloaded model's val mse %.5f (%s)\n", out, after, after == before ? "the same" : "DIFFERENT");

    kn_batches_free(batches);
    kn_sched_free(plateau);
    kn_optim_free(opt);
    kn_module_free(model);
    kn_module_free(again);
    kn_scope_end(data);
    return after == before ? 0 : 1;
}
