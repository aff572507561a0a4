//! Layer 3: reverse-mode autograd. `backward` walks the recorded graph in reverse topological
//! order, calling each node's rule (defined beside its op in `ops/`) with gradient recording
//! off, so the backward pass is itself a batch of GPU ops; leaves accumulate their gradients.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};

// Whether ops record the graph lives one layer down (`grad_mode.rs`), where ops read it; it is
// part of autograd's API.
pub use crate::grad_mode::{is_grad_enabled, no_grad, NoGradGuard};

impl Tensor {
    /// Back-propagates from a one-element tensor (seed gradient 1).
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::op(
                "backward",
                format!(
                    "needs a one-element output, got shape {:?}; use backward_with(grad)",
                    self.shape()
                ),
            ));
        }
        self.backward_with(&Tensor::ones(self.shape())?)
    }

    /// Back-propagates a given upstream gradient of this tensor's shape.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::op(
                "backward",
                format!(
                    "gradient shape {:?} differs from output shape {:?}",
                    grad.shape(),
                    self.shape()
                ),
            ));
        }
        if !self.0.requires_grad {
            return Err(Error::op(
                "backward",
                "the output does not depend on any tensor that requires grad",
            ));
        }
        let order = topological_order(self);
        let _guard = NoGradGuard::new();
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(self.0.id, grad.clone());
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.0.id) else {
                continue;
            };
            match &t.0.node {
                Some(node) => {
                    let needs: Vec<bool> = node.inputs.iter().map(|i| i.0.requires_grad).collect();
                    let input_grads = (node.backward)(&g, &needs)?;
                    for (input, gi) in node.inputs.iter().zip(input_grads) {
                        let Some(gi) = gi else { continue };
                        if !input.0.requires_grad {
                            continue;
                        }
                        debug_assert_eq!(
                            gi.shape(),
                            input.shape(),
                            "gradient shape of {}",
                            node.name
                        );
                        let acc = match grads.remove(&input.0.id) {
                            Some(prev) => prev.add(&gi)?,
                            None => gi,
                        };
                        grads.insert(input.0.id, acc);
                    }
                }
                None => {
                    let acc = match t.grad() {
                        Some(prev) => prev.add(&g)?,
                        None => g,
                    };
                    t.set_grad(Some(acc));
                }
            }
        }
        Ok(())
    }
}

/// Post-order over the graph (inputs before outputs), iterative so deep graphs cannot
/// overflow the stack.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.0.id) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = &t.0.node {
            for input in &node.inputs {
                if input.0.requires_grad && !seen.contains(&input.0.id) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
