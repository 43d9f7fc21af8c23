/* kiln's own convolution kernels: implicit GEMM, for machines without cuDNN
 * (or KILN_CUDNN=0, or shapes cuDNN has no engine for). The lowered matrix
 * of im2col is never built: each tile of it is gathered from the image
 * straight into shared memory, so the memory a convolution needs is its
 * operands'. Three GEMMs, per group g:
 *   forward       y[k, (n, p)]  = sum over r = (c, a, b)  w[k, r]  * xcol[r, (n, p)]
 *   backward-data dx[c, (n, q)] = sum over r = (k, a, b)  w[k, c, a, b] * dycol[r, (n, q)]
 *   backward-filt dw[k, r]      = sum over (n, p)         dy[k, (n, p)] * xcol[r, (n, p)]
 * where xcol and dycol are gathers (taps in the padding read 0; for the
 * data gradient a tap that no output reaches reads 0). Tiles of 64 x 64
 * outputs, 16 deep, 256 threads of 4 x 4 outputs each, accumulating in
 * float (double for float64). The filter gradient, whose depth (every
 * position of every image) dwarfs its outputs, is split over the depth
 * into partial sums reduced by a second kernel (deterministic: no atomics).
 * Every operand has fewer than 2^31 elements (cuda_conv.c checks), so
 * offsets are 32-bit. */
#include "cuda_common.cuh"
#include "cuda_conv.h"

namespace {

/* Storage type T and accumulation type A of a dtype, with the conversions
 * of cuda_common.cuh (bit-exact with the CPU's). */
template <int DT> struct elt;
template <> struct elt<KN_F32> {
    typedef float T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return v; }
    static __device__ __forceinline__ T out(A v) { return v; }
};
template <> struct elt<KN_F64> {
    typedef double T;
    typedef double A;
    static __device__ __forceinline__ A in(T v) { return v; }
    static __device__ __forceinline__ T out(A v) { return v; }
};
template <> struct elt<KN_F16> {
    typedef uint16_t T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return kc_h2f(v); }
    static __device__ __forceinline__ T out(A v) { return kc_f2h(v); }
};
template <> struct elt<KN_BF16> {
    typedef uint16_t T;
    typedef float A;
    static __device__ __forceinline__ A in(T v) { return kc_b2f(v); }
    static __device__ __forceinline__ T out(A v) { return kc_f2b(v); }
};

/* The geometry in 32 bits, with the products the kernels use. */
struct cg {
    int N, C, H, W, K, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, G;
    int Cg, Kg, KK, OHW, HW;
};

enum { FWD = 0, BDATA = 1, BFILT = 2 };
constexpr int BM = 64, BN = 64, BK = 16, NT = 256;

/* One kernel for the three GEMMs (KIND). Roles: FWD a = w, b = x, out = y;
 * BDATA a = w, b = dy, out = dx; BFILT a = dy, b = x, out = dw (or, when
 * split, partial[split][K * Cg * KK]). A is loaded with the depth index
 * fastest across threads (w rows and dy planes are contiguous along it), B
 * with the column fastest (image rows) except for BFILT, whose depth is the
 * image position. blockIdx.z walks groups x splits. */
