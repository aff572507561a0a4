//! Layer 5: the plugin host. Finds plugin files, checks them before running any of their code
//! (`check.rs`), loads them with libloading (never unloading), checks the ABI version and what
//! they register, and wraps their components in safe handles. A plugin that panics is marked
//! poisoned and not called again; every refusal names the file and the reason, and the host
//! carries on with the other plugins.

mod check;
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
pub mod op_schema;
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
    self, ComponentVTable, ErrorSink, PluginDescriptor, RefArray, RefSink, Registrar, Str,
};

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

/// The plugin files to load: `explicit` paths (files or folders), then `VKGRAD_PLUGIN_PATH`
/// (`:`-separated), then the folder of the running `vkgrad` (where the built-in plugins are
/// built). Folders contribute their `libvkgrad_plugin_*` / `*.so` / `*.dylib` / `*.dll` files.
pub fn search_paths(explicit: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<(PathBuf, bool)> = explicit.iter().map(|p| (p.clone(), true)).collect();
    if let Ok(v) = std::env::var("VKGRAD_PLUGIN_PATH") {
        roots.extend(
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| (p, true)),
        );
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push((dir, false));
    }
    let mut files = Vec::new();
    for (root, any_library) in roots {
        if root.is_dir() {
            files.extend(plugin_files(&root, any_library));
        } else {
            files.push(root);
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    files
}

/// The `--plugin` paths must exist, and a folder among them must hold plugin files.
pub fn check_explicit(explicit: &[PathBuf]) -> Result<()> {
    for p in explicit {
        if !p.exists() {
            return Err(refuse(p, "does not exist (given with --plugin)"));
        }
        if p.is_dir() && plugin_files(p, true).is_empty() {
            return Err(Error::Other(format!(
                "--plugin {}: the folder holds no plugin files (*.so, *.dylib, *.dll)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// The library files in `dir`, sorted; with `any_library` false only our built-in plugins
/// (`*vkgrad_plugin_*`), as in the binary's own folder.
fn plugin_files(dir: &Path, any_library: bool) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let library = [".so", ".dylib", ".dll"]
                .iter()
                .any(|ext| name.ends_with(ext));
            library && (any_library || name.contains("vkgrad_plugin_"))
        })
        .collect();
    found.sort();
    found
}

struct Collect {
    plugin: String,
    path: PathBuf,
    slot: usize,
    taken: Vec<String>,
    components: Vec<Component>,
    poisoned: Arc<AtomicBool>,
    poison_reason: Arc<std::sync::Mutex<String>>,
    problem: Option<String>,
}

unsafe extern "C" fn register(ctx: *mut c_void, vt: *const ComponentVTable) -> i32 {
    let c = unsafe { &mut *(ctx as *mut Collect) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| accept(c, vt))) {
        Ok(Ok(comp)) => {
            c.taken.push(comp.name.clone());
            c.components.push(comp);
            abi::OK
        }
        Ok(Err(m)) => {
            c.problem.get_or_insert(m);
            abi::ERROR
        }
        Err(_) => {
            c.problem
                .get_or_insert("the host panicked registering a component".into());
            abi::ERROR
        }
    }
}

/// The checks on a registered component.
fn accept(c: &Collect, vt: *const ComponentVTable) -> std::result::Result<Component, String> {
    let vt: &'static ComponentVTable =
        unsafe { vt.as_ref() }.ok_or("registered a null component")?;
    if vt.struct_size < std::mem::size_of::<ComponentVTable>() {
        return Err(format!(
            "a component table of {} bytes is smaller than ABI 1.0's {}",
            vt.struct_size,
            std::mem::size_of::<ComponentVTable>()
        ));
    }
    let text = |s: Str, what: &str| {
        unsafe { s.as_str() }
            .map(str::to_string)
            .map_err(|_| format!("component {what} is not UTF-8"))
    };
    let name = text(vt.name, "name")?;
    let local = name
        .strip_prefix(&format!("{}::", c.plugin))
        .ok_or_else(|| {
            format!(
                "component `{name}` is not namespaced as `{}::name`",
                c.plugin
            )
        })?;
    if local.is_empty()
        || !local
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return Err(format!(
            "component name `{name}`: the part after `::` must be letters, digits and `_`"
        ));
    }
    if c.taken.contains(&name) {
        return Err(format!("component `{name}` is registered twice"));
    }
    let kind = match vt.kind {
        abi::KIND_LOSS => "loss",
        abi::KIND_ENCODER => "encoder",
        abi::KIND_AUGMENTATION => "augmentation",
        k => return Err(format!("component `{name}` has unknown kind {k}")),
    };
    if vt.reference.is_none() {
        return Err(format!(
            "component `{name}` has no CPU reference; every component must have one"
        ));
    }
    let options: serde_json::Value = serde_json::from_str(&text(vt.options_schema, "options")?)
        .map_err(|e| format!("component `{name}`: options schema is not JSON: {e}"))?;
    if !options.is_array() {
        return Err(format!(
            "component `{name}`: options schema must be a JSON array"
        ));
    }
    Ok(Component {
        name,
        kind,
        description: text(vt.description, "description")?,
        options,
        vtable: vt,
        path: c.path.clone(),
        slot: c.slot,
        poisoned: c.poisoned.clone(),
        poison_reason: c.poison_reason.clone(),
    })
}

/// The host side of a `RefSink`: copies the callee's array into an `Option<RefOutput>`.
unsafe extern "C" fn put_output(
    ctx: *mut c_void,
    data: *const f64,
    len: usize,
    dims: *const usize,
    rank: usize,
) {
    let v = unsafe { &mut *(ctx as *mut Option<RefOutput>) };
    let data = if len == 0 || data.is_null() {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
    };
    let dims = if rank == 0 || dims.is_null() {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(dims, rank) }.to_vec()
    };
    *v = Some(RefOutput { data, dims });
}

/// The host side of an `ErrorSink`: collects the callee's message.
fn sink(msg: &mut String) -> ErrorSink {
    unsafe extern "C" fn set(ctx: *mut c_void, m: Str) {
        let s = unsafe { &mut *(ctx as *mut String) };
        *s = unsafe { m.as_str() }
            .unwrap_or("(message not UTF-8)")
            .to_string();
    }
    ErrorSink {
        ctx: msg as *mut String as *mut c_void,
        set,
    }
}

impl Registry {
    /// Loads every file; refusals are collected, not fatal.
    pub fn load_all(files: &[PathBuf]) -> Registry {
        let mut reg = Registry::default();
        for f in files {
            if let Err(e) = reg.load(f) {
                reg.refused.push(e);
            }
        }
        reg
    }

    /// The plugins a command runs with: every file of `search_paths(explicit)`. A file the
    /// user named (`--plugin FILE`, or a folder given with `--plugin` that holds no plugin) is
    /// an error with its reason when refused; a refused file found while searching folders
    /// is reported on stderr with its reason and skipped.
    pub fn load_for(explicit: &[PathBuf]) -> Result<Registry> {
        check_explicit(explicit)?;
        let reg = Registry::load_all(&search_paths(explicit));
        let named = |e: &Error| match e {
            Error::Plugin { path, .. } => explicit
                .iter()
                .any(|p| p.is_file() && Path::new(path) == p.as_path()),
            _ => false,
        };
        if let Some(e) = reg.refused.iter().find(|e| named(e)) {
            return Err(e.clone());
        }
        for e in &reg.refused {
            eprintln!("warning: skipped {e}");
        }
        Ok(reg)
    }

    /// Checks and loads one plugin file.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        check::inspect(path)?;
        // From here on the file's code may run (initialisers, entry, init): a crash in it is
        // reported with this path.
        let slot = crash::register(path);
        let _entered = crash::enter(slot);
        // Safety: the file is a shared object for this machine exporting our entry symbol;
        // running its initialisers is what loading a plugin means. It is never unloaded.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| refuse(path, format!("cannot be loaded: {e}")))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let entry: libloading::Symbol<unsafe extern "C" fn() -> *const PluginDescriptor> =
            unsafe { lib.get(abi::ENTRY_SYMBOL.as_bytes()) }
                .map_err(|e| refuse(path, format!("entry symbol: {e}")))?;
        let desc = std::panic::catch_unwind(|| unsafe { entry() })
            .map_err(|_| refuse(path, "the entry function panicked"))?;
        let desc = unsafe { desc.as_ref() }
            .ok_or_else(|| refuse(path, "the entry function returned no descriptor"))?;
        // The version fields come first in every version of the descriptor.
        if desc.abi_major != abi::ABI_MAJOR {
            return Err(refuse(
                path,
                format!(
                    "is built for plugin ABI {}.x; this vkgrad speaks {}.{}",
                    desc.abi_major,
                    abi::ABI_MAJOR,
                    abi::ABI_MINOR
                ),
            ));
        }
        if desc.abi_minor > abi::ABI_MINOR {
            return Err(refuse(
                path,
                format!(
                    "needs plugin ABI {}.{}, newer than this vkgrad's {}.{}; update vkgrad",
                    desc.abi_major,
                    desc.abi_minor,
                    abi::ABI_MAJOR,
                    abi::ABI_MINOR
                ),
            ));
        }
        if desc.struct_size < std::mem::size_of::<PluginDescriptor>() {
            return Err(refuse(
                path,
                format!(
                    "its descriptor has {} bytes, ABI 1.0 needs {}",
                    desc.struct_size,
                    std::mem::size_of::<PluginDescriptor>()
                ),
            ));
        }
        let name = unsafe { desc.name.as_str() }
            .map_err(|_| refuse(path, "plugin name is not UTF-8"))?
            .to_string();
        let version = unsafe { desc.version.as_str() }
            .map_err(|_| refuse(path, "plugin version is not UTF-8"))?
            .to_string();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(refuse(
                path,
                format!("plugin name `{name}` must be letters, digits and `_`"),
            ));
        }
        if let Some(other) = self.plugins.iter().find(|p| p.name == name) {
            return Err(refuse(
                path,
                format!(
                    "a plugin named `{name}` is already loaded from {}",
                    other.path.display()
                ),
            ));
        }
        let mut collect = Collect {
            plugin: name.clone(),
            path: path.to_path_buf(),
            slot,
            taken: self
                .plugins
                .iter()
                .flat_map(|p| p.components.iter().map(|c| c.name.clone()))
                .collect(),
            components: Vec::new(),
            poisoned: Arc::new(AtomicBool::new(false)),
            poison_reason: Default::default(),
            problem: None,
        };
        let registrar = Registrar {
            struct_size: std::mem::size_of::<Registrar>(),
            ctx: &mut collect as *mut Collect as *mut c_void,
            register,
        };
        let mut state = CallState::default();
        let api = host_api::api(&mut state);
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let status = unsafe { (desc.init)(&api, &registrar, &mut err) };
        if let Some(p) = collect.problem {
            return Err(refuse(path, p));
        }
        match status {
            abi::OK => {}
            abi::PANICKED => return Err(refuse(path, format!("init {msg}"))),
            _ => return Err(refuse(path, format!("init failed: {msg}"))),
        }
        self.plugins.push(Plugin {
            path: path.to_path_buf(),
            name,
            version,
            abi: format!("{}.{}", desc.abi_major, desc.abi_minor),
            components: collect.components,
        });
        Ok(())
    }

    /// A component of `kind` by `plugin::name`, or by `name` alone when that is unique; the
    /// error lists the known ones.
    pub fn find(&self, kind: &str, name: &str) -> Result<&Component> {
        let all = || {
            self.plugins
                .iter()
                .flat_map(|p| &p.components)
                .filter(|c| c.kind == kind)
        };
        let matches: Vec<&Component> = all().filter(|c| c.is_named(name)).collect();
        match matches[..] {
            [c] => Ok(c),
            [] => {
                let known: Vec<&str> = all().map(|c| c.name.as_str()).collect();
                Err(Error::Other(format!(
                    "no {kind} named `{name}`; known: {}{}",
                    if known.is_empty() { "none" } else { "" },
                    known.join(", ")
                )))
            }
            _ => {
                // The shipped plugins win over others (the template built beside them, a
                // user's copy): a default such as `gaussian_noise` must not become ambiguous.
                let shipped: Vec<&Component> = matches
                    .iter()
                    .copied()
                    .filter(|c| {
                        SHIPPED
                            .iter()
                            .any(|p| c.name.starts_with(&format!("{p}::")))
                    })
                    .collect();
                let names: Vec<&str> = matches.iter().map(|c| c.name.as_str()).collect();
                match shipped[..] {
                    [c] => {
                        eprintln!(
                            "note: {kind} `{name}` is in several plugins ({}); using the built-in {} (name another in full)",
                            names.join(", "),
                            c.name
                        );
                        Ok(c)
                    }
                    _ => Err(Error::Other(format!(
                        "{kind} `{name}` is ambiguous ({}); use the full `plugin::name`",
                        names.join(", ")
                    ))),
                }
            }
        }
    }

    /// A component by its full name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.plugins
            .iter()
            .flat_map(|p| &p.components)
            .find(|c| c.name == name)
    }
}

