//! The host side of the ABI: the op table plugins call by name, over opaque handles. A fresh
//! `CallState` backs each call into a plugin; handles index its table, and whatever the plugin
//! did not return is freed when the call ends.

use crate::error::{Error, Result};
use crate::tensor::{IntTensor, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::c_void;
use vkgrad_plugin::abi::{self, Handle, HostApi, Str, TextSink};

/// A value behind a handle.
#[derive(Clone)]
pub(crate) enum Held {
    F(Tensor),
    I(IntTensor),
}

#[derive(Default)]
pub(crate) struct CallState {
    table: HashMap<Handle, Held>,
    next: Handle,
}

impl CallState {
    pub fn insert(&mut self, v: Held) -> Handle {
        self.next += 1;
        self.table.insert(self.next, v);
        self.next
    }
    pub fn take(&mut self, h: Handle) -> Option<Held> {
        self.table.remove(&h)
    }
    fn get(&self, h: Handle) -> Result<&Held> {
        self.table
            .get(&h)
            .ok_or_else(|| Error::Other(format!("unknown tensor handle {h}")))
    }
    fn f(&self, h: Handle) -> Result<&Tensor> {
        match self.get(h)? {
            Held::F(t) => Ok(t),
            Held::I(_) => Err(Error::Other(format!(
                "handle {h} is an integer tensor where an f32 one is needed"
            ))),
        }
    }
    fn i(&self, h: Handle) -> Result<&IntTensor> {
        match self.get(h)? {
            Held::I(t) => Ok(t),
            Held::F(_) => Err(Error::Other(format!(
                "handle {h} is an f32 tensor where an integer one is needed"
            ))),
        }
    }
}

/// The API table for one call; `ctx` points at the call's state.
pub(crate) fn api(state: &mut CallState) -> HostApi {
    HostApi {
        struct_size: std::mem::size_of::<HostApi>(),
        abi_minor: abi::ABI_MINOR,
        ctx: state as *mut CallState as *mut c_void,
        op: host_op,
        shape: host_shape,
        release: host_release,
        tensor: host_tensor,
        log: host_log,
        read: host_read,
    }
}

unsafe fn state<'a>(ctx: *mut c_void) -> &'a mut CallState {
    unsafe { &mut *(ctx as *mut CallState) }
}

unsafe fn fail(err: *mut TextSink, e: impl std::fmt::Display) -> i32 {
    unsafe { vkgrad_plugin::report(err, &e.to_string()) };
    abi::ERROR
}

unsafe extern "C" fn host_op(
    ctx: *mut c_void,
    name: Str,
    inputs: *const Handle,
    n_inputs: usize,
    attrs: Str,
    out: *mut Handle,
    err: *mut TextSink,
) -> i32 {
    let st = unsafe { state(ctx) };
    let _host = super::crash::leave();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Held> {
        let name = unsafe { name.as_str() }
            .map_err(|e| Error::Other(format!("op name is not UTF-8: {e}")))?;
        let attrs = unsafe { attrs.as_str() }
            .map_err(|e| Error::Other(format!("{name}: attributes are not UTF-8: {e}")))?;
        let attrs: Value = if attrs.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(attrs)
                .map_err(|e| Error::Other(format!("{name}: attributes are not JSON: {e}")))?
        };
        let handles = if n_inputs == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(inputs, n_inputs) }
        };
        let v = run_op(st, name, handles, &attrs)?;
        if let (Held::F(out), true) = (&v, super::trace::active()) {
            let inputs = handles.iter().map(|&h| st.f(h).ok().cloned()).collect();
            super::trace::note(name, &attrs, inputs, out);
        }
        Ok(v)
    }));
    match result {
        Ok(Ok(v)) => {
            unsafe { *out = st.insert(v) };
            abi::OK
        }
        Ok(Err(e)) => unsafe { fail(err, e) },
        Err(_) => unsafe { fail(err, "the host panicked running this op (a bug in vkgrad)") },
    }
}

