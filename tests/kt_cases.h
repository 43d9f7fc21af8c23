/* The backend harness's case table (kt_cases.c) and its vocabulary: layouts,
 * dtype sets, flags, inputs and the case record test_backend_ops.c runs. */
#ifndef KT_CASES_H
#define KT_CASES_H
#include "kn_test.h"

/* ---- the table's vocabulary ---------------------------------------------------------------- */
enum { CONTIG, TRANSPOSED, STRIDED, OFFSET, BROADCAST, N_LAYOUTS };
extern const char *const kt_layout_name[N_LAYOUTS];
#define L_ALL ((1u << N_LAYOUTS) - 1)
#define L_C (1u << CONTIG)
#define L_CTS ((1u << CONTIG) | (1u << TRANSPOSED) | (1u << STRIDED))
/* Not broadcast: a batch of one repeated row has no variance to normalize by. */
#define L_NOB (L_ALL & ~(1u << BROADCAST))

#define BIT(dt) (1u << (dt))
#define FLOATS (BIT(KN_F32) | BIT(KN_F64) | BIT(KN_F16) | BIT(KN_BF16))
#define F32_64 (BIT(KN_F32) | BIT(KN_F64))
#define INTS (BIT(KN_I32) | BIT(KN_I64) | BIT(KN_U8))
#define NUMERIC (FLOATS | INTS)
#define ALL (NUMERIC | BIT(KN_BOOL))

/* Case flags. */
enum {
    GRAD = 1,      /* --grad compares gradients of the float inputs */
    GRADCHECK = 2, /* --grad also runs finite differences in float64 (shapes clipped to 4) */
    EXACT = 4,     /* bit-equal results (float64: 1e-15, for a device's libm) */
    NO_REF = 8,    /* no float64 reference (random draws: another dtype draws other numbers) */
    GRAPH = 16,    /* needs graph capture (skipped where the device has none) */
    HOST_OUT = 32, /* results are host tensors (losses read back) */
    EXACT_F64 = 64, /* EXACT only where the device computes in float64, as the CPU's
                       reference formula does (normal draws); float tolerance elsewhere */
    OWN_FFT = 128,  /* a length only a device's own FFT kernel can take (skipped on composites) */
};

/* Inputs. */
enum { KT_DATA = 0, KT_INDEX, KT_CODES, KT_VALUES };
typedef struct {
    int kind;
    int dt; /* -1: the case's dtype */
    int nd;
    int64_t shape[4];
    double lo, hi;      /* values: uniform in [lo, hi) (integers: see gen_values) */
    bool fixed;         /* updated in place (running stats, counts): contiguous, no gradient */
    bool nograd;        /* a float input whose gradient is not wanted (class weights) */
    const double *vals; /* KT_VALUES */
} kt_in;

#define MAX_IN 8
#define MAX_OUT 16
struct kt_case;
typedef struct {
    const struct kt_case *c;
    kn_device dev;
    kn_dtype dt; /* the case's dtype (float64 in the reference run) */
    bool ref;    /* the float64 reference run: a builder may compute it directly (naive loops) */
} kt_ctx;
typedef int (*kt_build)(const kt_ctx *k, kn_tensor **x, kn_tensor **out);

typedef struct kt_case {
    const char *name;
    kt_build build;
    uint32_t dtypes, layouts;
    unsigned flags;
    int n_in;
    kt_in in[MAX_IN];
    int p[4];        /* builder parameters */
    double r;        /* a real parameter (dropout p) */
    double tol;      /* scales the dtype tolerance (0: 1) */
    const char *err; /* an error case: every device fails with this message */
} kt_case;

#define SH(...) .nd = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), .shape = {__VA_ARGS__}
#define D(lo_, hi_, ...) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, SH(__VA_ARGS__)}
#define D0(lo_, hi_) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, .nd = 0}
#define DT(dt_, lo_, hi_, ...) {.kind = KT_DATA, .dt = dt_, .lo = lo_, .hi = hi_, SH(__VA_ARGS__)}
#define DNG(lo_, hi_, ...) {.kind = KT_DATA, .dt = -1, .lo = lo_, .hi = hi_, .nograd = true, SH(__VA_ARGS__)}
#define FIX(dt_, lo_, hi_, ...) {.kind = KT_DATA, .dt = dt_, .lo = lo_, .hi = hi_, .fixed = true, SH(__VA_ARGS__)}
#define COUNT0 {.kind = KT_VALUES, .dt = KN_I64, .nd = 0, .fixed = true, .vals = (const double[]){3}}
#define IX(dt_, hi_, ...) {.kind = KT_INDEX, .dt = dt_, .lo = 0, .hi = hi_, SH(__VA_ARGS__)}
#define CODES(...) {.kind = KT_CODES, .dt = KN_I64, SH(__VA_ARGS__)}
#define VALS(dt_, v, ...) {.kind = KT_VALUES, .dt = dt_, .vals = (const double[])v, .fixed = true, SH(__VA_ARGS__)}
#define BOOLS(...) {.kind = KT_DATA, .dt = KN_BOOL, SH(__VA_ARGS__)}
#define IN(...) .in = {__VA_ARGS__}, .n_in = (int)(sizeof((kt_in[]){__VA_ARGS__}) / sizeof(kt_in))
#define LIST(...) {__VA_ARGS__}

extern const kt_case kt_cases[];
extern const int kt_case_count;
/* The vision ops' cases (kt_cases_vision.c), run after kt_cases. */
extern const kt_case kt_vision_cases[];
extern const int kt_vision_case_count;
/* The FFT ops' cases (kt_cases_fft.c), run after those. */
extern const kt_case kt_fft_cases[];
extern const int kt_fft_case_count;

#endif
