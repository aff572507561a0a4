//! The `vkgrad` command line: the flags of every subcommand, and one file per subcommand.

mod augment;
mod bench;
mod devices;
mod embed;
mod eval;
mod export;
mod loss;
mod plugins;
mod train;
mod verify;

use clap::{Parser, Subcommand};
use vkgrad::device::{self, DeviceChoice};

#[derive(Parser)]
#[command(
    name = "vkgrad",
    version,
    about = "A tensor engine on Vulkan with autograd, for contrastive and self-supervised learning"
)]
pub struct Cli {
    /// Device to run on: an index or part of a name from `vkgrad devices` (default: the best
    /// by type: discrete GPU > integrated > virtual > CPU).
    #[arg(long, global = true, env = "VKGRAD_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List the Vulkan devices and mark the one vkgrad uses.
    Devices {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure matmul, elementwise add, per-op overhead and a SimCLR training step.
    Bench {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Run only the benchmarks whose name contains this (matmul, add, op_chain, simclr_mlp_step).
        #[arg(long)]
        filter: Option<String>,
        /// Fewer repetitions (for smoke tests).
        #[arg(long)]
        quick: bool,
    },
    /// List the plugins found, their components and options.
    Plugins {
        /// A plugin file or a folder of them (repeatable); VKGRAD_PLUGIN_PATH and the built-in
        /// plugins next to the vkgrad binary are searched too.
        #[arg(long = "plugin")]
        plugins: Vec<std::path::PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a loss component on .npy data: prints the value, writes the gradient.
    Loss {
        /// The loss: `plugin::name`, or just `name` when unique (see `vkgrad plugins`).
        name: String,
        /// Features [N, V, D] (float32 or float64).
        #[arg(long)]
        features: std::path::PathBuf,
        /// Labels [N] (any integer dtype).
        #[arg(long)]
        labels: Option<std::path::PathBuf>,
        /// An extra input the loss declares, e.g. --input targets=t.npy (repeatable).
        #[arg(long = "input", value_name = "KEY=FILE")]
        inputs: Vec<String>,
        /// An option, e.g. --set temperature=0.2 (the value is read as JSON when it parses).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Write d loss / d features here, as float32 .npy of the features' shape.
        #[arg(long)]
        grad_out: Option<std::path::PathBuf>,
        /// More plugin files or folders to search.
        #[arg(long = "plugin")]
        plugins: Vec<std::path::PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Train an encoder with SimCLR, SupCon or BYOL; evaluates, plots and checkpoints the run.
    Train(Box<train::TrainArgs>),
    /// Evaluate a run's checkpoint: kNN, linear probe, few-label probe, alignment/uniformity.
    Eval {
        /// The run folder (or its checkpoint.safetensors).
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// Evaluate on other data of the same sample shape (default: the run's data).
        #[arg(long)]
        data: Option<String>,
        /// kNN neighbours (default: the run's, 20).
        #[arg(long)]
        knn_k: Option<usize>,
        /// kNN vote temperature: weights exp(sim / t) (default: the run's, 0.1).
        #[arg(long)]
        knn_temperature: Option<f64>,
        /// Features to evaluate: encoder (its output) or head (the projection the loss sees).
        #[arg(long, value_parser = ["encoder", "head"])]
        features: Option<String>,
        /// More plugin files or folders to search.
        #[arg(long = "plugin")]
        plugins: Vec<std::path::PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a run's features of a data set to .npy (the numbers `vkgrad eval` scores).
    Embed(embed::EmbedArgs),
    /// Export a run's encoder (and optionally its head) as an ONNX graph.
    Export {
        /// The run folder (or a checkpoint file in it, e.g. best.safetensors).
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// The format (onnx).
        #[arg(long, default_value = "onnx")]
        format: String,
        /// The file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Include the projection head (output: the projection the loss sees).
        #[arg(long)]
        head: bool,
        /// Replace an existing output file.
        #[arg(long)]
        overwrite: bool,
        /// More plugin files or folders to search.
        #[arg(long = "plugin")]
        plugins: Vec<std::path::PathBuf>,
    },
    /// Picture what an augmentation preset does: originals and two views as a PNG grid.
    Augment {
        /// The augmentation component (simclr, byol, digits, or any other).
        #[arg(long)]
        preset: String,
        /// digits | mnist10k | a path (as for train).
        #[arg(long, default_value = "digits")]
        data: String,
        /// The PNG to write.
        #[arg(long, default_value = "augment.png")]
        out: std::path::PathBuf,
        /// How many samples.
        #[arg(long, default_value_t = 12)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// More plugin files or folders to search.
        #[arg(long = "plugin")]
        plugins: Vec<std::path::PathBuf>,
    },
    /// Prove a plugin right: run the property harness on every component of the file at PATH.
    Verify {
        /// The plugin file (a .so / .dylib / .dll).
        path: std::path::PathBuf,
        /// Generated cases per property.
        #[arg(long, default_value_t = 32)]
        cases: u32,
        /// Seed of the case generator.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Verify only this component (its name with or without the `plugin::` prefix).
        #[arg(long)]
        component: Option<String>,
        /// Options (JSON) to build the component with in every case; needs --component.
        /// Without it, each case draws options from the domains the component declares.
        #[arg(long, requires = "component")]
        options: Option<String>,
        /// Prove the harness itself: inject known faults into each component (forward
        /// × (1 + 1e-3); for losses and encoders also gradient × 1.1, gradient dropped, NaN at
        /// degenerate inputs; each sampled option ignored by the device path) and report
        /// which property caught each; a fault that none catches is a blind spot (an error).
        #[arg(long, conflicts_with = "options")]
        self_test: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> vkgrad::Result<()> {
    let choice = cli
        .device
        .as_deref()
        .map(DeviceChoice::parse)
        .unwrap_or(DeviceChoice::Auto);
    let w = vkgrad::dist::world();
    if w.size() > 1 && !matches!(cli.command, Command::Train(_)) {
        // K processes would each write the same files; only training is data-parallel.
        return Err(vkgrad::Error::Other(format!(
            "this command runs in one process; it was launched as {} (mpirun / srun): only \
             `vkgrad train` is data-parallel",
            w.size()
        )));
    }
    match cli.command {
        Command::Train(args) => {
            // Data-parallel ranks on one machine take a device each (--device overrides).
            let choice = match choice {
                DeviceChoice::Auto if w.size() > 1 => DeviceChoice::AutoNth(w.local_rank()),
                c => c,
            };
            device::select_device(choice)?;
            train::train(*args)
        }
        Command::Eval {
            checkpoint,
            data,
            knn_k,
            knn_temperature,
            features,
            plugins,
            json,
        } => {
            device::select_device(choice)?;
            let choices = eval::EvalChoices {
                data,
                knn_k,
                knn_temperature,
                features,
            };
            eval::eval(&checkpoint, choices, &plugins, json)
        }
        Command::Embed(args) => {
            device::select_device(choice)?;
            embed::embed(args)
        }
        Command::Export {
            checkpoint,
            format,
            out,
            head,
            overwrite,
            plugins,
        } => {
            device::select_device(choice)?;
            export::export(&checkpoint, &format, &out, head, overwrite, &plugins)
        }
        Command::Augment {
            preset,
            data,
            out,
            count,
            seed,
            plugins,
        } => {
            device::select_device(choice)?;
            augment::augment(&preset, &data, &out, count, seed, &plugins)
        }
        Command::Devices { json } => devices::devices(&choice, json),
        Command::Plugins { plugins, json } => plugins::plugins(&plugins, json),
        Command::Loss {
            name,
            features,
            labels,
            inputs,
            sets,
            grad_out,
            plugins,
            json,
        } => loss::loss(
            &name,
            &features,
            labels.as_deref(),
            &inputs,
            &sets,
            grad_out.as_deref(),
            &plugins,
            json,
        ),
        Command::Verify {
            path,
            cases,
            seed,
            component,
            options: _,
            self_test: true,
            json,
        } => verify::self_test(&path, cases, seed, component.as_deref(), json),
        Command::Verify {
            path,
            cases,
            seed,
            component,
            options,
            self_test: false,
            json,
        } => verify::verify(
            &path,
            cases,
            seed,
            component.as_deref(),
            options.as_deref(),
            json,
        ),
        Command::Bench {
            json,
            filter,
            quick,
        } => bench::bench(choice, json, filter.as_deref(), quick),
    }
}

/// An output file may be written: it does not exist (or `--overwrite`), it is none of the
/// command's input files, and it replaces no file inside an input folder (a data set or a
/// run folder) — a new file there is fine.
fn output_allowed(
    out: &std::path::Path,
    overwrite: bool,
    inputs: &[&std::path::Path],
) -> vkgrad::Result<()> {
    let inside = |dir: &std::path::Path| {
        dir.is_dir()
            && out.exists()
            && match (std::fs::canonicalize(dir), std::fs::canonicalize(out)) {
                (Ok(d), Ok(o)) => o.starts_with(d),
                _ => false,
            }
    };
    if let Some(i) = inputs
        .iter()
        .find(|i| vkgrad::train::rundir::same_file(i, out) || inside(i))
    {
        return Err(vkgrad::Error::Other(format!(
            "{}: is an input or part of one ({}); give another output file",
            out.display(),
            i.display()
        )));
    }
    if out.is_dir() {
        return Err(vkgrad::Error::Other(format!(
            "{}: is a folder; give a file name",
            out.display()
        )));
    }
    if out.exists() && !overwrite {
        return Err(vkgrad::Error::Other(format!(
            "{}: exists; give --overwrite to replace it",
            out.display()
        )));
    }
    Ok(())
}
