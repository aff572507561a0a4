//! The GLSL kernels of `shaders/`, compiled to SPIR-V at build time by vulkano-shaders, and
//! turned into compute pipelines once per (kernel, specialisation constants).

use crate::error::{Error, Result};
use std::sync::Arc;
use vulkano::descriptor_set::layout::DescriptorSetLayoutCreateFlags;
use vulkano::device::Device;
use vulkano::pipeline::cache::PipelineCache;
use vulkano::pipeline::compute::ComputePipelineCreateInfo;
use vulkano::pipeline::layout::PipelineDescriptorSetLayoutCreateInfo;
use vulkano::pipeline::{ComputePipeline, PipelineLayout, PipelineShaderStageCreateInfo};
use vulkano::shader::{ShaderModule, SpecializationConstant};

macro_rules! kernels {
    ($($variant:ident => $module:ident, $path:literal;)*) => {
        $(mod $module {
            vulkano_shaders::shader! { ty: "compute", path: $path, include: ["../shaders"] }
        })*

        /// One kernel family = one file in `shaders/`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Kernel { $($variant),* }

        impl Kernel {
            /// Every kernel.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Kernel] = &[$(Kernel::$variant),*];

            /// The kernel's GLSL source (for checks against the Rust side).
            #[cfg(test)]
            pub(crate) fn source(self) -> &'static str {
                match self {
                    $(Kernel::$variant => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)),)*
                }
            }

            fn load(self, device: Arc<Device>) -> Result<Arc<ShaderModule>> {
                match self {
                    $(Kernel::$variant => $module::load(device)
                        .map_err(|e| Error::vulkan(concat!("loading ", $path), e)),)*
                }
            }
        }
    };
}

kernels! {
    Unary => unary_cs, "../shaders/unary.comp";
    Binary => binary_cs, "../shaders/binary.comp";
    Where => where_cs, "../shaders/where.comp";
    Copy => copy_cs, "../shaders/copy.comp";
    Random => random_cs, "../shaders/random.comp";
    Reduce => reduce_cs, "../shaders/reduce.comp";
    Rowwise => rowwise_cs, "../shaders/rowwise.comp";
    Matmul => matmul_cs, "../shaders/matmul.comp";
    MatmulLanes => matmul_lanes_cs, "../shaders/matmul_lanes.comp";
    MatmulTiled => matmul_tiled_cs, "../shaders/matmul_tiled.comp";
    Index => index_cs, "../shaders/index.comp";
    Im2col => im2col_cs, "../shaders/im2col.comp";
    Pool => pool_cs, "../shaders/pool.comp";
    Resample => resample_cs, "../shaders/resample.comp";
    Similarity => similarity_cs, "../shaders/similarity.comp";
}

/// A built pipeline and its layout (descriptors are pushed, not allocated: set 0 is a
/// push-descriptor set, so recording a dispatch allocates nothing).
pub(crate) struct Pipeline {
    pub pipeline: Arc<ComputePipeline>,
    pub layout: Arc<PipelineLayout>,
}

pub(crate) fn build(
    device: &Arc<Device>,
    cache: Option<&Arc<PipelineCache>>,
    kernel: Kernel,
    spec: &[u32],
) -> Result<Pipeline> {
    let module = kernel.load(device.clone())?;
    build_module(
        device,
        cache,
        module,
        spec,
        &format!("kernel {kernel:?} {spec:?}"),
    )
}

/// A pipeline from a shader module (built in or generated at run time), through the driver's
/// pipeline cache where there is one (`device/disk_cache.rs`); `label` names it in errors.
pub(crate) fn build_module(
    device: &Arc<Device>,
    cache: Option<&Arc<PipelineCache>>,
    module: Arc<ShaderModule>,
    spec: &[u32],
    label: &str,
) -> Result<Pipeline> {
    let ctx = |what: &str| format!("{what} for {label}");
    let module = module
        .specialize(
            spec.iter()
                .enumerate()
                .map(|(i, v)| (i as u32, SpecializationConstant::U32(*v)))
                .collect(),
        )
        .map_err(|e| Error::vulkan(ctx("specialising"), e))?;
    let entry = module
        .entry_point("main")
        .ok_or_else(|| Error::vulkan(ctx("finding entry point"), "no `main`"))?;
    let stage = PipelineShaderStageCreateInfo::new(entry);
    let mut set_layouts = PipelineDescriptorSetLayoutCreateInfo::from_stages([&stage]);
    for set in &mut set_layouts.set_layouts {
        set.flags |= DescriptorSetLayoutCreateFlags::PUSH_DESCRIPTOR;
    }
    let layout_info = set_layouts
        .into_pipeline_layout_create_info(device.clone())
        .map_err(|e| Error::vulkan(ctx("creating the pipeline layout"), format!("{e:?}")))?;
    let layout = PipelineLayout::new(device.clone(), layout_info)
        .map_err(|e| Error::vulkan(ctx("creating the pipeline layout"), e))?;
    let pipeline = ComputePipeline::new(
        device.clone(),
        cache.cloned(),
        ComputePipelineCreateInfo::stage_layout(stage, layout.clone()),
    )
    .map_err(|e| Error::vulkan(ctx("creating the pipeline"), e))?;
    Ok(Pipeline { pipeline, layout })
}
