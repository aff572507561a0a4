#version 450
// Matmul for shapes the vec4 kernel cannot take on CPU drivers (K or a contiguous dimension not
// a multiple of 4): each invocation computes a 4 x 4 block of C with scalar loads. The small
// loops unroll, so the block stays in registers. Any shape, any transpose.
#include "common.glsl"
layout(local_size_x = 8, local_size_y = 8) in;
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

void main() {
    uint z = gl_WorkGroupID.z;
    uint r0 = (gl_WorkGroupID.y * 8u + gl_LocalInvocationID.y) * 4u;
    uint c0 = (gl_WorkGroupID.x * 8u + gl_LocalInvocationID.x) * 4u;
    if (r0 >= p.M || c0 >= p.N) return;
    // Element offsets of row r / column c at k = 0, and the step per k (rows and columns past
    // the edge are clamped for loads and skipped for stores).
    uint ar[4], bc[4];
    for (uint i = 0u; i < 4u; ++i) {
        uint r = min(r0 + i, p.M - 1u), c = min(c0 + i, p.N - 1u);
        ar[i] = z * p.batch_a + (TA != 0u ? r : r * p.K);
        bc[i] = z * p.batch_b + (TB != 0u ? c * p.K : c);
    }
    uint ak = TA != 0u ? p.M : 1u, bk = TB != 0u ? 1u : p.N;
    float acc[4][4];
    for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;
    for (uint k = 0u; k < p.K; ++k) {
        float a[4], b[4];
        for (uint i = 0u; i < 4u; ++i) a[i] = fetch(A, ar[i] + k * ak);
        for (uint j = 0u; j < 4u; ++j) b[j] = fetch(B, bc[j] + k * bk);
        for (uint i = 0u; i < 4u; ++i)
            for (uint j = 0u; j < 4u; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    uint cb = z * p.batch_c;
    for (uint i = 0u; i < 4u; ++i)
        for (uint j = 0u; j < 4u; ++j)
            if (r0 + i < p.M && c0 + j < p.N) put(cb + (r0 + i) * p.N + c0 + j, acc[i][j]);
}
