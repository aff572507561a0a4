//! The vkgrad plugin SDK: everything a plugin depends on (no vulkano, no engine).
//!
//! Plugin authors implement [`Loss`] (more component kinds follow) with a required CPU reference,
//! and export with [`export_plugin!`]. The macro writes the C ABI of [`abi`]: the descriptor,
//! the entry symbol and trampolines that catch panics and turn errors into status codes.

pub mod abi;

use abi::{ErrorSink, Handle, HostApi, RefArray, RefSink, Str};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use serde_json::{json, Value};

/// One option of a component: its name, type (as shown to users), default and documentation.
#[derive(Debug, Clone, Serialize)]
pub struct OptionSpec {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub default: Value,
    pub doc: &'static str,
}

/// A tensor owned by the host, seen through its handle. Dropping it gives the handle back.
pub struct HostTensor<'h> {
    handle: Handle,
    host: &'h Host,
    owned: bool,
}

impl<'h> HostTensor<'h> {
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The tensor's shape.
    pub fn shape(&self) -> Result<Vec<usize>, String> {
        let mut dims = [0usize; 16];
        let mut rank = 0usize;
        let api = self.host.api();
        let st = unsafe {
            (api.shape)(
                api.ctx,
                self.handle,
                dims.as_mut_ptr(),
                dims.len(),
                &mut rank,
            )
        };
        if st != abi::OK || rank > dims.len() {
            return Err(format!("host: no shape for tensor handle {}", self.handle));
        }
        Ok(dims[..rank].to_vec())
    }
}

impl Drop for HostTensor<'_> {
    fn drop(&mut self) {
        if self.owned && self.handle != 0 {
            let api = self.host.api();
            unsafe { (api.release)(api.ctx, self.handle) };
        }
    }
}

/// The host's op table, as the plugin sees it during a call.
pub struct Host {
    api: *const HostApi,
}

impl Host {
    fn api(&self) -> &HostApi {
        // The host guarantees the table outlives every call it passes it to.
        unsafe { &*self.api }
    }

    /// Runs a host op by name (`matmul`, `l2_normalize`, `log_softmax`, ...) with attributes.
    /// The result records gradients and runs on the device like any engine op.
    pub fn op(
        &self,
        name: &str,
        inputs: &[&HostTensor],
        attrs: Value,
    ) -> Result<HostTensor<'_>, String> {
        let handles: Vec<Handle> = inputs.iter().map(|t| t.handle).collect();
        let attrs = attrs.to_string();
        let mut out: Handle = 0;
        let mut msg = String::new();
        let mut sink = error_sink(&mut msg);
        let api = self.api();
        let st = unsafe {
            (api.op)(
                api.ctx,
                Str::new(name),
                handles.as_ptr(),
                handles.len(),
                Str::new(&attrs),
                &mut out,
                &mut sink,
            )
        };
        if st != abi::OK {
            return Err(if msg.is_empty() {
                format!("host op {name} failed")
            } else {
                msg
            });
        }
        Ok(HostTensor {
            handle: out,
            host: self,
            owned: true,
        })
    }

    /// A constant tensor from host data.
    pub fn tensor(&self, data: &[f32], dims: &[usize]) -> Result<HostTensor<'_>, String> {
        let mut out: Handle = 0;
        let mut msg = String::new();
        let mut sink = error_sink(&mut msg);
        let api = self.api();
        let st = unsafe {
            (api.tensor)(
                api.ctx,
                data.as_ptr(),
                data.len(),
                dims.as_ptr(),
                dims.len(),
                &mut out,
                &mut sink,
            )
        };
        if st != abi::OK {
            return Err(msg);
        }
        Ok(HostTensor {
            handle: out,
            host: self,
            owned: true,
        })
    }

    /// Logs a line through the host (level 0 = debug .. 3 = error).
    pub fn log(&self, level: u32, message: &str) {
        let api = self.api();
        unsafe { (api.log)(api.ctx, level, Str::new(message)) };
    }

    /// A handle the host passed in (not released by the plugin).
    fn borrow(&self, handle: Handle) -> HostTensor<'_> {
        HostTensor {
            handle,
            host: self,
            owned: false,
        }
    }
}

/// An f64 array given to a CPU reference.
pub struct Array<'a> {
    pub data: &'a [f64],
    pub dims: &'a [usize],
}

impl Array<'_> {
    /// Element at a multi-index (row-major).
    pub fn at(&self, idx: &[usize]) -> f64 {
        let mut pos = 0;
        for (d, &i) in idx.iter().enumerate() {
            pos = pos * self.dims[d] + i;
        }
        self.data[pos]
    }
}

