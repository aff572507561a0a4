//! Loading plugin files: the ABI checks, registration of components, finding a component by
//! name.

use super::*;

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
                        // Said once per process, however often the name is looked up.
                        static SAID: std::sync::Mutex<Vec<String>> =
                            std::sync::Mutex::new(Vec::new());
                        let key = format!("{kind} {name}");
                        let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
                        if said.contains(&key) {
                            return Ok(c);
                        }
                        said.push(key);
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
