//! Run safety, as a hostile but realistic user meets it: a run folder has one writer and is
//! never overwritten unasked; `--resume` refuses other data and other settings; damaged or
//! non-finite checkpoints are refused; a crash at any point of an epoch's end (injected with
//! `VKGRAD_FAULT`) leaves a consistent run that resumes bit for bit; a full disk leaves the
//! previous files and no temp files; Ctrl-C says how to resume; bad flags are clear errors.
//! Runs use a tiny `.npy` data set and `--stop-after`, so each is a fraction of a second.

mod common;

use common::{save_npy, shipped_plugins as plugins};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vkgrad::train::checkpoint::Checkpoint;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-safety-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 80 vectors of 8 values in 4 clusters, labels `label_of(class)`, in `dir`.
fn tiny_data(dir: &Path, seed: f32, label_of: impl Fn(usize) -> i64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let n = 80;
    let x: Vec<f32> = (0..n * 8)
        .map(|i| {
            let (s, j) = (i / 8, i % 8);
            let c = s % 4;
            ((c * 8 + j) as f32 * 0.7).sin() + 0.3 * ((i as f32 + seed) * 1.37).sin()
        })
        .collect();
    let y: Vec<i64> = (0..n).map(|s| label_of(s % 4)).collect();
    save_npy(&dir.join("features.npy"), &[n as u64, 8], &x);
    save_npy(&dir.join("labels.npy"), &[n as u64], &y);
    dir.to_path_buf()
}

/// Runs `vkgrad` in `cwd` with a clean environment plus `env`.
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vkgrad"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("VKGRAD_DEVICE")
        .env_remove("VKGRAD_PLUGIN_PATH")
        .env_remove("VKGRAD_FIXTURE")
        .env_remove("VKGRAD_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vkgrad")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed, saying `why`.
fn refused(o: &Output, why: &str) {
    assert!(
        !o.status.success() && err(o).contains(why),
        "expected a refusal with `{why}`: {}",
        text(o)
    );
}

/// `train` on the tiny data: 4 epochs planned, stopped after `stop` (no final report).
fn train_args<'a>(data: &'a str, out: &'a str, stop: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--out",
        out,
        "--stop-after",
        stop,
        "--json",
    ]
}

fn epoch_of(dir: &Path) -> u64 {
    Checkpoint::load(dir).unwrap().meta_u64("epoch").unwrap()
}

/// Every tensor of a run's checkpoint, and its logs without the timing fields.
fn state(dir: &Path) -> (Vec<(String, Vec<u32>)>, Vec<String>) {
    let c = Checkpoint::load(dir).unwrap();
    let tensors = c
        .tensors
        .iter()
        .map(|(k, (_, d))| (k.clone(), d.iter().map(|v| v.to_bits()).collect()))
        .collect();
    let mut logs = Vec::new();
    for f in ["metrics.jsonl", "steps.jsonl"] {
        for l in std::fs::read_to_string(dir.join(f)).unwrap().lines() {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["seconds", "samples_per_second"] {
                v.as_object_mut().unwrap().remove(k);
            }
            logs.push(v.to_string());
        }
    }
    (tensors, logs)
}

fn no_temp_files(dir: &Path) {
    let tmp: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "temp files left in {dir:?}: {tmp:?}");
}

