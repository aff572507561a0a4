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
    if json {
        println!(
            "{}",
            serde_json::json!({ "device": ctx.info.name, "results": results })
        );
    }
    Ok(())
}
