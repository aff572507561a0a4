//! Sliding-window ops over NCHW image batches (`shaders/im2col.comp`): `unfold` (im2col) and its
//! adjoint `fold` (col2im), each the other's backward; conv2d and the poolings are built from
//! them and the tiled matmul, so their gradients follow from those two rules.

use super::{alloc_f32, div_magic};
use crate::device::push::{Im2colPush, PoolPush};
use crate::device::{grid, Bind, Kernel};
use crate::error::{Error, Result};
use crate::tensor::{numel, Tensor};

/// The geometry of a sliding window: kernel, stride, zero padding and dilation, as (h, w).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Window {
    /// A square window with stride 1, no padding, no dilation.
    pub fn new(kernel: usize) -> Window {
        Window {
            kernel: [kernel; 2],
            stride: [1; 2],
            padding: [0; 2],
            dilation: [1; 2],
        }
    }
    pub fn stride(mut self, s: usize) -> Window {
        self.stride = [s; 2];
        self
    }
    pub fn padding(mut self, p: usize) -> Window {
        self.padding = [p; 2];
        self
    }
    pub fn dilation(mut self, d: usize) -> Window {
        self.dilation = [d; 2];
        self
    }

    /// Output size along both axes for an `h` x `w` input (PyTorch's formula), or an error
    /// naming the op when the window does not fit.
    pub fn output(&self, op: &'static str, h: usize, w: usize) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for (i, size) in [h, w].into_iter().enumerate() {
            let (k, s, p, d) = (
                self.kernel[i],
                self.stride[i],
                self.padding[i],
                self.dilation[i],
            );
            if k == 0 || s == 0 || d == 0 {
                return Err(Error::op(
                    op,
                    format!("kernel, stride and dilation must be >= 1, got {self:?}"),
                ));
            }
            let span = d * (k - 1) + 1;
            if size + 2 * p < span {
                return Err(Error::op(
                    op,
                    format!("a {k}-wide window (dilation {d}) does not fit input size {size} with padding {p}"),
                ));
            }
            out[i] = (size + 2 * p - span) / s + 1;
        }
        Ok(out)
    }
}

fn nchw(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match shape {
        &[n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::op(
            op,
            format!("expects an NCHW batch [N, C, H, W], got shape {shape:?}"),
        )),
    }
}

/// Runs the im2col kernel: MODE 0 reads an image batch and writes columns (as MODE 2, four at
/// a time, where a row's length allows), MODE 1 the reverse. Rows of the columns are `row`
/// long: C·KH·KW, or padded with zeros past it to a multiple of 4 (conv2d's, for the vec4
/// matmul kernel; `matmul::padded_inner`).
fn im2col(
    mode: u32,
    src: &Tensor,
    image: [usize; 4],
    win: &Window,
    out_hw: [usize; 2],
    (pad, row): (f32, usize),
) -> Result<Tensor> {
    let [n, c, h, w] = image;
    let [oh, ow] = out_hw;
    let kk = win.kernel[0] * win.kernel[1];
    debug_assert!(row == c * kk || (row > c * kk && row.is_multiple_of(4)));
    let out_shape: Vec<usize> = if mode == 0 {
        vec![n, oh * ow, row]
    } else {
        image.to_vec()
    };
    let st = alloc_f32(&out_shape)?;
    let count = numel(&out_shape);
    if count > 0 {
        let ctx = Tensor::ctx()?;
        ctx.check_loop("unfold", kk, || format!("{kk}-tap window"))?;
        // unfold: one invocation per (sample, window, channel), or per four entries of a row
        // when its length is a multiple of 4 (mode 2); fold: one per pixel.
        let mode = if mode == 0 && row.is_multiple_of(4) {
            2
        } else {
            mode
        };
        let invocations = match mode {
            0 => count / kk,
            2 => count / 4,
            _ => count,
        };
        let u = |v: usize| v as u32;
        let push = Im2colPush {
            n: u(n),
            c: u(c),
            h: u(h),
            w: u(w),
            oh: u(oh),
            ow: u(ow),
            sh: u(win.stride[0]),
            sw: u(win.stride[1]),
            ph: u(win.padding[0]),
            pw: u(win.padding[1]),
            dh: u(win.dilation[0]),
            dw: u(win.dilation[1]),
            pad,
            row: u(row),
            m_row4: div_magic(row / 4),
            m_l: div_magic(oh * ow),
            m_ow: div_magic(ow),
        };
        let undilated = win.dilation == [1, 1];
        ctx.dispatch(
            Kernel::Im2col,
            &[mode, u(win.kernel[0]), u(win.kernel[1]), undilated as u32],
            &[Bind::texels(src.storage()?), Bind::write(&st)],
            &push,
            grid(invocations as u64, 256),
        )?;
    }
    Ok(Tensor::leaf(out_shape.into(), st))
}

