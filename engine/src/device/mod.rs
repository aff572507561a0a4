//! Layer 1: the Vulkan instance, device listing and choice, and the process-wide [`Context`]
//! that owns the device, the buffer pool, the pipeline cache and the command recorder.

pub mod caps;
mod context;
mod disk_cache;
mod kernels;
mod pool;
pub(crate) mod push;
mod recorder;
mod runtime;

pub use context::{
    context, dispatch_count, save_kernel_cache, select_device, Context, KernelCacheStats,
};
pub(crate) use context::{grid, Bind};
pub(crate) use kernels::Kernel;
pub(crate) use pool::Storage;
pub(crate) use recorder::Recorded;
pub use recorder::Stats;

use crate::error::{Error, Result};
use serde::Serialize;
use std::sync::{Arc, OnceLock};
use vulkano::device::physical::{PhysicalDevice, PhysicalDeviceType};
use vulkano::device::QueueFlags;
use vulkano::instance::{Instance, InstanceCreateFlags, InstanceCreateInfo, InstanceExtensions};
use vulkano::VulkanLibrary;

/// What `vkgrad devices` shows about one Vulkan device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    pub index: usize,
    pub name: String,
    /// "discrete GPU", "integrated GPU", "virtual GPU", "CPU" or "other".
    pub kind: String,
    pub driver: String,
    pub driver_info: String,
    pub api_version: String,
    /// (size in bytes, device-local) for each memory heap.
    pub memory_heaps: Vec<MemoryHeap>,
    pub subgroup_size: Option<u32>,
    pub max_workgroup_size: [u32; 3],
    pub max_workgroup_invocations: u32,
    pub has_compute_queue: bool,
    pub push_descriptor: bool,
    /// Whether this is the device vkgrad uses with the current choice.
    pub chosen: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryHeap {
    pub bytes: u64,
    pub device_local: bool,
}

/// Which device to use: the best by type, a position in the list, or a name (substring match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    /// The n-th (modulo their number) of the devices of the best type: rank n of a
    /// data-parallel job on one machine takes its own GPU.
    AutoNth(usize),
    Index(usize),
    Name(String),
}

impl DeviceChoice {
    /// Parses `--device N|NAME` / `VKGRAD_DEVICE`: a number is an index, anything else a name.
    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            DeviceChoice::Auto
        } else if let Ok(i) = s.parse() {
            DeviceChoice::Index(i)
        } else {
            DeviceChoice::Name(s.to_string())
        }
    }

    /// The choice from `VKGRAD_DEVICE`, or `Auto`.
    pub fn from_env() -> Self {
        std::env::var("VKGRAD_DEVICE")
            .map(|v| Self::parse(&v))
            .unwrap_or(DeviceChoice::Auto)
    }
}

fn instance() -> Result<Arc<Instance>> {
    static INSTANCE: OnceLock<Result<Arc<Instance>>> = OnceLock::new();
    INSTANCE
        .get_or_init(|| {
            let library = VulkanLibrary::new().map_err(|e| Error::NoLoader(e.to_string()))?;
            // MoltenVK (Apple) only lists its devices to instances that accept portability drivers.
            let portability = library.supported_extensions().khr_portability_enumeration;
            let info = InstanceCreateInfo {
                flags: if portability {
                    InstanceCreateFlags::ENUMERATE_PORTABILITY
                } else {
                    InstanceCreateFlags::empty()
                },
                enabled_extensions: InstanceExtensions {
                    khr_portability_enumeration: portability,
                    ..InstanceExtensions::empty()
                },
                application_name: Some("vkgrad".into()),
                ..Default::default()
            };
            // Without any driver the loader refuses the instance (VK_ERROR_INCOMPATIBLE_DRIVER).
            Instance::new(library, info).map_err(|e| Error::NoDriver(format!("{e:?}")))
        })
        .clone()
}

fn physical_devices() -> Result<Vec<Arc<PhysicalDevice>>> {
    let devices: Vec<_> = instance()?
        .enumerate_physical_devices()
        .map_err(|e| Error::vulkan("listing devices", e))?
        .collect();
    if devices.is_empty() {
        return Err(Error::NoDevice);
    }
    Ok(devices)
}

fn kind_rank(t: PhysicalDeviceType) -> (u32, &'static str) {
    match t {
        PhysicalDeviceType::DiscreteGpu => (0, "discrete GPU"),
        PhysicalDeviceType::IntegratedGpu => (1, "integrated GPU"),
        PhysicalDeviceType::VirtualGpu => (2, "virtual GPU"),
        PhysicalDeviceType::Cpu => (3, "CPU"),
        _ => (4, "other"),
    }
}

fn describe(index: usize, pd: &PhysicalDevice) -> DeviceInfo {
    let p = pd.properties();
    let mem = pd.memory_properties();
    DeviceInfo {
        index,
        name: p.device_name.clone(),
        kind: kind_rank(p.device_type).1.to_string(),
        driver: p
            .driver_name
            .clone()
            .unwrap_or_else(|| format!("{:?}", p.driver_id)),
        driver_info: p.driver_info.clone().unwrap_or_default(),
        api_version: pd.api_version().to_string(),
        memory_heaps: mem
            .memory_heaps
            .iter()
            .map(|h| MemoryHeap {
                bytes: h.size,
                device_local: h
                    .flags
                    .contains(vulkano::memory::MemoryHeapFlags::DEVICE_LOCAL),
            })
            .collect(),
        subgroup_size: p.subgroup_size,
        max_workgroup_size: p.max_compute_work_group_size,
        max_workgroup_invocations: p.max_compute_work_group_invocations,
        has_compute_queue: pd
            .queue_family_properties()
            .iter()
            .any(|q| q.queue_flags.intersects(QueueFlags::COMPUTE)),
        push_descriptor: pd.supported_extensions().khr_push_descriptor,
        chosen: false,
    }
}

