//! Getting a trained encoder out: the ONNX export run by an independent runtime (tract) gives
//! the device's embeddings for every shipped encoder family, and `vkgrad embed` writes the
//! numbers `vkgrad eval` scores (its kNN recomputed here on the CPU from the exported arrays).

mod common;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tract_onnx::prelude::{tvec, Framework, InferenceFact, InferenceModelExt};
use vkgrad::plugin::Registry;
use vkgrad::train::model::Module;
use vkgrad::{Rng, Tensor};

fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::default();
        r.load(&common::built_plugin("vkgrad-plugin-encoders"))
            .expect("load encoders plugin");
        r
    })
}

fn input(shape: &[usize], seed: f32) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|i| ((i as f32 + seed) * 0.731).sin() * 0.5 + 0.5)
        .collect()
}

/// Runs an ONNX model with tract on `x` of `shape`; the output [N, D] row-major.
fn tract_run(bytes: &[u8], shape: &[usize], x: Vec<f32>) -> (Vec<usize>, Vec<f32>) {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the exported model")
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))
        .unwrap()
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .unwrap();
    let t = tract_onnx::prelude::Tensor::from_shape(shape, &x).unwrap();
    let out = model.run(tvec!(t.into())).expect("tract runs the model");
    let view = out[0].to_array_view::<f32>().unwrap();
    (
        view.shape().to_vec(),
        view.iter().copied().collect::<Vec<f32>>(),
    )
}

use tract_onnx::prelude::Datum;

/// |a − b| ≤ 1e-4 · (1 + max |b|): f32 sums in another order (tract's kernels vs the
/// device's), over at most a few hundred terms of O(1) values.
fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = 1.0 + b.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}: element {i}: onnx {x} vs device {y}"
        );
    }
}

/// A module with its batch-norm running statistics moved off their initial 0 / 1 (three
/// training-mode passes), so the export's folding of them is tested with real values.
fn trained_module(name: &str, options: Value, prefix: &str, sample: &[usize]) -> Module {
    let mut m = Module::new(registry(), name, options, prefix, &mut Rng::new(5)).unwrap();
    for s in 0..3 {
        let mut shape = vec![6];
        shape.extend(sample);
        let x = Tensor::from_vec(input(&shape, s as f32 * 10.0), &shape).unwrap();
        vkgrad::no_grad(|| m.forward(&x, true)).unwrap();
    }
    m
}

