//! Replayed steps: a function of tensors whose shapes do not change (a training step) is
//! recorded once into a command buffer and then re-submitted, without running its host code
//! again — no op calls, shape checks, kernel choice, fusion or descriptor writes, only a
//! submit (the Vulkan form of CUDA graphs).
//!
//! The recording owns private copies of its inputs: [`Replay::run`] copies new inputs into
//! them, submits the recorded commands, and returns copies of the outputs, so tensors keep
//! their value semantics (nothing a caller holds is overwritten). Everything the step reads
//! or writes stays out of the buffer pool while the recording lives. What the step bakes in at
//! recording: scalars (they are push constants — pass values that change per step, such as a
//! learning rate, as one-element tensors) and constants it captured from its environment. It
//! may not read values back (there is no host code at replay) nor draw random numbers with a
//! seed of the host (it would be baked in: draw them outside and pass them in, or pass the
//! seed in as an integer input and name it with `ops::random::with_device_seeds`); both are
//! errors while recording.
//! A replayed step computes bit-identically to running it again (`tests/tests/replay.rs`).

use crate::device::{context, Context, Recorded};
use crate::error::{Error, Result};
use crate::tensor::{IntTensor, Shape, Tensor};

/// A recorded step, replayed by [`Replay::run`].
pub struct Replay {
    /// Private inputs: the step's arguments; `run` copies new values into them.
    inputs: Vec<Tensor>,
    /// Private integer inputs (labels, indices), likewise. They hold no host copy of their
    /// values, so a step that would read them on the host (and bake them into the recording)
    /// reads them back instead, which is refused while recording.
    ints: Vec<IntTensor>,
    /// The step's outputs, computed by each replay into the same buffers.
    outputs: Vec<Tensor>,
    recorded: Option<Recorded>,
}

