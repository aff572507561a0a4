//! `vkgrad loss` on .npy files, as a user comparing with Python would run it.

mod common;

use common::{built_plugin, save_npy as save, vkgrad};
use std::path::PathBuf;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("vkgrad-loss-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn features(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f64 + 1.0) * 0.618).sin() as f32)
        .collect()
}

fn run(args: &[&str]) -> (bool, String, String) {
    let plugin = built_plugin("vkgrad-plugin-contrastive");
    let mut all = vec!["loss"];
    all.extend_from_slice(args);
    all.extend(["--plugin", plugin.to_str().unwrap()]);
    vkgrad(&all, &[])
}

#[test]
fn evaluates_a_loss_and_writes_its_gradient() {
    let d = dir();
    let (f, g) = (d.join("f.npy"), d.join("g.npy"));
    save(&f, &[4, 2, 3], &features(24));
    let (ok, out, err) = run(&[
        "nt_xent",
        "--features",
        f.to_str().unwrap(),
        "--grad-out",
        g.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let value = v["loss"].as_f64().unwrap();
    assert_eq!(v["component"], "contrastive::nt_xent");
    // the same number from the component's CPU reference, in-process
    let mut reg = vkgrad::plugin::Registry::default();
    reg.load(&built_plugin("vkgrad-plugin-contrastive"))
        .unwrap();
    let loss = reg
        .component("contrastive::nt_xent")
        .unwrap()
        .create_loss("{}")
        .unwrap();
    let x: Vec<f64> = features(24).iter().map(|&a| a as f64).collect();
    let want = loss.reference(&x, &[4, 2, 3], None).unwrap();
    assert!(
        (value - want).abs() < 1e-5 * (1.0 + want.abs()),
        "{value} vs {want}"
    );
    let (shape, grad) = vkgrad::npy::read_floats(&g).unwrap();
    assert_eq!(shape, vec![4, 2, 3]);
    assert!(grad.iter().all(|v| v.is_finite()) && grad.iter().any(|v| *v != 0.0));
    // options change the value; f64 input is accepted
    let f64_path = d.join("f64.npy");
    save(&f64_path, &[4, 2, 3], &x);
    let (ok, out, _) = run(&[
        "contrastive::nt_xent",
        "--features",
        f64_path.to_str().unwrap(),
        "--set",
        "temperature=0.2",
        "--json",
    ]);
    assert!(ok);
    let v2: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((v2["loss"].as_f64().unwrap() - value).abs() > 1e-3);
}

#[test]
fn labels_and_extra_inputs() {
    let d = dir();
    let (f, l, t) = (d.join("sf.npy"), d.join("l.npy"), d.join("t.npy"));
    save(&f, &[4, 2, 3], &features(24));
    save(&l, &[4], &[0i64, 1, 0, 1]);
    let (ok, out, err) = run(&[
        "supcon",
        "--features",
        f.to_str().unwrap(),
        "--labels",
        l.to_str().unwrap(),
    ]);
    assert!(ok && out.starts_with("contrastive::supcon: "), "{out}{err}");
    save(
        &t,
        &[4, 2, 3],
        &features(24)
            .iter()
            .map(|a| a * 0.5 + 0.1)
            .collect::<Vec<f32>>(),
    );
    let (ok, out, err) = run(&[
        "byol",
        "--features",
        f.to_str().unwrap(),
        "--input",
        &format!("targets={}", t.display()),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = run(&["byol", "--features", f.to_str().unwrap()]);
    assert!(
        !ok && err.contains("needs --input targets=FILE.npy"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "nt_xent",
        "--features",
        f.to_str().unwrap(),
        "--input",
        &format!("targets={}", t.display()),
    ]);
    assert!(!ok && err.contains("takes no input `targets`"), "{err}");
    // MoCo's keys (the momentum encoder's embeddings) are its extra input `keys`.
    let (q, k) = (d.join("q.npy"), d.join("k.npy"));
    save(&q, &[4, 1, 3], &features(12));
    let keys: Vec<f32> = features(12).iter().map(|a| a * 0.9 + 0.05).collect();
    save(&k, &[4, 1, 3], &keys);
    let moco = |extra: &[&str]| {
        let mut args = vec![
            "moco",
            "--features",
            q.to_str().unwrap(),
            "--set",
            "dim=3",
            "--set",
            "queue_size=8",
            "--json",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, out, err) = moco(&["--input", &format!("keys={}", k.display())]);
    assert!(ok, "{out}{err}");
    let got = serde_json::from_str::<serde_json::Value>(&out).unwrap()["loss"]
        .as_f64()
        .unwrap();
    let mut reg = vkgrad::plugin::Registry::default();
    reg.load(&built_plugin("vkgrad-plugin-contrastive"))
        .unwrap();
    let loss = reg
        .component("contrastive::moco")
        .unwrap()
        .create_loss(r#"{"dim": 3, "queue_size": 8}"#)
        .unwrap();
    let want = loss
        .reference_with(
            &features(12).iter().map(|&a| a as f64).collect::<Vec<_>>(),
            &[4, 1, 3],
            None,
            &[&keys.iter().map(|&a| a as f64).collect::<Vec<_>>()],
        )
        .unwrap();
    assert!(
        (got - want).abs() < 1e-5 * (1.0 + want.abs()),
        "{got} vs {want}"
    );
    let (ok, _, err) = moco(&[]);
    assert!(!ok && err.contains("needs --input keys=FILE.npy"), "{err}");
}

#[test]
fn bad_files_and_options_are_clear_errors() {
    let d = dir();
    let (f, short, neg, corrupt) = (
        d.join("bf.npy"),
        d.join("short.npy"),
        d.join("neg.npy"),
        d.join("corrupt.npy"),
    );
    save(&f, &[4, 2, 3], &features(24));
    save(&short, &[3], &[0u8, 1, 2]);
    save(&neg, &[4], &[0i32, -1, 2, 3]);
    std::fs::write(&corrupt, b"\x93NUMPY garbage").unwrap();
    let fs = f.to_str().unwrap();
    for (args, why) in [
        (
            vec![
                "supcon",
                "--features",
                fs,
                "--labels",
                short.to_str().unwrap(),
            ],
            "labels of shape [3] for 4 samples",
        ),
        (
            vec![
                "supcon",
                "--features",
                fs,
                "--labels",
                neg.to_str().unwrap(),
            ],
            "label -1 is out of range",
        ),
        (
            vec!["nt_xent", "--features", corrupt.to_str().unwrap()],
            "is not a valid .npy file",
        ),
        (
            vec!["nt_xent", "--features", "/nonexistent/f.npy"],
            "cannot be read",
        ),
        (
            vec!["nt_xent", "--features", fs, "--set", "temperature=-1"],
            "temperature must be positive",
        ),
        (
            vec!["nt_xent", "--features", fs, "--set", "tau=1"],
            "unknown field `tau`",
        ),
        (
            vec!["no_such_loss", "--features", fs],
            "no loss named `no_such_loss`",
        ),
        (
            vec!["supcon", "--features", fs],
            "contrastive::supcon needs labels: pass --labels FILE.npy",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} accepted");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn the_gradient_is_never_written_over_an_input() {
    let d = dir();
    let (f, y) = (d.join("in-f.npy"), d.join("in-y.npy"));
    save(&f, &[4, 2, 3], &features(24));
    save(&y, &[4], &[0i64, 1, 0, 1]);
    let before = (std::fs::read(&f).unwrap(), std::fs::read(&y).unwrap());
    let (fs, ys) = (f.to_str().unwrap(), y.to_str().unwrap());
    for out in [fs, ys] {
        let (ok, _, err) = run(&[
            "supcon",
            "--features",
            fs,
            "--labels",
            ys,
            "--grad-out",
            out,
        ]);
        assert!(!ok && err.contains("is an input"), "{out}: {err}");
    }
    assert_eq!(
        (std::fs::read(&f).unwrap(), std::fs::read(&y).unwrap()),
        before
    );
}
