//! `vkgrad train`: a new run (claims its folder), or `--resume` of a saved one (checks the
//! data and the flags against what was saved); Ctrl-C says where the run stands.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use vkgrad::data::Split;
use vkgrad::train::{parallel, rundir, Config, DataChoice, Stop, Trainer};
use vkgrad::{Error, Result};

/// `vkgrad train` flags; each overrides the same key of `--config`.
#[derive(clap::Args, Default)]
pub struct TrainArgs {
    /// A TOML file with any of the settings below (same names, plus *_options tables).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// simclr | supcon | byol
    #[arg(long)]
    pub method: Option<String>,
    /// digits (default) | mnist10k | a path: a folder with IDX files (MNIST / Fashion-MNIST,
    /// gzipped or not), CIFAR-10 binary batches, features.npy + labels.npy, or PNG / JPEG
    /// images (one subfolder per class, or a flat folder without labels).
    #[arg(long)]
    pub data: Option<String>,
    /// Image folders: resize every image to S x S (needed when their sizes differ).
    #[arg(long, value_name = "S")]
    pub image_size: Option<usize>,
    /// Image folders: 1 (grayscale) or 3 (RGB) channels (default: 1 if every image is gray).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Image folders: the fraction held out for evaluation, by a hash of each path (0.2).
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Image folders: an image that cannot be decoded is an error (default: skipped, named).
    #[arg(long)]
    pub strict: bool,
    /// Encoder component (default: convnet for images, widths 32, 64 with global pooling for
    /// 8x8 and a flatten + 128-wide Linear layer above; mlp 256, 128 for vectors).
    #[arg(long)]
    pub encoder: Option<String>,
    /// Augmentation preset (default: digits for 8x8 images, byol for BYOL, simclr otherwise).
    #[arg(long)]
    pub augment: Option<String>,
    /// Loss component (default: nt_xent, supcon or byol by method; NT-Xent on images gets
    /// temperature 0.2, grayscale images through the simclr preset get min_scale 0.5, no
    /// flips and jitter strength 0.5 — the recipes of docs/results.md; `recipe:` shows all).
    #[arg(long)]
    pub loss: Option<String>,
    /// Epochs (default: 40 on 8x8 digits, 15 otherwise).
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<i64>,
    /// Samples per step (default: 128 on 8x8 digits, 256 otherwise).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate, positive (default by optimizer: adamw 1e-3, sgd 0.06·B/256,
    /// lars 0.3·B/256).
    #[arg(long)]
    pub lr: Option<f64>,
    /// sgd | adamw | lars
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// GradCache: back-propagate each batch in chunks of CHUNK samples (memory follows the
    /// chunk, not the batch; batch norm sees each chunk). SimCLR and SupCon.
    #[arg(long, value_name = "CHUNK")]
    pub grad_cache: Option<usize>,
    /// Data-parallel runs (mpirun -np K): batch norm over the global batch (true, the
    /// default) or over each rank's shard (false).
    #[arg(long, value_name = "BOOL")]
    pub sync_batch_norm: Option<bool>,
    /// Run folder (default: runs/METHOD-DATA-UNIXTIME, a fresh name). A folder that holds
    /// anything is refused unless --overwrite.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the run into a non-empty --out folder (files of the run's names are replaced).
    #[arg(long)]
    pub overwrite: bool,
    /// Continue the run in this folder from its last checkpoint, with its saved config. Only
    /// --epochs (a larger total), --data (the same data, moved), --stop-after, --plugin and
    /// --json may be given with it.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many epochs in total (the run can be continued with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// More plugin files or folders to search.
    #[arg(long = "plugin")]
    pub plugins: Vec<PathBuf>,
    /// Print one JSON object at the end (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

fn config_from(a: &TrainArgs) -> Result<Config> {
    let mut c = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(e) = a.epochs {
        if e <= 0 {
            return Err(Error::Other(format!(
                "--epochs must be a positive number, got {e}"
            )));
        }
        c.epochs = e as usize;
    }
    if let Some(lr) = a.lr {
        // 0 is not "the default" (leave --lr out for that): it would train nothing.
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::Other(format!(
                "--lr must be a positive, finite number, got {lr} (leave it out for the optimizer's default)"
            )));
        }
        c.lr = Some(lr);
    }
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = &a.$f { c.$f = v.clone(); })* };
    }
    if a.batch_size == Some(0) {
        return Err(Error::Other(
            "--batch-size must be at least 2, got 0 (leave it out for the default)".into(),
        ));
    }
    set!(method, data, encoder, augment, loss, batch_size, optimizer, seed);
    if a.grad_cache.is_some() {
        c.grad_cache = a.grad_cache;
    }
    if let Some(s) = a.sync_batch_norm {
        c.sync_batch_norm = s;
    }
    if a.image_size.is_some() {
        c.image_size = a.image_size;
    }
    if a.channels.is_some() {
        c.channels = a.channels;
    }
    if a.holdout.is_some() {
        c.holdout = a.holdout;
    }
    c.strict_images |= a.strict;
    Ok(c)
}

