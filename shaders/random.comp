#version 450
// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Element i uses counter
// (i, offset, 0, 0) and key (seed_lo, seed_hi), so a value depends only on the seed, the
// stream offset and its index, never on how the work was dispatched. The seed is read from a
// device buffer, not a push constant: a training step recorded for replay draws new numbers
// at every replay when the host writes the step's seed there (engine/src/ops/random.rs).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(set = 0, binding = 0) writeonly buffer Y { float y[]; };
// (seed_lo, seed_hi); integers stay in a storage buffer (common.glsl says why).
layout(set = 0, binding = 1) readonly buffer K { uint key[]; };
layout(push_constant) uniform P {
    uint n; uint offset; uint dist; float a; float b;
} p;

const uint UNIFORM = 0, NORMAL = 1, BITS = 2;

uvec4 philox(uvec4 c, uvec2 k) {
    for (int r = 0; r < 10; ++r) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c.x, hi0, lo0);
        umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
        c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += uvec2(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

void main() {
    uint i = flat_id(256u);
    if (i >= p.n) return;
    uvec4 r = philox(uvec4(i, p.offset, 0u, 0u), uvec2(key[0], key[1]));
    if (p.dist == BITS) { y[i] = uintBitsToFloat(r.x); return; }
    // 24 random bits give every f32 in [0, 1) on a 2^-24 grid exactly.
    float u0 = float(r.x >> 8) * (1.0 / 16777216.0);
    if (p.dist == UNIFORM) { y[i] = p.a + (p.b - p.a) * u0; return; }
    // Box-Muller; u1 in (0, 1] so the log is finite.
    float u1 = float((r.y >> 8) + 1u) * (1.0 / 16777216.0);
    float z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u0);
    y[i] = p.a + p.b * z;
}
