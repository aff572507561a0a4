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

/// Applies `c.degenerate` to `x`, `rows` samples of `row_len` values each (a loss's samples
/// hold all their views): column `seed % row_len` made constant (or constant plus 1e-4 of
/// its values), sample 1 made a copy of sample 0, or sample 0 made all zeros.
pub(super) fn degenerate(x: &mut [f64], c: &Case, row_len: usize) {
    let rows = x.len() / row_len.max(1);
    if rows == 0 {
        return;
    }
    match c.degenerate {
        Degenerate::None => {}
        Degenerate::ConstantColumn | Degenerate::NearConstantColumn => {
            let k = (c.seed % row_len as u64) as usize;
            let base = x[k];
            for r in 0..rows {
                let v = &mut x[r * row_len + k];
                *v = if c.degenerate == Degenerate::ConstantColumn {
                    base
                } else {
                    (base + 1e-4 * *v) as f32 as f64
                };
            }
        }
        Degenerate::DuplicateRows if rows >= 2 => {
            let (first, rest) = x.split_at_mut(row_len);
            rest[..row_len].copy_from_slice(first);
        }
        Degenerate::DuplicateRows => {}
        Degenerate::ZeroRow => x[..row_len].iter_mut().for_each(|v| *v = 0.0),
    }
}

/// Cases with batches from `nmin` (the component's minimum) to `nmin + 5`, so shrinking ends
/// at the minimum and the report shows the batch that failed, each with an options set drawn
/// from `options` (shrinking towards the defaults).
///
/// With `smooth`, only the degenerate patterns where the function stays differentiable
/// (constant and near-constant columns): for the gradient check. A zero sample sits on the
/// kink of an L2 normalisation, and duplicate samples put batch norm's outputs exactly on
/// ReLU's kink; there central differences average two slopes and prove nothing.
///
/// `tiny` and `huge` add the scales 1e-6 and 1e4 (see `extreme_scales`).
pub(super) fn cases(
    nmin: usize,
    smooth: bool,
    (tiny, huge): (bool, bool),
    options: BoxedStrategy<String>,
) -> impl Strategy<Value = Case> {
    let kinked = if smooth { 0 } else { 1 };
    let (tiny, huge) = (u32::from(tiny), u32::from(huge));
    (
        nmin..=nmin + 5,
        1usize..=3,
        1usize..=6,
        1u32..=3,
        any::<u64>(),
        prop_oneof![
            3 => Just(1.0),
            2 => Just(0.1),
            2 => Just(10.0),
            1 => Just(1e-4),
            1 => Just(1e3),
            tiny => Just(1e-6),
            huge => Just(1e4)
        ],
        prop_oneof![
            6 => Just(Degenerate::None),
            1 => Just(Degenerate::ConstantColumn),
            1 => Just(Degenerate::NearConstantColumn),
            kinked => Just(Degenerate::DuplicateRows),
            kinked => Just(Degenerate::ZeroRow)
        ],
        options,
    )
        .prop_map(
            |(n, v, d, classes, seed, scale, degenerate, options)| Case {
                // At 1e4 a constant column is constant in f32 but its batch mean is not: the
                // sum rounds at ulp(1e4) ≈ 1e-3, so a standardising loss (Barlow Twins, VICReg,
                // batch norm, ε = 1e-5) divides f32 rounding noise by √(var + ε) where the f64
                // reference sees exact zeros — a property of f32, not of the component (the
                // fixture cross_correlation: gradient 0.4 % off). Near-constant instead.
                degenerate: if scale >= 1e4 && degenerate == Degenerate::ConstantColumn {
                    Degenerate::NearConstantColumn
                } else {
                    degenerate
                },
                n,
                v,
                d,
                classes,
                seed,
                scale,
                options,
            },
        )
}

/// Which of the extreme scales (1e-6, 1e4) a property's cases include, by component kind.
/// Losses: both, in every property. Encoders: both, except 1e-6 in the gradient check: there
/// an O(1) offset (a conv bias, or the running mean in evaluation mode) carries an O(1e-6)
/// signal, f32 keeps ~1 % of it, and a 2x2 max pool's choice between window values closer
/// than that is rounding — the device routes the gradient through another window element
/// than the f64 reference does, so the ConvNet's input gradient differs by 3–10 % while its
/// output matches (measured; PyTorch's f32 ConvNet does the same). Augmentations draw values
/// up to 1 (pixel data), so neither.
pub(super) fn extreme_scales(kind: &str, property: &str) -> (bool, bool) {
    match kind {
        "loss" => (true, true),
        "encoder" => (property != "gradient vs finite differences", true),
        _ => (false, false),
    }
}
