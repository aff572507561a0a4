//! The process-wide device context: chosen once (by `--device`, `VKGRAD_DEVICE` or type), then
//! shared by every tensor. Recording is serialised by a mutex; tensors from several threads
//! may interleave in one command buffer because hazards are tracked per buffer.

use super::kernels::{self, Kernel, Pipeline};
use super::pool::{Pool, Storage};
use super::recorder::{Access, Recorded, Recorder, Stats};
use super::{open, DeviceChoice, DeviceInfo};
use crate::error::{Error, Result};
use ash::vk;
use serde::Serialize;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use vulkano::buffer::{Buffer, BufferCreateInfo, BufferUsage, Subbuffer};
use vulkano::device::{
    Device, DeviceCreateInfo, DeviceExtensions, Queue, QueueCreateInfo, QueueFlags,
};
use vulkano::memory::allocator::{AllocationCreateInfo, MemoryTypeFilter, StandardMemoryAllocator};
use vulkano::pipeline::cache::{PipelineCache, PipelineCacheCreateInfo};
use vulkano::VulkanObject;

/// A kernel and its specialisation constants.
type PipelineKey = (Kernel, SmallVec<[u32; 4]>);

pub struct Context {
    pub info: DeviceInfo,
    pub(crate) device: Arc<Device>,
    pub(crate) mem: Arc<StandardMemoryAllocator>,
    pub(crate) pool: Arc<Mutex<Pool>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// Pipelines of kernels generated at run time, by source (`device/runtime.rs`).
    generated: Mutex<HashMap<String, Arc<Pipeline>>>,
    rec: Mutex<Recorder>,
    /// Signalled when a recording for replay ends: other threads' device work waits for it
    /// (see [`Context::rec`]).
    capture_ended: Condvar,
    /// What kernel choice needs to know about the device (`device/caps.rs`).
    pub caps: super::caps::Caps,
    /// The largest range one storage-buffer binding may cover, and the most texels a texel
    /// buffer view may hold (maxStorageBufferRange, maxTexelBufferElements).
    max_storage_range: u64,
    max_texels: u64,
    /// `VKGRAD_PROFILE=1`: each dispatch is waited for and its time added here, per kernel and
    /// specialisation (slow; for finding where time goes).
    profile: Option<Mutex<HashMap<String, (u64, f64)>>>,
    /// Device buffers created so far (a pooled buffer taken again does not count).
    pub(crate) buffers_created: std::sync::atomic::AtomicU64,
    /// The driver's pipeline cache, loaded from and saved to the on-disk kernel cache
    /// (`device/disk_cache.rs`), with the folder, this driver's file, and the data as last
    /// loaded or saved (written again only when it changed).
    pipeline_cache: Option<Arc<PipelineCache>>,
    cache_dir: Option<PathBuf>,
    pipelines_file: Option<PathBuf>,
    pipelines_saved: Mutex<Vec<u8>>,
    cache_stats: Mutex<KernelCacheStats>,
}

/// How kernels were found in this process (`vkgrad bench` and `VKGRAD_PROFILE=1` report it).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KernelCacheStats {
    /// Dispatches of generated kernels whose pipeline was already in memory.
    pub generated_memory_hits: u64,
    /// Generated kernels whose SPIR-V came from the on-disk cache (nothing compiled).
    pub generated_disk_hits: u64,
    /// Generated kernels compiled with shaderc.
    pub generated_compiled: u64,
    /// Pipelines created (built-in and generated), each through the driver's pipeline cache.
    pub pipelines_created: u64,
}

thread_local! {
    /// Kernels dispatched by this thread (ops run on the thread that calls them, so a test or
    /// a benchmark counts its own work even while other threads use the device).
    static DISPATCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Kernels dispatched so far by the calling thread: compare two readings to count an op's or a
/// step's kernels (`vkgrad bench` reports it per step).
pub fn dispatch_count() -> u64 {
    DISPATCHES.with(|d| d.get())
}

/// A buffer a command binds: read or written as a storage buffer, or read as a uniform texel
/// buffer of vec4s (`samplerBuffer`; texel fetches are vectorised gathers on CPU drivers, where
/// storage-buffer loads go lane by lane).
pub(crate) struct Bind<'a> {
    st: &'a Storage,
    write: bool,
    texels: bool,
}