template <int DT, int KIND>
__global__ void __launch_bounds__(NT)
    igemm_kernel(cg p, typename elt<DT>::T *out, const typename elt<DT>::T *__restrict__ srca,
                 const typename elt<DT>::T *__restrict__ srcb, const typename elt<DT>::T *__restrict__ bias,
                 typename elt<DT>::A *partial, int splits, int chunk) {
    typedef typename elt<DT>::A A;
    kc_pdl_wait();
    __shared__ A As[BK][BM + 1];
    __shared__ A Bs[BK][BN + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int M = KIND == BDATA ? p.Cg : p.Kg;
    const int NC = KIND == FWD ? p.N * p.OHW : KIND == BDATA ? p.N * p.HW : p.Cg * p.KK;
    const int KD = KIND == FWD ? p.Cg * p.KK : KIND == BDATA ? p.Kg * p.KK : p.N * p.OHW;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int ka = tid % BK; /* A's depth row (and B's, for BFILT) */

    /* B's fixed column(s), decomposed once. FWD/BDATA: one column per thread. */
    int bcol = n0 + tid % BN, bimg = 0, bh = 0, bw = 0;
    bool bcol_ok = bcol < NC;
    if (KIND == FWD && bcol_ok) {
        bimg = bcol / p.OHW;
        int q = bcol - bimg * p.OHW, oh = q / p.OW;
        bh = oh * p.sh - p.ph, bw = (q - oh * p.OW) * p.sw - p.pw;
    } else if (KIND == BDATA && bcol_ok) {
        bimg = bcol / p.HW;
        int q = bcol - bimg * p.HW;
        bh = q / p.W + p.ph, bw = q - (q / p.W) * p.W + p.pw;
    }
    /* BFILT: four columns r = (c, a, b) per thread. */
    int fc[4], fa[4], fb[4];
    bool fok[4];
    if (KIND == BFILT)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int r = n0 + tid / BK + 16 * i;
            fok[i] = r < NC;
            int c = r / p.KK, t = r - c * p.KK, a = t / p.kw;
            fc[i] = c, fa[i] = a * p.dh - p.ph, fb[i] = (t - a * p.kw) * p.dw - p.pw;
        }

    for (int zz = blockIdx.z; zz < p.G * splits; zz += gridDim.z) {
        const int g = zz / splits, split = zz - g * splits;
        const int kbeg = KIND == BFILT ? split * chunk : 0;
        const int kend = KIND == BFILT ? min(KD, kbeg + chunk) : KD;
        A acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) acc[i][j] = 0;

        for (int k0 = kbeg; k0 < kend; k0 += BK) {
            A ra[4], rb[4];
            const int k = k0 + ka;
            /* ---- A ---- */
            if (KIND == FWD) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int m = m0 + tid / BK + 16 * i;
                    ra[i] = m < M && k < kend ? elt<DT>::in(srca[(g * p.Kg + m) * KD + k]) : A(0);
                }
            } else if (KIND == BDATA) {
                int kidx = k / p.KK, t = k - kidx * p.KK;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int m = m0 + tid / BK + 16 * i;
                    ra[i] = m < M && k < kend ? elt<DT>::in(srca[((g * p.Kg + kidx) * p.Cg + m) * p.KK + t]) : A(0);
                }
            }
            /* ---- B (and A for BFILT, which shares the depth index) ---- */
            if (KIND == FWD) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int kk = k0 + tid / BN + 4 * i;
                    A v = 0;
                    if (bcol_ok && kk < kend) {
                        int c = kk / p.KK, t = kk - c * p.KK, a = t / p.kw;
                        int h = bh + a * p.dh, w = bw + (t - a * p.kw) * p.dw;
                        if (h >= 0 && h < p.H && w >= 0 && w < p.W)
                            v = elt<DT>::in(srcb[((bimg * p.C + g * p.Cg + c) * p.H + h) * p.W + w]);
                    }
                    rb[i] = v;
                }
            } else if (KIND == BDATA) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int kk = k0 + tid / BN + 4 * i;
                    A v = 0;
                    if (bcol_ok && kk < kend) {
                        int kidx = kk / p.KK, t = kk - kidx * p.KK, a = t / p.kw;
                        int hn = bh - a * p.dh, wn = bw - (t - a * p.kw) * p.dw; /* oh * sh, ow * sw */
                        if (hn >= 0 && wn >= 0) {
                            int oh = hn / p.sh, ow = wn / p.sw;
                            if (oh * p.sh == hn && ow * p.sw == wn && oh < p.OH && ow < p.OW)
                                v = elt<DT>::in(srcb[((bimg * p.K + g * p.Kg + kidx) * p.OH + oh) * p.OW + ow]);
                        }
                    }
                    rb[i] = v;
                }
            } else {
                bool kok = k < kend;
                int img = kok ? k / p.OHW : 0, q = kok ? k - img * p.OHW : 0, oh = q / p.OW, ow = q - oh * p.OW;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int m = m0 + tid / BK + 16 * i;
                    ra[i] = kok && m < M ? elt<DT>::in(srca[(img * p.K + g * p.Kg + m) * p.OHW + q]) : A(0);
                    A v = 0;
                    if (kok && fok[i]) {
                        int h = oh * p.sh + fa[i], w = ow * p.sw + fb[i];
                        if (h >= 0 && h < p.H && w >= 0 && w < p.W)
                            v = elt<DT>::in(srcb[((img * p.C + g * p.Cg + fc[i]) * p.H + h) * p.W + w]);
                    }
                    rb[i] = v;
                }
            }
            __syncthreads(); /* the previous tile has been used */
