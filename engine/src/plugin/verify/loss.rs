//! The checks of a loss component.

use super::cases::values;
use super::faults::Fault;
use super::numeric::*;
use super::*;

/// The extra inputs a loss declares, generated like the features (other seeds).
pub(super) fn loss_extras(loss: &Instance, c: &Case) -> Result<Vec<Vec<f64>>> {
    let names = loss.describe()?.extra_inputs;
    Ok((0..names.len())
        .map(|k| values(c.seed ^ (0xE1 + k as u64) << 32, c.n * c.v * c.d, c.scale))
        .collect())
}

/// One device run. A stateful loss (a MoCo queue) is restored afterwards, so that every run and
/// the CPU reference see the same state.
pub(super) fn loss_run(loss: &Instance, c: &Case, x: &[f64]) -> Result<(f32, Vec<f32>)> {
    let snapshot = loss.save_state()?;
    let result = loss_run_once(loss, c, x);
    match &snapshot {
        Some(s) => loss.load_state(s)?,
        // State that appears with the first run cannot be put back: every later run and the
        // reference would see what this run left (MoCo's queue did, made on first use).
        None if loss.save_state()?.is_some() => {
            return Err(Error::Other(
                "save_state returned nothing before the first run and a state after it: \
                 the initial state cannot be restored (make it when the component is built)"
                    .into(),
            ))
        }
        None => {}
    }
    result
}

pub(super) fn loss_run_once(loss: &Instance, c: &Case, x: &[f64]) -> Result<(f32, Vec<f32>)> {
    let dims = [c.n, c.v, c.d];
    let xt = Tensor::from_vec(to_f32(x), &dims)?.requires_grad();
    let labels = IntTensor::from_vec(loss_labels(c), &[c.n])?;
    let extra = loss_extras(loss, c)?
        .iter()
        .map(|e| Tensor::from_vec(to_f32(e), &dims))
        .collect::<Result<Vec<_>>>()?;
    // `--self-test` faults (verify/faults.rs) act here, around the plugin's own forward.
    let x_in = match super::faults::current() {
        Fault::ScaleGradient => xt.mul_scalar(1.1)?.sub(&xt.detach().mul_scalar(0.1)?)?,
        Fault::DropGradient => xt.detach(),
        _ => xt.clone(),
    };
    let mut y = loss.forward_with(&x_in, Some(&labels), &extra)?;
    if super::faults::current() == Fault::ScaleForward {
        y = y.mul_scalar(1.001)?;
    }
    if super::faults::nan_here(c.degenerate) {
        y = y.mul_scalar(f32::NAN)?;
    }
    y.backward()?;
    // A missing gradient is a detached graph (the loss does not depend on its features), not
    // a zero gradient.
    let g = xt.grad().map(|g| g.to_vec()).transpose()?.ok_or_else(|| {
        Error::Other(
            "no gradient reached the features: the loss does not depend on them (a detached graph?)"
                .into(),
        )
    })?;
    Ok((y.item()?, g))
}

/// A loss that declares a minimum batch must refuse one sample fewer on both paths (the SDK
/// does it before the plugin's code runs; a plugin not built with it must do it itself).
pub(super) fn below_minimum_refused(
    loss: &Instance,
    min: usize,
    views: usize,
    d: usize,
) -> std::result::Result<String, String> {
    let c = Case {
        n: min - 1,
        v: views,
        d,
        classes: 2,
        seed: 1,
        scale: 1.0,
        degenerate: Degenerate::None,
        options: "{}".into(),
    };
    let x = values(c.seed, c.n * c.v * c.d, c.scale);
    let device = loss_run(loss, &c, &x);
    let reference = loss_reference(loss, &c, &x);
    match (device, reference) {
        (Err(_), Err(_)) => Ok(format!("batch {} refused on both paths", min - 1)),
        (Ok((v, _)), _) => Err(format!(
            "the device path accepted batch {} below the declared minimum {min} (loss {v})",
            min - 1
        )),
        (_, Ok(v)) => Err(format!(
            "the CPU reference accepted batch {} below the declared minimum {min} (loss {v})",
            min - 1
        )),
    }
}

pub(super) fn loss_labels(c: &Case) -> Vec<u32> {
    (0..c.n)
        .map(|i| ((i as u64 * 7 + c.seed) % c.classes as u64) as u32)
        .collect()
}

pub(super) fn loss_reference(loss: &Instance, c: &Case, x: &[f64]) -> Result<f64> {
    let labels: Vec<f64> = loss_labels(c).iter().map(|&l| l as f64).collect();
    let extras = loss_extras(loss, c)?;
    let extra: Vec<&[f64]> = extras.iter().map(Vec::as_slice).collect();
    loss.reference_with(x, &[c.n, c.v, c.d], Some(&labels), &extra)
}

/// One case of `property`: `device` runs on the engine, `loss` gives the CPU reference (the
/// same instance, except under the self-test's ignored-option fault).
pub(super) fn loss_case(
    device: &Instance,
    loss: &Instance,
    c: &Case,
    property: &str,
) -> std::result::Result<(), String> {
    let mut x = values(c.seed, c.n * c.v * c.d, c.scale);
    super::cases::degenerate(&mut x, c, c.v * c.d);
    let (value, grad) = loss_run(device, c, &x).map_err(|e| format!("device run failed: {e}"))?;
    let want = loss_reference(loss, c, &x).map_err(|e| format!("CPU reference failed: {e}"))?;
    match property {
        "matches CPU reference" => {
            let bound = tol::PLUGIN_LOSS_REL * (want.abs() + 1.0);
            let within = (value as f64 - want).abs() <= bound; // NaN fails
            if !within {
                return Err(format!(
                    "device {value} vs CPU reference {want} (|diff| {:e} > {bound:e})",
                    (value as f64 - want).abs()
                ));
            }
        }
        "gradient vs finite differences" => {
            // The floor's scale (docs/verification.md): the larger of the largest gradient
            // entry and (1 + |L|) / rms(x), the size a gradient of this loss value has at
            // inputs of this size — a gradient that is analytically ~0 and computed by
            // cancellation of O(L / x) terms (Barlow Twins' at N = 2) has no large entry.
            let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
            let g_max = grad.iter().fold(0.0f64, |m, g| m.max((*g as f64).abs()));
            let scale = g_max.max((1.0 + want.abs()) / rms.max(1e-30));
            for probe in 0..2 {
                finite_difference_check(
                    &format!("direction {probe}"),
                    &x,
                    &grad,
                    probe as f64,
                    scale,
                    &|xs| loss_reference(loss, c, xs),
                )?;
            }
        }
        "finite" => {
            if !value.is_finite() || grad.iter().any(|g| !g.is_finite()) {
                return Err(format!(
                    "non-finite result on finite inputs: value {value}, gradient finite: {}",
                    grad.iter().all(|g| g.is_finite())
                ));
            }
        }
        "deterministic" => {
            let (v2, g2) = loss_run(device, c, &x).map_err(|e| e.to_string())?;
            if v2.to_bits() != value.to_bits() || !bits_equal(&g2, &grad) {
                return Err(format!(
                    "two runs on the same input differ: {value} vs {v2}"
                ));
            }
        }
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}

// ---------------------------------------------------------------- encoders
