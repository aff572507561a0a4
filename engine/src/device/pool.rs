//! Device buffers, reused through a pool keyed by size class, so a training step allocates
//! no device memory after its first iteration.

use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use vulkano::buffer::view::{BufferView, BufferViewCreateInfo};
use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::format::Format;
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter, StandardMemoryAllocator};
use vulkano::{Handle, VulkanObject};

/// One device buffer. `id` is its Vulkan handle, used by the recorder to track hazards.
pub(crate) struct DeviceBuffer {
    pub sub: Subbuffer<[u8]>,
    pub id: u64,
    /// Recorded steps (`device/replay.rs`) that write or read this buffer when replayed: while
    /// any does, the buffer never returns to the pool (it lives on through the recording).
    pub pins: std::sync::atomic::AtomicUsize,
    /// An RGBA32F view of the whole buffer, made on first use as a uniform texel buffer.
    view: OnceLock<Arc<BufferView>>,
}

impl DeviceBuffer {
    pub fn texel_view(&self) -> Result<&Arc<BufferView>> {
        if let Some(v) = self.view.get() {
            return Ok(v);
        }
        let v = BufferView::new(
            self.sub.clone(),
            BufferViewCreateInfo {
                format: Format::R32G32B32A32_SFLOAT,
                ..Default::default()
            },
        )
        .map_err(|e| Error::vulkan("creating a texel buffer view", format!("{e:?}")))?;
        Ok(self.view.get_or_init(|| v))
    }
}

/// Buffers that are free to reuse, by size class (a power of two, at least 256 bytes).
#[derive(Default)]
pub(crate) struct Pool {
    free: HashMap<u64, Vec<Arc<DeviceBuffer>>>,
    /// While a step is recorded for replay: its own free list (see [`CaptureFree`]).
    capture: Option<CaptureFree>,
}

/// The buffers a step being recorded may reuse, as a step run op by op reuses the pool's: those
/// it took itself during the recording (`born`: its first use in the recording is a write, so a
/// replay computes their contents before reading them) and then dropped. They stay pinned by the
/// recording and are taken again only by its thread, in the recording's command order, so each
/// replay reuses them exactly as the recording did; memory a replay needs is that of the step
/// run op by op, not one buffer per intermediate value. A buffer that held something from before
/// the recording (a constant a step reads) is never reused: a replay would read it overwritten.
struct CaptureFree {
    thread: std::thread::ThreadId,
    born: HashSet<u64>,
    free: HashMap<u64, Vec<Arc<DeviceBuffer>>>,
}

pub(crate) fn size_class(bytes: u64) -> u64 {
    bytes.max(256).next_power_of_two()
}

impl Pool {
    pub fn take(&mut self, class: u64) -> Option<Arc<DeviceBuffer>> {
        if let Some(c) = self.capture_here() {
            if let Some(b) = c.free.get_mut(&class).and_then(|v| v.pop()) {
                return Some(b);
            }
        }
        self.free.get_mut(&class).and_then(|v| v.pop())
    }

    /// The recording's free list when this thread is recording a step.
    fn capture_here(&mut self) -> Option<&mut CaptureFree> {
        let me = std::thread::current().id();
        self.capture.as_mut().filter(|c| c.thread == me)
    }

    /// Notes a buffer this thread took while recording a step (see [`CaptureFree`]).
    fn taken(&mut self, id: u64) {
        if let Some(c) = self.capture_here() {
            c.born.insert(id);
        }
    }

    /// A pinned buffer was dropped: reused within the recording if the recording took it.
    fn dropped_pinned(&mut self, class: u64, buf: &Arc<DeviceBuffer>) {
        if let Some(c) = &mut self.capture {
            if c.born.contains(&buf.id) {
                c.free.entry(class).or_default().push(buf.clone());
            }
        }
    }

    /// A step starts being recorded on this thread.
    pub fn begin_capture(&mut self) {
        self.capture = Some(CaptureFree {
            thread: std::thread::current().id(),
            born: HashSet::new(),
            free: HashMap::new(),
        });
    }

    /// The recording ended: its free buffers live on through it (pinned) until it is released.
    pub fn end_capture(&mut self) {
        self.capture = None;
    }
    pub fn give(&mut self, class: u64, buf: Arc<DeviceBuffer>) {
        self.free.entry(class).or_default().push(buf);
    }
    pub fn clear(&mut self) {
        self.free.clear();
    }
}

