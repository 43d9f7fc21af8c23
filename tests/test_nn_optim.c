/* Modules, optimizers and schedules; a training loop that leaks nothing. */
#include "kn_test.h"

static void test_module_structure(void) {
    kn_module *seq = kn_nn_sequential(4, (kn_module *[]){kn_nn_linear(3, 5, true), kn_nn_relu(),
                                                        kn_nn_batch_norm1d(5), kn_nn_linear(5, 2, false)});
    CHECK(seq != NULL, "sequential built");
    int n = 0;
    const kn_named_tensor *p = kn_module_parameters(seq, &n);
    CHECK(n == 5, "5 parameters, got %d", n);
    const char *want[] = {"0.weight", "0.bias", "2.weight", "2.bias", "3.weight"};
    for (int i = 0; i < n && i < 5; i++) CHECK(!strcmp(p[i].name, want[i]), "name %s vs %s", p[i].name, want[i]);
    const kn_named_tensor *sd = kn_module_state_dict(seq, &n);
    CHECK(n == 8, "state dict has 8 entries (with running stats), got %d", n);
    CHECK(sd && !strcmp(sd[4].name, "2.running_mean") && !strcmp(sd[6].name, "2.num_batches_tracked"), "buffer names");
    CHECK(kn_module_num_params(seq) == 3 * 5 + 5 + 5 + 5 + 10, "number of scalars");
    kn_tensor *w = kn_module_get(kn_module_child(seq, "0"), "weight");
    CHECK(kn_size(w, 0) == 5 && kn_size(w, 1) == 3 && kn_requires_grad(w), "linear weight is [out, in]");
    double bound = 1 / sqrt(3.0);
    kn_scope s = kn_scope_begin();
    CHECK(kn_item(kn_max(kn_abs(w), 0, NULL, false)) <= bound, "linear init bound");
    kn_tensor *x = kn_randn(KN_SHAPE(8, 3), KN_F32, KN_CPU, NULL);
    kn_tensor *y = kn_module_forward(seq, x);
    CHECK(y && kn_size(y, 0) == 8 && kn_size(y, 1) == 2, "forward shape");
    CHECK(kn_module_forward(seq, kn_randn(KN_SHAPE(8, 4), KN_F32, KN_CPU, NULL)) == NULL, "wrong input width");
    CHECK_ERROR("linear: input [8, 4], weight [5, 3]");
    kn_module_train(seq, false);
    CHECK(!kn_module_training(kn_module_child(seq, "2")), "eval propagates to children");
    kn_scope_end(s);
    FILE *f = tmpfile();
    kn_module_print(seq, f);
    rewind(f);
    char buf[512] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    CHECK(got > 0 && strstr(buf, "(0): Linear(in_features=3, out_features=5, bias=True)"), "printed like PyTorch: %s", buf);
    /* Moving keeps the handles: an optimizer made before still works. */
    kn_device t = kt_register_test_device();
    CHECK(kn_module_to(seq, t) == KN_OK && kn_device_equal(kn_module_device(seq), t), "module moved");
    CHECK(kn_device_equal(kn_device_of(w), t), "the same handle now lives on the device");
    CHECK(kn_module_to_dtype(seq, KN_F64) == KN_OK && kn_dtype_of(w) == KN_F64, "module to float64");
    CHECK(kn_dtype_of(kn_module_get(kn_module_child(seq, "2"), "num_batches_tracked")) == KN_I64, "integer buffers keep their dtype");
    kn_module_free(seq);
}

/* A custom module composed in C. */
typedef struct {
    double scale;
} my_state;

static kn_tensor *my_forward(kn_module *self, int n, kn_tensor *const *x) {
    (void)n;
    my_state *s = kn_module_state(self);
    return kn_mul_scalar(kn_module_forward(kn_module_child(self, "fc"), x[0]), s->scale);
}

