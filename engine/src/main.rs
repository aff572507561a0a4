//! The `vkgrad` command-line tool: a thin layer over the library.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use vkgrad::device::{self, DeviceChoice};

#[derive(Parser)]
#[command(
    name = "vkgrad",
    version,
    about = "A tensor engine on Vulkan with autograd, for contrastive and self-supervised learning"
)]
struct Cli {
    /// Device to run on: an index or part of a name from `vkgrad devices` (default: the best
    /// by type: discrete GPU > integrated > virtual > CPU).
    #[arg(long, global = true, env = "VKGRAD_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Train(commands::TrainArgs),
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
        /// Options (JSON) to build the component with instead of its defaults; needs --component.
        #[arg(long, requires = "component")]
        options: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli);
    let profiling = std::env::var("VKGRAD_PROFILE").is_ok_and(|v| v == "1");
    if let Some(report) = profiling
        .then(|| device::context().ok().and_then(|c| c.profile_report()))
        .flatten()
    {
        eprint!("{report}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> vkgrad::Result<()> {
    let choice = cli
        .device
        .as_deref()
        .map(DeviceChoice::parse)
        .unwrap_or(DeviceChoice::Auto);
    match cli.command {
        Command::Train(args) => {
            device::select_device(choice.clone())?;
            commands::train(args)
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
            device::select_device(choice.clone())?;
            let choices = commands::EvalChoices {
                data,
                knn_k,
                knn_temperature,
                features,
            };
            commands::eval(&checkpoint, choices, &plugins, json)
        }
        Command::Augment {
            preset,
            data,
            out,
            count,
            seed,
            plugins,
        } => {
            device::select_device(choice.clone())?;
            commands::augment(&preset, &data, &out, count, seed, &plugins)
        }
        Command::Devices { json } => {
            let devices = device::list_devices(&choice)?;
            if json {
                println!("{}", serde_json::json!({ "devices": devices }));
                return Ok(());
            }
            for d in &devices {
                let mark = if d.chosen { "*" } else { " " };
                println!("{mark} {}: {} ({})", d.index, d.name, d.kind);
                println!(
                    "      driver {} {}, Vulkan {}",
                    d.driver, d.driver_info, d.api_version
                );
                let heaps: Vec<String> = d
                    .memory_heaps
                    .iter()
                    .map(|h| {
                        format!(
                            "{:.1} GiB{}",
                            h.bytes as f64 / (1u64 << 30) as f64,
                            if h.device_local { " device-local" } else { "" }
                        )
                    })
                    .collect();
                println!("      memory heaps: {}", heaps.join(", "));
                let sg = d
                    .subgroup_size
                    .map_or("unknown".to_string(), |s| s.to_string());
                let [x, y, z] = d.max_workgroup_size;
                println!(
                    "      subgroup size {sg}, max workgroup {x}x{y}x{z} ({} invocations)",
                    d.max_workgroup_invocations
                );
                if !(d.has_compute_queue && d.push_descriptor) {
                    println!("      not usable: needs a compute queue and VK_KHR_push_descriptor");
                }
            }
            if !devices.iter().any(|d| d.chosen) {
                device::resolve_device(&choice)?; // the error that says why
            }
            println!("(* = the device vkgrad uses; choose with --device N|NAME or VKGRAD_DEVICE)");
            Ok(())
        }
        Command::Plugins { plugins, json } => {
            let files = vkgrad::plugin::search_paths(&plugins);
            let reg = vkgrad::plugin::Registry::load_all(&files);
            if json {
                let refused: Vec<String> = reg.refused.iter().map(|e| e.to_string()).collect();
                println!(
                    "{}",
                    serde_json::json!({ "plugins": reg.plugins, "refused": refused })
                );
                return Ok(());
            }
            for p in &reg.plugins {
                println!(
                    "{} {} (ABI {}) — {}",
                    p.name,
                    p.version,
                    p.abi,
                    p.path.display()
                );
                for c in &p.components {
                    println!("  {} [{}]: {}", c.name, c.kind, c.description);
                    for o in c.options.as_array().into_iter().flatten() {
                        let field = |k: &str| o[k].as_str().unwrap_or("?").to_string();
                        println!(
                            "      {} ({}, default {}): {}",
                            field("name"),
                            field("type"),
                            o["default"],
                            field("doc")
                        );
                    }
                }
            }
            if reg.plugins.is_empty() {
                let searched: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                println!("no plugins found (searched: {})", searched.join(", "));
            }
            for e in &reg.refused {
                eprintln!("refused: {e}");
            }
            Ok(())
        }
        Command::Loss {
            name,
            features,
            labels,
            inputs,
            sets,
            grad_out,
            plugins,
            json,
        } => loss_command(
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
            options,
            json,
        } => {
            let mut reg = vkgrad::plugin::Registry::default();
            reg.load(&path)?;
            let plugin = &reg.plugins[0];
            let only = vkgrad::plugin::verify::Only {
                component: component.as_deref(),
                options: options.as_deref().unwrap_or("{}"),
            };
            let chosen = only.select(plugin)?;
            let total: usize = chosen
                .iter()
                .map(|c| vkgrad::plugin::verify::case_properties(c.kind).len())
                .sum();
            let total = total as u64;
            let bar = if json {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(total)
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            {
                bar.set_style(style);
            }
            let checks =
                vkgrad::plugin::verify::verify(&chosen, only.options, cases, seed, |what| {
                    bar.set_message(what.to_string());
                    bar.inc(1);
                });
            bar.finish_and_clear();
            let failed = checks.iter().filter(|c| !c.passed).count();
            if json {
                let out = serde_json::json!({ "plugin": plugin.name, "path": path, "checks": checks, "failed": failed });
                println!("{out}");
            } else {
                for c in &checks {
                    let mark = if c.passed { "ok  " } else { "FAIL" };
                    println!("{mark} {} — {}: {}", c.component, c.property, c.detail);
                }
                println!("{} passed, {} failed", checks.len() - failed, failed);
            }
            if failed > 0 {
                return Err(vkgrad::Error::Other(format!(
                    "{failed} check(s) failed for {}",
                    path.display()
                )));
            }
            Ok(())
        }
        Command::Bench {
            json,
            filter,
            quick,
        } => {
            device::select_device(choice)?;
            let ctx = device::context()?;
            if !json {
                println!(
                    "device: {} ({}, {})",
                    ctx.info.name, ctx.info.kind, ctx.info.driver
                );
            }
            let results = vkgrad::bench::run(filter.as_deref(), quick, |r| {
                if !json {
                    println!("{}", r.describe());
                }
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "device": ctx.info.name, "results": results })
                );
            }
            Ok(())
        }
    }
}

