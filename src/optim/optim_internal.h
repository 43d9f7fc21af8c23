/* kiln — the optimizer's state, shared by optim.c and the checkpoints that
 * save and restore it (checkpoint.c). */
#ifndef KILN_OPTIM_INTERNAL_H
#define KILN_OPTIM_INTERNAL_H

#include "core/internal.h"
#include "kiln/optim.h"

typedef enum { OPT_SGD, OPT_ADAM, OPT_ADAMW } opt_kind;

struct kn_optim {
    opt_kind kind;
    int n;
    kn_tensor **params;
    kn_tensor **state_a; /* Adam m / SGD momentum buffer (lazily made) */
    kn_tensor **state_b; /* Adam v */
    kn_sgd_opts sgd;
    kn_adam_opts adam;
    double lr;
    int64_t steps;
    kn_tensor *step_t; /* t on the parameters' device (Adam), see KN_OP_ADAM */
};

#endif
