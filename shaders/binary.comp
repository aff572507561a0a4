#version 450
// Elementwise c = a (op) b with NumPy broadcasting: strides of broadcast dimensions are 0.
// When both inputs are contiguous with the output's shape (the common case) the index
// arithmetic is skipped. Mode 2 (innermost size a multiple of 4, each input's innermost
// stride 0 or 1, stride-1 inputs 4-aligned): four elements of one row per invocation, the
// index arithmetic done once, vec4 loads for the stride-1 inputs (per-channel broadcasts such
// as batch norm's run ~4x faster on CPU drivers).
#include "common.glsl"
#include "elementwise.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;
layout(set = 0, binding = 0) uniform samplerBuffer a_t;
layout(set = 0, binding = 1) uniform samplerBuffer b_t;
layout(set = 0, binding = 2) writeonly buffer C { float c[]; };
// vec4 views of the same buffers for the contiguous path (4 elements per invocation).
layout(set = 0, binding = 2) writeonly buffer C4 { vec4 c4[]; };
layout(push_constant) uniform P {
    uint n; uint rank; uint contiguous;
    uint shape[6]; uint sa[6]; uint sb[6];
    uint magic[6];   // fast_div's multiplier of each shape[d]
} p;

float f(float u, float v) { return binary_f(OP, u, v); }

void main() {
    uint i = flat_id(256u);
    if (p.contiguous == 1u) {
        // invocation i handles elements 4i .. 4i+3
        if (4u * i + 3u < p.n) {
            vec4 u = texelFetch(a_t, int(i)), v = texelFetch(b_t, int(i));
            c4[i] = vec4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
        } else {
            for (uint j = 4u * i; j < p.n; ++j) c[j] = f(fetch(a_t, j), fetch(b_t, j));
        }
        return;
    }
    if (p.contiguous == 2u) {
        if (4u * i >= p.n) return;
        uint ia = 0u, ib = 0u, rem = 4u * i;
        for (int d = int(p.rank) - 1; d >= 0; --d) {
            uint q = fast_div(rem, p.shape[d], p.magic[d]);
            uint idx = rem - q * p.shape[d];
            rem = q;
            ia += idx * p.sa[d];
            ib += idx * p.sb[d];
        }
        uint last = p.rank - 1u;
        vec4 u = p.sa[last] == 1u ? texelFetch(a_t, int(ia >> 2)) : vec4(fetch(a_t, ia));
        vec4 v = p.sb[last] == 1u ? texelFetch(b_t, int(ib >> 2)) : vec4(fetch(b_t, ib));
        c4[i] = vec4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
        return;
    }
    if (i >= p.n) return;
    uint ia = 0u, ib = 0u, rem = i;
    for (int d = int(p.rank) - 1; d >= 0; --d) {
        uint q = fast_div(rem, p.shape[d], p.magic[d]);
        uint idx = rem - q * p.shape[d];
        rem = q;
        ia += idx * p.sa[d];
        ib += idx * p.sb[d];
    }
    c[i] = f(fetch(a_t, ia), fetch(b_t, ib));
}
