#version 450
// Batched C[z] = op(A[z]) . op(B[z]), op = optional transpose (read through strides, no copy).
// Register blocking: an 8x8 workgroup computes an (8*TM) x (8*TN) tile; invocation (lx, ly)
// owns rows row0 + 8i and columns col0 + 8j. Neighbouring invocations (lx) own neighbouring
// columns, so B loads are contiguous across SIMD lanes and A loads are one broadcast value --
// the layout that both CPU drivers (lavapipe vectorises across invocations) and GPUs
// (coalesced warps) read well. Out-of-range rows/columns are clamped for loads and skipped
// for stores, so the inner loop has no branches.
#include "common.glsl"
layout(local_size_x = 8, local_size_y = 8) in;
layout(constant_id = 0) const uint TM = 4;
layout(constant_id = 1) const uint TN = 4;
layout(set = 0, binding = 0) readonly buffer A { float a[]; };
layout(set = 0, binding = 1) readonly buffer B { float b[]; };
layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint M; uint N; uint K; uint batch_a; uint batch_b; uint batch_c; uint ta; uint tb;
} p;

void main() {
    uint z = gl_WorkGroupID.z;
    uint row0 = gl_WorkGroupID.y * 8u * TM + gl_LocalInvocationID.y;
    uint col0 = gl_WorkGroupID.x * 8u * TN + gl_LocalInvocationID.x;
    // Element strides: A(r, k) = a[r * ars + k * aks], B(k, c) = b[k * bks + c * bcs].
    uint ars = p.ta != 0u ? 1u : p.K, aks = p.ta != 0u ? p.M : 1u;
    uint bks = p.tb != 0u ? 1u : p.N, bcs = p.tb != 0u ? p.K : 1u;
    uint aoff[TM];
    uint boff[TN];
    for (uint i = 0u; i < TM; ++i) aoff[i] = z * p.batch_a + min(row0 + 8u * i, p.M - 1u) * ars;
    for (uint j = 0u; j < TN; ++j) boff[j] = z * p.batch_b + min(col0 + 8u * j, p.N - 1u) * bcs;
    float acc[TM][TN];
    for (uint i = 0u; i < TM; ++i)
        for (uint j = 0u; j < TN; ++j) acc[i][j] = 0.0;
    for (uint k = 0u; k < p.K; ++k) {
        float av[TM];
        float bv[TN];
        for (uint i = 0u; i < TM; ++i) av[i] = a[aoff[i] + k * aks];
        for (uint j = 0u; j < TN; ++j) bv[j] = b[boff[j] + k * bks];
        for (uint i = 0u; i < TM; ++i)
            for (uint j = 0u; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    for (uint i = 0u; i < TM; ++i) {
        uint r = row0 + 8u * i;
        if (r >= p.M) break;
        for (uint j = 0u; j < TN; ++j) {
            uint col = col0 + 8u * j;
            if (col < p.N) c[z * p.batch_c + r * p.N + col] = acc[i][j];
        }
    }
}
