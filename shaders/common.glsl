// Shared by every kernel. All storage buffers are declared float[]; integer tensors
// (labels, indices, argmax results) travel as raw bit patterns (floatBitsToUint), so one
// buffer type serves both and the host pool never has to know the element type.

// Flattened invocation index over a 2-D dispatch grid: Vulkan guarantees only 65535
// workgroups per dimension, so large element counts spill into gl_WorkGroupID.y.
// `local` must equal local_size_x: gl_WorkGroupSize read 1 under Mesa 22.3's lavapipe when the
// shader also had specialisation constants, so the size is passed explicitly.
uint flat_id(uint local) {
    return (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * local
        + gl_LocalInvocationID.x;
}

// Flattened workgroup index, for kernels that give one workgroup to each row.
uint flat_group() {
    return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
}

// llvmpipe (lavapipe) silently ends every loop of an invocation once that invocation has run
// 65535 loop iterations in total (its infinite-loop guard). Kernels are sized so that no
// invocation gets near it; the host refuses shapes that would (Context::loop_budget).

// Inputs are read through uniform texel buffers (an RGBA32F view of the whole buffer): on CPU
// drivers a texel fetch is one vectorised gather, while a storage-buffer load is a loop over the
// SIMD lanes with a branch each (lavapipe, Mesa 22.3: about 10x slower); GPUs read both through
// their caches. Integer data (indices) stays in storage buffers: texel fetches may flush the
// denormal floats that small integers' bit patterns are.
float fetch(samplerBuffer t, uint i) { return texelFetch(t, int(i >> 2))[i & 3u]; }

// n / d without a division instruction: CPU drivers divide SIMD lanes one at a time, and the
// index arithmetic of a strided kernel (a coordinate per dimension: a remainder and a
// quotient each) was most of its time. m = ceil(2^(31 + s) / d) with s = ceil(log2 d), made by
// the host (`ops::div_magic`); exact for every n < 2^31 and 1 <= d <= 2^31, since
// n * (m * d - 2^(31 + s)) < 2^(31 + s). n * m < 2^63, so (n * m) >> 31 fits 32 bits.
uint fast_div(uint n, uint d, uint m) {
    uint s = d <= 1u ? 0u : uint(findMSB(d - 1u)) + 1u;
    uint hi, lo;
    umulExtended(n, m, hi, lo);
    return ((hi << 1) | (lo >> 31)) >> s;
}
