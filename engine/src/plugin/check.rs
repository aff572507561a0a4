//! Checks a file before any of its code runs: it exists, is a regular readable file, is a
//! shared object for this machine, and exports the entry symbol. Parsed with `object`, which
//! reads the file as data.

use crate::error::{Error, Result};
use object::{Architecture, BinaryFormat, Object, ObjectKind, ObjectSymbol};
use std::path::Path;
use vkgrad_plugin::abi::ENTRY_SYMBOL;

pub(crate) fn refuse(path: &Path, why: impl Into<String>) -> Error {
    Error::Plugin {
        path: path.display().to_string(),
        message: why.into(),
    }
}

fn host_arch() -> Option<Architecture> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Architecture::X86_64),
        "aarch64" => Some(Architecture::Aarch64),
        "x86" => Some(Architecture::I386),
        "arm" => Some(Architecture::Arm),
        "riscv64" => Some(Architecture::Riscv64),
        _ => None,
    }
}

fn host_format() -> BinaryFormat {
    if cfg!(target_os = "macos") {
        BinaryFormat::MachO
    } else if cfg!(windows) {
        BinaryFormat::Pe
    } else {
        BinaryFormat::Elf
    }
}

/// Everything that can be known about a plugin file without loading it.
pub(crate) fn inspect(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| refuse(path, format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(refuse(path, "is not a regular file"));
    }
    let bytes = std::fs::read(path).map_err(|e| refuse(path, format!("cannot be read: {e}")))?;
    if bytes.is_empty() {
        return Err(refuse(path, "is empty, not a shared library"));
    }
    let file = object::File::parse(&*bytes)
        .map_err(|e| refuse(path, format!("is not a shared library ({e})")))?;
    if file.format() != host_format() {
        return Err(refuse(
            path,
            format!(
                "is a {:?} file; this machine loads {:?}",
                file.format(),
                host_format()
            ),
        ));
    }
    if file.kind() != ObjectKind::Dynamic {
        return Err(refuse(
            path,
            format!("is a {:?} object, not a shared library", file.kind()),
        ));
    }
    if host_arch().is_some_and(|a| a != file.architecture()) {
        return Err(refuse(
            path,
            format!(
                "is built for {:?}, this machine is {}",
                file.architecture(),
                std::env::consts::ARCH
            ),
        ));
    }
    let entry = |name: &[u8]| name.strip_prefix(b"_").unwrap_or(name) == ENTRY_SYMBOL.as_bytes();
    // ELF lists exports in its dynamic symbol table; Mach-O and PE in an export table.
    let exported = file
        .dynamic_symbols()
        .any(|s| s.is_definition() && s.name_bytes().map(entry).unwrap_or(false))
        || file
            .exports()
            .map(|ex| ex.iter().any(|e| entry(e.name())))
            .unwrap_or(false);
    if !exported {
        return Err(refuse(path, format!("does not export `{ENTRY_SYMBOL}`: not a vkgrad plugin (or built for another ABI major version)")));
    }
    Ok(())
}
