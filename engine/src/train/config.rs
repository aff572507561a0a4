//! A training run's configuration: every `vkgrad train` flag, also settable in a TOML file
//! (same names); flags override the file. Empty strings / absent values mean "the default
//! for this method and data set", resolved by `resolve` and saved with the run.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// simclr | supcon | byol
    pub method: String,
    /// digits | mnist10k | a path (see `vkgrad train --help`).
    pub data: String,
    /// Encoder component (`plugin::name` or `name`) and its options.
    pub encoder: String,
    pub encoder_options: Map<String, Value>,
    /// Projection head g.
    pub head: String,
    pub head_options: Map<String, Value>,
    /// BYOL's predictor q.
    pub predictor: String,
    pub predictor_options: Map<String, Value>,
    /// Augmentation component (a preset such as simclr, byol, digits).
    pub augment: String,
    pub augment_options: Map<String, Value>,
    /// Loss component and options (e.g. temperature).
    pub loss: String,
    pub loss_options: Map<String, Value>,
    pub epochs: usize,
    /// Samples per step (0 = by data: 128 for 8x8 images, else 256).
    pub batch_size: usize,
    /// Peak learning rate (after warm-up); absent = the optimiser's default.
    pub lr: Option<f64>,
    /// sgd | adamw | lars
    pub optimizer: String,
    pub momentum: f64,
    /// Negative = the optimiser's default.
    pub weight_decay: f64,
    /// Linear warm-up length in epochs, then cosine decay to 0.
    pub warmup_epochs: f64,
    /// BYOL: τ_base of the EMA schedule τ_k = 1 − (1 − τ_base)(cos(π k / K) + 1) / 2.
    pub ema_base: f64,
    /// Width of the projection (the loss's embedding).
    pub projection_dim: usize,
    pub seed: u64,
    /// Evaluation: kNN neighbours and temperature.
    pub knn_k: usize,
    pub knn_temperature: f64,
    /// Evaluation features: `encoder` (its output, as lightly's benchmarks) or `head` (the
    /// projection the loss sees, as PyTorch Metric Learning's embedder output).
    pub eval_features: String,
    /// GradCache: back-propagate the batch in chunks of this many samples (both views each),
    /// so memory follows the chunk, not the batch (docs/performance.md); absent = one graph.
    pub grad_cache: Option<usize>,
    /// Data-parallel runs (`mpirun -np K`, K > 1): batch norm's batch statistics over the
    /// global batch (all ranks), as SimCLR's global BN; false = each rank's own shard.
    /// Nothing changes at K = 1.
    pub sync_batch_norm: bool,
    /// Image folders: resize to S x S, 1 or 3 channels, the held-out fraction, and whether an
    /// undecodable image is an error (see `data::DataOptions`).
    pub image_size: Option<usize>,
    pub channels: Option<usize>,
    pub holdout: Option<f64>,
    pub strict_images: bool,
    /// Which generation of the data-dependent defaults (`defaults.rs`) fills this run's
    /// unset options: 2 = the tuned recipes (τ and augmentation strength by image shape);
    /// runs saved before the field existed are 1, so resuming them keeps their settings.
    pub recipe: u32,
}

/// The current generation of defaults (see `Config::recipe`).
pub const RECIPE: u32 = 2;

impl Default for Config {
    fn default() -> Self {
        Config {
            method: "simclr".into(),
            data: "digits".into(),
            encoder: String::new(),
            encoder_options: Map::new(),
            head: "projection_head".into(),
            head_options: Map::new(),
            predictor: "predictor".into(),
            predictor_options: Map::new(),
            augment: String::new(),
            augment_options: Map::new(),
            loss: String::new(),
            loss_options: Map::new(),
            epochs: 0,
            batch_size: 0,
            lr: None,
            optimizer: "adamw".into(),
            momentum: 0.9,
            weight_decay: -1.0,
            warmup_epochs: -1.0,
            ema_base: 0.99,
            projection_dim: 64,
            seed: 0,
            knn_k: 20,
            knn_temperature: 0.1,
            eval_features: "encoder".into(),
            grad_cache: None,
            sync_batch_norm: true,
            image_size: None,
            channels: None,
            holdout: None,
            strict_images: false,
            recipe: RECIPE,
        }
    }
}

