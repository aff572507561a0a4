//! Shared by the tests that run the `vkgrad` binary.

use std::process::Command;

/// Runs `vkgrad` with `args` in a clean environment (no device, plugin or fixture variables
/// from the caller) plus `env`; returns (success, stdout, stderr).
pub fn vkgrad(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vkgrad"));
    cmd.args(args)
        .env_remove("VKGRAD_DEVICE")
        .env_remove("VKGRAD_PLUGIN_PATH")
        .env_remove("VKGRAD_FIXTURE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run vkgrad");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
