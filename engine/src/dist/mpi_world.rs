//! The MPI world (OpenMPI through rsmpi): `MPI_COMM_WORLD`, every collective watched by a
//! [`Watchdog`] (MPI collectives have no timeout; a rank stuck in its driver would otherwise
//! hold the others forever).

use super::{mismatch, Collectives, Watchdog};
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct MpiWorld {
    /// Calls are serialised: the trainer is single-threaded, but the library may be used from
    /// several threads, and MPI is initialised with `Serialized` support.
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    local_rank: usize,
    watchdog: Watchdog,
    sent: AtomicU64,
}

/// MPI_Finalize runs when the universe drops ([`super::finalize`]); until then it lives here.
static UNIVERSE: Mutex<Option<mpi::environment::Universe>> = Mutex::new(None);

// SAFETY: an MPI communicator handle may be used from any thread when calls are serialised
// (MPI_THREAD_SERIALIZED, checked at init); the mutex serialises them.
unsafe impl Send for MpiWorld {}
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    pub fn init() -> Result<MpiWorld> {
        let limit = super::watchdog::limit()?;
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| Error::Other("MPI: already initialised".into()))?;
        if level < mpi::Threading::Serialized {
            return Err(Error::Other(format!(
                "MPI: this MPI library gives thread support {level:?}; vkgrad needs Serialized"
            )));
        }
        let comm = universe.world();
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        // The rank among the processes that share this machine's memory: picks the device.
        let local_rank = comm.split_shared(comm.rank()).rank() as usize;
        *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(universe);
        Ok(MpiWorld {
            comm: Mutex::new(comm),
            rank,
            size,
            local_rank,
            watchdog: Watchdog::start(rank, size, limit),
            sent: AtomicU64::new(0),
        })
    }

    /// Runs one collective that hands `bytes` of this rank's data to MPI.
    fn with<T>(&self, what: &str, bytes: usize, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let _armed = self.watchdog.arm(what);
        f(&comm)
    }

    /// Every rank's count, checked to fit MPI's `int` counts.
    fn counts(&self, what: &str, n: usize) -> Result<Vec<usize>> {
        let n = Count::try_from(n)
            .map_err(|_| mismatch(what, format!("{n} elements is more than MPI counts")))?;
        let mut all = vec![0 as Count; self.size];
        self.with(what, 4, |c| c.all_gather_into(&n, &mut all[..]));
        Ok(all.into_iter().map(|c| c as usize).collect())
    }

    fn gather_var<T: Equivalence + Copy + Default>(
        &self,
        what: &str,
        local: &[T],
    ) -> Result<(Vec<T>, Vec<usize>)> {
        let counts = self.counts(what, local.len())?;
        let displs = displacements(&counts);
        let total: usize = counts.iter().sum();
        let mut out = vec![T::default(); total];
        let c32: Vec<Count> = counts.iter().map(|&c| c as Count).collect();
        let d32 = displs
            .iter()
            .map(|&d| Count::try_from(d))
            .collect::<std::result::Result<Vec<Count>, _>>()
            .map_err(|_| mismatch(what, format!("{total} elements is more than MPI counts")))?;
        self.with(what, std::mem::size_of_val(local), |c| {
            let mut part = PartitionMut::new(&mut out[..], c32, d32);
            c.all_gather_varcount_into(local, &mut part)
        });
        Ok((out, counts))
    }
}

impl Collectives for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        // Every rank must reduce the same length: a mismatch would read past a buffer.
        let counts = self.counts("all_reduce", buf.len())?;
        if counts.iter().any(|&c| c != buf.len()) {
            return Err(mismatch(
                "all_reduce",
                format!("ranks reduce different lengths {counts:?}"),
            ));
        }
        let send = buf.to_vec();
        self.with("all_reduce", std::mem::size_of_val(buf), |c| {
            c.all_reduce_into(&send[..], buf, SystemOperation::sum())
        });
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<(Vec<f32>, Vec<usize>)> {
        self.gather_var("all_gather", local)
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<(Vec<u32>, Vec<usize>)> {
        self.gather_var("all_gather", local)
    }
    fn broadcast(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        let mut n = buf.len() as u64;
        self.with("broadcast", 8, |c| {
            c.process_at_rank(root as i32).broadcast_into(&mut n)
        });
        if self.rank != root {
            *buf = vec![0; n as usize];
        }
        let bytes = if self.rank == root { buf.len() } else { 0 };
        self.with("broadcast", bytes, |c| {
            c.process_at_rank(root as i32).broadcast_into(&mut buf[..])
        });
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.with("barrier", 0, |c| c.barrier());
        Ok(())
    }
    fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    fn abort(&self, code: i32) -> ! {
        // Not through the mutex: another thread may hold it, stuck in a collective.
        mpi::topology::SimpleCommunicator::world().abort(code)
    }
}

/// MPI_Finalize (the universe dropped).
pub fn finalize() {
    let u = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(u);
}

/// Prefix and displacements of per-rank counts.
fn displacements(counts: &[usize]) -> Vec<usize> {
    let mut d = Vec::with_capacity(counts.len());
    let mut acc = 0;
    for &c in counts {
        d.push(acc);
        acc += c;
    }
    d
}

#[cfg(test)]
mod tests {
    #[test]
    fn displacements_are_prefix_sums() {
        assert_eq!(super::displacements(&[2, 3, 1]), [0, 2, 5]);
    }
}
