//! Triplet loss on L2-normalised embeddings (every view of every sample is an embedding; labels
//! are per sample): for anchor a, positive p (same label, p != a), negative n (other label),
//!   l = max(0, d(a,p) - d(a,n) + m),  d = sqrt(||ẑ_a - ẑ_b||² + ε), ε = 1e-12, default m = 0.2;
//! `soft = true` uses softplus(d(a,p) - d(a,n)) instead. Mining: `all` (every valid triplet;
//! at most 256 embeddings, since there are M³ of them) or `batch_hard` (per anchor its farthest
//! positive and nearest negative). Averaging: `all` (mean over every valid triplet, or anchor for
//! batch_hard) or `nonzero` (mean over those with l > 0, PyTorch Metric Learning's default); no
//! valid one gives 0.

use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct TripletOptions {
        /// m (unused with soft)
        pub margin: f64 = 0.2, "float >= 0", domain = Domain::float(0.0, 1.0);
        /// which triplets
        pub mining: String = "all".into(), "\"all\" | \"batch_hard\"", domain = Domain::choice(["all", "batch_hard"]);
        /// mean over all valid triplets or the non-zero ones
        pub average: String = "all".into(), "\"all\" | \"nonzero\"", domain = Domain::choice(["all", "nonzero"]);
        /// softplus(d(a,p) - d(a,n)) instead of the hinge
        pub soft: bool = false, "bool", domain = Domain::Bool;
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
/// The largest M·M·D for which distances come from an [M, M, D] tensor of differences (2²⁴
/// floats, 64 MiB; every `mining = all` batch of D ≤ 256 fits).
const DIRECT_MAX: usize = 1 << 24;

impl Loss for Triplet {
    type Options = TripletOptions;
    const NAME: &'static str = "triplet";
    const DESCRIPTION: &'static str = "triplet max(0, d(a,p) - d(a,n) + m) on normalised embeddings; all triplets or batch-hard; soft-margin option";

    fn options() -> Vec<OptionSpec> {
        TripletOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        TripletOptions::domains()
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
        let z = x.features.l2_normalize_eps(crate::EPS)?;
        let z = z.permute(&[1, 0, 2])?;
        let z = z.reshape(&[m, d])?;
        let d2 = if m * m * d <= DIRECT_MAX {
            // ||ẑ_a − ẑ_b||² from the differences: exact for near-duplicate embeddings, where
            // the expanded form below cancels (2 − 2 ẑ_a·ẑ_b rounds to 0 in f32 at distances
            // below ~3e-4, and ∂d/∂ẑ = (ẑ_a − ẑ_b)/d then comes out several times too large;
            // `vkgrad verify` found it). torch.cdist does the same: direct up to 25 rows.
            let a = z.reshape(&[m, 1, d])?;
            let b = z.reshape(&[1, m, d])?;
            let diff = a.sub(&b)?;
            let sq = diff.mul(&diff)?;
            sq.sum_axis(-1, false)? // [M, M]
        } else {
            // Too large for an [M, M, D] temporary: the expanded form, as torch.cdist (and so
            // PyTorch Metric Learning) computes it above 25 rows.
            let sq = z.mul(&z)?;
            let norms = sq.sum_axis(-1, true)?; // [M, 1]
            let norms_t = norms.reshape(&[1, m])?;
            let gram = z.matmul_t(&z, false, true)?;
            let gram = gram.mul_scalar(-2.0)?;
            let d2 = gram.add(&norms)?;
            let d2 = d2.add(&norms_t)?;
            d2.maximum_scalar(0.0)?
        };
        let d2 = d2.add_scalar(DIST_EPS)?;
        let dist = d2.sqrt()?; // [M, M]
        let l = labels.to_f32()?;
        let l = l.reshape(&[1, n])?;
        let l = l.expand(&[v, n])?;
        let col = l.reshape(&[m, 1])?;
        let row = l.reshape(&[1, m])?;
        let same = col.eq(&row)?;
        let eye: Vec<f32> = (0..m * m).map(|k| (k / m == k % m) as u8 as f32).collect();
        let eye = host.tensor(&eye, &[m, m])?;
        let not_self = eye.rsub_scalar(1.0)?;
        let pos = same.mul(&not_self)?;
        let neg = same.rsub_scalar(1.0)?;
        let zero = host.tensor(&[0.0], &[])?;
        let (diff, valid) = if self.hard {
            let ninf = host.tensor(&[f32::NEG_INFINITY], &[])?;
            let pinf = host.tensor(&[f32::INFINITY], &[])?;
            let hp = (HostTensor::where_(&pos, &dist, &ninf)?).max_axis(-1, false)?;
            let hn = (HostTensor::where_(&neg, &dist, &pinf)?).min_axis(-1, false)?;
            let has_p = (pos.sum_axis(-1, false)?).gt_scalar(0.0)?;
            let has_n = (neg.sum_axis(-1, false)?).gt_scalar(0.0)?;
            let valid = has_p.mul(&has_n)?; // [M]
                                            // where() before subtracting, so no inf - inf reaches the arithmetic
            let hp = HostTensor::where_(&valid, &hp, &zero)?;
            let hn = HostTensor::where_(&valid, &hn, &zero)?;
            (hp.sub(&hn)?, valid)
        } else {
            let dap = dist.reshape(&[m, m, 1])?;
            let dan = dist.reshape(&[m, 1, m])?;
            let p3 = pos.reshape(&[m, m, 1])?;
            let n3 = neg.reshape(&[m, 1, m])?;
            (dap.sub(&dan)?, p3.mul(&n3)?)
        };
        let per = if self.soft {
            let e = diff.exp()?; // |diff| <= 2 on unit vectors
            (e.add_scalar(1.0)?).log()?
        } else {
            (diff.add_scalar(self.margin)?).relu()?
        };
        let per = HostTensor::where_(&valid, &per, &zero)?;
        let counted = if self.nonzero {
            valid.mul(&per.gt_scalar(0.0)?)?
        } else {
            valid
        };
        let total = per.sum_all()?;
        let count = (counted.sum_all()?).maximum_scalar(1.0)?;
        total.div(&count)
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
