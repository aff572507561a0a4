//! Reductions along one axis or all axes, with keepdim (`shaders/reduce.comp`).

use super::{alloc_f32, norm_axis};
use crate::device::caps::Caps;
use crate::device::push::ReducePush;
use crate::device::Storage;
use crate::device::{grid, Bind, Kernel};
use crate::error::{Error, Result};
use crate::reference::Reduce;
use crate::tensor::{IntTensor, Shape, Tensor};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum R {
    Sum = 0,
    Max,
    Min,
    Argmax,
    Argmin,
}

/// The kernel's GLSL, for variants with a fused prologue generated at run time.
const REDUCE_SOURCE: &str = include_str!("../../../shaders/reduce.comp");

/// Elements one invocation reduces per pass. Longer axes take several passes: this keeps each
/// invocation under llvmpipe's limit of 65535 loop iterations and gives a pairwise-like sum.
const CHUNK: usize = 4096;

/// Reduces [outer, n, inner] into `out` ([outer, inner]), in as many passes as needed.
/// The reduction variant for this device and shape — the one place it is chosen: one
/// workgroup per output for long contiguous rows on devices with workgroup kernels (see
/// shaders/reduce.comp), one invocation per output chunk otherwise.
fn grouped(caps: &Caps, n: usize, inner: usize) -> bool {
    caps.workgroup_kernels && inner == 1 && (256..=64 * CHUNK).contains(&n)
}

/// The first pass's input: a buffer, or a pending elementwise tree computed in the pass (a
/// fused prologue).
enum Input<'a> {
    Buffer(&'a Storage),
    Fused(crate::lazy::Pieces),
}

fn reduce_passes(
    x: Input,
    op: R,
    outer: usize,
    n: usize,
    inner: usize,
    out: &Arc<Storage>,
) -> Result<()> {
    let ctx = Tensor::ctx()?;
    let arg = matches!(op, R::Argmax | R::Argmin);
    let mut partial: Option<Arc<Storage>> = None; // the previous pass's output
    let mut n = n;
    let mut first = Some(x);
    loop {
        let input = first.take();
        let in_pairs = (arg && partial.is_some()) as u32;
        let group = grouped(&ctx.caps, n, inner);
        let last = group || n <= CHUNK;
        let chunks = if last { 1 } else { n.div_ceil(CHUNK) };
        let dst = if last {
            out.clone()
        } else {
            ctx.alloc((4 * outer * chunks * inner * if arg { 2 } else { 1 }) as u64)?
        };
        let outputs = (outer * chunks * inner) as u64;
        let groups = if group {
            grid(outputs, 1)
        } else {
            grid(outputs, 64)
        };
        let push = ReducePush {
            outer: outer as u32,
            n: n as u32,
            inner: inner as u32,
            chunk: if last { n.max(1) } else { CHUNK } as u32,
            in_pairs,
            out_pairs: (arg && !last) as u32,
        };
        let spec = [op as u32, group as u32];
        match (input, &partial) {
            (Some(Input::Fused(pro)), _) => crate::lazy::dispatch_with_prologue(
                REDUCE_SOURCE,
                &spec,
                &pro,
                &dst,
                bytemuck::bytes_of(&push),
                "Reduce",
                groups,
            )?,
            (input, partial) => {
                let src = match (input, partial) {
                    (Some(Input::Buffer(b)), _) => b,
                    (_, Some(p)) => &**p,
                    _ => unreachable!("every later pass reads the previous one"),
                };
                ctx.dispatch(
                    Kernel::Reduce,
                    &spec,
                    &[Bind::texels(src), Bind::write(&dst)],
                    &push,
                    groups,
                )?;
            }
        }
        if last {
            return Ok(());
        }
        partial = Some(dst);
        n = chunks;
    }
}

/// Which axes to reduce: one, or all of them.
#[derive(Clone, Copy)]
enum Axes {
    One(usize),
    All,
}

