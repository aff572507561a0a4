//! The shared property-test harness: generators for shapes and values, and the three checks
//! every op gets — GPU f32 forward vs the f64 reference, the reference's analytic gradient vs
//! central finite differences, and the GPU gradient vs the reference gradient.
//!
//! Case counts: `VKGRAD_PROPTEST_CASES` (default per test, chosen so the whole suite runs in
//! minutes on two cores with lavapipe). Failures shrink and are saved under
//! `tests/*.proptest-regressions`, which are committed and replayed first.

pub mod dag;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
pub use vkgrad::reference::{self as r, tol, tol::Tol, RefTensor};
use vkgrad::Tensor;

/// proptest settings with the case count scaled by `VKGRAD_PROPTEST_CASES` if set.
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("VKGRAD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- generators

/// A dimension: mostly small, sometimes 1, sometimes up to 70 (odd sizes included).
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(1usize), 4 => 2usize..=9, 2 => 10usize..=70]
}

/// A shape of rank in `ranks` with at most `max_elems` elements.
pub fn shape(
    ranks: std::ops::RangeInclusive<usize>,
    max_elems: usize,
) -> impl Strategy<Value = Vec<usize>> {
    ranks
        .prop_flat_map(|r| prop::collection::vec(dim(), r))
        .prop_filter("too many elements", move |s| {
            s.iter().product::<usize>() <= max_elems
        })
}

/// Magnitude classes of test values.
#[derive(Debug, Clone, Copy)]
pub enum Magnitude {
    Normal,
    Large,
    Tiny,
}

pub fn magnitude() -> impl Strategy<Value = Magnitude> {
    prop_oneof![6 => Just(Magnitude::Normal), 1 => Just(Magnitude::Large), 1 => Just(Magnitude::Tiny)]
}

/// One value of the class, either sign.
pub fn value(m: Magnitude) -> BoxedStrategy<f32> {
    let mag = match m {
        Magnitude::Normal => (0.0f32..4.0).boxed(),
        Magnitude::Large => (1e2f32..1e4).boxed(),
        Magnitude::Tiny => (-30.0f32..-3.0).prop_map(|e| 10f32.powf(e)).boxed(),
    };
    (mag, any::<bool>())
        .prop_map(|(v, neg)| if neg { -v } else { v })
        .boxed()
}

/// A tensor of `shape` with values from one magnitude class.
pub fn tensor_of(shape: Vec<usize>) -> impl Strategy<Value = RefTensor> {
    let n: usize = shape.iter().product();
    magnitude()
        .prop_flat_map(move |m| prop::collection::vec(value(m), n))
        .prop_map(move |v| RefTensor::from_f32(&shape, &v))
}

/// A tensor of `shape` with values drawn from `range` (for ops with a restricted domain).
pub fn tensor_in(
    shape: Vec<usize>,
    range: std::ops::Range<f32>,
) -> impl Strategy<Value = RefTensor> {
    let n: usize = shape.iter().product();
    prop::collection::vec(range, n).prop_map(move |v| RefTensor::from_f32(&shape, &v))
}

/// Two shapes that broadcast together: an output shape, and each input with some leading
/// dimensions dropped and some dimensions set to 1.
pub fn broadcast_pair(max_elems: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape(0..=4, max_elems).prop_flat_map(|out| {
        let r = out.len();
        let side = move |out: Vec<usize>| {
            (0..=r, prop::collection::vec(any::<bool>(), r)).prop_map(move |(drop, ones)| {
                out.iter()
                    .enumerate()
                    .skip(drop)
                    .map(|(i, &d)| if ones[i] { 1 } else { d })
                    .collect::<Vec<_>>()
            })
        };
        (side(out.clone()), side(out))
    })
}

// ---------------------------------------------------------------- conversions

pub fn gpu(t: &RefTensor) -> Tensor {
    Tensor::from_slice(&t.to_f32(), &t.shape).expect("upload")
}

pub fn host(t: &Tensor) -> RefTensor {
    RefTensor::from_f32(t.shape(), &t.to_vec().expect("read-back"))
}

/// A deterministic, non-constant upstream gradient / direction for `shape` (values in [-1, 1]).
pub fn probe(shape: &[usize], salt: f64) -> RefTensor {
    let n: usize = shape.iter().product();
    RefTensor::new(
        shape,
        (0..n)
            .map(|i| ((i as f64 + 1.0) * 0.7548776662 + salt).sin())
            .collect(),
    )
}

// ---------------------------------------------------------------- checks

