//! Data-parallel training on MPI (docs/distributed.md), with real processes: `mpirun
//! --oversubscribe -np 2 vkgrad train …` on the one device of this machine against the same
//! run in one process. K = 2 with global batch B must take the steps K = 1 takes with batch B
//! (same per-step losses, same parameters after at least 5 steps, up to the order of f32 sums)
//! — on digits with the default ConvNet (batch norm synchronised) and on vectors with the MLP
//! encoder, each for SimCLR, SupCon and BYOL; with `sync_batch_norm = false` each rank's batch norm
//! sees its own shard, which is what GradCache with chunks of one shard computes in one
//! process. And the `all_gather` gradient against finite differences of the gathered loss; a
//! rank killed mid-run ends the job with the rank named.
//!
//! Needs OpenMPI's `mpirun` (scripts/setup.sh installs it) and the `mpi` feature (the README's
//! test command turns it on).
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vkgrad::reference::tol;
use vkgrad::train::checkpoint::Checkpoint;

/// `mpirun -np k` of `program args` (as root too; oversubscribed: 2 ranks on 2 cores share
/// the one device). Docker-like containers forbid the shared-memory transport's single copy
/// (ptrace); plain copies work everywhere.
fn mpirun(k: usize, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &k.to_string(),
    ])
    .arg(program)
    .args(args)
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env_remove("VKGRAD_DEVICE");
    for (a, b) in env {
        cmd.env(a, b);
    }
    cmd.output()
        .expect("mpirun: OpenMPI is missing (bash scripts/setup.sh installs it)")
}

fn plugins() -> Vec<String> {
    [
        "vkgrad-plugin-encoders",
        "vkgrad-plugin-augment",
        "vkgrad-plugin-contrastive",
    ]
    .iter()
    .flat_map(|p| {
        [
            "--plugin".to_string(),
            common::built_plugin(p).display().to_string(),
        ]
    })
    .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-dist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d); // a leftover of an earlier run of this process id
    d
}

/// Trains one epoch with `k` ranks into a fresh folder; returns it.
fn train(k: usize, name: &str, args: &[&str]) -> PathBuf {
    train_with(k, name, args, &[])
}

/// [`train`] with environment variables set.
fn train_with(k: usize, name: &str, args: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let out = tmp(name);
    let out_s = out.display().to_string();
    let mut all: Vec<&str> = vec!["train", "--json", "--out", &out_s];
    if !args.contains(&"--epochs") {
        all.extend(["--epochs", "1"]);
    }
    all.extend(args);
    let p = plugins();
    all.extend(p.iter().map(String::as_str));
    let o = mpirun(k, Path::new(env!("CARGO_BIN_EXE_vkgrad")), &all, env);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{k} ranks: vkgrad train {args:?} failed:\n{err}"
    );
    if env.contains(&("VKGRAD_REPLAY", "0")) {
        assert!(!err.contains("execution:"), "{err}");
        return out;
    }
    // The step is replayed in data-parallel runs too (the leader says so), split into segments
    // around its collectives, and so is the update with the gradients' all-reduce inside; the
    // comparisons below then cover both.
    assert!(
        err.contains("updates replayed") && err.contains("steps replayed"),
        "{k} ranks: vkgrad train {args:?}: not replayed:\n{err}"
    );
    if k > 1 {
        assert!(
            err.contains("segments around its collectives")
                && err.contains("segments around the gradients' all-reduce"),
            "{k} ranks: vkgrad train {args:?}: no collectives in the recordings:\n{err}"
        );
    }
    out
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The trainable parameters (no optimiser state, no running statistics) after the run.
fn params(run: &Path) -> Vec<(String, Vec<f32>)> {
    let c = Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = c
        .tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optimizer.") && !k.contains("running"))
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The same steps: per-step losses and final parameters within the f32 bound of sums over
/// `2 b` terms in another order (`reference/tol.rs`), parameters relative to the largest
/// parameter of their tensor (Adam normalises each update, so an update's size is the lr).
fn assert_same_run(a: &Path, b: &Path, batch: usize, what: &str) {
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len(), "{what}: step counts");
    assert!(la.len() >= 5, "{what}: {} steps, want at least 5", la.len());
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        let bound = tol::GRADIENT.bound(x.abs(), 2 * batch);
        assert!(
            (x - y).abs() <= bound,
            "{what}: step {}: loss {x} (1 rank) vs {y} (2 ranks), bound {bound:e}",
            i + 1
        );
    }
    for ((name, p), (_, q)) in params(a).iter().zip(&params(b)) {
        let scale = p.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        let bound = tol::GRADIENT.bound(scale, 2 * batch);
        for (i, (x, y)) in p.iter().zip(q).enumerate() {
            assert!(
                ((x - y) as f64).abs() <= bound,
                "{what}: {name}[{i}]: {x} (1 rank) vs {y} (2 ranks), bound {bound:e}"
            );
        }
    }
}

