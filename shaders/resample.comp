#version 450
// Bilinear resampling of an NCHW batch through per-sample affine maps: PyTorch's
// grid_sample(x, affine_grid(theta, [N, C, OH, OW], align_corners=False), "bilinear",
// align_corners=False). theta[n] = (a, b, tx, c, d, ty) maps output coordinates normalised to
// [-1, 1] to input coordinates. MODE 0: zeros outside the image; MODE 1: border (clamped).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
layout(set = 0, binding = 0) uniform samplerBuffer src_t;
layout(set = 0, binding = 1) uniform samplerBuffer theta_t;
layout(set = 0, binding = 2) writeonly buffer O { float outv[]; };
layout(push_constant) uniform P { uint n; uint c; uint h; uint w; uint oh; uint ow; } p;

float tap(uint base, int y, int x) {
    if (MODE == 1u) {
        y = clamp(y, 0, int(p.h) - 1);
        x = clamp(x, 0, int(p.w) - 1);
    } else if (y < 0 || y >= int(p.h) || x < 0 || x >= int(p.w)) {
        return 0.0;
    }
    return fetch(src_t, base + uint(y) * p.w + uint(x));
}

void main() {
    uint id = flat_id(256u);
    if (id >= p.n * p.c * p.oh * p.ow) return;
    uint ox = id % p.ow, r = id / p.ow;
    uint oy = r % p.oh; r /= p.oh;
    uint ch = r % p.c, b = r / p.c;
    float xn = (2.0 * float(ox) + 1.0) / float(p.ow) - 1.0;
    float yn = (2.0 * float(oy) + 1.0) / float(p.oh) - 1.0;
    uint t = b * 6u;
    float xs = fetch(theta_t, t) * xn + fetch(theta_t, t + 1u) * yn + fetch(theta_t, t + 2u);
    float ys = fetch(theta_t, t + 3u) * xn + fetch(theta_t, t + 4u) * yn + fetch(theta_t, t + 5u);
    float ix = ((xs + 1.0) * float(p.w) - 1.0) * 0.5;
    float iy = ((ys + 1.0) * float(p.h) - 1.0) * 0.5;
    if (MODE == 1u) {
        ix = clamp(ix, 0.0, float(p.w - 1u));
        iy = clamp(iy, 0.0, float(p.h - 1u));
    }
    float fx = floor(ix), fy = floor(iy);
    float wx = ix - fx, wy = iy - fy;
    int x0 = int(fx), y0 = int(fy);
    uint base = (b * p.c + ch) * p.h * p.w;
    outv[id] = (1.0 - wy) * ((1.0 - wx) * tap(base, y0, x0) + wx * tap(base, y0, x0 + 1))
             + wy * ((1.0 - wx) * tap(base, y0 + 1, x0) + wx * tap(base, y0 + 1, x0 + 1));
}
