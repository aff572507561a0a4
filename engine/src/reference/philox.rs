//! Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11), written from the paper for checking the GPU generator bit for bit.

/// The four output words for counter `c` and key `k`.
pub fn philox4x32_10(mut c: [u32; 4], mut k: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c[0] as u64;
        let p1 = 0xCD9E_8D57u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// What element `i` of draw number `offset` of a stream seeded with `seed` holds.
pub fn bits(seed: u64, offset: u32, i: u32) -> [u32; 4] {
    philox4x32_10([i, offset, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// Uniform [lo, hi) value of element `i` (24-bit mantissa grid).
pub fn uniform(seed: u64, offset: u32, i: u32, lo: f64, hi: f64) -> f64 {
    let u = (bits(seed, offset, i)[0] >> 8) as f64 / 16_777_216.0;
    lo + (hi - lo) * u
}

/// Normal value of element `i` (Box-Muller on the first two words).
pub fn normal(seed: u64, offset: u32, i: u32, mean: f64, std: f64) -> f64 {
    let r = bits(seed, offset, i);
    let u0 = (r[0] >> 8) as f64 / 16_777_216.0;
    let u1 = ((r[1] >> 8) + 1) as f64 / 16_777_216.0;
    mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u0).cos()
}

#[cfg(test)]
mod tests {
    /// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
    #[test]
    fn known_answers() {
        assert_eq!(
            super::philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            super::philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            super::philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }
}