/// 640 training vectors (5 steps of 128 after the held-out split).
fn vectors() -> String {
    let dir = tmp("data");
    common::write_vectors(&dir, 800);
    dir.display().to_string()
}

#[test]
fn two_ranks_take_the_one_process_steps_on_digits_with_global_batch_norm_for_every_method() {
    // The default ConvNet (batch norm in every block), 10 steps of 128, AdamW. BYOL with SGD:
    // the head's last bias feeds the predictor's Linear + batch norm, so its exact gradient is
    // 0 (see the vectors test below for why Adam would then step on noise).
    for (method, opt) in [("simclr", "adamw"), ("supcon", "adamw"), ("byol", "sgd")] {
        let args = [
            "--data",
            "digits",
            "--batch-size",
            "128",
            "--method",
            method,
            "--optimizer",
            opt,
        ];
        let one = train(1, &format!("digits-{method}-1"), &args);
        let two = train(2, &format!("digits-{method}-2"), &args);
        assert_same_run(&one, &two, 128, &format!("{method} digits"));
    }
}

#[test]
fn two_ranks_take_the_one_process_steps_on_vectors_for_every_method() {
    let data = vectors();
    // SGD: the encoder's last bias feeds the head's Linear + batch norm, which takes any
    // per-channel shift out again, so its exact gradient is 0 and its computed one rounding
    // noise; Adam's normalisation turns noise into full learning-rate steps in arbitrary
    // directions (seen: 4 % apart after 5 steps), SGD keeps a noise-sized step noise.
    for method in ["simclr", "supcon", "byol"] {
        let args = [
            "--data",
            &data,
            "--method",
            method,
            "--batch-size",
            "128",
            "--optimizer",
            "sgd",
        ];
        let one = train(1, &format!("{method}-1"), &args);
        let two = train(2, &format!("{method}-2"), &args);
        assert_same_run(&one, &two, 128, method);
    }
}

/// Replay in a data-parallel run: the step recorded once, split around its collectives (the
/// embeddings' all-gather, batch norm's `replica_sum` forward and backward), and replayed with
/// the collectives run between its segments gives the bits of the same run op by op.
#[test]
fn two_ranks_replay_their_steps_bit_for_bit() {
    let args = [
        "--data",
        "digits",
        "--batch-size",
        "128",
        "--method",
        "simclr",
    ];
    let replayed = train(2, "digits-replayed-2", &args);
    let eager = train_with(2, "digits-eager-2", &args, &[("VKGRAD_REPLAY", "0")]);
    let steps = |d: &Path| std::fs::read_to_string(d.join("steps.jsonl")).unwrap();
    let (a, b) = (steps(&replayed), steps(&eager));
    assert!(a.lines().count() >= 5, "{a}");
    assert_eq!(a, b, "per-step losses");
    assert_eq!(
        params(&replayed),
        params(&eager),
        "parameters after the run"
    );
}

#[test]
fn without_sync_batch_norm_each_rank_normalises_its_own_shard() {
    // Per-rank statistics over each rank's shard (both views of its samples) are what
    // GradCache computes in one process with a chunk of one shard: the same losses and
    // parameters. With the synchronised default they differ (the global batch's statistics).
    let data = vectors();
    let base = [
        "--data",
        data.as_str(),
        "--batch-size",
        "128",
        "--optimizer",
        "sgd",
    ];
    let per_rank = [&base[..], &["--sync-batch-norm", "false"]].concat();
    let two = train(2, "nosync-2", &per_rank);
    let chunked = [&base[..], &["--grad-cache", "64"]].concat();
    let one = train(1, "nosync-1", &chunked);
    assert_same_run(&one, &two, 128, "per-rank batch norm vs chunks of 64");
    let synced = train(2, "sync-2", &base);
    assert_ne!(
        losses(&synced)[1..],
        losses(&two)[1..],
        "synchronised and per-rank batch norm gave the same steps"
    );
}