/// What a loss receives: features `[N, V, D]` (sample, view, dimension), optional labels `[N]`.
pub struct LossInputs<'h> {
    pub features: HostTensor<'h>,
    pub labels: Option<HostTensor<'h>>,
}

/// The same inputs for the CPU reference, in f64.
pub struct RefInputs<'a> {
    pub features: Array<'a>,
    pub labels: Option<&'a [f64]>,
}

/// A loss family component. `forward` composes host ops (so autograd and the GPU come from the
/// engine); `reference` computes the same value naively in f64 without them — it is required,
/// and `vkgrad verify` checks the two against each other.
pub trait Loss: Sized + Send + Sync + 'static {
    /// Options, read from a JSON object; use `#[serde(default, deny_unknown_fields)]` so that
    /// missing keys take defaults and unknown ones are errors.
    type Options: DeserializeOwned + Default;
    /// The component name within the plugin (the host sees `plugin::NAME`).
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// Every option with its type, default and documentation.
    fn options() -> Vec<OptionSpec>;
    /// Validates options (e.g. temperature > 0) and builds the component.
    fn new(options: Self::Options) -> Result<Self, String>;
    /// Whether labels are required (checked by the host before calling).
    fn needs_labels(&self) -> bool {
        false
    }
    fn forward<'h>(
        &self,
        host: &'h Host,
        inputs: &LossInputs<'h>,
    ) -> Result<HostTensor<'h>, String>;
    fn reference(&self, inputs: &RefInputs) -> Result<f64, String>;
}

fn error_sink(msg: &mut String) -> ErrorSink {
    unsafe extern "C" fn set(ctx: *mut c_void, m: Str) {
        let s = unsafe { &mut *(ctx as *mut String) };
        *s = unsafe { m.as_str() }
            .unwrap_or("(error message not UTF-8)")
            .to_string();
    }
    ErrorSink {
        ctx: msg as *mut String as *mut c_void,
        set,
    }
}

/// Reports `message` through the host's sink.
///
/// # Safety
/// `err` is null or a valid sink for the duration of the call.
pub unsafe fn report(err: *mut ErrorSink, message: &str) {
    if let Some(sink) = unsafe { err.as_mut() } {
        unsafe { (sink.set)(sink.ctx, Str::new(message)) };
    }
}

/// Runs `f` at the ABI boundary: errors become `ERROR` with a message, panics `PANICKED`.
///
/// # Safety
/// `err` is null or a valid sink for the duration of the call.
pub unsafe fn guard(err: *mut ErrorSink, f: impl FnOnce() -> Result<(), String>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => abi::OK,
        Ok(Err(m)) => {
            unsafe { report(err, &m) };
            abi::ERROR
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned());
            unsafe {
                report(
                    err,
                    &format!(
                        "panicked: {}",
                        what.unwrap_or_else(|| "(no message)".into())
                    ),
                )
            };
            abi::PANICKED
        }
    }
}

/// The trampolines for a [`Loss`] type; `export_plugin!` builds its vtable from them.
///
/// Safety, for every function here: only the host calls them, through the vtable, with the
/// pointers the ABI describes (a live instance from `create`, valid input arrays and sinks).
#[allow(clippy::missing_safety_doc)]
pub mod trampolines {
    use super::*;

