//! Plugins as users meet them: the template plugin loads and passes `vkgrad verify`; bad files and
//! misbehaving plugins are refused or caught with a clear error, and the host never crashes.

use std::path::{Path, PathBuf};
mod common;

use common::{built_plugin, vkgrad};
use std::process::Command;

/// A private copy, so each test loads its own instance of the library.
fn copy_of(lib: &Path, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vkgrad-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let to = dir.join(format!("lib{name}{}", std::env::consts::DLL_SUFFIX));
    std::fs::copy(lib, &to).unwrap();
    to
}

fn fixture(fault: &str, args: &[&str]) -> (bool, String, String) {
    let lib = copy_of(
        &built_plugin("vkgrad-fixture-plugin"),
        &format!("fixture_{fault}"),
    );
    let mut all: Vec<&str> = args.to_vec();
    let path = lib.to_str().unwrap().to_string();
    all.push(&path);
    vkgrad(&all, &[("VKGRAD_FIXTURE", fault)])
}

#[test]
fn the_template_plugin_passes_verify() {
    let lib = built_plugin("vkgrad-plugin-template");
    let (ok, out, err) = vkgrad(&["verify", lib.to_str().unwrap(), "--cases", "16"], &[]);
    assert!(ok, "{out}\n{err}");
    for component in ["alignment", "linear", "gaussian_noise"] {
        for property in [
            "bad options rejected",
            "default options accepted",
            "options sampled from their domains",
            "matches CPU reference",
            "finite",
            "deterministic",
        ] {
            assert!(
                out.contains(&format!("ok   template::{component} — {property}")),
                "{component} {property}: {out}"
            );
        }
    }
    for component in ["alignment", "linear"] {
        assert!(
            out.contains(&format!(
                "ok   template::{component} — gradient vs finite differences"
            )),
            "{out}"
        );
    }
    // gaussian_noise draws on the device only and says so: replayed with another seed, it
    // gives that seed's noise.
    assert!(
        out.contains("ok   template::gaussian_noise — replays with its seed as a device value"),
        "{out}"
    );
    assert!(out.contains("22 passed, 0 failed"), "{out}");
    assert!(
        out.contains("ok   template::linear — options sampled from their domains: sampled: in_features, out_features, relu"),
        "{out}"
    );
}

