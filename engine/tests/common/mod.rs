//! Shared by the tests that run the `vkgrad` binary.

use std::path::PathBuf;
use std::process::Command;

#[allow(dead_code)] // not every test file runs the binary
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

/// Builds a workspace plugin crate (debug) and returns its library path.
#[allow(dead_code)] // not every test file builds plugins
pub fn built_plugin(package: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build -p {package} failed");
    // target/debug/deps/<test binary> -> target/debug
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    dir.join(file)
}

/// Builds the plugins `vkgrad` finds beside itself (target/debug): the three built-in ones and
/// the template (as `scripts/run.sh` builds them), once per test binary.
#[allow(dead_code)] // not every test file trains
pub fn shipped_plugins() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        for p in [
            "vkgrad-plugin-encoders",
            "vkgrad-plugin-augment",
            "vkgrad-plugin-contrastive",
            "vkgrad-plugin-template",
        ] {
            built_plugin(p);
        }
    });
}

/// Writes a C-order .npy file of `shape`.
#[allow(dead_code)] // not every test file writes arrays
pub fn save_npy<T: npyz::AutoSerialize + Copy>(path: &std::path::Path, shape: &[u64], data: &[T]) {
    use npyz::WriterBuilder;
    let mut f = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut f)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// `n` vectors of 12 features in 4 classes (`features.npy`, `labels.npy`) in `dir`: sines whose
/// pattern depends on the class, plus a sample-dependent wiggle.
#[allow(dead_code)] // not every test file trains on vectors
pub fn write_vectors(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let x: Vec<f32> = (0..n * 12)
        .map(|i| ((i % 12 + (i / 12 % 4) * 12) as f32 * 0.7).sin() + 0.3 * (i as f32 * 1.37).sin())
        .collect();
    let y: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
    save_npy(&dir.join("features.npy"), &[n as u64, 12], &x);
    save_npy(&dir.join("labels.npy"), &[n as u64], &y);
}
