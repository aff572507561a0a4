//! Fused row-wise ops over the last axis (`shaders/rowwise.comp`): softmax, log_softmax,
//! logsumexp (max-subtracted) and L2 normalisation with epsilon.

use super::alloc_f32;
use crate::device::push::RowwisePush;
use crate::device::Context;
use crate::device::{grid, Bind, Kernel};
use crate::error::{Error, Result};
use crate::reference::Rowwise;
use crate::tensor::{Shape, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W {
    Softmax = 0,
    LogSoftmax,
    LogSumExp,
    L2Normalize,
}

/// The kernel's GLSL, for variants with a fused prologue generated at run time.
const ROWWISE_SOURCE: &str = include_str!("../../../shaders/rowwise.comp");

impl Tensor {
    fn rowwise_raw(&self, op: W, eps: f32, name: &'static str) -> Result<Tensor> {
        let Some(&n) = self.shape().last() else {
            return Err(Error::op(
                name,
                "needs at least one dimension (it works along the last)",
            ));
        };
        if n == 0 && op == W::LogSumExp {
            return Err(Error::op(
                name,
                format!("the last axis of {:?} is empty", self.shape()),
            ));
        }
        let rows = self.numel().checked_div(n).unwrap_or(0);
        let out: Shape = if op == W::LogSumExp {
            self.shape()[..self.rank() - 1].into()
        } else {
            self.shape().into()
        };
        let st = alloc_f32(&out)?;
        if rows > 0 {
            let ctx = Tensor::ctx()?;
            let group = grouped(ctx, name, n);
            if group {
                ctx.check_loop(name, 3 * n.div_ceil(64) + 12, || {
                    format!("rows of {n} in {:?}", self.shape())
                })?;
            }
            let groups = if group {
                grid(rows as u64, 1)
            } else {
                grid(rows as u64, 64)
            };
            let spec = [op as u32, group as u32];
            let push = RowwisePush {
                rows: rows as u32,
                n: n as u32,
                eps,
            };
            // A pending input is computed inside the kernel (evaluated at each of its reads of
            // the row) unless the backward rule will read it: logsumexp's and l2_normalize's
            // do, and would then compute it again on its own.
            let backward_reads_x = matches!(op, W::LogSumExp | W::L2Normalize)
                && crate::grad_mode::is_grad_enabled()
                && self.is_requires_grad();
            let words = std::mem::size_of::<RowwisePush>() / 4;
            let pro = if backward_reads_x {
                None
            } else {
                // walked along the row (its broadcast leaves' coordinates once per row)
                crate::lazy::prologue(
                    &self.0.value,
                    words,
                    Some((n, 1)),
                    crate::lazy::prologue_binding,
                )?
            };
            match pro {
                Some(pro) => crate::lazy::dispatch_with_prologue(
                    ROWWISE_SOURCE,
                    &spec,
                    &pro,
                    &st,
                    bytemuck::bytes_of(&push),
                    "Rowwise",
                    groups,
                )?,
                None => ctx.dispatch(
                    Kernel::Rowwise,
                    &spec,
                    &[Bind::texels(self.storage()?), Bind::write(&st)],
                    &push,
                    groups,
                )?,
            }
        }
        Ok(Tensor::leaf(out, st))
    }

    fn rowwise(
        &self,
        op: W,
        eps: f32,
        name: &'static str,
        rule: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Result<Tensor> {
        let y = self.rowwise_raw(op, eps, name)?;
        let (x, yd) = (self.clone(), y.detach());
        Ok(Tensor::from_op(
            y.0.shape.clone(),
            y.0.value.clone(),
            name,
            &[self],
            move |g| Ok(vec![Some(rule(&x, &yd, g)?)]),
        ))
    }

    /// Softmax over the last axis. dx = y (g - sum(g y)).
    pub fn softmax(&self) -> Result<Tensor> {
        self.rowwise(W::Softmax, 0.0, "softmax", |_, y, g| {
            y.mul(&g.sub(&g.mul(y)?.sum_axis(-1, true)?)?)
        })
    }

    /// Log-softmax over the last axis. dx = g - softmax(x) sum(g).
    pub fn log_softmax(&self) -> Result<Tensor> {
        self.rowwise(W::LogSoftmax, 0.0, "log_softmax", |_, y, g| {
            g.sub(&y.exp()?.mul(&g.sum_axis(-1, true)?)?)
        })
    }

    /// log(sum(exp(x))) over the last axis (which is removed). dx = g softmax(x).
    pub fn logsumexp(&self) -> Result<Tensor> {
        self.rowwise(W::LogSumExp, 0.0, "logsumexp", |x, _, g| {
            let keep: Shape = x.shape()[..x.rank() - 1]
                .iter()
                .copied()
                .chain([1])
                .collect();
            x.rowwise_raw(W::Softmax, 0.0, "logsumexp")?
                .mul(&g.reshape(&keep)?)
        })
    }

    /// x / max(||x||, eps) over the last axis (PyTorch's `F.normalize`; a zero row stays zero).
    /// dx = (g - y (y·g) [||x|| > eps]) / max(||x||, eps).
    pub fn l2_normalize(&self, eps: f32) -> Result<Tensor> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::op(
                "l2_normalize",
                format!("eps must be positive and finite, got {eps}"),
            ));
        }
        self.rowwise(W::L2Normalize, eps, "l2_normalize", move |x, y, g| {
            // x·y = ||x|| where ||x|| > eps and ||x||^2/eps <= eps elsewhere, so max(x·y, eps)
            // is the divisor without squaring x (which could overflow).
            let xy = x.mul(y)?.sum_axis(-1, true)?;
            let n = xy.maximum_scalar(eps)?;
            let active = xy.gt_scalar(eps)?;
            let gy = g.mul(y)?.sum_axis(-1, true)?;
            g.sub(&y.mul(&gy.mul(&active)?)?)?.div(&n)
        })
    }
}

