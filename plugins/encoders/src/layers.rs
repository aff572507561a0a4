//! Networks as lists of layers. One description serves three purposes: the parameter list
//! (names, shapes, PyTorch's default initialisation), the device forward (host ops), and the
//! CPU reference (`reference.rs`, f64 loops written from each layer's formula).

use crate::reference as r;
use vkgrad_plugin::{Array, HostTensor, Init, Output, ParamSpec, Pass};

/// Batch norm's defaults (PyTorch): eps inside the square root, running-average momentum.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Relu,
    Tanh,
    Sigmoid,
}

impl Act {
    pub fn parse(name: &str, what: &str) -> Result<Act, String> {
        match name {
            "relu" => Ok(Act::Relu),
            "tanh" => Ok(Act::Tanh),
            "sigmoid" => Ok(Act::Sigmoid),
            _ => Err(format!(
                "{what}: activation must be \"relu\", \"tanh\" or \"sigmoid\", got {name:?}"
            )),
        }
    }
    fn apply<'h>(self, x: &HostTensor<'h>) -> Result<HostTensor<'h>, String> {
        match self {
            Act::Relu => x.relu(),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => x.sigmoid(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Layer {
    /// y = x W + b, W: [in, out] (bias optional).
    Linear {
        inp: usize,
        out: usize,
        bias: bool,
    },
    /// Square kernel k, zero padding, NCHW; weight [out, in, k, k] (bias optional).
    Conv {
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    },
    /// Batch norm over the channel axis 1 of [B, C] or [B, C, H, W].
    BatchNorm {
        c: usize,
    },
    Act(Act),
    /// k x k max pooling with stride k.
    MaxPool {
        k: usize,
    },
    /// Mean over H, W: [B, C, H, W] -> [B, C].
    GlobalAvgPool,
    /// [B, C, H, W] -> [B, C·H·W] (row-major, as torch.flatten(x, 1)).
    Flatten,
    /// relu(main(x) + shortcut(x)), shortcut empty = identity (ResNet's basic block).
    Residual {
        main: Vec<Layer>,
        shortcut: Vec<Layer>,
    },
}

/// PyTorch's default for Linear and Conv2d weights and biases: kaiming_uniform(a = sqrt(5)),
/// which is uniform on ±1/sqrt(fan_in).
fn fan_in_uniform(fan_in: usize) -> Init {
    Init::Uniform {
        bound: 1.0 / (fan_in as f64).sqrt(),
    }
}

/// The parameters of `layers`, named `prefix{index}.{name}` (nested blocks extend the prefix).
pub fn params(layers: &[Layer], prefix: &str, out: &mut Vec<ParamSpec>) {
    for (i, l) in layers.iter().enumerate() {
        let p = |n: &str| format!("{prefix}{i}.{n}");
        match *l {
            Layer::Linear { inp, out: o, bias } => {
                out.push(ParamSpec::new(
                    p("weight"),
                    vec![inp, o],
                    fan_in_uniform(inp),
                ));
                if bias {
                    out.push(ParamSpec::new(p("bias"), vec![o], fan_in_uniform(inp)));
                }
            }
            Layer::Conv {
                inp,
                out: o,
                k,
                bias,
                ..
            } => {
                let fan = inp * k * k;
                out.push(ParamSpec::new(
                    p("weight"),
                    vec![o, inp, k, k],
                    fan_in_uniform(fan),
                ));
                if bias {
                    out.push(ParamSpec::new(p("bias"), vec![o], fan_in_uniform(fan)));
                }
            }
            Layer::BatchNorm { c } => {
                out.push(ParamSpec::new(
                    p("weight"),
                    vec![c],
                    Init::Constant { value: 1.0 },
                ));
                out.push(ParamSpec::new(
                    p("bias"),
                    vec![c],
                    Init::Constant { value: 0.0 },
                ));
                out.push(ParamSpec::buffer(p("running_mean"), vec![c], 0.0));
                out.push(ParamSpec::buffer(p("running_var"), vec![c], 1.0));
            }
            Layer::Residual {
                ref main,
                ref shortcut,
            } => {
                params(main, &format!("{prefix}{i}.main."), out);
                params(shortcut, &format!("{prefix}{i}.shortcut."), out);
            }
            Layer::Act(_) | Layer::MaxPool { .. } | Layer::GlobalAvgPool | Layer::Flatten => {}
        }
    }
}

/// The next parameter.
fn take<'a, P>(p: &'a [P], next: &mut usize) -> Result<&'a P, String> {
    let t = p
        .get(*next)
        .ok_or("fewer parameters than the layers need")?;
    *next += 1;
    Ok(t)
}

