//! Kernels generated at run time (the lazy graph's fused elementwise kernels): GLSL compiled
//! to SPIR-V with shaderc — the same library vulkano-shaders uses for the built-in kernels at
//! build time — then built into a pipeline like those.

use super::kernels::{build_module, Pipeline};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex, OnceLock};
use vulkano::device::Device;
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

/// Compiles `source` and builds its pipeline.
pub(crate) fn build(device: &Arc<Device>, source: &str) -> Result<Pipeline> {
    let words = compile(source)?;
    // SAFETY: the words are SPIR-V just produced by shaderc from our own source, for Vulkan 1.0.
    let module = unsafe { ShaderModule::new(device.clone(), ShaderModuleCreateInfo::new(&words)) }
        .map_err(|e| Error::vulkan("loading a generated kernel", e))?;
    build_module(device, module, &[], "a generated kernel")
}