/// The flags given with `--resume` that differ from the saved run (each as `--flag value
/// (run: saved)`); `--epochs` and `--data` are handled by the resume itself.
fn conflicts(a: &TrainArgs, saved: &Config, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &a.config {
        out.push(format!("--config {}", c.display()));
    }
    macro_rules! differs {
        ($($f:ident: $flag:literal),*) => {$(
            if let Some(v) = &a.$f {
                if *v != saved.$f {
                    out.push(format!("{} {} (run: {})", $flag, v, saved.$f));
                }
            }
        )*};
    }
    differs!(method: "--method", encoder: "--encoder", augment: "--augment", loss: "--loss",
        batch_size: "--batch-size", optimizer: "--optimizer", seed: "--seed");
    if let Some(lr) = a.lr {
        if Some(lr) != saved.lr {
            out.push(format!("--lr {lr} (run: {})", saved.lr()));
        }
    }
    if let Some(o) = &a.out {
        if !rundir::same_file(o, dir) {
            out.push(format!("--out {} (run: {})", o.display(), dir.display()));
        }
    }
    if a.overwrite {
        out.push("--overwrite".into());
    }
    if let Some(s) = a.image_size.filter(|&s| Some(s) != saved.image_size) {
        out.push(format!("--image-size {s} (run: {:?})", saved.image_size));
    }
    if let Some(c) = a.channels.filter(|&c| Some(c) != saved.channels) {
        out.push(format!("--channels {c} (run: {:?})", saved.channels));
    }
    if let Some(h) = a.holdout.filter(|&h| Some(h) != saved.holdout) {
        out.push(format!("--holdout {h} (run: {:?})", saved.holdout));
    }
    if a.strict && !saved.strict_images {
        out.push("--strict (run: not strict)".into());
    }
    if let Some(g) = a.grad_cache.filter(|&g| Some(g) != saved.grad_cache) {
        out.push(format!("--grad-cache {g} (run: {:?})", saved.grad_cache));
    }
    if let Some(s) = a.sync_batch_norm.filter(|&s| s != saved.sync_batch_norm) {
        out.push(format!(
            "--sync-batch-norm {s} (run: {})",
            saved.sync_batch_norm
        ));
    }
    out
}

fn bar(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Ctrl-C presses so far: the first asks the run to stop after its current step, the second
/// ends the process at once.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

fn on_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("\ninterrupted again: stopping now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after this step (Ctrl-C again to stop at once)");
    })
    .map_err(|e| Error::Other(format!("cannot install the Ctrl-C handler: {e}")))
}

