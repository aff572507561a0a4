//! The transforms, each applied per sample with probability `p` and drawing its parameters
//! from the stream at its own offsets. `device` composes host ops; `reference` computes the
//! same from the same draws in f64, as loops over the formulas.

// Index loops mirror the subscripts of the matrix formulas.
#![allow(clippy::needless_range_loop)]

/// Draws per transform: transform i of a pipeline uses stream offsets 8 i .. 8 i + 7.
pub const OFFSETS: u32 = 8;

/// Rec. 601 luma, as torchvision's rgb_to_grayscale.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Random resized crop to `out` x `out`: area fraction in `scale`, aspect ratio (w / h)
    /// log-uniform in `ratio`, position uniform where the box fits; bilinear resampling.
    Crop {
        scale: [f64; 2],
        ratio: [f64; 2],
        out: usize,
    },
    HFlip,
    /// ColorJitter: brightness, contrast, saturation, hue strengths (in this order).
    Jitter {
        brightness: f64,
        contrast: f64,
        saturation: f64,
        hue: f64,
    },
    Grayscale,
    /// Gaussian blur, odd kernel size, σ uniform in `sigma`, reflect padding.
    Blur {
        kernel: usize,
        sigma: [f64; 2],
    },
    Solarize {
        threshold: f64,
    },
    /// x + σ ε, ε ~ N(0, 1) per element.
    Noise {
        sigma: f64,
    },
    /// Each feature zeroed with probability `rate`.
    Mask {
        rate: f64,
    },
}

/// A transform and the probability it is applied to a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub t: Transform,
    pub p: f64,
}

impl Transform {
    /// Checks the parameters against the input shape ([C, H, W] for images, [D] for vectors).
    pub fn check(&self, shape: &[usize]) -> Result<(), String> {
        let image = shape.len() == 3;
        let unit = |what: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{what} must be in [0, 1], got {v}"))
            }
        };
        match self {
            Transform::Crop { scale, ratio, out } => {
                if !(0.0 < scale[0] && scale[0] <= scale[1] && scale[1] <= 1.0) {
                    return Err(format!(
                        "crop scale must satisfy 0 < min <= max <= 1, got {scale:?}"
                    ));
                }
                if !(0.0 < ratio[0] && ratio[0] <= ratio[1] && ratio[1].is_finite()) {
                    return Err(format!(
                        "crop ratio must satisfy 0 < min <= max, got {ratio:?}"
                    ));
                }
                if *out == 0 {
                    return Err("crop output size must be >= 1".into());
                }
            }
            Transform::Jitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => {
                for (n, v) in [
                    ("brightness", brightness),
                    ("contrast", contrast),
                    ("saturation", saturation),
                ] {
                    if !(v.is_finite() && *v >= 0.0) {
                        return Err(format!("{n} must be >= 0, got {v}"));
                    }
                }
                if !(0.0..=0.5).contains(hue) {
                    return Err(format!("hue must be in [0, 0.5], got {hue}"));
                }
            }
            Transform::Blur { kernel, sigma } => {
                if kernel % 2 == 0 {
                    return Err(format!("blur kernel must be odd, got {kernel}"));
                }
                if image && kernel / 2 >= shape[1].min(shape[2]) {
                    return Err(format!(
                        "blur kernel {kernel} is too large for {}x{} images (reflect padding)",
                        shape[1], shape[2]
                    ));
                }
                if !(0.0 < sigma[0] && sigma[0] <= sigma[1] && sigma[1].is_finite()) {
                    return Err(format!(
                        "blur sigma must satisfy 0 < min <= max, got {sigma:?}"
                    ));
                }
            }
            Transform::Solarize { threshold } => unit("solarize threshold", *threshold)?,
            Transform::Noise { sigma } => {
                if !(sigma.is_finite() && *sigma >= 0.0) {
                    return Err(format!("noise sigma must be >= 0, got {sigma}"));
                }
            }
            Transform::Mask { rate } => unit("mask rate", *rate)?,
            Transform::HFlip | Transform::Grayscale => {}
        }
        let needs_image = !matches!(self, Transform::Noise { .. } | Transform::Mask { .. });
        if needs_image && !image {
            return Err(format!(
                "{self:?} needs images [C, H, W], got sample shape {shape:?}"
            ));
        }
        Ok(())
    }

    /// Output sample shape for an input sample shape.
    pub fn out_shape(&self, shape: &[usize]) -> Vec<usize> {
        match self {
            Transform::Crop { out, .. } => vec![shape[0], *out, *out],
            _ => shape.to_vec(),
        }
    }
}

/// Validates a pipeline; returns its output sample shape.
pub fn check_steps(steps: &[Step], shape: &[usize]) -> Result<Vec<usize>, String> {
    let mut s = shape.to_vec();
    for st in steps {
        if !(0.0..=1.0).contains(&st.p) {
            return Err(format!(
                "probability must be in [0, 1], got {} for {:?}",
                st.p, st.t
            ));
        }
        st.t.check(&s)?;
        s = st.t.out_shape(&s);
    }
    Ok(s)
}

/// The hue rotation's matrices: RGB → YIQ, rotate (I, Q) by θ, back; M(θ) = A + cos θ B +
/// sin θ C with A the luma part and B, C the chroma rotation's cosine and sine parts.
pub fn hue_matrices() -> [[[f64; 3]; 3]; 3] {
    let t = [
        [0.299, 0.587, 0.114],
        [0.596, -0.274, -0.322],
        [0.211, -0.523, 0.312],
    ];
    let ti = inverse(&t); // exact in f64, so θ = 0 gives the identity up to rounding
    let mut out = [[[0.0; 3]; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[0][i][j] = ti[i][0] * t[0][j];
            out[1][i][j] = ti[i][1] * t[1][j] + ti[i][2] * t[2][j];
            // Rotation (I, Q) -> (I cos - Q sin, I sin + Q cos): the sine part.
            out[2][i][j] = -ti[i][1] * t[2][j] + ti[i][2] * t[1][j];
        }
    }
    out
}

/// torchvision's reflect padding index for a tap at `i` in a row of `n`.
pub fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r.clamp(0, n - 1) as usize
}

fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c = |r: usize, k: usize| {
        let (r1, r2, k1, k2) = ((r + 1) % 3, (r + 2) % 3, (k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    let det: f64 = (0..3).map(|k| m[0][k] * c(0, k)).sum();
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = c(j, i) / det;
        }
    }
    out
}
