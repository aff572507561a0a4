//! The checks of an augmentation component.

use super::cases::values;
use super::numeric::*;
use super::*;

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
        let mut y = device.augment(&Tensor::from_vec(to_f32(&x), &shape)?, c.seed)?;
        // The self-test's one value fault for augmentations (they have no gradient).
        if super::faults::current() == super::faults::Fault::ScaleForward {
            y = y.mul_scalar(1.001)?;
        }
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
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}
