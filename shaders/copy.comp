#version 450
// Strided copy: dst[d_off + sum idx*ds] = src[s_off + sum idx*ss] over a copy shape.
// One kernel serves permute, slice/narrow, expand, concat and the pads of their backwards.
// ROWS = 1 (innermost size a multiple of 4, destination rows contiguous and 4-aligned): four
// elements of a row per invocation, the index arithmetic done once, a vec4 store, and a vec4
// load where the source row is contiguous and aligned too (expand and narrow on CPU drivers
// run several times faster).
// ROWS = 2, a transpose of the last two dimensions (both multiples of 4, the source
// contiguous along the second-to-last, the destination along the last, both 4-aligned: the
// permutes between NHWC and NCHW around a convolution): one 4×4 block per invocation, four
// texel loads and four vec4 stores instead of sixteen scalar fetches. The host pushes the
// grid of blocks as the shape, with the last two strides times 4 (each block's corner).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint ROWS = 0;
// Specialisation constants rather than push constants (lavapipe, Mesa 22.3, runs a kernel
// markedly slower for the mere presence of paths and loops it does not take): the rank, so
// the coordinate loop unrolls, and on the rows path how the source row is read — 0 four
// values stepping by ss[RANK - 1], 1 one texel (contiguous, 4-aligned), 2 one value (constant
// along the row: an expand's broadcast).
layout(constant_id = 1) const uint RANK = 1;
layout(constant_id = 2) const uint SRC = 0;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) buffer D { float dst[]; };
layout(set = 0, binding = 1) buffer D4 { vec4 dst4[]; };
layout(push_constant) uniform P {
    uint n; uint s_off; uint d_off;
    uint shape[6]; uint ss[6]; uint ds[6];
    uint magic[6];   // fast_div's multiplier of each shape[d]
} p;

void main() {
    uint i = flat_id(256u);
    uint first = ROWS == 1u ? 4u * i : i;   // (ROWS 2: the block; n counts blocks)
    if (first >= p.n) return;
    uint is_ = p.s_off, id = p.d_off, rem = first;
    // (the outermost coordinate is what remains: no division there)
    for (int d = int(RANK) - 1; d > 0; --d) {
        uint q = fast_div(rem, p.shape[d], p.magic[d]);
        uint idx = rem - q * p.shape[d];
        rem = q;
        is_ += idx * p.ss[d];
        id += idx * p.ds[d];
    }
    is_ += rem * p.ss[0];
    id += rem * p.ds[0];
    if (ROWS == 0u) {
        dst[id] = fetch(src_t, is_);
        return;
    }
    if (ROWS == 2u) {
        // v_q: the source's four values at position q of the last dimension (contiguous
        // along the other); the destination's row c takes component c of each.
        uint s1 = p.ss[RANK - 1u] / 4u, d2 = p.ds[max(RANK, 2u) - 2u] / 4u;
        vec4 v0 = texelFetch(src_t, int(is_ >> 2));
        vec4 v1 = texelFetch(src_t, int((is_ + s1) >> 2));
        vec4 v2 = texelFetch(src_t, int((is_ + 2u * s1) >> 2));
        vec4 v3 = texelFetch(src_t, int((is_ + 3u * s1) >> 2));
        dst4[id >> 2] = vec4(v0.x, v1.x, v2.x, v3.x);
        dst4[(id + d2) >> 2] = vec4(v0.y, v1.y, v2.y, v3.y);
        dst4[(id + 2u * d2) >> 2] = vec4(v0.z, v1.z, v2.z, v3.z);
        dst4[(id + 3u * d2) >> 2] = vec4(v0.w, v1.w, v2.w, v3.w);
        return;
    }
    vec4 v;
    if (SRC == 1u) {
        v = texelFetch(src_t, int(is_ >> 2));
    } else if (SRC == 2u) {
        v = vec4(fetch(src_t, is_));
    } else {
        uint step = p.ss[RANK - 1u];
        v = vec4(fetch(src_t, is_), fetch(src_t, is_ + step), fetch(src_t, is_ + 2u * step),
                 fetch(src_t, is_ + 3u * step));
    }
    dst4[id >> 2] = v;
}
