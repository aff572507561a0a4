//! A trainer to a checkpoint and back: what is saved (parameters, buffers, optimiser state,
//! EMA target, loss state, config, step, epoch, data fingerprint, class map), and how a saved
//! run is opened again for a resume or an evaluation.

use super::checkpoint::{Checkpoint, BEST, FILE};
use super::logs::{EpochLog, Logs};
use super::{model::Module, rundir, Config, Trainer};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Which data a saved run is opened with.
#[derive(Debug, Clone)]
pub enum DataChoice {
    /// The data the run was trained on, where its config says it lies.
    Saved,
    /// The same data at another path (a moved run): its fingerprint must match.
    Moved(String),
    /// Other data of the same sample shape (evaluation only): no fingerprint check.
    Other(String),
}

const FINGERPRINT: &str = "data_fingerprint";

impl Trainer {
    /// Everything a checkpoint holds.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
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
        c.meta.insert("config".into(), to_json(&self.cfg)?);
        c.meta.insert("step".into(), self.step.to_string());
        c.meta.insert("epoch".into(), self.epoch.to_string());
        c.meta.insert(FINGERPRINT.into(), self.data.fingerprint());
        c.meta
            .insert("class_ids".into(), to_json(&self.data.class_ids)?);
        Ok(c)
    }

    /// The epoch with the best held-out kNN accuracy so far (the earliest of equals); none
    /// for data without labels.
    pub fn best(&self) -> Option<&EpochLog> {
        self.logs
            .epochs
            .iter()
            .fold(None, |b: Option<&EpochLog>, e| match b {
                Some(b) if b.knn_accuracy >= e.knn_accuracy => Some(b),
                _ if e.knn_accuracy.is_none() => b,
                _ => Some(e),
            })
    }

    /// Saves the epoch just finished: the logs first, then the checkpoint (renamed into place
    /// last, so a crash in between leaves the old checkpoint, and a resume cuts the logs back
    /// to it), then `best.safetensors` when this epoch is the best so far.
    pub fn save_epoch(&self) -> Result<()> {
        self.logs.write(&self.out, self.epoch)?;
        let c = self.checkpoint()?;
        c.save_as(&self.out, FILE, self.epoch)?;
        if self.best().is_some_and(|b| b.epoch == self.epoch) {
            c.save_as(&self.out, BEST, self.epoch)?;
        }
        Ok(())
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
            .restore(n, self.step, &|name| c.get(&format!("optimizer.{name}")))?;
        if let Some((dims, data)) = c.tensors.get("loss.state") {
            self.loss.load_state(&crate::plugin::RefOutput {
                dims: dims.clone(),
                data: data.iter().map(|&v| v as f64).collect(),
            })?;
        }
        Ok(())
    }

    /// Opens a saved run: `path` is its folder (the last checkpoint) or a checkpoint file in
    /// it (e.g. `best.safetensors`). The logs are cut to what the checkpoint holds. With
    /// `DataChoice::Saved` or `Moved` the data must be the run's own (same fingerprint).
    pub fn open(path: &Path, plugin_paths: &[PathBuf], data: DataChoice) -> Result<Trainer> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join(FILE))
        } else {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (dir.to_path_buf(), path.to_path_buf())
        };
        let c = Checkpoint::load(&file)?;
        let text = c
            .meta
            .get("config")
            .ok_or_else(|| Error::Other(format!("{}: checkpoint has no config", file.display())))?;
        let mut cfg: Config = serde_json::from_str(text).map_err(|e| {
            Error::Other(format!("{}: bad config in checkpoint: {e}", file.display()))
        })?;
        // A run saved before recipes were versioned was built with the first defaults;
        // today's must not fill its unset options (its loss would change on resume).
        if !text.contains("\"recipe\"") {
            cfg.recipe = 1;
        }
        let saved_data = cfg.data.clone();
        match &data {
            DataChoice::Saved => {}
            DataChoice::Moved(d) | DataChoice::Other(d) => cfg.data = d.clone(),
        }
        let mut t = Trainer::new(cfg, plugin_paths, dir.clone())?;
        match (&data, c.meta.get(FINGERPRINT)) {
            (DataChoice::Other(_), _) => {}
            (_, Some(saved)) => {
                let now = t.data.fingerprint();
                if *saved != now {
                    return Err(Error::Other(format!(
                        "{}: this run was trained on other data than {} ({now}; the run's: \
                         {saved}); give its data with --data PATH",
                        dir.display(),
                        t.data.name
                    )));
                }
            }
            (_, None) => eprintln!(
                "warning: {} predates data fingerprints; cannot check that {} is the data it \
                 was trained on ({saved_data})",
                file.display(),
                t.data.name
            ),
        }
        t.restore(&c)?;
        // The run's own last checkpoint and its logs must agree; another checkpoint file
        // (best.safetensors, or one copied out of its run) takes what logs there are.
        t.logs = if file == dir.join(FILE) {
            Logs::read(&dir, t.epoch, t.step)?
        } else {
            Logs::read_cut(&dir, t.epoch, t.step)?
        };
        Ok(t)
    }

    /// Takes the run folder's lock for writing (a resume): refuses a folder another process
    /// is writing.
    pub fn own(&mut self) -> Result<()> {
        self.lock = Some(rundir::lock(&self.out)?);
        Ok(())
    }

    /// Makes this trainer a data-parallel rank other than 0: it trains in step with rank 0,
    /// which alone owns and writes the run folder (checkpoints, logs, results) and evaluates.
    pub fn follow(&mut self) {
        self.follower = true;
    }

    /// Gives the trainer a lock already taken (a new run claims its folder before building).
    pub fn own_with(&mut self, lock: rundir::RunLock) {
        self.lock = Some(lock);
    }

    /// Rewrites `best.safetensors` from the last checkpoint when the logs say the last epoch
    /// is the best but a crash stopped the process before the best copy was written.
    pub fn repair_best(&self) -> Result<()> {
        let Some(best) = self.best() else {
            return Ok(());
        };
        if best.epoch != self.epoch {
            return Ok(());
        }
        let path = self.out.join(BEST);
        let current = path
            .exists()
            .then(|| Checkpoint::load(&path))
            .transpose()?
            .and_then(|c| c.meta_u64("epoch").ok());
        if current != Some(self.epoch as u64) {
            self.checkpoint()?.save_as(&self.out, BEST, self.epoch)?;
        }
        Ok(())
    }
}

