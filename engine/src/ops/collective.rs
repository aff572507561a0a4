//! Collective ops across the processes of a data-parallel job (`crate::dist`), with their
//! gradients. Each is a read-back, a host collective and an upload: Vulkan devices share no
//! memory across processes, so collectives go through the host. At world size 1 each is the
//! identity (values and gradients), with no copy.
//!
//! The gradient rules treat the job's objective as the sum over ranks of what each rank
//! computes, so a cross-rank op's backward *sums* over ranks (the rule lightly's
//! `GatherLayer` got wrong first, lightly #1528). With every rank computing the same global
//! loss from gathered features, each parameter gradient is then K times the rank's share, and
//! the trainer's average over ranks gives exactly the gradient of the one global loss.

use crate::dist::{mismatch, world};
use crate::error::Result;
use crate::tensor::{IntTensor, Shape, Tensor};

impl Tensor {
    /// Every rank's rows (axis 0) in rank order: [Σ_r n_r, ...]. The other axes must agree.
    /// Backward: the gradient summed over ranks, this rank's rows of it.
    pub fn all_gather(&self) -> Result<Tensor> {
        let w = world();
        if w.size() == 1 {
            return Ok(self.clone());
        }
        let inner = check_inner(self.shape())?;
        let (all, counts) = w.all_gather(&self.to_vec()?)?;
        let row: usize = inner.iter().product();
        let shape: Shape = [all.len() / row.max(1)]
            .into_iter()
            .chain(inner.iter().copied())
            .collect();
        let start = counts[..w.rank()].iter().sum::<usize>() / row.max(1);
        let n = self.shape()[0];
        let gathered = Tensor::from_vec(all, &shape)?;
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
        let mut v = self.to_vec()?;
        w.all_reduce_sum(&mut v)?;
        let summed = Tensor::from_vec(v, self.shape())?;
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
        let inner = check_inner(self.shape())?;
        let (all, _) = w.all_gather_u32(&self.to_vec()?)?;
        let mut shape = self.shape().to_vec();
        shape[0] = all.len() / inner.iter().product::<usize>().max(1);
        IntTensor::from_vec(all, &shape)
    }
}

/// The shape after axis 0, which every rank must share (exchanged first, so a rank whose rows
/// differ is refused by name instead of mixing values).
fn check_inner(shape: &[usize]) -> Result<Shape> {
    if shape.is_empty() {
        return Err(mismatch(
            "all_gather",
            "a scalar has no rows to gather".into(),
        ));
    }
    let inner: Shape = shape[1..].iter().copied().collect();
    let mut mine = vec![u32::MAX; crate::ops::MAX_RANK];
    for (m, &d) in mine.iter_mut().zip(&inner) {
        *m = d as u32;
    }
    let (all, _) = world().all_gather_u32(&mine)?;
    if all.chunks(mine.len()).any(|c| c != mine.as_slice()) {
        let theirs: Vec<Vec<u32>> = all
            .chunks(mine.len())
            .map(|c| c.iter().copied().take_while(|&d| d != u32::MAX).collect())
            .collect();
        return Err(mismatch(
            "all_gather",
            format!("tensor {shape:?}: the ranks' row shapes differ: {theirs:?}"),
        ));
    }
    Ok(inner)
}
