#version 450
// Matmul for GPUs: the classic shared-memory tiling. A 16 x 16 workgroup computes a 64 x 64 tile
// of C, each invocation a 4 x 4 block; K is walked in slices of 16 that the workgroup first
// stages in shared memory (each invocation loads 4 elements of A and 4 of B, zero-filled past
// the edges), so every element read from memory is used 64 times. Any shape, any transpose.
#include "common.glsl"
layout(local_size_x = 16, local_size_y = 16) in;
layout(constant_id = 0) const uint TA = 0;     // A stored [K, M]
layout(constant_id = 1) const uint TB = 0;     // B stored [N, K]
layout(set = 0, binding = 0) uniform samplerBuffer A;
layout(set = 0, binding = 1) uniform samplerBuffer B;
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

shared float sa[16][64];   // sa[k][m]
shared float sb[16][64];   // sb[k][n]

void main() {
    uint z = gl_WorkGroupID.z;
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    uint tid = ty * 16u + tx;
    uint row0 = gl_WorkGroupID.y * 64u, col0 = gl_WorkGroupID.x * 64u;
    uint abase = z * p.batch_a, bbase = z * p.batch_b;
    float acc[4][4];
    for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < p.K; k0 += 16u) {
        // 256 invocations stage 16 x 64 elements of each operand: 4 each.
        for (uint q = 0u; q < 4u; ++q) {
            uint e = tid + 256u * q;        // 0 .. 1023
            uint kk = e / 64u, mm = e % 64u;
            uint k = k0 + kk, r = row0 + mm, c = col0 + mm;
            float av = 0.0, bv = 0.0;
            if (k < p.K && r < p.M) av = fetch(A, abase + (TA != 0u ? k * p.M + r : r * p.K + k));
            if (k < p.K && c < p.N) bv = fetch(B, bbase + (TB != 0u ? c * p.K + k : k * p.N + c));
            sa[kk][mm] = av;
            sb[kk][mm] = bv;
        }
        barrier();
        for (uint kk = 0u; kk < 16u; ++kk) {
            float a[4], b[4];
            for (uint i = 0u; i < 4u; ++i) a[i] = sa[kk][ty + 16u * i];
            for (uint j = 0u; j < 4u; ++j) b[j] = sb[kk][tx + 16u * j];
            for (uint i = 0u; i < 4u; ++i)
                for (uint j = 0u; j < 4u; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier();
    }
    uint cb = z * p.batch_c;
    for (uint i = 0u; i < 4u; ++i) {
        uint r = row0 + ty + 16u * i;
        for (uint j = 0u; j < 4u; ++j) {
            uint c = col0 + tx + 16u * j;
            if (r < p.M && c < p.N) put(cb + r * p.N + c, acc[i][j]);
        }
    }
}
