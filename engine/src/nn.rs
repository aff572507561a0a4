//! Small building blocks over the ops: a linear layer with PyTorch's default initialisation.

use crate::error::Result;
use crate::ops::random::Rng;
use crate::tensor::Tensor;

/// y = x W + b with W: [in, out], b: [out].
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    /// PyTorch's `nn.Linear` default: weight and bias uniform on ±1/sqrt(fan_in) (Kaiming-uniform
    /// with a = sqrt(5)), drawn from the seeded stream.
    pub fn new(fan_in: usize, fan_out: usize, rng: &mut Rng) -> Result<Linear> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        Ok(Linear {
            weight: rng
                .uniform(&[fan_in, fan_out], -bound, bound)?
                .requires_grad(),
            bias: rng.uniform(&[fan_out], -bound, bound)?.requires_grad(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight)?.add(&self.bias)
    }

    pub fn parameters(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }

    pub fn parameters_mut(&mut self) -> [&mut Tensor; 2] {
        [&mut self.weight, &mut self.bias]
    }
}
