//! Data parallelism (`mpirun -np K vkgrad train`, docs/distributed.md): every rank holds the
//! same parameters, takes its shard of each global batch, gathers the embeddings so the loss
//! sees the global batch (global negatives), and averages the parameter gradients, so each
//! step is the step a single process would take on the global batch (up to the order of f32
//! sums). At K = 1 every function here is the identity.

use super::Trainer;
use crate::dist::{world, Collectives};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// This rank's rows of a global batch of `b`: `start .. start + len`.
pub fn shard(b: usize) -> (usize, usize) {
    let w = world();
    let len = b / w.size();
    (w.rank() * len, len)
}

/// Refuses a global batch the ranks cannot share equally (every rank must hold the same
/// number of samples: batch norm's synchronised statistics weight the ranks equally).
pub fn check_batch(b: usize) -> Result<()> {
    let k = world().size();
    if !b.is_multiple_of(k) {
        return Err(Error::Other(format!(
            "batch_size {b} is the global batch, shared by {k} ranks; it must be divisible by {k} \
             (e.g. {} or {})",
            (b / k).max(1) * k,
            (b / k + 1) * k
        )));
    }
    Ok(())
}

/// The rank's [n, 2, D] pairs of views gathered into the global [B, 2, D] in global sample
/// order (ranks hold consecutive shards). The gradient flows back to this rank's rows.
pub fn gather_pairs(local: &Tensor) -> Result<Tensor> {
    local.all_gather()
}

impl Trainer {
    /// Averages every trainable parameter's gradient over the ranks: one all-reduce of all of
    /// them in one buffer (one message per step, not one per tensor). The gradients are joined
    /// and split on the device around one collective (a host step), so in a replayed update
    /// (`replayed_update.rs`, which runs this first) the all-reduce runs between the
    /// recording's segments at every replay.
    pub(super) fn average_gradients(params: &mut [&mut Tensor]) -> Result<()> {
        let w = world();
        if w.size() == 1 || params.is_empty() {
            return Ok(());
        }
        crate::grad_mode::no_grad(|| {
            let mut flat = Vec::with_capacity(params.len());
            for p in params.iter() {
                let n = p.numel();
                // A parameter the loss did not reach has a zero gradient on this rank
                // (another rank's may not be zero): every rank sends every parameter.
                flat.push(match p.grad() {
                    Some(g) => g.reshape(&[n])?,
                    None => Tensor::zeros(&[n])?,
                });
            }
            let refs: Vec<&Tensor> = flat.iter().collect();
            let mean = Tensor::concat(&refs, 0)?
                .all_reduce_sum()?
                .div_scalar(w.size() as f32)?;
            let mut at = 0;
            for p in params.iter_mut() {
                let n = p.numel();
                let g = mean.narrow(0, at, n)?.reshape(p.shape())?;
                at += n;
                p.set_grad(Some(g));
            }
            Ok(())
        })
    }
}

impl Trainer {
    /// Every rank takes rank 0's whole state (parameters, buffers, optimiser and loss state):
    /// at each epoch's end, so every rank holds exactly the checkpoint rank 0 saves. Ranks
    /// apply the same averaged gradients and stay equal on one kind of device anyway; this
    /// keeps them equal across devices that round differently, makes per-rank batch-norm
    /// statistics (`sync_batch_norm = false`) rank 0's, and so makes a resumed run continue
    /// exactly as an uninterrupted one.
    pub(super) fn take_rank0_state(&mut self) -> Result<()> {
        let w = world();
        if w.size() == 1 {
            return Ok(());
        }
        let what = std::path::Path::new("rank 0's state");
        let mut bytes = if w.rank() == 0 {
            self.checkpoint()?.to_bytes(what)?
        } else {
            Vec::new()
        };
        w.broadcast(0, &mut bytes)?;
        if w.rank() != 0 {
            let c = super::checkpoint::Checkpoint::from_bytes(&bytes, what)?;
            self.restore(&c)?;
        }
        Ok(())
    }
}

/// Rank 0's step loss and parameter health (Σ w²) on every rank.
pub fn rank0_values(loss: f32, w2: Option<f32>) -> Result<(f32, Option<f32>)> {
    let w = world();
    if w.size() == 1 {
        return Ok((loss, w2));
    }
    // Without a health value the second word is padding (and `None` stays `None` below).
    let mut bytes: Vec<u8> = [loss, w2.unwrap_or(0.0)]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    w.broadcast(0, &mut bytes)?;
    let at = |i: usize| f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() != 8 {
        return Err(Error::Other(format!(
            "rank {}: rank 0 sent {} bytes for the step's loss, expected 8",
            w.rank(),
            bytes.len()
        )));
    }
    Ok((at(0), w2.map(|_| at(4))))
}

/// Whether this process writes the run's files (rank 0 alone: checkpoints, logs, plots,
/// results, the run lock).
pub fn writes() -> bool {
    world().rank() == 0
}

/// `root`'s text on every rank (rank 0's run folder, decided there).
pub fn broadcast_text(w: &dyn Collectives, text: &str) -> Result<String> {
    let mut bytes = text.as_bytes().to_vec();
    w.broadcast(0, &mut bytes)?;
    String::from_utf8(bytes).map_err(|e| Error::Other(format!("broadcast: {e}")))
}
