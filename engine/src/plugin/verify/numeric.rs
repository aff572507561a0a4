//! Comparisons against the reference, finite differences, bit equality.

use super::*;

pub(super) fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A directional probe (relative steps per element, as the engine's own checks use).
/// Each element's step is relative to it, at least 1e-3 of the inputs' rms (a zero or tiny
/// element still moves, on the scale of the data).
pub(super) fn direction(x: &[f64], salt: f64) -> Vec<f64> {
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let least = (1e-3 * rms).max(1e-30);
    x.iter()
        .enumerate()
        .map(|(i, xi)| ((i as f64 + 1.0) * 0.7548776662 + salt).sin() * xi.abs().max(least))
        .collect()
}

/// Compares a device gradient with central differences of `f` along one direction. `g_max` is
/// the largest |gradient entry| of the run (see `tol::PLUGIN_GRADIENT_FLOOR`). A disagreement
/// is re-measured with a 100x smaller step before it counts: a step that crosses a kink (a
/// ReLU input or a max-pool tie near zero) makes the differences, not the gradient, wrong.
pub(super) fn finite_difference_check(
    what: &str,
    x: &[f64],
    grad: &[f32],
    salt: f64,
    g_max: f64,
    f: &dyn Fn(&[f64]) -> Result<f64>,
) -> std::result::Result<(), String> {
    let dir = direction(x, salt);
    let terms: Vec<f64> = grad.iter().zip(&dir).map(|(g, d)| *g as f64 * d).collect();
    let an: f64 = terms.iter().sum();
    let dir_l1: f64 = dir.iter().map(|d| d.abs()).sum();
    let mut last = String::new();
    for h in [1e-5, 1e-7] {
        let shifted = |t: f64| {
            x.iter()
                .zip(&dir)
                .map(|(a, d)| a + t * d)
                .collect::<Vec<_>>()
        };
        let fd = (f(&shifted(h)).map_err(|e| e.to_string())?
            - f(&shifted(-h)).map_err(|e| e.to_string())?)
            / (2.0 * h);
        let scale: f64 = terms.iter().map(|t| t.abs()).sum::<f64>() + fd.abs();
        let bound =
            tol::PLUGIN_GRADIENT_REL * scale + tol::PLUGIN_GRADIENT_FLOOR * dir_l1 * g_max + 1e-9;
        if (fd - an).abs() <= bound {
            return Ok(()); // NaN fails
        }
        last = format!("{what}: device gradient gives {an}, finite differences of the CPU reference {fd} (step {h:e}, bound {bound:e})");
    }
    Err(last)
}

/// Elementwise device-vs-reference comparison for array outputs: GRADIENT's chained bound
/// relative to |ref_i| + max |ref| (docs/verification.md).
pub(super) fn compare(
    got: &[f32],
    got_shape: &[usize],
    want: &crate::plugin::RefOutput,
) -> std::result::Result<(), String> {
    if got_shape != want.dims.as_slice() {
        return Err(format!(
            "device output shape {got_shape:?} vs CPU reference shape {:?}",
            want.dims
        ));
    }
    let max = want.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
        let bound = tol::GRADIENT.rel * (w.abs() + max) + 1e-30;
        let within = (*g as f64 - w).abs() <= bound;
        if !within {
            return Err(format!(
                "element {i}: device {g} vs CPU reference {w} (bound {bound:e})"
            ));
        }
    }
    Ok(())
}

pub(super) fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// ---------------------------------------------------------------- losses
