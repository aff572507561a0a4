//! Layer 4: the CPU reference. Every primitive op written again, naively, in f64, with its
//! vector-Jacobian product derived by hand — sharing no kernel, index helper or gradient rule
//! with the GPU path, so that agreement between the two means something. Used by the property
//! tests and (later) by `vkgrad verify`.

pub mod conv;
mod ops;
pub mod philox;
pub mod similarity;
pub mod tol;

pub use ops::*;

/// A dense row-major f64 array.
#[derive(Debug, Clone, PartialEq)]
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl RefTensor {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "RefTensor::new: {shape:?} vs {} values",
            data.len()
        );
        RefTensor {
            shape: shape.to_vec(),
            data,
        }
    }
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Self {
        Self::new(shape, data.iter().map(|&v| v as f64).collect())
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Self::new(shape, vec![0.0; shape.iter().product()])
    }
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
    /// Multi-index of flat position `i`.
    pub fn index_of(&self, i: usize) -> Vec<usize> {
        unravel(i, &self.shape)
    }
    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[ravel(idx, &self.shape)]
    }
}

/// Flat position -> multi-index (row-major), written out digit by digit.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Multi-index -> flat position (row-major).
pub fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    let mut pos = 0;
    for d in 0..shape.len() {
        pos = pos * shape[d] + idx[d];
    }
    pos
}