/// Runs the max-pooling kernel: MODE 0 the pooled `[N, C, OH, OW]` of `x`, MODE 1 the gradient
/// of `x` (`[N, C, H, W]`) given the output's gradient `g`.
fn pool_kernel(
    mode: u32,
    x: &Tensor,
    g: Option<&Tensor>,
    image: [usize; 4],
    win: &Window,
    [oh, ow]: [usize; 2],
) -> Result<std::sync::Arc<crate::device::Storage>> {
    let [n, c, h, w] = image;
    let count = if mode == 0 {
        n * c * oh * ow
    } else {
        n * c * h * w
    };
    let shape = if mode == 0 {
        vec![n, c, oh, ow]
    } else {
        image.to_vec()
    };
    let st = alloc_f32(&shape)?;
    if count == 0 {
        return Ok(st);
    }
    let ctx = Tensor::ctx()?;
    let [kh, kw] = win.kernel;
    // Windows that do not overlap (each stride at least the window's span, as 2x2 pooling with
    // stride 2) take the backward per window (MODE 2): each tap's share computed once, every
    // pixel written by at most one window, the others left at the zero filled here.
    let disjoint = (0..2).all(|i| win.stride[i] > win.dilation[i] * (win.kernel[i] - 1));
    let (mode, count) = if mode == 1 && disjoint {
        ctx.fill(&st, 0)?;
        (2, n * c * oh * ow)
    } else {
        (mode, count)
    };
    // A per-pixel backward invocation visits every window covering its pixel (at most
    // ceil(kh/sh)·ceil(kw/sw) of them), each over its taps; a window's own loops are two.
    let covering = kh.div_ceil(win.stride[0]) * kw.div_ceil(win.stride[1]);
    let loops = 2 * kh * kw * if mode == 1 { covering } else { 1 };
    ctx.check_loop("max_pool2d", loops, || format!("a {kh}x{kw} window"))?;
    let u = |v: usize| v as u32;
    let push = PoolPush {
        n: u(n),
        c: u(c),
        h: u(h),
        w: u(w),
        oh: u(oh),
        ow: u(ow),
        sh: u(win.stride[0]),
        sw: u(win.stride[1]),
        ph: u(win.padding[0]),
        pw: u(win.padding[1]),
        dh: u(win.dilation[0]),
        dw: u(win.dilation[1]),
        m_l: div_magic(oh * ow),
        m_ow: div_magic(ow),
        m_hw: div_magic(h * w),
        m_w: div_magic(w),
    };
    let xs = x.storage()?;
    let gs = match g {
        Some(g) => g.storage()?,
        None => xs,
    };
    ctx.dispatch(
        Kernel::Pool,
        &[mode, u(kh), u(kw)],
        &[Bind::texels(xs), Bind::texels(gs), Bind::write(&st)],
        &push,
        grid(count as u64, 256),
    )?;
    Ok(st)
}

impl Tensor {
    /// PyTorch's `unfold` with the window's columns last: `[N, C, H, W]` →
    /// `[N, OH*OW, C*KH*KW]`, entry (c*KH + kh)*KW + kw of row oh*OW + ow being the pixel under
    /// tap (kh, kw) of that window; `pad` fills taps outside the image (0 for convolution, −∞
    /// for max pooling). Gradient: `fold`.
    pub fn unfold(&self, win: &Window, pad: f32) -> Result<Tensor> {
        let [_, c, ..] = nchw("unfold", self.shape())?;
        self.unfold_rows(win, pad, c * win.kernel[0] * win.kernel[1])
    }

