//! The ABI boundary: errors and panics become status codes with a message.

use crate::*;

pub(crate) fn error_sink(msg: &mut String) -> TextSink {
    unsafe extern "C" fn set(ctx: *mut c_void, m: Str) {
        let s = unsafe { &mut *(ctx as *mut String) };
        *s = unsafe { m.as_str() }
            .unwrap_or("(error message not UTF-8)")
            .to_string();
    }
    TextSink {
        ctx: msg as *mut String as *mut c_void,
        set,
    }
}

/// Reports `message` through the host's sink.
///
/// # Safety
/// `err` is null or a valid sink for the duration of the call.
pub unsafe fn report(err: *mut TextSink, message: &str) {
    if let Some(sink) = unsafe { err.as_mut() } {
        unsafe { (sink.set)(sink.ctx, Str::new(message)) };
    }
}

/// Runs `f` at the ABI boundary: errors become `ERROR` with a message, panics `PANICKED`.
///
/// # Safety
/// `err` is null or a valid sink for the duration of the call.
pub unsafe fn guard(err: *mut TextSink, f: impl FnOnce() -> Result<(), String>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => abi::OK,
        Ok(Err(m)) => {
            unsafe { report(err, &m) };
            abi::ERROR
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned());
            unsafe {
                report(
                    err,
                    &format!(
                        "panicked: {}",
                        what.unwrap_or_else(|| "(no message)".into())
                    ),
                )
            };
            abi::PANICKED
        }
    }
}