#[test]
fn a_crash_at_any_point_of_an_epoch_end_leaves_a_run_that_resumes_bit_for_bit() {
    plugins();
    let d = scratch("faults");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let data = data.to_str().unwrap();
    let reference = d.join("reference");
    let o = run_in(&d, &train_args(data, reference.to_str().unwrap(), "3"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let want = state(&reference);
    let mut aborted = 0;
    for point in vkgrad::train::files::FAULT_POINTS {
        let run = d.join(point.replace(':', "_"));
        let fault = format!("{point}@2");
        let o = run_in(
            &d,
            &train_args(data, run.to_str().unwrap(), "3"),
            &[("VKGRAD_FAULT", &fault)],
        );
        if o.status.success() {
            // Only best.safetensors may be skipped: epoch 2 was not better than epoch 1.
            assert!(point.ends_with("best.safetensors"), "{point}: {}", text(&o));
        } else {
            aborted += 1;
            assert!(err(&o).contains("VKGRAD_FAULT: aborting"), "{}", text(&o));
            // The folder holds the previous state or the new one, and the logs agree with
            // the checkpoint once cut to it (what a resume reads).
            let e = epoch_of(&run);
            assert!(e == 1 || e == 2, "{point}: checkpoint at epoch {e}");
            vkgrad::train::Logs::read(&run, e as usize, e * 4)
                .unwrap_or_else(|err| panic!("{point}: {err}"));
            let o = run_in(
                &d,
                &[
                    "train",
                    "--resume",
                    run.to_str().unwrap(),
                    "--stop-after",
                    "3",
                    "--json",
                ],
                &[],
            );
            assert!(o.status.success(), "{point}: {}", text(&o));
        }
        assert_eq!(state(&run), want, "{point}: resumed run differs");
        no_temp_files(&run);
    }
    assert!(aborted >= 6, "only {aborted} fault points were reached");
}

#[test]
fn a_full_disk_keeps_the_previous_files_and_no_temp_files() {
    plugins();
    let d = scratch("disk");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let run = d.join("run");
    let (data, out) = (data.to_str().unwrap(), run.to_str().unwrap());
    let o = run_in(&d, &train_args(data, out, "1"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let before = state(&run);
    for file in ["checkpoint.safetensors", "metrics.jsonl", "steps.jsonl"] {
        let o = run_in(
            &d,
            &["train", "--resume", out, "--stop-after", "2"],
            &[("VKGRAD_FAULT", &format!("write_error:{file}"))],
        );
        assert!(!o.status.success(), "{file}: {}", text(&o));
        assert!(
            err(&o).contains(file) && err(&o).contains("no space left on device"),
            "{file}: {}",
            text(&o)
        );
        no_temp_files(&run);
        // Whatever was written before the failure, the run resumes from epoch 1.
        assert_eq!(epoch_of(&run), 1);
    }
    assert_eq!(state(&run).0, before.0);
}

#[test]
fn a_run_folder_has_one_writer_and_is_never_overwritten_unasked() {
    plugins();
    let d = scratch("owner");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let data = data.to_str().unwrap();
    // A long first run holds the folder; a second writer is refused with its PID.
    let run = d.join("busy");
    let mut first = Command::new(env!("CARGO_BIN_EXE_vkgrad"))
        .current_dir(&d)
        .args([
            "train",
            "--data",
            data,
            "--epochs",
            "100000",
            "--batch-size",
            "16",
        ])
        .args(["--out", run.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.join(".vkgrad.lock");
    let pid = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never locked"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for args in [
        train_args(data, run.to_str().unwrap(), "1"),
        vec!["train", "--resume", run.to_str().unwrap()],
    ] {
        let o = run_in(&d, &args, &[]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            err(&o).contains("in use by another vkgrad process") && err(&o).contains(&pid),
            "{}",
            text(&o)
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // The user's own files in --out stay as they are unless --overwrite.
    let mine = d.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("config.toml"), "my own notes").unwrap();
    let o = run_in(&d, &train_args(data, mine.to_str().unwrap(), "1"), &[]);
    assert!(
        !o.status.success() && err(&o).contains("is not empty") && err(&o).contains("--overwrite"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("config.toml")).unwrap(),
        "my own notes"
    );
    let mut args = train_args(data, mine.to_str().unwrap(), "1");
    args.push("--overwrite");
    let o = run_in(&d, &args, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // A folder that holds a run says how to continue it.
    let o = run_in(&d, &train_args(data, mine.to_str().unwrap(), "1"), &[]);
    assert!(err(&o).contains("--resume"), "{}", text(&o));
    // The run must not write into its data folder.
    let o = run_in(&d, &train_args(data, data, "1"), &[]);
    refused(&o, "data folder");

    // Generated names never collide: two runs started in the same second.
    let a = [
        "train",
        "--data",
        data,
        "--epochs",
        "2",
        "--batch-size",
        "16",
    ];
    let args: Vec<&str> = a.iter().copied().chain(["--stop-after", "1"]).collect();
    let (o1, o2) = std::thread::scope(|s| {
        let h = s.spawn(|| run_in(&d, &args, &[]));
        (run_in(&d, &args, &[]), h.join().unwrap())
    });
    assert!(o1.status.success() && o2.status.success(), "{}", text(&o1));
    let runs: Vec<_> = std::fs::read_dir(d.join("runs")).unwrap().collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
}

#[test]
fn resume_checks_flags_and_data_and_extends_epochs() {
    plugins();
    let d = scratch("resume");
    tiny_data(&d.join("data"), 0.0, |c| c as i64);
    tiny_data(&d.join("other"), 5.0, |c| c as i64);
    // A relative data path: saved absolute, so a resume from elsewhere finds the same data.
    let o = run_in(&d, &train_args("data", "run", "1"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let run = d.join("run");
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains(&format!("data = \"{}\"", d.join("data").display())),
        "{saved}"
    );
    let elsewhere = scratch("resume-cwd");
    let r = run.to_str().unwrap();
    // Flags that would change the run are refused, all named.
    let o = run_in(
        &elsewhere,
        &[
            "train",
            "--resume",
            r,
            "--lr",
            "5",
            "--batch-size",
            "3",
            "--out",
            "x",
        ],
        &[],
    );
    let e = err(&o);
    assert!(!o.status.success(), "{}", text(&o));
    for flag in ["--lr 5", "--batch-size 3", "--out x"] {
        assert!(e.contains(flag), "{flag}: {e}");
    }
    // Other data at the saved path is refused; so is other data given with --data.
    std::fs::rename(d.join("data"), d.join("moved")).unwrap();
    std::fs::rename(d.join("other"), d.join("data")).unwrap();
    let o = run_in(
        &elsewhere,
        &["train", "--resume", r, "--stop-after", "2"],
        &[],
    );
    refused(&o, "trained on other data");
    let other = d.join("data");
    let o = run_in(
        &elsewhere,
        &["train", "--resume", r, "--data", other.to_str().unwrap()],
        &[],
    );
    assert!(err(&o).contains("trained on other data"), "{}", text(&o));
    assert!(
        !run.join("results.json").exists(),
        "a refused resume wrote results"
    );
    // The moved data is accepted, and --epochs extends the run past its plan.
    let moved = d.join("moved");
    let o = run_in(
        &elsewhere,
        &[
            "train",
            "--resume",
            r,
            "--data",
            moved.to_str().unwrap(),
            "--epochs",
            "6",
            "--stop-after",
            "5",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(epoch_of(&run), 5);
    let o = run_in(
        &elsewhere,
        &["train", "--resume", r, "--stop-after", "5"],
        &[],
    );
    refused(&o, "already has 5 epochs");
    let o = run_in(&elsewhere, &["train", "--resume", r, "--epochs", "2"], &[]);
    refused(&o, "already trained 5 epochs");
    // A damaged log is an error on resume, naming the file and line.
    let metrics = run.join("metrics.jsonl");
    let good = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, good.replacen("{\"epoch\":2", "{\"epch\":2", 1)).unwrap();
    let o = run_in(&elsewhere, &["train", "--resume", r], &[]);
    refused(&o, "metrics.jsonl: line 2");
}

#[test]
fn damaged_and_non_finite_checkpoints_are_refused_and_old_ones_load() {
    plugins();
    let d = scratch("integrity");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let run = d.join("run");
    let o = run_in(
        &d,
        &train_args(data.to_str().unwrap(), run.to_str().unwrap(), "1"),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let file = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    // One flipped bit in the weights (the last bytes are tensor data).
    let mut flipped = bytes.clone();
    let at = flipped.len() - 9;
    flipped[at] ^= 0x10;
    let bad = d.join("flipped.safetensors");
    std::fs::write(&bad, &flipped).unwrap();
    let e = Checkpoint::load(&bad).err().unwrap().to_string();
    assert!(e.contains("is damaged"), "{e}");
    // Through the CLI too (eval of a damaged run folder).
    std::fs::write(&file, &flipped).unwrap();
    let o = run_in(&d, &["eval", "--checkpoint", run.to_str().unwrap()], &[]);
    refused(&o, "is damaged");
    std::fs::write(&file, &bytes).unwrap();

    // A checkpoint written before checksums (no `checksum` entry) loads, with a warning; one
    // of those with a NaN weight is refused.
    let c = Checkpoint::load(&file).unwrap();
    let write_unchecked = |path: &Path, c: &Checkpoint| {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = c
            .tensors
            .iter()
            .map(|(k, (s, v))| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (k.clone(), s.clone(), b)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = raw
            .iter()
            .map(|(k, s, b)| {
                let v = safetensors::tensor::TensorView::new(
                    safetensors::tensor::Dtype::F32,
                    s.clone(),
                    b,
                )
                .unwrap();
                (k.clone(), v)
            })
            .collect();
        let mut meta = c.meta.clone();
        meta.remove("checksum");
        std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    };
    let old = d.join("old.safetensors");
    write_unchecked(&old, &c);
    assert!(Checkpoint::load(&old).is_ok());
    // A run folder of that time resumes (and its next checkpoint carries a checksum).
    let old_run = d.join("old-run");
    std::fs::create_dir_all(&old_run).unwrap();
    for f in ["metrics.jsonl", "steps.jsonl", "config.toml"] {
        std::fs::copy(run.join(f), old_run.join(f)).unwrap();
    }
    write_unchecked(&old_run.join("checkpoint.safetensors"), &c);
    let r = old_run.to_str().unwrap();
    let o = run_in(&d, &["train", "--resume", r, "--stop-after", "2"], &[]);
    assert!(
        o.status.success() && err(&o).contains("written before checkpoints carried a checksum"),
        "{}",
        text(&o)
    );
    assert!(Checkpoint::load(&old_run)
        .unwrap()
        .meta
        .contains_key("checksum"));
    let mut nan = Checkpoint::load(&file).unwrap();
    let (name, (_, v)) = nan
        .tensors
        .iter_mut()
        .find(|(k, _)| k.starts_with("encoder."))
        .unwrap();
    let name = name.clone();
    v[0] = f32::NAN;
    write_unchecked(&old, &nan);
    let e = Checkpoint::load(&old).err().unwrap().to_string();
    assert!(e.contains(&name) && e.contains("non-finite"), "{e}");
    // Non-finite values are refused on save as well.
    let e = nan.save(&d).err().unwrap().to_string();
    assert!(e.contains("not written") && e.contains(&name), "{e}");
    assert!(!d.join("checkpoint.safetensors").exists());
    no_temp_files(&d);
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_saves_nothing_diverged() {
    plugins();
    let d = scratch("diverge");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let run = d.join("run");
    let mut args = train_args(data.to_str().unwrap(), run.to_str().unwrap(), "1");
    args.extend(["--lr", "1e30"]);
    let o = run_in(&d, &args, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let e = err(&o);
    assert!(
        e.contains("training diverged") || e.contains("the loss became"),
        "{e}"
    );
    assert!(e.contains("lower the learning rate"), "{e}");
    assert!(!run.join("checkpoint.safetensors").exists());
}

#[test]
fn labels_may_be_sparse_or_huge_and_user_arrays_are_checked() {
    plugins();
    let d = scratch("labels");
    // Labels 0, 200, 4e9 and u32::MAX: dense class ids inside, the class map in the checkpoint.
    let ids = [0i64, 200, 4_000_000_000, u32::MAX as i64];
    let data = tiny_data(&d.join("data"), 0.0, |c| ids[c]);
    let ds = vkgrad::data::Dataset::load(data.to_str().unwrap()).unwrap();
    assert_eq!(ds.classes(), 4);
    assert_eq!(ds.class_ids, vec![0, 200, 4_000_000_000, u32::MAX]);
    assert!(ds.labels.iter().all(|&l| l < 4));
    let run = d.join("run");
    let o = run_in(
        &d,
        &train_args(data.to_str().unwrap(), run.to_str().unwrap(), "1"),
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let c = Checkpoint::load(&run).unwrap();
    assert_eq!(c.meta["class_ids"], "[0,200,4000000000,4294967295]");
    // A rank-1 features array is an error naming the file, not a panic.
    save_npy(&d.join("rank1.npy"), &[80], &[0.5f32; 80]);
    save_npy(&d.join("labels.npy"), &[80], &[1i64; 80]);
    let o = run_in(&d, &["train", "--data", "rank1.npy", "--out", "r"], &[]);
    let e = err(&o);
    assert!(
        !o.status.success() && e.contains("rank1.npy") && e.contains("[N, D]"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn defaults_work_on_npy_with_the_template_built_beside_the_built_ins() {
    plugins();
    let d = scratch("defaults");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let o = run_in(&d, &train_args(data.to_str().unwrap(), "run", "1"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        err(&o).contains("using the built-in augment::gaussian_noise"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_flags_are_clear_errors() {
    let d = scratch("flags");
    let cases: [(&[&str], &str); 6] = [
        (
            &["train", "--lr", "nan"],
            "--lr must be a positive, finite number, got NaN",
        ),
        (
            &["train", "--lr", "0"],
            "--lr must be a positive, finite number, got 0",
        ),
        (
            &["train", "--stop-after", "0"],
            "--stop-after must be at least 1",
        ),
        (&["bench", "--filter", "nosuch"], "matches no benchmark"),
        (&["plugins", "--plugin", "."], "holds no plugin files"),
        (&["train", "--resume", "nowhere"], "not a run folder"),
    ];
    for (args, want) in cases {
        let o = run_in(&d, args, &[]);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(err(&o).contains(want), "{args:?}: {}", text(&o));
    }
    // Nothing was written for the refused runs.
    assert!(!d.join("runs").exists());
}

#[cfg(unix)]
#[test]
fn ctrl_c_says_where_the_run_stands_and_how_to_resume() {
    plugins();
    let d = scratch("ctrl-c");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    let run = d.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_vkgrad"))
        .current_dir(&d)
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "100000",
        ])
        .args(["--batch-size", "16", "--out", run.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !run.join("checkpoint.safetensors").exists() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Safety: sends SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let at = epoch_of(&run);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(e.contains("interrupted at step"), "{e}");
    assert!(
        e.contains(&format!("vkgrad train --resume {}", run.display())),
        "{e}"
    );
    // And the run continues from there.
    let (total, stop) = ((at + 2).to_string(), (at + 1).to_string());
    let o = run_in(
        &d,
        &[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--epochs",
            &total,
            "--stop-after",
            &stop,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(epoch_of(&run), at + 1);
}

#[test]
fn a_split_that_holds_out_whole_classes_is_named() {
    plugins();
    let d = scratch("split");
    let data = tiny_data(&d.join("data"), 0.0, |c| c as i64);
    // Labels in a cycle of 5: every 5th sample (the held-out split) is class 0.
    let y: Vec<i64> = (0..80).map(|i| i % 5).collect();
    save_npy(&data.join("labels.npy"), &[80], &y);
    let o = run_in(&d, &train_args(data.to_str().unwrap(), "run", "1"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        err(&o).contains("have labels [0] that no training sample has"),
        "{}",
        text(&o)
    );
}
