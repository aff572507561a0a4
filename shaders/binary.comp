#version 450
// Elementwise c = a (op) b with NumPy broadcasting: strides of broadcast dimensions are 0.
// When both inputs are contiguous with the output's shape (the common case) the index
// arithmetic is skipped. Mode 2 (innermost size a multiple of 4, each input's innermost
// stride 0 or 1, stride-1 inputs 4-aligned): four elements of one row per invocation, the
// index arithmetic done once, vec4 loads for the stride-1 inputs (per-channel broadcasts such
// as batch norm's run ~4x faster on CPU drivers).
// The mode is a specialisation constant, not a push constant: lavapipe (Mesa 22.3) ran the
// contiguous path ~4x slower when the other paths' loops were merely present in the shader.
#include "common.glsl"
#include "elementwise.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;
layout(constant_id = 1) const uint MODE = 0;   // 1 contiguous, 2 rows of four, 0 general
// The rank too, so the coordinate loops have a constant trip count and unroll.
layout(constant_id = 2) const uint RANK = 1;
// Mode 2, how each input is read along a row of four (a: bits 0-1, b: bits 2-3): 0 constant
// along it (one value), 1 stepping by 1 (a texel at its own index), 2 read whole (the texel
// of the output's index: contiguous across invocations, a plain vector load on CPU drivers
// where a computed index is a gather).
layout(constant_id = 3) const uint STEPS = 0;
layout(set = 0, binding = 0) uniform samplerBuffer a_t;
layout(set = 0, binding = 1) uniform samplerBuffer b_t;
layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
// vec4 views of the same buffers for the contiguous path (4 elements per invocation).
layout(set = 0, binding = 2) writeonly buffer C4 { vec4 c4[]; };
layout(push_constant) uniform P {
    uint n;
    uint shape[6]; uint sa[6]; uint sb[6];
    uint magic[6];   // fast_div's multiplier of each shape[d]
} p;

float f(float u, float v) { return binary_f(OP, u, v); }

// Four elements of a row from element j (texel i of the output) for mode 2's `how`.
vec4 row4(samplerBuffer t, uint how, uint j, uint i) {
    if (how == 2u) return texelFetch(t, int(i));
    if (how == 1u) return texelFetch(t, int(j >> 2));
    return vec4(fetch(t, j));
}

void main() {
    uint i = flat_id(256u);
    if (MODE == 1u) {
        // invocation i handles elements 4i .. 4i+3
        if (4u * i + 3u < p.n) {
            vec4 u = texelFetch(a_t, int(i)), v = texelFetch(b_t, int(i));
            c4[i] = vec4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
        } else {
            for (uint j = 4u * i; j < p.n; ++j) c[j] = f(fetch(a_t, j), fetch(b_t, j));
        }
        return;
    }
    if (MODE == 2u) {
        if (4u * i >= p.n) return;
        uint ia = 0u, ib = 0u, rem = 4u * i;
        // (the outermost coordinate is what remains: no division there)
        for (int d = int(RANK) - 1; d > 0; --d) {
            uint q = fast_div(rem, p.shape[d], p.magic[d]);
            uint idx = rem - q * p.shape[d];
            rem = q;
            ia += idx * p.sa[d];
            ib += idx * p.sb[d];
        }
        ia += rem * p.sa[0];
        ib += rem * p.sb[0];
        vec4 u = row4(a_t, STEPS & 3u, ia, i);
        vec4 v = row4(b_t, STEPS >> 2, ib, i);
        c4[i] = vec4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
        return;
    }
    if (i >= p.n) return;
    uint ia = 0u, ib = 0u, rem = i;
    for (int d = int(RANK) - 1; d > 0; --d) {
        uint q = fast_div(rem, p.shape[d], p.magic[d]);
        uint idx = rem - q * p.shape[d];
        rem = q;
        ia += idx * p.sa[d];
        ib += idx * p.sb[d];
    }
    ia += rem * p.sa[0];
    ib += rem * p.sb[0];
    c[i] = f(fetch(a_t, ia), fetch(b_t, ib));
}