#[test]
fn verify_runs_one_component_with_given_options() {
    let lib = built_plugin("vkgrad-plugin-template");
    let lib = lib.to_str().unwrap();
    let (ok, out, err) = vkgrad(
        &[
            "verify",
            lib,
            "--cases",
            "8",
            "--component",
            "linear",
            "--options",
            r#"{"relu": true}"#,
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("ok   template::linear — given options accepted"),
        "{out}"
    );
    assert!(
        out.contains("7 passed, 0 failed") && !out.contains("alignment"),
        "{out}"
    );
    // Options the component refuses fail the run, naming the problem.
    let (ok, out, _) = vkgrad(
        &[
            "verify",
            lib,
            "--component",
            "linear",
            "--options",
            r#"{"relu": 3}"#,
        ],
        &[],
    );
    assert!(
        !ok && out.contains("FAIL template::linear — given options accepted"),
        "{out}"
    );
    let (ok, _, err) = vkgrad(&["verify", lib, "--component", "nope"], &[]);
    assert!(
        !ok && err.contains("no component \"nope\"") && err.contains("template::linear"),
        "{err}"
    );
}

#[test]
fn plugins_lists_components_and_options() {
    let lib = built_plugin("vkgrad-plugin-template");
    let (ok, out, err) = vkgrad(
        &["plugins", "--plugin", lib.to_str().unwrap(), "--json"],
        &[],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "template")
        .expect("template listed");
    assert_eq!(p["version"], "0.1.0");
    let c = &p["components"][0];
    assert_eq!(c["name"], "template::alignment");
    assert_eq!(c["kind"], "loss");
    assert_eq!(c["options"][0]["name"], "alpha");
    assert_eq!(c["options"][0]["default"], 2.0);
    // the same plugin through VKGRAD_PLUGIN_PATH (a folder)
    let (ok, out, _) = vkgrad(
        &["plugins"],
        &[(
            "VKGRAD_PLUGIN_PATH",
            lib.parent().unwrap().to_str().unwrap(),
        )],
    );
    assert!(ok && out.contains("template::alignment"), "{out}");
}

#[test]
fn files_that_are_not_plugins_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("vkgrad-bad-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("libgarbage.so");
    std::fs::write(
        &garbage,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let empty = dir.join("libempty.so");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.join("libtext.so");
    std::fs::write(&text, "this is not a shared library\n").unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (garbage, "is not a shared library"),
        (empty, "is empty"),
        (text, "is not a shared library"),
        (dir.join("libmissing.so"), "cannot be read"),
        (dir.clone(), "is not a regular file"),
    ];
    for (path, why) in cases {
        let (ok, _, err) = vkgrad(&["verify", path.to_str().unwrap()], &[]);
        assert!(!ok, "{path:?} was accepted");
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains(why),
            "{path:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A real shared library that is not a plugin (the Vulkan loader itself).
    let system = [
        "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
        "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    if let Some(lib) = system {
        let (ok, _, err) = vkgrad(&["verify", lib], &[]);
        assert!(
            !ok && err.contains("does not export `vkgrad_plugin_entry_v1`"),
            "{err}"
        );
    }
    // The host goes on with the good plugins when one file is bad.
    let good = built_plugin("vkgrad-plugin-template");
    let (ok, out, err) = vkgrad(
        &[
            "plugins",
            "--plugin",
            dir.join("libtext.so").to_str().unwrap(),
            "--plugin",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        ok && out.contains("template::alignment")
            && err.contains("refused")
            && err.contains("libtext.so"),
        "{out}\n{err}"
    );
}

#[test]
fn abi_and_registration_faults_are_refused() {
    let minor = vkgrad_plugin::abi::ABI_MINOR;
    let speaks = format!("is built for plugin ABI 2.x; this vkgrad speaks 1.{minor}");
    let newer = format!(
        "needs plugin ABI 1.{}, newer than this vkgrad's 1.{minor}",
        minor + 1
    );
    for (fault, why) in [
        ("wrong_major", speaks.as_str()),
        ("newer_minor", newer.as_str()),
        (
            "duplicate",
            "component `fixture::mean_square` is registered twice",
        ),
        ("bad_name", "is not namespaced as `fixture::name`"),
        ("no_reference", "has no CPU reference"),
        (
            "panic_init",
            "init panicked: fixture: init panics on purpose",
        ),
    ] {
        let (ok, _, err) = fixture(fault, &["verify"]);
        assert!(!ok, "{fault} accepted");
        assert!(
            err.contains(why) && err.contains(&format!("fixture_{fault}")),
            "{fault}: {err}"
        );
    }
}

#[test]
fn verify_catches_wrong_values_nan_and_panics() {
    let (ok, out, _) = fixture("ok", &["verify", "--cases", "8"]);
    assert!(ok, "{out}");
    // An augmentation that does not declare `draws_on_device` is not replayed with its seed as
    // a device value, so that property is not run.
    assert!(
        out.contains(
            "skip fixture::jitter — replays with its seed as a device value: not declared"
        ),
        "{out}"
    );
    // One that declares it but draws on the CPU from the seed (in its reference too): only the
    // replay property can tell.
    let (ok, out, _) = fixture("cpu_draws", &["verify", "--cases", "8"]);
    assert!(
        !ok && out.contains("ok   fixture::jitter — matches CPU reference")
            && out.contains("FAIL fixture::jitter — replays with its seed as a device value: recorded with seed"),
        "{out}"
    );
    let (ok, out, _) = fixture("wrong_gpu", &["verify", "--cases", "8"]);
    assert!(!ok);
    assert!(
        out.contains("FAIL fixture::mean_square — matches CPU reference: device")
            && out.contains("smallest failing input"),
        "{out}"
    );
    assert!(
        out.contains("FAIL fixture::mean_square — gradient vs finite differences"),
        "{out}"
    );
    let (ok, out, _) = fixture("nan", &["verify", "--cases", "8"]);
    assert!(
        !ok && out.contains("FAIL fixture::mean_square — finite: non-finite result"),
        "{out}"
    );
    let (ok, out, err) = fixture("panic_forward", &["verify", "--cases", "8"]);
    assert!(!ok);
    // The report names the side that panicked and the smallest input that panics (verify
    // goes on with fresh instances after a panic, so it shrinks like any failure); every
    // check of the component is run and reported on its own, and the correct sibling
    // component, verified in a process of its own, passes.
    for property in ["matches CPU reference", "finite", "deterministic"] {
        assert!(
            out.contains(&format!(
                "FAIL fixture::mean_square — {property}: the device path panicked: fixture: forward panics on purpose (at tests/fixture-plugin/src/lib.rs:"
            )) && out.contains("; smallest failing input: Case { n: 2,"),
            "{property}: {out}\n{err}"
        );
    }
    assert!(!out.contains("poisoned"), "{out}");
    assert!(
        out.contains("ok   fixture::cross_correlation — matches CPU reference")
            && !out.contains("FAIL fixture::cross_correlation"),
        "{out}"
    );
    // A plugin that crashes the process fails the component it crashed in, named with the
    // check it was running; the harness goes on with the other components.
    let (ok, out, err) = fixture("segfault", &["verify", "--cases", "8"]);
    assert!(!ok);
    assert!(
        out.contains("FAIL fixture::mean_square — runs without crashing the process: the process")
            && out.contains("while checking"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("ok   fixture::cross_correlation — gradient vs finite differences"),
        "{out}\n{err}"
    );
    let (ok, out, _) = fixture("panic_n5", &["verify", "--cases", "32"]);
    assert!(
        !ok && out.contains("the device path panicked")
            && out.contains("forward panics at N = 5")
            && out
                .contains("smallest failing input: Case { n: 5, v: 1, d: 1, classes: 1, seed: 0,"),
        "{out}"
    );
    // A forward that ignores an option: caught on the cases that draw it, shrunk to one option.
    let (ok, out, _) = fixture("ignores_lambda", &["verify", "--cases", "16"]);
    assert!(
        !ok && out.contains("FAIL fixture::cross_correlation — matches CPU reference: device")
            && out.contains(r#"options: "{\"lambda\":"#)
            && out.contains("ok   fixture::cross_correlation — options sampled from their domains: sampled: lambda")
            && out.contains("ok   fixture::mean_square — options sampled from their domains: no option declares a domain; tested at their defaults only (no domain declared): scale"),
        "{out}"
    );
    let (ok, out, _) = fixture("panic_reference", &["verify", "--cases", "8"]);
    assert!(
        !ok && out.contains("the CPU reference panicked")
            && out.contains("the reference panics on purpose"),
        "{out}"
    );
}

/// docs/writing-a-plugin.md, followed word for word: the template copied out of the workspace,
/// built against the SDK by path, verified and listed by the `vkgrad` binary.
#[test]
fn the_plugin_guide_works_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let guide = std::fs::read_to_string(repo.join("docs/writing-a-plugin.md")).unwrap();
    let steps = guide.split("## The steps").nth(1).expect("a steps section");
    let script = steps
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    assert!(
        script.starts_with("VKGRAD_REPO=/path/to/vkgrad\n"),
        "{script}"
    );
    let script = script.replacen("/path/to/vkgrad", repo.to_str().unwrap(), 1);
    // The guide names the release binary; here it is the binary under test.
    let (line, _) = script
        .split_once('\n')
        .and_then(|(_, rest)| rest.split_once('\n'))
        .expect("a VKGRAD= line");
    assert!(
        line.starts_with("VKGRAD=\"$VKGRAD_REPO/target/release/vkgrad\""),
        "{line}"
    );
    let script = script.replacen(line, &format!("VKGRAD={}", env!("CARGO_BIN_EXE_vkgrad")), 1);
    let work = std::env::temp_dir().join(format!("vkgrad-guide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // `vkgrad` is not on PATH: the guide calls it by its path.
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&work)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("VKGRAD_PLUGIN_PATH")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the guide's steps failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("22 passed, 0 failed"), "{stdout}");
    assert!(stdout.contains("template::alignment [loss]"), "{stdout}");
    let _ = std::fs::remove_dir_all(&work);
}

/// `vkgrad loss fixture::mean_square` on a small features file, with the fixture's `fault`.
fn fixture_loss(fault: &str) -> (bool, String, String) {
    let dir = std::env::temp_dir().join(format!("vkgrad-fixture-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("f.npy");
    vkgrad::npy::write_f32(&f, &[3, 2, 2], &[0.5; 12]).unwrap();
    let f = f.to_str().unwrap().to_string();
    fixture(
        fault,
        &["loss", "fixture::mean_square", "--features", &f, "--plugin"],
    )
}

#[test]
fn host_op_attributes_are_checked_against_their_schema() {
    let (ok, _, err) = fixture_loss("bad_attr");
    assert!(
        !ok && err.contains("sum: attribute `axis` must be an integer, got \"1\""),
        "{err}"
    );
    let (ok, _, err) = fixture_loss("unknown_attr");
    assert!(
        !ok && err.contains("mean: unknown attribute `keep_dims` (mean takes axis, keepdim)"),
        "{err}"
    );
    let (ok, out, err) = fixture_loss("ok");
    assert!(
        ok && out.contains("fixture::mean_square: 0.25"),
        "{out}\n{err}"
    );
    // The table rejects what it must (that the host runs every op of it is a unit test of
    // plugin/host_api.rs).
    use serde_json::json;
    use vkgrad::plugin::op_schema::check;
    for (op, a, why) in [
        (
            "narrow",
            json!({ "axis": 1, "start": 0 }),
            "attribute `len` (a non-negative integer) is missing",
        ),
        (
            "narrow",
            json!({ "axis": 1, "start": -1, "len": 1 }),
            "`start` must be a non-negative integer",
        ),
        (
            "random",
            json!({ "seed": 1, "offset": 5_000_000_000u64, "shape": [2], "dist": "normal", "a": 0, "b": 1 }),
            "`offset` must be an integer in 0..2^32",
        ),
        (
            "random",
            json!({ "seed": 1, "offset": 0, "shape": [2], "dist": "gauss", "a": 0, "b": 1 }),
            "`dist` must be one of uniform, normal",
        ),
        ("matmul", json!({ "ta": 1 }), "`ta` must be true or false"),
        (
            "mul_scalar",
            json!({ "s": 1e39 }),
            "`s` must be a number (read as f32)",
        ),
        (
            "relu",
            json!({ "inplace": true }),
            "relu takes no attributes",
        ),
        ("sum", json!([1]), "attributes must be a JSON object"),
        ("no_op", json!({}), "unknown host op `no_op`"),
    ] {
        let e = check(op, &a).unwrap_err().to_string();
        assert!(e.contains(why), "{op} {a}: {e}");
    }
}

#[cfg(unix)]
#[test]
fn a_crash_inside_plugin_code_names_the_plugin_file() {
    let (ok, _, err) = fixture_loss("segfault");
    assert!(!ok);
    assert!(
        err.contains("inside plugin code from") && err.contains("fixture_segfault"),
        "{err}"
    );
}

#[test]
fn refused_plugins_say_why_where_they_are_refused() {
    // Named with --plugin: the command fails with the file and the reason.
    let (ok, _, err) = fixture_loss("wrong_major");
    assert!(
        !ok && err.contains("fixture_wrong_major") && err.contains("is built for plugin ABI 2.x"),
        "{err}"
    );
    // Found in a search folder: named with its reason on stderr and skipped; the command
    // goes on with the good plugins.
    let dir = std::env::temp_dir().join(format!("vkgrad-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("libbroken.so");
    std::fs::write(&bad, b"\x7fELF but truncated").unwrap();
    let f = dir.join("f.npy");
    vkgrad::npy::write_f32(&f, &[3, 2, 2], &[0.5; 12]).unwrap();
    let contrastive = built_plugin("vkgrad-plugin-contrastive");
    let (ok, out, err) = vkgrad(
        &[
            "loss",
            "nt_xent",
            "--features",
            f.to_str().unwrap(),
            "--plugin",
            contrastive.to_str().unwrap(),
        ],
        &[("VKGRAD_PLUGIN_PATH", dir.to_str().unwrap())],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("warning: skipped") && err.contains("libbroken.so"),
        "{err}"
    );
    // A --plugin folder without plugins is an error, not an empty list.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, err) = vkgrad(&["plugins", "--plugin", empty.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("holds no plugin files"), "{err}");
}

/// The host-op table of docs/writing-a-plugin.md is the SDK's table, generated: on a change,
/// paste the text this test prints between the markers.
#[test]
fn the_host_op_table_in_the_docs_is_generated_from_the_table() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/writing-a-plugin.md"),
    )
    .unwrap();
    let (begin, end) = ("<!-- host-ops:begin -->\n", "<!-- host-ops:end -->");
    let start = doc.find(begin).expect("docs: host-ops:begin marker") + begin.len();
    let stop = doc.find(end).expect("docs: host-ops:end marker");
    let want = vkgrad_plugin::ops::markdown();
    assert!(
        doc[start..stop] == want,
        "the docs' host-op table differs from the SDK's table; it should read:\n{want}"
    );
}

/// The loss contract of ABI 1.3: a loss declares its minimum batch; below it both paths refuse
/// with the same error (the CLI too), and verify checks that. A correct Barlow-Twins-style
/// loss, whose gradient vanishes at its minimum batch N = 2, passes the gradient check thanks
/// to the documented loss floor (without it, f32 cancellation at N = 2 failed 2 of 3 seeds).
#[test]
fn a_loss_declares_its_minimum_batch_and_the_gradient_floor_holds_at_it() {
    // Its own copy of the library: tests run in parallel, and replacing a file another
    // process has loaded crashes that process.
    let lib = copy_of(&built_plugin("vkgrad-fixture-plugin"), "fixture_min_batch");
    let lib = lib.to_str().unwrap().to_string();
    let fixture = |_: &str, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.push(&lib);
        vkgrad(&all, &[("VKGRAD_FIXTURE", "ok")])
    };
    for seed in ["0", "1", "2"] {
        let (ok, out, err) = fixture(
            "ok",
            &[
                "verify",
                "--component",
                "cross_correlation",
                "--cases",
                "64",
                "--seed",
                seed,
            ],
        );
        assert!(ok, "seed {seed}: {out}\n{err}");
        assert!(
            out.contains("ok   fixture::cross_correlation — batches below the minimum refused: batch 1 refused on both paths"),
            "{out}"
        );
    }
    // The built-in losses declare 2 (the default) and refuse a single sample the same way.
    let dir = std::env::temp_dir().join(format!("vkgrad-min-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("one.npy");
    vkgrad::npy::write_f32(&f, &[1, 2, 3], &[0.5, -1.0, 2.0, 0.25, 1.0, -0.5]).unwrap();
    let f = f.to_str().unwrap().to_string();
    let (ok, _, err) = fixture(
        "ok",
        &[
            "loss",
            "fixture::cross_correlation",
            "--features",
            &f,
            "--plugin",
        ],
    );
    assert!(
        !ok && err.contains("cross_correlation takes batches of at least 2 samples, got 1"),
        "{err}"
    );
}

/// `verify --self-test`: every injected fault is caught on a correct loss, and a harness too
/// weak to catch them (no generated cases) reports each as a blind spot and fails.
#[test]
fn the_self_test_catches_every_injected_fault_or_names_the_blind_spot() {
    let lib = copy_of(&built_plugin("vkgrad-fixture-plugin"), "fixture_self_test");
    let lib = lib.to_str().unwrap();
    let (ok, out, err) = vkgrad(
        &["verify", lib, "--self-test", "--cases", "16"],
        &[("VKGRAD_FIXTURE", "ok")],
    );
    assert!(ok, "{out}\n{err}");
    for fault in [
        "forward × (1 + 1e-3)",
        "gradient × 1.1",
        "gradient dropped",
        "NaN at degenerate inputs",
    ] {
        for comp in ["fixture::mean_square", "fixture::cross_correlation"] {
            assert!(
                out.contains(&format!("caught {comp} — {fault}: by ")),
                "{comp} {fault}: {out}"
            );
        }
    }
    // cross_correlation declares a domain for `lambda` (options!); mean_square's `scale` has
    // none (a hand-written OptionSpec, as before ABI 1.4), so it gets no option fault.
    assert!(
        out.contains("caught fixture::cross_correlation — option `lambda` ignored (device path built with its default): by matches CPU reference"),
        "{out}"
    );
    assert!(out.contains("11 caught, 0 blind spot(s)"), "{out}");
    let (ok, out, _) = vkgrad(
        &["verify", lib, "--self-test", "--cases", "0"],
        &[("VKGRAD_FIXTURE", "ok")],
    );
    assert!(
        !ok && out.contains("BLIND SPOT fixture::mean_square — gradient × 1.1"),
        "{out}"
    );
}
