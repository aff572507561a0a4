//! The encoder plugin (plugins/encoders) through the real plugin path: output shapes for every
//! option set, batch norm's running statistics and modes, parameter names, bad input.

mod common;

use vkgrad::plugin::{init_parameter, Instance, Registry};
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

fn enc(name: &str, options: &str) -> Instance {
    registry()
        .component(&format!("encoders::{name}"))
        .expect("component")
        .instantiate(options)
        .unwrap_or_else(|e| panic!("{name} {options}: {e}"))
}

fn params(e: &Instance) -> Vec<Tensor> {
    let mut rng = Rng::new(3);
    e.describe()
        .unwrap()
        .parameters
        .iter()
        .map(|p| init_parameter(p, &mut rng).unwrap())
        .collect()
}

fn input(e: &Instance, b: usize) -> Tensor {
    let mut shape = vec![b];
    shape.extend(e.describe().unwrap().input_shape);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| ((i as f32) * 0.37).sin()).collect(), &shape).unwrap()
}

#[test]
fn output_shapes_for_every_option_set() {
    let cases: [(&str, &str, Vec<usize>); 12] = [
        ("mlp", r#"{"sizes": [5, 7, 3]}"#, vec![4, 3]),
        (
            "mlp",
            r#"{"sizes": [5, 2], "activation": "tanh"}"#,
            vec![4, 2],
        ),
        (
            "mlp",
            r#"{"sizes": [5, 6, 6, 9], "batch_norm": true, "activation": "sigmoid"}"#,
            vec![4, 9],
        ),
        (
            "convnet",
            r#"{"channels": 1, "size": 8, "widths": [4, 6]}"#,
            vec![4, 6],
        ),
        (
            "convnet",
            r#"{"channels": 3, "size": 32, "widths": [4, 4, 4, 8], "batch_norm": false}"#,
            vec![4, 8],
        ),
        (
            "convnet",
            r#"{"channels": 1, "size": 28, "widths": [3, 5, 7]}"#,
            vec![4, 7],
        ),
        (
            "convnet",
            r#"{"channels": 1, "size": 28, "widths": [3, 5], "fc": 6}"#,
            vec![4, 6],
        ),
        (
            "convnet",
            r#"{"channels": 3, "size": 9, "widths": [2, 2, 2], "fc": 3, "batch_norm": false}"#,
            vec![4, 3],
        ),
        (
            "resnet",
            r#"{"channels": 3, "size": 8, "width": 4, "stages": 3, "blocks": 1}"#,
            vec![4, 16],
        ),
        (
            "resnet",
            r#"{"channels": 1, "size": 12, "width": 2, "stages": 2, "blocks": 2}"#,
            vec![4, 4],
        ),
        (
            "projection_head",
            r#"{"in_features": 6, "hidden": 10, "out_features": 3}"#,
            vec![4, 3],
        ),
        (
            "batch_norm",
            r#"{"channels": 2, "spatial": []}"#,
            vec![4, 2],
        ),
    ];
    for (name, o, want) in cases {
        let e = enc(name, o);
        let p = params(&e);
        for training in [true, false] {
            let (y, updates) = e.encode(&input(&e, 4), &p, training).unwrap();
            assert_eq!(y.shape(), want.as_slice(), "{name} {o}");
            let buffers = e
                .describe()
                .unwrap()
                .parameters
                .iter()
                .filter(|p| p.buffer)
                .count();
            assert_eq!(
                updates.len(),
                if training { buffers } else { 0 },
                "{name} {o}"
            );
        }
    }
}

#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    // channels 2 over [B = 3, 2, 2]: running = 0.9 running + 0.1 batch, variance unbiased.
    let e = enc("batch_norm", r#"{"channels": 2, "spatial": [2]}"#);
    let x: Vec<f32> = vec![
        1.0, 2.0, 10.0, 11.0, 3.0, 5.0, 12.0, 16.0, 0.0, 7.0, 9.0, 9.0,
    ];
    let xt = Tensor::from_vec(x.clone(), &[3, 2, 2]).unwrap();
    let p = params(&e); // weight 1, bias 0, running mean 0, running var 1
    let (y, up) = e.encode(&xt, &p, true).unwrap();
    for c in 0..2 {
        let xr = &x;
        let vals: Vec<f64> = (0..3)
            .flat_map(|b| (0..2).map(move |k| xr[(b * 2 + c) * 2 + k] as f64))
            .collect();
        let m = vals.iter().sum::<f64>() / 6.0;
        let var_b = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 6.0;
        let rm = up[0].to_vec().unwrap()[c] as f64;
        let rv = up[1].to_vec().unwrap()[c] as f64;
        assert!(
            (rm - 0.1 * m).abs() < 1e-5,
            "running mean {rm} vs {}",
            0.1 * m
        );
        assert!(
            (rv - (0.9 + 0.1 * var_b * 6.0 / 5.0)).abs() < 1e-5,
            "running var {rv}"
        );
        let yv = y.to_vec().unwrap();
        let got = yv[c * 2] as f64; // sample 0, channel c, position 0
        assert!((got - (vals[0] - m) / (var_b + 1e-5).sqrt()).abs() < 1e-4);
    }
    // Evaluation mode normalises with the running statistics instead.
    let mut p2 = p.clone();
    p2[2] = up[0].clone();
    p2[3] = up[1].clone();
    let (ye, none) = e.encode(&xt, &p2, false).unwrap();
    assert!(none.is_empty());
    let (rm, rv) = (
        up[0].to_vec().unwrap()[0] as f64,
        up[1].to_vec().unwrap()[0] as f64,
    );
    let want = (x[0] as f64 - rm) / (rv + 1e-5).sqrt();
    assert!((ye.to_vec().unwrap()[0] as f64 - want).abs() < 1e-4);
    // One value per channel cannot be normalised in training: an error, as in PyTorch.
    let one = Tensor::zeros(&[1, 2, 1]).unwrap();
    let e1 = enc("batch_norm", r#"{"channels": 2, "spatial": [1]}"#);
    let err = e1.encode(&one, &params(&e1), true).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
}

#[test]
fn parameters_have_unique_names_and_pytorch_initialisation() {
    let e = enc(
        "resnet",
        r#"{"channels": 3, "size": 8, "width": 4, "stages": 2, "blocks": 2}"#,
    );
    let specs = e.describe().unwrap().parameters;
    let mut names: Vec<&str> = specs.iter().map(|p| p.name.as_str()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate parameter names");
    let stem = &specs[0];
    assert_eq!(stem.shape, vec![4, 3, 3, 3]);
    match stem.init {
        vkgrad_plugin::Init::Uniform { bound } => {
            assert!((bound - 1.0 / 27f64.sqrt()).abs() < 1e-12)
        }
        ref other => panic!("stem init {other:?}"),
    }
    assert!(specs
        .iter()
        .any(|p| p.name.ends_with("running_var") && p.buffer));
}

#[test]
fn wrong_input_shapes_and_options_are_errors() {
    let e = enc("convnet", r#"{"channels": 1, "size": 8}"#);
    let err = e
        .encode(&Tensor::zeros(&[2, 3, 8, 8]).unwrap(), &params(&e), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input must be [B, 1, 8, 8]"), "{err}");
    let c = registry().component("encoders::convnet").unwrap();
    let err = c
        .instantiate(r#"{"size": 4, "widths": [2, 2, 2, 2]}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("too small"), "{err}");
    let err = registry()
        .component("encoders::mlp")
        .unwrap()
        .instantiate(r#"{"activation": "gelu"}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("activation must be"), "{err}");
}

#[test]
fn non_default_option_sets_pass_the_verify_harness() {
    // `vkgrad verify` checks defaults; these are the other code paths (flatten + Linear head,
    // biases without batch norm, several blocks per stage), through the same properties.
    let sets = [
        ("convnet", r#"{"size": 12, "widths": [3, 4], "fc": 5}"#),
        (
            "convnet",
            r#"{"channels": 3, "size": 9, "widths": [2, 3], "fc": 4, "batch_norm": false}"#,
        ),
        (
            "convnet",
            r#"{"size": 10, "widths": [2, 3], "batch_norm": false}"#,
        ),
        (
            "resnet",
            r#"{"channels": 1, "size": 6, "width": 2, "stages": 2, "blocks": 2}"#,
        ),
        (
            "mlp",
            r#"{"sizes": [5, 6, 4], "batch_norm": true, "activation": "tanh"}"#,
        ),
    ];
    for (name, options) in sets {
        let comp = registry().component(&format!("encoders::{name}")).unwrap();
        let checks = vkgrad::plugin::verify::verify(&[comp], Some(options), 12, 1, |_| {});
        assert!(
            checks.len() >= 6,
            "{name} {options}: {} checks",
            checks.len()
        );
        for c in &checks {
            assert!(c.passed, "{name} {options}: {} — {}", c.property, c.detail);
        }
        assert_eq!(checks[1].property, "given options accepted");
    }
}

#[test]
fn convnet_fc_is_a_flatten_then_linear() {
    // Layers: conv, ReLU, 2x2 pool (also after the last width), flatten, Linear, ReLU.
    let e = enc(
        "convnet",
        r#"{"size": 8, "widths": [2], "fc": 3, "batch_norm": false}"#,
    );
    let d = e.describe().unwrap();
    let names: Vec<&str> = d.parameters.iter().map(|p| p.name.as_str()).collect();
    // conv (weight, bias), then the Linear over 2 channels x 4 x 4 = 32 inputs.
    assert_eq!(
        names,
        ["0.weight", "0.bias", "4.weight", "4.bias"],
        "{names:?}"
    );
    assert_eq!(d.parameters[2].shape, vec![32, 3]);
}
