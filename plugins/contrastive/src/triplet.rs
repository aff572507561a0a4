//! Triplet loss on L2-normalised embeddings (every view of every sample is an embedding; labels
//! are per sample): for anchor a, positive p (same label, p != a), negative n (other label),
//!   l = max(0, d(a,p) - d(a,n) + m),  d = sqrt(||ẑ_a - ẑ_b||² + ε), ε = 1e-12, default m = 0.2;
//! `soft = true` uses softplus(d(a,p) - d(a,n)) instead. Mining: `all` (every valid triplet;
//! at most 256 embeddings, since there are M³ of them) or `batch_hard` (per anchor its farthest
//! positive and nearest negative). Averaging: `all` (mean over every valid triplet, or anchor for
//! batch_hard) or `nonzero` (mean over those with l > 0, PyTorch Metric Learning's default); no
//! valid one gives 0.

use serde::Deserialize;
use vkgrad_plugin::{json, Host, HostTensor, Loss, LossInputs, OptionSpec, RefInputs};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripletOptions {
    pub margin: f64,
    /// "all" or "batch_hard".
    pub mining: String,
    /// "all" or "nonzero".
    pub average: String,
    pub soft: bool,
}

impl Default for TripletOptions {
    fn default() -> Self {
        TripletOptions {
            margin: 0.2,
            mining: "all".into(),
            average: "all".into(),
            soft: false,
        }
    }
}

pub struct Triplet {
    margin: f64,
    hard: bool,
    nonzero: bool,
    soft: bool,
}

const DIST_EPS: f64 = 1e-12;
const MAX_ALL: usize = 256;

impl Loss for Triplet {
    type Options = TripletOptions;
    const NAME: &'static str = "triplet";
    const DESCRIPTION: &'static str = "triplet max(0, d(a,p) - d(a,n) + m) on normalised embeddings; all triplets or batch-hard; soft-margin option";

    fn options() -> Vec<OptionSpec> {
        vec![
            OptionSpec {
                name: "margin",
                ty: "float >= 0",
                default: json!(0.2),
                doc: "m (unused with soft)",
            },
            OptionSpec {
                name: "mining",
                ty: "\"all\" | \"batch_hard\"",
                default: json!("all"),
                doc: "which triplets",
            },
            OptionSpec {
                name: "average",
                ty: "\"all\" | \"nonzero\"",
                default: json!("all"),
                doc: "mean over all valid triplets or the non-zero ones",
            },
            OptionSpec {
                name: "soft",
                ty: "bool",
                default: json!(false),
                doc: "softplus(d(a,p) - d(a,n)) instead of the hinge",
            },
        ]
    }

    fn new(o: TripletOptions) -> Result<Self, String> {
        if !(o.margin >= 0.0 && o.margin.is_finite()) {
            return Err(format!(
                "triplet: margin must be >= 0 and finite, got {}",
                o.margin
            ));
        }
        let hard = match o.mining.as_str() {
            "all" => false,
            "batch_hard" => true,
            m => {
                return Err(format!(
                    "triplet: mining must be \"all\" or \"batch_hard\", got {m:?}"
                ))
            }
        };
        let nonzero = match o.average.as_str() {
            "all" => false,
            "nonzero" => true,
            a => {
                return Err(format!(
                    "triplet: average must be \"all\" or \"nonzero\", got {a:?}"
                ))
            }
        };
        Ok(Triplet {
            margin: o.margin,
            hard,
            nonzero,
            soft: o.soft,
        })
    }

    /// a batch of one has no triplets and a loss of 0, as PyTorch Metric Learning's.
    fn min_batch(&self) -> usize {
        1
    }

