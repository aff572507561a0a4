//! The host ends of the ABI's sinks: text (messages, descriptions) and f64 arrays.

use super::*;

/// The host side of a `RefSink`: copies the callee's array into an `Option<RefOutput>`.
pub(super) unsafe extern "C" fn put_output(
    ctx: *mut c_void,
    data: *const f64,
    len: usize,
    dims: *const usize,
    rank: usize,
) {
    let v = unsafe { &mut *(ctx as *mut Option<RefOutput>) };
    let data = if len == 0 || data.is_null() {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(data, len) }.to_vec()
    };
    let dims = if rank == 0 || dims.is_null() {
        vec![]
    } else {
        unsafe { std::slice::from_raw_parts(dims, rank) }.to_vec()
    };
    *v = Some(RefOutput { data, dims });
}

/// The host side of an `TextSink`: collects the callee's message.
pub(super) fn sink(msg: &mut String) -> TextSink {
    unsafe extern "C" fn set(ctx: *mut c_void, m: Str) {
        let s = unsafe { &mut *(ctx as *mut String) };
        *s = unsafe { m.as_str() }
            .unwrap_or("(message not UTF-8)")
            .to_string();
    }
    TextSink {
        ctx: msg as *mut String as *mut c_void,
        set,
    }
}
