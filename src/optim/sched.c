/* Learning-rate schedules: step decay, cosine annealing, linear warm-up, and
 * reduce-on-plateau (driven by a metric instead of the clock). */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>

typedef enum { SCHED_STEP, SCHED_COSINE, SCHED_WARMUP, SCHED_PLATEAU } sched_kind;

struct kn_sched {
    sched_kind kind;
    kn_optim *opt;
    double base;
    int64_t t;
    int64_t n;      /* step_size, t_max or warm-up length */
    double a;       /* gamma, eta_min or start factor */
    kn_sched *after;
    kn_plateau_opts plateau; /* SCHED_PLATEAU: the options and the state */
    kn_plateau_state ps;
};

static kn_sched *make(const char *name, kn_optim *o, sched_kind kind, int64_t n, double a) {
    if (!o) return kn__err_null(name), NULL;
    if (n <= 0) {
        kn__err(KN_ERR_INVALID, "%s: the period must be positive, got %lld", name, (long long)n);
        return NULL;
    }
    kn_sched *s = calloc(1, sizeof *s);
    if (!s) return kn__err(KN_ERR_OOM, "%s: out of memory", name), NULL;
    *s = (kn_sched){.kind = kind, .opt = o, .base = kn_optim_lr(o), .n = n, .a = a};
    return s;
}

kn_sched *kn_sched_step_lr(kn_optim *o, int64_t step_size, double gamma) {
    return make("step_lr", o, SCHED_STEP, step_size, gamma);
}

kn_sched *kn_sched_cosine(kn_optim *o, int64_t t_max, double eta_min) {
    return make("cosine", o, SCHED_COSINE, t_max, eta_min);
}

kn_sched *kn_sched_warmup(kn_optim *o, int64_t warmup, double start_factor, kn_sched *after) {
    if (after && after->kind == SCHED_PLATEAU) {
        kn_sched_free(after);
        kn__err(KN_ERR_INVALID, "warmup: a plateau schedule cannot follow a warm-up (step it by itself)");
        return NULL;
    }
    kn_sched *s = make("warmup", o, SCHED_WARMUP, warmup, start_factor);
    if (!s) {
        kn_sched_free(after);
        return NULL;
    }
    s->after = after;
    kn_optim_set_lr(o, s->base * start_factor);
    return s;
}

static double lr_at(const kn_sched *s, int64_t t) {
    switch (s->kind) {
    case SCHED_STEP: return s->base * pow(s->a, (double)(t / s->n));
    case SCHED_COSINE: {
        int64_t tt = t < s->n ? t : s->n;
        return s->a + (s->base - s->a) * (1 + cos(M_PI * (double)tt / (double)s->n)) / 2;
    }
    case SCHED_WARMUP:
        if (t < s->n) return s->base * (s->a + (1 - s->a) * (double)t / (double)s->n);
        return s->after ? lr_at(s->after, t - s->n) : s->base;
    case SCHED_PLATEAU: return kn_optim_lr(s->opt);
    }
    return s->base;
}

double kn_sched_step(kn_sched *s) {
    if (!s) return kn__err_null("sched_step"), NAN;
    if (s->kind == SCHED_PLATEAU) {
        kn__err(KN_ERR_INVALID, "sched_step: a plateau schedule steps with a metric (kn_sched_plateau_step)");
        return NAN;
    }
    s->t++;
    double lr = lr_at(s, s->t);
    kn_optim_set_lr(s->opt, lr);
    return lr;
}

void kn_sched_free(kn_sched *s) {
    if (!s) return;
    kn_sched_free(s->after);
    free(s);
}

/* ---- reduce on plateau (torch.optim.lr_scheduler.ReduceLROnPlateau) ------------------------ */
kn_plateau_opts kn_plateau_defaults(void) {
    return (kn_plateau_opts){.mode = KN_PLATEAU_MIN, .factor = 0.1, .patience = 10, .threshold = 1e-4,
                             .threshold_abs = false, .cooldown = 0, .min_lr = 0, .eps = 1e-8};
}

