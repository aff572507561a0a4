#version 450
// Matmul for CPU drivers (lavapipe), where a workgroup of 8 invocations is one SIMD vector:
// the 8 lanes share the same 8 rows of A and each lane owns 8 columns of B. Per 4 k-steps:
// 8 vec4 loads of A, 8 vec4 loads of B, 256 multiply-adds per lane. Everything is unrolled by
// macros so each array index is a constant (see matmul.comp for why).
// Inputs are uniform texel buffers: llvmpipe turns texelFetch into one vectorised gather, while a
// storage-buffer load becomes a loop over the 8 lanes with a branch each (about 10x slower).
// Requires K, and the contiguous dimension of each operand, to be multiples of 4.
#include "common.glsl"
layout(local_size_x = 8) in;
layout(constant_id = 0) const uint TA = 0;     // A stored [K, M]
layout(constant_id = 1) const uint TB = 0;     // B stored [N, K]
layout(set = 0, binding = 0) uniform samplerBuffer A4;
layout(set = 0, binding = 1) uniform samplerBuffer B4;
layout(set = 0, binding = 2) writeonly buffer C { float c_out[]; };
layout(push_constant) uniform P {
    uint M; uint N; uint K; uint batch_a; uint batch_b; uint batch_c;
    // @fused-push: a fused epilogue's push constants go here
} p;

// FUSED (a variant generated at run time, lazy/codegen.rs): the product is not stored as is;
// put(i, v) stores the pending elementwise tree that consumes it (a fused epilogue: bias,
// activation, scale, mask), computed from v at element i of C.
#ifdef FUSED
// @fused-input: a fused epilogue's bindings and functions go here
#else
void put(uint i, float v) { c_out[i] = v; }
#endif

#define LA(i) texelFetch(A4, int(i))
#define LB(i) texelFetch(B4, int(i))

void main() {
    uint z = gl_WorkGroupID.z;
    uint r0 = gl_WorkGroupID.y * 8u;
    uint c0 = gl_WorkGroupID.x * 64u + gl_LocalInvocationID.x * 8u;
    uint abase = z * p.batch_a, bbase = z * p.batch_b;
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
            ar[0] = LA(ai[0] + k4); ar[1] = LA(ai[1] + k4); ar[2] = LA(ai[2] + k4); ar[3] = LA(ai[3] + k4);
            ar[4] = LA(ai[4] + k4); ar[5] = LA(ai[5] + k4); ar[6] = LA(ai[6] + k4); ar[7] = LA(ai[7] + k4);
        } else {
#define LOAD_AT(kk) at[kk][0] = LA(ai[0] + (4u * k4 + kk) * M4); at[kk][1] = LA(ai[4] + (4u * k4 + kk) * M4);
            LOAD_AT(0) LOAD_AT(1) LOAD_AT(2) LOAD_AT(3)
        }
        if (TB != 0u) {
            bt[0] = LB(bi[0] + k4); bt[1] = LB(bi[1] + k4); bt[2] = LB(bi[2] + k4); bt[3] = LB(bi[3] + k4);
            bt[4] = LB(bi[4] + k4); bt[5] = LB(bi[5] + k4); bt[6] = LB(bi[6] + k4); bt[7] = LB(bi[7] + k4);
        }
#define A_SCALAR(i, kk) (TA == 0u ? ar[i][kk] : at[kk][(i) / 4][(i) % 4])
#define ROW(i, kk) { float s_ = A_SCALAR(i, kk); c[i][0] = fma(vec4(s_), blo, c[i][0]); c[i][1] = fma(vec4(s_), bhi, c[i][1]); }
#define KSTEP(kk) { \
            vec4 blo = TB == 0u ? LB(bi[0] + (4u * k4 + kk) * N4) : vec4(bt[0][kk], bt[1][kk], bt[2][kk], bt[3][kk]); \
            vec4 bhi = TB == 0u ? LB(bi[4] + (4u * k4 + kk) * N4) : vec4(bt[4][kk], bt[5][kk], bt[6][kk], bt[7][kk]); \
            ROW(0, kk) ROW(1, kk) ROW(2, kk) ROW(3, kk) ROW(4, kk) ROW(5, kk) ROW(6, kk) ROW(7, kk) }
        KSTEP(0) KSTEP(1) KSTEP(2) KSTEP(3)
    }
    uint cb = z * p.batch_c;
#define STORE(i, h, q) if (r0 + i < p.M && c0 + 4u * h + q < p.N) put(cb + (r0 + i) * p.N + c0 + 4u * h + q, c[i][h][q]);
#define STORE_ROW(i) STORE(i, 0, 0) STORE(i, 0, 1) STORE(i, 0, 2) STORE(i, 0, 3) STORE(i, 1, 0) STORE(i, 1, 1) STORE(i, 1, 2) STORE(i, 1, 3)
    STORE_ROW(0) STORE_ROW(1) STORE_ROW(2) STORE_ROW(3) STORE_ROW(4) STORE_ROW(5) STORE_ROW(6) STORE_ROW(7)
}
