//! The transforms' CPU reference: the same draws from the same stream, each transform written
//! as loops over its formula in f64.

#![allow(clippy::needless_range_loop)]

use crate::transforms::{hue_matrices, reflect, Step, Transform, LUMA, OFFSETS};
use vkgrad_plugin::Stream;

/// A batch [N, ...sample] in f64.
#[derive(Debug, Clone)]
pub struct Batch {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

pub fn apply(x: &Batch, stream: Stream, steps: &[Step]) -> Batch {
    let mut y = x.clone();
    for (i, st) in steps.iter().enumerate() {
        let base = i as u32 * OFFSETS;
        if st.p <= 0.0 {
            continue;
        }
        let t = transform(&y, stream, &st.t, base);
        y = if st.p >= 1.0 {
            t
        } else {
            let n = y.dims[0];
            let per = y.data.len() / n.max(1);
            let mut out = y.clone();
            for s in 0..n {
                if stream.uniform_at(base + 7, s as u32, 0.0, 1.0) < st.p {
                    out.data[s * per..(s + 1) * per]
                        .copy_from_slice(&t.data[s * per..(s + 1) * per]);
                }
            }
            out
        };
    }
    y
}

fn clamp01(v: f64) -> f64 {
    v.clamp(0.0, 1.0)
}

fn transform(x: &Batch, stream: Stream, t: &Transform, base: u32) -> Batch {
    let u = |off: u32, s: usize, lo: f64, hi: f64| stream.uniform_at(base + off, s as u32, lo, hi);
    let mut y = x.clone();
    match *t {
        Transform::Crop { scale, ratio, out } => {
            let (n, c, h, w) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
            y = Batch {
                dims: vec![n, c, out, out],
                data: vec![0.0; n * c * out * out],
            };
            for s in 0..n {
                let area = u(0, s, scale[0], scale[1]);
                let r = u(1, s, ratio[0].ln(), ratio[1].ln()).exp();
                let bw = (area * r).sqrt().min(1.0);
                let bh = (area / r).sqrt().min(1.0);
                // The box [x0, x0 + bw] x [y0, y0 + bh] in [0, 1] coordinates, stretched to the
                // output; sample at output pixel centres, bilinear, clamped at the border.
                let x0 = u(2, s, 0.0, 1.0) * (1.0 - bw);
                let y0 = u(3, s, 0.0, 1.0) * (1.0 - bh);
                for i in 0..out {
                    for j in 0..out {
                        let fx = x0 + bw * (j as f64 + 0.5) / out as f64;
                        let fy = y0 + bh * (i as f64 + 0.5) / out as f64;
                        let px = (fx * w as f64 - 0.5).clamp(0.0, (w - 1) as f64);
                        let py = (fy * h as f64 - 0.5).clamp(0.0, (h - 1) as f64);
                        let (xa, ya) = (px.floor() as usize, py.floor() as usize);
                        let (xb, yb) = ((xa + 1).min(w - 1), (ya + 1).min(h - 1));
                        let (ax, ay) = (px - xa as f64, py - ya as f64);
                        for ch in 0..c {
                            let at =
                                |yy: usize, xx: usize| x.data[((s * c + ch) * h + yy) * w + xx];
                            let v = (1.0 - ay) * ((1.0 - ax) * at(ya, xa) + ax * at(ya, xb))
                                + ay * ((1.0 - ax) * at(yb, xa) + ax * at(yb, xb));
                            y.data[((s * c + ch) * out + i) * out + j] = v;
                        }
                    }
                }
            }
        }
        Transform::HFlip => {
            let w = x.dims[3];
            for row in 0..x.data.len() / w {
                for j in 0..w {
                    y.data[row * w + j] = x.data[row * w + w - 1 - j];
                }
            }
        }
        Transform::Jitter {
            brightness,
            contrast,
            saturation,
            hue,
        } => {
            let (n, c, h, w) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
            let hw = h * w;
            for s in 0..n {
                let img = &mut y.data[s * c * hw..(s + 1) * c * hw];
                let gray = |img: &[f64], k: usize| {
                    if c == 1 {
                        img[k]
                    } else {
                        (0..3).map(|ch| LUMA[ch] * img[ch * hw + k]).sum()
                    }
                };
                if brightness > 0.0 {
                    let b = u(0, s, (1.0 - brightness).max(0.0), 1.0 + brightness);
                    img.iter_mut().for_each(|v| *v = clamp01(*v * b));
                }
                if contrast > 0.0 {
                    let f = u(1, s, (1.0 - contrast).max(0.0), 1.0 + contrast);
                    let mean = (0..hw).map(|k| gray(img, k)).sum::<f64>() / hw as f64;
                    img.iter_mut()
                        .for_each(|v| *v = clamp01(f * *v + (1.0 - f) * mean));
                }
                if c == 3 && saturation > 0.0 {
                    let f = u(2, s, (1.0 - saturation).max(0.0), 1.0 + saturation);
                    let g: Vec<f64> = (0..hw).map(|k| gray(img, k)).collect();
                    for ch in 0..3 {
                        for k in 0..hw {
                            let v = &mut img[ch * hw + k];
                            *v = clamp01(f * *v + (1.0 - f) * g[k]);
                        }
                    }
                }
                if c == 3 && hue > 0.0 {
                    let tau = std::f64::consts::TAU;
                    let a = u(3, s, -hue * tau, hue * tau);
                    let [ma, mb, mc] = hue_matrices();
                    for k in 0..hw {
                        let px: Vec<f64> = (0..3).map(|ch| img[ch * hw + k]).collect();
                        for i in 0..3 {
                            let v: f64 = (0..3)
                                .map(|j| {
                                    (ma[i][j] + a.cos() * mb[i][j] + a.sin() * mc[i][j]) * px[j]
                                })
                                .sum();
                            img[i * hw + k] = clamp01(v);
                        }
                    }
                }
            }
        }
        Transform::Grayscale => {
            let (n, c, hw) = (x.dims[0], x.dims[1], x.dims[2] * x.dims[3]);
            if c == 3 {
                for s in 0..n {
                    for k in 0..hw {
                        let g: f64 = (0..3)
                            .map(|ch| LUMA[ch] * x.data[(s * 3 + ch) * hw + k])
                            .sum();
                        for ch in 0..3 {
                            y.data[(s * 3 + ch) * hw + k] = g;
                        }
                    }
                }
            }
        }
        Transform::Blur { kernel, sigma } => {
            let (n, c, h, w) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
            let r = (kernel / 2) as isize;
            for s in 0..n {
                let sg = u(0, s, sigma[0], sigma[1]);
                let e: Vec<f64> = (-r..=r)
                    .map(|t| (-0.5 * (t * t) as f64 / (sg * sg)).exp())
                    .collect();
                let total: f64 = e.iter().sum();
                let k: Vec<f64> = e.iter().map(|v| v / total).collect();
                for ch in 0..c {
                    let at = |d: &Vec<f64>, i: usize, j: usize| d[((s * c + ch) * h + i) * w + j];
                    let mut tmp = vec![0.0; h * w];
                    for i in 0..h {
                        for j in 0..w {
                            tmp[i * w + j] = (-r..=r)
                                .zip(&k)
                                .map(|(t, kt)| kt * at(&x.data, i, reflect(j as isize + t, w)))
                                .sum();
                        }
                    }
                    for i in 0..h {
                        for j in 0..w {
                            y.data[((s * c + ch) * h + i) * w + j] = (-r..=r)
                                .zip(&k)
                                .map(|(t, kt)| kt * tmp[reflect(i as isize + t, h) * w + j])
                                .sum();
                        }
                    }
                }
            }
        }
        Transform::Solarize { threshold } => {
            y.data.iter_mut().for_each(|v| {
                if *v >= threshold {
                    *v = 1.0 - *v
                }
            });
        }
        Transform::Noise { sigma } => {
            for (i, v) in y.data.iter_mut().enumerate() {
                *v += stream.normal_at(base, i as u32, 0.0, sigma);
            }
        }
        Transform::Mask { rate } => {
            for (i, v) in y.data.iter_mut().enumerate() {
                if stream.uniform_at(base, i as u32, 0.0, 1.0) < rate {
                    *v = 0.0;
                }
            }
        }
    }
    y
}
