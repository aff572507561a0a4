//! The three component kinds a plugin implements: `Loss`, `Encoder`, `Augmentation`.

use crate::*;

/// An encoder: parameters + forward. `forward` composes host ops; `reference` computes the same
/// output naively in f64 (required; `vkgrad verify` checks output and every gradient).
pub trait Encoder: Sized + Send + Sync + 'static {
    type Options: DeserializeOwned + Default;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    fn options() -> Vec<OptionSpec>;
    /// The domains `vkgrad verify` samples the options from (ABI 1.4; `options!` writes
    /// them as `MyOptions::domains()`). Options without one are only tested at their default.
    fn option_domains() -> Vec<OptionDomain> {
        Vec::new()
    }
    fn new(options: Self::Options) -> Result<Self, String>;
    /// The shape of one input sample (the batch dimension comes first in `forward`).
    fn input_shape(&self) -> Vec<usize>;
    fn parameters(&self) -> Vec<ParamSpec>;
    /// `x` is `[B, ...input_shape]`; `params` come in the order of `parameters()`, buffers
    /// included. In training mode (`pass.training`) every buffer's new value must be given to
    /// `pass.update`, in order.
    fn forward<'h>(
        &self,
        host: &'h Host,
        x: &HostTensor<'h>,
        params: &[HostTensor<'h>],
        pass: &mut Pass<'h>,
    ) -> Result<HostTensor<'h>, String>;
    /// The output in f64 for the given mode (buffer updates are not part of the reference).
    fn reference(&self, x: &Array, params: &[Array], training: bool) -> Result<Output, String>;
}

/// An augmentation: a batch and a random stream in, a batch out, on the device; the CPU
/// reference draws the same numbers from the same stream.
pub trait Augmentation: Sized + Send + Sync + 'static {
    type Options: DeserializeOwned + Default;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    fn options() -> Vec<OptionSpec>;
    /// The domains `vkgrad verify` samples the options from (ABI 1.4; `options!` writes
    /// them as `MyOptions::domains()`). Options without one are only tested at their default.
    fn option_domains() -> Vec<OptionDomain> {
        Vec::new()
    }
    fn new(options: Self::Options) -> Result<Self, String>;
    /// The shape of one sample it takes (for `vkgrad verify`'s generated batches).
    fn input_shape(&self) -> Vec<usize>;
    /// Whether every random number `forward` uses is drawn on the device from the stream it is
    /// given (`stream.uniform` / `stream.normal`, i.e. `host.random` with `stream.seed`) and
    /// nothing in it depends on the seed on the CPU (ABI 1.6). Then `vkgrad train` records the
    /// augmentation into its replayed training step, the seed being a device value written
    /// before each replay; `vkgrad verify` checks the claim (a step recorded with one seed and
    /// replayed with another must equal a plain run with the other). Default `false`: the
    /// augmentation runs op by op before each replayed step, whatever it does on the CPU.
    fn draws_on_device(&self) -> bool {
        false
    }
    fn forward<'h>(
        &self,
        host: &'h Host,
        batch: &HostTensor<'h>,
        stream: Stream,
    ) -> Result<HostTensor<'h>, String>;
    fn reference(&self, batch: &Array, stream: Stream) -> Result<Output, String>;
}

/// A loss family component. `forward` composes host ops (so autograd and the GPU come from the
/// engine); `reference` computes the same value naively in f64 without them — it is required,
/// and `vkgrad verify` checks the two against each other.
pub trait Loss: Sized + Send + Sync + 'static {
    /// Options, read from a JSON object; use `#[serde(default, deny_unknown_fields)]` so that
    /// missing keys take defaults and unknown ones are errors.
    type Options: DeserializeOwned + Default;
    /// The component name within the plugin (the host sees `plugin::NAME`).
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// Every option with its type, default and documentation.
    fn options() -> Vec<OptionSpec>;
    /// The domains `vkgrad verify` samples the options from (ABI 1.4; `options!` writes
    /// them as `MyOptions::domains()`). Options without one are only tested at their default.
    fn option_domains() -> Vec<OptionDomain> {
        Vec::new()
    }
    /// Validates options (e.g. temperature > 0) and builds the component.
    fn new(options: Self::Options) -> Result<Self, String>;
    /// Whether labels are required (checked by the host before calling).
    fn needs_labels(&self) -> bool {
        false
    }
    /// State kept across calls (e.g. a queue), as one array; `None` when there is none.
    fn save_state(&self) -> Option<Output> {
        None
    }
    /// Restores what `save_state` returned.
    fn load_state(&self, _state: &Array) -> Result<(), String> {
        Err(format!("{} has no state", Self::NAME))
    }
    /// The feature dimension D the loss requires, if it fixes one (e.g. a queue of keys).
    fn feature_dim(&self) -> Option<usize> {
        None
    }
    /// The numbers of views V the loss takes, (min, max) inclusive.
    fn views(&self) -> (usize, usize) {
        (1, usize::MAX)
    }
    /// The smallest batch N the loss is defined for (ABI 1.3). Smaller batches are refused
    /// with an error before `forward` or `reference` runs, and `vkgrad verify` generates
    /// batches from this size on (N = 1 included when it is 1). The default 2 is the contract
    /// every loss had before it could be declared.
    fn min_batch(&self) -> usize {
        2
    }
    /// Names of extra inputs, each shaped like the features (e.g. BYOL's `targets`); the host
    /// passes them after the labels, in this order.
    fn extra_inputs(&self) -> Vec<&'static str> {
        Vec::new()
    }
    fn forward<'h>(
        &self,
        host: &'h Host,
        inputs: &LossInputs<'h>,
    ) -> Result<HostTensor<'h>, String>;
    fn reference(&self, inputs: &RefInputs) -> Result<f64, String>;
}