#pragma unroll
            for (int i = 0; i < 4; i++) {
                As[ka][tid / BK + 16 * i] = ra[i];
                if (KIND == BFILT) Bs[ka][tid / BK + 16 * i] = rb[i];
                else Bs[tid / BN + 4 * i][tid % BN] = rb[i];
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < BK; kk++) {
                A av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i], bv[i] = Bs[kk][tx + 16 * i];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
            }
        }

        /* ---- store ---- */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int col = n0 + tx + 16 * j;
            if (col >= NC) continue;
            int img = 0, q = col;
            if (KIND == FWD) img = col / p.OHW, q = col - img * p.OHW;
            if (KIND == BDATA) img = col / p.HW, q = col - img * p.HW;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int m = m0 + ty + 16 * i;
                if (m >= M) continue;
                if (KIND == FWD) {
                    A b = bias ? elt<DT>::in(bias[g * p.Kg + m]) : A(0);
                    out[(img * p.K + g * p.Kg + m) * p.OHW + q] = elt<DT>::out(acc[i][j] + b);
                } else if (KIND == BDATA) {
                    out[(img * p.C + g * p.Cg + m) * p.HW + q] = elt<DT>::out(acc[i][j]);
                } else {
                    int at = (g * p.Kg + m) * (p.Cg * p.KK) + col;
                    if (splits > 1) partial[(size_t)split * (size_t)(p.K * p.Cg * p.KK) + at] = acc[i][j];
                    else out[at] = elt<DT>::out(acc[i][j]);
                }
            }
        }
    }
}

/* dw[i] = the sum over splits of partial[s][i], in split order. */
template <int DT>
__global__ void split_reduce(typename elt<DT>::T *out, const typename elt<DT>::A *partial, int splits, int total) {
    kc_pdl_wait();
    KC_LOOP(i, total) {
        typename elt<DT>::A s = 0;
        for (int k = 0; k < splits; k++) s += partial[(size_t)k * total + i];
        out[i] = elt<DT>::out(s);
    }
}

template <int DT>
__global__ void bias_add(typename elt<DT>::T *y, const typename elt<DT>::T *bias, int K, int OHW, int total) {
    kc_pdl_wait();
    KC_LOOP(i, total) {
        int k = (int)((i / OHW) % K);
        y[i] = elt<DT>::out(elt<DT>::in(y[i]) + elt<DT>::in(bias[k]));
    }
}

/* The bias gradient in two deterministic stages, summed in double as the CPU
 * does: block (k, c) sums channel k over images [c*N/S, (c+1)*N/S) into
 * part[k*S + c]; then one thread per channel adds its S parts in order. One
 * block per channel alone left most of the GPU idle when K is small (32
 * blocks on an H100's 132 SMs for MNIST's first layer). */
template <int DT>
__global__ void __launch_bounds__(NT) bias_grad_part(double *part, const typename elt<DT>::T *dy, int N, int K,
                                                     int OHW, int S) {
    kc_pdl_wait();
    __shared__ double sh[32];
    int k = blockIdx.x, c = blockIdx.y;
    long long n0 = (long long)N * c / S, n1 = (long long)N * (c + 1) / S, total = (n1 - n0) * OHW;
    double s = 0;
    for (long long i = threadIdx.x; i < total; i += NT) {
        long long n = n0 + i / OHW, q = i % OHW;
        s += (double)elt<DT>::in(dy[(n * K + k) * OHW + q]);
    }
    s = kc_block_sum(s, sh);
    if (threadIdx.x == 0) part[(long long)k * S + c] = s;
}

template <int DT>
__global__ void bias_grad_sum(typename elt<DT>::T *db, const double *part, int K, int S) {
    kc_pdl_wait();
    KC_LOOP(k, K) {
        double s = 0;
        for (int c = 0; c < S; c++) s += part[(long long)k * S + c];
        db[k] = elt<DT>::out((typename elt<DT>::A)s);
    }
}

