/* Learning-rate schedules: step decay, cosine annealing, linear warm-up. */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>

typedef enum { SCHED_STEP, SCHED_COSINE, SCHED_WARMUP } sched_kind;

struct kn_sched {
    sched_kind kind;
    kn_optim *opt;
    double base;
    int64_t t;
    int64_t n;      /* step_size, t_max or warm-up length */
    double a;       /* gamma, eta_min or start factor */
    kn_sched *after;
};

static kn_sched *make(const char *name, kn_optim *o, sched_kind kind, int64_t n, double a) {
    if (!o) return kn__err_null(name), NULL;
    if (n <= 0) {
        kn__err(KN_ERR_INVALID, "%s: the period must be positive, got %lld", name, (long long)n);
        return NULL;
    }
    kn_sched *s = calloc(1, sizeof *s);
    if (!s) return kn__err(KN_ERR_OOM, "%s: out of memory", name), NULL;
    *s = (kn_sched){kind, o, kn_optim_lr(o), 0, n, a, NULL};
    return s;
}

kn_sched *kn_sched_step_lr(kn_optim *o, int64_t step_size, double gamma) {
    return make("step_lr", o, SCHED_STEP, step_size, gamma);
}

kn_sched *kn_sched_cosine(kn_optim *o, int64_t t_max, double eta_min) {
    return make("cosine", o, SCHED_COSINE, t_max, eta_min);
}

kn_sched *kn_sched_warmup(kn_optim *o, int64_t warmup, double start_factor, kn_sched *after) {
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
    }
    return s->base;
}

double kn_sched_step(kn_sched *s) {
    if (!s) return kn__err_null("sched_step"), NAN;
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
