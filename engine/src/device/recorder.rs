//! Records dispatches into a command buffer and submits them in batches: on a read-back, an
//! explicit `sync()`, or every `FLUSH_EVERY` commands — never one fence per op. The size
//! threshold submits without waiting and recording goes on into a second command buffer, so
//! the host keeps recording while the device works; read-backs and `sync()` wait for all.
//!
//! Barriers are inserted only where needed: the recorder remembers which buffers were read and
//! written since the last barrier, and a command that reads something written, or writes
//! something read or written, gets one global memory barrier first (ggml-vulkan's rule). Every
//! command buffer starts with a barrier, which orders it after the one submitted before it.

use crate::error::{Error, Result};
use ash::vk;
use std::collections::HashSet;
use std::sync::Arc;
use vulkano::buffer::Subbuffer;
use vulkano::device::{Device, Queue};
use vulkano::VulkanObject;

/// Commands recorded before a submit is forced (ggml submits about every 100 nodes).
const FLUSH_EVERY: usize = 256;

/// One of the two command buffers, with what its submitted work still needs.
struct Slot {
    cb: vk::CommandBuffer,
    fence: vk::Fence,
    /// Submitted and not yet waited for.
    in_flight: bool,
    /// Host buffers that its copies read from; dropped once its work has completed.
    staging: Vec<Subbuffer<[u8]>>,
}

pub(crate) struct Recorder {
    device: Arc<Device>,
    queue: Arc<Queue>,
    pool: vk::CommandPool,
    slots: [Slot; 2],
    /// The slot being recorded into.
    cur: usize,
    recording: bool,
    reads: HashSet<u64>,
    writes: HashSet<u64>,
    commands: usize,
    pub stats: Stats,
}

/// Counters for benchmarks and tests of the batching behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub dispatches: u64,
    pub barriers: u64,
    pub submits: u64,
}

fn vk_err(what: &str, r: vk::Result) -> Error {
    Error::vulkan(what, format!("{r:?}"))
}

/// A buffer a command touches, and whether it writes it.
pub(crate) struct Access {
    pub id: u64,
    pub write: bool,
}

