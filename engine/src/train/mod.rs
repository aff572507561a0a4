//! `vkgrad train` and `vkgrad eval`: self-supervised (SimCLR, BYOL) and supervised contrastive
//! (SupCon) training of plugin encoders on a data set, with evaluation, checkpoints, a metrics
//! log and plots. Every random choice is a function of (seed, step), so a resumed run repeats
//! an uninterrupted one exactly.

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod model;

use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::optim::{AdamW, Lars, Sgd};
use crate::plugin::{Instance, Registry};
use crate::tensor::{IntTensor, Tensor};
use crate::{no_grad, Rng};
use checkpoint::Checkpoint;
pub use config::Config;
use eval::{Features, Scores};
use model::Module;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// splitmix64 of a combination: independent streams per (seed, a, b).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    for _ in 0..2 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// A seeded Fisher–Yates permutation of 0..n.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        s = mix(s, i as u64, 0);
        p.swap(i, (s % (i as u64 + 1)) as usize);
    }
    p
}

enum Optimizer {
    Sgd(Sgd),
    AdamW(AdamW),
    Lars(Lars),
}

impl Optimizer {
    fn new(cfg: &Config) -> Optimizer {
        let (lr, wd, m) = (cfg.lr as f32, cfg.weight_decay as f32, cfg.momentum as f32);
        match cfg.optimizer.as_str() {
            "sgd" => {
                let mut o = Sgd::new(lr, m);
                o.weight_decay = wd;
                Optimizer::Sgd(o)
            }
            "lars" => Optimizer::Lars(Lars::new(lr, m, wd)),
            _ => Optimizer::AdamW(AdamW::new(lr, wd)),
        }
    }
    fn step(&mut self, lr: f32, params: &mut [&mut Tensor]) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => {
                o.lr = lr;
                o.step(params)
            }
            Optimizer::AdamW(o) => {
                o.lr = lr;
                o.step(params)
            }
            Optimizer::Lars(o) => {
                o.lr = lr;
                o.step(params)
            }
        }
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        match self {
            Optimizer::Sgd(o) => o.state(),
            Optimizer::AdamW(o) => o.state(),
            Optimizer::Lars(o) => o.state(),
        }
    }
    fn load(&mut self, n: usize, steps: u64, get: &dyn Fn(&str) -> Option<Tensor>) {
        match self {
            Optimizer::Sgd(o) => o.load_state(n, get),
            Optimizer::AdamW(o) => o.load_state(n, steps, get),
            Optimizer::Lars(o) => o.load_state(n, get),
        }
    }
}

/// One line of the metrics log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub knn_accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// One line of the step log (`steps.jsonl`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
}

/// Rewrites a JSON-lines file whole, through a temporary file and a rename.
fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut text = String::new();
    for h in items {
        text += &serde_json::to_string(h).map_err(|e| Error::Other(e.to_string()))?;
        text.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// The lines of a JSON-lines file that parse as `T` and pass `keep`.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path, keep: impl Fn(&T) -> bool) -> Vec<T> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<T>(l).ok())
                .filter(|t| keep(t))
                .collect()
        })
        .unwrap_or_default()
}

/// What a finished run reports (`--json` prints it; `results.json` in the run folder).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub method: String,
    pub data: String,
    pub epochs: usize,
    pub steps: u64,
    pub knn_accuracy: f64,
    pub linear_probe_accuracy: f64,
    pub few_label_accuracy: f64,
    pub alignment: Option<f64>,
    pub uniformity: Option<f64>,
    pub raw_pixels: Scores,
    pub train_seconds: f64,
    pub samples_per_second: f64,
    pub final_loss: f64,
    pub run_dir: String,
    pub device: String,
    /// What was evaluated: `encoder` or `head` output, kNN neighbours and temperature.
    pub features: String,
    pub knn_k: usize,
    pub knn_temperature: f64,
}

