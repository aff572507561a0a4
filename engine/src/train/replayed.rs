//! Replayed training steps (the execution model's replay, `crate::replay`): the device work
//! of a step — the networks' forward passes, the loss and the whole backward pass — is
//! recorded once and re-submitted at every later step of the same shapes, so the host does not
//! record those ops again (no op calls, plugin calls, shape checks, fusion or descriptor
//! writes; on a GPU the host's recording is what bounds a small model's step).
//!
//! The replayed segment's inputs are the batch, the labels, the two augmentations' seeds
//! (device values: [`crate::with_device_seeds`]) and every parameter and buffer of the
//! networks (copied in each step); its outputs are the loss, the trainable parameters'
//! gradients and the batch-norm buffers' updates (copied out). So the augmentation is part of
//! the recording when both augmentations declare that they draw only on the device (ABI 1.6
//! `draws_on_device`, which `vkgrad verify` checks; the built-in ones do); otherwise it runs
//! op by op before the step and the segment's inputs are the two views. The read-back of the
//! loss stays outside; the optimiser and BYOL's EMA are the next segment
//! (`replayed_update.rs`), which takes the learning rate, Adam's bias corrections and τ as
//! device values. A replayed step computes the same bits as the step run op by op
//! (`engine/tests/train.rs` compares whole runs). `VKGRAD_REPLAY=0` runs every step op by op.
//! The update after the gradients is a segment of its own (`replayed_update.rs`).
//!
//! In a data-parallel run the collectives inside the step (the embeddings' all-gather, batch
//! norm's `replica_sum`, their gradients' all-reduces) are host steps: the recording is split
//! into segments around each, and every replay runs segment, collective, segment, … in the
//! same order on every rank (`Context::host_step`).
//!
//! Not replayed (the steps run op by op, with a note on stderr saying why): a loss that keeps
//! state between calls (MoCo's queue: its host code must run every step), a component that reads
//! values back or draws random numbers inside the step, and `VKGRAD_PROFILE=1` (it times each
//! kernel). GradCache's chunks are all device work: its whole step is recorded as one.

use super::Trainer;
use crate::error::{Error, Result};
use crate::replay::Replay;
use crate::tensor::{IntTensor, Shape, Tensor};

/// Whether training steps are replayed: yes unless `VKGRAD_REPLAY=0` (an op-by-op run, for
/// comparison and bisecting; it computes the same bits).
pub(super) fn replay_enabled() -> Result<bool> {
    match std::env::var("VKGRAD_REPLAY") {
        Err(_) => Ok(true),
        Ok(v) if v.trim() == "1" || v.trim().is_empty() => Ok(true),
        Ok(v) if v.trim() == "0" => Ok(false),
        Ok(v) => Err(Error::Other(format!(
            "VKGRAD_REPLAY={v}: give 1 (record each training step once and replay it, the \
             default) or 0 (run every step op by op)"
        ))),
    }
}

/// A recorded step and what its outputs are.
pub(super) struct StepReplay {
    replay: Replay,
    /// The shapes of its first input (the batch, or the views) and the labels it was
    /// recorded for.
    shapes: (Shape, Shape),
    /// Whether the augmentation is part of the recording (its inputs are then the batch and
    /// the two seeds).
    augmented: bool,
    /// Per trainable parameter (in the optimiser's order): whether the step gives it a
    /// gradient (the same at every replay: the graph is the recorded one).
    grads: Vec<bool>,
}

/// Steps run through a recording in this process: (recorded, replayed).
#[derive(Default, Clone, Copy)]
pub struct Counts {
    pub recorded: u64,
    pub replayed: u64,
    /// Commands (dispatches, copies, fills) in the last recording.
    pub commands: usize,
    /// Whether the last recording holds the augmentation.
    pub augmented: bool,
    /// Command buffers of the last recording (more than one where collectives split it).
    pub segments: usize,
    /// The same for the update (`replayed_update.rs`).
    pub updates_recorded: u64,
    pub updates_replayed: u64,
    pub update_commands: usize,
    pub update_segments: usize,
}

/// Where a run stands with replay.
#[derive(Default)]
pub(super) enum State {
    /// Not recorded yet (or the shapes changed).
    #[default]
    Unrecorded,
    Recorded(Box<StepReplay>),
    /// Steps run op by op (disabled, or the step cannot be replayed).
    Off,
}

