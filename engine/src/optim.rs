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
        let values = per_step(self.begin_step()?)?;
        self.step_with(&values, params)
    }

    /// The per-step values of the next update (see [`Optimizer::begin_step`]): `[lr]`.
    fn begin_step(&mut self) -> Result<Vec<f32>> {
        if !(self.lr.is_finite() && self.momentum.is_finite() && self.weight_decay.is_finite()) {
            return Err(Error::op(
                "sgd",
                format!(
                    "lr {}, momentum {}, weight decay {} must be finite",
                    self.lr, self.momentum, self.weight_decay
                ),
            ));
        }
        Ok(vec![self.lr])
    }

    /// The update, with the per-step values of [`Sgd::begin_step`] as device scalars.
    fn step_with(&mut self, values: &[Tensor], params: &mut [&mut Tensor]) -> Result<()> {
        let [lr] = values else {
            return Err(values_error("sgd", 1, values));
        };
        self.velocity.resize(params.len(), None);
        no_grad(|| {
            for (p, v) in params.iter_mut().zip(self.velocity.iter_mut()) {
                let Some(mut g) = p.grad() else { continue };
                if self.weight_decay != 0.0 {
                    g = g.add(&p.mul_scalar(self.weight_decay)?)?;
                }
                let (step, nv) = if self.momentum != 0.0 {
                    let nv = match v.take() {
                        Some(prev) => prev.mul_scalar(self.momentum)?.add(&g)?,
                        None => g.clone(),
                    };
                    let s = if self.nesterov {
                        g.add(&nv.mul_scalar(self.momentum)?)?
                    } else {
                        nv.clone()
                    };
                    (s, Some(nv))
                } else {
                    (g, None)
                };
                **p = p.sub(&step.mul(lr)?)?.requires_grad();
                // The parameter and the state are read by the next step: computed now, in
                // one kernel (`Tensor::realize_all`).
                match &nv {
                    Some(nv) => Tensor::realize_all(&[nv, p])?,
                    None => p.realize()?,
                }
                if nv.is_some() {
                    *v = nv;
                }
            }
            Ok(())
        })
    }
}

impl Sgd {
    fn slots(&mut self) -> Vec<&mut Option<Tensor>> {
        self.velocity.iter_mut().collect()
    }

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
///
/// An update is split in two so it can be replayed (`crate::replay`): [`Optimizer::begin_step`]
/// computes on the host what changes from step to step (the learning rate, Adam's bias
/// corrections) and advances the step count; [`Optimizer::update_with`] does the device work
/// with those values as device scalars, so a recording of it is right at every later step.
/// `update` is the two together, and computes the same bits.
pub trait Optimizer {
    /// Updates `params` from their gradients at learning rate `lr`.
    fn update(&mut self, lr: f32, params: &mut [&mut Tensor]) -> Result<()> {
        let values = per_step(self.begin_step(lr)?)?;
        self.update_with(&values, params)
    }
    /// The next update's per-step values at learning rate `lr` (host arithmetic); counts the
    /// step.
    fn begin_step(&mut self, lr: f32) -> Result<Vec<f32>>;
    /// The update, its per-step values (from `begin_step`) given as rank-0 tensors.
    fn update_with(&mut self, values: &[Tensor], params: &mut [&mut Tensor]) -> Result<()>;
    /// Every state slot in a fixed order (for replay: a recorded update reads and writes them
    /// as inputs and outputs); empty before the first update.
    fn slots(&mut self) -> Vec<&mut Option<Tensor>>;
    /// The state tensors by name (momentum buffers, moments).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores the state of `n_params` parameters after `steps` updates.
    fn restore(&mut self, n_params: usize, steps: u64, get: StateReader) -> Result<()>;
}

/// Per-step values as rank-0 device tensors.
fn per_step(values: Vec<f32>) -> Result<Vec<Tensor>> {
    values.into_iter().map(Tensor::scalar).collect()
}

fn values_error(op: &'static str, want: usize, got: &[Tensor]) -> Error {
    Error::op(
        op,
        format!(
            "the update takes {want} per-step value(s), got {} (a bug in the caller)",
            got.len()
        ),
    )
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
            fn begin_step(&mut self, lr: f32) -> Result<Vec<f32>> {
                self.lr = lr;
                <$t>::begin_step(self)
            }
            fn update_with(&mut self, values: &[Tensor], params: &mut [&mut Tensor]) -> Result<()> {
                self.step_with(values, params)
            }
            fn slots(&mut self) -> Vec<&mut Option<Tensor>> {
                <$t>::slots(self)
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
        let values = per_step(self.begin_step()?)?;
        self.step_with(&values, params)
    }

    /// Counts the step; its per-step values: `[lr / c1, 1 / c2, 1 − lr wd]` with the bias
    /// corrections c1 = 1 − β1^t, c2 = 1 − β2^t.
    fn begin_step(&mut self) -> Result<Vec<f32>> {
        check_finite(
            "adamw",
            &[
                ("lr", self.lr),
                ("weight decay", self.weight_decay),
                ("eps", self.eps),
            ],
        )?;
        self.t += 1;
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        Ok(vec![
            self.lr / c1,
            1.0 / c2,
            1.0 - self.lr * self.weight_decay,
        ])
    }

    fn step_with(&mut self, values: &[Tensor], params: &mut [&mut Tensor]) -> Result<()> {
        let [lr_c1, inv_c2, decay] = values else {
            return Err(values_error("adamw", 3, values));
        };
        self.m.resize(params.len(), None);
        self.v.resize(params.len(), None);
        let (b1, b2) = self.betas;
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
                let denom = nv.mul(inv_c2)?.sqrt()?.add_scalar(self.eps)?;
                let step = nm.mul(lr_c1)?.div(&denom)?;
                let decayed = p.mul(decay)?;
                **p = decayed.sub(&step)?.requires_grad();
                // The moments and the parameter are read again next step: computed now, in
                // one kernel that stores all three (`Tensor::realize_all`).
                Tensor::realize_all(&[&nm, &nv, p])?;
                *m = Some(nm);
                *v = Some(nv);
            }
            Ok(())
        })
    }

    fn slots(&mut self) -> Vec<&mut Option<Tensor>> {
        self.m.iter_mut().chain(self.v.iter_mut()).collect()
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
        let values = per_step(self.begin_step()?)?;
        self.step_with(&values, params)
    }

    /// The per-step values of the next update: `[lr]`.
    fn begin_step(&mut self) -> Result<Vec<f32>> {
        check_finite(
            "lars",
            &[
                ("lr", self.lr),
                ("momentum", self.momentum),
                ("weight decay", self.weight_decay),
                ("trust coefficient", self.trust),
            ],
        )?;
        Ok(vec![self.lr])
    }

    fn step_with(&mut self, values: &[Tensor], params: &mut [&mut Tensor]) -> Result<()> {
        let [lr] = values else {
            return Err(values_error("lars", 1, values));
        };
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
                **p = p.sub(&nv.mul(lr)?)?.requires_grad();
                Tensor::realize_all(&[&nv, p])?;
                *v = Some(nv);
            }
            Ok(())
        })
    }

    fn slots(&mut self) -> Vec<&mut Option<Tensor>> {
        self.velocity.iter_mut().collect()
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        indexed("velocity", &self.velocity)
    }
    pub fn load_state(&mut self, n_params: usize, _steps: u64, get: StateReader) -> Result<()> {
        self.velocity = restore("velocity", n_params, get)?;
        Ok(())
    }
}
