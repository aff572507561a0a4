//! Who owns a run folder. A run holds an exclusive lock on `DIR/.vkgrad.lock` for its whole
//! life (an OS file lock: released when the process ends, however it ends), so a second
//! writer is refused with the holder's PID; a new run never writes into a folder that holds
//! anything unless `--overwrite` says so; generated folder names are claimed atomically.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const LOCK: &str = ".vkgrad.lock";

/// The held lock of a run folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub dir: PathBuf,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Other(format!("{}: cannot {what}: {e}", path.display()))
}

/// Takes the lock of `dir` (created if missing), or says who holds it.
pub fn lock(dir: &Path) -> Result<RunLock> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, "be created", e))?;
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io(&path, "be opened", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Other(format!(
                "{}: the run folder is in use by another vkgrad process{}; wait for it to \
                 finish or choose another --out",
                dir.display(),
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (PID {holder})")
                }
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, "be locked", e)),
    }
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .map_err(|e| io(&path, "be written", e))?;
    Ok(RunLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

/// The names in `dir` other than the lock file.
fn contents(dir: &Path) -> Result<Vec<String>> {
    // An entry that cannot be read is an error, not skipped: skipping could make a folder
    // that holds something look empty.
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, "be listed", e))? {
        let name = e
            .map_err(|e| io(dir, "be listed", e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != LOCK {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Claims `dir` for a new run: locks it, then refuses a folder that already holds anything
/// (a run or the user's own files) unless `overwrite`.
pub fn claim_new(dir: &Path, overwrite: bool) -> Result<RunLock> {
    let lock = lock(dir)?;
    let held = contents(dir)?;
    if !held.is_empty() && !overwrite {
        let run = held.iter().any(|n| n == super::checkpoint::FILE);
        let shown: Vec<&str> = held.iter().take(5).map(String::as_str).collect();
        return Err(Error::Other(format!(
            "{} is not empty ({}{}); {}",
            dir.display(),
            shown.join(", "),
            if held.len() > 5 { ", …" } else { "" },
            if run {
                format!(
                    "it holds a run: continue it with --resume {0}, or replace it with --overwrite",
                    dir.display()
                )
            } else {
                "choose another --out, or add --overwrite to write the run's files into it \
                 (files of the same names are replaced)"
                    .into()
            }
        )));
    }
    Ok(lock)
}

/// A fresh folder `base`, `base-2`, `base-3`, … : the first name no one has taken, created
/// atomically (two runs started in the same second get different folders).
pub fn fresh(base: &Path) -> Result<PathBuf> {
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, "be created", e))?;
    }
    for i in 1u32..=u32::MAX {
        let dir = if i == 1 {
            base.to_path_buf()
        } else {
            PathBuf::from(format!("{}-{i}", base.display()))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir, "be created", e)),
        }
    }
    Err(Error::Other(format!(
        "{}: every numbered variant of this run name is taken",
        base.display()
    )))
}

/// Whether two paths name the same file or folder (both must exist to be the same).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
