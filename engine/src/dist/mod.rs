//! Layer 1 beside `device`: collectives between the processes of a data-parallel job, on host
//! memory. One process per device; `mpirun -np K vkgrad train …` starts K of them and MPI
//! (OpenMPI through rsmpi, cargo feature `mpi`) carries the collectives. Vulkan has no
//! GPUDirect, and NCCL / RCCL are bound to one vendor, so every collective is staged through
//! host memory: it works for any mix of Vulkan devices. A process started without a launcher
//! is world size 1 ([`Single`]): every collective is the identity and nothing changes for it.
//!
//! The process-wide world is set once ([`init`]), read by the collective autograd ops
//! (`ops/collective.rs`) and by the trainer. Every rank must call the same collectives in the
//! same order; the trainer keeps the ranks in lock-step (the same graph on every rank).

#[cfg(feature = "mpi")]
mod mpi_world;
#[cfg(feature = "mpi")]
mod watchdog;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
#[cfg(feature = "mpi")]
use watchdog::Watchdog;

/// The collectives vkgrad needs, on f32 / u32 host buffers. Every rank calls each one.
pub trait Collectives: Send + Sync {
    /// This process's rank, 0 ≤ rank < size.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// This process's rank among the processes on its machine (picks its device).
    fn local_rank(&self) -> usize;
    /// Element-wise sum over the ranks, in place (every rank gets the sum).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `local` in rank order (counts may differ between ranks), and each rank's
    /// count.
    fn all_gather(&self, local: &[f32]) -> Result<(Vec<f32>, Vec<usize>)>;
    /// [`Collectives::all_gather`] for u32 (labels).
    fn all_gather_u32(&self, local: &[u32]) -> Result<(Vec<u32>, Vec<usize>)>;
    /// `root`'s bytes on every rank (`buf` is replaced on the others).
    fn broadcast(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// The payload bytes this rank has handed to collectives so far (its own contribution to
    /// each: what a ring implementation sends about twice of for an all-reduce).
    fn bytes_sent(&self) -> u64 {
        0
    }
    /// Ends every process of the job with `code` (MPI_Abort): a failed rank must not leave
    /// the others waiting in a collective forever.
    fn abort(&self, code: i32) -> !;
}

/// World size 1: each collective is what it would be with one rank.
pub struct Single;

impl Collectives for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<(Vec<f32>, Vec<usize>)> {
        Ok((local.to_vec(), vec![local.len()]))
    }
    fn all_gather_u32(&self, local: &[u32]) -> Result<(Vec<u32>, Vec<usize>)> {
        Ok((local.to_vec(), vec![local.len()]))
    }
    fn broadcast(&self, _: usize, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

static WORLD: OnceLock<Box<dyn Collectives>> = OnceLock::new();

/// The environment variables a launcher sets for the size of the job step this process
/// belongs to: OpenMPI, MPICH / Intel MPI (PMI), Slurm's `srun` (the step's tasks, not the
/// allocation's: a plain `vkgrad` inside a many-task `sbatch` script is one process).
const SIZE_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"];

/// The job size a launcher announced, if any (before MPI is initialised). A variable that is
/// set but not a number is an error: guessing 1 would train alone beside the other ranks.
pub fn launched_size() -> Result<Option<usize>> {
    for v in SIZE_VARS {
        if let Ok(text) = std::env::var(v) {
            return text.trim().parse::<usize>().map(Some).map_err(|_| {
                Error::Other(format!(
                    "the launcher's {v} = `{text}` is not a number of processes"
                ))
            });
        }
    }
    Ok(None)
}

/// Sets the process's world: MPI when a launcher started more than one process (and this
/// build has the `mpi` feature), else [`Single`]. Idempotent; returns the world.
pub fn init() -> Result<&'static dyn Collectives> {
    if let Some(w) = WORLD.get() {
        return Ok(w.as_ref());
    }
    let k = launched_size()?.unwrap_or(1);
    let w: Box<dyn Collectives> = if k > 1 {
        mpi_or_error(k)?
    } else {
        Box::new(Single)
    };
    Ok(WORLD.get_or_init(|| w).as_ref())
}

#[cfg(feature = "mpi")]
fn mpi_or_error(_k: usize) -> Result<Box<dyn Collectives>> {
    Ok(Box::new(mpi_world::MpiWorld::init()?))
}

#[cfg(not(feature = "mpi"))]
fn mpi_or_error(k: usize) -> Result<Box<dyn Collectives>> {
    Err(Error::Other(format!(
        "this process was launched as one of {k} (mpirun / srun), but this vkgrad was built \
         without MPI: build it with `cargo build --release --features vkgrad/mpi` (needs OpenMPI \
         and libclang; scripts/setup.sh installs them)"
    )))
}

/// The world set by [`init`], or [`Single`] when `init` was not called (library use).
pub fn world() -> &'static dyn Collectives {
    WORLD.get().map_or(&Single, |w| w.as_ref())
}

/// Whether batch statistics are shared by every rank (`Tensor::replica_sum`, which batch
/// norm uses): the run's `sync_batch_norm`, true by default.
static SYNC_BATCH_STATS: AtomicBool = AtomicBool::new(true);

pub fn set_sync_batch_stats(on: bool) {
    SYNC_BATCH_STATS.store(on, Ordering::SeqCst);
}

/// The number of replicas that share batch statistics: the world size when synchronised,
/// else 1.
pub fn batch_stat_replicas() -> usize {
    if SYNC_BATCH_STATS.load(Ordering::SeqCst) {
        world().size()
    } else {
        1
    }
}

/// Ends the job's use of MPI (MPI_Finalize after a barrier, so no rank leaves while another
/// still sends); nothing at world size 1. Call once, at the end of `main`.
pub fn finalize() -> Result<()> {
    if world().size() > 1 {
        world().barrier()?;
        #[cfg(feature = "mpi")]
        mpi_world::finalize();
    }
    Ok(())
}

/// The error a collective gives when the ranks disagree on a size (a bug or a rank that went
/// another way): named, with the rank.
pub(crate) fn mismatch(what: &str, detail: String) -> Error {
    Error::Other(format!(
        "{what}: rank {} of {}: {detail}",
        world().rank(),
        world().size()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_is_the_identity() {
        let s = Single;
        let mut v = vec![1.0, 2.0];
        s.all_reduce_sum(&mut v).unwrap();
        assert_eq!(v, [1.0, 2.0]);
        assert_eq!(s.all_gather(&v).unwrap(), (vec![1.0, 2.0], vec![2]));
    }
}