/// Device forward of `layers` from parameter `*next` on.
pub fn forward<'h>(
    layers: &[Layer],
    mut x: HostTensor<'h>,
    p: &[HostTensor<'h>],
    next: &mut usize,
    pass: &mut Pass<'h>,
) -> Result<HostTensor<'h>, String> {
    let take = |next: &mut usize| take(p, next);
    for l in layers {
        x = match *l {
            Layer::Linear { bias, .. } => {
                let y = x.matmul(take(next)?)?;
                if bias {
                    y.add(take(next)?)?
                } else {
                    y
                }
            }
            Layer::Conv {
                stride, pad, bias, ..
            } => {
                let w = take(next)?;
                let b = if bias { Some(take(next)?) } else { None };
                x.conv2d(w, b, stride, pad, 1)?
            }
            Layer::BatchNorm { c } => {
                let (g, b, rm, rv) = (take(next)?, take(next)?, take(next)?, take(next)?);
                batch_norm(&x, c, [g, b, rm, rv], pass)?
            }
            Layer::Act(a) => a.apply(&x)?,
            Layer::MaxPool { k } => x.max_pool2d(k, None, 0, 1)?,
            Layer::GlobalAvgPool => x.global_avg_pool()?,
            Layer::Flatten => {
                let shape = x.shape()?;
                let rest: usize = shape[1..].iter().product();
                x.reshape(&[shape[0], rest])?
            }
            Layer::Residual {
                ref main,
                ref shortcut,
            } => {
                let copy = x.reshape(&x.shape()?)?;
                let m = forward(main, copy, p, next, pass)?;
                let s = forward(shortcut, x, p, next, pass)?;
                let sum = m.add(&s)?;
                sum.relu()?
            }
        };
    }
    Ok(x)
}

