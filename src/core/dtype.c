/* dtypes: sizes, names, promotion and element conversion. */
#include "internal.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name, *short_name;
    size_t size;
} info[KN_DTYPE_COUNT] = {
    [KN_F32] = {"float32", "f32", 4}, [KN_F16] = {"float16", "f16", 2},
    [KN_BF16] = {"bfloat16", "bf16", 2}, [KN_F64] = {"float64", "f64", 8},
    [KN_I32] = {"int32", "i32", 4}, [KN_I64] = {"int64", "i64", 8},
    [KN_U8] = {"uint8", "u8", 1}, [KN_BOOL] = {"bool", "bool", 1},
    [KN_C64] = {"complex64", "c64", 8}, [KN_C128] = {"complex128", "c128", 16},
};

size_t kn_dtype_size(kn_dtype dt) { return (unsigned)dt < KN_DTYPE_COUNT ? info[dt].size : 0; }
const char *kn_dtype_name(kn_dtype dt) {
    return (unsigned)dt < KN_DTYPE_COUNT ? info[dt].name : "invalid";
}
bool kn_dtype_is_float(kn_dtype dt) {
    return dt == KN_F32 || dt == KN_F16 || dt == KN_BF16 || dt == KN_F64;
}

bool kn_dtype_is_complex(kn_dtype dt) { return dt == KN_C64 || dt == KN_C128; }
kn_dtype kn_dtype_real(kn_dtype dt) { return dt == KN_C64 ? KN_F32 : dt == KN_C128 ? KN_F64 : dt; }
kn_dtype kn_dtype_complex(kn_dtype dt) { return dt == KN_F64 || dt == KN_C128 ? KN_C128 : KN_C64; }

int kn_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < KN_DTYPE_COUNT; i++)
        if (!strcmp(name, info[i].name) || !strcmp(name, info[i].short_name)) return i;
    if (!strcmp(name, "float")) return KN_F32;
    if (!strcmp(name, "double")) return KN_F64;
    if (!strcmp(name, "half")) return KN_F16;
    if (!strcmp(name, "long")) return KN_I64;
    if (!strcmp(name, "int")) return KN_I32;
    if (!strcmp(name, "cfloat")) return KN_C64;
    if (!strcmp(name, "cdouble")) return KN_C128;
    return -1;
}

/* Rank in PyTorch's promotion lattice: bool < u8 < i32 < i64 < f16/bf16 < f32 < f64. */
static int rank(kn_dtype d) {
    switch (d) {
    case KN_BOOL: return 0;
    case KN_U8: return 1;
    case KN_I32: return 2;
    case KN_I64: return 3;
    case KN_F16: case KN_BF16: return 4;
    case KN_F32: return 5;
    case KN_F64: return 6;
    default: return -1;
    }
}

kn_dtype kn_dtype_promote(kn_dtype a, kn_dtype b) {
    if (a == b) return a;
    if (kn_dtype_is_complex(a) || kn_dtype_is_complex(b)) {
        /* The complex type of the wider float part (integers and 16-bit floats fit in c64). */
        bool wide = a == KN_C128 || b == KN_C128 || a == KN_F64 || b == KN_F64;
        return wide ? KN_C128 : KN_C64;
    }
    if ((a == KN_F16 && b == KN_BF16) || (a == KN_BF16 && b == KN_F16)) return KN_F32;
    return rank(a) >= rank(b) ? a : b;
}
