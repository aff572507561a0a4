//! The contrastive loss families (plugins/contrastive) through the real plugin path: family
//! properties, numerics, option variants against the CPU references, and bad input.

mod common;

use vkgrad::plugin::{Instance, Registry};
use vkgrad::{IntTensor, Tensor};

fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::default();
        r.load(&common::built_plugin("vkgrad-plugin-contrastive"))
            .expect("load contrastive plugin");
        r
    })
}

fn loss(name: &str, options: &str) -> Instance {
    registry()
        .component(&format!("contrastive::{name}"))
        .expect("component")
        .create_loss(options)
        .expect("create")
}

/// Deterministic features [N, V, D] in (-1, 1).
fn features(n: usize, v: usize, d: usize, seed: u64) -> Vec<f32> {
    (0..n * v * d)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 1)) as f64 * 0.618_034).sin() as f32)
        .collect()
}

/// (value, gradient) on the device.
fn run(l: &Instance, x: &[f32], dims: [usize; 3], labels: Option<&[u32]>) -> (f32, Vec<f32>) {
    let t = Tensor::from_vec(x.to_vec(), &dims).unwrap().requires_grad();
    let lab = labels.map(|l| IntTensor::from_vec(l.to_vec(), &[l.len()]).unwrap());
    let y = l.forward(&t, lab.as_ref()).unwrap();
    y.backward().unwrap();
    (y.item().unwrap(), t.grad().unwrap().to_vec().unwrap())
}

fn reference(l: &Instance, x: &[f32], dims: [usize; 3], labels: Option<&[u32]>) -> f64 {
    let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let lf: Option<Vec<f64>> = labels.map(|l| l.iter().map(|&v| v as f64).collect());
    l.reference(&xf, &dims, lf.as_deref()).unwrap()
}

/// The error of a call that must fail.
fn refused<T>(r: vkgrad::Result<T>) -> String {
    match r {
        Ok(_) => panic!("accepted where an error was expected"),
        Err(e) => e.to_string(),
    }
}

use vkgrad::reference::tol;

/// A device loss value vs its f64 reference or a closed form (`tol::PLUGIN_LOSS_REL`, the bound
/// `vkgrad verify` uses).
fn close_loss(got: f64, want: f64) -> bool {
    (got - want).abs() <= tol::PLUGIN_LOSS_REL * (1.0 + want.abs())
}

/// Two device values of one loss: each within `PLUGIN_LOSS_REL` of the truth.
fn agree(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2.0 * tol::PLUGIN_LOSS_REL * (1.0 + b.abs())
}

/// The f64 reference vs a closed form or another f64 reference (`tol::REFERENCE_REL`).
fn close_f64(a: f64, b: f64) -> bool {
    (a - b).abs() <= tol::REFERENCE_REL * (1.0 + b.abs())
}

#[test]
fn nt_xent_on_collapsed_embeddings_is_log_2n_minus_1() {
    for n in [2usize, 5, 16] {
        let x: Vec<f32> = (0..n * 2 * 3).map(|i| [0.3f32, -1.2, 2.0][i % 3]).collect();
        let l = loss("nt_xent", "{}");
        let want = ((2 * n - 1) as f64).ln();
        let (v, _) = run(&l, &x, [n, 2, 3], None);
        assert!(
            close_loss(v as f64, want),
            "N={n}: {v} vs log(2N-1) = {want}"
        );
        assert!(close_f64(reference(&l, &x, [n, 2, 3], None), want));
    }
}

