//! No panic on any input: every loader of user files (IDX, .npy, CIFAR-10 batches, TOML
//! configs, checkpoints) gets random bytes and valid files truncated or with bytes changed,
//! and must answer with a value or an error — never a panic, never a huge allocation.
//! (proptest over bytes: the toolchain is stable, so no cargo-fuzz; VKGRAD_PROPTEST_CASES
//! runs more cases.)

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use vkgrad::data::Dataset;
use vkgrad::train::checkpoint::Checkpoint;
use vkgrad::train::Config;

fn cases() -> u32 {
    std::env::var("VKGRAD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `f`, failing the case if it panics (its Ok/Err is irrelevant).
fn no_panic<T>(what: &str, f: impl FnOnce() -> T + std::panic::UnwindSafe) {
    if std::panic::catch_unwind(f).is_err() {
        panic!("{what}: the loader panicked");
    }
}

fn idx(dims: &[u32], rank_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, rank_byte];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(payload);
    b
}

/// A valid file of each format, as bytes.
fn valid_files(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let images = idx(&[2, 3, 3], 3, &[7u8; 18]);
    let labels = idx(&[2], 1, &[1, 0]);
    let mut cifar = vec![3u8];
    cifar.extend(vec![9u8; 3 * 32 * 32]);
    let f = dir.join("valid-features.npy");
    vkgrad::npy::write_f32(&f, &[2, 3], &[0.5; 6]).unwrap();
    let npy = std::fs::read(&f).unwrap();
    let toml = b"data = \"digits\"\nepochs = 2\n[encoder_options]\nwidths = [8]\n".to_vec();
    let mut c = Checkpoint::new();
    c.put_host("encoder.w", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    c.meta.insert("step".into(), "3".into());
    c.save_as(dir, "valid.safetensors", 0).unwrap();
    let ckpt = std::fs::read(dir.join("valid.safetensors")).unwrap();
    vec![
        ("images", images),
        ("labels", labels),
        ("cifar", cifar),
        ("npy", npy),
        ("toml", toml),
        ("checkpoint", ckpt),
    ]
}

/// Feeds `bytes` to the loader of `kind`.
fn load(dir: &Path, kind: &str, bytes: &[u8]) {
    match kind {
        "images" | "labels" => {
            let d = dir.join(format!("idx-{kind}"));
            std::fs::create_dir_all(&d).unwrap();
            let (mut img, mut lab) = (idx(&[2, 3, 3], 3, &[7u8; 18]), idx(&[2], 1, &[1, 0]));
            if kind == "images" {
                img = bytes.to_vec();
            } else {
                lab = bytes.to_vec();
            }
            std::fs::write(d.join("x-images-idx3-ubyte"), img).unwrap();
            std::fs::write(d.join("x-labels-idx1-ubyte"), lab).unwrap();
            let p = d.to_str().unwrap().to_string();
            no_panic(kind, move || Dataset::load(&p).map(|d| d.len()));
        }
        "cifar" => {
            let d = dir.join("cifar");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("data_batch_1.bin"), bytes).unwrap();
            let p = d.to_str().unwrap().to_string();
            no_panic(kind, move || Dataset::load(&p).map(|d| d.len()));
        }
        "npy" => {
            let d = dir.join("npy");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("features.npy"), bytes).unwrap();
            std::fs::write(d.join("labels.npy"), bytes).unwrap();
            let p = d.to_str().unwrap().to_string();
            let f = d.join("features.npy");
            no_panic(kind, move || Dataset::load(&p).map(|d| d.len()));
            no_panic("npy floats", move || {
                vkgrad::npy::read_floats(&f).map(|v| v.0)
            });
            let l = d.join("labels.npy");
            no_panic("npy labels", move || {
                vkgrad::npy::read_labels(&l).map(|v| v.0)
            });
        }
        "toml" => {
            let f = dir.join("config.toml");
            std::fs::write(&f, bytes).unwrap();
            no_panic(kind, move || {
                Config::from_file(&f).and_then(|mut c| c.resolve(&[1, 8, 8]))
            });
        }
        _ => {
            let f = dir.join("fuzz.safetensors");
            std::fs::write(&f, bytes).unwrap();
            no_panic(kind, move || Checkpoint::load(&f).map(|c| c.tensors.len()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(kind in 0usize..6, bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = scratch("random");
        let (name, _) = valid_files(&dir)[kind].clone();
        load(&dir, name, &bytes);
    }

    #[test]
    fn damaged_valid_files_never_panic(
        kind in 0usize..6,
        cut in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let dir = scratch("damaged");
        let (name, mut bytes) = valid_files(&dir)[kind].clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        load(&dir, name, &bytes);
    }
}

/// Header sizes whose product overflows (or exceeds the file) are errors naming the file.
#[test]
fn idx_headers_that_overflow_are_errors() {
    let dir = scratch("overflow");
    let d = dir.join("idx");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("x-images-idx3-ubyte"),
        idx(&[u32::MAX, u32::MAX, u32::MAX], 3, &[0; 16]),
    )
    .unwrap();
    std::fs::write(d.join("x-labels-idx1-ubyte"), idx(&[2], 1, &[1, 0])).unwrap();
    let e = Dataset::load(d.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("x-images-idx3-ubyte") && e.contains("header is damaged"),
        "{e}"
    );
}
