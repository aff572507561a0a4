//! The attribute schema of every host op. It is defined once, in the SDK's host-op table
//! (`vkgrad_plugin::ops`: name, typed method, inputs, attributes, meaning), which the typed SDK
//! methods and the docs' table come from; the host checks every call against it before the op
//! runs, so a mistyped, unknown, missing or out-of-range attribute is an error naming the op
//! and the attribute — never a silent default.

use crate::error::{Error, Result};
use serde_json::Value;
pub use vkgrad_plugin::ops::{attrs, Attr, Need, OpSpec, Ty, HOST_OPS};

/// Every host op name, for error messages and the documentation check.
pub fn names() -> Vec<&'static str> {
    vkgrad_plugin::ops::names().collect()
}

/// Checks a call's attributes against the op's schema.
pub fn check(op: &str, a: &Value) -> Result<()> {
    vkgrad_plugin::ops::check(op, a).map_err(Error::Other)
}
