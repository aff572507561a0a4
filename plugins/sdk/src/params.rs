//! Encoder parameters (how they start, buffers), the training/evaluation pass, and the
//! seeded random stream shared by the device path and the CPU reference.

use crate::*;

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
    pub(crate) updates: Vec<HostTensor<'h>>,
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
        host.random(self.seed, offset, shape, crate::Dist::Uniform(lo, hi))
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
        host.random(self.seed, offset, shape, crate::Dist::Normal(mean, std))
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
