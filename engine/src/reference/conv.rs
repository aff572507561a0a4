//! Reference image ops in f64, written from their definitions as direct loops over output
//! pixels and kernel taps (no im2col, no shared index helper with the device path), with their
//! vector-Jacobian products derived by hand.

// Index loops mirror the subscripts of the formulas.
#![allow(clippy::needless_range_loop)]

use super::RefTensor;

/// Window geometry as (h, w) pairs: kernel, stride, padding, dilation.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Geometry {
    pub fn out(&self, h: usize, w: usize) -> [usize; 2] {
        let o = |i: usize, s: usize| {
            (s + 2 * self.padding[i] - self.dilation[i] * (self.kernel[i] - 1) - 1) / self.stride[i]
                + 1
        };
        [o(0, h), o(1, w)]
    }
    /// Input coordinate of tap (ki, kj) of output (oy, ox), or None where it falls in padding.
    fn at(
        &self,
        oy: usize,
        ox: usize,
        ki: usize,
        kj: usize,
        h: usize,
        w: usize,
    ) -> Option<(usize, usize)> {
        let y = (oy * self.stride[0] + ki * self.dilation[0]) as isize - self.padding[0] as isize;
        let x = (ox * self.stride[1] + kj * self.dilation[1]) as isize - self.padding[1] as isize;
        (y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w)
            .then_some((y as usize, x as usize))
    }
}

fn idx4(s: &[usize], a: usize, b: usize, c: usize, d: usize) -> usize {
    ((a * s[1] + b) * s[2] + c) * s[3] + d
}

/// y[n, o, i, j] = b[o] + sum_{c, ki, kj} w[o, c, ki, kj] x[n, c, i*s + ki*d - p, j*s + kj*d - p].
/// Returns (y, scale) with scale = the sum of |terms| per output (its rounding scale).
pub fn conv2d(
    x: &RefTensor,
    w: &RefTensor,
    b: Option<&RefTensor>,
    g: &Geometry,
) -> (RefTensor, RefTensor) {
    let (xs, ws) = (&x.shape, &w.shape);
    let (n, c, h, wd, o) = (xs[0], xs[1], xs[2], xs[3], ws[0]);
    let [oh, ow] = g.out(h, wd);
    let shape = [n, o, oh, ow];
    let mut y = RefTensor::zeros(&shape);
    let mut scale = RefTensor::zeros(&shape);
    for bn in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.data[oc]);
                    let mut mag = acc.abs();
                    for ic in 0..c {
                        for ki in 0..g.kernel[0] {
                            for kj in 0..g.kernel[1] {
                                if let Some((yy, xx)) = g.at(i, j, ki, kj, h, wd) {
                                    let t = w.data[idx4(ws, oc, ic, ki, kj)]
                                        * x.data[idx4(xs, bn, ic, yy, xx)];
                                    acc += t;
                                    mag += t.abs();
                                }
                            }
                        }
                    }
                    let k = idx4(&shape, bn, oc, i, j);
                    y.data[k] = acc;
                    scale.data[k] = mag;
                }
            }
        }
    }
    (y, scale)
}

/// (dx, dw, db) of conv2d for upstream gradient `gy`: dx and dw by the chain rule on each term
/// w * x, db the sum of gy over batch and pixels.
pub fn conv2d_vjp(
    x: &RefTensor,
    w: &RefTensor,
    g: &Geometry,
    gy: &RefTensor,
) -> (RefTensor, RefTensor, RefTensor) {
    let (xs, ws) = (&x.shape, &w.shape);
    let (n, c, h, wd, o) = (xs[0], xs[1], xs[2], xs[3], ws[0]);
    let [oh, ow] = g.out(h, wd);
    let mut dx = RefTensor::zeros(xs);
    let mut dw = RefTensor::zeros(ws);
    let mut db = RefTensor::zeros(&[o]);
    for bn in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let gv = gy.data[idx4(&gy.shape, bn, oc, i, j)];
                    db.data[oc] += gv;
                    for ic in 0..c {
                        for ki in 0..g.kernel[0] {
                            for kj in 0..g.kernel[1] {
                                if let Some((yy, xx)) = g.at(i, j, ki, kj, h, wd) {
                                    let (xi, wi) =
                                        (idx4(xs, bn, ic, yy, xx), idx4(ws, oc, ic, ki, kj));
                                    dx.data[xi] += gv * w.data[wi];
                                    dw.data[wi] += gv * x.data[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw, db)
}

/// Max or average pooling per channel (average counts padding taps as zeros).
pub fn pool2d(x: &RefTensor, g: &Geometry, max: bool) -> RefTensor {
    let xs = &x.shape;
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let [oh, ow] = g.out(h, w);
    let shape = [n, c, oh, ow];
    let mut y = RefTensor::zeros(&shape);
    let taps = (g.kernel[0] * g.kernel[1]) as f64;
    for bn in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let vals: Vec<f64> = window(g, i, j, h, w)
                        .map(|(yy, xx)| x.data[idx4(xs, bn, ch, yy, xx)])
                        .collect();
                    y.data[idx4(&shape, bn, ch, i, j)] = if max {
                        vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                    } else {
                        vals.iter().sum::<f64>() / taps
                    };
                }
            }
        }
    }
    y
}

