#version 450
// Sliding windows of an NCHW batch (PyTorch's unfold / fold), the core of conv2d and pooling.
// MODE 0, unfold: cols[n, l, (c*KH + kh)*KW + kw] = x[n, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//                 (l = oh*OW + ow), `pad` where the window leaves the image.
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
        if (id >= p.n * l_all * ckk) return;
        uint col = id % ckk, nl = id / ckk;
        uint l = nl % l_all, b = nl / l_all;
        uint ch = col / kk, t = col % kk;
        int y = int((l / p.ow) * p.sh + (t / p.kw) * p.dh) - int(p.ph);
        int x = int((l % p.ow) * p.sw + (t % p.kw) * p.dw) - int(p.pw);
        float v = p.pad;
        if (y >= 0 && y < int(p.h) && x >= 0 && x < int(p.w))
            v = fetch(src_t, ((b * p.c + ch) * p.h + uint(y)) * p.w + uint(x));
        outv[id] = v;
    } else {
        if (id >= p.n * p.c * p.h * p.w) return;
        uint x = id % p.w, r = id / p.w;
        uint y = r % p.h; r /= p.h;
        uint ch = r % p.c, b = r / p.c;
        float acc = 0.0;
        for (uint i = 0u; i < kk; ++i) {
            int ty = int(y + p.ph) - int((i / p.kw) * p.dh);
            int tx = int(x + p.pw) - int((i % p.kw) * p.dw);
            if (ty < 0 || tx < 0 || uint(ty) % p.sh != 0u || uint(tx) % p.sw != 0u) continue;
            uint oy = uint(ty) / p.sh, ox = uint(tx) / p.sw;
            if (oy >= p.oh || ox >= p.ow) continue;
            acc += fetch(src_t, (b * l_all + oy * p.ow + ox) * ckk + ch * kk + i);
        }
        outv[id] = acc;
    }
}
