//! The vkgrad plugin SDK: everything a plugin depends on (no vulkano, no engine).
//!
//! Plugin authors implement [`Loss`], [`Encoder`] or [`Augmentation`], each with a required CPU
//! reference, and export them with [`export_plugin!`]. The macro writes the C ABI of [`abi`]: the descriptor,
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

impl HostTensor<'_> {
    /// The values (a device read-back: use for state, not in the differentiable path).
    pub fn read(&self) -> Result<Vec<f32>, String> {
        let api = self.host.api();
        let mut len = 0usize;
        let st = unsafe { (api.read)(api.ctx, self.handle, std::ptr::null_mut(), 0, &mut len) };
        if st != abi::OK {
            return Err(format!("host: cannot read tensor handle {}", self.handle));
        }
        let mut out = vec![0f32; len];
        let st = unsafe { (api.read)(api.ctx, self.handle, out.as_mut_ptr(), out.len(), &mut len) };
        if st != abi::OK {
            return Err(format!("host: cannot read tensor handle {}", self.handle));
        }
        Ok(out)
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
/// `extra` holds the named extra inputs the loss declares (`Loss::extra_inputs`), in order.
pub struct LossInputs<'h> {
    pub features: HostTensor<'h>,
    pub labels: Option<HostTensor<'h>>,
    pub extra: Vec<HostTensor<'h>>,
}

/// The same inputs for the CPU reference, in f64.
pub struct RefInputs<'a> {
    pub features: Array<'a>,
    pub labels: Option<&'a [f64]>,
    pub extra: Vec<Array<'a>>,
}

/// A component's result on the CPU: values and shape.
pub struct Output {
    pub data: Vec<f64>,
    pub dims: Vec<usize>,
}

/// How a parameter starts (drawn from the host's seeded stream).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Init {
    /// Uniform on ±bound (PyTorch's Kaiming-uniform default uses bound = 1/sqrt(fan_in)).
    Uniform {
        bound: f64,
    },
    Normal {
        std: f64,
    },
    Constant {
        value: f64,
    },
}

/// One parameter of an encoder: learnable, or (`buffer`) state the encoder updates itself in
/// training mode and that is saved with it but never given a gradient (batch norm's running
/// statistics).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    #[serde(default)]
    pub buffer: bool,
}

impl ParamSpec {
    /// A learnable parameter.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, init: Init) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape,
            init,
            buffer: false,
        }
    }
    /// A buffer (no gradient; updated through `Pass::update` in training mode).
    pub fn buffer(name: impl Into<String>, shape: Vec<usize>, value: f64) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            shape,
            init: Init::Constant { value },
            buffer: true,
        }
    }
}

/// The mode of one encoder call, and where a training-mode call leaves its buffers' new values.
pub struct Pass<'h> {
    pub training: bool,
    updates: Vec<HostTensor<'h>>,
}

impl<'h> Pass<'h> {
    /// Gives the next buffer's new value (buffers in declaration order; training mode only).
    pub fn update(&mut self, value: HostTensor<'h>) {
        self.updates.push(value);
    }
}

/// A seeded random stream shared by the device path and the CPU reference: draw `offset` of the
/// stream gives element i the same number on both (Philox4x32-10, as the engine).
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub seed: u64,
}

impl Stream {
    /// Draw `offset` on the device: uniform on [lo, hi).
    pub fn uniform<'h>(
        &self,
        host: &'h Host,
        offset: u32,
        shape: &[usize],
        lo: f64,
        hi: f64,
    ) -> Result<HostTensor<'h>, String> {
        host.op("random", &[], json!({ "seed": self.seed, "offset": offset, "shape": shape, "dist": "uniform", "a": lo, "b": hi }))
    }
    /// Draw `offset` on the device: normal with mean and standard deviation.
    pub fn normal<'h>(
        &self,
        host: &'h Host,
        offset: u32,
        shape: &[usize],
        mean: f64,
        std: f64,
    ) -> Result<HostTensor<'h>, String> {
        host.op("random", &[], json!({ "seed": self.seed, "offset": offset, "shape": shape, "dist": "normal", "a": mean, "b": std }))
    }
    /// Element `i` of draw `offset`, uniform, on the CPU.
    pub fn uniform_at(&self, offset: u32, i: u32, lo: f64, hi: f64) -> f64 {
        let u = (philox::bits(self.seed, offset, i)[0] >> 8) as f64 / 16_777_216.0;
        lo + (hi - lo) * u
    }
    /// Element `i` of draw `offset`, normal, on the CPU (Box-Muller on the first two words).
    pub fn normal_at(&self, offset: u32, i: u32, mean: f64, std: f64) -> f64 {
        let r = philox::bits(self.seed, offset, i);
        let u0 = (r[0] >> 8) as f64 / 16_777_216.0;
        let u1 = ((r[1] >> 8) + 1) as f64 / 16_777_216.0;
        mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u0).cos()
    }
}

