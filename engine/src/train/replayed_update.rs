//! The replayed update: the device work after the gradients — the optimiser's update of every
//! trainable parameter, the weights' health sum and BYOL's EMA of the target networks — is
//! recorded once and re-submitted at every later step, as the forward and backward pass are
//! (`replayed.rs`). It is a segment of its own because host work may sit between the two (a
//! loss with state updates its queue there), so the update replays in those runs too. In a
//! data-parallel run it starts with the gradients' all-reduce, a host step that splits the
//! recording in two (`Context::host_step`).
//!
//! What changes from step to step reaches the recording as device values, computed on the host
//! each step exactly as an op-by-op update computes them (`Optimizer::begin_step`: the
//! learning rate, Adam's bias corrections; τ and 1 − τ of the EMA), so a replayed update
//! writes the same bits as one run op by op. Its inputs: those values, every network's
//! parameters and buffers, the gradients, the optimiser's state; its outputs: the updated
//! trainable parameters, the target networks, the optimiser's new state and the health sum.
//!
//! The first update of a process creates the optimiser's state (its graph differs from every
//! later one), so it runs op by op and the second is recorded; a different set of gradients or
//! state (a parameter that starts or stops getting a gradient) is recorded afresh.

use super::replayed::replay_enabled;
use super::Trainer;
use crate::error::{Error, Result};
use crate::replay::Replay;
use crate::tensor::Tensor;

/// A recorded update and what it was recorded for.
pub(super) struct UpdateReplay {
    replay: Replay,
    /// Which trainable parameters had a gradient and which optimiser slots held state.
    key: (Vec<bool>, Vec<bool>),
    /// Which optimiser slots hold state after the update (the outputs that refill them).
    slots_after: Vec<bool>,
    /// Whether the recording outputs the health sum (there is a trainable parameter).
    health: bool,
}

/// Where a run stands with the replayed update.
#[derive(Default)]
pub(super) enum UpdateState {
    #[default]
    Unrecorded,
    Recorded(Box<UpdateReplay>),
    /// Updates run op by op (replay is off, or kernels are timed one by one).
    Off,
}

impl Trainer {
    /// The update's device work (`Trainer::update_core`), replayed where it can be: the same
    /// parameters, state and health sum as op by op.
    pub(super) fn update_maybe_replayed(
        &mut self,
        values: &[Tensor],
        n_opt: usize,
    ) -> Result<Option<Tensor>> {
        if matches!(self.update_replayed, UpdateState::Unrecorded)
            && (!replay_enabled()? || crate::device::context()?.profiling())
        {
            self.update_replayed = UpdateState::Off;
        }
        if matches!(self.update_replayed, UpdateState::Off) {
            return self.update_core(values, n_opt);
        }
        let grads = self.trainable_grads();
        let key = (
            grads.iter().map(Option::is_some).collect::<Vec<_>>(),
            self.opt
                .slots()
                .iter()
                .map(|s| s.is_some())
                .collect::<Vec<_>>(),
        );
        // The first update creates the state: run op by op (see the module's comment).
        if key.1.is_empty() || key.1.iter().all(|s| !s) {
            return self.update_core(values, n_opt);
        }
        let mut inputs: Vec<Tensor> = values.to_vec();
        inputs.extend(
            self.networks_mut()
                .into_iter()
                .flat_map(|l| l.iter().cloned()),
        );
        inputs.extend(grads.into_iter().flatten());
        inputs.extend(self.opt.slots().into_iter().filter_map(|s| s.clone()));
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let (rec, outputs) = match std::mem::take(&mut self.update_replayed) {
            UpdateState::Recorded(mut r) if r.key == key => {
                let out = r.replay.run(&refs)?;
                self.replay_counts.updates_replayed += 1;
                (r, out)
            }
            _ => self.record_update(&refs, values.len(), n_opt, key)?,
        };
        let health = self.apply_update(&rec, outputs)?;
        self.update_replayed = UpdateState::Recorded(rec);
        Ok(health)
    }

    /// Every trainable parameter's gradient, in the optimiser's order.
    fn trainable_grads(&mut self) -> Vec<Option<Tensor>> {
        let mut params: Vec<&mut Tensor> = self.encoder.trainable_mut();
        params.extend(self.head.trainable_mut());
        if let Some(p) = &mut self.predictor {
            params.extend(p.trainable_mut());
        }
        params.iter().map(|p| p.grad()).collect()
    }