impl Trainer {
    /// What replay did in this process: `None` when nothing ran through a recording.
    pub fn replay_summary(&self) -> Option<String> {
        let c = self.replay_counts;
        let mut parts = Vec::new();
        if c.recorded > 0 {
            let what = if c.augmented {
                "augmentation, forward and backward"
            } else {
                "forward and backward"
            };
            let split = if c.segments > 1 {
                format!(" in {} segments around its collectives", c.segments)
            } else {
                String::new()
            };
            parts.push(format!(
                "{} steps replayed, {} recorded ({} device commands{split} per step's {what})",
                c.replayed, c.recorded, c.commands
            ));
        }
        if c.updates_recorded > 0 {
            let split = if c.update_segments > 1 {
                format!(
                    " in {} segments around the gradients' all-reduce",
                    c.update_segments
                )
            } else {
                String::new()
            };
            parts.push(format!(
                "{} updates replayed, {} recorded ({} device commands{split} per update)",
                c.updates_replayed, c.updates_recorded, c.update_commands
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "execution: {} (VKGRAD_REPLAY=0 runs them op by op)",
                parts.join("; ")
            )
        })
    }

    /// Whether this step may be replayed; the first time a run cannot, says why on stderr.
    fn replayable(&mut self) -> Result<bool> {
        if matches!(self.replayed, State::Off) {
            return Ok(false);
        }
        let why = if !replay_enabled()? {
            None // VKGRAD_REPLAY=0 asked for it: nothing to say
        } else if crate::device::context()?.profiling() {
            Some(
                "VKGRAD_PROFILE times each kernel as it runs; a replayed step's kernels run in \
                 one submission"
                    .to_string(),
            )
        } else if self.loss.save_state()?.is_some() {
            Some(format!(
                "the loss {} keeps state between steps, which its host code updates",
                self.cfg.loss
            ))
        } else {
            return Ok(true);
        };
        if let Some(why) = why {
            eprintln!("note: training steps run op by op, not replayed: {why}");
        }
        self.replayed = State::Off;
        Ok(false)
    }

    /// Every network's parameter list, in the order the recording takes them: encoder, head,
    /// predictor, target encoder, target head.
    pub(super) fn networks_mut(&mut self) -> Vec<&mut Vec<Tensor>> {
        let mut v = vec![&mut self.encoder.params, &mut self.head.params];
        if let Some(p) = &mut self.predictor {
            v.push(&mut p.params);
        }
        if let Some((te, th)) = &mut self.target {
            v.push(&mut te.params);
            v.push(&mut th.params);
        }
        v
    }

    /// The online networks (whose buffers a training forward updates) with their buffer and
    /// trainable slots.
    pub(super) fn online_slots(&self) -> Vec<(Vec<usize>, Vec<usize>)> {
        let mut v = vec![self.encoder.slots(), self.head.slots()];
        if let Some(p) = &self.predictor {
            v.push(p.slots());
        }
        v
    }

    /// Puts `lists` in place of the networks' parameter lists and returns the old ones.
    pub(super) fn swap_networks(&mut self, lists: Vec<Vec<Tensor>>) -> Vec<Vec<Tensor>> {
        self.networks_mut()
            .into_iter()
            .zip(lists)
            .map(|(slot, l)| std::mem::replace(slot, l))
            .collect()
    }

    /// The step's augmentation (of batch `x`, view i drawing from `seeds[i]`), forward and
    /// backward pass, replayed where it can be (see the module's comment), else run op by op:
    /// the loss, with every trainable parameter's gradient set and the networks' buffers
    /// updated, as [`Trainer::step_backward`] leaves them.
    pub(super) fn backward_maybe_replayed(
        &mut self,
        x: &Tensor,
        y: &IntTensor,
        seeds: [u64; 2],
    ) -> Result<Tensor> {
        // Two equal seeds (a 2^-64 chance) could not be told apart in the recording: that
        // step alone runs op by op.
        let augmented = self.augs_on_device && seeds[0] != seeds[1];
        if !self.replayable()? || (self.augs_on_device && !augmented) {
            let (both, b) = self.views(x, seeds)?;
            return self.step_backward(&both, y, b);
        }
        let (first, b) = if augmented {
            (x.clone(), super::parallel::shard(x.shape()[0]).1)
        } else {
            self.views(x, seeds)?
        };
        let mut ints = vec![y.clone()];
        if augmented {
            ints.push(crate::seed_tensor(seeds[0])?);
            ints.push(crate::seed_tensor(seeds[1])?);
        }
        let ints: Vec<&IntTensor> = ints.iter().collect();
        let shapes: (Shape, Shape) = (first.shape().into(), y.shape().into());
        let params: Vec<Tensor> = self
            .networks_mut()
            .into_iter()
            .flat_map(|l| l.iter().cloned())
            .collect();
        let mut inputs: Vec<&Tensor> = vec![&first];
        inputs.extend(&params);
        let (grads, outputs) = match std::mem::take(&mut self.replayed) {
            State::Recorded(mut r) if r.shapes == shapes && r.augmented == augmented => {
                let out = r.replay.run_with_ints(&inputs, &ints)?;
                let grads = r.grads.clone();
                self.replay_counts.replayed += 1;
                self.replayed = State::Recorded(r);
                (grads, out)
            }
            _ => match self.record(&inputs, &ints, b, shapes, augmented.then_some(seeds)) {
                Ok(r) => r,
                Err(Error::NotReplayable(why)) => {
                    eprintln!("note: training steps run op by op, not replayed: {why}");
                    self.replayed = State::Off;
                    let (both, b) = self.views(x, seeds)?;
                    return self.step_backward(&both, y, b);
                }
                Err(e) => return Err(e),
            },
        };
        self.apply(&grads, outputs)
    }

