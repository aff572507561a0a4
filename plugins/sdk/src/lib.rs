//! The vkgrad plugin SDK: everything a plugin depends on (no vulkano, no engine).
//!
//! Plugin authors implement [`Loss`], [`Encoder`] or [`Augmentation`], each with a required CPU
//! reference, and export them with [`export_plugin!`]. The macro writes the C ABI of [`abi`]: the descriptor,
//! the entry symbol and trampolines that catch panics and turn errors into status codes.
//!
//! The files: `abi` (the C types), `options` (what a component declares), `host` (the host's
//! op call and tensors, seen from a call), `ops` (the host-op table, its attribute check and the
//! typed op methods), `inputs` (what components receive and return),
//! `params` (encoder parameters, passes, the seeded stream), `traits` (Loss, Encoder,
//! Augmentation), `boundary` (errors and panics at the ABI), `trampolines` (the C functions
//! behind the vtables), `export` (the `export_plugin!` macro).

pub mod abi;
mod boundary;
mod export;
mod host;
mod inputs;
pub mod ops;
mod options;
mod params;
mod traits;
#[allow(clippy::missing_safety_doc)]
pub mod trampolines;

use abi::{Handle, HostApi, RefArray, RefSink, Str, TextSink};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use boundary::{guard, report};
pub use host::{Host, HostTensor};
pub use inputs::{Array, LossInputs, Output, RefInputs};
pub use ops::{Dist, Padding, Positives, SimilarityLse};
pub use options::{Domain, OptionDomain, OptionSpec};
pub use params::{philox, Init, ParamSpec, Pass, Stream};
#[doc(hidden)]
pub use serde;
#[doc(hidden)]
pub use serde_json;
pub use serde_json::{json, Value};
pub use traits::{Augmentation, Encoder, Loss};
