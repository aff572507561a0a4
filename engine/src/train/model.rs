//! A network part made by a plugin encoder component (encoder, projection head, predictor):
//! the instance, its parameters and buffers as named tensors, a forward that keeps the buffers'
//! training-mode updates, and export / import by name for checkpoints.

use crate::error::{Error, Result};
use crate::plugin::{init_parameter, Instance, Registry};
use crate::tensor::Tensor;
use crate::Rng;
use serde_json::Value;
use vkgrad_plugin::ParamSpec;

pub struct Module {
    /// Prefix of the parameter names (`encoder`, `head`, `predictor`, `target.encoder`, ...).
    pub prefix: String,
    pub component: String,
    pub options: Value,
    inst: Instance,
    specs: Vec<ParamSpec>,
    pub params: Vec<Tensor>,
}

impl Module {
    /// Instantiates encoder component `name` with `options` and draws its parameters.
    pub fn new(
        reg: &Registry,
        name: &str,
        options: Value,
        prefix: &str,
        rng: &mut Rng,
    ) -> Result<Module> {
        let comp = reg.find("encoder", name)?;
        let inst = comp.instantiate(&options.to_string())?;
        let specs = inst.describe()?.parameters;
        let params = specs
            .iter()
            .map(|s| {
                Ok(if s.buffer {
                    init_parameter(s, rng)?
                } else {
                    init_parameter(s, rng)?.requires_grad()
                })
            })
            .collect::<Result<_>>()?;
        Ok(Module {
            prefix: prefix.into(),
            component: comp.name.clone(),
            options,
            inst,
            specs,
            params,
        })
    }

    /// Another instance of the same component and options, with copies of the values (no
    /// gradients): BYOL's target network.
    pub fn frozen_copy(&self, reg: &Registry, prefix: &str) -> Result<Module> {
        let mut m = Module::new(
            reg,
            &self.component,
            self.options.clone(),
            prefix,
            &mut Rng::new(0),
        )?;
        m.params = self.params.iter().map(Tensor::detach).collect();
        Ok(m)
    }

    pub fn input_shape(&self) -> Result<Vec<usize>> {
        Ok(self.inst.describe()?.input_shape)
    }

    /// Runs the component without keeping buffer updates (evaluation, BYOL's target).
    pub fn run(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        Ok(self.inst.encode(x, &self.params, training)?.0)
    }

    /// Runs the component; in training mode its buffers (batch norm's running statistics)
    /// take the values the component returns.
    pub fn forward(&mut self, x: &Tensor, training: bool) -> Result<Tensor> {
        let (y, updates) = self.inst.encode(x, &self.params, training)?;
        if training {
            let slots: Vec<usize> = (0..self.specs.len())
                .filter(|&i| self.specs[i].buffer)
                .collect();
            for (slot, u) in slots.into_iter().zip(updates) {
                self.params[slot] = u.detach();
            }
        }
        Ok(y)
    }

    /// The indices of the buffers and of the learnable parameters in `params`, each in order.
    pub fn slots(&self) -> (Vec<usize>, Vec<usize>) {
        (0..self.specs.len()).partition(|&i| self.specs[i].buffer)
    }

    /// The learnable parameters, for the optimiser.
    pub fn trainable_mut(&mut self) -> Vec<&mut Tensor> {
        self.params
            .iter_mut()
            .zip(&self.specs)
            .filter(|(_, s)| !s.buffer)
            .map(|(p, _)| p)
            .collect()
    }

    /// Every parameter and buffer under its full name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.specs
            .iter()
            .zip(&self.params)
            .map(|(s, p)| (format!("{}.{}", self.prefix, s.name), p.clone()))
            .collect()
    }

    /// Sets every parameter from `get(full name)`; a missing name or wrong shape is an error
    /// naming it.
    pub fn load_named(&mut self, get: &dyn Fn(&str) -> Result<Option<Tensor>>) -> Result<()> {
        for (s, p) in self.specs.iter().zip(self.params.iter_mut()) {
            let name = format!("{}.{}", self.prefix, s.name);
            let t = get(&name)?
                .ok_or_else(|| Error::Other(format!("checkpoint has no tensor `{name}`")))?;
            if t.shape() != s.shape.as_slice() {
                return Err(Error::Other(format!(
                    "checkpoint tensor `{name}` has shape {:?}; the model needs {:?}",
                    t.shape(),
                    s.shape
                )));
            }
            *p = if s.buffer { t } else { t.requires_grad() };
        }
        Ok(())
    }

    /// ξ ← τ ξ + (1 − τ) θ for every parameter and buffer (BYOL's target update; running
    /// statistics follow the online network's the same way). τ and 1 − τ come as rank-0
    /// device values (they change every step; a replayed update reads them from the device).
    pub fn ema_from(&mut self, online: &Module, tau: &Tensor, rest: &Tensor) -> Result<()> {
        crate::no_grad(|| {
            for (t, o) in self.params.iter_mut().zip(&online.params) {
                *t = t.mul(tau)?.add(&o.detach().mul(rest)?)?;
                t.realize()?; // read by every later step
            }
            Ok(())
        })
    }
}
