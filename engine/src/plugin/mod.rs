//! Layer 5: the plugin host. Finds plugin files, checks them before running any of their code
//! (`check.rs`), loads them with libloading (never unloading), checks the ABI version and what
//! they register, and wraps their components in safe handles. A plugin that panics is marked
//! poisoned and not called again; every refusal names the file and the reason, and the host
//! carries on with the other plugins.
//!
//! The files: this one (the types), `search` (which files), `check` (before any code runs),
//! `registry` (loading, registration, finding components by name), `component` (creating
//! instances), `instance` (calling them), `sinks` (the host ends of the ABI's sinks),
//! `host_api` + `op_schema` (the op table plugins call), `trace` (recording the ops a
//! plugin runs, for the ONNX export), `crash` (naming a plugin that crashes
//! the process), `verify` (the property harness).

mod check;
mod component;
#[cfg(unix)]
mod crash;
#[cfg(not(unix))]
mod crash {
    //! Naming the plugin in a crash report needs POSIX signals; elsewhere nothing is installed.
    pub(crate) struct Entered;
    pub(crate) fn register(_: &std::path::Path) -> usize {
        0
    }
    pub(crate) fn enter(_: usize) -> Entered {
        Entered
    }
    pub(crate) fn leave() -> Entered {
        Entered
    }
}
mod host_api;
mod instance;
pub mod op_schema;
mod registry;
mod search;
mod sinks;
pub mod trace;
pub mod verify;

use crate::error::{Error, Result};
use crate::tensor::{IntTensor, Tensor};
use check::refuse;
use host_api::{CallState, Held};
use serde::Serialize;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vkgrad_plugin::abi::{
    self, ComponentVTable, PluginDescriptor, RefArray, RefSink, Registrar, Str, TextSink,
};

pub use instance::{init_parameter, Description, Instance, RefOutput};
pub use search::{check_explicit, search_paths};
use sinks::{put_output, sink};

/// A loaded plugin.
#[derive(Serialize)]
pub struct Plugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub abi: String,
    pub components: Vec<Component>,
}

/// One registered component.
#[derive(Clone, Serialize)]
pub struct Component {
    /// `plugin::component`.
    pub name: String,
    pub kind: &'static str,
    pub description: String,
    /// `[{"name", "type", "default", "doc"}, ...]`
    pub options: serde_json::Value,
    #[serde(skip)]
    vtable: &'static ComponentVTable,
    #[serde(skip)]
    path: PathBuf,
    /// Its file's slot in the crash report table (`crash`).
    #[serde(skip)]
    slot: usize,
    #[serde(skip)]
    poisoned: Arc<AtomicBool>,
    /// What the panic that poisoned the plugin said.
    #[serde(skip)]
    poison_reason: Arc<std::sync::Mutex<String>>,
}

/// The plugins shipped with vkgrad; a bare component name found in one of them and in
/// another plugin means the shipped one.
pub const SHIPPED: [&str; 3] = ["contrastive", "encoders", "augment"];

/// All plugins found, and the files that were refused (with why).
#[derive(Default)]
pub struct Registry {
    pub plugins: Vec<Plugin>,
    pub refused: Vec<Error>,
}
