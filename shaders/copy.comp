#version 450
// Strided copy: dst[d_off + sum idx*ds] = src[s_off + sum idx*ss] over a copy shape.
// One kernel serves permute, slice/narrow, expand, concat and the pads of their backwards.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) buffer D { float dst[]; };
layout(push_constant) uniform P {
    uint n; uint rank; uint s_off; uint d_off;
    uint shape[6]; uint ss[6]; uint ds[6];
} p;

void main() {
    uint i = flat_id(256u);
    if (i >= p.n) return;
    uint is_ = p.s_off, id = p.d_off, rem = i;
    for (int d = int(p.rank) - 1; d >= 0; --d) {
        uint idx = rem % p.shape[d];
        rem /= p.shape[d];
        is_ += idx * p.ss[d];
        id += idx * p.ds[d];
    }
    dst[id] = fetch(src_t, is_);
}