/// Philox4x32-10 (Salmon et al. 2011), for the CPU side of [`Stream`].
pub mod philox {
    pub fn bits(seed: u64, offset: u32, i: u32) -> [u32; 4] {
        let (mut c, mut k) = ([i, offset, 0, 0], [seed as u32, (seed >> 32) as u32]);
        for _ in 0..10 {
            let p0 = 0xD251_1F53u64 * c[0] as u64;
            let p1 = 0xCD9E_8D57u64 * c[2] as u64;
            c = [
                (p1 >> 32) as u32 ^ c[1] ^ k[0],
                p1 as u32,
                (p0 >> 32) as u32 ^ c[3] ^ k[1],
                p0 as u32,
            ];
            k = [
                k[0].wrapping_add(0x9E37_79B9),
                k[1].wrapping_add(0xBB67_AE85),
            ];
        }
        c
    }
}

/// An encoder: parameters + forward. `forward` composes host ops; `reference` computes the same
/// output naively in f64 (required; `vkgrad verify` checks output and every gradient).
pub trait Encoder: Sized + Send + Sync + 'static {
    type Options: DeserializeOwned + Default;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    fn options() -> Vec<OptionSpec>;
    fn new(options: Self::Options) -> Result<Self, String>;
    /// The shape of one input sample (the batch dimension comes first in `forward`).
    fn input_shape(&self) -> Vec<usize>;
    fn parameters(&self) -> Vec<ParamSpec>;
    /// `x` is `[B, ...input_shape]`; `params` come in the order of `parameters()`, buffers
    /// included. In training mode (`pass.training`) every buffer's new value must be given to
    /// `pass.update`, in order.
    fn forward<'h>(
        &self,
        host: &'h Host,
        x: &HostTensor<'h>,
        params: &[HostTensor<'h>],
        pass: &mut Pass<'h>,
    ) -> Result<HostTensor<'h>, String>;
    /// The output in f64 for the given mode (buffer updates are not part of the reference).
    fn reference(&self, x: &Array, params: &[Array], training: bool) -> Result<Output, String>;
}

