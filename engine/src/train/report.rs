//! The end of a run: every score for the learned features and for raw pixels, the plots,
//! and `results.json`.

use super::eval::{self, Features, Scores};
use super::files::write_atomic;
use super::{mix, Trainer};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::Serialize;

pub const RESULTS: &str = "results.json";

/// What a finished run reports (`--json` prints it; `results.json` in the run folder).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub method: String,
    pub data: String,
    pub epochs: usize,
    pub steps: u64,
    /// The label-based scores; absent (null) for data without labels.
    pub knn_accuracy: Option<f64>,
    pub linear_probe_accuracy: Option<f64>,
    pub few_label_accuracy: Option<f64>,
    pub alignment: Option<f64>,
    pub uniformity: Option<f64>,
    pub raw_pixels: Scores,
    /// Seconds of training over the whole run (every epoch, also before a resume).
    pub train_seconds: f64,
    pub samples_per_second: f64,
    pub final_loss: f64,
    pub run_dir: String,
    pub device: String,
    /// What was evaluated: `encoder` or `head` output, kNN neighbours and temperature.
    pub features: String,
    pub knn_k: usize,
    pub knn_temperature: f64,
    /// The epoch whose checkpoint is `best.safetensors`, and its held-out kNN accuracy.
    pub best_epoch: Option<usize>,
    pub best_knn_accuracy: Option<f64>,
}

impl Trainer {
    /// Every score, for the learned features and for raw pixels, plus the test embedding.
    pub fn evaluate(&self) -> Result<(Scores, Scores, Vec<f32>, usize)> {
        let (tr, te) = (self.train_idx.clone(), self.data.indices(Split::Test));
        let (ytr, yte) = (self.labels(&tr), self.labels(&te));
        let (ftr, d) = self.embed(&tr)?;
        let (fte, _) = self.embed(&te)?;
        let score = |xtr: &[f32], xte: &[f32], d: usize| -> Result<Scores> {
            let (a, b) = (
                Features { x: xtr, y: &ytr, d },
                Features { x: xte, y: &yte, d },
            );
            if !self.data.labelled {
                return Ok(Scores::default());
            }
            Ok(Scores {
                knn_accuracy: Some(eval::knn(&a, &b, self.cfg.knn_k, self.cfg.knn_temperature)?),
                linear_probe_accuracy: Some(eval::linear_probe(&a, &b, 300, self.cfg.seed)?),
                few_label_accuracy: Some(eval::few_label(&a, &b, 10, 5, self.cfg.seed)?),
                alignment: None,
                uniformity: None,
            })
        };
        let mut learned = score(&ftr, &fte, d)?;
        let pd = self.data.sample_len();
        let mut raw = score(&self.data.gather(&tr), &self.data.gather(&te), pd)?;
        // Alignment / uniformity over two augmented views of (up to 1000) held-out samples.
        let sub: Vec<usize> = te.iter().copied().take(1000).collect();
        let (x, _) = self.batch(&sub)?;
        let v1 = self.augs[0].augment(&x, mix(self.cfg.seed, u64::MAX, 1))?;
        let v2 = self.augs[1].augment(&x, mix(self.cfg.seed, u64::MAX, 2))?;
        let (e1, e2) = (self.features(&v1)?, self.features(&v2)?);
        let width = e1.shape()[1];
        let (al, un) = eval::align_uniform(&e1.to_vec()?, &e2.to_vec()?, width);
        (learned.alignment, learned.uniformity) = (Some(al), Some(un));
        let (al, un) = eval::align_uniform(&v1.to_vec()?, &v2.to_vec()?, pd);
        (raw.alignment, raw.uniformity) = (Some(al), Some(un));
        Ok((learned, raw, fte, d))
    }

    /// loss.png, accuracy.png (kNN per epoch vs raw pixels), embedding.png (2-D PCA).
    fn plot(&self, raw: &Scores, test_emb: &[f32], d: usize) -> Result<()> {
        let history = &self.logs.epochs;
        let epochs: Vec<(f64, f64)> = history.iter().map(|h| (h.epoch as f64, h.loss)).collect();
        let acc: Vec<(f64, f64)> = history
            .iter()
            .filter_map(|h| Some((h.epoch as f64, h.knn_accuracy?)))
            .collect();
        let spe = self.steps_per_epoch().max(1) as f64;
        let per_step: Vec<(f64, f64)> = self
            .logs
            .steps
            .iter()
            .map(|s| (s.step as f64 / spe, s.loss))
            .collect();
        crate::plot::lines(
            &self.out.join("loss.png"),
            &format!("{} loss ({})", self.cfg.method, self.cfg.loss),
            "epoch",
            &[("per step", per_step), ("epoch mean", epochs)],
        )?;
        if let Some(raw_knn) = raw.knn_accuracy {
            let raw_line: Vec<(f64, f64)> = acc.iter().map(|&(e, _)| (e, raw_knn)).collect();
            crate::plot::lines(
                &self.out.join("accuracy.png"),
                "held-out kNN accuracy",
                "epoch",
                &[("learned features", acc), ("raw pixels", raw_line)],
            )?;
        }
        let te = self.data.indices(Split::Test);
        let pts = eval::pca2(test_emb, d);
        crate::plot::scatter(
            &self.out.join("embedding.png"),
            "held-out embedding, 2-D PCA",
            &pts,
            &self.labels(&te),
        )?;
        Ok(())
    }

    /// Final evaluation; with `save`, also the plots and `results.json` in the run folder
    /// (`vkgrad eval` does not save: another data set or feature choice must not replace what
    /// the run wrote).
    pub fn report(&self, save: bool) -> Result<Report> {
        let (learned, raw, test_emb, d) = self.evaluate()?;
        if save {
            self.plot(&raw, &test_emb, d)?;
        }
        let history = &self.logs.epochs;
        let processed: f64 = history
            .iter()
            .map(|h| h.samples_per_second * h.seconds)
            .sum();
        let best = self.best();
        let r = Report {
            method: self.cfg.method.clone(),
            data: self.data.name.clone(),
            epochs: self.epoch,
            steps: self.step,
            knn_accuracy: learned.knn_accuracy,
            linear_probe_accuracy: learned.linear_probe_accuracy,
            few_label_accuracy: learned.few_label_accuracy,
            alignment: learned.alignment,
            uniformity: learned.uniformity,
            raw_pixels: raw,
            train_seconds: self.logs.train_seconds(),
            samples_per_second: processed / self.logs.train_seconds().max(1e-9),
            final_loss: history.last().map_or(f64::NAN, |h| h.loss),
            run_dir: self.out.display().to_string(),
            device: Tensor::ctx()?.info.name.clone(),
            features: self.cfg.eval_features.clone(),
            knn_k: self.cfg.knn_k,
            knn_temperature: self.cfg.knn_temperature,
            best_epoch: best.map(|b| b.epoch),
            best_knn_accuracy: best.and_then(|b| b.knn_accuracy),
        };
        if save {
            let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
            write_atomic(&self.out.join(RESULTS), text.as_bytes(), self.epoch)?;
        }
        Ok(r)
    }
}
