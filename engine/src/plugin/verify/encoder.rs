//! The checks of an encoder component: output, input and parameter gradients, modes.

use super::cases::values;
use super::faults::Fault;
use super::numeric::*;
use super::*;

pub(super) struct EncoderInputs {
    x: Vec<f64>,
    x_shape: Vec<usize>,
    params: Vec<(Vec<f64>, Vec<usize>)>,
    /// Which parameters are buffers (no gradient, not probed by finite differences).
    buffer: Vec<bool>,
    training: bool,
    /// The case's input pattern (the self-test's NaN fault acts on degenerate ones).
    degenerate: Degenerate,
}

/// `smooth`: inputs for the gradient check. There a constant column of a one-value sample is
/// not drawn (near-constant instead): it makes every sample equal, which puts batch norm's
/// outputs on ReLU's kink, like the duplicate rows `cases` leaves out of that check.
pub(super) fn encoder_inputs(enc: &Instance, c: &Case, smooth: bool) -> Result<EncoderInputs> {
    let d = enc.describe()?;
    let mut x_shape = vec![c.n];
    x_shape.extend(&d.input_shape);
    let mut x = values(c.seed, x_shape.iter().product(), c.scale);
    let row_len: usize = x_shape[1..].iter().product();
    let mut c = c.clone();
    if smooth && row_len == 1 && c.degenerate == Degenerate::ConstantColumn {
        c.degenerate = Degenerate::NearConstantColumn;
    }
    super::cases::degenerate(&mut x, &c, row_len);
    // Parameters drawn on the device from the case's seed, then read back for the reference.
    let mut rng = Rng::new(c.seed ^ 0x5EED);
    let mut params: Vec<(Vec<f64>, Vec<usize>)> = Vec::new();
    for p in &d.parameters {
        let t = crate::plugin::init_parameter(p, &mut rng)?;
        params.push((
            t.to_vec()?.iter().map(|&v| v as f64).collect(),
            p.shape.clone(),
        ));
    }
    // Buffers (running statistics) get values away from their constant start, so evaluation
    // mode is exercised with non-trivial statistics.
    for (k, p) in d.parameters.iter().enumerate() {
        if p.buffer {
            let n = params[k].0.len();
            let vals = values(c.seed ^ (k as u64 + 1), n, 0.5);
            params[k].0 = match p.init {
                // A positive start (a variance) stays positive.
                Init::Constant { value } if value > 0.0 => {
                    vals.iter().map(|v| value * (0.5 + v.abs())).collect()
                }
                _ => vals,
            };
        }
    }
    Ok(EncoderInputs {
        x,
        x_shape,
        params,
        buffer: d.parameters.iter().map(|p| p.buffer).collect(),
        // A third of the cases run in evaluation mode (the case's class count picks the mode).
        training: c.classes != 2,
        degenerate: c.degenerate,
    })
}

/// What one device run of an encoder gives: output, its shape, and the gradients of
/// <probe, output> with respect to the input and each parameter.
type EncoderRun = (Vec<f32>, Vec<usize>, Vec<Vec<f32>>);

pub(super) fn encoder_run(enc: &Instance, e: &EncoderInputs) -> Result<EncoderRun> {
    let x = Tensor::from_vec(to_f32(&e.x), &e.x_shape)?.requires_grad();
    let params: Vec<Tensor> = e
        .params
        .iter()
        .zip(&e.buffer)
        .map(|((d, s), &buffer)| {
            Tensor::from_vec(to_f32(d), s).map(|t| if buffer { t } else { t.requires_grad() })
        })
        .collect::<Result<_>>()?;
    // `--self-test` faults (verify/faults.rs) act here, around the plugin's own encode.
    let x_in = match super::faults::current() {
        Fault::ScaleGradient => x.mul_scalar(1.1)?.sub(&x.detach().mul_scalar(0.1)?)?,
        Fault::DropGradient => x.detach(),
        _ => x.clone(),
    };
    let (mut y, _) = enc.encode(&x_in, &params, e.training)?;
    if super::faults::current() == Fault::ScaleForward {
        y = y.mul_scalar(1.001)?;
    }
    if super::faults::nan_here(e.degenerate) {
        y = y.mul_scalar(f32::NAN)?;
    }
    let probe: Vec<f32> = (0..y.numel())
        .map(|i| ((i as f64 + 1.0) * 0.7548776662 + 0.25).sin() as f32)
        .collect();
    y.backward_with(&Tensor::from_vec(probe, y.shape())?)?;
    let mut grads = Vec::new();
    let buffer = std::iter::once(&false).chain(&e.buffer);
    for (k, (t, &buffer)) in std::iter::once(&x).chain(&params).zip(buffer).enumerate() {
        grads.push(match t.grad() {
            Some(g) => g.to_vec()?,
            // Buffers are never differentiated: their gradient slot is zero by definition.
            None if buffer => vec![0.0; t.numel()],
            // The input and every learnable parameter must be reached by the backward pass;
            // a missing gradient is a detached graph, not a zero.
            None => {
                let what = if k == 0 {
                    "the input".to_string()
                } else {
                    format!("parameter {}", k - 1)
                };
                return Err(Error::Other(format!(
                    "no gradient reached {what}: the output does not depend on it (a detached graph?)"
                )));
            }
        });
    }
    Ok((y.to_vec()?, y.shape().to_vec(), grads))
}

