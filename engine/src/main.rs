//! The `vkgrad` command-line tool: a thin layer over the library.

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
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
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
        Command::Verify {
            path,
            cases,
            seed,
            json,
        } => {
            let mut reg = vkgrad::plugin::Registry::default();
            reg.load(&path)?;
            let plugin = &reg.plugins[0];
            let total: usize = plugin
                .components
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
            let checks = vkgrad::plugin::verify::verify(plugin, cases, seed, |what| {
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
