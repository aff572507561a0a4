//! Optimisers. Parameters are immutable tensors, so a step replaces each parameter with its
//! updated value (a fresh leaf that records gradients).

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// SGD with momentum, Nesterov and weight decay, as `torch.optim.SGD`:
/// g' = g + wd p;  v = mu v + g';  step = nesterov ? g' + mu v : v;  p = p - lr step.
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    velocity: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(lr: f32, momentum: f32) -> Sgd {
        Sgd {
            lr,
            momentum,
            nesterov: false,
            weight_decay: 0.0,
            velocity: Vec::new(),
        }
    }

    /// Updates `params` in place from their gradients (a parameter without one is left as is)
    /// and clears the gradients.
    pub fn step(&mut self, params: &mut [&mut Tensor]) -> Result<()> {
        if !(self.lr.is_finite() && self.momentum.is_finite() && self.weight_decay.is_finite()) {
            return Err(Error::op(
                "sgd",
                format!(
                    "lr {}, momentum {}, weight decay {} must be finite",
                    self.lr, self.momentum, self.weight_decay
                ),
            ));
        }
        self.velocity.resize(params.len(), None);
        no_grad(|| {
            for (p, v) in params.iter_mut().zip(self.velocity.iter_mut()) {
                let Some(mut g) = p.grad() else { continue };
                if self.weight_decay != 0.0 {
                    g = g.add(&p.mul_scalar(self.weight_decay)?)?;
                }
                let step = if self.momentum != 0.0 {
                    let nv = match v.take() {
                        Some(prev) => prev.mul_scalar(self.momentum)?.add(&g)?,
                        None => g.clone(),
                    };
                    let s = if self.nesterov {
                        g.add(&nv.mul_scalar(self.momentum)?)?
                    } else {
                        nv.clone()
                    };
                    *v = Some(nv);
                    s
                } else {
                    g
                };
                **p = p.sub(&step.mul_scalar(self.lr)?)?.requires_grad();
            }
            Ok(())
        })
    }
}