    fn needs_labels(&self) -> bool {
        true
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, v, d) = crate::check_features("triplet", &x.features.shape()?, 1)?;
        let m = n * v;
        if !self.hard && m > MAX_ALL {
            return Err(format!("triplet: mining = all needs M³ triplets; {m} embeddings is more than {MAX_ALL}: use mining = batch_hard"));
        }
        let labels = x.labels.as_ref().ok_or("triplet needs labels")?;
        if labels.shape()? != [n] {
            return Err(format!(
                "triplet: labels of shape {:?} for {n} samples",
                labels.shape()?
            ));
        }
        let op =
            |name: &str, ins: &[&HostTensor<'h>], a: vkgrad_plugin::Value| host.op(name, ins, a);
        let z = op("l2_normalize", &[&x.features], json!({ "eps": crate::EPS }))?;
        let z = op("permute", &[&z], json!({ "dims": [1, 0, 2] }))?;
        let z = op("reshape", &[&z], json!({ "shape": [m, d] }))?;
        let sq = op("mul", &[&z, &z], json!({}))?;
        let norms = op("sum", &[&sq], json!({ "axis": -1, "keepdim": true }))?; // [M, 1]
        let norms_t = op("reshape", &[&norms], json!({ "shape": [1, m] }))?;
        let gram = op("matmul", &[&z, &z], json!({ "tb": true }))?;
        let gram = op("mul_scalar", &[&gram], json!({ "s": -2.0 }))?;
        let d2 = op("add", &[&gram, &norms], json!({}))?;
        let d2 = op("add", &[&d2, &norms_t], json!({}))?;
        let d2 = op("maximum_scalar", &[&d2], json!({ "s": 0.0 }))?;
        let d2 = op("add_scalar", &[&d2], json!({ "s": DIST_EPS }))?;
        let dist = op("sqrt", &[&d2], json!({}))?; // [M, M]
        let l = op("to_f32", &[labels], json!({}))?;
        let l = op("reshape", &[&l], json!({ "shape": [1, n] }))?;
        let l = op("expand", &[&l], json!({ "shape": [v, n] }))?;
        let col = op("reshape", &[&l], json!({ "shape": [m, 1] }))?;
        let row = op("reshape", &[&l], json!({ "shape": [1, m] }))?;
        let same = op("eq", &[&col, &row], json!({}))?;
        let eye: Vec<f32> = (0..m * m).map(|k| (k / m == k % m) as u8 as f32).collect();
        let eye = host.tensor(&eye, &[m, m])?;
        let not_self = op("rsub_scalar", &[&eye], json!({ "s": 1.0 }))?;
        let pos = op("mul", &[&same, &not_self], json!({}))?;
        let neg = op("rsub_scalar", &[&same], json!({ "s": 1.0 }))?;
        let zero = host.tensor(&[0.0], &[])?;
        let (diff, valid) = if self.hard {
            let ninf = host.tensor(&[f32::NEG_INFINITY], &[])?;
            let pinf = host.tensor(&[f32::INFINITY], &[])?;
            let hp = op(
                "max",
                &[&op("where", &[&pos, &dist, &ninf], json!({}))?],
                json!({ "axis": -1 }),
            )?;
            let hn = op(
                "min",
                &[&op("where", &[&neg, &dist, &pinf], json!({}))?],
                json!({ "axis": -1 }),
            )?;
            let has_p = op(
                "gt_scalar",
                &[&op("sum", &[&pos], json!({ "axis": -1 }))?],
                json!({ "s": 0.0 }),
            )?;
            let has_n = op(
                "gt_scalar",
                &[&op("sum", &[&neg], json!({ "axis": -1 }))?],
                json!({ "s": 0.0 }),
            )?;
            let valid = op("mul", &[&has_p, &has_n], json!({}))?; // [M]
                                                                  // where() before subtracting, so no inf - inf reaches the arithmetic
            let hp = op("where", &[&valid, &hp, &zero], json!({}))?;
            let hn = op("where", &[&valid, &hn, &zero], json!({}))?;
            (op("sub", &[&hp, &hn], json!({}))?, valid)
        } else {
            let dap = op("reshape", &[&dist], json!({ "shape": [m, m, 1] }))?;
            let dan = op("reshape", &[&dist], json!({ "shape": [m, 1, m] }))?;
            let p3 = op("reshape", &[&pos], json!({ "shape": [m, m, 1] }))?;
            let n3 = op("reshape", &[&neg], json!({ "shape": [m, 1, m] }))?;
            (
                op("sub", &[&dap, &dan], json!({}))?,
                op("mul", &[&p3, &n3], json!({}))?,
            )
        };
        let per = if self.soft {
            let e = op("exp", &[&diff], json!({}))?; // |diff| <= 2 on unit vectors
            op(
                "log",
                &[&op("add_scalar", &[&e], json!({ "s": 1.0 }))?],
                json!({}),
            )?
        } else {
            op(
                "relu",
                &[&op("add_scalar", &[&diff], json!({ "s": self.margin }))?],
                json!({}),
            )?
        };
        let per = op("where", &[&valid, &per, &zero], json!({}))?;
        let counted = if self.nonzero {
            op(
                "mul",
                &[&valid, &op("gt_scalar", &[&per], json!({ "s": 0.0 }))?],
                json!({}),
            )?
        } else {
            valid
        };
        let total = op("sum", &[&per], json!({}))?;
        let count = op(
            "maximum_scalar",
            &[&op("sum", &[&counted], json!({}))?],
            json!({ "s": 1.0 }),
        )?;
        op("div", &[&total, &count], json!({}))
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, _) = crate::check_features("triplet", x.features.dims, 1)?;
        let labels = x.labels.ok_or("triplet needs labels")?;
        if labels.len() != n {
            return Err(format!("triplet: {} labels for {n} samples", labels.len()));
        }
        let z = crate::unit_rows(&x.features, n, v);
        let m = n * v;
        let label = |a: usize| labels[a % n];
        let dist = |a: usize, b: usize| {
            (z[a]
                .iter()
                .zip(&z[b])
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f64>()
                + DIST_EPS)
                .sqrt()
        };
        let term = |dap: f64, dan: f64| {
            if self.soft {
                (1.0 + (dap - dan).exp()).ln()
            } else {
                (dap - dan + self.margin).max(0.0)
            }
        };
        let mut losses = Vec::new();
        for a in 0..m {
            let ps: Vec<usize> = (0..m).filter(|&p| p != a && label(p) == label(a)).collect();
            let ns: Vec<usize> = (0..m).filter(|&k| label(k) != label(a)).collect();
            if self.hard {
                if ps.is_empty() || ns.is_empty() {
                    continue;
                }
                let hp = ps
                    .iter()
                    .map(|&p| dist(a, p))
                    .fold(f64::NEG_INFINITY, f64::max);
                let hn = ns.iter().map(|&k| dist(a, k)).fold(f64::INFINITY, f64::min);
                losses.push(term(hp, hn));
            } else {
                for &p in &ps {
                    for &k in &ns {
                        losses.push(term(dist(a, p), dist(a, k)));
                    }
                }
            }
        }
        let counted: Vec<f64> = losses
            .iter()
            .copied()
            .filter(|l| !self.nonzero || *l > 0.0)
            .collect();
        Ok(counted.iter().sum::<f64>() / counted.len().max(1) as f64)
    }
}