static void test_custom_module(void) {
    kn_module *m = kn_module_new("Scaled", my_forward, sizeof(my_state), NULL);
    ((my_state *)kn_module_state(m))->scale = 2;
    kn_module_add(m, "fc", kn_nn_linear(2, 2, true));
    CHECK(kn_module_add(m, "fc", kn_nn_relu()) == NULL, "duplicate child name");
    CHECK_ERROR("'fc' already exists");
    int n = 0;
    const kn_named_tensor *p = kn_module_parameters(m, &n);
    CHECK(n == 2 && !strcmp(p[0].name, "fc.weight"), "nested names");
    kn_scope s = kn_scope_begin();
    kn_tensor *x = kn_ones(KN_SHAPE(1, 2), KN_F32, KN_CPU);
    kn_tensor *a = kn_module_forward(kn_module_child(m, "fc"), x), *b = kn_module_forward(m, x);
    CHECK(fabs(kn_item(kn_sum_all(b)) - 2 * kn_item(kn_sum_all(a))) < 1e-6, "custom forward");
    kn_scope_end(s);
    kn_module_free(m);
}

static void test_adam_step(void) {
    /* One Adam step by hand: m = (1-b1) g, v = (1-b2) g^2, bias-corrected
     * m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps). Second step too. */
    float pv[] = {1.0f, -2.0f, 0.5f}, gv[] = {0.1f, -0.3f, 2.0f};
    kn_tensor *p = kn_requires_grad_(kn_from_data(pv, KN_F32, KN_SHAPE(3), KN_CPU), true);
    kn_adam_opts o = kn_adam_defaults(0.01);
    kn_optim *opt = kn_adam_params(1, &p, o);
    kn_scope s = kn_scope_begin();
    kn_tensor *g = kn_from_data(gv, KN_F32, KN_SHAPE(3), KN_CPU);
    kn_backward(kn_sum_all(kn_mul(p, g))); /* grad = g */
    CHECK(kn_optim_step(opt) == KN_OK, "step");
    double m[3], v[3], want[3];
    for (int i = 0; i < 3; i++) {
        m[i] = 0.1 * gv[i];
        v[i] = 0.001 * gv[i] * gv[i];
        want[i] = pv[i] - 0.01 * (m[i] / 0.1) / (sqrt(v[i] / 0.001) + 1e-8);
        CHECK_NEAR(kn_get(p, (int64_t[]){i}), want[i], 1e-6);
    }
    /* Second step with the same gradient. */
    kn_optim_zero_grad(opt);
    kn_backward(kn_sum_all(kn_mul(p, g)));
    kn_optim_step(opt);
    for (int i = 0; i < 3; i++) {
        m[i] = 0.9 * m[i] + 0.1 * gv[i];
        v[i] = 0.999 * v[i] + 0.001 * gv[i] * gv[i];
        double mh = m[i] / (1 - 0.81), vh = v[i] / (1 - 0.999 * 0.999);
        want[i] -= 0.01 * mh / (sqrt(vh) + 1e-8);
        CHECK_NEAR(kn_get(p, (int64_t[]){i}), want[i], 1e-6);
    }
    kn_scope_end(s);
    kn_optim_free(opt);
    kn_release(p);
}