cg geom32(const kc_conv_geom *g) {
    cg p;
    p.N = (int)g->N, p.C = (int)g->C, p.H = (int)g->H, p.W = (int)g->W, p.K = (int)g->K, p.OH = (int)g->OH;
    p.OW = (int)g->OW, p.kh = (int)g->kh, p.kw = (int)g->kw, p.sh = (int)g->sh, p.sw = (int)g->sw;
    p.ph = (int)g->ph, p.pw = (int)g->pw, p.dh = (int)g->dh, p.dw = (int)g->dw, p.G = (int)g->G;
    p.Cg = p.C / p.G, p.Kg = p.K / p.G, p.KK = p.kh * p.kw, p.OHW = p.OH * p.OW, p.HW = p.H * p.W;
    return p;
}

unsigned cdiv(long long a, long long b) { return (unsigned)((a + b - 1) / b); }

int sm_count(kc_dev *d) {
    static int count[64];
    if (d->index < 64 && count[d->index]) return count[d->index];
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d->index) != cudaSuccess || n < 1) n = 100;
    (void)cudaGetLastError();
    if (d->index < 64) count[d->index] = n;
    return n;
}

/* Enqueues kernel KIND for dtype DT. */
template <int DT, int KIND>
kn_status launch(kc_dev *d, const kc_conv_geom *g, void *out, const void *a, const void *b, const void *bias,
                 const char *op) {
    typedef typename elt<DT>::T T;
    typedef typename elt<DT>::A A;
    cg p = geom32(g);
    long long M = KIND == BDATA ? p.Cg : p.Kg;
    long long NC = KIND == FWD ? (long long)p.N * p.OHW : KIND == BDATA ? (long long)p.N * p.HW : (long long)p.Cg * p.KK;
    long long KD = KIND == BFILT ? (long long)p.N * p.OHW : 0;
    if (M == 0 || NC == 0 || p.G == 0) return KN_OK;
    int splits = 1, chunk = 0;
    A *partial = NULL;
    size_t pbytes = 0;
    if (KIND == BFILT) {
        /* Enough blocks to fill the GPU a few times over; each split at
         * least 4 tiles deep; the partial sums under 256 MiB. */
        long long tiles = (long long)cdiv(M, BM) * cdiv(NC, BN) * p.G;
        long long want = (4LL * sm_count(d) + tiles - 1) / tiles;
        long long most = KD / (4 * BK);
        long long per = (long long)p.K * p.Cg * p.KK * (long long)sizeof(A);
        if (want > most) want = most;
        if (want > 1024) want = 1024;
        while (want > 1 && want * per > ((long long)256 << 20)) want /= 2;
        if (want > 1) {
            chunk = (int)((KD + want - 1) / want);
            chunk = (chunk + BK - 1) / BK * BK;
            splits = (int)((KD + chunk - 1) / chunk);
        }
        if (splits > 1) {
            pbytes = (size_t)splits * (size_t)per;
            if (!(partial = (A *)kc_alloc(d->index, pbytes))) return kn_error_code();
        } else {
            chunk = (int)(KD > 0 ? KD : 1);
        }
    }
    long long z = (long long)p.G * splits;
    dim3 grid(cdiv(NC, BN), cdiv(M, BM), (unsigned)(z < 65535 ? z : 65535));
    kc_launch(d, igemm_kernel<DT, KIND>, grid, dim3(NT), 0, p, (T *)out, (const T *)a, (const T *)b,
              (const T *)bias, partial, splits, chunk);
    if (splits > 1) {
        int total = p.K * p.Cg * p.KK;
        KC_LAUNCH(d, split_reduce<DT>, kc_blocks(total), KC_THREADS, (T *)out, (const A *)partial, splits, total);
        kc_free(d->index, partial, pbytes); /* stream order keeps it alive for the kernels queued */
    }
    return kc_after(d, op);
}

