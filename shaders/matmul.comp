#version 450
// Batched C[z] = op(A[z]) . op(B[z]); op = optional transpose, read through the layout (no copy
// for A^T B). Register blocking: each invocation owns a TM x TN block of C (contiguous rows and
// columns) and walks K in steps of 4. With VEC = 1 every load is a vec4 along the operand's
// contiguous dimension -- (TM + TN) vec4 loads per 4 k-steps for 4 TM TN multiply-adds, which is
// what CPU drivers (lavapipe pays per load instruction and per invocation) need; the host picks
// VEC = 1 when those dimensions are multiples of 4. Out-of-range rows/columns are clamped for
// loads and skipped for stores, so the inner loop has no branches.
#include "common.glsl"
layout(local_size_x = 8, local_size_y = 8) in;
layout(constant_id = 0) const uint TM = 4;     // multiple of 4
layout(constant_id = 1) const uint TN = 4;     // multiple of 4
layout(constant_id = 2) const uint TA = 0;     // A stored [K, M]
layout(constant_id = 3) const uint TB = 0;     // B stored [N, K]
layout(constant_id = 4) const uint VEC = 0;
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
layout(set = 0, binding = 2) writeonly buffer C { float c_out[]; };
layout(set = 0, binding = 0) readonly buffer A4 { vec4 a4[]; };
layout(set = 0, binding = 1) readonly buffer B4 { vec4 b4[]; };
layout(push_constant) uniform P { uint M; uint N; uint K; uint batch_a; uint batch_b; uint batch_c; } p;

// Scalar element access with the layout folded in.
float A_at(uint base, uint r, uint k) { return TA != 0u ? a[base + k * p.M + r] : a[base + r * p.K + k]; }
float B_at(uint base, uint k, uint n) { return TB != 0u ? b[base + n * p.K + k] : b[base + k * p.N + n]; }

void main() {
    uint z = gl_WorkGroupID.z;
    uint r0 = (gl_WorkGroupID.y * 8u + gl_LocalInvocationID.y) * TM;
    uint c0 = (gl_WorkGroupID.x * 8u + gl_LocalInvocationID.x) * TN;
    if (r0 >= p.M || c0 >= p.N) return;
    uint abase = z * p.batch_a, bbase = z * p.batch_b;
    float acc[TM][TN];
    for (uint i = 0u; i < TM; ++i)
        for (uint j = 0u; j < TN; ++j) acc[i][j] = 0.0;

    if (VEC != 0u) {
        // Fixed 8 x 8 tile, written out with macros: Mesa's NIR does not unroll the nested
        // loops of a large tile, and a dynamically indexed accumulator array then lives in
        // scratch memory (gathers and scatters per FMA). Every index below is a constant.
        uint M4 = p.M / 4u, N4 = p.N / 4u;
        uint ai[8], bi[8];
        vec4 c[8][2];
#define INIT(i) \
        ai[i] = TA == 0u ? (abase + min(r0 + i, p.M - 1u) * p.K) / 4u : (abase + min(r0 + 4u * (i / 4u), p.M - 4u)) / 4u; \
        bi[i] = TB == 0u ? (bbase + min(c0 + 4u * (i / 4u), p.N - 4u)) / 4u : (bbase + min(c0 + i, p.N - 1u) * p.K) / 4u; \
        c[i][0] = vec4(0.0); c[i][1] = vec4(0.0);
        INIT(0) INIT(1) INIT(2) INIT(3) INIT(4) INIT(5) INIT(6) INIT(7)
        for (uint k4 = 0u; k4 < p.K / 4u; ++k4) {
            vec4 ar[8];     // !TA: ar[i] = A(r0 + i, 4 k4 .. 4 k4 + 3)
            vec4 at[4][2];  //  TA: at[kk][q] = A(r0 + 4q .. 4q + 3, 4 k4 + kk)
            vec4 bt[8];     //  TB: bt[j] = B(4 k4 .. 4 k4 + 3, c0 + j)
            if (TA == 0u) {
                ar[0] = a4[ai[0] + k4]; ar[1] = a4[ai[1] + k4]; ar[2] = a4[ai[2] + k4]; ar[3] = a4[ai[3] + k4];
                ar[4] = a4[ai[4] + k4]; ar[5] = a4[ai[5] + k4]; ar[6] = a4[ai[6] + k4]; ar[7] = a4[ai[7] + k4];
            } else {
#define LOAD_AT(kk) at[kk][0] = a4[ai[0] + (4u * k4 + kk) * M4]; at[kk][1] = a4[ai[4] + (4u * k4 + kk) * M4];
                LOAD_AT(0) LOAD_AT(1) LOAD_AT(2) LOAD_AT(3)
            }
            if (TB != 0u) {
                bt[0] = b4[bi[0] + k4]; bt[1] = b4[bi[1] + k4]; bt[2] = b4[bi[2] + k4]; bt[3] = b4[bi[3] + k4];
                bt[4] = b4[bi[4] + k4]; bt[5] = b4[bi[5] + k4]; bt[6] = b4[bi[6] + k4]; bt[7] = b4[bi[7] + k4];
            }
#define A_SCALAR(i, kk) (TA == 0u ? ar[i][kk] : at[kk][(i) / 4][(i) % 4])
#define ROW(i, kk) { float s_ = A_SCALAR(i, kk); c[i][0] = fma(vec4(s_), blo, c[i][0]); c[i][1] = fma(vec4(s_), bhi, c[i][1]); }
#define KSTEP(kk) { \
                vec4 blo = TB == 0u ? b4[bi[0] + (4u * k4 + kk) * N4] : vec4(bt[0][kk], bt[1][kk], bt[2][kk], bt[3][kk]); \
                vec4 bhi = TB == 0u ? b4[bi[4] + (4u * k4 + kk) * N4] : vec4(bt[4][kk], bt[5][kk], bt[6][kk], bt[7][kk]); \
                ROW(0, kk) ROW(1, kk) ROW(2, kk) ROW(3, kk) ROW(4, kk) ROW(5, kk) ROW(6, kk) ROW(7, kk) }
            KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
        }
        uint cb = z * p.batch_c;
#define STORE(i, h, q) if (r0 + i < p.M && c0 + 4u * h + q < p.N) c_out[cb + (r0 + i) * p.N + c0 + 4u * h + q] = c[i][h][q];
#define STORE_ROW(i) STORE(i, 0, 0) STORE(i, 0, 1) STORE(i, 0, 2) STORE(i, 0, 3) STORE(i, 1, 0) STORE(i, 1, 1) STORE(i, 1, 2) STORE(i, 1, 3)
        STORE_ROW(0) STORE_ROW(1) STORE_ROW(2) STORE_ROW(3) STORE_ROW(4) STORE_ROW(5) STORE_ROW(6) STORE_ROW(7)
        return;
    } else {
        for (uint k = 0u; k < p.K; ++k) {
            float av[TM];
            float bv[TN];
            for (uint i = 0u; i < TM; ++i) av[i] = A_at(abase, min(r0 + i, p.M - 1u), k);
            for (uint j = 0u; j < TN; ++j) bv[j] = B_at(bbase, k, min(c0 + j, p.N - 1u));
            for (uint i = 0u; i < TM; ++i)
                for (uint j = 0u; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
    }

    uint cbase = z * p.batch_c;
    for (uint i = 0u; i < TM; ++i) {
        if (r0 + i >= p.M) break;
        for (uint j = 0u; j < TN; ++j)
            if (c0 + j < p.N) c_out[cbase + (r0 + i) * p.N + c0 + j] = acc[i][j];
    }
}
