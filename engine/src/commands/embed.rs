//! `vkgrad embed`: a saved run's features of any supported data set, as .npy (the same
//! numbers `vkgrad eval` scores), for downstream use.

use super::output_allowed;
use std::path::{Path, PathBuf};
use vkgrad::data::Split;
use vkgrad::train::{DataChoice, Trainer};
use vkgrad::{Error, Result};

/// `vkgrad embed` flags.
#[derive(clap::Args)]
pub struct EmbedArgs {
    /// The run folder (or a checkpoint file in it, e.g. best.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The data to embed (default: the run's own): any data `train --data` reads.
    #[arg(long)]
    pub data: Option<String>,
    /// The features [N, D] as float32 .npy.
    #[arg(long)]
    pub out: PathBuf,
    /// The labels [N] as int64 .npy (as the data has them; image folders: class indices
    /// in sorted folder-name order, printed).
    #[arg(long)]
    pub labels_out: Option<PathBuf>,
    /// encoder (its output) or head (the projection the loss sees); default: the run's.
    #[arg(long, value_parser = ["encoder", "head"])]
    pub features: Option<String>,
    /// all (default), train or test (the held-out split), in the data set's order.
    #[arg(long, default_value = "all", value_parser = ["all", "train", "test"])]
    pub split: String,
    /// Replace existing output files.
    #[arg(long)]
    pub overwrite: bool,
    /// More plugin files or folders to search.
    #[arg(long = "plugin")]
    pub plugins: Vec<PathBuf>,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let split = match a.split.as_str() {
        "all" => Split::All,
        "train" => Split::Train,
        "test" => Split::Test,
        s => {
            return Err(Error::Other(format!(
                "--split {s}: give all, train or test"
            )))
        }
    };
    let mut inputs: Vec<&Path> = vec![&a.checkpoint];
    if let Some(d) = &a.data {
        inputs.push(Path::new(d));
    }
    output_allowed(&a.out, a.overwrite, &inputs)?;
    if let Some(l) = &a.labels_out {
        output_allowed(l, a.overwrite, &inputs)?;
        if vkgrad::train::rundir::same_file(l, &a.out) {
            return Err(Error::Other(format!(
                "--labels-out {} is the --out file",
                l.display()
            )));
        }
    }
    let data = match &a.data {
        Some(d) => DataChoice::Other(d.clone()),
        None => DataChoice::Saved,
    };
    let mut t = Trainer::open(&a.checkpoint, &a.plugins, data)?;
    if let Some(f) = a.features {
        t.cfg.eval_features = f;
    }
    if a.labels_out.is_some() && !t.data.labelled {
        return Err(Error::Other(format!(
            "--labels-out: {} has no labels (a flat folder of images); leave it out",
            t.data.name
        )));
    }
    let total = t.data.indices(split).len();
    let bar = indicatif::ProgressBar::new(total as u64);
    let (idx, features, width) = t.embed_split(split, &mut |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    vkgrad::npy::write_f32(&a.out, &[idx.len(), width], &features)?;
    if let Some(l) = &a.labels_out {
        // The labels as the data has them (not the dense class ids used internally).
        let labels: Vec<i64> = idx
            .iter()
            .map(|&i| t.data.class_ids[t.data.labels[i] as usize] as i64)
            .collect();
        vkgrad::npy::write_i64(l, &[idx.len()], &labels)?;
    }
    eprintln!(
        "{}: {} x {width} {} features of {} ({} split, in the data set's order){}",
        a.out.display(),
        idx.len(),
        t.cfg.eval_features,
        t.data.name,
        a.split,
        a.labels_out
            .as_ref()
            .map_or(String::new(), |l| format!("; labels: {}", l.display()))
    );
    if !t.data.class_names.is_empty() && a.labels_out.is_some() {
        let names: Vec<String> = t
            .data
            .class_names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}={n}"))
            .collect();
        eprintln!("classes: {}", names.join(", "));
    }
    Ok(())
}