fn attr_f(op: &str, a: &Value, key: &str) -> Result<f32> {
    a.get(key)
        .and_then(Value::as_f64)
        .map(|v| v as f32)
        .ok_or_else(|| Error::Other(format!("{op}: attribute `{key}` (a number) is missing")))
}
fn attr_i(op: &str, a: &Value, key: &str) -> Result<isize> {
    a.get(key)
        .and_then(Value::as_i64)
        .map(|v| v as isize)
        .ok_or_else(|| Error::Other(format!("{op}: attribute `{key}` (an integer) is missing")))
}
fn attr_u(op: &str, a: &Value, key: &str) -> Result<usize> {
    a.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            Error::Other(format!(
                "{op}: attribute `{key}` (a non-negative integer) is missing"
            ))
        })
}
fn attr_list(op: &str, a: &Value, key: &str) -> Result<Vec<usize>> {
    a.get(key)
        .and_then(Value::as_array)
        .and_then(|v| v.iter().map(|x| x.as_u64().map(|u| u as usize)).collect())
        .ok_or_else(|| {
            Error::Other(format!(
                "{op}: attribute `{key}` (a list of non-negative integers) is missing"
            ))
        })
}
/// A window from `stride` (default the kernel for pooling, 1 for conv2d), `padding` (0) and
/// `dilation` (1), each an integer for both axes.
fn window(op: &str, a: &Value, kernel: [usize; 2]) -> Result<crate::Window> {
    let get = |key: &str, default: usize| -> Result<usize> {
        match a.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|u| u as usize).ok_or_else(|| {
                Error::Other(format!(
                    "{op}: attribute `{key}` must be a non-negative integer"
                ))
            }),
        }
    };
    let default_stride = if op == "conv2d" { 1 } else { kernel[0] };
    let (s, p, d) = (
        get("stride", default_stride)?,
        get("padding", 0)?,
        get("dilation", 1)?,
    );
    Ok(crate::Window {
        kernel,
        stride: [s; 2],
        padding: [p; 2],
        dilation: [d; 2],
    })
}

