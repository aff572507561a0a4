#version 450
// Index ops over tensors viewed as [outer, n, inner] along the indexed axis.
// MODE 0, gather:      out[o, j, k] = src[o, idx(o, j, k), k]
// MODE 1, scatter_add: out[o, r, k] = base[o, r, k] + sum_{j : idx(o, j, k) == r} upd[o, j, k]
// MODE 2, to_f32:      out[i] = float(idx[i]) for i < outer (integer tensor -> f32 values)
// idx(o, j, k) = idx[o*iso + j*isj + k*isk]; index_select on rows uses strides (0, 1, 0).
// scatter_add loops over j per output instead of using float atomics: deterministic, bit for
// bit, and needs no atomic-float extension.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
// Values through texel fetches (vectorised gathers on CPU drivers, where storage-buffer loads
// go lane by lane: NT-Xent's scatter_add over a 2048² matrix took 52 ms); the indices stay in
// a storage buffer (texel fetches may flush the denormals that small integers' bits are).
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) readonly buffer I { float idx[]; };
layout(set = 0, binding = 2) uniform samplerBuffer upd_t;
layout(set = 0, binding = 3) writeonly buffer O { float outv[]; };
layout(push_constant) uniform P {
    uint outer; uint n_src; uint n_idx; uint inner; uint iso; uint isj; uint isk;
    uint m_inner; uint m_src; uint m_idx;   // fast_div's multipliers of inner, n_src, n_idx
} p;

uint index_at(uint o, uint j, uint k) {
    return floatBitsToUint(idx[o * p.iso + j * p.isj + k * p.isk]);
}

void main() {
    uint id = flat_id(256u);
    if (MODE == 2u) {
        if (id < p.outer) outv[id] = float(floatBitsToUint(idx[id]));
        return;
    }
    if (MODE == 0u) {
        if (id >= p.outer * p.n_idx * p.inner) return;
        uint oj = fast_div(id, p.inner, p.m_inner), k = id - oj * p.inner;
        uint o = fast_div(oj, p.n_idx, p.m_idx), j = oj - o * p.n_idx;
        // The host validates indices; the clamp only keeps a bad one inside the buffer.
        uint r = min(index_at(o, j, k), p.n_src - 1u);
        outv[id] = fetch(src_t, (o * p.n_src + r) * p.inner + k);
    } else {
        if (id >= p.outer * p.n_src * p.inner) return;
        uint or_ = fast_div(id, p.inner, p.m_inner), k = id - or_ * p.inner;
        uint o = fast_div(or_, p.n_src, p.m_src), r = or_ - o * p.n_src;
        float acc = fetch(src_t, id);
        for (uint j = 0u; j < p.n_idx; ++j)
            if (index_at(o, j, k) == r) acc += fetch(upd_t, (o * p.n_idx + j) * p.inner + k);
        outv[id] = acc;
    }
}
