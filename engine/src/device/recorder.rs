//! Records dispatches into a command buffer and submits them in batches: on a read-back, an
//! explicit `sync()`, or every `FLUSH_EVERY` commands — never one fence per op. The size
//! threshold submits without waiting and recording goes on into a second command buffer, so
//! the host keeps recording while the device works; read-backs and `sync()` wait for all.
//!
//! Barriers are inserted only where needed: the recorder remembers which buffers were read and
//! written since the last barrier, and a command that reads something written, or writes
//! something read or written, gets one global memory barrier first (ggml-vulkan's rule). Every
//! command buffer starts with a barrier, which orders it after the one submitted before it.

use super::pool::DeviceBuffer;
use crate::error::{Error, Result};
use ash::vk;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::ThreadId;
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
    /// A step being recorded for replay: commands go to its command buffer, not to a slot.
    capture: Option<Capture>,
    /// Fences of recorded steps submitted and not yet waited for by `flush`.
    replays_in_flight: Vec<vk::Fence>,
    /// The thread whose recording is suspended while it runs a host step: other threads'
    /// device work still waits for the recording to end.
    suspended: Option<ThreadId>,
}

/// Host work between two recorded segments of a step (a collective: read back, exchange with
/// the other ranks, write into a buffer the next segment reads): run once while the step is
/// recorded and again at that point of every replay.
pub(crate) type HostStep = Box<dyn FnMut() -> Result<()> + Send>;

/// One command buffer of a recorded step.
struct Segment {
    cb: vk::CommandBuffer,
    fence: vk::Fence,
    /// Submitted and not yet waited for.
    in_flight: bool,
}

/// A step being recorded (`device/replay.rs`), on one thread.
pub(crate) struct Capture {
    /// The segment being recorded (null between a host step's split and the resume).
    cb: vk::CommandBuffer,
    /// Segments ended at host steps (each already run once), and the host step after each.
    done: Vec<Segment>,
    hosts: Vec<HostStep>,
    thread: ThreadId,
    staging: Vec<Subbuffer<[u8]>>,
    /// Every buffer a command touched, pinned (kept out of the pool) while the recording lives.
    buffers: HashMap<u64, Arc<DeviceBuffer>>,
    /// Why the step cannot be recorded, once something it did was refused (a read-back, a
    /// random draw): however a plugin wraps the error, the caller learns it was this.
    refused: Option<String>,
    /// The slot's hazard sets, put back when the capture ends.
    saved: (HashSet<u64>, HashSet<u64>),
    commands: usize,
}

/// A recorded step: its command buffers (one segment, or several split by host steps),
/// submitted again by `Context::submit_recorded`, and everything it needs alive. Release it
/// with [`Recorder::release`].
pub(crate) struct Recorded {
    segments: Vec<Segment>,
    /// `hosts[i]` runs after `segments[i]`.
    pub(crate) hosts: Vec<HostStep>,
    /// Segments the recording already ran (all before the last host step's): the first
    /// submission starts after them.
    pub(crate) ran: usize,
    _staging: Vec<Subbuffer<[u8]>>,
    buffers: Vec<Arc<DeviceBuffer>>,
    /// Commands in it.
    pub commands: usize,
}

