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

thread_local! {
    /// How many `guard`s this thread is inside, and where the last panic inside one happened.
    static GUARDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The plugin's panic hook (this library has its own `std`, so its own hook), installed once:
/// inside a `guard` it records where the panic happened and prints nothing — the message and
/// the place reach the host in the error, which says them once (`vkgrad verify` may run a
/// panicking case hundreds of times while it shrinks); with `RUST_BACKTRACE` set, or outside
/// a guard, the previous hook prints as usual.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) > 0 {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
                if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
                    return;
                }
            }
            previous(info);
        }));
    });
}

/// Runs `f` at the ABI boundary: errors become `ERROR` with a message, panics `PANICKED`
/// with the panic's message and place (`panicked: MESSAGE (at FILE:LINE:COLUMN)`).
///
/// # Safety
/// `err` is null or a valid sink for the duration of the call.
pub unsafe fn guard(err: *mut TextSink, f: impl FnOnce() -> Result<(), String>) -> i32 {
    install_panic_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    match result {
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
            let at = PANIC_AT
                .with(|a| a.borrow_mut().take())
                .map(|a| format!(" (at {a})"))
                // No place recorded: the panic hook of another library ran (a plugin that
                // set its own hook); the message alone is still reported.
                .unwrap_or_default();
            unsafe {
                report(
                    err,
                    &format!(
                        "panicked: {}{at}",
                        what.unwrap_or_else(|| "(no message)".into())
                    ),
                )
            };
            abi::PANICKED
        }
    }
}