/// The memory behind a tensor: `bytes` of a pooled buffer. Dropping it returns the buffer to
/// the pool; the recorder never lets a reused buffer race with work still queued on the old
/// one (it tracks hazards by buffer, see `recorder.rs`).
pub(crate) struct Storage {
    pub buf: Arc<DeviceBuffer>,
    pub bytes: u64,
    class: u64,
    pool: Arc<Mutex<Pool>>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        let Ok(mut p) = self.pool.lock() else {
            return;
        };
        if self.buf.pins.load(Ordering::Acquire) > 0 {
            p.dropped_pinned(self.class, &self.buf);
            return;
        }
        p.give(self.class, self.buf.clone());
    }
}

/// A buffer of at least `bytes` (contents undefined), from `pool` when one is free, else made
/// from `mem` (counted in `created`). If the driver is out of memory, `flush` runs (it must
/// finish every queued command, so none refers to a freed buffer), every pooled buffer goes back
/// to the driver and the allocation is tried once more.
pub(crate) fn alloc(
    pool: &Arc<Mutex<Pool>>,
    mem: &Arc<StandardMemoryAllocator>,
    bytes: u64,
    created: &AtomicU64,
    flush: impl FnOnce() -> Result<()>,
) -> Result<Arc<Storage>> {
    let class = size_class(bytes);
    let lock = || {
        pool.lock()
            .map_err(|_| Error::Other("buffer pool poisoned".into()))
    };
    let reused = lock()?.take(class);
    let buf = match reused {
        Some(b) => b,
        None => match new_buffer(mem, class, created) {
            Ok(b) => b,
            // Only running out of memory is worth a retry; any other failure keeps its cause.
            Err(Error::OutOfMemory { .. }) => {
                flush()?;
                lock()?.clear();
                new_buffer(mem, class, created)?
            }
            Err(e) => return Err(e),
        },
    };
    lock()?.taken(buf.id);
    Ok(Arc::new(Storage {
        buf,
        bytes,
        class,
        pool: pool.clone(),
    }))
}

fn new_buffer(
    mem: &Arc<StandardMemoryAllocator>,
    class: u64,
    created: &AtomicU64,
) -> Result<Arc<DeviceBuffer>> {
    let sub = Buffer::new_slice::<u8>(
        mem.clone(),
        BufferCreateInfo {
            usage: BufferUsage::STORAGE_BUFFER
                | BufferUsage::UNIFORM_TEXEL_BUFFER
                | BufferUsage::TRANSFER_SRC
                | BufferUsage::TRANSFER_DST,
            ..Default::default()
        },
        AllocationCreateInfo {
            memory_type_filter: MemoryTypeFilter::PREFER_DEVICE,
            ..Default::default()
        },
        class,
    )
    .map_err(|e| alloc_error(class, e))?;
    created.fetch_add(1, Ordering::Relaxed);
    let id = sub.buffer().handle().as_raw();
    Ok(Arc::new(DeviceBuffer {
        sub,
        id,
        pins: Default::default(),
        view: OnceLock::new(),
    }))
}

/// A buffer allocation's failure: `OutOfMemory` when the driver ran out of device or host
/// memory, otherwise a Vulkan error that keeps the driver's cause.
pub(crate) fn alloc_error(
    bytes: u64,
    e: vulkano::Validated<vulkano::buffer::AllocateBufferError>,
) -> Error {
    use vulkano::buffer::AllocateBufferError as A;
    use vulkano::memory::allocator::MemoryAllocatorError as M;
    use vulkano::{Validated, VulkanError as V};
    let oom = |v: &V| matches!(v, V::OutOfDeviceMemory | V::OutOfHostMemory);
    match &e {
        Validated::Error(A::CreateBuffer(v) | A::BindMemory(v)) if oom(v) => {
            Error::OutOfMemory { bytes }
        }
        Validated::Error(A::AllocateMemory(M::AllocateDeviceMemory(Validated::Error(v))))
            if oom(v) =>
        {
            Error::OutOfMemory { bytes }
        }
        _ => Error::vulkan(
            format!("allocating a buffer of {bytes} bytes"),
            format!("{e:?}"),
        ),
    }
}