pub(super) fn encoder_reference(
    enc: &Instance,
    e: &EncoderInputs,
    x: &[f64],
    params: &[(Vec<f64>, Vec<usize>)],
) -> Result<crate::plugin::RefOutput> {
    let mut inputs: Vec<Option<(&[f64], &[usize])>> = vec![Some((x, &e.x_shape))];
    inputs.extend(
        params
            .iter()
            .map(|(d, s)| Some((d.as_slice(), s.as_slice()))),
    );
    let flags = if e.training {
        vkgrad_plugin::abi::ENCODER_TRAINING
    } else {
        0
    };
    enc.call_reference(&inputs, flags)
}

/// `device` runs the device path and `enc` the reference: the same instance, except under the
/// self-test's ignored-option fault.
pub(super) fn encoder_case(
    device: &Instance,
    enc: &Instance,
    c: &Case,
    property: &str,
) -> std::result::Result<(), String> {
    let smooth = property == "gradient vs finite differences";
    let e =
        encoder_inputs(enc, c, smooth).map_err(|err| format!("preparing inputs failed: {err}"))?;
    // The device path's parameters come from its own instance's declaration, as in training
    // (the host draws what `describe` lists): under the ignored-option fault an option that
    // sets a parameter shape (a width) then changes what the device computes.
    let e_device;
    let e_run = if std::ptr::eq(device, enc) {
        &e
    } else {
        e_device =
            encoder_inputs(device, c, smooth).map_err(|err| format!("device run failed: {err}"))?;
        &e_device
    };
    let (y, shape, grads) =
        encoder_run(device, e_run).map_err(|err| format!("device run failed: {err}"))?;
    match property {
        "matches CPU reference" => {
            let want = encoder_reference(enc, &e, &e.x, &e.params)
                .map_err(|err| format!("CPU reference failed: {err}"))?;
            compare(&y, &shape, &want)?;
        }
        "gradient vs finite differences" => {
            // phi = <probe, reference output>, differentiated along directions in x and in each
            // parameter, against the device gradients of the same probe.
            let probe: Vec<f64> = (0..y.len())
                .map(|i| ((i as f64 + 1.0) * 0.7548776662 + 0.25).sin() as f32 as f64)
                .collect();
            let phi = |x: &[f64], params: &[(Vec<f64>, Vec<usize>)]| -> Result<f64> {
                let out = encoder_reference(enc, &e, x, params)?;
                Ok(out.data.iter().zip(&probe).map(|(a, b)| a * b).sum())
            };
            let g_max = grads
                .iter()
                .flatten()
                .fold(0.0f64, |m, g| m.max(g.abs() as f64));
            finite_difference_check("input", &e.x, &grads[0], 0.0, g_max, &|xs| {
                phi(xs, &e.params)
            })?;
            for (k, (pd, ps)) in e.params.iter().enumerate() {
                if e.buffer[k] {
                    continue;
                }
                let f = |v: &[f64]| {
                    let mut ps2 = e.params.clone();
                    ps2[k] = (v.to_vec(), ps.clone());
                    phi(&e.x, &ps2)
                };
                finite_difference_check(
                    &format!("parameter {k}"),
                    pd,
                    &grads[k + 1],
                    1.0,
                    g_max,
                    &f,
                )?;
            }
        }
        "finite" => {
            if y.iter()
                .chain(grads.iter().flatten())
                .any(|v| !v.is_finite())
            {
                return Err("non-finite output or gradient on finite inputs".into());
            }
        }
        "deterministic" => {
            let (y2, _, g2) = encoder_run(device, e_run).map_err(|err| err.to_string())?;
            if !bits_equal(&y, &y2) || grads.iter().zip(&g2).any(|(a, b)| !bits_equal(a, b)) {
                return Err("two runs on the same input differ".into());
            }
        }
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}

// ---------------------------------------------------------------- augmentations
