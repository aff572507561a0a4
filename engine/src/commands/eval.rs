//! `vkgrad eval`: the scores of a saved run (read-only: the run's files stay as they are).

use super::train::print_report;
use std::path::{Path, PathBuf};
use vkgrad::train::{DataChoice, Trainer};
use vkgrad::Result;

/// `vkgrad eval`'s choices that may differ from the run's own (`None`: as the run).
pub struct EvalChoices {
    pub data: Option<String>,
    pub knn_k: Option<usize>,
    pub knn_temperature: Option<f64>,
    pub features: Option<String>,
}

pub fn eval(
    checkpoint: &Path,
    choices: EvalChoices,
    plugins: &[PathBuf],
    json: bool,
) -> Result<()> {
    // Other data (--data) is evaluated as given; the run's own data must be what it was
    // trained on (its fingerprint), or the scores would describe something else.
    let data = match &choices.data {
        Some(d) => DataChoice::Other(d.clone()),
        None => DataChoice::Saved,
    };
    let mut t = Trainer::open(checkpoint, plugins, data)?;
    if let Some(k) = choices.knn_k {
        t.cfg.knn_k = k;
    }
    if let Some(temperature) = choices.knn_temperature {
        t.cfg.knn_temperature = temperature;
    }
    if let Some(f) = choices.features {
        t.cfg.eval_features = f;
    }
    // The same range checks as for a run's config.
    let shape = t.data.sample_shape.clone();
    t.cfg.resolve(&shape)?;
    print_report(&t.report(false)?, json)
}