impl Tensor {
    /// Returns (keepdim output shape, storage).
    fn reduce_raw(
        &self,
        op: R,
        axes: Axes,
        name: &'static str,
    ) -> Result<(Shape, std::sync::Arc<crate::device::Storage>)> {
        let shape = self.shape();
        let (outer, n, inner, keep): (usize, usize, usize, Shape) = match axes {
            Axes::All => (1, self.numel(), 1, smallvec::smallvec![1; shape.len()]),
            Axes::One(ax) => {
                let mut keep: Shape = shape.into();
                keep[ax] = 1;
                (
                    shape[..ax].iter().product(),
                    shape[ax],
                    shape[ax + 1..].iter().product(),
                    keep,
                )
            }
        };
        if n == 0 && op != R::Sum {
            return Err(Error::op(
                name,
                format!("cannot reduce an empty axis of shape {shape:?}"),
            ));
        }
        let st = alloc_f32(&keep)?;
        if outer * inner > 0 {
            // A pending input is computed inside the first pass where it can be (its own push
            // words on top of the reduction's six).
            let words = std::mem::size_of::<ReducePush>() / 4;
            // It walks along the reduced axis (`lazy::prologue`: its broadcast leaves'
            // coordinates computed once per run of the reduction, not per element).
            let walk = match axes {
                Axes::One(_) => Some((n, inner)),
                Axes::All => None,
            };
            match crate::lazy::prologue(&self.0.value, words, walk, crate::lazy::prologue_binding)?
            {
                Some(p) if n > 0 => reduce_passes(Input::Fused(p), op, outer, n, inner, &st)?,
                _ => reduce_passes(Input::Buffer(self.storage()?), op, outer, n, inner, &st)?,
            }
        }
        Ok((keep, st))
    }

    fn out_shape(keep: &Shape, axes: Axes, keepdim: bool) -> Shape {
        match (keepdim, axes) {
            (true, _) => keep.clone(),
            (false, Axes::All) => Shape::new(),
            (false, Axes::One(ax)) => keep
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != ax)
                .map(|(_, d)| *d)
                .collect(),
        }
    }

    fn sum_impl(&self, axes: Axes, keepdim: bool, mean: bool) -> Result<Tensor> {
        let name = if mean { "mean" } else { "sum" };
        let (keep, st) = self.reduce_raw(R::Sum, axes, name)?;
        let count = match axes {
            Axes::All => self.numel(),
            Axes::One(ax) => self.shape()[ax],
        };
        let out = Self::out_shape(&keep, axes, keepdim);
        let sum = Tensor::leaf(out.clone(), st);
        let y = if mean {
            sum.mul_scalar(1.0 / count as f32)?
        } else {
            sum
        };
        let in_shape: Shape = self.shape().into();
        Ok(Tensor::from_op(
            out,
            y.0.value.clone(),
            name,
            &[self],
            move |g| {
                // d sum / dx_i = 1 (mean: 1/count): broadcast g back over the reduced axes,
                // scaling the small tensor before it is expanded.
                let g = if mean {
                    g.mul_scalar(1.0 / count as f32)?
                } else {
                    g.clone()
                };
                Ok(vec![Some(g.reshape(&keep)?.expand(&in_shape)?)])
            },
        ))
    }

    /// max or min; the gradient is shared evenly among the elements equal to the result
    /// (PyTorch's amax/amin rule).
    fn extreme_impl(&self, axes: Axes, keepdim: bool, op: R, name: &'static str) -> Result<Tensor> {
        let (keep, st) = self.reduce_raw(op, axes, name)?;
        let out = Self::out_shape(&keep, axes, keepdim);
        let x = self.clone();
        let y_keep = Tensor::leaf(keep.clone(), st.clone());
        Ok(Tensor::from_op(out, st, name, &[self], move |g| {
            let mask = x.eq(&y_keep)?;
            let count = match axes {
                Axes::All => mask.sum_all()?.reshape(&keep)?,
                Axes::One(ax) => mask.sum_axis(ax as isize, true)?,
            };
            Ok(vec![Some(mask.mul(&g.reshape(&keep)?.div(&count)?)?)])
        }))
    }

    fn arg_impl(&self, axis: isize, keepdim: bool, op: R, name: &'static str) -> Result<IntTensor> {
        let ax = norm_axis(name, axis, self.rank())?;
        let (keep, storage) = self.reduce_raw(op, Axes::One(ax), name)?;
        Ok(IntTensor {
            shape: Self::out_shape(&keep, Axes::One(ax), keepdim),
            storage,
            host: None,
        })
    }

    /// Sum over `axis` (negative counts from the end).
    pub fn sum_axis(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let ax = norm_axis("sum", axis, self.rank())?;
        self.sum_impl(Axes::One(ax), keepdim, false)
    }
    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum_impl(Axes::All, false, false)
    }
    pub fn mean_axis(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let ax = norm_axis("mean", axis, self.rank())?;
        if self.shape()[ax] == 0 {
            return Err(Error::op(
                "mean",
                format!("mean of an empty axis of shape {:?}", self.shape()),
            ));
        }
        self.sum_impl(Axes::One(ax), keepdim, true)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        if self.numel() == 0 {
            return Err(Error::op("mean", "mean of an empty tensor"));
        }
        self.sum_impl(Axes::All, false, true)
    }
    pub fn max_axis(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let ax = norm_axis("max", axis, self.rank())?;
        self.extreme_impl(Axes::One(ax), keepdim, R::Max, "max")
    }
    pub fn max_all(&self) -> Result<Tensor> {
        self.extreme_impl(Axes::All, false, R::Max, "max")
    }
    pub fn min_axis(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let ax = norm_axis("min", axis, self.rank())?;
        self.extreme_impl(Axes::One(ax), keepdim, R::Min, "min")
    }
    pub fn min_all(&self) -> Result<Tensor> {
        self.extreme_impl(Axes::All, false, R::Min, "min")
    }
    /// Index of the largest element along `axis` (first one on ties).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<IntTensor> {
        self.arg_impl(axis, keepdim, R::Argmax, "argmax")
    }
    /// Index of the smallest element along `axis` (first one on ties).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<IntTensor> {
        self.arg_impl(axis, keepdim, R::Argmin, "argmin")
    }
}

