//! Seeded random tensors generated on the device (`shaders/random.comp`, Philox4x32-10).

use super::alloc_f32;
use crate::device::push::RandomPush;
use crate::device::{grid, Bind, Kernel};
use crate::error::{Error, Result};
use crate::tensor::{IntTensor, Tensor};

/// A seeded stream: every draw uses the next stream offset, so successive draws differ and a
/// run is reproducible from its seed. Element i of a draw depends only on (seed, offset, i).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub offset: u32,
}

const UNIFORM: u32 = 0;
const NORMAL: u32 = 1;
const BITS: u32 = 2;

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { seed, offset: 0 }
    }

    fn draw(
        &mut self,
        shape: &[usize],
        dist: u32,
        a: f32,
        b: f32,
    ) -> Result<std::sync::Arc<crate::device::Storage>> {
        let n = crate::tensor::checked_numel("random", shape)?;
        if n as u64 > u32::MAX as u64 {
            return Err(Error::op(
                "random",
                format!("shape {shape:?} has more than 2^32 elements"),
            ));
        }
        let st = alloc_f32(shape)?;
        if n > 0 {
            let push = RandomPush {
                n: n as u32,
                seed_lo: self.seed as u32,
                seed_hi: (self.seed >> 32) as u32,
                offset: self.offset,
                dist,
                a,
                b,
            };
            Tensor::ctx()?.dispatch(
                Kernel::Random,
                &[],
                &[Bind::write(&st)],
                &push,
                grid(n as u64, 256),
            )?;
        }
        self.offset = self.offset.wrapping_add(1);
        Ok(st)
    }

    /// Uniform on [lo, hi).
    pub fn uniform(&mut self, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(Error::op(
                "uniform",
                format!("needs finite lo <= hi, got [{lo}, {hi})"),
            ));
        }
        Ok(Tensor::leaf(
            shape.into(),
            self.draw(shape, UNIFORM, lo, hi)?,
        ))
    }

    /// Normal with the given mean and standard deviation (Box-Muller).
    pub fn normal(&mut self, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
        if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
            return Err(Error::op(
                "normal",
                format!("needs finite mean and std >= 0, got mean {mean}, std {std}"),
            ));
        }
        Ok(Tensor::leaf(
            shape.into(),
            self.draw(shape, NORMAL, mean, std)?,
        ))
    }

    /// The raw 32-bit Philox outputs (first word of each counter block).
    pub fn bits(&mut self, shape: &[usize]) -> Result<IntTensor> {
        Ok(IntTensor {
            shape: shape.into(),
            storage: self.draw(shape, BITS, 0.0, 0.0)?,
            host: None,
        })
    }
}
