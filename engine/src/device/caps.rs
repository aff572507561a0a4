//! What kernel choice needs to know about the device, read once when the context opens. Each
//! op family picks its kernel variant in one function from these (`ops/matmul.rs: variant`,
//! `ops/reduce.rs: grouped`, `ops/rowwise.rs: grouped`), never from a driver name.

use vulkano::device::physical::{PhysicalDevice, PhysicalDeviceType};

/// The device's capabilities as the kernels see them.
#[derive(Clone, Debug)]
pub struct Caps {
    /// Workgroup kernels (rows and tiles shared by a workgroup through shared memory and
    /// barriers) suit GPUs; CPU drivers (lavapipe, SwiftShader) vectorise across invocations and
    /// pay for barriers, so they take one-invocation-per-row variants. From the device type;
    /// `VKGRAD_KERNELS=gpu|cpu` forces either family (the test suite runs both on lavapipe).
    pub workgroup_kernels: bool,
    /// Shared memory per workgroup in bytes (maxComputeSharedMemorySize): the tiled matmul
    /// needs [`TILED_MATMUL_SHARED`].
    pub shared_memory: u32,
    /// The subgroup size, where the driver reports it. No variant uses subgroup operations
    /// yet; it is recorded for those that will (and shown by `vkgrad devices`).
    pub subgroup_size: Option<u32>,
    /// VK_KHR_cooperative_matrix is available (tensor-core matmuls). No variant uses it yet.
    pub cooperative_matrix: bool,
    /// Loop iterations one invocation may run, where the driver caps them: llvmpipe ends all
    /// loops of an invocation after 65535 iterations in total (see shaders/common.glsl).
    pub loop_budget: Option<usize>,
}

/// Shared memory of `shaders/matmul_tiled.comp`: two 16×64 f32 tiles.
pub const TILED_MATMUL_SHARED: u32 = 2 * 16 * 64 * 4;

impl Caps {
    pub(crate) fn read(pd: &PhysicalDevice) -> Caps {
        let p = pd.properties();
        let is_cpu = p.device_type == PhysicalDeviceType::Cpu;
        let workgroup_kernels = match std::env::var("VKGRAD_KERNELS").as_deref() {
            Ok("gpu") => true,
            Ok("cpu") => false,
            _ => !is_cpu,
        };
        // llvmpipe is the CPU driver with the loop cap; it identifies as Mesa's (driver id
        // MESA_LLVMPIPE), which a device-type check alone cannot tell from SwiftShader.
        let llvmpipe = format!("{:?}", p.driver_id).contains("MesaLlvmpipe")
            || p.device_name.to_lowercase().contains("llvmpipe");
        Caps {
            workgroup_kernels,
            shared_memory: p.max_compute_shared_memory_size,
            subgroup_size: p.subgroup_size,
            cooperative_matrix: pd.supported_extensions().khr_cooperative_matrix,
            loop_budget: llvmpipe.then_some(60_000),
        }
    }
}