/// A component's options: the user's, plus each data-dependent default the component declares
/// and the user did not set. The defaults are written into `user` too, so the saved config
/// holds every option a checkpoint was built with (a later change of a default cannot change
/// what an old run's checkpoint loads into).
fn options_for(
    reg: &Registry,
    kind: &str,
    name: &str,
    user: &mut Map<String, Value>,
    defaults: Value,
) -> Result<Value> {
    let known = reg.find(kind, name)?.option_names();
    if let Value::Object(d) = defaults {
        for (k, v) in d {
            if known.contains(&k) {
                user.entry(k).or_insert(v);
            }
        }
    }
    Ok(Value::Object(user.clone()))
}

pub struct Trainer {
    pub cfg: Config,
    pub data: Dataset,
    /// The plugins the components come from (held for the run's lifetime).
    _plugins: Registry,
    encoder: Module,
    head: Module,
    predictor: Option<Module>,
    target: Option<(Module, Module)>,
    augs: [Instance; 2],
    loss: Instance,
    opt: Optimizer,
    pub step: u64,
    pub epoch: usize,
    pub out: PathBuf,
    pub history: Vec<EpochLog>,
    pub steps: Vec<StepLog>,
    train_idx: Vec<usize>,
}

impl Trainer {
    /// Builds the run: loads the data and plugins, resolves the config, draws parameters.
    pub fn new(mut cfg: Config, plugin_paths: &[PathBuf], out: PathBuf) -> Result<Trainer> {
        let data = Dataset::load(&cfg.data)?;
        cfg.resolve(&data.sample_shape)?;
        let reg = Registry::load_all(&crate::plugin::search_paths(plugin_paths));
        let shape = &data.sample_shape;
        let image = shape.len() == 3;
        let mut rng = Rng::new(mix(cfg.seed, 0xE2C, 0));
        let enc_defaults = if image {
            // 8x8 digits: two conv widths and global pooling. Larger images: the classic
            // MNIST net, whose flatten + Linear keeps where strokes are (docs/results.md:
            // better kNN on MNIST-10k than a third width with global pooling).
            if shape[1] <= 8 {
                json!({ "channels": shape[0], "size": shape[1], "widths": [32, 64] })
            } else {
                json!({ "channels": shape[0], "size": shape[1], "widths": [32, 64], "fc": 128 })
            }
        } else {
            json!({ "sizes": [shape[0], 256, 128], "batch_norm": true })
        };
        let enc_opts = options_for(
            &reg,
            "encoder",
            &cfg.encoder,
            &mut cfg.encoder_options,
            enc_defaults,
        )?;
        let encoder = Module::new(&reg, &cfg.encoder, enc_opts, "encoder", &mut rng)?;
        let want = encoder.input_shape()?;
        if &want != shape {
            return Err(Error::Other(format!(
                "encoder {} takes samples of shape {want:?}, but {} has {shape:?}; set its options (--config) to match",
                encoder.component, data.name
            )));
        }
        // The encoder's output width, from a probe batch in evaluation mode.
        let mut probe_shape = vec![2];
        probe_shape.extend(shape);
        let width = *no_grad(|| encoder.run(&Tensor::zeros(&probe_shape)?, false))?
            .shape()
            .last()
            .unwrap_or(&0);
        let head_defaults = json!({ "in_features": width, "hidden": width.max(128), "out_features": cfg.projection_dim });
        let head_opts = options_for(
            &reg,
            "encoder",
            &cfg.head,
            &mut cfg.head_options,
            head_defaults,
        )?;
        let head = Module::new(&reg, &cfg.head, head_opts, "head", &mut rng)?;
        let (predictor, target) = if cfg.method == "byol" {
            let d = cfg.projection_dim;
            let p_defaults =
                json!({ "in_features": d, "hidden": (4 * d).max(128), "out_features": d });
            let p_opts = options_for(
                &reg,
                "encoder",
                &cfg.predictor,
                &mut cfg.predictor_options,
                p_defaults,
            )?;
            let p = Module::new(&reg, &cfg.predictor, p_opts, "predictor", &mut rng)?;
            let t = (
                encoder.frozen_copy(&reg, "target.encoder")?,
                head.frozen_copy(&reg, "target.head")?,
            );
            (Some(p), Some(t))
        } else {
            (None, None)
        };
        let aug_defaults = if image {
            json!({ "channels": shape[0], "size": shape[1] })
        } else {
            json!({ "dim": shape[0] })
        };
        let mut augs = Vec::new();
        for view in 1..=2 {
            let mut d = aug_defaults.clone();
            d["view"] = json!(view);
            // Per view (BYOL's two views differ), so the saved config keeps the user's options.
            let mut user = cfg.augment_options.clone();
            let o = options_for(&reg, "augmentation", &cfg.augment, &mut user, d)?;
            augs.push(
                reg.find("augmentation", &cfg.augment)?
                    .instantiate(&o.to_string())?,
            );
        }
        let loss_comp = reg.find("loss", &cfg.loss)?;
        let loss = loss_comp.create_loss(&Value::Object(cfg.loss_options.clone()).to_string())?;
        let augs: [Instance; 2] = augs
            .try_into()
            .map_err(|_| Error::Other("two views".into()))?;
        let train_idx = data.indices(Split::Train);
        if train_idx.len() < cfg.batch_size {
            return Err(Error::Other(format!(
                "batch_size {} is larger than the {} training samples of {}",
                cfg.batch_size,
                train_idx.len(),
                data.name
            )));
        }
        let opt = Optimizer::new(&cfg);
        Ok(Trainer {
            cfg,
            data,
            _plugins: reg,
            encoder,
            head,
            predictor,
            target,
            augs,
            loss,
            opt,
            step: 0,
            epoch: 0,
            out,
            history: Vec::new(),
            steps: Vec::new(),
            train_idx,
        })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        (self.train_idx.len() / self.cfg.batch_size) as u64
    }

