//! The transforms on the device, as host ops over an `[N, ...]` batch.

use crate::transforms::{hue_matrices, reflect, Step, Transform, LUMA, OFFSETS};
use vkgrad_plugin::{Host, HostTensor, Padding, Stream};

type R<'h> = Result<HostTensor<'h>, String>;

struct Ctx<'h> {
    host: &'h Host,
    stream: Stream,
    n: usize,
}

impl<'h> Ctx<'h> {
    fn reshape(&self, x: &HostTensor<'h>, shape: &[usize]) -> R<'h> {
        x.reshape(shape)
    }
    /// One uniform number per sample, shaped [N, 1, ..., 1] to broadcast over a sample of rank
    /// `rank`.
    fn per_sample(&self, offset: u32, lo: f64, hi: f64, rank: usize) -> R<'h> {
        let u = self.stream.uniform(self.host, offset, &[self.n], lo, hi)?;
        let mut shape = vec![self.n];
        shape.extend(std::iter::repeat_n(1, rank));
        self.reshape(&u, &shape)
    }
    fn clamp01(&self, x: &HostTensor<'h>) -> R<'h> {
        let y = x.maximum_scalar(0.0)?;
        y.minimum_scalar(1.0)
    }
    /// a*x + (1-a)*y with a per-sample.
    fn blend(&self, a: &HostTensor<'h>, x: &HostTensor<'h>, y: &HostTensor<'h>) -> R<'h> {
        let d = x.sub(y)?;
        let d = a.mul(&d)?;
        y.add(&d)
    }
    /// Luma per pixel: [N, C, H, W] -> [N, 1, H, W] (C = 1: the image itself).
    fn gray(&self, x: &HostTensor<'h>, shape: &[usize]) -> R<'h> {
        if shape[1] == 1 {
            return self.reshape(x, shape);
        }
        let mut acc: Option<HostTensor<'h>> = None;
        for (c, w) in LUMA.iter().enumerate() {
            let ch = x.narrow(1, c, 1)?;
            let t = ch.mul_scalar(*w)?;
            acc = Some(match acc {
                None => t,
                Some(a) => a.add(&t)?,
            });
        }
        acc.ok_or_else(|| "no channels".to_string())
    }
    fn constant(&self, data: &[f64], dims: &[usize]) -> R<'h> {
        let v: Vec<f32> = data.iter().map(|&d| d as f32).collect();
        self.host.tensor(&v, dims)
    }
}

/// Applies the steps in order; step i draws from offsets 8 i ...
pub fn apply<'h>(host: &'h Host, x: &HostTensor<'h>, stream: Stream, steps: &[Step]) -> R<'h> {
    let shape = x.shape()?;
    let ctx = Ctx {
        host,
        stream,
        n: shape[0],
    };
    let mut y = ctx.reshape(x, &shape)?;
    for (i, st) in steps.iter().enumerate() {
        let base = i as u32 * OFFSETS;
        if st.p <= 0.0 {
            continue; // never applied: no draws needed
        }
        let shape = y.shape()?;
        let t = transform(&ctx, &y, &shape, &st.t, base)?;
        y = if st.p >= 1.0 {
            t
        } else {
            // Applied where the sample's draw u < p.
            let u = ctx.per_sample(base + 7, 0.0, 1.0, shape.len() - 1)?;
            let keep = u.ge_scalar(st.p)?;
            let apply = keep.rsub_scalar(1.0)?;
            if t.shape()? != shape {
                return Err(format!(
                    "{:?} changes the shape; it must always apply (p = 1)",
                    st.t
                ));
            }
            HostTensor::where_(&apply, &t, &y)?
        };
    }
    Ok(y)
}

fn transform<'h>(
    c: &Ctx<'h>,
    x: &HostTensor<'h>,
    shape: &[usize],
    t: &Transform,
    base: u32,
) -> R<'h> {
    let n = c.n;
    match *t {
        Transform::Crop { scale, ratio, out } => {
            let area = c.per_sample(base, scale[0], scale[1], 1)?;
            let logr = c.per_sample(base + 1, ratio[0].ln(), ratio[1].ln(), 1)?;
            let r = logr.exp()?;
            let side = |a: &HostTensor<'h>| -> R<'h> {
                let s = a.sqrt()?;
                s.minimum_scalar(1.0)
            };
            let w = side(&area.mul(&r)?)?;
            let h = side(&area.div(&r)?)?;
            // Centre = u (1 - size) + size / 2, in [0, 1] coordinates; theta's offset 2 c - 1.
            let centre = |size: &HostTensor<'h>, off: u32| -> R<'h> {
                let u = c.per_sample(base + off, 0.0, 1.0, 1)?;
                let room = size.rsub_scalar(1.0)?;
                let pos = u.mul(&room)?;
                let half = size.mul_scalar(0.5)?;
                let cen = pos.add(&half)?;
                let t = cen.mul_scalar(2.0)?;
                t.sub_scalar(1.0)
            };
            let (tx, ty) = (centre(&w, 2)?, centre(&h, 3)?);
            let zero = w.mul_scalar(0.0)?;
            let theta = c.host.concat(&[&w, &zero, &tx, &zero, &h, &ty], 1)?;
            let theta = c.reshape(&theta, &[n, 2, 3])?;
            x.resample_affine(&theta, [out, out], Padding::Border)
        }
        Transform::HFlip => {
            // x · J with J the anti-identity: exact, so flipping twice is the identity.
            let w = shape[3];
            let mut j = vec![0.0; w * w];
            for i in 0..w {
                j[i * w + (w - 1 - i)] = 1.0;
            }
            let jt = c.constant(&j, &[w, w])?;
            let rows = c.reshape(x, &[shape[..3].iter().product(), w])?;
            let y = rows.matmul(&jt)?;
            c.reshape(&y, shape)
        }
        Transform::Jitter {
            brightness,
            contrast,
            saturation,
            hue,
        } => {
            let mut y = c.reshape(x, shape)?;
            let factor =
                |off: u32, s: f64| c.per_sample(base + off, (1.0 - s).max(0.0), 1.0 + s, 3);
            if brightness > 0.0 {
                y = c.clamp01(&y.mul(&factor(0, brightness)?)?)?;
            }
            if contrast > 0.0 {
                // Blend with the mean luma of the image.
                let g = c.gray(&y, shape)?;
                let flat = c.reshape(&g, &[n, shape[2] * shape[3]])?;
                let m = flat.mean_axis(1, false)?;
                let m = c.reshape(&m, &[n, 1, 1, 1])?;
                y = c.clamp01(&c.blend(&factor(1, contrast)?, &y, &m)?)?;
            }
            if shape[1] == 3 && saturation > 0.0 {
                let g = c.gray(&y, shape)?;
                y = c.clamp01(&c.blend(&factor(2, saturation)?, &y, &g)?)?;
            }
            if shape[1] == 3 && hue > 0.0 {
                // Rotation of the chroma plane by 2π h: M = A + cos B + sin C per sample.
                let ang = c.per_sample(
                    base + 3,
                    -hue * std::f64::consts::TAU,
                    hue * std::f64::consts::TAU,
                    2,
                )?;
                let cos = ang.cos()?;
                let sin = ang.sin()?;
                let [a, b, cm] = hue_matrices();
                let flat = |m: [[f64; 3]; 3]| c.constant(&m.concat(), &[1, 3, 3]);
                let mb = cos.mul(&flat(b)?)?;
                let mc = sin.mul(&flat(cm)?)?;
                let m = mb.add(&mc)?.add(&flat(a)?)?;
                let px = c.reshape(&y, &[n, 3, shape[2] * shape[3]])?;
                let r = m.matmul(&px)?;
                y = c.clamp01(&c.reshape(&r, shape)?)?;
            }
            Ok(y)
        }
        Transform::Grayscale => {
            let g = c.gray(x, shape)?;
            if shape[1] == 1 {
                return Ok(g);
            }
            g.expand(shape)
        }
        Transform::Blur { kernel, sigma } => {
            // Per-sample kernel w [N, K] from σ; blur along W then H as products with a banded
            // matrix per sample: B_n = Σ_t w[n, t] S_t, S_t the reflect-padded shift by t.
            let k = kernel;
            let r = (k / 2) as isize;
            let s = c.per_sample(base, sigma[0], sigma[1], 1)?; // [N, 1]
            let taps: Vec<f64> = (-r..=r).map(|t| -0.5 * (t * t) as f64).collect();
            let t2 = c.constant(&taps, &[1, k])?;
            let s2 = s.mul(&s)?;
            let e = (t2.div(&s2)?).exp()?; // [N, K]
            let sum = e.sum_axis(1, true)?;
            let w = e.div(&sum)?;
            let band = |len: usize| -> R<'h> {
                let mut m = vec![0.0; k * len * len];
                for (ti, t) in (-r..=r).enumerate() {
                    for j in 0..len {
                        // out[j] = Σ_t w_t in[reflect(j + t)]: entry (reflect(j+t), j).
                        let src = reflect(j as isize + t, len);
                        m[(ti * len + src) * len + j] += 1.0;
                    }
                }
                let st = c.constant(&m, &[k, len * len])?;
                let b = w.matmul(&st)?;
                c.reshape(&b, &[n, len, len])
            };
            let (ch, h, wd) = (shape[1], shape[2], shape[3]);
            let rows = c.reshape(x, &[n, ch * h, wd])?;
            let y = rows.matmul(&band(wd)?)?; // along W
            let y = c.reshape(&y, &[n, ch, h, wd])?;
            let y = y.permute(&[0, 2, 1, 3])?; // [N, H, C, W]
            let y = c.reshape(&y, &[n, h, ch * wd])?;
            let y = (band(h)?).matmul_t(&y, true, false)?; // along H
            let y = c.reshape(&y, &[n, h, ch, wd])?;
            y.permute(&[0, 2, 1, 3])
        }
        Transform::Solarize { threshold } => {
            let hit = x.ge_scalar(threshold)?;
            let inv = x.rsub_scalar(1.0)?;
            HostTensor::where_(&hit, &inv, x)
        }
        Transform::Noise { sigma } => {
            let e = c.stream.normal(c.host, base, shape, 0.0, sigma)?;
            x.add(&e)
        }
        Transform::Mask { rate } => {
            let u = c.stream.uniform(c.host, base, shape, 0.0, 1.0)?;
            let keep = u.ge_scalar(rate)?;
            x.mul(&keep)
        }
    }
}