template <int KIND>
kn_status dispatch(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *out, const void *a, const void *b,
                   const void *bias, const char *op) {
    switch (dt) {
    case KN_F32: return launch<KN_F32, KIND>(d, g, out, a, b, bias, op);
    case KN_F64: return launch<KN_F64, KIND>(d, g, out, a, b, bias, op);
    case KN_F16: return launch<KN_F16, KIND>(d, g, out, a, b, bias, op);
    case KN_BF16: return launch<KN_BF16, KIND>(d, g, out, a, b, bias, op);
    default: return kn__err(KN_ERR_DTYPE, "%s: no CUDA kernel for %s", op, kn_dtype_name(dt));
    }
}

template <int DT>
kn_status bias_grad(kc_dev *d, const kc_conv_geom *g, void *db, const void *dy) {
    typedef typename elt<DT>::T T;
    int N = (int)g->N, K = (int)g->K, OHW = (int)(g->OH * g->OW);
    /* About four blocks an SM in all, each at least a few thousand elements. */
    long long S = (4LL * sm_count(d) + K - 1) / K, most = (long long)N * OHW / 4096;
    if (S > most) S = most;
    if (S > N) S = N;
    if (S > 65535) S = 65535;
    if (S < 1) S = 1;
    size_t nbytes = (size_t)K * (size_t)S * sizeof(double);
    double *part = (double *)kc_alloc(d->index, nbytes);
    if (!part) return kn_error_code();
    kc_launch(d, bias_grad_part<DT>, dim3((unsigned)K, (unsigned)S), dim3(NT), 0, part, (const T *)dy, N, K, OHW,
              (int)S);
    KC_LAUNCH(d, bias_grad_sum<DT>, kc_blocks(K), KC_THREADS, (T *)db, (const double *)part, K, (int)S);
    kc_free(d->index, part, nbytes); /* stream order keeps it alive for the kernels queued */
    return kc_after(d, "conv2d_backward");
}

} // namespace

kn_status kc_igemm_forward(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *y, const void *x, const void *w,
                           const void *bias) {
    return dispatch<FWD>(d, g, dt, y, w, x, bias, "conv2d");
}

kn_status kc_igemm_backward_data(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *dx, const void *dy,
                                 const void *w) {
    return dispatch<BDATA>(d, g, dt, dx, w, dy, NULL, "conv2d_backward");
}

kn_status kc_igemm_backward_filter(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *dw, const void *dy,
                                   const void *x) {
    return dispatch<BFILT>(d, g, dt, dw, dy, x, NULL, "conv2d_backward");
}

kn_status kc_conv_bias_add(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *y, const void *bias) {
    long long total = g->N * g->K * g->OH * g->OW;
    if (total == 0) return KN_OK;
    int K = (int)g->K, OHW = (int)(g->OH * g->OW), n = (int)total;
    switch (dt) {
    case KN_F32: KC_LAUNCH(d, bias_add<KN_F32>, kc_blocks(n), KC_THREADS, (float *)y, (const float *)bias, K, OHW, n); break;
    case KN_F64: KC_LAUNCH(d, bias_add<KN_F64>, kc_blocks(n), KC_THREADS, (double *)y, (const double *)bias, K, OHW, n); break;
    case KN_F16: KC_LAUNCH(d, bias_add<KN_F16>, kc_blocks(n), KC_THREADS, (uint16_t *)y, (const uint16_t *)bias, K, OHW, n); break;
    case KN_BF16: KC_LAUNCH(d, bias_add<KN_BF16>, kc_blocks(n), KC_THREADS, (uint16_t *)y, (const uint16_t *)bias, K, OHW, n); break;
    default: return kn__err(KN_ERR_DTYPE, "conv2d: no CUDA kernel for %s", kn_dtype_name(dt));
    }
    return kc_after(d, "conv2d");
}

kn_status kc_conv_bias_grad(kc_dev *d, const kc_conv_geom *g, kn_dtype dt, void *db, const void *dy) {
    if (g->K == 0) return KN_OK;
    switch (dt) {
    case KN_F32: return bias_grad<KN_F32>(d, g, db, dy);
    case KN_F64: return bias_grad<KN_F64>(d, g, db, dy);
    case KN_F16: return bias_grad<KN_F16>(d, g, db, dy);
    case KN_BF16: return bias_grad<KN_BF16>(d, g, db, dy);
    default: return kn__err(KN_ERR_DTYPE, "conv2d_backward: no CUDA kernel for %s", kn_dtype_name(dt));
    }
}