    fn total_steps(&self) -> u64 {
        self.steps_per_epoch() * self.cfg.epochs as u64
    }

    /// Linear warm-up to the peak rate, then cosine decay to 0.
    pub fn lr_at(&self, step: u64) -> f64 {
        let total = self.total_steps().max(1) as f64;
        let warm = (self.cfg.warmup_epochs * self.steps_per_epoch() as f64).min(total);
        let s = step as f64;
        if s < warm {
            self.cfg.lr * (s + 1.0) / warm
        } else {
            let t = (s - warm) / (total - warm).max(1.0);
            self.cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
        }
    }

    fn batch(&self, idx: &[usize]) -> Result<(Tensor, IntTensor)> {
        let mut shape = vec![idx.len()];
        shape.extend(&self.data.sample_shape);
        let x = Tensor::from_vec(self.data.gather(idx), &shape)?;
        let y = IntTensor::from_vec(
            idx.iter().map(|&i| self.data.labels[i]).collect(),
            &[idx.len()],
        )?;
        Ok((x, y))
    }

    /// [2B, D] (view 1 rows, then view 2 rows) → [B, 2, D].
    fn pair_views(z: &Tensor, b: usize) -> Result<Tensor> {
        let d = z.shape()[1];
        z.reshape(&[2, b, d])?.permute(&[1, 0, 2])
    }

