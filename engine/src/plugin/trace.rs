//! Recording the host ops a plugin runs: while `record` runs its closure on this thread,
//! every op a plugin calls through the host table is kept with its attributes, its input
//! tensors and its output. The ONNX export (`crate::export`) reads an encoder's graph from
//! such a trace — the same ops the device runs, not a second description of the network.

use crate::error::Result;
use crate::tensor::Tensor;
use serde_json::Value;
use std::cell::RefCell;

/// One host op as a plugin called it.
#[derive(Clone)]
pub struct TracedOp {
    pub op: String,
    pub attrs: Value,
    /// The f32 inputs in order; `None` for an integer tensor (not exportable).
    pub inputs: Vec<Option<Tensor>>,
    pub output: Tensor,
}

thread_local! {
    static TRACE: RefCell<Option<Vec<TracedOp>>> = const { RefCell::new(None) };
}

/// Runs `f`, returning its value and every host op plugins ran on this thread meanwhile.
pub fn record<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Vec<TracedOp>)> {
    let outer = TRACE.with(|t| t.borrow_mut().replace(Vec::new()));
    let value = f();
    let ops = TRACE.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    Ok((value?, ops.unwrap_or_default()))
}

/// Whether ops are being recorded on this thread (so the host table only collects inputs
/// when they are wanted).
pub(crate) fn active() -> bool {
    TRACE.with(|t| t.borrow().is_some())
}

/// Called by the host table after each op that returned an f32 tensor.
pub(crate) fn note(op: &str, attrs: &Value, inputs: Vec<Option<Tensor>>, output: &Tensor) {
    TRACE.with(|t| {
        if let Some(ops) = t.borrow_mut().as_mut() {
            ops.push(TracedOp {
                op: op.to_string(),
                attrs: attrs.clone(),
                inputs,
                output: output.clone(),
            });
        }
    });
}