    /// Records the step on private copies of `inputs` (the views, or the batch when `seeds`
    /// are given, then every network's parameters) and `ints` (the labels, then the two seeds
    /// as device values when given: the augmentation is then recorded too); returns the
    /// gradient mask and the first run's outputs.
    fn record(
        &mut self,
        inputs: &[&Tensor],
        ints: &[&IntTensor],
        b: usize,
        shapes: (Shape, Shape),
        seeds: Option<[u64; 2]>,
    ) -> Result<(Vec<bool>, Vec<Tensor>)> {
        if seeds.is_none() && self.replay_counts.recorded == 0 {
            eprintln!(
                "note: the augmentation {} does not declare that it draws only on the device \
                 (`draws_on_device`, ABI 1.6): it runs op by op before each replayed step",
                self.cfg.augment
            );
        }
        let sizes: Vec<usize> = self.networks_mut().iter().map(|l| l.len()).collect();
        let online = self.online_slots();
        let mut grads = Vec::new();
        let (replay, outputs) = Replay::record_with_ints(inputs, ints, |x, ints| {
            let (both, b) = match seeds {
                // The views drawn inside the recording, from the seeds' device values.
                Some(s) => crate::with_device_seeds(&[(s[0], &ints[1]), (s[1], &ints[2])], || {
                    self.views(&x[0], s)
                })?,
                None => (x[0].clone(), b),
            };
            // The networks run on the recording's private copies of their parameters.
            let mut lists = Vec::with_capacity(sizes.len());
            let mut at = 1;
            for &n in &sizes {
                lists.push(x[at..at + n].to_vec());
                at += n;
            }
            let saved = self.swap_networks(lists);
            let run = self.step_backward(&both, &ints[0], b);
            let used = self.swap_networks(saved);
            let loss = run?;
            let mut out = vec![loss.detach()];
            for (list, (buffers, trainable)) in used.iter().zip(&online) {
                for &i in trainable {
                    let g = list[i].grad();
                    grads.push(g.is_some());
                    out.extend(g);
                }
                out.extend(buffers.iter().map(|&i| list[i].clone()));
            }
            Ok(out)
        })?;
        self.replay_counts.recorded += 1;
        self.replay_counts.commands = replay.commands();
        self.replay_counts.augmented = seeds.is_some();
        self.replay_counts.segments = replay.segments();
        self.replayed = State::Recorded(Box::new(StepReplay {
            replay,
            shapes,
            augmented: seeds.is_some(),
            grads: grads.clone(),
        }));
        Ok((grads, outputs))
    }

    /// Sets the gradients and buffers from a replay's outputs; returns the loss.
    fn apply(&mut self, grads: &[bool], outputs: Vec<Tensor>) -> Result<Tensor> {
        let online = self.online_slots();
        let mut out = outputs.into_iter();
        let short = || Error::Other("a replayed step returned fewer outputs than recorded".into());
        let loss = out.next().ok_or_else(short)?;
        let mut has_grad = grads.iter();
        for (list, (buffers, trainable)) in self.networks_mut().into_iter().zip(&online) {
            for &i in trainable {
                let g = if *has_grad.next().ok_or_else(short)? {
                    Some(out.next().ok_or_else(short)?)
                } else {
                    None
                };
                list[i].set_grad(g);
            }
            for &i in buffers {
                list[i] = out.next().ok_or_else(short)?;
            }
        }
        Ok(loss)
    }
}
