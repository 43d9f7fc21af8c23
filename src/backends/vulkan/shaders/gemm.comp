#version 450
// gemm: the float32 fast path of matmul (every operand float32; layouts of
// the parameter block as in matmul.comp). A workgroup of 256 invocations
// computes a 128 x 128 output tile, each invocation an 8 x 8 block held in
// registers, over K in steps of 8 staged in shared memory. An invocation's
// rows and columns are interleaved (tr + 16 i, tc + 16 j) so that neighbours
// read neighbouring shared words and write neighbouring output words.
// Operands are any-strided; the loads are coalesced when a is row-major in K
// (or transposed: then along M) and b row-major in N.
// Params: 0 B, 1 M, 2 N, 3 K, 4..8 a (byte offset, dtype, batch, row, col
// strides), 9..13 b, 14..18 out, 19 bias present, 20..22 bias (byte offset,
// dtype, stride), 23 act. Bindings: out 0, a 1, b 2, bias 3.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) buffer Out { float o[]; };
layout(std430, set = 0, binding = 1) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 2) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 3) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 8) readonly buffer Params { uint p[]; } prm;
layout(push_constant) uniform Push { uint base; } pc;

uint P(uint k) { return prm.p[pc.base + k]; }

const uint BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
// +4: the transposed store of a's tile (8 K-neighbours per row) hits 32 banks.
shared float As[BK][BM + 4];
shared float Bs[BK][BN];

void main() {
    uint M = P(1), N = P(2), K = P(3);
    uint tid = gl_LocalInvocationID.x, tr = tid / 16u, tc = tid % 16u;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint ao = P(4) / 4u, asb = P(6), asr = P(7), asc = P(8);
    uint bo = P(9) / 4u, bsb = P(11), bsr = P(12), bsc = P(13);
    uint oo = P(14) / 4u, osb = P(16), osr = P(17), osc = P(18);
    // a's tile is read K-fastest when its K stride is 1 (row-major), else M-fastest.
    bool a_kfast = asc == 1u;
    for (uint bi = gl_WorkGroupID.z; bi < P(0); bi += gl_NumWorkGroups.z) {
        float acc[TM][TN];
        for (uint i = 0u; i < TM; i++)
            for (uint j = 0u; j < TN; j++) acc[i][j] = 0.0;
        uint ab = ao + bi * asb, bb = bo + bi * bsb;
        for (uint k0 = 0u; k0 < K; k0 += BK) {
            for (uint r = 0u; r < 4u; r++) {
                uint e = tid + r * 256u;
                uint mm = a_kfast ? e / BK : e % BM, kk = a_kfast ? e % BK : e / BM;
                uint gm = m0 + mm, gk = k0 + kk;
                As[kk][mm] = gm < M && gk < K ? a[ab + gm * asr + gk * asc] : 0.0;
                uint kb = e / BN, nn = e % BN, gn = n0 + nn, gkb = k0 + kb;
                Bs[kb][nn] = gkb < K && gn < N ? b[bb + gkb * bsr + gn * bsc] : 0.0;
            }
            barrier();
            for (uint kk = 0u; kk < BK; kk++) {
                float ra[TM], rb[TN];
                for (uint i = 0u; i < TM; i++) ra[i] = As[kk][tr + 16u * i];
                for (uint j = 0u; j < TN; j++) rb[j] = Bs[kk][tc + 16u * j];
                for (uint i = 0u; i < TM; i++)
                    for (uint j = 0u; j < TN; j++) acc[i][j] = fma(ra[i], rb[j], acc[i][j]);
            }
            barrier();
        }
        uint ob = oo + bi * osb;
        bool has_bias = P(19) != 0u, relu = P(23) == 1u;
        uint bso = P(20) / 4u, bss = P(22);
        for (uint i = 0u; i < TM; i++) {
            uint gm = m0 + tr + 16u * i;
            if (gm >= M) continue;
            for (uint j = 0u; j < TN; j++) {
                uint gn = n0 + tc + 16u * j;
                if (gn >= N) continue;
                float v = acc[i][j];
                if (has_bias) v = bias[bso + gn * bss] + v;
                if (relu && v <= 0.0) v = 0.0; // NaN stays NaN
                o[ob + gm * osr + gn * osc] = v;
            }
        }
    }
}
