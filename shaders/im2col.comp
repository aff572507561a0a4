#version 450
// Sliding windows of an NCHW batch (PyTorch's unfold / fold), the core of conv2d and pooling.
// MODE 0, unfold: cols[n, l, (c*KH + kh)*KW + kw] = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//                 (l = oh*OW + ow), `pad` where the window leaves the image.
//                 One invocation per (n, l, c) writes that channel's KH*KW taps.
// MODE 2, unfold four columns at once (rows of a multiple of 4): one invocation per four
//                 consecutive entries of a row, one vec4 store (a CPU driver stores lane by
//                 lane, so four floats per store instead of one), coordinates by fast_div.
//                 Rows may be longer than C*KH*KW (`row`: conv2d pads them to a multiple of 4
//                 for the vec4 matmul kernel); the entries past it are 0.
// MODE 1, fold:   x[n, c, h, w] = sum of the cols entries that unfold read from (n, c, h, w),
//                 the adjoint of unfold; one invocation per pixel loops over its KH*KW taps
//                 (no float atomics: deterministic bit for bit).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
// The window's size, and (MODE 1) whether it is undilated, as specialisation constants: the
// tap loops unroll, divisions by KW and KH*KW are by constants, and each pipeline holds only
// its path (lavapipe runs a kernel markedly slower beside paths selected by push constants).
layout(constant_id = 1) const uint KH = 1;
layout(constant_id = 2) const uint KW = 1;
layout(constant_id = 3) const uint UNDILATED = 0;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) writeonly buffer O { float outv[]; };
layout(set = 0, binding = 1) writeonly buffer O4 { vec4 outv4[]; };
layout(push_constant) uniform P {
    uint n; uint c; uint h; uint w; uint oh; uint ow;
    uint sh; uint sw; uint ph; uint pw; uint dh; uint dw; float pad;
    uint row;   // the columns' row length: C*KH*KW, or more (MODES 1 and 2; zeros past it)
    // fast_div multipliers (MODE 2) of row/4, OH*OW and OW
    uint m_row4; uint m_l; uint m_ow;
} p;

void main() {
    uint id = flat_id(256u);
    uint kk = KH * KW, ckk = p.c * kk, l_all = p.oh * p.ow;
    if (MODE == 2u) {
        uint row4 = p.row / 4u;
        if (id >= p.n * l_all * row4) return;
        uint nl = fast_div(id, row4, p.m_row4), j0 = 4u * (id - nl * row4);
        uint b = fast_div(nl, l_all, p.m_l), l = nl - b * l_all;
        uint oy = fast_div(l, p.ow, p.m_ow), ox = l - oy * p.ow;
        int y0 = int(oy * p.sh) - int(p.ph), x0 = int(ox * p.sw) - int(p.pw);
        vec4 v;
        for (uint q = 0u; q < 4u; ++q) {
            uint j = j0 + q;
            uint ch = j / kk, t = j - ch * kk;
            uint ky = t / KW, kx = t - ky * KW;
            int y = y0 + int(ky * p.dh), x = x0 + int(kx * p.dw);
            float e = p.pad;
            if (ch >= p.c) e = 0.0;   // a padded row's tail
            else if (y >= 0 && y < int(p.h) && x >= 0 && x < int(p.w))
                e = fetch(src_t, ((b * p.c + ch) * p.h + uint(y)) * p.w + uint(x));
            v[q] = e;
        }
        outv4[id] = v;
        return;
    }
    if (MODE == 0u) {
        // One invocation per (sample, window, channel) writes that channel's kh*kw taps, so
        // the index arithmetic is shared by kk outputs.
        if (id >= p.n * l_all * p.c) return;
        uint ch = id % p.c, nl = id / p.c;
        uint l = nl % l_all, b = nl / l_all;
        int y0 = int((l / p.ow) * p.sh) - int(p.ph);
        int x0 = int((l % p.ow) * p.sw) - int(p.pw);
        uint src = (b * p.c + ch) * p.h * p.w;
        uint dst = nl * ckk + ch * kk;
        for (uint ky = 0u; ky < KH; ++ky) {
            int y = y0 + int(ky * p.dh);
            bool row_in = y >= 0 && y < int(p.h);
            for (uint kx = 0u; kx < KW; ++kx) {
                int x = x0 + int(kx * p.dw);
                float v = p.pad;
                if (row_in && x >= 0 && x < int(p.w)) v = fetch(src_t, src + uint(y) * p.w + uint(x));
                outv[dst + ky * KW + kx] = v;
            }
        }
    } else {
        if (id >= p.n * p.c * p.h * p.w) return;
        uint x = id % p.w, r = id / p.w;
        uint y = r % p.h; r /= p.h;
        uint ch = r % p.c, b = r / p.c;
        float acc = 0.0;
        if (UNDILATED == 1u) {
            // Undilated windows: those that read pixel (y, x) are oy in
            // [ceil((y + ph - kh + 1) / sh), floor((y + ph) / sh)] within [0, oh) (ox likewise),
            // found with two divisions per axis instead of two per tap (a CPU driver divides
            // lane by lane; pooling's stride-2 fold spent most of its time there). Taps in the
            // order of the general loop below (ky ascending = oy descending): the same sum,
            // bit for bit.
            int yy = int(y + p.ph), xx = int(x + p.pw);
            int ny = yy - int(KH) + 1, nx = xx - int(KW) + 1;
            int oy_lo = ny <= 0 ? 0 : (ny + int(p.sh) - 1) / int(p.sh);
            int ox_lo = nx <= 0 ? 0 : (nx + int(p.sw) - 1) / int(p.sw);
            int oy_hi = min(yy / int(p.sh), int(p.oh) - 1);
            int ox_hi = min(xx / int(p.sw), int(p.ow) - 1);
            for (int oy = oy_hi; oy >= oy_lo; --oy) {
                uint at = (b * l_all + uint(oy) * p.ow) * p.row + ch * kk + uint(yy - oy * int(p.sh)) * KW;
                for (int ox = ox_hi; ox >= ox_lo; --ox)
                    acc += fetch(src_t, at + uint(ox) * p.row + uint(xx - ox * int(p.sw)));
            }
            outv[id] = acc;
            return;
        }
        bool unit = p.sh == 1u && p.sw == 1u; // no divisions for stride 1
        uint i = 0u;
        for (uint ky = 0u; ky < KH; ++ky) {
            int ty = int(y + p.ph) - int(ky * p.dh);
            for (uint kx = 0u; kx < KW; ++kx, ++i) {
                int tx = int(x + p.pw) - int(kx * p.dw);
                if (ty < 0 || tx < 0) continue;
                uint oy = uint(ty), ox = uint(tx);
                if (!unit) {
                    if (oy % p.sh != 0u || ox % p.sw != 0u) continue;
                    oy /= p.sh;
                    ox /= p.sw;
                }
                if (oy >= p.oh || ox >= p.ow) continue;
                acc += fetch(src_t, (b * l_all + oy * p.ow + ox) * p.row + ch * kk + i);
            }
        }
        outv[id] = acc;
    }
}
