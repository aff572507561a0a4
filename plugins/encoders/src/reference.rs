//! The encoders' CPU reference: each layer in f64, as direct loops over its formula.

#![allow(clippy::needless_range_loop)]

use vkgrad_plugin::Array;

/// A dense row-major f64 tensor.
#[derive(Debug, Clone)]
pub struct T {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

impl T {
    pub fn of(a: &Array) -> T {
        T {
            dims: a.dims.to_vec(),
            data: a.data.to_vec(),
        }
    }
    pub fn zeros(dims: &[usize]) -> T {
        T {
            dims: dims.to_vec(),
            data: vec![0.0; dims.iter().product()],
        }
    }
}

pub fn map(x: &T, f: impl Fn(f64) -> f64) -> T {
    T {
        dims: x.dims.clone(),
        data: x.data.iter().map(|&v| f(v)).collect(),
    }
}

pub fn zip(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> T {
    T {
        dims: a.dims.clone(),
        data: a.data.iter().zip(&b.data).map(|(&p, &q)| f(p, q)).collect(),
    }
}

/// y[n, o] = b[o] + sum_i x[n, i] w[i, o]
pub fn linear(x: &T, w: &T, b: Option<&T>) -> T {
    let (n, i_n, o_n) = (x.dims[0], w.dims[0], w.dims[1]);
    let mut y = T::zeros(&[n, o_n]);
    for r in 0..n {
        for o in 0..o_n {
            let mut acc = b.map_or(0.0, |b| b.data[o]);
            for i in 0..i_n {
                acc += x.data[r * i_n + i] * w.data[i * o_n + o];
            }
            y.data[r * o_n + o] = acc;
        }
    }
    y
}

/// y[n, o, i, j] = b[o] + sum_{c, u, v} w[o, c, u, v] x[n, c, i s + u - p, j s + v - p]
/// (zero outside the image).
pub fn conv2d(x: &T, w: &T, b: Option<&T>, s: usize, p: usize) -> T {
    let (n, c, h, wd) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
    let (o_n, k) = (w.dims[0], w.dims[2]);
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (wd + 2 * p - k) / s + 1;
    let mut y = T::zeros(&[n, o_n, oh, ow]);
    for bn in 0..n {
        for o in 0..o_n {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.data[o]);
                    for ch in 0..c {
                        for u in 0..k {
                            for v in 0..k {
                                let yy = (i * s + u) as isize - p as isize;
                                let xx = (j * s + v) as isize - p as isize;
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < wd {
                                    acc += w.data[((o * c + ch) * k + u) * k + v]
                                        * x.data
                                            [((bn * c + ch) * h + yy as usize) * wd + xx as usize];
                                }
                            }
                        }
                    }
                    y.data[((bn * o_n + o) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    y
}

/// Per channel c (axis 1): (x - mean) / sqrt(var + eps) * g + b, with the batch's mean and
/// biased variance in training, the running ones in evaluation.
pub fn batch_norm(
    x: &T,
    g: &T,
    b: &T,
    rm: &T,
    rv: &T,
    training: bool,
    eps: f64,
) -> Result<T, String> {
    let (n, c) = (x.dims[0], x.dims[1]);
    let rest: usize = x.dims[2..].iter().product();
    if training && n * rest < 2 {
        return Err(format!(
            "batch_norm: training needs more than one value per channel, got input {:?}",
            x.dims
        ));
    }
    let at = |bn: usize, ch: usize, k: usize| (bn * c + ch) * rest + k;
    let mut y = x.clone();
    for ch in 0..c {
        let (mean, var) = if training {
            let vals: Vec<f64> = (0..n)
                .flat_map(|bn| (0..rest).map(move |k| (bn, k)))
                .map(|(bn, k)| x.data[at(bn, ch, k)])
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
            (m, v)
        } else {
            (rm.data[ch], rv.data[ch])
        };
        for bn in 0..n {
            for k in 0..rest {
                let i = at(bn, ch, k);
                y.data[i] = (x.data[i] - mean) / (var + eps).sqrt() * g.data[ch] + b.data[ch];
            }
        }
    }
    Ok(y)
}

/// k x k windows, stride k, no padding: the largest value of each.
pub fn max_pool(x: &T, k: usize) -> T {
    let (n, c, h, w) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
    let (oh, ow) = (h / k, w / k);
    let mut y = T::zeros(&[n, c, oh, ow]);
    for nc in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for u in 0..k {
                    for v in 0..k {
                        m = m.max(x.data[(nc * h + i * k + u) * w + j * k + v]);
                    }
                }
                y.data[(nc * oh + i) * ow + j] = m;
            }
        }
    }
    y
}

pub fn global_avg_pool(x: &T) -> T {
    let (n, c) = (x.dims[0], x.dims[1]);
    let hw: usize = x.dims[2..].iter().product();
    let mut y = T::zeros(&[n, c]);
    for nc in 0..n * c {
        y.data[nc] = x.data[nc * hw..(nc + 1) * hw].iter().sum::<f64>() / hw as f64;
    }
    y
}

/// [B, ...] -> [B, product of the rest]; the data is already in that order.
pub fn flatten(mut x: T) -> T {
    let rest = x.dims[1..].iter().product();
    x.dims = vec![x.dims[0], rest];
    x
}
