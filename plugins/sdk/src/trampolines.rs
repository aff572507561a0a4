//! The trampolines behind the vtables `export_plugin!` builds.
//!
//! Safety, for every function here: only the host calls them, through the vtable, with the
//! pointers the ABI describes (a live instance from `create`, valid input arrays and sinks).

use crate::*;

fn make<T, O: DeserializeOwned>(
    name: &str,
    options: Str,
    out: *mut *mut c_void,
    new: fn(O) -> Result<T, String>,
) -> Result<(), String> {
    let text = unsafe { options.as_str() }.map_err(|e| format!("options are not UTF-8: {e}"))?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{name}: options are not JSON: {e}"))?;
    // Options are named: a JSON object. (serde would also read a struct from an array.)
    if !value.is_object() {
        return Err(format!(
            "{name}: options must be a JSON object, got {value}"
        ));
    }
    let opts: O = serde_json::from_value(value).map_err(|e| format!("{name}: bad options: {e}"))?;
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
    err: *mut TextSink,
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
    err: *mut TextSink,
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
    err: *mut TextSink,
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
    err: *mut TextSink,
) -> i32 {
    unsafe { guard(err, || make(T::NAME, options, out, T::new)) }
}

pub unsafe extern "C" fn create_encoder<T: Encoder>(
    options: Str,
    out: *mut *mut c_void,
    err: *mut TextSink,
) -> i32 {
    unsafe { guard(err, || make(T::NAME, options, out, T::new)) }
}

pub unsafe extern "C" fn create_augmentation<T: Augmentation>(
    options: Str,
    out: *mut *mut c_void,
    err: *mut TextSink,
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
    err: *mut TextSink,
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
            let n = features.shape()?.first().copied().unwrap_or(0);
            check_batch(inst, n)?;
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

/// A batch below the loss's declared minimum is refused on both paths, the same words.
fn check_batch<T: Loss>(inst: &T, n: usize) -> Result<(), String> {
    if n == 0 {
        return Err(format!(
            "{} got an empty batch (N = 0); it takes at least {} samples",
            T::NAME,
            inst.min_batch().max(1)
        ));
    }
    if n < inst.min_batch() {
        return Err(format!(
            "{} takes batches of at least {} samples, got {n}",
            T::NAME,
            inst.min_batch()
        ));
    }
    Ok(())
}

pub unsafe extern "C" fn reference_loss<T: Loss>(
    instance: *mut c_void,
    inputs: *const RefArray,
    n_inputs: usize,
    _stream: u64,
    out: *mut RefSink,
    err: *mut TextSink,
) -> i32 {
    reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
        let features = view(a.first().ok_or("no features given")?);
        check_batch(inst, features.dims.first().copied().unwrap_or(0))?;
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

pub unsafe extern "C" fn describe_loss<T: Loss>(instance: *mut c_void, err: *mut TextSink) -> i32 {
    let inst = unsafe { &*(instance as *const T) };
    let body = || {
        let text = json!({
            "input_shape": inst.feature_dim().into_iter().collect::<Vec<_>>(),
            "parameters": [],
            "extra_inputs": inst.extra_inputs(),
            "needs_labels": inst.needs_labels(),
            "views": [inst.views().0, inst.views().1],
            "min_batch": inst.min_batch(),
        });
        unsafe { report(err, &text.to_string()) };
        Ok(())
    };
    unsafe { guard(err, body) }
}

pub unsafe extern "C" fn state_save_loss<T: Loss>(
    instance: *mut c_void,
    out: *mut RefSink,
    err: *mut TextSink,
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
    err: *mut TextSink,
) -> i32 {
    let inst = unsafe { &*(instance as *const T) };
    let body = || inst.load_state(&view(unsafe { state.as_ref() }.ok_or("no state given")?));
    unsafe { guard(err, body) }
}

pub unsafe extern "C" fn state_save_none(
    _instance: *mut c_void,
    _out: *mut RefSink,
    _err: *mut TextSink,
) -> i32 {
    abi::OK
}

pub unsafe extern "C" fn state_load_none(
    _instance: *mut c_void,
    _state: *const RefArray,
    err: *mut TextSink,
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
    err: *mut TextSink,
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
    err: *mut TextSink,
) -> i32 {
    reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
        let x = view(a.first().ok_or("no input given")?);
        let params: Vec<Array> = a[1..].iter().map(view).collect();
        inst.reference(&x, &params, flags & abi::ENCODER_TRAINING != 0)
    })
}

pub unsafe extern "C" fn describe_encoder<T: Encoder>(
    instance: *mut c_void,
    err: *mut TextSink,
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
    err: *mut TextSink,
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
            sample_shape_is_declared(&inst.input_shape(), &batch.shape()?)?;
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
    err: *mut TextSink,
) -> i32 {
    reference_with(instance, inputs, n_inputs, out, err, |inst: &T, a| {
        let batch = view(a.first().ok_or("no batch given")?);
        sample_shape_is_declared(&inst.input_shape(), batch.dims)?;
        inst.reference(&batch, Stream { seed: stream })
    })
}

/// An augmentation takes the samples it declares (`input_shape`, set by its options): a batch
/// of another shape is refused on both paths before its code runs, so options that disagree
/// with the data (`channels`, `size`) are an error rather than a kernel that happens to run.
fn sample_shape_is_declared(declared: &[usize], batch: &[usize]) -> Result<(), String> {
    if batch.get(1..) != Some(declared) {
        return Err(format!(
            "a batch of shape {batch:?}, but this augmentation takes samples of shape {declared:?} (set its options to match the data)"
        ));
    }
    Ok(())
}

pub unsafe extern "C" fn describe_augmentation<T: Augmentation>(
    instance: *mut c_void,
    err: *mut TextSink,
) -> i32 {
    let inst = unsafe { &*(instance as *const T) };
    unsafe {
        guard(err, || {
            let text = json!({
                "input_shape": inst.input_shape(),
                "draws_on_device": inst.draws_on_device(),
            })
            .to_string();
            report(err, &text);
            Ok(())
        })
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[allow(clippy::too_many_arguments)]
fn vtable(
    kind: u32,
    name: String,
    description: &'static str,
    options: Value,
    create: unsafe extern "C" fn(Str, *mut *mut c_void, *mut TextSink) -> i32,
    destroy: unsafe extern "C" fn(*mut c_void),
    forward: unsafe extern "C" fn(
        *mut c_void,
        *const HostApi,
        *const Handle,
        usize,
        u64,
        *mut Handle,
        *mut TextSink,
    ) -> i32,
    reference: unsafe extern "C" fn(
        *mut c_void,
        *const RefArray,
        usize,
        u64,
        *mut RefSink,
        *mut TextSink,
    ) -> i32,
    describe: unsafe extern "C" fn(*mut c_void, *mut TextSink) -> i32,
) -> abi::ComponentVTable {
    abi::ComponentVTable {
        struct_size: std::mem::size_of::<abi::ComponentVTable>(),
        kind,
        name: Str::new(leak(name)),
        description: Str::new(description),
        options_schema: Str::new(leak(options.to_string())),
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
        crate::options::schema(&T::options(), &T::option_domains()),
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
        crate::options::schema(&T::options(), &T::option_domains()),
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
        crate::options::schema(&T::options(), &T::option_domains()),
        create_augmentation::<T>,
        destroy::<T>,
        forward_augmentation::<T>,
        reference_augmentation::<T>,
        describe_augmentation::<T>,
    ))
}