fn attr_b(a: &Value, key: &str) -> bool {
    a.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The op table: every engine op, by name, with its attributes (checked against
/// `op_schema` first, so the readers below see only well-typed attributes).
fn run_op(st: &CallState, name: &str, h: &[Handle], a: &Value) -> Result<Held> {
    super::op_schema::check(name, a)?;
    let want = |n: usize| {
        if h.len() == n {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "{name}: takes {n} input(s), got {}",
                h.len()
            )))
        }
    };
    let x = |i: usize| st.f(h[i]);
    let f = |t: Tensor| Ok(Held::F(t));
    // The elementwise ops come from their tables (name, scalar attribute, call).
    if let Some(op) = crate::ops::unary::unary_op(name) {
        want(1)?;
        let s = match op.scalar {
            Some(key) => attr_f(name, a, key)?,
            None => 0.0,
        };
        return f((op.call)(x(0)?, s)?);
    }
    if let Some(op) = crate::ops::binary::binary_op(name) {
        want(2)?;
        return f((op.call)(x(0)?, x(1)?)?);
    }
    if let Some(op) = crate::ops::rowwise::rowwise_op(name) {
        want(1)?;
        let eps = match op.eps {
            Some((key, default)) => a
                .get(key)
                .and_then(Value::as_f64)
                .map_or(default, |v| v as f32),
            None => 0.0,
        };
        return f((op.call)(x(0)?, eps)?);
    }
    if let Some(op) = crate::ops::reduce::reduce_op(name) {
        want(1)?;
        let t = x(0)?;
        return f(match a.get("axis").and_then(Value::as_i64) {
            Some(axis) => (op.axis)(t, axis as isize, attr_b(a, "keepdim"))?,
            None => (op.all)(t)?,
        });
    }
    match name {
        "detach" => {
            want(1)?;
            f(x(0)?.detach())
        }
        "replica_sum" => {
            want(1)?;
            f(x(0)?.replica_sum()?)
        }
        "where" => {
            want(3)?;
            f(Tensor::where_(x(0)?, x(1)?, x(2)?)?)
        }
        "argmax" | "argmin" => {
            want(1)?;
            let (t, ax, keep) = (x(0)?, attr_i(name, a, "axis")?, attr_b(a, "keepdim"));
            Ok(Held::I(if name == "argmax" {
                t.argmax(ax, keep)?
            } else {
                t.argmin(ax, keep)?
            }))
        }
        "matmul" => {
            want(2)?;
            f(Tensor::matmul_t(
                x(0)?,
                x(1)?,
                attr_b(a, "ta"),
                attr_b(a, "tb"),
            )?)
        }
        "reshape" => {
            want(1)?;
            f(x(0)?.reshape(&attr_list(name, a, "shape")?)?)
        }
        "permute" => {
            want(1)?;
            f(x(0)?.permute(&attr_list(name, a, "dims")?)?)
        }
        "transpose" => {
            want(1)?;
            f(x(0)?.transpose(attr_i(name, a, "a")?, attr_i(name, a, "b")?)?)
        }
        "narrow" => {
            want(1)?;
            f(x(0)?.narrow(
                attr_i(name, a, "axis")?,
                attr_u(name, a, "start")?,
                attr_u(name, a, "len")?,
            )?)
        }
        "expand" => {
            want(1)?;
            f(x(0)?.expand(&attr_list(name, a, "shape")?)?)
        }
        "concat" => {
            let ts = h.iter().map(|&i| st.f(i)).collect::<Result<Vec<_>>>()?;
            f(Tensor::concat(&ts, attr_i(name, a, "axis")?)?)
        }
        "index_select" | "gather" => {
            want(2)?;
            let (t, idx, ax) = (x(0)?, st.i(h[1])?, attr_i(name, a, "axis")?);
            f(if name == "gather" {
                t.gather(ax, idx)?
            } else {
                t.index_select(ax, idx)?
            })
        }
        "scatter_add" => {
            want(3)?;
            f(x(0)?.scatter_add(attr_i(name, a, "axis")?, st.i(h[1])?, x(2)?)?)
        }
        "random" => {
            want(0)?;
            let seed = a.get("seed").and_then(Value::as_u64).ok_or_else(|| {
                Error::Other("random: attribute `seed` (an integer) is missing".into())
            })?;
            let offset = attr_u(name, a, "offset")? as u32;
            let shape = attr_list(name, a, "shape")?;
            let (p, q) = (attr_f(name, a, "a")?, attr_f(name, a, "b")?);
            let mut rng = crate::Rng { seed, offset };
            f(match a.get("dist").and_then(Value::as_str) {
                Some("uniform") => rng.uniform(&shape, p, q)?,
                Some("normal") => rng.normal(&shape, p, q)?,
                other => {
                    return Err(Error::Other(format!(
                        "random: `dist` must be \"uniform\" or \"normal\", got {other:?}"
                    )))
                }
            })
        }
        "conv2d" => {
            if h.len() != 2 && h.len() != 3 {
                return Err(Error::Other(format!(
                    "conv2d: takes 2 or 3 inputs (x, weight[, bias]), got {}",
                    h.len()
                )));
            }
            let w = x(1)?;
            let k = [
                w.shape().get(2).copied().unwrap_or(0),
                w.shape().get(3).copied().unwrap_or(0),
            ];
            let bias = if h.len() == 3 { Some(x(2)?) } else { None };
            f(x(0)?.conv2d(w, bias, &window(name, a, k)?)?)
        }
        "max_pool2d" | "avg_pool2d" => {
            want(1)?;
            let k = attr_u(name, a, "kernel")?;
            let win = window(name, a, [k, k])?;
            f(if name == "max_pool2d" {
                x(0)?.max_pool2d(&win)?
            } else {
                x(0)?.avg_pool2d(&win)?
            })
        }
        "global_avg_pool" => {
            want(1)?;
            f(x(0)?.global_avg_pool()?)
        }
        "resample_affine" => {
            want(2)?;
            let size = attr_list(name, a, "size")?;
            let [oh, ow] = size[..] else {
                return Err(Error::Other(format!(
                    "resample_affine: `size` must be [height, width], got {size:?}"
                )));
            };
            let pad = match a.get("padding").and_then(Value::as_str).unwrap_or("zeros") {
                "zeros" => crate::Padding::Zeros,
                "border" => crate::Padding::Border,
                other => {
                    return Err(Error::Other(format!(
                        "resample_affine: `padding` must be \"zeros\" or \"border\", got {other:?}"
                    )))
                }
            };
            f(x(0)?.resample_affine(x(1)?, [oh, ow], pad)?)
        }
        "similarity_lse" => similarity_lse(st, h, a),
        "to_f32" => {
            want(1)?;
            f(st.i(h[0])?.to_f32()?)
        }
        _ => Err(Error::Other(format!(
            "host op `{name}` has a schema but no implementation (a bug in vkgrad)"
        ))),
    }
}

