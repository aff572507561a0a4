#version 450
// Strided copy: dst[d_off + sum idx*ds] = src[s_off + sum idx*ss] over a copy shape.
// One kernel serves permute, slice/narrow, expand, concat and the pads of their backwards.
// ROWS = 1 (innermost size a multiple of 4, destination rows contiguous and 4-aligned): four
// elements of a row per invocation, the index arithmetic done once, a vec4 store, and a vec4
// load where the source row is contiguous and aligned too (expand and narrow on CPU drivers
// run several times faster).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint ROWS = 0;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) buffer D { float dst[]; };
layout(set = 0, binding = 1) buffer D4 { vec4 dst4[]; };
layout(push_constant) uniform P {
    uint n; uint rank; uint s_off; uint d_off;
    uint shape[6]; uint ss[6]; uint ds[6];
    uint magic[6];   // fast_div's multiplier of each shape[d]
} p;

void main() {
    uint i = flat_id(256u);
    uint first = ROWS == 1u ? 4u * i : i;
    if (first >= p.n) return;
    uint is_ = p.s_off, id = p.d_off, rem = first;
    for (int d = int(p.rank) - 1; d >= 0; --d) {
        uint q = fast_div(rem, p.shape[d], p.magic[d]);
        uint idx = rem - q * p.shape[d];
        rem = q;
        is_ += idx * p.ss[d];
        id += idx * p.ds[d];
    }
    if (ROWS == 0u) {
        dst[id] = fetch(src_t, is_);
        return;
    }
    uint step = p.ss[p.rank - 1u];
    vec4 v;
    if (step == 1u && (is_ & 3u) == 0u) {
        v = texelFetch(src_t, int(is_ >> 2));
    } else {
        v = vec4(fetch(src_t, is_), fetch(src_t, is_ + step), fetch(src_t, is_ + 2u * step),
                 fetch(src_t, is_ + 3u * step));
    }
    dst4[id >> 2] = v;
}
