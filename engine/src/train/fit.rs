//! The epoch loop: shuffled batches, one step each, the held-out kNN point and a checkpoint at
//! each epoch's end.

use super::files::write_atomic;
use super::logs::{EpochLog, StepLog};
use super::{mix, permutation, Trainer};
use crate::error::{Error, Result};
use std::time::Instant;

/// Why `fit` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every epoch of the config is done.
    Finished,
    /// `stop_after` epochs are done; the run can be continued.
    StoppedAfter,
    /// The caller asked to stop (Ctrl-C) after this step; the last checkpoint is the end of
    /// epoch `Trainer::epoch`, and the steps since then are lost.
    Interrupted { step: u64 },
}

impl Trainer {
    /// Trains from the current epoch to `cfg.epochs` (or `stop_after` epochs in total),
    /// saving logs and checkpoint after each epoch. `progress` gets (step, total, message)
    /// after every step and returns whether to go on.
    pub fn fit(
        &mut self,
        stop_after: Option<usize>,
        progress: &mut dyn FnMut(u64, u64, &str) -> bool,
    ) -> Result<Stop> {
        if self.lock.is_none() && !self.follower {
            return Err(Error::Other(format!(
                "{}: the run folder is not owned by this trainer (Trainer::own first)",
                self.out.display()
            )));
        }
        let config_text = toml::to_string(&self.cfg).map_err(|e| Error::Other(e.to_string()))?;
        if !self.follower {
            write_atomic(
                &self.out.join("config.toml"),
                config_text.as_bytes(),
                self.epoch,
            )?;
            self.repair_best()?;
        }
        let spe = self.steps_per_epoch();
        let total = self.total_steps();
        let end = stop_after.map_or(self.cfg.epochs, |s| s.min(self.cfg.epochs));
        let b = self.cfg.batch_size;
        while self.epoch < end {
            let start = Instant::now();
            let order = permutation(
                self.train_idx.len(),
                mix(self.cfg.seed, 0xE0C, self.epoch as u64),
            );
            let mut sum = 0.0;
            // The epoch's steps join the logs when its checkpoint is written.
            let mut steps = Vec::with_capacity(spe as usize);
            for s in 0..spe as usize {
                let idx: Vec<usize> = order[s * b..(s + 1) * b]
                    .iter()
                    .map(|&i| self.train_idx[i])
                    .collect();
                let lr = self.lr_at(self.step);
                // A diverged step is an error before anything is saved: the run folder keeps
                // the last good checkpoint.
                let l = self.train_step(&idx)?;
                super::files::rank_point(crate::dist::world().rank(), self.step);
                sum += l as f64;
                steps.push(StepLog {
                    step: self.step,
                    epoch: self.epoch + 1,
                    loss: l as f64,
                    lr,
                });
                let rate = ((s + 1) * b) as f64 / start.elapsed().as_secs_f64().max(1e-9);
                let go_on = progress(
                    self.step,
                    total,
                    &format!(
                        "epoch {}/{} loss {l:.4} lr {lr:.2e} {rate:.0} samples/s",
                        self.epoch + 1,
                        self.cfg.epochs
                    ),
                );
                if !go_on {
                    return Ok(Stop::Interrupted { step: self.step });
                }
            }
            let secs = start.elapsed().as_secs_f64();
            // Data-parallel: every rank continues from exactly what rank 0 saves.
            self.take_rank0_state()?;
            // Rank 0 alone evaluates (the others wait for it in the next step's collective).
            let knn = if self.data.labelled && !self.follower {
                Some(self.knn_accuracy()?)
            } else {
                None
            };
            self.epoch += 1;
            self.logs.steps.extend(steps);
            self.logs.epochs.push(EpochLog {
                epoch: self.epoch,
                step: self.step,
                loss: sum / spe.max(1) as f64,
                lr: self.lr_at(self.step.saturating_sub(1)),
                knn_accuracy: knn,
                seconds: secs,
                samples_per_second: (spe as usize * b) as f64 / secs.max(1e-9),
            });
            if !self.follower {
                self.save_epoch()?;
            }
        }
        Ok(if self.epoch < self.cfg.epochs {
            Stop::StoppedAfter
        } else {
            Stop::Finished
        })
    }

    /// Continues a run to `epochs` in total (more than it has done): the warm-up stays as it
    /// was, and the cosine decay is re-planned over the new total from the next step on.
    pub fn extend(&mut self, epochs: usize) -> Result<()> {
        if epochs < self.epoch {
            return Err(Error::Other(format!(
                "--epochs {epochs}: the run has already trained {} epochs; give a larger total",
                self.epoch
            )));
        }
        self.cfg.epochs = epochs;
        Ok(())
    }
}