impl<'a> Bind<'a> {
    pub fn read(st: &'a Storage) -> Self {
        Bind {
            st,
            write: false,
            texels: false,
        }
    }
    pub fn write(st: &'a Storage) -> Self {
        Bind {
            st,
            write: true,
            texels: false,
        }
    }
    pub fn texels(st: &'a Storage) -> Self {
        Bind {
            st,
            write: false,
            texels: true,
        }
    }
}

static CHOICE: Mutex<Option<DeviceChoice>> = Mutex::new(None);
static CONTEXT: OnceLock<Result<Context>> = OnceLock::new();

/// Chooses the device before first use (the CLI's `--device`). Fails if a different device is
/// already in use.
pub fn select_device(choice: DeviceChoice) -> Result<()> {
    if let Some(Ok(ctx)) = CONTEXT.get() {
        let same = match &choice {
            DeviceChoice::Auto | DeviceChoice::AutoNth(_) => true,
            DeviceChoice::Index(i) => *i == ctx.info.index,
            DeviceChoice::Name(n) => ctx.info.name.to_lowercase().contains(&n.to_lowercase()),
        };
        return if same {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "device already chosen ({}); choose before the first op",
                ctx.info.name
            )))
        };
    }
    *CHOICE
        .lock()
        .map_err(|_| Error::Other("device choice poisoned".into()))? = Some(choice);
    Ok(())
}

/// Saves the kernel cache of the context if one was opened (`Context::save_kernel_cache`);
/// the CLI calls it when a command ends, library users when they are done.
pub fn save_kernel_cache() -> Result<()> {
    match CONTEXT.get() {
        Some(Ok(ctx)) => ctx.save_kernel_cache(),
        _ => Ok(()),
    }
}

