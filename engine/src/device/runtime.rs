//! Kernels generated at run time (the lazy graph's fused elementwise kernels): GLSL compiled
//! to SPIR-V with shaderc — the same library vulkano-shaders uses for the built-in kernels at
//! build time — then built into a pipeline like those.

use super::disk_cache;
use super::kernels::{build_module, Pipeline};
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use vulkano::device::Device;
use vulkano::pipeline::cache::PipelineCache;
use vulkano::shader::{ShaderModule, ShaderModuleCreateInfo};

/// GLSL → SPIR-V words. The compiler is made once (it is not `Sync`; compiles are serialised).
pub(crate) fn compile(source: &str) -> Result<Vec<u32>> {
    static COMPILER: OnceLock<Option<Mutex<shaderc::Compiler>>> = OnceLock::new();
    let compiler = COMPILER
        .get_or_init(|| shaderc::Compiler::new().map(Mutex::new))
        .as_ref()
        .ok_or_else(|| Error::Other("shaderc: could not create the GLSL compiler".into()))?;
    let mut opts = shaderc::CompileOptions::new()
        .ok_or_else(|| Error::Other("shaderc: could not create compile options".into()))?;
    opts.set_target_env(
        shaderc::TargetEnv::Vulkan,
        shaderc::EnvVersion::Vulkan1_0 as u32,
    );
    let compiler = compiler.lock().unwrap_or_else(|p| p.into_inner());
    let artifact = compiler
        .compile_into_spirv(
            source,
            shaderc::ShaderKind::Compute,
            "fused.comp",
            "main",
            Some(&opts),
        )
        // A generated kernel that does not compile is a bug in vkgrad: say so, with the source.
        .map_err(|e| {
            Error::Other(format!(
                "a generated kernel failed to compile (a bug in vkgrad): {e}\n{source}"
            ))
        })?;
    Ok(artifact.as_binary().to_vec())
}

/// Builds the pipeline of `source`, compiling it unless the on-disk cache in `dir` has its
/// SPIR-V; says whether it was compiled.
pub(crate) fn build(
    device: &Arc<Device>,
    cache: Option<&Arc<PipelineCache>>,
    dir: Option<&Path>,
    source: &str,
) -> Result<(Pipeline, bool)> {
    let cached = dir.and_then(|d| disk_cache::spirv_get(d, source));
    let compiled = cached.is_none();
    let words = match cached {
        Some(w) => w,
        None => {
            let w = compile(source)?;
            if let Some(d) = dir {
                disk_cache::spirv_put(d, source, &w);
            }
            w
        }
    };
    // SAFETY: the words are SPIR-V produced by shaderc from our own source, for Vulkan 1.0 —
    // now, or in an earlier run and read back only for this exact source (disk_cache.rs).
    let module = unsafe { ShaderModule::new(device.clone(), ShaderModuleCreateInfo::new(&words)) }
        .map_err(|e| Error::vulkan("loading a generated kernel", e))?;
    Ok((
        build_module(device, cache, module, &[], "a generated kernel")?,
        compiled,
    ))
}