/// An augmentation: a batch and a random stream in, a batch out, on the device; the CPU
/// reference draws the same numbers from the same stream.
pub trait Augmentation: Sized + Send + Sync + 'static {
    type Options: DeserializeOwned + Default;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    fn options() -> Vec<OptionSpec>;
    fn new(options: Self::Options) -> Result<Self, String>;
    /// The shape of one sample it takes (for `vkgrad verify`'s generated batches).
    fn input_shape(&self) -> Vec<usize>;
    fn forward<'h>(
        &self,
        host: &'h Host,
        batch: &HostTensor<'h>,
        stream: Stream,
    ) -> Result<HostTensor<'h>, String>;
    fn reference(&self, batch: &Array, stream: Stream) -> Result<Output, String>;
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
    /// State kept across calls (e.g. a queue), as one array; `None` when there is none.
    fn save_state(&self) -> Option<Output> {
        None
    }
    /// Restores what `save_state` returned.
    fn load_state(&self, _state: &Array) -> Result<(), String> {
        Err(format!("{} has no state", Self::NAME))
    }
    /// The feature dimension D the loss requires, if it fixes one (e.g. a queue of keys).
    fn feature_dim(&self) -> Option<usize> {
        None
    }
    /// The numbers of views V the loss takes, (min, max) inclusive.
    fn views(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    /// Names of extra inputs, each shaped like the features (e.g. BYOL's `targets`); the host
    /// passes them after the labels, in this order.
    fn extra_inputs(&self) -> Vec<&'static str> {
        Vec::new()
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

/// The trampolines behind the vtables `export_plugin!` builds.
///
/// Safety, for every function here: only the host calls them, through the vtable, with the
/// pointers the ABI describes (a live instance from `create`, valid input arrays and sinks).
#[allow(clippy::missing_safety_doc)]
pub mod trampolines {
    use super::*;

    fn make<T, O: DeserializeOwned>(
        name: &str,
        options: Str,
        out: *mut *mut c_void,
        new: fn(O) -> Result<T, String>,
    ) -> Result<(), String> {
        let text =
            unsafe { options.as_str() }.map_err(|e| format!("options are not UTF-8: {e}"))?;
        let text = if text.trim().is_empty() { "{}" } else { text };
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("{name}: options are not JSON: {e}"))?;
        // Options are named: a JSON object. (serde would also read a struct from an array.)
        if !value.is_object() {
            return Err(format!(
                "{name}: options must be a JSON object, got {value}"
            ));
        }
        let opts: O =
            serde_json::from_value(value).map_err(|e| format!("{name}: bad options: {e}"))?;
        let inst = new(opts)?;
        unsafe { *out = Box::into_raw(Box::new(inst)) as *mut c_void };
        Ok(())
    }

    pub unsafe extern "C" fn destroy<T>(instance: *mut c_void) {
        if !instance.is_null() {
            let _ = catch_unwind(|| drop(unsafe { Box::from_raw(instance as *mut T) }));
        }
    }

    fn view(a: &RefArray) -> Array<'_> {
        let data = if a.len == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(a.data, a.len) }
        };
        let dims = if a.rank == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(a.dims, a.rank) }
        };
        Array { data, dims }
    }

    fn arrays<'a>(inputs: *const RefArray, n: usize) -> &'a [RefArray] {
        if n == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(inputs, n) }
        }
    }

    fn handles<'a>(inputs: *const Handle, n: usize) -> &'a [Handle] {
        if n == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(inputs, n) }
        }
    }

    fn put(out: *mut RefSink, o: &Output) {
        let sink = unsafe { &mut *out };
        unsafe {
            (sink.put)(
                sink.ctx,
                o.data.as_ptr(),
                o.data.len(),
                o.dims.as_ptr(),
                o.dims.len(),
            )
        };
    }

    fn describe_json(
        err: *mut ErrorSink,
        input_shape: Vec<usize>,
        parameters: Vec<ParamSpec>,
    ) -> Result<(), String> {
        let text = json!({ "input_shape": input_shape, "parameters": parameters }).to_string();
        unsafe { report(err, &text) };
        Ok(())
    }

    /// Gives the result handle to the host (it is not released when `y` drops).
    fn hand_over(mut y: HostTensor, out: *mut Handle) {
        y.owned = false;
        unsafe { *out = y.handle };
    }

    /// The shared frame of every `forward` trampoline: recover the instance, wrap the host's
    /// table, run `f` under `guard`, and hand the result to the host.
    fn forward_with<T>(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        out: *mut Handle,
        err: *mut ErrorSink,
        f: impl for<'h> FnOnce(&T, &'h Host, &[Handle]) -> Result<HostTensor<'h>, String>,
    ) -> i32 {
        let body = || {
            let inst = unsafe { &*(instance as *const T) };
            let host = Host { api: host };
            hand_over(f(inst, &host, handles(inputs, n_inputs))?, out);
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    /// The shared frame of every `reference` trampoline.
    fn reference_with<T>(
        instance: *mut c_void,
        inputs: *const RefArray,
        n_inputs: usize,
        out: *mut RefSink,
        err: *mut ErrorSink,
        f: impl FnOnce(&T, &[RefArray]) -> Result<Output, String>,
    ) -> i32 {
        let body = || {
            let inst = unsafe { &*(instance as *const T) };
            put(out, &f(inst, arrays(inputs, n_inputs))?);
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn create_loss<T: Loss>(
        options: Str,
        out: *mut *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        unsafe { guard(err, || make(T::NAME, options, out, T::new)) }
    }

    pub unsafe extern "C" fn create_encoder<T: Encoder>(
        options: Str,
        out: *mut *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        unsafe { guard(err, || make(T::NAME, options, out, T::new)) }
    }

    pub unsafe extern "C" fn create_augmentation<T: Augmentation>(
        options: Str,
        out: *mut *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        unsafe { guard(err, || make(T::NAME, options, out, T::new)) }
    }

    // ---- losses

    pub unsafe extern "C" fn forward_loss<T: Loss>(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        _stream: u64,
        out: *mut Handle,
        err: *mut ErrorSink,
    ) -> i32 {
        forward_with(
            instance,
            host,
            inputs,
            n_inputs,
            out,
            err,
            |inst: &T, host, h| {
                let features = host.borrow(*h.first().ok_or("no features given")?);
                let labels = h
                    .get(1)
                    .copied()
                    .filter(|&h| h != 0)
                    .map(|h| host.borrow(h));
                if inst.needs_labels() && labels.is_none() {
                    return Err(format!("{} needs labels", T::NAME));
                }
                let names = inst.extra_inputs();
                let extra: Vec<HostTensor> = h.iter().skip(2).map(|&e| host.borrow(e)).collect();
                if extra.len() != names.len() || extra.iter().any(|e| e.handle == 0) {
                    return Err(format!("{} needs the extra inputs {names:?}", T::NAME));
                }
                inst.forward(
                    host,
                    &LossInputs {
                        features,
                        labels,
                        extra,
                    },
                )
            },
        )
    }

    pub unsafe extern "C" fn reference_loss<T: Loss>(
        instance: *mut c_void,
        inputs: *const RefArray,
        n_inputs: usize,
        _stream: u64,
        out: *mut RefSink,
        err: *mut ErrorSink,
    ) -> i32 {
        reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
            let features = view(a.first().ok_or("no features given")?);
            let labels = a.get(1).filter(|a| !a.data.is_null()).map(|a| view(a).data);
            if inst.needs_labels() && labels.is_none() {
                return Err(format!("{} needs labels", T::NAME));
            }
            let names = inst.extra_inputs();
            let extra: Vec<Array> = a.iter().skip(2).map(view).collect();
            if extra.len() != names.len() {
                return Err(format!("{} needs the extra inputs {names:?}", T::NAME));
            }
            Ok(Output {
                data: vec![inst.reference(&RefInputs {
                    features,
                    labels,
                    extra,
                })?],
                dims: vec![],
            })
        })
    }

    pub unsafe extern "C" fn describe_loss<T: Loss>(
        instance: *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        let inst = unsafe { &*(instance as *const T) };
        let body = || {
            let text = json!({
                "input_shape": inst.feature_dim().into_iter().collect::<Vec<_>>(),
                "parameters": [],
                "extra_inputs": inst.extra_inputs(),
                "needs_labels": inst.needs_labels(),
                "views": [inst.views().0, inst.views().1],
            });
            unsafe { report(err, &text.to_string()) };
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn state_save_loss<T: Loss>(
        instance: *mut c_void,
        out: *mut RefSink,
        err: *mut ErrorSink,
    ) -> i32 {
        let inst = unsafe { &*(instance as *const T) };
        let body = || {
            if let Some(o) = inst.save_state() {
                put(out, &o);
            }
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn state_load_loss<T: Loss>(
        instance: *mut c_void,
        state: *const RefArray,
        err: *mut ErrorSink,
    ) -> i32 {
        let inst = unsafe { &*(instance as *const T) };
        let body = || inst.load_state(&view(unsafe { state.as_ref() }.ok_or("no state given")?));
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn state_save_none(
        _instance: *mut c_void,
        _out: *mut RefSink,
        _err: *mut ErrorSink,
    ) -> i32 {
        abi::OK
    }

    pub unsafe extern "C" fn state_load_none(
        _instance: *mut c_void,
        _state: *const RefArray,
        err: *mut ErrorSink,
    ) -> i32 {
        unsafe { report(err, "this component has no state") };
        abi::ERROR
    }

    // ---- encoders

    pub unsafe extern "C" fn forward_encoder<T: Encoder>(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        flags: u64,
        out: *mut Handle,
        err: *mut ErrorSink,
    ) -> i32 {
        let body = || {
            let inst = unsafe { &*(instance as *const T) };
            let host = Host { api: host };
            let h = handles(inputs, n_inputs);
            let x = host.borrow(*h.first().ok_or("no input given")?);
            let params: Vec<HostTensor> = h[1..].iter().map(|&p| host.borrow(p)).collect();
            let specs = inst.parameters();
            if params.len() != specs.len() {
                return Err(format!(
                    "{} takes {} parameters, got {}",
                    T::NAME,
                    specs.len(),
                    params.len()
                ));
            }
            let training = flags & abi::ENCODER_TRAINING != 0;
            let mut pass = Pass {
                training,
                updates: Vec::new(),
            };
            let y = inst.forward(&host, &x, &params, &mut pass)?;
            let buffers = specs.iter().filter(|p| p.buffer).count();
            let given = pass.updates.len();
            if training && given != buffers {
                return Err(format!(
                    "{} gave {given} buffer updates in training mode; it declares {buffers} buffers",
                    T::NAME
                ));
            }
            hand_over(y, out);
            if training {
                for (i, u) in pass.updates.into_iter().enumerate() {
                    hand_over(u, unsafe { out.add(1 + i) });
                }
            }
            Ok(())
        };
        unsafe { guard(err, body) }
    }

    pub unsafe extern "C" fn reference_encoder<T: Encoder>(
        instance: *mut c_void,
        inputs: *const RefArray,
        n_inputs: usize,
        flags: u64,
        out: *mut RefSink,
        err: *mut ErrorSink,
    ) -> i32 {
        reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
            let x = view(a.first().ok_or("no input given")?);
            let params: Vec<Array> = a[1..].iter().map(view).collect();
            inst.reference(&x, &params, flags & abi::ENCODER_TRAINING != 0)
        })
    }

    pub unsafe extern "C" fn describe_encoder<T: Encoder>(
        instance: *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        let inst = unsafe { &*(instance as *const T) };
        unsafe {
            guard(err, || {
                describe_json(err, inst.input_shape(), inst.parameters())
            })
        }
    }

    // ---- augmentations

    pub unsafe extern "C" fn forward_augmentation<T: Augmentation>(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        stream: u64,
        out: *mut Handle,
        err: *mut ErrorSink,
    ) -> i32 {
        forward_with(
            instance,
            host,
            inputs,
            n_inputs,
            out,
            err,
            |inst: &T, host, h| {
                let batch = host.borrow(*h.first().ok_or("no batch given")?);
                inst.forward(host, &batch, Stream { seed: stream })
            },
        )
    }

    pub unsafe extern "C" fn reference_augmentation<T: Augmentation>(
        instance: *mut c_void,
        inputs: *const RefArray,
        n_inputs: usize,
        stream: u64,
        out: *mut RefSink,
        err: *mut ErrorSink,
    ) -> i32 {
        reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
            inst.reference(
                &view(a.first().ok_or("no batch given")?),
                Stream { seed: stream },
            )
        })
    }

    pub unsafe extern "C" fn describe_augmentation<T: Augmentation>(
        instance: *mut c_void,
        err: *mut ErrorSink,
    ) -> i32 {
        let inst = unsafe { &*(instance as *const T) };
        unsafe { guard(err, || describe_json(err, inst.input_shape(), vec![])) }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[allow(clippy::too_many_arguments)]
    fn vtable(
        kind: u32,
        name: String,
        description: &'static str,
        options: &[OptionSpec],
        create: unsafe extern "C" fn(Str, *mut *mut c_void, *mut ErrorSink) -> i32,
        destroy: unsafe extern "C" fn(*mut c_void),
        forward: unsafe extern "C" fn(
            *mut c_void,
            *const HostApi,
            *const Handle,
            usize,
            u64,
            *mut Handle,
            *mut ErrorSink,
        ) -> i32,
        reference: unsafe extern "C" fn(
            *mut c_void,
            *const RefArray,
            usize,
            u64,
            *mut RefSink,
            *mut ErrorSink,
        ) -> i32,
        describe: unsafe extern "C" fn(*mut c_void, *mut ErrorSink) -> i32,
    ) -> abi::ComponentVTable {
        abi::ComponentVTable {
            struct_size: std::mem::size_of::<abi::ComponentVTable>(),
            kind,
            name: Str::new(leak(name)),
            description: Str::new(description),
            options_schema: Str::new(leak(serde_json::to_string(options).unwrap_or_default())),
            create,
            destroy,
            forward,
            reference: Some(reference),
            describe,
            state_save: state_save_none,
            state_load: state_load_none,
        }
    }

    /// A vtable lives as long as the process (plugins are never unloaded).
    fn leak_vtable(vt: abi::ComponentVTable) -> &'static abi::ComponentVTable {
        Box::leak(Box::new(vt))
    }

    /// The vtable of loss `T` in `plugin`, named `plugin::T::NAME`.
    pub fn loss_vtable<T: Loss>(plugin: &str) -> &'static abi::ComponentVTable {
        let name = format!("{plugin}::{}", T::NAME);
        let vt = vtable(
            abi::KIND_LOSS,
            name,
            T::DESCRIPTION,
            &T::options(),
            create_loss::<T>,
            destroy::<T>,
            forward_loss::<T>,
            reference_loss::<T>,
            describe_loss::<T>,
        );
        leak_vtable(abi::ComponentVTable {
            state_save: state_save_loss::<T>,
            state_load: state_load_loss::<T>,
            ..vt
        })
    }

    /// The vtable of encoder `T` in `plugin`.
    pub fn encoder_vtable<T: Encoder>(plugin: &str) -> &'static abi::ComponentVTable {
        let name = format!("{plugin}::{}", T::NAME);
        leak_vtable(vtable(
            abi::KIND_ENCODER,
            name,
            T::DESCRIPTION,
            &T::options(),
            create_encoder::<T>,
            destroy::<T>,
            forward_encoder::<T>,
            reference_encoder::<T>,
            describe_encoder::<T>,
        ))
    }

    /// The vtable of augmentation `T` in `plugin`.
    pub fn augmentation_vtable<T: Augmentation>(plugin: &str) -> &'static abi::ComponentVTable {
        let name = format!("{plugin}::{}", T::NAME);
        leak_vtable(vtable(
            abi::KIND_AUGMENTATION,
            name,
            T::DESCRIPTION,
            &T::options(),
            create_augmentation::<T>,
            destroy::<T>,
            forward_augmentation::<T>,
            reference_augmentation::<T>,
            describe_augmentation::<T>,
        ))
    }
}

