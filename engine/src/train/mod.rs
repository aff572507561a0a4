//! `vkgrad train` and `vkgrad eval`: self-supervised (SimCLR, BYOL) and supervised contrastive
//! (SupCon) training of plugin encoders on a data set, with evaluation, checkpoints, a metrics
//! log and plots. Every random choice is a function of (seed, step), so a resumed run repeats
//! an uninterrupted one exactly.
//!
//! The files: `config` (the settings), `defaults` (data-dependent component options), `model`
//! (a plugin encoder with its parameters), `eval` (kNN and probes), this file (building a run
//! and one step), `replayed` (a step's device work recorded once and replayed), `fit` (the
//! epoch loop), `persist` (checkpoint ↔ trainer), `checkpoint` (the file format and its
//! integrity), `logs` (metrics and step logs), `files` (atomic writes and fault injection),
//! `rundir` (who owns a run folder), `report` (the final scores).

pub mod checkpoint;
pub mod config;
pub mod defaults;
pub mod eval;
pub mod files;
mod fit;
mod grad_cache;
pub mod logs;
pub mod model;
pub mod parallel;
mod persist;
mod replayed;
mod replayed_update;
pub mod report;
pub mod rundir;

use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::plugin::{Instance, Registry};
use crate::tensor::{IntTensor, Tensor};
use crate::{no_grad, Rng};
pub use config::Config;
use defaults::options_for;
use eval::Features;
pub use fit::Stop;
pub use logs::{EpochLog, Logs, StepLog};
use model::Module;
pub use persist::{open_networks, DataChoice};
pub use report::Report;
use std::path::PathBuf;

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
    /// Both augmentations draw only on the device (ABI 1.6 `draws_on_device`): a replayed
    /// step records them with their seeds as device values.
    augs_on_device: bool,
    loss: Instance,
    opt: Box<dyn Optimizer>,
    pub step: u64,
    pub epoch: usize,
    /// The run folder.
    pub out: PathBuf,
    pub logs: Logs,
    train_idx: Vec<usize>,
    /// The run folder's lock, held while this trainer may write there.
    lock: Option<rundir::RunLock>,
    /// A data-parallel rank other than 0: trains in step with rank 0 and writes nothing.
    follower: bool,
    /// The recorded step, replayed while the shapes stay (`replayed.rs`).
    replayed: replayed::State,
    replay_counts: replayed::Counts,
    /// The recorded update (`replayed_update.rs`).
    update_replayed: replayed_update::UpdateState,
}