impl Recorder {
    pub fn new(device: Arc<Device>, queue: Arc<Queue>) -> Result<Self> {
        let fns = device.fns();
        let info = vk::CommandPoolCreateInfo::default()
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER)
            .queue_family_index(queue.queue_family_index());
        let mut pool = vk::CommandPool::null();
        unsafe {
            (fns.v1_0.create_command_pool)(device.handle(), &info, std::ptr::null(), &mut pool)
        }
        .result()
        .map_err(|r| vk_err("creating the command pool", r))?;
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(2);
        let mut cbs = [vk::CommandBuffer::null(); 2];
        unsafe { (fns.v1_0.allocate_command_buffers)(device.handle(), &alloc, cbs.as_mut_ptr()) }
            .result()
            .map_err(|r| vk_err("allocating command buffers", r))?;
        let mut fences = [vk::Fence::null(); 2];
        for f in &mut fences {
            unsafe {
                (fns.v1_0.create_fence)(
                    device.handle(),
                    &vk::FenceCreateInfo::default(),
                    std::ptr::null(),
                    f,
                )
            }
            .result()
            .map_err(|r| vk_err("creating a fence", r))?;
        }
        let slot = |i: usize| Slot {
            cb: cbs[i],
            fence: fences[i],
            in_flight: false,
            staging: Vec::new(),
        };
        Ok(Recorder {
            device,
            queue,
            pool,
            slots: [slot(0), slot(1)],
            cur: 0,
            recording: false,
            reads: HashSet::new(),
            writes: HashSet::new(),
            commands: 0,
            stats: Stats::default(),
        })
    }

    /// Begins the command buffer if needed and inserts a barrier if `accesses` conflict with
    /// what was recorded since the last one. Returns the command buffer to record into.
    pub fn prepare(&mut self, accesses: &[Access]) -> Result<vk::CommandBuffer> {
        if !self.recording {
            // The slot may still hold work submitted two batches ago.
            self.wait_slot(self.cur)?;
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            let cb = self.slots[self.cur].cb;
            unsafe { (self.device.fns().v1_0.begin_command_buffer)(cb, &begin) }
                .result()
                .map_err(|r| vk_err("beginning a command buffer", r))?;
            self.recording = true;
            // Earlier submits (and host writes to staging buffers) must be complete and visible.
            self.barrier(vk::PipelineStageFlags::ALL_COMMANDS | vk::PipelineStageFlags::HOST);
        }
        let conflict = accesses
            .iter()
            .any(|a| self.writes.contains(&a.id) || (a.write && self.reads.contains(&a.id)));
        if conflict {
            self.barrier(vk::PipelineStageFlags::ALL_COMMANDS);
        }
        for a in accesses {
            if a.write {
                self.writes.insert(a.id);
            } else {
                self.reads.insert(a.id);
            }
        }
        self.commands += 1;
        Ok(self.slots[self.cur].cb)
    }

    fn barrier(&mut self, src: vk::PipelineStageFlags) {
        let mb = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE);
        self.cmd_barrier(src, vk::PipelineStageFlags::ALL_COMMANDS, mb);
        self.reads.clear();
        self.writes.clear();
        self.stats.barriers += 1;
    }

    fn cmd_barrier(
        &self,
        src: vk::PipelineStageFlags,
        dst: vk::PipelineStageFlags,
        mb: vk::MemoryBarrier,
    ) {
        let cb = self.slots[self.cur].cb;
        unsafe {
            (self.device.fns().v1_0.cmd_pipeline_barrier)(
                cb,
                src,
                dst,
                vk::DependencyFlags::empty(),
                1,
                &mb,
                0,
                std::ptr::null(),
                0,
                std::ptr::null(),
            )
        };
    }

    pub fn keep(&mut self, staging: Subbuffer<[u8]>) {
        self.slots[self.cur].staging.push(staging);
    }

    /// Counts a dispatch; past the batch size, submits without waiting.
    pub fn count_dispatch(&mut self) -> Result<()> {
        self.stats.dispatches += 1;
        if self.commands >= FLUSH_EVERY {
            self.submit()?;
        }
        Ok(())
    }

    /// Ends and submits the current command buffer, and moves recording to the other slot.
    fn submit(&mut self) -> Result<()> {
        if !self.recording {
            return Ok(());
        }
        let fns = self.device.fns();
        // Make device writes visible to host reads of staging buffers after the fence.
        let mb = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        self.cmd_barrier(
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::PipelineStageFlags::HOST,
            mb,
        );
        let slot = &mut self.slots[self.cur];
        unsafe { (fns.v1_0.end_command_buffer)(slot.cb) }
            .result()
            .map_err(|r| vk_err("ending a command buffer", r))?;
        self.recording = false;
        self.reads.clear();
        self.writes.clear();
        self.commands = 0;
        let cbs = [slot.cb];
        let submit = vk::SubmitInfo::default().command_buffers(&cbs);
        let (queue, fence) = (self.queue.clone(), slot.fence);
        let submitted = queue
            .with(|_guard| unsafe { (fns.v1_0.queue_submit)(queue.handle(), 1, &submit, fence) });
        submitted
            .result()
            .map_err(|r| vk_err("submitting work", r))?;
        slot.in_flight = true;
        self.stats.submits += 1;
        self.cur = 1 - self.cur;
        Ok(())
    }

    /// Waits for a slot's submitted work, then releases what it held.
    fn wait_slot(&mut self, i: usize) -> Result<()> {
        let slot = &mut self.slots[i];
        if !slot.in_flight {
            return Ok(());
        }
        let fns = self.device.fns();
        let dev = self.device.handle();
        let waited = unsafe { (fns.v1_0.wait_for_fences)(dev, 1, &slot.fence, vk::TRUE, u64::MAX) }
            .result()
            .map_err(|r| vk_err("waiting for the device", r));
        let reset = unsafe {
            (fns.v1_0.reset_fences)(dev, 1, &slot.fence).result().and(
                (fns.v1_0.reset_command_buffer)(slot.cb, vk::CommandBufferResetFlags::empty())
                    .result(),
            )
        };
        slot.in_flight = false;
        slot.staging.clear();
        waited?;
        reset.map_err(|r| vk_err("resetting a command buffer", r))
    }

    /// Submits what was recorded and waits until all submitted work has finished.
    pub fn flush(&mut self) -> Result<()> {
        self.submit()?;
        self.wait_slot(0)?;
        self.wait_slot(1)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.flush();
        let fns = self.device.fns();
        unsafe {
            for s in &self.slots {
                (fns.v1_0.destroy_fence)(self.device.handle(), s.fence, std::ptr::null());
            }
            (fns.v1_0.destroy_command_pool)(self.device.handle(), self.pool, std::ptr::null());
        }
    }
}
