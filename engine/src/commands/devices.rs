//! `vkgrad devices`: every Vulkan device, and which one vkgrad uses.

use vkgrad::device::{self, DeviceChoice};
use vkgrad::Result;

pub fn devices(choice: &DeviceChoice, json: bool) -> Result<()> {
    let devices = device::list_devices(choice)?;
    if json {
        println!("{}", serde_json::json!({ "devices": devices }));
        return Ok(());
    }
    for d in &devices {
        let mark = if d.chosen { "*" } else { " " };
        println!("{mark} {}: {} ({})", d.index, d.name, d.kind);
        println!(
            "      driver {} {}, Vulkan {}",
            d.driver, d.driver_info, d.api_version
        );
        let heaps: Vec<String> = d
            .memory_heaps
            .iter()
            .map(|h| {
                format!(
                    "{:.1} GiB{}",
                    h.bytes as f64 / (1u64 << 30) as f64,
                    if h.device_local { " device-local" } else { "" }
                )
            })
            .collect();
        println!("      memory heaps: {}", heaps.join(", "));
        let sg = d
            .subgroup_size
            .map_or("unknown".to_string(), |s| s.to_string());
        let [x, y, z] = d.max_workgroup_size;
        println!(
            "      subgroup size {sg}, max workgroup {x}x{y}x{z} ({} invocations)",
            d.max_workgroup_invocations
        );
        if !(d.has_compute_queue && d.push_descriptor) {
            println!("      not usable: needs a compute queue and VK_KHR_push_descriptor");
        }
    }
    if !devices.iter().any(|d| d.chosen) {
        device::resolve_device(choice)?; // the error that says why
    }
    println!("(* = the device vkgrad uses; choose with --device N|NAME or VKGRAD_DEVICE)");
    Ok(())
}
