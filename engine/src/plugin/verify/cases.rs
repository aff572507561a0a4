//! Generated inputs: sizes, values at three scales, seeds.

use super::*;

/// splitmix64 -> uniform(-1, 1) * scale, rounded to f32 so device and reference see the same
/// numbers.
pub(super) fn values(seed: u64, count: usize, scale: f64) -> Vec<f64> {
    let mut s = seed;
    (0..count)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * scale) as f32 as f64
        })
        .collect()
}

/// Cases with batches from `nmin` (the component's minimum) to `nmin + 5`, so shrinking ends
/// at the minimum and the report shows the batch that failed.
pub(super) fn cases(nmin: usize) -> impl Strategy<Value = Case> {
    (
        nmin..=nmin + 5,
        2usize..=3,
        1usize..=6,
        1u32..=3,
        any::<u64>(),
        prop_oneof![Just(1.0), Just(0.1), Just(10.0)],
    )
        .prop_map(|(n, v, d, classes, seed, scale)| Case {
            n,
            v,
            d,
            classes,
            seed,
            scale,
        })
}
