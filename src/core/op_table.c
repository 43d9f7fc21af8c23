/* What the op table (ops.def) generates beyond the types of core/backend.h:
 * names, tiers, argument sizes, and a walk over each op's views. */
#include "internal.h"

static const char *const op_names[KN_OP_COUNT] = {
#define KN_OP(ID, name, tier, fields) #name,
#include "ops.def"
#undef KN_OP
};

static const kn_op_tier op_tiers[KN_OP_COUNT] = {
#define KN_OP(ID, name, tier, fields) KN_TIER_##tier,
#include "ops.def"
#undef KN_OP
};

static const size_t op_sizes[KN_OP_COUNT] = {
#define KN_OP(ID, name, tier, fields) sizeof(kn_##name##_args),
#include "ops.def"
#undef KN_OP
};

const char *kn__op_name(kn_op op) { return (unsigned)op < KN_OP_COUNT ? op_names[op] : "?"; }
kn_op_tier kn__op_tier(kn_op op) { return (unsigned)op < KN_OP_COUNT ? op_tiers[op] : KN_TIER_PRIMITIVE; }
size_t kn__op_args_size(kn_op op) { return (unsigned)op < KN_OP_COUNT ? op_sizes[op] : 0; }

/* One visitor per op: the field macros expand to calls on `a`, the op's
 * argument struct. */
#define IN(f) if ((s = fn(ctx, &a->f, KN_ROLE_IN, #f)) != KN_OK) return s;
#define OUT(f) if ((s = fn(ctx, &a->f, KN_ROLE_OUT, #f)) != KN_OK) return s;
#define INS(f, n)                                                                        \
    for (int64_t k = 0; k < a->n; k++)                                                   \
        if ((s = fn(ctx, (kn_operand *)&a->f[k], KN_ROLE_IN, #f)) != KN_OK) return s;
#define OUTS(f, n)                                                                       \
    for (int64_t k = 0; k < a->n; k++)                                                   \
        if ((s = fn(ctx, (kn_operand *)&a->f[k], KN_ROLE_OUT, #f)) != KN_OK) return s;
#define INT(f)
#define REAL(f)
#define KN_OP(ID, name, tier, fields)                                                     \
    static kn_status visit_##name(kn_##name##_args *a, kn_operand_fn fn, void *ctx) {       \
        kn_status s = KN_OK;                                                              \
        fields                                                                            \
        return s;                                                                         \
    }
#include "ops.def"
#undef KN_OP
#undef IN
#undef OUT
#undef INS
#undef OUTS
#undef INT
#undef REAL

kn_status kn__op_views(kn_op op, void *args, kn_operand_fn fn, void *ctx) {
    switch (op) {
#define KN_OP(ID, name, tier, fields) \
    case KN_OP_##ID: return visit_##name((kn_##name##_args *)args, fn, ctx);
#include "ops.def"
#undef KN_OP
    default: return kn__err(KN_ERR_INVALID, "op %d: no such op", (int)op);
    }
}

/* ---- names for messages and fallback counters ------------------------------------------ */
static const char *unary_names[KN_UNARY_COUNT] = {
    "neg", "exp", "log", "sqrt", "abs", "relu", "leaky_relu", "gelu", "sigmoid", "tanh",
    "softplus", "clamp", "pow", "add", "mul", "rsub", "rsqrt", "sin", "cos", "tan"};
static const char *binary_names[KN_BINARY_COUNT] = {"add", "sub", "mul", "div", "pow", "maximum",
                                                    "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
static const char *reduce_names[KN_REDUCE_COUNT] = {"sum", "mean", "max", "min", "var", "argmax",
                                                    "argmin"};

const char *kn__unary_name(kn_unary_fn f) {
    return (unsigned)f < KN_UNARY_COUNT ? unary_names[f] : "unary";
}
const char *kn__binary_name(kn_binary_fn f) {
    return (unsigned)f < KN_BINARY_COUNT ? binary_names[f] : "binary";
}
const char *kn__reduce_name(kn_reduce_fn f) {
    return (unsigned)f < KN_REDUCE_COUNT ? reduce_names[f] : "reduce";
}

const char *kn__op_call_name(kn_op op, const void *args) {
    switch (op) {
    case KN_OP_UNARY: return kn__unary_name((kn_unary_fn)((const kn_unary_args *)args)->fn);
    case KN_OP_BINARY: return kn__binary_name((kn_binary_fn)((const kn_binary_args *)args)->fn);
    case KN_OP_REDUCE: return kn__reduce_name((kn_reduce_fn)((const kn_reduce_args *)args)->fn);
    default: return kn__op_name(op);
    }
}
