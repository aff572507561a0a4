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
                    // State is read by the next step: computed once now (`Tensor::realize`).
                    nv.realize()?;
                    *v = Some(nv);
                    s
                } else {
                    g
                };
                **p = p.sub(&step.mul_scalar(self.lr)?)?.requires_grad();
                p.realize()?;
            }
            Ok(())
        })
    }
}

impl Sgd {
    /// The momentum buffers, by parameter index (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        indexed("velocity", &self.velocity)
    }
    pub fn load_state(&mut self, n_params: usize, _steps: u64, get: StateReader) -> Result<()> {
        self.velocity = restore("velocity", n_params, get)?;
        Ok(())
    }
}

/// Reads a saved state tensor by name: `Ok(None)` when the checkpoint does not hold it (a
/// parameter that had no update yet), an error when it holds it but it cannot be restored.
pub type StateReader<'a> = &'a dyn Fn(&str) -> Result<Option<Tensor>>;

/// The inverse of `indexed`: `what.i` for each of `n` parameters (absent = no state yet).
fn restore(what: &str, n: usize, get: StateReader) -> Result<Vec<Option<Tensor>>> {
    (0..n).map(|i| get(&format!("{what}.{i}"))).collect()
}

/// What the training loop needs of an optimiser: one update at a learning rate (the schedule
/// lives outside), and its state by name for checkpoints.
pub trait Optimizer {
    /// Updates `params` from their gradients at learning rate `lr`.
    fn update(&mut self, lr: f32, params: &mut [&mut Tensor]) -> Result<()>;
    /// The state tensors by name (momentum buffers, moments).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores the state of `n_params` parameters after `steps` updates.
    fn restore(&mut self, n_params: usize, steps: u64, get: StateReader) -> Result<()>;
}

/// The optimiser a run's config names (`sgd`, `adamw`, `lars`); `None` for another name.
pub fn by_name(
    name: &str,
    lr: f32,
    weight_decay: f32,
    momentum: f32,
) -> Option<Box<dyn Optimizer>> {
    Some(match name {
        "sgd" => {
            let mut o = Sgd::new(lr, momentum);
            o.weight_decay = weight_decay;
            Box::new(o)
        }
        "lars" => Box::new(Lars::new(lr, momentum, weight_decay)),
        "adamw" => Box::new(AdamW::new(lr, weight_decay)),
        _ => return None,
    })
}

macro_rules! optimizer {
    ($t:ty) => {
        impl Optimizer for $t {
            fn update(&mut self, lr: f32, params: &mut [&mut Tensor]) -> Result<()> {
                self.lr = lr;
                self.step(params)
            }
            fn state(&self) -> Vec<(String, Tensor)> {
                <$t>::state(self)
            }
            fn restore(&mut self, n_params: usize, steps: u64, get: StateReader) -> Result<()> {
                self.load_state(n_params, steps, get)
            }
        }
    };
}
optimizer!(Sgd);
optimizer!(AdamW);
optimizer!(Lars);

fn indexed(what: &str, v: &[Option<Tensor>]) -> Vec<(String, Tensor)> {
    v.iter()
        .enumerate()
        .filter_map(|(i, t)| t.clone().map(|t| (format!("{what}.{i}"), t)))
        .collect()
}

fn check_finite(op: &'static str, values: &[(&str, f32)]) -> Result<()> {
    if let Some((name, v)) = values.iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::op(op, format!("{name} must be finite, got {v}")));
    }
    Ok(())
}

/// AdamW, as `torch.optim.AdamW`: p ← p − lr wd p; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
/// p ← p − lr m̂ / (sqrt(v̂) + ε) with bias-corrected m̂ = m / (1−β1^t), v̂ = v / (1−β2^t).
pub struct AdamW {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    t: u64,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
}