/// The shared context, created on first use.
pub fn context() -> Result<&'static Context> {
    CONTEXT
        .get_or_init(|| {
            let choice = CHOICE
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or_else(DeviceChoice::from_env);
            Context::new(&choice)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent in a way later users
    // would observe (each critical section is a single update), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Workgroup counts for `n` invocations in groups of `local`, spilling into y past 65535.
pub(crate) fn grid(n: u64, local: u64) -> [u32; 3] {
    let groups = n.div_ceil(local).max(1);
    let x = groups.min(65535);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

impl Context {
    fn new(choice: &DeviceChoice) -> Result<Self> {
        let (pd, info) = open(choice)?;
        let qf = pd
            .queue_family_properties()
            .iter()
            .position(|q| q.queue_flags.intersects(QueueFlags::COMPUTE))
            .ok_or_else(|| {
                Error::vulkan(
                    "choosing a queue",
                    format!("{} has no compute queue", info.name),
                )
            })? as u32;
        let (device, mut queues) = Device::new(
            pd,
            DeviceCreateInfo {
                queue_create_infos: vec![QueueCreateInfo {
                    queue_family_index: qf,
                    ..Default::default()
                }],
                enabled_extensions: DeviceExtensions {
                    khr_push_descriptor: true,
                    ..DeviceExtensions::empty()
                },
                ..Default::default()
            },
        )
        .map_err(|e| Error::vulkan(format!("opening device {}", info.name), e))?;
        let queue: Arc<Queue> = queues
            .next()
            .ok_or_else(|| Error::vulkan("opening the queue", "none returned"))?;
        let mem = Arc::new(StandardMemoryAllocator::new_default(device.clone()));
        let rec = Recorder::new(device.clone(), queue)?;
        let caps = super::caps::Caps::read(device.physical_device());
        let props = device.physical_device().properties();
        let max_storage_range = props.max_storage_buffer_range as u64;
        let max_texels = props.max_texel_buffer_elements as u64;
        let cache_dir = super::disk_cache::dir();
        // One pipeline-data file per driver build: the driver ignores data of another anyway.
        let pipelines_file = cache_dir.as_ref().map(|d| {
            let key = format!(
                "{:04x}-{:04x}-{:x}-{}",
                props.vendor_id,
                props.device_id,
                props.driver_version,
                props
                    .pipeline_cache_uuid
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            super::disk_cache::pipelines_path(d, &key)
        });
        // No file, or one that does not read back whole, is a cold cache (an empty start), not
        // an error: the driver then compiles every pipeline, as without a cache.
        let initial = pipelines_file
            .as_deref()
            .and_then(super::disk_cache::pipelines_get)
            .unwrap_or_default();
        // SAFETY: the data is what this driver (same vendor, device, version and cache UUID)
        // returned from vkGetPipelineCacheData, checked against its SHA-256 when read back;
        // drivers validate the header and ignore data that is not theirs.
        let pipeline_cache = unsafe {
            PipelineCache::new(
                device.clone(),
                PipelineCacheCreateInfo {
                    initial_data: initial.clone(),
                    ..Default::default()
                },
            )
        }
        .map_err(|e| Error::vulkan("creating the pipeline cache", e))?;
        Ok(Context {
            info,
            device,
            mem,
            pool: Arc::new(Mutex::new(Pool::default())),
            pipelines: Mutex::new(HashMap::new()),
            generated: Mutex::new(HashMap::new()),
            rec: Mutex::new(rec),
            capture_ended: Condvar::new(),
            caps,
            max_storage_range,
            max_texels,
            profile: std::env::var("VKGRAD_PROFILE")
                .is_ok_and(|v| v == "1")
                .then(|| Mutex::new(HashMap::new())),
            buffers_created: Default::default(),
            pipeline_cache: Some(pipeline_cache),
            cache_dir,
            pipelines_file,
            pipelines_saved: Mutex::new(initial),
            cache_stats: Mutex::new(KernelCacheStats::default()),
        })
    }

    fn pipeline(&self, kernel: Kernel, spec: &[u32]) -> Result<Arc<Pipeline>> {
        let key = (kernel, SmallVec::from_slice(spec));
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        // Built outside the lock: LLVM-backed drivers take a while per pipeline.
        let p = Arc::new(kernels::build(
            &self.device,
            self.pipeline_cache.as_ref(),
            kernel,
            spec,
        )?);
        lock(&self.cache_stats).pipelines_created += 1;
        Ok(lock(&self.pipelines).entry(key).or_insert(p).clone())
    }

    /// Fails with a clear error when a kernel would loop `iterations` times per invocation on
    /// a driver that cannot (instead of computing a silently truncated result).
    pub(crate) fn check_loop(
        &self,
        op: &'static str,
        iterations: usize,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        match self.caps.loop_budget {
            Some(b) if iterations > b => Err(Error::op(
                op,
                format!("{}: needs {iterations} loop iterations per invocation, more than the {b} this driver ({}) runs", what(), self.info.driver),
            )),
            _ => Ok(()),
        }
    }

    /// Records one dispatch. Buffers are bound to bindings 0.. in order; `push` is the kernel's
    /// push-constant block (`device/push.rs`).
    pub(crate) fn dispatch<P: super::push::Push>(
        &self,
        kernel: Kernel,
        spec: &[u32],
        binds: &[Bind],
        push: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        if !P::KERNELS.contains(&kernel) {
            return Err(Error::Other(format!(
                "kernel {kernel:?} dispatched with the push block of {:?} (a bug in vkgrad)",
                P::KERNELS
            )));
        }
        let pipeline = self.pipeline(kernel, spec)?;
        self.record(
            &pipeline,
            || format!("{kernel:?} {spec:?}"),
            binds,
            bytemuck::bytes_of(push),
            groups,
        )
    }

    /// Records one dispatch of a kernel generated at run time from GLSL `source` (compiled
    /// once per source and cached); `label` names it in profiles.
    pub(crate) fn dispatch_generated(
        &self,
        source: &str,
        label: &str,
        binds: &[Bind],
        push: &[u8],
        groups: [u32; 3],
    ) -> Result<()> {
        let cached = lock(&self.generated).get(source).cloned();
        let pipeline = match cached {
            Some(p) => {
                lock(&self.cache_stats).generated_memory_hits += 1;
                p
            }
            None => {
                // Compiled outside the lock, like the built-in pipelines.
                let (p, compiled) = super::runtime::build(
                    &self.device,
                    self.pipeline_cache.as_ref(),
                    self.cache_dir.as_deref(),
                    source,
                )?;
                {
                    let mut st = lock(&self.cache_stats);
                    st.pipelines_created += 1;
                    if compiled {
                        st.generated_compiled += 1;
                    } else {
                        st.generated_disk_hits += 1;
                    }
                }
                let p = Arc::new(p);
                lock(&self.generated)
                    .entry(source.to_string())
                    .or_insert(p)
                    .clone()
            }
        };
        self.record(&pipeline, || label.to_string(), binds, push, groups)
    }

    /// Pipelines generated at run time so far (each compiled once).
    pub fn generated_kernels(&self) -> usize {
        lock(&self.generated).len()
    }

    /// A buffer of at least `bytes` (contents undefined), from the pool when one is free; when
    /// the driver is out of memory, the queued work is finished, the pool emptied and the
    /// allocation tried once more (`device/pool.rs`).
    pub(crate) fn alloc(&self, bytes: u64) -> Result<Arc<Storage>> {
        super::pool::alloc(&self.pool, &self.mem, bytes, &self.buffers_created, || {
            self.sync()
        })
    }

    /// How kernels were found so far in this process.
    pub fn kernel_cache_stats(&self) -> KernelCacheStats {
        *lock(&self.cache_stats)
    }

    /// Writes the driver's pipeline-cache data to the on-disk kernel cache if it changed since
    /// it was loaded or last saved (the generated kernels' SPIR-V is written as it is compiled).
    pub fn save_kernel_cache(&self) -> Result<()> {
        let (Some(cache), Some(file)) = (&self.pipeline_cache, &self.pipelines_file) else {
            return Ok(());
        };
        let data = cache
            .get_data()
            .map_err(|e| Error::vulkan("reading the pipeline cache", e))?;
        let mut saved = lock(&self.pipelines_saved);
        if *saved != data {
            super::disk_cache::pipelines_put(file, &data);
            *saved = data;
        }
        Ok(())
    }

    fn record(
        &self,
        pipeline: &Pipeline,
        label: impl Fn() -> String,
        binds: &[Bind],
        push: &[u8],
        groups: [u32; 3],
    ) -> Result<()> {
        DISPATCHES.with(|d| d.set(d.get() + 1));
        for b in binds {
            // Raw commands skip validation, so the device's limits are checked here: past them
            // a shader would read out of range instead of failing.
            let (size, limit, what) = if b.texels {
                (
                    b.st.buf.sub.size() / 16,
                    self.max_texels,
                    "texels (maxTexelBufferElements)",
                )
            } else {
                (
                    b.st.bytes,
                    self.max_storage_range,
                    "bytes (maxStorageBufferRange)",
                )
            };
            if size > limit {
                return Err(Error::Other(format!(
                    "{} kernel: a tensor of {} bytes is larger than {} allows: {size} > {limit} {what}",
                    label(), b.st.bytes, self.info.name
                )));
            }
        }
        let accesses: SmallVec<[Access; 4]> = binds
            .iter()
            .map(|b| Access {
                buf: &b.st.buf,
                write: b.write,
            })
            .collect();
        let infos: SmallVec<[vk::DescriptorBufferInfo; 4]> = binds
            .iter()
            .map(|b| {
                vk::DescriptorBufferInfo::default()
                    .buffer(b.st.buf.sub.buffer().handle())
                    .offset(b.st.buf.sub.offset())
                    .range(b.st.bytes.max(4))
            })
            .collect();
        let views: SmallVec<[vk::BufferView; 4]> = binds
            .iter()
            .map(|b| {
                if b.texels {
                    b.st.buf.texel_view().map(|v| v.handle())
                } else {
                    Ok(vk::BufferView::null())
                }
            })
            .collect::<Result<_>>()?;
        let writes: SmallVec<[vk::WriteDescriptorSet; 4]> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let w = vk::WriteDescriptorSet::default().dst_binding(i as u32);
                if b.texels {
                    w.descriptor_type(vk::DescriptorType::UNIFORM_TEXEL_BUFFER)
                        .texel_buffer_view(std::slice::from_ref(&views[i]))
                } else {
                    w.descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                        .buffer_info(std::slice::from_ref(&infos[i]))
                }
            })
            .collect();
        let fns = self.device.fns();
        let mut rec = self.rec();
        let cb = rec.prepare(&accesses)?;
        unsafe {
            (fns.v1_0.cmd_bind_pipeline)(
                cb,
                vk::PipelineBindPoint::COMPUTE,
                pipeline.pipeline.handle(),
            );
            (fns.khr_push_descriptor.cmd_push_descriptor_set_khr)(
                cb,
                vk::PipelineBindPoint::COMPUTE,
                pipeline.layout.handle(),
                0,
                writes.len() as u32,
                writes.as_ptr(),
            );
            if !push.is_empty() {
                (fns.v1_0.cmd_push_constants)(
                    cb,
                    pipeline.layout.handle(),
                    vk::ShaderStageFlags::COMPUTE,
                    0,
                    push.len() as u32,
                    push.as_ptr().cast(),
                );
            }
            (fns.v1_0.cmd_dispatch)(cb, groups[0], groups[1], groups[2]);
        }
        rec.count_dispatch()?;
        let capturing = rec.capturing();
        drop(rec);
        // (A step being recorded for replay does not run now: nothing to time.)
        if let Some(p) = self.profile.as_ref().filter(|_| !capturing) {
            let start = std::time::Instant::now();
            self.sync()?;
            let mut p = lock(p);
            let e = p.entry(label()).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += start.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Whether each dispatch is timed (`VKGRAD_PROFILE=1`): a step recorded for replay is not
    /// (its kernels run in one submission), so training runs op by op while profiling.
    pub fn profiling(&self) -> bool {
        self.profile.is_some()
    }

    /// With `VKGRAD_PROFILE=1`: dispatch counts and seconds per kernel, slowest first.
    pub fn profile_report(&self) -> Option<String> {
        let p = lock(self.profile.as_ref()?);
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let total: f64 = rows.iter().map(|r| r.1 .1).sum();
        let mut out = format!("kernel time {total:.3} s\n");
        for (k, (n, t)) in rows {
            out += &format!(
                "{:>8.3} s {:>5.1}% {n:>8} x {k}\n",
                t,
                100.0 * t / total.max(1e-12)
            );
        }
        Some(out)
    }

    /// Fills `bytes` of `dst` with a repeated 32-bit pattern.
    pub(crate) fn fill(&self, dst: &Storage, bits: u32) -> Result<()> {
        let mut rec = self.rec();
        let cb = rec.prepare(&[Access {
            buf: &dst.buf,
            write: true,
        }])?;
        let size = dst.bytes.max(4);
        unsafe {
            (self.device.fns().v1_0.cmd_fill_buffer)(
                cb,
                dst.buf.sub.buffer().handle(),
                dst.buf.sub.offset(),
                size,
                bits,
            )
        };
        Ok(())
    }

    /// A host-visible buffer for transfers to or from the device.
    fn staging(
        &self,
        usage: BufferUsage,
        access: MemoryTypeFilter,
        bytes: u64,
    ) -> Result<Subbuffer<[u8]>> {
        Buffer::new_slice::<u8>(
            self.mem.clone(),
            BufferCreateInfo {
                usage,
                ..Default::default()
            },
            AllocationCreateInfo {
                memory_type_filter: MemoryTypeFilter::PREFER_HOST | access,
                ..Default::default()
            },
            bytes,
        )
        .map_err(|e| super::pool::alloc_error(bytes, e))
    }

    /// Copies host bytes into a new device buffer (through a staging buffer kept alive until
    /// the copy has run).
    pub(crate) fn upload(&self, data: &[u8]) -> Result<Arc<Storage>> {
        let st = self.alloc(data.len() as u64)?;
        self.write(&st, data)?;
        Ok(st)
    }

    /// Copies host data into the start of a device buffer (recorded, through a staging
    /// buffer).
    pub(crate) fn write(&self, st: &Storage, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if data.len() as u64 > st.bytes {
            return Err(Error::Other(format!(
                "internal error: writing {} bytes into a buffer of {}",
                data.len(),
                st.bytes
            )));
        }
        let staging = self.staging(
            BufferUsage::TRANSFER_SRC,
            MemoryTypeFilter::HOST_SEQUENTIAL_WRITE,
            data.len() as u64,
        )?;
        staging
            .write()
            .map_err(|e| Error::vulkan("writing a staging buffer", e))?
            .copy_from_slice(data);
        let mut rec = self.rec();
        let cb = rec.prepare(&[Access {
            buf: &st.buf,
            write: true,
        }])?;
        let region = vk::BufferCopy {
            src_offset: staging.offset(),
            dst_offset: st.buf.sub.offset(),
            size: data.len() as u64,
        };
        unsafe {
            (self.device.fns().v1_0.cmd_copy_buffer)(
                cb,
                staging.buffer().handle(),
                st.buf.sub.buffer().handle(),
                1,
                &region,
            )
        };
        rec.keep(staging);
        Ok(())
    }

    /// Reads `bytes` back from a device buffer; this submits everything recorded so far.
    pub(crate) fn download(&self, src: &Storage, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.staging(
            BufferUsage::TRANSFER_DST,
            MemoryTypeFilter::HOST_RANDOM_ACCESS,
            bytes,
        )?;
        {
            let mut rec = self.rec();
            // The staging buffer is fresh, so only the source read needs tracking.
            let cb = rec.prepare(&[Access {
                buf: &src.buf,
                write: false,
            }])?;
            let region = vk::BufferCopy {
                src_offset: src.buf.sub.offset(),
                dst_offset: staging.offset(),
                size: bytes,
            };
            unsafe {
                (self.device.fns().v1_0.cmd_copy_buffer)(
                    cb,
                    src.buf.sub.buffer().handle(),
                    staging.buffer().handle(),
                    1,
                    &region,
                )
            };
            rec.flush()?;
        }
        let guard = staging
            .read()
            .map_err(|e| Error::vulkan("reading a staging buffer", e))?;
        Ok(guard.to_vec())
    }

    /// Copies `bytes` from one device buffer to another (in order with the other commands).
    pub(crate) fn copy(&self, src: &Storage, dst: &Storage, bytes: u64) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let mut rec = self.rec();
        let cb = rec.prepare(&[
            Access {
                buf: &src.buf,
                write: false,
            },
            Access {
                buf: &dst.buf,
                write: true,
            },
        ])?;
        let region = vk::BufferCopy {
            src_offset: src.buf.sub.offset(),
            dst_offset: dst.buf.sub.offset(),
            size: bytes,
        };
        unsafe {
            (self.device.fns().v1_0.cmd_copy_buffer)(
                cb,
                src.buf.sub.buffer().handle(),
                dst.buf.sub.buffer().handle(),
                1,
                &region,
            )
        };
        Ok(())
    }

    /// The recorder, once no other thread is recording a step for replay: a recording holds
    /// the commands of its own thread only, so device work from other threads (a test beside
    /// it, a loader thread) waits until it ends rather than landing in it or failing.
    fn rec(&self) -> MutexGuard<'_, Recorder> {
        let me = std::thread::current().id();
        let mut rec = lock(&self.rec);
        while rec.capture_thread().is_some_and(|t| t != me) {
            rec = self
                .capture_ended
                .wait(rec)
                .unwrap_or_else(|p| p.into_inner());
        }
        rec
    }

    /// Starts recording a step for replay on this thread (`replay.rs`): until
    /// [`Context::end_capture`] the commands are recorded, not run.
    pub(crate) fn begin_capture(&self) -> Result<()> {
        let mut rec = self.rec();
        rec.begin_capture()?;
        lock(&self.pool).begin_capture();
        Ok(())
    }

    /// Whether this thread is recording a step for replay (values cannot be read back).
    pub(crate) fn capturing(&self) -> bool {
        self.rec().capturing()
    }

    /// Refuses (`why`, noted as the recording's refusal) what a step recorded for replay may
    /// not do; Ok outside a recording.
    pub(crate) fn refuse_while_capturing(&self, why: &str) -> Result<()> {
        let mut rec = self.rec();
        if rec.capturing() {
            return Err(rec.refuse(why.to_string()));
        }
        Ok(())
    }

    /// Why the step being recorded cannot be replayed, once something it did was refused.
    pub(crate) fn capture_refusal(&self) -> Option<String> {
        self.rec().refusal()
    }

    /// Ends the recording; `keep` false drops it (the step failed).
    pub(crate) fn end_capture(&self, keep: bool) -> Result<Option<Recorded>> {
        let ended = {
            let mut rec = self.rec();
            lock(&self.pool).end_capture();
            rec.end_capture(keep)
        };
        self.capture_ended.notify_all();
        ended
    }

    /// Submits a recorded step after everything recorded so far (not waiting for it).
    pub(crate) fn submit_recorded(&self, r: &mut Recorded) -> Result<()> {
        // The segments the recording already ran are skipped on the first submission.
        let start = std::mem::take(&mut r.ran);
        for i in start..r.segments() {
            self.rec().submit_recorded_segment(r, i)?;
            if i < r.hosts.len() {
                // The host step reads the segment's results: it must have finished.
                self.rec().wait_recorded_segment(r, i)?;
                (r.hosts[i])()?;
            }
        }
        Ok(())
    }

    /// Host work inside device work (a collective of a data-parallel step): outside a
    /// recording it runs now; while a step is recorded for replay, the segment recorded so
    /// far is ended and run, `step` runs now (its read-backs and writes op by op), and the
    /// recording goes on in a new segment — every replay runs `step` again at this point,
    /// between the two segments. `step` must read and write only buffers it holds (the
    /// recording's), with no other host state that changes per step.
    pub(crate) fn host_step(&self, mut step: super::recorder::HostStep) -> Result<()> {
        if !self.capturing() {
            return step();
        }
        // While the capture is suspended, this thread's work runs op by op and other threads'
        // still waits for the recording to end.
        let capture = self.rec().split_capture()?;
        let ran = step();
        let resumed = self.rec().resume_capture(capture, step);
        ran.and(resumed)
    }

    /// Frees a recorded step when its work is done.
    pub(crate) fn release_recorded(&self, r: Recorded) {
        self.rec().release(r)
    }

    /// (maxStorageBufferRange in bytes, maxTexelBufferElements): the largest tensor an op can
    /// take is bounded by the first.
    pub fn buffer_limits(&self) -> (u64, u64) {
        (self.max_storage_range, self.max_texels)
    }

    /// Submits everything recorded and waits for it.
    pub fn sync(&self) -> Result<()> {
        self.rec().flush()
    }

    /// Device buffers created since start; reusing a pooled buffer creates none.
    pub fn buffers_created(&self) -> u64 {
        self.buffers_created
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Dispatch, barrier and submit counters since start.
    pub fn stats(&self) -> Stats {
        self.rec().stats
    }
}