/// One reduction, defined once: its name (= the host op), the `Tensor` calls over all elements
/// and over one axis, and one hop away the f64 reference entry it is proven against. The
/// host's op table and the reduction property test read it.
pub struct ReduceOp {
    pub name: &'static str,
    pub all: fn(&Tensor) -> Result<Tensor>,
    pub axis: fn(&Tensor, isize, bool) -> Result<Tensor>,
    pub reference: Reduce,
    /// `max`/`min`: exact values (tolerance `ELEMENTWISE`); ties make them not differentiable.
    pub exact: bool,
}

impl std::fmt::Debug for ReduceOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every reduction (argmax/argmin return integers and have their own property).
pub const REDUCE_OPS: &[ReduceOp] = &[
    ReduceOp {
        name: "sum",
        all: Tensor::sum_all,
        axis: Tensor::sum_axis,
        reference: Reduce::Sum,
        exact: false,
    },
    ReduceOp {
        name: "mean",
        all: Tensor::mean_all,
        axis: Tensor::mean_axis,
        reference: Reduce::Mean,
        exact: false,
    },
    ReduceOp {
        name: "max",
        all: Tensor::max_all,
        axis: Tensor::max_axis,
        reference: Reduce::Max,
        exact: true,
    },
    ReduceOp {
        name: "min",
        all: Tensor::min_all,
        axis: Tensor::min_axis,
        reference: Reduce::Min,
        exact: true,
    },
];

/// The reduction called `name`.
pub fn reduce_op(name: &str) -> Option<&'static ReduceOp> {
    REDUCE_OPS.iter().find(|o| o.name == name)
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// Every reduction is a host op taking `axis` and `keepdim`, with its own reference entry.
    #[test]
    fn the_table_agrees_with_the_host_op_table() {
        for op in REDUCE_OPS {
            let spec = vkgrad_plugin::ops::spec(op.name).unwrap();
            let attrs: Vec<&str> = spec.attrs.iter().map(|a| a.0).collect();
            assert_eq!(attrs, ["axis", "keepdim"], "{}", op.name);
        }
        let mut refs: Vec<String> = REDUCE_OPS
            .iter()
            .map(|o| format!("{:?}", o.reference))
            .collect();
        refs.sort();
        refs.dedup();
        assert_eq!(refs.len(), REDUCE_OPS.len());
    }
}