impl Component {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::Plugin {
            path: self.path.display().to_string(),
            message: format!("{}: {}", self.name, message.into()),
        }
    }

    /// Turns a call's status into a result; a panic poisons the whole plugin.
    fn status(&self, st: i32, msg: String) -> Result<()> {
        match st {
            abi::OK => Ok(()),
            abi::PANICKED => {
                self.poisoned.store(true, Ordering::SeqCst);
                *self.poison_reason.lock().unwrap_or_else(|p| p.into_inner()) = msg.clone();
                Err(self.err(format!(
                    "{msg}; the plugin is now poisoned and will not be called again"
                )))
            }
            _ => Err(self.err(if msg.is_empty() {
                "failed without a message".into()
            } else {
                msg
            })),
        }
    }

    fn check_alive(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            let why = self
                .poison_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(self.err(format!("the plugin is poisoned: it {why}")));
        }
        Ok(())
    }

    /// Makes an instance from options (a JSON object; `{}` for the defaults).
    pub fn instantiate(&self, options_json: &str) -> Result<Instance> {
        self.check_alive()?;
        let mut inst: *mut c_void = std::ptr::null_mut();
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.slot);
        let st = unsafe { (self.vtable.create)(Str::new(options_json), &mut inst, &mut err) };
        self.status(st, msg)?;
        if inst.is_null() {
            return Err(self.err("create returned no instance"));
        }
        let instance = Instance {
            comp: self.clone(),
            inst,
        };
        instance.describe()?; // a component that cannot describe itself is refused here
        Ok(instance)
    }

    /// Whether `name` is this component's `plugin::name`, or its `name` alone.
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.name.rsplit("::").next() == Some(name)
    }

    /// The names of the options the component declares.
    pub fn option_names(&self) -> Vec<String> {
        self.options
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes a loss from options.
    pub fn create_loss(&self, options_json: &str) -> Result<Instance> {
        if self.kind != "loss" {
            return Err(self.err(format!("is a {}, not a loss", self.kind)));
        }
        self.instantiate(options_json)
    }
}