    /// One optimisation step on the samples `idx`; returns the loss.
    pub fn train_step(&mut self, idx: &[usize]) -> Result<f32> {
        let b = idx.len();
        let (x, y) = self.batch(idx)?;
        let seed = self.cfg.seed;
        let v1 = self.augs[0].augment(&x, mix(seed, self.step, 1))?;
        let v2 = self.augs[1].augment(&x, mix(seed, self.step, 2))?;
        let both = Tensor::concat(&[&v1, &v2], 0)?;
        let h = self.encoder.forward(&both, true)?;
        let z = self.head.forward(&h, true)?;
        let loss = match (&mut self.predictor, &self.target) {
            (Some(pred), Some((te, th))) => {
                let p = pred.forward(&z, true)?;
                // The target runs in training mode (batch statistics, as in BYOL) without
                // keeping its own running-statistic updates; they follow the online ones by EMA.
                let t = no_grad(|| th.run(&te.run(&both, true)?, true))?;
                self.loss.forward_with(
                    &Self::pair_views(&p, b)?,
                    None,
                    &[Self::pair_views(&t, b)?],
                )?
            }
            _ => {
                let labels = (self.cfg.method == "supcon").then_some(&y);
                self.loss
                    .forward_with(&Self::pair_views(&z, b)?, labels, &[])?
            }
        };
        loss.backward()?;
        let lr = self.lr_at(self.step) as f32;
        let mut params: Vec<&mut Tensor> = self.encoder.trainable_mut();
        params.extend(self.head.trainable_mut());
        if let Some(p) = &mut self.predictor {
            params.extend(p.trainable_mut());
        }
        self.opt.step(lr, &mut params)?;
        let k = self.step as f64 / self.total_steps().max(1) as f64;
        if let Some((te, th)) = &mut self.target {
            let tau =
                1.0 - (1.0 - self.cfg.ema_base) * ((std::f64::consts::PI * k).cos() + 1.0) / 2.0;
            te.ema_from(&self.encoder, tau as f32)?;
            th.ema_from(&self.head, tau as f32)?;
        }
        self.step += 1;
        let v = loss.item()?;
        if !v.is_finite() {
            return Err(Error::Other(format!(
                "the loss became {v} at step {}; lower the learning rate (--lr, now {})",
                self.step, self.cfg.lr
            )));
        }
        Ok(v)
    }

