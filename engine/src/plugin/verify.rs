//! `vkgrad verify`: the property harness every plugin component goes through — the same proof
//! the built-in components get. For every kind: default options accepted and bad ones refused,
//! and on generated inputs (proptest, shrinking to the smallest failing case) the device result
//! matches the component's own CPU reference, is finite, and is bit-for-bit deterministic.
//! Losses and encoders also get their device gradients checked against central finite
//! differences of the CPU reference (for encoders: with respect to the input and every
//! parameter).

use super::{Component, Instance};
use crate::error::{Error, Result};
use crate::ops::random::Rng;
use crate::reference::tol;
use crate::tensor::{IntTensor, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde::Serialize;
use vkgrad_plugin::Init;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub component: String,
    pub property: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// A generated input: a batch of `n` samples (for losses: `v` views of `d` dimensions; for
/// encoders and augmentations: the component's input shape), values from `seed` times `scale`,
/// labels from `classes` classes.
#[derive(Debug, Clone)]
pub struct Case {
    pub n: usize,
    pub v: usize,
    pub d: usize,
    pub classes: u32,
    pub seed: u64,
    pub scale: f64,
}

/// splitmix64 -> uniform(-1, 1) * scale, rounded to f32 so device and reference see the same
/// numbers.
fn values(seed: u64, count: usize, scale: f64) -> Vec<f64> {
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

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..=6,
        2usize..=3,
        1usize..=6,
        1u32..=3,
        any::<u64>(),
        prop_oneof![Just(1.0), Just(0.1), Just(10.0)],
    )
        .prop_map(|(n, v, d, classes, seed, scale)| Case {
            n: n.max(2),
            v,
            d,
            classes,
            seed,
            scale,
        })
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A directional probe (relative steps per element, as the engine's own checks use).
fn direction(x: &[f64], salt: f64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, xi)| ((i as f64 + 1.0) * 0.7548776662 + salt).sin() * xi.abs().max(1e-3))
        .collect()
}

