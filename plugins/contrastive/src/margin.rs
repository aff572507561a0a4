//! Margin contrastive loss (Hadsell, Chopra & LeCun 2006) on pairs: features [N, 2, D] hold the
//! pairs (a = view 0, b = view 1), labels [N] say same (any non-zero) or different (0):
//!   l = ½ same D² + ½ (1 - same) max(0, m - D)²,  D = sqrt(||a - b||² + ε), ε = 1e-12,
//! mean over pairs. Default m = 1. ε keeps the gradient finite for identical pairs (it changes D
//! by at most 1e-6). Embeddings are used as given unless `normalize` is set.

use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct MarginOptions {
        /// m
        pub margin: f64 = 1.0, "float > 0", domain = Domain::log_float(0.1, 2.0);
        /// L2-normalise the embeddings first
        pub normalize: bool = false, "bool", domain = Domain::Bool;
    }
}

pub struct Margin {
    o: MarginOptions,
}

const DIST_EPS: f64 = 1e-12;

impl Loss for Margin {
    type Options = MarginOptions;
    const NAME: &'static str = "margin";
    const DESCRIPTION: &'static str = "margin contrastive (Hadsell 2006): ½ same D² + ½ (1-same) max(0, m-D)² over pairs; labels 1 = same, 0 = different";

    fn options() -> Vec<OptionSpec> {
        MarginOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        MarginOptions::domains()
    }

    fn new(o: MarginOptions) -> Result<Self, String> {
        if !(o.margin > 0.0 && o.margin.is_finite()) {
            return Err(format!(
                "margin: margin must be positive and finite, got {}",
                o.margin
            ));
        }
        Ok(Margin { o })
    }

    fn needs_labels(&self) -> bool {
        true
    }

    fn views(&self) -> (usize, usize) {
        (2, 2)
    }
    /// pairs of views of one sample are positives; a batch of one has no negatives and a loss of 0, as PyTorch Metric Learning's.
    fn min_batch(&self) -> usize {
        1
    }

    fn forward<'h>(&self, _host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, d) = check(&x.features.shape()?)?;
        let labels = x.labels.as_ref().ok_or("margin needs labels")?;
        if labels.shape()? != [n] {
            return Err(format!(
                "margin: labels of shape {:?} for {n} pairs",
                labels.shape()?
            ));
        }
        let f = if self.o.normalize {
            x.features.l2_normalize_eps(crate::EPS)?
        } else {
            x.features.reshape(&[n, 2, d])? // a handle of our own
        };
        let pick = |w: usize| -> Result<HostTensor<'h>, String> {
            let v = f.narrow(1, w, 1)?;
            v.reshape(&[n, d])
        };
        let diff = (pick(0)?).sub(&pick(1)?)?;
        let sq = diff.mul(&diff)?;
        let d2 = sq.sum_axis(-1, false)?; // [N]
        let dist = d2.add_scalar(DIST_EPS)?;
        let dist = dist.sqrt()?;
        let hinge = dist.rsub_scalar(self.o.margin)?;
        let hinge = hinge.relu()?;
        let hinge2 = hinge.mul(&hinge)?;
        let same = labels.to_f32()?;
        let same = same.gt_scalar(0.0)?;
        let per_pair = HostTensor::where_(&same, &d2, &hinge2)?;
        let mean = per_pair.mean_all()?;
        mean.mul_scalar(0.5)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, _) = check(x.features.dims)?;
        let labels = x.labels.ok_or("margin needs labels")?;
        if labels.len() != n {
            return Err(format!("margin: {} labels for {n} pairs", labels.len()));
        }
        let row = |i: usize, w: usize| crate::row(&x.features, i, w, self.o.normalize);
        let mut total = 0.0;
        for (i, &same) in labels.iter().enumerate() {
            let (a, b) = (row(i, 0), row(i, 1));
            let d2: f64 = a.iter().zip(&b).map(|(p, q)| (p - q) * (p - q)).sum();
            total += if same != 0.0 {
                0.5 * d2
            } else {
                0.5 * (self.o.margin - (d2 + DIST_EPS).sqrt()).max(0.0).powi(2)
            };
        }
        Ok(total / n as f64)
    }
}

fn check(dims: &[usize]) -> Result<(usize, usize), String> {
    let (n, v, d) = crate::check_features("margin", dims, 2)?;
    if v != 2 {
        return Err(format!(
            "margin: needs pairs, V = 2 views, got features of shape {dims:?}"
        ));
    }
    Ok((n, d))
}
