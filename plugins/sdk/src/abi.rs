//! The C ABI between the vkgrad host and a plugin, version 1. Only `#[repr(C)]` structs, plain
//! integers, raw pointers and `extern "C"` function pointers cross it, so a plugin built with
//! another rustc (or in another language) works.
//!
//! Rules: strings are borrowed for the duration of a call and copied by the receiver; whoever
//! allocates frees (errors and results go back through host callbacks, never as plugin-owned
//! memory); every table starts with its `struct_size` and only grows at the end, so readers check
//! the size before touching a later field; ABI major must match and the plugin's minor must be at
//! most the host's.

use std::ffi::c_void;

pub const ABI_MAJOR: u32 = 1;
/// 1.1: encoders get a mode (`ENCODER_TRAINING` in `stream`) and return updated buffers.
/// 1.2: the host op `similarity_lse`; host-op attributes checked against a schema.
/// 1.5: the host op `replica_sum` (batch statistics shared by data-parallel ranks).
/// 1.6: an augmentation's description says whether it draws only on the device
/// (`draws_on_device`), which lets the host record it into a replayed training step.
/// (docs/abi-changelog.md)
pub const ABI_MINOR: u32 = 7;
/// Encoders: bit of `stream` set in training mode (batch statistics, buffer updates).
pub const ENCODER_TRAINING: u64 = 1;
/// The one symbol a plugin exports: `extern "C" fn() -> *const PluginDescriptor`.
pub const ENTRY_SYMBOL: &str = "vkgrad_plugin_entry_v1";

/// Status codes returned by every function of the ABI.
pub const OK: i32 = 0;
pub const ERROR: i32 = 1;
/// The callee panicked (caught at the boundary); the host marks the plugin poisoned.
pub const PANICKED: i32 = 2;

/// A borrowed UTF-8 string.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Str {
    pub ptr: *const u8,
    pub len: usize,
}

impl Str {
    pub fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
    /// # Safety
    /// `ptr` must point to `len` readable bytes for the lifetime `'a`.
    pub unsafe fn as_str<'a>(self) -> Result<&'a str, std::str::Utf8Error> {
        if self.len == 0 {
            return Ok("");
        }
        std::str::from_utf8(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }
}

/// An opaque host tensor (f32 or integer). 0 means "none".
pub type Handle = u64;

/// Where a callee hands over text, which the receiver copies: an error message, or a result
/// such as `describe`'s JSON.
#[repr(C)]
pub struct TextSink {
    pub ctx: *mut c_void,
    pub set: unsafe extern "C" fn(ctx: *mut c_void, message: Str),
}

/// The name `TextSink` had before SDK 0.1.1 (the same type; kept so plugin sources that name it
/// still build).
#[deprecated(note = "renamed TextSink: it carries results as well as errors")]
pub type ErrorSink = TextSink;

/// A borrowed n-dimensional f64 array (CPU reference inputs).
#[repr(C)]
pub struct RefArray {
    pub data: *const f64,
    pub len: usize,
    pub dims: *const usize,
    pub rank: usize,
}

/// Where a CPU reference reports its result: the loss value and, optionally, nothing else (the
/// host differentiates the reference numerically).
#[repr(C)]
pub struct RefSink {
    pub ctx: *mut c_void,
    pub put: unsafe extern "C" fn(
        ctx: *mut c_void,
        data: *const f64,
        len: usize,
        dims: *const usize,
        rank: usize,
    ),
}

/// What the host offers a plugin. Grows at the end; check `struct_size`.
#[repr(C)]
pub struct HostApi {
    pub struct_size: usize,
    pub abi_minor: u32,
    pub ctx: *mut c_void,
    /// Runs the named host op (see the host's op table) on `inputs`, with attributes as a JSON
    /// object; on success writes the result handle to `out`.
    pub op: unsafe extern "C" fn(
        ctx: *mut c_void,
        name: Str,
        inputs: *const Handle,
        n_inputs: usize,
        attrs_json: Str,
        out: *mut Handle,
        err: *mut TextSink,
    ) -> i32,
    /// Writes up to `cap` dimensions of `t` to `dims` and its rank to `rank`.
    pub shape: unsafe extern "C" fn(
        ctx: *mut c_void,
        t: Handle,
        dims: *mut usize,
        cap: usize,
        rank: *mut usize,
    ) -> i32,
    /// Gives a handle back; the host frees the tensor when nothing else holds it.
    pub release: unsafe extern "C" fn(ctx: *mut c_void, t: Handle),
    /// Makes a tensor from host data (constants, masks).
    pub tensor: unsafe extern "C" fn(
        ctx: *mut c_void,
        data: *const f32,
        len: usize,
        dims: *const usize,
        rank: usize,
        out: *mut Handle,
        err: *mut TextSink,
    ) -> i32,
    /// A log line (level 0 = debug .. 3 = error).
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: u32, message: Str),
    /// Copies up to `cap` values of f32 tensor `t` to `out` (submitting pending device work) and
    /// writes its element count to `len`; for state a component keeps across calls.
    pub read: unsafe extern "C" fn(
        ctx: *mut c_void,
        t: Handle,
        out: *mut f32,
        cap: usize,
        len: *mut usize,
    ) -> i32,
}

