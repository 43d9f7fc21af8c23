/* Complex operands at the kernels: rewritten to real views (core/complex.h). */
#include "complex.h"

#include <stdatomic.h>

static atomic_bool made; /* sticky: set by the first complex tensor */

void kn__complex_note(kn_dtype dt) {
    if (kn_dtype_is_complex(dt)) atomic_store_explicit(&made, true, memory_order_relaxed);
}
bool kn__complex_made(void) { return atomic_load_explicit(&made, memory_order_relaxed); }

typedef struct {
    bool any;
} any_complex;

static kn_status find_complex(void *ctx, kn_operand *v, kn_role role, const char *field) {
    (void)role, (void)field;
    if (kn_operand_present(v) && kn_dtype_is_complex(v->dtype)) ((any_complex *)ctx)->any = true;
    return KN_OK;
}

bool kn__args_complex(kn_op op, void *args) {
    any_complex c = {false};
    kn__op_views(op, args, find_complex, &c);
    return c.any;
}

kn_operand kn__operand_real_view(const kn_operand *v) {
    kn_operand r = *v;
    r.dtype = kn_dtype_real(v->dtype);
    for (int d = 0; d < v->ndim; d++) r.stride[d] = 2 * v->stride[d];
    r.shape[v->ndim] = 2;
    r.stride[v->ndim] = 1;
    r.ndim = v->ndim + 1;
    return r;
}

kn_operand kn__operand_part(const kn_operand *v, int part) {
    kn_operand r = *v;
    r.dtype = kn_dtype_real(v->dtype);
    for (int d = 0; d < v->ndim; d++) r.stride[d] = 2 * v->stride[d];
    if (part) r.data = (char *)v->data + kn_dtype_size(r.dtype);
    return r;
}

static kn_status unsupported(kn_op op, const void *args, kn_dtype dt) {
    return kn__err(KN_ERR_DTYPE,
                   "%s: %s is not supported (complex tensors take copies, views, +, -, scaling by a real, "
                   "kn_real/kn_imag/kn_abs and the FFT ops)",
                   kn__op_call_name(op, args), kn_dtype_name(dt));
}

/* The first complex operand's dtype. */
typedef struct {
    kn_dtype dt;
    bool found;
} first_complex;
static kn_status find_first(void *ctx, kn_operand *v, kn_role role, const char *field) {
    (void)role, (void)field;
    first_complex *c = ctx;
    if (!c->found && kn_operand_present(v) && kn_dtype_is_complex(v->dtype)) c->dt = v->dtype, c->found = true;
    return KN_OK;
}

static bool all_complex(kn_dtype dt, int n, const kn_operand *const *vs) {
    for (int i = 0; i < n; i++)
        if (vs[i]->dtype != dt || vs[i]->ndim >= KN_MAX_DIMS) return false;
    return true;
}

static kn_status copy(kn_device dev, const kn_copy_args *a) {
    if (!kn_dtype_is_complex(a->out.dtype))
        return kn__err(KN_ERR_DTYPE, "copy: cannot convert %s to %s (the imaginary part would be lost; take kn_real)",
                       kn_dtype_name(a->x.dtype), kn_dtype_name(a->out.dtype));
    if (kn_dtype_is_complex(a->x.dtype)) {
        if (a->out.ndim < KN_MAX_DIMS) { /* one copy of the pairs */
            kn_copy_args r = {.out = kn__operand_real_view(&a->out), .x = kn__operand_real_view(&a->x)};
            return kn__launch(KN_OP_COPY, dev, &r);
        }
        kn_status s = KN_OK;
        for (int part = 0; part < 2 && s == KN_OK; part++) {
            kn_copy_args r = {.out = kn__operand_part(&a->out, part), .x = kn__operand_part(&a->x, part)};
            s = kn__launch(KN_OP_COPY, dev, &r);
        }
        return s;
    }
    /* A real source: the real parts take it, the imaginary parts are zero. */
    kn_copy_args re = {.out = kn__operand_part(&a->out, 0), .x = a->x};
    kn_status s = kn__launch(KN_OP_COPY, dev, &re);
    kn_fill_args im = {.out = kn__operand_part(&a->out, 1), .value = 0, .step = 0};
    return s == KN_OK ? kn__launch(KN_OP_FILL, dev, &im) : s;
}

kn_status kn__launch_complex(kn_op op, kn_device dev, void *args) {
    first_complex fc = {KN_F32, false};
    kn__op_views(op, args, find_first, &fc);
    switch (op) {
    case KN_OP_COPY: return copy(dev, args);
    case KN_OP_FILL: {
        const kn_fill_args *a = args;
        kn_fill_args re = {.out = kn__operand_part(&a->out, 0), .value = a->value, .step = a->step};
        kn_fill_args im = {.out = kn__operand_part(&a->out, 1), .value = 0, .step = 0};
        kn_status s = kn__launch(KN_OP_FILL, dev, &re);
        return s == KN_OK ? kn__launch(KN_OP_FILL, dev, &im) : s;
    }
    case KN_OP_BINARY: {
        const kn_binary_args *a = args;
        const kn_operand *vs[3] = {&a->out, &a->a, &a->b};
        if ((a->fn != KN_BINARY_ADD && a->fn != KN_BINARY_SUB) || !all_complex(a->out.dtype, 3, vs)) break;
        kn_binary_args r = {.out = kn__operand_real_view(&a->out), .a = kn__operand_real_view(&a->a),
                            .b = kn__operand_real_view(&a->b), .fn = a->fn};
        return kn__launch(KN_OP_BINARY, dev, &r);
    }
    case KN_OP_UNARY: {
        const kn_unary_args *a = args;
        const kn_operand *vs[2] = {&a->out, &a->x};
        if ((a->fn != KN_UNARY_NEG && a->fn != KN_UNARY_MUL_SCALAR) || !all_complex(a->out.dtype, 2, vs)) break;
        kn_unary_args r = {.out = kn__operand_real_view(&a->out), .x = kn__operand_real_view(&a->x), .fn = a->fn,
                           .p0 = a->p0, .p1 = a->p1};
        return kn__launch(KN_OP_UNARY, dev, &r);
    }
    /* The optimizers update a complex parameter as its real pairs, each part
     * on its own (PyTorch's Adam and SGD do the same through view_as_real):
     * elementwise, so the real views give exactly that. */
    case KN_OP_ADAM: {
        const kn_adam_args *a = args;
        const kn_operand *vs[4] = {&a->param, &a->m, &a->v, &a->grad};
        if (!all_complex(a->param.dtype, 4, vs)) break;
        kn_adam_args r = *a;
        r.param = kn__operand_real_view(&a->param), r.m = kn__operand_real_view(&a->m);
        r.v = kn__operand_real_view(&a->v), r.grad = kn__operand_real_view(&a->grad);
        return kn__launch(KN_OP_ADAM, dev, &r);
    }
    case KN_OP_SGD: {
        const kn_sgd_args *a = args;
        bool buf = a->buf.data != NULL;
        const kn_operand *vs[3] = {&a->param, &a->grad, &a->buf};
        if (!all_complex(a->param.dtype, buf ? 3 : 2, vs)) break;
        kn_sgd_args r = *a;
        r.param = kn__operand_real_view(&a->param), r.grad = kn__operand_real_view(&a->grad);
        if (buf) r.buf = kn__operand_real_view(&a->buf);
        return kn__launch(KN_OP_SGD, dev, &r);
    }
    default: break;
    }
    return unsupported(op, args, fc.dt);
}