    pub unsafe extern "C" fn create<T: Loss>(
        options: Str,
        out: *mut *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        let body = || {
            let text =
                unsafe { options.as_str() }.map_err(|e| format!("options are not UTF-8: {e}"))?;
            let text = if text.trim().is_empty() { "{}" } else { text };
            let opts: T::Options =
                serde_json::from_str(text).map_err(|e| format!("{}: bad options: {e}", T::NAME))?;
            let inst = T::new(opts)?;
            unsafe { *out = Box::into_raw(Box::new(inst)) as *mut c_void };
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn destroy<T: Loss>(instance: *mut c_void) {
        if !instance.is_null() {
            let _ = catch_unwind(|| drop(unsafe { Box::from_raw(instance as *mut T) }));
        }
    }

    pub unsafe extern "C" fn forward<T: Loss>(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        out: *mut Handle,
        err: *mut ErrorSink,
    ) -> i32 {
        let body = || {
            let inst = unsafe { &*(instance as *const T) };
            let host = Host { api: host };
            let handles = unsafe { std::slice::from_raw_parts(inputs, n_inputs) };
            let features = host.borrow(*handles.first().ok_or("no features given")?);
            let labels = handles
                .get(1)
                .copied()
                .filter(|&h| h != 0)
                .map(|h| host.borrow(h));
            if inst.needs_labels() && labels.is_none() {
                return Err(format!("{} needs labels", T::NAME));
            }
            let mut y = inst.forward(&host, &LossInputs { features, labels })?;
            y.owned = false; // ownership of the result handle passes to the host
            unsafe { *out = y.handle };
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn reference<T: Loss>(
        instance: *mut c_void,
        inputs: *const RefArray,
        n_inputs: usize,
        out: *mut RefSink,
        err: *mut ErrorSink,
    ) -> i32 {
        let body = || {
            let inst = unsafe { &*(instance as *const T) };
            let arrays = unsafe { std::slice::from_raw_parts(inputs, n_inputs) };
            let view = |a: &RefArray| unsafe {
                Array {
                    data: std::slice::from_raw_parts(a.data, a.len),
                    dims: std::slice::from_raw_parts(a.dims, a.rank),
                }
            };
            let features = view(arrays.first().ok_or("no features given")?);
            let labels = arrays
                .get(1)
                .filter(|a| !a.data.is_null())
                .map(|a| unsafe { std::slice::from_raw_parts(a.data, a.len) });
            if inst.needs_labels() && labels.is_none() {
                return Err(format!("{} needs labels", T::NAME));
            }
            let v = inst.reference(&RefInputs { features, labels })?;
            let sink = unsafe { &mut *out };
            unsafe { (sink.put)(sink.ctx, &v, 1, std::ptr::null(), 0) };
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    /// A vtable for `T`, named `plugin::T::NAME`; leaked, as it lives as long as the process.
    pub fn loss_vtable<T: Loss>(plugin: &str) -> &'static abi::ComponentVTable {
        let name: &'static str = Box::leak(format!("{plugin}::{}", T::NAME).into_boxed_str());
        let schema: &'static str = Box::leak(
            serde_json::to_string(&T::options())
                .unwrap_or_default()
                .into_boxed_str(),
        );
        Box::leak(Box::new(abi::ComponentVTable {
            struct_size: std::mem::size_of::<abi::ComponentVTable>(),
            kind: abi::KIND_LOSS,
            name: Str::new(name),
            description: Str::new(T::DESCRIPTION),
            options_schema: Str::new(schema),
            create: create::<T>,
            destroy: destroy::<T>,
            forward: forward::<T>,
            reference: Some(reference::<T>),
        }))
    }
}

/// Exports a plugin: `export_plugin!(name: "myplugin", version: "0.1.0", losses: [MyLoss]);`
/// generates the descriptor and the `vkgrad_plugin_entry_v1` symbol.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:literal, version: $version:literal, losses: [$($loss:ty),* $(,)?] $(,)?) => {
        unsafe extern "C" fn __vkgrad_plugin_init(
            _host: *const $crate::abi::HostApi,
            registrar: *const $crate::abi::Registrar,
            err: *mut $crate::abi::ErrorSink,
        ) -> i32 {
            let body = || {
                let reg = unsafe { registrar.as_ref() }.ok_or("no registrar")?;
                if reg.struct_size < ::std::mem::size_of::<$crate::abi::Registrar>() {
                    return Err("the host's registrar is older than this SDK".into());
                }
                $(
                    let vt = $crate::trampolines::loss_vtable::<$loss>($name);
                    if unsafe { (reg.register)(reg.ctx, vt) } != $crate::abi::OK {
                        return Err(format!("the host refused component {}", stringify!($loss)));
                    }
                )*
                Ok(())
            };
            unsafe { $crate::guard(err, body) }
        }

        static __VKGRAD_PLUGIN_DESCRIPTOR: $crate::abi::PluginDescriptor = $crate::abi::PluginDescriptor {
            struct_size: ::std::mem::size_of::<$crate::abi::PluginDescriptor>(),
            abi_major: $crate::abi::ABI_MAJOR,
            abi_minor: $crate::abi::ABI_MINOR,
            name: $crate::abi::Str { ptr: $name.as_ptr(), len: $name.len() },
            version: $crate::abi::Str { ptr: $version.as_ptr(), len: $version.len() },
            init: __vkgrad_plugin_init,
        };

        /// The plugin's entry point (ABI major version 1).
        #[no_mangle]
        pub extern "C" fn vkgrad_plugin_entry_v1() -> *const $crate::abi::PluginDescriptor {
            &__VKGRAD_PLUGIN_DESCRIPTOR
        }
    };
}