/// A new run's folder: `--out`, or a fresh `runs/METHOD-DATA-TIME`.
fn new_run_dir(a: &TrainArgs, cfg: &Config) -> Result<(PathBuf, rundir::RunLock)> {
    if let Some(out) = &a.out {
        if !vkgrad::data::BUILT_IN.contains(&cfg.data.as_str())
            && rundir::same_file(out, Path::new(&cfg.data))
        {
            return Err(Error::Other(format!(
                "--out {} is the data folder; the run must not write into its own input",
                out.display()
            )));
        }
        let lock = rundir::claim_new(out, a.overwrite)?;
        return Ok((out.clone(), lock));
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data = Path::new(&cfg.data)
        .file_name()
        .map_or("data".into(), |n| n.to_string_lossy());
    let dir = rundir::fresh(Path::new(&format!("runs/{}-{data}-{secs}", cfg.method)))?;
    let lock = rundir::claim_new(&dir, false)?;
    Ok((dir, lock))
}

pub fn train(a: TrainArgs) -> Result<()> {
    if a.stop_after == Some(0) {
        return Err(Error::Other(
            "--stop-after must be at least 1 (epochs in total before stopping)".into(),
        ));
    }
    let world = vkgrad::dist::world();
    let leader = world.rank() == 0;
    let mut t = match &a.resume {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Other(format!(
                    "--resume {}: not a run folder",
                    dir.display()
                )));
            }
            // Rank 0 alone owns the folder; the others read the checkpoint it holds.
            let lock = if leader {
                Some(rundir::lock(dir)?)
            } else {
                None
            };
            world.barrier()?;
            let data = match &a.data {
                Some(d) => DataChoice::Moved(d.clone()),
                None => DataChoice::Saved,
            };
            let mut t = Trainer::open(dir, &a.plugins, data)?;
            let bad = conflicts(&a, &t.cfg, dir);
            if !bad.is_empty() {
                return Err(Error::Other(format!(
                    "--resume continues {} with its saved settings; these flags differ from them: {}. \
                     Start a new run (--out) to change them; only --epochs, --data (the same data, moved), \
                     --stop-after, --plugin and --json go with --resume",
                    dir.display(),
                    bad.join(", ")
                )));
            }
            if let Some(e) = a.epochs {
                t.extend(usize::try_from(e).map_err(|_| {
                    Error::Other(format!("--epochs must be a positive number, got {e}"))
                })?)?;
            }
            if let Some(s) = a.stop_after.filter(|&s| s <= t.epoch) {
                return Err(Error::Other(format!(
                    "--stop-after {s}: the run already has {} epochs; give a larger total",
                    t.epoch
                )));
            }
            match lock {
                Some(lock) => t.own_with(lock),
                None => t.follow(),
            }
            t
        }
        None => {
            let cfg = config_from(&a)?;
            // The run folder is claimed and named on rank 0, then told to the others.
            let (out, lock) = if leader {
                let (out, lock) = new_run_dir(&a, &cfg)?;
                (out, Some(lock))
            } else {
                (PathBuf::new(), None)
            };
            let out = PathBuf::from(parallel::broadcast_text(world, &out.display().to_string())?);
            let mut t = Trainer::new(cfg, &a.plugins, out)?;
            match lock {
                Some(lock) => t.own_with(lock),
                None => t.follow(),
            }
            t
        }
    };
    // The others print nothing but errors: rank 0 speaks for the job.
    let quiet = a.json || !leader;
    on_ctrl_c()?;
    if world.size() > 1 {
        eprintln!(
            "rank {} of {}: device {}",
            world.rank(),
            world.size(),
            vkgrad::device::context()?.info.name
        );
    }
    if !quiet {
        eprintln!(
            "{} on {} ({} train / {} held out, sample {:?}) with {} + {} and {}, {} epochs of {} steps, device {}",
            t.cfg.method,
            t.data.name,
            t.data.indices(Split::Train).len(),
            t.data.indices(Split::Test).len(),
            t.data.sample_shape,
            t.cfg.encoder,
            t.cfg.head,
            t.cfg.loss,
            t.cfg.epochs,
            t.steps_per_epoch(),
            vkgrad::device::context()?.info.name
        );
        // The recipe, as resolved from the data's shape and the flags (config.toml has all).
        let opts = |m: &serde_json::Map<String, serde_json::Value>| {
            serde_json::Value::Object(m.clone()).to_string()
        };
        eprintln!(
            "recipe: batch {}, {} lr {:.0e}, {} {}, {} {}, {} {}",
            t.cfg.batch_size,
            t.cfg.optimizer,
            t.cfg.lr(),
            t.cfg.loss,
            opts(&t.cfg.loss_options),
            t.cfg.encoder,
            opts(&t.cfg.encoder_options),
            t.cfg.augment,
            opts(&t.cfg.augment_options),
        );
    }
    if !quiet && world.size() > 1 {
        eprintln!(
            "data-parallel: {} ranks, {} samples each per step, batch norm {}",
            world.size(),
            t.cfg.batch_size / world.size(),
            if t.cfg.sync_batch_norm {
                "over the global batch"
            } else {
                "per rank"
            }
        );
    }
    let pb = bar(quiet);
    let first_step = t.step;
    let stop = t.fit(a.stop_after, &mut |step, total, msg| {
        pb.set_length(total);
        pb.set_position(step);
        pb.set_message(msg.to_string());
        INTERRUPTS.load(Ordering::SeqCst) == 0
    })?;
    pb.finish_and_clear();
    if let Some(s) = t.replay_summary().filter(|_| leader) {
        eprintln!("{s}");
    }
    if world.size() > 1 && leader {
        // Measured, for docs/distributed.md's scaling model.
        eprintln!(
            "data-parallel: rank 0 handed {:.1} KiB per step to collectives ({} steps)",
            world.bytes_sent() as f64 / 1024.0 / (t.step - first_step).max(1) as f64,
            t.step - first_step
        );
    }
    let interrupted = INTERRUPTS.load(Ordering::SeqCst) > 0;
    if !leader && !interrupted && !matches!(stop, Stop::Interrupted { .. }) {
        // Rank 0 evaluates and reports; this rank's work is done.
        return Ok(());
    }
    if stop == Stop::StoppedAfter && !interrupted {
        let msg = json!({ "stopped_after_epoch": t.epoch, "run_dir": t.out.display().to_string() });
        if a.json {
            println!("{msg}");
        } else {
            eprintln!(
                "stopped after epoch {}; continue with --resume {}",
                t.epoch,
                t.out.display()
            );
        }
        return Ok(());
    }
    if interrupted || matches!(stop, Stop::Interrupted { .. }) {
        let step = match stop {
            Stop::Interrupted { step } => step,
            _ => t.step,
        };
        return Err(Error::Interrupted(format!(
            "interrupted at step {step}; the last checkpoint is the end of epoch {} of {} ({} steps) in {}; \
             continue with: vkgrad train --resume {}",
            t.epoch,
            t.cfg.epochs,
            t.logs.steps.len(),
            t.out.display(),
            t.out.display()
        )));
    }
    print_report(&t.report(true)?, a.json)
}

