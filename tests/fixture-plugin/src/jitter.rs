//! `fixture::jitter`: x + a·(u − ½) with u uniform from the stream, drawn on the device — a
//! correct augmentation that does not declare `draws_on_device` (as a plugin built before
//! ABI 1.6), so `vkgrad train` runs it before its replayed steps. Under the fault `cpu_draws`
//! it declares `draws_on_device` but also adds a number drawn on the CPU from the seed (its
//! reference too, so only `vkgrad verify`'s replay property can catch it).

use serde::Deserialize;
use vkgrad_plugin::{json, Array, Augmentation, Host, HostTensor, OptionSpec, Output, Stream};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The sample shape (digits by default).
    pub shape: Vec<usize>,
    pub amplitude: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shape: vec![1, 8, 8],
            amplitude: 0.1,
        }
    }
}

pub struct Jitter {
    o: Options,
    cpu_draws: bool,
}

impl Jitter {
    /// The fault's number, made on the CPU from the seed.
    fn cpu_number(stream: Stream) -> f64 {
        stream.uniform_at(99, 0, 0.0, 0.01)
    }
}

impl Augmentation for Jitter {
    type Options = Options;
    const NAME: &'static str = "jitter";
    const DESCRIPTION: &'static str = "x + a (u - 1/2), u uniform (a test fixture)";

    fn options() -> Vec<OptionSpec> {
        vec![
            OptionSpec {
                name: "shape",
                ty: "list of integers",
                default: json!([1, 8, 8]),
                doc: "the sample shape",
            },
            OptionSpec {
                name: "amplitude",
                ty: "float",
                default: json!(0.1),
                doc: "a",
            },
        ]
    }

    fn new(o: Options) -> Result<Self, String> {
        Ok(Jitter {
            o,
            cpu_draws: super::fault() == "cpu_draws",
        })
    }

    fn input_shape(&self) -> Vec<usize> {
        self.o.shape.clone()
    }

    fn draws_on_device(&self) -> bool {
        self.cpu_draws
    }

    fn forward<'h>(
        &self,
        host: &'h Host,
        batch: &HostTensor<'h>,
        stream: Stream,
    ) -> Result<HostTensor<'h>, String> {
        let u = stream.uniform(host, 0, &batch.shape()?, -0.5, 0.5)?;
        let y = batch.add(&u.mul_scalar(self.o.amplitude)?)?;
        if self.cpu_draws {
            return y.add_scalar(Self::cpu_number(stream));
        }
        Ok(y)
    }

    fn reference(&self, batch: &Array, stream: Stream) -> Result<Output, String> {
        let extra = if self.cpu_draws {
            Self::cpu_number(stream)
        } else {
            0.0
        };
        let data = batch
            .data
            .iter()
            .enumerate()
            .map(|(i, x)| x + self.o.amplitude * stream.uniform_at(0, i as u32, -0.5, 0.5) + extra)
            .collect();
        Ok(Output {
            data,
            dims: batch.dims.to_vec(),
        })
    }
}
