//! The `vkgrad` command-line tool: a thin layer over the library (`commands/`).

mod commands;

use clap::Parser;
use std::process::ExitCode;
use vkgrad::{device, dist};

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    // Under `mpirun -np K` (K > 1): MPI, this process's rank; else world size 1.
    let world = match dist::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = commands::run(cli);
    // A command that failed still keeps the pipelines it built for the next run.
    let saved = device::save_kernel_cache();
    let result = result.and(saved);
    let profiling = std::env::var("VKGRAD_PROFILE").is_ok_and(|v| v == "1");
    if let Some(report) = profiling
        .then(|| device::context().ok().and_then(|c| c.profile_report()))
        .flatten()
    {
        eprint!("{report}");
    }
    // Every rank leaves together (MPI_Finalize); an error here is a rank's error like others.
    let result = result.and_then(|()| dist::finalize());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by the user: the message says where the run stands; 130 as shells report
        // a command ended by SIGINT.
        Err(vkgrad::Error::Interrupted(m)) => {
            eprintln!("{m}");
            ExitCode::from(130)
        }
        Err(e) if world.size() > 1 => {
            // One rank's error ends the whole job (the others may be waiting in a collective
            // for it), named by rank.
            eprintln!("error: rank {} of {}: {e}", world.rank(), world.size());
            world.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