impl Recorded {
    /// Its command buffers: one, plus one per host step.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
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
pub(crate) struct Access<'a> {
    pub buf: &'a Arc<DeviceBuffer>,
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
            capture: None,
            replays_in_flight: Vec::new(),
            suspended: None,
        })
    }

    /// The command buffer commands go to now.
    fn cb(&self) -> vk::CommandBuffer {
        match &self.capture {
            Some(c) => c.cb,
            None => self.slots[self.cur].cb,
        }
    }

    /// A new command buffer of the pool, begun (for a recorded segment).
    fn begun_command_buffer(&self) -> Result<vk::CommandBuffer> {
        let fns = self.device.fns();
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(self.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        let mut cb = vk::CommandBuffer::null();
        unsafe { (fns.v1_0.allocate_command_buffers)(self.device.handle(), &alloc, &mut cb) }
            .result()
            .map_err(|r| vk_err("allocating a command buffer", r))?;
        let begin = vk::CommandBufferBeginInfo::default();
        if let Err(r) = unsafe { (fns.v1_0.begin_command_buffer)(cb, &begin) }.result() {
            unsafe { (fns.v1_0.free_command_buffers)(self.device.handle(), self.pool, 1, &cb) };
            return Err(vk_err("beginning a command buffer", r));
        }
        Ok(cb)
    }

    fn new_fence(&self) -> Result<vk::Fence> {
        let mut f = vk::Fence::null();
        unsafe {
            (self.device.fns().v1_0.create_fence)(
                self.device.handle(),
                &vk::FenceCreateInfo::default(),
                std::ptr::null(),
                &mut f,
            )
        }
        .result()
        .map_err(|r| vk_err("creating a fence", r))?;
        Ok(f)
    }

    /// Frees segments' command buffers and fences (their work finished or never submitted).
    fn free_segments(&self, segments: &[Segment]) {
        let fns = self.device.fns();
        let dev = self.device.handle();
        for s in segments {
            unsafe {
                if s.cb != vk::CommandBuffer::null() {
                    (fns.v1_0.free_command_buffers)(dev, self.pool, 1, &s.cb);
                }
                if s.fence != vk::Fence::null() {
                    (fns.v1_0.destroy_fence)(dev, s.fence, std::ptr::null());
                }
            }
        }
    }

    /// Starts recording a step for replay: from now until [`Recorder::end_capture`], commands
    /// from this thread go to a command buffer of their own and nothing is submitted.
    pub fn begin_capture(&mut self) -> Result<()> {
        if self.capture.is_some() {
            return Err(Error::Other(
                "a step is already being recorded for replay (recordings do not nest)".into(),
            ));
        }
        let cb = self.begun_command_buffer()?;
        let saved = (
            std::mem::take(&mut self.reads),
            std::mem::take(&mut self.writes),
        );
        self.capture = Some(Capture {
            cb,
            done: Vec::new(),
            hosts: Vec::new(),
            thread: std::thread::current().id(),
            staging: Vec::new(),
            buffers: HashMap::new(),
            refused: None,
            saved,
            commands: 0,
        });
        // Whatever ran before a replay must be complete and visible to it.
        self.barrier(vk::PipelineStageFlags::ALL_COMMANDS | vk::PipelineStageFlags::HOST);
        Ok(())
    }

    /// Ends the segment being recorded at a host step: submits what was recorded before the
    /// capture (its inputs' copies) and the segment, and waits for them, so the host step can
    /// read the segment's results. The capture is suspended (returned) while the host step runs
    /// op by op; [`Recorder::resume_capture`] records on into a new segment.
    pub fn split_capture(&mut self) -> Result<Capture> {
        let Some(mut c) = self.capture.take() else {
            return Err(Error::Other(
                "internal error: a host step split a recording that is not there".into(),
            ));
        };
        let cb = std::mem::replace(&mut c.cb, vk::CommandBuffer::null());
        let fence = match self.new_fence() {
            Ok(f) => f,
            Err(e) => {
                c.done.push(Segment {
                    cb,
                    fence: vk::Fence::null(),
                    in_flight: false,
                });
                self.capture = Some(c);
                return Err(e);
            }
        };
        let mut seg = Segment {
            cb,
            fence,
            in_flight: false,
        };
        // The slots' hazard sets back (the capture's are stale once its segment ends), and
        // the capture's back into it if this fails (it is then ended as it is).
        std::mem::swap(&mut self.reads, &mut c.saved.0);
        std::mem::swap(&mut self.writes, &mut c.saved.1);
        let device = self.device.clone();
        let fns = device.fns();
        let ran = self
            .submit()
            .and_then(|_| {
                unsafe { (fns.v1_0.end_command_buffer)(cb) }
                    .result()
                    .map_err(|r| vk_err("ending a command buffer", r))
            })
            .and_then(|_| self.submit_segment(&mut seg))
            .and_then(|_| self.wait_segment(&mut seg));
        c.done.push(seg);
        if let Err(e) = ran {
            std::mem::swap(&mut self.reads, &mut c.saved.0);
            std::mem::swap(&mut self.writes, &mut c.saved.1);
            self.capture = Some(c);
            return Err(e);
        }
        self.suspended = Some(c.thread);
        Ok(c)
    }

    /// Records on after a host step (`step`, which runs again at this point of every replay)
    /// into a new segment that starts with a barrier (the host step's writes, and everything
    /// before, complete and visible).
    pub fn resume_capture(&mut self, mut c: Capture, step: HostStep) -> Result<()> {
        c.hosts.push(step);
        self.suspended = None;
        let cb = self.begun_command_buffer();
        std::mem::swap(&mut self.reads, &mut c.saved.0);
        std::mem::swap(&mut self.writes, &mut c.saved.1);
        if let Ok(cb) = cb {
            c.cb = cb;
        }
        self.capture = Some(c);
        cb?;
        self.barrier(vk::PipelineStageFlags::ALL_COMMANDS | vk::PipelineStageFlags::HOST);
        Ok(())
    }

    /// Ends the recording: `Ok(Some)` with the recorded step (`keep`), `Ok(None)` when it is
    /// dropped (the step failed); either way recording returns to the slots.
    pub fn end_capture(&mut self, keep: bool) -> Result<Option<Recorded>> {
        let Some(mut c) = self.capture.take() else {
            return Ok(None);
        };
        self.reads = std::mem::take(&mut c.saved.0);
        self.writes = std::mem::take(&mut c.saved.1);
        let fns = self.device.fns();
        let last = Segment {
            cb: c.cb,
            fence: vk::Fence::null(),
            in_flight: false,
        };
        let mut segments = std::mem::take(&mut c.done);
        let ran = segments.len();
        segments.push(last);
        let made = if c.cb == vk::CommandBuffer::null() {
            // A host step failed to split or resume: there is no segment to end.
            if keep {
                Err(Error::Other(
                    "a recording ended without a segment to end (a host step failed)".into(),
                ))
            } else {
                Ok(())
            }
        } else {
            unsafe { (fns.v1_0.end_command_buffer)(c.cb) }
                .result()
                .map_err(|r| vk_err("ending a command buffer", r))
        }
        .and_then(|_| {
            if keep {
                self.new_fence().map(Some)
            } else {
                Ok(None)
            }
        });
        match made {
            Ok(Some(fence)) => {
                segments[ran].fence = fence;
                Ok(Some(Recorded {
                    segments,
                    hosts: c.hosts,
                    ran,
                    _staging: c.staging,
                    buffers: c.buffers.into_values().collect(),
                    commands: c.commands,
                }))
            }
            other => {
                // Earlier segments were waited for when they ran.
                self.free_segments(&segments);
                self.unpin(c.buffers.into_values().collect());
                other.map(|_| None)
            }
        }
    }

    /// Submits one segment of a recorded step after everything recorded so far (waiting for
    /// its previous submission first); does not wait.
    fn submit_segment(&mut self, seg: &mut Segment) -> Result<()> {
        self.wait_segment(seg)?;
        let fns = self.device.fns();
        let cbs = [seg.cb];
        let submit = vk::SubmitInfo::default().command_buffers(&cbs);
        let (queue, fence) = (self.queue.clone(), seg.fence);
        queue
            .with(|_guard| unsafe { (fns.v1_0.queue_submit)(queue.handle(), 1, &submit, fence) })
            .result()
            .map_err(|r| vk_err("submitting a recorded step", r))?;
        seg.in_flight = true;
        self.replays_in_flight.push(seg.fence);
        self.stats.submits += 1;
        Ok(())
    }

    /// Submits segment `i` of a recorded step after everything recorded so far; does not
    /// wait. (`Context::submit_recorded` runs the host steps between segments.)
    pub fn submit_recorded_segment(&mut self, r: &mut Recorded, i: usize) -> Result<()> {
        self.check_not_capturing("replay a recorded step")?;
        self.submit()?;
        self.submit_segment(&mut r.segments[i])
    }

    /// Waits until segment `i` of a recorded step has finished.
    pub fn wait_recorded_segment(&mut self, r: &mut Recorded, i: usize) -> Result<()> {
        self.wait_segment(&mut r.segments[i])
    }

    /// Waits until a segment's last submission has finished.
    fn wait_segment(&mut self, seg: &mut Segment) -> Result<()> {
        if !seg.in_flight {
            return Ok(());
        }
        let fns = self.device.fns();
        let dev = self.device.handle();
        unsafe { (fns.v1_0.wait_for_fences)(dev, 1, &seg.fence, vk::TRUE, u64::MAX) }
            .result()
            .map_err(|e| vk_err("waiting for the device", e))?;
        unsafe { (fns.v1_0.reset_fences)(dev, 1, &seg.fence) }
            .result()
            .map_err(|e| vk_err("resetting a fence", e))?;
        seg.in_flight = false;
        self.replays_in_flight.retain(|f| *f != seg.fence);
        Ok(())
    }

    /// Waits until every segment of the recorded step has finished.
    fn wait_recorded(&mut self, r: &mut Recorded) -> Result<()> {
        for seg in &mut r.segments {
            self.wait_segment(seg)?;
        }
        Ok(())
    }

    /// Frees a recorded step once its work has finished; its buffers go back to the pool as
    /// their tensors drop.
    pub fn release(&mut self, mut r: Recorded) {
        if self.wait_recorded(&mut r).is_err() {
            // Its work may still run: leak it rather than free what the device uses.
            std::mem::forget(r);
            return;
        }
        self.free_segments(&r.segments);
        r.segments.clear();
        self.unpin(std::mem::take(&mut r.buffers));
    }

    /// Unpins a recording's buffers. A buffer whose tensor dropped while it was pinned was not
    /// pooled and is freed with its last handle here, so commands recorded before or after the
    /// recording that may still use it (copies of a replay's outputs, a pooled buffer's earlier
    /// life) are finished first; if that cannot be waited for, the buffers are leaked instead.
    fn unpin(&mut self, buffers: Vec<Arc<DeviceBuffer>>) {
        if buffers.is_empty() {
            return;
        }
        if self.flush().is_err() {
            std::mem::forget(buffers);
            return;
        }
        for b in &buffers {
            b.pins.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a step is being recorded for replay.
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// The thread recording a step for replay, if one is.
    pub fn capture_thread(&self) -> Option<ThreadId> {
        self.capture.as_ref().map(|c| c.thread).or(self.suspended)
    }

    fn check_not_capturing(&mut self, what: &str) -> Result<()> {
        if self.capture.is_none() {
            return Ok(());
        }
        Err(self.refuse(format!(
            "cannot {what} while a step is being recorded for replay: a replayed step runs \
             without its host code, so it may not read values back or wait for the device \
             (read its outputs after it)"
        )))
    }

    /// Refuses something the step being recorded did: notes why (see [`Recorder::refusal`])
    /// and returns the error to give back.
    pub fn refuse(&mut self, why: String) -> Error {
        if let Some(c) = &mut self.capture {
            c.refused.get_or_insert_with(|| why.clone());
        }
        Error::Other(why)
    }

    /// Why the step being recorded cannot be replayed, if something it did was refused.
    pub fn refusal(&self) -> Option<String> {
        self.capture.as_ref().and_then(|c| c.refused.clone())
    }

    /// Begins the command buffer if needed and inserts a barrier if `accesses` conflict with
    /// what was recorded since the last one. Returns the command buffer to record into.
    pub fn prepare(&mut self, accesses: &[Access]) -> Result<vk::CommandBuffer> {
        if let Some(c) = &mut self.capture {
            if c.thread != std::thread::current().id() {
                // `Context::rec` makes other threads wait for the recording to end.
                return Err(Error::Other(
                    "internal error: another thread's command reached a step being recorded \
                     for replay"
                        .into(),
                ));
            }
            for a in accesses {
                c.buffers.entry(a.buf.id).or_insert_with(|| {
                    a.buf.pins.fetch_add(1, Ordering::AcqRel);
                    a.buf.clone()
                });
            }
            if c.cb == vk::CommandBuffer::null() {
                return Err(Error::Other(
                    "a host step inside the step being recorded failed; nothing more can be \
                     recorded into it"
                        .into(),
                ));
            }
            c.commands += 1;
        } else if !self.recording {
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
        let conflict = accesses.iter().any(|a| {
            self.writes.contains(&a.buf.id) || (a.write && self.reads.contains(&a.buf.id))
        });
        if conflict {
            self.barrier(vk::PipelineStageFlags::ALL_COMMANDS);
        }
        for a in accesses {
            if a.write {
                self.writes.insert(a.buf.id);
            } else {
                self.reads.insert(a.buf.id);
            }
        }
        if self.capture.is_none() {
            self.commands += 1;
        }
        Ok(self.cb())
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
        let cb = self.cb();
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
        match &mut self.capture {
            Some(c) => c.staging.push(staging),
            None => self.slots[self.cur].staging.push(staging),
        }
    }

    /// Counts a dispatch; past the batch size, submits without waiting.
    pub fn count_dispatch(&mut self) -> Result<()> {
        self.stats.dispatches += 1;
        if self.capture.is_none() && self.commands >= FLUSH_EVERY {
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
        self.check_not_capturing("read a value back or wait for the device")?;
        self.submit()?;
        self.wait_slot(0)?;
        self.wait_slot(1)?;
        // Recorded steps' fences are waited for, not reset: their owner resets them before it
        // submits again.
        let fns = self.device.fns();
        for f in std::mem::take(&mut self.replays_in_flight) {
            unsafe { (fns.v1_0.wait_for_fences)(self.device.handle(), 1, &f, vk::TRUE, u64::MAX) }
                .result()
                .map_err(|r| vk_err("waiting for the device", r))?;
        }
        Ok(())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.end_capture(false);
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