    /// Records the update on private copies of `inputs` (see `update_maybe_replayed`).
    fn record_update(
        &mut self,
        inputs: &[&Tensor],
        n_values: usize,
        n_opt: usize,
        key: (Vec<bool>, Vec<bool>),
    ) -> Result<(Box<UpdateReplay>, Vec<Tensor>)> {
        let sizes: Vec<usize> = self.networks_mut().iter().map(|l| l.len()).collect();
        let online = self.online_slots();
        let n_online = online.len();
        let mut slots_after = Vec::new();
        let mut health_out = false;
        let (replay, outputs) = Replay::record(inputs, |x| {
            let (values, rest) = x.split_at(n_values);
            let mut at = 0;
            let mut lists = Vec::with_capacity(sizes.len());
            for &n in &sizes {
                lists.push(rest[at..at + n].to_vec());
                at += n;
            }
            // The private copies get the gradients, then the optimiser's state (the inputs
            // after the networks: the gradients present, then the state slots held).
            let mut tail = rest[at..].iter();
            let mut has_grad = key.0.iter();
            for (list, (_, trainable)) in lists.iter().zip(&online) {
                for &i in trainable {
                    if has_grad.next() == Some(&true) {
                        list[i].set_grad(tail.next().cloned());
                    }
                }
            }
            let state: Vec<Option<Tensor>> = key
                .1
                .iter()
                .map(|&held| if held { tail.next().cloned() } else { None })
                .collect();
            let saved_state = self.swap_state(state);
            let saved = self.swap_networks(lists);
            let run = self.update_core(values, n_opt);
            let used = self.swap_networks(saved);
            let new_state = self.swap_state(saved_state);
            let health = run?;
            let mut out = Vec::new();
            for (k, list) in used.iter().enumerate() {
                if k < n_online {
                    out.extend(online[k].1.iter().map(|&i| list[i].clone()));
                } else {
                    out.extend(list.iter().cloned()); // the target networks
                }
            }
            slots_after = new_state.iter().map(Option::is_some).collect();
            out.extend(new_state.into_iter().flatten());
            health_out = health.is_some();
            out.extend(health);
            Ok(out)
        })?;
        self.replay_counts.updates_recorded += 1;
        self.replay_counts.update_commands = replay.commands();
        self.replay_counts.update_segments = replay.segments();
        let rec = Box::new(UpdateReplay {
            replay,
            key,
            slots_after,
            health: health_out,
        });
        Ok((rec, outputs))
    }

    /// Puts `state` in the optimiser's slots and returns what they held.
    fn swap_state(&mut self, state: Vec<Option<Tensor>>) -> Vec<Option<Tensor>> {
        self.opt
            .slots()
            .into_iter()
            .zip(state)
            .map(|(slot, s)| std::mem::replace(slot, s))
            .collect()
    }

    /// Sets parameters, target networks and optimiser state from a replayed update's outputs;
    /// returns the health sum.
    fn apply_update(&mut self, r: &UpdateReplay, outputs: Vec<Tensor>) -> Result<Option<Tensor>> {
        let short =
            || Error::Other("a replayed update returned fewer outputs than recorded".into());
        let online = self.online_slots();
        let mut out = outputs.into_iter();
        for (k, list) in self.networks_mut().into_iter().enumerate() {
            match online.get(k) {
                Some((_, trainable)) => {
                    for &i in trainable {
                        list[i] = out.next().ok_or_else(short)?.requires_grad();
                    }
                }
                None => {
                    for p in list.iter_mut() {
                        *p = out.next().ok_or_else(short)?;
                    }
                }
            }
        }
        let mut slots = self.opt.slots();
        if slots.len() != r.slots_after.len() {
            return Err(short());
        }
        for (slot, &held) in slots.iter_mut().zip(&r.slots_after) {
            **slot = if held {
                Some(out.next().ok_or_else(short)?)
            } else {
                None
            };
        }
        Ok(if r.health {
            Some(out.next().ok_or_else(short)?)
        } else {
            None
        })
    }
}