/// A saved run's evaluation networks without its data: the encoder and the projection head
/// rebuilt from the saved config (every option was saved, data-dependent ones included) with
/// the checkpoint's weights, plus the config and the epoch. What `vkgrad export` needs: a
/// run can be exported on a machine that does not hold its data. The plugins are returned
/// too: the modules call into them and must not outlive them.
pub fn open_networks(
    path: &Path,
    plugin_paths: &[PathBuf],
) -> Result<(crate::plugin::Registry, Vec<Module>, Config, usize)> {
    let file = if path.is_dir() {
        path.join(FILE)
    } else {
        path.to_path_buf()
    };
    let c = Checkpoint::load(&file)?;
    let text = c
        .meta
        .get("config")
        .ok_or_else(|| Error::Other(format!("{}: checkpoint has no config", file.display())))?;
    let cfg: Config = serde_json::from_str(text)
        .map_err(|e| Error::Other(format!("{}: bad config in checkpoint: {e}", file.display())))?;
    let reg = crate::plugin::Registry::load_for(plugin_paths)?;
    let mut rng = crate::Rng::new(0);
    let options =
        |m: &serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(m.clone());
    let mut encoder = Module::new(
        &reg,
        &cfg.encoder,
        options(&cfg.encoder_options),
        "encoder",
        &mut rng,
    )?;
    let mut head = Module::new(
        &reg,
        &cfg.head,
        options(&cfg.head_options),
        "head",
        &mut rng,
    )?;
    let get = |n: &str| c.get(n);
    encoder.load_named(&get)?;
    head.load_named(&get)?;
    let epoch = c.meta_u64("epoch")? as usize;
    Ok((reg, vec![encoder, head], cfg, epoch))
}

/// JSON text of a saved value (config, class map).
fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Other(e.to_string()))
}