/// Compares GPU output with the reference; `scale` (default |want|) and `n_terms` feed the
/// tolerance bound.
pub fn assert_close(
    what: &str,
    got: &[f32],
    want: &RefTensor,
    scale: Option<&RefTensor>,
    n_terms: usize,
    tol: Tol,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    for (i, &g) in got.iter().enumerate() {
        let s = scale.map_or(want.data[i].abs(), |s| s.data[i]);
        if !tol.accepts(g, want.data[i], s, n_terms) {
            return Err(TestCaseError::fail(format!(
                "{what}: element {i} (index {:?}): gpu {} vs reference {} (|diff| {:e} > bound {:e}; shape {:?})",
                want.index_of(i),
                g,
                want.data[i],
                (g as f64 - want.data[i]).abs(),
                tol.bound(s, n_terms),
                want.shape
            )));
        }
    }
    Ok(())
}

/// A reference VJP: (inputs, upstream gradient) -> one gradient per input.
pub type VjpFn<'a> = dyn Fn(&[RefTensor], &RefTensor) -> Vec<RefTensor> + 'a;

/// One op under test. `inputs` are the differentiable arguments; anything else (masks,
/// indices, axes) is captured by the closures.
pub struct OpCase<'a> {
    pub name: &'a str,
    pub inputs: Vec<RefTensor>,
    pub gpu: &'a dyn Fn(&[Tensor]) -> vkgrad::Result<Tensor>,
    pub reference: &'a dyn Fn(&[RefTensor]) -> RefTensor,
    /// `None` for ops without a gradient (comparisons).
    pub vjp: Option<&'a VjpFn<'a>>,
    pub tol: Tol,
    /// Per-output rounding scale and term count (sums, dot products); default |ref|, 1.
    pub scale: Option<RefTensor>,
    pub n_terms: usize,
    /// Run the finite-difference check (off where inputs sit on a kink, e.g. tied maxima).
    pub finite_differences: bool,
    /// Magnitude of the terms inside the VJP, for ops whose gradient cancels (softmax of a
    /// saturated row): added to the gradient comparison's scale. Default 0.
    pub grad_scale: f64,
}

impl<'a> OpCase<'a> {
    pub fn new(
        name: &'a str,
        inputs: Vec<RefTensor>,
        gpu: &'a dyn Fn(&[Tensor]) -> vkgrad::Result<Tensor>,
        reference: &'a dyn Fn(&[RefTensor]) -> RefTensor,
    ) -> Self {
        OpCase {
            name,
            inputs,
            gpu,
            reference,
            vjp: None,
            tol: tol::ELEMENTWISE,
            scale: None,
            n_terms: 1,
            finite_differences: true,
            grad_scale: 0.0,
        }
    }
    pub fn vjp(mut self, f: &'a VjpFn<'a>) -> Self {
        self.vjp = Some(f);
        self
    }
    pub fn tol(mut self, t: Tol) -> Self {
        self.tol = t;
        self
    }
    pub fn scale(mut self, s: RefTensor, n_terms: usize) -> Self {
        self.scale = Some(s);
        self.n_terms = n_terms;
        self
    }
    pub fn grad_scale(mut self, s: f64) -> Self {
        self.grad_scale = s;
        self
    }
    pub fn no_finite_differences(mut self) -> Self {
        self.finite_differences = false;
        self
    }

    /// Runs all three checks.
    pub fn check(&self) -> Result<(), TestCaseError> {
        let leaves: Vec<Tensor> = self.inputs.iter().map(|t| gpu(t).requires_grad()).collect();
        let y =
            (self.gpu)(&leaves).map_err(|e| TestCaseError::fail(format!("{}: {e}", self.name)))?;
        let want = (self.reference)(&self.inputs);
        prop_assert_eq!(y.shape(), &want.shape[..], "{}: output shape", self.name);
        assert_close(
            &format!("{} forward", self.name),
            &y.to_vec().unwrap(),
            &want,
            self.scale.as_ref(),
            self.n_terms,
            self.tol,
        )?;
        let Some(vjp) = self.vjp else { return Ok(()) };
        // Outputs that overflowed get no weight in the probe, so the gradients of the others
        // are still compared (an input whose reference gradient is then non-finite is skipped
        // below, alone).
        let mut c = probe(&want.shape, 0.25);
        for (ci, w) in c.data.iter_mut().zip(&want.data) {
            if !w.is_finite() {
                *ci = 0.0;
            }
        }
        let ref_grads = vjp(&self.inputs, &c);
        // GPU gradient vs reference gradient.
        y.backward_with(&gpu(&c))
            .map_err(|e| TestCaseError::fail(format!("{} backward: {e}", self.name)))?;
        for (k, (leaf, g_ref)) in leaves.iter().zip(&ref_grads).enumerate() {
            if g_ref.data.iter().any(|v| !v.is_finite()) {
                continue;
            }
            // No gradient at all is right only where the reference gradient is exactly zero.
            let g = match leaf.grad() {
                Some(g) => g.to_vec().unwrap(),
                None if g_ref.data.iter().all(|&v| v == 0.0) => vec![0.0; g_ref.len()],
                None => {
                    return Err(TestCaseError::fail(format!(
                        "{}: no gradient reached input {k}",
                        self.name
                    )))
                }
            };
            let gmax = g_ref.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let scale = RefTensor::new(
                &g_ref.shape,
                g_ref
                    .data
                    .iter()
                    .map(|v| v.abs() + gmax + self.grad_scale)
                    .collect(),
            );
            assert_close(
                &format!("{} gradient of input {k}", self.name),
                &g,
                g_ref,
                Some(&scale),
                1,
                tol::GRADIENT,
            )?;
        }
        if self.finite_differences {
            self.check_finite_differences(&c, &ref_grads)?;
        }
        Ok(())
    }

