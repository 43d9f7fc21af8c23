/* kiln — optimizers and learning-rate schedules. */
#ifndef KILN_OPTIM_H
#define KILN_OPTIM_H

#include "nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_optim kn_optim;

typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
} kn_sgd_opts;

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} kn_adam_opts;

kn_sgd_opts kn_sgd_defaults(double lr);   /* no momentum, no decay */
kn_adam_opts kn_adam_defaults(double lr); /* betas (0.9, 0.999), eps 1e-8, no decay */
/* AdamW's defaults as in PyTorch: Adam's, with weight decay 0.01. */
kn_adam_opts kn_adamw_defaults(double lr);

/* Over every parameter of m, or over an explicit list. */
kn_optim *kn_sgd(kn_module *m, kn_sgd_opts opts);
kn_optim *kn_sgd_params(int n, kn_tensor *const *params, kn_sgd_opts opts);
/* Adam adds weight decay to the gradient (L2); AdamW decays the weights. */
kn_optim *kn_adam(kn_module *m, kn_adam_opts opts);
kn_optim *kn_adam_params(int n, kn_tensor *const *params, kn_adam_opts opts);
kn_optim *kn_adamw(kn_module *m, kn_adam_opts opts);
kn_optim *kn_adamw_params(int n, kn_tensor *const *params, kn_adam_opts opts);

/* Updates every parameter that has a gradient. */
kn_status kn_optim_step(kn_optim *o);
void kn_optim_zero_grad(kn_optim *o);
double kn_optim_lr(const kn_optim *o);
void kn_optim_set_lr(kn_optim *o, double lr);
int64_t kn_optim_steps(const kn_optim *o);
void kn_optim_free(kn_optim *o);

/* ---- schedules: call kn_sched_step once per epoch (or per step) ----------- */
typedef struct kn_sched kn_sched;
/* lr = base * gamma^(floor(t / step_size)) */
kn_sched *kn_sched_step_lr(kn_optim *o, int64_t step_size, double gamma);
/* lr = eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2 */
kn_sched *kn_sched_cosine(kn_optim *o, int64_t t_max, double eta_min);
/* Linear warm-up from start_factor*base to base over warmup steps, then
 * `after` (may be NULL: constant), whose clock starts when warm-up ends. */
kn_sched *kn_sched_warmup(kn_optim *o, int64_t warmup, double start_factor, kn_sched *after);
/* Advances one step and sets the optimizer's lr; returns the new lr. */
double kn_sched_step(kn_sched *s);
void kn_sched_free(kn_sched *s); /* frees `after` too */

#ifdef __cplusplus
}
#endif
#endif
