//! A complete vkgrad plugin with one component of each kind, to copy when starting your own
//! (docs/writing-a-plugin.md walks through it):
//! - loss `alignment` (Wang & Isola 2020): mean over samples and view pairs (v < w) of
//!   ||ẑ_v − ẑ_w||^α, ẑ = z / max(||z||, eps), features shaped [N, V, D];
//! - encoder `linear`: y = x W + b, optionally followed by ReLU (PyTorch's nn.Linear init);
//! - augmentation `gaussian_noise`: x + σ ε, ε ~ N(0, 1) drawn from the seeded stream.

use vkgrad_plugin::{
    export_plugin, options, Array, Augmentation, Domain, Encoder, Host, HostTensor, Init, Loss,
    LossInputs, OptionDomain, OptionSpec, Output, ParamSpec, Pass, RefInputs, Stream,
};

options! {
    /// Options, from JSON; missing keys take the defaults, unknown keys are errors. Each
    /// field: type = default, the type as users read it, the domain `vkgrad verify` samples.
    pub struct AlignmentOptions {
        /// exponent α of the distance
        pub alpha: f64 = 2.0, "float > 0", domain = Domain::log_float(0.5, 4.0);
    }
}

pub struct Alignment {
    alpha: f64,
}

/// The epsilon of the L2 normalisation (PyTorch's F.normalize default).
const EPS: f64 = 1e-12;

impl Loss for Alignment {
    type Options = AlignmentOptions;
    const NAME: &'static str = "alignment";
    const DESCRIPTION: &'static str =
        "Alignment of positive pairs (Wang & Isola 2020): mean ||ẑ_v − ẑ_w||^α over view pairs";

    fn options() -> Vec<OptionSpec> {
        AlignmentOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        AlignmentOptions::domains()
    }

    fn new(o: AlignmentOptions) -> Result<Self, String> {
        if !(o.alpha > 0.0 && o.alpha.is_finite()) {
            return Err(format!(
                "alignment: alpha must be positive and finite, got {}",
                o.alpha
            ));
        }
        Ok(Alignment { alpha: o.alpha })
    }

    fn views(&self) -> (usize, usize) {
        (2, usize::MAX) // pairs of views
    }

    fn forward<'h>(
        &self,
        host: &'h Host, // for constants (`host.tensor`) and draws; ops are tensor methods
        inputs: &LossInputs<'h>,
    ) -> Result<HostTensor<'h>, String> {
        let shape = inputs.features.shape()?;
        let [n, v, _d] = shape[..] else {
            return Err(format!(
                "alignment: features must be [N, V, D], got {shape:?}"
            ));
        };
        if n == 0 || v < 2 {
            return Err(format!(
                "alignment: needs N >= 1 samples and V >= 2 views, got {shape:?}"
            ));
        }
        let z = inputs.features.l2_normalize_eps(EPS)?;
        let (zero, one) = (host.tensor(&[0.0], &[])?, host.tensor(&[1.0], &[])?);
        let mut total: Option<HostTensor> = None;
        for a in 0..v {
            for b in a + 1..v {
                let za = z.narrow(1, a, 1)?;
                let zb = z.narrow(1, b, 1)?;
                let diff = za.sub(&zb)?;
                let sq = diff.mul(&diff)?;
                let dist2 = sq.sum_axis(-1, false)?; // [N, 1]
                                                     // At coincident views (s = 0) d/ds s^(α/2) is infinite for α < 2 and times
                                                     // ∂s/∂z = 0 makes NaN; the (sub)gradient there is 0 (PyTorch's
                                                     // `norm().pow(α)` gives 0 for α ≥ 1), so the power is taken of 1 there and the
                                                     // term replaced by 0 (`vkgrad verify` found it: D = 1, α = 0.5).
                let apart = dist2.gt(&zero)?;
                let safe = HostTensor::where_(&apart, &dist2, &one)?;
                let term = HostTensor::where_(&apart, &safe.powf(self.alpha / 2.0)?, &zero)?;
                total = Some(match total {
                    None => term,
                    Some(t) => t.add(&term)?,
                });
            }
        }
        let pairs = (v * (v - 1) / 2) as f64;
        let total = total.ok_or("alignment: no view pairs")?;
        let mean = total.mean_all()?;
        mean.mul_scalar(1.0 / pairs)
    }

    fn reference(&self, x: &RefInputs) -> Result<f64, String> {
        let f = &x.features;
        let [n, v, d] = f.dims[..] else {
            return Err(format!(
                "alignment: features must be [N, V, D], got {:?}",
                f.dims
            ));
        };
        if n == 0 || v < 2 {
            return Err(format!(
                "alignment: needs N >= 1 samples and V >= 2 views, got {:?}",
                f.dims
            ));
        }
        let unit = |i: usize, a: usize| -> Vec<f64> {
            let row: Vec<f64> = (0..d).map(|k| f.at(&[i, a, k])).collect();
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(EPS);
            row.iter().map(|x| x / norm).collect()
        };
        let mut sum = 0.0;
        let mut count = 0.0;
        for i in 0..n {
            for a in 0..v {
                for b in a + 1..v {
                    let (za, zb) = (unit(i, a), unit(i, b));
                    let dist2: f64 = za.iter().zip(&zb).map(|(p, q)| (p - q) * (p - q)).sum();
                    sum += dist2.powf(self.alpha / 2.0);
                    count += 1.0;
                }
            }
        }
        Ok(sum / count)
    }
}

