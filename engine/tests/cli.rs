//! The `vkgrad` command line, run as a user would.

mod common;

use common::vkgrad;

#[test]
fn devices_lists_and_marks_the_chosen_one() {
    let (ok, out, err) = vkgrad(&["devices"], &[]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("* 0:")), "{out}");
    assert!(
        out.contains("subgroup size")
            && out.contains("memory heaps")
            && out.contains("max workgroup"),
        "{out}"
    );
    let (ok, json, _) = vkgrad(&["devices", "--json"], &[]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.iter().filter(|d| d["chosen"] == true).count(), 1);
    assert!(devices[0]["api_version"].is_string() && devices[0]["memory_heaps"].is_array());
}

#[test]
fn unknown_device_is_a_clear_error() {
    let (ok, _, err) = vkgrad(&["--device", "99", "devices"], &[]);
    assert!(!ok);
    assert!(
        err.contains("device '99' not found") && err.contains("vkgrad devices"),
        "{err}"
    );
    let (ok, _, err) = vkgrad(
        &["bench", "--quick", "--filter", "op_chain"],
        &[("VKGRAD_DEVICE", "no-such-gpu")],
    );
    assert!(!ok);
    assert!(err.contains("device 'no-such-gpu' not found"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn no_driver_says_what_to_install() {
    // Point the loader at a driver list that does not exist: no device at all.
    let (ok, _, err) = vkgrad(
        &["devices"],
        &[
            ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
            ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_json_has_the_documented_shape() {
    let (ok, out, err) = vkgrad(&["bench", "--quick", "--json", "--filter", "op_chain"], &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["device"].is_string());
    let r = &v["results"][0];
    assert_eq!(r["name"], "op_chain");
    assert!(r["ms"].as_f64().unwrap() > 0.0 && r["us_per_op"].as_f64().unwrap() > 0.0);
    // The same chain replayed: the host's time per run is reported.
    let r = &v["results"][1];
    assert_eq!(
        (&r["name"], &r["path"]),
        (&"op_chain".into(), &"replay".into())
    );
    assert!(r["host_us"].as_f64().unwrap() > 0.0);
    assert!(v["kernel_cache"]["generated_memory_hits"].is_u64());
}

/// (compiled, read from disk) generated kernels of one `op_chain` bench run.
fn op_chain_cache(env: &[(&str, &str)]) -> (u64, u64, String) {
    let (ok, out, err) = vkgrad(&["bench", "--quick", "--json", "--filter", "op_chain"], env);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v["kernel_cache"];
    (
        c["generated_compiled"].as_u64().unwrap(),
        c["generated_disk_hits"].as_u64().unwrap(),
        err,
    )
}

#[test]
fn a_second_run_compiles_no_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels");
    let env = [("VKGRAD_KERNEL_CACHE", cache.to_str().unwrap())];
    let (compiled, from_disk, _) = op_chain_cache(&env);
    assert!(compiled > 0 && from_disk == 0, "{compiled} {from_disk}");
    let (again, from_disk, _) = op_chain_cache(&env);
    assert_eq!((again, from_disk), (0, compiled));
    // The driver's pipeline data is kept per driver, beside the SPIR-V.
    assert_eq!(
        std::fs::read_dir(cache.join("pipelines")).unwrap().count(),
        1
    );
    // off: nothing read or written.
    let (compiled, from_disk, _) = op_chain_cache(&[("VKGRAD_KERNEL_CACHE", "off")]);
    assert!(compiled > 0 && from_disk == 0);
}

#[test]
fn an_unwritable_kernel_cache_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let inside = file.join("kernels");
    let (compiled, _, err) = op_chain_cache(&[("VKGRAD_KERNEL_CACHE", inside.to_str().unwrap())]);
    assert!(compiled > 0);
    assert_eq!(
        err.matches("cannot write the kernel cache").count(),
        1,
        "{err}"
    );
    assert!(err.contains("VKGRAD_KERNEL_CACHE"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn tensors_past_the_device_limit_are_refused() {
    let ctx = vkgrad::device::context().unwrap();
    let (max_bytes, _) = ctx.buffer_limits();
    if max_bytes > 512 << 20 {
        eprintln!("skipped: this device binds {max_bytes} bytes; the test allocates just past it only below 512 MiB");
        return;
    }
    let n = (max_bytes / 4 + 1024) as usize;
    let x = vkgrad::Tensor::zeros(&[n]).unwrap();
    let e = x.add_scalar(1.0).unwrap_err().to_string();
    assert!(
        e.contains("maxStorageBufferRange") || e.contains("maxTexelBufferElements"),
        "{e}"
    );
    let e = vkgrad::Tensor::zeros(&[usize::MAX, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("has too many elements"), "{e}");
}