/// Prints a report: one JSON object with `json`, else the table.
pub(crate) fn print_report(r: &vkgrad::train::Report, json: bool) -> Result<()> {
    if json {
        let text = serde_json::to_string(r).map_err(|e| Error::Other(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "run: {} ({} epochs, {} steps, {:.1} s, {:.0} samples/s on {})",
        r.run_dir, r.epochs, r.steps, r.train_seconds, r.samples_per_second, r.device
    );
    println!(
        "features: {} output; kNN k = {}, votes exp(sim / {})",
        r.features, r.knn_k, r.knn_temperature
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("                     learned   raw pixels");
    println!(
        "kNN accuracy         {}    {}",
        f(r.knn_accuracy),
        f(r.raw_pixels.knn_accuracy)
    );
    println!(
        "linear probe         {}    {}",
        f(r.linear_probe_accuracy),
        f(r.raw_pixels.linear_probe_accuracy)
    );
    println!(
        "10 labels per class  {}    {}",
        f(r.few_label_accuracy),
        f(r.raw_pixels.few_label_accuracy)
    );
    println!(
        "alignment            {}    {}",
        f(r.alignment),
        f(r.raw_pixels.alignment)
    );
    println!(
        "uniformity           {}   {}",
        f(r.uniformity),
        f(r.raw_pixels.uniformity)
    );
    if let (Some(e), Some(k)) = (r.best_epoch, r.best_knn_accuracy) {
        println!("best held-out kNN: {k:.4} at epoch {e} (best.safetensors)");
    }
    println!("{}", verdict(r));
    if r.knn_accuracy.is_some() {
        println!("plots: loss.png, accuracy.png, embedding.png; metrics.jsonl, results.json, checkpoint.safetensors");
    } else {
        println!(
            "plots: loss.png, embedding.png; metrics.jsonl, results.json, checkpoint.safetensors"
        );
    }
    Ok(())
}

/// One line: do the learned features beat raw pixels on every label-based score?
fn verdict(r: &vkgrad::train::Report) -> String {
    let scores = [
        ("kNN", r.knn_accuracy, r.raw_pixels.knn_accuracy),
        (
            "linear probe",
            r.linear_probe_accuracy,
            r.raw_pixels.linear_probe_accuracy,
        ),
        (
            "10 labels per class",
            r.few_label_accuracy,
            r.raw_pixels.few_label_accuracy,
        ),
    ];
    if scores.iter().any(|(_, l, _)| l.is_none()) {
        return "no labels: kNN and probe scores skipped (class subfolders give labels); alignment and uniformity are label-free".into();
    }
    let lost: Vec<&str> = scores
        .iter()
        .filter(|(_, l, p)| l <= p)
        .map(|(n, _, _)| *n)
        .collect();
    if lost.is_empty() {
        "verdict: the learned features beat raw pixels on held-out kNN and both probes".into()
    } else {
        format!(
            "verdict: the learned features do not beat raw pixels on {} (train longer, or see docs/results.md)",
            lost.join(", ")
        )
    }
}
