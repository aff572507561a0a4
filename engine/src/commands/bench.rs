//! `vkgrad bench`: matmul, elementwise add, per-op overhead and a SimCLR step.

use vkgrad::device::{self, DeviceChoice};
use vkgrad::{Error, Result};

pub fn bench(choice: DeviceChoice, json: bool, filter: Option<&str>, quick: bool) -> Result<()> {
    if let Some(f) = filter {
        if !vkgrad::bench::NAMES.iter().any(|n| n.contains(f)) {
            return Err(Error::Other(format!(
                "--filter {f} matches no benchmark; the benchmarks are: {}",
                vkgrad::bench::NAMES.join(", ")
            )));
        }
    }
    device::select_device(choice)?;
    let ctx = device::context()?;
    if !json {
        println!(
            "device: {} ({}, {})",
            ctx.info.name, ctx.info.kind, ctx.info.driver
        );
    }
    let results = vkgrad::bench::run(filter, quick, |r| {
        if !json {
            println!("{}", r.describe());
        }
    })?;
    let cache = ctx.kernel_cache_stats();
    if json {
        println!(
            "{}",
            serde_json::json!({ "device": ctx.info.name, "results": results, "kernel_cache": cache })
        );
    } else {
        let found = cache.generated_memory_hits + cache.generated_disk_hits;
        let asked = found + cache.generated_compiled;
        println!(
            "kernel cache: {} generated kernels compiled, {} read from disk, {} found in memory \
             ({:.1}% of {asked} generated-kernel dispatches needed no compile); {} pipelines created",
            cache.generated_compiled,
            cache.generated_disk_hits,
            cache.generated_memory_hits,
            100.0 * found as f64 / asked.max(1) as f64,
            cache.pipelines_created,
        );
    }
    Ok(())
}
