//! The `train`, `eval` and `augment` subcommands (the CLI layer over `vkgrad::train`).

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use vkgrad::data::{Dataset, Split};
use vkgrad::train::{checkpoint, Config, Trainer};
use vkgrad::{Error, Result, Tensor};

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
    /// gzipped or not), CIFAR-10 binary batches, or features.npy + labels.npy.
    #[arg(long)]
    pub data: Option<String>,
    /// Encoder component (default: convnet for images, widths 32, 64 with global pooling for
    /// 8x8 and a flatten + 128-wide Linear layer above; mlp 256, 128 for vectors).
    #[arg(long)]
    pub encoder: Option<String>,
    /// Augmentation preset (default: digits for 8x8 images, byol for BYOL, simclr otherwise).
    #[arg(long)]
    pub augment: Option<String>,
    /// Loss component (default: nt_xent, supcon or byol by method).
    #[arg(long)]
    pub loss: Option<String>,
    /// Epochs (default: 30 on 8x8 digits, 15 otherwise).
    #[arg(long, allow_negative_numbers = true)]
    pub epochs: Option<i64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (default by optimizer: adamw 1e-3, sgd 0.06·B/256, lars 0.3·B/256).
    #[arg(long)]
    pub lr: Option<f64>,
    /// sgd | adamw | lars
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder (default: runs/METHOD-DATA-UNIXTIME).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (its saved config is used).
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
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = &a.$f { c.$f = v.clone(); })* };
    }
    set!(method, data, encoder, augment, loss, batch_size, lr, optimizer, seed);
    Ok(c)
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

pub fn train(a: TrainArgs) -> Result<()> {
    let mut t = match &a.resume {
        Some(dir) => {
            if a.config.is_some() || a.method.is_some() || a.data.is_some() || a.epochs.is_some() {
                return Err(Error::Other("--resume continues the run with its saved config; drop --config/--method/--data/--epochs".into()));
            }
            Trainer::open(dir, &a.plugins)?
        }
        None => {
            let cfg = config_from(&a)?;
            let out = a.out.clone().unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from(format!(
                    "runs/{}-{}-{secs}",
                    cfg.method,
                    Path::new(&cfg.data)
                        .file_name()
                        .map_or("data".into(), |n| n.to_string_lossy())
                ))
            });
            if out.join(checkpoint::FILE).exists() {
                return Err(Error::Other(format!(
                    "{} already holds a run; continue it with --resume {} or choose another --out",
                    out.display(),
                    out.display()
                )));
            }
            Trainer::new(cfg, &a.plugins, out)?
        }
    };
    if !a.json {
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
    }
    let pb = bar(a.json);
    let secs = t.fit(a.stop_after, &mut |step, total, msg| {
        pb.set_length(total);
        pb.set_position(step);
        pb.set_message(msg.to_string());
    })?;
    pb.finish_and_clear();
    if t.epoch < t.cfg.epochs {
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
    let r = t.report(secs, true)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| Error::Other(e.to_string()))?
        );
    } else {
        print_report(&r);
    }
    Ok(())
}

fn print_report(r: &vkgrad::train::Report) {
    println!(
        "run: {} ({} epochs, {} steps, {:.1} s, {:.0} samples/s on {})",
        r.run_dir, r.epochs, r.steps, r.train_seconds, r.samples_per_second, r.device
    );
    println!(
        "features: {} output; kNN k = {}, votes exp(sim / {})",
        r.features, r.knn_k, r.knn_temperature
    );
    println!("                     learned   raw pixels");
    println!(
        "kNN accuracy         {:.4}    {:.4}",
        r.knn_accuracy, r.raw_pixels.knn_accuracy
    );
    println!(
        "linear probe         {:.4}    {:.4}",
        r.linear_probe_accuracy, r.raw_pixels.linear_probe_accuracy
    );
    println!(
        "10 labels per class  {:.4}    {:.4}",
        r.few_label_accuracy, r.raw_pixels.few_label_accuracy
    );
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
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
    println!("plots: loss.png, accuracy.png, embedding.png; metrics.jsonl, results.json, checkpoint.safetensors");
}

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
    let mut t = Trainer::open(checkpoint, plugins)?;
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
    if let Some(d) = choices.data {
        let ds = Dataset::load(&d)?;
        if ds.sample_shape != t.data.sample_shape {
            return Err(Error::Other(format!(
                "{d}: samples of shape {:?}; the checkpoint's encoder takes {:?}",
                ds.sample_shape, t.data.sample_shape
            )));
        }
        t.data = ds;
    }
    let r = t.report(t.history.iter().map(|h| h.seconds).sum(), false)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| Error::Other(e.to_string()))?
        );
    } else {
        print_report(&r);
    }
    Ok(())
}

/// `vkgrad augment`: originals and two augmented views of the first samples, as a PNG grid.
pub fn augment(
    preset: &str,
    data: &str,
    out: &Path,
    count: usize,
    seed: u64,
    plugins: &[PathBuf],
) -> Result<()> {
    let ds = Dataset::load(data)?;
    let shape = ds.sample_shape.clone();
    if shape.len() != 3 {
        return Err(Error::Other(format!(
            "{data}: samples of shape {shape:?} are not images"
        )));
    }
    let reg = vkgrad::plugin::Registry::load_all(&vkgrad::plugin::search_paths(plugins));
    let comp = reg.find("augmentation", preset)?;
    let declared = comp.option_names();
    let idx: Vec<usize> = (0..count.min(ds.len())).collect();
    let mut bshape = vec![idx.len()];
    bshape.extend(&shape);
    let x = Tensor::from_vec(ds.gather(&idx), &bshape)?;
    let mut rows = vec![("original".to_string(), x.to_vec()?)];
    for view in 1..=2u64 {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("channels", json!(shape[0])),
            ("size", json!(shape[1])),
            ("view", json!(view)),
        ] {
            if declared.iter().any(|d| d == k) {
                o.insert(k.into(), v);
            }
        }
        let inst = comp.instantiate(&serde_json::Value::Object(o).to_string())?;
        let y = inst.augment(&x, vkgrad::train::mix(seed, 0, view))?;
        rows.push((format!("view {view}"), y.to_vec()?));
    }
    let rows: Vec<(&str, Vec<f32>)> = rows.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let zoom = (96 / shape[1]).max(1);
    vkgrad::plot::image_grid(out, &rows, [shape[0], shape[1], shape[2]], idx.len(), zoom)?;
    println!(
        "{}: {} originals and two views with {}",
        out.display(),
        idx.len(),
        comp.name
    );
    Ok(())
}
