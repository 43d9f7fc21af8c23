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

/* Reduce on plateau, as torch.optim.lr_scheduler.ReduceLROnPlateau: step it
 * with a metric (kn_sched_plateau_step, once an epoch); after more than
 * `patience` epochs without improvement, lr = max(lr * factor, min_lr). */
typedef enum { KN_PLATEAU_MIN = 0, KN_PLATEAU_MAX } kn_plateau_mode;
typedef struct {
    kn_plateau_mode mode; /* min: lower is better (a loss); max: higher (an accuracy) */
    double factor;        /* in (0, 1); default 0.1 */
    int patience;         /* epochs without improvement before a cut; default 10 */
    double threshold;     /* the improvement that counts, relative to best; default 1e-4 */
    bool threshold_abs;   /* the threshold is absolute (PyTorch's threshold_mode 'abs') */
    int cooldown;         /* epochs after a cut in which bad epochs do not count; default 0 */
    double min_lr;        /* default 0 */
    double eps;           /* a cut smaller than this is not made; default 1e-8 */
} kn_plateau_opts;
kn_plateau_opts kn_plateau_defaults(void);
kn_sched *kn_sched_plateau(kn_optim *o, kn_plateau_opts opts);
/* Takes the epoch's metric; returns the (possibly cut) lr. Freed by kn_sched_free. */
double kn_sched_plateau_step(kn_sched *s, double metric);
/* Its state, to save with a checkpoint and set again on resume. */
typedef struct {
    double best;          /* the best metric so far (+inf for min, -inf for max, before any) */
    int num_bad_epochs;   /* epochs since the last improvement or cut */
    int cooldown_counter; /* epochs of cooldown left */
    int reductions;       /* cuts made so far */
} kn_plateau_state;
kn_status kn_sched_plateau_state(const kn_sched *s, kn_plateau_state *out);
kn_status kn_sched_plateau_set_state(kn_sched *s, const kn_plateau_state *st);

/* ---- gradient clipping (torch.nn.utils), on the gradients' devices ----------
 * Parameters without a gradient are skipped. */
/* Scales the gradients so that their joint norm is at most max_norm:
 * norm_type p > 0 (2: Euclidean), or INFINITY (the largest |g|). Returns the
 * norm before clipping (reading it synchronizes), or -1 on error. A
 * non-finite norm is an error with the gradients unchanged when
 * error_if_nonfinite; else a warning (once), and the gradients are scaled as
 * PyTorch does (by NaN, or by 0 for an infinite norm). */
double kn_clip_grad_norm(int n, kn_tensor *const *params, double max_norm, double norm_type,
                         bool error_if_nonfinite);
double kn_module_clip_grad_norm(kn_module *m, double max_norm, double norm_type, bool error_if_nonfinite);
/* Clamps every gradient element to [-clip, clip]. */
kn_status kn_clip_grad_value(int n, kn_tensor *const *params, double clip);
kn_status kn_module_clip_grad_value(kn_module *m, double clip);

#ifdef __cplusplus
}
#endif
#endif