    /// Directional central differences of phi(x) = <c, f(x)> along a probe direction v (scaled
    /// per element by |x_j|),
    /// against <grad, v> from the reference VJP.
    fn check_finite_differences(
        &self,
        c: &RefTensor,
        grads: &[RefTensor],
    ) -> Result<(), TestCaseError> {
        // The f64 rounding in phi is relative to the magnitude of what was summed: |y|, or
        // the op's own scale (sum of |terms|) where intermediate terms cancel.
        let phi = |inputs: &[RefTensor]| -> (f64, f64) {
            let y = (self.reference)(inputs);
            let mag = |i: usize| {
                self.scale
                    .as_ref()
                    .map_or(0.0, |s| s.data[i])
                    .max(y.data[i].abs())
            };
            (
                y.data.iter().zip(&c.data).map(|(a, b)| a * b).sum(),
                (0..y.len()).map(|i| mag(i) * c.data[i].abs()).sum(),
            )
        };
        for k in 0..self.inputs.len() {
            // Relative steps: element j moves by h * |x_j| (1e-3 where x_j = 0), so small
            // entries are not swamped by a step sized for the large ones.
            let mut v = probe(&self.inputs[k].shape, 1.5 + k as f64);
            for (d, x) in v.data.iter_mut().zip(&self.inputs[k].data) {
                *d *= if *x == 0.0 { 1e-3 } else { x.abs() };
            }
            let h = 1e-6;
            let shifted = |t: f64| {
                let mut xs = self.inputs.clone();
                for (x, d) in xs[k].data.iter_mut().zip(&v.data) {
                    *x += t * d;
                }
                xs
            };
            let ((p, pabs), (m, _)) = (phi(&shifted(h)), phi(&shifted(-h)));
            let fd = (p - m) / (2.0 * h);
            let terms: Vec<f64> = grads[k]
                .data
                .iter()
                .zip(&v.data)
                .map(|(g, d)| g * d)
                .collect();
            let an: f64 = terms.iter().sum();
            let scale: f64 = terms.iter().map(|t| t.abs()).sum();
            let bound = tol::FINITE_DIFFERENCE_REL * scale + 1e3 * f64::EPSILON * pabs / h;
            prop_assert!(
                (fd - an).abs() <= bound,
                "{}: finite differences of input {} disagree with the reference gradient: fd {} vs analytic {} (bound {:e})",
                self.name, k, fd, an, bound
            );
        }
        Ok(())
    }
}

/// Two tensors whose shapes broadcast together.
pub fn broadcast_tensors(max_elems: usize) -> impl Strategy<Value = (RefTensor, RefTensor)> {
    broadcast_pair(max_elems).prop_flat_map(|(sa, sb)| (tensor_of(sa), tensor_of(sb)))
}

/// The `RefTensor { shape: [..], data: [..] }`s of a line of a proptest regressions file.
pub fn kept_tensors(line: &str) -> Vec<RefTensor> {
    let list = |text: &str, key: &str| -> (String, usize) {
        let start = text.find(key).unwrap() + key.len();
        let end = start + text[start..].find(']').unwrap();
        (text[start..end].to_string(), end)
    };
    let mut out = Vec::new();
    let mut rest = line;
    while rest.contains("RefTensor {") {
        let (shape, at) = list(rest, "shape: [");
        let after = &rest[at..];
        let (data, end) = list(after, "data: [");
        let parse = |t: &str| -> Vec<f64> {
            t.split(',')
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().parse().unwrap())
                .collect()
        };
        let shape: Vec<usize> = parse(&shape).into_iter().map(|v| v as usize).collect();
        out.push(RefTensor::new(&shape, parse(&data)));
        rest = &after[end..];
    }
    out
}
