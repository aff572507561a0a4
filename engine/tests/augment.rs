//! The augmentation plugin (plugins/augment) through the real plugin path: the properties every
//! transform must have, beyond `vkgrad verify`'s device-vs-reference checks.

mod common;

use vkgrad::plugin::{Instance, Registry};
use vkgrad::Tensor;

fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::default();
        r.load(&common::built_plugin("vkgrad-plugin-augment"))
            .expect("load augment plugin");
        r
    })
}

fn aug(name: &str, options: &str) -> Instance {
    registry()
        .component(&format!("augment::{name}"))
        .expect("component")
        .instantiate(options)
        .unwrap_or_else(|e| panic!("{name} {options}: {e}"))
}

/// Images in [0, 1]: [n, c, s, s].
fn images(n: usize, c: usize, s: usize) -> Tensor {
    let v: Vec<f32> = (0..n * c * s * s)
        .map(|i| (((i as f64 + 1.0) * 0.618_034).sin() * 0.5 + 0.5) as f32)
        .collect();
    Tensor::from_vec(v, &[n, c, s, s]).unwrap()
}

fn run(a: &Instance, x: &Tensor, seed: u64) -> Vec<f32> {
    a.augment(x, seed).unwrap().to_vec().unwrap()
}

#[test]
fn identity_parameters_give_the_identity() {
    let x = images(4, 3, 8);
    let want = x.to_vec().unwrap();
    for (name, o) in [
        (
            "color_jitter",
            r#"{"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0, "p": 1}"#,
        ),
        ("horizontal_flip", r#"{"p": 0}"#),
        ("random_grayscale", r#"{"p": 0}"#),
        ("gaussian_blur", r#"{"p": 0}"#),
        ("solarize", r#"{"threshold": 1.0, "p": 1}"#),
    ] {
        let o = o.replace('{', r#"{"channels": 3, "size": 8, "#);
        assert_eq!(run(&aug(name, &o), &x, 3), want, "{name} {o}");
    }
    // A crop with scale 1 and ratio 1 covers the whole image: the identity up to the rounding
    // of sample coordinates.
    let crop = aug(
        "random_resized_crop",
        r#"{"channels": 3, "size": 8, "scale": [1, 1], "ratio": [1, 1]}"#,
    );
    for (g, w) in run(&crop, &x, 5).iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn flipping_twice_is_the_identity() {
    let x = images(3, 1, 6);
    let flip = aug("horizontal_flip", r#"{"channels": 1, "size": 6, "p": 1}"#);
    let once = flip.augment(&x, 1).unwrap();
    let v = once.to_vec().unwrap();
    let xv = x.to_vec().unwrap();
    assert_eq!(v[0], xv[5]); // the first pixel of a row is the last one of the original
    assert_eq!(run(&flip, &once, 2), xv);
}

#[test]
fn probability_zero_never_applies_and_one_always_does() {
    let x = images(16, 3, 8);
    let xv = x.to_vec().unwrap();
    let per = 3 * 64;
    let never = aug(
        "solarize",
        r#"{"channels": 3, "size": 8, "threshold": 0.5, "p": 0}"#,
    );
    assert_eq!(run(&never, &x, 9), xv);
    let always = aug(
        "solarize",
        r#"{"channels": 3, "size": 8, "threshold": 0.5, "p": 1}"#,
    );
    let y = run(&always, &x, 9);
    for (a, b) in y.iter().zip(&xv) {
        assert_eq!(*a, if *b >= 0.5 { 1.0 - b } else { *b });
    }
    // p = 0.5: some samples changed, some not, each either wholly changed or wholly kept.
    let half = aug(
        "solarize",
        r#"{"channels": 3, "size": 8, "threshold": 0.5, "p": 0.5}"#,
    );
    let y = run(&half, &x, 9);
    let changed: Vec<bool> = (0..16)
        .map(|s| y[s * per..(s + 1) * per] != xv[s * per..(s + 1) * per])
        .collect();
    assert!(
        changed.iter().any(|&c| c) && changed.iter().any(|&c| !c),
        "{changed:?}"
    );
}

#[test]
fn outputs_stay_in_the_valid_range() {
    let x = images(8, 3, 16);
    for name in [
        "simclr",
        "byol",
        "color_jitter",
        "gaussian_blur",
        "random_resized_crop",
        "solarize",
        "random_grayscale",
    ] {
        let y = run(&aug(name, r#"{"channels": 3, "size": 16}"#), &x, 11);
        assert!(
            y.iter().all(|v| (0.0..=1.0).contains(v)),
            "{name} left [0, 1]"
        );
    }
    let d = images(8, 1, 8);
    let y = run(&aug("digits", r#"{"size": 8}"#), &d, 4);
    assert!(y.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn samples_in_a_batch_get_independent_parameters() {
    // The same image in every row: crops drawn per sample make the rows differ.
    let one = images(1, 1, 8).to_vec().unwrap();
    let x = Tensor::from_vec(one.repeat(6), &[6, 1, 8, 8]).unwrap();
    let y = run(
        &aug("random_resized_crop", r#"{"channels": 1, "size": 8}"#),
        &x,
        2,
    );
    let rows: Vec<&[f32]> = y.chunks(64).collect();
    for i in 0..6 {
        for j in i + 1..6 {
            assert_ne!(rows[i], rows[j], "samples {i} and {j} got the same crop");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_batch_bit_for_bit() {
    let x = images(8, 3, 16);
    let a = aug("simclr", r#"{"channels": 3, "size": 16}"#);
    assert_eq!(run(&a, &x, 42), run(&a, &x, 42));
    assert_ne!(run(&a, &x, 42), run(&a, &x, 43));
}

#[test]
fn byol_views_differ_in_blur_and_solarisation() {
    let v1 = aug("byol", r#"{"channels": 3, "size": 8, "view": 1}"#);
    let v2 = aug("byol", r#"{"channels": 3, "size": 8, "view": 2}"#);
    let x = images(4, 3, 8);
    assert_ne!(run(&v1, &x, 1), run(&v2, &x, 1));
    let e = registry()
        .component("augment::byol")
        .unwrap()
        .instantiate(r#"{"view": 3}"#)
        .err()
        .unwrap();
    assert!(e.to_string().contains("view must be 1 or 2"), "{e}");
}

#[test]
fn bad_options_and_shapes_are_errors() {
    let c = registry().component("augment::gaussian_blur").unwrap();
    for (o, want) in [
        (r#"{"kernel": 4}"#, "odd"),
        (r#"{"kernel": 17, "size": 8}"#, "too large"),
        (r#"{"sigma": [2, 1]}"#, "sigma"),
        (r#"{"p": 1.5}"#, "p must be in"),
        (r#"{"channels": 2}"#, "channels 1 or 3"),
    ] {
        let e = c
            .instantiate(o)
            .err()
            .unwrap_or_else(|| panic!("{o} accepted"))
            .to_string();
        assert!(e.contains(want), "{o}: {e}");
    }
    let a = aug("horizontal_flip", r#"{"channels": 3, "size": 8}"#);
    // Refused by the SDK before the plugin's code runs (SDK 0.1.5), naming both shapes.
    let e = a.augment(&images(2, 1, 8), 0).unwrap_err().to_string();
    assert!(
        e.contains(
            "a batch of shape [2, 1, 8, 8], but this augmentation takes samples of shape [3, 8, 8]"
        ),
        "{e}"
    );
}
