//! Augmentations for vkgrad, run on the device with per-sample parameters drawn from the
//! seeded stream (same seed → same batch, bit for bit), each with an f64 CPU reference that
//! draws the same numbers:
//! - image transforms (`[N, C, H, W]`, values in [0, 1]): `random_resized_crop`,
//!   `horizontal_flip`, `color_jitter`, `random_grayscale`, `gaussian_blur`, `solarize`;
//! - presets: `simclr` (Chen et al. 2020), `byol` (Grill et al. 2020, `view` 1 or 2),
//!   `digits` (mild, for 8x8 / 28x28 single-channel digits);
//! - vectors (`[N, D]`): `gaussian_noise`, `feature_mask`.
//!
//! Where these differ from torchvision (stated so results are comparable): crops are continuous
//! boxes (clamped to the image instead of rejection-sampled, bilinear, no antialiasing); colour
//! jitter applies brightness, contrast, saturation, hue in that fixed order; hue rotates the
//! chroma plane in YIQ space instead of shifting HSV hue.

mod device;
mod reference;
pub mod transforms;

use serde::Deserialize;
use transforms::{check_steps, Step, Transform};
use vkgrad_plugin::{
    export_plugin, json, Array, Augmentation, Host, HostTensor, OptionSpec, Output, Stream, Value,
};

fn opt(name: &'static str, ty: &'static str, default: Value, doc: &'static str) -> OptionSpec {
    OptionSpec {
        name,
        ty,
        default,
        doc,
    }
}

fn image_options() -> Vec<OptionSpec> {
    vec![
        opt("channels", "1 or 3", json!(3), "image channels"),
        opt("size", "integer >= 1", json!(8), "image height and width"),
    ]
}

fn image(channels: usize, size: usize, what: &str) -> Result<Vec<usize>, String> {
    if !(channels == 1 || channels == 3) || size == 0 {
        return Err(format!(
            "{what}: needs channels 1 or 3 and size >= 1, got {channels} and {size}"
        ));
    }
    Ok(vec![channels, size, size])
}

/// Implements `Augmentation` for a component holding `input` and `steps`.
macro_rules! pipeline {
    ($ty:ident, $opts:ident, $name:literal, $desc:literal, $options:expr, $build:expr) => {
        pub struct $ty {
            input: Vec<usize>,
            steps: Vec<Step>,
        }
        impl Augmentation for $ty {
            type Options = $opts;
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = $desc;
            fn options() -> Vec<OptionSpec> {
                $options
            }
            fn new(o: $opts) -> Result<Self, String> {
                let build: fn($opts) -> Result<(Vec<usize>, Vec<Step>), String> = $build;
                let (input, steps) = build(o)?;
                check_steps(&steps, &input).map_err(|e| format!("{}: {e}", $name))?;
                Ok($ty { input, steps })
            }
            fn input_shape(&self) -> Vec<usize> {
                self.input.clone()
            }
            fn forward<'h>(
                &self,
                host: &'h Host,
                batch: &HostTensor<'h>,
                stream: Stream,
            ) -> Result<HostTensor<'h>, String> {
                let shape = batch.shape()?;
                if shape.len() != self.input.len() + 1 || shape[1..] != self.input[..] {
                    return Err(format!(
                        "{}: batch must be [N, {:?}...], got {shape:?}",
                        $name, self.input
                    ));
                }
                device::apply(host, batch, stream, &self.steps)
            }
            fn reference(&self, batch: &Array, stream: Stream) -> Result<Output, String> {
                let x = reference::Batch {
                    dims: batch.dims.to_vec(),
                    data: batch.data.to_vec(),
                };
                let y = reference::apply(&x, stream, &self.steps);
                Ok(Output {
                    data: y.data,
                    dims: y.dims,
                })
            }
        }
    };
}

fn prob(p: f64, what: &str) -> Result<f64, String> {
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{what}: p must be in [0, 1], got {p}"))
    }
}

// ---------------------------------------------------------------- single transforms

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CropOptions {
    pub channels: usize,
    pub size: usize,
    pub out_size: Option<usize>,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}
