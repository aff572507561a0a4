//! Collective ops across the processes of a data-parallel job (`crate::dist`), with their
//! gradients. Each is a read-back, a host collective and a write into the result's buffer:
//! Vulkan devices share no memory across processes, so collectives go through the host — as a
//! host step (`Context::host_step`), so a step recorded for replay is split around each and
//! every replay runs the collective again between its segments. At world size 1 each is the
//! identity (values and gradients), with no copy.
//!
//! The gradient rules treat the job's objective as the sum over ranks of what each rank
//! computes, so a cross-rank op's backward *sums* over ranks (the rule lightly's
//! `GatherLayer` got wrong first, lightly #1528). With every rank computing the same global
//! loss from gathered features, each parameter gradient is then K times the rank's share, and
//! the trainer's average over ranks gives exactly the gradient of the one global loss.

use crate::device::context;
use crate::dist::{mismatch, world};
use crate::error::{Error, Result};
use crate::tensor::{numel, IntTensor, Shape, Tensor};

/// A tensor of `out_shape` whose values `f` makes on the host from `src`'s (a collective):
/// read back, exchanged, written into the result's buffer — a host step, so in a recorded step
/// it runs between two segments, again at every replay. `f` may keep no per-call state.
pub(crate) fn through_host(
    src: &Tensor,
    out_shape: Shape,
    mut f: impl FnMut(Vec<f32>) -> Result<Vec<f32>> + Send + 'static,
) -> Result<Tensor> {
    let ctx = context()?;
    let input = src.storage()?.clone();
    let out = super::alloc_f32(&out_shape)?;
    let (n_in, n_out) = (src.numel(), numel(&out_shape));
    let result = out.clone();
    ctx.host_step(Box::new(move || {
        let ctx = context()?;
        let bytes = ctx.download(&input, 4 * n_in as u64)?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let r = f(v)?;
        if r.len() != n_out {
            return Err(Error::Other(format!(
                "a collective returned {} values where {n_out} were expected",
                r.len()
            )));
        }
        let bytes: Vec<u8> = r.iter().flat_map(|x| x.to_ne_bytes()).collect();
        ctx.write(&result, &bytes)
    }))?;
    Ok(Tensor::leaf(out_shape, out))
}

impl Tensor {
    /// Every rank's rows (axis 0) in rank order: [Σ_r n_r, ...]. The other axes must agree.
    /// Backward: the gradient summed over ranks, this rank's rows of it.
    pub fn all_gather(&self) -> Result<Tensor> {
        let w = world();
        if w.size() == 1 {
            return Ok(self.clone());
        }
        let (inner, rows) = check_inner(self.shape())?;
        let shape: Shape = [rows.iter().sum::<usize>()]
            .into_iter()
            .chain(inner.iter().copied())
            .collect();
        let start = rows[..w.rank()].iter().sum::<usize>();
        let n = self.shape()[0];
        let gathered = through_host(self, shape.clone(), |v| Ok(world().all_gather(&v)?.0))?;
        Ok(Tensor::from_op(
            shape,
            gathered.0.value.clone(),
            "all_gather",
            &[self],
            move |g| Ok(vec![Some(g.all_reduce_sum()?.narrow(0, start, n)?)]),
        ))
    }

    /// The element-wise sum over ranks (every rank gets it). Backward: the gradient summed over
    /// ranks.
    pub fn all_reduce_sum(&self) -> Result<Tensor> {
        let w = world();
        if w.size() == 1 {
            return Ok(self.clone());
        }
        let summed = through_host(self, self.shape().into(), |mut v| {
            world().all_reduce_sum(&mut v)?;
            Ok(v)
        })?;
        Ok(Tensor::from_op(
            self.shape().into(),
            summed.0.value.clone(),
            "all_reduce_sum",
            &[self],
            |g| Ok(vec![Some(g.all_reduce_sum()?)]),
        ))
    }
}

impl Tensor {
    /// The sum over the replicas that share batch statistics (`dist::batch_stat_replicas`:
    /// every rank when batch norm is synchronised, else this rank alone: the identity).
    /// Backward: the gradient's sum over the same replicas.
    pub fn replica_sum(&self) -> Result<Tensor> {
        if crate::dist::batch_stat_replicas() == 1 {
            return Ok(self.clone());
        }
        self.all_reduce_sum()
    }
}

impl IntTensor {
    /// Every rank's rows (axis 0) in rank order (labels for SupCon's global positives).
    pub fn all_gather(&self) -> Result<IntTensor> {
        let w = world();
        if w.size() == 1 {
            return Ok(self.clone());
        }
        let (inner, _) = check_inner(self.shape())?;
        let (all, _) = w.all_gather_u32(&self.to_vec()?)?;
        let mut shape = self.shape().to_vec();
        shape[0] = all.len() / inner.iter().product::<usize>().max(1);
        IntTensor::from_vec(all, &shape)
    }
}

/// The shape after axis 0, which every rank must share (exchanged first, so a rank whose rows
/// differ is refused by name instead of mixing values), and every rank's number of rows.
fn check_inner(shape: &[usize]) -> Result<(Shape, Vec<usize>)> {
    if shape.is_empty() {
        return Err(mismatch(
            "all_gather",
            "a scalar has no rows to gather".into(),
        ));
    }
    let inner: Shape = shape[1..].iter().copied().collect();
    // [rows, inner dimensions..., padding]
    let mut mine = vec![u32::MAX; 1 + crate::ops::MAX_RANK];
    mine[0] = shape[0] as u32;
    for (m, &d) in mine[1..].iter_mut().zip(&inner) {
        *m = d as u32;
    }
    let (all, _) = world().all_gather_u32(&mine)?;
    let ranks = all.chunks(mine.len());
    if ranks.clone().any(|c| c[1..] != mine[1..]) {
        let theirs: Vec<Vec<u32>> = ranks
            .map(|c| {
                c[1..]
                    .iter()
                    .copied()
                    .take_while(|&d| d != u32::MAX)
                    .collect()
            })
            .collect();
        return Err(mismatch(
            "all_gather",
            format!("tensor {shape:?}: the ranks' row shapes differ: {theirs:?}"),
        ));
    }
    let rows = all.chunks(mine.len()).map(|c| c[0] as usize).collect();
    Ok((inner, rows))
}