impl Trainer {
    /// Builds the run: loads the data and plugins, resolves the config, draws parameters.
    /// A data path is saved absolute, so the run finds its data from any working directory.
    pub fn new(mut cfg: Config, plugin_paths: &[PathBuf], out: PathBuf) -> Result<Trainer> {
        let data = Dataset::load_with(&cfg.data, &cfg.data_options())?;
        if !crate::data::BUILT_IN.contains(&cfg.data.as_str()) {
            if let Ok(abs) = std::fs::canonicalize(&cfg.data) {
                cfg.data = abs.display().to_string();
            }
        }
        cfg.resolve(&data.sample_shape)?;
        parallel::check_batch(cfg.batch_size)?;
        if cfg.grad_cache.is_some() && crate::dist::world().size() > 1 {
            return Err(Error::Other(
                "grad_cache with several ranks is not supported yet: leave --grad-cache out \
                 (the global batch is already shared by the ranks) or run one process"
                    .into(),
            ));
        }
        crate::dist::set_sync_batch_stats(cfg.sync_batch_norm);
        let reg = Registry::load_for(plugin_paths)?;
        let shape = &data.sample_shape;
        let mut rng = Rng::new(mix(cfg.seed, 0xE2C, 0));
        let enc_opts = options_for(
            &reg,
            "encoder",
            &cfg.encoder,
            &mut cfg.encoder_options,
            defaults::encoder(shape),
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
        let head_opts = options_for(
            &reg,
            "encoder",
            &cfg.head,
            &mut cfg.head_options,
            defaults::head(width, cfg.projection_dim),
        )?;
        let head = Module::new(&reg, &cfg.head, head_opts, "head", &mut rng)?;
        let (predictor, target) = if cfg.method == "byol" {
            let p_opts = options_for(
                &reg,
                "encoder",
                &cfg.predictor,
                &mut cfg.predictor_options,
                defaults::predictor(cfg.projection_dim),
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
        let mut augs = Vec::new();
        for view in 1..=2 {
            let d = defaults::augment(shape, view, &cfg.augment, cfg.recipe);
            // Per view (BYOL's two views differ), so the saved config keeps the user's options.
            let mut user = cfg.augment_options.clone();
            let o = options_for(&reg, "augmentation", &cfg.augment, &mut user, d)?;
            augs.push(
                reg.find("augmentation", &cfg.augment)?
                    .instantiate(&o.to_string())?,
            );
        }
        let loss_comp = reg.find("loss", &cfg.loss)?;
        let loss_opts = options_for(
            &reg,
            "loss",
            &cfg.loss,
            &mut cfg.loss_options,
            defaults::loss(shape, &cfg.loss, cfg.recipe),
        )?;
        let loss = loss_comp.create_loss(&loss_opts.to_string())?;
        // Before any step: a loss that declares it needs labels (SupCon, triplet, margin, a
        // user's plugin) cannot train on data without them.
        if !data.labelled && loss.describe()?.needs_labels {
            return Err(Error::Other(format!(
                "{}: the loss {} needs labels, and this folder of images has none (put each class in its own subfolder)",
                data.name, loss_comp.name
            )));
        }
        // ... and one that needs extra inputs gets only those of its method: BYOL's target
        // projections (`targets`). MoCo's keys come from a momentum encoder and a queue that
        // `vkgrad train` does not run; a user's loss may want others.
        let extra = loss.describe()?.extra_inputs;
        let given: &[&str] = if cfg.method == "byol" {
            &["targets"]
        } else {
            &[]
        };
        if extra.len() != given.len() {
            return Err(Error::Other(format!(
                "the loss {} takes the extra inputs {extra:?}, and `vkgrad train --method {}` gives it {given:?}: \
                 choose a loss that takes exactly those, or call this one from your own code through the plugin API",
                loss_comp.name, cfg.method
            )));
        }
        let augs: [Instance; 2] = augs
            .try_into()
            .map_err(|_| Error::Other("two views".into()))?;
        let augs_on_device =
            augs[0].describe()?.draws_on_device && augs[1].describe()?.draws_on_device;
        let train_idx = data.indices(Split::Train);
        if train_idx.len() < cfg.batch_size {
            return Err(Error::Other(format!(
                "batch_size {} is larger than the {} training samples of {}",
                cfg.batch_size,
                train_idx.len(),
                data.name
            )));
        }
        // The held-out split is every k-th sample: data ordered by class in a cycle of k can
        // hold out whole classes, and the label-based scores would then mean nothing.
        let mut seen = vec![false; data.classes()];
        for &i in &train_idx {
            seen[data.labels[i] as usize] = true;
        }
        let unseen: Vec<u32> = data
            .indices(Split::Test)
            .iter()
            .map(|&i| data.labels[i])
            .filter(|&l| !seen[l as usize])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|l| data.class_ids[l as usize])
            .collect();
        if data.labelled && !unseen.is_empty() {
            eprintln!(
                "warning: {}: held-out samples ({}) have labels {:?} that no training sample has; kNN and probe scores cannot be right for them (shuffle the data's order)",
                data.name, data.split_rule(), unseen
            );
        }
        let opt = crate::optim::by_name(
            &cfg.optimizer,
            cfg.lr() as f32,
            cfg.weight_decay as f32,
            cfg.momentum as f32,
        )
        .ok_or_else(|| Error::Other(format!("config: unknown optimizer `{}`", cfg.optimizer)))?;
        Ok(Trainer {
            cfg,
            data,
            _plugins: reg,
            encoder,
            head,
            predictor,
            target,
            augs,
            augs_on_device,
            loss,
            opt,
            step: 0,
            epoch: 0,
            out,
            logs: Logs::default(),
            train_idx,
            lock: None,
            follower: false,
            replayed: replayed::State::default(),
            replay_counts: replayed::Counts::default(),
            update_replayed: replayed_update::UpdateState::default(),
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
            // Capped at the peak: a warm-up shorter than one step (tiny runs) must not
            // overshoot it (it gave 5× the peak rate for a 0.2-step warm-up).
            self.cfg.lr() * ((s + 1.0) / warm).min(1.0)
        } else {
            let t = (s - warm) / (total - warm).max(1.0);
            self.cfg.lr() * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
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

    /// One optimisation step on the samples `idx` (the global batch); returns the loss.
    ///
    /// With K data-parallel ranks (`parallel`), each rank augments the whole global batch
    /// (every random draw is keyed by the sample's position in it, so the views are the ones a
    /// single process makes) and runs its shard of the views through the networks.
    pub fn train_step(&mut self, idx: &[usize]) -> Result<f32> {
        let (x, y) = self.batch(idx)?;
        let seed = self.cfg.seed;
        let seeds = [mix(seed, self.step, 1), mix(seed, self.step, 2)];
        let loss = self.backward_maybe_replayed(&x, &y, seeds)?;
        self.update(loss)
    }

    /// The two views of the batch `x` (augmentation i drawing from `seeds[i]`), each cut to
    /// this rank's shard, concatenated: `[2b, ...]` (view 1's rows, then view 2's), and b.
    fn views(&self, x: &Tensor, seeds: [u64; 2]) -> Result<(Tensor, usize)> {
        let v1 = self.augs[0].augment(x, seeds[0])?;
        let v2 = self.augs[1].augment(x, seeds[1])?;
        let n = x.shape()[0];
        let (start, b) = parallel::shard(n);
        let (v1, v2) = if b == n {
            (v1, v2)
        } else {
            (v1.narrow(0, start, b)?, v2.narrow(0, start, b)?)
        };
        Ok((Tensor::concat(&[&v1, &v2], 0)?, b))
    }

    /// The step's forward and backward pass: GradCache's chunks where configured, else
    /// [`Trainer::plain_backward`]. Returns the loss; every trainable parameter's gradient is
    /// set and the networks' buffers updated.
    fn step_backward(&mut self, both: &Tensor, y: &IntTensor, b: usize) -> Result<Tensor> {
        match self.cfg.grad_cache {
            Some(chunk) if self.predictor.is_none() => self.grad_cache_backward(both, y, b, chunk),
            _ => self.plain_backward(both, y, b),
        }
    }

    /// The rank's shard through encoder, head (and BYOL's predictor) with one graph, the pairs
    /// gathered from every rank (the global batch: global negatives), the loss
    /// back-propagated. `y`: the global batch's labels.
    fn plain_backward(&mut self, both: &Tensor, y: &IntTensor, b: usize) -> Result<Tensor> {
        let h = self.encoder.forward(both, true)?;
        let z = self.head.forward(&h, true)?;
        let pairs = |t: &Tensor| parallel::gather_pairs(&Self::pair_views(t, b)?);
        let loss = match (&mut self.predictor, &self.target) {
            (Some(pred), Some((te, th))) => {
                let p = pred.forward(&z, true)?;
                // The target runs in training mode (batch statistics, as in BYOL) without
                // keeping its own running-statistic updates; they follow the online ones by EMA.
                let t = no_grad(|| th.run(&te.run(both, true)?, true))?;
                self.loss.forward_with(&pairs(&p)?, None, &[pairs(&t)?])?
            }
            _ => {
                let labels = (self.cfg.method == "supcon").then_some(y);
                self.loss.forward_with(&pairs(&z)?, labels, &[])?
            }
        };
        loss.backward()?;
        Ok(loss)
    }

    /// One step's remainder: the optimiser update, BYOL's EMA, the divergence check.
    fn update(&mut self, loss: Tensor) -> Result<f32> {
        // What changes from step to step is computed here, on the host, and reaches the
        // device as values (a replayed update reads them there): the optimiser's (learning
        // rate, bias corrections) and BYOL's τ and 1 − τ.
        let lr = self.lr_at(self.step) as f32;
        let mut values = self.opt.begin_step(lr)?;
        let n_opt = values.len();
        if self.target.is_some() {
            let k = self.step as f64 / self.total_steps().max(1) as f64;
            let tau =
                1.0 - (1.0 - self.cfg.ema_base) * ((std::f64::consts::PI * k).cos() + 1.0) / 2.0;
            let tau = tau as f32;
            values.extend([tau, 1.0 - tau]);
        }
        let values = values
            .into_iter()
            .map(Tensor::scalar)
            .collect::<Result<Vec<_>>>()?;
        let health = self.update_maybe_replayed(&values, n_opt)?;
        self.step += 1;
        let w2 = health.map(|h| h.item()).transpose()?;
        // Data-parallel: rank 0's values decide (and are logged) on every rank, so the NaN
        // stop cannot split the ranks even where devices round differently.
        let (v, w2) = parallel::rank0_values(loss.item()?, w2)?;
        let lr_now = self.cfg.lr();
        if !v.is_finite() {
            return Err(Error::Other(format!(
                "the loss became {v} at step {}; lower the learning rate (--lr, now {lr_now})",
                self.step
            )));
        }
        if let Some(w2) = w2 {
            if !w2.is_finite() {
                return Err(Error::Other(format!(
                    "the parameters are no longer finite after step {} (sum of squared weights = {w2}): \
                     training diverged; lower the learning rate (--lr, now {lr_now})",
                    self.step
                )));
            }
        }
        Ok(v)
    }

    /// The update's device work: the gradients averaged over data-parallel ranks (one
    /// collective), the optimiser (`values[..n_opt]` its per-step values), then
    /// BYOL's EMA (`values[n_opt..]`: τ, 1 − τ); returns Σ w² over the trainable parameters,
    /// one number that is finite exactly when the weights are (a diverged update shows as inf
    /// or NaN), read with the loss.
    fn update_core(&mut self, values: &[Tensor], n_opt: usize) -> Result<Option<Tensor>> {
        let (opt_values, ema) = values.split_at(n_opt);
        let mut params: Vec<&mut Tensor> = self.encoder.trainable_mut();
        params.extend(self.head.trainable_mut());
        if let Some(p) = &mut self.predictor {
            params.extend(p.trainable_mut());
        }
        // Data-parallel: the gradients averaged over the ranks first (one collective).
        Self::average_gradients(&mut params)?;
        self.opt.update_with(opt_values, &mut params)?;
        let health = no_grad(|| {
            let mut acc: Option<Tensor> = None;
            for p in params.iter() {
                let s = p.mul(p)?.sum_all()?;
                acc = Some(match acc {
                    Some(a) => a.add(&s)?,
                    None => s,
                });
            }
            Ok::<_, Error>(acc)
        })?;
        if let (Some((te, th)), [tau, rest]) = (&mut self.target, ema) {
            te.ema_from(&self.encoder, tau, rest)?;
            th.ema_from(&self.head, tau, rest)?;
        }
        Ok(health)
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

    /// The networks evaluation runs, in order: the encoder, and the projection head with
    /// `head` (what `embed` and the ONNX export use).
    pub fn eval_modules(&self, head: bool) -> Vec<&Module> {
        let mut m = vec![&self.encoder];
        if head {
            m.push(&self.head);
        }
        m
    }

    /// Evaluation features (`cfg.eval_features`) of a whole split in the data set's order:
    /// the sample indices, the features [n, width] row-major, and the width. `progress` gets
    /// the number of samples done after each batch.
    pub fn embed_split(
        &self,
        split: Split,
        progress: &mut dyn FnMut(usize),
    ) -> Result<(Vec<usize>, Vec<f32>, usize)> {
        let idx = self.data.indices(split);
        let mut out = Vec::with_capacity(idx.len());
        let mut width = 0;
        let mut done = 0;
        for chunk in idx.chunks(512) {
            let (f, w) = self.embed(chunk)?;
            out.extend(f);
            width = w;
            done += chunk.len();
            progress(done);
        }
        Ok((idx, out, width))
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
}