impl Default for CropOptions {
    fn default() -> Self {
        CropOptions {
            channels: 3,
            size: 8,
            out_size: None,
            scale: [0.08, 1.0],
            ratio: [0.75, 4.0 / 3.0],
        }
    }
}
pipeline!(RandomResizedCrop, CropOptions, "random_resized_crop",
    "Random resized crop: area fraction in `scale`, aspect ratio log-uniform in `ratio`, uniform position, bilinear resize to `out_size`",
    {
        let mut o = image_options();
        o.push(opt("out_size", "integer >= 1 or null", json!(null), "output size (default: size)"));
        o.push(opt("scale", "[min, max] in (0, 1]", json!([0.08, 1.0]), "area fraction of the crop"));
        o.push(opt("ratio", "[min, max] > 0", json!([0.75, 4.0 / 3.0]), "aspect ratio w / h of the crop"));
        o
    },
    |o| Ok((image(o.channels, o.size, "random_resized_crop")?, vec![Step {
        t: Transform::Crop { scale: o.scale, ratio: o.ratio, out: o.out_size.unwrap_or(o.size) },
        p: 1.0,
    }])));

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlipOptions {
    pub channels: usize,
    pub size: usize,
    pub p: f64,
}
impl Default for FlipOptions {
    fn default() -> Self {
        FlipOptions {
            channels: 3,
            size: 8,
            p: 0.5,
        }
    }
}
pipeline!(
    HorizontalFlip,
    FlipOptions,
    "horizontal_flip",
    "Mirror left-right with probability p",
    {
        let mut o = image_options();
        o.push(opt("p", "[0, 1]", json!(0.5), "probability"));
        o
    },
    |o| Ok((
        image(o.channels, o.size, "horizontal_flip")?,
        vec![Step {
            t: Transform::HFlip,
            p: prob(o.p, "horizontal_flip")?
        }]
    ))
);

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JitterOptions {
    pub channels: usize,
    pub size: usize,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub p: f64,
}
impl Default for JitterOptions {
    fn default() -> Self {
        JitterOptions {
            channels: 3,
            size: 8,
            brightness: 0.8,
            contrast: 0.8,
            saturation: 0.8,
            hue: 0.2,
            p: 0.8,
        }
    }
}
pipeline!(ColorJitter, JitterOptions, "color_jitter",
    "Colour jitter with probability p: brightness, contrast (and for RGB saturation, hue) factors drawn per sample, results clamped to [0, 1]",
    {
        let mut o = image_options();
        o.push(opt("brightness", ">= 0", json!(0.8), "factor in [1 - b, 1 + b]"));
        o.push(opt("contrast", ">= 0", json!(0.8), "blend with the mean luma, factor in [1 - c, 1 + c]"));
        o.push(opt("saturation", ">= 0", json!(0.8), "blend with the luma per pixel (RGB only)"));
        o.push(opt("hue", "[0, 0.5]", json!(0.2), "chroma rotation of up to ±2π h (RGB only)"));
        o.push(opt("p", "[0, 1]", json!(0.8), "probability"));
        o
    },
    |o| Ok((image(o.channels, o.size, "color_jitter")?, vec![Step {
        t: Transform::Jitter { brightness: o.brightness, contrast: o.contrast, saturation: o.saturation, hue: o.hue },
        p: prob(o.p, "color_jitter")?,
    }])));

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrayOptions {
    pub channels: usize,
    pub size: usize,
    pub p: f64,
}
impl Default for GrayOptions {
    fn default() -> Self {
        GrayOptions {
            channels: 3,
            size: 8,
            p: 0.2,
        }
    }
}
pipeline!(
    RandomGrayscale,
    GrayOptions,
    "random_grayscale",
    "Luma (0.299 R + 0.587 G + 0.114 B) in every channel with probability p",
    {
        let mut o = image_options();
        o.push(opt("p", "[0, 1]", json!(0.2), "probability"));
        o
    },
    |o| Ok((
        image(o.channels, o.size, "random_grayscale")?,
        vec![Step {
            t: Transform::Grayscale,
            p: prob(o.p, "random_grayscale")?
        }]
    ))
);

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlurOptions {
    pub channels: usize,
    pub size: usize,
    pub kernel: usize,
    pub sigma: [f64; 2],
    pub p: f64,
}
impl Default for BlurOptions {
    fn default() -> Self {
        BlurOptions {
            channels: 3,
            size: 8,
            kernel: 3,
            sigma: [0.1, 2.0],
            p: 0.5,
        }
    }
}
pipeline!(
    GaussianBlur,
    BlurOptions,
    "gaussian_blur",
    "Gaussian blur with σ uniform in `sigma`, odd `kernel`, reflect padding, probability p",
    {
        let mut o = image_options();
        o.push(opt("kernel", "odd integer", json!(3), "kernel size"));
        o.push(opt(
            "sigma",
            "[min, max] > 0",
            json!([0.1, 2.0]),
            "range of σ",
        ));
        o.push(opt("p", "[0, 1]", json!(0.5), "probability"));
        o
    },
    |o| Ok((
        image(o.channels, o.size, "gaussian_blur")?,
        vec![Step {
            t: Transform::Blur {
                kernel: o.kernel,
                sigma: o.sigma
            },
            p: prob(o.p, "gaussian_blur")?
        }]
    ))
);

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SolarizeOptions {
    pub channels: usize,
    pub size: usize,
    pub threshold: f64,
    pub p: f64,
}
impl Default for SolarizeOptions {
    fn default() -> Self {
        SolarizeOptions {
            channels: 3,
            size: 8,
            threshold: 0.5,
            p: 0.2,
        }
    }
}
pipeline!(
    Solarize,
    SolarizeOptions,
    "solarize",
    "x >= threshold → 1 − x, with probability p",
    {
        let mut o = image_options();
        o.push(opt(
            "threshold",
            "[0, 1]",
            json!(0.5),
            "values at or above it are inverted",
        ));
        o.push(opt("p", "[0, 1]", json!(0.2), "probability"));
        o
    },
    |o| Ok((
        image(o.channels, o.size, "solarize")?,
        vec![Step {
            t: Transform::Solarize {
                threshold: o.threshold
            },
            p: prob(o.p, "solarize")?
        }]
    ))
);

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseOptions {
    pub dim: usize,
    pub sigma: f64,
    pub p: f64,
}
impl Default for NoiseOptions {
    fn default() -> Self {
        NoiseOptions {
            dim: 8,
            sigma: 0.1,
            p: 1.0,
        }
    }
}
fn vector(dim: usize, what: &str) -> Result<Vec<usize>, String> {
    if dim == 0 {
        return Err(format!("{what}: dim must be >= 1"));
    }
    Ok(vec![dim])
}
pipeline!(
    GaussianNoise,
    NoiseOptions,
    "gaussian_noise",
    "Vectors: x + σ ε, ε ~ N(0, 1) per feature, with probability p per sample",
    vec![
        opt("dim", "integer >= 1", json!(8), "features per sample"),
        opt("sigma", ">= 0", json!(0.1), "noise standard deviation"),
        opt("p", "[0, 1]", json!(1.0), "probability"),
    ],
    |o| Ok((
        vector(o.dim, "gaussian_noise")?,
        vec![Step {
            t: Transform::Noise { sigma: o.sigma },
            p: prob(o.p, "gaussian_noise")?
        }]
    ))
);

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskOptions {
    pub dim: usize,
    pub rate: f64,
    pub p: f64,
}
impl Default for MaskOptions {
    fn default() -> Self {
        MaskOptions {
            dim: 8,
            rate: 0.2,
            p: 1.0,
        }
    }
}
pipeline!(
    FeatureMask,
    MaskOptions,
    "feature_mask",
    "Vectors: each feature zeroed with probability `rate` (per sample with probability p)",
    vec![
        opt("dim", "integer >= 1", json!(8), "features per sample"),
        opt(
            "rate",
            "[0, 1]",
            json!(0.2),
            "probability of zeroing a feature"
        ),
        opt("p", "[0, 1]", json!(1.0), "probability"),
    ],
    |o| Ok((
        vector(o.dim, "feature_mask")?,
        vec![Step {
            t: Transform::Mask { rate: o.rate },
            p: prob(o.p, "feature_mask")?
        }]
    ))
);

