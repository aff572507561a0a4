//! The on-disk kernel cache, so a second run compiles nothing: the SPIR-V of kernels generated
//! at run time (keyed by their whole GLSL source) and the driver's `VkPipelineCache` data (one
//! file per driver: vendor, device, driver version and pipeline-cache UUID).
//!
//! Where: `VKGRAD_KERNEL_CACHE=<dir>`, else `$XDG_CACHE_HOME/vkgrad/kernels`, else
//! `$HOME/.cache/vkgrad/kernels`; `VKGRAD_KERNEL_CACHE=off` turns it off. It is a cache: an
//! entry that does not read back whole (another version, a torn or edited file) is a miss and is
//! rewritten; files are written to a temporary name and renamed, so processes sharing the folder
//! (parallel tests, MPI ranks) never see half a file. If the folder cannot be written, one
//! warning says so and the run goes on compiling in memory.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The cache folder, or None when turned off or no home is known.
pub(crate) fn dir() -> Option<PathBuf> {
    match std::env::var_os("VKGRAD_KERNEL_CACHE") {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|c| c.join("vkgrad").join("kernels")),
    }
}

const SPIRV_MAGIC: &[u8; 8] = b"VKGSPV01";
const PIPELINES_MAGIC: &[u8; 8] = b"VKGPLC01";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spirv_path(dir: &Path, source: &str) -> PathBuf {
    dir.join("spirv")
        .join(format!("{}.bin", hex(&Sha256::digest(source.as_bytes()))))
}

/// The SPIR-V stored for exactly this source, if any. The file holds the source itself, so a
/// hash collision or a stale entry can only miss, never return another kernel.
pub(crate) fn spirv_get(dir: &Path, source: &str) -> Option<Vec<u32>> {
    let bytes = std::fs::read(spirv_path(dir, source)).ok()?;
    let rest = bytes.strip_prefix(SPIRV_MAGIC)?;
    let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let stored = rest.get(8..8usize.checked_add(len)?)?;
    if stored != source.as_bytes() {
        return None;
    }
    let words = &rest[8 + len..];
    // SPIR-V starts with its magic number; anything else is not a module we wrote.
    if words.len() % 4 != 0 || words.len() < 20 || words[..4] != 0x0723_0203u32.to_le_bytes() {
        return None;
    }
    Some(
        words
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    )
}

pub(crate) fn spirv_put(dir: &Path, source: &str, words: &[u32]) {
    let mut bytes = Vec::with_capacity(16 + source.len() + 4 * words.len());
    bytes.extend_from_slice(SPIRV_MAGIC);
    bytes.extend_from_slice(&(source.len() as u64).to_le_bytes());
    bytes.extend_from_slice(source.as_bytes());
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    write_atomic(&spirv_path(dir, source), &bytes);
}

/// The file of one driver's pipeline-cache data.
pub(crate) fn pipelines_path(dir: &Path, driver_key: &str) -> PathBuf {
    dir.join("pipelines").join(format!("{driver_key}.bin"))
}

/// The pipeline-cache data stored for this driver, checked against its SHA-256 (the driver
/// checks the header itself, but not that the rest is what it wrote).
pub(crate) fn pipelines_get(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(PIPELINES_MAGIC)?;
    let (sum, data) = (rest.get(..32)?, rest.get(32..)?);
    (Sha256::digest(data).as_slice() == sum).then(|| data.to_vec())
}

pub(crate) fn pipelines_put(path: &Path, data: &[u8]) {
    let mut bytes = Vec::with_capacity(40 + data.len());
    bytes.extend_from_slice(PIPELINES_MAGIC);
    bytes.extend_from_slice(&Sha256::digest(data));
    bytes.extend_from_slice(data);
    write_atomic(path, &bytes);
}

/// Writes through a temporary file in the same folder and renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) {
    let result = (|| -> std::io::Result<()> {
        let parent = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        tmp.write_all(bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    if let Err(e) = result {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "vkgrad: warning: cannot write the kernel cache at {} ({e}); kernels are compiled \
                 in memory for this run (set VKGRAD_KERNEL_CACHE to another folder, or to off)",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spirv_entries_read_back_only_for_their_own_source() {
        let d = tempfile::tempdir().unwrap();
        let words = [0x0723_0203, 1, 2, 3, 4, 5];
        spirv_put(d.path(), "void main() {}", &words);
        assert_eq!(
            spirv_get(d.path(), "void main() {}").as_deref(),
            Some(&words[..])
        );
        assert_eq!(spirv_get(d.path(), "void main() { }"), None);
        // A torn file is a miss, not a kernel.
        let p = spirv_path(d.path(), "void main() {}");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(spirv_get(d.path(), "void main() {}"), None);
        // A source whose stored copy differs (a collision, an edit) is a miss.
        let mut edited = bytes.clone();
        edited[20] ^= 1;
        std::fs::write(&p, &edited).unwrap();
        assert_eq!(spirv_get(d.path(), "void main() {}"), None);
    }

    #[test]
    fn pipeline_data_is_checked_against_its_sum() {
        let d = tempfile::tempdir().unwrap();
        let p = pipelines_path(d.path(), "k");
        pipelines_put(&p, b"driver data");
        assert_eq!(pipelines_get(&p).as_deref(), Some(&b"driver data"[..]));
        let mut bytes = std::fs::read(&p).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(pipelines_get(&p), None);
    }
}
