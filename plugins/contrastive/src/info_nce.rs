//! General InfoNCE (the CPC / MoCo form): one query, one positive key and K negative keys,
//!   l = -log( exp(q·k₊/τ) / (exp(q·k₊/τ) + sum_j exp(q·k⁻_j/τ)) ),  mean over queries.
//! Features [N, V, D] hold, per query i: view 0 = the query, view 1 = its positive key,
//! views 2 .. V-1 = its negative keys (V >= 3). Embeddings are L2-normalised unless
//! `normalize = false`. Default τ = 0.1.

use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct InfoNceOptions {
        /// τ
        pub temperature: f64 = 0.1, "float > 0", domain = Domain::log_float(0.05, 2.0);
        /// L2-normalise queries and keys
        pub normalize: bool = true, "bool", domain = Domain::Bool;
    }
}

pub struct InfoNce {
    o: InfoNceOptions,
}

impl Loss for InfoNce {
    type Options = InfoNceOptions;
    const NAME: &'static str = "info_nce";
    const DESCRIPTION: &'static str = "InfoNCE with a query (view 0), a positive key (view 1) and negative keys (views 2..) per sample";

    fn options() -> Vec<OptionSpec> {
        InfoNceOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        InfoNceOptions::domains()
    }

    fn new(o: InfoNceOptions) -> Result<Self, String> {
        crate::check_temperature("info_nce", "temperature", o.temperature)?;
        Ok(InfoNce { o })
    }

    fn views(&self) -> (usize, usize) {
        (3, usize::MAX)
    }

    fn forward<'h>(&self, _host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, v, d) = crate::check_features("info_nce", &x.features.shape()?, 3)?;
        let f = if self.o.normalize {
            x.features.l2_normalize_eps(crate::EPS)?
        } else {
            x.features.reshape(&[n, v, d])?
        };
        let q = f.narrow(1, 0, 1)?; // [N, 1, D]
        let keys = f.narrow(1, 1, v - 1)?; // [N, V-1, D]
        let logits = q.matmul_t(&keys, false, true)?; // [N, 1, V-1]
        let logits = logits.mul_scalar(1.0 / self.o.temperature)?;
        let logp = logits.log_softmax()?;
        let pos = logp.narrow(2, 0, 1)?; // positive first
        let mean = pos.mean_all()?;
        mean.neg()
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, _) = crate::check_features("info_nce", x.features.dims, 3)?;
        let row = |i: usize, w: usize| crate::row(&x.features, i, w, self.o.normalize);
        let mut total = 0.0;
        for i in 0..n {
            let q = row(i, 0);
            let s: Vec<f64> = (1..v)
                .map(|w| {
                    q.iter().zip(row(i, w)).map(|(a, b)| a * b).sum::<f64>() / self.o.temperature
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + s.iter().map(|t| (t - mx).exp()).sum::<f64>().ln();
            total += lse - s[0];
        }
        Ok(total / n as f64)
    }
}
