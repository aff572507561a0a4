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

use transforms::{check_steps, Step, Transform};
use vkgrad_plugin::{
    export_plugin, options, Array, Augmentation, Domain, Host, HostTensor, OptionDomain,
    OptionSpec, Output, Stream,
};

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
    ($ty:ident, $opts:ident, $name:literal, $desc:literal, $build:expr) => {
        pub struct $ty {
            input: Vec<usize>,
            steps: Vec<Step>,
        }
        impl Augmentation for $ty {
            type Options = $opts;
            const NAME: &'static str = $name;
            const DESCRIPTION: &'static str = $desc;
            fn options() -> Vec<OptionSpec> {
                $opts::specs()
            }
            fn option_domains() -> Vec<OptionDomain> {
                $opts::domains()
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
            /// `device::apply` draws every number with `stream.uniform` on the device.
            fn draws_on_device(&self) -> bool {
                true
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

options! {
    pub struct CropOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// output size (default: size)
        pub out_size: Option<usize> = None, "integer >= 1 or null", domain = Domain::int(2, 8).or_null();
        /// area fraction of the crop
        pub scale: [f64; 2] = [0.08, 1.0], "[min, max] in (0, 1]", domain = Domain::choice([[0.08, 1.0], [0.5, 1.0], [1.0, 1.0]]);
        /// aspect ratio w / h of the crop
        pub ratio: [f64; 2] = [0.75, 4.0 / 3.0], "[min, max] > 0", domain = Domain::choice([[0.75, 4.0 / 3.0], [1.0, 1.0], [0.5, 2.0]]);
    }
}
pipeline!(RandomResizedCrop, CropOptions, "random_resized_crop",
    "Random resized crop: area fraction in `scale`, aspect ratio log-uniform in `ratio`, uniform position, bilinear resize to `out_size`",
    |o| Ok((image(o.channels, o.size, "random_resized_crop")?, vec![Step {
        t: Transform::Crop { scale: o.scale, ratio: o.ratio, out: o.out_size.unwrap_or(o.size) },
        p: 1.0,
    }])));

options! {
    pub struct FlipOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// probability
        pub p: f64 = 0.5, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(
    HorizontalFlip,
    FlipOptions,
    "horizontal_flip",
    "Mirror left-right with probability p",
    |o| Ok((
        image(o.channels, o.size, "horizontal_flip")?,
        vec![Step {
            t: Transform::HFlip,
            p: prob(o.p, "horizontal_flip")?
        }]
    ))
);

options! {
    pub struct JitterOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// factor in [1 - b, 1 + b]
        pub brightness: f64 = 0.8, ">= 0", domain = Domain::float(0.0, 1.0);
        /// blend with the mean luma, factor in [1 - c, 1 + c]
        pub contrast: f64 = 0.8, ">= 0", domain = Domain::float(0.0, 1.0);
        /// blend with the luma per pixel (RGB only)
        pub saturation: f64 = 0.8, ">= 0", domain = Domain::float(0.0, 1.0);
        /// chroma rotation of up to ±2π h (RGB only)
        pub hue: f64 = 0.2, "[0, 0.5]", domain = Domain::float(0.0, 0.5);
        /// probability
        pub p: f64 = 0.8, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(ColorJitter, JitterOptions, "color_jitter",
    "Colour jitter with probability p: brightness, contrast (and for RGB saturation, hue) factors drawn per sample, results clamped to [0, 1]",
    |o| Ok((image(o.channels, o.size, "color_jitter")?, vec![Step {
        t: Transform::Jitter { brightness: o.brightness, contrast: o.contrast, saturation: o.saturation, hue: o.hue },
        p: prob(o.p, "color_jitter")?,
    }])));

options! {
    pub struct GrayOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// probability
        pub p: f64 = 0.2, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(
    RandomGrayscale,
    GrayOptions,
    "random_grayscale",
    "Luma (0.299 R + 0.587 G + 0.114 B) in every channel with probability p",
    |o| Ok((
        image(o.channels, o.size, "random_grayscale")?,
        vec![Step {
            t: Transform::Grayscale,
            p: prob(o.p, "random_grayscale")?
        }]
    ))
);

options! {
    pub struct BlurOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// kernel size
        pub kernel: usize = 3, "odd integer", domain = Domain::choice([1, 3, 5]);
        /// range of σ
        pub sigma: [f64; 2] = [0.1, 2.0], "[min, max] > 0", domain = Domain::choice([[0.1, 2.0], [0.5, 0.5]]);
        /// probability
        pub p: f64 = 0.5, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(
    GaussianBlur,
    BlurOptions,
    "gaussian_blur",
    "Gaussian blur with σ uniform in `sigma`, odd `kernel`, reflect padding, probability p",
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

options! {
    pub struct SolarizeOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// values at or above it are inverted
        pub threshold: f64 = 0.5, "[0, 1]", domain = Domain::float(0.0, 1.0);
        /// probability
        pub p: f64 = 0.2, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(
    Solarize,
    SolarizeOptions,
    "solarize",
    "x >= threshold → 1 − x, with probability p",
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

options! {
    pub struct NoiseOptions {
        /// features per sample
        pub dim: usize = 8, "integer >= 1", domain = Domain::int(1, 12);
        /// noise standard deviation
        pub sigma: f64 = 0.1, ">= 0", domain = Domain::float(0.0, 2.0);
        /// probability
        pub p: f64 = 1.0, "[0, 1]", domain = Domain::float(0.0, 1.0);
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
    |o| Ok((
        vector(o.dim, "gaussian_noise")?,
        vec![Step {
            t: Transform::Noise { sigma: o.sigma },
            p: prob(o.p, "gaussian_noise")?
        }]
    ))
);

options! {
    pub struct MaskOptions {
        /// features per sample
        pub dim: usize = 8, "integer >= 1", domain = Domain::int(1, 12);
        /// probability of zeroing a feature
        pub rate: f64 = 0.2, "[0, 1]", domain = Domain::float(0.0, 1.0);
        /// probability
        pub p: f64 = 1.0, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(
    FeatureMask,
    MaskOptions,
    "feature_mask",
    "Vectors: each feature zeroed with probability `rate` (per sample with probability p)",
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

options! {
    pub struct SimclrOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// smallest crop area fraction
        pub min_scale: f64 = 0.08, "(0, 1]", domain = Domain::float(0.08, 1.0);
        /// horizontal flip probability
        pub flip: f64 = 0.5, "[0, 1]", domain = Domain::float(0.0, 1.0);
        /// colour jitter strength s
        pub jitter_strength: f64 = 1.0, ">= 0", domain = Domain::float(0.0, 1.5);
        /// colour jitter probability
        pub jitter: f64 = 0.8, "[0, 1]", domain = Domain::float(0.0, 1.0);
        /// grayscale probability
        pub grayscale: f64 = 0.2, "[0, 1]", domain = Domain::float(0.0, 1.0);
        /// blur probability (0 for CIFAR-sized images, as in the paper)
        pub blur: f64 = 0.5, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(Simclr, SimclrOptions, "simclr",
    "SimCLR's augmentation (Chen et al. 2020): random resized crop, flip 0.5, colour jitter (0.8 s, 0.8 s, 0.8 s, 0.2 s) with p 0.8, grayscale 0.2, Gaussian blur 0.5 (σ 0.1–2)",
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

options! {
    pub struct ByolOptions {
        /// image channels
        pub channels: usize = 3, "1 or 3", domain = Domain::choice([1, 3]);
        /// image height and width
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// which of the two asymmetric views
        pub view: u32 = 1, "1 or 2", domain = Domain::choice([1, 2]);
        /// smallest crop area fraction
        pub min_scale: f64 = 0.08, "(0, 1]", domain = Domain::float(0.08, 1.0);
    }
}
pipeline!(Byol, ByolOptions, "byol",
    "BYOL's asymmetric augmentation (Grill et al. 2020, table 6): crop, flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2; blur 1.0 / 0.1 and solarize 0 / 0.2 for view 1 / 2",
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

options! {
    pub struct DigitsOptions {
        /// image height and width (one channel)
        pub size: usize = 8, "integer >= 1", domain = Domain::int(4, 8);
        /// smallest crop area fraction
        pub min_scale: f64 = 0.5, "(0, 1]", domain = Domain::float(0.1, 1.0);
        /// brightness / contrast jitter probability
        pub jitter: f64 = 0.8, "[0, 1]", domain = Domain::float(0.0, 1.0);
    }
}
pipeline!(Digits, DigitsOptions, "digits",
    "A mild set for small single-channel digits: crop (area ≥ min_scale, ratio 0.8–1.25), brightness / contrast jitter 0.4 with p `jitter`; no flips (digits are not mirror-symmetric)",
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
