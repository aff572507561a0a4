//! A registered component: its errors, its options, creating instances.

use super::*;

impl Component {
    pub(super) fn err(&self, message: impl Into<String>) -> Error {
        Error::Plugin {
            path: self.path.display().to_string(),
            message: format!("{}: {}", self.name, message.into()),
        }
    }

    /// Turns a call's status into a result; a panic poisons the whole plugin.
    pub(super) fn status(&self, st: i32, msg: String) -> Result<()> {
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

    /// Takes the poison of a caught panic off and returns what the panic said. Only `vkgrad
    /// verify` does this, in the process of its own it runs each component in: the panic
    /// unwound through the plugin's guard, the instance it hit is dropped, and the next case
    /// gets a fresh one, so panics shrink like any other failure. `poison` puts it back.
    pub(crate) fn take_poison(&self) -> Option<String> {
        self.poisoned.swap(false, Ordering::SeqCst).then(|| {
            self.poison_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    /// Poisons the plugin, as a caught panic does.
    pub(crate) fn poison(&self, reason: String) {
        *self.poison_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(super) fn check_alive(&self) -> Result<()> {
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