    /// `unfold` with rows `row` long (C·KH·KW, or padded with zeros to a multiple of 4);
    /// gradient `fold_rows`.
    fn unfold_rows(&self, win: &Window, pad: f32, row: usize) -> Result<Tensor> {
        let image = nchw("unfold", self.shape())?;
        let out_hw = win.output("unfold", image[2], image[3])?;
        let y = im2col(0, self, image, win, out_hw, (pad, row))?;
        let win = *win;
        Ok(Tensor::from_op(
            y.0.shape.clone(),
            y.0.value.clone(),
            "unfold",
            &[self],
            move |g| Ok(vec![Some(g.fold_rows(&win, image, row)?)]),
        ))
    }

    /// The adjoint of `unfold` (PyTorch's `fold`, col2im): columns `[N, OH*OW, C*KH*KW]` summed
    /// back into an `image` = `[N, C, H, W]` batch. Gradient: `unfold` with zero padding.
    pub fn fold(&self, win: &Window, image: [usize; 4]) -> Result<Tensor> {
        self.fold_rows(win, image, image[1] * win.kernel[0] * win.kernel[1])
    }

    /// `fold` of columns with rows `row` long (the entries past C·KH·KW are not read);
    /// gradient `unfold_rows`.
    fn fold_rows(&self, win: &Window, image: [usize; 4], row: usize) -> Result<Tensor> {
        let [n, _, h, w] = image;
        let [oh, ow] = win.output("fold", h, w)?;
        let want = [n, oh * ow, row];
        if self.shape() != want {
            return Err(Error::op(
                "fold",
                format!(
                    "columns of shape {:?} do not match image {image:?} and window {win:?} (expected {want:?})",
                    self.shape()
                ),
            ));
        }
        let y = im2col(1, self, image, win, [oh, ow], (0.0, row))?;
        let win = *win;
        Ok(Tensor::from_op(
            y.0.shape.clone(),
            y.0.value.clone(),
            "fold",
            &[self],
            move |g| Ok(vec![Some(g.unfold_rows(&win, 0.0, row)?)]),
        ))
    }

