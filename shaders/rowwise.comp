#version 450
// Fused row-wise kernels over the last axis of a tensor viewed as [rows, n]:
// softmax, log_softmax and logsumexp (all max-subtracted, so no exp() of raw logits) and
// L2 normalisation y = x / max(||x||, eps) (PyTorch's F.normalize).
// GROUP = 0: one invocation per row (CPU drivers); GROUP = 1: one workgroup per row (GPUs).
// FUSED (a variant generated at run time, lazy/codegen.rs: fused_variant): the input is a
// pending elementwise tree computed per element by value_at (a fused prologue), not a buffer.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint OP = 0;
layout(constant_id = 1) const uint GROUP = 0;
#ifndef FUSED
layout(set = 0, binding = 0) uniform samplerBuffer x_t;
#endif
layout(set = 0, binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint rows; uint n; float eps;
    // @fused-push: a fused prologue's push constants go here
} p;

#ifdef FUSED
// @fused-input: a fused prologue's bindings and functions go here
// The prologue is walked along the row from its first element (`start_row`): its broadcast
// leaves' coordinates are computed once per row, not per read.
uint row_base;
void start_row(uint base) { row_base = base; walk_start(base); }
float load_x(uint i) { return walk_at(i, i - row_base); }
#else
void start_row(uint base) {}
float load_x(uint i) { return fetch(x_t, i); }
#endif

const uint SOFTMAX = 0, LOG_SOFTMAX = 1, LOGSUMEXP = 2, L2_NORMALIZE = 3;
#define NEG_INF uintBitsToFloat(0xff800000u)

// The row statistic pass 1 finds: the max (softmax family) or the max |x| (L2, which scales
// by it so that squaring cannot overflow or underflow).
float first(float v) { return OP == L2_NORMALIZE ? abs(v) : v; }
// Pass 2 sums exp(x - m), or (x / m)^2 for L2.
float second(float v, float m) {
    if (OP == L2_NORMALIZE) { float t = m > 0.0 ? v / m : 0.0; return t * t; }
    return exp(v - m);
}
float shift(float m) { return (OP != L2_NORMALIZE && isinf(m)) ? 0.0 : m; }

void finish(uint row, uint first_j, uint stride, float m, float s) {
    uint base = row * p.n;
    if (OP == LOGSUMEXP) { if (first_j == 0u) y[row] = m + log(s); return; }
    float nrm = max(m * sqrt(s), p.eps);
    float ls = log(s);
    for (uint j = first_j; j < p.n; j += stride) {
        float v = load_x(base + j);
        y[base + j] = OP == L2_NORMALIZE ? v / nrm : (OP == SOFTMAX ? exp(v - m) / s : v - m - ls);
    }
}

// Pass 1 over this invocation's share of the row (first_j, first_j + stride, ...).
float pass1(uint base, uint first_j, uint stride) {
    float m = OP == L2_NORMALIZE ? 0.0 : NEG_INF;
    for (uint j = first_j; j < p.n; j += stride) m = max(m, first(load_x(base + j)));
    return m;
}

float pass2(uint base, uint first_j, uint stride, float m) {
    float s = 0.0;
    for (uint j = first_j; j < p.n; j += stride) s += second(load_x(base + j), m);
    return s;
}

shared float s_red[64];

void main() {
    if (GROUP == 0u) {
        uint row = flat_id(64u);
        if (row >= p.rows) return;
        uint base = row * p.n;
        start_row(base);
        float m = shift(pass1(base, 0u, 1u));
        finish(row, 0u, 1u, m, pass2(base, 0u, 1u, m));
        return;
    }
    uint row = flat_group();
    uint lane = gl_LocalInvocationID.x;
    if (row >= p.rows) return;   // uniform per workgroup
    uint base = row * p.n;
    start_row(base);
    s_red[lane] = pass1(base, lane, 64u);
    barrier();
    for (uint k = 32u; k > 0u; k >>= 1) {
        if (lane < k) s_red[lane] = max(s_red[lane], s_red[lane + k]);
        barrier();
    }
    float m = shift(s_red[0]);
    barrier();
    s_red[lane] = pass2(base, lane, 64u, m);
    barrier();
    for (uint k = 32u; k > 0u; k >>= 1) {
        if (lane < k) s_red[lane] += s_red[lane + k];
        barrier();
    }
    finish(row, lane, 64u, m, s_red[0]);
}