// ---------------------------------------------------------------- presets

/// torchvision's / lightly's blur kernel for SimCLR: about a tenth of the image, odd, >= 3.
fn default_kernel(size: usize) -> usize {
    (size / 10).max(3) | 1
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimclrOptions {
    pub channels: usize,
    pub size: usize,
    pub min_scale: f64,
    pub flip: f64,
    pub jitter_strength: f64,
    pub jitter: f64,
    pub grayscale: f64,
    pub blur: f64,
}
impl Default for SimclrOptions {
    fn default() -> Self {
        SimclrOptions {
            channels: 3,
            size: 8,
            min_scale: 0.08,
            flip: 0.5,
            jitter_strength: 1.0,
            jitter: 0.8,
            grayscale: 0.2,
            blur: 0.5,
        }
    }
}
pipeline!(Simclr, SimclrOptions, "simclr",
    "SimCLR's augmentation (Chen et al. 2020): random resized crop, flip 0.5, colour jitter (0.8 s, 0.8 s, 0.8 s, 0.2 s) with p 0.8, grayscale 0.2, Gaussian blur 0.5 (σ 0.1–2)",
    {
        let mut o = image_options();
        o.push(opt("min_scale", "(0, 1]", json!(0.08), "smallest crop area fraction"));
        o.push(opt("flip", "[0, 1]", json!(0.5), "horizontal flip probability"));
        o.push(opt("jitter_strength", ">= 0", json!(1.0), "colour jitter strength s"));
        o.push(opt("jitter", "[0, 1]", json!(0.8), "colour jitter probability"));
        o.push(opt("grayscale", "[0, 1]", json!(0.2), "grayscale probability"));
        o.push(opt("blur", "[0, 1]", json!(0.5), "blur probability (0 for CIFAR-sized images, as in the paper)"));
        o
    },
    |o| {
        let s = o.jitter_strength;
        Ok((image(o.channels, o.size, "simclr")?, vec![
            Step { t: Transform::Crop { scale: [o.min_scale, 1.0], ratio: [0.75, 4.0 / 3.0], out: o.size }, p: 1.0 },
            Step { t: Transform::HFlip, p: prob(o.flip, "simclr flip")? },
            Step { t: Transform::Jitter { brightness: 0.8 * s, contrast: 0.8 * s, saturation: 0.8 * s, hue: 0.2 * s }, p: prob(o.jitter, "simclr jitter")? },
            Step { t: Transform::Grayscale, p: prob(o.grayscale, "simclr grayscale")? },
            Step { t: Transform::Blur { kernel: default_kernel(o.size), sigma: [0.1, 2.0] }, p: prob(o.blur, "simclr blur")? },
        ]))
    });

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ByolOptions {
    pub channels: usize,
    pub size: usize,
    pub view: u32,
    pub min_scale: f64,
}
impl Default for ByolOptions {
    fn default() -> Self {
        ByolOptions {
            channels: 3,
            size: 8,
            view: 1,
            min_scale: 0.08,
        }
    }
}
pipeline!(Byol, ByolOptions, "byol",
    "BYOL's asymmetric augmentation (Grill et al. 2020, table 6): crop, flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2; blur 1.0 / 0.1 and solarize 0 / 0.2 for view 1 / 2",
    {
        let mut o = image_options();
        o.push(opt("view", "1 or 2", json!(1), "which of the two asymmetric views"));
        o.push(opt("min_scale", "(0, 1]", json!(0.08), "smallest crop area fraction"));
        o
    },
    |o| {
        let (blur, solarize) = match o.view {
            1 => (1.0, 0.0),
            2 => (0.1, 0.2),
            v => return Err(format!("byol: view must be 1 or 2, got {v}")),
        };
        Ok((image(o.channels, o.size, "byol")?, vec![
            Step { t: Transform::Crop { scale: [o.min_scale, 1.0], ratio: [0.75, 4.0 / 3.0], out: o.size }, p: 1.0 },
            Step { t: Transform::HFlip, p: 0.5 },
            Step { t: Transform::Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 }, p: 0.8 },
            Step { t: Transform::Grayscale, p: 0.2 },
            Step { t: Transform::Blur { kernel: default_kernel(o.size), sigma: [0.1, 2.0] }, p: blur },
            Step { t: Transform::Solarize { threshold: 0.5 }, p: solarize },
        ]))
    });

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DigitsOptions {
    pub size: usize,
    pub min_scale: f64,
    pub jitter: f64,
}
impl Default for DigitsOptions {
    fn default() -> Self {
        DigitsOptions {
            size: 8,
            min_scale: 0.5,
            jitter: 0.8,
        }
    }
}
pipeline!(Digits, DigitsOptions, "digits",
    "A mild set for small single-channel digits: crop (area ≥ min_scale, ratio 0.8–1.25), brightness / contrast jitter 0.4 with p `jitter`; no flips (digits are not mirror-symmetric)",
    vec![
        opt("size", "integer >= 1", json!(8), "image height and width (one channel)"),
        opt("min_scale", "(0, 1]", json!(0.5), "smallest crop area fraction"),
        opt("jitter", "[0, 1]", json!(0.8), "brightness / contrast jitter probability"),
    ],
    |o| Ok((image(1, o.size, "digits")?, vec![
        Step { t: Transform::Crop { scale: [o.min_scale, 1.0], ratio: [0.8, 1.25], out: o.size }, p: 1.0 },
        Step { t: Transform::Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.0, hue: 0.0 }, p: prob(o.jitter, "digits jitter")? },
    ])));

export_plugin!(
    name: "augment",
    version: "0.1.0",
    losses: [],
    encoders: [],
    augmentations: [Simclr, Byol, Digits, RandomResizedCrop, HorizontalFlip, ColorJitter, RandomGrayscale, GaussianBlur, Solarize, GaussianNoise, FeatureMask],
);