/// Integer ids from an integer tensor, or from an f32 one holding non-negative integers.
fn ids(st: &CallState, h: Handle, what: &str) -> Result<Vec<u32>> {
    match st.get(h)? {
        Held::I(t) => t.to_vec(),
        Held::F(t) => t
            .to_vec()?
            .into_iter()
            .map(|v| {
                (v >= 0.0 && v.fract() == 0.0 && v <= u32::MAX as f32)
                    .then_some(v as u32)
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "similarity_lse: {what} must be non-negative integers, got {v}"
                        ))
                    })
            })
            .collect(),
    }
}

/// Positive codes on the device: an f32 tensor's values, an integer tensor's as f32.
fn codes(st: &CallState, h: Handle) -> Result<Tensor> {
    match st.get(h)? {
        Held::I(t) => t.to_f32(),
        Held::F(t) => Ok(t.clone()),
    }
}

/// `similarity_lse`: inputs q, k, then the positives (`index`: one tensor [M]; `labels`: query
/// labels [M] and key labels [P]), then the external positive logits [M] if `external`.
fn similarity_lse(st: &CallState, h: &[Handle], a: &Value) -> Result<Held> {
    let positives = a.get("positives").and_then(Value::as_str).unwrap_or("none");
    let external = attr_b(a, "external");
    let n_pos = match positives {
        "index" => 1,
        "labels" => 2,
        _ => 0,
    };
    let want = 2 + n_pos + external as usize;
    if h.len() != want {
        return Err(Error::Other(format!(
            "similarity_lse: takes {want} inputs (q, k{}{}), got {}",
            ["", ", index", ", query labels, key labels"][n_pos],
            if external { ", external positives" } else { "" },
            h.len()
        )));
    }
    // While a step is recorded for replay the positives stay on the device (reading them back
    // is refused there, and their values change at every replay): the same equality of codes,
    // unvalidated; otherwise they are read and checked on the host.
    let capturing = crate::device::context()?.capturing();
    let positives = match positives {
        "index" if capturing => {
            let n_keys = st.f(h[1])?.shape().first().copied().unwrap_or(0);
            let keys: Vec<f32> = (0..n_keys).map(|j| j as f32).collect();
            crate::Positives::Codes(codes(st, h[2])?, Tensor::from_vec(keys, &[n_keys])?)
        }
        "labels" if capturing => crate::Positives::Codes(codes(st, h[2])?, codes(st, h[3])?),
        "index" => crate::Positives::Index(ids(st, h[2], "positive indices")?),
        "labels" => {
            crate::Positives::Labels(ids(st, h[2], "query labels")?, ids(st, h[3], "key labels")?)
        }
        _ => crate::Positives::None,
    };
    let ext = if external {
        Some(st.f(h[2 + n_pos])?)
    } else {
        None
    };
    let o = crate::SimilarityLse {
        temperature: attr_f("similarity_lse", a, "temperature")?,
        exclude_self: attr_b(a, "exclude_self"),
        positives,
        tile_rows: None,
    };
    Ok(Held::F(st.f(h[0])?.similarity_lse(st.f(h[1])?, ext, &o)?))
}

