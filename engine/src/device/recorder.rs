//! Records dispatches into one command buffer and submits them in batches: on a read-back, an
//! explicit `sync()`, or every `FLUSH_EVERY` commands — never one fence per op.
//!
//! Barriers are inserted only where needed: the recorder remembers which buffers were read and
//! written since the last barrier, and a command that reads something written, or writes
//! something read or written, gets one global memory barrier first (ggml-vulkan's rule).

use crate::error::{Error, Result};
use ash::vk;
use std::collections::HashSet;
use std::sync::Arc;
use vulkano::buffer::Subbuffer;
use vulkano::device::{Device, Queue};
use vulkano::VulkanObject;

/// Commands recorded before a submit is forced (ggml submits about every 100 nodes; a larger
/// batch amortises the submit + fence better here because flushes wait for completion).
const FLUSH_EVERY: usize = 512;

pub(crate) struct Recorder {
    device: Arc<Device>,
    queue: Arc<Queue>,
    pool: vk::CommandPool,
    cb: vk::CommandBuffer,
    fence: vk::Fence,
    recording: bool,
    reads: HashSet<u64>,
    writes: HashSet<u64>,
    commands: usize,
    /// Host buffers that queued copies read from; dropped once the submit has completed.
    staging: Vec<Subbuffer<[u8]>>,
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

/// A buffer range a command touches, and whether it writes it.
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
            .command_buffer_count(1);
        let mut cb = vk::CommandBuffer::null();
        unsafe { (fns.v1_0.allocate_command_buffers)(device.handle(), &alloc, &mut cb) }
            .result()
            .map_err(|r| vk_err("allocating a command buffer", r))?;
        let mut fence = vk::Fence::null();
        unsafe {
            (fns.v1_0.create_fence)(
                device.handle(),
                &vk::FenceCreateInfo::default(),
                std::ptr::null(),
                &mut fence,
            )
        }
        .result()
        .map_err(|r| vk_err("creating a fence", r))?;
        Ok(Recorder {
            device,
            queue,
            pool,
            cb,
            fence,
            recording: false,
            reads: HashSet::new(),
            writes: HashSet::new(),
            commands: 0,
            staging: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// Begins the command buffer if needed and inserts a barrier if `accesses` conflict with
    /// what was recorded since the last one. Returns the command buffer to record into.
    pub fn prepare(&mut self, accesses: &[Access]) -> Result<vk::CommandBuffer> {
        let fns = self.device.fns();
        if !self.recording {
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            unsafe { (fns.v1_0.begin_command_buffer)(self.cb, &begin) }
                .result()
                .map_err(|r| vk_err("beginning a command buffer", r))?;
            self.recording = true;
            // Work from earlier submits (and host writes to staging) must be visible.
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
        Ok(self.cb)
    }

    fn barrier(&mut self, src: vk::PipelineStageFlags) {
        let fns = self.device.fns();
        let mb = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE);
        unsafe {
            (fns.v1_0.cmd_pipeline_barrier)(
                self.cb,
                src,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::DependencyFlags::empty(),
                1,
                &mb,
                0,
                std::ptr::null(),
                0,
                std::ptr::null(),
            )
        };
        self.reads.clear();
        self.writes.clear();
        self.stats.barriers += 1;
    }

    pub fn keep(&mut self, staging: Subbuffer<[u8]>) {
        self.staging.push(staging);
    }

    pub fn count_dispatch(&mut self) {
        self.stats.dispatches += 1;
    }

    pub fn wants_flush(&self) -> bool {
        self.commands >= FLUSH_EVERY
    }

    /// Submits what was recorded and waits for it to finish.
    pub fn flush(&mut self) -> Result<()> {
        if !self.recording {
            return Ok(());
        }
        let fns = self.device.fns();
        // Make device writes visible to host reads of staging buffers after the fence.
        let mb = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        unsafe {
            (fns.v1_0.cmd_pipeline_barrier)(
                self.cb,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                1,
                &mb,
                0,
                std::ptr::null(),
                0,
                std::ptr::null(),
            );
            (fns.v1_0.end_command_buffer)(self.cb)
                .result()
                .map_err(|r| vk_err("ending a command buffer", r))?;
        }
        self.recording = false;
        let cbs = [self.cb];
        let submit = vk::SubmitInfo::default().command_buffers(&cbs);
        let queue = self.queue.clone();
        let fence = self.fence;
        let submitted = queue
            .with(|_guard| unsafe { (fns.v1_0.queue_submit)(queue.handle(), 1, &submit, fence) });
        let waited = submitted
            .result()
            .map_err(|r| vk_err("submitting work", r))
            .and_then(|_| {
                unsafe {
                    (fns.v1_0.wait_for_fences)(self.device.handle(), 1, &fence, vk::TRUE, u64::MAX)
                }
                .result()
                .map_err(|r| vk_err("waiting for the device", r))
            });
        let reset = unsafe {
            let fence_reset = (fns.v1_0.reset_fences)(self.device.handle(), 1, &fence);
            fence_reset.result().and(
                (fns.v1_0.reset_command_buffer)(self.cb, vk::CommandBufferResetFlags::empty())
                    .result(),
            )
        };
        self.reads.clear();
        self.writes.clear();
        self.staging.clear();
        self.commands = 0;
        self.stats.submits += 1;
        waited?;
        reset.map_err(|r| vk_err("resetting a command buffer", r))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.flush();
        let fns = self.device.fns();
        unsafe {
            (fns.v1_0.destroy_fence)(self.device.handle(), self.fence, std::ptr::null());
            (fns.v1_0.destroy_command_pool)(self.device.handle(), self.pool, std::ptr::null());
        }
    }
}
