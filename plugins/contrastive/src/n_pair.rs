//! N-pair loss (Sohn 2016): one positive per anchor (view 0 anchors, view 1 positives), cross-
//! entropy over the anchor-vs-all-positives inner-product matrix:
//!   l_i = -log( exp(a_i · p_i) / sum_j exp(a_i · p_j) ),  loss = mean over i.
//! Embeddings are used as given (not normalised), as in the paper; no L2 regulariser.

use serde::Deserialize;
use vkgrad_plugin::{Host, HostTensor, Loss, LossInputs, OptionSpec, RefInputs};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NPairOptions {}

pub struct NPair;

fn check(dims: &[usize]) -> Result<(usize, usize), String> {
    let (n, v, d) = crate::check_features("n_pair", dims, 2)?;
    if v != 2 {
        return Err(format!(
            "n_pair: needs exactly V = 2 views (anchor, positive), got features of shape {dims:?}"
        ));
    }
    if n < 2 {
        return Err(format!(
            "n_pair: needs N >= 2 samples (the other positives are the negatives), got {dims:?}"
        ));
    }
    Ok((n, d))
}

impl Loss for NPair {
    type Options = NPairOptions;
    const NAME: &'static str = "n_pair";
    const DESCRIPTION: &'static str = "N-pair (Sohn 2016): cross-entropy over anchor · positiveᵀ, view 0 anchors, view 1 positives";

    fn options() -> Vec<OptionSpec> {
        Vec::new()
    }

    fn new(_: NPairOptions) -> Result<Self, String> {
        Ok(NPair)
    }

    fn views(&self) -> (usize, usize) {
        (2, 2)
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, d) = check(&x.features.shape()?)?;
        let a = x.features.narrow(1, 0, 1)?;
        let a = a.reshape(&[n, d])?;
        let p = x.features.narrow(1, 1, 1)?;
        let p = p.reshape(&[n, d])?;
        let logits = a.matmul_t(&p, false, true)?;
        let logp = logits.log_softmax()?;
        let eye: Vec<f32> = (0..n * n).map(|k| (k / n == k % n) as u8 as f32).collect();
        let eye = host.tensor(&eye, &[n, n])?;
        let zero = host.tensor(&[0.0], &[])?;
        let diag = HostTensor::where_(&eye, &logp, &zero)?;
        let total = diag.sum_all()?;
        total.mul_scalar(-1.0 / n as f64)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, d) = check(x.features.dims)?;
        let f = &x.features;
        let dot = |i: usize, j: usize| {
            (0..d)
                .map(|k| f.at(&[i, 0, k]) * f.at(&[j, 1, k]))
                .sum::<f64>()
        };
        let mut total = 0.0;
        for i in 0..n {
            let row: Vec<f64> = (0..n).map(|j| dot(i, j)).collect();
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|r| (r - mx).exp()).sum::<f64>().ln();
            total += lse - row[i];
        }
        Ok(total / n as f64)
    }
}
