#version 450
// Reduction of the middle axis of a tensor viewed as [outer, n, inner] -> [outer, inner].
// GROUP = 0: one invocation per output chunk, looping over it (coalesced across inner; on CPU
//            drivers such as lavapipe this vectorises across outputs and is the fast path).
// GROUP = 1: one 64-wide workgroup per output with a shared-memory tree (inner == 1 only;
//            the fast path on GPUs for long rows).
// argmax/argmin write the index as raw uint bits; ties go to the first index, as in PyTorch.
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
    uint outer; uint n; uint inner;
    uint chunk;      // elements of n each invocation reduces (thread mode)
    uint in_pairs;   // input holds (value, index) pairs: a later pass of argmax/argmin
    uint out_pairs;  // write (value, index) pairs: an earlier pass of argmax/argmin
    // @fused-push: a fused prologue's push constants go here
} p;

#ifdef FUSED
// @fused-input: a fused prologue's bindings and functions (walk_start, walk_at) go here
#else
float load_x(uint i) { return fetch(x_t, i); }
#endif

const uint R_SUM = 0, R_MAX = 1, R_MIN = 2, R_ARGMAX = 3, R_ARGMIN = 4;

// Does candidate (v, j) replace the current best (b, bj)? Lower index wins ties.
bool better(float v, uint j, float b, uint bj) {
    if (OP == R_MAX || OP == R_ARGMAX) return v > b || (v == b && j < bj);
    return v < b || (v == b && j < bj);
}

float init_value() {
    if (OP == R_SUM) return 0.0;
    if (OP == R_MAX || OP == R_ARGMAX) return uintBitsToFloat(0xff800000u); // -inf
    return uintBitsToFloat(0x7f800000u);                                 // +inf
}

void write_out(uint o, float v, uint j) {
    // Pair indices are stored as float values (exact below 2^24), not bit patterns, because
    // they are read back through texel fetches, which may flush denormals.
    if (p.out_pairs != 0u) { y[2u * o] = v; y[2u * o + 1u] = float(j); return; }
    y[o] = (OP == R_ARGMAX || OP == R_ARGMIN) ? uintBitsToFloat(j) : v;
}

shared float s_val[64];
shared uint s_idx[64];

void main() {
    if (GROUP == 0u) {
        // Output (o, c, k) of [outer, nchunks, inner] reduces j in chunk c. Rows longer than
        // one chunk take several passes (the host loops), which also keeps every invocation
        // under llvmpipe's loop limit (see common.glsl).
        uint nchunks = (p.n + p.chunk - 1u) / p.chunk;
        uint id = flat_id(64u);
        if (id >= p.outer * nchunks * p.inner) return;
        uint k = id % p.inner, oc = id / p.inner;
        uint c = oc % nchunks, o = oc / nchunks;
        uint j_end = min(p.n, (c + 1u) * p.chunk);
        float acc = init_value();
        uint best = 0xffffffffu;
        uint j_begin = c * p.chunk;
#ifdef FUSED
        walk_start((o * p.n + j_begin) * p.inner + k);
#endif
        for (uint j = j_begin; j < j_end; ++j) {
            uint at = (o * p.n + j) * p.inner + k;
#ifdef FUSED
            // A fused prologue is only ever the first pass: no pairs to read. Its broadcast
            // leaves step along the reduced axis from where walk_start put them.
            float v = walk_at(at, j - j_begin);
            uint vj = j;
#else
            float v = p.in_pairs != 0u ? fetch(x_t, 2u * at) : fetch(x_t, at);
            uint vj = p.in_pairs != 0u ? uint(fetch(x_t, 2u * at + 1u)) : j;
#endif
            if (OP == R_SUM) acc += v;
            else if (best == 0xffffffffu || better(v, vj, acc, best)) { acc = v; best = vj; }
        }
        write_out(id, acc, best);
        return;
    }
    uint row = flat_group();
    uint lane = gl_LocalInvocationID.x;
    if (row >= p.outer) return;   // uniform per workgroup, so barriers below are safe
    uint base = row * p.n;
    float acc = init_value();
    uint best = 0xffffffffu;
    // The host sends rows of at most 64 chunks here, so each lane loops <= chunk times.
#ifdef FUSED
    walk_start(base + lane);
#endif
    for (uint j = lane; j < p.n; j += 64u) {
#ifdef FUSED
        float v = walk_at(base + j, j - lane);
#else
        float v = load_x(base + j);
#endif
        if (OP == R_SUM) acc += v;
        else if (best == 0xffffffffu || better(v, j, acc, best)) { acc = v; best = j; }
    }
    s_val[lane] = acc;
    s_idx[lane] = best;
    barrier();
    for (uint s = 32u; s > 0u; s >>= 1) {
        if (lane < s) {
            float v = s_val[lane + s];
            uint j = s_idx[lane + s];
            if (OP == R_SUM) s_val[lane] += v;
            else if (j != 0xffffffffu &&
                     (s_idx[lane] == 0xffffffffu || better(v, j, s_val[lane], s_idx[lane]))) {
                s_val[lane] = v; s_idx[lane] = j;
            }
        }
        barrier();
    }
    if (lane == 0u) write_out(row, s_val[0], s_idx[0]);
}