#[test]
fn a_run_of_two_ranks_resumes_with_one() {
    // The checkpoint holds no rank-specific state: 2 ranks for epoch 1, then 1 process for
    // epoch 2, equals 1 process for both (and rank 1 wrote nothing: the folder is rank 0's).
    let data = vectors();
    let args = [
        "--data",
        data.as_str(),
        "--batch-size",
        "128",
        "--optimizer",
        "sgd",
        "--epochs",
        "2",
    ];
    let whole = train(1, "resume-whole", &args);
    let run = train(
        2,
        "resume-split",
        &[&args[..], &["--stop-after", "1"]].concat(),
    );
    assert_eq!(losses(&run).len(), 5);
    let run_s = run.display().to_string();
    let mut all = vec!["train", "--resume", run_s.as_str(), "--json"];
    let p = plugins();
    all.extend(p.iter().map(String::as_str));
    let o = mpirun(1, Path::new(env!("CARGO_BIN_EXE_vkgrad")), &all, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_run(&whole, &run, 128, "2 ranks then resumed with 1");
}

#[test]
fn a_global_batch_the_ranks_cannot_share_is_refused() {
    common::shipped_plugins(); // the plugins vkgrad finds beside itself
    let out = tmp("odd");
    let out_s = out.display().to_string();
    let o = mpirun(
        2,
        Path::new(env!("CARGO_BIN_EXE_vkgrad")),
        &[
            "train",
            "--batch-size",
            "63",
            "--epochs",
            "1",
            "--out",
            &out_s,
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    // Every rank refuses it; whichever says so first ends the job (MPI_Abort), naming itself.
    assert!(
        err.contains(" of 2: batch_size 63 is the global batch, shared by 2 ranks"),
        "{err}"
    );
}

#[test]
fn only_train_runs_data_parallel() {
    // `embed`, `export`, `eval` … under mpirun would write the same files from every rank.
    let o = mpirun(
        2,
        Path::new(env!("CARGO_BIN_EXE_vkgrad")),
        &["devices"],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("this command runs in one process; it was launched as 2"),
        "{err}"
    );
}

/// A 2-rank digits run into a fresh folder with a fault injected by `env`: the output, the
/// folder, and the seconds it took (the plugins are those vkgrad finds beside itself).
fn faulty_run(name: &str, env: &[(&str, &str)]) -> (Output, PathBuf, u64) {
    common::shipped_plugins();
    let out = tmp(name);
    let out_s = out.display().to_string();
    let start = std::time::Instant::now();
    let args = [
        "train",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--out",
        &out_s,
    ];
    let o = mpirun(2, Path::new(env!("CARGO_BIN_EXE_vkgrad")), &args, env);
    (o, out, start.elapsed().as_secs())
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_naming_it() {
    // Rank 1 ends itself by SIGKILL after its third step (the trainer's fault injection,
    // VKGRAD_FAULT): the job must end, not hang, and say which rank died.
    let (o, out, secs) = faulty_run("killed", &[("VKGRAD_FAULT", "kill_rank:1@3")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("rank 1") && err.contains("signal 9"),
        "the job's error does not name the killed rank:\n{err}"
    );
    assert!(secs < 300);
    // Nothing of the run was saved as if it had finished.
    assert!(!out.join("results.json").exists());
}

#[test]
fn a_hung_rank_ends_the_job_by_the_watchdog() {
    // Rank 1 stops answering after step 3; rank 0 waits in the next step's collective until
    // its watchdog (VKGRAD_DIST_TIMEOUT = 20 s) names it and ends the job.
    let (o, out, secs) = faulty_run(
        "hung",
        &[
            ("VKGRAD_FAULT", "hang_rank:1@3"),
            ("VKGRAD_DIST_TIMEOUT", "20"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        // The next step's first collective: batch norm's all_reduce.
        err.contains("rank 0 of 2: waited 20 s in all_reduce"),
        "the watchdog did not name the waiting rank and collective:\n{err}"
    );
    assert!(secs < 300);
    assert!(!out.join("results.json").exists());
}

/// The inner half of the all_gather (and all_reduce_sum) gradient check: run under `mpirun -np 2` by the test
/// below (ignored when run alone).
#[test]
#[ignore = "run by all_gather_gradient_matches_finite_differences under mpirun"]
fn all_gather_gradient_rank_body() {
    use vkgrad::Tensor;
    let w = vkgrad::dist::init().unwrap();
    let (r, k) = (w.rank(), w.size());
    // Rank r holds r + 2 rows of 3: variable counts.
    let rows = |q: usize| q + 2;
    let d = 3;
    let x_of = |q: usize| -> Vec<f64> {
        (0..rows(q) * d)
            .map(|i| ((i * 7 + q * 13) as f64 * 0.37).sin())
            .collect()
    };
    // Each rank's own loss on the gathered rows: L_q = Σ tanh(G) ⊙ W_q, W_q differing by rank.
    let total: usize = (0..k).map(rows).sum();
    let w_of = |q: usize| -> Vec<f64> {
        (0..total * d)
            .map(|i| ((i * 3 + q * 5) as f64 * 0.61).cos())
            .collect()
    };
    let x = Tensor::from_vec(x_of(r).iter().map(|&v| v as f32).collect(), &[rows(r), d])
        .unwrap()
        .requires_grad();
    let g = x.all_gather().unwrap();
    assert_eq!(g.shape(), &[total, d]);
    let wr = Tensor::from_vec(w_of(r).iter().map(|&v| v as f32).collect(), &[total, d]).unwrap();
    let loss = g.tanh().unwrap().mul(&wr).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let grad = x.grad().unwrap().to_vec().unwrap();
    // The job's objective J = Σ_q L_q, in f64 on the host, and its central difference in each
    // of this rank's inputs.
    let j = |xs: &[Vec<f64>]| -> f64 {
        let gathered: Vec<f64> = xs.iter().flatten().copied().collect();
        (0..k)
            .map(|q| {
                gathered
                    .iter()
                    .zip(w_of(q))
                    .map(|(v, w)| v.tanh() * w)
                    .sum::<f64>()
            })
            .sum()
    };
    let mut xs: Vec<Vec<f64>> = (0..k).map(x_of).collect();
    let h = 1e-6;
    for (i, &gi) in grad.iter().enumerate() {
        let v = xs[r][i];
        xs[r][i] = v + h;
        let up = j(&xs);
        xs[r][i] = v - h;
        let down = j(&xs);
        xs[r][i] = v;
        let fd = (up - down) / (2.0 * h);
        let bound = tol::GRADIENT.bound(fd.abs().max(1.0), total * d);
        assert!(
            (gi as f64 - fd).abs() <= bound,
            "rank {r}: dJ/dx[{i}] = {gi} by all_gather's backward, {fd} by finite differences"
        );
    }
    // all_reduce_sum (batch norm's replica_sum): every rank holds y_r [4], S = Σ_r y_r, and
    // L_q = Σ tanh(S) ⊙ V_q; dJ/dy_r by its backward (a sum over ranks) vs finite differences.
    let y_of =
        |q: usize| -> Vec<f64> { (0..4).map(|i| ((i + 5 * q) as f64 * 0.29).cos()).collect() };
    let v_of = |q: usize| -> Vec<f64> {
        (0..4)
            .map(|i| ((i * 2 + q * 7) as f64 * 0.53).sin())
            .collect()
    };
    let y = Tensor::from_vec(y_of(r).iter().map(|&v| v as f32).collect(), &[4])
        .unwrap()
        .requires_grad();
    let vr = Tensor::from_vec(v_of(r).iter().map(|&v| v as f32).collect(), &[4]).unwrap();
    let l = y
        .all_reduce_sum()
        .unwrap()
        .tanh()
        .unwrap()
        .mul(&vr)
        .unwrap()
        .sum_all()
        .unwrap();
    l.backward().unwrap();
    let gy = y.grad().unwrap().to_vec().unwrap();
    let jy = |ys: &[Vec<f64>]| -> f64 {
        (0..k)
            .map(|q| {
                (0..4)
                    .map(|i| ys.iter().map(|y| y[i]).sum::<f64>().tanh() * v_of(q)[i])
                    .sum::<f64>()
            })
            .sum()
    };
    let mut ys: Vec<Vec<f64>> = (0..k).map(y_of).collect();
    for (i, &gi) in gy.iter().enumerate() {
        let v = ys[r][i];
        ys[r][i] = v + h;
        let up = jy(&ys);
        ys[r][i] = v - h;
        let down = jy(&ys);
        ys[r][i] = v;
        let fd = (up - down) / (2.0 * h);
        let bound = tol::GRADIENT.bound(fd.abs().max(1.0), 4 * k);
        assert!(
            (gi as f64 - fd).abs() <= bound,
            "rank {r}: dJ/dy[{i}] = {gi} by all_reduce_sum's backward, {fd} by finite differences"
        );
    }
    println!("all_gather gradient checked on rank {r} of {k}");
    vkgrad::dist::finalize().unwrap();
}

#[test]
fn all_gather_gradient_matches_finite_differences() {
    let me = std::env::current_exe().unwrap();
    let o = mpirun(
        2,
        &me,
        &[
            "--exact",
            "all_gather_gradient_rank_body",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    for r in 0..2 {
        assert!(
            text.contains(&format!("all_gather gradient checked on rank {r} of 2")),
            "{text}"
        );
    }
}
