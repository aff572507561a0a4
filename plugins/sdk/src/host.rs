//! The host as a plugin sees it during a call: its op table and the tensors it owns.

use crate::boundary::error_sink;
use crate::*;

/// A tensor owned by the host, seen through its handle. Dropping it gives the handle back.
pub struct HostTensor<'h> {
    pub(crate) handle: Handle,
    pub(crate) host: &'h Host,
    pub(crate) owned: bool,
}

impl<'h> HostTensor<'h> {
    /// The host this tensor lives on (to make constants beside it).
    pub fn host(&self) -> &'h Host {
        self.host
    }
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The tensor's shape.
    pub fn shape(&self) -> Result<Vec<usize>, String> {
        let mut dims = [0usize; 16];
        let mut rank = 0usize;
        let api = self.host.api();
        let st = unsafe {
            (api.shape)(
                api.ctx,
                self.handle,
                dims.as_mut_ptr(),
                dims.len(),
                &mut rank,
            )
        };
        if st != abi::OK || rank > dims.len() {
            return Err(format!("host: no shape for tensor handle {}", self.handle));
        }
        Ok(dims[..rank].to_vec())
    }
}

impl HostTensor<'_> {
    /// The values (a device read-back: use for state, not in the differentiable path).
    pub fn read(&self) -> Result<Vec<f32>, String> {
        let api = self.host.api();
        let mut len = 0usize;
        let st = unsafe { (api.read)(api.ctx, self.handle, std::ptr::null_mut(), 0, &mut len) };
        if st != abi::OK {
            return Err(format!("host: cannot read tensor handle {}", self.handle));
        }
        let mut out = vec![0f32; len];
        let st = unsafe { (api.read)(api.ctx, self.handle, out.as_mut_ptr(), out.len(), &mut len) };
        if st != abi::OK {
            return Err(format!("host: cannot read tensor handle {}", self.handle));
        }
        Ok(out)
    }
}

impl Drop for HostTensor<'_> {
    fn drop(&mut self) {
        if self.owned && self.handle != 0 {
            let api = self.host.api();
            unsafe { (api.release)(api.ctx, self.handle) };
        }
    }
}

/// The host's op table, as the plugin sees it during a call.
pub struct Host {
    pub(crate) api: *const HostApi,
}

impl Host {
    pub(crate) fn api(&self) -> &HostApi {
        // The host guarantees the table outlives every call it passes it to.
        unsafe { &*self.api }
    }

    /// Runs a host op by name (`matmul`, `l2_normalize`, `log_softmax`, ...) with attributes.
    /// The result records gradients and runs on the device like any engine op.
    pub fn op(
        &self,
        name: &str,
        inputs: &[&HostTensor],
        attrs: Value,
    ) -> Result<HostTensor<'_>, String> {
        let handles: Vec<Handle> = inputs.iter().map(|t| t.handle).collect();
        let attrs = attrs.to_string();
        let mut out: Handle = 0;
        let mut msg = String::new();
        let mut sink = error_sink(&mut msg);
        let api = self.api();
        let st = unsafe {
            (api.op)(
                api.ctx,
                Str::new(name),
                handles.as_ptr(),
                handles.len(),
                Str::new(&attrs),
                &mut out,
                &mut sink,
            )
        };
        if st != abi::OK {
            return Err(if msg.is_empty() {
                format!("host op {name} failed")
            } else {
                msg
            });
        }
        Ok(HostTensor {
            handle: out,
            host: self,
            owned: true,
        })
    }

    /// A constant tensor from host data.
    pub fn tensor(&self, data: &[f32], dims: &[usize]) -> Result<HostTensor<'_>, String> {
        let mut out: Handle = 0;
        let mut msg = String::new();
        let mut sink = error_sink(&mut msg);
        let api = self.api();
        let st = unsafe {
            (api.tensor)(
                api.ctx,
                data.as_ptr(),
                data.len(),
                dims.as_ptr(),
                dims.len(),
                &mut out,
                &mut sink,
            )
        };
        if st != abi::OK {
            return Err(msg);
        }
        Ok(HostTensor {
            handle: out,
            host: self,
            owned: true,
        })
    }

    /// Logs a line through the host (level 0 = debug .. 3 = error).
    pub fn log(&self, level: u32, message: &str) {
        let api = self.api();
        unsafe { (api.log)(api.ctx, level, Str::new(message)) };
    }

    /// A handle the host passed in (not released by the plugin).
    pub(crate) fn borrow(&self, handle: Handle) -> HostTensor<'_> {
        HostTensor {
            handle,
            host: self,
            owned: false,
        }
    }
}
