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
