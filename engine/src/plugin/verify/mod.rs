//! `vkgrad verify`: the property harness every plugin component goes through — the same proof
//! the built-in components get. For every kind: default options accepted and bad ones refused,
//! and on generated inputs (proptest, shrinking to the smallest failing case) the device result
//! matches the component's own CPU reference, is finite, and is bit-for-bit deterministic.
//! Losses and encoders also get their device gradients checked against central finite
//! differences of the CPU reference (for encoders: with respect to the input and every
//! parameter).

//!
//! The files: this one (the report, the driver), `cases` (generated inputs), `numeric`
//! (comparisons, finite differences), `loss`, `encoder`, `augmentation` (each kind's checks),
//! `faults` (the self-test: known faults injected, each must be caught), `sampling` (options
//! drawn from their declared domains).

mod augmentation;
mod cases;
mod encoder;
pub mod faults;
mod loss;
mod numeric;
pub mod sampling;

use crate::error::{Error, Result};
use crate::ops::random::Rng;
use crate::plugin::{Component, Instance};
use crate::reference::tol;
use crate::tensor::{IntTensor, Tensor};
use augmentation::augmentation_case;
use cases::*;
use encoder::encoder_case;
use loss::loss_case;
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
    /// Not run: the plugin was poisoned by a panic before this check's turn (neither passed
    /// nor failed; the panic itself is the failure, reported where it happened), or the
    /// property does not apply ([`Check::not_applicable`]).
    pub skipped: bool,
    pub detail: String,
}

/// The detail of a property that does not apply to a component: an augmentation that does not
/// declare `draws_on_device` is never replayed with its seed as a device value.
const NOT_DECLARED: &str = "not declared (`draws_on_device`, ABI 1.6): `vkgrad train` runs this augmentation op by op before each replayed step";

impl Check {
    /// Skipped because the property does not apply (not because a panic stopped it).
    pub fn not_applicable(&self) -> bool {
        self.skipped && self.detail == NOT_DECLARED
    }

    /// Passed, or does not apply: what a component free of faults shows.
    pub fn clean(&self) -> bool {
        self.passed || self.not_applicable()
    }
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
    /// A degenerate pattern applied to the generated values (docs/verification.md).
    pub degenerate: Degenerate,
    /// The options the component is built with for this case (JSON; `{}`: its defaults),
    /// drawn from the domains it declares unless `--options` pins them.
    pub options: String,
}

/// Inputs where straightforward numerics break: a feature with no variance across the batch,
/// one with almost none, two identical samples, an all-zero sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degenerate {
    None,
    ConstantColumn,
    NearConstantColumn,
    DuplicateRows,
    ZeroRow,
}

