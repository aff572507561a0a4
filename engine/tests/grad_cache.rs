//! GradCache (`--grad-cache CHUNK`): back-propagating a batch chunk by chunk gives the plain
//! step's parameters up to f32 rounding — for encoders without batch norm at any chunk size,
//! and with batch norm (the ConvNet) when the chunk holds the whole batch (batch norm sees each
//! chunk, as in GradCache); SimCLR and SupCon.

mod common;

use std::path::PathBuf;
use vkgrad::reference::tol;
use vkgrad::train::{Config, Trainer};

fn plugins() -> Vec<PathBuf> {
    [
        "vkgrad-plugin-encoders",
        "vkgrad-plugin-augment",
        "vkgrad-plugin-contrastive",
    ]
    .iter()
    .map(|p| common::built_plugin(p))
    .collect()
}

/// Every parameter after `steps` SGD steps on the same batches.
fn train(cfg: &Config, steps: usize) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let out = std::env::temp_dir().join(format!("vkgrad-gc-{}", std::process::id()));
    let mut t = Trainer::new(cfg.clone(), &plugins(), out).unwrap();
    let before = t.checkpoint().unwrap();
    let b = cfg.batch_size;
    for s in 0..steps {
        let idx: Vec<usize> = (0..b).map(|i| (s * b + i * 3) % t.data.len()).collect();
        t.train_step(&idx).unwrap();
    }
    let after = t.checkpoint().unwrap();
    after
        .tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optimizer.") && !k.contains("running"))
        .map(|(k, (_, v))| (k.clone(), before.tensors[k].1.clone(), v.clone()))
        .collect()
}

/// GradCache's parameters equal the plain step's: the difference of the updates is within
/// the gradient tolerance of the update's size (chunk sums are the batch sum in another order).
fn assert_same(cfg: &Config, chunk: usize) {
    let plain = train(cfg, 2);
    let mut gc = cfg.clone();
    gc.grad_cache = Some(chunk);
    let cached = train(&gc, 2);
    for ((name, p0, p), (_, _, q)) in plain.iter().zip(&cached) {
        let step = p0
            .iter()
            .zip(p)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs() as f64));
        for (i, (a, b)) in p.iter().zip(q).enumerate() {
            let bound = tol::GRADIENT.bound(step + 1e-6, 2 * cfg.batch_size);
            assert!(
                ((a - b) as f64).abs() <= bound,
                "{} chunk {chunk}: {name}[{i}]: plain {a} vs grad-cache {b} (update size {step:e}, bound {bound:e})",
                cfg.method
            );
        }
    }
}

fn vectors() -> String {
    let dir = std::env::temp_dir().join(format!("vkgrad-gc-data-{}", std::process::id()));
    common::write_vectors(&dir, 96);
    dir.display().to_string()
}

#[test]
fn grad_cache_equals_the_plain_step_without_batch_norm() {
    let data = vectors();
    for method in ["simclr", "supcon"] {
        let mut cfg = Config {
            method: method.into(),
            data: data.clone(),
            encoder: "mlp".into(),
            batch_size: 24,
            optimizer: "sgd".into(),
            lr: Some(0.5),
            projection_dim: 8,
            ..Config::default()
        };
        cfg.encoder_options
            .insert("sizes".into(), serde_json::json!([12, 32, 16]));
        cfg.encoder_options
            .insert("batch_norm".into(), serde_json::json!(false));
        cfg.head_options
            .insert("batch_norm".into(), serde_json::json!(false));
        for chunk in [1, 5, 8, 24] {
            assert_same(&cfg, chunk);
        }
    }
}

#[test]
fn grad_cache_with_batch_norm_equals_the_plain_step_when_the_chunk_is_the_batch() {
    let mut cfg = Config {
        data: "digits".into(),
        batch_size: 16,
        optimizer: "sgd".into(),
        lr: Some(0.2),
        projection_dim: 8,
        ..Config::default()
    };
    cfg.encoder_options
        .insert("widths".into(), serde_json::json!([4, 8]));
    assert_same(&cfg, 16);
    // And it is refused for BYOL (a per-sample loss), with a reason.
    let byol = Config {
        method: "byol".into(),
        grad_cache: Some(4),
        ..cfg
    };
    let out = std::env::temp_dir().join("vkgrad-gc-byol");
    let e = Trainer::new(byol, &plugins(), out)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("grad_cache applies to SimCLR and SupCon"), "{e}");
}
