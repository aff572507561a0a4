//! Names the plugin when plugin code crashes the process. No process can catch a segmentation
//! fault in itself and go on, but it can say where it was: each plugin file's path is entered
//! in a table before any of its code runs, every call into plugin code marks which file it
//! enters, and a handler for the fatal signals writes that path to stderr before the process
//! ends with the signal as before.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Once;

const SLOTS: usize = 256;
#[allow(clippy::declare_interior_mutable_const)]
const NO_PATH: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
#[allow(clippy::declare_interior_mutable_const)]
const NO_LEN: AtomicUsize = AtomicUsize::new(0);
static PATHS: [AtomicPtr<u8>; SLOTS] = [NO_PATH; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [NO_LEN; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// The slot + 1 of the plugin whose code runs now; 0 for host code.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Enters a plugin file's path (before any of its code runs); returns its slot.
pub(crate) fn register(path: &std::path::Path) -> usize {
    install();
    let slot = NEXT.fetch_add(1, Ordering::SeqCst) % SLOTS;
    let bytes: &'static mut [u8] =
        Box::leak(path.display().to_string().into_bytes().into_boxed_slice());
    LENS[slot].store(bytes.len(), Ordering::SeqCst);
    PATHS[slot].store(bytes.as_mut_ptr(), Ordering::SeqCst);
    slot
}

/// Marks plugin code of `slot` as running until the guard drops.
pub(crate) struct Entered(usize);

pub(crate) fn enter(slot: usize) -> Entered {
    Entered(ACTIVE.swap(slot + 1, Ordering::SeqCst))
}

/// Marks host code as running (a host op called from plugin code) until the guard drops.
pub(crate) fn leave() -> Entered {
    Entered(ACTIVE.swap(0, Ordering::SeqCst))
}

impl Drop for Entered {
    fn drop(&mut self) {
        ACTIVE.store(self.0, Ordering::SeqCst);
    }
}

fn write_stderr(b: &[u8]) {
    // Safety: write(2) is async-signal-safe; the buffer is valid for its length.
    unsafe { libc::write(2, b.as_ptr() as *const libc::c_void, b.len()) };
}

extern "C" fn on_fatal(sig: libc::c_int) {
    let active = ACTIVE.load(Ordering::SeqCst);
    if active > 0 {
        let (p, n) = (
            PATHS[active - 1].load(Ordering::SeqCst),
            LENS[active - 1].load(Ordering::SeqCst),
        );
        write_stderr(b"\nvkgrad: the process crashed (signal ");
        let mut digits = [0u8; 4];
        let mut v = sig as u32;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        write_stderr(&digits[i..]);
        write_stderr(b") inside plugin code from ");
        if !p.is_null() {
            // Safety: the slot holds a leaked, never freed path of n bytes.
            write_stderr(unsafe { std::slice::from_raw_parts(p, n) });
        }
        write_stderr(b"; remove or rebuild that file\n");
    }
    // Give the signal back to the handler that was there before (Rust's stack-overflow
    // report, or the default action): returning re-runs the faulting instruction, which
    // faults again into it, so the process ends as it would have without this handler.
    if let Some((_, old)) = OLD.get().and_then(|o| o.iter().find(|(s, _)| *s == sig)) {
        // Safety: `old` is the action sigaction(2) returned for this signal.
        unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
    }
}

/// The actions installed before ours.
static OLD: std::sync::OnceLock<Vec<(libc::c_int, libc::sigaction)>> = std::sync::OnceLock::new();

/// Installs the handler once (on the alternate stack Rust sets up for its main thread, where
/// there is one).
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut old = Vec::new();
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
            // Safety: plain sigaction(2) calls with zero-initialised C structs.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_fatal as *const () as usize;
                sa.sa_flags = libc::SA_ONSTACK;
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut prev) == 0 {
                    old.push((sig, prev));
                }
            }
        }
        let _ = OLD.set(old);
    });
}
