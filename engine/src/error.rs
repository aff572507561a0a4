//! One error type for the whole engine. Every message names what went wrong: the op and the
//! shapes, the device, the file or the option.

use std::fmt;

/// Every fallible engine call returns this.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No Vulkan loader library could be opened.
    #[error("no Vulkan loader found ({0}); install one, e.g. on Debian: apt-get install libvulkan1 mesa-vulkan-drivers")]
    NoLoader(String),
    /// The loader found no driver to create an instance with.
    #[error("no Vulkan driver found (creating an instance failed: {0}); install one, e.g. on Debian: apt-get install mesa-vulkan-drivers (lavapipe runs Vulkan on the CPU)")]
    NoDriver(String),
    /// The loader works but lists no device.
    #[error("no Vulkan device found; install a driver, e.g. on Debian: apt-get install mesa-vulkan-drivers (lavapipe runs Vulkan on the CPU)")]
    NoDevice,
    /// `--device` / `VKGRAD_DEVICE` named a device that does not exist.
    #[error("device '{0}' not found: {1}; `vkgrad devices` lists the devices")]
    DeviceNotFound(String, String),
    /// A Vulkan call failed.
    #[error("Vulkan error in {context}: {message}")]
    Vulkan { context: String, message: String },
    /// Device memory ran out even after returning pooled buffers.
    #[error("out of device memory allocating {bytes} bytes")]
    OutOfMemory { bytes: u64 },
    /// A step recorded for replay did something a replay cannot repeat (read a value back,
    /// drew random numbers); run it without replay.
    #[error("this step cannot be replayed: {0}")]
    NotReplayable(String),
    /// An op was called with arguments it cannot take (shapes, axes, values).
    #[error("{op}: {message}")]
    Op { op: &'static str, message: String },
    /// A plugin file was refused or a plugin call failed.
    #[error("plugin {path}: {message}")]
    Plugin { path: String, message: String },
    /// The user stopped the command (Ctrl-C); the message says where it stands.
    #[error("{0}")]
    Interrupted(String),
    /// Anything else, with its own complete message.
    #[error("{0}")]
    Other(String),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An op error: `Error::op("matmul", format!("{a:?} x {b:?}: inner dimensions differ"))`.
    pub fn op(op: &'static str, message: impl Into<String>) -> Self {
        Error::Op {
            op,
            message: message.into(),
        }
    }

    /// Wraps any Vulkan-side error with the place it happened.
    pub fn vulkan(context: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::Vulkan {
            context: context.into(),
            message: err.to_string(),
        }
    }
}