/// Picks a device: by index or name if asked, else discrete GPU > integrated > virtual > CPU
/// among the devices that can run vkgrad (a compute queue and push descriptors).
fn choose(infos: &[DeviceInfo], choice: &DeviceChoice) -> Result<usize> {
    let usable = |d: &DeviceInfo| d.has_compute_queue && d.push_descriptor;
    let names = || {
        infos
            .iter()
            .map(|d| format!("{}: {}", d.index, d.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pick = |d: &DeviceInfo, asked: String| {
        if usable(d) {
            Ok(d.index)
        } else {
            Err(Error::DeviceNotFound(
                asked,
                format!(
                    "'{}' lacks a compute queue or VK_KHR_push_descriptor",
                    d.name
                ),
            ))
        }
    };
    match choice {
        DeviceChoice::Index(i) => match infos.get(*i) {
            Some(d) => pick(d, i.to_string()),
            None => Err(Error::DeviceNotFound(
                i.to_string(),
                format!("there are {} devices ({})", infos.len(), names()),
            )),
        },
        DeviceChoice::Name(n) => {
            let lower = n.to_lowercase();
            match infos
                .iter()
                .find(|d| d.name.to_lowercase().contains(&lower))
            {
                Some(d) => pick(d, n.clone()),
                None => Err(Error::DeviceNotFound(
                    n.clone(),
                    format!("no device name contains it ({})", names()),
                )),
            }
        }
        DeviceChoice::Auto => choose(infos, &DeviceChoice::AutoNth(0)),
        DeviceChoice::AutoNth(n) => {
            let best = infos
                .iter()
                .filter(|d| usable(d))
                .map(|d| kind_rank_of(&d.kind))
                .min()
                .ok_or(Error::NoDevice)?;
            let of_best: Vec<usize> = infos
                .iter()
                .filter(|d| usable(d) && kind_rank_of(&d.kind) == best)
                .map(|d| d.index)
                .collect();
            Ok(of_best[n % of_best.len()])
        }
    }
}

fn kind_rank_of(kind: &str) -> u32 {
    ["discrete GPU", "integrated GPU", "virtual GPU", "CPU"]
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(4) as u32
}

/// Lists every Vulkan device, marking the one `choice` selects.
pub fn list_devices(choice: &DeviceChoice) -> Result<Vec<DeviceInfo>> {
    let pds = physical_devices()?;
    let mut infos: Vec<_> = pds
        .iter()
        .enumerate()
        .map(|(i, pd)| describe(i, pd))
        .collect();
    if let Ok(i) = choose(&infos, choice) {
        infos[i].chosen = true;
    }
    Ok(infos)
}

/// The device `choice` selects, or the error that says why there is none.
pub fn resolve_device(choice: &DeviceChoice) -> Result<DeviceInfo> {
    open(choice).map(|(_, info)| info)
}

pub(crate) fn open(choice: &DeviceChoice) -> Result<(Arc<PhysicalDevice>, DeviceInfo)> {
    let pds = physical_devices()?;
    let infos: Vec<_> = pds
        .iter()
        .enumerate()
        .map(|(i, pd)| describe(i, pd))
        .collect();
    let i = choose(&infos, choice)?;
    let mut info = infos[i].clone();
    info.chosen = true;
    Ok((pds[i].clone(), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(index: usize, kind: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            index,
            name: name.into(),
            kind: kind.into(),
            driver: String::new(),
            driver_info: String::new(),
            api_version: "1.3".into(),
            memory_heaps: vec![],
            subgroup_size: None,
            max_workgroup_size: [1024, 1024, 64],
            max_workgroup_invocations: 1024,
            has_compute_queue: true,
            push_descriptor: true,
            chosen: false,
        }
    }

    #[test]
    fn auto_prefers_discrete_then_integrated_then_cpu() {
        let ds = vec![
            dev(0, "CPU", "llvmpipe"),
            dev(1, "integrated GPU", "Intel"),
            dev(2, "discrete GPU", "AMD"),
        ];
        assert_eq!(choose(&ds, &DeviceChoice::Auto).unwrap(), 2);
        assert_eq!(choose(&ds[..2], &DeviceChoice::Auto).unwrap(), 1);
        assert_eq!(choose(&ds[..1], &DeviceChoice::Auto).unwrap(), 0);
    }

    #[test]
    fn explicit_choice_by_index_and_name() {
        let ds = vec![
            dev(0, "CPU", "llvmpipe"),
            dev(1, "discrete GPU", "NVIDIA H100"),
        ];
        assert_eq!(choose(&ds, &DeviceChoice::parse("0")).unwrap(), 0);
        assert_eq!(choose(&ds, &DeviceChoice::parse("h100")).unwrap(), 1);
        let e = choose(&ds, &DeviceChoice::parse("7"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device '7' not found") && e.contains("there are 2 devices"),
            "{e}"
        );
        let e = choose(&ds, &DeviceChoice::parse("radeon"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'radeon' not found"), "{e}");
    }

    #[test]
    fn unusable_devices_are_skipped_or_refused() {
        let mut d = dev(0, "discrete GPU", "old");
        d.push_descriptor = false;
        let ds = vec![d, dev(1, "CPU", "llvmpipe")];
        assert_eq!(choose(&ds, &DeviceChoice::Auto).unwrap(), 1);
        assert!(choose(&ds, &DeviceChoice::Index(0))
            .unwrap_err()
            .to_string()
            .contains("VK_KHR_push_descriptor"));
    }
}