/// What an instance says about its shapes (encoders and augmentations).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Description {
    #[serde(default)]
    pub input_shape: Vec<usize>,
    #[serde(default)]
    pub parameters: Vec<vkgrad_plugin::ParamSpec>,
    /// Losses: named extra inputs shaped like the features (e.g. BYOL's targets).
    #[serde(default)]
    pub extra_inputs: Vec<String>,
    #[serde(default)]
    pub needs_labels: bool,
    /// Losses: the numbers of views taken, (min, max).
    #[serde(default)]
    pub views: Option<(usize, usize)>,
}

/// A created component.
pub struct Instance {
    comp: Component,
    inst: *mut c_void,
}

/// A parameter's starting value, drawn from `rng` as its spec says.
pub fn init_parameter(p: &vkgrad_plugin::ParamSpec, rng: &mut crate::Rng) -> Result<Tensor> {
    use vkgrad_plugin::Init;
    match p.init {
        Init::Uniform { bound } => rng.uniform(&p.shape, -bound as f32, bound as f32),
        Init::Normal { std } => rng.normal(&p.shape, 0.0, std as f32),
        Init::Constant { value } => Tensor::full(&p.shape, value as f32),
    }
}

/// What a CPU reference returned.
pub struct RefOutput {
    pub data: Vec<f64>,
    pub dims: Vec<usize>,
}