impl Config {
    /// The peak learning rate (after `resolve`, always set).
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(f64::NAN)
    }

    /// How the data is read (image folders' options).
    pub fn data_options(&self) -> crate::data::DataOptions {
        crate::data::DataOptions {
            image_size: self.image_size,
            channels: self.channels,
            holdout: self.holdout,
            strict: self.strict_images,
            cache_dir: None,
        }
    }

    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Other(format!("{}: cannot be read: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// Fills the data-set and method dependent defaults, and checks every value.
    pub fn resolve(&mut self, sample_shape: &[usize]) -> Result<()> {
        let bad = |m: String| Err(Error::Other(format!("config: {m}")));
        match self.method.as_str() {
            "simclr" | "supcon" | "byol" => {}
            m => return bad(format!("unknown method `{m}` (simclr, supcon or byol)")),
        }
        match self.optimizer.as_str() {
            "sgd" | "adamw" | "lars" => {}
            o => return bad(format!("unknown optimizer `{o}` (sgd, adamw or lars)")),
        }
        match self.eval_features.as_str() {
            "encoder" | "head" => {}
            f => return bad(format!("unknown eval_features `{f}` (encoder or head)")),
        }
        if let Some(c) = self.grad_cache {
            if c == 0 {
                return bad("grad_cache must be at least 1 (samples per chunk)".into());
            }
            if self.method == "byol" {
                return bad("grad_cache applies to SimCLR and SupCon, whose loss couples the batch; BYOL's loss is per sample (lower batch_size instead)".into());
            }
        }
        let image = sample_shape.len() == 3;
        let small = image && sample_shape[1] <= 8;
        if self.batch_size == 0 {
            // 8x8 digits: 1,347 training samples; 128 gives 10 steps an epoch, and beat 256
            // on held-out kNN for every seed tried (docs/results.md).
            self.batch_size = if small { 128 } else { 256 };
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch_size must be at least 2, got {}",
                self.batch_size
            ));
        }
        if self.epochs == 0 {
            self.epochs = if small { 40 } else { 15 };
        }
        if self.encoder.is_empty() {
            self.encoder = if image { "convnet" } else { "mlp" }.into();
        }
        if self.augment.is_empty() {
            self.augment = if !image {
                "gaussian_noise"
            } else if self.method == "byol" {
                "byol"
            } else if small {
                "digits"
            } else {
                "simclr"
            }
            .into();
        }
        if self.loss.is_empty() {
            self.loss = match self.method.as_str() {
                "simclr" => "nt_xent",
                "supcon" => "supcon",
                _ => "byol",
            }
            .into();
        }
        if self.lr.is_none() {
            self.lr = Some(match self.optimizer.as_str() {
                "adamw" => 1e-3,
                "sgd" => 0.06 * self.batch_size as f64 / 256.0,
                _ => 0.3 * self.batch_size as f64 / 256.0,
            });
        }
        if self.weight_decay < 0.0 {
            self.weight_decay = match self.optimizer.as_str() {
                "adamw" => 1e-4,
                "sgd" => 5e-4,
                _ => 1e-6,
            };
        }
        if self.warmup_epochs < 0.0 {
            self.warmup_epochs = (self.epochs as f64 / 10.0).min(10.0);
        }
        let lr = self.lr();
        let checks: [(&str, f64, bool, &str); 8] = [
            (
                "lr",
                lr,
                lr > 0.0 && lr.is_finite(),
                "a positive, finite number (leave it out for the optimizer's default)",
            ),
            (
                "momentum",
                self.momentum,
                (0.0..1.0).contains(&self.momentum),
                "in [0, 1)",
            ),
            (
                "weight_decay",
                self.weight_decay,
                self.weight_decay.is_finite(),
                "finite",
            ),
            (
                "warmup_epochs",
                self.warmup_epochs,
                self.warmup_epochs.is_finite(),
                "finite",
            ),
            (
                "ema_base",
                self.ema_base,
                (0.0..=1.0).contains(&self.ema_base),
                "in [0, 1]",
            ),
            (
                "projection_dim",
                self.projection_dim as f64,
                self.projection_dim > 0,
                "at least 1",
            ),
            ("knn_k", self.knn_k as f64, self.knn_k > 0, "at least 1"),
            (
                "knn_temperature",
                self.knn_temperature,
                self.knn_temperature > 0.0 && self.knn_temperature.is_finite(),
                "a positive, finite number",
            ),
        ];
        if let Some((name, v, _, want)) = checks.iter().find(|(_, _, ok, _)| !ok) {
            return bad(format!("{name} = {v} is out of range: it must be {want}"));
        }
        Ok(())
    }
}