/// The properties checked on generated inputs, per component kind, in report order.
pub fn case_properties(kind: &str) -> &'static [&'static str] {
    match kind {
        "augmentation" => &[
            "matches CPU reference",
            "finite",
            "deterministic",
            augmentation::SEED_ON_DEVICE,
        ],
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
    /// The options JSON each chosen component is built with; `None`: drawn per case from the
    /// domains the component declares.
    pub options: Option<&'a str>,
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

/// Verifies `components`, each built with `options` (JSON) in every case, or with `None` with
/// options drawn per case from the domains each component declares; `progress(what)` is called
/// before each property.
pub fn verify(
    components: &[&Component],
    options: Option<&str>,
    cases_per_property: u32,
    seed: u64,
    mut progress: impl FnMut(&str),
) -> Vec<Check> {
    let mut out = Vec::new();
    let accepted = match options {
        None | Some("{}") => "default options accepted",
        Some(_) => "given options accepted",
    };
    let base_options = options.unwrap_or("{}");
    for &comp in components {
        let skip = |out: &mut Vec<Check>, properties: &[&'static str], why: &str| {
            for &property in properties {
                out.push(Check {
                    component: comp.name.clone(),
                    property,
                    passed: false,
                    skipped: true,
                    detail: why.to_string(),
                });
            }
        };
        if comp.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            let mut all = vec!["bad options rejected", accepted, OPTIONS_SAMPLED];
            all.extend(case_properties(comp.kind));
            skip(
                &mut out,
                &all,
                &format!(
                    "not run: a panic in an earlier component poisoned the plugin; verify this one alone with --component {}",
                    comp.name
                ),
            );
            continue;
        }
        let mut check = |property: &'static str, r: std::result::Result<String, String>| {
            out.push(Check {
                component: comp.name.clone(),
                property,
                passed: r.is_ok(),
                skipped: false,
                detail: r.unwrap_or_else(|e| e),
            });
        };
        check("bad options rejected", bad_options_rejected(comp));
        let inst = match comp.instantiate(base_options) {
            Ok(i) => {
                check(accepted, Ok(String::new()));
                i
            }
            Err(e) => {
                check(accepted, Err(e.to_string()));
                continue;
            }
        };
        let (sampled, unsampled) = sampling::sampled_options(&comp.options);
        let strategy = sampling::options_strategy(&sampled, options);
        check(
            OPTIONS_SAMPLED,
            strategy
                .as_ref()
                .map(|_| sampled_report(&sampled, &unsampled, options))
                .map_err(|e| format!("a declared domain is not usable: {e}")),
        );
        let Ok(option_sets) = strategy else { continue };
        if comp.kind == "loss" {
            if let Ok(d) = inst.describe() {
                // Below a declared minimum both paths must refuse; an empty batch (below a
                // minimum of 1) as well, and a minimum of 0 is a contract no batch can meet.
                match d.min_batch {
                    Some(0) => check(
                        "batches below the minimum refused",
                        Err("declares a minimum batch of 0: a batch has at least one sample (declare 1 or more)".into()),
                    ),
                    Some(m) => {
                        let views = d.views.map_or(2, |(lo, hi)| 2.clamp(lo, hi.max(lo)));
                        let dim = d.input_shape.first().copied().unwrap_or(3);
                        check(
                            "batches below the minimum refused",
                            loss::below_minimum_refused(&inst, m, views, dim),
                        );
                    }
                    None => {}
                }
            }
        }
        if comp.poisoned.load(std::sync::atomic::Ordering::SeqCst) {
            // A check above panicked (building the component, a batch below its minimum).
            skip(
                &mut out,
                case_properties(comp.kind),
                "not run: the panic above poisoned the plugin",
            );
            continue;
        }
        // What the first panic said, if the component panicked in any case.
        let panic: std::cell::RefCell<Option<String>> = Default::default();
        // Properties that do not apply (reported after the others: they come last).
        let mut not_applicable = Vec::new();
        for &property in case_properties(comp.kind) {
            if property == augmentation::SEED_ON_DEVICE
                && !augmentation::declares_device_draws(&inst)
            {
                not_applicable.push(property);
                continue;
            }
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
            // Batches from the minimum on (losses declare it; 2 for the other kinds, and for
            // losses of ABI 1.0–1.2); a case whose options raise the minimum is raised to it.
            let nmin = min_batch(comp, &inst);
            let smooth = property == "gradient vs finite differences";
            let extreme = cases::extreme_scales(comp.kind, property);
            let result = runner.run(
                &cases(nmin, smooth, extreme, option_sets.clone()),
                |mut c| {
                    let r = (|| {
                        // This case's instance, and the device path's: the same one, except under
                        // the self-test's "option ignored" fault (built without that option). After
                        // a panic every case gets a fresh instance: the one it hit may be broken.
                        let own;
                        let case_inst = if c.options == base_options && panic.borrow().is_none() {
                            &inst
                        } else {
                            own = comp.instantiate(&c.options).map_err(|e| {
                                format!(
                                    "options {} drawn from the declared domains were refused: {e}",
                                    c.options
                                )
                            })?;
                            &own
                        };
                        let ignored;
                        let device_inst = match faults::ignored_option(&sampled) {
                            Some(name) => {
                                ignored = comp
                                    .instantiate(&sampling::without(&c.options, name))
                                    .map_err(|e| format!("device run failed: {e}"))?;
                                &ignored
                            }
                            None => case_inst,
                        };
                        shape_case(comp, case_inst, &mut c);
                        match comp.kind {
                            "loss" => loss_case(device_inst, case_inst, &c, property),
                            "encoder" => encoder_case(device_inst, case_inst, &c, property),
                            _ => augmentation_case(device_inst, case_inst, &c, property),
                        }
                    })();
                    // A panic poisoned the component: take the poison off (this process verifies
                    // this component only), so shrinking goes on with fresh instances and the
                    // report shows the smallest input that panics, naming the side that did.
                    let r = r.map_err(|e| match comp.take_poison() {
                        Some(reason) => {
                            panic.borrow_mut().get_or_insert(reason.clone());
                            let side = if e.starts_with("CPU reference failed") {
                                "the CPU reference"
                            } else {
                                "the device path"
                            };
                            let what = reason.strip_prefix("panicked: ").unwrap_or(&reason);
                            format!("{side} panicked: {what}")
                        }
                        None => e,
                    });
                    r.map_err(TestCaseError::fail)
                },
            );
            let outcome = match result {
                Ok(()) => Ok(format!("{cases_per_property} cases")),
                Err(TestError::Fail(why, case)) => {
                    Err(format!("{why}; smallest failing input: {case:?}"))
                }
                Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
            };
            check(property, outcome);
        }
        skip(&mut out, &not_applicable, NOT_DECLARED);
        // The host's rule stands after verify: a plugin that panicked is not called again.
        if let Some(reason) = panic.into_inner() {
            comp.poison(reason);
        }
    }
    out
}

/// The check that reports which options the cases sample.
const OPTIONS_SAMPLED: &str = "options sampled from their domains";

fn sampled_report(
    sampled: &[sampling::Sampled],
    unsampled: &[String],
    pinned: Option<&str>,
) -> String {
    if let Some(p) = pinned {
        return format!("options pinned by --options: {p}");
    }
    let names: Vec<String> = sampled
        .iter()
        .map(|s| match &s.exempt {
            Some(why) => format!("{} (exempt from the ignored-option fault: {why})", s.name),
            None => s.name.clone(),
        })
        .collect();
    let mut out = if names.is_empty() {
        "no option declares a domain".to_string()
    } else {
        format!("sampled: {}", names.join(", "))
    };
    if !unsampled.is_empty() {
        out += &format!(
            "; tested at their defaults only (no domain declared): {}",
            unsampled.join(", ")
        );
    }
    out
}

/// The smallest batch the component takes with its default (or pinned) options.
fn min_batch(comp: &Component, inst: &Instance) -> usize {
    inst.describe()
        .ok()
        .filter(|_| comp.kind == "loss")
        .and_then(|d| d.min_batch)
        .unwrap_or(2)
        .max(1)
}

/// Fits a generated case to what its instance declares: the view counts a loss takes, a
/// feature dimension it fixes (e.g. a queue of keys), a minimum batch its options raise.
fn shape_case(comp: &Component, inst: &Instance, c: &mut Case) {
    let Ok(d) = inst.describe() else { return };
    let (vmin, vmax) = d.views.unwrap_or((1, usize::MAX));
    c.v = c.v.clamp(vmin, vmax.max(vmin));
    if comp.kind == "loss" {
        if d.input_shape.len() == 1 {
            c.d = d.input_shape[0];
        }
        c.n = c.n.max(d.min_batch.unwrap_or(2).max(1));
    }
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