#[test]
fn onnx_export_gives_the_device_embeddings_for_every_encoder() {
    let cases: Vec<(&str, Value, Vec<usize>)> = vec![
        (
            "mlp",
            json!({"sizes": [10, 16, 8], "batch_norm": true}),
            vec![10],
        ),
        (
            "mlp",
            json!({"sizes": [10, 7, 5], "activation": "tanh"}),
            vec![10],
        ),
        (
            "convnet",
            json!({"channels": 1, "size": 8, "widths": [4, 6]}),
            vec![1, 8, 8],
        ),
        (
            "convnet",
            json!({"channels": 1, "size": 12, "widths": [3, 5], "fc": 6}),
            vec![1, 12, 12],
        ),
        (
            "convnet",
            json!({"channels": 3, "size": 9, "widths": [2, 2], "fc": 3, "batch_norm": false}),
            vec![3, 9, 9],
        ),
        (
            "resnet",
            json!({"channels": 3, "size": 8, "width": 4, "stages": 2, "blocks": 1}),
            vec![3, 8, 8],
        ),
        (
            "resnet",
            json!({"channels": 1, "size": 12, "width": 2, "stages": 2, "blocks": 2}),
            vec![1, 12, 12],
        ),
    ];
    for (name, options, sample) in cases {
        let enc = trained_module(name, options.clone(), "encoder", &sample);
        let mut probe = vec![2];
        probe.extend(&sample);
        let width = *vkgrad::no_grad(|| enc.run(&Tensor::zeros(&probe)?, false))
            .unwrap()
            .shape()
            .last()
            .unwrap();
        let head = trained_module(
            "projection_head",
            json!({"in_features": width, "hidden": 12, "out_features": 4}),
            "head",
            &[width],
        );
        for with_head in [false, true] {
            let modules: Vec<&Module> = if with_head {
                vec![&enc, &head]
            } else {
                vec![&enc]
            };
            let bytes = vkgrad::export::onnx(&modules, &sample, "test").unwrap();
            // Batch norm is folded into the Conv / Linear before it: no per-channel Mul
            // remains, and the Conv count is the network's.
            let ops = vkgrad::export::op_types(&bytes).unwrap();
            assert!(!ops.iter().any(|o| o == "Mul"), "{name}: {ops:?}");
            let convs = enc
                .named()
                .iter()
                .filter(|(n, t)| n.ends_with(".weight") && t.shape().len() == 4)
                .count();
            assert_eq!(
                ops.iter().filter(|o| *o == "Conv").count(),
                convs,
                "{ops:?}"
            );
            // A batch size the export never traced (it traces 2 and 3).
            for b in [1, 5] {
                let mut shape = vec![b];
                shape.extend(&sample);
                let x = input(&shape, 99.0 + b as f32);
                let xt = Tensor::from_vec(x.clone(), &shape).unwrap();
                let want = vkgrad::no_grad(|| {
                    let mut h = enc.run(&xt, false)?;
                    if with_head {
                        h = head.run(&h, false)?;
                    }
                    Ok::<_, vkgrad::Error>(h)
                })
                .unwrap();
                let (got_shape, got) = tract_run(&bytes, &shape, x);
                let what = format!("{name} {options} head={with_head} batch {b}");
                assert_eq!(got_shape, want.shape(), "{what}");
                close(&got, &want.to_vec().unwrap(), &what);
            }
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_npy_f32(p: &Path) -> (Vec<u64>, Vec<f32>) {
    let r = npyz::NpyFile::new(std::fs::File::open(p).unwrap()).unwrap();
    let shape = r.shape().to_vec();
    (shape, r.into_vec::<f32>().unwrap())
}

fn read_npy_i64(p: &Path) -> Vec<i64> {
    npyz::NpyFile::new(std::fs::File::open(p).unwrap())
        .unwrap()
        .into_vec::<i64>()
        .unwrap()
}

/// eval.rs's kNN, independently on the CPU in f64: cosine similarity, the k nearest vote
/// with weight exp(sim / t), the largest vote wins (the last of equal votes, as max_by).
fn knn(train: &[f32], ytr: &[i64], test: &[f32], yte: &[i64], d: usize, k: usize, t: f64) -> f64 {
    let unit = |x: &[f32]| -> Vec<f64> {
        let n = x
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        x.iter().map(|v| *v as f64 / n).collect()
    };
    let tr: Vec<Vec<f64>> = train.chunks(d).map(unit).collect();
    let classes = ytr.iter().chain(yte).max().unwrap() + 1;
    let mut correct = 0;
    for (q, &y) in test.chunks(d).map(unit).zip(yte) {
        let mut sims: Vec<(f64, usize)> = tr
            .iter()
            .enumerate()
            .map(|(j, r)| (r.iter().zip(&q).map(|(a, b)| a * b).sum(), j))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut votes = vec![0.0; classes as usize];
        for &(s, j) in &sims[..k.min(sims.len())] {
            votes[ytr[j] as usize] += (s / t).exp();
        }
        let pred = (0..classes as usize)
            .max_by(|&a, &b| votes[a].total_cmp(&votes[b]))
            .unwrap();
        correct += (pred as i64 == y) as usize;
    }
    correct as f64 / yte.len() as f64
}

/// A trained run on small vectors: `vkgrad embed` writes the numbers `vkgrad eval` scores,
/// and the run's exported ONNX encoder reproduces them.
#[test]
fn embed_writes_what_eval_scores_and_export_reproduces_it() {
    common::shipped_plugins();
    let dir = tmp("embed");
    let n = 120;
    let x: Vec<f32> = (0..n * 8)
        .map(|i| {
            let (s, j) = (i / 8, i % 8);
            ((s % 3 * 8 + j) as f32 * 0.7).sin() + 0.4 * ((i as f32) * 1.37).sin()
        })
        .collect();
    let y: Vec<i64> = (0..n).map(|s| (s % 3) as i64 + 10).collect();
    common::save_npy(&dir.join("features.npy"), &[n as u64, 8], &x);
    common::save_npy(&dir.join("labels.npy"), &[n as u64], &y);
    let data = dir.to_str().unwrap().to_string();
    let run = dir.join("run");
    let (ok, out, err) = common::vkgrad(
        &[
            "train",
            "--data",
            &data,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--out",
            run.to_str().unwrap(),
            "--stop-after",
            "2",
            "--json",
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    let run_s = run.to_str().unwrap();
    let f = |s: &str| dir.join(s).to_str().unwrap().to_string();
    for split in ["train", "test", "all"] {
        let (ok, _, err) = common::vkgrad(
            &[
                "embed",
                "--checkpoint",
                run_s,
                "--out",
                &f(&format!("{split}.npy")),
                "--labels-out",
                &f(&format!("{split}-y.npy")),
                "--split",
                split,
            ],
            &[],
        );
        assert!(ok, "{err}");
    }
    let (tshape, tr) = read_npy_f32(&dir.join("train.npy"));
    let (eshape, te) = read_npy_f32(&dir.join("test.npy"));
    let (ashape, all) = read_npy_f32(&dir.join("all.npy"));
    let (ytr, yte, yall) = (
        read_npy_i64(&dir.join("train-y.npy")),
        read_npy_i64(&dir.join("test-y.npy")),
        read_npy_i64(&dir.join("all-y.npy")),
    );
    // The npy data holds out every 5th sample; labels come back as the file has them.
    assert_eq!(tshape[0] + eshape[0], n as u64);
    assert_eq!(ashape, vec![n as u64, tshape[1]]);
    assert_eq!(yall, y);
    assert_eq!(yte, (0..n).step_by(5).map(|s| y[s]).collect::<Vec<_>>());
    let d = tshape[1] as usize;
    assert_eq!(
        &all[..d],
        &te[..d],
        "sample 0 is held out and first in both"
    );
    let (ok, out, err) = common::vkgrad(&["eval", "--checkpoint", run_s, "--json"], &[]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let device_knn = report["knn_accuracy"].as_f64().unwrap();
    let cpu_knn = knn(&tr, &ytr, &te, &yte, d, 20, 0.1);
    assert!(
        (device_knn - cpu_knn).abs() <= 1.0 / yte.len() as f64 + 1e-12,
        "eval's kNN {device_knn} vs the exported arrays' {cpu_knn}"
    );
    // The ONNX export of the same run gives the same embeddings.
    let onnx = f("encoder.onnx");
    let (ok, _, err) = common::vkgrad(&["export", "--checkpoint", run_s, "--out", &onnx], &[]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&onnx).unwrap();
    let (shape, got) = tract_run(&bytes, &[n, 8], x.clone());
    assert_eq!(shape, vec![n, d]);
    close(&got, &all, "exported encoder vs vkgrad embed");
    // The export needs the run, not its data: with the data gone it writes the same model.
    std::fs::rename(dir.join("features.npy"), dir.join("moved.npy")).unwrap();
    let (ok, _, err) = common::vkgrad(
        &["export", "--checkpoint", run_s, "--out", &f("again.onnx")],
        &[],
    );
    std::fs::rename(dir.join("moved.npy"), dir.join("features.npy")).unwrap();
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(f("again.onnx")).unwrap(), bytes);
    // Outputs are never written over: an existing file needs --overwrite, an input never.
    let (ok, _, err) = common::vkgrad(&["export", "--checkpoint", run_s, "--out", &onnx], &[]);
    assert!(!ok && err.contains("--overwrite"), "{err}");
    let (ok, _, err) = common::vkgrad(
        &[
            "embed",
            "--checkpoint",
            run_s,
            "--out",
            &f("features.npy"),
            "--overwrite",
            "--data",
            &data,
        ],
        &[],
    );
    assert!(!ok && err.contains("is an input"), "{err}");
    assert_eq!(
        read_npy_f32(&dir.join("features.npy")).1,
        x,
        "the data is untouched"
    );
    let (ok, _, err) = common::vkgrad(
        &[
            "export",
            "--checkpoint",
            run_s,
            "--out",
            &f("e.pt"),
            "--format",
            "torchscript",
        ],
        &[],
    );
    assert!(!ok && err.contains("--format torchscript"), "{err}");
}

/// The README's "Your own data" commands run as written (the release binary's path replaced
/// by this build's, /tmp replaced by a fresh folder), and each output appears.
#[test]
fn the_readme_own_data_section_runs_as_written() {
    common::shipped_plugins();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Your own data")
        .nth(1)
        .expect("README has a \"Your own data\" section");
    let section = section.split("\n## ").next().unwrap();
    let dir = tmp("readme");
    let commands: Vec<String> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("./target/release/vkgrad") || l.starts_with("python3 "))
        .map(|l| {
            l.split("  #")
                .next()
                .unwrap()
                .trim()
                .replace("/tmp/", &format!("{}/", dir.display()))
        })
        .collect();
    assert!(commands.len() >= 4, "{commands:?}");
    for c in &commands {
        let words: Vec<&str> = c.split_whitespace().collect();
        let mut cmd = if words[0] == "./target/release/vkgrad" {
            std::process::Command::new(env!("CARGO_BIN_EXE_vkgrad"))
        } else {
            std::process::Command::new(words[0])
        };
        let out = cmd
            .args(&words[1..])
            .current_dir(root)
            .env("VKGRAD_CACHE", dir.join("cache"))
            .env_remove("VKGRAD_DEVICE")
            .env_remove("VKGRAD_PLUGIN_PATH")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in [
        "my-run/checkpoint.safetensors",
        "emb.npy",
        "labels.npy",
        "encoder.onnx",
    ] {
        assert!(dir.join(f).exists(), "{f} missing after {commands:?}");
    }
    let (shape, _) = read_npy_f32(&dir.join("emb.npy"));
    assert_eq!(shape[0], 1797, "every digit embedded");
}