/// Batch norm on the device: batch statistics in training (and the running averages handed
/// to `pass`), running statistics in evaluation.
fn batch_norm<'h>(
    x: &HostTensor<'h>,
    c: usize,
    [g, b, rm, rv]: [&HostTensor<'h>; 4],
    pass: &mut Pass<'h>,
) -> Result<HostTensor<'h>, String> {
    let shape = x.shape()?;
    if shape.len() < 2 || shape[1] != c {
        return Err(format!("batch_norm: expects [B, {c}, ...], got {shape:?}"));
    }
    // Statistics are per channel: view as [B, C, rest] and reduce over axes 0 and 2.
    let b_sz = shape[0];
    let rest: usize = shape[2..].iter().product();
    let x3 = x.reshape(&[b_sz, c, rest])?;
    let per_channel = |t: &HostTensor<'h>| -> Result<HostTensor<'h>, String> {
        let m = t.mean_axis(2, true)?;
        m.mean_axis(0, true)
    };
    let bc = |t: &HostTensor<'h>| t.reshape(&[1, c, 1]);
    let (centred, var) = if pass.training {
        let count = b_sz * rest;
        if count < 2 {
            return Err(format!(
                "batch_norm: training needs more than one value per channel, got input {shape:?}"
            ));
        }
        // Data-parallel runs share the statistics of the global batch (host op
        // `replica_sum`, ABI 1.5: the sum over the ranks that share batch statistics, the
        // identity in one process). k: how many ranks share them; every rank holds `count`
        // values per channel, so the global mean is the sum of the ranks' means over k. In
        // one process k = 1 and every division by it is exact: the same bits as before.
        let host = x.host();
        let k = host.tensor(&[1.0], &[1])?.replica_sum()?;
        let global =
            |t: HostTensor<'h>| -> Result<HostTensor<'h>, String> { t.replica_sum()?.div(&k) };
        // Shifted data: the statistics of x − s, s = each channel's first value (detached;
        // batch norm does not depend on it; the ranks' mean of theirs, so every rank shifts
        // alike). x − s is exact for a constant column (the output is then exactly β, as in
        // f64) and, by Sterbenz's lemma, for values within a factor two of s, so a column of
        // large values with a small spread keeps its digits — a plain sum over such a column
        // rounds at ulp(mean) before the spread is taken.
        let s = global(x3.narrow(0, 0, 1)?.narrow(2, 0, 1)?.detach()?)?;
        let xs = x3.sub(&s)?;
        let mean_s = global(per_channel(&xs)?)?;
        let d = xs.sub(&mean_s)?;
        let sq = d.mul(&d)?;
        let var = global(per_channel(&sq)?)?;
        // Running averages (no gradient); the variance is the unbiased one over the global
        // count n = k·count, as in PyTorch's SyncBatchNorm.
        let flat = |t: &HostTensor<'h>| -> Result<HostTensor<'h>, String> {
            let t = t.detach()?;
            t.reshape(&[c])
        };
        let blend = |old: &HostTensor<'h>, new: HostTensor<'h>, scale: &HostTensor<'h>| {
            let new = new.mul(scale)?;
            let old = old.mul_scalar(1.0 - BN_MOMENTUM)?;
            old.add(&new)
        };
        // momentum · n/(n − 1): for k = 1 the f32 of the f64 product, exactly the scalar used
        // before data parallelism (so one process keeps its bits); else computed in f32.
        let one = host.tensor(&[BN_MOMENTUM as f32], &[1])?;
        let single = host.tensor(
            &[(BN_MOMENTUM * count as f64 / (count - 1) as f64) as f32],
            &[1],
        )?;
        let n = k.mul_scalar(count as f64)?;
        let many = n.div(&n.sub_scalar(1.0)?)?.mul_scalar(BN_MOMENTUM)?;
        let unbiased = HostTensor::where_(&k.eq_scalar(1.0)?, &single, &many)?;
        pass.update(blend(rm, flat(&mean_s.add(&s)?)?, &one)?);
        pass.update(blend(rv, flat(&var)?, &unbiased)?);
        (d, var)
    } else {
        (x3.sub(&bc(rm)?)?, bc(rv)?)
    };
    // y = (x − mean) a + β with a = γ / sqrt(var + ε) per channel. (x a + (β − mean a) would
    // save a pass but cancels: at a mean of 1e4 and a spread of 1, x a rounds at 1e-3 of
    // the output.)
    let a = var.add_scalar(BN_EPS)?.rsqrt()?.mul(&bc(g)?)?;
    let y = centred.mul(&a)?.add(&bc(b)?)?;
    y.reshape(&shape)
}

/// The CPU reference of `layers`, from parameter `*next` on.
pub fn reference(
    layers: &[Layer],
    mut x: r::T,
    p: &[Array],
    next: &mut usize,
    training: bool,
) -> Result<r::T, String> {
    let take = |next: &mut usize| take(p, next).map(r::T::of);
    for l in layers {
        x = match *l {
            Layer::Linear { bias, .. } => {
                let w = take(next)?;
                let b = if bias { Some(take(next)?) } else { None };
                r::linear(&x, &w, b.as_ref())
            }
            Layer::Conv {
                stride, pad, bias, ..
            } => {
                let w = take(next)?;
                let b = if bias { Some(take(next)?) } else { None };
                r::conv2d(&x, &w, b.as_ref(), stride, pad)
            }
            Layer::BatchNorm { .. } => {
                let (g, b, rm, rv) = (take(next)?, take(next)?, take(next)?, take(next)?);
                r::batch_norm(&x, &g, &b, &rm, &rv, training, BN_EPS)?
            }
            Layer::Act(a) => r::map(&x, |v| match a {
                Act::Relu => v.max(0.0),
                Act::Tanh => v.tanh(),
                Act::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            }),
            Layer::MaxPool { k } => r::max_pool(&x, k),
            Layer::GlobalAvgPool => r::global_avg_pool(&x),
            Layer::Flatten => r::flatten(x),
            Layer::Residual {
                ref main,
                ref shortcut,
            } => {
                let m = reference(main, x.clone(), p, next, training)?;
                let s = reference(shortcut, x, p, next, training)?;
                r::map(&r::zip(&m, &s, |a, b| a + b), |v| v.max(0.0))
            }
        };
    }
    Ok(x)
}

pub fn to_output(t: r::T) -> Output {
    Output {
        data: t.data,
        dims: t.dims,
    }
}