static void test_adamw_and_sgd(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *p = kn_requires_grad_(kn_keep(kn_full(KN_SHAPE(2), 1.0, KN_F64, KN_CPU)), true);
    kn_adam_opts o = kn_adam_defaults(0.1);
    o.weight_decay = 0.5;
    kn_optim *opt = kn_adamw_params(1, &p, o);
    kn_backward(kn_sum_all(kn_mul_scalar(p, 0.0))); /* zero gradient: only decay acts */
    kn_optim_step(opt);
    CHECK_NEAR(kn_get(p, (int64_t[]){0}), 1.0 * (1 - 0.1 * 0.5), 1e-12);
    kn_optim_free(opt);
    /* PyTorch's AdamW decays by default (0.01); kiln's AdamW defaults do too. */
    kn_adam_opts wd = kn_adamw_defaults(0.1);
    CHECK(wd.weight_decay == 0.01 && kn_adam_defaults(0.1).weight_decay == 0, "AdamW default decay 0.01, Adam none");
    opt = kn_adamw_params(1, &p, wd);
    double before = kn_get(p, (int64_t[]){0});
    kn_optim_step(opt); /* the zero gradient is still there: decay alone */
    CHECK_NEAR(kn_get(p, (int64_t[]){0}), before * (1 - 0.1 * 0.01), 1e-12);
    kn_optim_free(opt);

    /* SGD with momentum 0.9 and Nesterov, gradient 1: buf1 = 1, update 1 + 0.9;
     * buf2 = 0.9 + 1 = 1.9, update 1 + 0.9 * 1.9. */
    CHECK(kn_fill_(p, 0) != KN_OK, "fill_ into a leaf that requires grad is refused while recording");
    CHECK_ERROR("fill_: in-place write into a leaf");
    kn_no_grad_begin();
    kn_fill_(p, 0);
    kn_no_grad_end();
    kn_sgd_opts so = kn_sgd_defaults(0.1);
    so.momentum = 0.9;
    so.nesterov = true;
    opt = kn_sgd_params(1, &p, so);
    for (int step = 0; step < 2; step++) {
        kn_optim_zero_grad(opt);
        kn_backward(kn_sum_all(p));
        kn_optim_step(opt);
    }
    CHECK_NEAR(kn_get(p, (int64_t[]){1}), -0.1 * (1.9 + (1 + 0.9 * 1.9)), 1e-12);
    kn_optim_free(opt);
    so = kn_sgd_defaults(0.1);
    so.nesterov = true;
    CHECK(kn_sgd_params(1, &p, so) == NULL, "Nesterov without momentum is rejected");
    CHECK_ERROR("Nesterov");
    kn_scope_end(s);
    kn_release(p);
}

static void test_schedules(void) {
    kn_tensor *p = kn_requires_grad_(kn_zeros(KN_SHAPE(1), KN_F32, KN_CPU), true);
    kn_optim *o = kn_sgd_params(1, &p, kn_sgd_defaults(1.0));
    kn_sched *s = kn_sched_step_lr(o, 2, 0.5);
    double lrs[5];
    for (int i = 0; i < 5; i++) lrs[i] = kn_sched_step(s);
    CHECK(lrs[0] == 1 && lrs[1] == 0.5 && lrs[2] == 0.5 && lrs[3] == 0.25, "step lr");
    kn_sched_free(s);
    kn_optim_set_lr(o, 1.0);
    s = kn_sched_warmup(o, 4, 0.25, kn_sched_cosine(o, 10, 0.0));
    CHECK_NEAR(kn_optim_lr(o), 0.25, 1e-12);
    for (int i = 0; i < 4; i++) kn_sched_step(s);
    CHECK_NEAR(kn_optim_lr(o), 1.0, 1e-12);
    for (int i = 0; i < 5; i++) kn_sched_step(s);
    CHECK_NEAR(kn_optim_lr(o), 0.5, 1e-12);
    for (int i = 0; i < 10; i++) kn_sched_step(s);
    CHECK_NEAR(kn_optim_lr(o), 0.0, 1e-12);
    kn_sched_free(s);
    kn_optim_free(o);
    kn_release(p);
}

/* A small version of the reference workload trains, and leaks nothing. */
static void test_training_loop(void) {
    int64_t live = kn_live_tensors();
    kn_manual_seed(3);
    kn_module *model = kn_nn_sequential(6, (kn_module *[]){
        kn_nn_linear(4, 16, true), kn_nn_relu(), kn_nn_batch_norm1d(16), kn_nn_dropout(0.1),
        kn_nn_linear(16, 3, true), kn_nn_gelu()});
    kn_optim *opt = kn_adam(model, kn_adam_defaults(0.01));
    kn_scope data = kn_scope_begin();
    /* Three separable classes: the class is the argmax of the first 3 features. */
    kn_tensor *x = kn_randn(KN_SHAPE(64, 4), KN_F32, KN_CPU, NULL);
    kn_tensor *y = kn_argmax(kn_narrow(x, 1, 0, 3), 1, false);
    double first = 0, last = 0;
    for (int epoch = 0; epoch < 150; epoch++) {
        kn_scope s = kn_scope_begin();
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(model, x), y);
        kn_optim_zero_grad(opt);
        CHECK(kn_backward(loss) == KN_OK && kn_optim_step(opt) == KN_OK, "train step %d", epoch);
        if (epoch == 0) first = kn_item(loss);
        last = kn_item(loss);
        kn_scope_end(s);
    }
    CHECK(last < first * 0.5, "loss fell from %g to %g", first, last);
    kn_module_train(model, false);
    kn_no_grad_begin();
    kn_tensor *acc = kn_mean_all(kn_cast(kn_eq(kn_argmax(kn_module_forward(model, x), 1, false), y), KN_F32));
    kn_no_grad_end();
    CHECK(kn_item(acc) > 0.9, "training accuracy %g", kn_item(acc));
    kn_scope_end(data);
    kn_optim_free(opt);
    kn_module_free(model);
    CHECK(kn_live_tensors() == live, "the loop leaked %lld tensors", (long long)(kn_live_tensors() - live));
}