/// Compares a device gradient with central differences of `f` along one direction. `g_max` is
/// the largest |gradient entry| of the run (see `tol::PLUGIN_GRADIENT_FLOOR`). A disagreement
/// is re-measured with a 100x smaller step before it counts: a step that crosses a kink (a
/// ReLU input or a max-pool tie near zero) makes the differences, not the gradient, wrong.
fn finite_difference_check(
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
fn compare(
    got: &[f32],
    got_shape: &[usize],
    want: &super::RefOutput,
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

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

// ---------------------------------------------------------------- losses

/// The extra inputs a loss declares, generated like the features (other seeds).
fn loss_extras(loss: &Instance, c: &Case) -> Result<Vec<Vec<f64>>> {
    let names = loss.describe()?.extra_inputs;
    Ok((0..names.len())
        .map(|k| values(c.seed ^ (0xE1 + k as u64) << 32, c.n * c.v * c.d, c.scale))
        .collect())
}

/// One device run. A stateful loss (a MoCo queue) is restored afterwards, so that every run and
/// the CPU reference see the same state.
fn loss_run(loss: &Instance, c: &Case, x: &[f64]) -> Result<(f32, Vec<f32>)> {
    let snapshot = loss.save_state()?;
    let result = loss_run_once(loss, c, x);
    if let Some(s) = &snapshot {
        loss.load_state(s)?;
    }
    result
}

fn loss_run_once(loss: &Instance, c: &Case, x: &[f64]) -> Result<(f32, Vec<f32>)> {
    let dims = [c.n, c.v, c.d];
    let xt = Tensor::from_vec(to_f32(x), &dims)?.requires_grad();
    let labels = IntTensor::from_vec(loss_labels(c), &[c.n])?;
    let extra = loss_extras(loss, c)?
        .iter()
        .map(|e| Tensor::from_vec(to_f32(e), &dims))
        .collect::<Result<Vec<_>>>()?;
    let y = loss.forward_with(&xt, Some(&labels), &extra)?;
    y.backward()?;
    let g = xt
        .grad()
        .map(|g| g.to_vec())
        .transpose()?
        .unwrap_or_else(|| vec![0.0; xt.numel()]);
    Ok((y.item()?, g))
}

fn loss_labels(c: &Case) -> Vec<u32> {
    (0..c.n)
        .map(|i| ((i as u64 * 7 + c.seed) % c.classes as u64) as u32)
        .collect()
}

fn loss_reference(loss: &Instance, c: &Case, x: &[f64]) -> Result<f64> {
    let labels: Vec<f64> = loss_labels(c).iter().map(|&l| l as f64).collect();
    let extras = loss_extras(loss, c)?;
    let extra: Vec<&[f64]> = extras.iter().map(Vec::as_slice).collect();
    loss.reference_with(x, &[c.n, c.v, c.d], Some(&labels), &extra)
}

fn loss_case(loss: &Instance, c: &Case, property: &str) -> std::result::Result<(), String> {
    let x = values(c.seed, c.n * c.v * c.d, c.scale);
    let (value, grad) = loss_run(loss, c, &x).map_err(|e| format!("device run failed: {e}"))?;
    let want = loss_reference(loss, c, &x).map_err(|e| format!("CPU reference failed: {e}"))?;
    match property {
        "matches CPU reference" => {
            // A loss is a short chain of ops over O(1) terms: GRADIENT's chained bound, relative
            // to |value| + 1.
            let bound = tol::GRADIENT.rel * (want.abs() + 1.0);
            let within = (value as f64 - want).abs() <= bound; // NaN fails
            if !within {
                return Err(format!(
                    "device {value} vs CPU reference {want} (|diff| {:e} > {bound:e})",
                    (value as f64 - want).abs()
                ));
            }
        }
        "gradient vs finite differences" => {
            for probe in 0..2 {
                finite_difference_check(
                    &format!("direction {probe}"),
                    &x,
                    &grad,
                    probe as f64,
                    0.0, // a loss is a short chain: no cancellation floor
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
            let (v2, g2) = loss_run(loss, c, &x).map_err(|e| e.to_string())?;
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

struct EncoderInputs {
    x: Vec<f64>,
    x_shape: Vec<usize>,
    params: Vec<(Vec<f64>, Vec<usize>)>,
    /// Which parameters are buffers (no gradient, not probed by finite differences).
    buffer: Vec<bool>,
    training: bool,
}

fn encoder_inputs(enc: &Instance, c: &Case) -> Result<EncoderInputs> {
    let d = enc.describe()?;
    let mut x_shape = vec![c.n];
    x_shape.extend(&d.input_shape);
    let x = values(c.seed, x_shape.iter().product(), c.scale);
    // Parameters drawn on the device from the case's seed, then read back for the reference.
    let mut rng = Rng::new(c.seed ^ 0x5EED);
    let mut params: Vec<(Vec<f64>, Vec<usize>)> = Vec::new();
    for p in &d.parameters {
        let t = super::init_parameter(p, &mut rng)?;
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
    })
}

/// What one device run of an encoder gives: output, its shape, and the gradients of
/// <probe, output> with respect to the input and each parameter.
type EncoderRun = (Vec<f32>, Vec<usize>, Vec<Vec<f32>>);

fn encoder_run(enc: &Instance, e: &EncoderInputs) -> Result<EncoderRun> {
    let x = Tensor::from_vec(to_f32(&e.x), &e.x_shape)?.requires_grad();
    let params: Vec<Tensor> = e
        .params
        .iter()
        .zip(&e.buffer)
        .map(|((d, s), &buffer)| {
            Tensor::from_vec(to_f32(d), s).map(|t| if buffer { t } else { t.requires_grad() })
        })
        .collect::<Result<_>>()?;
    let (y, _) = enc.encode(&x, &params, e.training)?;
    let probe: Vec<f32> = (0..y.numel())
        .map(|i| ((i as f64 + 1.0) * 0.7548776662 + 0.25).sin() as f32)
        .collect();
    y.backward_with(&Tensor::from_vec(probe, y.shape())?)?;
    let mut grads = Vec::new();
    for t in std::iter::once(&x).chain(&params) {
        grads.push(
            t.grad()
                .map(|g| g.to_vec())
                .transpose()?
                .unwrap_or_else(|| vec![0.0; t.numel()]),
        );
    }
    Ok((y.to_vec()?, y.shape().to_vec(), grads))
}

fn encoder_reference(
    enc: &Instance,
    e: &EncoderInputs,
    x: &[f64],
    params: &[(Vec<f64>, Vec<usize>)],
) -> Result<super::RefOutput> {
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

fn encoder_case(enc: &Instance, c: &Case, property: &str) -> std::result::Result<(), String> {
    let e = encoder_inputs(enc, c).map_err(|err| format!("preparing inputs failed: {err}"))?;
    let (y, shape, grads) =
        encoder_run(enc, &e).map_err(|err| format!("device run failed: {err}"))?;
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
            let (y2, _, g2) = encoder_run(enc, &e).map_err(|err| err.to_string())?;
            if !bits_equal(&y, &y2) || grads.iter().zip(&g2).any(|(a, b)| !bits_equal(a, b)) {
                return Err("two runs on the same input differ".into());
            }
        }
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}

// ---------------------------------------------------------------- augmentations

fn augmentation_case(aug: &Instance, c: &Case, property: &str) -> std::result::Result<(), String> {
    let d = aug.describe().map_err(|e| e.to_string())?;
    let mut shape = vec![c.n];
    shape.extend(&d.input_shape);
    let x = values(c.seed, shape.iter().product(), c.scale.min(1.0));
    let run = || -> Result<(Vec<f32>, Vec<usize>)> {
        let y = aug.augment(&Tensor::from_vec(to_f32(&x), &shape)?, c.seed)?;
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

/// The properties checked on generated inputs, per component kind, in report order.
pub fn case_properties(kind: &str) -> &'static [&'static str] {
    match kind {
        "augmentation" => &["matches CPU reference", "finite", "deterministic"],
        _ => &[
            "matches CPU reference",
            "gradient vs finite differences",
            "finite",
            "deterministic",
        ],
    }
}

/// Which components to verify, built with which options.
pub struct Only<'a> {
    /// A component name, with or without its `plugin::` prefix; `None`: every component.
    pub component: Option<&'a str>,
    /// The options JSON each chosen component is built with (`{}`: its defaults).
    pub options: &'a str,
}

impl Only<'_> {
    /// The chosen components of `plugin`; an unknown name is an error listing the known ones.
    pub fn select<'p>(&self, plugin: &'p super::Plugin) -> Result<Vec<&'p Component>> {
        let Some(name) = self.component else {
            return Ok(plugin.components.iter().collect());
        };
        let found: Vec<&Component> = plugin
            .components
            .iter()
            .filter(|c| c.is_named(name))
            .collect();
        if found.is_empty() {
            let known: Vec<&str> = plugin.components.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::Other(format!(
                "plugin {} has no component {name:?}; it has: {}",
                plugin.name,
                known.join(", ")
            )));
        }
        Ok(found)
    }
}

/// Verifies `components`, each built with `options` (JSON; `{}` for the defaults);
/// `progress(what)` is called before each property.
pub fn verify(
    components: &[&Component],
    options: &str,
    cases_per_property: u32,
    seed: u64,
    mut progress: impl FnMut(&str),
) -> Vec<Check> {
    let mut out = Vec::new();
    let accepted = if options == "{}" {
        "default options accepted"
    } else {
        "given options accepted"
    };
    for &comp in components {
        let mut check = |property: &'static str, r: std::result::Result<String, String>| {
            out.push(Check {
                component: comp.name.clone(),
                property,
                passed: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
            });
        };
        check("bad options rejected", bad_options_rejected(comp));
        let inst = match comp.instantiate(options) {
            Ok(i) => {
                check(accepted, Ok(String::new()));
                i
            }
            Err(e) => {
                check(accepted, Err(e.to_string()));
                continue;
            }
        };
        for &property in case_properties(comp.kind) {
            progress(&format!("{} {property}", comp.name));
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            let config = Config {
                cases: cases_per_property,
                failure_persistence: None,
                max_shrink_iters: 500,
                ..Config::default()
            };
            let mut runner =
                TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
            // A loss that takes only some view counts gets cases with those.
            let described = inst.describe().ok();
            let (vmin, vmax) = described
                .as_ref()
                .and_then(|d| d.views)
                .unwrap_or((1, usize::MAX));
            // A loss that fixes its feature dimension (e.g. a queue of keys) gets cases with it.
            let fixed_dim = described
                .filter(|d| comp.kind == "loss" && d.input_shape.len() == 1)
                .map(|d| d.input_shape[0]);
            let result = runner.run(&cases(), |mut c| {
                c.v = c.v.clamp(vmin, vmax.max(vmin));
                c.d = fixed_dim.unwrap_or(c.d);
                let r = match comp.kind {
                    "loss" => loss_case(&inst, &c, property),
                    "encoder" => encoder_case(&inst, &c, property),
                    _ => augmentation_case(&inst, &c, property),
                };
                r.map_err(TestCaseError::fail)
            });
            check(
                property,
                match result {
                    Ok(()) => Ok(format!("{cases_per_property} cases")),
                    Err(TestError::Fail(why, case)) => {
                        Err(format!("{why}; smallest failing input: {case:?}"))
                    }
                    Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
                },
            );
            if comp.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
        }
    }
    out
}

fn bad_options_rejected(comp: &Component) -> std::result::Result<String, String> {
    let mut bad = vec![
        r#"{"__not_an_option__": 1}"#.to_string(),
        "[1, 2]".to_string(),
        "not json".to_string(),
    ];
    if let Some(first) = comp
        .options
        .as_array()
        .and_then(|a| a.first())
        .and_then(|o| o["name"].as_str())
    {
        bad.push(format!(r#"{{"{first}": "not a number or flag"}}"#));
    }
    for b in &bad {
        if comp.instantiate(b).is_ok() {
            return Err(format!("options {b} were accepted"));
        }
    }
    Ok(format!("{} bad option sets refused", bad.len()))
}