fn window(
    g: &Geometry,
    i: usize,
    j: usize,
    h: usize,
    w: usize,
) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..g.kernel[0])
        .flat_map(move |ki| (0..g.kernel[1]).filter_map(move |kj| g.at(i, j, ki, kj, h, w)))
}

/// VJP of pool2d: average spreads g/taps over the in-image taps; max shares g evenly among
/// the taps equal to the maximum.
pub fn pool2d_vjp(x: &RefTensor, g: &Geometry, max: bool, gy: &RefTensor) -> RefTensor {
    let xs = &x.shape;
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let [oh, ow] = g.out(h, w);
    let mut dx = RefTensor::zeros(xs);
    let taps = (g.kernel[0] * g.kernel[1]) as f64;
    for bn in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let gv = gy.data[idx4(&gy.shape, bn, ch, i, j)];
                    let pos: Vec<usize> = window(g, i, j, h, w)
                        .map(|(yy, xx)| idx4(xs, bn, ch, yy, xx))
                        .collect();
                    if max {
                        let m = pos
                            .iter()
                            .map(|&p| x.data[p])
                            .fold(f64::NEG_INFINITY, f64::max);
                        let ties: Vec<usize> =
                            pos.into_iter().filter(|&p| x.data[p] == m).collect();
                        for &p in &ties {
                            dx.data[p] += gv / ties.len() as f64;
                        }
                    } else {
                        for p in pos {
                            dx.data[p] += gv / taps;
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Bilinear sampling through per-sample affine maps, align_corners = false: the output pixel
/// centre (normalised to [-1, 1]) maps through theta[n] to an input point, which takes the
/// distance-weighted mix of its four neighbouring pixels; neighbours outside the image read 0
/// (or, with `border`, the point is clamped into the image first).
pub fn resample_affine(
    x: &RefTensor,
    theta: &RefTensor,
    out: [usize; 2],
    border: bool,
) -> RefTensor {
    let xs = &x.shape;
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let shape = [n, c, out[0], out[1]];
    let mut y = RefTensor::zeros(&shape);
    for bn in 0..n {
        let t = &theta.data[bn * 6..bn * 6 + 6];
        for i in 0..out[0] {
            for j in 0..out[1] {
                let xn = (2.0 * j as f64 + 1.0) / out[1] as f64 - 1.0;
                let yn = (2.0 * i as f64 + 1.0) / out[0] as f64 - 1.0;
                let sx = t[0] * xn + t[1] * yn + t[2];
                let sy = t[3] * xn + t[4] * yn + t[5];
                let mut px = ((sx + 1.0) * w as f64 - 1.0) / 2.0;
                let mut py = ((sy + 1.0) * h as f64 - 1.0) / 2.0;
                if border {
                    px = px.clamp(0.0, (w - 1) as f64);
                    py = py.clamp(0.0, (h - 1) as f64);
                }
                let (x0, y0) = (px.floor(), py.floor());
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (dy, dx) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
                        let (yy, xx) = (y0 + dy, x0 + dx);
                        let weight = (1.0 - (py - yy).abs()) * (1.0 - (px - xx).abs());
                        if yy >= 0.0 && xx >= 0.0 && yy < h as f64 && xx < w as f64 {
                            acc += weight * x.data[idx4(xs, bn, ch, yy as usize, xx as usize)];
                        }
                    }
                    y.data[idx4(&shape, bn, ch, i, j)] = acc;
                }
            }
        }
    }
    y
}