#[test]
fn supcon_with_distinct_labels_equals_nt_xent() {
    let (n, d) = (6, 5);
    let x = features(n, 2, d, 3);
    let labels: Vec<u32> = (0..n as u32).collect();
    for tau in [0.1, 0.5] {
        let nt = loss("nt_xent", &format!(r#"{{"temperature": {tau}}}"#));
        let sc = loss("supcon", &format!(r#"{{"temperature": {tau}}}"#));
        let (a, ga) = run(&nt, &x, [n, 2, d], None);
        let (b, gb) = run(&sc, &x, [n, 2, d], Some(&labels));
        assert!(agree(a as f64, b as f64), "τ={tau}: {a} vs {b}");
        assert!(
            ga.iter()
                .zip(&gb)
                .all(|(p, q)| (p - q).abs() as f64
                    <= 2.0 * tol::GRADIENT.rel * (1.0 + p.abs() as f64))
        );
        assert!(close_f64(
            reference(&nt, &x, [n, 2, d], None),
            reference(&sc, &x, [n, 2, d], Some(&labels))
        ));
    }
}

#[test]
fn invariant_to_permuting_the_batch_rescaling_and_swapping_views() {
    let (n, v, d) = (5, 2, 4);
    let x = features(n, v, d, 7);
    let labels = [0u32, 1, 0, 2, 1];
    let perm = [3usize, 0, 4, 1, 2];
    let permuted: Vec<f32> = perm
        .iter()
        .flat_map(|&i| x[i * v * d..(i + 1) * v * d].to_vec())
        .collect();
    let plabels: Vec<u32> = perm.iter().map(|&i| labels[i]).collect();
    let scaled: Vec<f32> = x.iter().map(|a| a * 3.7).collect();
    let swapped: Vec<f32> = (0..n)
        .flat_map(|i| {
            [
                &x[(i * v + 1) * d..(i * v + 2) * d],
                &x[i * v * d..(i * v + 1) * d],
            ]
            .concat()
        })
        .collect();
    for (name, labs) in [("nt_xent", None), ("supcon", Some(&labels[..]))] {
        let l = loss(name, "{}");
        let (base, _) = run(&l, &x, [n, v, d], labs);
        let (p, _) = run(&l, &permuted, [n, v, d], labs.map(|_| &plabels[..]));
        let (s, _) = run(&l, &scaled, [n, v, d], labs);
        let (w, _) = run(&l, &swapped, [n, v, d], labs);
        for (what, got) in [("permuted", p), ("rescaled", s), ("views swapped", w)] {
            assert!(
                agree(got as f64, base as f64),
                "{name} {what}: {got} vs {base}"
            );
        }
    }
}

#[test]
fn finite_at_small_temperatures_extreme_scales_and_zero_vectors() {
    let (n, v, d) = (4, 2, 3);
    let labels = [0u32, 1, 0, 1];
    for (name, labs) in [("nt_xent", None), ("supcon", Some(&labels[..]))] {
        let l = loss(name, r#"{"temperature": 0.01}"#);
        for scale in [1e-6f32, 1.0, 1e4] {
            let x: Vec<f32> = features(n, v, d, 11).iter().map(|a| a * scale).collect();
            let (val, g) = run(&l, &x, [n, v, d], labs);
            assert!(
                val.is_finite() && g.iter().all(|a| a.is_finite()),
                "{name} scale {scale}: {val}"
            );
            assert!(
                close_loss(val as f64, reference(&l, &x, [n, v, d], labs)),
                "{name} scale {scale}"
            );
        }
        // a zero feature vector: normalised with eps it stays zero (similarity 0 with all)
        let mut x = features(n, v, d, 2);
        x[..d].iter_mut().for_each(|a| *a = 0.0);
        let (val, g) = run(&l, &x, [n, v, d], labs);
        assert!(
            val.is_finite() && g.iter().all(|a| a.is_finite()),
            "{name} zero vector"
        );
        assert!(close_loss(val as f64, reference(&l, &x, [n, v, d], labs)));
    }
}

#[test]
fn supcon_without_positives_is_zero_with_zero_gradient() {
    // one view and distinct labels: no anchor has a positive
    let (n, d) = (4, 3);
    let x = features(n, 1, d, 5);
    let l = loss("supcon", "{}");
    let (val, g) = run(&l, &x, [n, 1, d], Some(&[0, 1, 2, 3]));
    assert_eq!(val, 0.0);
    assert!(g.iter().all(|a| *a == 0.0), "{g:?}");
    assert_eq!(reference(&l, &x, [n, 1, d], Some(&[0, 1, 2, 3])), 0.0);
    // some anchors without positives are left out of the mean, as in the reference
    let labels = [0u32, 0, 1, 2];
    let (val, _) = run(&l, &x, [n, 1, d], Some(&labels));
    assert!(
        close_loss(val as f64, reference(&l, &x, [n, 1, d], Some(&labels))),
        "{val}"
    );
}

#[test]
fn supcon_variants_match_their_references() {
    let (n, v, d) = (6, 2, 4);
    let labels = [0u32, 1, 2, 0, 1, 2];
    for options in [
        r#"{"variant": "in"}"#,
        r#"{"contrast_mode": "one"}"#,
        r#"{"variant": "in", "contrast_mode": "one"}"#,
        r#"{"base_temperature": 0.07}"#,
        r#"{"temperature": 0.5, "base_temperature": 0.5}"#,
    ] {
        let l = loss("supcon", options);
        for seed in 0..4 {
            let x = features(n, v, d, seed);
            let (val, g) = run(&l, &x, [n, v, d], Some(&labels));
            let want = reference(&l, &x, [n, v, d], Some(&labels));
            assert!(
                close_loss(val as f64, want),
                "{options} seed {seed}: {val} vs {want}"
            );
            assert!(g.iter().all(|a| a.is_finite()));
        }
    }
    // base_temperature multiplies by τ/τ_base
    let x = features(n, v, d, 1);
    let plain = reference(&loss("supcon", "{}"), &x, [n, v, d], Some(&labels));
    let scaled = reference(
        &loss("supcon", r#"{"base_temperature": 0.07}"#),
        &x,
        [n, v, d],
        Some(&labels),
    );
    assert!(close_f64(scaled, plain * 0.1 / 0.07));
}

#[test]
fn bad_input_is_a_clear_error() {
    let comp = |n: &str| registry().component(&format!("contrastive::{n}")).unwrap();
    for bad in [
        r#"{"temperature": 0}"#,
        r#"{"temperature": -1}"#,
        r#"{"temperature": 1e999}"#,
    ] {
        let e = refused(comp("nt_xent").create_loss(bad));
        // 1e999 overflows f64 and is refused as a number out of range
        assert!(
            e.contains("temperature") || e.contains("out of range"),
            "{bad}: {e}"
        );
    }
    let e = refused(comp("supcon").create_loss(r#"{"variant": "sideways"}"#));
    assert!(e.contains("variant must be"), "{e}");
    let nt = loss("nt_xent", "{}");
    let sc = loss("supcon", "{}");
    let err = |l: &Instance, dims: &[usize], labels: Option<Vec<u32>>| {
        let x = Tensor::zeros(dims).unwrap();
        let lab = labels.map(|l| IntTensor::from_vec(l.clone(), &[l.len()]).unwrap());
        refused(l.forward(&x, lab.as_ref()))
    };
    assert!(err(&nt, &[4, 8], None).contains("rank 3"));
    assert!(err(&nt, &[4, 1, 8], None).contains("needs V >= 2 views"));
    assert!(
        err(&nt, &[1, 2, 8], None).contains("nt_xent takes batches of at least 2 samples, got 1")
    );
    assert!(err(&nt, &[0, 2, 8], None).contains("empty batch"));
    assert!(err(&sc, &[4, 2, 8], Some(vec![0, 1, 2])).contains("3 labels for 4 samples"));
    assert!(err(&sc, &[4, 2, 8], None).contains("needs labels"));
}

/// (value, feature gradient, target gradient) of BYOL on the device.
fn run_byol(
    l: &Instance,
    q: &[f32],
    t: &[f32],
    dims: [usize; 3],
) -> (f32, Vec<f32>, Option<Tensor>) {
    let qt = Tensor::from_vec(q.to_vec(), &dims).unwrap().requires_grad();
    let tt = Tensor::from_vec(t.to_vec(), &dims).unwrap().requires_grad();
    let y = l
        .forward_with(&qt, None, std::slice::from_ref(&tt))
        .unwrap();
    y.backward().unwrap();
    (
        y.item().unwrap(),
        qt.grad().unwrap().to_vec().unwrap(),
        tt.grad(),
    )
}

#[test]
fn byol_is_2_minus_2cos_over_view_orders_with_stop_gradient() {
    let (n, v, d) = (5, 2, 4);
    let q = features(n, v, d, 1);
    let t = features(n, v, d, 2);
    let sum = loss("byol", "{}");
    let mean = loss("byol", r#"{"view_orders": "mean"}"#);
    let (s, _, tg) = run_byol(&sum, &q, &t, [n, v, d]);
    assert!(tg.is_none(), "the target branch must get no gradient");
    let (m, _, _) = run_byol(&mean, &q, &t, [n, v, d]);
    assert!(
        (s as f64 - 2.0 * m as f64).abs() <= tol::ELEMENTWISE.rel * (1.0 + s.abs() as f64),
        "sum {s} vs 2 x mean {m}"
    );
    assert!(
        (0.0..=4.0).contains(&m),
        "mean-over-orders BYOL in [0, 4]: {m}"
    );
    let qf: Vec<f64> = q.iter().map(|&a| a as f64).collect();
    let tf: Vec<f64> = t.iter().map(|&a| a as f64).collect();
    assert!(close_loss(
        s as f64,
        sum.reference_with(&qf, &[n, v, d], None, &[&tf]).unwrap()
    ));
    // identical directions give 0, opposite ones the maximum
    let (zero, _, _) = run_byol(
        &mean,
        &q,
        &q.iter().map(|a| a * 2.5).collect::<Vec<_>>(),
        [n, v, d],
    );
    // targets of view v' equal q of view v' here, so compare views with themselves swapped:
    let swapped: Vec<f32> = (0..n)
        .flat_map(|i| {
            [
                &q[(i * v + 1) * d..(i * v + 2) * d],
                &q[i * v * d..(i * v + 1) * d],
            ]
            .concat()
        })
        .collect();
    let (aligned, _, _) = run_byol(&mean, &q, &swapped, [n, v, d]);
    assert!(
        aligned.abs() < 1e-5,
        "targets equal to the other view's prediction: {aligned}"
    );
    assert!(zero >= 0.0);
    let opposite: Vec<f32> = swapped.iter().map(|a| -a).collect();
    let (far, _, _) = run_byol(&mean, &q, &opposite, [n, v, d]);
    assert!(close_loss(far as f64, 4.0), "opposite directions: {far}");
}

#[test]
fn n_pair_and_align_uniform_match_their_references_and_properties() {
    let (n, d) = (6, 4);
    let np = loss("n_pair", "{}");
    let au = loss("align_uniform", "{}");
    for seed in 0..3 {
        let x = features(n, 2, d, seed);
        for l in [&np, &au] {
            let (val, g) = run(l, &x, [n, 2, d], None);
            assert!(
                close_loss(val as f64, reference(l, &x, [n, 2, d], None)),
                "seed {seed}: {val}"
            );
            assert!(g.iter().all(|a| a.is_finite()));
        }
    }
    // collapsed embeddings: alignment 0 and uniformity log mean exp(0) = 0
    let collapsed: Vec<f32> = (0..n * 2 * d)
        .map(|i| [1.0f32, 2.0, -1.0, 0.5][i % 4])
        .collect();
    let (val, _) = run(&au, &collapsed, [n, 2, d], None);
    assert!(val.abs() < 1e-5, "{val}");
    // N-pair: permuting the pairs consistently does not change it
    let x = features(n, 2, d, 4);
    let perm = [2usize, 5, 0, 1, 4, 3];
    let px: Vec<f32> = perm
        .iter()
        .flat_map(|&i| x[i * 2 * d..(i + 1) * 2 * d].to_vec())
        .collect();
    let ((a, _), (b, _)) = (
        run(&np, &x, [n, 2, d], None),
        run(&np, &px, [n, 2, d], None),
    );
    assert!(agree(a as f64, b as f64));
    let x3 = Tensor::zeros(&[4, 3, 2]).unwrap();
    assert!(refused(np.forward(&x3, None)).contains("exactly V = 2 views"));
    let byol = loss("byol", "{}");
    assert!(
        refused(byol.forward(&Tensor::zeros(&[4, 2, 3]).unwrap(), None))
            .contains("needs the extra inputs [\"targets\"]")
    );
}

#[test]
fn triplet_and_margin_variants_match_their_references() {
    let (n, v, d) = (6, 2, 4);
    let labels = [0u32, 1, 2, 0, 1, 2];
    for options in [
        r#"{}"#,
        r#"{"mining": "batch_hard"}"#,
        r#"{"soft": true}"#,
        r#"{"average": "nonzero"}"#,
        r#"{"mining": "batch_hard", "average": "nonzero", "margin": 0.5}"#,
    ] {
        let l = loss("triplet", options);
        for seed in 0..3 {
            let x = features(n, v, d, seed + 10);
            let (val, g) = run(&l, &x, [n, v, d], Some(&labels));
            let want = reference(&l, &x, [n, v, d], Some(&labels));
            assert!(
                close_loss(val as f64, want),
                "triplet {options} seed {seed}: {val} vs {want}"
            );
            assert!(g.iter().all(|a| a.is_finite()));
        }
    }
    // One view per sample, and a class with a single sample: that anchor has no positive and
    // is left out of the mean (PyTorch Metric Learning's miners give it no triplet), while
    // the others count — with "average": "all" the denominator tells the two apart.
    let single = [0u32, 1, 0, 2, 2];
    for options in [r#"{}"#, r#"{"mining": "batch_hard"}"#] {
        let l = loss("triplet", options);
        let x = features(5, 1, d, 30);
        let (val, _) = run(&l, &x, [5, 1, d], Some(&single));
        let want = reference(&l, &x, [5, 1, d], Some(&single));
        assert!(
            close_loss(val as f64, want),
            "triplet {options} V = 1: {val} vs {want}"
        );
        assert!(
            val > 0.0,
            "triplet {options} V = 1: every triplet satisfied; pick other features"
        );
    }
    let pair_labels = [1u32, 0, 1, 0, 0, 1];
    for options in [r#"{}"#, r#"{"normalize": true, "margin": 0.5}"#] {
        let l = loss("margin", options);
        for seed in 0..3 {
            let x = features(n, 2, d, seed + 20);
            let (val, g) = run(&l, &x, [n, 2, d], Some(&pair_labels));
            let want = reference(&l, &x, [n, 2, d], Some(&pair_labels));
            assert!(
                close_loss(val as f64, want),
                "margin {options} seed {seed}: {val} vs {want}"
            );
            assert!(g.iter().all(|a| a.is_finite()));
        }
    }
}

/// Found by `vkgrad verify` (option sampling, seed 0): sample 1's two views point the same way
/// up to ~1e-4, where ||ẑ_a||² + ||ẑ_b||² − 2 ẑ_a·ẑ_b cancels in f32 and the gradient of
/// d = sqrt(·) came out ~3x too large with the wrong sign. Kept: the shrunk case's exact input,
/// the device gradient against central differences of the f64 reference.
#[test]
fn triplet_gradient_is_right_for_near_duplicate_embeddings() {
    let (n, v, d) = (4, 3, 2);
    #[rustfmt::skip]
    let x: Vec<f32> = vec![
        -0.956_668_4, -0.980_392_3, -0.802_824_4, 0.659_618_26, -0.534_954_1, 0.727_300_76,
        0.074_900_225, -0.439_326_8, 0.047_308_005, -0.277_358_35, 0.514_470_8, 0.972_641_77,
        0.046_450_634, -0.560_533_2, -0.765_693_8, 0.044_309_497, -0.641_976_8, -0.900_745_9,
        0.323_309_2, 0.218_451_86, 0.205_687_21, 0.095_598_795, -0.182_553_28, -0.326_453_8,
    ];
    let labels = [0u32, 1, 0, 1];
    let l = loss("triplet", "{}");
    let (_, g) = run(&l, &x, [n, v, d], Some(&labels));
    let xf: Vec<f64> = x.iter().map(|&a| a as f64).collect();
    let lf: Vec<f64> = labels.iter().map(|&a| a as f64).collect();
    let f = |k: usize, h: f64| {
        let mut y = xf.clone();
        y[k] += h;
        l.reference(&y, &[n, v, d], Some(&lf)).unwrap()
    };
    for (k, &gk) in g.iter().enumerate() {
        let fd = (f(k, 1e-6) - f(k, -1e-6)) / 2e-6;
        assert!(
            (gk as f64 - fd).abs() <= 1e-3 * (fd.abs() + 1e-2),
            "element {k}: device {gk} vs finite differences {fd}"
        );
    }
}

#[test]
fn triplet_and_margin_are_zero_when_margins_are_satisfied() {
    // two tight, opposite clusters: every d(a,p) ~ 0 and every d(a,n) ~ 2 > m
    let (n, v, d) = (4, 2, 3);
    let x: Vec<f32> = (0..n * v * d)
        .map(|i| {
            let sample = i / (v * d);
            let sign = if sample % 2 == 0 { 1.0 } else { -1.0 };
            sign * [1.0, 0.5, 0.25][i % 3] + 1e-3 * (i as f32).sin()
        })
        .collect();
    let labels = [0u32, 1, 0, 1];
    for options in [r#"{}"#, r#"{"mining": "batch_hard"}"#] {
        let (val, g) = run(&loss("triplet", options), &x, [n, v, d], Some(&labels));
        assert_eq!(val, 0.0, "{options}");
        assert!(g.iter().all(|a| *a == 0.0), "{options}");
    }
    // margin: same pairs identical, different pairs farther apart than m = 1
    let pairs: Vec<f32> = (0..n)
        .flat_map(|i| {
            let a = [i as f32 * 3.0, 1.0, 0.0];
            let b = if i % 2 == 0 {
                a
            } else {
                [a[0] + 2.0, 1.0, 0.0]
            };
            [a, b].concat()
        })
        .collect();
    let (val, _) = run(
        &loss("margin", "{}"),
        &pairs,
        [n, 2, 3],
        Some(&[1, 0, 1, 0]),
    );
    assert!(val.abs() < 1e-6, "{val}");
    let e = refused(loss("triplet", "{}").forward(
        &Tensor::zeros(&[200, 2, 4]).unwrap(),
        Some(&IntTensor::from_vec(vec![0; 200], &[200]).unwrap()),
    ));
    assert!(e.contains("use mining = batch_hard"), "{e}");
}

#[test]
fn info_nce_general_form() {
    let (n, v, d) = (4, 5, 3);
    for options in [r#"{}"#, r#"{"normalize": false, "temperature": 0.7}"#] {
        let l = loss("info_nce", options);
        let x = features(n, v, d, 9);
        let (val, g) = run(&l, &x, [n, v, d], None);
        assert!(
            close_loss(val as f64, reference(&l, &x, [n, v, d], None)),
            "{options}: {val}"
        );
        assert!(g.iter().all(|a| a.is_finite()));
    }
    // every key equal to the positive: all logits tie, loss = log(number of keys)
    let l = loss("info_nce", "{}");
    let x: Vec<f32> = (0..n * v * d).map(|i| [0.2f32, -0.7, 1.1][i % 3]).collect();
    let (val, _) = run(&l, &x, [n, v, d], None);
    assert!(close_loss(val as f64, ((v - 1) as f64).ln()), "{val}");
    assert!(
        refused(l.forward(&Tensor::zeros(&[4, 2, 3]).unwrap(), None))
            .contains("needs V >= 3 views")
    );
}

#[test]
fn moco_queue_is_state_that_survives_checkpoints() {
    let (n, d, k) = (3, 4, 8);
    let options = format!(r#"{{"dim": {d}, "queue_size": {k}, "seed": 5}}"#);
    let l = loss("moco", &options);
    let q = features(n, 1, d, 1);
    let keys = features(n, 1, d, 2);
    let qf: Vec<f64> = q.iter().map(|&a| a as f64).collect();
    let kf: Vec<f64> = keys.iter().map(|&a| a as f64).collect();
    let step = |l: &Instance| {
        let qt = Tensor::from_vec(q.clone(), &[n, 1, d])
            .unwrap()
            .requires_grad();
        let kt = Tensor::from_vec(keys.clone(), &[n, 1, d]).unwrap();
        let y = l
            .forward_with(&qt, None, std::slice::from_ref(&kt))
            .unwrap();
        y.backward().unwrap();
        y.item().unwrap()
    };
    // the device value matches the reference on the queue before the step
    let before = l.reference_with(&qf, &[n, 1, d], None, &[&kf]).unwrap();
    let first = step(&l);
    assert!(close_loss(first as f64, before), "{first} vs {before}");
    // the keys were enqueued (normalised) at rows 0..n, FIFO position n
    let state = l.save_state().unwrap().expect("moco has state");
    assert_eq!(state.dims, vec![k + 1, d]);
    assert_eq!(state.data[k * d], n as f64);
    let norm: f64 = kf[..d].iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!((state.data[0] - kf[0] / norm).abs() < 1e-6);
    // the next step sees the new queue; a fresh instance restored from the state agrees
    let after = l.reference_with(&qf, &[n, 1, d], None, &[&kf]).unwrap();
    assert!(
        (after - before).abs() > 1e-6,
        "the queue changed, so must the loss"
    );
    let restored = loss("moco", &options);
    // A new instance's state is its initial queue, so restoring it undoes a step (`vkgrad
    // verify` restores state after every run; a queue made on first use could not be).
    let initial = restored
        .save_state()
        .unwrap()
        .expect("a new moco has its queue");
    step(&restored);
    restored.load_state(&initial).unwrap();
    let again = restored
        .reference_with(&qf, &[n, 1, d], None, &[&kf])
        .unwrap();
    assert_eq!(again.to_bits(), before.to_bits());
    restored.load_state(&state).unwrap();
    let (a, b) = (step(&l), step(&restored));
    assert_eq!(a.to_bits(), b.to_bits());
    assert!(close_loss(a as f64, after));
    // bad state and mismatched dimensions are errors
    let bad = vkgrad::plugin::RefOutput {
        data: vec![0.0; 4],
        dims: vec![2, 2],
    };
    assert!(refused(restored.load_state(&bad)).contains("does not fit queue_size"));
    let wrong = Tensor::zeros(&[n, 1, d + 1]).unwrap();
    assert!(
        refused(restored.forward_with(&wrong, None, std::slice::from_ref(&wrong)))
            .contains("queue holds")
    );
}

#[test]
fn every_family_is_finite_at_extreme_scales() {
    // (component, options, views, needs labels, extra input)
    let cases: [(&str, &str, usize, bool, bool); 9] = [
        ("nt_xent", r#"{"temperature": 0.01}"#, 2, false, false),
        ("info_nce", r#"{"temperature": 0.01}"#, 4, false, false),
        ("supcon", r#"{"temperature": 0.01}"#, 2, true, false),
        ("byol", "{}", 2, false, true),
        (
            "moco",
            r#"{"dim": 3, "queue_size": 16, "temperature": 0.01}"#,
            1,
            false,
            true,
        ),
        ("n_pair", "{}", 2, false, false),
        ("align_uniform", "{}", 2, false, false),
        ("margin", "{}", 2, true, false),
        ("triplet", r#"{"mining": "batch_hard"}"#, 2, true, false),
    ];
    let (n, d) = (4, 3);
    for (name, options, v, labelled, extra) in cases {
        let l = loss(name, options);
        for scale in [1e-6f32, 1e4] {
            let x: Vec<f32> = features(n, v, d, 3).iter().map(|a| a * scale).collect();
            let xt = Tensor::from_vec(x, &[n, v, d]).unwrap().requires_grad();
            let labels = labelled.then(|| IntTensor::from_vec(vec![0, 1, 0, 1], &[n]).unwrap());
            let e: Vec<Tensor> = if extra {
                vec![Tensor::from_vec(
                    features(n, v, d, 4).iter().map(|a| a * scale).collect(),
                    &[n, v, d],
                )
                .unwrap()]
            } else {
                vec![]
            };
            let y = l.forward_with(&xt, labels.as_ref(), &e).unwrap();
            y.backward().unwrap();
            let value = y.item().unwrap();
            let g = xt
                .grad()
                .unwrap_or_else(|| panic!("{name}: no gradient reached the features"))
                .to_vec()
                .unwrap();
            assert_eq!(g.len(), n * v * d, "{name}");
            assert!(
                value.is_finite() && g.iter().all(|a| a.is_finite()),
                "{name} at scale {scale}: {value}"
            );
        }
    }
}

mod tiled_vs_matrix {
    use super::*;
    use proptest::prelude::*;
    use vkgrad::reference::tol;

    fn cases() -> u32 {
        std::env::var("VKGRAD_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// The tiled path (`similarity_lse`, no M×M matrix) and the matrix path give the same
        /// NT-Xent and SupCon (both variants, both contrast modes), value and gradient, on
        /// random inputs up to N = 512; both agree with the f64 reference.
        #[test]
        fn the_tiled_and_matrix_paths_agree(
            n in prop_oneof![2usize..=9, 10usize..=64, Just(512usize)],
            v in 2usize..=3,
            d in 1usize..=16,
            tau in prop_oneof![Just(0.07f64), Just(0.5)],
            seed in 0u64..1000,
            which in 0usize..5,
        ) {
            let (name, extra) = [
                ("nt_xent", ""),
                ("supcon", r#""variant":"out","contrast_mode":"all","#),
                ("supcon", r#""variant":"in","contrast_mode":"all","#),
                ("supcon", r#""variant":"out","contrast_mode":"one","#),
                ("supcon", r#""variant":"in","contrast_mode":"one","#),
            ][which];
            let labels: Vec<u32> = (0..n as u64).map(|i| ((i * 7 + seed) % 3) as u32).collect();
            let labels = (name == "supcon").then_some(&labels[..]);
            let x = features(n, v, d, seed);
            let dims = [n, v, d];
            let options = |path: &str| format!(r#"{{{extra}"temperature":{tau},"similarity":"{path}"}}"#);
            let (lt, lm) = (loss(name, &options("tiled")), loss(name, &options("matrix")));
            let (vt, gt) = run(&lt, &x, dims, labels);
            let (vm, gm) = run(&lm, &x, dims, labels);
            let want = reference(&lt, &x, dims, labels);
            // Each anchor's term is a log-sum-exp over M = V N similarities of D-term dot
            // products, scaled by 1/τ: the row-wise bound with that magnitude.
            let (m, scale) = (n * v, 1.0 + want.abs() + 1.0 / tau);
            let bound = tol::ROWWISE.bound(scale, m + d);
            for (path, got) in [("tiled", vt), ("matrix", vm)] {
                prop_assert!((got as f64 - want).abs() <= bound,
                    "{} {} N={} V={} D={} τ={}: {} value {} vs reference {} (bound {:e})", name, extra, n, v, d, tau, path, got, want, bound);
            }
            let gmax = gm.iter().fold(0.0f32, |a, b| a.max(b.abs())) as f64;
            for (i, (a, b)) in gt.iter().zip(&gm).enumerate() {
                let bound = 2.0 * tol::GRADIENT.bound(gmax + (*b as f64).abs() + 1e-7 / tau, m + d);
                prop_assert!(((a - b) as f64).abs() <= bound,
                    "{} {} N={} V={} D={} τ={}: gradient {}: tiled {} vs matrix {} (bound {:e})", name, extra, n, v, d, tau, i, a, b, bound);
            }
        }
    }
}

/// The tiled path passes the whole `vkgrad verify` harness (reference, finite differences,
/// finiteness, determinism), for NT-Xent and every SupCon variant.
#[test]
fn verify_passes_on_the_tiled_path() {
    let lib = common::built_plugin("vkgrad-plugin-contrastive");
    for (component, options) in [
        ("nt_xent", r#"{"similarity":"tiled"}"#),
        ("supcon", r#"{"similarity":"tiled"}"#),
        (
            "supcon",
            r#"{"similarity":"tiled","variant":"in","contrast_mode":"one"}"#,
        ),
    ] {
        let (ok, out, err) = common::vkgrad(
            &[
                "verify",
                lib.to_str().unwrap(),
                "--cases",
                "24",
                "--component",
                component,
                "--options",
                options,
            ],
            &[],
        );
        assert!(
            ok && out.contains(" 0 failed"),
            "{component} {options}:\n{out}\n{err}"
        );
    }
}

/// MoCo's tiled path (the queue as keys, the positive as an external logit) equals its matrix
/// path, value and gradient, from the same initial queue; both match the reference.
#[test]
fn moco_tiled_and_matrix_paths_agree() {
    use vkgrad::reference::tol;
    for (n, k, d, tau) in [
        (2, 1, 1, 0.2),
        (5, 7, 3, 0.07),
        (33, 300, 16, 0.2),
        (8, 4096, 8, 0.5),
    ] {
        let options = |path: &str| {
            format!(r#"{{"dim":{d},"queue_size":{k},"temperature":{tau},"similarity":"{path}"}}"#)
        };
        let x = features(n, 1, d, 11);
        let keys = features(n, 1, d, 12);
        let mut out = Vec::new();
        for path in ["tiled", "matrix"] {
            let l = loss("moco", &options(path));
            let want = {
                let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let kf: Vec<f64> = keys.iter().map(|&v| v as f64).collect();
                l.reference_with(&xf, &[n, 1, d], None, &[&kf]).unwrap()
            };
            let t = Tensor::from_vec(x.clone(), &[n, 1, d])
                .unwrap()
                .requires_grad();
            let kt = Tensor::from_vec(keys.clone(), &[n, 1, d]).unwrap();
            let y = l.forward_with(&t, None, &[kt]).unwrap();
            y.backward().unwrap();
            let v = y.item().unwrap();
            let bound = tol::ROWWISE.bound(1.0 + want.abs() + 1.0 / tau, k + 1 + d);
            assert!(
                (v as f64 - want).abs() <= bound,
                "{path} N={n} K={k}: {v} vs {want}"
            );
            out.push((v, t.grad().unwrap().to_vec().unwrap()));
        }
        let gmax = out[1].1.iter().fold(0.0f32, |a, b| a.max(b.abs())) as f64;
        for (a, b) in out[0].1.iter().zip(&out[1].1) {
            let bound = 2.0 * tol::GRADIENT.bound(gmax + (*b as f64).abs(), k + 1 + d);
            assert!(
                ((a - b) as f64).abs() <= bound,
                "N={n} K={k}: gradient {a} vs {b}"
            );
        }
    }
}

/// `similarity` chooses the path, not only a name: "tiled" never materialises the M × M
/// similarities (every op the plugin runs has a smaller output; the tiles stay inside
/// `similarity_lse`), "matrix" does — so a large batch fits only on the tiled path.
#[test]
fn the_similarity_option_chooses_whether_the_m_by_m_matrix_exists() {
    let (n, v, d) = (24, 2, 5);
    let m = n * v;
    let x = features(n, v, d, 3);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    for (name, labelled) in [("nt_xent", false), ("supcon", true)] {
        for (path, materialised) in [("tiled", false), ("matrix", true), ("auto", false)] {
            let l = loss(name, &format!(r#"{{"similarity":"{path}"}}"#));
            let t = Tensor::from_vec(x.clone(), &[n, v, d]).unwrap();
            let lab = labelled.then(|| IntTensor::from_vec(labels.clone(), &[n]).unwrap());
            let (_, ops) = vkgrad::plugin::trace::record(|| l.forward(&t, lab.as_ref())).unwrap();
            let largest = ops.iter().map(|o| o.output.numel()).max().unwrap();
            assert_eq!(
                largest >= m * m,
                materialised,
                "{name} {path}: largest op output {largest} values (M × M = {})",
                m * m
            );
            assert_eq!(
                ops.iter().any(|o| o.op == "similarity_lse"),
                !materialised,
                "{name} {path}"
            );
        }
    }
}

/// Every option of every built-in loss declares the domain `vkgrad verify` samples it from (or
/// why it is exempt): none is verified at its default only, and the schema lists exactly the
/// options the loss accepts (each name once, each accepted with its default).
#[test]
fn every_option_of_every_loss_has_a_domain() {
    let names = [
        "align_uniform",
        "byol",
        "info_nce",
        "margin",
        "moco",
        "n_pair",
        "nt_xent",
        "supcon",
        "triplet",
    ];
    for name in names {
        let comp = registry()
            .component(&format!("contrastive::{name}"))
            .unwrap();
        let schema = comp.options.as_array().unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut defaults = serde_json::Map::new();
        for o in schema {
            let option = o["name"].as_str().unwrap_or_default();
            assert!(
                !option.is_empty() && seen.insert(option.to_string()),
                "{name}: option name {option:?} empty or repeated in {schema:?}"
            );
            assert!(
                o.get("domain").is_some_and(|d| !d.is_null()),
                "{name}: option `{option}` has no domain"
            );
            defaults.insert(option.to_string(), o["default"].clone());
        }
        comp.create_loss(&serde_json::Value::Object(defaults).to_string())
            .unwrap_or_else(|e| panic!("{name}: its listed defaults are refused: {e}"));
    }
}

/// Triplet distances come from differences ([M, M, D]) only while that temporary is at most
/// 2²⁴ values; beyond, from the Gram matrix, so memory grows as M², not M² D.
#[test]
fn triplet_distances_never_make_an_m_by_m_by_d_temporary_beyond_its_bound() {
    let (n, v, d) = (300, 2, 64); // M² D = 23 M values > 2²⁴
    let m = n * v;
    let l = loss("triplet", r#"{"mining":"batch_hard"}"#);
    let t = Tensor::from_vec(features(n, v, d, 5), &[n, v, d]).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 7).collect();
    let lab = IntTensor::from_vec(labels, &[n]).unwrap();
    let (_, ops) = vkgrad::plugin::trace::record(|| l.forward(&t, Some(&lab))).unwrap();
    let largest = ops.iter().map(|o| o.output.numel()).max().unwrap();
    assert!(
        largest <= m * m,
        "largest op output {largest} values, M² = {}",
        m * m
    );
}