static void test_autograd_rules(void) {
    kn_scope s = kn_scope_begin();
    kn_tensor *a = kn_requires_grad_(kn_ones(KN_SHAPE(2), KN_F32, KN_CPU), true);
    kn_tensor *l = kn_sum_all(kn_mul(a, a));
    CHECK(kn_backward(l) == KN_OK, "first backward");
    CHECK(kn_backward(l) != KN_OK, "second backward through a freed tape");
    CHECK_ERROR("second time");
    CHECK(kn_backward(kn_sum_all(kn_detach(a))) != KN_OK, "backward of a detached result");
    CHECK_ERROR("does not require grad");
    kn_tensor *two = kn_mul_scalar(a, 1.0);
    CHECK(kn_backward(two) != KN_OK, "backward of a non-scalar needs a gradient");
    kn_zero_grad(a);
    kn_backward(kn_sum_all(kn_mul_scalar(a, 3)));
    kn_backward(kn_sum_all(kn_mul_scalar(a, 4)));
    CHECK(kn_get(kn_grad(a), (int64_t[]){1}) == 7, "gradients accumulate");
    kn_no_grad_begin();
    CHECK(!kn_requires_grad(kn_mul(a, a)), "no_grad records nothing");
    kn_no_grad_end();
    CHECK(kn_argmax(a, 0, false) && !kn_requires_grad(kn_argmax(a, 0, false)), "argmax is not differentiable");
    kn_scope_end(s);
}

/* Running statistics are updated in place; through the CPU fallback too. */
static void test_batch_norm_running_stats_everywhere(void) {
    kn_device devs[8];
    int nd = kt_devices(devs, 8);
    double ref[4] = {0};
    for (int d = 0; d < nd; d++) {
        kn_scope s = kn_scope_begin();
        kn_generator g = kn_generator_make(5);
        kn_tensor *x = kn_to(kn_randn(KN_SHAPE(16, 4), KN_F32, KN_CPU, &g), devs[d]);
        kn_tensor *rm = kn_zeros(KN_SHAPE(4), KN_F32, devs[d]), *rv = kn_ones(KN_SHAPE(4), KN_F32, devs[d]);
        CHECK(kn_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5) != NULL, "batch_norm on %s", kn_device_str(devs[d]));
        double got[4];
        kn_to_host(rm, got, KN_F64);
        for (int i = 0; i < 4; i++) {
            if (d == 0) ref[i] = got[i];
            CHECK(got[i] != 0 && fabs(got[i] - ref[i]) < 1e-6, "running_mean[%d] on %s: %g vs %g", i, kn_device_str(devs[d]), got[i], ref[i]);
        }
        kn_scope_end(s);
    }
}

int main(void) {
    setenv("KILN_QUIET_FALLBACK", "1", 1);
    test_module_structure();
    test_custom_module();
    test_adam_step();
    test_adamw_and_sgd();
    test_schedules();
    test_training_loop();
    test_autograd_rules();
    test_batch_norm_running_stats_everywhere();
    CHECK(kn_live_tensors() == 0, "no tensor leaked (%lld alive)", (long long)kn_live_tensors());
    return kt_finish("nn_optim");
}
