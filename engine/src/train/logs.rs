//! A run's logs: `metrics.jsonl` (one line per epoch) and `steps.jsonl` (one line per step).
//! They are rewritten whole at each epoch's end *before* the checkpoint is renamed into place,
//! and a resume keeps only the lines the checkpoint covers: after a crash at any point the
//! logs and the checkpoint describe the same state (docs/architecture.md, "Run safety").

use super::files::write_atomic;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

pub const METRICS: &str = "metrics.jsonl";
pub const STEPS: &str = "steps.jsonl";

/// One line of the metrics log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// Absent for data without labels.
    pub knn_accuracy: Option<f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// One line of the step log (`steps.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
}

/// Both logs of a run, as far as its checkpoint goes.
#[derive(Debug, Clone, Default)]
pub struct Logs {
    pub epochs: Vec<EpochLog>,
    pub steps: Vec<StepLog>,
}

fn to_text<T: Serialize>(items: &[T]) -> Result<String> {
    let mut text = String::new();
    for h in items {
        text += &serde_json::to_string(h).map_err(|e| Error::Other(e.to_string()))?;
        text.push('\n');
    }
    Ok(text)
}

/// Every line of a JSON-lines file (none if the file does not exist); a line that does not
/// parse is an error naming the file and the line.
fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Other(format!(
                "{}: cannot be read: {e}",
                path.display()
            )))
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::Other(format!(
                    "{}: line {} is not a log entry ({e}); the run folder was edited or damaged",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

impl Logs {
    /// The logs in `dir`, cut to what a checkpoint at (`epoch`, `step`) holds: lines written
    /// after it (an epoch whose checkpoint never landed) are dropped.
    pub fn read(dir: &Path, epoch: usize, step: u64) -> Result<Logs> {
        let Logs { epochs, steps } = Self::read_cut(dir, epoch, step)?;
        if epochs.len() != epoch || steps.len() as u64 != step {
            return Err(Error::Other(format!(
                "{}: the logs hold {} epochs and {} steps, the checkpoint {epoch} and {step}; \
                 the run folder was edited or damaged",
                dir.display(),
                epochs.len(),
                steps.len()
            )));
        }
        Ok(Logs { epochs, steps })
    }

    /// The logs in `dir` (none where there are no log files) cut to (`epoch`, `step`),
    /// without requiring them to cover it.
    pub fn read_cut(dir: &Path, epoch: usize, step: u64) -> Result<Logs> {
        let mut epochs: Vec<EpochLog> = read(&dir.join(METRICS))?;
        let mut steps: Vec<StepLog> = read(&dir.join(STEPS))?;
        epochs.retain(|e| e.epoch <= epoch);
        steps.retain(|s| s.step <= step);
        Ok(Logs { epochs, steps })
    }

    /// Writes both logs whole (each atomically); `epoch` labels the fault points.
    pub fn write(&self, dir: &Path, epoch: usize) -> Result<()> {
        write_atomic(&dir.join(METRICS), to_text(&self.epochs)?.as_bytes(), epoch)?;
        write_atomic(&dir.join(STEPS), to_text(&self.steps)?.as_bytes(), epoch)
    }

    /// Training time so far: the sum of the epochs' seconds.
    pub fn train_seconds(&self) -> f64 {
        self.epochs.iter().map(|h| h.seconds).sum()
    }
}