impl AdamW {
    pub fn new(lr: f32, weight_decay: f32) -> AdamW {
        AdamW {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }

    pub fn step(&mut self, params: &mut [&mut Tensor]) -> Result<()> {
        check_finite(
            "adamw",
            &[
                ("lr", self.lr),
                ("weight decay", self.weight_decay),
                ("eps", self.eps),
            ],
        )?;
        self.t += 1;
        self.m.resize(params.len(), None);
        self.v.resize(params.len(), None);
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        no_grad(|| {
            for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let Some(g) = p.grad() else { continue };
                let nm = match m.take() {
                    Some(prev) => prev.mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?,
                    None => g.mul_scalar(1.0 - b1)?,
                };
                let g2 = g.mul(&g)?.mul_scalar(1.0 - b2)?;
                let nv = match v.take() {
                    Some(prev) => prev.mul_scalar(b2)?.add(&g2)?,
                    None => g2,
                };
                let denom = nv.mul_scalar(1.0 / c2)?.sqrt()?.add_scalar(self.eps)?;
                let step = nm.mul_scalar(self.lr / c1)?.div(&denom)?;
                // The moments are read again next step: each computed once now (one fused
                // kernel each), then the update reads them (`Tensor::realize`).
                nm.realize()?;
                nv.realize()?;
                let decayed = p.mul_scalar(1.0 - self.lr * self.weight_decay)?;
                **p = decayed.sub(&step)?.requires_grad();
                p.realize()?;
                *m = Some(nm);
                *v = Some(nv);
            }
            Ok(())
        })
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = indexed("m", &self.m);
        s.extend(indexed("v", &self.v));
        s
    }
    pub fn load_state(&mut self, n_params: usize, steps: u64, get: StateReader) -> Result<()> {
        self.t = steps;
        self.m = restore("m", n_params, get)?;
        self.v = restore("v", n_params, get)?;
        Ok(())
    }
}

/// LARS (You et al. 2017) as used by SimCLR and BYOL: for weights (rank ≥ 2)
/// g' = g + wd p and g' ← g' · η ‖p‖ / ‖g'‖ (1 where either norm is 0); biases and batch-norm
/// parameters (rank 1) skip both decay and adaptation; then v ← μ v + g', p ← p − lr v.
/// The trust ratio is computed on the device (no read-back per parameter).
pub struct Lars {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub trust: f32,
    velocity: Vec<Option<Tensor>>,
}

impl Lars {
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Lars {
        Lars {
            lr,
            momentum,
            weight_decay,
            trust: 0.001,
            velocity: Vec::new(),
        }
    }

    pub fn step(&mut self, params: &mut [&mut Tensor]) -> Result<()> {
        check_finite(
            "lars",
            &[
                ("lr", self.lr),
                ("momentum", self.momentum),
                ("weight decay", self.weight_decay),
                ("trust coefficient", self.trust),
            ],
        )?;
        self.velocity.resize(params.len(), None);
        no_grad(|| {
            for (p, v) in params.iter_mut().zip(self.velocity.iter_mut()) {
                let Some(mut g) = p.grad() else { continue };
                if p.rank() >= 2 {
                    if self.weight_decay != 0.0 {
                        g = g.add(&p.mul_scalar(self.weight_decay)?)?;
                    }
                    let pn = p.mul(p)?.sum_all()?.sqrt()?;
                    let gn = g.mul(&g)?.sum_all()?.sqrt()?;
                    let both = pn.gt_scalar(0.0)?.mul(&gn.gt_scalar(0.0)?)?;
                    // ratio = η ‖p‖ / ‖g‖ where both are positive, else 1 (the division by a
                    // zero norm is replaced before it is used).
                    let safe_gn = Tensor::where_(&both, &gn, &Tensor::ones(&[])?)?;
                    let ratio = pn.div(&safe_gn)?.mul_scalar(self.trust)?;
                    let ratio = Tensor::where_(&both, &ratio, &Tensor::ones(&[])?)?;
                    g = g.mul(&ratio)?;
                }
                let nv = match v.take() {
                    Some(prev) => prev.mul_scalar(self.momentum)?.add(&g)?,
                    None => g,
                };
                nv.realize()?;
                **p = p.sub(&nv.mul_scalar(self.lr)?)?.requires_grad();
                p.realize()?;
                *v = Some(nv);
            }
            Ok(())
        })
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        indexed("velocity", &self.velocity)
    }
    pub fn load_state(&mut self, n_params: usize, _steps: u64, get: StateReader) -> Result<()> {
        self.velocity = restore("velocity", n_params, get)?;
        Ok(())
    }
}