unsafe extern "C" fn host_shape(
    ctx: *mut c_void,
    t: Handle,
    dims: *mut usize,
    cap: usize,
    rank: *mut usize,
) -> i32 {
    let st = unsafe { state(ctx) };
    let shape: Vec<usize> = match st.get(t) {
        Ok(Held::F(x)) => x.shape().to_vec(),
        Ok(Held::I(x)) => x.shape().to_vec(),
        Err(_) => return abi::ERROR,
    };
    unsafe { *rank = shape.len() };
    for (i, d) in shape.iter().take(cap).enumerate() {
        unsafe { *dims.add(i) = *d };
    }
    abi::OK
}

unsafe extern "C" fn host_release(ctx: *mut c_void, t: Handle) {
    unsafe { state(ctx) }.take(t);
}

unsafe extern "C" fn host_tensor(
    ctx: *mut c_void,
    data: *const f32,
    len: usize,
    dims: *const usize,
    rank: usize,
    out: *mut Handle,
    err: *mut TextSink,
) -> i32 {
    let st = unsafe { state(ctx) };
    let data = if len == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(data, len) }
    };
    let dims = if rank == 0 {
        &[][..]
    } else {
        unsafe { std::slice::from_raw_parts(dims, rank) }
    };
    match Tensor::from_slice(data, dims) {
        Ok(t) => {
            unsafe { *out = st.insert(Held::F(t)) };
            abi::OK
        }
        Err(e) => unsafe { fail(err, e) },
    }
}

unsafe extern "C" fn host_log(_ctx: *mut c_void, level: u32, message: Str) {
    let m = unsafe { message.as_str() }.unwrap_or("(log message not UTF-8)");
    let tag = ["debug", "info", "warn", "error"]
        .get(level as usize)
        .unwrap_or(&"info");
    eprintln!("[plugin {tag}] {m}");
}

unsafe extern "C" fn host_read(
    ctx: *mut c_void,
    t: Handle,
    out: *mut f32,
    cap: usize,
    len: *mut usize,
) -> i32 {
    let st = unsafe { state(ctx) };
    let Ok(x) = st.f(t) else { return abi::ERROR };
    let Ok(values) = x.to_vec() else {
        return abi::ERROR;
    };
    unsafe { *len = values.len() };
    if !out.is_null() {
        for (i, v) in values.iter().take(cap).enumerate() {
            unsafe { *out.add(i) = *v };
        }
    }
    abi::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use vkgrad_plugin::ops::{Need, Ty, HOST_OPS};

    /// Every op of the table has an implementation here: called with well-typed attributes and
    /// no inputs, each fails on its inputs (or runs), never with "no implementation".
    #[test]
    fn the_host_runs_every_op_of_the_table() {
        let st = CallState::default();
        for op in HOST_OPS {
            let mut a = serde_json::Map::new();
            for (name, ty, need) in op.attrs {
                if *need != Need::Required {
                    continue;
                }
                let v = match ty {
                    Ty::F32 => serde_json::json!(1.0),
                    Ty::Int | Ty::UInt | Ty::U32 | Ty::U64 => serde_json::json!(1),
                    Ty::Bool => serde_json::json!(false),
                    Ty::UList => serde_json::json!([1, 1]),
                    Ty::Choice(c) => serde_json::json!(c[0]),
                };
                a.insert(name.to_string(), v);
            }
            if let Err(e) = run_op(&st, op.name, &[], &Value::Object(a)) {
                let e = e.to_string();
                assert!(!e.contains("no implementation"), "{}: {e}", op.name);
            }
        }
    }
}
