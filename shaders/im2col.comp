#version 450
// Sliding windows of an NCHW batch (PyTorch's unfold / fold), the core of conv2d and pooling.
// MODE 0, unfold: cols[n, l, (c*KH + kh)*KW + kw] = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//                 (l = oh*OW + ow), `pad` where the window leaves the image.
//                 One invocation per (n, l, c) writes that channel's KH*KW taps.
// MODE 1, fold:   x[n, c, h, w] = sum of the cols entries that unfold read from (n, c, h, w),
//                 the adjoint of unfold; one invocation per pixel loops over its KH*KW taps
//                 (no float atomics: deterministic bit for bit).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) writeonly buffer O { float outv[]; };
layout(push_constant) uniform P {
    uint n; uint c; uint h; uint w; uint kh; uint kw; uint oh; uint ow;
    uint sh; uint sw; uint ph; uint pw; uint dh; uint dw; float pad;
} p;

void main() {
    uint id = flat_id(256u);
    uint kk = p.kh * p.kw, ckk = p.c * kk, l_all = p.oh * p.ow;
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
        for (uint ky = 0u; ky < p.kh; ++ky) {
            int y = y0 + int(ky * p.dh);
            bool row_in = y >= 0 && y < int(p.h);
            for (uint kx = 0u; kx < p.kw; ++kx) {
                int x = x0 + int(kx * p.dw);
                float v = p.pad;
                if (row_in && x >= 0 && x < int(p.w)) v = fetch(src_t, src + uint(y) * p.w + uint(x));
                outv[dst + ky * p.kw + kx] = v;
            }
        }
    } else {
        if (id >= p.n * p.c * p.h * p.w) return;
        uint x = id % p.w, r = id / p.w;
        uint y = r % p.h; r /= p.h;
        uint ch = r % p.c, b = r / p.c;
        float acc = 0.0;
        bool unit = p.sh == 1u && p.sw == 1u; // no divisions for stride 1
        uint i = 0u;
        for (uint ky = 0u; ky < p.kh; ++ky) {
            int ty = int(y + p.ph) - int(ky * p.dh);
            for (uint kx = 0u; kx < p.kw; ++kx, ++i) {
                int tx = int(x + p.pw) - int(kx * p.dw);
                if (ty < 0 || tx < 0) continue;
                uint oy = uint(ty), ox = uint(tx);
                if (!unit) {
                    if (oy % p.sh != 0u || ox % p.sw != 0u) continue;
                    oy /= p.sh;
                    ox /= p.sw;
                }
                if (oy >= p.oh || ox >= p.ow) continue;
                acc += fetch(src_t, (b * l_all + oy * p.ow + ox) * ckk + ch * kk + i);
            }
        }
        outv[id] = acc;
    }
}