impl Instance {
    pub fn component(&self) -> &Component {
        &self.comp
    }

    /// The instance's input shape and parameters.
    pub fn describe(&self) -> Result<Description> {
        self.comp.check_alive()?;
        let mut msg = String::new();
        let mut out = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.describe)(self.inst, &mut out) };
        if st != abi::OK {
            return self.comp.status(st, msg).map(|_| Description::default());
        }
        serde_json::from_str(&msg)
            .map_err(|e| self.comp.err(format!("describe returned bad JSON: {e}")))
    }

    /// Calls the component's device path on host values; it leaves `n_out` results.
    fn call_forward_n(
        &self,
        inputs: Vec<Option<Held>>,
        stream: u64,
        n_out: usize,
    ) -> Result<Vec<Tensor>> {
        self.comp.check_alive()?;
        let mut state = CallState::default();
        let handles: Vec<abi::Handle> = inputs
            .into_iter()
            .map(|v| v.map_or(0, |v| state.insert(v)))
            .collect();
        let api = host_api::api(&mut state);
        let (mut out, mut msg) = (vec![0; n_out.max(1)], String::new());
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe {
            (self.comp.vtable.forward)(
                self.inst,
                &api,
                handles.as_ptr(),
                handles.len(),
                stream,
                out.as_mut_ptr(),
                &mut err,
            )
        };
        self.comp.status(st, msg)?;
        out.iter()
            .take(n_out)
            .map(|&h| match state.take(h) {
                Some(Held::F(t)) => Ok(t),
                _ => Err(self.comp.err("forward returned no f32 tensor")),
            })
            .collect()
    }

    fn call_forward(&self, inputs: Vec<Option<Held>>, stream: u64) -> Result<Tensor> {
        Ok(self.call_forward_n(inputs, stream, 1)?.remove(0))
    }

    /// Calls the component's CPU reference; `None` inputs are passed as absent (null data).
    pub fn call_reference(
        &self,
        inputs: &[Option<(&[f64], &[usize])>],
        stream: u64,
    ) -> Result<RefOutput> {
        self.comp.check_alive()?;
        let reference = self
            .comp
            .vtable
            .reference
            .ok_or_else(|| self.comp.err("no CPU reference"))?;
        let arrays: Vec<RefArray> = inputs
            .iter()
            .map(|a| match a {
                Some((d, s)) => RefArray {
                    data: d.as_ptr(),
                    len: d.len(),
                    dims: s.as_ptr(),
                    rank: s.len(),
                },
                None => RefArray {
                    data: std::ptr::null(),
                    len: 0,
                    dims: std::ptr::null(),
                    rank: 0,
                },
            })
            .collect();
        let mut got: Option<RefOutput> = None;
        let mut out = RefSink {
            ctx: &mut got as *mut Option<RefOutput> as *mut c_void,
            put: put_output,
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe {
            reference(
                self.inst,
                arrays.as_ptr(),
                arrays.len(),
                stream,
                &mut out,
                &mut err,
            )
        };
        self.comp.status(st, msg)?;
        let got = got.ok_or_else(|| self.comp.err("the CPU reference returned no value"))?;
        if got.data.len() != got.dims.iter().product::<usize>() {
            return Err(self.comp.err(format!(
                "the CPU reference returned {} values for shape {:?}",
                got.data.len(),
                got.dims
            )));
        }
        Ok(got)
    }

    /// The state the component keeps across calls (e.g. a MoCo queue), if any.
    pub fn save_state(&self) -> Result<Option<RefOutput>> {
        self.comp.check_alive()?;
        let mut got: Option<RefOutput> = None;
        let mut out = RefSink {
            ctx: &mut got as *mut Option<RefOutput> as *mut c_void,
            put: put_output,
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.state_save)(self.inst, &mut out, &mut err) };
        self.comp.status(st, msg)?;
        Ok(got)
    }

    /// Restores what `save_state` returned.
    pub fn load_state(&self, state: &RefOutput) -> Result<()> {
        self.comp.check_alive()?;
        let a = RefArray {
            data: state.data.as_ptr(),
            len: state.data.len(),
            dims: state.dims.as_ptr(),
            rank: state.dims.len(),
        };
        let mut msg = String::new();
        let mut err = sink(&mut msg);
        let _entered = crash::enter(self.comp.slot);
        let st = unsafe { (self.comp.vtable.state_load)(self.inst, &a, &mut err) };
        self.comp.status(st, msg)
    }

    /// A loss on the device, recording gradients: features `[N, V, D]`, optional labels `[N]`.
    pub fn forward(&self, features: &Tensor, labels: Option<&IntTensor>) -> Result<Tensor> {
        self.forward_with(features, labels, &[])
    }

    /// A loss with its named extra inputs (in `describe().extra_inputs` order).
    pub fn forward_with(
        &self,
        features: &Tensor,
        labels: Option<&IntTensor>,
        extra: &[Tensor],
    ) -> Result<Tensor> {
        let mut inputs = vec![
            Some(Held::F(features.clone())),
            labels.map(|l| Held::I(l.clone())),
        ];
        inputs.extend(extra.iter().map(|e| Some(Held::F(e.clone()))));
        let t = self.call_forward(inputs, 0)?;
        if t.numel() != 1 {
            return Err(self.comp.err(format!(
                "forward returned shape {:?}; a loss returns one value",
                t.shape()
            )));
        }
        t.reshape(&[])
    }

    /// A loss's CPU reference value.
    pub fn reference(
        &self,
        features: &[f64],
        dims: &[usize],
        labels: Option<&[f64]>,
    ) -> Result<f64> {
        self.reference_with(features, dims, labels, &[])
    }

    /// A loss's CPU reference value with extra inputs (each shaped like the features).
    pub fn reference_with(
        &self,
        features: &[f64],
        dims: &[usize],
        labels: Option<&[f64]>,
        extra: &[&[f64]],
    ) -> Result<f64> {
        let ldims = [labels.map_or(0, |l| l.len())];
        let mut inputs = vec![Some((features, dims)), labels.map(|l| (l, &ldims[..]))];
        inputs.extend(extra.iter().map(|e| Some((*e, dims))));
        let out = self.call_reference(&inputs, 0)?;
        match out.data[..] {
            [v] => Ok(v),
            _ => Err(self.comp.err(format!(
                "the CPU reference returned {} values; a loss returns one",
                out.data.len()
            ))),
        }
    }

    /// An encoder on the device: `x` `[B, ...input_shape]`, parameters (buffers included) in
    /// declared order. Returns the output and, in training mode, the buffers' new values (in
    /// declaration order; empty in evaluation mode).
    pub fn encode(
        &self,
        x: &Tensor,
        params: &[Tensor],
        training: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let buffers = if training {
            self.describe()?
                .parameters
                .iter()
                .filter(|p| p.buffer)
                .count()
        } else {
            0
        };
        let mut inputs = vec![Some(Held::F(x.clone()))];
        inputs.extend(params.iter().map(|p| Some(Held::F(p.clone()))));
        let flags = if training { abi::ENCODER_TRAINING } else { 0 };
        let mut out = self.call_forward_n(inputs, flags, 1 + buffers)?;
        let y = out.remove(0);
        Ok((y, out))
    }

    /// An augmentation on the device, drawing from `stream`.
    pub fn augment(&self, batch: &Tensor, stream: u64) -> Result<Tensor> {
        self.call_forward(vec![Some(Held::F(batch.clone()))], stream)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.comp.poisoned.load(Ordering::SeqCst) {
            let _entered = crash::enter(self.comp.slot);
            unsafe { (self.comp.vtable.destroy)(self.inst) };
        }
    }
}