kn_sched *kn_sched_plateau(kn_optim *o, kn_plateau_opts opts) {
    const char *op = "sched_plateau";
    if (!o) return kn__err_null(op), NULL;
    const char *bad = opts.mode != KN_PLATEAU_MIN && opts.mode != KN_PLATEAU_MAX ? "mode must be min or max"
                      : !(opts.factor > 0 && opts.factor < 1)                    ? "factor must be in (0, 1)"
                      : opts.patience < 0 || opts.cooldown < 0           ? "patience and cooldown must be >= 0"
                      : !(opts.threshold >= 0) || isinf(opts.threshold)  ? "threshold must be >= 0 and finite"
                      : !(opts.min_lr >= 0) || !(opts.eps >= 0)          ? "min_lr and eps must be >= 0"
                                                                         : NULL;
    if (bad) return kn__err(KN_ERR_INVALID, "%s: %s", op, bad), NULL;
    kn_sched *s = make(op, o, SCHED_PLATEAU, 1, 0);
    if (!s) return NULL;
    s->plateau = opts;
    s->ps = (kn_plateau_state){.best = opts.mode == KN_PLATEAU_MIN ? INFINITY : -INFINITY};
    return s;
}

/* Is metric an improvement on best? The threshold is taken from best's
 * magnitude (rel) or as is (abs). PyTorch's rel form, best * (1 -+ threshold),
 * is the same for a positive best; for a negative one it would count a slight
 * worsening as progress, so the magnitude is used. NaN is never better. */
static bool plateau_better(const kn_plateau_opts *o, double metric, double best) {
    if (isinf(best)) return o->mode == KN_PLATEAU_MIN ? metric < best : metric > best;
    double margin = o->threshold_abs ? o->threshold : o->threshold * fabs(best);
    return o->mode == KN_PLATEAU_MIN ? metric < best - margin : metric > best + margin;
}

double kn_sched_plateau_step(kn_sched *s, double metric) {
    if (!s) return kn__err_null("sched_plateau_step"), NAN;
    if (s->kind != SCHED_PLATEAU) {
        kn__err(KN_ERR_INVALID, "sched_plateau_step: not a plateau schedule (use kn_sched_step)");
        return NAN;
    }
    const kn_plateau_opts *o = &s->plateau;
    kn_plateau_state *st = &s->ps;
    s->t++;
    if (plateau_better(o, metric, st->best)) {
        st->best = metric;
        st->num_bad_epochs = 0;
    } else {
        st->num_bad_epochs++;
    }
    if (st->cooldown_counter > 0) { /* bad epochs in the cooldown do not count */
        st->cooldown_counter--;
        st->num_bad_epochs = 0;
    }
    if (st->num_bad_epochs > o->patience) {
        double old = kn_optim_lr(s->opt), lr = fmax(old * o->factor, o->min_lr);
        if (old - lr > o->eps) {
            kn_optim_set_lr(s->opt, lr);
            st->reductions++;
        }
        st->cooldown_counter = o->cooldown;
        st->num_bad_epochs = 0;
    }
    return kn_optim_lr(s->opt);
}

kn_status kn_sched_plateau_state(const kn_sched *s, kn_plateau_state *out) {
    if (!s || !out) return kn__err(KN_ERR_NULL, "sched_plateau_state: %s is NULL", s ? "out" : "schedule");
    if (s->kind != SCHED_PLATEAU) return kn__err(KN_ERR_INVALID, "sched_plateau_state: not a plateau schedule");
    *out = s->ps;
    return KN_OK;
}

kn_status kn_sched_plateau_set_state(kn_sched *s, const kn_plateau_state *st) {
    if (!s || !st) return kn__err(KN_ERR_NULL, "sched_plateau_set_state: %s is NULL", s ? "state" : "schedule");
    if (s->kind != SCHED_PLATEAU) return kn__err(KN_ERR_INVALID, "sched_plateau_set_state: not a plateau schedule");
    if (st->num_bad_epochs < 0 || st->cooldown_counter < 0 || st->reductions < 0 || isnan(st->best))
        return kn__err(KN_ERR_INVALID, "sched_plateau_set_state: invalid state (negative counters or a NaN best)");
    s->ps = *st;
    return KN_OK;
}