    /// 2-D convolution (cross-correlation, as PyTorch's conv2d): `self` `[N, C, H, W]`, `weight`
    /// `[O, C, KH, KW]`, optional `bias` `[O]` → `[N, O, OH, OW]`. im2col + the matmul kernel;
    /// large batches run in chunks so the column matrix stays within one buffer binding.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, win: &Window) -> Result<Tensor> {
        let [n, c, h, w] = nchw("conv2d", self.shape())?;
        let [o, wc, kh, kw] = nchw("conv2d (weight)", weight.shape())?;
        if wc != c || [kh, kw] != win.kernel {
            return Err(Error::op(
                "conv2d",
                format!(
                    "weight {:?} does not fit input {:?} with kernel {:?} (expected [O, {c}, {}, {}])",
                    weight.shape(),
                    self.shape(),
                    win.kernel,
                    win.kernel[0],
                    win.kernel[1]
                ),
            ));
        }
        if let Some(b) = bias {
            if b.shape() != [o] {
                return Err(Error::op(
                    "conv2d",
                    format!("bias shape {:?} is not [{o}]", b.shape()),
                ));
            }
        }
        let [oh, ow] = win.output("conv2d", h, w)?;
        let ckk = c * kh * kw;
        // Rows of the column matrix padded with zeros (and the weight's with zero columns)
        // where the matmul kernel this device takes wants K a multiple of 4: the first conv of
        // a one-channel image (K = 9) then runs the vec4 kernel (12 columns) instead of the
        // scalar one; the zero terms add exact zeros.
        let row = crate::ops::matmul::padded_inner(&Tensor::ctx()?.caps, ckk);
        let w2 = weight.reshape(&[o, ckk])?;
        let w2 = if row > ckk {
            Tensor::concat(&[&w2, &Tensor::zeros(&[o, row - ckk])?], 1)?
        } else {
            w2
        };
        // Columns per sample; chunks keep each column matrix within one buffer binding of this
        // device (lavapipe: 2^27 bytes), and at most 2^25 floats (128 MiB) on any.
        let per_sample = (oh * ow * row).max(1);
        let (max_bytes, max_texels) = Tensor::ctx()?.buffer_limits();
        let limit = (max_bytes / 4)
            .min(max_texels.saturating_mul(4))
            .min(1 << 25) as usize;
        let chunk = (limit / per_sample).clamp(1, n.max(1));
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let xs = if len == n {
                self.clone()
            } else {
                self.narrow(0, start, len)?
            };
            let cols = xs
                .unfold_rows(win, 0.0, row)?
                .reshape(&[len * oh * ow, row])?;
            let y = Tensor::matmul_t(&cols, &w2, false, true)?; // [len*L, O]
            parts.push(y.reshape(&[len, oh, ow, o])?.permute(&[0, 3, 1, 2])?);
            start += len;
        }
        let y = if parts.len() == 1 {
            parts.pop().unwrap()
        } else if parts.is_empty() {
            Tensor::zeros(&[0, o, oh, ow])?
        } else {
            Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?
        };
        match bias {
            Some(b) => y.add(&b.reshape(&[1, o, 1, 1])?),
            None => Ok(y),
        }
    }

    /// Pools each window of each channel: `[N, C, H, W]` → `[N, C, OH, OW]`; max pooling by
    /// its own kernel, average pooling as the mean of unfold's columns.
    fn pool2d(&self, win: &Window, max: bool, op: &'static str) -> Result<Tensor> {
        let [n, c, h, w] = nchw(op, self.shape())?;
        if win.padding[0] * 2 > win.kernel[0] || win.padding[1] * 2 > win.kernel[1] {
            return Err(Error::op(
                op,
                format!(
                    "padding {:?} must be at most half the kernel {:?} (as in PyTorch)",
                    win.padding, win.kernel
                ),
            ));
        }
        let [oh, ow] = win.output(op, h, w)?;
        let kk = win.kernel[0] * win.kernel[1];
        if max {
            return self.max_pool_direct(win, [n, c, h, w], [oh, ow]);
        }
        // One channel per image, so a column holds exactly one window's taps.
        let cols = self
            .reshape(&[n * c, 1, h, w])?
            .unfold(win, if max { f32::NEG_INFINITY } else { 0.0 })?; // [N*C, L, KK]
        let pooled = if max {
            cols.max_axis(-1, false)?
        } else {
            cols.sum_axis(-1, false)?.mul_scalar(1.0 / kk as f32)?
        };
        pooled.reshape(&[n, c, oh, ow])
    }

    /// Max pooling read in place (`shaders/pool.comp`): the values and gradients of the max
    /// over unfold's columns (−∞ outside the image), without writing the columns — one pass
    /// forward, one backward instead of unfold, a reduction, a comparison mask and fold.
    fn max_pool_direct(
        &self,
        win: &Window,
        image: [usize; 4],
        out_hw: [usize; 2],
    ) -> Result<Tensor> {
        let out: Vec<usize> = vec![image[0], image[1], out_hw[0], out_hw[1]];
        let y = pool_kernel(0, self, None, image, win, out_hw)?;
        let (x, win) = (self.clone(), *win);
        Ok(Tensor::from_op(
            out.into(),
            y,
            "max_pool2d",
            &[self],
            move |g| {
                Ok(vec![Some(Tensor::leaf(
                    image.to_vec().into(),
                    pool_kernel(1, &x, Some(g), image, &win, out_hw)?,
                ))])
            },
        ))
    }

    /// PyTorch's max_pool2d (padding taps are −∞). On ties the gradient is shared among the
    /// equal taps (PyTorch gives it to the first).
    pub fn max_pool2d(&self, win: &Window) -> Result<Tensor> {
        self.pool2d(win, true, "max_pool2d")
    }

    /// PyTorch's avg_pool2d with count_include_pad = true (padding taps count as zeros).
    pub fn avg_pool2d(&self, win: &Window) -> Result<Tensor> {
        self.pool2d(win, false, "avg_pool2d")
    }

    /// Mean over H and W: `[N, C, H, W]` → `[N, C]`.
    pub fn global_avg_pool(&self) -> Result<Tensor> {
        let [n, c, h, w] = nchw("global_avg_pool", self.shape())?;
        if h * w == 0 {
            return Err(Error::op(
                "global_avg_pool",
                format!("empty image in shape {:?}", self.shape()),
            ));
        }
        self.reshape(&[n, c, h * w])?.mean_axis(-1, false)
    }
}
