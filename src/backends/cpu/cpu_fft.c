/* The FFT op on the CPU (core/ops.def): each line along dim is gathered
 * into complex doubles, transformed by its cached plan (cpu_fft_plan.c),
 * scaled and stored; lines run in parallel. */
#include "cpu_fft.h"

#include <stdatomic.h>
#include <stdlib.h>

typedef struct {
    const kn_fft_args *a;
    const kn_fft_plan *plan;
    int rest[KN_MAX_DIMS]; /* the dims other than dim and the pair dim */
    int n_rest;
    atomic_bool failed;
} fft_job;

static void lines(int64_t begin, int64_t end, void *ctx) {
    fft_job *j = ctx;
    const kn_fft_args *a = j->a;
    int64_t n = a->x.shape[a->dim];
    size_t ns = kn__fft_scratch_len(j->plan);
    kn_cpx *buf = malloc((2 * (size_t)n + ns) * sizeof *buf);
    if (!buf) {
        atomic_store(&j->failed, true);
        return;
    }
    kn_cpx *in = buf, *out = buf + n, *scratch = buf + 2 * n;
    bool f64 = a->x.dtype == KN_F64;
    int64_t xs = a->x.stride[a->dim], os = a->out.stride[a->dim];
    int64_t xp = a->x.stride[a->x.ndim - 1], op = a->out.stride[a->out.ndim - 1];
    for (int64_t l = begin; l < end; l++) {
        int64_t xo = 0, oo = 0, rem = l;
        for (int r = j->n_rest - 1; r >= 0; r--) {
            int d = j->rest[r];
            int64_t i = rem % a->x.shape[d];
            rem /= a->x.shape[d];
            xo += i * a->x.stride[d];
            oo += i * a->out.stride[d];
        }
        if (f64) {
            const double *x = (const double *)a->x.data + xo;
            for (int64_t k = 0; k < n; k++) in[k] = (kn_cpx){x[k * xs], x[k * xs + xp]};
        } else {
            const float *x = (const float *)a->x.data + xo;
            for (int64_t k = 0; k < n; k++) in[k] = (kn_cpx){x[k * xs], x[k * xs + xp]};
        }
        kn__fft_exec(j->plan, in, out, a->inverse != 0, scratch);
        double s = a->scale;
        if (f64) {
            double *y = (double *)a->out.data + oo;
            for (int64_t k = 0; k < n; k++) y[k * os] = out[k].re * s, y[k * os + op] = out[k].im * s;
        } else {
            float *y = (float *)a->out.data + oo;
            for (int64_t k = 0; k < n; k++)
                y[k * os] = (float)(out[k].re * s), y[k * os + op] = (float)(out[k].im * s);
        }
    }
    free(buf);
}

kn_status kn__cpu_fft(int device, const void *args) {
    (void)device;
    const kn_fft_args *a = args;
    if (a->x.dtype != a->out.dtype || (a->x.dtype != KN_F32 && a->x.dtype != KN_F64))
        return kn__err(KN_ERR_DTYPE, "fft: the pairs must be float32 or float64, got %s",
                       kn_dtype_name(a->x.dtype));
    int nd = a->x.ndim;
    if (nd < 2 || a->dim < 0 || a->dim >= nd - 1 || a->x.shape[nd - 1] != 2)
        return kn__err(KN_ERR_SHAPE, "fft: expected pairs [..., 2] and a dim before the last");
    int64_t n = a->x.shape[a->dim], total = kn_operand_numel(&a->x);
    if (total == 0) return KN_OK;
    fft_job j = {.a = a};
    for (int d = 0; d < nd - 1; d++)
        if (d != a->dim) j.rest[j.n_rest++] = d;
    bool owned;
    j.plan = kn__fft_plan(n, &owned);
    if (!j.plan) return kn__err(KN_ERR_OOM, "fft: out of memory for a plan of length %lld", (long long)n);
    int64_t n_lines = total / (2 * n);
    kn__parallel_for(n_lines, 16384 / n + 1, lines, &j);
    kn__fft_plan_release(j.plan, owned);
    return atomic_load(&j.failed) ? kn__err(KN_ERR_OOM, "fft: out of memory") : KN_OK;
}