/// Component kinds.
pub const KIND_LOSS: u32 = 1;
pub const KIND_ENCODER: u32 = 2;
pub const KIND_AUGMENTATION: u32 = 3;

/// One component a plugin registers. Grows at the end; check `struct_size`.
#[repr(C)]
pub struct ComponentVTable {
    pub struct_size: usize,
    pub kind: u32,
    /// `plugin::component`.
    pub name: Str,
    pub description: Str,
    /// JSON array of `{"name", "type", "default", "doc"}`.
    pub options_schema: Str,
    /// Validates the options (a JSON object; missing keys take defaults) and makes an instance.
    pub create:
        unsafe extern "C" fn(options_json: Str, out: *mut *mut c_void, err: *mut TextSink) -> i32,
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Inputs by kind — loss: [features [N, V, D], labels [N] or 0] -> a scalar; encoder:
    /// [x [B, ...input shape], parameters...] -> [B, ...]; augmentation: [batch] -> batch.
    /// `stream` seeds an augmentation's random draws; for an encoder it carries mode flags
    /// (`ENCODER_TRAINING`), and in training mode `out` points to 1 + (number of buffers)
    /// handles: the output, then each buffer's new value in declaration order (ABI 1.1).
    pub forward: unsafe extern "C" fn(
        instance: *mut c_void,
        host: *const HostApi,
        inputs: *const Handle,
        n_inputs: usize,
        stream: u64,
        out: *mut Handle,
        err: *mut TextSink,
    ) -> i32,
    /// The required CPU reference (f64, naive, independent of the host ops): same inputs as
    /// `forward` as f64 arrays (labels as f64 values, or a null `data` when absent).
    pub reference: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            inputs: *const RefArray,
            n_inputs: usize,
            stream: u64,
            out: *mut RefSink,
            err: *mut TextSink,
        ) -> i32,
    >,
    /// The instance's shapes as JSON: `{"input_shape": [...], "parameters": [{"name", "shape",
    /// "init"}]}` (input shape and parameters are empty for losses).
    pub describe: unsafe extern "C" fn(instance: *mut c_void, out: *mut TextSink) -> i32,
    /// State that must survive steps and checkpoints (e.g. MoCo's queue): `state_save` puts it
    /// as one f64 array (nothing if the component has none yet), `state_load` restores it.
    pub state_save:
        unsafe extern "C" fn(instance: *mut c_void, out: *mut RefSink, err: *mut TextSink) -> i32,
    pub state_load: unsafe extern "C" fn(
        instance: *mut c_void,
        state: *const RefArray,
        err: *mut TextSink,
    ) -> i32,
}

/// How a plugin registers its components during `init`.
#[repr(C)]
pub struct Registrar {
    pub struct_size: usize,
    pub ctx: *mut c_void,
    pub register: unsafe extern "C" fn(ctx: *mut c_void, component: *const ComponentVTable) -> i32,
}

/// What the entry symbol returns. Grows at the end; check `struct_size`.
#[repr(C)]
pub struct PluginDescriptor {
    pub struct_size: usize,
    pub abi_major: u32,
    pub abi_minor: u32,
    pub name: Str,
    pub version: Str,
    pub init: unsafe extern "C" fn(
        host: *const HostApi,
        registrar: *const Registrar,
        err: *mut TextSink,
    ) -> i32,
}

// Descriptors and vtables are immutable statics shared by the whole process.
unsafe impl Sync for PluginDescriptor {}
unsafe impl Sync for ComponentVTable {}
unsafe impl Send for Str {}
unsafe impl Sync for Str {}
