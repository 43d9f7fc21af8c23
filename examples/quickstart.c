/* A small classifier trained on the best device: 512 random points in 4-D whose
 * class is the largest of their first three coordinates. */
#include <kiln.h>

#include <stdio.h>

int main(void) {
    kn_device dev = kn_device_default();        /* KILN_DEVICE=cpu|cuda|cuda:1 overrides */
    printf("Using %s device\n", kn_device_kind_name(dev.kind));
    kn_scope all = kn_scope_begin();            /* tensors made from here on are freed at its end */
    kn_manual_seed(0);
    kn_tensor *x = kn_randn(KN_SHAPE(512, 4), KN_F32, dev, NULL);
    kn_tensor *y = kn_argmax(kn_narrow(x, 1, 0, 3), 1, false); /* [512] int64 classes */

    kn_module *model = kn_nn_sequential(3, (kn_module *[]){
        kn_nn_linear(4, 32, true), kn_nn_relu(), kn_nn_linear(32, 3, true)});
    kn_module_to(model, dev);
    kn_optim *opt = kn_adam(model, kn_adam_defaults(1e-2));
    for (int epoch = 1; epoch <= 300; epoch++) {
        kn_scope s = kn_scope_begin();          /* this step's tensors */
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(model, x), y);
        kn_optim_zero_grad(opt);
        kn_backward(loss);
        kn_optim_step(opt);
        if (epoch % 100 == 0) printf("epoch %d: loss %.4f\n", epoch, kn_item(loss));
        kn_scope_end(s);
    }
    kn_tensor *right = kn_eq(kn_argmax(kn_module_forward(model, x), 1, false), y);
    double accuracy = kn_item(kn_mean_all(kn_cast(right, KN_F32)));
    if (kn_error_code() != KN_OK) {             /* ops pass errors on: one check at the end */
        fprintf(stderr, "quickstart: %s\n", kn_error());
        return 1;
    }
    printf("train accuracy %.3f\n", accuracy);
    kn_optim_free(opt);
    kn_module_free(model);
    kn_scope_end(all);
    return 0;
}
