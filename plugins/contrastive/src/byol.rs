//! BYOL's regression loss (Grill et al. 2020): the online network's predictions q (features) are
//! pulled towards the target network's projections z' (extra input `targets`, no gradient):
//!   l = ||q̂(v) - ẑ'(v')||² = 2 - 2 cos(q(v), z'(v')),
//! summed over the view orders (v, v'), v != v' (the paper's L + L̃ for two views), mean over
//! the batch. `view_orders = "mean"` averages over the orders instead, so the loss lies in
//! [0, 4]; with "sum" it lies in [0, 4 V (V - 1)]. This is the paper's 2 - 2cos (some libraries
//! use -cos / 2, a quarter of the gradient). The EMA target itself lives in training.

use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct ByolOptions {
        /// sum over the ordered view pairs (the paper's L + L̃) or average them
        pub view_orders: String = "sum".into(), "\"sum\" | \"mean\"", domain = Domain::choice(["sum", "mean"]);
    }
}

pub struct Byol {
    mean: bool,
}

impl Loss for Byol {
    type Options = ByolOptions;
    const NAME: &'static str = "byol";
    const DESCRIPTION: &'static str = "BYOL regression: 2 - 2 cos(q(v), z'(v')) over view orders, mean over the batch; extra input `targets`";

    fn options() -> Vec<OptionSpec> {
        ByolOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        ByolOptions::domains()
    }

    fn new(o: ByolOptions) -> Result<Self, String> {
        match o.view_orders.as_str() {
            "sum" => Ok(Byol { mean: false }),
            "mean" => Ok(Byol { mean: true }),
            other => Err(format!(
                "byol: view_orders must be \"sum\" or \"mean\", got {other:?}"
            )),
        }
    }

    fn extra_inputs(&self) -> Vec<&'static str> {
        vec!["targets"]
    }

    fn views(&self) -> (usize, usize) {
        (2, usize::MAX)
    }
    /// BYOL's loss is per sample: one sample is a batch.
    fn min_batch(&self) -> usize {
        1
    }

    fn forward<'h>(&self, _host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let shape = x.features.shape()?;
        let (_, v, _) = crate::check_features("byol", &shape, 2)?;
        let targets = &x.extra[0];
        if targets.shape()? != shape {
            return Err(format!(
                "byol: targets of shape {:?} differ from the predictions' {shape:?}",
                targets.shape()?
            ));
        }
        let q = x.features.l2_normalize_eps(crate::EPS)?;
        let t = targets.detach()?; // stop-gradient on the target branch
        let t = t.l2_normalize_eps(crate::EPS)?;
        let mut total: Option<HostTensor> = None;
        for a in 0..v {
            for b in (0..v).filter(|&b| b != a) {
                let qa = q.narrow(1, a, 1)?;
                let tb = t.narrow(1, b, 1)?;
                let prod = qa.mul(&tb)?;
                let cos = prod.sum_axis(-1, false)?; // [N, 1]
                let term = cos.mul_scalar(-2.0)?;
                let term = term.add_scalar(2.0)?;
                total = Some(match total {
                    None => term,
                    Some(acc) => acc.add(&term)?,
                });
            }
        }
        let per_sample = total.ok_or("byol: no view pairs")?;
        let loss = per_sample.mean_all()?;
        let orders = (v * (v - 1)) as f64;
        loss.mul_scalar(if self.mean { 1.0 / orders } else { 1.0 })
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, _) = crate::check_features("byol", x.features.dims, 2)?;
        let t = x.extra.first().ok_or("byol needs targets")?;
        if t.dims != x.features.dims {
            return Err(format!(
                "byol: targets of shape {:?} differ from the predictions' {:?}",
                t.dims, x.features.dims
            ));
        }
        let unit = |a: &vkgrad_plugin::Array, i: usize, w: usize| crate::row(a, i, w, true);
        let mut total = 0.0;
        for i in 0..n {
            for a in 0..v {
                for b in (0..v).filter(|&b| b != a) {
                    let (qa, tb) = (unit(&x.features, i, a), unit(t, i, b));
                    // 2 − 2 cos, as BYOL's paper and the device path. (‖q̂ − t̂‖², equal for
                    // unit vectors, is 1 instead of 2 when a row is zero and normalises to
                    // zero: `vkgrad verify`'s zero-sample inputs found the difference.)
                    let cos: f64 = qa.iter().zip(&tb).map(|(p, q)| p * q).sum();
                    total += 2.0 - 2.0 * cos;
                }
            }
        }
        let orders = (v * (v - 1)) as f64;
        Ok(total / n as f64 / if self.mean { orders } else { 1.0 })
    }
}