/// `vkgrad loss`: one evaluation of a loss component on .npy files.
#[allow(clippy::too_many_arguments)]
fn loss_command(
    name: &str,
    features: &std::path::Path,
    labels: Option<&std::path::Path>,
    inputs: &[String],
    sets: &[String],
    grad_out: Option<&std::path::Path>,
    plugins: &[std::path::PathBuf],
    json: bool,
) -> vkgrad::Result<()> {
    use vkgrad::{Error, IntTensor, Tensor};
    let reg = vkgrad::plugin::Registry::load_all(&vkgrad::plugin::search_paths(plugins));
    let comp = reg.find("loss", name)?;
    let mut options = serde_json::Map::new();
    for kv in sets {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Other(format!("--set {kv}: expected KEY=VALUE")))?;
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        options.insert(k.to_string(), value);
    }
    let loss = comp.create_loss(&serde_json::Value::Object(options).to_string())?;
    let (shape, data) = vkgrad::npy::read_floats(features)?;
    if shape.len() != 3 {
        return Err(Error::Other(format!(
            "{}: features must be [N, V, D], got shape {shape:?}",
            features.display()
        )));
    }
    let x = Tensor::from_vec(data.iter().map(|&v| v as f32).collect(), &shape)?.requires_grad();
    let labels = match labels {
        Some(p) => {
            let (lshape, l) = vkgrad::npy::read_labels(p)?;
            if lshape != [shape[0]] {
                return Err(Error::Other(format!(
                    "{}: labels of shape {lshape:?} for {} samples; expected [{}]",
                    p.display(),
                    shape[0],
                    shape[0]
                )));
            }
            Some(IntTensor::from_vec(l, &[shape[0]])?)
        }
        None => None,
    };
    let wanted = loss.describe()?.extra_inputs;
    let mut extra = Vec::new();
    for key in &wanted {
        let file = inputs
            .iter()
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k == key).map(|(_, f)| f))
            .ok_or_else(|| Error::Other(format!("{} needs --input {key}=FILE.npy", comp.name)))?;
        let (eshape, e) = vkgrad::npy::read_floats(std::path::Path::new(file))?;
        if eshape != shape {
            return Err(Error::Other(format!(
                "{file}: shape {eshape:?} differs from the features' {shape:?}"
            )));
        }
        extra.push(Tensor::from_vec(
            e.iter().map(|&v| v as f32).collect(),
            &shape,
        )?);
    }
    for kv in inputs {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if !wanted.iter().any(|w| w == key) {
            return Err(Error::Other(format!(
                "--input {kv}: {} takes no input `{key}` (it takes {wanted:?})",
                comp.name
            )));
        }
    }
    let y = loss.forward_with(&x, labels.as_ref(), &extra)?;
    let value = y.item()?;
    if let Some(path) = grad_out {
        y.backward()?;
        let g = x
            .grad()
            .map(|g| g.to_vec())
            .transpose()?
            .unwrap_or_else(|| vec![0.0; x.numel()]);
        vkgrad::npy::write_f32(path, &shape, &g)?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "loss": value, "component": comp.name })
        );
    } else {
        println!("{}: {value}", comp.name);
    }
    Ok(())
}
