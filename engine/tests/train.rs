//! `vkgrad train`, `eval` and `augment` end to end through the real binary and the built-in
//! plugins (built here), on the shipped digits.

mod common;

use common::vkgrad;
use std::path::{Path, PathBuf};
use vkgrad::train::checkpoint::Checkpoint;

use common::shipped_plugins as plugins;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small, quick configuration on digits.
fn small_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("small.toml");
    std::fs::write(
        &p,
        format!("data = \"digits\"\nbatch_size = 128\nprojection_dim = 16\n{extra}\n[encoder_options]\nwidths = [8, 16]\n"),
    )
    .unwrap();
    p
}

#[test]
fn training_on_digits_lowers_the_loss_and_writes_the_run() {
    plugins();
    let dir = scratch("e2e");
    let cfg = small_config(&dir, "epochs = 4");
    let out = dir.join("run");
    let (ok, stdout, stderr) = vkgrad(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect(&stdout);
    for key in [
        "knn_accuracy",
        "linear_probe_accuracy",
        "few_label_accuracy",
        "train_seconds",
        "samples_per_second",
    ] {
        assert!(r[key].as_f64().is_some(), "{key} missing in {r}");
    }
    // Learned features separate digits far above chance after a few steps.
    assert!(r["knn_accuracy"].as_f64().unwrap() > 0.5, "{r}");
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 4);
    let (first, last) = (
        epochs[0]["loss"].as_f64().unwrap(),
        epochs[3]["loss"].as_f64().unwrap(),
    );
    assert!(last < first, "loss did not fall: {first} -> {last}");
    let steps = std::fs::read_to_string(out.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 4 * 10, "{steps}"); // 1347 / 128 = 10 steps an epoch
    for f in [
        "checkpoint.safetensors",
        "config.toml",
        "results.json",
        "loss.png",
        "accuracy.png",
        "embedding.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The saved config is the resolved one and reads back.
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains("loss = \"nt_xent\"") && saved.contains("encoder = \"convnet\""),
        "{saved}"
    );
    // Every option the components were built with is saved, the filled-in defaults too
    // (channels, size, the head's widths), so a later default cannot change an old checkpoint.
    let saved: toml::Value = toml::from_str(&saved).unwrap();
    for (table, key) in [
        ("encoder_options", "channels"),
        ("encoder_options", "size"),
        ("encoder_options", "widths"),
        ("head_options", "in_features"),
        ("head_options", "out_features"),
    ] {
        assert!(saved[table].get(key).is_some(), "{table}.{key}: {saved}");
    }
    // eval reads the checkpoint back and reports the same kNN accuracy.
    let (ok, stdout, stderr) = vkgrad(
        &["eval", "--checkpoint", out.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(ok, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(e["knn_accuracy"], r["knn_accuracy"]);
    assert_eq!(
        (e["features"].as_str(), e["knn_k"].as_u64()),
        (Some("encoder"), Some(20))
    );
    // Other evaluation choices are reported as such and leave the run's files alone.
    let results = std::fs::read(out.join("results.json")).unwrap();
    let (ok, stdout, stderr) = vkgrad(
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--json",
            "--features",
            "head",
            "--knn-k",
            "5",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let h: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (h["features"].as_str(), h["knn_k"].as_u64()),
        (Some("head"), Some(5))
    );
    assert!(h["knn_accuracy"].as_f64().unwrap() > 0.5, "{h}");
    assert_eq!(std::fs::read(out.join("results.json")).unwrap(), results);
    let (ok, _, stderr) = vkgrad(
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--knn-k",
            "0",
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("knn_k = 0 is out of range"),
        "{stderr}"
    );
    // An existing run is not overwritten.
    let (ok, _, stderr) = vkgrad(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("it holds a run"), "{stderr}");
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    plugins();
    let dir = scratch("resume");
    // BYOL with LARS: the checkpoint must carry the EMA target, the predictor and momentum.
    let cfg = small_config(&dir, "method = \"byol\"\noptimizer = \"lars\"\nepochs = 2");
    let (a, b) = (dir.join("straight"), dir.join("split"));
    let c = cfg.to_str().unwrap();
    let (ok, _, err) = vkgrad(
        &[
            "train",
            "--config",
            c,
            "--out",
            a.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let (ok, stdout, err) = vkgrad(
        &[
            "train",
            "--config",
            c,
            "--out",
            b.to_str().unwrap(),
            "--stop-after",
            "1",
            "--json",
        ],
        &[],
    );
    assert!(ok && stdout.contains("stopped_after_epoch"), "{err}");
    let (ok, _, err) = vkgrad(&["train", "--resume", b.to_str().unwrap(), "--json"], &[]);
    assert!(ok, "{err}");
    let ca = Checkpoint::load(&a).unwrap();
    assert!(ca.tensors.keys().any(|k| k.starts_with("target.encoder.")));
    assert!(ca
        .tensors
        .keys()
        .any(|k| k.starts_with("optimizer.velocity.")));
    same_checkpoints(&a, &b);
    let la = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let lb = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    let (sa, sb) = (
        std::fs::read_to_string(a.join("steps.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("steps.jsonl")).unwrap(),
    );
    assert_eq!(sa, sb);
    let losses = |t: &str| {
        t.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&la), losses(&lb));
}

/// Every tensor of two runs' checkpoints, bit for bit.
fn same_checkpoints(a: &Path, b: &Path) {
    let (ca, cb) = (Checkpoint::load(a).unwrap(), Checkpoint::load(b).unwrap());
    assert_eq!(ca.meta.get("step"), cb.meta.get("step"));
    assert_eq!(
        ca.tensors.keys().collect::<Vec<_>>(),
        cb.tensors.keys().collect::<Vec<_>>()
    );
    for (name, (_, va)) in &ca.tensors {
        let vb = &cb.tensors[name].1;
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn replayed_training_steps_equal_steps_run_op_by_op() {
    plugins();
    let dir = scratch("replay");
    // SimCLR (NT-Xent's positives by index), SupCon (by label: the labels are an input of the
    // recording) and BYOL (predictor, EMA target: five networks' parameters as inputs), each
    // with another optimiser; batch norm's running statistics are outputs of the recording.
    // The update (optimiser, EMA) is replayed with its per-step values (learning rate, Adam's
    // bias corrections, τ) as device values. GradCache's chunks (two forward passes, the
    // loss's gradient, a backward per chunk) are recorded as one step. The built-in
    // augmentation draws on the device only, so it is recorded too, its seeds device values;
    // the fixture's `jitter` does not say so (as a plugin built before ABI 1.6) and runs op
    // by op before each replayed step.
    let fixture = common::built_plugin("vkgrad-fixture-plugin");
    let jitter = "augment = \"fixture::jitter\"";
    let cases = [
        ("simclr", "sgd", ""),
        ("supcon", "adamw", ""),
        ("byol", "lars", ""),
        ("simclr", "adamw", "grad_cache = 32"),
        ("simclr", "sgd", jitter),
    ];
    for (method, opt, extra) in cases {
        let cfg = small_config(
            &dir,
            &format!("method = \"{method}\"\noptimizer = \"{opt}\"\nepochs = 2\n{extra}"),
        );
        let c = cfg.to_str().unwrap();
        let name = format!(
            "{method}-{opt}{}",
            match extra {
                "" => "",
                e if e == jitter => "-jitter",
                _ => "-gc",
            }
        );
        let (a, b) = (
            dir.join(format!("{name}-replayed")),
            dir.join(format!("{name}-eager")),
        );
        let run = |out: &Path, env: &[(&str, &str)]| {
            let (ok, _, err) = vkgrad(
                // One epoch, then stop (a checkpoint, without the final evaluation).
                &[
                    "train",
                    "--config",
                    c,
                    "--out",
                    out.to_str().unwrap(),
                    "--stop-after",
                    "1",
                    "--json",
                    "--plugin",
                    fixture.to_str().unwrap(),
                ],
                env,
            );
            assert!(ok, "{name}: {err}");
            err
        };
        // Replay is the default.
        let replayed = run(&a, &[]);
        let eager = run(&b, &[("VKGRAD_REPLAY", "0")]);
        // digits has 10 steps of 128 per epoch: one recording, replayed in every later step;
        // the first update creates the optimiser's state, the second is recorded.
        assert!(
            replayed.contains("execution: 9 steps replayed, 1 recorded"),
            "{name}: {replayed}"
        );
        let (inside, note) = (
            replayed.contains("per step's augmentation, forward and backward"),
            replayed.contains("note: the augmentation fixture::jitter does not declare"),
        );
        assert_eq!(
            (inside, note),
            (extra != jitter, extra == jitter),
            "{name}: {replayed}"
        );
        assert!(
            replayed.contains("8 updates replayed, 1 recorded"),
            "{name}: {replayed}"
        );
        assert!(!eager.contains("execution:"), "{name}: {eager}");
        let steps = |d: &Path| std::fs::read_to_string(d.join("steps.jsonl")).unwrap();
        assert_eq!(steps(&a), steps(&b), "{name}: per-step losses");
        same_checkpoints(&a, &b);
    }
    // A profile times each kernel as it runs, so a profiled run is not replayed and its
    // profile holds the step's kernels (a replayed step's would be missing from it).
    let cfg = small_config(&dir, "epochs = 1");
    let out = dir.join("profiled");
    let (ok, _, err) = vkgrad(
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &[("VKGRAD_PROFILE", "1")],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("not replayed: VKGRAD_PROFILE") && !err.contains("execution:"),
        "{err}"
    );
    assert!(
        err.contains("kernel time") && err.contains("Matmul"),
        "{err}"
    );
}

#[test]
fn bad_configurations_are_clear_errors() {
    plugins();
    let dir = scratch("bad");
    let cases: [(&[&str], &str); 8] = [
        (
            &["--loss", "contrastive::moco"],
            "the loss contrastive::moco takes the extra inputs [\"keys\"], and `vkgrad train --method simclr` gives it []",
        ),
        (
            &["--method", "byol", "--loss", "contrastive::nt_xent"],
            "the loss contrastive::nt_xent takes the extra inputs [], and `vkgrad train --method byol` gives it [\"targets\"]",
        ),
        (&["--method", "simsiam"], "unknown method `simsiam`"),
        (&["--encoder", "nosuch"], "no encoder named `nosuch`"),
        (
            &["--loss", "contrastive::nope"],
            "no loss named `contrastive::nope`",
        ),
        (&["--epochs", "-3"], "--epochs must be a positive number"),
        (
            &["--data", "/nonexistent/mnist"],
            "/nonexistent/mnist: does not exist",
        ),
        (&["--optimizer", "adagrad"], "unknown optimizer `adagrad`"),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let out = dir.join(format!("r{i}"));
        let mut a = vec!["train", "--out", out.to_str().unwrap()];
        a.extend_from_slice(args);
        let (ok, _, stderr) = vkgrad(&a, &[]);
        assert!(!ok && stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "epochs = 2\nlearning_rate = 0.1\n").unwrap();
    let (ok, _, stderr) = vkgrad(&["train", "--config", bad.to_str().unwrap()], &[]);
    assert!(!ok && stderr.contains("learning_rate"), "{stderr}");
    let (ok, _, stderr) = vkgrad(&["eval", "--checkpoint", dir.to_str().unwrap()], &[]);
    assert!(
        !ok && stderr.contains("checkpoint.safetensors: cannot be read"),
        "{stderr}"
    );
}

#[test]
fn augment_writes_a_picture_grid() {
    plugins();
    let dir = scratch("grid");
    let png = dir.join("grid.png");
    let (ok, stdout, stderr) = vkgrad(
        &[
            "augment",
            "--preset",
            "digits",
            "--data",
            "digits",
            "--out",
            png.to_str().unwrap(),
            "--count",
            "6",
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("6 originals"), "{stdout}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let (ok, _, stderr) = vkgrad(
        &[
            "augment",
            "--preset",
            "nosuch",
            "--out",
            png.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !ok && stderr.contains("no augmentation named `nosuch`"),
        "{stderr}"
    );
}
