//! The engine's layers call only downward: device → graph (tensor, ops, lazy, with grad_mode)
//! → autograd → optimisers / plugin host → train. Read from the sources: each module's
//! `crate::` paths (its unit tests, at the end of a file, may use anything).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules (and, for `device`, the files) a source file names through `crate::`.
fn uses(src: &str) -> BTreeSet<String> {
    let code = src.split("#[cfg(test)]\nmod tests").next().unwrap();
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            group[..group.find('}').unwrap()]
                .split(',')
                .map(|n| n.trim().split("::").next().unwrap().trim())
                .collect()
        } else {
            vec![rest
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .unwrap()]
        };
        out.extend(
            names
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    out
}

/// What each module may name. Modules not listed here are above these layers.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("grad_mode", &[]),
    ("device", &["error", "device"]),
    ("dist", &["error", "dist"]),
    (
        "graph",
        &[
            "error",
            "device",
            "grad_mode",
            "reference",
            "tensor",
            "ops",
            "lazy",
            "dist",
        ],
    ),
    (
        "autograd",
        &["error", "device", "grad_mode", "tensor", "ops", "lazy"],
    ),
];

fn layer_of(module: &str) -> Option<&'static str> {
    match module {
        "tensor" | "ops" | "lazy" | "replay" => Some("graph"),
        "error" => Some("error"),
        "grad_mode" => Some("grad_mode"),
        "device" => Some("device"),
        "dist" => Some("dist"),
        "autograd" => Some("autograd"),
        _ => None,
    }
}

#[test]
fn lower_layers_never_name_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        let Some(layer) = layer_of(module) else {
            continue;
        };
        let allowed = ALLOWED.iter().find(|(l, _)| *l == layer).unwrap().1;
        for u in uses(&std::fs::read_to_string(f).unwrap()) {
            // Types re-exported at the crate root (`crate::Tensor`) are not modules.
            if u.starts_with(|c: char| c.is_uppercase()) || allowed.contains(&u.as_str()) {
                continue;
            }
            wrong.push(format!("{} names crate::{u}", rel.display()));
        }
    }
    assert!(wrong.is_empty(), "upward references:\n{}", wrong.join("\n"));
}

#[test]
fn the_buffer_pool_does_not_know_the_context() {
    // device/context.rs owns the pool; the pool is handed what it needs.
    let pool =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/device/pool.rs"))
            .unwrap();
    let code = pool.split("#[cfg(test)]\nmod tests").next().unwrap();
    assert!(!code.contains("context") && !code.contains("Context"));
}

#[test]
fn the_checker_sees_an_upward_name() {
    let u = uses("use crate::autograd::no_grad;\nfn f() { crate::{tensor::Tensor, ops}; }");
    assert!(u.contains("autograd") && u.contains("tensor") && u.contains("ops"));
}
