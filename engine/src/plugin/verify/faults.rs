//! `vkgrad verify --self-test`: known faults injected around a component's device path — the
//! harness must catch each one, or the fault is a blind spot. A fault is set for the calling
//! thread while the properties run (`with_fault`), and `loss::loss_run_once`,
//! `encoder::encoder_run` and `augmentation::augmentation_case` apply it; the
//! ignored-option fault builds the device path's instance without one sampled option
//! (`ignored_option`), as a plugin whose forward forgot to read it would behave.

use super::sampling::{sampled_options, Sampled};
use super::{verify, Check, Degenerate};
use crate::plugin::Component;
use std::cell::Cell;

/// A fault the self-test injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The output × (1 + 1e-3) (its gradient too).
    ScaleForward,
    /// The gradient with respect to the input (a loss's features) × 1.1, the value unchanged.
    ScaleGradient,
    /// No gradient reaches the input (detached).
    DropGradient,
    /// NaN where the input is degenerate (a constant feature, duplicate or zero samples).
    NanAtDegenerate,
    /// An augmentation's output plus a number computed on the CPU from its seed, as one that
    /// wrongly declares `draws_on_device` would have (ABI 1.6).
    HostDraw,
    /// The device path built without the k-th option that declares a domain and no exemption
    /// (the reference keeps it): an option the forward ignores.
    IgnoreOption(usize),
}

/// The faults of a loss's or an encoder's self-test, with what each one is.
pub const LOSS_FAULTS: [(Fault, &str); 4] = [
    (Fault::ScaleForward, "forward × (1 + 1e-3)"),
    (Fault::ScaleGradient, "gradient × 1.1"),
    (Fault::DropGradient, "gradient dropped"),
    (Fault::NanAtDegenerate, "NaN at degenerate inputs"),
];

/// An augmentation's: it has no gradient, and its inputs are images without degenerate
/// patterns.
pub const AUGMENTATION_FAULTS: [(Fault, &str); 2] = [
    (Fault::ScaleForward, "forward × (1 + 1e-3)"),
    (Fault::HostDraw, "a number drawn on the CPU from the seed"),
];

thread_local! {
    static CURRENT: Cell<Fault> = const { Cell::new(Fault::None) };
}

/// The fault in force on this thread.
pub(super) fn current() -> Fault {
    CURRENT.with(|f| f.get())
}

/// Whether the NaN fault applies to this input pattern.
pub(super) fn nan_here(d: Degenerate) -> bool {
    current() == Fault::NanAtDegenerate && d != Degenerate::None
}

/// The options that can take the ignored-option fault: sampled, and not declared exempt.
fn faultable(sampled: &[Sampled]) -> impl Iterator<Item = &Sampled> {
    sampled.iter().filter(|s| s.exempt.is_none())
}

/// The option the device path ignores under the fault in force, if any.
pub(super) fn ignored_option(sampled: &[Sampled]) -> Option<&str> {
    match current() {
        Fault::IgnoreOption(k) => faultable(sampled).nth(k).map(|s| s.name.as_str()),
        _ => None,
    }
}

/// Runs `f` with `fault` injected on this thread; the previous fault is restored even when
/// `f` unwinds.
fn with_fault<T>(fault: Fault, f: impl FnOnce() -> T) -> T {
    struct Restore(Fault);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(fault)));
    f()
}

/// One fault's outcome: the properties that failed with it injected (empty = a blind spot).
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub component: String,
    pub fault: String,
    pub caught_by: Vec<&'static str>,
}

/// Runs the harness on each component with each fault of its kind injected. Returns the clean
/// run's checks (which must pass for the self-test to mean anything) and the outcomes.
pub fn self_test(
    components: &[&Component],
    cases: u32,
    seed: u64,
    mut progress: impl FnMut(&str),
) -> (Vec<Check>, Vec<Outcome>) {
    let mut clean = Vec::new();
    let mut outcomes = Vec::new();
    for &comp in components {
        progress(&format!("{} without faults", comp.name));
        let checks = verify(&[comp], None, cases, seed, |_| {});
        let ok = checks.iter().all(Check::clean);
        clean.extend(checks);
        if !ok {
            continue; // a failing component is reported as it is; faults would prove nothing
        }
        let (sampled, _) = sampled_options(&comp.options);
        let kind_faults: &[(Fault, &str)] = if comp.kind == "augmentation" {
            &AUGMENTATION_FAULTS
        } else {
            &LOSS_FAULTS
        };
        let mut faults: Vec<(Fault, String)> = kind_faults
            .iter()
            .map(|&(f, what)| (f, what.to_string()))
            .collect();
        faults.extend(faultable(&sampled).enumerate().map(|(k, s)| {
            (
                Fault::IgnoreOption(k),
                format!(
                    "option `{}` ignored (device path built with its default)",
                    s.name
                ),
            )
        }));
        for (fault, what) in faults {
            progress(&format!("{} with {what}", comp.name));
            let checks = with_fault(fault, || verify(&[comp], None, cases, seed, |_| {}));
            outcomes.push(Outcome {
                component: comp.name.clone(),
                fault: what,
                caught_by: checks
                    .iter()
                    .filter(|c| !c.passed && !c.skipped)
                    .map(|c| c.property)
                    .collect(),
            });
        }
    }
    (clean, outcomes)
}