options! {
    /// Options of the linear encoder.
    pub struct LinearOptions {
        /// input width
        pub in_features: usize = 8, "integer >= 1", domain = Domain::int(1, 12);
        /// output width
        pub out_features: usize = 4, "integer >= 1", domain = Domain::int(1, 8);
        /// apply ReLU to the output
        pub relu: bool = false, "bool", domain = Domain::Bool;
    }
}

pub struct Linear {
    o: LinearOptions,
}

impl Encoder for Linear {
    type Options = LinearOptions;
    const NAME: &'static str = "linear";
    const DESCRIPTION: &'static str = "y = x W + b (W: [in, out]), optionally followed by ReLU";

    fn options() -> Vec<OptionSpec> {
        LinearOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        LinearOptions::domains()
    }

    fn new(o: LinearOptions) -> Result<Self, String> {
        if o.in_features == 0 || o.out_features == 0 {
            return Err(format!(
                "linear: in_features and out_features must be >= 1, got {} and {}",
                o.in_features, o.out_features
            ));
        }
        Ok(Linear { o })
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.o.in_features]
    }

    fn parameters(&self) -> Vec<ParamSpec> {
        // PyTorch's nn.Linear default: uniform on ±1/sqrt(fan_in) for weight and bias.
        let bound = 1.0 / (self.o.in_features as f64).sqrt();
        vec![
            ParamSpec::new(
                "weight",
                vec![self.o.in_features, self.o.out_features],
                Init::Uniform { bound },
            ),
            ParamSpec::new("bias", vec![self.o.out_features], Init::Uniform { bound }),
        ]
    }

    fn forward<'h>(
        &self,
        _host: &'h Host,
        x: &HostTensor<'h>,
        p: &[HostTensor<'h>],
        _pass: &mut Pass<'h>,
    ) -> Result<HostTensor<'h>, String> {
        let y = x.matmul(&p[0])?;
        let y = y.add(&p[1])?;
        if self.o.relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    fn reference(&self, x: &Array, p: &[Array], _training: bool) -> Result<Output, String> {
        let (b, i, o) = (x.dims[0], self.o.in_features, self.o.out_features);
        let mut data = vec![0.0; b * o];
        for r in 0..b {
            for c in 0..o {
                let mut acc = p[1].data[c];
                for k in 0..i {
                    acc += x.at(&[r, k]) * p[0].at(&[k, c]);
                }
                data[r * o + c] = if self.o.relu { acc.max(0.0) } else { acc };
            }
        }
        Ok(Output {
            data,
            dims: vec![b, o],
        })
    }
}

options! {
    /// Options of the Gaussian-noise augmentation.
    pub struct NoiseOptions {
        /// standard deviation σ of the noise
        pub sigma: f64 = 0.1, "float >= 0", domain = Domain::float(0.0, 2.0);
        /// features per sample
        pub dim: usize = 8, "integer >= 1", domain = Domain::int(1, 12);
    }
}

pub struct GaussianNoise {
    o: NoiseOptions,
}

impl Augmentation for GaussianNoise {
    type Options = NoiseOptions;
    const NAME: &'static str = "gaussian_noise";
    const DESCRIPTION: &'static str =
        "x + σ ε with ε ~ N(0, 1) from the seeded stream (vectors / tabular data)";

    fn options() -> Vec<OptionSpec> {
        NoiseOptions::specs()
    }

    fn option_domains() -> Vec<OptionDomain> {
        NoiseOptions::domains()
    }

    fn new(o: NoiseOptions) -> Result<Self, String> {
        if !(o.sigma >= 0.0 && o.sigma.is_finite()) || o.dim == 0 {
            return Err(format!(
                "gaussian_noise: needs sigma >= 0 and dim >= 1, got {} and {}",
                o.sigma, o.dim
            ));
        }
        Ok(GaussianNoise { o })
    }

    fn input_shape(&self) -> Vec<usize> {
        vec![self.o.dim]
    }

    /// Its noise is `stream.normal` on the device (ABI 1.6): `vkgrad train` may record it into
    /// a replayed step, and `vkgrad verify` checks that a replay with another seed is right.
    fn draws_on_device(&self) -> bool {
        true
    }

    fn forward<'h>(
        &self,
        host: &'h Host,
        batch: &HostTensor<'h>,
        stream: Stream,
    ) -> Result<HostTensor<'h>, String> {
        let noise = stream.normal(host, 0, &batch.shape()?, 0.0, self.o.sigma)?;
        batch.add(&noise)
    }

    fn reference(&self, batch: &Array, stream: Stream) -> Result<Output, String> {
        let data = batch
            .data
            .iter()
            .enumerate()
            .map(|(i, x)| x + stream.normal_at(0, i as u32, 0.0, self.o.sigma))
            .collect();
        Ok(Output {
            data,
            dims: batch.dims.to_vec(),
        })
    }
}

export_plugin!(
    name: "template",
    version: "0.1.0",
    losses: [Alignment],
    encoders: [Linear],
    augmentations: [GaussianNoise],
);
