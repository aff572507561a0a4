//! A per-rank watchdog: MPI collectives have no timeout, so a rank whose peer hangs (stuck in a
//! driver, stopped by a debugger, its machine gone without the launcher noticing) would wait
//! forever. While a collective is armed, a thread checks once a second; past the limit it names
//! the rank and the collective and ends the whole job (MPI_Abort through the world).
//!
//! The limit: `VKGRAD_DIST_TIMEOUT` seconds (default 1800: rank 0 alone evaluates the held-out
//! kNN at each epoch's end while the others wait in the next collective, which on a CPU device
//! takes minutes for large data). A rank that *exits* is caught sooner, by the launcher itself
//! (mpirun ends the job when one process ends with an error or a signal).

use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Watchdog {
    armed: Arc<Mutex<Option<(Instant, String)>>>,
}

/// Disarms on drop.
pub struct Armed<'a>(&'a Watchdog);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        *self.0.armed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The limit from `VKGRAD_DIST_TIMEOUT` (seconds), default 1800; a value that is not a
/// positive number is an error naming it (a typo must not leave the default in force).
pub fn limit() -> Result<Duration> {
    match std::env::var("VKGRAD_DIST_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(1800)),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
            _ => Err(Error::Other(format!(
                "VKGRAD_DIST_TIMEOUT = `{v}`: give the watchdog's limit in seconds, a positive number"
            ))),
        },
    }
}

impl Watchdog {
    pub fn start(rank: usize, size: usize, limit: Duration) -> Watchdog {
        let armed: Arc<Mutex<Option<(Instant, String)>>> = Arc::new(Mutex::new(None));
        let seen = armed.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let late = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|(t, _)| t.elapsed() > limit)
                .map(|(t, what)| (t.elapsed(), what.clone()));
            if let Some((waited, what)) = late {
                eprintln!(
                    "error: rank {rank} of {size}: waited {:.0} s in {what} for the other ranks \
                     (VKGRAD_DIST_TIMEOUT = {:.0} s); a rank is stuck or gone — ending the job",
                    waited.as_secs_f64(),
                    limit.as_secs_f64()
                );
                super::world().abort(3);
            }
        });
        Watchdog { armed }
    }

    /// Watches a collective until the returned guard drops.
    pub fn arm(&self, what: &str) -> Armed<'_> {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), what.into()));
        Armed(self)
    }
}