/// The row-wise variant for this device and row length — the one place it is chosen: a
/// 64-lane workgroup per row on devices with workgroup kernels, and wherever one invocation's
/// 3n loop iterations would pass the driver's loop budget (a workgroup loops 3n/64 + the
/// tree); one invocation per row otherwise (CPU drivers).
fn grouped(ctx: &Context, op: &'static str, n: usize) -> bool {
    ctx.caps.workgroup_kernels || ctx.check_loop(op, 3 * n, String::new).is_err()
}

/// One row-wise op over the last axis, defined once: its name (= the host op), the `Tensor`
/// call, its `eps` attribute and default where it has one, and one hop away the f64 reference
/// entry it is proven against, with the eps values the property test draws.
pub struct RowwiseOp {
    pub name: &'static str,
    /// The call; the f32 is `eps` (ignored by ops without one).
    pub call: fn(&Tensor, f32) -> Result<Tensor>,
    pub eps: Option<(&'static str, f32)>,
    pub reference: fn(f64) -> Rowwise,
    pub eps_values: &'static [f64],
}

impl std::fmt::Debug for RowwiseOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const fn plain(
    name: &'static str,
    call: fn(&Tensor, f32) -> Result<Tensor>,
    reference: fn(f64) -> Rowwise,
) -> RowwiseOp {
    RowwiseOp {
        name,
        call,
        eps: None,
        reference,
        eps_values: &[0.0],
    }
}

/// Every row-wise op.
pub const ROWWISE_OPS: &[RowwiseOp] = &[
    plain("softmax", |x, _| x.softmax(), |_| Rowwise::Softmax),
    plain(
        "log_softmax",
        |x, _| x.log_softmax(),
        |_| Rowwise::LogSoftmax,
    ),
    plain("logsumexp", |x, _| x.logsumexp(), |_| Rowwise::LogSumExp),
    // PyTorch's F.normalize default eps, and a large one that the kink at ‖x‖ = eps is hit by.
    RowwiseOp {
        eps: Some(("eps", 1e-12)),
        eps_values: &[1e-12, 1e-3],
        ..plain("l2_normalize", Tensor::l2_normalize, Rowwise::L2Normalize)
    },
];

/// The row-wise op called `name`.
pub fn rowwise_op(name: &str) -> Option<&'static RowwiseOp> {
    ROWWISE_OPS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkgrad_plugin::ops::Need;

    /// Every row-wise op is a host op with the same attribute and default.
    #[test]
    fn the_table_agrees_with_the_host_op_table() {
        for op in ROWWISE_OPS {
            let spec = vkgrad_plugin::ops::spec(op.name).unwrap();
            match op.eps {
                None => assert!(spec.attrs.is_empty(), "{}", op.name),
                Some((key, default)) => {
                    let (name, _, need) = spec.attrs[0];
                    assert_eq!((spec.attrs.len(), name), (1, key));
                    let Need::Optional(text) = need else {
                        panic!("{}: `{key}` should be optional", op.name)
                    };
                    assert_eq!(text.parse::<f32>().unwrap(), default, "{}", op.name);
                }
            }
        }
    }
}
