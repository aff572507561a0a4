//! `vkgrad verify`: the property harness every plugin component goes through — the same proof
//! the built-in components get. For a loss: default options accepted and bad ones refused; on
//! generated inputs (proptest, shrinking to the smallest failing case) the device value matches
//! the component's CPU reference, the device gradient matches central finite differences of
//! the CPU reference, results are finite and bit-for-bit deterministic.

use super::{Component, LossInstance, Plugin};
use crate::error::Result;
use crate::reference::tol;
use crate::tensor::{IntTensor, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use serde::Serialize;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub component: String,
    pub property: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// A generated loss input: N samples, V views, D dimensions, values from a seed, labels from
/// `classes` classes.
#[derive(Debug, Clone)]
pub struct LossCase {
    pub n: usize,
    pub v: usize,
    pub d: usize,
    pub classes: u32,
    pub seed: u64,
    pub scale: f64,
}

impl LossCase {
    fn features(&self) -> Vec<f64> {
        // splitmix64 -> uniform(-1, 1) * scale, rounded to f32 so device and reference see the
        // same numbers.
        let mut s = self.seed;
        (0..self.n * self.v * self.d)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                (((z >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * self.scale
            })
            .map(|x| x as f32 as f64)
            .collect()
    }
    fn labels(&self) -> Vec<u32> {
        (0..self.n)
            .map(|i| ((i as u64 * 7 + self.seed) % self.classes as u64) as u32)
            .collect()
    }
    fn dims(&self) -> [usize; 3] {
        [self.n, self.v, self.d]
    }
}

fn loss_cases() -> impl Strategy<Value = LossCase> {
    (
        2usize..=6,
        2usize..=3,
        1usize..=6,
        1u32..=3,
        any::<u64>(),
        prop_oneof![Just(1.0), Just(0.1), Just(10.0)],
    )
        .prop_map(|(n, v, d, classes, seed, scale)| LossCase {
            n,
            v,
            d,
            classes,
            seed,
            scale,
        })
}

/// Runs the loss on the device: value, gradient w.r.t. the features.
fn device_run(loss: &LossInstance, case: &LossCase) -> Result<(f32, Vec<f32>)> {
    let f: Vec<f32> = case.features().iter().map(|&x| x as f32).collect();
    let x = Tensor::from_vec(f, &case.dims())?.requires_grad();
    let labels = IntTensor::from_vec(case.labels(), &[case.n])?;
    let y = loss.forward(&x, Some(&labels))?;
    y.backward()?;
    let g = x
        .grad()
        .map(|g| g.to_vec())
        .transpose()?
        .unwrap_or_else(|| vec![0.0; x.numel()]);
    Ok((y.item()?, g))
}

fn reference(loss: &LossInstance, case: &LossCase, features: &[f64]) -> Result<f64> {
    let labels: Vec<f64> = case.labels().iter().map(|&l| l as f64).collect();
    loss.reference(features, &case.dims(), Some(&labels))
}

/// Checks one generated case; an error names what disagreed.
fn check_case(
    loss: &LossInstance,
    case: &LossCase,
    property: &str,
) -> std::result::Result<(), TestCaseError> {
    let fail = |m: String| TestCaseError::fail(m);
    let (value, grad) =
        device_run(loss, case).map_err(|e| fail(format!("device run failed: {e}")))?;
    let x = case.features();
    let want = reference(loss, case, &x).map_err(|e| fail(format!("CPU reference failed: {e}")))?;
    match property {
        "finite" => {
            if !value.is_finite() || grad.iter().any(|g| !g.is_finite()) {
                return Err(fail(format!("non-finite result on finite inputs: value {value}, gradient has non-finite entries: {}", grad.iter().any(|g| !g.is_finite()))));
            }
        }
        "matches CPU reference" => {
            // A loss is a short chain of ops over O(1) terms: GRADIENT's chained bound, relative
            // to |value| + 1 (docs/verification.md).
            let bound = tol::GRADIENT.rel * (want.abs() + 1.0);
            // Written as "within" so that a NaN (which compares false) fails.
            let within = (value as f64 - want).abs() <= bound;
            if !within {
                return Err(fail(format!(
                    "device {value} vs CPU reference {want} (|diff| {:e} > {bound:e})",
                    (value as f64 - want).abs()
                )));
            }
        }
        "gradient vs finite differences" => {
            for probe in 0..2u64 {
                // relative steps per element, as in the engine's own checks
                let dir: Vec<f64> = x
                    .iter()
                    .enumerate()
                    .map(|(i, xi)| {
                        ((i as f64 + 1.0) * 0.7548776662 + probe as f64).sin() * xi.abs().max(1e-3)
                    })
                    .collect();
                let h = 1e-5;
                let shifted = |t: f64| {
                    x.iter()
                        .zip(&dir)
                        .map(|(a, d)| a + t * d)
                        .collect::<Vec<_>>()
                };
                let plus = reference(loss, case, &shifted(h)).map_err(|e| fail(e.to_string()))?;
                let minus = reference(loss, case, &shifted(-h)).map_err(|e| fail(e.to_string()))?;
                let fd = (plus - minus) / (2.0 * h);
                let terms: Vec<f64> = grad.iter().zip(&dir).map(|(g, d)| *g as f64 * d).collect();
                let an: f64 = terms.iter().sum();
                let scale: f64 = terms.iter().map(|t| t.abs()).sum::<f64>() + fd.abs();
                let bound = tol::PLUGIN_GRADIENT_REL * scale + 1e-9;
                let within = (fd - an).abs() <= bound; // NaN fails
                if !within {
                    return Err(fail(format!("directional derivative {probe}: device gradient gives {an}, finite differences of the CPU reference {fd} (bound {bound:e})")));
                }
            }
        }
        "deterministic" => {
            let (v2, g2) = device_run(loss, case).map_err(|e| fail(e.to_string()))?;
            if v2.to_bits() != value.to_bits()
                || g2
                    .iter()
                    .zip(&grad)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(fail(format!(
                    "two runs on the same input differ: {value} vs {v2}"
                )));
            }
        }
        _ => unreachable!("unknown property {property}"),
    }
    Ok(())
}

/// The properties checked on generated inputs, in report order.
pub const CASE_PROPERTIES: [&str; 4] = [
    "matches CPU reference",
    "gradient vs finite differences",
    "finite",
    "deterministic",
];

/// Verifies every component of `plugin`; `progress(done, total)` is called as cases run.
pub fn verify(
    plugin: &Plugin,
    cases: u32,
    seed: u64,
    mut progress: impl FnMut(&str, u64),
) -> Vec<Check> {
    let mut out = Vec::new();
    for comp in &plugin.components {
        let mut check = |property: &'static str, r: std::result::Result<String, String>| {
            let passed = r.is_ok();
            out.push(Check {
                component: comp.name.clone(),
                property,
                passed,
                detail: r.unwrap_or_else(|e| e),
            });
        };
        if comp.kind != "loss" {
            check(
                "supported kind",
                Err(format!("{} components are not verified yet", comp.kind)),
            );
            continue;
        }
        check("bad options rejected", bad_options_rejected(comp));
        let loss = match comp.create_loss("{}") {
            Ok(l) => {
                check("default options accepted", Ok(String::new()));
                l
            }
            Err(e) => {
                check("default options accepted", Err(e.to_string()));
                continue;
            }
        };
        for property in CASE_PROPERTIES {
            progress(&format!("{} {property}", comp.name), cases as u64);
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            let config = Config {
                cases,
                failure_persistence: None,
                max_shrink_iters: 500,
                ..Config::default()
            };
            let mut runner =
                TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
            let result = runner.run(&loss_cases(), |case| check_case(&loss, &case, property));
            check(
                property,
                match result {
                    Ok(()) => Ok(format!("{cases} cases")),
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
        if comp.create_loss(b).is_ok() {
            return Err(format!("options {b} were accepted"));
        }
    }
    Ok(format!("{} bad option sets refused", bad.len()))
}
