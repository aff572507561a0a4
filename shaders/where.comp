#version 450
// out = mask != 0 ? a : b, all three broadcast to the output shape (stride 0 = broadcast).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) uniform samplerBuffer m_t;
layout(set = 0, binding = 1) uniform samplerBuffer a_t;
layout(set = 0, binding = 2) uniform samplerBuffer b_t;
layout(set = 0, binding = 3) writeonly buffer C { float c[]; };
layout(push_constant) uniform P {
    uint n; uint rank;
    uint shape[6]; uint sm[6]; uint sa[6]; uint sb[6];
    uint magic[6];   // fast_div's multiplier of each shape[d] (common.glsl)
} p;

void main() {
    uint i = flat_id(256u);
    if (i >= p.n) return;
    uint im = 0u, ia = 0u, ib = 0u, rem = i;
    for (int d = int(p.rank) - 1; d >= 0; --d) {
        uint q = fast_div(rem, p.shape[d], p.magic[d]);
        uint idx = rem - q * p.shape[d];
        rem = q;
        im += idx * p.sm[d];
        ia += idx * p.sa[d];
        ib += idx * p.sb[d];
    }
    c[i] = fetch(m_t, im) != 0.0 ? fetch(a_t, ia) : fetch(b_t, ib);
}
