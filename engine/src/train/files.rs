//! How a run writes its files: whole, through a temporary file that is synced and renamed, so
//! a reader (or a resume after a crash) sees the old file or the new one, never a torn one;
//! a failed write removes its temporary file. `VKGRAD_FAULT` injects faults at named points so
//! the tests can prove that (a crash after each point, a write error as on a full disk).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The fault points an epoch's end passes, in order: each atomic write passes
/// `after_temp_write:FILE` and `after_rename:FILE`.
pub const FAULT_POINTS: [&str; 8] = [
    "after_temp_write:metrics.jsonl",
    "after_rename:metrics.jsonl",
    "after_temp_write:steps.jsonl",
    "after_rename:steps.jsonl",
    "after_temp_write:checkpoint.safetensors",
    "after_rename:checkpoint.safetensors",
    "after_temp_write:best.safetensors",
    "after_rename:best.safetensors",
];

fn fault() -> Option<String> {
    std::env::var("VKGRAD_FAULT").ok().filter(|v| !v.is_empty())
}

/// With `VKGRAD_FAULT=NAME` or `NAME@EPOCH` (the epoch being finished) the process aborts
/// here, as a `kill -9` would end it: no destructor, no flush.
pub fn point(name: &str, epoch: usize) {
    if let Some(f) = fault() {
        let (want, at) = f.split_once('@').unwrap_or((f.as_str(), ""));
        if want == name && (at.is_empty() || at.parse() == Ok(epoch)) {
            eprintln!("VKGRAD_FAULT: aborting at `{name}` (epoch {epoch})");
            std::process::abort();
        }
    }
}

/// Faults of one data-parallel rank after a step: `VKGRAD_FAULT=kill_rank:R@STEP` ends rank R
/// by SIGKILL, as a machine that dies would (no message, no MPI_Abort); `hang_rank:R@STEP`
/// makes it stop answering, as a driver that hangs would. Either way the job must end, naming
/// the rank (the launcher) or the collective that waited (the watchdog).
pub fn rank_point(rank: usize, step: u64) {
    let Some(f) = fault() else { return };
    let at = format!("{rank}@{step}");
    if f.strip_prefix("kill_rank:") == Some(&at) {
        eprintln!("VKGRAD_FAULT: rank {rank} kills itself after step {step}");
        // SAFETY: signalling this process; nothing of Rust's state is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    if f.strip_prefix("hang_rank:") == Some(&at) {
        eprintln!("VKGRAD_FAULT: rank {rank} hangs after step {step}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// `VKGRAD_FAULT=write_error:FILE` makes writes of the file named FILE fail as a full disk does.
fn injected_error(path: &Path) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match fault() {
        Some(f) if f.strip_prefix("write_error:") == Some(name) => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (injected by VKGRAD_FAULT)",
        )),
        _ => Ok(()),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename); `epoch` only labels the
/// fault points. On failure the temp file is removed and the old `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8], epoch: usize) -> Result<()> {
    let tmp = temp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        injected_error(path)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Other(format!(
            "{}: cannot be written: {e} (the previous version is kept)",
            path.display()
        )));
    }
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    point(&format!("after_temp_write:{file}"), epoch);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Other(format!(
            "{}: cannot be replaced: {e}",
            path.display()
        )));
    }
    point(&format!("after_rename:{file}"), epoch);
    Ok(())
}
