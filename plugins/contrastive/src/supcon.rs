//! Supervised contrastive loss (Khosla et al. 2020). Labels y; P(i) = the other views with the
//! same label; A(i) = every view except i:
//!   L_out: l_i = -(1/|P(i)|) sum_{p in P(i)} log( exp(sim(i,p)/τ) / sum_{a in A(i)} exp(sim(i,a)/τ) )
//!   L_in:  l_i = -log( (1/|P(i)|) sum_{p in P(i)} exp(sim(i,p)/τ) / sum_{a in A(i)} exp(sim(i,a)/τ) )
//! times τ/τ_base when `base_temperature` is set (the reference code's factor; off by default,
//! i.e. factor 1). Anchors without positives are excluded from the mean (PyTorch Metric
//! Learning's choice); if no anchor has one, the loss is 0 with a zero gradient.
//! `contrast_mode`: `all` (every view anchors) or `one` (only the first view anchors).
//! Default τ = 0.1. With all labels distinct it equals NT-Xent.

use crate::masked::{self, Form, Spec};
use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct SupConOptions {
        /// τ
        pub temperature: f64 = 0.1, "float > 0", domain = Domain::log_float(0.05, 2.0);
        /// multiply by τ/τ_base (SupContrast's code uses 0.07); null = factor 1
        pub base_temperature: Option<f64> = None, "float > 0 or null", domain = Domain::log_float(0.05, 1.0).or_null();
        /// L_out (positives outside the log) or L_in (inside)
        pub variant: String = "out".into(), "\"out\" | \"in\"", domain = Domain::choice(["out", "in"]);
        /// every view anchors, or only the first view
        pub contrast_mode: String = "all".into(), "\"all\" | \"one\"", domain = Domain::choice(["all", "one"]);
        /// tiled: row statistics without the (VN)² matrix (any batch); matrix: the whole matrix; auto: tiled
        pub similarity: String = "auto".into(), "\"auto\" | \"tiled\" | \"matrix\"", domain = Domain::choice(["auto", "tiled", "matrix"]), exempt = "a path choice: tiled and matrix compute the same value";
    }
}

pub struct SupCon {
    path: masked::Path,
    tau: f64,
    factor: f64,
    l_in: bool,
    one: bool,
}

impl Loss for SupCon {
    type Options = SupConOptions;
    const NAME: &'static str = "supcon";
    const DESCRIPTION: &'static str =
        "Supervised contrastive (Khosla et al. 2020), L_out or L_in; needs labels";

    fn options() -> Vec<OptionSpec> {
        SupConOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        SupConOptions::domains()
    }

    fn new(o: SupConOptions) -> Result<Self, String> {
        crate::check_temperature("supcon", "temperature", o.temperature)?;
        if let Some(b) = o.base_temperature {
            crate::check_temperature("supcon", "base_temperature", b)?;
        }
        let l_in = match o.variant.as_str() {
            "out" => false,
            "in" => true,
            other => {
                return Err(format!(
                    "supcon: variant must be \"out\" or \"in\", got {other:?}"
                ))
            }
        };
        let one = match o.contrast_mode.as_str() {
            "all" => false,
            "one" => true,
            other => {
                return Err(format!(
                    "supcon: contrast_mode must be \"all\" or \"one\", got {other:?}"
                ))
            }
        };
        Ok(SupCon {
            path: masked::Path::parse("supcon", &o.similarity)?,
            tau: o.temperature,
            factor: o.base_temperature.map_or(1.0, |b| o.temperature / b),
            l_in,
            one,
        })
    }

    /// the other views of a sample are its positives; a batch of one has no negatives and a loss of 0.
    fn min_batch(&self) -> usize {
        1
    }

    fn needs_labels(&self) -> bool {
        true
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, v, _) = crate::check_features("supcon", &x.features.shape()?, 1)?;
        let labels = x.labels.as_ref().ok_or("supcon needs labels")?;
        let lshape = labels.shape()?;
        if lshape != [n] {
            return Err(format!(
                "supcon: {} labels for {n} samples (labels must be [N], got {lshape:?})",
                lshape.iter().product::<usize>()
            ));
        }
        let l = labels.to_f32()?;
        let l = l.reshape(&[1, n])?;
        let l = l.expand(&[v, n])?;
        let rows = l.reshape(&[n * v])?;
        let spec = Spec {
            temperature: self.tau,
            path: self.path,
            factor: self.factor,
            form: if self.l_in { Form::In } else { Form::Out },
            first_view_only: self.one,
        };
        masked::loss(host, &x.features, &rows, n, v, &spec)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, _) = crate::check_features("supcon", x.features.dims, 1)?;
        let labels = x.labels.ok_or("supcon needs labels")?;
        if labels.len() != n {
            return Err(format!("supcon: {} labels for {n} samples", labels.len()));
        }
        let z = crate::unit_rows(&x.features, n, v);
        let m = n * v;
        let label = |a: usize| labels[a % n];
        let sim =
            |a: usize, b: usize| z[a].iter().zip(&z[b]).map(|(p, q)| p * q).sum::<f64>() / self.tau;
        let anchors = if self.one { n } else { m };
        let (mut total, mut counted) = (0.0, 0usize);
        for i in 0..anchors {
            let others: Vec<usize> = (0..m).filter(|&a| a != i).collect();
            let positives: Vec<usize> = others
                .iter()
                .copied()
                .filter(|&p| label(p) == label(i))
                .collect();
            if positives.is_empty() {
                continue;
            }
            let logits: Vec<f64> = others.iter().map(|&a| sim(i, a)).collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_den = mx + logits.iter().map(|s| (s - mx).exp()).sum::<f64>().ln();
            let l = if self.l_in {
                let inner: f64 = positives
                    .iter()
                    .map(|&p| (sim(i, p) - log_den).exp())
                    .sum::<f64>()
                    / positives.len() as f64;
                -inner.ln()
            } else {
                -positives.iter().map(|&p| sim(i, p) - log_den).sum::<f64>()
                    / positives.len() as f64
            };
            total += l;
            counted += 1;
        }
        if counted == 0 {
            return Ok(0.0);
        }
        Ok(self.factor * total / counted as f64)
    }
}