/// Exports a plugin:
/// `export_plugin!(name: "mine", version: "0.1.0", losses: [MyLoss], encoders: [MyNet], augmentations: [MyAug]);`
/// (each list optional) generates the descriptor and the `vkgrad_plugin_entry_v1` symbol.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:literal, version: $version:literal
        $(, losses: [$($loss:ty),* $(,)?])?
        $(, encoders: [$($enc:ty),* $(,)?])?
        $(, augmentations: [$($aug:ty),* $(,)?])? $(,)?) => {
        unsafe extern "C" fn __vkgrad_plugin_init(
            _host: *const $crate::abi::HostApi,
            registrar: *const $crate::abi::Registrar,
            err: *mut $crate::abi::ErrorSink,
        ) -> i32 {
            let body = || {
                let reg = unsafe { registrar.as_ref() }.ok_or("no registrar")?;
                if reg.struct_size < ::std::mem::size_of::<$crate::abi::Registrar>() {
                    return Err("the host's registrar is older than this SDK".to_string());
                }
                let vtables: Vec<&'static $crate::abi::ComponentVTable> = vec![
                    $($($crate::trampolines::loss_vtable::<$loss>($name),)*)?
                    $($($crate::trampolines::encoder_vtable::<$enc>($name),)*)?
                    $($($crate::trampolines::augmentation_vtable::<$aug>($name),)*)?
                ];
                for vt in vtables {
                    if unsafe { (reg.register)(reg.ctx, vt) } != $crate::abi::OK {
                        let name = unsafe { vt.name.as_str() }.unwrap_or("?");
                        return Err(format!("the host refused component {name}"));
                    }
                }
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
