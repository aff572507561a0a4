//! The checks of an augmentation component.

use super::cases::values;
use super::numeric::*;
use super::*;

/// The property of an augmentation that declares `draws_on_device` (ABI 1.6): recorded as a
/// replayed step with its seed as a device value and replayed with another seed, it gives the
/// bits a plain run with the other seed gives.
pub(super) const SEED_ON_DEVICE: &str = "replays with its seed as a device value";

/// Whether the instance declares that it draws only on the device.
pub(super) fn declares_device_draws(inst: &Instance) -> bool {
    inst.describe().is_ok_and(|d| d.draws_on_device)
}

/// The augmentation recorded for replay with seed `seed` as a device value, then replayed
/// with `other`; returns the replay's output.
fn replayed_with(device: &Instance, x: &Tensor, seed: u64, other: u64) -> Result<Tensor> {
    let seeds = [crate::seed_tensor(seed)?, crate::seed_tensor(other)?];
    let (mut r, _) = crate::Replay::record_with_ints(&[x], &[&seeds[0]], |a, s| {
        crate::with_device_seeds(&[(seed, &s[0])], || {
            Ok(vec![fault_applied(device.augment(&a[0], seed)?, seed)?])
        })
    })?;
    let mut out = r.run_with_ints(&[x], &[&seeds[1]])?;
    Ok(out.remove(0))
}

/// The output under the self-test's faults: the value fault, and a number made on the CPU
/// from the seed (what an augmentation that is wrong to declare `draws_on_device` does).
fn fault_applied(y: Tensor, seed: u64) -> Result<Tensor> {
    match super::faults::current() {
        super::faults::Fault::ScaleForward => y.mul_scalar(1.001),
        super::faults::Fault::HostDraw => y.add_scalar((seed % 97) as f32 * 1e-3),
        _ => Ok(y),
    }
}

/// `device` runs the device path and `aug` the reference: the same instance, except under the
/// self-test's ignored-option fault.
pub(super) fn augmentation_case(
    device: &Instance,
    aug: &Instance,
    c: &Case,
    property: &str,
) -> std::result::Result<(), String> {
    let d = aug.describe().map_err(|e| e.to_string())?;
    let mut shape = vec![c.n];
    shape.extend(&d.input_shape);
    let x = values(c.seed, shape.iter().product(), c.scale.min(1.0));
    let run = || -> Result<(Vec<f32>, Vec<usize>)> {
        let y = device.augment(&Tensor::from_vec(to_f32(&x), &shape)?, c.seed)?;
        let y = fault_applied(y, c.seed)?;
        Ok((y.to_vec()?, y.shape().to_vec()))
    };
    let (y, yshape) = run().map_err(|e| format!("device run failed: {e}"))?;
    match property {
        "matches CPU reference" => {
            let want = aug
                .call_reference(&[Some((&x, &shape))], c.seed)
                .map_err(|e| format!("CPU reference failed: {e}"))?;
            compare(&y, &yshape, &want)?;
        }
        "finite" => {
            if y.iter().any(|v| !v.is_finite()) {
                return Err("non-finite output on finite inputs".into());
            }
        }
        "deterministic" => {
            let (y2, _) = run().map_err(|e| e.to_string())?;
            if !bits_equal(&y, &y2) {
                return Err("two runs with the same seed differ".into());
            }
        }
        SEED_ON_DEVICE => {
            // Another seed of the same stream family, never the recorded one.
            let other = c.seed ^ 0x9E37_79B9_7F4A_7C15;
            let xt = Tensor::from_vec(to_f32(&x), &shape).map_err(|e| e.to_string())?;
            let replayed = replayed_with(device, &xt, c.seed, other)
                .and_then(|t| t.to_vec())
                .map_err(|e| format!("recording it with its seed as a device value failed: {e}"))?;
            let plain = device
                .augment(&xt, other)
                .and_then(|t| fault_applied(t, other))
                .and_then(|t| t.to_vec())
                .map_err(|e| format!("device run failed: {e}"))?;
            if !bits_equal(&replayed, &plain) {
                return Err(format!(
                    "recorded with seed {} and replayed with seed {other}, it differs from a run with seed {other}: \
                     it declares `draws_on_device` but uses the seed on the CPU (or draws with another seed)",
                    c.seed
                ));
            }
        }
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}
