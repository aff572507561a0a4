#version 450
// Max pooling of an NCHW batch read in place (no column matrix): the values and gradients of
// max over unfold's columns (taps outside the image −inf), in two modes.
// MODE 0, forward: one invocation per output takes the largest tap of its window: the first
//   tap, replaced only by a larger one (the reduction kernel's rule: the same value, NaN
//   included).
// MODE 1, backward: one invocation per input pixel sums, over the windows covering it,
//   g[window] / (taps equal to the window's max) where the pixel equals that max (ties share,
//   as max's gradient over the columns), in fold's order: the same sum, bit for bit.
// MODE 2, backward where windows do not overlap (stride >= window span, as 2x2 pooling with
//   stride 2): one invocation per window writes the gradients of its taps.
// Binding 1 is the output gradient in MODES 1 and 2; MODE 0 binds the input there again, unread.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
// The window's size as specialisation constants: the tap loops unroll (lavapipe runs loops
// with a pushed bound markedly slower).
layout(constant_id = 1) const uint KH = 1;
layout(constant_id = 2) const uint KW = 1;
layout(set = 0, binding = 0) uniform samplerBuffer x_t;
layout(set = 0, binding = 1) uniform samplerBuffer g_t;
layout(set = 0, binding = 2) writeonly buffer O { float outv[]; };
layout(push_constant) uniform P {
    uint n; uint c; uint h; uint w; uint oh; uint ow;
    uint sh; uint sw; uint ph; uint pw; uint dh; uint dw;
    // fast_div multipliers of OH*OW, OW, H*W and W
    uint m_l; uint m_ow; uint m_hw; uint m_w;
} p;

#define NEG_INF uintBitsToFloat(0xff800000u)

// The tap at (y, x) of image plane `plane` (an offset), −inf outside the image.
float tap(uint plane, int y, int x) {
    if (y < 0 || y >= int(p.h) || x < 0 || x >= int(p.w)) return NEG_INF;
    return fetch(x_t, plane + uint(y) * p.w + uint(x));
}

// The max of window (oy, ox) of a plane, by the reduction's rule (the first tap, replaced
// only by a larger one), and how many taps equal it, in one pass: a larger tap restarts the
// count (a NaN first tap stays the max and equals nothing: count 0).
float window_max(uint plane, uint oy, uint ox, out float count) {
    int y0 = int(oy * p.sh) - int(p.ph), x0 = int(ox * p.sw) - int(p.pw);
    float m = 0.0;
    count = 0.0;
    bool first = true;
    for (uint ky = 0u; ky < KH; ++ky)
        for (uint kx = 0u; kx < KW; ++kx) {
            float v = tap(plane, y0 + int(ky * p.dh), x0 + int(kx * p.dw));
            if (first || v > m) {
                m = v;
                count = v == v ? 1.0 : 0.0;
            } else if (v == m) {
                count += 1.0;
            }
            first = false;
        }
    return m;
}

// The share of window (oy, ox)'s gradient g that a tap of value v gets: g / (taps equal to
// the max) if v is the max, else 0 (the columns' mask times g / count).
float share(uint plane, uint oy, uint ox, float v, float g) {
    float count;
    float m = window_max(plane, oy, ox, count);
    return (v == m ? 1.0 : 0.0) * (g / count);
}

void main() {
    uint id = flat_id(256u);
    uint l_all = p.oh * p.ow, hw = p.h * p.w;
    if (MODE == 0u) {
        if (id >= p.n * p.c * l_all) return;
        uint pl = fast_div(id, l_all, p.m_l), l = id - pl * l_all;
        uint oy = fast_div(l, p.ow, p.m_ow), ox = l - oy * p.ow;
        float count;
        outv[id] = window_max(pl * hw, oy, ox, count);
        return;
    }
    if (MODE == 2u) {
        // Backward over windows that do not overlap: one invocation per window writes its
        // in-image taps (the host zeroed the output; a pixel no window covers stays 0). Each
        // tap's share is computed once, where MODE 1 would recompute the window per pixel.
        if (id >= p.n * p.c * l_all) return;
        uint pl = fast_div(id, l_all, p.m_l), l = id - pl * l_all;
        uint oy = fast_div(l, p.ow, p.m_ow), ox = l - oy * p.ow;
        uint plane = pl * hw;
        float count;
        float m = window_max(plane, oy, ox, count);
        int y0 = int(oy * p.sh) - int(p.ph), x0 = int(ox * p.sw) - int(p.pw);
        float q = fetch(g_t, id) / count;
        for (uint ky = 0u; ky < KH; ++ky)
            for (uint kx = 0u; kx < KW; ++kx) {
                int y = y0 + int(ky * p.dh), x = x0 + int(kx * p.dw);
                if (y < 0 || y >= int(p.h) || x < 0 || x >= int(p.w)) continue;
                float v = fetch(x_t, plane + uint(y) * p.w + uint(x));
                // 0.0 + share, as fold's sum of one term (a -0.0 share becomes +0.0).
                outv[plane + uint(y) * p.w + uint(x)] = 0.0 + (v == m ? 1.0 : 0.0) * q;
            }
        return;
    }
    if (id >= p.n * p.c * hw) return;
    uint pl = fast_div(id, hw, p.m_hw), r = id - pl * hw;
    uint y = fast_div(r, p.w, p.m_w), x = r - y * p.w;
    float v = fetch(x_t, id);
    float acc = 0.0;
    // The windows covering (y, x), in the order of fold's general loop (ky, then kx,
    // ascending); undilated windows find them with two divisions per axis, as fold does.
    if (p.dh == 1u && p.dw == 1u) {
        int yy = int(y + p.ph), xx = int(x + p.pw);
        int ny = yy - int(KH) + 1, nx = xx - int(KW) + 1;
        int oy_lo = ny <= 0 ? 0 : (ny + int(p.sh) - 1) / int(p.sh);
        int ox_lo = nx <= 0 ? 0 : (nx + int(p.sw) - 1) / int(p.sw);
        int oy_hi = min(yy / int(p.sh), int(p.oh) - 1);
        int ox_hi = min(xx / int(p.sw), int(p.ow) - 1);
        for (int oy = oy_hi; oy >= oy_lo; --oy)
            for (int ox = ox_hi; ox >= ox_lo; --ox)
                acc += share(pl * hw, uint(oy), uint(ox), v,
                             fetch(g_t, pl * l_all + uint(oy) * p.ow + uint(ox)));
        outv[id] = acc;
        return;
    }
    for (uint ky = 0u; ky < KH; ++ky) {
        int ty = int(y + p.ph) - int(ky * p.dh);
        for (uint kx = 0u; kx < KW; ++kx) {
            int tx = int(x + p.pw) - int(kx * p.dw);
            if (ty < 0 || tx < 0) continue;
            uint oy = uint(ty), ox = uint(tx);
            if (oy % p.sh != 0u || ox % p.sw != 0u) continue;
            oy /= p.sh;
            ox /= p.sw;
            if (oy >= p.oh || ox >= p.ow) continue;
            acc += share(pl * hw, oy, ox, v, fetch(g_t, pl * l_all + oy * p.ow + ox));
        }
    }
    outv[id] = acc;
}
