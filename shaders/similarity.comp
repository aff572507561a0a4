#version 450
// The fused tile kernels of similarity_lse (engine/src/ops/similarity.rs). A tile holds the raw
// dot products d_ij = q_i·k_j of query rows r0 .. r0 + rows against all n keys, computed by
// the matmul kernel; s_ij = d_ij / τ. Key j is allowed for query i unless self-pairs are
// excluded and j = i; it is a positive when it is allowed and its code equals the query's
// (codes: the positive index per query against key indices, or dense labels).
//
// MODE 0, statistics: per row, two passes over the tile's row (the maxima, then the sums of
//   exp(s - max)) give lse_out over the allowed keys, the sum and count of the positives'
//   logits and lse_in over the positives, the external positive logit e_i counted in all
//   four where there is one; written to rows r0.. of the [M, 4] output. Only the tile is read:
//   masks, shifts, exponentials and sums never touch memory. A row with no allowed key gets
//   lse_out = -inf, one with no positive lse_in = -inf (never NaN).
//   GROUP = 0: one invocation per row (CPU drivers); GROUP = 1: a 64-lane workgroup per row
//   (GPUs, and rows too long for a CPU driver's loop budget).
// MODE 1, gradient: per tile entry, dL/dd_ij from the saved statistics and their upstream
//   gradient g (columns 0, 1, 3; the count has none):
//   ( [allowed] g_out e^(s - lse_out) + [positive] (g_sum + g_in e^(s - lse_in)) ) / τ.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint MODE = 0;
layout(constant_id = 1) const uint GROUP = 0;
layout(set = 0, binding = 0) uniform samplerBuffer d_t;      // the tile [rows, n]
layout(set = 0, binding = 1) uniform samplerBuffer qcode_t;  // [M] the queries' codes
layout(set = 0, binding = 2) uniform samplerBuffer kcode_t;  // [n] the keys' codes
layout(set = 0, binding = 3) uniform samplerBuffer ext_t;    // [M] external positive logits
layout(set = 0, binding = 4) uniform samplerBuffer stats_t;  // [M, 4] saved statistics (MODE 1)
layout(set = 0, binding = 5) uniform samplerBuffer g_t;      // [M, 4] their gradient (MODE 1)
layout(set = 0, binding = 6) writeonly buffer Y { float y[]; };
// exclude_self, positives, ext: 0 or 1.
layout(push_constant) uniform P {
    uint rows; uint n; uint r0; float inv_t; uint exclude_self; uint positives; uint ext;
} p;

#define NEG_INF uintBitsToFloat(0xff800000u)

bool allowed(uint i, uint j) { return p.exclude_self == 0u || i != j; }

// A finite shift for exp: a row whose maximum is -inf sums nothing, one at +inf has overflowed.
float shift(float m) { return isinf(m) ? 0.0 : m; }

float lse(float m, float l) { return l > 0.0 ? shift(m) + log(l) : NEG_INF; }

// Pass 1 over this invocation's share of row `row` (j = first, first + stride, ...): the
// maxima over the allowed keys and over the positives.
vec2 pass1(uint row, uint first, uint stride) {
    uint i = p.r0 + row;
    float qc = p.positives != 0u ? fetch(qcode_t, i) : 0.0;
    vec2 m = vec2(NEG_INF);
    for (uint j = first; j < p.n; j += stride) {
        if (!allowed(i, j)) continue;
        float s = fetch(d_t, row * p.n + j) * p.inv_t;
        m.x = max(m.x, s);
        if (p.positives != 0u && fetch(kcode_t, j) == qc) m.y = max(m.y, s);
    }
    return m;
}

// Pass 2: Σ exp(s - m_out) over the allowed keys, Σ exp(s - m_in), Σ s and the count over
// the positives.
vec4 pass2(uint row, uint first, uint stride, vec2 m) {
    uint i = p.r0 + row;
    float qc = p.positives != 0u ? fetch(qcode_t, i) : 0.0;
    vec2 sh = vec2(shift(m.x), shift(m.y));
    vec4 acc = vec4(0.0);
    for (uint j = first; j < p.n; j += stride) {
        if (!allowed(i, j)) continue;
        float s = fetch(d_t, row * p.n + j) * p.inv_t;
        acc.x += exp(s - sh.x);
        if (p.positives != 0u && fetch(kcode_t, j) == qc) {
            acc.y += exp(s - sh.y);
            acc.z += s;
            acc.w += 1.0;
        }
    }
    return acc;
}

// The external positive logit joins both maxima.
vec2 with_ext(uint i, vec2 m) {
    if (p.ext == 0u) return m;
    float e = fetch(ext_t, i);
    return vec2(max(m.x, e), max(m.y, e));
}

void finish(uint row, vec2 m, vec4 acc) {
    uint i = p.r0 + row;
    if (p.ext != 0u) {
        float e = fetch(ext_t, i);
        acc += vec4(exp(e - shift(m.x)), exp(e - shift(m.y)), e, 1.0);
    }
    y[i * 4u] = lse(m.x, acc.x);
    y[i * 4u + 1u] = acc.z;
    y[i * 4u + 2u] = acc.w;
    y[i * 4u + 3u] = lse(m.y, acc.y);
}

void gradient() {
    uint idx = flat_id(64u);
    if (idx >= p.rows * p.n) return;
    uint row = idx / p.n, j = idx % p.n, i = p.r0 + row;
    float ds = 0.0;
    if (allowed(i, j)) {
        float s = fetch(d_t, idx) * p.inv_t;
        ds = fetch(g_t, i * 4u) * exp(s - fetch(stats_t, i * 4u));
        if (p.positives != 0u && fetch(kcode_t, j) == fetch(qcode_t, i)) {
            ds += fetch(g_t, i * 4u + 1u)
                + fetch(g_t, i * 4u + 3u) * exp(s - fetch(stats_t, i * 4u + 3u));
        }
    }
    y[idx] = ds * p.inv_t;
}

shared vec2 s_max[64];
shared vec4 s_sum[64];

void main() {
    if (MODE == 1u) { gradient(); return; }
    if (GROUP == 0u) {
        uint row = flat_id(64u);
        if (row >= p.rows) return;
        vec2 m = with_ext(p.r0 + row, pass1(row, 0u, 1u));
        finish(row, m, pass2(row, 0u, 1u, m));
        return;
    }
    uint row = flat_group();
    uint lane = gl_LocalInvocationID.x;
    if (row >= p.rows) return;   // uniform per workgroup
    s_max[lane] = pass1(row, lane, 64u);
    barrier();
    for (uint k = 32u; k > 0u; k >>= 1) {
        if (lane < k) s_max[lane] = max(s_max[lane], s_max[lane + k]);
        barrier();
    }
    vec2 m = with_ext(p.r0 + row, s_max[0]);
    s_sum[lane] = pass2(row, lane, 64u, m);
    barrier();
    for (uint k = 32u; k > 0u; k >>= 1) {
        if (lane < k) s_sum[lane] += s_sum[lane + k];
        barrier();
    }
    if (lane == 0u) finish(row, m, s_sum[0]);
}
