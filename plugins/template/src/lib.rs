//! A complete vkgrad plugin: the alignment loss of Wang & Isola (2020),
//!   align = mean over samples and view pairs (v < w) of ||ẑ_v − ẑ_w||^α,  ẑ = z / max(||z||, eps),
//! with features shaped [N, V, D]. Copy this crate to start a plugin of your own
//! (docs/writing-a-plugin.md walks through it).

use serde::Deserialize;
use vkgrad_plugin::{
    export_plugin, json, Host, HostTensor, Loss, LossInputs, OptionSpec, RefInputs,
};

/// Options, from JSON; missing keys take the defaults, unknown keys are errors.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlignmentOptions {
    pub alpha: f64,
}

impl Default for AlignmentOptions {
    fn default() -> Self {
        AlignmentOptions { alpha: 2.0 }
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
        vec![OptionSpec {
            name: "alpha",
            ty: "float > 0",
            default: json!(2.0),
            doc: "exponent α of the distance",
        }]
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

    fn forward<'h>(
        &self,
        host: &'h Host,
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
        let z = host.op("l2_normalize", &[&inputs.features], json!({ "eps": EPS }))?;
        let mut total: Option<HostTensor> = None;
        for a in 0..v {
            for b in a + 1..v {
                let za = host.op("narrow", &[&z], json!({ "axis": 1, "start": a, "len": 1 }))?;
                let zb = host.op("narrow", &[&z], json!({ "axis": 1, "start": b, "len": 1 }))?;
                let diff = host.op("sub", &[&za, &zb], json!({}))?;
                let sq = host.op("mul", &[&diff, &diff], json!({}))?;
                let dist2 = host.op("sum", &[&sq], json!({ "axis": -1 }))?; // [N, 1]
                let term = host.op("powf", &[&dist2], json!({ "p": self.alpha / 2.0 }))?;
                total = Some(match total {
                    None => term,
                    Some(t) => host.op("add", &[&t, &term], json!({}))?,
                });
            }
        }
        let pairs = (v * (v - 1) / 2) as f64;
        let total = total.ok_or("alignment: no view pairs")?;
        let mean = host.op("mean", &[&total], json!({}))?;
        host.op("mul_scalar", &[&mean], json!({ "s": 1.0 / pairs }))
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

export_plugin!(name: "template", version: "0.1.0", losses: [Alignment]);