impl Replay {
    /// Runs `step` on copies of `inputs` while recording its device work, and returns the
    /// recording and the step's outputs. An input that requires a gradient is passed to the
    /// step as a leaf that requires one too (a training step's parameters).
    pub fn record(
        inputs: &[&Tensor],
        step: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<(Replay, Vec<Tensor>)> {
        Replay::record_with_ints(inputs, &[], |x, _| step(x))
    }

    /// [`Replay::record`] with integer inputs too. When the step fails because it did
    /// something a replay cannot repeat (read a value back, drew random numbers), the error is
    /// [`Error::NotReplayable`], whatever the step (a plugin) made of the refusal.
    pub fn record_with_ints(
        inputs: &[&Tensor],
        ints: &[&IntTensor],
        step: impl FnOnce(&[Tensor], &[IntTensor]) -> Result<Vec<Tensor>>,
    ) -> Result<(Replay, Vec<Tensor>)> {
        let ctx = context()?;
        let private = inputs
            .iter()
            .map(|t| {
                let c = copy_of(t)?;
                Ok(if t.is_requires_grad() {
                    c.requires_grad()
                } else {
                    c
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let private_ints = ints
            .iter()
            .map(|t| int_copy_of(t))
            .collect::<Result<Vec<_>>>()?;
        ctx.begin_capture()?;
        let capture = CaptureGuard(Some(ctx));
        let run = (|| {
            let outputs = step(&private, &private_ints)?;
            for o in &outputs {
                o.storage()?;
            }
            Ok(outputs)
        })();
        let outputs = match run {
            Ok(o) => o,
            Err(e) => {
                let refused = ctx.capture_refusal();
                capture.end(false)?;
                return Err(match refused {
                    Some(why) => Error::NotReplayable(why),
                    None => e,
                });
            }
        };
        let recorded = capture.end(true)?;
        let mut replay = Replay {
            inputs: private,
            ints: private_ints,
            // The outputs' buffers are what the recording writes; their graph is not needed.
            outputs: outputs.iter().map(Tensor::detach).collect(),
            recorded,
        };
        let out = replay.submit_and_copy()?;
        Ok((replay, out))
    }

    /// Runs the recorded step on new `inputs` (the shapes recorded) and returns its outputs.
    pub fn run(&mut self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.run_with_ints(inputs, &[])
    }

    /// [`Replay::run`] for a step recorded with integer inputs.
    pub fn run_with_ints(
        &mut self,
        inputs: &[&Tensor],
        ints: &[&IntTensor],
    ) -> Result<Vec<Tensor>> {
        let counts = (inputs.len(), ints.len());
        if counts != (self.inputs.len(), self.ints.len()) {
            return Err(Error::op(
                "replay",
                format!(
                    "the step was recorded with {} inputs and {} integer inputs, got {} and {}",
                    self.inputs.len(),
                    self.ints.len(),
                    counts.0,
                    counts.1
                ),
            ));
        }
        let new_shapes = inputs
            .iter()
            .map(|t| t.shape())
            .chain(ints.iter().map(|t| t.shape()));
        let old_shapes = self
            .inputs
            .iter()
            .map(|t| t.shape())
            .chain(self.ints.iter().map(|t| t.shape()));
        for (i, (new, old)) in new_shapes.zip(old_shapes).enumerate() {
            if new != old {
                return Err(Error::op(
                    "replay",
                    format!(
                        "input {i} has shape {new:?}, the step was recorded with {old:?} (record it again for new shapes)"
                    ),
                ));
            }
        }
        let ctx = context()?;
        for (new, old) in inputs.iter().zip(&self.inputs) {
            ctx.copy(new.storage()?, old.storage()?, 4 * new.numel() as u64)?;
        }
        for (new, old) in ints.iter().zip(&self.ints) {
            ctx.copy(&new.storage, &old.storage, 4 * new.numel() as u64)?;
        }
        self.submit_and_copy()
    }

    /// Commands in the recording (dispatches, copies and fills).
    pub fn commands(&self) -> usize {
        self.recorded.as_ref().map_or(0, |r| r.commands)
    }

    /// Command buffers in the recording: one, plus one per host step (a collective) that
    /// splits it.
    pub fn segments(&self) -> usize {
        self.recorded.as_ref().map_or(0, |r| r.segments())
    }

    fn submit_and_copy(&mut self) -> Result<Vec<Tensor>> {
        let ctx = context()?;
        if let Some(r) = &mut self.recorded {
            ctx.submit_recorded(r)?;
        }
        self.outputs.iter().map(copy_of).collect()
    }
}

/// Ends a recording however the step being recorded leaves (a panic in a plugin included), so
/// other threads' device work, which waits while a step is recorded, is never left waiting.
struct CaptureGuard<'a>(Option<&'a Context>);

impl CaptureGuard<'_> {
    fn end(mut self, keep: bool) -> Result<Option<Recorded>> {
        match self.0.take() {
            Some(ctx) => ctx.end_capture(keep),
            None => Ok(None),
        }
    }
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        if let Some(ctx) = self.0.take() {
            // Only reached while unwinding from a panic, which is what the caller will see;
            // the recording is dropped either way.
            let _ = ctx.end_capture(false);
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let (Some(r), Ok(ctx)) = (self.recorded.take(), context()) {
            ctx.release_recorded(r);
        }
    }
}

/// A new tensor holding `t`'s values (computed first if pending), without gradient history.
fn copy_of(t: &Tensor) -> Result<Tensor> {
    let shape: Shape = t.shape().into();
    let st = crate::ops::alloc_f32(&shape)?;
    context()?.copy(t.storage()?, &st, 4 * t.numel() as u64)?;
    Ok(Tensor::leaf(shape, st))
}

/// A new integer tensor holding `t`'s values on the device only (no host copy).
fn int_copy_of(t: &IntTensor) -> Result<IntTensor> {
    let ctx = context()?;
    let st = ctx.alloc(4 * t.numel().max(1) as u64)?;
    ctx.copy(&t.storage, &st, 4 * t.numel() as u64)?;
    Ok(IntTensor {
        shape: t.shape.clone(),
        storage: st,
        host: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::collective::through_host;

    /// A step with host work inside (as a data-parallel step's collectives): the recording is
    /// split around each host step, which runs again between the segments at every replay, so
    /// replays equal the step run op by op on their inputs.
    #[test]
    fn host_steps_split_a_recording_and_run_at_every_replay() {
        // Host work: reversed and tripled (what no device op of the step does).
        let host = |v: Vec<f32>| Ok(v.iter().rev().map(|x| 3.0 * x).collect());
        let step = |a: &[Tensor]| -> Result<Vec<Tensor>> {
            let y = a[0].exp()?.add(&a[1])?;
            let z = through_host(&y, y.shape().into(), host)?;
            let w = z.mul(&a[0])?.sum_all()?;
            let u = through_host(&w, Shape::new(), |v| Ok(vec![v[0] + 1.0]))?;
            Ok(vec![z.sub(&a[1])?, u])
        };
        let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap();
        let bits = |ts: &[Tensor]| -> Vec<Vec<u32>> {
            ts.iter()
                .map(|t| t.to_vec().unwrap().iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let inputs = [
            (t(&[0.5, -1.0, 2.0]), t(&[1.0, 0.0, -3.0])),
            (t(&[0.0, 1.0, -2.0]), t(&[4.0, 5.0, 6.0])),
            (t(&[3.0, 0.25, 1.5]), t(&[-1.0, 2.0, 0.5])),
        ];
        let (a, b) = &inputs[0];
        let (mut r, first) = Replay::record(&[a, b], |x| step(x)).unwrap();
        assert_eq!(
            r.segments(),
            3,
            "two host steps split it into three segments"
        );
        assert_eq!(bits(&first), bits(&step(&[a.clone(), b.clone()]).unwrap()));
        for (a, b) in inputs.iter().cycle().skip(1).take(4) {
            let got = r.run(&[a, b]).unwrap();
            assert_eq!(bits(&got), bits(&step(&[a.clone(), b.clone()]).unwrap()));
        }
        // A host step that fails while recording fails the recording, and the device records
        // and runs as before after it.
        let e = Replay::record(&[a], |x| {
            let y = through_host(&x[0], x[0].shape().into(), |_| {
                Err(crate::Error::Other("no peer".into()))
            })?;
            Ok(vec![y])
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no peer"), "{e}");
        assert_eq!(
            a.mul_scalar(2.0).unwrap().to_vec().unwrap(),
            [1.0, -2.0, 4.0]
        );
    }
}
