//! What components receive and return: device inputs, f64 arrays for the CPU reference.

use crate::*;

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
