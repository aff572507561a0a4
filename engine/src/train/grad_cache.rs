//! Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
//! Memory Limited Setup"): the batch's embeddings are computed chunk by chunk without a graph,
//! the loss and its gradient with respect to the embeddings are computed for the whole batch
//! (through the tiled similarity path, in O(B·D) memory), then each chunk is run again with its
//! graph and back-propagates its slice of that gradient. Parameter gradients add up over the
//! chunks to the full batch's, so the batch size costs time (a second forward), not memory.
//!
//! Batch norm: a chunk holds both views of its samples, and batch-norm layers see the chunk
//! (its statistics, and one running-statistics update per chunk), as in GradCache and ghost
//! batch norm. Without batch norm the step equals the plain step up to f32 rounding; with it,
//! when the chunk holds the whole batch.

use super::Trainer;
use crate::error::{Error, Result};
use crate::no_grad;
use crate::tensor::{IntTensor, Tensor};

impl Trainer {
    /// Back-propagates the loss of the batch `both` ([2B, …]: view-1 rows, then view-2 rows)
    /// chunk by chunk into the parameters' gradients; returns the loss (without a graph).
    pub(super) fn grad_cache_backward(
        &mut self,
        both: &Tensor,
        y: &IntTensor,
        b: usize,
        chunk: usize,
    ) -> Result<Tensor> {
        let starts: Vec<usize> = (0..b).step_by(chunk.max(1)).collect();
        let len = |s: usize| chunk.min(b - s);
        // Both views of samples s .. s + c.
        let rows = |s: usize| -> Result<Tensor> {
            let c = len(s);
            Tensor::concat(&[&both.narrow(0, s, c)?, &both.narrow(0, b + s, c)?], 0)
        };
        // 1. Embeddings without a graph (and without keeping batch-norm updates: the second
        //    pass makes them).
        let (mut z1, mut z2) = (Vec::new(), Vec::new());
        no_grad(|| -> Result<()> {
            for &s in &starts {
                let z = self.head.run(&self.encoder.run(&rows(s)?, true)?, true)?;
                let c = len(s);
                z1.push(z.narrow(0, 0, c)?);
                z2.push(z.narrow(0, c, c)?);
            }
            Ok(())
        })?;
        let parts: Vec<&Tensor> = z1.iter().chain(&z2).collect();
        let z = Tensor::concat(&parts, 0)?.detach().requires_grad();
        // 2. The loss of the whole batch and its gradient with respect to the embeddings.
        let labels = (self.cfg.method == "supcon").then_some(y);
        let loss = self
            .loss
            .forward_with(&Self::pair_views(&z, b)?, labels, &[])?;
        loss.backward()?;
        let dz = z.grad().ok_or_else(|| {
            Error::Other(format!(
                "grad_cache: the loss {} gave no gradient for the embeddings",
                self.cfg.loss
            ))
        })?;
        // 3. Each chunk again, with its graph, back-propagating its slice of the gradient.
        for &s in &starts {
            let c = len(s);
            let zc = self
                .head
                .forward(&self.encoder.forward(&rows(s)?, true)?, true)?;
            let g = Tensor::concat(&[&dz.narrow(0, s, c)?, &dz.narrow(0, b + s, c)?], 0)?;
            zc.backward_with(&g)?;
        }
        Ok(loss.detach())
    }
}
