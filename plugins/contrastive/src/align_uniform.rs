//! Alignment and uniformity (Wang & Isola 2020), on ẑ = z / max(||z||, eps):
//!   align   = mean over samples of ||ẑ_i(view 0) - ẑ_i(view 1)||^α,  α = 2
//!   uniform = log mean over pairs i < j of exp(-t ||ẑ_i - ẑ_j||²) within a view,  t = 2
//!   loss    = align + λ (uniform(view 0) + uniform(view 1)) / 2,  λ = 1.
//! The same numbers serve as evaluation metrics of an embedding.

use vkgrad_plugin::{
    options, Domain, Host, HostTensor, Loss, LossInputs, OptionDomain, OptionSpec, RefInputs,
};

options! {
    pub struct AlignUniformOptions {
        /// alignment exponent α
        pub alpha: f64 = 2.0, "float > 0", domain = Domain::float(1.0, 3.0);
        /// uniformity temperature t
        pub t: f64 = 2.0, "float > 0", domain = Domain::log_float(0.5, 4.0);
        /// weight λ of uniformity
        pub lambda: f64 = 1.0, "float >= 0", domain = Domain::float(0.0, 2.0);
    }
}

pub struct AlignUniform {
    o: AlignUniformOptions,
}

fn check(dims: &[usize]) -> Result<(usize, usize), String> {
    let (n, v, d) = crate::check_features("align_uniform", dims, 2)?;
    if v != 2 {
        return Err(format!(
            "align_uniform: needs exactly V = 2 views, got features of shape {dims:?}"
        ));
    }
    if n < 2 {
        return Err(format!(
            "align_uniform: uniformity needs N >= 2 samples, got {dims:?}"
        ));
    }
    Ok((n, d))
}

impl Loss for AlignUniform {
    type Options = AlignUniformOptions;
    const NAME: &'static str = "align_uniform";
    const DESCRIPTION: &'static str = "alignment + λ · uniformity (Wang & Isola 2020), two views";

    fn options() -> Vec<OptionSpec> {
        AlignUniformOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        AlignUniformOptions::domains()
    }

    fn new(o: AlignUniformOptions) -> Result<Self, String> {
        if !(o.alpha > 0.0
            && o.alpha.is_finite()
            && o.t > 0.0
            && o.t.is_finite()
            && o.lambda >= 0.0
            && o.lambda.is_finite())
        {
            return Err(format!(
                "align_uniform: needs alpha > 0, t > 0, lambda >= 0 (finite), got {}, {}, {}",
                o.alpha, o.t, o.lambda
            ));
        }
        Ok(AlignUniform { o })
    }

    fn views(&self) -> (usize, usize) {
        (2, 2)
    }

    fn forward<'h>(&self, host: &'h Host, x: &LossInputs<'h>) -> Result<HostTensor<'h>, String> {
        let (n, d) = check(&x.features.shape()?)?;
        let z = x.features.l2_normalize_eps(crate::EPS)?;
        let view = |w: usize| -> Result<HostTensor<'h>, String> {
            let zw = z.narrow(1, w, 1)?;
            zw.reshape(&[n, d])
        };
        let (z0, z1) = (view(0)?, view(1)?);
        // alignment
        let diff = z0.sub(&z1)?;
        let sq = diff.mul(&diff)?;
        let dist2 = sq.sum_axis(-1, false)?;
        // At coincident views d/ds s^(α/2) is infinite for α < 2 and times ∂s/∂z = 0 makes
        // NaN; the (sub)gradient there is 0, as PyTorch's `norm().pow(α)` gives for α ≥ 1.
        let (zero, one) = (host.tensor(&[0.0], &[])?, host.tensor(&[1.0], &[])?);
        let apart = dist2.gt(&zero)?;
        let safe = HostTensor::where_(&apart, &dist2, &one)?;
        let powed = HostTensor::where_(&apart, &safe.powf(self.o.alpha / 2.0)?, &zero)?;
        let align = powed.mean_all()?;
        // uniformity of one view: log mean_{i<j} exp(-t ||z_i - z_j||^2)
        let upper: Vec<f32> = (0..n * n).map(|k| (k / n < k % n) as u8 as f32).collect();
        let upper = host.tensor(&upper, &[n, n])?;
        let neg_inf = host.tensor(&[f32::NEG_INFINITY], &[])?;
        let pairs = (n * (n - 1) / 2) as f64;
        let uniform = |zw: &HostTensor<'h>| -> Result<HostTensor<'h>, String> {
            let norms = zw.mul(zw)?;
            let norms = norms.sum_axis(-1, true)?; // [N, 1]
            let rows = norms.reshape(&[1, n])?;
            let gram = zw.matmul_t(zw, false, true)?;
            let gram = gram.mul_scalar(-2.0)?;
            let d2 = gram.add(&norms)?;
            let d2 = d2.add(&rows)?;
            let d2 = d2.maximum_scalar(0.0)?; // rounding can go below 0
            let e = d2.mul_scalar(-self.o.t)?;
            let e = HostTensor::where_(&upper, &e, &neg_inf)?;
            let flat = e.reshape(&[1, n * n])?;
            let lse = flat.logsumexp()?;
            lse.sub_scalar(pairs.ln())
        };
        let u = (uniform(&z0)?).add(&uniform(&z1)?)?;
        let u = u.mul_scalar(self.o.lambda / 2.0)?;
        let u = u.reshape(&[])?;
        align.add(&u)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let (n, _) = check(x.features.dims)?;
        let unit = |i: usize, w: usize| crate::row(&x.features, i, w, true);
        let dist2 =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
        let align = (0..n)
            .map(|i| dist2(&unit(i, 0), &unit(i, 1)).powf(self.o.alpha / 2.0))
            .sum::<f64>()
            / n as f64;
        let uniform = |w: usize| {
            let mut terms = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    terms.push(-self.o.t * dist2(&unit(i, w), &unit(j, w)));
                }
            }
            let mx = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            mx + (terms.iter().map(|t| (t - mx).exp()).sum::<f64>() / terms.len() as f64).ln()
        };
        Ok(align + self.o.lambda * (uniform(0) + uniform(1)) / 2.0)
    }
}
