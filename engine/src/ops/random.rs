//! Seeded random tensors generated on the device (`shaders/random.comp`, Philox4x32-10).
//!
//! The kernel reads its seed from a two-word device buffer. Outside a recording that buffer
//! is uploaded per draw. Inside a step recorded for replay a seed is only allowed if it is
//! one of the step's *device seeds* ([`with_device_seeds`]): the draw then reads the
//! step's seed input, which the host writes anew before every replay, so each replay draws
//! the numbers of its own seed. Any other draw inside a recording is refused (its seed
//! would be baked in and every replay would draw the same numbers).

use super::alloc_f32;
use crate::device::push::RandomPush;
use crate::device::{context, grid, Bind, Kernel, Storage};
use crate::error::{Error, Result};
use crate::tensor::{IntTensor, Tensor};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// The seeds standing for device values on this thread: (seed, its [lo, hi] buffer).
    static DEVICE_SEEDS: RefCell<Vec<(u64, Arc<Storage>)>> = const { RefCell::new(Vec::new()) };
}

/// The seed `seed` as a device value: `[seed as u32, (seed >> 32) as u32]`, the form
/// [`with_device_seeds`] takes (and a replay's integer input).
pub fn seed_tensor(seed: u64) -> Result<IntTensor> {
    IntTensor::from_vec(vec![seed as u32, (seed >> 32) as u32], &[2])
}

/// Runs `f` with every draw whose seed is `seeds[i].0` taking its seed from the device value
/// `seeds[i].1` (a [`seed_tensor`]) instead of the host: recorded for replay, such draws
/// follow the value written there before each replay. The seeds must differ (a draw could
/// not tell which value it stands for). Restored when `f` returns or unwinds.
pub fn with_device_seeds<T>(
    seeds: &[(u64, &IntTensor)],
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    for (i, (s, t)) in seeds.iter().enumerate() {
        if t.shape() != [2] {
            return Err(Error::op(
                "random",
                format!("a device seed is shaped [2] (lo, hi), got {:?}", t.shape()),
            ));
        }
        if seeds[..i].iter().any(|(o, _)| o == s) {
            return Err(Error::op(
                "random",
                format!("the device seeds are not distinct ({s} twice)"),
            ));
        }
    }
    struct Restore(Vec<(u64, Arc<Storage>)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEVICE_SEEDS.with(|d| *d.borrow_mut() = std::mem::take(&mut self.0));
        }
    }
    let new = seeds.iter().map(|(s, t)| (*s, t.storage.clone())).collect();
    let _restore = Restore(DEVICE_SEEDS.with(|d| d.replace(new)));
    f()
}

/// The buffer a draw with `seed` reads its key from.
fn key_buffer(seed: u64) -> Result<Arc<Storage>> {
    let device = DEVICE_SEEDS.with(|d| {
        d.borrow()
            .iter()
            .find(|(s, _)| *s == seed)
            .map(|(_, st)| st.clone())
    });
    if let Some(st) = device {
        return Ok(st);
    }
    let ctx = context()?;
    ctx.refuse_while_capturing(
        "a random op inside a step recorded for replay would draw the same numbers at every \
         replay: draw them before the step and pass them in as inputs, or give the step its \
         seed as a device value",
    )?;
    Ok(seed_tensor(seed)?.storage)
}

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
            let key = key_buffer(self.seed)?;
            let push = RandomPush {
                n: n as u32,
                offset: self.offset,
                dist,
                a,
                b,
            };
            Tensor::ctx()?.dispatch(
                Kernel::Random,
                &[],
                &[Bind::write(&st), Bind::read(&key)],
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
