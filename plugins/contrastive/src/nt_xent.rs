//! NT-Xent / InfoNCE (SimCLR): for anchor i with positive j(i) (its other view) and every other
//! view k != i as a candidate,
//!   l_i = -log( exp(sim(i, j)/τ) / sum_{k != i} exp(sim(i, k)/τ) ),  loss = mean over anchors.
//! With V > 2 views each anchor has V - 1 positives and l_i averages -log over them (the
//! multi-positive form; for V = 2 it is exactly the formula above). Default τ = 0.5. No hidden
//! factor 2 (Google's reference returns loss_a + loss_b).

use crate::masked::{self, Form, Spec};
use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct NtXentOptions {
        /// τ (SimCLR's CIFAR recipe: 0.5)
        pub temperature: f64 = 0.5, "float > 0", domain = Domain::log_float(0.05, 2.0);
        /// tiled: row statistics without the (VN)² matrix (any batch); matrix: the whole matrix; auto: tiled
        pub similarity: String = "auto".into(), "\"auto\" | \"tiled\" | \"matrix\"", domain = Domain::choice(["auto", "tiled", "matrix"]), exempt = "a path choice: tiled and matrix compute the same value";
    }
}

pub struct NtXent {
    tau: f64,
    path: masked::Path,
}

impl Loss for NtXent {
    type Options = NtXentOptions;
    const NAME: &'static str = "nt_xent";
    const DESCRIPTION: &'static str = "NT-Xent / InfoNCE over V >= 2 views (SimCLR): mean over anchors of -log softmax_{k!=i}(sim/τ)[positive]";

    fn options() -> Vec<OptionSpec> {
        NtXentOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        NtXentOptions::domains()
    }

    fn new(o: NtXentOptions) -> Result<Self, String> {
        crate::check_temperature("nt_xent", "temperature", o.temperature)?;
        Ok(NtXent {
            tau: o.temperature,
            path: masked::Path::parse("nt_xent", &o.similarity)?,
        })
    }

    fn views(&self) -> (usize, usize) {
        (2, usize::MAX)
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, v, _) = check(&x.features.shape()?)?;
        // "labels" = sample index of every row (view-major), so positives are the other views.
        let rows: Vec<f32> = (0..v).flat_map(|_| (0..n).map(|i| i as f32)).collect();
        let labels = host.tensor(&rows, &[n * v])?;
        masked::loss(
            host,
            &x.features,
            &labels,
            n,
            v,
            &Spec {
                temperature: self.tau,
                path: self.path,
                factor: 1.0,
                form: Form::Out,
                first_view_only: false,
            },
        )
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, _) = check(x.features.dims)?;
        let z = crate::unit_rows(&x.features, n, v);
        let m = n * v;
        let sim =
            |a: usize, b: usize| z[a].iter().zip(&z[b]).map(|(p, q)| p * q).sum::<f64>() / self.tau;
        let mut total = 0.0;
        for a in 0..m {
            // denominator over every k != a, max-shifted in f64
            let others: Vec<f64> = (0..m).filter(|&k| k != a).map(|k| sim(a, k)).collect();
            let mx = others.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_den = mx + others.iter().map(|s| (s - mx).exp()).sum::<f64>().ln();
            let (sample, view) = (a % n, a / n);
            let positives: Vec<usize> = (0..v)
                .filter(|&w| w != view)
                .map(|w| w * n + sample)
                .collect();
            let l: f64 = positives
                .iter()
                .map(|&p| -(sim(a, p) - log_den))
                .sum::<f64>()
                / positives.len() as f64;
            total += l;
        }
        Ok(total / m as f64)
    }
}

fn check(dims: &[usize]) -> Result<(usize, usize, usize), String> {
    let (n, v, d) = crate::check_features("nt_xent", dims, 2)?;
    if n < 2 {
        return Err(format!("nt_xent: needs N >= 2 samples (negatives come from other samples), got features of shape {dims:?}"));
    }
    Ok((n, v, d))
}
