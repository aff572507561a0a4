//! A Barlow-Twins-style redundancy-reduction loss, written the straightforward way a new plugin
//! author would: standardise each view's features over the batch, take their cross-correlation
//! C = z_aᵀ z_b / N, and penalise Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij². At its minimum batch
//! N = 2 the standardised values are ±|a − b| / sqrt(((a − b)/2)² + ε) ≈ ±1 whatever the
//! input, so the true gradient is ~1e-6 and the f32 device gradient is a difference of O(1)
//! terms: the case `vkgrad verify`'s loss gradient floor exists for (docs/verification.md).
//! Its options are declared with the SDK's `options!` (ABI 1.4: a domain for `verify` to sample);
//! with `VKGRAD_FIXTURE=ignores_lambda` its forward uses the default λ whatever the options say,
//! the bug option sampling exists to catch.

use vkgrad_plugin::{
    json, options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

/// ε inside the standard deviation (as batch norm's).
const EPS: f64 = 1e-5;

options! {
    /// Options of the cross-correlation loss.
    pub struct Options {
        /// weight of the off-diagonal terms
        pub lambda: f64 = 0.005, "float >= 0", domain = Domain::float(0.0, 0.05);
    }
}

pub struct CrossCorrelation {
    lambda: f64,
    /// The λ the forward uses: the option's, or the default under the `ignores_lambda` fault.
    forward_lambda: f64,
}

impl Loss for CrossCorrelation {
    type Options = Options;
    const NAME: &'static str = "cross_correlation";
    const DESCRIPTION: &'static str =
        "Barlow-Twins-style cross-correlation loss (a fixture whose gradient vanishes at N = 2)";

    fn options() -> Vec<OptionSpec> {
        Options::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        Options::domains()
    }

    fn new(o: Options) -> Result<Self, String> {
        if !(o.lambda >= 0.0 && o.lambda.is_finite()) {
            return Err(format!(
                "cross_correlation: lambda must be >= 0, got {}",
                o.lambda
            ));
        }
        let ignores = std::env::var("VKGRAD_FIXTURE").is_ok_and(|f| f == "ignores_lambda");
        Ok(CrossCorrelation {
            lambda: o.lambda,
            forward_lambda: if ignores {
                Options::default().lambda
            } else {
                o.lambda
            },
        })
    }

    fn views(&self) -> (usize, usize) {
        (2, 2)
    }

    /// A standard deviation over one sample is 0: the loss is defined from two on.
    fn min_batch(&self) -> usize {
        2
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let s = x.features.shape()?;
        let (n, d) = (s[0], s[2]);
        let standardised = |view: usize| -> Result<HostTensor<'h>, String> {
            let z = host.op(
                "narrow",
                &[&x.features],
                json!({ "axis": 1, "start": view, "len": 1 }),
            )?;
            let z = host.op("reshape", &[&z], json!({ "shape": [n, d] }))?;
            let mean = host.op("mean", &[&z], json!({ "axis": 0, "keepdim": true }))?;
            let c = host.op("sub", &[&z, &mean], json!({}))?;
            let sq = host.op("mul", &[&c, &c], json!({}))?;
            let var = host.op("mean", &[&sq], json!({ "axis": 0, "keepdim": true }))?;
            let ve = host.op("add_scalar", &[&var], json!({ "s": EPS }))?;
            let inv = host.op("rsqrt", &[&ve], json!({}))?;
            host.op("mul", &[&c, &inv], json!({}))
        };
        let (za, zb) = (standardised(0)?, standardised(1)?);
        let c = host.op("matmul", &[&za, &zb], json!({ "ta": true }))?;
        let c = host.op("div_scalar", &[&c], json!({ "s": n as f64 }))?;
        let eye: Vec<f32> = (0..d * d)
            .map(|k| (k % (d + 1) == 0) as u8 as f32)
            .collect();
        let eye = host.tensor(&eye, &[d, d])?;
        let diag = host.op("mul", &[&c, &eye], json!({}))?;
        let diag = host.op("sum", &[&diag], json!({ "axis": 1 }))?;
        let on = host.op("rsub_scalar", &[&diag], json!({ "s": 1.0 }))?;
        let on = host.op("mul", &[&on, &on], json!({}))?;
        let on = host.op("sum", &[&on], json!({}))?;
        let off = host.op(
            "sub",
            &[&c, &host.op("mul", &[&c, &eye], json!({}))?],
            json!({}),
        )?;
        let off = host.op("mul", &[&off, &off], json!({}))?;
        let off = host.op("sum", &[&off], json!({}))?;
        let off = host.op("mul_scalar", &[&off], json!({ "s": self.forward_lambda }))?;
        host.op("add", &[&on, &off], json!({}))
    }

    // Index loops: the reference is written as the formula reads.
    #[allow(clippy::needless_range_loop)]
    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, v, d) = (x.features.dims[0], x.features.dims[1], x.features.dims[2]);
        let at = |i: usize, view: usize, k: usize| x.features.data[(i * v + view) * d + k];
        let z = |view: usize| -> Vec<Vec<f64>> {
            let mut out = vec![vec![0.0; d]; n];
            for k in 0..d {
                let mean = (0..n).map(|i| at(i, view, k)).sum::<f64>() / n as f64;
                let var = (0..n).map(|i| (at(i, view, k) - mean).powi(2)).sum::<f64>() / n as f64;
                for (i, row) in out.iter_mut().enumerate() {
                    row[k] = (at(i, view, k) - mean) / (var + EPS).sqrt();
                }
            }
            out
        };
        let (za, zb) = (z(0), z(1));
        let mut loss = 0.0;
        for a in 0..d {
            for b in 0..d {
                let c = (0..n).map(|i| za[i][a] * zb[i][b]).sum::<f64>() / n as f64;
                loss += if a == b {
                    (1.0 - c).powi(2)
                } else {
                    self.lambda * c * c
                };
            }
        }
        Ok(loss)
    }
}