    /// The evaluation features of a batch: the encoder's or the head's output (`eval_features`),
    /// evaluation mode, no gradient.
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        no_grad(|| {
            let h = self.encoder.run(x, false)?;
            match self.cfg.eval_features.as_str() {
                "head" => self.head.run(&h, false),
                _ => Ok(h),
            }
        })
    }

    /// Evaluation features of the samples `idx`, host-side, and their width.
    pub fn embed(&self, idx: &[usize]) -> Result<(Vec<f32>, usize)> {
        let mut out = Vec::new();
        let mut width = 0;
        for chunk in idx.chunks(512) {
            let (x, _) = self.batch(chunk)?;
            let h = self.features(&x)?;
            width = h.shape()[1];
            out.extend(h.to_vec()?);
        }
        Ok((out, width))
    }

    fn labels(&self, idx: &[usize]) -> Vec<u32> {
        idx.iter().map(|&i| self.data.labels[i]).collect()
    }

    /// kNN accuracy of the held-out samples against the training samples.
    pub fn knn_accuracy(&self) -> Result<f64> {
        let (tr, te) = (self.train_idx.clone(), self.data.indices(Split::Test));
        let (ftr, d) = self.embed(&tr)?;
        let (fte, _) = self.embed(&te)?;
        let (ytr, yte) = (self.labels(&tr), self.labels(&te));
        eval::knn(
            &Features {
                x: &ftr,
                y: &ytr,
                d,
            },
            &Features {
                x: &fte,
                y: &yte,
                d,
            },
            self.cfg.knn_k,
            self.cfg.knn_temperature,
        )
    }

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
            Ok(Scores {
                knn_accuracy: eval::knn(&a, &b, self.cfg.knn_k, self.cfg.knn_temperature)?,
                linear_probe_accuracy: eval::linear_probe(&a, &b, 300, self.cfg.seed)?,
                few_label_accuracy: eval::few_label(&a, &b, 10, 5, self.cfg.seed)?,
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

    /// Everything a checkpoint holds.
    pub fn save(&self) -> Result<()> {
        let mut c = Checkpoint::new();
        let mut modules = vec![&self.encoder, &self.head];
        modules.extend(&self.predictor);
        if let Some((te, th)) = &self.target {
            modules.extend([te, th]);
        }
        for m in modules {
            for (name, t) in m.named() {
                c.put(&name, &t)?;
            }
        }
        for (name, t) in self.opt.state() {
            c.put(&format!("optimizer.{name}"), &t)?;
        }
        if let Some(s) = self.loss.save_state()? {
            c.put_host(
                "loss.state",
                s.dims.clone(),
                s.data.iter().map(|&v| v as f32).collect(),
            );
        }
        c.meta.insert(
            "config".into(),
            serde_json::to_string(&self.cfg).map_err(|e| Error::Other(e.to_string()))?,
        );
        c.meta.insert("step".into(), self.step.to_string());
        c.meta.insert("epoch".into(), self.epoch.to_string());
        c.save(&self.out)
    }

    /// Restores a checkpoint into a trainer built from its config.
    pub fn restore(&mut self, c: &Checkpoint) -> Result<()> {
        let get = |n: &str| c.get(n);
        self.encoder.load_named(&get)?;
        self.head.load_named(&get)?;
        if let Some(p) = &mut self.predictor {
            p.load_named(&get)?;
        }
        if let Some((te, th)) = &mut self.target {
            te.load_named(&get)?;
            th.load_named(&get)?;
        }
        self.step = c.meta_u64("step")?;
        self.epoch = c.meta_u64("epoch")? as usize;
        let n = self.encoder.trainable_mut().len()
            + self.head.trainable_mut().len()
            + self
                .predictor
                .as_mut()
                .map_or(0, |p| p.trainable_mut().len());
        self.opt
            .load(n, self.step, &|name| c.get(&format!("optimizer.{name}")));
        if let Some((dims, data)) = c.tensors.get("loss.state") {
            self.loss.load_state(&crate::plugin::RefOutput {
                dims: dims.clone(),
                data: data.iter().map(|&v| v as f64).collect(),
            })?;
        }
        Ok(())
    }

    /// Reads a run folder's checkpoint and config.
    pub fn open(dir: &Path, plugin_paths: &[PathBuf]) -> Result<Trainer> {
        let c = Checkpoint::load(dir)?;
        let text = c
            .meta
            .get("config")
            .ok_or_else(|| Error::Other(format!("{}: checkpoint has no config", dir.display())))?;
        let cfg: Config = serde_json::from_str(text).map_err(|e| {
            Error::Other(format!("{}: bad config in checkpoint: {e}", dir.display()))
        })?;
        let mut t = Trainer::new(cfg, plugin_paths, dir.to_path_buf())?;
        t.restore(&c)?;
        // The logs keep what the checkpoint holds; lines of an unfinished epoch are dropped.
        let (epoch, step) = (t.epoch, t.step);
        t.history = read_jsonl(&dir.join("metrics.jsonl"), |e: &EpochLog| e.epoch <= epoch);
        t.steps = read_jsonl(&dir.join("steps.jsonl"), |s: &StepLog| s.step <= step);
        Ok(t)
    }

    /// Writes the epoch and step logs (whole, atomically).
    fn write_logs(&self) -> Result<()> {
        write_jsonl(&self.out.join("metrics.jsonl"), &self.history)?;
        write_jsonl(&self.out.join("steps.jsonl"), &self.steps)
    }

    /// Trains from the current epoch to `cfg.epochs` (or `stop_after` epochs in total),
    /// checkpointing after each epoch; `progress` gets (step, total, message).
    pub fn fit(
        &mut self,
        stop_after: Option<usize>,
        progress: &mut dyn FnMut(u64, u64, &str),
    ) -> Result<f64> {
        std::fs::create_dir_all(&self.out)
            .map_err(|e| Error::Other(format!("{}: {e}", self.out.display())))?;
        let config_text = toml::to_string(&self.cfg).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(self.out.join("config.toml"), config_text)
            .map_err(|e| Error::Other(format!("{}: {e}", self.out.display())))?;
        let spe = self.steps_per_epoch();
        let total = self.total_steps();
        let end = stop_after.map_or(self.cfg.epochs, |s| s.min(self.cfg.epochs));
        let mut seconds = 0.0;
        let b = self.cfg.batch_size;
        while self.epoch < end {
            let start = Instant::now();
            let order = permutation(
                self.train_idx.len(),
                mix(self.cfg.seed, 0xE0C, self.epoch as u64),
            );
            let mut sum = 0.0;
            for s in 0..spe as usize {
                let idx: Vec<usize> = order[s * b..(s + 1) * b]
                    .iter()
                    .map(|&i| self.train_idx[i])
                    .collect();
                let lr = self.lr_at(self.step);
                let l = self.train_step(&idx)?;
                sum += l as f64;
                self.steps.push(StepLog {
                    step: self.step,
                    epoch: self.epoch + 1,
                    loss: l as f64,
                    lr,
                });
                let rate = ((s + 1) * b) as f64 / start.elapsed().as_secs_f64().max(1e-9);
                progress(
                    self.step,
                    total,
                    &format!(
                        "epoch {}/{} loss {l:.4} lr {lr:.2e} {rate:.0} samples/s",
                        self.epoch + 1,
                        self.cfg.epochs
                    ),
                );
            }
            let secs = start.elapsed().as_secs_f64();
            seconds += secs;
            let knn = self.knn_accuracy()?;
            self.epoch += 1;
            let e = EpochLog {
                epoch: self.epoch,
                step: self.step,
                loss: sum / spe.max(1) as f64,
                lr: self.lr_at(self.step.saturating_sub(1)),
                knn_accuracy: knn,
                seconds: secs,
                samples_per_second: (spe as usize * b) as f64 / secs.max(1e-9),
            };
            self.history.push(e);
            self.save()?;
            self.write_logs()?;
        }
        Ok(seconds)
    }

    /// loss.png, accuracy.png (kNN per epoch vs raw pixels), embedding.png (2-D PCA).
    fn plot(&self, raw: &Scores, test_emb: &[f32], d: usize) -> Result<()> {
        let epochs: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|h| (h.epoch as f64, h.loss))
            .collect();
        let acc: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|h| (h.epoch as f64, h.knn_accuracy))
            .collect();
        let spe = self.steps_per_epoch().max(1) as f64;
        let per_step: Vec<(f64, f64)> = self
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
        let raw_line: Vec<(f64, f64)> = acc.iter().map(|&(e, _)| (e, raw.knn_accuracy)).collect();
        crate::plot::lines(
            &self.out.join("accuracy.png"),
            "held-out kNN accuracy",
            "epoch",
            &[("learned features", acc), ("raw pixels", raw_line)],
        )?;
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
    pub fn report(&self, train_seconds: f64, save: bool) -> Result<Report> {
        let (learned, raw, test_emb, d) = self.evaluate()?;
        if save {
            self.plot(&raw, &test_emb, d)?;
        }
        let processed: f64 = self
            .history
            .iter()
            .map(|h| h.samples_per_second * h.seconds)
            .sum();
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
            train_seconds,
            samples_per_second: processed
                / self
                    .history
                    .iter()
                    .map(|h| h.seconds)
                    .sum::<f64>()
                    .max(1e-9),
            final_loss: self.history.last().map_or(f64::NAN, |h| h.loss),
            run_dir: self.out.display().to_string(),
            device: Tensor::ctx()?.info.name.clone(),
            features: self.cfg.eval_features.clone(),
            knn_k: self.cfg.knn_k,
            knn_temperature: self.cfg.knn_temperature,
        };
        if save {
            let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
            std::fs::write(self.out.join("results.json"), text)
                .map_err(|e| Error::Other(format!("{}: {e}", self.out.display())))?;
        }
        Ok(r)
    }
}
